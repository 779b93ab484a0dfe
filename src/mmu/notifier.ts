// MMU-notifier invalidation (virt/kvm/kvm_main.c kvm_mmu_notifier_invalidate_range_start/end):
// unmap every stage-2 mapping of every memslot aliasing the hva range before the host changes its
// PTEs, and bump mmu_invalidate_seq so a fault that raced with it retries (INV-1, INV-40).
// Mutation points: notifier-first-alias-only, notifier-skips-invalidate-begin, notifier-end-before-zap.
import { PAGE_SIZE } from '../../model/abi.js';
import { isGmemOnlySlot } from './gmem.js';
import type { Kvm } from './kvm.js';
import type { MmuNotifier } from './host-mm.js';
import { kvmUnmapRangeSteps } from './unmap.js';
import { preempt, type Steps } from './steps.js';
import { defineMutant } from './mutants.js';

export const NOTIFIER_FIRST_ALIAS_ONLY = defineMutant({
  name: 'notifier-first-alias-only',
  description: 'the MMU notifier unmaps only the first memslot found for an hva range, missing aliases',
  source: 'own (kvm_handle_hva_range stopping at the first slot)',
  killedBy: ['leaf-justified', 'differential'],
});

export const NOTIFIER_SKIPS_INVALIDATE_BEGIN = defineMutant({
  name: 'notifier-skips-invalidate-begin',
  description:
    'invalidate_range_start zaps without mmu_invalidate_begin, so a fault that pinned the old page ' +
    'before the invalidation passes mmu_invalidate_retry after the zap and maps the freed page',
  source: 'own (issue 10: a retry check that only sees range_end; INV-40)',
  killedBy: ['leaf-justified'],
  interleaving: true,
});

export const NOTIFIER_END_BEFORE_ZAP = defineMutant({
  name: 'notifier-end-before-zap',
  description:
    'invalidate_range_start runs mmu_invalidate_end (bump the sequence, leave the invalidation) before its ' +
    'zap has completed, so a fault that snapshots the sequence in between pins the old page and maps it ' +
    'after the host has changed its PTE',
  source: 'own (issue 10: range_end before the zap completes; INV-40)',
  killedBy: ['leaf-justified'],
  interleaving: true,
});

/** Between the early mmu_invalidate_end and the zap (NOTIFIER_END_BEFORE_ZAP only). */
const ENDED_BEFORE_ZAP = 'mmu_invalidate_end ran, the zap has not (notifier-end-before-zap)';

export function createMmuNotifier(kvm: Kvm): MmuNotifier {
  /** kvm_unmap_gfn_range over every slot aliasing the hva range (kvm_handle_hva_range). */
  const zap = function* (start: number, end: number): Steps<void> {
    let slots = kvm.memslots.overlappingHva(start, end).filter((s) => s.as === 0 && !isGmemOnlySlot(kvm, s));
    if (kvm.mutation.on(NOTIFIER_FIRST_ALIAS_ONLY)) slots = slots.slice(0, 1);
    for (const s of slots) {
      const slotEnd = s.hva + s.npages * PAGE_SIZE;
      const firstGfn = s.baseGfn + Math.floor((Math.max(start, s.hva) - s.hva) / PAGE_SIZE);
      const endGfn = s.baseGfn + Math.ceil((Math.min(end, slotEnd) - s.hva) / PAGE_SIZE);
      yield* kvmUnmapRangeSteps(kvm, firstGfn * PAGE_SIZE, endGfn * PAGE_SIZE, 'mmu-notifier');
    }
  };
  /** kvm_mmu_invalidate_end: bump the sequence a racing fault compares (smp_wmb), then leave. */
  const begins = !kvm.mutation.on(NOTIFIER_SKIPS_INVALIDATE_BEGIN);
  const endsEarly = kvm.mutation.on(NOTIFIER_END_BEFORE_ZAP);
  const invalidateEnd = (): void => {
    kvm.mmuInvalidateSeq++;
    if (begins) kvm.mmuInvalidateInProgress--;
  };
  return {
    /** kvm_mmu_notifier_invalidate_range_start: under mmu_lock, mmu_invalidate_begin, then unmap and flush. */
    *invalidateRangeStart(start, end) {
      yield* kvm.mmuLock.lock();
      if (begins) kvm.mmuInvalidateInProgress++;
      if (endsEarly) {
        invalidateEnd();
        kvm.mmuLock.unlock();
        yield* preempt(ENDED_BEFORE_ZAP);
        yield* kvm.mmuLock.lock();
      }
      yield* zap(start, end);
      kvm.mmuLock.unlock();
    },
    /** kvm_mmu_notifier_invalidate_range_end: under mmu_lock, mmu_invalidate_end. */
    *invalidateRangeEnd() {
      if (endsEarly) return;
      yield* kvm.mmuLock.lock();
      invalidateEnd();
      kvm.mmuLock.unlock();
    },
  };
}
