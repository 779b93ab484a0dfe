// Small sequential models the linearizability checker is validated and measured on (the register,
// queue and key-value store of the literature: Herlihy & Wing 1990, Porcupine's tests), and a
// history builder for them. Not KVM: test/linearizability.test.ts and bench/linearizability.ts.
import type { SequentialModel, TimedEvent } from './linearizability.js';

export interface ToyEvent<Op> extends TimedEvent {
  thread: number;
  index: number;
  op: Op;
}

/** A read returns the register's value; every register starts at 0. */
export type RegisterOp = { op: 'write'; value: number } | { op: 'read'; value: number };

export const registerModel: SequentialModel<number, ToyEvent<RegisterOp>> = {
  init: () => 0,
  step: (state, { op }) => {
    switch (op.op) {
      case 'write':
        return [op.value];
      case 'read':
        return op.value === state ? [state] : [];
      default:
        return unknownOp(op);
    }
  },
  key: String,
};

/** Nondeterministic: a write may be lost (both states are allowed after it). */
export const lossyRegisterModel: SequentialModel<number, ToyEvent<RegisterOp>> = {
  ...registerModel,
  step: (state, e) => (e.op.op === 'write' ? [e.op.value, state] : registerModel.step(state, e)),
};

/** FIFO queue; a dequeue from the empty queue returns null. */
export type QueueOp = { op: 'enq'; value: number } | { op: 'deq'; value: number | null };

export const queueModel: SequentialModel<readonly number[], ToyEvent<QueueOp>> = {
  init: () => [],
  step: (state, { op }) => {
    switch (op.op) {
      case 'enq':
        return [[...state, op.value]];
      case 'deq':
        if (state.length === 0) return op.value === null ? [state] : [];
        return state[0] === op.value ? [state.slice(1)] : [];
      default:
        return unknownOp(op);
    }
  },
  key: (s) => s.join(','),
};

/** A key-value store: a product of independent registers, one per key (the partition example). */
export type KvOp = { op: 'put'; key: string; value: number } | { op: 'get'; key: string; value: number };

export const kvModel: SequentialModel<ReadonlyMap<string, number>, ToyEvent<KvOp>> = {
  init: () => new Map(),
  step: (state, { op }) => {
    switch (op.op) {
      case 'put':
        return [new Map(state).set(op.key, op.value)];
      case 'get':
        return (state.get(op.key) ?? 0) === op.value ? [state] : [];
      default:
        return unknownOp(op);
    }
  },
  key: (s) => [...s.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).join(';'),
};

/** P-compositionality for kvModel: one part per key (each part touches only its own register). */
export function partitionByKey(events: readonly ToyEvent<KvOp>[]): ToyEvent<KvOp>[][] {
  const parts = new Map<string, ToyEvent<KvOp>[]>();
  for (const e of events) parts.set(e.op.key, [...(parts.get(e.op.key) ?? []), e]);
  return [...parts.values()];
}

function unknownOp(op: never): never {
  throw new Error(`unknown toy operation ${JSON.stringify(op)}`);
}

/** One row per event: [thread, invoke, respond, op]; ids in row order, index = order within the thread. */
export function toyHistory<Op>(rows: readonly (readonly [number, number, number, Op])[]): {
  events: ToyEvent<Op>[];
} {
  const perThread = new Map<number, number>();
  const events = rows.map(([thread, invoke, respond, op], id) => {
    const index = perThread.get(thread) ?? 0;
    perThread.set(thread, index + 1);
    return { id, thread, index, invoke, respond, op };
  });
  return { events };
}
