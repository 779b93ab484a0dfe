// What an invariant sees after one command: the command, both backends' outcomes, the spec state
// and the engine after it, the engine's event log for the command, and a snapshot taken before.
import type { Command } from '../model/commands.js';
import type { KvmRunState, Outcome } from '../model/outcomes.js';
import type { SpecState } from '../model/state.js';
import type { Engine } from '../src/mmu/engine.js';
import type { MmuEvent } from '../src/mmu/ops.js';

export interface Before {
  /** kvm_run of every vCPU before the command, as each backend left it. */
  readonly specRuns: readonly KvmRunState[];
  readonly engineRuns: readonly KvmRunState[];
  /** The spec's memslots before the command (id, flags and placement), for checks on what a change did. */
  readonly specSlots: readonly { as: number; id: number; flags: number; baseGfn: number; npages: number }[];
}

export interface StepContext {
  readonly cmd: Command;
  readonly specOutcome: Outcome;
  readonly engineOutcome: Outcome;
  readonly spec: SpecState;
  readonly engine: Engine;
  readonly events: readonly MmuEvent[];
  readonly before: Before;
  /** The engine's own consistency reports for this command (RMP misuse, fast != slow unmap). */
  readonly selfCheck: readonly string[];
}
