// One concurrent run (issue 10 items 2 and 3a): the setup applied to spec and engine as a sequential
// run does (with the sequential invariants), then the threads interleaved on the engine by the
// schedule (src/mmu/interleave.ts), then the oracle: the history must be linearizable against the
// spec from its state after the setup, and a linearization must end where the engine's host memory
// and guest_memfd contents are (the differential's memoryMismatch). A case replays exactly: the same
// case gives the same history and the same verdict.
import type { Command } from '../../model/commands.js';
import type { ConcurrentCase, History, LinearizabilityVerdict, ThreadRole } from '../../model/history.js';
import type { SpecState } from '../../model/state.js';
import { UPSTREAM_CONFIG } from '../../model/series.js';
import { resolveThreads } from '../../properties/concurrent-generators.js';
import { memoryMismatch } from '../../properties/differential.js';
import { ConcurrentChecks } from '../../properties/concurrent-invariants.js';
import type { InvariantId } from '../../properties/invariants.js';
import { checkLinearizable } from '../../properties/linearizability.js';
import { programOrderFor, visibleEvents } from '../../properties/memory-order.js';
import { specHistoryModel } from '../../properties/spec-history-model.js';
import type { Template } from '../../properties/templates.js';
import type { Engine } from '../mmu/engine.js';
import { type Chooser, InterleavingStuck, runInterleaved, type StepObserver } from '../mmu/interleave.js';
import { InvariantViolation, Session, type SessionConfig, type StepRecord } from './session.js';

/** States the checker may explore per history before it answers `undecided` (counted, never a pass). */
export const DEFAULT_MAX_STATES = 20_000;

/** What a concurrent run produced: the concrete case, its history and the checker's verdict. */
export interface ConcurrentOutcome {
  readonly case: ConcurrentCase;
  readonly history: History;
  readonly verdict: LinearizabilityVerdict;
  /** The setup's sequential step records (the part a report prints as today). */
  readonly setupSteps: readonly StepRecord[];
  /** Each scheduling decision's thread and the index of the command it was in (filled as the run goes). */
  readonly trace: readonly TraceStep[];
}

export interface TraceStep {
  readonly thread: number;
  /** The command the thread was in (or, for a store, had last started). */
  readonly index: number;
  /** The decision made one of the thread's buffered stores visible. */
  readonly store?: true;
}

/** A concurrent case failed: the violation, with the case and (once it ran) its history and verdict. */
export class ConcurrentViolation extends InvariantViolation {
  constructor(
    invariant: InvariantViolation['invariant'],
    messages: readonly string[],
    readonly outcome: Omit<ConcurrentOutcome, 'history' | 'verdict'> & Partial<ConcurrentOutcome>,
  ) {
    super(invariant, messages, outcome.setupSteps);
  }
}

/**
 * Whether a linearization's final spec state holds what the engine holds at the end of the run:
 * host memory and every guest_memfd (the outcomes alone cannot see a lost write nobody read back).
 */
export function finalMemoryAgrees(engine: Engine): (state: SpecState) => boolean {
  const host = engine.hostMemory();
  const gmems = engine.gmemMemory();
  return (state) =>
    memoryMismatch('host', state.mm.memory, host).length === 0 &&
    state.gmems.every((g, i) => memoryMismatch(`gmem#${i}`, g.memory, gmems[i] ?? new Map()).length === 0);
}

export interface ConcurrentInput {
  readonly setup: readonly Template[];
  readonly roles: readonly ThreadRole[];
  /** Templates (generated) or concrete commands as `{ t: 'cmd' }` (a replay). */
  readonly threads: readonly Template[][];
  readonly schedule: readonly number[];
  /**
   * Instead of `schedule`: the steps to take, in order (a trace of an earlier run, perhaps with a
   * command's steps cut out). Each decision takes the first listed step that is possible (a
   * runnable thread, or a store of that thread that may become visible), or choice 0 once the list
   * is used up; the case records the schedule this came to.
   */
  readonly follow?: readonly TraceStep[];
}

/** A Chooser that follows a trace, recording the array schedule that makes the same choices. */
function following(trace: readonly TraceStep[], realised: number[]): Chooser {
  const queue = [...trace];
  return (choices) => {
    const match = (s: TraceStep) => choices.findIndex((c) => c.thread === s.thread && c.store === !!s.store);
    const k = queue.findIndex((s) => match(s) >= 0);
    const pick = k >= 0 ? match(queue.splice(k, 1)[0]!) : 0;
    realised.push(pick);
    return pick;
  };
}

/**
 * An extra per-step check (a test's), called after every scheduling decision with the session,
 * after the engine invariants that hold at every step (properties/concurrent-invariants.ts).
 * Returns violations as sentences.
 */
export type StepCheck = (session: Session, step: Parameters<StepObserver>[0]) => readonly string[];

/** Run one concurrent case; throws InvariantViolation (setup) or ConcurrentViolation (the threads). */
export function runConcurrentCase(
  config: SessionConfig,
  input: ConcurrentInput,
  maxStates = DEFAULT_MAX_STATES,
  stepCheck?: StepCheck,
): ConcurrentOutcome {
  const session = new Session(config);
  for (const t of input.setup) session.step(t);
  session.fullCheck();
  const spec = session.spec;
  const threads = resolveThreads(spec, input.roles, input.threads);
  const setup = session.steps.map((s) => s.cmd);
  const schedule = input.follow ? [] : [...input.schedule];
  const known = {
    case: { setup, roles: [...input.roles], threads, schedule },
    setupSteps: [...session.steps],
    trace: [] as TraceStep[],
  };
  const choose = input.follow ? following(input.follow, schedule) : schedule;
  const history = interleave(session, config.invariants, known, choose, stepCheck);
  const model = specHistoryModel(spec, finalMemoryAgrees(session.engine), history);
  const programOrder = programOrderFor(config.arch, config.model ?? UPSTREAM_CONFIG);
  const timed = { events: visibleEvents(history.events, programOrder) };
  const verdict = checkLinearizable(model, timed, { maxStates, ...(programOrder ? { programOrder } : {}) });
  const outcome: ConcurrentOutcome = { ...known, history, verdict };
  if (verdict.kind === 'not-linearizable' && config.invariants.has('linearizable'))
    throw new ConcurrentViolation('linearizable', [notLinearizableMessage(history, verdict)], outcome);
  return outcome;
}

/**
 * Interleave the threads, checking after every step the engine invariants that hold there
 * (properties/concurrent-invariants.ts) among those selected, and the caller's extra `stepCheck`.
 */
function interleave(
  session: Session,
  selected: ReadonlySet<InvariantId>,
  known: Omit<ConcurrentOutcome, 'history' | 'verdict' | 'trace'> & { trace: TraceStep[] },
  choose: readonly number[] | Chooser,
  stepCheck: StepCheck | undefined,
): History {
  const checks = new ConcurrentChecks(session.engine, known.case.roles);
  const done = known.case.threads.map(() => 0);
  session.engine.takeEvents();
  const onStep: StepObserver = (step) => {
    // A store made visible between commands belongs to the thread's last one (approximately: to follow a trace).
    const index = step.store && step.finished ? done[step.thread]! - 1 : done[step.thread]!;
    known.trace.push({ thread: step.thread, index, ...(step.store ? { store: true as const } : {}) });
    if (step.finished && !step.store) done[step.thread]!++;
    const problems = checks.afterStep(step, session.engine.takeEvents()).filter((p) => selected.has(p.invariant));
    const first = problems[0];
    if (first) {
      const messages = problems.filter((p) => p.invariant === first.invariant).map((p) => p.message);
      throw new StepViolation(first.invariant, [
        `after step ${step.decision} (T${step.thread} ${step.point}):`,
        ...messages,
      ]);
    }
    const found = stepCheck?.(session, step) ?? [];
    if (found.length) throw new StepViolation('linearizable', found);
  };
  try {
    return runInterleaved(session.engine, known.case.threads, choose, onStep);
  } catch (e) {
    if (e instanceof StepViolation) throw new ConcurrentViolation(e.invariant, e.found, known);
    // A deadlock or livelock is no history at all: the engine failed the case (what a VMM sees is a hang).
    if (e instanceof InterleavingStuck)
      throw new ConcurrentViolation('linearizable', [`the threads never finish: ${e.message}`], {
        ...known,
        history: e.history,
      });
    const why = e instanceof Error ? e.message : String(e);
    throw new ConcurrentViolation('differential', [`the engine crashed while interleaving: ${why}`], known);
  }
}

class StepViolation extends Error {
  constructor(
    readonly invariant: InvariantId,
    readonly found: readonly string[],
  ) {
    super(found.join('; '));
  }
}

/** The violation's sentence; `against` names what the orders were judged with (the engine's memory or not). */
export function notLinearizableMessage(
  history: History,
  verdict: Extract<LinearizabilityVerdict, { kind: 'not-linearizable' }>,
  against = "spec (with the engine's final memory)",
): string {
  const name = (id: number): string => {
    const e = history.events[id]!;
    return `T${e.thread}.${e.index}`;
  };
  const prefix = verdict.longestPrefix.map(name).join(' ') || '(nothing)';
  return (
    `no sequential order of the ${history.events.length} commands that respects real time is allowed by the ` +
    `${against}: the longest linearizable prefix is ${prefix}, after which none of ` +
    `${verdict.blocked.map(name).join(', ')} may come (${verdict.statesExplored} states explored)`
  );
}

/** A concrete case as the runner's input (a replay file's, or a test's). */
export function inputOf(c: ConcurrentCase): ConcurrentInput {
  const cmd = (x: Command): Template => ({ t: 'cmd', cmd: x });
  return { setup: c.setup.map(cmd), roles: c.roles, threads: c.threads.map((l) => l.map(cmd)), schedule: c.schedule };
}
