// Property suites at CI budget: the full differential + invariant campaign on both profiles with a
// fixed seed, determinism of seeds, and the regression corpus of replay files.
import { fc, test as fcTest } from '@fast-check/vitest';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { commandSchema } from '../model/command-schema.js';
import { SERIES_NAMES, makeConfig } from '../model/series.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { setupArbitrary, templateArbitrary } from '../properties/generators.js';
import { readReplay, runReplay, writeReplay } from '../src/harness/replay.js';
import { formatSteps, formatViolation } from '../src/harness/report.js';
import { runCampaign } from '../src/harness/runner.js';
import { Session } from '../src/harness/session.js';

const CI_SEED = 20261121;
const CI_RUNS = 1500;

describe('campaign against the unmutated engine', () => {
  test.each(['x86', 'arm64'] as const)('%s: no invariant is violated in the CI budget', (arch) => {
    const result = runCampaign({
      arches: [arch],
      seed: CI_SEED,
      runs: CI_RUNS,
      maxCommands: 40,
      invariants: INVARIANT_IDS,
      mutant: null,
    });
    const f = result.failure;
    const report = f
      ? `${formatViolation(f.invariant, f.messages, { color: false })}\n${formatSteps(f.steps, { color: false })}`
      : '';
    expect(report).toBe('');
    expect(result.runs).toBe(CI_RUNS);
    // The campaign must actually reach the interesting machinery, not pass vacuously.
    for (const key of [
      'engine 2M blocks mapped',
      'engine 1G blocks mapped',
      'engine blocks split',
      'outcome run exit HLT',
      'outcome run exit MMIO',
      'outcome dirty log (non-empty)',
      'race: host-first',
    ]) {
      expect(result.coverage.get(key), key).toBeGreaterThan(0);
    }
    expect(
      result.coverage.get(
        arch === 'x86' ? 'outcome run -EFAULT exit MEMORY_FAULT' : 'outcome run -EFAULT exit UNKNOWN',
      ),
    ).toBeGreaterThan(0);
  });
});

// The compiler catches a command kind a match misses, not one nobody generates (docs/EXTENDING.md).
test('every command kind of the schema is generated (upstream and all series, both arches)', () => {
  const kinds = commandSchema.options.map((o) => o.shape.kind.value);
  const result = runCampaign({
    arches: ['x86', 'arm64'],
    seed: CI_SEED,
    runs: 300,
    maxCommands: 40,
    invariants: INVARIANT_IDS,
    mutant: null,
    model: makeConfig(SERIES_NAMES),
  });
  expect(result.ok).toBe(true);
  expect(kinds.filter((k) => result.coverage.get(`cmd ${k}`) === 0)).toEqual([]);
});

describe('reproducibility', () => {
  test('the same seed gives the same campaign, and the same shrunk counterexample', () => {
    const config = {
      arches: ['x86', 'arm64'] as const,
      seed: 99,
      runs: 300,
      maxCommands: 40,
      invariants: INVARIANT_IDS,
    };
    const a = runCampaign({ ...config, mutant: null });
    const b = runCampaign({ ...config, mutant: null });
    expect([...a.coverage.counts]).toEqual([...b.coverage.counts]);
    const m1 = runCampaign({ ...config, mutant: 'notifier-first-alias-only' });
    const m2 = runCampaign({ ...config, mutant: 'notifier-first-alias-only' });
    expect(m1.failure?.steps.map((s) => s.cmd)).toEqual(m2.failure?.steps.map((s) => s.cmd));
    expect(m1.failure?.path).toBe(m2.failure?.path);
  });

  test('a replay file re-runs the failure exactly', () => {
    const result = runCampaign({
      arches: ['x86'],
      seed: 5,
      runs: 500,
      maxCommands: 40,
      invariants: INVARIANT_IDS,
      mutant: 'block-while-logging',
    });
    const failure = result.failure!;
    const file = join(mkdtempSync(join(tmpdir(), 'kvm-memmodel-')), 'r.json');
    writeReplay(file, failure, 'block-while-logging', INVARIANT_IDS);
    const again = runReplay(readReplay(file));
    expect(again.violation?.invariant).toBe(failure.invariant);
    expect(again.violation?.messages).toEqual(failure.messages);
    expect(again.steps.map((s) => s.engine)).toEqual(failure.steps.map((s) => s.engine));
  });

  fcTest.prop([setupArbitrary, fc.array(templateArbitrary, { maxLength: 30 })], { seed: 7, numRuns: 100 })(
    'replay files encode and decode any resolved command sequence exactly',
    (setup, templates) => {
      const session = new Session({ arch: 'x86', mutant: null, invariants: new Set() });
      for (const t of [...setup, ...templates]) session.step(t);
      const file = join(mkdtempSync(join(tmpdir(), 'kvm-memmodel-')), 'r.json');
      writeReplay(
        file,
        {
          arch: 'x86',
          seed: 0,
          path: '',
          invariant: 'differential',
          messages: [],
          steps: session.steps,
          runsToFailure: 0,
          shrinks: 0,
        },
        null,
        ['differential'],
      );
      expect(readReplay(file).commands).toEqual(session.steps.map((s) => s.cmd));
    },
  );
});

describe('regression corpus (failures found while building the harness, now fixed)', () => {
  const dir = fileURLToPath(new URL('./regression', import.meta.url));
  test.each(readdirSync(dir).filter((f) => f.endsWith('.json')))('%s passes', (name) => {
    const replay = readReplay(join(dir, name));
    const result = runReplay({ ...replay, mutant: null, invariants: INVARIANT_IDS });
    expect(result.violation?.message ?? null).toBeNull();
  });
});
