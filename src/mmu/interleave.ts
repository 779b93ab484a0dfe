// Runs the threads of a concurrent case on one engine, interleaved by the case's schedule, and
// records the history (model/history.ts). Each thread runs its commands in order; a command is a
// resumable operation (steps.ts) and one scheduling decision advances one thread to its next
// preemption point. A thread blocked on a lock or a grace period is not runnable.
import type { Command } from '../../model/commands.js';
import type { History, HistoryEvent } from '../../model/history.js';
import type { Outcome } from '../../model/outcomes.js';
import type { Engine } from './engine.js';
import type { StepPoint, Steps } from './steps.js';

/** Called after every scheduling decision with the thread that stepped and where it stopped. */
export type StepObserver = (step: { decision: number; thread: number; point: string; finished: boolean }) => void;

/**
 * A schedule as a function: given the runnable threads (ascending) and the decision number, the
 * thread to step, which must be runnable. The array form picks runnable[schedule[d] % length].
 */
export type Chooser = (runnable: readonly number[], decision: number) => number;

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
      : (runnable, d) => runnable[d < schedule.length ? schedule[d]! % runnable.length : 0]!;
  const next = threads.map(() => 0);
  const running: (Running | null)[] = threads.map(() => null);
  const events: HistoryEvent[] = [];
  const history = (): History => ({ threads: threads.length, clock: 'steps', events });
  const clock = engine.kvm.thread;
  const canStep = (t: number): boolean => {
    const r = running[t];
    if (r) return !r.at?.ready || r.at.ready();
    return next[t]! < threads[t]!.length;
  };
  try {
    for (let decision = 0; ; decision++) {
      const runnable = threads.flatMap((_, t) => (canStep(t) ? [t] : []));
      if (runnable.length === 0) {
        if (running.every((r) => r === null)) return history();
        throw new InterleavingStuck('deadlock', unfinished(running), history());
      }
      if (decision >= MAX_DECISIONS) throw new InterleavingStuck('livelock', unfinished(running), history());
      const thread = choose(runnable, decision);
      if (!runnable.includes(thread)) throw new Error(`harness bug: the schedule chose T${thread}, not runnable`);
      let r = running[thread];
      if (!r) {
        const index = next[thread]!;
        next[thread] = index + 1;
        r = { index, steps: engine.steps(threads[thread]![index]!), invoke: 2 * decision };
        running[thread] = r;
      }
      clock.current = thread;
      const result = r.steps.next();
      if (result.done) {
        const command = threads[thread]![r.index]!;
        const e = { id: events.length, thread, index: r.index, command, outcome: result.value };
        events.push({ ...e, invoke: r.invoke, respond: 2 * decision + 1 });
        running[thread] = null;
        onStep?.({ decision, thread, point: 'returned', finished: true });
      } else {
        r.at = result.value;
        onStep?.({ decision, thread, point: result.value.point, finished: false });
      }
    }
  } finally {
    clock.current = -1;
  }
}
