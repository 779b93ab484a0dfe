// The kvm backend's costs, in one run on this machine: a guest access through the helper (batched,
// and one request per round trip) against the same access in a raw C ioctl loop, as a ratio; and
// sequences per second for the three-way differential (spec + engine + kernel) against spec +
// engine alone; and concurrent cases per second on the kernel's threads (2 and 3 threads) with the
// linearizability check's time per history. Run: npm run bench:kvm [-- --accesses N --runs N --cases N]
import { execFileSync } from 'node:child_process';
import { positiveIntArg } from './args.js';
import type { Command } from '../model/commands.js';
import type { ConcurrentCase, ThreadCommand } from '../model/history.js';
import { makeConfig } from '../model/series.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { checkLinearizable } from '../properties/linearizability.js';
import { specHistoryModel } from '../properties/spec-history-model.js';
import { runCampaign } from '../src/harness/runner.js';
import { KvmBackend } from '../src/kvm/backend.js';
import { runConcurrentOnKernel } from '../src/kvm/concurrent.js';
import { HelperProcess, helperPath } from '../src/kvm/helper.js';
import { loadProfile } from '../src/kvm/platform.js';
import { OP, type Request } from '../src/kvm/protocol.js';

const accesses = positiveIntArg('accesses', 20000);
const runs = positiveIntArg('runs', 2000);
const cases = positiveIntArg('cases', 500);

const opened = KvmBackend.open();
if ('skipped' in opened) {
  console.log(`SKIPPED kvm benchmark: ${opened.skipped}`);
  process.exit(4);
}
opened.close();

const rawNs = Number(execFileSync(helperPath(), ['--bench-raw', String(accesses)], { encoding: 'utf8' }).trim());

const helper = new HelperProcess();
const HVA = 0x10_0000_0000;
const setup: Request[] = [
  { op: OP.reset, a32: 0, args: [] },
  { op: OP.mmap, a32: 0, args: [HVA, 0x200000, 2, 0] },
  { op: OP.setRegion, a32: 2, args: [0, 0, 0, 0x200000, HVA, -1, 0] },
];
const read = (i: number): Request => ({ op: OP.guestAccess, a32: 0, args: [0, (i % 512) * 4096, 8, 0, 0] });
helper.runBatch([...setup, read(0)]); // warm: the harness slot and guest exist from the first access
const batched = (): number => {
  const reqs = Array.from({ length: accesses }, (_, i) => read(i));
  const t0 = performance.now();
  const { responses } = helper.runBatch(reqs);
  const ms = performance.now() - t0;
  if (responses.some((r) => r.exitReason !== 5)) throw new Error('bench: an access did not halt');
  return (ms * 1e6) / accesses;
};
const oneByOne = (): number => {
  const n = Math.min(accesses, 5000);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) helper.runBatch([read(i)]);
  return ((performance.now() - t0) * 1e6) / n;
};
const batchNs = batched();
const singleNs = oneByOne();
helper.stop();

const profile = loadProfile('pvm-6.18');
const model = makeConfig(
  [],
  {},
  profile.deviations.map((d) => d.id),
);
const base = {
  arches: ['x86' as const],
  seed: 1,
  runs,
  maxCommands: 40,
  invariants: [...INVARIANT_IDS],
  mutant: null,
  model,
};
runCampaign({ ...base, runs: Math.min(runs, 300), seed: 2 }); // JIT warm-up, not measured
const modelOnly = runCampaign(base);
const backend = KvmBackend.open();
if ('skipped' in backend) throw new Error(backend.skipped);
const threeWay = runCampaign({ ...base, kernel: { backend, profile } });

// Concurrent cases: the setup, then each thread on its own pthread (src/kvm/native/concurrent.c).
const access = (vcpu: number, gpa: number, write: boolean): ThreadCommand => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len: 8,
  write,
  value: write ? 0x11n : 0n,
});
const caseSetup: Command[] = [
  { kind: 'mmap', hva: HVA, size: 0x10000, prot: 'rw', backing: 'anon' },
  { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 1, gpa: 0, size: 0x10000, hva: HVA },
];
const dirtyLog: ThreadCommand = { kind: 'getDirtyLog', slot: 0, as: 0 };
const twoThreads: ConcurrentCase = {
  setup: caseSetup,
  roles: [{ kind: 'vcpu', vcpu: 0 }, { kind: 'vmm' }],
  threads: [
    [access(0, 0, true), access(0, 0, false)],
    [dirtyLog, { kind: 'munmap', hva: HVA + 0x1000, size: 0x1000 }],
  ],
  schedule: [],
};
const threeThreads: ConcurrentCase = {
  ...twoThreads,
  roles: [{ kind: 'vcpu', vcpu: 0 }, { kind: 'vcpu', vcpu: 1 }, { kind: 'vmm' }],
  threads: [twoThreads.threads[0]!, [access(1, 0x3000, true), access(1, 0x3000, false)], twoThreads.threads[1]!],
};
interface ConcurrentFigures {
  perSec: number;
  sequentialPerSec: number;
  checkMedianUs: number;
  checkP99Us: number;
  notLinearizable: number;
  undecided: number;
}
function benchConcurrent(c: ConcurrentCase): ConcurrentFigures {
  const checkUs: number[] = [];
  let notLinearizable = 0;
  let undecided = 0;
  runConcurrentOnKernel(backend as KvmBackend, c, model); // warm
  const t0 = performance.now();
  for (let i = 0; i < cases; i++) {
    const run = runConcurrentOnKernel(backend as KvmBackend, c, model);
    if (run.kind !== 'ran' || !run.history) throw new Error(`bench: the concurrent case did not run (${run.kind})`);
    const c0 = performance.now();
    const verdict = checkLinearizable(specHistoryModel(run.specAfterSetup), run.history);
    checkUs.push((performance.now() - c0) * 1000);
    if (verdict.kind === 'not-linearizable') notLinearizable++;
    if (verdict.kind === 'undecided') undecided++;
  }
  const perSec = cases / ((performance.now() - t0) / 1000);
  // The same commands as one sequence (setup, then thread 0, thread 1, ...) through the sequential batch.
  const sequence = [...c.setup, ...c.threads.flat()];
  const s0 = performance.now();
  for (let i = 0; i < cases; i++) (backend as KvmBackend).run(sequence);
  const sequentialPerSec = cases / ((performance.now() - s0) / 1000);
  checkUs.sort((a, b) => a - b);
  const q = (p: number): number => checkUs[Math.min(checkUs.length - 1, Math.floor(p * checkUs.length))]!;
  return { perSec, sequentialPerSec, checkMedianUs: q(0.5), checkP99Us: q(0.99), notLinearizable, undecided };
}
const concurrent = [
  [2, benchConcurrent(twoThreads)],
  [3, benchConcurrent(threeThreads)],
] as const;
backend.close();

const us = (ns: number): string => `${(ns / 1000).toFixed(1)} us`;
const perSec = (n: number, ms: number): string => `${Math.round(n / (ms / 1000))}/s`;
console.log(`guest access (8-byte read of RAM, ${accesses} accesses):`);
console.log(`  raw C loop (SET_REGS + RUN + GET_REGS)     ${us(rawNs)}`);
console.log(`  through the helper, one batch              ${us(batchNs)}   ratio ${(batchNs / rawNs).toFixed(2)}x raw`);
console.log(
  `  through the helper, one request per batch  ${us(singleNs)}   ratio ${(singleNs / rawNs).toFixed(2)}x raw`,
);
console.log(`differential campaign, ${runs} sequences (x86, platform pvm-6.18, all invariants):`);
const throughputOf = (r: { runs: number; commands: number; elapsedMs: number }): string =>
  `${perSec(r.runs, r.elapsedMs)} sequences, ${perSec(r.commands, r.elapsedMs)} commands`;
console.log(`  spec + engine           ${throughputOf(modelOnly)}`);
console.log(
  `  spec + engine + kernel  ${throughputOf(threeWay)}${threeWay.ok ? '' : ' (FAILED: see check --backend kvm)'}`,
);
console.log(`concurrent cases on the kernel's threads, ${cases} cases each (fresh VM + setup + threads):`);
for (const [n, f] of concurrent) {
  console.log(
    `  ${n} threads  ${Math.round(f.perSec)}/s` +
      ` (the same commands as one sequence: ${Math.round(f.sequentialPerSec)}/s)` +
      `  linearizability check ${f.checkMedianUs.toFixed(0)} us median, ${f.checkP99Us.toFixed(0)} us p99;` +
      ` not linearizable ${f.notLinearizable}, undecided ${f.undecided}`,
  );
}
