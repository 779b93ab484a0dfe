// Concurrent cases against sequential sequences on the same budget, in one run (issue 10 item 8):
// cases/s and commands/s for --threads 2 and 3 next to the sequential campaign's runs/s, and the
// linearizability checker's time per engine history (median, p99) with its undecided rate; then the
// same figures on the real kernel (bench/concurrency-kernel.ts), skipped with the reason without /dev/kvm.
// Run: npm run bench:concurrency [-- --runs N --seed S --kernel-runs K]
import fc from 'fast-check';
import { positiveIntArg } from './args.js';
import type { Arch } from '../model/abi.js';
import { applyCommand, type SequentialCommand } from '../model/spec.js';
import { newSpecState } from '../model/state.js';
import { UPSTREAM_CONFIG } from '../model/series.js';
import { concurrentArbitraryFor } from '../properties/concurrent-generators.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { checkLinearizable } from '../properties/linearizability.js';
import { specHistoryModel } from '../properties/spec-history-model.js';
import { runConcurrentCase, type ConcurrentOutcome } from '../src/harness/concurrent.js';
import { runCampaign } from '../src/harness/runner.js';
import { PLATFORM, kernelFigures, type KernelFigures } from './concurrency-kernel.js';

const runs = positiveIntArg('runs', 1000);
const seed = positiveIntArg('seed', 1);
/** Sequences, and concurrent cases per thread count, on the kernel (a fresh VM each). */
const kernelRuns = positiveIntArg('kernel-runs', 1000);
const arches: Arch[] = ['x86', 'arm64'];

const sequentialStarted = performance.now();
const sequential = runCampaign({ arches, seed, runs, maxCommands: 40, invariants: INVARIANT_IDS, mutant: null });
const sequentialMs = performance.now() - sequentialStarted;

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0;
};

interface Row {
  threads: number;
  cases: number;
  commands: number;
  ms: number;
  checkMs: number[];
  undecided: number;
}

function concurrent(threads: number): Row {
  const row: Row = { threads, cases: 0, commands: 0, ms: 0, checkMs: [], undecided: 0 };
  for (const [i, arch] of arches.entries()) {
    const cases = fc.sample(concurrentArbitraryFor(UPSTREAM_CONFIG, threads), { numRuns: runs, seed: seed + i });
    const session = { arch, mutant: null, invariants: new Set(INVARIANT_IDS) };
    for (const c of cases) {
      const started = performance.now();
      const out: ConcurrentOutcome = runConcurrentCase(session, c);
      row.ms += performance.now() - started;
      row.cases++;
      row.commands += out.case.setup.length + out.history.events.length;
      // The checker alone, on the same history (without the final-memory check).
      const spec = newSpecState(arch);
      for (const cmd of out.case.setup) applyCommand(spec, cmd as SequentialCommand);
      const checkStarted = performance.now();
      const verdict = checkLinearizable(specHistoryModel(spec, undefined, out.history), out.history);
      row.checkMs.push(performance.now() - checkStarted);
      if (verdict.kind === 'undecided') row.undecided++;
    }
  }
  return row;
}

const rows = [concurrent(2), concurrent(3)];
const seqRate = sequential.runs / (sequentialMs / 1000);
const seqCmdRate = sequential.commands / (sequentialMs / 1000);
console.log(`concurrency bench: ${runs} runs or cases per arch (x86, arm64), seed ${seed}`);
console.log(
  `  sequential: ${sequential.runs} sequences, ${sequential.commands} commands ` +
    `in ${(sequentialMs / 1000).toFixed(1)} s: ${seqRate.toFixed(0)} sequences/s, ${seqCmdRate.toFixed(0)} commands/s`,
);
for (const r of rows) {
  const rate = r.cases / (r.ms / 1000);
  const cmdRate = r.commands / (r.ms / 1000);
  console.log(
    `  --threads ${r.threads}: ${r.cases} cases, ${r.commands} commands in ${(r.ms / 1000).toFixed(1)} s: ` +
      `${rate.toFixed(0)} cases/s (${(rate / seqRate).toFixed(2)}x sequential sequences/s), ` +
      `${cmdRate.toFixed(0)} commands/s (${(cmdRate / seqCmdRate).toFixed(2)}x)`,
  );
  console.log(
    `    checker per history: median ${quantile(r.checkMs, 0.5).toFixed(3)} ms, ` +
      `p99 ${quantile(r.checkMs, 0.99).toFixed(3)} ms; undecided ${r.undecided} of ${r.cases}`,
  );
}
const kernel = await kernelFigures(kernelRuns, seed);
if ('skipped' in kernel) console.log(`  kernel: SKIPPED ${kernel.skipped}`);
else printKernel(kernel);

function printKernel(k: KernelFigures): void {
  const seqMs = k.sequential.ms;
  const rate = k.sequential.runs / (seqMs / 1000);
  console.log(
    `  kernel (/dev/kvm, profile ${PLATFORM}, ${kernelRuns} runs or cases, x86): sequential kvm check ` +
      `${k.sequential.runs} sequences, ${k.sequential.commands} commands in ${(seqMs / 1000).toFixed(1)} s: ` +
      `${rate.toFixed(0)} sequences/s`,
  );
  for (const r of k.rows) {
    const caseRate = r.cases / (r.ms / 1000);
    const stopped = r.stoppedAt ? `; stopped at a ${r.stoppedAt} finding` : '';
    console.log(
      `  kernel --threads ${r.threads}: ${r.cases} cases judged (${r.leftOut} left out), ${r.commands} commands ` +
        `in ${(r.ms / 1000).toFixed(1)} s: ${caseRate.toFixed(0)} cases/s ` +
        `(${(caseRate / rate).toFixed(2)}x sequential kvm sequences/s)${stopped}`,
    );
    console.log(
      `    checker per kernel history: median ${quantile([...r.checkMs], 0.5).toFixed(3)} ms, ` +
        `p99 ${quantile([...r.checkMs], 0.99).toFixed(3)} ms; undecided ${r.undecided} of ${r.cases}`,
    );
  }
}

const kernelJson =
  'skipped' in kernel
    ? { skipped: kernel.skipped }
    : {
        sequencesPerSec: kernel.sequential.runs / (kernel.sequential.ms / 1000),
        concurrent: kernel.rows.map((r) => ({
          threads: r.threads,
          casesPerSec: r.cases / (r.ms / 1000),
          checkMedianMs: quantile([...r.checkMs], 0.5),
          checkP99Ms: quantile([...r.checkMs], 0.99),
          undecided: r.undecided,
          leftOut: r.leftOut,
          stoppedAt: r.stoppedAt,
        })),
      };
console.log(
  JSON.stringify({
    bench: 'concurrency',
    kernel: kernelJson,
    runs,
    seed,
    sequential: { sequencesPerSec: seqRate, commandsPerSec: seqCmdRate },
    concurrent: rows.map((r) => ({
      threads: r.threads,
      casesPerSec: r.cases / (r.ms / 1000),
      commandsPerSec: r.commands / (r.ms / 1000),
      checkMedianMs: quantile(r.checkMs, 0.5),
      checkP99Ms: quantile(r.checkMs, 0.99),
      undecided: r.undecided,
    })),
  }),
);
