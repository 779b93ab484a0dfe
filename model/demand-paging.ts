// exit-on-missing series, the userfaultfd demand-paging protocol (S3/p01, p02, p14;
// demand_paging_test.c): what a VMM that follows the protocol must end up with. The slot's hva
// range is registered with userfaultfd MISSING; every missing page a vCPU touches is resolved
// exactly once with UFFDIO_COPY of a 0xAB-filled page (INV-36), by a reader thread after a
// UFFD_EVENT_PAGEFAULT or, on a fast-only slot, by the vCPU itself after a memory-fault exit;
// every vCPU finishes all its accesses (INV-21, INV-37). The interleaving is the engine's business
// (src/agent/): whichever schedule runs, the result is this one.
import { KVM_EXIT_HLT, KVM_MEM_READONLY, PAGE_SIZE } from './abi.js';
import type { DemandPaging } from './commands.js';
import { recordGuestRead, recordGuestWrite } from './dirty-log.js';
import { UFFD_FILL_BYTE, episodeOffset, episodeValue } from './episode.js';
import { fastGupAllows, findVma, populate, presenceOf } from './host-mm.js';
import { loadBytes, storeBytes, valueToBytes, bytesToValue } from './memory.js';
import type { Outcome } from './outcomes.js';
import { KVM_MEM_USERFAULT, KVM_MEMFAULT_VALID_REASONS, exitOnMissingFlag } from './series-abi.js';
import { seriesOn } from './series.js';
import type { Memslot, SpecState } from './state.js';
import { noteMapped } from './userfault.js';

/**
 * UFFDIO_REGISTER(MODE_MISSING) needs private anonymous memory over the whole range ([assumption]
 * writable, and not hugetlb: BUG-34's unaligned hugetlb resolution is out of scope). The harness
 * runs episodes only on ordinary slots (no READONLY, USERFAULT, guest_memfd).
 */
export function episodeSlot(state: SpecState, cmd: DemandPaging): Memslot | undefined {
  // Demand paging with userfaultfd MISSING is upstream (demand_paging_test.c); only the fast-only
  // flag and its memory-fault exits belong to the series. The kvm backend runs episodes for real.
  const slot = state.slots.find((s) => s.as === 0 && s.id === cmd.slot);
  const userfault = seriesOn(state.config, 'userfault') ? KVM_MEM_USERFAULT : 0;
  if (!slot || slot.gmem || slot.flags & (KVM_MEM_READONLY | userfault)) return undefined;
  // The episode's accesses are shared: none of the slot's gfns may be private (gmem-private).
  for (const gfn of state.privateGfns) if (gfn >= slot.baseGfn && gfn < slot.baseGfn + slot.npages) return undefined;
  for (let hva = slot.hva; hva < slot.hva + slot.npages * PAGE_SIZE; ) {
    const vma = findVma(state.mm.vmas, hva);
    if (vma?.prot !== 'rw' || vma.backing === 'hugetlb1g') return undefined;
    hva = vma.end;
  }
  return slot;
}

export function demandPaging(state: SpecState, cmd: DemandPaging): Outcome {
  const slot = episodeSlot(state, cmd);
  if (!slot) return { kind: 'err', errno: 'EINVAL' };
  // The protocol enables every memory-fault reason where the opt-in capability exists (p14 -w).
  if (seriesOn(state.config, 'memfault-2023') && state.arch === 'x86')
    state.memfaultExitReasons = KVM_MEMFAULT_VALID_REASONS;
  const fastOnly = seriesOn(state.config, 'exit-on-missing') && (slot.flags & exitOnMissingFlag(state.config)) !== 0;
  const writePin = cmd.write || !state.config.options.fastGupReadOnly;
  const values = cmd.vcpuPages.map((pages, vcpu) =>
    pages.map((p) => {
      const page = p % slot.npages;
      const gfn = slot.baseGfn + page;
      const hva = slot.hva + page * PAGE_SIZE;
      const hvaPage = hva / PAGE_SIZE;
      if (!presenceOf(state.mm, hvaPage)) {
        // The one successful UFFDIO_COPY: a whole page of 0xAB.
        storeBytes(
          state.mm.memory,
          hva,
          Array.from({ length: PAGE_SIZE }, () => UFFD_FILL_BYTE),
        );
        state.mm.present.set(hvaPage, 'page');
      } else if (fastOnly && !fastGupAllows(state.mm, hva, writePin)) {
        // Present but not pinnable fast (the zero page): UFFDIO_COPY says EEXIST, MADV_POPULATE_WRITE.
        populate(state.mm, hva, true);
      } else {
        populate(state.mm, hva, cmd.write);
      }
      noteMapped(slot, gfn);
      const addr = hva + episodeOffset(vcpu);
      if (cmd.write) {
        storeBytes(state.mm.memory, addr, valueToBytes(episodeValue(vcpu), 8));
        recordGuestWrite(slot, gfn);
        return null;
      }
      recordGuestRead(state, slot, gfn, true);
      return bytesToValue(loadBytes(state.mm.memory, addr, 8));
    }),
  );
  cmd.vcpuPages.forEach((pages, vcpu) => {
    if (pages.length) state.vcpus[vcpu]!.exitReason = KVM_EXIT_HLT;
  });
  return { kind: 'episode', completed: true, values };
}
