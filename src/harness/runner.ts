// A campaign: fast-check generates template sequences (fc.commands + fc.modelRun), each run is a
// fresh Session, and a failure is shrunk by fast-check, then replayed once more from its templates
// to record every step's outcomes for the report and the replay file.
import fc from 'fast-check';
import type { Arch } from '../../model/abi.js';
import { bigintAsHex } from '../../model/outcomes.js';
import type { InvariantId } from '../../properties/invariants.js';
import { setupArbitraryFor, templateArbitraryFor } from '../../properties/generators.js';
import { UPSTREAM_CONFIG, type ModelConfig } from '../../model/series.js';
import type { Template } from '../../properties/templates.js';
import type { MutantName } from '../mmu/mutants.js';
import { Coverage } from './coverage.js';
import { InvariantViolation, Session, type SessionConfig, type StepRecord } from './session.js';

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
}

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
}

export interface CampaignResult {
  readonly ok: boolean;
  readonly runs: number;
  readonly commands: number;
  readonly elapsedMs: number;
  readonly coverage: Coverage;
  readonly failure?: Failure;
}

export interface Progress {
  arch: Arch;
  run: number;
  total: number;
  shrinking: boolean;
}

class HarnessCommand implements fc.Command<object, Session> {
  constructor(readonly template: Template) {}
  check(): boolean {
    return true;
  }
  run(_model: object, session: Session): void {
    session.step(this.template);
  }
  toString(): string {
    return JSON.stringify(this.template, bigintAsHex);
  }
}

/** fc.commands hands the property CommandWrapper objects around our commands. */
function unwrap(c: unknown): Template {
  const inner = (c as { cmd?: unknown }).cmd ?? c;
  if (!(inner instanceof HarnessCommand)) throw new Error('unexpected command object in the counterexample');
  return inner.template;
}

/** Per-architecture seeds derive from the campaign seed, so one seed reproduces the whole campaign. */
export const archSeed = (seed: number, index: number): number => (seed + index * 0x9e3779b1) | 0;

export function runCampaign(config: CampaignConfig, onProgress?: (p: Progress) => void): CampaignResult {
  const started = performance.now();
  const coverage = new Coverage();
  const invariants = new Set(config.invariants);
  const model = config.model ?? UPSTREAM_CONFIG;
  let runs = 0;
  let commands = 0;

  const limits = config.kernel
    ? {
        races: false,
        hugetlb: config.kernel.backend.canHugetlb,
        upstreamEpisodes: config.kernel.backend.canUserfaultfd,
      }
    : undefined;
  for (const [index, arch] of config.arches.entries()) {
    const seed = archSeed(config.seed, index);
    let archRuns = 0;
    let firstFailureAt = 0;
    const property = fc.property(
      setupArbitraryFor(model, limits),
      fc.commands([templateArbitraryFor(model, limits).map((t) => new HarnessCommand(t))], {
        maxCommands: config.maxCommands,
        size: 'max',
      }),
      (setup, cmds) => {
        archRuns++;
        onProgress?.({ arch, run: Math.min(archRuns, config.runs), total: config.runs, shrinking: firstFailureAt > 0 });
        const runCoverage = firstFailureAt === 0 ? coverage : undefined;
        const session = new Session(
          { arch, mutant: config.mutant, invariants, model, kernel: config.kernel },
          runCoverage,
        );
        try {
          for (const t of setup) session.step(t);
          fc.modelRun(() => ({ model: {}, real: session }), cmds);
          session.finish();
        } catch (e) {
          if (firstFailureAt === 0) firstFailureAt = archRuns;
          throw e;
        } finally {
          if (runCoverage) {
            commands += session.steps.length;
            runCoverage.addEngineStats(session.engine.kvm.ops.stats);
          }
        }
      },
    );
    const details = fc.check(property, { seed, numRuns: config.runs });
    runs += Math.min(archRuns, firstFailureAt || config.runs);
    if (!details.failed) continue;

    const [setup, cmds] = details.counterexample ?? [[], []];
    const templates = [...setup, ...[...cmds].map(unwrap)];
    const found = replayTemplates(arch, config.mutant, invariants, model, templates, config.kernel);
    const failure = found && minimizeCommands(arch, config.mutant, invariants, model, found, config.kernel);
    const elapsedMs = performance.now() - started;
    if (!failure) {
      const why =
        details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
      throw new Error(`counterexample did not reproduce when replayed (harness nondeterminism?): ${why}`);
    }
    return {
      ok: false,
      runs,
      commands,
      elapsedMs,
      coverage,
      failure: {
        ...failure,
        arch,
        seed,
        path: details.counterexamplePath ?? '',
        runsToFailure: firstFailureAt,
        shrinks: details.numShrinks,
      },
    };
  }
  return { ok: true, runs, commands, elapsedMs: performance.now() - started, coverage };
}

interface Found {
  invariant: InvariantId;
  messages: readonly string[];
  steps: readonly StepRecord[];
}

/** Run templates (or concrete commands) in a fresh session; the violation they lead to, if any. */
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
    if (e instanceof InvariantViolation) return { invariant: e.invariant, messages: e.messages, steps: e.steps };
    throw e;
  }
  return undefined;
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
  let best = found;
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
