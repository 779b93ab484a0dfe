// One-at-a-time minimisation of a shrunk concurrent case. fast-check shrinks the case's record
// field by field and cannot see that a schedule is an interleaving: cutting a command out of a
// thread shifts every later decision of the index schedule, so the race it needed is gone and the
// cut is refused. A counterexample then keeps commands the failure does not need (a second mmap of
// the same range, an enable_cap that changes nothing). This pass tries removing each setup command
// and each thread command alone while following the failing run's trace of threads (the removed
// command's own steps cut out, concurrent.ts `follow`), then trims and lowers the schedule, keeping
// a change whenever the case still fails the same way, until nothing more can go: a 1-minimal case
// in the sense of delta debugging. Deterministic: the same case, the same candidates in order.
import type { InvariantId } from '../../properties/invariants.js';
import type { ConcurrentTemplate } from '../../properties/concurrent-generators.js';
import type { TraceStep } from './concurrent.js';

/** What a failing candidate run gave: its invariant, the array schedule it ran and its trace. */
export interface Trial {
  readonly invariant: InvariantId;
  readonly schedule: readonly number[];
  readonly trace: readonly TraceStep[];
}

/** Runs a candidate (following `follow` when given): its trial if it failed the same way, else null. */
export type RunCandidate = (c: ConcurrentTemplate, follow?: readonly TraceStep[]) => Trial | null;

/** Candidate runs at most (each is one case: a few milliseconds). */
export const MAX_MINIMISE_RUNS = 400;

export interface Minimised {
  readonly case: ConcurrentTemplate;
  /** Changes kept (added to fast-check's shrink count in a report). */
  readonly steps: number;
}

interface Candidate {
  readonly case: ConcurrentTemplate;
  readonly follow?: readonly TraceStep[];
}

const without = <T>(list: readonly T[], i: number): T[] => [...list.slice(0, i), ...list.slice(i + 1)];

/** Every one-step simplification of `c` whose last failing run had `trace`, the largest cuts first. */
function* candidates(c: ConcurrentTemplate, trace: readonly TraceStep[]): Generator<Candidate> {
  for (let t = 0; t < c.threads.length; t++)
    for (let i = 0; c.threads[t]!.length > 1 && i < c.threads[t]!.length; i++) {
      const follow = trace.filter((s) => s.thread !== t || s.index !== i);
      yield { case: { ...c, threads: c.threads.map((l, u) => (u === t ? without(l, i) : l)) }, follow };
    }
  for (let i = 0; i < c.setup.length; i++) yield { case: { ...c, setup: without(c.setup, i) }, follow: trace };
  // Decisions past the last one a run makes change nothing: drop tails in halving chunks first.
  for (let cut = c.schedule.length >> 1; cut >= 1; cut >>= 1)
    yield { case: { ...c, schedule: c.schedule.slice(0, -cut) } };
  for (let i = c.schedule.length - 1; i >= 0; i--) yield { case: { ...c, schedule: without(c.schedule, i) } };
  for (let i = 0; i < c.schedule.length; i++)
    if (c.schedule[i] !== 0) yield { case: { ...c, schedule: c.schedule.map((d, j) => (j === i ? 0 : d)) } };
}

/** `first` is the shrunk case's own trial. */
export function minimiseConcurrentCase(
  c: ConcurrentTemplate,
  first: Trial,
  run: RunCandidate,
  maxRuns = MAX_MINIMISE_RUNS,
): Minimised {
  let current = c;
  let trace = first.trace;
  let steps = 0;
  let runs = 0;
  for (let changed = true; changed && runs < maxRuns; ) {
    changed = false;
    for (const candidate of candidates(current, trace)) {
      if (++runs > maxRuns) break;
      const trial = run(candidate.case, candidate.follow);
      if (!trial || trial.invariant !== first.invariant) continue;
      // The schedule the run came to replays it exactly as an array (concurrent.ts `follow`).
      current = { ...candidate.case, schedule: [...trial.schedule] };
      trace = trial.trace;
      steps++;
      changed = true;
      break;
    }
  }
  return { case: current, steps };
}
