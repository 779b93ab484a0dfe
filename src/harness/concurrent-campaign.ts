// A concurrent campaign (issue 10 item 2): fast-check generates whole concurrent cases (setup,
// threads, schedule: properties/concurrent-generators.ts) and shrinks a failing one as a whole;
// each case runs in a fresh session (concurrent.ts). `undecided` verdicts are counted and reported,
// never passed silently.
import fc from 'fast-check';
import { ARCHES, type Arch } from '../../model/abi.js';
import { UPSTREAM_CONFIG } from '../../model/series.js';
import { concurrentArbitraryFor, type ConcurrentTemplate } from '../../properties/concurrent-generators.js';
import {
  archSeed,
  turnEventLoop,
  type CampaignConfig,
  type Failure,
  type Progress,
  type StopRequest,
} from './runner.js';
import {
  ConcurrentViolation,
  DEFAULT_MAX_STATES,
  runConcurrentCase,
  type ConcurrentInput,
  type TraceStep,
  type StepCheck,
} from './concurrent.js';
import { minimiseConcurrentCase, type Trial } from './concurrent-minimise.js';
import { InvariantViolation, type SessionConfig } from './session.js';

/** What the concurrent part of a campaign did, for the summary line. */
export interface ConcurrentSummary {
  /** Thread counts the cases ran with, e.g. [2, 3]. */
  readonly threads: readonly number[];
  cases: number;
  /** Commands of all cases, setup and threads. */
  commands: number;
  /** Histories the checker gave up on (more than `bound` states): counted, not passed. */
  undecided: number;
  readonly bound: number;
  elapsedMs: number;
}

export interface ConcurrentCampaignConfig extends CampaignConfig {
  /** Cases per architecture and thread count. */
  readonly runs: number;
  readonly threads: readonly number[];
  readonly maxStates?: number;
  /** The per-step hook point (issue 10 item 3b); none by default. */
  readonly stepCheck?: StepCheck;
}

export interface ConcurrentCampaignResult {
  readonly ok: boolean;
  readonly summary: ConcurrentSummary;
  readonly failure?: Failure;
  /** A signal stopped the campaign before its budget (runConcurrentCampaignInterruptible). */
  readonly interrupted?: true;
}

/**
 * Seeds of the concurrent part differ from the sequential part's and per thread count, all from one
 * seed; by the architecture's place in ARCHES, so `--threads N --arch A` re-finds a share's failure.
 */
export const concurrentSeed = (seed: number, threads: number, arch: Arch): number =>
  archSeed((seed ^ (threads * 0x2545f491)) | 0, ARCHES.indexOf(arch));

/** One (thread count, arch) campaign: its seed, session, generator and property body. */
interface ArchCampaign {
  readonly arch: Arch;
  readonly seed: number;
  readonly session: SessionConfig;
  readonly arbitrary: fc.Arbitrary<ConcurrentTemplate>;
  readonly body: (c: ConcurrentTemplate) => void;
  readonly firstFailureAt: () => number;
}

function newSummary(config: ConcurrentCampaignConfig): ConcurrentSummary {
  const bound = config.maxStates ?? DEFAULT_MAX_STATES;
  return { threads: config.threads, cases: 0, commands: 0, undecided: 0, bound, elapsedMs: 0 };
}

function* archCampaigns(
  config: ConcurrentCampaignConfig,
  summary: ConcurrentSummary,
  onProgress?: (p: Progress) => void,
): Generator<ArchCampaign> {
  const model = config.model ?? UPSTREAM_CONFIG;
  for (const n of config.threads)
    for (const arch of config.arches) {
      const seed = concurrentSeed(config.seed, n, arch);
      const session: SessionConfig = { arch, mutant: config.mutant, invariants: new Set(config.invariants), model };
      const state = { runs: 0, firstFailureAt: 0 };
      const body = (c: ConcurrentTemplate): void => {
        state.runs++;
        const shrinking = state.firstFailureAt > 0;
        onProgress?.({ arch, run: Math.min(state.runs, config.runs), total: config.runs, shrinking });
        try {
          const out = runConcurrentCase(session, c, summary.bound, config.stepCheck);
          if (!shrinking) {
            summary.cases++;
            summary.commands += out.case.setup.length + out.case.threads.flat().length;
            if (out.verdict.kind === 'undecided') summary.undecided++;
          }
        } catch (e) {
          if (state.firstFailureAt === 0) {
            state.firstFailureAt = state.runs;
            summary.cases++;
          }
          throw e;
        }
      };
      const arbitrary = concurrentArbitraryFor(model, n);
      yield { arch, seed, session, arbitrary, body, firstFailureAt: () => state.firstFailureAt };
    }
}

/** The campaign's result once fast-check found (and shrank) a failing case of `c`. */
function failed(
  c: ArchCampaign,
  details: fc.RunDetails<[ConcurrentTemplate]>,
  config: ConcurrentCampaignConfig,
  summary: ConcurrentSummary,
  started: number,
): ConcurrentCampaignResult {
  const [shrunk] = details.counterexample!;
  const run = (t: ConcurrentTemplate, follow?: readonly TraceStep[]) =>
    failureOf(c.session, follow ? { ...t, follow } : t, summary.bound, config.stepCheck);
  const found = run(shrunk);
  // The same case gives the same history: a pass here is nondeterminism in the harness.
  if (!found) throw new Error('harness bug: the shrunk concurrent case passed when run again (nondeterminism?)');
  // A candidate must fail the same way: the same invariant, and in the threads if the case did.
  const trialOf = (f: Found | null): Trial | null =>
    f && !f.concurrent === !found.concurrent
      ? { invariant: f.invariant, schedule: f.concurrent?.case.schedule ?? [], trace: f.concurrent?.trace ?? [] }
      : null;
  const minimised = minimiseConcurrentCase(shrunk, trialOf(found)!, (t, follow) => trialOf(run(t, follow)));
  const failure = minimised.steps ? run(minimised.case)! : found;
  summary.elapsedMs = performance.now() - started;
  const shrinks = details.numShrinks + minimised.steps;
  const common = { arch: c.arch, seed: c.seed, path: details.counterexamplePath ?? '', shrinks };
  return { ok: false, summary, failure: { ...failure, ...common, runsToFailure: c.firstFailureAt() } };
}

export function runConcurrentCampaign(
  config: ConcurrentCampaignConfig,
  onProgress?: (p: Progress) => void,
): ConcurrentCampaignResult {
  const started = performance.now();
  const summary = newSummary(config);
  for (const c of archCampaigns(config, summary, onProgress)) {
    const details = fc.check(fc.property(c.arbitrary, c.body), { seed: c.seed, numRuns: config.runs });
    if (details.failed) return failed(c, details, config, summary, started);
  }
  summary.elapsedMs = performance.now() - started;
  return { ok: true, summary };
}

/**
 * runConcurrentCampaign that a signal can stop at the next case (as runCampaignInterruptible does
 * for sequences): the same seeds, cases and counterexample; a stopped campaign is marked interrupted.
 */
export async function runConcurrentCampaignInterruptible(
  config: ConcurrentCampaignConfig,
  stop: StopRequest,
  onProgress?: (p: Progress) => void,
): Promise<ConcurrentCampaignResult> {
  const started = performance.now();
  const summary = newSummary(config);
  for (const c of archCampaigns(config, summary, onProgress)) {
    const property = fc.asyncProperty(c.arbitrary, async (t) => {
      await turnEventLoop();
      if (stop.requested()) throw new fc.PreconditionFailure(true);
      c.body(t);
    });
    const details = await fc.check(property, { seed: c.seed, numRuns: config.runs });
    // Cut short by the stop request before a counterexample was kept: no failure (see runner.ts).
    if (details.failed && details.counterexample) return failed(c, details, config, summary, started);
    if (stop.requested()) break;
  }
  summary.elapsedMs = performance.now() - started;
  return { ok: true, summary, ...(stop.requested() ? { interrupted: true as const } : {}) };
}

type Found = Pick<Failure, 'invariant' | 'messages' | 'steps' | 'concurrent'>;

/** Run a case for its violation (with its history and verdict when the threads failed), or null if it passes. */
function failureOf(session: SessionConfig, c: ConcurrentInput, bound: number, stepCheck?: StepCheck): Found | null {
  try {
    runConcurrentCase(session, c, bound, stepCheck);
    return null;
  } catch (e) {
    if (e instanceof ConcurrentViolation)
      return { invariant: e.invariant, messages: e.messages, steps: e.steps, concurrent: e.outcome };
    if (e instanceof InvariantViolation) return { invariant: e.invariant, messages: e.messages, steps: e.steps };
    throw e;
  }
}

/** The summary's clause, e.g. "1,000 concurrent cases (2 and 3 threads, 9,876 commands), 3 histories undecided". */
export function formatConcurrentSummary(s: ConcurrentSummary): string {
  const threads = s.threads.join(' and ');
  const undecided = `${s.undecided} histories undecided (bound ${s.bound})`;
  return `${s.cases} concurrent cases (${threads} threads, ${s.commands} commands), ${undecided}`;
}
