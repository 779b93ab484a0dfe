// Linearizability of a history against a sequential model (Wing & Gong; Lowe's and Porcupine's
// refinements). FIRST CUT: plain depth-first search with a state bound; memoisation,
// P-compositionality and the table tests come next (issue 10).
import type { History, HistoryEvent, LinearizabilityVerdict } from '../model/history.js';

/** A sequential specification the checker can explore: step must not mutate its input. */
export interface SequentialModel<S> {
  init(): S;
  /** The states the event may leave when applied to state with its recorded outcome ([] if not allowed). */
  step(state: S, event: HistoryEvent): S[];
  /** A canonical key of the state, for memoisation. */
  key(state: S): string;
  /** Whether a complete linearization may end in this state (e.g. final memory contents agree). */
  accept?(state: S): boolean;
}

export interface CheckOptions {
  /** Stop and answer `undecided` after this many explored states. */
  maxStates?: number;
}

export function checkLinearizable<S>(
  model: SequentialModel<S>,
  history: History,
  options: CheckOptions = {},
): LinearizabilityVerdict {
  const bound = options.maxStates ?? 100_000;
  const events = history.events;
  const done = new Array<boolean>(events.length).fill(false);
  const order: number[] = [];
  let explored = 0;
  let best: number[] = [];
  let bestBlocked: number[] = [];
  // A candidate may come next if no pending event responded before it was invoked.
  const candidates = (): HistoryEvent[] => {
    const pending = events.filter((e) => !done[e.id]);
    const minRespond = Math.min(...pending.map((e) => e.respond));
    return pending.filter((e) => e.invoke < minRespond || e.respond === minRespond);
  };
  const search = (state: S): boolean | 'bound' => {
    if (order.length === events.length) return model.accept ? model.accept(state) : true;
    const next = candidates();
    for (const e of next) {
      for (const s of model.step(state, e)) {
        if (++explored > bound) return 'bound';
        done[e.id] = true;
        order.push(e.id);
        const r = search(s);
        if (r !== false) return r;
        order.pop();
        done[e.id] = false;
      }
    }
    if (order.length >= best.length) {
      best = [...order];
      bestBlocked = next.map((e) => e.id);
    }
    return false;
  };
  const r = search(model.init());
  if (r === 'bound') return { kind: 'undecided', statesExplored: explored, bound };
  if (r) return { kind: 'linearizable', order: [...order], statesExplored: explored };
  return { kind: 'not-linearizable', longestPrefix: best, blocked: bestBlocked, statesExplored: explored };
}
