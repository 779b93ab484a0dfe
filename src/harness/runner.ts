// A campaign: fast-check generates template sequences (fc.commands + fc.modelRun), each run is a
// fresh Session, and a failure is shrunk by fast-check, then replayed once more from its templates
// to record every step's outcomes for the report and the replay file.
import fc from 'fast-check';
import type { Arch } from '../../model/abi.js';
import { bigintAsHex } from '../../model/outcomes.js';
import type { InvariantId } from '../../properties/invariants.js';
import { setupArbitraryFor, templateArbitraryFor, type GeneratorLimits } from '../../properties/generators.js';
import { VMM_MAX_GROUPS, vmmGroupArbitraryFor, vmmSetupArbitrary } from '../../properties/vmm-generators.js';
import type { KvmBackend } from '../kvm/backend.js';
import { UPSTREAM_CONFIG, type ModelConfig } from '../../model/series.js';
import type { Template } from '../../properties/templates.js';
import type { MutantName } from '../mmu/mutants.js';
import { VMM_SHARE_EVERY } from './budgets.js';
import type { ConcurrentViolation } from './concurrent.js';
import { Coverage } from './coverage.js';
import { HelperDeath, InvariantViolation, Session, type SessionConfig, type StepRecord } from './session.js';

export interface CampaignConfig {
  readonly arches: readonly Arch[];
  readonly seed: number;
  /** Runs per architecture. */
  readonly runs: number;
  readonly maxCommands: number;
  readonly invariants: readonly InvariantId[];
  readonly mutant: MutantName | null;
  /** Series and options (upstream when absent). */
  readonly model?: ModelConfig;
  /** The real kernel as a third backend (x86 only). */
  readonly kernel?: SessionConfig['kernel'];
  /** What the runs look like (small when absent): see GeneratorProfile. */
  readonly profile?: GeneratorProfile;
}

/**
 * small: generators.ts's small biased scopes; vmm: real-VMM-sized machines (vmm-generators.ts);
 * default: small, with one run in VMM_SHARE_EVERY per architecture done with the vmm profile after them.
 */
export const GENERATOR_PROFILES = ['default', 'small', 'vmm'] as const;
export type GeneratorProfile = (typeof GENERATOR_PROFILES)[number];

export interface Failure {
  readonly arch: Arch;
  readonly seed: number;
  /** fast-check's counterexample path, for `fc.check(..., { seed, path })`. */
  readonly path: string;
  readonly invariant: InvariantId;
  readonly messages: readonly string[];
  /** Every step of the shrunk sequence up to and including the failing one. */
  readonly steps: readonly StepRecord[];
  /** Runs it took to find the first counterexample (before shrinking). */
  readonly runsToFailure: number;
  readonly shrinks: number;
  /** A concurrent case's failure: `steps` are its setup; this is the case, its history and verdict. */
  readonly concurrent?: ConcurrentViolation['outcome'];
}

export interface CampaignResult {
  /** No invariant failed (helper deaths are findings of their own: see helperDeaths). */
  readonly ok: boolean;
  readonly runs: number;
  readonly commands: number;
  readonly elapsedMs: number;
  readonly coverage: Coverage;
  readonly failure?: Failure;
  /** Sequences the kvm helper died on twice; the campaign went on after each. */
  readonly helperDeaths: readonly HelperDeathFinding[];
  /** A stop request (SIGINT/SIGTERM) ended the campaign at a run boundary. */
  readonly interrupted?: boolean;
}

export interface Progress {
  arch: Arch;
  run: number;
  total: number;
  shrinking: boolean;
}

/** A group of templates run in order: one template, or a vmm profile group (a burst, a migration). */
class HarnessCommand implements fc.Command<object, Session> {
  constructor(readonly templates: readonly Template[]) {}
  check(): boolean {
    return true;
  }
  run(_model: object, session: Session): void {
    for (const t of this.templates) session.step(t);
  }
  toString(): string {
    const shown = this.templates.length === 1 ? this.templates[0] : this.templates;
    return JSON.stringify(shown, bigintAsHex);
  }
}

/** fc.commands hands the property CommandWrapper objects around our commands. */
function unwrap(c: unknown): readonly Template[] {
  const inner = (c as { cmd?: unknown }).cmd ?? c;
  if (!(inner instanceof HarnessCommand)) throw new Error('unexpected command object in the counterexample');
  return inner.templates;
}

/** Per-architecture seeds derive from the campaign seed, so one seed reproduces the whole campaign. */
export const archSeed = (seed: number, index: number): number => (seed + index * 0x9e3779b1) | 0;

/**
 * The helper died on a sequence twice (backend.ts retries once): recorded, with a replay, and the
 * campaign goes on. Deaths of the same kind (how, and the command kind it died on) are one finding.
 */
export interface HelperDeathFinding {
  readonly failure: Failure;
  readonly how: string;
  /** The step (1-based) of `failure.steps` the helper died on. */
  readonly step: number;
  /** Further runs that died the same way. */
  repeats: number;
}

/** Asks a running campaign to stop at its next run boundary (interrupt.ts sets it from a signal). */
export interface StopRequest {
  readonly requested: () => boolean;
}

/** What one campaign accumulates over its architectures. */
interface Tally {
  runs: number;
  commands: number;
  readonly coverage: Coverage;
  readonly helperDeaths: HelperDeathFinding[];
}

/**
 * One architecture's property body: a fresh session per run; a helper death is tallied, not thrown.
 * `offset` is the run index the body's first run has in the architecture's stream (a worker's share
 * starts there), so progress, helper deaths and runsToFailure count runs as one process would.
 */
function runBody(
  config: CampaignConfig,
  arch: Arch,
  seed: number,
  tally: Tally,
  onProgress: ((p: Progress) => void) | undefined,
  offset = 0,
): { body: (setup: readonly Template[], cmds: Iterable<fc.Command<object, Session>>) => void; state: ArchState } {
  const state: ArchState = { runs: 0, firstFailureAt: 0, offset };
  const invariants = new Set(config.invariants);
  const model = config.model ?? UPSTREAM_CONFIG;
  const body = (setup: readonly Template[], cmds: Iterable<fc.Command<object, Session>>): void => {
    state.runs++;
    const shrinking = state.firstFailureAt > 0;
    onProgress?.({ arch, run: Math.min(offset + state.runs, config.runs), total: config.runs, shrinking });
    const runCoverage = shrinking ? undefined : tally.coverage;
    const session = new Session({ arch, mutant: config.mutant, invariants, model, kernel: config.kernel }, runCoverage);
    try {
      for (const t of setup) session.step(t);
      fc.modelRun(() => ({ model: {}, real: session }), cmds);
      session.finish();
    } catch (e) {
      if (e instanceof HelperDeath) {
        if (!shrinking) noteHelperDeath(tally, e, arch, seed, offset + state.runs);
        return;
      }
      if (state.firstFailureAt === 0) state.firstFailureAt = state.runs;
      throw e;
    } finally {
      if (runCoverage) {
        tally.commands += session.steps.length;
        runCoverage.addEngineStats(session.engine.kvm.ops.stats);
        runCoverage.addScale(session.spec, session.engine.kvm.root);
      }
    }
  };
  return { body, state };
}

interface ArchState {
  /** Runs this body ran (of its share), and the first that failed (1-based, 0: none). */
  runs: number;
  firstFailureAt: number;
  /** Runs of the architecture's stream before this body's first. */
  readonly offset: number;
}

function noteHelperDeath(tally: Tally, e: HelperDeath, arch: Arch, seed: number, run: number): void {
  const kind = e.steps[e.step - 1]?.cmd.kind;
  const same = tally.helperDeaths.find((d) => d.how === e.how && d.failure.steps[d.step - 1]?.cmd.kind === kind);
  if (same) {
    same.repeats++;
    return;
  }
  const failure: Failure = {
    arch,
    seed,
    path: '',
    invariant: e.invariant,
    messages: e.messages,
    steps: e.steps,
    runsToFailure: run,
    shrinks: 0,
  };
  tally.helperDeaths.push({ failure, how: e.how, step: e.step, repeats: 0 });
}

/** What the generators may produce for the kernel: no race windows, hugetlb and uffd episodes if it can. */
export function kernelLimits(backend: Pick<KvmBackend, 'canHugetlb' | 'canUserfaultfd'>): GeneratorLimits {
  return { races: false, hugetlb: backend.canHugetlb, upstreamEpisodes: backend.canUserfaultfd };
}

function limitsOf(config: CampaignConfig): GeneratorLimits | undefined {
  return config.kernel ? kernelLimits(config.kernel.backend) : undefined;
}

function arbitraries(config: CampaignConfig, profile: 'small' | 'vmm') {
  const model = config.model ?? UPSTREAM_CONFIG;
  const limits = limitsOf(config);
  if (profile === 'vmm')
    return [
      vmmSetupArbitrary,
      fc.commands([vmmGroupArbitraryFor(model, limits).map((g) => new HarnessCommand(g))], {
        maxCommands: Math.min(config.maxCommands, VMM_MAX_GROUPS),
        size: 'max',
      }),
    ] as const;
  return [
    setupArbitraryFor(model, limits),
    fc.commands([templateArbitraryFor(model, limits).map((t) => new HarnessCommand([t]))], {
      maxCommands: config.maxCommands,
      size: 'max',
    }),
  ] as const;
}

/** One fast-check campaign of an architecture: its profile, runs and seed. */
export interface Part {
  readonly config: CampaignConfig;
  readonly profile: 'small' | 'vmm';
  readonly seed: number;
}

/**
 * An architecture's parts: one, or (default profile) the small runs then the vmm share, whose seed
 * differs so the small part's runs are those of a small campaign of that many runs.
 */
export function partsOf(config: CampaignConfig, index: number): Part[] {
  const seed = archSeed(config.seed, index);
  const profile = config.profile ?? 'small';
  if (profile !== 'default') return [{ config, profile, seed }];
  const vmmRuns = Math.floor(config.runs / VMM_SHARE_EVERY);
  const small: Part = { config: { ...config, runs: config.runs - vmmRuns }, profile: 'small', seed };
  if (!vmmRuns) return [small];
  return [small, { config: { ...config, runs: vmmRuns }, profile: 'vmm', seed: (seed ^ 0x766d6d) | 0 }];
}

/** The parts of fast-check's RunDetails a campaign reads. */
interface CheckOutcome {
  readonly failed: boolean;
  readonly interrupted: boolean;
  readonly counterexample: unknown;
  readonly counterexamplePath: string | null;
  readonly errorInstance: unknown;
  readonly numShrinks: number;
}

/**
 * After fc.check: the campaign's result for one architecture, or null to go on with the next. A
 * counterexample is replayed for its step records and (unless interrupted) minimized.
 */
function concludeArch(
  config: CampaignConfig,
  arch: Arch,
  seed: number,
  details: CheckOutcome,
  state: ArchState,
  tally: Tally,
  started: number,
  shareRuns = config.runs,
): CampaignResult | null {
  const interrupted = details.interrupted;
  tally.runs += Math.min(state.runs, state.firstFailureAt || shareRuns);
  const base = { runs: tally.runs, commands: tally.commands, coverage: tally.coverage };
  const extra = { helperDeaths: tally.helperDeaths, ...(interrupted ? { interrupted } : {}) };
  // A stop request that cut the run short before any counterexample was kept is no failure (fast-check
  // may then report `failed` with a null counterexample).
  if (!details.failed || (interrupted && !details.counterexample))
    return interrupted ? { ok: true, ...base, elapsedMs: performance.now() - started, ...extra } : null;
  const invariants = new Set(config.invariants);
  const model = config.model ?? UPSTREAM_CONFIG;
  const [setup, cmds] = (details.counterexample as [Template[], Iterable<unknown>] | null) ?? [[], []];
  const templates = [...setup, ...[...cmds].flatMap(unwrap)];
  const replayed = replayTemplates(arch, config.mutant, invariants, model, templates, config.kernel);
  // A helper that died (twice) while the counterexample was replayed hides it: keep the violation
  // fast-check saw, unminimized, rather than lose the finding.
  const seen = details.errorInstance;
  const found =
    replayed ?? (seen instanceof InvariantViolation && !(seen instanceof HelperDeath) ? asFound(seen) : null);
  const minimize = replayed && !interrupted;
  const failure =
    found && (minimize ? minimizeCommands(arch, config.mutant, invariants, model, found, config.kernel) : found);
  if (!failure) {
    const why = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    throw new Error(`counterexample did not reproduce when replayed (harness nondeterminism?): ${why}`);
  }
  return {
    ok: false,
    ...base,
    elapsedMs: performance.now() - started,
    ...extra,
    failure: {
      ...failure,
      arch,
      seed,
      path: details.counterexamplePath ?? '',
      runsToFailure: state.offset + state.firstFailureAt,
      shrinks: details.numShrinks,
    },
  };
}

export function runCampaign(config: CampaignConfig, onProgress?: (p: Progress) => void): CampaignResult {
  const started = performance.now();
  const tally: Tally = { runs: 0, commands: 0, coverage: new Coverage(), helperDeaths: [] };
  for (const [index, arch] of config.arches.entries()) {
    for (const { config: part, profile, seed } of partsOf(config, index)) {
      const { body, state } = runBody(part, arch, seed, tally, onProgress);
      const details = fc.check(fc.property(...arbitraries(part, profile), body), { seed, numRuns: part.runs });
      const result = concludeArch(part, arch, seed, details, state, tally, started);
      if (result) return result;
    }
  }
  const { runs, commands, coverage, helperDeaths } = tally;
  return { ok: true, runs, commands, elapsedMs: performance.now() - started, coverage, helperDeaths };
}

/**
 * A share of one architecture's runs: run indices [start, start + count) of the stream fast-check
 * draws from the architecture's seed. `fc.check(..., { seed, path: String(start) })` jumps the
 * random generator to run `start` and passes each run its index (so its size bias), so the share
 * runs exactly what those runs are in the one-process campaign (workers.ts runs shares in threads).
 */
export interface RunShare {
  readonly archIndex: number;
  /** Which of the architecture's parts (partsOf: the small runs, then the default profile's vmm share). */
  readonly part: number;
  readonly start: number;
  readonly count: number;
}

/** What one share found: plain data (it crosses from a worker thread), merged in share order. */
export interface ShareResult {
  /** Runs that count (up to and including a failing one), as CampaignResult.runs counts them. */
  readonly runs: number;
  readonly commands: number;
  /** Coverage.counts as entries, in the order the keys were first counted. */
  readonly coverage: readonly (readonly [string, number])[];
  readonly helperDeaths: readonly HelperDeathFinding[];
  /** The share's first failure, shrunk and minimized as runCampaign does. */
  readonly failure?: Failure;
  /** A stop request ended the share at a run boundary. */
  readonly interrupted: boolean;
}

/** Run one share (synchronously: `stop` is polled before each run, e.g. a flag in shared memory). */
export function runShare(
  config: CampaignConfig,
  share: RunShare,
  stop?: StopRequest,
  onProgress?: (p: Progress) => void,
): ShareResult {
  const started = performance.now();
  const tally: Tally = { runs: 0, commands: 0, coverage: new Coverage(), helperDeaths: [] };
  const arch = config.arches[share.archIndex];
  if (!arch) throw new Error(`harness bug: share of architecture ${share.archIndex} of ${config.arches.length}`);
  const part = partsOf(config, share.archIndex)[share.part];
  if (!part) throw new Error(`harness bug: share of part ${share.part} of architecture ${arch}`);
  const { config: partConfig, profile, seed } = part;
  const { body, state } = runBody(partConfig, arch, seed, tally, onProgress, share.start);
  const property = fc.property(...arbitraries(partConfig, profile), (setup, cmds) => {
    if (stop?.requested()) throw new fc.PreconditionFailure(true);
    body(setup, cmds);
  });
  const details = fc.check(property, { seed, numRuns: share.count, path: String(share.start) });
  const result = concludeArch(partConfig, arch, seed, details, state, tally, started, share.count);
  return {
    runs: tally.runs,
    commands: tally.commands,
    coverage: [...tally.coverage.counts],
    helperDeaths: tally.helperDeaths,
    interrupted: details.interrupted,
    ...(result?.failure ? { failure: result.failure } : {}),
  };
}

/** Let pending signal handlers run (they run only when the event loop turns). */
export const turnEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * runCampaign that a signal can stop: the same arbitraries, seeds and bodies, so a seed finds the
 * same runs and the same counterexample (test/interrupt.test.ts compares the two), but each run is
 * an async property run that first lets the event loop turn (a signal handler only runs then) and
 * asks `stop`; once stop is requested fast-check is told to end there (a PreconditionFailure that
 * interrupts), and the result is marked interrupted with what was found so far.
 */
export async function runCampaignInterruptible(
  config: CampaignConfig,
  stop: StopRequest,
  onProgress?: (p: Progress) => void,
): Promise<CampaignResult> {
  const started = performance.now();
  const tally: Tally = { runs: 0, commands: 0, coverage: new Coverage(), helperDeaths: [] };
  parts: for (const [index, arch] of config.arches.entries()) {
    for (const { config: part, profile, seed } of partsOf(config, index)) {
      const { body, state } = runBody(part, arch, seed, tally, onProgress);
      const property = fc.asyncProperty(...arbitraries(part, profile), async (setup, cmds) => {
        await turnEventLoop();
        if (stop.requested()) throw new fc.PreconditionFailure(true);
        body(setup, cmds);
      });
      const details = await fc.check(property, { seed, numRuns: part.runs });
      const result = concludeArch(part, arch, seed, details, state, tally, started);
      if (result) return result;
      if (stop.requested()) break parts;
    }
  }
  const { runs, commands, coverage, helperDeaths } = tally;
  const interrupted = stop.requested() ? { interrupted: true } : {};
  return { ok: true, runs, commands, elapsedMs: performance.now() - started, coverage, helperDeaths, ...interrupted };
}

interface Found {
  invariant: InvariantId;
  messages: readonly string[];
  steps: readonly StepRecord[];
}

/** Run templates (or concrete commands) in a fresh session; the violation they lead to, if any. */
const asFound = (e: InvariantViolation): Found => ({ invariant: e.invariant, messages: e.messages, steps: e.steps });

function replayTemplates(
  arch: Arch,
  mutant: MutantName | null,
  invariants: ReadonlySet<InvariantId>,
  model: ModelConfig,
  templates: readonly Template[],
  kernel?: SessionConfig['kernel'],
): Found | undefined {
  const session = new Session({ arch, mutant, invariants, model, kernel });
  try {
    for (const t of templates) session.step(t);
    session.finish();
  } catch (e) {
    // A helper death while replaying a failure is not that failure (it is retried inside the backend).
    if (e instanceof HelperDeath) return undefined;
    if (e instanceof InvariantViolation) return asFound(e);
    throw e;
  }
  return undefined;
}

/** Longer failing sequences (the vmm profile's) first lose whole chunks, or one-at-a-time would take hours. */
const CHUNKED_MINIMIZE_FROM = 200;

/** Drop chunks of halving size while the same invariant still fails, down to chunks of 8 commands. */
function dropChunks(
  arch: Arch,
  mutant: MutantName | null,
  invariants: ReadonlySet<InvariantId>,
  model: ModelConfig,
  found: Found,
  kernel?: SessionConfig['kernel'],
): Found {
  let best = found;
  if (best.steps.length < CHUNKED_MINIMIZE_FROM) return best;
  for (let chunk = Math.floor(best.steps.length / 2); chunk >= 8; chunk = Math.floor(chunk / 2)) {
    // The failing step is last: chunks end before it.
    for (let end = best.steps.length - 1; end - chunk >= 0; end -= chunk) {
      const candidate = best.steps
        .filter((_, j) => j < end - chunk || j >= end)
        .map((s): Template => ({ t: 'cmd', cmd: s.cmd }));
      const again = replayTemplates(arch, mutant, invariants, model, candidate, kernel);
      if (again && again.invariant === best.invariant) {
        best = again;
        // The chunk before the removed one keeps its indices; the replay may also fail earlier.
        end = Math.min(end, best.steps.length - 1);
      }
    }
  }
  return best;
}

/**
 * fast-check shrinks templates, whose meaning depends on the commands before them, so its result
 * can keep commands that no longer matter. Finish on the concrete commands: drop one at a time
 * while the same invariant still fails, until no single command can go (a 1-minimal sequence).
 */
function minimizeCommands(
  arch: Arch,
  mutant: MutantName | null,
  invariants: ReadonlySet<InvariantId>,
  model: ModelConfig,
  found: Found,
  kernel?: SessionConfig['kernel'],
): Found {
  let best = dropChunks(arch, mutant, invariants, model, found, kernel);
  for (let changed = true; changed; ) {
    changed = false;
    for (let i = best.steps.length - 1; i >= 0; i--) {
      const candidate = best.steps.filter((_, j) => j !== i).map((s): Template => ({ t: 'cmd', cmd: s.cmd }));
      const again = replayTemplates(arch, mutant, invariants, model, candidate, kernel);
      if (again && again.invariant === best.invariant) {
        best = again;
        changed = true;
        i = Math.min(i, best.steps.length);
      }
    }
  }
  return best;
}
