// What a command may observe while another thread's command is still in flight, beyond some
// sequential order of the two (issue 10): the allowances real KVM makes that are not linearizable.
// The history model (properties/spec-history-model.ts) offers them only for commands that
// overlapped in real time.
import { PAGE_SIZE } from './abi.js';
import { guestAccess } from './access.js';
import type { Command, GuestAccess, Mprotect, Munmap } from './commands.js';
import { applyCommand } from './spec.js';
import type { Outcome } from './outcomes.js';
import { findSlot } from './memslots.js';
import { cloneSpecState, slotEndGfn, type SpecState } from './state.js';

/** One more way a command may have gone while `during` was in flight, with the state it leaves. */
export interface InFlightAlternative {
  label: string;
  outcome: Outcome;
  state: SpecState;
}

/**
 * Also: a guest access overlapping a munmap may already find its pages gone (the unmapped outcome:
 * MMIO under fault-as-mmio, -EFAULT upstream) while a later access, even of the same vCPU, still
 * reaches the old pages. munmap detaches the VMAs first (mm/vma.c do_vmi_align_munmap:
 * vms_gather_munmap_vmas, then vma_iter_clear_gfp under mmap_write_lock, which it may downgrade)
 * and zaps the page tables after (vms_complete_munmap_vmas -> unmap_region, whose
 * mmu_notifier_invalidate_range_start is what zaps KVM's stage 2). In between, KVM's fault path
 * finds no VMA (hva_to_pfn -> get_user_pages: kvm_handle_error_pfn) while x86's emulator still
 * reads the old page through the host page tables (kvm_vcpu_read_guest -> __copy_from_user) and
 * existing stage-2 mappings still hit: seen on pvm-6.18 by check --threads 3 --backend kvm, a read
 * straddling a slot's end returned the old page's fragment after the same vCPU's earlier read in the
 * range had exited MMIO.
 *
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
    if (other.kind === 'munmap') {
      out.push(accessWithRangeUnmapped(state, cmd, other));
      const split = accessSplitAtHostChange(state, cmd, other);
      if (split) out.push(split);
      continue;
    }
    if (other.kind === 'mprotect') {
      const split = accessSplitAtHostChange(state, cmd, other);
      if (split) out.push(split);
      continue;
    }
    if (other.kind !== 'setMemslot') continue;
    const slot = state.slots.find((s) => s.as === other.as && s.id === other.slot);
    if (!slot || !touchesSlot(cmd, slot.baseGfn, slotEndGfn(slot))) continue;
    const removesOldRange = other.size === 0 || other.gpa / PAGE_SIZE !== slot.baseGfn;
    if (!removesOldRange) continue;
    out.push(accessWithSlotInvalid(state, cmd, slot.as, slot.id));
    const split = accessSplitAtSlotInvalid(state, cmd, slot.as, slot.id);
    if (split) out.push(split);
  }
  return out;
}

/**
 * A guest access straddling two pages of a slot being deleted or moved may complete its first page
 * against the old slot and exit MMIO on the second: x86's emulator splits the access by page
 * (arch/x86/kvm/x86.c emulator_read_write -> emulator_read_write_onepage), and each part looks the
 * slot up on its own (kvm_vcpu_write_guest_page -> gfn_to_hva_memslot_prot), so the slot can turn
 * KVM_MEMSLOT_INVALID between the two. Seen on pvm-6.18 by check --threads 3 --backend kvm: a
 * write64 at the last 4 bytes of a page during a memslot MOVE exited MMIO for the second page only.
 * Not the reverse: once invalid the old range stays without a usable hva until the update returns.
 */
function accessSplitAtSlotInvalid(
  state: SpecState,
  cmd: GuestAccess,
  as: number,
  id: number,
): InFlightAlternative | null {
  const second = Math.floor((cmd.gpa + cmd.len - 1) / PAGE_SIZE);
  const i = state.slots.findIndex((s) => s.as === as && s.id === id);
  const slot = state.slots[i];
  if (!slot || second === Math.floor(cmd.gpa / PAGE_SIZE) || second <= slot.baseGfn) return null;
  if (second >= slotEndGfn(slot)) return null; // the second page is outside the slot anyway
  const partial = cloneSpecState(state);
  const truncated = partial.slots[i]!;
  truncated.npages = second - slot.baseGfn;
  const outcome = guestAccess(partial, cmd);
  truncated.npages = slot.npages;
  return { label: 'first page done, the second MMIO while the slot is deleted or moved', outcome, state: partial };
}

const touchesSlot = (cmd: GuestAccess, baseGfn: number, endGfn: number): boolean => {
  const first = Math.floor(cmd.gpa / PAGE_SIZE);
  const last = Math.floor((cmd.gpa + cmd.len - 1) / PAGE_SIZE);
  return first < endGfn && last >= baseGfn;
};

/** The access run as if the slot had no hva (invalid): the vCPU's kvm_run changes, nothing else. */
function accessWithSlotInvalid(state: SpecState, cmd: GuestAccess, as: number, id: number): InFlightAlternative {
  const without = cloneSpecState(state);
  without.slots = without.slots.filter((s) => !(s.as === as && s.id === id));
  const outcome = guestAccess(without, cmd);
  const next = cloneSpecState(state);
  next.vcpus[cmd.vcpu] = without.vcpus[cmd.vcpu]!;
  return { label: 'memslot invalid while it is deleted or moved: MMIO', outcome, state: next };
}

/** The access run as if the munmap had finished (its pages gone): the vCPU's kvm_run changes, nothing else. */
function accessWithRangeUnmapped(state: SpecState, cmd: GuestAccess, munmap: Munmap): InFlightAlternative {
  const without = cloneSpecState(state);
  applyCommand(without, munmap);
  const outcome = guestAccess(without, cmd);
  const next = cloneSpecState(state);
  next.vcpus[cmd.vcpu] = without.vcpus[cmd.vcpu]!;
  return { label: 'pages already gone while munmap is in flight', outcome, state: next };
}

/**
 * A guest access straddling two pages whose host mapping is being removed or protected may complete
 * its first page before the change reaches it and fault on the second: the access is faulted in page
 * by page (the EPT or stage-2 violation of each fragment on its own; model/access.ts guestAccess), and
 * the host change's zap (munmap: unmap_region; mprotect: change_protection; both through
 * mmu_notifier_invalidate_range_start, after the VMAs changed) can land between the two faults, so the
 * second finds no VMA or no permission (hva_to_pfn: kvm_handle_error_pfn). Found by the default check's
 * concurrent share at seed 7 on x86: an 8-byte read at gpa 0xffc during a munmap, then an mprotect
 * PROT_NONE, of its whole 2 MiB range exited with a memory fault for gpa 0x1000. Computed as the access
 * against a state where the change has happened everywhere but the first page; as with the whole-range
 * allowance, only the vCPU's kvm_run keeps the result (the change itself still comes in the order).
 */
function accessSplitAtHostChange(
  state: SpecState,
  cmd: GuestAccess,
  change: Munmap | Mprotect,
): InFlightAlternative | null {
  const firstGfn = Math.floor(cmd.gpa / PAGE_SIZE);
  if (Math.floor((cmd.gpa + cmd.len - 1) / PAGE_SIZE) === firstGfn) return null;
  const slot = findSlot(state, 0, firstGfn);
  if (!slot) return null;
  const firstHva = slot.hva + (firstGfn - slot.baseGfn) * PAGE_SIZE;
  const end = change.hva + change.size;
  // With the first page outside the changed range, the sequential orders already cover the split.
  if (firstHva < change.hva || firstHva >= end) return null;
  const without = cloneSpecState(state);
  const rest = end - firstHva - PAGE_SIZE;
  if (firstHva > change.hva) applyCommand(without, { ...change, size: firstHva - change.hva });
  if (rest > 0) applyCommand(without, { ...change, hva: firstHva + PAGE_SIZE, size: rest });
  const outcome = guestAccess(without, cmd);
  const next = cloneSpecState(state);
  next.vcpus[cmd.vcpu] = without.vcpus[cmd.vcpu]!;
  return { label: `first page done, the second after the ${change.kind} in flight`, outcome, state: next };
}
