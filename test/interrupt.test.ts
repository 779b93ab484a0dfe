// SIGINT/SIGTERM with real child processes: `check` (model and kvm backends) and `mutants` stop at a
// run boundary, print the summary so far marked INTERRUPTED, leave no temporary directory and exit
// 130/143; a second SIGINT exits at once. And the interruptible campaign is the same campaign: a
// seed finds the same runs and the same counterexample as runCampaign.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { INVARIANT_IDS } from '../properties/invariants.js';
import {
  runConcurrentCampaign,
  runConcurrentCampaignInterruptible,
  type ConcurrentCampaignResult,
} from '../src/harness/concurrent-campaign.js';
import { runKillMatrixInterruptible, runMutant } from '../src/harness/kill-matrix.js';
import { type CampaignConfig, runCampaign, runCampaignInterruptible } from '../src/harness/runner.js';
import { probeMachine } from '../src/kvm/helper.js';
import { alive, startCli, waitForHelper } from './child.js';

const never = { requested: () => false };
const base: CampaignConfig = {
  arches: ['x86', 'arm64'],
  seed: 42,
  runs: 60,
  maxCommands: 30,
  invariants: INVARIANT_IDS,
  mutant: null,
};
const summary = (r: Awaited<ReturnType<typeof runCampaignInterruptible>>) => ({
  ok: r.ok,
  runs: r.runs,
  commands: r.commands,
  coverage: [...r.coverage.counts],
  failure: r.failure && {
    invariant: r.failure.invariant,
    messages: r.failure.messages,
    cmds: r.failure.steps.map((s) => s.cmd),
    runsToFailure: r.failure.runsToFailure,
    shrinks: r.failure.shrinks,
    path: r.failure.path,
  },
});

describe('the interruptible campaign is the same campaign', () => {
  test('a passing seed: the same runs, commands and coverage', async () => {
    expect(summary(await runCampaignInterruptible(base, never))).toEqual(summary(runCampaign(base)));
  });

  test('a mutant: the same counterexample, found after the same runs, shrunk the same way', async () => {
    const config = { ...base, runs: 400, mutant: 'notifier-first-alias-only' as const };
    const sync = runCampaign(config);
    expect(sync.ok).toBe(false);
    expect(summary(await runCampaignInterruptible(config, never))).toEqual(summary(sync));
  });

  test('a stop request while shrinking keeps the counterexample found so far', async () => {
    let shrinking = false;
    const config = { ...base, runs: 400, mutant: 'notifier-first-alias-only' as const };
    const result = await runCampaignInterruptible(config, { requested: () => shrinking }, (p) => {
      shrinking ||= p.shrinking;
    });
    expect(result.interrupted).toBe(true);
    expect(result.ok).toBe(false);
    expect(result.failure!.steps.length).toBeGreaterThan(0);
    expect(result.failure!.invariant).toBe(runCampaign(config).failure!.invariant);
  });

  test('a stop request ends it at the next run boundary, marked interrupted', async () => {
    let runs = 0;
    const result = await runCampaignInterruptible({ ...base, runs: 1000 }, { requested: () => runs >= 25 }, (p) => {
      runs = p.run;
    });
    expect(result.interrupted).toBe(true);
    expect(result.ok).toBe(true);
    expect(result.runs).toBe(25);
  });
});

const concurrentSummary = (r: ConcurrentCampaignResult) => {
  const { elapsedMs: _, ...counts } = r.summary;
  const f = r.failure;
  return { ok: r.ok, counts, failure: f && { invariant: f.invariant, path: f.path, case: f.concurrent?.case } };
};

describe('the interruptible concurrent campaign is the same campaign', () => {
  const config = { ...base, runs: 80, threads: [2, 3] };

  test('a passing seed: the same cases, commands and undecided count', async () => {
    const sync = runConcurrentCampaign(config);
    expect(sync.ok).toBe(true);
    expect(concurrentSummary(await runConcurrentCampaignInterruptible(config, never))).toEqual(concurrentSummary(sync));
  });

  test('a race mutant: the same shrunk case', async () => {
    const killed = { ...config, runs: 500, threads: [2], mutant: 'dirty-harvest-not-atomic' as const };
    const sync = runConcurrentCampaign(killed);
    expect(sync.ok).toBe(false);
    expect(concurrentSummary(await runConcurrentCampaignInterruptible(killed, never))).toEqual(concurrentSummary(sync));
  });

  test('a stop request ends it at the next case, marked interrupted', async () => {
    let cases = 0;
    const stop = { requested: () => cases >= 10 };
    const result = await runConcurrentCampaignInterruptible({ ...config, runs: 1000 }, stop, (p) => {
      cases = p.run;
    });
    expect(result.interrupted).toBe(true);
    expect(result.ok).toBe(true);
    expect(result.summary.cases).toBe(10);
  });
});

describe('the interruptible kill matrix is the same kill matrix', () => {
  // An interleaving-only mutant meets the concurrent share first in both (the `mutants` command
  // once ran only the sequential campaign for them and reported every one as surviving).
  test('an interleaving-only mutant: the same row', async () => {
    const budget = { seed: 1, runs: 500, maxCommands: 40 };
    const [row] = await runKillMatrixInterruptible(['dirty-harvest-not-atomic'], budget, never);
    const sync = await runMutant('dirty-harvest-not-atomic', budget);
    expect(row!.killed).toBe(true);
    const { ms: _a, ...a } = row!;
    const { ms: _b, ...b } = sync;
    expect(a).toEqual(b);
  });
});

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'kvm-memmodel-int-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const leftovers = (dir: string): string[] => readdirSync(dir).filter((n) => n.startsWith('kvm-memmodel-'));
const longCheck = ['check', '--runs', '1000000', '--seed', '3', '--no-progress'];

describe('signals during check and mutants (real child processes)', () => {
  test.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('check, %s: INTERRUPTED summary, exit %i', async (signal, exit) => {
    const child = startCli(longCheck);
    await child.waitFor(/invariants: /);
    await new Promise((r) => setTimeout(r, 1500));
    child.proc.kill(signal);
    const { code } = await child.exited;
    expect(code).toBe(exit);
    const out = child.out();
    expect(out).toMatch(/^ {2}\d+ runs, \d+ commands in /m);
    expect(out).toMatch(
      new RegExp(`^INTERRUPTED by ${signal} after [1-9]\\d* runs \\(\\d+ commands\\): nothing found`, 'm'),
    );
    expect(out).not.toMatch(/^PASS/m);
    expect(child.err()).toMatch(new RegExp(`${signal}: stopping after the current run`));
    expect(child.err()).not.toMatch(/\n\s+at /);
  });

  test('check --threads 3, SIGINT: INTERRUPTED after some concurrent cases, exit 130', async () => {
    const child = startCli(['check', '--threads', '3', '--runs', '1000000', '--seed', '3', '--no-progress']);
    await child.waitFor(/invariants: /);
    await new Promise((r) => setTimeout(r, 1500));
    child.proc.kill('SIGINT');
    const { code } = await child.exited;
    expect(code).toBe(130);
    expect(child.out()).toMatch(/^INTERRUPTED by SIGINT after [1-9]\d* concurrent cases \(\d+ commands\)/m);
    expect(child.out()).not.toMatch(/^PASS/m);
    expect(child.err()).not.toMatch(/\n\s+at /);
  });

  test('a second SIGINT exits at once with 130', async () => {
    const child = startCli(longCheck);
    await child.waitFor(/invariants: /);
    await new Promise((r) => setTimeout(r, 500));
    child.proc.kill('SIGINT');
    child.proc.kill('SIGINT');
    const t0 = Date.now();
    const { code } = await child.exited;
    expect(code).toBe(130);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  test('mutants, SIGINT: the rows so far, INTERRUPTED, exit 130', async () => {
    const child = startCli(['mutants', '--runs', '200']);
    await new Promise((r) => setTimeout(r, 4000));
    child.proc.kill('SIGINT');
    const { code } = await child.exited;
    expect(code).toBe(130);
    expect(child.out()).toMatch(/^INTERRUPTED by SIGINT after \d+ of \d+ mutants/m);
    expect(child.out()).toMatch(/mutants killed/);
  });

  const probe = probeMachine();
  test.skipIf(!probe.usable)(
    `check --backend kvm, SIGINT: INTERRUPTED, no FIFO dir left, helper gone (${probe.reason ?? '/dev/kvm present'})`,
    async () => {
      const dir = tmp();
      const kvmArgs = ['check', '--backend', 'kvm', '--platform', 'pvm-6.18', ...longCheck.slice(1)];
      const child = startCli(kvmArgs, { TMPDIR: dir });
      const helper = await waitForHelper(child.proc.pid!);
      await new Promise((r) => setTimeout(r, 1000));
      child.proc.kill('SIGINT');
      const { code } = await child.exited;
      expect(code).toBe(130);
      expect(child.out()).toMatch(/^INTERRUPTED by SIGINT after [1-9]\d* runs/m);
      expect(child.out()).toMatch(/kvm backend: \d+ sequences ran in fresh VMs/);
      expect(leftovers(dir)).toEqual([]);
      await new Promise((r) => setTimeout(r, 200));
      expect(alive(helper)).toBe(false);
    },
  );
});
