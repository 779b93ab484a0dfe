// Throughput: commands per second through spec + engine + every invariant (a real campaign), and
// the same number of commands through fast-check's bare modelRun with no-op commands, in one run.
// The ratio is what the harness costs per command over fast-check's own machinery.
// Also measured: the same campaign with every proposed series enabled (--series all).
// Run: npm run bench [-- --runs N --seed S]
import fc from 'fast-check';
import { positiveIntArg } from './args.js';
import { SERIES_NAMES, makeConfig } from '../model/series.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { runCampaign } from '../src/harness/runner.js';

const runs = positiveIntArg('runs', 5000);
const seed = positiveIntArg('seed', 1);
const maxCommands = 40;

class Noop implements fc.Command<object, object> {
  check(): boolean {
    return true;
  }
  run(): void {}
  toString(): string {
    return 'noop';
  }
}

function bareModelRun(target: number): { commands: number; ms: number } {
  let commands = 0;
  const started = performance.now();
  let batchSeed = seed;
  while (commands < target) {
    fc.assert(
      fc.property(fc.commands([fc.constant(new Noop())], { maxCommands, size: 'max' }), (cmds) => {
        fc.modelRun(() => ({ model: {}, real: {} }), cmds);
        for (const _ of cmds) commands++;
      }),
      { numRuns: 1000, seed: batchSeed++ },
    );
  }
  return { commands, ms: performance.now() - started };
}

const heapBefore = process.memoryUsage().heapUsed;
const harness = runCampaign({
  arches: ['x86', 'arm64'],
  seed,
  runs,
  maxCommands,
  invariants: INVARIANT_IDS,
  mutant: null,
});
const heapAfter = process.memoryUsage().heapUsed;
if (!harness.ok) {
  process.stderr.write(
    `error: the campaign failed (${harness.failure?.invariant}); benchmark numbers would be meaningless\n`,
  );
  process.exit(1);
}
const bare = bareModelRun(harness.commands);
const allSeries = runCampaign({
  arches: ['x86', 'arm64'],
  seed,
  runs,
  maxCommands,
  invariants: INVARIANT_IDS,
  mutant: null,
  model: makeConfig(SERIES_NAMES),
});
if (!allSeries.ok) {
  process.stderr.write(
    `error: the --series all campaign failed (${allSeries.failure?.invariant}); benchmark numbers would be meaningless\n`,
  );
  process.exit(1);
}

const rate = (c: number, ms: number): number => c / (ms / 1000);
const harnessRate = rate(harness.commands, harness.elapsedMs);
const bareRate = rate(bare.commands, bare.ms);
console.log(
  `kvm-memmodel throughput (seed ${seed}, ${runs} runs per arch, x86 + arm64, up to ${maxCommands} commands per run)`,
);
console.log(
  `  spec + engine + ${INVARIANT_IDS.length} invariants: ${harness.commands} commands in ${(harness.elapsedMs / 1000).toFixed(2)} s = ${Math.round(harnessRate)} commands/s (${(1e6 / harnessRate).toFixed(1)} µs/command)`,
);
console.log(
  `  same, --series all: ${allSeries.commands} commands in ${(allSeries.elapsedMs / 1000).toFixed(2)} s = ${Math.round(rate(allSeries.commands, allSeries.elapsedMs))} commands/s`,
);
console.log(
  `  fast-check bare modelRun, no-op commands: ${bare.commands} commands in ${(bare.ms / 1000).toFixed(2)} s = ${Math.round(bareRate)} commands/s (${(1e6 / bareRate).toFixed(2)} µs/command)`,
);
console.log(`  ratio: the harness costs ${(bareRate / harnessRate).toFixed(1)}x a bare modelRun command`);
console.log(`  heap growth over the campaign: ${((heapAfter - heapBefore) / 1e6).toFixed(1)} MB`);
