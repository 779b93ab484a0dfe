// check --threads N --backend kvm (issue 10 items 2 and 5 on the real kernel): the engine's concurrent
// generator and seeds (concurrent-campaign.ts concurrentSeed), each case's setup resolved and stepped
// on spec and engine as the engine's campaign does (so the same seed gives the same concrete cases,
// up to the kernel's generator limits), then run on /dev/kvm with one OS thread per actor
// (src/kvm/concurrent.ts), and the kernel's history judged by the same checker against the spec
// from the state the kernel's setup left (no final-memory check: the helper does not read the whole
// of memory back). The schedule is not used: the kernel's scheduler interleaves the threads.
//
// A kernel history is timing-dependent, so fast-check's shrinking runs each candidate up to
// `attempts` times and keeps it if any run fails; a shrink that finds nothing in that many runs is
// dropped, which can leave the counterexample larger than the engine's would be, never wrong.
import fc from 'fast-check';
import { formatCommand, type Command } from '../../model/commands.js';
import type { ConcurrentCase, History, LinearizabilityVerdict } from '../../model/history.js';
import type { ModelConfig } from '../../model/series.js';
import {
  concurrentArbitraryFor,
  resolveThreads,
  type ConcurrentTemplate,
} from '../../properties/concurrent-generators.js';
import type { InvariantId } from '../../properties/invariants.js';
import { checkLinearizable } from '../../properties/linearizability.js';
import { specHistoryModel } from '../../properties/spec-history-model.js';
import type { KvmBackend } from '../kvm/backend.js';
import { caseLeftOut, formatCaseLeftOut, runConcurrentOnKernel, type ConcurrentKernelRun } from '../kvm/concurrent.js';
import { InputError } from '../util/errors.js';
import { ConcurrentViolation, DEFAULT_MAX_STATES, notLinearizableMessage, type TraceStep } from './concurrent.js';
import { concurrentSeed, type ConcurrentSummary } from './concurrent-campaign.js';
import {
  kernelLimits,
  turnEventLoop,
  type Failure,
  type HelperDeathFinding,
  type Progress,
  type StopRequest,
} from './runner.js';
import { InvariantViolation, Session, type StepRecord } from './session.js';

/** What a kernel concurrent case is judged by: the kernel's results, and its history's linearizability. */
export const KERNEL_CONCURRENT_INVARIANTS: readonly InvariantId[] = ['kernel-agrees', 'linearizable'];

/** Runs of one shrink candidate on the kernel before it counts as passing (any failing run keeps it). */
export const DEFAULT_SHRINK_ATTEMPTS = 3;
/** Shrinking stops after this long (the counterexample found so far is kept): kernel runs are slow. */
export const DEFAULT_SHRINK_MS = 60_000;

/** The backend as the campaign uses it (a test passes a stand-in with its own runCase). */
export type KernelTarget = Pick<KvmBackend, 'canHugetlb' | 'canUserfaultfd'>;

export interface KernelConcurrentConfig {
  readonly seed: number;
  /** Cases per thread count. */
  readonly runs: number;
  readonly threads: readonly number[];
  readonly invariants: readonly InvariantId[];
  /** With the platform profile's deviations (the kernel is judged under them). */
  readonly model: ModelConfig;
  readonly backend: KernelTarget;
  /** Runs a concrete case on the kernel: runConcurrentOnKernel on `backend` unless given. */
  readonly runCase?: (c: ConcurrentCase) => ConcurrentKernelRun;
  readonly maxStates?: number;
  readonly attempts?: number;
  readonly shrinkMs?: number;
}

export interface KernelConcurrentSummary extends ConcurrentSummary {
  /** Cases generated but left out whole (a command the kernel backend cannot run), by reason. */
  readonly leftOut: Map<string, number>;
  /** The checker's time per kernel history judged, in ms (bench: median, p99). */
  readonly checkMs: number[];
}

export interface KernelConcurrentResult {
  readonly ok: boolean;
  readonly summary: KernelConcurrentSummary;
  readonly failure?: Failure;
  /** Cases the helper died on twice (a fresh helper included); the campaign went on after each. */
  readonly helperDeaths: HelperDeathFinding[];
  readonly interrupted?: boolean;
}

/** A generated case made concrete: the setup stepped on spec and engine, the threads resolved after it. */
export function concreteCase(model: ModelConfig, t: ConcurrentTemplate): { case: ConcurrentCase; setup: StepRecord[] } {
  const session = new Session({ arch: 'x86', mutant: null, invariants: new Set(), model });
  for (const template of t.setup) session.step(template);
  const threads = resolveThreads(session.spec, t.roles, t.threads);
  const c = { setup: session.steps.map((s) => s.cmd), roles: [...t.roles], threads, schedule: [...t.schedule] };
  return { case: c, setup: [...session.steps] };
}

/** What one kernel run of a case came to. */
export type KernelJudgement =
  | { readonly kind: 'left-out'; readonly reason: string }
  | { readonly kind: 'died'; readonly how: string; readonly failure: ConcurrentViolation }
  | { readonly kind: 'failed'; readonly violation: ConcurrentViolation }
  | {
      readonly kind: 'judged';
      readonly history: History;
      readonly verdict: LinearizabilityVerdict;
      readonly checkMs: number;
    };

/**
 * Judge one kernel run: a setup result the spec does not allow, a thread's harness problem and a
 * helper death are kernel-agrees (as in the sequential kvm check); a history no order the spec
 * allows explains is `linearizable`'s violation.
 */
export function judgeKernelRun(
  c: ConcurrentCase,
  setup: readonly StepRecord[],
  run: ConcurrentKernelRun,
  invariants: ReadonlySet<InvariantId>,
  maxStates = DEFAULT_MAX_STATES,
): KernelJudgement {
  // No engine trace: the kernel's scheduler interleaved the threads (the schedule is not used).
  const known = { case: c, setupSteps: withKernel(setup, run), trace: [] as TraceStep[] };
  switch (run.kind) {
    case 'left-out':
      return { kind: 'left-out', reason: run.reason };
    case 'died': {
      const again = run.retried ? ', and again in a fresh helper' : '';
      const stderr = run.stderr ? ` (it printed: ${run.stderr.split('\n').slice(-2).join(' / ')})` : '';
      const message = `the kvm helper ${run.how} while running the case's ${c.threads.length} threads${again}${stderr}`;
      return { kind: 'died', how: run.how, failure: new ConcurrentViolation('kernel-agrees', [message], known) };
    }
    case 'ran':
      return judgeRan(c, run, known, invariants, maxStates);
    default: {
      const never: never = run;
      throw new Error(`unknown kernel run ${JSON.stringify(never)}`);
    }
  }
}

function judgeRan(
  c: ConcurrentCase,
  run: Extract<ConcurrentKernelRun, { kind: 'ran' }>,
  known: { case: ConcurrentCase; setupSteps: StepRecord[]; trace: readonly TraceStep[] },
  invariants: ReadonlySet<InvariantId>,
  maxStates: number,
): KernelJudgement {
  const kernelAgrees = invariants.has('kernel-agrees');
  if (run.setupMismatch && kernelAgrees) {
    const { step, message } = run.setupMismatch;
    const messages = [`setup step ${step} (${formatCommand(c.setup[step - 1]!)}): ${message}`];
    const steps = known.setupSteps.slice(0, step);
    return {
      kind: 'failed',
      violation: new ConcurrentViolation('kernel-agrees', messages, { ...known, setupSteps: steps }),
    };
  }
  if (!run.history) {
    if (!kernelAgrees) return { kind: 'left-out', reason: 'a thread had a harness problem (kernel-agrees is off)' };
    return { kind: 'failed', violation: new ConcurrentViolation('kernel-agrees', run.problems, known) };
  }
  const history = run.history;
  const started = performance.now();
  const model = specHistoryModel(run.specAfterSetup, undefined, history);
  const verdict = checkLinearizable(model, history, { maxStates });
  const checkMs = performance.now() - started;
  if (verdict.kind === 'not-linearizable' && invariants.has('linearizable')) {
    const message = notLinearizableMessage(history, verdict, 'spec (from the state the kernel left after the setup)');
    const outcome = { ...known, history, verdict };
    return { kind: 'failed', violation: new ConcurrentViolation('linearizable', [message], outcome) };
  }
  return { kind: 'judged', history, verdict, checkMs };
}

/** The setup's step records with the kernel's results beside the spec's and the engine's. */
function withKernel(setup: readonly StepRecord[], run: ConcurrentKernelRun): StepRecord[] {
  if (run.kind !== 'ran') return [...setup];
  return setup.map((s, i) => (run.setup[i] ? { ...s, kernel: run.setup[i] } : s));
}

interface ThreadState {
  runs: number;
  firstFailureAt: number;
  shrinkDeadline: number;
}

/** The campaign; a stop request (SIGINT) ends it at the next case with what it found so far. */
export async function runKernelConcurrentCampaign(
  config: KernelConcurrentConfig,
  stop: StopRequest,
  onProgress?: (p: Progress) => void,
): Promise<KernelConcurrentResult> {
  const started = performance.now();
  const bound = config.maxStates ?? DEFAULT_MAX_STATES;
  const summary: KernelConcurrentSummary = {
    threads: config.threads,
    cases: 0,
    commands: 0,
    undecided: 0,
    bound,
    elapsedMs: 0,
    leftOut: new Map(),
    checkMs: [],
  };
  const helperDeaths: HelperDeathFinding[] = [];
  const finish = (extra: Partial<KernelConcurrentResult>): KernelConcurrentResult => {
    summary.elapsedMs = performance.now() - started;
    return { ok: !extra.failure, summary, helperDeaths, ...(stop.requested() ? { interrupted: true } : {}), ...extra };
  };
  for (const n of config.threads) {
    const seed = concurrentSeed(config.seed, n, 'x86');
    const state: ThreadState = { runs: 0, firstFailureAt: 0, shrinkDeadline: Number.POSITIVE_INFINITY };
    const body = caseBody(config, summary, helperDeaths, state, seed, onProgress);
    const property = fc.asyncProperty(
      concurrentArbitraryFor(config.model, n, kernelLimits(config.backend)),
      async (t) => {
        await turnEventLoop();
        if (stop.requested() || performance.now() > state.shrinkDeadline) throw new fc.PreconditionFailure(true);
        body(t);
      },
    );
    const details = await fc.check(property, { seed, numRuns: config.runs });
    // Cut short by the stop request before a counterexample was kept: no failure (see runner.ts).
    if (details.failed && details.counterexample) {
      const e = details.errorInstance;
      if (!(e instanceof InvariantViolation)) throw e;
      const concurrent = e instanceof ConcurrentViolation ? { concurrent: e.outcome } : {};
      const failure: Failure = {
        arch: 'x86',
        seed,
        path: details.counterexamplePath ?? '',
        invariant: e.invariant,
        messages: e.messages,
        steps: e.steps,
        runsToFailure: state.firstFailureAt,
        shrinks: details.numShrinks,
        ...concurrent,
      };
      return finish({ failure });
    }
    if (stop.requested()) break;
  }
  return finish({});
}

/** One case of the property: run (and judge) it once, or up to `attempts` times while shrinking. */
function caseBody(
  config: KernelConcurrentConfig,
  summary: KernelConcurrentSummary,
  deaths: HelperDeathFinding[],
  state: ThreadState,
  seed: number,
  onProgress: ((p: Progress) => void) | undefined,
): (t: ConcurrentTemplate) => void {
  const invariants = new Set(config.invariants);
  const bound = config.maxStates ?? DEFAULT_MAX_STATES;
  const backend = config.backend as KvmBackend;
  const runCase = config.runCase ?? ((c: ConcurrentCase) => runConcurrentOnKernel(backend, c, config.model));
  const attempts = config.attempts ?? DEFAULT_SHRINK_ATTEMPTS;
  return (t) => {
    state.runs++;
    const shrinking = state.firstFailureAt > 0;
    onProgress?.({ arch: 'x86', run: Math.min(state.runs, config.runs), total: config.runs, shrinking });
    const { case: c, setup } = concreteCase(config.model, t);
    for (let attempt = 0; attempt < (shrinking ? attempts : 1); attempt++) {
      const j = judgeKernelRun(c, setup, runCase(c), invariants, bound);
      if (j.kind === 'failed') {
        if (!shrinking) {
          state.firstFailureAt = state.runs;
          state.shrinkDeadline = performance.now() + (config.shrinkMs ?? DEFAULT_SHRINK_MS);
          summary.cases++;
        }
        throw j.violation;
      }
      if (shrinking) continue;
      tally(summary, deaths, c, j, seed, state.runs);
    }
  };
}

function tally(
  summary: KernelConcurrentSummary,
  deaths: HelperDeathFinding[],
  c: ConcurrentCase,
  j: Exclude<KernelJudgement, { kind: 'failed' }>,
  seed: number,
  run: number,
): void {
  switch (j.kind) {
    case 'left-out':
      summary.leftOut.set(j.reason, (summary.leftOut.get(j.reason) ?? 0) + 1);
      return;
    case 'died':
      noteDeath(deaths, j, seed, run);
      return;
    case 'judged':
      summary.cases++;
      summary.commands += c.setup.length + c.threads.flat().length;
      summary.checkMs.push(j.checkMs);
      if (j.verdict.kind === 'undecided') summary.undecided++;
      return;
    default: {
      const never: never = j;
      throw new Error(`unknown judgement ${JSON.stringify(never)}`);
    }
  }
}

/** Deaths of one kind (how the helper died) are one finding, with a count of the cases that repeat it. */
function noteDeath(
  deaths: HelperDeathFinding[],
  j: Extract<KernelJudgement, { kind: 'died' }>,
  seed: number,
  run: number,
): void {
  const same = deaths.find((d) => d.how === j.how);
  if (same) {
    same.repeats++;
    return;
  }
  const e = j.failure;
  const failure: Failure = {
    arch: 'x86',
    seed,
    path: '',
    invariant: e.invariant,
    messages: e.messages,
    steps: e.steps,
    runsToFailure: run,
    shrinks: 0,
    concurrent: e.outcome,
  };
  deaths.push({ failure, how: j.how, step: e.steps.length, repeats: 0 });
}

/** The summary's extra clauses for the kernel: cases left out whole and why. */
export function formatLeftOutCases(s: KernelConcurrentSummary): string[] {
  return [...s.leftOut].map(([why, n]) => `left out for the kernel: ${n} cases, ${why}`);
}

/** Runs of a kernel concurrent replay (replay --attempts overrides): a kernel history depends on timing. */
export const DEFAULT_REPLAY_ATTEMPTS = 20;

/** What a kernel concurrent replay found: the first failing run (or the last passing one) and the count. */
export interface KernelReplay {
  readonly steps: readonly StepRecord[];
  readonly violation: InvariantViolation | null;
  readonly concurrent: Partial<ConcurrentViolation['outcome']>;
  readonly attempts: { readonly runs: number; readonly failed: number };
}

/**
 * A kernel concurrent replay: the case `attempts` times on the kernel, each judged as the campaign
 * judges it; the answer counts the failing runs and keeps the first failure for the report. A case
 * the kernel backend cannot run (check never generates one) is refused whole, as a sequence's is.
 */
export function replayOnKernel(
  replay: { readonly model: ModelConfig },
  c: ConcurrentCase,
  backend: KvmBackend,
  invariants: readonly InvariantId[],
  attempts = DEFAULT_REPLAY_ATTEMPTS,
): KernelReplay {
  if (!Number.isSafeInteger(attempts) || attempts < 1) throw new InputError('--attempts must be a positive integer');
  const left = caseLeftOut(backend, c, replay.model);
  if (left) throw new InputError(`replay refused: ${formatCaseLeftOut(left)}`);
  const setup = setupRecords(replay.model, c.setup);
  const selected = new Set(invariants);
  let first: ConcurrentViolation | null = null;
  let last: Partial<ConcurrentViolation['outcome']> = { case: c, setupSteps: setup, trace: [] };
  let failed = 0;
  for (let i = 0; i < attempts; i++) {
    const j = judgeKernelRun(c, setup, runConcurrentOnKernel(backend, c, replay.model), selected);
    if (j.kind === 'failed' || j.kind === 'died') {
      failed++;
      first ??= j.kind === 'failed' ? j.violation : j.failure;
    } else if (j.kind === 'judged') last = { ...last, history: j.history, verdict: j.verdict };
  }
  const runs = { runs: attempts, failed };
  if (first) return { steps: first.steps, violation: first, concurrent: first.outcome, attempts: runs };
  return { steps: setup, violation: null, concurrent: last, attempts: runs };
}

/** The setup's step records on spec and engine (the kernel's results are added per run). */
function setupRecords(model: ModelConfig, setup: readonly Command[]): StepRecord[] {
  const session = new Session({ arch: 'x86', mutant: null, invariants: new Set(), model });
  for (const cmd of setup) session.run(cmd);
  return [...session.steps];
}
