// The engine's resumable steps under directed schedules: each concurrency mutant is reachable only
// through an interleaving, and the per-step checks (properties/concurrent-invariants.ts) and the
// linearizability oracle see it; the correct engine passes the same schedules.
import { describe, expect, test } from 'vitest';
import { SZ_2M } from '../model/abi.js';
import type { Command, GuestAccess } from '../model/commands.js';
import type { History } from '../model/history.js';
import { applyCommand, type SequentialCommand } from '../model/spec.js';
import { newSpecState } from '../model/state.js';
import { ConcurrentChecks } from '../properties/concurrent-invariants.js';
import { checkLeafJustified } from '../properties/engine-invariants.js';
import { checkLinearizable } from '../properties/linearizability.js';
import { specHistoryModel } from '../properties/spec-history-model.js';
import { Engine } from '../src/mmu/engine.js';
import { runInterleaved } from '../src/mmu/interleave.js';
import type { MutantName } from '../src/mmu/mutants.js';
import { TLB_FLUSH_PENDING } from '../src/mmu/unmap.js';

const HVA = 0x10_0000_0000;
const mmap: Command = { kind: 'mmap', hva: HVA, size: SZ_2M, prot: 'rw', backing: 'anon' };
const slot = (flags = 0): Command => ({
  kind: 'setMemslot',
  api: 'v2',
  as: 0,
  slot: 0,
  flags,
  gpa: 0,
  size: SZ_2M,
  hva: HVA,
});
const read = (vcpu: number, gpa = 0x1000): GuestAccess => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len: 1,
  write: false,
  value: 0n,
});
const write = (vcpu: number, gpa: number, value: bigint): GuestAccess => ({ ...read(vcpu, gpa), write: true, value });

interface Run {
  history: History;
  /** leaf-justified problems seen whenever no VMM thread was inside a command. */
  quiescentProblems: string[];
  linearizable: string;
}

function run(
  mutant: MutantName | null,
  setup: Command[],
  threads: Command[][],
  schedule: number[],
  vmmThreads: number[],
): Run {
  const engine = new Engine('x86', mutant);
  const spec = newSpecState('x86');
  for (const c of setup) {
    engine.apply(c);
    applyCommand(spec, c as SequentialCommand);
  }
  const busy = new Set<number>();
  const quiescentProblems: string[] = [];
  const history = runInterleaved(engine, threads, schedule, (s) => {
    if (vmmThreads.includes(s.thread)) {
      if (s.finished) busy.delete(s.thread);
      else busy.add(s.thread);
    }
    if (busy.size === 0) quiescentProblems.push(...checkLeafJustified(engine.kvm));
  });
  const verdict = checkLinearizable(specHistoryModel(spec), history);
  return { history, quiescentProblems, linearizable: verdict.kind };
}

describe('a fault racing an MMU-notifier invalidation', () => {
  // T0's fault snapshots mmu_invalidate_seq and pins the page; T1's MADV_DONTNEED invalidates and
  // frees it; T0 then takes mmu_lock and must see the invalidation (INV-40).
  const setup = [mmap, slot(), { kind: 'hostWrite', hva: HVA + 0x1000, len: 1, value: 7n } as Command];
  const threads: Command[][] = [[read(0), read(0)], [{ kind: 'madviseDontneed', hva: HVA, size: 0x2000 }]];
  const schedule = [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0];

  test('the correct engine retries: every quiescent point is justified, the history linearizes', () => {
    const r = run(null, setup, threads, schedule, [1]);
    expect(r.quiescentProblems).toEqual([]);
    expect(r.linearizable).toBe('linearizable');
  });

  test('notifier-skips-invalidate-begin maps the freed page', () => {
    const r = run('notifier-skips-invalidate-begin', setup, threads, schedule, [1]);
    expect(r.quiescentProblems.length).toBeGreaterThan(0);
  });

  test('fault-ignores-mmu-seq is seen here too, without the raceAccess window', () => {
    const r = run('fault-ignores-mmu-seq', setup, threads, schedule, [1]);
    expect(r.quiescentProblems.length).toBeGreaterThan(0);
  });
});

describe('a fault racing a memslot delete', () => {
  const setup = [mmap, slot(), { kind: 'hostWrite', hva: HVA + 0x1000, len: 1, value: 7n } as Command];
  const del: Command = { ...(slot() as Extract<Command, { kind: 'setMemslot' }>), size: 0 };
  const threads: Command[][] = [[read(0), read(0)], [del]];
  const schedule = [0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0];

  test('the correct engine waits for the reader before zapping', () => {
    const r = run(null, setup, threads, schedule, [1]);
    expect(r.quiescentProblems).toEqual([]);
    expect(r.linearizable).toBe('linearizable');
  });

  test('memslot-zap-before-srcu-sync leaves a mapping of the deleted slot', () => {
    const r = run('memslot-zap-before-srcu-sync', setup, threads, schedule, [1]);
    expect([r.quiescentProblems.length > 0, r.linearizable]).not.toEqual([false, 'linearizable']);
  });
});

describe('a dirty-log harvest racing a vCPU write', () => {
  const setup = [mmap, slot(1), write(0, 0x1000, 1n)];
  const get: Command = { kind: 'getDirtyLog', as: 0, slot: 0 };
  const threads: Command[][] = [[write(1, 0x2000, 2n)], [get, get]];

  test('the correct engine reports the write in one harvest or the next', () => {
    for (const schedule of [
      [1, 0, 0, 0, 0, 1, 1, 1],
      [0, 1, 1, 1, 1],
      [1, 1, 1, 1, 0, 0, 0, 0],
    ]) {
      expect(run(null, setup, threads, schedule, [1]).linearizable).toBe('linearizable');
    }
  });

  test('dirty-harvest-not-atomic loses it', () => {
    // T1 stops between its copy and its clear while T0's write (a table walk, the fault, its map
    // walk, the re-entry) sets the bit.
    const verdicts = [
      [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
      [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    ].map((schedule) => run('dirty-harvest-not-atomic', setup, threads, schedule, [1]).linearizable);
    expect(verdicts).toContain('not-linearizable');
  });
});

describe('INV-2: a stale TLB hit while an invalidation runs', () => {
  // vcpu1 read the page in the setup, so its TLB holds the translation. T1's MADV_DONTNEED zaps the
  // PTE and stops before the remote flush (x86 kvm_flush_remote_tlbs), holding mmu_lock; T0 (vcpu1)
  // hits its stale entry there and reads the old value, which linearizes before the DONTNEED.
  const setup = [mmap, slot(), { kind: 'hostWrite', hva: HVA + 0x1000, len: 1, value: 7n } as Command, read(1)];
  const threads: Command[][] = [[read(1)], [{ kind: 'madviseDontneed', hva: HVA, size: 0x2000 }]];

  function stepsOf(mutant: MutantName | null) {
    const engine = new Engine('x86', mutant);
    const spec = newSpecState('x86');
    for (const c of setup) {
      engine.apply(c);
      applyCommand(spec, c as SequentialCommand);
    }
    engine.takeEvents();
    const checks = new ConcurrentChecks(engine, [{ kind: 'vcpu', vcpu: 1 }, { kind: 'vmm' }]);
    const points: string[] = [];
    const problems: string[] = [];
    const history = runInterleaved(engine, threads, [1, 0, 0, 0, 0, 0], (s) => {
      points.push(`T${s.thread} ${s.point}`);
      problems.push(...checks.afterStep(s, engine.takeEvents()).map((p) => `${p.invariant}: ${p.message}`));
    });
    return { points, problems, history, verdict: checkLinearizable(specHistoryModel(spec), history).kind };
  }

  test('the stale hit happens inside the window, and the history is linearizable', () => {
    const r = stepsOf(null);
    expect(r.points[0]).toBe(`T1 ${TLB_FLUSH_PENDING}`);
    expect(r.points[1]).toBe('T0 returned');
    expect(r.history.events.find((e) => e.thread === 0)?.outcome).toMatchObject({ kind: 'run', value: 7n });
    expect(r.problems).toEqual([]);
    expect(r.verdict).toBe('linearizable');
  });

  test('unmap-skips-tlbi leaves the stale entry after the invalidation returned', () => {
    const r = stepsOf('unmap-skips-tlbi');
    expect(r.problems.some((p) => p.startsWith('tlb-coherent'))).toBe(true);
  });
});
