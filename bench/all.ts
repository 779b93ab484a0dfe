// npm run bench: every scale-and-speed figure of issue 11 in one run, one benchmark after another
// (each measures its own ratio side by side in the same process), then ONE JSON line with every key,
// so the figures can be compared over time. A benchmark that cannot run here (no /dev/kvm) says why
// and contributes no keys; one that fails stops the run with exit 1 (its numbers would mean nothing).
// Each module also runs alone: node dist/bench/<name>.js prints its own lines and keys. Not measured
// yet (issue 11 still open): tibGetDirtyLogEmptyMs and the export --c size at 2 GiB (targets 4b, 7).
import { execFileSync } from 'node:child_process';

type Measure = () => Promise<Record<string, number>>;

/** The benchmarks in the order the issue lists their targets (1 to 7). */
const BENCHMARKS: readonly (readonly [string, string, () => Promise<{ measure: Measure }>])[] = [
  [
    'state-size',
    'target 1: per-command cost at 16 vs 16,384 pages and 16 vs 1,024 THP blocks',
    () => import('./state-size.js'),
  ],
  ['throughput', 'target 2: commands/s against a bare fast-check modelRun', () => import('./throughput.js')],
  ['workers', 'target 3: the same campaign on 1 and 2 worker threads', () => import('./workers.js')],
  ['limits', "target 4: KVM's limits (32,764 slots, warm-TLB unmap, logging over THP)", () => import('./limits.js')],
  ['vmm', 'target 5: --profile vmm against the default small runs', () => import('./vmm.js')],
  [
    'three-way',
    'target 6: the same sequences through spec + engine, and with the kernel',
    () => import('./three-way.js'),
  ],
];

const round = (v: number): number => (Number.isInteger(v) ? v : Number(v.toPrecision(4)));

function commit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

const keys: Record<string, number | string> = { commit: commit(), date: new Date().toISOString() };
for (const [name, what, load] of BENCHMARKS) {
  console.log(`== ${name}: ${what}`);
  const started = performance.now();
  const figures = await (await load()).measure();
  for (const [key, value] of Object.entries(figures)) {
    console.log(`  ${key}: ${round(value)}`);
    keys[key] = round(value);
  }
  console.log(`  (${((performance.now() - started) / 1000).toFixed(1)} s)`);
}
console.log(JSON.stringify(keys));
