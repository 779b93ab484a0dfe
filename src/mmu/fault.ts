// The stage-2 fault handler, after arm64 user_mem_abort() and x86 kvm_tdp_page_fault(): find the
// slot, check the series' exits (private/shared mismatch, userfault bit), snapshot
// mmu_invalidate_seq, get the pfn from the host (fast GUP only on an exit-on-missing slot), retry
// if an invalidation raced, choose the mapping size, map, and mark the page dirty on a logged write.
// Mutation points: fault-ignores-mmu-seq, block-while-logging, block-ignores-alignment,
// block-crosses-slot-end, readonly-slot-mapped-writable, dirty-bit-lost-on-fault,
// block-while-userfault, fast-gup-ro-pin-writable, lock-perms-restrict-guest.
import { KVM_MEM_READONLY, PAGE_SIZE, SZ_1G } from '../../model/abi.js';
import type { FaultCause } from '../../model/exits.js';
import { findVma } from '../../model/host-mm.js';
import { KVM_MEM_USERFAULT, exitOnMissingFlag } from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import { markPageDirty } from './dirty.js';
import { isGmemOnlySlot, kvmGmemGetPfn } from './gmem.js';
import { anyPrivateIn, privateMemoryOn, privateFault } from './gmem-private.js';
import type { Kvm } from './kvm.js';
import type { EngineSlot } from './memslots.js';
import { levelSize, type Level } from './pgtable.js';
import { userfaultBitSet } from './userfault.js';
import { mapLeaf } from './visitors.js';

export type FaultResult =
  | { kind: 'mapped' }
  | { kind: 'retry' }
  | { kind: 'mmio' }
  | { kind: 'efault'; cause: FaultCause }
  /** The thread sleeps in handle_userfault until the page is resolved and it is woken. */
  | { kind: 'uffd'; hva: number };

/**
 * The largest leaf that may map gfn: PAGE_SIZE while logging or under USERFAULT; a block only if
 * the host page is at least that big, gpa and hva agree modulo the block size, and the block lies
 * inside the slot (fault_supports_stage2_huge_mapping; INV-9 and SPEC-DIGEST 1.2).
 */
function mappingLevel(kvm: Kvm, slot: EngineSlot, gfn: number, hva: number, hostPageSize: number): Level {
  if (slot.dirtyBitmap && !kvm.mutation.on('block-while-logging')) return 3;
  if (slot.flags & KVM_MEM_USERFAULT && seriesOn(kvm.config, 'userfault') && !kvm.mutation.on('block-while-userfault'))
    return 3;
  const gpa = gfn * PAGE_SIZE;
  for (const level of [1, 2] as const) {
    const size = levelSize(level);
    if (hostPageSize < size) continue;
    if (!kvm.mutation.on('block-ignores-alignment') && gpa % size !== hva % size) continue;
    const blockStart = gpa - (gpa % size);
    const slotStart = slot.baseGfn * PAGE_SIZE;
    const fits = blockStart >= slotStart && blockStart + size <= slotStart + slot.npages * PAGE_SIZE;
    if (!fits && !kvm.mutation.on('block-crosses-slot-end')) continue;
    if (mixedAttributes(kvm, blockStart / PAGE_SIZE, size / PAGE_SIZE)) continue;
    return level;
  }
  return 3;
}

/** gmem-private: a shared block may not cover a private gfn (KVM_LPAGE_MIXED_FLAG in lpage_info). */
function mixedAttributes(kvm: Kvm, firstGfn: number, count: number): boolean {
  return privateMemoryOn(kvm) && kvm.privateGfns.size > 0 && anyPrivateIn(kvm, firstGfn, count) !== undefined;
}

/** The window between the pfn lookup and the mmu_lock, where a racing host change can land. */
function raceWindow(kvm: Kvm, runHost: () => void): void {
  if (kvm.pendingRace && !kvm.pendingRace.outcome) runHost();
}

/** arm64 vma_pagesize for OQ-11: the hugetlb size, PAGE_SIZE otherwise or while logging. */
function vmaPageSize(kvm: Kvm, slot: EngineSlot, hva: number): number {
  return findVma(kvm.host.vmas, hva)?.backing === 'hugetlb1g' && !slot.dirtyBitmap ? SZ_1G : PAGE_SIZE;
}

/** `premap`: the arm64 lock API maps the slot itself; the userfault bitmap does not apply to it. */
export function handleStage2Fault(
  kvm: Kvm,
  vcpu: number,
  gpa: number,
  write: boolean,
  priv: boolean,
  runRacingHost: () => void,
  premap = false,
): FaultResult {
  const gfn = Math.floor(gpa / PAGE_SIZE);
  const slot = kvm.memslots.findForVcpu(vcpu, gfn);
  if (privateMemoryOn(kvm)) {
    if (priv !== kvm.privateGfns.has(gfn)) return { kind: 'efault', cause: { kind: 'private', private: priv } };
    if (priv && !slot?.gmem) return { kind: 'efault', cause: { kind: 'private', private: true } };
  }
  if (!slot) return { kind: 'mmio' };
  if (!premap && userfaultBitSet(kvm, slot, gfn))
    return { kind: 'efault', cause: { kind: 'userfault', private: priv } };
  if (priv && privateMemoryOn(kvm)) return privateFault(kvm, slot, gfn);
  if (isGmemOnlySlot(kvm, slot)) {
    const pfn = kvmGmemGetPfn(kvm, slot, gfn);
    mapLeaf(kvm.ops, kvm.root, { ipa: gfn * PAGE_SIZE, level: 3, pfn, perms: { r: true, w: true } });
    kvm.ops.stats.leavesMapped[3]++;
    return { kind: 'mapped' };
  }
  const readonly = (slot.flags & KVM_MEM_READONLY) !== 0;
  if (write && readonly) return { kind: 'mmio' };
  if (write && kvm.mutation.on('lock-perms-restrict-guest') && kvm.locked.get(slot.id)?.write === false)
    return { kind: 'mmio' };

  const hva = slot.hva + (gfn - slot.baseGfn) * PAGE_SIZE;
  const seq = kvm.mmuInvalidateSeq;
  const fastOnly = seriesOn(kvm.config, 'exit-on-missing') && (slot.flags & exitOnMissingFlag(kvm.config)) !== 0;
  // Before S3/p03 a read fault that may map writable asked fast GUP for a write pin too.
  const writePin = write || (!kvm.config.options.fastGupReadOnly && !readonly);
  const page = fastOnly ? kvm.host.gupFast(hva, writePin) : kvm.host.gup(hva, write);
  raceWindow(kvm, runRacingHost);
  if (page.kind === 'uffd') return page;
  if (page.kind === 'efault')
    return {
      kind: 'efault',
      cause: { kind: 'hva', why: page.cause, fastOnly, mappingSize: vmaPageSize(kvm, slot, hva) },
    };
  const raced = kvm.mmuInvalidateInProgress > 0 || seq !== kvm.mmuInvalidateSeq;
  if (raced && !kvm.mutation.on('fault-ignores-mmu-seq')) return { kind: 'retry' };

  const level = mappingLevel(kvm, slot, gfn, hva, page.hostPageSize);
  const logging = slot.dirtyBitmap !== null;
  const honourReadonly = !kvm.mutation.on('readonly-slot-mapped-writable');
  // BUG-33: a read-only pin taken by fast GUP for a read fault must never yield a writable mapping.
  const pinWritable = page.writable || (fastOnly && kvm.mutation.on('fast-gup-ro-pin-writable'));
  const writable = pinWritable && !(readonly && honourReadonly) && (write || !logging);
  const size = levelSize(level);
  const blockIpa = gfn * PAGE_SIZE - ((gfn * PAGE_SIZE) % size);
  const blockPfn = page.pfn - (gfn * PAGE_SIZE - blockIpa) / PAGE_SIZE;
  mapLeaf(kvm.ops, kvm.root, { ipa: blockIpa, level, pfn: blockPfn, perms: { r: true, w: writable } });
  kvm.ops.stats.leavesMapped[level as 1 | 2 | 3]++;
  // BUG-5 (S3/p11): "if (ret == 0) ret = 1;" moved above "if (writable && !ret) mark_page_dirty".
  const lostByReturnFixup = kvm.arch === 'arm64' && kvm.mutation.on('dirty-bit-lost-on-fault');
  if (write && writable && logging && !lostByReturnFixup) markPageDirty(slot, gfn);
  return { kind: 'mapped' };
}
