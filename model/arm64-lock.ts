// arm64-lock series (S2, seed 002): KVM_ENABLE_CAP(KVM_CAP_ARM_LOCK_USER_MEMORY_REGION) locks or
// unlocks a memslot. The argument checks follow SPEC-DIGEST 2.3 in order, with their errnos
// (INV-27); unknown bits in args[1] are rejected (the fix of BUG-25). A locked slot is pinned and
// pre-mapped at stage 2 (INV-31, engine-side), cannot be deleted or moved (INV-28; the errno is
// OQ-8's option), and unlocking changes nothing at stage 2 (INV-29). Lock permissions are not
// guest permissions (INV-30): guest accesses behave exactly as for an unlocked slot.
import { KVM_MEM_READONLY, KVM_USER_MEM_SLOTS, PAGE_SIZE, SZ_1G, SZ_2M, alignDown, type Errno } from './abi.js';
import type { EnableCap } from './commands.js';
import { findVma, hostCanAccess, populate } from './host-mm.js';
import type { Outcome } from './outcomes.js';
import {
  KVM_ARM_LOCK_MEM_READ,
  KVM_ARM_LOCK_MEM_WRITE,
  KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK,
  KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK,
  KVM_ARM_UNLOCK_MEM_ALL,
} from './series-abi.js';
import { seriesOn } from './series.js';
import type { SpecState } from './state.js';
import { noteMapped } from './userfault.js';

export const lockApiOn = (state: SpecState): boolean => seriesOn(state.config, 'arm64-lock') && state.arch === 'arm64';

const fail = (errno: Errno): Outcome => ({ kind: 'err', errno });

export function lockCap(state: SpecState, cmd: EnableCap): Outcome {
  if (!lockApiOn(state)) return fail('EINVAL');
  if (cmd.args2 || cmd.args3) return fail('EINVAL');
  const slotId = cmd.args0;
  const action = cmd.args1 ?? 0;
  if (cmd.flags === KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK) {
    if (slotId >= KVM_USER_MEM_SLOTS[state.arch]) return fail('EINVAL');
    if (!(action & KVM_ARM_LOCK_MEM_READ)) return fail('EINVAL');
    if (action & ~(KVM_ARM_LOCK_MEM_READ | KVM_ARM_LOCK_MEM_WRITE)) return fail('EINVAL');
    // (6) every vCPU is idle between our commands, so the -EBUSY of a vCPU in an ioctl cannot happen here.
    const slot = state.slots.find((s) => s.as === 0 && s.id === slotId);
    if (!slot) return fail('EINVAL');
    // [assumption] the series predates guest_memfd: a gmem slot's memory is not the hva's to pin.
    if (slot.gmem) return fail('EINVAL');
    const write = (action & KVM_ARM_LOCK_MEM_WRITE) !== 0;
    if (write && (slot.flags & KVM_MEM_READONLY || slot.dirtyLog)) return fail('EPERM');
    // [assumption] OQ-8 leaves re-locking open: a locked slot must be unlocked first.
    if (state.locked.has(slotId)) return fail('EINVAL');
    // Pin every page (pin_user_pages FOLL_LONGTERM, FOLL_WRITE for a write lock): a hole or a
    // protection that forbids the pin fails with EFAULT [assumption], after the pages before it
    // were faulted in. A long-term pin never holds the shared zero page: it gets a page of its own.
    const end = slot.hva + slot.npages * PAGE_SIZE;
    for (let hva = slot.hva; hva < end; ) {
      if (!hostCanAccess(state.mm.vmas, hva, write)) return fail('EFAULT');
      populate(state.mm, hva, true);
      // A hugetlb page is pinned whole: step over it.
      hva = findVma(state.mm.vmas, hva)!.backing === 'hugetlb1g' ? alignDown(hva, SZ_1G) + SZ_1G : hva + PAGE_SIZE;
    }
    for (let i = 0; i < slot.npages; i++) noteMapped(slot, slot.baseGfn + i);
    state.locked.set(slotId, { write, intact: true, writeMapped: write });
    return { kind: 'ok' };
  }
  if (cmd.flags === KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK) {
    const all = (action & KVM_ARM_UNLOCK_MEM_ALL) !== 0;
    if (!all && slotId >= KVM_USER_MEM_SLOTS[state.arch]) return fail('EINVAL');
    if (action & ~KVM_ARM_UNLOCK_MEM_ALL) return fail('EINVAL');
    if (all) {
      state.locked.clear();
      return { kind: 'ok' };
    }
    if (!state.slots.some((s) => s.as === 0 && s.id === slotId)) return fail('EINVAL');
    // [assumption] OQ-8: unlocking a slot that is not locked is a no-op.
    state.locked.delete(slotId);
    return { kind: 'ok' };
  }
  return fail('EINVAL');
}

/**
 * The VMM changed host mappings in [start, end): a locked slot over them is no longer guaranteed
 * mapped. A change next to it counts too when it splits a transparent huge page the slot shares
 * (the split runs the MMU notifier over the whole 2 MiB), so the range is widened to 2 MiB.
 */
export function noteHostChange(state: SpecState, changeStart: number, changeEnd: number): void {
  const start = alignDown(changeStart, SZ_2M);
  const end = alignDown(changeEnd + SZ_2M - 1, SZ_2M);
  for (const [id, lock] of state.locked) {
    const slot = state.slots.find((s) => s.as === 0 && s.id === id);
    if (slot && slot.hva < end && start < slot.hva + slot.npages * PAGE_SIZE) lock.intact = false;
  }
}
