// Throughput: commands per second through spec + engine + every invariant (a real campaign), and
// the same number of commands through fast-check's bare modelRun with no-op commands, in one run.
// The ratio is what the harness costs per command over fast-check's own machinery.
// Also measured: the same campaign with every proposed series enabled (--series all).
// Run: npm run bench [-- --runs N --seed S]
import fc from 'fast-check';
import { positiveIntArg } from './args.js';
import { SERIES_NAMES, makeConfig, type ModelConfig } from '../model/series.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { runCampaign, type CampaignResult } from '../src/harness/runner.js';

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

function bareModelRun(target: number, seed: number): { commands: number; ms: number } {
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

/** A campaign with every invariant; one that fails makes the numbers meaningless: exit 1. */
function campaign(runs: number, seed: number, label: string, model?: ModelConfig): CampaignResult {
  const result = runCampaign({
    arches: ['x86', 'arm64'],
    seed,
    runs,
    maxCommands,
    invariants: INVARIANT_IDS,
    mutant: null,
    model,
  });
  if (result.ok) return result;
  process.stderr.write(
    `error: ${label} campaign failed (${result.failure?.invariant}); benchmark numbers would be meaningless\n`,
  );
  process.exit(1);
}

/** Prints the figures; returns the keys of npm run bench's JSON line (modelRunRatio: target 2 of issue 11). */
export async function measure(
  runs = positiveIntArg('runs', 5000),
  seed = positiveIntArg('seed', 1),
): Promise<Record<string, number>> {
  const heapBefore = process.memoryUsage().heapUsed;
  const harness = campaign(runs, seed, 'the');
  const heapAfter = process.memoryUsage().heapUsed;
  const bare = bareModelRun(harness.commands, seed);
  const allSeries = campaign(runs, seed, 'the --series all', makeConfig(SERIES_NAMES));

  const rate = (c: number, ms: number): number => c / (ms / 1000);
  const harnessRate = rate(harness.commands, harness.elapsedMs);
  const bareRate = rate(bare.commands, bare.ms);
  console.log(
    `kvm-memmodel throughput (seed ${seed}, ${runs} runs per arch, x86 + arm64,` +
      ` up to ${maxCommands} commands per run)`,
  );
  const seconds = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
  const perCommand = (r: number, digits: number): string => `${(1e6 / r).toFixed(digits)} µs/command`;
  const allSeriesRate = rate(allSeries.commands, allSeries.elapsedMs);
  console.log(
    `  spec + engine + ${INVARIANT_IDS.length} invariants: ${harness.commands} commands` +
      ` in ${seconds(harness.elapsedMs)} = ${Math.round(harnessRate)} commands/s (${perCommand(harnessRate, 1)})`,
  );
  console.log(
    `  same, --series all: ${allSeries.commands} commands in ${seconds(allSeries.elapsedMs)}` +
      ` = ${Math.round(allSeriesRate)} commands/s`,
  );
  console.log(
    `  fast-check bare modelRun, no-op commands: ${bare.commands} commands in ${seconds(bare.ms)}` +
      ` = ${Math.round(bareRate)} commands/s (${perCommand(bareRate, 2)})`,
  );
  console.log(`  ratio: the harness costs ${(bareRate / harnessRate).toFixed(1)}x a bare modelRun command`);
  console.log(`  heap growth over the campaign: ${((heapAfter - heapBefore) / 1e6).toFixed(1)} MB`);
  return {
    modelRunRatio: bareRate / harnessRate,
    harnessCommandsPerSec: harnessRate,
    allSeriesCommandsPerSec: allSeriesRate,
  };
}

if (process.argv[1]?.endsWith('throughput.js')) console.log(JSON.stringify(await measure()));
