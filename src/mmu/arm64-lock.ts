// The arm64 lock/unlock memslot API in the engine (S2, seed 002): kvm_vm_ioctl_enable_cap's
// arm64 hook and kvm_mmu_lock_memslot / kvm_mmu_unlock_memslot. Written independently of
// model/arm64-lock.ts: the two are compared on every command. Locking pins the hva range and
// pre-maps the whole IPA range with the lock permissions, so SPE never takes a stage-2 fault
// (INV-31); unlocking only unpins (INV-29).
// Mutation points: lock-accepts-unknown-bits (BUG-25), arm-cap-flags-check-in-nisv-only (BUG-24),
// unlock-unmaps (BUG-28), locked-slot-deletable (BUG-28), lock-skips-premap.
import {
  KVM_CAP_ARM_NISV_TO_USER,
  KVM_CAP_ARM_SYSTEM_SUSPEND,
  KVM_MEM_READONLY,
  PAGE_SIZE,
  SZ_1G,
} from '../../model/abi.js';
import type { EnableCap } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import {
  KVM_ARM_LOCK_MEM_READ,
  KVM_ARM_LOCK_MEM_WRITE,
  KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK,
  KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK,
  KVM_ARM_UNLOCK_MEM_ALL,
  KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
} from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import { kvmUserMemSlots, type Kvm } from './kvm.js';
import { kvmUnmapRange } from './unmap.js';
import { levelSize, translate } from './pgtable.js';
import { defineMutant } from './mutants.js';

export const ARM_CAP_FLAGS_CHECK_IN_NISV_ONLY = defineMutant({
  name: 'arm-cap-flags-check-in-nisv-only',
  description: 'the "cap->flags must be 0" check moved into the NISV case, so other arm64 caps accept flags',
  source: 'BUG-24',
  arches: ['arm64'],
  series: ['arm64-lock'],
  killedBy: ['differential'],
});

export const LOCK_ACCEPTS_UNKNOWN_BITS = defineMutant({
  name: 'lock-accepts-unknown-bits',
  description: 'lock/unlock do not reject unknown bits in args[1]',
  source: 'BUG-25',
  arches: ['arm64'],
  series: ['arm64-lock'],
  killedBy: ['differential'],
});

export const UNLOCK_UNMAPS = defineMutant({
  name: 'unlock-unmaps',
  description: 'unlocking a memslot unmaps its stage-2 entries instead of only unpinning',
  source: 'BUG-28 (INV-29)',
  arches: ['arm64'],
  series: ['arm64-lock'],
  killedBy: ['lock-unlock-keeps-stage2'],
});

export const LOCK_SKIPS_PREMAP = defineMutant({
  name: 'lock-skips-premap',
  description: 'locking pins the pages but does not pre-map the IPA range at stage 2',
  source: 'own (INV-31: SPE must never take a stage-2 fault)',
  arches: ['arm64'],
  series: ['arm64-lock'],
  killedBy: ['locked-means-mapped'],
});

const EINVAL: Outcome = { kind: 'err', errno: 'EINVAL' };
const OK: Outcome = { kind: 'ok' };

/** arm64 kvm_vm_ioctl_enable_cap() with the series applied. */
export function arm64EnableCap(kvm: Kvm, cap: EnableCap, premap: (vcpuGpa: number, write: boolean) => void): Outcome {
  const lockApi = seriesOn(kvm.config, 'arm64-lock');
  // The series moved "if (cap->flags) return -EINVAL" below, since the lock cap uses flags.
  const flagsChecked = lockApi ? cap.cap !== KVM_CAP_ARM_LOCK_USER_MEMORY_REGION : true;
  if (
    flagsChecked &&
    cap.flags &&
    !(kvm.mutation.on(ARM_CAP_FLAGS_CHECK_IN_NISV_ONLY) && cap.cap !== KVM_CAP_ARM_NISV_TO_USER)
  )
    return EINVAL;
  if (cap.cap === KVM_CAP_ARM_NISV_TO_USER || cap.cap === KVM_CAP_ARM_SYSTEM_SUSPEND) return OK;
  if (cap.cap === KVM_CAP_ARM_LOCK_USER_MEMORY_REGION && lockApi) return lockUserMemoryRegion(kvm, cap, premap);
  return EINVAL;
}

function lockUserMemoryRegion(kvm: Kvm, cap: EnableCap, premap: (gpa: number, write: boolean) => void): Outcome {
  if (cap.args2 || cap.args3) return EINVAL;
  const slotId = cap.args0;
  const args1 = cap.args1 ?? 0;
  const strict = !kvm.mutation.on(LOCK_ACCEPTS_UNKNOWN_BITS);
  if (cap.flags === KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK) {
    if (slotId >= kvmUserMemSlots(kvm.arch)) return EINVAL;
    if (!(args1 & KVM_ARM_LOCK_MEM_READ)) return EINVAL;
    if (strict && args1 & ~(KVM_ARM_LOCK_MEM_READ | KVM_ARM_LOCK_MEM_WRITE)) return EINVAL;
    return kvmMmuLockMemslot(kvm, slotId, (args1 & KVM_ARM_LOCK_MEM_WRITE) !== 0, premap);
  }
  if (cap.flags === KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK) {
    const all = (args1 & KVM_ARM_UNLOCK_MEM_ALL) !== 0;
    if (!all && slotId >= kvmUserMemSlots(kvm.arch)) return EINVAL;
    if (strict && args1 & ~KVM_ARM_UNLOCK_MEM_ALL) return EINVAL;
    if (all) {
      for (const id of [...kvm.locked.keys()]) kvmMmuUnlockMemslot(kvm, id);
      return OK;
    }
    if (!kvm.memslots.byId(0, slotId)) return EINVAL;
    kvmMmuUnlockMemslot(kvm, slotId);
    return OK;
  }
  return EINVAL;
}

function kvmMmuLockMemslot(
  kvm: Kvm,
  slotId: number,
  write: boolean,
  premap: (gpa: number, write: boolean) => void,
): Outcome {
  const slot = kvm.memslots.byId(0, slotId);
  if (!slot || slot.gmem) return EINVAL;
  if (write && (slot.flags & KVM_MEM_READONLY || slot.dirtyBitmap)) return { kind: 'err', errno: 'EPERM' };
  if (kvm.locked.has(slotId)) return EINVAL;
  const hvaEnd = slot.hva + slot.npages * PAGE_SIZE;
  for (let hva = slot.hva; hva < hvaEnd; ) {
    const pinned = kvm.host.gup(hva, write, true);
    if (pinned.kind !== 'page') return { kind: 'err', errno: 'EFAULT' };
    // pin_user_pages walks a hugetlb page as one; THP and 4K pages are pinned page by page.
    hva = pinned.hostPageSize === SZ_1G ? hva - (hva % SZ_1G) + SZ_1G : hva + PAGE_SIZE;
  }
  kvm.locked.set(slotId, { write });
  if (kvm.mutation.on(LOCK_SKIPS_PREMAP)) return OK;
  // Pre-map the whole IPA range; a block mapping covers the pages after it.
  const end = (slot.baseGfn + slot.npages) * PAGE_SIZE;
  for (let gpa = slot.baseGfn * PAGE_SIZE; gpa < end; ) {
    premap(gpa, write);
    const mapped = translate(kvm.root, gpa);
    gpa = mapped ? Math.max(gpa + PAGE_SIZE, mapped.ipaBase + levelSize(mapped.leaf.level)) : gpa + PAGE_SIZE;
  }
  return OK;
}

/** Unpin only: stage 2 keeps its entries, lock-time permissions included (INV-29). */
function kvmMmuUnlockMemslot(kvm: Kvm, slotId: number): void {
  kvm.locked.delete(slotId);
  const slot = kvm.memslots.byId(0, slotId);
  if (slot && kvm.mutation.on(UNLOCK_UNMAPS))
    kvmUnmapRange(kvm, slot.baseGfn * PAGE_SIZE, (slot.baseGfn + slot.npages) * PAGE_SIZE, 'unlock');
}
