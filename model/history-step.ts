// The one rule a history's step adds to the spec's outcome (shared by the history checker,
// properties/spec-history-model.ts, and the concurrent C reproducer's order graph, src/kvm/).
import { KVM_EXIT_HLT } from './abi.js';
import type { Command } from './commands.js';
import { recordInterruptedWrite } from './dirty-log.js';
import type { Outcome } from './outcomes.js';
import type { SpecState } from './state.js';

/** A guest write that exited may still have left its pages marked dirty (model/dirty-log.ts). */
export function interruptedWriteState(state: SpecState, command: Command, outcome: Outcome): SpecState {
  const completed = outcome.kind === 'run' && outcome.rc === 0 && outcome.run.exitReason === KVM_EXIT_HLT;
  if (command.kind === 'guestAccess' && !completed) recordInterruptedWrite(state, command);
  return state;
}
