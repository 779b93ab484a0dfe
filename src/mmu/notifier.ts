// MMU-notifier invalidation (virt/kvm/kvm_main.c kvm_mmu_notifier_invalidate_range_start/end):
// unmap every stage-2 mapping of every memslot aliasing the hva range before the host changes its
// PTEs, and bump mmu_invalidate_seq so a fault that raced with it retries (INV-1, INV-40).
// Mutation point: notifier-first-alias-only.
import { PAGE_SIZE } from '../../model/abi.js';
import { isGmemOnlySlot } from './gmem.js';
import type { Kvm } from './kvm.js';
import type { MmuNotifier } from './host-mm.js';
import { kvmUnmapRange } from './unmap.js';
import { defineMutant } from './mutants.js';

export const NOTIFIER_FIRST_ALIAS_ONLY = defineMutant({
  name: 'notifier-first-alias-only',
  description: 'the MMU notifier unmaps only the first memslot found for an hva range, missing aliases',
  source: 'own (kvm_handle_hva_range stopping at the first slot)',
  killedBy: ['leaf-justified', 'differential'],
});

export function createMmuNotifier(kvm: Kvm): MmuNotifier {
  return {
    invalidateRangeStart(start, end) {
      kvm.mmuInvalidateInProgress++;
      let slots = kvm.memslots.overlappingHva(start, end).filter((s) => s.as === 0 && !isGmemOnlySlot(kvm, s));
      if (kvm.mutation.on(NOTIFIER_FIRST_ALIAS_ONLY)) slots = slots.slice(0, 1);
      for (const s of slots) {
        const slotEnd = s.hva + s.npages * PAGE_SIZE;
        const firstGfn = s.baseGfn + Math.floor((Math.max(start, s.hva) - s.hva) / PAGE_SIZE);
        const endGfn = s.baseGfn + Math.ceil((Math.min(end, slotEnd) - s.hva) / PAGE_SIZE);
        kvmUnmapRange(kvm, firstGfn * PAGE_SIZE, endGfn * PAGE_SIZE, 'mmu-notifier');
      }
    },
    invalidateRangeEnd() {
      kvm.mmuInvalidateSeq++;
      kvm.mmuInvalidateInProgress--;
    },
  };
}
