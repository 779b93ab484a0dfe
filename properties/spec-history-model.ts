// The spec as the sequential model a concurrent history is checked against (issue 10, oracle a):
// a command may take the event's place in a linearization if one of the outcomes the spec allows
// for it in that state (model/spec.ts specAlternatives, or the single outcome of applyCommand) is
// the outcome the backend recorded (model/observable.ts outcomeMismatch, the differential's rule).
import type { Command } from '../model/commands.js';
import { interruptedWriteState } from '../model/history-step.js';
import { outcomeMismatch } from '../model/observable.js';
import { applyCommand, specAlternatives } from '../model/spec.js';
import type { History, HistoryEvent } from '../model/history.js';
import { inFlightAlternatives } from '../model/in-flight.js';
import type { SpecState } from '../model/state.js';
import type { SequentialModel } from './linearizability.js';

/**
 * `initial`: the spec state after the case's setup (not mutated). `accept`: whether a complete
 * linearization's final state agrees with what the backend holds at the end (memory contents).
 * `history`: the history being checked; with it, a command may also take the outcomes KVM allows
 * while a command it overlapped in real time was in flight (model/in-flight.ts).
 */
export function specHistoryModel(
  initial: SpecState,
  accept?: (state: SpecState) => boolean,
  history?: Pick<History, 'events'>,
): SequentialModel<SpecState> {
  const overlapping = (e: HistoryEvent): Command[] =>
    (history?.events ?? [])
      .filter((o) => o.id !== e.id && o.invoke < e.respond && e.invoke < o.respond)
      .map((o) => o.command);
  return {
    init: () => structuredClone(initial),
    step(state, event) {
      const command = event.command;
      const inFlight = inFlightAlternatives(state, command, overlapping(event))
        .filter((a) => outcomeMismatch(a.outcome, event.outcome) === null)
        .map((a) => a.state);
      return distinctStates([...sequentialSteps(state, event), ...inFlight]);
    },
    key: stateKey,
    ...(accept ? { accept } : {}),
  };
}

/** The states the command leaves in some sequential order, with its recorded outcome. */
function sequentialSteps(state: SpecState, event: HistoryEvent): SpecState[] {
  const command = event.command;
  // specAlternatives answers every raceAccess (both orders) and the guest accesses with more
  // than one allowed outcome; null means applyCommand's single outcome is the only one.
  const alternatives = specAlternatives(state, command);
  if (alternatives) {
    const allowed = alternatives.filter((a) => outcomeMismatch(a.outcome, event.outcome) === null);
    return allowed.map((a) => interrupted(a.state, command, event.outcome));
  }
  if (command.kind === 'raceAccess') throw new Error('specAlternatives must answer every raceAccess');
  const next = structuredClone(state);
  const outcome = applyCommand(next, command);
  return outcomeMismatch(outcome, event.outcome) === null ? [interrupted(next, command, event.outcome)] : [];
}

/** Alternatives often leave the same state (a stale mapping that served the value the page holds). */
const interrupted = interruptedWriteState;

function distinctStates(states: SpecState[]): SpecState[] {
  if (states.length < 2) return states;
  const seen = new Set<string>();
  return states.filter((s) => {
    const k = stateKey(s);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * A canonical key: equal for states no command can tell apart, different otherwise. Canonical
 * where the representation is not: Map entries and Set members are sorted (the spec never observes
 * their insertion order: every outcome that lists a set sorts it, dirty-log.ts), object keys are
 * sorted, undefined properties are left out (the spec reads optional fields with `?.`), and under a
 * `memory` key an empty page map is left out (model/memory.ts: an absent page reads as zero, and an
 * emptied page is indistinguishable from one). Arrays keep their order (slots, vCPUs, VMAs).
 * Hand-written instead of JSON.stringify with a replacer: one pass, no intermediate objects.
 */
export function stateKey(state: SpecState): string {
  return keyOf(state, '');
}

function keyOf(v: unknown, key: string): string {
  switch (typeof v) {
    case 'number':
      return String(v);
    case 'bigint':
      return `${v.toString(16)}n`;
    case 'string':
      return JSON.stringify(v);
    case 'boolean':
      return v ? 't' : 'f';
    case 'undefined':
      return 'u';
    case 'object':
      return objectKey(v, key);
    default:
      throw new Error(`stateKey: a ${typeof v} in the spec state`);
  }
}

function objectKey(v: object | null, key: string): string {
  if (v === null) return 'n';
  let out: string;
  if (Array.isArray(v)) {
    out = '[';
    for (const x of v) out += `${keyOf(x, '')},`;
    return `${out}]`;
  }
  if (v instanceof Map) {
    const skipEmpty = key === 'memory';
    const entries = v.size > 1 ? [...v.entries()].sort(byKey) : [...v.entries()];
    out = 'M{';
    for (const [k, x] of entries) {
      if (skipEmpty && x instanceof Map && x.size === 0) continue;
      out += `${keyOf(k, '')}:${keyOf(x, '')},`;
    }
    return `${out}}`;
  }
  if (v instanceof Set) {
    out = 'S[';
    for (const x of v.size > 1 ? [...v].sort(compare) : v) out += `${keyOf(x, '')},`;
    return `${out}]`;
  }
  const record = v as Record<string, unknown>;
  out = '{';
  for (const k of Object.keys(record).sort()) {
    const x = record[k];
    if (x !== undefined) out += `${k}:${keyOf(x, k)},`;
  }
  return `${out}}`;
}

const byKey = (a: [unknown, unknown], b: [unknown, unknown]): number => compare(a[0], b[0]);

/** Numbers numerically, anything else by its string form (Map/Set members in the state are numbers). */
function compare(a: unknown, b: unknown): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  const sa = String(a);
  const sb = String(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}
