// One run: a fresh spec state and engine, commands applied to both, and every enabled invariant
// that applies here run through its hooks (properties/invariant.ts): snapshot all, apply, check all.
import type { Arch } from '../../model/abi.js';
import { formatCommand, type Command } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import { UPSTREAM_CONFIG, type ModelConfig } from '../../model/series.js';
import { applyCommand, specAlternatives } from '../../model/spec.js';
import { newSpecState, type SpecState } from '../../model/state.js';
import { trackPageChanges } from '../../model/memory.js';
import { outcomeMismatch } from '../../model/observable.js';
import type { PreContext, SequenceStep, StepContext } from '../../properties/context.js';
import { memoryMismatch, presenceMismatch } from '../../properties/differential.js';
import type { InvariantRun } from '../../properties/invariant.js';
import { applicableInvariants, type InvariantId } from '../../properties/invariants.js';
import { TouchTracker } from '../../properties/touched.js';
import { resolveTemplate, type Template } from '../../properties/templates.js';
import { demandPagingAgent } from '../agent/demand-paging.js';
import type { KvmBackend } from '../kvm/backend.js';
import type { PlatformProfile } from '../kvm/platform.js';
import { Engine } from '../mmu/engine.js';
import type { MutantName } from '../mmu/mutants.js';
import type { Coverage } from './coverage.js';

export interface SessionConfig {
  readonly arch: Arch;
  readonly mutant: MutantName | null;
  readonly invariants: ReadonlySet<InvariantId>;
  /** Series and options; upstream when absent. */
  readonly model?: ModelConfig;
  /** The real kernel as a third backend (check --backend kvm), with the platform profile in force. */
  readonly kernel?: { readonly backend: KvmBackend; readonly profile: PlatformProfile | null };
}

/**
 * One command and what each backend returned (null: that backend threw, see the violation). The
 * kernel's result is filled in when the sequence has run on it (one batch per sequence).
 */
export type StepRecord = SequenceStep;

export class InvariantViolation extends Error {
  constructor(
    readonly invariant: InvariantId,
    readonly messages: readonly string[],
    readonly steps: readonly StepRecord[],
  ) {
    super(`${invariant}: ${messages.join('; ')}`);
  }
}

/**
 * The kvm helper died on the same sequence twice (the second time in a fresh helper): a finding
 * about the kernel or the helper, not about the spec, so a campaign records it (with a replay file)
 * and goes on with its next run instead of shrinking it. A replay that meets it has reproduced.
 */
export class HelperDeath extends InvariantViolation {
  constructor(
    readonly how: string,
    readonly step: number,
    messages: readonly string[],
    steps: readonly StepRecord[],
  ) {
    super('kernel-agrees', messages, steps);
  }
}

export class Session {
  spec: SpecState;
  readonly engine: Engine;
  readonly steps: StepRecord[] = [];
  /** This run's instances of the applicable invariants, split by the hooks they have. */
  private readonly snapshots: InvariantRun<InvariantId>[];
  private readonly checks: InvariantRun<InvariantId>[];
  private readonly sequenceChecks: InvariantRun<InvariantId>[];
  private readonly fullChecks: InvariantRun<InvariantId>[];
  /** What each command touched, for the incremental checks; the last step's context for the full ones. */
  private readonly touch = new TouchTracker();
  private last: StepContext | null = null;

  constructor(
    readonly config: SessionConfig,
    private readonly coverage?: Coverage,
  ) {
    const model = config.model ?? UPSTREAM_CONFIG;
    this.spec = newSpecState(config.arch, model);
    this.engine = new Engine(config.arch, config.mutant, model, { demandPaging: demandPagingAgent });
    const setting = { series: model.series, arches: [config.arch], backend: config.kernel ? 'kvm' : 'model' } as const;
    const runs = applicableInvariants(config.invariants, setting).map((inv) => inv.start());
    this.snapshots = runs.filter((r) => r.snapshot);
    this.checks = runs.filter((r) => r.check);
    this.sequenceChecks = runs.filter((r) => r.sequence);
    this.fullChecks = runs.filter((r) => r.full);
    trackPageChanges(this.spec.mm.memory);
  }

  /** Resolve and run a template; null when the kernel backend cannot run the command (left out). */
  step(template: Template): StepRecord | null {
    const cmd = resolveTemplate(this.spec, template);
    const leftOut = this.config.kernel?.backend.leftOut(cmd, this.spec);
    if (leftOut) {
      this.coverage?.count(`left out ${cmd.kind}: ${leftOut}`);
      return null;
    }
    return this.run(cmd);
  }

  /**
   * Run the sequence so far on the real kernel (one fresh VM, one batch) and compare its results
   * with the spec's, step by step: the first difference no recorded platform deviation explains is
   * a kernel-agrees violation, and so is a helper that died (with the command it died on).
   */
  finish(): void {
    this.fullCheck();
    const kernel = this.config.kernel;
    if (!kernel || !this.sequenceChecks.length) return;
    const run = kernel.backend.run(this.steps.map((s) => s.cmd));
    for (const [i, result] of run.results.entries()) this.steps[i]!.kernel = result;
    for (const inv of this.sequenceChecks) {
      const verdict = inv.sequence!(this.steps);
      if (verdict) throw new InvariantViolation(inv.id, verdict.messages, this.steps.slice(0, verdict.at + 1));
    }
    for (const step of this.steps.slice(0, run.results.length)) this.coverage?.count(`kernel agrees ${step.cmd.kind}`);
    if (run.died) {
      const at = Math.min(run.died.at, this.steps.length - 1);
      const stderr = run.died.stderr ? ` (it printed: ${run.died.stderr.split('\n').slice(-2).join(' / ')})` : '';
      const again = run.died.retried ? ', and again when the sequence ran in a fresh helper' : '';
      const where = `at step ${at + 1} (${formatCommand(this.steps[at]!.cmd)})`;
      const message = `the kvm helper ${run.died.how} ${where}${again}${stderr}`;
      throw new HelperDeath(run.died.how, at + 1, [message], this.steps.slice(0, at + 1));
    }
  }

  /**
   * The full check of every invariant that checks incrementally per command, on the state after the
   * last command: what the per-command checks could not see is reported at the last step, same id.
   */
  fullCheck(): void {
    if (!this.last) return;
    const ctx = { ...this.last, spec: this.spec, touched: undefined };
    for (const inv of this.fullChecks) {
      const found = inv.full!(ctx);
      if (found.length) throw new InvariantViolation(inv.id, found, this.steps);
    }
  }

  run(cmd: Command): StepRecord {
    const pre: PreContext = { cmd, spec: this.spec, engine: this.engine };
    this.coverage?.scaleBefore(cmd, this.spec, this.engine.kvm.root);
    if (this.fullChecks.length) this.touch.start(this.engine);
    for (const inv of this.snapshots) inv.snapshot!(pre);
    const [record, specOutcome, engineOutcome] = this.applyRecorded(cmd);
    const events = this.engine.takeEvents();
    const ctx: StepContext = {
      cmd,
      specOutcome,
      engineOutcome,
      spec: this.spec,
      engine: this.engine,
      events,
      findings: this.engine.takeFindings(),
      touched: this.fullChecks.length ? this.touch.after(cmd, this.spec, this.engine, events) : undefined,
    };
    this.last = ctx;
    for (const inv of this.checks) {
      const found = inv.check!(ctx);
      if (found.length) throw new InvariantViolation(inv.id, found, this.steps);
    }
    return record;
  }

  /** Apply to both backends and record the step; a backend that throws is a differential failure. */
  private applyRecorded(cmd: Command): [StepRecord, Outcome, Outcome] {
    let outcomes: [Outcome, Outcome];
    try {
      outcomes = this.apply(cmd);
    } catch (e) {
      const crash: StepRecord = { cmd, spec: null, engine: null };
      throw new InvariantViolation(
        'differential',
        [`a backend crashed: ${e instanceof Error ? e.message : String(e)}`],
        [...this.steps, crash],
      );
    }
    const record: StepRecord = { cmd, spec: outcomes[0], engine: outcomes[1] };
    this.steps.push(record);
    this.coverage?.record(cmd, outcomes[1]);
    return [record, ...outcomes];
  }

  /**
   * Apply to both backends. Where the spec allows several outcomes (a race's sequential orders, a
   * userfault page a stale mapping may serve), take the one the engine's result matches.
   */
  private apply(cmd: Command): [Outcome, Outcome] {
    const alternatives = specAlternatives(this.spec, cmd);
    if (!alternatives)
      return [applyCommand(this.spec, cmd as Exclude<Command, { kind: 'raceAccess' }>), this.engine.apply(cmd)];
    const engineOutcome = this.engine.apply(cmd);
    const fits = alternatives.filter((a) => outcomeMismatch(a.outcome, engineOutcome) === null);
    // With at most one fit there is nothing to choose by memory (the choice below would be the same).
    if (fits.length <= 1) return this.choose(fits[0] ?? alternatives[0]!, engineOutcome);
    const hostMemory = this.engine.hostMemory();
    const presence = this.engine.kvm.host.presence();
    const exact =
      fits.find(
        (a) =>
          memoryMismatch('host', a.state.mm.memory, hostMemory).length === 0 &&
          presenceMismatch(a.state.mm, presence).length === 0,
      ) ?? fits.find((a) => memoryMismatch('host', a.state.mm.memory, hostMemory).length === 0);
    return this.choose(exact ?? fits[0]!, engineOutcome);
  }

  private choose(
    chosen: { state: SpecState; outcome: Outcome; label: string },
    engineOutcome: Outcome,
  ): [Outcome, Outcome] {
    this.spec = chosen.state;
    this.coverage?.count(chosen.label);
    return [chosen.outcome, engineOutcome];
  }
}
