// The linearizability checker on known histories: toy models with the literature's examples,
// spec histories built from real commands, and properties against a brute-force checker.
import { fc, test as fcTest } from '@fast-check/vitest';
import { describe, expect, test } from 'vitest';
import { KVM_EXIT_MMIO, KVM_MEM_LOG_DIRTY_PAGES } from '../model/abi.js';
import { makeConfig } from '../model/series.js';
import { KVM_MEM_USERFAULT } from '../model/series-abi.js';
import type { Command, GuestAccess } from '../model/commands.js';
import type { HistoryEvent, LinearizabilityVerdict } from '../model/history.js';
import type { Outcome } from '../model/outcomes.js';
import { applyCommand, specAlternatives, type SequentialCommand } from '../model/spec.js';
import { newSpecState, type SpecState } from '../model/state.js';
import { HVA_REGIONS } from '../properties/generators.js';
import {
  checkLinearizable,
  DEFAULT_MAX_STATES,
  type SequentialModel,
  type TimedEvent,
} from '../properties/linearizability.js';
import { specHistoryModel, stateKey } from '../properties/spec-history-model.js';
import {
  kvModel,
  lossyRegisterModel,
  partitionByKey,
  queueModel,
  registerModel,
  toyHistory,
  type KvOp,
  type QueueOp,
  type RegisterOp,
  type ToyEvent,
} from '../properties/toy-models.js';
import { InputError } from '../src/util/errors.js';

const w = (value: number): RegisterOp => ({ op: 'write', value });
const r = (value: number): RegisterOp => ({ op: 'read', value });
const enq = (value: number): QueueOp => ({ op: 'enq', value });
const deq = (value: number | null): QueueOp => ({ op: 'deq', value });

/**
 * An independent judge of a `linearizable` answer: the order is a permutation of the events that
 * respects real-time and program order, and the model accepts it from init (any of its states).
 */
function expectValidOrder<S, E extends TimedEvent>(
  model: SequentialModel<S, E>,
  events: readonly E[],
  order: number[],
) {
  expect([...order].sort((a, b) => a - b)).toEqual(events.map((e) => e.id).sort((a, b) => a - b));
  const byId = new Map(events.map((e) => [e.id, e]));
  const pos = new Map(order.map((id, i) => [id, i]));
  for (const a of events)
    for (const b of events) {
      const before = a.respond < b.invoke || (a.thread === b.thread && a.thread !== undefined && a.index! < b.index!);
      if (before) expect(pos.get(a.id)!, `${a.id} must come before ${b.id}`).toBeLessThan(pos.get(b.id)!);
    }
  let states = [model.init()];
  for (const id of order) states = states.flatMap((s) => model.step(s, byId.get(id)!));
  expect(states.some((s) => !model.accept || model.accept(s))).toBe(true);
}

function expectLinearizable<S, E extends TimedEvent>(model: SequentialModel<S, E>, events: E[]): number[] {
  const v = checkLinearizable(model, { events });
  if (v.kind !== 'linearizable') throw new Error(`expected linearizable, got ${JSON.stringify(v)}`);
  expectValidOrder(model, events, v.order);
  return v.order;
}

function expectNotLinearizable<S, E extends TimedEvent>(model: SequentialModel<S, E>, events: E[]) {
  const v = checkLinearizable(model, { events });
  if (v.kind !== 'not-linearizable') throw new Error(`expected not-linearizable, got ${JSON.stringify(v)}`);
  return v;
}

describe('toy register', () => {
  test('the empty history is linearizable with nothing explored', () => {
    expect(checkLinearizable(registerModel, { events: [] })).toEqual({
      kind: 'linearizable',
      order: [],
      statesExplored: 0,
    });
  });

  test('one thread: a write then a read of it; a read of a stale value is blocked after the write', () => {
    expect(
      expectLinearizable(
        registerModel,
        toyHistory([
          [0, 0, 1, w(1)],
          [0, 2, 3, r(1)],
        ]).events,
      ),
    ).toEqual([0, 1]);
    const v = expectNotLinearizable(
      registerModel,
      toyHistory([
        [0, 0, 1, w(1)],
        [0, 2, 3, r(0)],
      ]).events,
    );
    expect(v.longestPrefix).toEqual([0]);
    expect(v.blocked).toEqual([1]);
  });

  test('sequential intervals across threads: a read after two writes sees the later one only', () => {
    const rows = (seen: number) =>
      toyHistory([
        [0, 0, 1, w(1)],
        [1, 2, 3, w(2)],
        [2, 4, 5, r(seen)],
      ]).events;
    expect(expectLinearizable(registerModel, rows(2))).toEqual([0, 1, 2]);
    const v = expectNotLinearizable(registerModel, rows(1));
    expect(v.longestPrefix).toEqual([0, 1]);
    expect(v.blocked).toEqual([2]);
  });

  test('overlapping: a read concurrent with a write sees the old or the new value, nothing else', () => {
    for (const seen of [0, 1])
      expectLinearizable(
        registerModel,
        toyHistory([
          [0, 0, 10, w(1)],
          [1, 2, 8, r(seen)],
        ]).events,
      );
    const v = expectNotLinearizable(
      registerModel,
      toyHistory([
        [0, 0, 10, w(1)],
        [1, 2, 8, r(2)],
      ]).events,
    );
    expect(v.longestPrefix).toEqual([0]);
    expect(v.blocked).toEqual([1]);
  });

  test('nested: reads inside one write see 0 then 1, never 1 then 0', () => {
    const nested = (a: number, b: number) =>
      toyHistory([
        [0, 0, 10, w(1)],
        [1, 2, 3, r(a)],
        [1, 4, 5, r(b)],
      ]).events;
    expect(expectLinearizable(registerModel, nested(0, 1))).toEqual([1, 0, 2]);
    expectLinearizable(registerModel, nested(0, 0));
    expectLinearizable(registerModel, nested(1, 1));
    const v = expectNotLinearizable(registerModel, nested(1, 0));
    expect(v.longestPrefix).toEqual([0, 1]);
    expect(v.blocked).toEqual([2]);
  });

  test("Porcupine's register tests (porcupine_test.go, TestRegisterModel)", () => {
    // put 100 @[0,100]; get -> 100 @[25,75]; get -> 0 @[30,60]: the get of 0 goes before the put.
    const ok = toyHistory([
      [0, 0, 100, w(100)],
      [1, 25, 75, r(100)],
      [2, 30, 60, r(0)],
    ]).events;
    expect(expectLinearizable(registerModel, ok)).toEqual([2, 0, 1]);
    // put 200 @[0,100]; get -> 200 @[10,30]; get -> 0 @[40,90]: the put took effect by 30.
    const bad = toyHistory([
      [0, 0, 100, w(200)],
      [1, 10, 30, r(200)],
      [2, 40, 90, r(0)],
    ]).events;
    const v = expectNotLinearizable(registerModel, bad);
    expect(v.longestPrefix).toEqual([0, 1]);
    expect(v.blocked).toEqual([2]);
  });

  test('ties in timestamps are concurrent across threads, ordered within a thread', () => {
    // Thread 1's read is invoked at the instant the write responds: either order is possible.
    expect(
      expectLinearizable(
        registerModel,
        toyHistory([
          [0, 0, 5, w(1)],
          [1, 5, 8, r(0)],
        ]).events,
      ),
    ).toEqual([1, 0]);
    expectNotLinearizable(
      registerModel,
      toyHistory([
        [0, 0, 5, w(1)],
        [1, 6, 8, r(0)],
      ]).events,
    );
    // The same tie in one thread: program order says the write came first.
    const v = expectNotLinearizable(
      registerModel,
      toyHistory([
        [0, 0, 5, w(1)],
        [0, 5, 8, r(0)],
      ]).events,
    );
    expect(v.longestPrefix).toEqual([0]);
    expect(v.blocked).toEqual([1]);
    // An instantaneous event (invoke === respond) is allowed.
    expectLinearizable(
      registerModel,
      toyHistory([
        [0, 3, 3, w(1)],
        [1, 3, 3, r(0)],
      ]).events,
    );
  });

  test('the cache keeps a search over n identical concurrent writes within 2^n configurations', () => {
    const n = 10;
    const rows: [number, number, number, RegisterOp][] = Array.from({ length: n }, (_, t) => [t, 0, 10, w(1)]);
    rows.push([n, 20, 21, r(2)]);
    const v = expectNotLinearizable(registerModel, toyHistory(rows).events);
    // Without the cache the search visits every order of the writes (10! > 3.6 million).
    expect(v.statesExplored).toBeLessThanOrEqual(2 ** n);
    expect(v.statesExplored).toBeGreaterThanOrEqual(n);
    expect(v.longestPrefix).toHaveLength(n);
    expect(v.blocked).toEqual([n]);
  });

  test('the bound answers undecided with the count explored; a larger bound decides', () => {
    const rows: [number, number, number, RegisterOp][] = Array.from({ length: 8 }, (_, t) => [t, 0, 10, w(t + 1)]);
    rows.push([8, 20, 21, r(99)]);
    const { events } = toyHistory(rows);
    const small = checkLinearizable(registerModel, { events }, { maxStates: 50 });
    expect(small).toEqual({ kind: 'undecided', statesExplored: 51, bound: 50 });
    const big = checkLinearizable(registerModel, { events }, { maxStates: DEFAULT_MAX_STATES });
    expect(big.kind).toBe('not-linearizable');
    expect(big.statesExplored).toBeGreaterThan(50);
  });

  test('accept rejecting the final state: every order is tried, then the full prefix is reported', () => {
    const { events } = toyHistory([
      [0, 0, 10, w(1)],
      [1, 0, 10, w(2)],
    ]);
    const last = (v: number) => ({ ...registerModel, accept: (s: number) => s === v });
    expect(expectLinearizable(last(1), events)).toEqual([1, 0]);
    expect(expectLinearizable(last(2), events)).toEqual([0, 1]);
    const v = expectNotLinearizable(last(3), events);
    expect(v.longestPrefix).toHaveLength(2);
    expect(v.blocked).toEqual([]);
  });

  test('a nondeterministic model: each state a step allows is explored', () => {
    const { events } = toyHistory([
      [0, 0, 1, w(1)],
      [1, 2, 3, w(2)],
      [2, 4, 5, r(1)],
      [2, 6, 7, r(1)],
    ]);
    expectNotLinearizable(registerModel, events);
    // The second write was lost: only the second of the two states after it explains the reads.
    expect(expectLinearizable(lossyRegisterModel, events)).toEqual([0, 1, 2, 3]);
    const lostFirst = toyHistory([
      [0, 0, 1, w(1)],
      [1, 2, 3, r(0)],
      [1, 4, 5, w(2)],
      [1, 6, 7, r(2)],
    ]).events;
    expectLinearizable(lossyRegisterModel, lostFirst);
    expectNotLinearizable(
      lossyRegisterModel,
      toyHistory([
        [0, 0, 1, w(1)],
        [1, 2, 3, r(3)],
      ]).events,
    );
  });

  test('malformed histories and options are input errors', () => {
    const bad = (events: TimedEvent[], maxStates?: number) => () =>
      checkLinearizable({ init: () => 0, step: () => [0], key: String }, { events }, maxStates ? { maxStates } : {});
    expect(bad([{ id: 0, invoke: 2, respond: 1 }])).toThrow(InputError);
    expect(bad([{ id: 0, invoke: Number.NaN, respond: 1 }])).toThrow(/finite/);
    expect(
      bad([
        { id: 0, invoke: 0, respond: 1 },
        { id: 0, invoke: 2, respond: 3 },
      ]),
    ).toThrow(/twice/);
    expect(bad([], 0.5)).toThrow(/maxStates/);
  });
});

describe('toy queue (after Herlihy & Wing 1990, figure 1)', () => {
  test('overlapping enqueues may be dequeued in either order', () => {
    const { events } = toyHistory([
      [0, 0, 10, enq(1)],
      [1, 5, 15, enq(2)],
      [0, 20, 30, deq(2)],
      [1, 25, 35, deq(1)],
    ]);
    expectLinearizable(queueModel, events);
    // The dequeues no longer overlap: y was enqueued first, the only order left.
    const apart = toyHistory([
      [0, 0, 10, enq(1)],
      [1, 5, 15, enq(2)],
      [0, 20, 24, deq(2)],
      [1, 25, 35, deq(1)],
    ]);
    expect(expectLinearizable(queueModel, apart.events)).toEqual([1, 0, 2, 3]);
  });

  test('FIFO violated: x enqueued strictly before y, y dequeued first', () => {
    const { events } = toyHistory([
      [0, 0, 10, enq(1)],
      [1, 15, 25, enq(2)],
      [0, 30, 40, deq(2)],
    ]);
    const v = expectNotLinearizable(queueModel, events);
    expect(v.longestPrefix).toEqual([0, 1]);
    expect(v.blocked).toEqual([2]);
  });

  test('a dequeue overlapping its enqueue may return the value', () => {
    expectLinearizable(
      queueModel,
      toyHistory([
        [0, 0, 10, enq(1)],
        [1, 5, 15, deq(1)],
      ]).events,
    );
    expectLinearizable(
      queueModel,
      toyHistory([
        [0, 0, 10, enq(1)],
        [1, 5, 15, deq(null)],
      ]).events,
    );
    expectNotLinearizable(
      queueModel,
      toyHistory([
        [0, 0, 10, enq(1)],
        [1, 11, 15, deq(null)],
      ]).events,
    );
  });

  test('one value dequeued twice is not linearizable', () => {
    const { events } = toyHistory([
      [0, 0, 10, enq(1)],
      [1, 0, 10, enq(2)],
      [0, 20, 30, deq(2)],
      [1, 20, 30, deq(2)],
    ]);
    const v = expectNotLinearizable(queueModel, events);
    expect(v.longestPrefix).toHaveLength(3);
    expect(v.blocked).toHaveLength(1);
  });
});

describe('P-compositionality', () => {
  const put = (key: string, value: number): KvOp => ({ op: 'put', key, value });
  const get = (key: string, value: number): KvOp => ({ op: 'get', key, value });

  test('a key-value store split by key: parts checked alone, one total order combined', () => {
    const { events } = toyHistory([
      [0, 0, 10, put('x', 1)],
      [1, 2, 4, get('y', 0)],
      [1, 5, 8, get('x', 1)],
      [2, 1, 3, put('y', 5)],
      [2, 9, 12, get('y', 5)],
      [0, 11, 14, get('x', 1)],
    ]);
    const whole = checkLinearizable(kvModel, { events });
    const split = checkLinearizable(kvModel, { events }, { partition: partitionByKey });
    expect(whole.kind).toBe('linearizable');
    if (split.kind !== 'linearizable') throw new Error(JSON.stringify(split));
    expectValidOrder(kvModel, events, split.order);
  });

  test('a part with no linearization makes the history not linearizable and is named', () => {
    const { events } = toyHistory([
      [0, 0, 1, put('x', 1)],
      [1, 0, 1, put('y', 2)],
      [1, 2, 3, get('y', 0)],
      [0, 2, 3, get('x', 1)],
    ]);
    const v = checkLinearizable(kvModel, { events }, { partition: partitionByKey });
    expect(v).toMatchObject({ kind: 'not-linearizable', part: [1, 2], longestPrefix: [1], blocked: [2] });
    expect(checkLinearizable(kvModel, { events }).kind).toBe('not-linearizable');
  });

  test('the bound is shared by the parts; a partition that loses or repeats an event is an input error', () => {
    const rows: [number, number, number, KvOp][] = [];
    for (const key of ['a', 'b']) for (let t = 0; t < 6; t++) rows.push([rows.length, 0, 10, put(key, t + 1)]);
    rows.push([rows.length, 20, 21, get('b', 99)]);
    const { events } = toyHistory(rows);
    const v = checkLinearizable(kvModel, { events }, { partition: partitionByKey, maxStates: 70 });
    expect(v.kind).toBe('undecided');
    expect(v.statesExplored).toBeGreaterThan(70);
    const lose = () => checkLinearizable(kvModel, { events }, { partition: (es) => [es.slice(1)] });
    expect(lose).toThrow(/leaves out event 0/);
    const twice = () => checkLinearizable(kvModel, { events }, { partition: (es) => [es, es.slice(0, 1)] });
    expect(twice).toThrow(/two parts/);
  });
});

// --- properties: random toy histories against a brute-force judge --------------------------------

type Reg = ToyEvent<RegisterOp>;

/** Per thread, a list of (gap, duration, op kind, written value); times are laid out per thread. */
const threadPlan = fc.array(
  fc.tuple(fc.nat({ max: 6 }), fc.integer({ min: 0, max: 8 }), fc.boolean(), fc.integer({ min: 1, max: 3 })),
  { minLength: 1, maxLength: 3 },
);

/**
 * A register history linearizable by construction: each event gets a linearization point inside its
 * interval (a random fraction), the register runs in point order, and reads record what it returned.
 */
function historyFrom(plans: [number, number, boolean, number][][], fractions: number[]): Reg[] {
  const rows: { thread: number; index: number; invoke: number; respond: number; write: boolean; value: number }[] = [];
  plans.forEach((plan, thread) => {
    let t = 0;
    plan.forEach(([gap, duration, write, value], index) => {
      const invoke = t + gap;
      rows.push({ thread, index, invoke, respond: invoke + duration, write, value });
      t = invoke + duration + 1;
    });
  });
  const point = (i: number) => rows[i]!.invoke + (rows[i]!.respond - rows[i]!.invoke) * (fractions[i] ?? 0.5);
  const byPoint = rows.map((_, i) => i).sort((a, b) => point(a) - point(b) || a - b);
  let reg = 0;
  const values = new Array<number>(rows.length);
  for (const i of byPoint) {
    if (rows[i]!.write) reg = rows[i]!.value;
    values[i] = rows[i]!.write ? rows[i]!.value : reg;
  }
  return rows.map((row, id) => ({
    id,
    thread: row.thread,
    index: row.index,
    invoke: row.invoke,
    respond: row.respond,
    op: row.write ? w(values[id]!) : r(values[id]!),
  }));
}

/** Wing & Gong without a cache: every order consistent with real time and program order. */
function bruteForce(events: readonly Reg[]): boolean {
  const placed = new Set<number>();
  const go = (state: number): boolean => {
    if (placed.size === events.length) return true;
    for (const e of events) {
      if (placed.has(e.id)) continue;
      const mustWait = events.some(
        (f) =>
          !placed.has(f.id) && f.id !== e.id && (f.respond < e.invoke || (f.thread === e.thread && f.index < e.index)),
      );
      if (mustWait) continue;
      for (const next of registerModel.step(state, e)) {
        placed.add(e.id);
        if (go(next)) return true;
        placed.delete(e.id);
      }
    }
    return false;
  };
  return go(0);
}

const plans = fc.array(threadPlan, { minLength: 1, maxLength: 3 });
const fractions = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 9, maxLength: 9 });

describe('properties', () => {
  fcTest.prop([plans], { seed: 11, numRuns: 300 })(
    'a sequential history (no overlap) is linearizable in exactly its real-time order',
    (ps) => {
      // Lay the events out one after the other, interleaving the threads by their generated times
      // (each thread's own order kept): no two overlap.
      const events = historyFrom(ps, []).sort((a, b) => a.invoke - b.invoke || a.thread - b.thread);
      let t = 0;
      const sequential = events.map((e, id) => {
        const invoke = t;
        t += 2;
        return { ...e, id, invoke, respond: invoke + 1 };
      });
      const redone = replayValues(sequential);
      expect(expectLinearizable(registerModel, redone)).toEqual(redone.map((e) => e.id));
    },
  );

  fcTest.prop([plans, fractions], { seed: 12, numRuns: 300 })(
    'overlapping histories made from a linearization are linearizable',
    (ps, fs) => {
      expectLinearizable(registerModel, historyFrom(ps, fs));
    },
  );

  fcTest.prop([plans, fractions, fc.nat(), fc.integer({ min: 0, max: 4 })], { seed: 13, numRuns: 400 })(
    'one corrupted read: the checker says not-linearizable exactly when no order explains it (brute force)',
    (ps, fs, which, value) => {
      const events = historyFrom(ps, fs);
      const reads = events.filter((e) => e.op.op === 'read');
      fc.pre(reads.length > 0);
      const victim = reads[which % reads.length]!;
      fc.pre(victim.op.value !== value);
      const corrupted = events.map((e) => (e.id === victim.id ? { ...e, op: r(value) } : e));
      const verdict: LinearizabilityVerdict = checkLinearizable(registerModel, { events: corrupted });
      expect(verdict.kind).toBe(bruteForce(corrupted) ? 'linearizable' : 'not-linearizable');
      if (verdict.kind === 'linearizable') expectValidOrder(registerModel, corrupted, verdict.order);
    },
  );

  fcTest.prop([plans, fc.nat(), fc.integer({ min: 0, max: 4 })], { seed: 14, numRuns: 300 })(
    'in a sequential history every corrupted read is observable and detected',
    (ps, which, value) => {
      const events = historyFrom(ps, []).map((e, id) => ({ ...e, id, invoke: 2 * id, respond: 2 * id + 1 }));
      const redone = replayValues(events.sort((a, b) => a.invoke - b.invoke));
      const reads = redone.filter((e) => e.op.op === 'read');
      fc.pre(reads.length > 0);
      const victim = reads[which % reads.length]!;
      fc.pre(victim.op.value !== value);
      const corrupted = redone.map((e) => (e.id === victim.id ? { ...e, op: r(value) } : e));
      const v = expectNotLinearizable(registerModel, corrupted);
      expect(v.blocked).toEqual([victim.id]);
    },
  );
});

/** Recompute read values by running the register in id order (ids follow time in these histories). */
function replayValues(events: Reg[]): Reg[] {
  let reg = 0;
  return events.map((e) => {
    if (e.op.op === 'write') reg = e.op.value;
    return e.op.op === 'read' ? { ...e, op: r(reg) } : e;
  });
}

// --- spec histories: real commands, outcomes the spec computes for a chosen sequential order ------

const HVA = HVA_REGIONS[0]!;
const A = 0xaaaa_0001n;
const B = 0xbbbb_0002n;

/** x86, one 64 KiB anonymous region with a memslot over it at gpa 0 (test/spec-access.test.ts). */
function vmState(flags = 0): SpecState {
  const s = newSpecState('x86');
  applyCommand(s, { kind: 'mmap', hva: HVA, size: 0x10000, prot: 'rw', backing: 'anon' });
  applyCommand(s, { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags, gpa: 0, size: 0x10000, hva: HVA });
  return s;
}

const guestWrite = (vcpu: number, gpa: number, value: bigint): GuestAccess => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len: 8,
  write: true,
  value,
});
const guestRead = (vcpu: number, gpa: number): GuestAccess => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len: 8,
  write: false,
  value: 0n,
});

/** What the spec answers for `cmd` after `before` ran in order on a copy of `initial`. */
function outcomeAfter(initial: SpecState, before: SequentialCommand[], cmd: SequentialCommand): Outcome {
  const s = structuredClone(initial);
  for (const c of before) applyCommand(s, c);
  return applyCommand(s, cmd);
}

/** Rows [thread, invoke, respond, command, outcome]; ids in row order, index per thread. */
function specHistory(rows: [number, number, number, Command, Outcome][]): HistoryEvent[] {
  const perThread = new Map<number, number>();
  return rows.map(([thread, invoke, respond, command, outcome], id) => {
    const index = perThread.get(thread) ?? 0;
    perThread.set(thread, index + 1);
    return { id, thread, index, invoke, respond, command, outcome };
  });
}

const hostDataValue = (o: Outcome): bigint | undefined => (o.kind === 'hostData' ? o.value : undefined);
const hostValue = (s: SpecState, hva: number): bigint => {
  const o = applyCommand(structuredClone(s), { kind: 'hostRead', hva, len: 8 });
  if (o.kind !== 'hostData') throw new Error(`hostRead gave ${o.kind}`);
  return o.value;
};

describe('spec histories (x86)', () => {
  const s0 = vmState();
  const wA = guestWrite(0, 0x1000, A);
  const wB = guestWrite(1, 0x1000, B);
  // NR_VCPUS is 2: the third observer of the two vCPU writes is a VMM thread reading the memory.
  const hostRd: SequentialCommand = { kind: 'hostRead', hva: HVA + 0x1000, len: 8 };
  const rd = guestRead(1, 0x1000);

  test('two vCPUs write one gpa; a concurrent read sees either value or the old one, nothing else', () => {
    const sawA = outcomeAfter(s0, [wA], hostRd);
    const sawB = outcomeAfter(s0, [wB], hostRd);
    const sawOld = outcomeAfter(s0, [], hostRd);
    expect([sawA, sawB, sawOld].map(hostDataValue)).toEqual([A, B, 0n]);
    const ok = outcomeAfter(s0, [], wA);
    const history = (read: Outcome) =>
      specHistory([
        [0, 0, 10, wA, ok],
        [1, 0, 10, wB, outcomeAfter(s0, [wA], wB)],
        [2, 0, 10, hostRd, read],
      ]);
    for (const read of [sawA, sawB, sawOld]) expectLinearizable(specHistoryModel(s0), history(read));
    const sawC = outcomeAfter(s0, [guestWrite(0, 0x1000, 0xcn)], hostRd);
    const v = expectNotLinearizable(specHistoryModel(s0), history(sawC));
    expect(v.longestPrefix).toHaveLength(2);
    expect(v.blocked).toEqual([2]);
  });

  test('a read after both writes sees the one linearized last; final memory decides which', () => {
    const history = (read: Outcome) =>
      specHistory([
        [0, 0, 10, wA, outcomeAfter(s0, [], wA)],
        [1, 0, 10, wB, outcomeAfter(s0, [], wB)],
        [2, 11, 12, hostRd, read],
      ]);
    const sawA = outcomeAfter(s0, [wB, wA], hostRd);
    const sawOld = outcomeAfter(s0, [], hostRd);
    expectLinearizable(specHistoryModel(s0), history(sawA));
    expectNotLinearizable(specHistoryModel(s0), history(sawOld));
    // The backend's memory holds B at the end: B was the last write, so the read must have seen B.
    const endsWithB = specHistoryModel(s0, (s) => hostValue(s, HVA + 0x1000) === B);
    const v = expectNotLinearizable(endsWithB, history(sawA));
    expect(v.longestPrefix).toHaveLength(3);
    expect(v.blocked).toEqual([]);
    expect(expectLinearizable(endsWithB, history(outcomeAfter(s0, [wA, wB], hostRd)))).toEqual([0, 1, 2]);
  });

  test('a read concurrent with munmap of its memory: the old value or what the spec says after munmap', () => {
    const s1 = structuredClone(s0);
    applyCommand(s1, wA);
    const unmap: SequentialCommand = { kind: 'munmap', hva: HVA, size: 0x10000 };
    const unmapped = outcomeAfter(s1, [unmap], rd);
    expect(unmapped).toMatchObject({ kind: 'run', rc: -1, errno: 'EFAULT' });
    const history = (read: Outcome, readAt: [number, number]) =>
      specHistory([
        [0, 0, 10, unmap, outcomeAfter(s1, [], unmap)],
        [1, readAt[0], readAt[1], rd, read],
      ]);
    expectLinearizable(specHistoryModel(s1), history(outcomeAfter(s1, [], rd), [2, 8]));
    expectLinearizable(specHistoryModel(s1), history(unmapped, [2, 8]));
    // Once munmap returned, the old value is gone.
    const v = expectNotLinearizable(specHistoryModel(s1), history(outcomeAfter(s1, [], rd), [11, 12]));
    expect(v).toMatchObject({ longestPrefix: [0], blocked: [1] });
  });

  test('a read concurrent with deleting its memslot: the old value or the MMIO exit', () => {
    const s1 = structuredClone(s0);
    applyCommand(s1, wA);
    const del: SequentialCommand = {
      kind: 'setMemslot',
      api: 'v2',
      slot: 0,
      as: 0,
      flags: 0,
      gpa: 0,
      size: 0,
      hva: HVA,
    };
    const mmio = outcomeAfter(s1, [del], rd);
    expect(mmio).toMatchObject({ kind: 'run', rc: 0, run: { exitReason: KVM_EXIT_MMIO } });
    const history = (read: Outcome) =>
      specHistory([
        [0, 0, 10, del, outcomeAfter(s1, [], del)],
        [1, 2, 8, rd, read],
      ]);
    expectLinearizable(specHistoryModel(s1), history(outcomeAfter(s1, [], rd)));
    expectLinearizable(specHistoryModel(s1), history(mmio));
    expectNotLinearizable(specHistoryModel(s1), history(outcomeAfter(s0, [], rd)));
  });

  test('a read that saw a value written by a write invoked after the read responded', () => {
    const events = specHistory([
      [2, 0, 1, rd, outcomeAfter(s0, [wA], rd)],
      [0, 2, 3, wA, outcomeAfter(s0, [], wA)],
    ]);
    const v = expectNotLinearizable(specHistoryModel(s0), events);
    expect(v).toMatchObject({ longestPrefix: [], blocked: [0] });
    // The same two events overlapping are fine.
    expectLinearizable(
      specHistoryModel(s0),
      events.map((e) => ({ ...e, invoke: 0, respond: 3 })),
    );
  });

  test('a dirty-log harvest concurrent with a write reports the page in exactly one harvest', () => {
    const d0 = vmState(KVM_MEM_LOG_DIRTY_PAGES);
    const get: SequentialCommand = { kind: 'getDirtyLog', slot: 0, as: 0 };
    const before = outcomeAfter(d0, [], get);
    const after = outcomeAfter(d0, [wA], get);
    expect(before).toMatchObject({ kind: 'dirtyLog', dirty: [] });
    expect(after).toMatchObject({ kind: 'dirtyLog', dirty: [1] });
    const history = (first: Outcome, second: Outcome) =>
      specHistory([
        [0, 0, 10, wA, outcomeAfter(d0, [], wA)],
        [1, 2, 8, get, first],
        [1, 20, 21, get, second],
      ]);
    expectLinearizable(specHistoryModel(d0), history(before, after));
    expectLinearizable(specHistoryModel(d0), history(after, before));
    // A write is reported once: twice means the harvest did not clear, never means it was lost.
    expectNotLinearizable(specHistoryModel(d0), history(after, after));
    expectNotLinearizable(specHistoryModel(d0), history(before, before));
  });

  test('a raceAccess event is judged on its race outcome (either sequential order)', () => {
    const race: Command = {
      kind: 'raceAccess',
      access: guestRead(0, 0x1000),
      host: { kind: 'munmap', hva: HVA, size: 0x10000 },
    };
    const alternatives = specAlternatives(s0, race)!;
    for (const a of alternatives) expectLinearizable(specHistoryModel(s0), specHistory([[0, 0, 1, race, a.outcome]]));
    const wrong: Outcome = { kind: 'race', access: outcomeAfter(s0, [wA], rd), host: { kind: 'ok' } };
    expectNotLinearizable(specHistoryModel(s0), specHistory([[0, 0, 1, race, wrong]]));
  });
});

describe('spec histories with several allowed outcomes (userfault series)', () => {
  test('a page mapped before its userfault bit was set: both outcomes fit, each with its own state', () => {
    const s = newSpecState('x86', makeConfig(['userfault']));
    applyCommand(s, { kind: 'mmap', hva: HVA, size: 0x10000, prot: 'rw', backing: 'anon' });
    const slot = { api: 'v2', slot: 0, as: 0, flags: KVM_MEM_USERFAULT, gpa: 0, size: 0x10000, hva: HVA } as const;
    expect(applyCommand(s, { kind: 'setMemslot', ...slot })).toEqual({ kind: 'ok' });
    applyCommand(s, guestWrite(0, 0x1000, A));
    applyCommand(s, { kind: 'userfaultBits', slot: 0, as: 0, firstPage: 1, numPages: 1, set: true });
    const read = guestRead(0, 0x1000);
    const alternatives = specAlternatives(s, read);
    expect(alternatives?.length).toBe(2);
    const outcomes = alternatives!.map((a) => a.outcome);
    expect(outcomes.map((o) => o.kind === 'run' && o.value)).toContain(A);
    // Two reads one after the other, each answered either way, are all linearizable.
    for (const first of outcomes)
      for (const second of outcomes)
        expectLinearizable(
          specHistoryModel(s),
          specHistory([
            [0, 0, 1, read, first],
            [0, 2, 3, read, second],
          ]),
        );
    // The served read with a value the page never held.
    const served = outcomes.find((o) => o.kind === 'run' && o.value === A);
    if (served?.kind !== 'run') throw new Error('no alternative served the read');
    const wrong: Outcome = { ...served, value: B };
    expectNotLinearizable(specHistoryModel(s), specHistory([[0, 0, 1, read, wrong]]));
  });
});

describe('stateKey', () => {
  test('equal states reached in different orders have one key; different states differ', () => {
    const a = vmState(KVM_MEM_LOG_DIRTY_PAGES);
    const b = vmState(KVM_MEM_LOG_DIRTY_PAGES);
    const w1 = guestWrite(0, 0x1000, A);
    const w2 = guestWrite(0, 0x3000, B);
    for (const c of [w1, w2]) applyCommand(a, c);
    for (const c of [w2, w1]) applyCommand(b, c);
    // Different insertion orders of the memory map and the dirty set.
    expect([...a.mm.memory.keys()]).not.toEqual([...b.mm.memory.keys()]);
    expect(stateKey(a)).toBe(stateKey(b));
    expect(stateKey(a)).toBe(stateKey(structuredClone(a)));
    applyCommand(b, guestWrite(0, 0x3000, A));
    expect(stateKey(a)).not.toBe(stateKey(b));
  });

  test('a page written back to zero equals a page never written; undefined fields are absent ones', () => {
    const a = vmState();
    const b = vmState();
    applyCommand(a, guestWrite(0, 0x2000, A));
    applyCommand(a, guestWrite(0, 0x2000, 0n));
    // b's write of zero never creates the page's byte map; a's leaves it empty.
    applyCommand(b, guestWrite(0, 0x2000, 0n));
    expect(a.mm.memory.get((HVA + 0x2000) / 0x1000)?.size).toBe(0);
    expect(b.mm.memory.has((HVA + 0x2000) / 0x1000)).toBe(false);
    expect(stateKey(a)).toBe(stateKey(b));
    expect(stateKey({ ...a, extra: undefined } as SpecState)).toBe(stateKey(a));
    const locked = structuredClone(a);
    locked.locked.set(0, { write: true, intact: true, writeMapped: true });
    expect(stateKey(locked)).not.toBe(stateKey(a));
  });
});
