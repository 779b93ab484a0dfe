// guest_memfd in the engine (virt/kvm/guest_memfd.c): files of order-0 folios allocated on first
// use, PUNCH_HOLE invalidating every binding before the folios are freed.
import { GUEST_MEMFD_FLAG_MMAP, GUEST_MEMFD_SUPPORTED_FLAGS, PAGE_SIZE } from '../../model/abi.js';
import type { GmemCreate, GmemPunchHole } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import { allocFolio, onGmemFree } from './gmem-private.js';
import type { Kvm } from './kvm.js';
import { deviates } from '../../model/platform.js';
import type { EngineSlot } from './memslots.js';
import { kvmUnmapRangeSteps } from './unmap.js';
import { preempt, type Steps } from './steps.js';

/** KVM_MEMSLOT_GMEM_ONLY: faults are served from the file (always on arm64 [assumption], MMAP files on x86). */
export function isGmemOnlySlot(kvm: Kvm, slot: EngineSlot): boolean {
  if (!slot.gmem || deviates(kvm.config, 'gmem-faults-via-hva')) return false;
  return kvm.arch === 'arm64' || (kvm.gmems[slot.gmem.handle]!.flags & GUEST_MEMFD_FLAG_MMAP) !== 0;
}

export function kvmGmemCreate(kvm: Kvm, cmd: GmemCreate): Outcome {
  if (cmd.flags & ~GUEST_MEMFD_SUPPORTED_FLAGS) return { kind: 'err', errno: 'EINVAL' };
  if (cmd.size <= 0 || cmd.size % PAGE_SIZE !== 0) return { kind: 'err', errno: 'EINVAL' };
  kvm.gmems.push({ size: cmd.size, flags: cmd.flags, pages: new Map(), orders: new Map() });
  return { kind: 'ok', value: kvm.gmems.length - 1 };
}

/** kvm_gmem_get_pfn(): the page for the gfn's file index and its folio's order, allocated (zeroed) if it is a hole. */
export function kvmGmemGetFolio(
  kvm: Kvm,
  slot: EngineSlot,
  gfn: number,
): { pfn: number; order: number; index: number } {
  const file = kvm.gmems[slot.gmem!.handle]!;
  const index = slot.gmem!.pgoff + gfn - slot.baseGfn;
  if (!file.pages.has(index)) allocFolio(kvm, file, index);
  return { pfn: file.pages.get(index)!, order: file.orders.get(index) ?? 0, index };
}

export const kvmGmemGetPfn = (kvm: Kvm, slot: EngineSlot, gfn: number): number => kvmGmemGetFolio(kvm, slot, gfn).pfn;

/**
 * kvm_gmem_punch_hole under filemap_invalidate_lock: kvm_gmem_invalidate_begin (mmu_lock,
 * mmu_invalidate_begin, zap every binding), truncate_inode_pages_range, kvm_gmem_invalidate_end.
 */
export function* kvmGmemPunchHoleSteps(kvm: Kvm, cmd: GmemPunchHole): Steps<Outcome> {
  const file = kvm.gmems[cmd.handle];
  if (!file) return { kind: 'err', errno: 'EBADF' };
  if (cmd.offset < 0 || cmd.len <= 0) return { kind: 'err', errno: 'EINVAL' };
  if (cmd.offset % PAGE_SIZE !== 0 || cmd.len % PAGE_SIZE !== 0) return { kind: 'err', errno: 'EINVAL' };
  const start = cmd.offset / PAGE_SIZE;
  const end = (cmd.offset + cmd.len) / PAGE_SIZE;
  yield* kvm.gmemInvalidateLock.lock();
  yield* kvm.mmuLock.lock();
  kvm.mmuInvalidateInProgress++;
  for (const s of kvm.memslots.all()) {
    if (s.as !== 0 || s.gmem?.handle !== cmd.handle) continue;
    const first = Math.max(start, s.gmem.pgoff);
    const last = Math.min(end, s.gmem.pgoff + s.npages);
    if (first >= last) continue;
    const gpa = (s.baseGfn + first - s.gmem.pgoff) * PAGE_SIZE;
    yield* kvmUnmapRangeSteps(kvm, gpa, gpa + (last - first) * PAGE_SIZE, 'gmem-punch-hole');
  }
  kvm.mmuLock.unlock();
  yield* preempt('kvm_gmem_punch_hole: truncate_inode_pages_range');
  for (const [index, pfn] of [...file.pages]) {
    if (index >= start && index < end) {
      onGmemFree(kvm, file, index, pfn);
      file.pages.delete(index);
      file.orders.delete(index);
      kvm.phys.free(pfn);
    }
  }
  yield* preempt('kvm_gmem_invalidate_end');
  yield* kvm.mmuLock.lock();
  kvm.mmuInvalidateSeq++;
  kvm.mmuInvalidateInProgress--;
  kvm.mmuLock.unlock();
  kvm.gmemInvalidateLock.unlock();
  return { kind: 'ok' };
}
