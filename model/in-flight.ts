// What a command may observe while another thread's command is still in flight, beyond some
// sequential order of the two (issue 10): the allowances real KVM makes that are not linearizable.
// The history model (properties/spec-history-model.ts) offers them only for commands that
// overlapped in real time.
import { PAGE_SIZE } from './abi.js';
import { guestAccess } from './access.js';
import type { Command, GuestAccess } from './commands.js';
import type { Outcome } from './outcomes.js';
import { slotEndGfn, type SpecState } from './state.js';

/** One more way a command may have gone while `during` was in flight, with the state it leaves. */
export interface InFlightAlternative {
  label: string;
  outcome: Outcome;
  state: SpecState;
}

/**
 * A guest access overlapping a memslot DELETE or MOVE of the slot holding its gpa may exit to
 * userspace as MMIO even while other accesses still reach the old memory through existing stage-2
 * mappings: kvm_invalidate_memslot publishes the slot KVM_MEMSLOT_INVALID first, and every path that
 * needs its hva (arm64 kvm_handle_guest_abort's gfn_to_hva_memslot_prot, x86's emulator through
 * kvm_vcpu_gfn_to_hva) gets KVM_HVA_ERR_BAD and emulates MMIO, until the zap and the new memslots
 * land. tools/testing/selftests/kvm/set_memory_region_test.c's vcpu_worker: "Re-enter the guest on
 * all MMIO exits, which will occur if the guest attempts to access a memslot after it has been
 * deleted or while it is being moved."
 */
export function inFlightAlternatives(
  state: SpecState,
  cmd: Command,
  during: readonly Command[],
): InFlightAlternative[] {
  if (cmd.kind !== 'guestAccess') return [];
  const out: InFlightAlternative[] = [];
  for (const other of during) {
    if (other.kind !== 'setMemslot') continue;
    const slot = state.slots.find((s) => s.as === other.as && s.id === other.slot);
    if (!slot || !touchesSlot(cmd, slot.baseGfn, slotEndGfn(slot))) continue;
    const removesOldRange = other.size === 0 || other.gpa / PAGE_SIZE !== slot.baseGfn;
    if (!removesOldRange) continue;
    out.push(accessWithSlotInvalid(state, cmd, slot.as, slot.id));
  }
  return out;
}

const touchesSlot = (cmd: GuestAccess, baseGfn: number, endGfn: number): boolean => {
  const first = Math.floor(cmd.gpa / PAGE_SIZE);
  const last = Math.floor((cmd.gpa + cmd.len - 1) / PAGE_SIZE);
  return first < endGfn && last >= baseGfn;
};

/** The access run as if the slot had no hva (invalid): the vCPU's kvm_run changes, nothing else. */
function accessWithSlotInvalid(state: SpecState, cmd: GuestAccess, as: number, id: number): InFlightAlternative {
  const without = structuredClone(state);
  without.slots = without.slots.filter((s) => !(s.as === as && s.id === id));
  const outcome = guestAccess(without, cmd);
  const next = structuredClone(state);
  next.vcpus[cmd.vcpu] = without.vcpus[cmd.vcpu]!;
  return { label: 'memslot invalid while it is deleted or moved: MMIO', outcome, state: next };
}
