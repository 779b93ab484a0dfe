// Linearizability of a history against a sequential model: Wing & Gong's search (1993) in the form
// Lowe gave it ("Testing for linearizability", 2017) and Porcupine implements (anishathalye/porcupine,
// checker.go): the invocations and responses sit in one time-ordered linked list; an invocation
// that comes before the first remaining response may be linearized next (lifted out of the list
// with its response); a response reached first means a dead end, and the search backtracks. Lowe's
// cache prunes a configuration (set of linearized events, model state) already explored: from the
// same configuration the rest of the search can only do what it did before. Herlihy & Wing's
// locality gives P-compositionality (the `partition` option).
import type { HistoryEvent, LinearizabilityVerdict } from '../model/history.js';
import { InputError } from '../src/util/errors.js';

/** What the checker needs of an event: its id and interval; thread and index add program order. */
export interface TimedEvent {
  id: number;
  invoke: number;
  respond: number;
  thread?: number;
  index?: number;
}

/** A sequential specification the checker can explore: step must not mutate its input. */
export interface SequentialModel<S, E extends TimedEvent = HistoryEvent> {
  init(): S;
  /**
   * The states the event may leave when applied to state with its recorded outcome ([] if not
   * allowed). Several states: the model is nondeterministic, and each is explored.
   */
  step(state: S, event: E): S[];
  /** A canonical key of the state: equal keys must mean states no event can tell apart. */
  key(state: S): string;
  /** Whether a complete linearization may end in this state (e.g. final memory contents agree). */
  accept?(state: S): boolean;
}

/**
 * The default bound on explored configurations. A configuration is a (linearized set, state) pair
 * the cache holds; 100,000 of them decide every 3-thread x 4-command toy history and 3 x 3 spec
 * history in bench/linearizability.ts with a wide margin (their maxima are below 100). Memory: a
 * configuration costs its bitset and an interned state id, but each distinct state keeps its key
 * (about 1-5 KB for a spec state), so a spec search that reaches the default bound may hold a few
 * hundred MB; a caller checking long spec histories should pass a smaller bound.
 */
export const DEFAULT_MAX_STATES = 100_000;

export interface CheckOptions<E extends TimedEvent = HistoryEvent> {
  /** Answer `undecided` once more than this many configurations were explored (all parts together). */
  maxStates?: number;
  /**
   * P-compositionality: check each part on its own and combine the verdicts. Sound only when the
   * model is a product of independent components and each part's events touch only its own
   * component (a key-value store partitioned by key): then the history is linearizable iff every
   * part is (locality, Herlihy & Wing 1990 theorem 1). `init`, `key` and `accept` are used per part
   * unchanged, so `accept` must judge only what a part can change (or be a conjunction that holds
   * on the untouched components' initial values). Every event must be in exactly one part.
   *
   * Not offered for the KVM spec (properties/spec-history-model.ts): its state is one global
   * state, and commands that look disjoint still share components. A vCPU's kvm_run persists
   * across KVM_RUN calls and an exit that leaves the union untouched reports the previous payload;
   * a munmap, mprotect or madvise next to a range splits the transparent huge page both share (and
   * arm64-lock's noteHostChange widens the range to 2 MiB); memslot updates move every gfn; dirty
   * logs, userfault bitmaps and memory attributes are per slot or per VM. A partition would be
   * sound at most for histories whose commands are guest accesses and host reads/writes only, with
   * one part per vCPU-connected component over disjoint 2 MiB host ranges and no memslot, VMA,
   * gmem, capability or dirty-log command in the history. We have not proved that argument against
   * every rule of model/ (x86's writable-on-read-fault dirty marking, host page presence under
   * exit-on-missing), so no KVM partition is implemented.
   */
  partition?: (events: readonly E[]) => readonly (readonly E[])[];
  /**
   * Whether `later` must be linearized after the program-earlier `earlier` of its thread. Absent:
   * always (each thread is sequential). A memory model that lets a thread's plain stores become
   * visible out of order relaxes it for those pairs (properties/memory-order.ts); real-time order
   * still applies.
   */
  programOrder?: (earlier: E, later: E) => boolean;
}

export function checkLinearizable<S, E extends TimedEvent = HistoryEvent>(
  model: SequentialModel<S, E>,
  history: { events: readonly E[] },
  options: CheckOptions<E> = {},
): LinearizabilityVerdict {
  const bound = options.maxStates ?? DEFAULT_MAX_STATES;
  if (!Number.isSafeInteger(bound) || bound <= 0) throw new InputError('maxStates must be a positive integer');
  validate(history.events);
  if (!options.partition) return searchPart(model, history.events, bound, options.programOrder);
  const parts = options.partition(history.events).filter((p) => p.length > 0);
  checkPartition(history.events, parts);
  return combineParts(model, history.events, parts, bound, options.programOrder);
}

/** Times must be finite and ordered, ids unique: a malformed history is an input error. */
function validate(events: readonly TimedEvent[]): void {
  const ids = new Set<number>();
  for (const e of events) {
    if (!Number.isFinite(e.invoke) || !Number.isFinite(e.respond))
      throw new InputError(`event ${e.id}: invoke and respond must be finite numbers`);
    if (e.invoke > e.respond) throw new InputError(`event ${e.id}: responds (${e.respond}) before it is invoked`);
    if (ids.has(e.id)) throw new InputError(`event id ${e.id} appears twice in the history`);
    ids.add(e.id);
  }
}

function checkPartition(events: readonly TimedEvent[], parts: readonly (readonly TimedEvent[])[]): void {
  const seen = new Set<number>();
  for (const e of parts.flat()) {
    if (seen.has(e.id)) throw new InputError(`partition puts event ${e.id} in two parts`);
    seen.add(e.id);
  }
  const missing = events.find((e) => !seen.has(e.id));
  if (missing || seen.size !== events.length)
    throw new InputError(`partition leaves out event ${missing?.id ?? '(unknown)'} or adds one not in the history`);
}

function combineParts<S, E extends TimedEvent>(
  model: SequentialModel<S, E>,
  events: readonly E[],
  parts: readonly (readonly E[])[],
  bound: number,
  programOrder?: (earlier: E, later: E) => boolean,
): LinearizabilityVerdict {
  let explored = 0;
  let undecided = false;
  const orders: number[][] = [];
  for (const part of parts) {
    const v = searchPart(model, part, bound - explored, programOrder);
    explored += v.statesExplored;
    switch (v.kind) {
      case 'not-linearizable':
        // One part with no linearization is enough (locality): the others need not be searched.
        return { ...v, statesExplored: explored, part: part.map((e) => e.id) };
      case 'undecided':
        undecided = true;
        if (explored >= bound) return { kind: 'undecided', statesExplored: explored, bound };
        break;
      case 'linearizable':
        orders.push(v.order);
        break;
      default: {
        const never: never = v;
        throw new Error(`unknown verdict ${JSON.stringify(never)}`);
      }
    }
  }
  if (undecided) return { kind: 'undecided', statesExplored: explored, bound };
  return { kind: 'linearizable', order: mergeOrders(events, orders), statesExplored: explored };
}

/**
 * One total order of all events from the parts' linearizations: a topological order of the parts'
 * chains and real-time precedence. Locality's proof shows that union is acyclic.
 */
function mergeOrders(events: readonly TimedEvent[], orders: readonly number[][]): number[] {
  const succ = new Map<number, number[]>(events.map((e) => [e.id, []]));
  const indegree = new Map<number, number>(events.map((e) => [e.id, 0]));
  const edge = (a: number, b: number): void => {
    succ.get(a)!.push(b);
    indegree.set(b, indegree.get(b)! + 1);
  };
  for (const order of orders) for (let i = 1; i < order.length; i++) edge(order[i - 1]!, order[i]!);
  for (const a of events) for (const b of events) if (precedes(a, b)) edge(a.id, b.id);
  const ready = events.filter((e) => indegree.get(e.id) === 0).map((e) => e.id);
  const out: number[] = [];
  while (ready.length > 0) {
    const id = ready.shift()!;
    out.push(id);
    for (const b of succ.get(id)!) {
      indegree.set(b, indegree.get(b)! - 1);
      if (indegree.get(b) === 0) ready.push(b);
    }
  }
  if (out.length !== events.length) throw new Error('partition: the parts are not independent (orders conflict)');
  return out;
}

/**
 * Real-time order: a responded before b was invoked. A tie (a.respond === b.invoke) counts as
 * concurrent: two clock reads on different CPUs with one value do not order the calls, and reading
 * a tie as an order could report a violation that did not happen. Program order (same thread,
 * lower index) orders events whatever their timestamps say.
 */
export function precedes(a: TimedEvent, b: TimedEvent): boolean {
  if (a.respond < b.invoke) return true;
  return a.thread !== undefined && a.thread === b.thread && (a.index ?? 0) < (b.index ?? 0);
}

/** The search over one history (or one part): see the file comment. */
function searchPart<S, E extends TimedEvent>(
  model: SequentialModel<S, E>,
  events: readonly E[],
  bound: number,
  programOrder?: (earlier: E, later: E) => boolean,
): LinearizabilityVerdict {
  const list = new EntryList(events);
  const programPred = programPredecessors(events, programOrder);
  const linearized = new Bitset(events.length);
  const cache = new Cache<S>((s) => model.key(s));
  const stack: Frame<S>[] = [];
  let best: { prefix: number[]; blocked: number[] } | null = null;
  // Configurations entered; with the cache each is entered once, so this is also its size.
  let explored = 0;
  let state = model.init();
  let entry = list.first();
  const eligible = (ev: number): boolean => programPred[ev]!.every((p) => linearized.has(p));
  // Take the first alternative from `from` on whose configuration is new; -1 if none is.
  const take = (alts: readonly S[], from: number, ev: number): number => {
    for (let i = from; i < alts.length; i++) {
      linearized.set(ev);
      const fresh = cache.add(linearized, alts[i]!);
      linearized.clear(ev);
      if (fresh) {
        explored++;
        return i;
      }
    }
    return -1;
  };
  for (;;) {
    if (explored > bound) return { kind: 'undecided', statesExplored: explored, bound };
    const complete = entry === NIL;
    if (!complete && list.isCall(entry)) {
      const ev = list.event(entry);
      if (eligible(ev)) {
        const alts = model.step(state, events[ev]!);
        const i = take(alts, 0, ev);
        if (i >= 0) {
          stack.push({ entry, prev: state, alts, alt: i });
          state = alts[i]!;
          linearized.set(ev);
          list.lift(entry);
          entry = list.first();
          continue;
        }
      }
      entry = list.next(entry);
      continue;
    }
    if (complete && (!model.accept || model.accept(state))) {
      const order = stack.map((f) => events[list.event(f.entry)]!.id);
      return { kind: 'linearizable', order, statesExplored: explored };
    }
    // A response came before any placeable invocation (or every event is placed and `accept`
    // rejects the state): this branch is dead. The deepest one is the report's prefix.
    if (!best || stack.length > best.prefix.length) {
      const prefix = stack.map((f) => events[list.event(f.entry)]!.id);
      best = { prefix, blocked: list.candidates(eligible).map((ev) => events[ev]!.id) };
    }
    const frame = stack.pop();
    if (!frame) return { kind: 'not-linearizable', ...reportOf(best), statesExplored: explored };
    const ev = list.event(frame.entry);
    linearized.clear(ev);
    state = frame.prev;
    const i = take(frame.alts, frame.alt + 1, ev);
    if (i >= 0) {
      // The same event again, in another of the states a nondeterministic model allows.
      stack.push({ ...frame, alt: i });
      state = frame.alts[i]!;
      linearized.set(ev);
      entry = list.first();
    } else {
      // Put the event back and try the invocations after it (never NIL: its response follows).
      list.unlift(frame.entry);
      entry = list.next(frame.entry);
    }
  }
}

const reportOf = (best: { prefix: number[]; blocked: number[] } | null) => ({
  longestPrefix: best?.prefix ?? [],
  blocked: best?.blocked ?? [],
});

interface Frame<S> {
  entry: number;
  prev: S;
  alts: readonly S[];
  alt: number;
}

/**
 * For each event, the events of its thread it must follow: the one just before it in program
 * order, or with `programOrder`, every program-earlier one it orders after.
 */
function programPredecessors<E extends TimedEvent>(
  events: readonly E[],
  programOrder?: (earlier: E, later: E) => boolean,
): number[][] {
  const pred: number[][] = events.map(() => []);
  const byThread = new Map<number, number[]>();
  events.forEach((e, i) => {
    if (e.thread === undefined) return;
    const list = byThread.get(e.thread) ?? [];
    list.push(i);
    byThread.set(e.thread, list);
  });
  for (const list of byThread.values()) {
    list.sort((a, b) => (events[a]!.index ?? 0) - (events[b]!.index ?? 0));
    for (let k = 1; k < list.length; k++) {
      if (!programOrder) pred[list[k]!] = [list[k - 1]!];
      else
        for (let j = 0; j < k; j++)
          if (programOrder(events[list[j]!]!, events[list[k]!]!)) pred[list[k]!]!.push(list[j]!);
    }
  }
  return pred;
}

const NIL = -1;

/**
 * Invocations and responses in time order as a doubly linked list over array slots: entry 2i is
 * event i's invocation, 2i+1 its response. At equal times invocations come first (ties are
 * concurrent, see `precedes`).
 */
class EntryList {
  private readonly nextOf: Int32Array;
  private readonly prevOf: Int32Array;
  private readonly head: number;

  constructor(events: readonly TimedEvent[]) {
    const n = events.length;
    const time = (x: number): number => (x % 2 === 0 ? events[x >> 1]!.invoke : events[x >> 1]!.respond);
    const order = Array.from({ length: 2 * n }, (_, x) => x).sort(
      (a, b) => time(a) - time(b) || (a % 2) - (b % 2) || a - b,
    );
    this.head = 2 * n;
    this.nextOf = new Int32Array(2 * n + 1).fill(NIL);
    this.prevOf = new Int32Array(2 * n + 1).fill(NIL);
    let prev = this.head;
    for (const x of order) {
      this.nextOf[prev] = x;
      this.prevOf[x] = prev;
      prev = x;
    }
  }

  first(): number {
    return this.nextOf[this.head]!;
  }
  next(x: number): number {
    return this.nextOf[x]!;
  }
  isCall(x: number): boolean {
    return x % 2 === 0;
  }
  event(x: number): number {
    return x >> 1;
  }

  /** Remove an invocation and its response. */
  lift(call: number): void {
    this.unlink(call);
    this.unlink(call + 1);
  }

  /** Undo `lift`, in reverse order so the neighbours' links are the ones lift saw. */
  unlift(call: number): void {
    this.relink(call + 1);
    this.relink(call);
  }

  /** Events whose invocation precedes the first remaining response and which may come next. */
  candidates(eligible: (ev: number) => boolean): number[] {
    const out: number[] = [];
    for (let x = this.first(); x !== NIL && this.isCall(x); x = this.next(x))
      if (eligible(this.event(x))) out.push(this.event(x));
    return out;
  }

  private unlink(x: number): void {
    const p = this.prevOf[x]!;
    const n = this.nextOf[x]!;
    this.nextOf[p] = n;
    if (n !== NIL) this.prevOf[n] = p;
  }

  private relink(x: number): void {
    const p = this.prevOf[x]!;
    const n = this.nextOf[x]!;
    this.nextOf[p] = x;
    if (n !== NIL) this.prevOf[n] = x;
  }
}

/** The set of linearized events, with a compact string form for the cache. */
class Bitset {
  private readonly words: Uint16Array;
  constructor(size: number) {
    this.words = new Uint16Array(Math.ceil(size / 16));
  }
  set(i: number): void {
    this.words[i >> 4]! |= 1 << (i & 15);
  }
  clear(i: number): void {
    this.words[i >> 4]! &= ~(1 << (i & 15));
  }
  has(i: number): boolean {
    return (this.words[i >> 4]! & (1 << (i & 15))) !== 0;
  }
  /** One UTF-16 code unit per 16 events: exact, not a hash. */
  toKey(): string {
    let s = '';
    for (const w of this.words) s += String.fromCharCode(w);
    return s;
  }
}

/**
 * Lowe's cache of explored configurations. State keys are interned to small numbers so a
 * configuration costs its bitset plus a number, however large the state's key is; keys are
 * compared exactly (no hashing), so a hit is never a collision.
 */
class Cache<S> {
  private readonly seen = new Set<string>();
  private readonly stateIds = new Map<string, number>();
  constructor(private readonly keyOf: (state: S) => string) {}

  /** Record (linearized, state); false if it was there already. */
  add(linearized: Bitset, state: S): boolean {
    const key = this.keyOf(state);
    let id = this.stateIds.get(key);
    if (id === undefined) {
      id = this.stateIds.size;
      this.stateIds.set(key, id);
    }
    const config = `${linearized.toKey()}\u0000${id}`;
    if (this.seen.has(config)) return false;
    this.seen.add(config);
    return true;
  }
}
