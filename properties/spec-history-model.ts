// The spec as the sequential model a concurrent history is checked against (issue 10, oracle a):
// a command may take the event's place in a linearization if one of the outcomes the spec allows
// for it in that state (model/spec.ts specAlternatives, or the single outcome of applyCommand) is
// the outcome the backend recorded (model/observable.ts outcomeMismatch, the differential's rule).
import { outcomeMismatch } from '../model/observable.js';
import { bigintAsHex } from '../model/outcomes.js';
import { applyCommand, specAlternatives, type SequentialCommand } from '../model/spec.js';
import type { SpecState } from '../model/state.js';
import type { SequentialModel } from './linearizability.js';

/**
 * `initial`: the spec state after the case's setup (not mutated). `accept`: whether a complete
 * linearization's final state agrees with what the backend holds at the end (memory contents).
 */
export function specHistoryModel(
  initial: SpecState,
  accept?: (state: SpecState) => boolean,
): SequentialModel<SpecState> {
  return {
    init: () => structuredClone(initial),
    step(state, event) {
      const alternatives = specAlternatives(state, event.command);
      if (alternatives)
        return alternatives.filter((a) => outcomeMismatch(a.outcome, event.outcome) === null).map((a) => a.state);
      if (event.command.kind === 'raceAccess') return [];
      const next = structuredClone(state);
      const outcome = applyCommand(next, event.command as SequentialCommand);
      return outcomeMismatch(outcome, event.outcome) === null ? [next] : [];
    },
    key: stateKey,
    ...(accept ? { accept } : {}),
  };
}

/** A key equal for equal states up to Map/Set insertion order (a missed memo hit costs time, not soundness). */
export function stateKey(state: SpecState): string {
  return JSON.stringify(state, (k, v: unknown) => {
    if (v instanceof Map) return { map: [...v.entries()] };
    if (v instanceof Set) return { set: [...v.values()] };
    return bigintAsHex(k, v);
  });
}
