// What an invariant sees: before a command (to take its snapshot), after it (to check), and at the
// end of a sequence that also ran on the real kernel.
import type { Command } from '../model/commands.js';
import type { Outcome } from '../model/outcomes.js';
import type { SpecState } from '../model/state.js';
import type { KernelResult } from '../src/kvm/protocol.js';
import type { Engine } from '../src/mmu/engine.js';
import type { EngineFinding } from '../src/mmu/findings.js';
import type { MmuEvent } from '../src/mmu/ops.js';
import type { Touched } from './touched.js';

/** Before the command is applied: the spec state and the engine as they are now. */
export interface PreContext {
  readonly cmd: Command;
  readonly spec: SpecState;
  readonly engine: Engine;
}

export interface StepContext {
  readonly cmd: Command;
  readonly specOutcome: Outcome;
  readonly engineOutcome: Outcome;
  readonly spec: SpecState;
  readonly engine: Engine;
  readonly events: readonly MmuEvent[];
  /** The engine's own consistency reports for this command (fast != slow unmap), typed. */
  readonly findings: readonly EngineFinding[];
  /**
   * What the command touched (properties/touched.ts), for the incremental checks; absent where no
   * one collected it (those checks then look at everything).
   */
  readonly touched?: Touched;
}

/** One command of a sequence and what each backend returned (null: that backend threw). */
export interface SequenceStep {
  readonly cmd: Command;
  readonly spec: Outcome | null;
  readonly engine: Outcome | null;
  kernel?: KernelResult;
}

/** A per-sequence verdict: the first step that fails (0-based) and why. */
export interface SequenceVerdict {
  readonly at: number;
  readonly messages: readonly string[];
}
