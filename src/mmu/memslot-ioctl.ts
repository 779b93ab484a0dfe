// KVM_SET_USER_MEMORY_REGION(2) in the engine, structured like virt/kvm/kvm_main.c:
// kvm_vm_ioctl_set_memory_region -> kvm_set_memory_region -> kvm_set_memslot. Written
// independently of the spec's memslots.ts on purpose: the two are compared on every command.
import {
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_SET_USER_MEMORY_REGION_V1_FLAGS,
  PAGE_SIZE,
  TASK_SIZE,
  type Errno,
} from '../../model/abi.js';
import type { SetMemslot } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import { KVM_MEM_USERFAULT, exitOnMissingFlag } from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import { allocDirtyBitmap, onLoggingEnabled } from './dirty.js';
import { kvmNrMemslotAsIds, kvmUserMemSlots, type Kvm } from './kvm.js';
import type { EngineSlot } from './memslots.js';
import { kvmUnmapRangeSteps } from './unmap.js';
import { onUserfaultToggled, userfaultBitmapFor } from './userfault.js';
import { defineMutant } from './mutants.js';
import { holding, type Steps } from './steps.js';

export const LOCKED_LOGGING_SKIPS_WRPROTECT = defineMutant({
  name: 'locked-logging-skips-wrprotect',
  description:
    'dirty logging enabled after a write lock leaves the pinned mappings writable, so writes are never logged',
  source: 'BUG-27',
  arches: ['arm64'],
  series: ['arm64-lock'],
  killedBy: ['dirty-no-lost-write', 'leaf-justified'],
});

export const LOCKED_SLOT_DELETABLE = defineMutant({
  name: 'locked-slot-deletable',
  description: 'deleting or moving a locked memslot succeeds (implicit unlock)',
  source: 'BUG-28 (INV-28)',
  arches: ['arm64'],
  series: ['arm64-lock'],
  killedBy: ['differential'],
});

export const MEMSLOT_ZAP_BEFORE_SRCU_SYNC = defineMutant({
  name: 'memslot-zap-before-srcu-sync',
  description:
    'a memslot delete or move zaps the old range without first publishing the slot invalid and ' +
    'waiting for SRCU readers, so a fault that looked the slot up earlier maps it after the zap',
  source: 'own (issue 10: kvm_invalidate_memslot before kvm_arch_flush_shadow_memslot; INV-1)',
  killedBy: ['leaf-justified'],
  interleaving: true,
});

type Change = 'create' | 'delete' | 'move' | 'flags-only';
const err = (errno: Errno): Outcome => ({ kind: 'err', errno });

/** The flag bits the series add, and which of them KVM_SET_USER_MEMORY_REGION (v1) can carry. */
function seriesFlags(kvm: Kvm): { any: number; v1: number } {
  const eom = seriesOn(kvm.config, 'exit-on-missing') ? exitOnMissingFlag(kvm.config) : 0;
  const userfault = seriesOn(kvm.config, 'userfault') ? KVM_MEM_USERFAULT : 0;
  return { any: eom | userfault, v1: eom };
}

function checkMemoryRegionFlags(kvm: Kvm, flags: number): boolean {
  let valid = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_GUEST_MEMFD | seriesFlags(kvm).any;
  if (flags & KVM_MEM_GUEST_MEMFD) valid &= ~KVM_MEM_LOG_DIRTY_PAGES;
  if (!(flags & KVM_MEM_GUEST_MEMFD)) valid |= KVM_MEM_READONLY;
  // EXIT_ON_MISSING v7: mutually exclusive with READONLY.
  if (flags & KVM_MEM_READONLY && seriesOn(kvm.config, 'exit-on-missing')) valid &= ~exitOnMissingFlag(kvm.config);
  return (flags & ~valid) === 0;
}

/** kvm_vm_ioctl_set_memory_region: under kvm->slots_lock, like every memslot and dirty-log ioctl. */
export function* kvmSetUserMemoryRegionSteps(kvm: Kvm, mem: SetMemslot): Steps<Outcome> {
  return yield* holding(kvm.slotsLock, kvmSetMemoryRegion(kvm, mem));
}

function* kvmSetMemoryRegion(kvm: Kvm, mem: SetMemslot): Steps<Outcome> {
  if (mem.api === 'v1' && mem.flags & ~(KVM_SET_USER_MEMORY_REGION_V1_FLAGS | seriesFlags(kvm).v1))
    return err('EINVAL');
  if ((mem.slot & 0xffff) >= kvmUserMemSlots(kvm.arch)) return err('EINVAL');
  if (!checkMemoryRegionFlags(kvm, mem.flags)) return err('EINVAL');
  if (mem.size & (PAGE_SIZE - 1) || mem.gpa & (PAGE_SIZE - 1)) return err('EINVAL');
  if (mem.hva & (PAGE_SIZE - 1) || mem.hva + mem.size > TASK_SIZE) return err('EINVAL');
  const gmemOffset = mem.gmem?.offset ?? 0;
  if (mem.flags & KVM_MEM_GUEST_MEMFD && gmemOffset & (PAGE_SIZE - 1)) return err('EINVAL');
  if (mem.as >= kvmNrMemslotAsIds(kvm)) return err('EINVAL');
  if (mem.size / PAGE_SIZE > 2 ** 31 - 1) return err('EINVAL');

  const old = kvm.memslots.byId(mem.as, mem.slot);
  const lockedErr = err(kvm.config.options.lockedDeleteErrno);
  const isLocked = (s: EngineSlot): boolean =>
    s.as === 0 && kvm.locked.has(s.id) && !kvm.mutation.on(LOCKED_SLOT_DELETABLE);
  if (mem.size === 0) {
    if (!old) return err('EINVAL');
    if (isLocked(old)) return lockedErr;
    return yield* kvmSetMemslot(kvm, old, null, 'delete');
  }
  const baseGfn = mem.gpa / PAGE_SIZE;
  const npages = mem.size / PAGE_SIZE;
  let change: Change = 'create';
  if (old) {
    if (mem.flags & KVM_MEM_GUEST_MEMFD || old.flags & KVM_MEM_GUEST_MEMFD) return err('EINVAL');
    if (mem.hva !== old.hva || npages !== old.npages || (mem.flags ^ old.flags) & KVM_MEM_READONLY)
      return err('EINVAL');
    if (baseGfn !== old.baseGfn) change = 'move';
    else if (mem.flags !== old.flags) change = 'flags-only';
    else return { kind: 'ok' };
  }
  if ((change === 'create' || change === 'move') && overlaps(kvm, mem.as, mem.slot, baseGfn, npages))
    return err('EEXIST');
  if (change === 'move' && old && isLocked(old)) return lockedErr;

  let gmem: EngineSlot['gmem'];
  if (mem.flags & KVM_MEM_GUEST_MEMFD) {
    const bound = kvmGmemBind(kvm, mem.gmem?.handle ?? -1, gmemOffset, npages);
    if (typeof bound === 'string') return err(bound);
    gmem = bound;
  }
  const logging = (mem.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
  const slot: EngineSlot = {
    as: mem.as,
    id: mem.slot,
    flags: mem.flags,
    baseGfn,
    npages,
    hva: mem.hva,
    dirtyBitmap: logging ? (old?.dirtyBitmap ?? allocDirtyBitmap(kvm, npages)) : null,
    ...(gmem ? { gmem } : {}),
  };
  const userfaultBitmap = userfaultBitmapFor(kvm, old, npages);
  if (userfaultBitmap) Object.assign(slot, { userfaultBitmap });
  return yield* kvmSetMemslot(kvm, old ?? null, slot, change);
}

function overlaps(kvm: Kvm, as: number, id: number, baseGfn: number, npages: number): boolean {
  return kvm.memslots.overlapsGfn(as, id, baseGfn, npages);
}

function kvmGmemBind(kvm: Kvm, handle: number, offset: number, npages: number): EngineSlot['gmem'] | Errno {
  const file = kvm.gmems[handle];
  if (!file) return 'EBADF';
  if (offset + npages * PAGE_SIZE > file.size) return 'EINVAL';
  const start = offset / PAGE_SIZE;
  for (const s of kvm.memslots.all()) {
    if (s.gmem?.handle === handle && start < s.gmem.pgoff + s.npages && s.gmem.pgoff < start + npages) return 'EINVAL';
  }
  return { handle, pgoff: start };
}

/**
 * kvm_set_memslot: a delete or move first publishes the old slot as KVM_MEMSLOT_INVALID and waits
 * for an SRCU grace period (kvm_invalidate_memslot, kvm_swap_active_memslots), so every fault that
 * found the old slot has finished before kvm_arch_flush_shadow_memslot zaps its range (INV-1); then
 * the new memslots are installed (bumping the generation every vCPU cache checks) and another grace
 * period passes before the old slot is freed. Turning logging on makes the slot PAGE_SIZE-only and
 * write-protected (kvm_arch_commit_memory_region, under mmu_lock).
 */
function* kvmSetMemslot(kvm: Kvm, old: EngineSlot | null, next: EngineSlot | null, change: Change): Steps<Outcome> {
  if (old && (change === 'delete' || change === 'move')) {
    const waitForReaders = !kvm.mutation.on(MEMSLOT_ZAP_BEFORE_SRCU_SYNC);
    if (waitForReaders) {
      kvm.memslots.markInvalid(old);
      yield* kvm.srcu.synchronize('kvm_invalidate_memslot: synchronize_srcu_expedited');
    }
    if (old.as === 0) {
      yield* kvm.mmuLock.lock();
      const [start, end] = [old.baseGfn * PAGE_SIZE, (old.baseGfn + old.npages) * PAGE_SIZE];
      yield* kvmUnmapRangeSteps(kvm, start, end, `memslot-${change}`);
      kvm.mmuLock.unlock();
    }
  }
  if (old && next && change === 'move') kvm.locked.delete(old.id);
  if (!next && old && old.as === 0) kvm.locked.delete(old.id);
  kvm.memslots.replace(old, next);
  yield* kvm.srcu.synchronize('kvm_swap_active_memslots: synchronize_srcu_expedited');
  yield* kvm.mmuLock.lock();
  // BUG-27: a locked slot's pinned mappings were left writable when logging was turned on.
  const skipWrprotect = !!next && kvm.locked.has(next.id) && kvm.mutation.on(LOCKED_LOGGING_SKIPS_WRPROTECT);
  if (next?.dirtyBitmap && !old?.dirtyBitmap && !skipWrprotect) onLoggingEnabled(kvm, next);
  if (old && next && change === 'flags-only') onUserfaultToggled(kvm, old, next);
  kvm.mmuLock.unlock();
  return { kind: 'ok' };
}
