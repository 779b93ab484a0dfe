// One run: a fresh spec state and engine, commands applied to both, outcomes compared and every
// enabled invariant checked after each command (generate -> apply -> compare -> check).
import type { Arch } from '../../model/abi.js';
import type { Command } from '../../model/commands.js';
import { copyRun, type Outcome } from '../../model/outcomes.js';
import { UPSTREAM_CONFIG, type ModelConfig } from '../../model/series.js';
import { applyCommand, specAlternatives } from '../../model/spec.js';
import { newSpecState, type SpecState } from '../../model/state.js';
import type { Before, StepContext } from '../../properties/context.js';
import { outcomeMismatch } from '../../model/observable.js';
import { memoryMismatch, presenceMismatch } from '../../properties/differential.js';
import { INVARIANTS, type InvariantId } from '../../properties/invariants.js';
import { DirtyWriteTracker, readonlyTargets } from '../../properties/observers.js';
import { resolveTemplate, type Template } from '../../properties/templates.js';
import type { KvmBackend } from '../kvm/backend.js';
import { kernelMismatch, type PlatformProfile } from '../kvm/platform.js';
import type { KernelResult } from '../kvm/protocol.js';
import { demandPagingAgent } from '../agent/demand-paging.js';
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
export interface StepRecord {
  readonly cmd: Command;
  readonly spec: Outcome | null;
  readonly engine: Outcome | null;
  kernel?: KernelResult;
}

export class InvariantViolation extends Error {
  constructor(
    readonly invariant: InvariantId,
    readonly messages: readonly string[],
    readonly steps: readonly StepRecord[],
  ) {
    super(`${invariant}: ${messages.join('; ')}`);
  }
}

export class Session {
  spec: SpecState;
  readonly engine: Engine;
  readonly steps: StepRecord[] = [];
  private readonly dirty = new DirtyWriteTracker();

  constructor(
    readonly config: SessionConfig,
    private readonly coverage?: Coverage,
  ) {
    const model = config.model ?? UPSTREAM_CONFIG;
    this.spec = newSpecState(config.arch, model);
    this.engine = new Engine(config.arch, config.mutant, model, { demandPaging: demandPagingAgent });
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
    const kernel = this.config.kernel;
    if (!kernel || !this.config.invariants.has('kernel-agrees')) return;
    const run = kernel.backend.run(this.steps.map((s) => s.cmd));
    for (const [i, result] of run.results.entries()) {
      const step = this.steps[i]!;
      step.kernel = result;
      const verdict = kernelMismatch(step.spec!, result);
      if (verdict.mismatch)
        throw new InvariantViolation('kernel-agrees', [verdict.mismatch], this.steps.slice(0, i + 1));
      this.coverage?.count(`kernel agrees ${step.cmd.kind}`);
    }
    if (run.died) {
      const at = Math.min(run.died.at, this.steps.length - 1);
      const stderr = run.died.stderr ? ` (it printed: ${run.died.stderr.split('\n').slice(-2).join(' / ')})` : '';
      throw new InvariantViolation(
        'kernel-agrees',
        [`the kvm helper ${run.died.how} while running step ${at + 1}${stderr}; a new helper takes the next sequence`],
        this.steps.slice(0, at + 1),
      );
    }
  }

  run(cmd: Command): StepRecord {
    const before: Before = {
      specRuns: this.spec.vcpus.map(copyRun),
      engineRuns: this.engine.kvm.runs.map(copyRun),
      specSlots: this.spec.slots.map((s) => ({
        as: s.as,
        id: s.id,
        flags: s.flags,
        baseGfn: s.baseGfn,
        npages: s.npages,
      })),
    };
    const readonlyWatch = readonlyTargets(this.spec, cmd).map((t) => ({
      ...t,
      byte: this.engine.kvm.host.readBytes(t.hva, 1)[0],
    }));
    const specBefore = this.spec;

    let specOutcome: Outcome;
    let engineOutcome: Outcome;
    try {
      [specOutcome, engineOutcome] = this.apply(cmd);
    } catch (e) {
      const crash: StepRecord = { cmd, spec: null, engine: null };
      throw new InvariantViolation(
        'differential',
        [`a backend crashed: ${e instanceof Error ? e.message : String(e)}`],
        [...this.steps, crash],
      );
    }
    const record: StepRecord = { cmd, spec: specOutcome, engine: engineOutcome };
    this.steps.push(record);
    this.coverage?.record(cmd, engineOutcome);

    const ctx: StepContext = {
      cmd,
      specOutcome,
      engineOutcome,
      spec: this.spec,
      engine: this.engine,
      events: this.engine.takeEvents(),
      before,
      selfCheck: this.engine.takeSelfCheck(),
    };
    const enabled = this.config.invariants;
    for (const inv of INVARIANTS) {
      if (!enabled.has(inv.id) || !('check' in inv)) continue;
      const found = inv.check(ctx);
      if (found.length) throw new InvariantViolation(inv.id, found, this.steps);
    }
    const lost = this.dirty.observe(specBefore, cmd, engineOutcome);
    if (lost.length && enabled.has('dirty-no-lost-write'))
      throw new InvariantViolation('dirty-no-lost-write', lost, this.steps);
    if (enabled.has('readonly-no-write')) {
      const changed = readonlyWatch.filter((w) => this.engine.kvm.host.readBytes(w.hva, 1)[0] !== w.byte);
      if (changed.length) {
        const msgs = changed
          .slice(0, 3)
          .map((w) => `guest write to READONLY gpa 0x${w.gpa.toString(16)} changed hva 0x${w.hva.toString(16)}`);
        throw new InvariantViolation('readonly-no-write', msgs, this.steps);
      }
    }
    return record;
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
    const hostMemory = this.engine.hostMemory();
    const presence = this.engine.kvm.host.presence();
    const exact =
      fits.find(
        (a) =>
          memoryMismatch('host', a.state.mm.memory, hostMemory).length === 0 &&
          presenceMismatch(a.state.mm, presence).length === 0,
      ) ?? fits.find((a) => memoryMismatch('host', a.state.mm.memory, hostMemory).length === 0);
    const chosen = exact ?? fits[0] ?? alternatives[0]!;
    this.spec = chosen.state;
    this.coverage?.count(chosen.label);
    return [chosen.outcome, engineOutcome];
  }
}
