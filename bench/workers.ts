// check --workers (issue 11 target 3): the same campaign on 1 worker thread and on 2, alternated
// in one run of this process; workersSpeedup2 = time(1 worker) / time(2 workers), each side's best
// of --reps. Both sides start cold threads, as a fresh `check` does (its 1-worker campaign runs in
// the main thread, cold too); each thread warms its own JIT, a fixed cost a longer campaign
// amortises (the default check runs 25,000 runs per arch). The two results must agree (they are
// the same campaign), or the bench fails. Also printed: the CPU time each side used per second of
// wall time (a single thread uses more than 1.0: V8's GC and compiler threads), and
// workersCpuRatio2 = CPU time(1 worker) / CPU time(2 workers), which others' load on a shared
// machine hardly moves: 1.0 means the second thread costs no extra work (its JIT warm-up is the
// main extra), so on 2 idle cores the speedup would be about 2x that.
// Run: node dist/bench/workers.js [--runs N (per arch) --reps N --seed S]
import { availableParallelism } from 'node:os';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { DEFAULT_MAX_COMMANDS } from '../src/harness/budgets.js';
import type { CampaignConfig } from '../src/harness/runner.js';
import { runCampaignInWorkers } from '../src/harness/workers.js';
import { positiveIntArg } from './args.js';

const never = { requested: () => false };

interface Side {
  ms: number;
  cpuPerWall: number;
  commands: number;
}

async function timed(run: () => Promise<{ commands: number }>): Promise<Side> {
  const cpu = process.cpuUsage();
  const t = performance.now();
  const { commands } = await run();
  const ms = performance.now() - t;
  const used = process.cpuUsage(cpu);
  return { ms, cpuPerWall: (used.user + used.system) / 1000 / ms, commands };
}

export async function measure(): Promise<Record<string, number>> {
  const config: CampaignConfig = {
    arches: ['x86', 'arm64'],
    seed: positiveIntArg('seed', 11),
    runs: positiveIntArg('runs', 25000),
    maxCommands: DEFAULT_MAX_COMMANDS,
    invariants: INVARIANT_IDS,
    mutant: null,
  };
  const best = { one: Number.POSITIVE_INFINITY, two: Number.POSITIVE_INFINITY, cpu1: 0, cpu2: 0 };
  for (let rep = positiveIntArg('reps', 1); rep > 0; rep--) {
    const one = await timed(() => runCampaignInWorkers(config, 1, never));
    const two = await timed(() => runCampaignInWorkers(config, 2, never));
    if (one.commands !== two.commands)
      throw new Error(`1 and 2 workers disagree: ${one.commands} vs ${two.commands} commands`);
    if (one.ms < best.one) [best.one, best.cpu1] = [one.ms, one.cpuPerWall];
    if (two.ms < best.two) [best.two, best.cpu2] = [two.ms, two.cpuPerWall];
  }
  return {
    workersSpeedup2: best.one / best.two,
    workers1Seconds: best.one / 1000,
    workers2Seconds: best.two / 1000,
    workersCpuRatio2: (best.one * best.cpu1) / (best.two * best.cpu2),
    workers1CpuPerWall: best.cpu1,
    workers2CpuPerWall: best.cpu2,
  };
}

if (process.argv[1]?.endsWith('workers.js')) {
  const keys = await measure();
  console.log(`kvm-memmodel check --workers (${availableParallelism()} cores here)`);
  console.log(
    `  the same campaign (${positiveIntArg('runs', 25000)} runs per arch): 1 worker ` +
      `${keys.workers1Seconds!.toFixed(2)} s, 2 workers ${keys.workers2Seconds!.toFixed(2)} s: ` +
      `${keys.workersSpeedup2!.toFixed(2)}x`,
  );
  console.log(
    `  cores busy on average (CPU time / wall time): 1 worker ${keys.workers1CpuPerWall!.toFixed(2)}, ` +
      `2 workers ${keys.workers2CpuPerWall!.toFixed(2)}; CPU time 1 worker / 2 workers ` +
      `${keys.workersCpuRatio2!.toFixed(2)}`,
  );
  console.log(JSON.stringify(keys));
}
