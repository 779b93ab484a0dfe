// check --workers N (harness/workers.ts): the same seed gives the same campaign for every N - the
// same runs, commands, coverage (counts and key order) and the same shrunk failure with its steps -
// as the one-process runCampaign; a stop request ends every worker at a run boundary. The workers
// run the compiled harness: `npm test` builds dist/ before vitest, and without it workerEntry()
// throws (these tests then fail, they do not skip).
import { VMM_SHARE_EVERY } from '../src/harness/budgets.js';
import { describe, expect, test } from 'vitest';
import { bigintAsHex } from '../model/outcomes.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { type CampaignConfig, type CampaignResult, runCampaign, runShare } from '../src/harness/runner.js';
import { mergeShares, planShares, runCampaignInWorkers, workerEntry } from '../src/harness/workers.js';

const never = { requested: () => false };
const base: CampaignConfig = {
  arches: ['x86', 'arm64'],
  seed: 1,
  runs: 40,
  maxCommands: 20,
  invariants: INVARIANT_IDS,
  mutant: null,
};

/** Everything a result says except its time, JSON-comparable (bigints as hex). */
const summary = (r: CampaignResult): string => {
  const { elapsedMs: _, coverage, ...rest } = r;
  return JSON.stringify({ ...rest, coverage: [...coverage.counts] }, bigintAsHex, 1);
};

test('the worker entry is the compiled harness, and it is there', () => {
  expect(workerEntry().pathname).toMatch(/dist\/src\/harness\/campaign-worker\.js$/);
});

test('shares cover every run of every arch and part once, in (arch, part, run) order', () => {
  for (const workers of [1, 2, 3, 7]) {
    const shares = planShares({ ...base, runs: 101 }, workers);
    const runs = shares.flatMap((s) => Array.from({ length: s.count }, (_, i) => `${s.archIndex}:${s.start + i}`));
    expect(runs).toEqual([0, 1].flatMap((a) => Array.from({ length: 101 }, (_, i) => `${a}:${i}`)));
  }
  // The default profile's vmm share is a part of its own, after the small runs.
  const parts = planShares({ ...base, runs: 20_000, profile: 'default' }, 2);
  const count = (part: number) => parts.filter((s) => s.part === part).reduce((n, s) => n + s.count, 0);
  const vmmRuns = Math.floor(20_000 / VMM_SHARE_EVERY);
  expect(vmmRuns).toBeGreaterThan(0);
  expect([count(0), count(1)]).toEqual([2 * (20_000 - vmmRuns), 2 * vmmRuns]);
  expect(parts.map((s) => [s.archIndex, s.part])).toEqual(
    [...parts].sort((a, b) => a.archIndex - b.archIndex || a.part - b.part).map((s) => [s.archIndex, s.part]),
  );
});

test('shares run in one process and merged are runCampaign, for a passing campaign', () => {
  const shares = planShares(base, 3);
  expect(shares.length).toBeGreaterThan(base.arches.length);
  const merged = mergeShares(
    shares.map((s) => runShare(base, s)),
    0,
  );
  expect(summary(merged)).toBe(summary(runCampaign(base)));
});

describe.each([
  ['a passing campaign', base],
  // Killed at seed 1 in run 36 of x86: past the first shares, so shares below it finish elsewhere.
  ['a mutant that fails', { ...base, runs: 120, mutant: 'notifier-first-alias-only' } as CampaignConfig],
])('%s', (_name, config) => {
  test('gives the same result with 1, 2 and 3 workers as in one process', async () => {
    const expected = runCampaign(config);
    if (config.mutant) {
      expect(expected.ok).toBe(false);
      expect(expected.failure!.runsToFailure).toBeGreaterThan(planShares(config, 3)[0]!.count);
    } else expect(expected.ok).toBe(true);
    for (const workers of [1, 2, 3])
      expect(summary(await runCampaignInWorkers(config, workers, never)), `${workers} workers`).toBe(summary(expected));
  });
});

test('a stop request ends every worker at a run boundary; the result is interrupted, runs reached', async () => {
  let seen = 0;
  const stop = { requested: () => seen >= 3 };
  const config = { ...base, runs: 2000 };
  const r = await runCampaignInWorkers(config, 2, stop, () => seen++);
  expect(r.interrupted).toBe(true);
  expect(r.ok).toBe(true);
  expect(r.runs).toBeGreaterThanOrEqual(3);
  expect(r.runs).toBeLessThan(config.runs * config.arches.length);
  // The runs reached are whole runs: their commands and coverage are counted, nothing more.
  expect(r.coverage.get('cmd mmap')).toBeGreaterThan(0);
});

test('merging stops at the first failing share and marks shares that never ran as interrupted', () => {
  const ok = { runs: 2, commands: 10, coverage: [['cmd mmap', 3]] as const, helperDeaths: [], interrupted: false };
  const failure = runCampaign({ ...base, runs: 60, mutant: 'notifier-first-alias-only' }).failure!;
  const failed = { ...ok, runs: 1, failure };
  const r = mergeShares([ok, failed, ok], 0);
  expect([r.ok, r.runs, r.commands, r.coverage.get('cmd mmap'), r.failure]).toEqual([false, 3, 20, 6, failure]);
  const stopped = mergeShares([ok, undefined, ok], 0);
  expect([stopped.ok, stopped.interrupted, stopped.runs]).toEqual([true, true, 4]);
});
