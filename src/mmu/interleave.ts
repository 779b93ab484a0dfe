// Runs the threads of a concurrent case on one engine, interleaved by the case's schedule, and
// records the history (model/history.ts). FIRST CUT: each command is one atomic step; the engine's
// operations become resumable steps at KVM's lock / SRCU / shared-read points next (issue 10).
import type { Command } from '../../model/commands.js';
import type { History, HistoryEvent } from '../../model/history.js';
import type { Engine } from './engine.js';

/** Called after every scheduling decision with the thread that stepped and where it stopped. */
export type StepObserver = (step: { decision: number; thread: number; point: string }) => void;

export function runInterleaved(
  engine: Engine,
  threads: readonly (readonly Command[])[],
  schedule: readonly number[],
  onStep?: StepObserver,
): History {
  const next = threads.map(() => 0);
  const events: HistoryEvent[] = [];
  let decision = 0;
  for (;;) {
    const runnable = threads.flatMap((list, t) => (next[t]! < list.length ? [t] : []));
    if (runnable.length === 0) break;
    const pick = decision < schedule.length ? schedule[decision]! % runnable.length : 0;
    const thread = runnable[pick]!;
    const index = next[thread]!;
    next[thread] = index + 1;
    const command = threads[thread]![index]!;
    const invoke = decision * 2;
    const outcome = engine.apply(command);
    events.push({ id: events.length, thread, index, command, outcome, invoke, respond: invoke + 1 });
    onStep?.({ decision, thread, point: 'command' });
    decision++;
  }
  return { threads: threads.length, clock: 'steps', events };
}
