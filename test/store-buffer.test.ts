// The store buffer (src/mmu/store-buffer.ts) on the classic litmus tests, every interleaving
// enumerated: MP (message passing) and SB (store buffering), under 'relaxed' (arm64) and 'tso' (x86).
import { describe, expect, it } from 'vitest';
import type { ThreadClock } from '../src/mmu/steps.js';
import { StoreBuffer, type MemoryModel } from '../src/mmu/store-buffer.js';

type Op =
  | { kind: 'st'; loc: string; value: number; release?: boolean }
  | { kind: 'ld'; loc: string; reg: string }
  | { kind: 'fence' };

/** Run the threads under one sequence of decisions; `more` is how many choices each extra decision had. */
function runOnce(model: MemoryModel, threads: readonly Op[][], picks: readonly number[]) {
  const clock: ThreadClock = { current: -1 };
  const buffer = new StoreBuffer(clock, model);
  const memory = new Map<string, number>();
  const regs: Record<string, number> = {};
  const pc = threads.map(() => 0);
  const widths: number[] = [];
  for (let d = 0; ; d++) {
    const runnable = threads.flatMap((ops, t) => (pc[t]! < ops.length ? [t] : []));
    const stores = buffer.committable();
    const n = runnable.length + stores.length;
    if (n === 0) return { regs, memory, widths };
    widths.push(n);
    const pick = picks[d] ?? 0;
    if (pick >= runnable.length) {
      buffer.makeVisible(stores[pick - runnable.length]!);
      continue;
    }
    const t = runnable[pick]!;
    const op = threads[t]![pc[t]!++]!;
    clock.current = t;
    if (op.kind === 'st') buffer.store(op.loc, op.value, () => memory.set(op.loc, op.value), op.release);
    else if (op.kind === 'ld') regs[op.reg] = buffer.load(op.loc, () => memory.get(op.loc) ?? 0);
    else buffer.fence();
    clock.current = -1;
  }
}

/** Every outcome (registers as "r0=..,r1=..") over every interleaving and visibility order. */
function outcomes(model: MemoryModel, threads: readonly Op[][]): Set<string> {
  const out = new Set<string>();
  const explore = (prefix: number[]): void => {
    const { regs, widths } = runOnce(model, threads, prefix);
    if (prefix.length < widths.length) {
      for (let c = 0; c < widths[prefix.length]!; c++) explore([...prefix, c]);
      return;
    }
    out.add(
      Object.keys(regs)
        .sort()
        .map((r) => `${r}=${regs[r]}`)
        .join(','),
    );
  };
  explore([]);
  return out;
}

const st = (loc: string, value: number, release = false): Op => ({ kind: 'st', loc, value, release });
const ld = (loc: string, reg: string): Op => ({ kind: 'ld', loc, reg });
const fence: Op = { kind: 'fence' };

// MP: T0 writes data then flag; T1 reads flag then data. The weak outcome: flag seen, data not.
const mp = (release: boolean): Op[][] => [
  [st('data', 1), st('flag', 1, release)],
  [ld('flag', 'r0'), ld('data', 'r1')],
];
// SB: each thread stores its location then loads the other's. The weak outcome: both read 0.
const sb = (withFence: boolean): Op[][] => [
  [st('x', 1), ...(withFence ? [fence] : []), ld('y', 'r0')],
  [st('y', 1), ...(withFence ? [fence] : []), ld('x', 'r1')],
];

describe('store buffer litmus tests', () => {
  it('MP under relaxed: the weak outcome is allowed without a release', () => {
    expect(outcomes('relaxed', mp(false))).toContain('r0=1,r1=0');
  });

  it('MP under relaxed: a store-release on the flag forbids the weak outcome', () => {
    const got = outcomes('relaxed', mp(true));
    expect(got).not.toContain('r0=1,r1=0');
    expect(got).toEqual(new Set(['r0=0,r1=0', 'r0=0,r1=1', 'r0=1,r1=1']));
  });

  it('MP under tso: stores leave in program order, so the weak outcome never shows', () => {
    expect(outcomes('tso', mp(false))).not.toContain('r0=1,r1=0');
  });

  it('SB under tso: both loads may read 0 (a store waits in the buffer past the load)', () => {
    expect(outcomes('tso', sb(false))).toContain('r0=0,r1=0');
  });

  it('SB under tso with smp_mb between store and load: the weak outcome is forbidden', () => {
    const got = outcomes('tso', sb(true));
    expect(got).not.toContain('r0=0,r1=0');
    expect(got).toEqual(new Set(['r0=0,r1=1', 'r0=1,r1=0', 'r0=1,r1=1']));
  });

  it('a thread reads its own buffered store (forwarding), others do not see it yet', () => {
    const clock: ThreadClock = { current: 0 };
    const buffer = new StoreBuffer(clock, 'relaxed');
    const memory = new Map<string, number>();
    buffer.store('x', 7, () => memory.set('x', 7));
    expect(buffer.load('x', () => memory.get('x') ?? 0)).toBe(7);
    clock.current = 1;
    expect(buffer.load('x', () => memory.get('x') ?? 0)).toBe(0);
    buffer.drainAll();
    expect(buffer.load('x', () => memory.get('x') ?? 0)).toBe(7);
  });

  it('relaxed keeps coherence: two stores to one location become visible oldest first', () => {
    const clock: ThreadClock = { current: 0 };
    const buffer = new StoreBuffer(clock, 'relaxed');
    buffer.store('x', 1, () => undefined);
    buffer.store('y', 1, () => undefined);
    buffer.store('x', 2, () => undefined);
    expect(buffer.committable().map((s) => `${s.loc}=${s.value}`)).toEqual(['x=1', 'y=1']);
  });

  it('run alone (no current thread) a store is visible at once', () => {
    const clock: ThreadClock = { current: -1 };
    const buffer = new StoreBuffer(clock, 'relaxed');
    let seen = 0;
    buffer.store('x', 1, () => (seen = 1));
    expect(seen).toBe(1);
    expect(buffer.empty).toBe(true);
  });
});
