// Runs the threads of a concurrent case on one engine, interleaved by the case's schedule, and
// records the history (model/history.ts). Each thread runs its commands in order; a command is a
// resumable operation (steps.ts) and one scheduling decision advances one thread to its next
// preemption point. A thread blocked on a lock or a grace period is not runnable.
// Memory ordering (store-buffer.ts): after the runnable threads, the runnable list holds one entry
// per buffered store the schedule may make visible next, so "store s of thread t becomes visible"
// is a decision like a thread step. With every buffer empty the list is the runnable threads only,
// as before the store buffer existed, so existing schedules and replays are unchanged. An
// operation's `visible` time records when its last buffered store became visible after it returned.
import type { Command } from '../../model/commands.js';
import type { History, HistoryEvent } from '../../model/history.js';
import type { Outcome } from '../../model/outcomes.js';
import type { Engine } from './engine.js';
import type { StepPoint, Steps } from './steps.js';
import type { BufferedStore } from './store-buffer.js';

/**
 * Called after every scheduling decision with the thread that stepped and where it stopped. A
 * decision that made a buffered store visible reports its thread, point `store visible: LOC`,
 * `store` true and `finished` true when the thread is between commands.
 */
export type StepObserver = (step: {
  decision: number;
  thread: number;
  point: string;
  finished: boolean;
  store?: true;
}) => void;

/** One thing a decision may do: step a runnable thread, or make one of a thread's buffered stores visible. */
export interface Choice {
  readonly thread: number;
  readonly store: boolean;
}

/**
 * A schedule as a function: given the choices (the runnable threads ascending, then the stores that
 * may become visible) and the decision number, the index of the one to take. The array form takes
 * choices[schedule[d] % length], and 0 once the schedule is used up.
 */
export type Chooser = (choices: readonly Choice[], decision: number) => number;

/** A bound on decisions: every engine operation finishes in a few dozen steps unless it livelocks. */
export const MAX_DECISIONS = 20_000;

interface Running {
  readonly index: number;
  readonly steps: Steps<Outcome>;
  readonly invoke: number;
  /** Where the operation stopped last; undefined before its first step. */
  at?: StepPoint;
}

/** Why an interleaved run could not finish: every unfinished thread waits, or it ran too long. */
export class InterleavingStuck extends Error {
  constructor(
    readonly why: 'deadlock' | 'livelock',
    readonly waiting: readonly { thread: number; point: string }[],
    readonly history: History,
  ) {
    super(`${why}: ${waiting.map((w) => `T${w.thread} in ${w.point}`).join(', ')}`);
  }
}

/** The threads inside a command, and where each stopped. */
const unfinished = (running: readonly (Running | null)[]): { thread: number; point: string }[] =>
  running.flatMap((r, t) => (r ? [{ thread: t, point: r.at?.point ?? '?' }] : []));

export function runInterleaved(
  engine: Engine,
  threads: readonly (readonly Command[])[],
  schedule: readonly number[] | Chooser,
  onStep?: StepObserver,
): History {
  const choose: Chooser =
    typeof schedule === 'function'
      ? schedule
      : (options, d) => (d < schedule.length ? schedule[d]! % options.length : 0);
  const next = threads.map(() => 0);
  const running: (Running | null)[] = threads.map(() => null);
  const events: HistoryEvent[] = [];
  const history = (): History => ({ threads: threads.length, clock: 'steps', events });
  const clock = engine.kvm.thread;
  const buffer = engine.kvm.storeBuffer;
  // Tags: the operation (thread, index) a buffered store belongs to, so its response can wait for it.
  const originOf = (thread: number, index: number): number => thread * 0x10000 + index;
  const responded = new Map<number, HistoryEvent>();
  let now = 0;
  buffer.onVisible = (s: BufferedStore) => {
    const e = responded.get(s.origin);
    if (e && e.respond < 2 * now + 1) e.visible = 2 * now + 1;
  };
  const canStep = (t: number): boolean => {
    const r = running[t];
    if (r) return !r.at?.ready || r.at.ready();
    return next[t]! < threads[t]!.length;
  };
  try {
    for (let decision = 0; ; decision++) {
      now = decision;
      const runnable = threads.flatMap((_, t) => (canStep(t) ? [t] : []));
      const stores = buffer.committable();
      const choices = runnable.length + stores.length;
      if (choices === 0) {
        if (running.every((r) => r === null)) return history();
        throw new InterleavingStuck('deadlock', unfinished(running), history());
      }
      if (decision >= MAX_DECISIONS) throw new InterleavingStuck('livelock', unfinished(running), history());
      const options: Choice[] = [
        ...runnable.map((thread) => ({ thread, store: false })),
        ...stores.map((st) => ({ thread: st.thread, store: true })),
      ];
      const pick = choose(options, decision);
      if (!(pick >= 0 && pick < choices)) throw new Error(`harness bug: the schedule chose ${pick} of ${choices}`);
      if (pick >= runnable.length) {
        const store = stores[pick - runnable.length]!;
        buffer.makeVisible(store);
        onStep?.({
          decision,
          thread: store.thread,
          point: `store visible: ${store.loc}`,
          finished: !running[store.thread],
          store: true,
        });
        continue;
      }
      const thread = runnable[pick]!;
      let r = running[thread];
      if (!r) {
        const index = next[thread]!;
        next[thread] = index + 1;
        r = { index, steps: engine.steps(threads[thread]![index]!), invoke: 2 * decision };
        running[thread] = r;
      }
      clock.current = thread;
      buffer.origin = originOf(thread, r.index);
      const result = r.steps.next();
      if (result.done) {
        const command = threads[thread]![r.index]!;
        const e = { id: events.length, thread, index: r.index, command, outcome: result.value };
        const event = { ...e, invoke: r.invoke, respond: 2 * decision + 1 };
        events.push(event);
        responded.set(originOf(thread, r.index), event);
        running[thread] = null;
        onStep?.({ decision, thread, point: 'returned', finished: true });
      } else {
        r.at = result.value;
        onStep?.({ decision, thread, point: result.value.point, finished: false });
      }
    }
  } finally {
    clock.current = -1;
    buffer.onVisible = null;
    buffer.origin = -1;
    // A run that stopped early leaves no store in flight for whoever inspects the engine next.
    buffer.drainAll();
  }
}
