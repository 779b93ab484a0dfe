// The stage-2 fault handler, after arm64 user_mem_abort() and x86 kvm_tdp_page_fault(): find the
// slot, snapshot mmu_invalidate_seq, get the pfn from the host, retry if an invalidation raced,
// choose the mapping size, map, and mark the page dirty on a logged write.
// Mutation points: fault-ignores-mmu-seq, block-while-logging, block-ignores-alignment,
// block-crosses-slot-end, readonly-slot-mapped-writable, dirty-bit-lost-on-fault.
import { KVM_MEM_READONLY, PAGE_SIZE } from '../../model/abi.js';
import { markPageDirty } from './dirty.js';
import { isGmemOnlySlot, kvmGmemGetPfn } from './gmem.js';
import type { Kvm } from './kvm.js';
import type { EngineSlot } from './memslots.js';
import { levelSize, type Level } from './pgtable.js';
import { mapLeaf } from './visitors.js';

export type FaultResult =
  | { kind: 'mapped' }
  | { kind: 'retry' }
  | { kind: 'mmio' }
  | { kind: 'efault'; cause: 'no-vma' | 'protection' };

/**
 * The largest leaf that may map gfn: PAGE_SIZE while logging; a block only if the host page is at
 * least that big, gpa and hva agree modulo the block size, and the block lies inside the slot
 * (fault_supports_stage2_huge_mapping; INV-9 and SPEC-DIGEST 1.2).
 */
function mappingLevel(kvm: Kvm, slot: EngineSlot, gfn: number, hva: number, hostPageSize: number): Level {
  if (slot.dirtyBitmap && !kvm.mutation.on('block-while-logging')) return 3;
  const gpa = gfn * PAGE_SIZE;
  for (const level of [1, 2] as const) {
    const size = levelSize(level);
    if (hostPageSize < size) continue;
    if (!kvm.mutation.on('block-ignores-alignment') && gpa % size !== hva % size) continue;
    const blockStart = gpa - (gpa % size);
    const slotStart = slot.baseGfn * PAGE_SIZE;
    const fits = blockStart >= slotStart && blockStart + size <= slotStart + slot.npages * PAGE_SIZE;
    if (!fits && !kvm.mutation.on('block-crosses-slot-end')) continue;
    return level;
  }
  return 3;
}

/** The window between the pfn lookup and the mmu_lock, where a racing host change can land. */
function raceWindow(kvm: Kvm, runHost: () => void): void {
  if (kvm.pendingRace && !kvm.pendingRace.outcome) runHost();
}

export function handleStage2Fault(kvm: Kvm, vcpu: number, gpa: number, write: boolean, runRacingHost: () => void): FaultResult {
  const gfn = Math.floor(gpa / PAGE_SIZE);
  const slot = kvm.memslots.findForVcpu(vcpu, gfn);
  if (!slot) return { kind: 'mmio' };
  if (isGmemOnlySlot(kvm, slot)) {
    const pfn = kvmGmemGetPfn(kvm, slot, gfn);
    mapLeaf(kvm.ops, kvm.root, { ipa: gfn * PAGE_SIZE, level: 3, pfn, perms: { r: true, w: true } });
    kvm.ops.stats.leavesMapped[3]++;
    return { kind: 'mapped' };
  }
  const readonly = (slot.flags & KVM_MEM_READONLY) !== 0;
  if (write && readonly) return { kind: 'mmio' };

  const hva = slot.hva + (gfn - slot.baseGfn) * PAGE_SIZE;
  const seq = kvm.mmuInvalidateSeq;
  const page = kvm.host.gup(hva, write);
  raceWindow(kvm, runRacingHost);
  if (page.kind === 'efault') return page;
  const raced = kvm.mmuInvalidateInProgress > 0 || seq !== kvm.mmuInvalidateSeq;
  if (raced && !kvm.mutation.on('fault-ignores-mmu-seq')) return { kind: 'retry' };

  const level = mappingLevel(kvm, slot, gfn, hva, page.hostPageSize);
  const logging = slot.dirtyBitmap !== null;
  const honourReadonly = !kvm.mutation.on('readonly-slot-mapped-writable');
  const writable = page.writable && !(readonly && honourReadonly) && (write || !logging);
  const size = levelSize(level);
  const blockIpa = gfn * PAGE_SIZE - ((gfn * PAGE_SIZE) % size);
  const blockPfn = page.pfn - (gfn * PAGE_SIZE - blockIpa) / PAGE_SIZE;
  mapLeaf(kvm.ops, kvm.root, { ipa: blockIpa, level, pfn: blockPfn, perms: { r: true, w: writable } });
  kvm.ops.stats.leavesMapped[level as 1 | 2 | 3]++;
  if (write && writable && logging && !kvm.mutation.on('dirty-bit-lost-on-fault')) markPageDirty(slot, gfn);
  return { kind: 'mapped' };
}
