// The linearizability checker's cost per history: time (median, p99, max), configurations explored
// and the undecided rate, for random overlapping toy-register histories (3 threads x 4 operations)
// and spec histories (3 threads x 3 commands: two vCPUs and a VMM thread on a dirty-logged slot).
// Each history is linearizable by construction (a linearization point drawn inside every interval,
// the model run in point order records the outcomes); every other one then has one outcome
// replaced by the outcome of another point order, so about half are not linearizable.
// Run: npm run build && npm run bench:lin [-- --histories N --seed S]
import { KVM_MEM_LOG_DIRTY_PAGES } from '../model/abi.js';
import type { Command } from '../model/commands.js';
import type { HistoryEvent, LinearizabilityVerdict } from '../model/history.js';
import { applyCommand, type SequentialCommand } from '../model/spec.js';
import { newSpecState, type SpecState } from '../model/state.js';
import { HVA_REGIONS } from '../properties/generators.js';
import { checkLinearizable, DEFAULT_MAX_STATES } from '../properties/linearizability.js';
import { specHistoryModel } from '../properties/spec-history-model.js';
import { registerModel, type RegisterOp, type ToyEvent } from '../properties/toy-models.js';
import { positiveIntArg } from './args.js';

const histories = positiveIntArg('histories', 2000);
const seed = positiveIntArg('seed', 1);

/** mulberry32: a small seeded generator, so every history is reproducible from --seed. */
function rng(s: number): () => number {
  let a = s >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Slot<C> {
  thread: number;
  index: number;
  invoke: number;
  respond: number;
  point: number;
  cmd: C;
}

/** Overlapping intervals: per thread, random gaps and durations on a shared clock. */
function layout<C>(rand: () => number, threads: C[][]): Slot<C>[] {
  const slots: Slot<C>[] = [];
  threads.forEach((cmds, thread) => {
    let t = Math.floor(rand() * 4);
    cmds.forEach((cmd, index) => {
      const invoke = t;
      const respond = invoke + 1 + Math.floor(rand() * 12);
      slots.push({ thread, index, invoke, respond, point: invoke + rand() * (respond - invoke), cmd });
      t = respond + 1 + Math.floor(rand() * 3);
    });
  });
  return slots;
}

const byPoint = <C>(slots: Slot<C>[]): number[] =>
  slots.map((_, i) => i).sort((a, b) => slots[a]!.point - slots[b]!.point || a - b);

function toyHistory(rand: () => number, corrupt: boolean): ToyEvent<RegisterOp>[] {
  const threads = Array.from({ length: 3 }, () =>
    Array.from({ length: 4 }, () => (rand() < 0.5 ? 'w' : 'r') as 'w' | 'r'),
  );
  const slots = layout(rand, threads);
  const values = new Array<number>(slots.length);
  let reg = 0;
  for (const i of byPoint(slots)) {
    if (slots[i]!.cmd === 'w') reg = 1 + Math.floor(rand() * 3);
    values[i] = reg;
  }
  if (corrupt) values[Math.floor(rand() * values.length)] = Math.floor(rand() * 4);
  return slots.map((s, id) => ({
    id,
    thread: s.thread,
    index: s.index,
    invoke: s.invoke,
    respond: s.respond,
    op: { op: s.cmd === 'w' ? 'write' : 'read', value: values[id]! },
  }));
}

const HVA = HVA_REGIONS[0]!;

function specSetup(): SpecState {
  const s = newSpecState('x86');
  applyCommand(s, { kind: 'mmap', hva: HVA, size: 0x10000, prot: 'rw', backing: 'anon' });
  const slot = { api: 'v2', slot: 0, as: 0, flags: KVM_MEM_LOG_DIRTY_PAGES, gpa: 0, size: 0x10000, hva: HVA } as const;
  applyCommand(s, { kind: 'setMemslot', ...slot });
  return s;
}

/** Two pages only, so the threads collide on them. */
function vcpuCommand(rand: () => number, vcpu: number): SequentialCommand {
  const gpa = 0x1000 * (1 + Math.floor(rand() * 2));
  const write = rand() < 0.5;
  return { kind: 'guestAccess', vcpu, gpa, len: 8, write, value: write ? BigInt(1 + Math.floor(rand() * 3)) : 0n };
}

function vmmCommand(rand: () => number): SequentialCommand {
  const hva = HVA + 0x1000 * (1 + Math.floor(rand() * 2));
  const pick = rand();
  if (pick < 0.3) return { kind: 'hostWrite', hva, len: 8, value: BigInt(1 + Math.floor(rand() * 3)) };
  if (pick < 0.55) return { kind: 'hostRead', hva, len: 8 };
  if (pick < 0.85) return { kind: 'getDirtyLog', slot: 0, as: 0 };
  return { kind: 'madviseDontneed', hva, size: 0x1000 };
}

function specHistory(rand: () => number, setup: SpecState, corrupt: boolean): HistoryEvent[] {
  const threads = [0, 1].map((v) => [0, 1, 2].map(() => vcpuCommand(rand, v)));
  threads.push([0, 1, 2].map(() => vmmCommand(rand)));
  const slots = layout(rand, threads);
  const run = (order: number[]) => {
    const s = structuredClone(setup);
    const outcomes = new Array<ReturnType<typeof applyCommand>>(slots.length);
    for (const i of order) outcomes[i] = applyCommand(s, slots[i]!.cmd);
    return outcomes;
  };
  const outcomes = run(byPoint(slots));
  if (corrupt) {
    // One outcome as another order (reversed points) would have given it: a plausible wrong answer.
    const other = run(byPoint(slots).reverse());
    const victim = Math.floor(rand() * slots.length);
    outcomes[victim] = other[victim]!;
  }
  return slots.map((s, id) => ({
    id,
    thread: s.thread,
    index: s.index,
    command: s.cmd as Command,
    outcome: outcomes[id]!,
    invoke: s.invoke,
    respond: s.respond,
  }));
}

interface Sample {
  ms: number;
  /** CPU time of the process: the machine is shared, so wall time also counts waiting for a core. */
  cpuMs: number;
  explored: number;
  verdict: LinearizabilityVerdict['kind'];
}

/** The first WARMUP histories are checked but not counted: they time the JIT, not the checker. */
const WARMUP = 200;

function measure(make: (rand: () => number, corrupt: boolean) => () => LinearizabilityVerdict): Sample[] {
  const rand = rng(seed);
  const out: Sample[] = [];
  for (let i = 0; i < WARMUP; i++) make(rand, i % 2 === 1)();
  for (let i = 0; i < histories; i++) {
    const check = make(rand, i % 2 === 1);
    const cpu = process.cpuUsage();
    const started = performance.now();
    const v = check();
    const ms = performance.now() - started;
    const used = process.cpuUsage(cpu);
    out.push({ ms, cpuMs: (used.user + used.system) / 1000, explored: v.statesExplored, verdict: v.kind });
  }
  return out;
}

const quantile = (xs: number[], q: number): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
};

function report(name: string, samples: Sample[]): void {
  const ms = samples.map((s) => s.ms);
  const explored = samples.map((s) => s.explored);
  const count = (k: LinearizabilityVerdict['kind']) => samples.filter((s) => s.verdict === k).length;
  console.log(
    `${name}: ${samples.length} histories; time per history median ${quantile(ms, 0.5).toFixed(3)} ms, ` +
      `p99 ${quantile(ms, 0.99).toFixed(3)} ms, max ${Math.max(...ms).toFixed(3)} ms`,
  );
  const cpu = samples.map((s) => s.cpuMs);
  console.log(
    `  CPU time per history median ${quantile(cpu, 0.5).toFixed(3)} ms, p99 ${quantile(cpu, 0.99).toFixed(3)} ms`,
  );
  console.log(
    `  configurations explored: median ${quantile(explored, 0.5)}, p99 ${quantile(explored, 0.99)}, ` +
      `max ${Math.max(...explored)}`,
  );
  console.log(
    `  verdicts: ${count('linearizable')} linearizable, ${count('not-linearizable')} not, ` +
      `${count('undecided')} undecided (${((100 * count('undecided')) / samples.length).toFixed(2)}%, ` +
      `bound ${DEFAULT_MAX_STATES})`,
  );
}

report(
  'toy register, 3 threads x 4 ops',
  measure((rand, corrupt) => {
    const events = toyHistory(rand, corrupt);
    return () => checkLinearizable(registerModel, { events });
  }),
);
const setup = specSetup();
report(
  'spec (x86), 3 threads x 3 commands',
  measure((rand, corrupt) => {
    const events = specHistory(rand, setup, corrupt);
    return () => checkLinearizable(specHistoryModel(setup), { events });
  }),
);
