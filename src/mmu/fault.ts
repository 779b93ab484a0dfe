// The stage-2 fault handler, after arm64 user_mem_abort() and x86 kvm_tdp_page_fault(): find the
// slot, check the series' exits (private/shared mismatch, userfault bit), snapshot
// mmu_invalidate_seq, get the pfn from the host (fast GUP only on an exit-on-missing slot), retry
// if an invalidation raced, choose the mapping size, map, and mark the page dirty on a logged write.
// Mutation points: fault-ignores-mmu-seq, block-while-logging, block-ignores-alignment,
// block-crosses-slot-end, readonly-slot-mapped-writable, dirty-bit-lost-on-fault,
// block-while-userfault, fast-gup-ro-pin-writable, lock-perms-restrict-guest.
import { KVM_MEM_READONLY, PAGE_SIZE, SZ_1G } from '../../model/abi.js';
import { findVma } from '../../model/host-mm.js';
import { KVM_MEM_USERFAULT, exitOnMissingFlag } from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import { markPageDirty } from './dirty.js';
import type { FaultResult } from './fault-types.js';
import { isGmemOnlySlot, kvmGmemGetPfn } from './gmem.js';
import { anyPrivateIn, privateMemoryOn } from './gmem-private.js';
import type { GupResult } from './host-mm.js';
import type { Kvm } from './kvm.js';
import type { EngineSlot } from './memslots.js';
import { levelSize, type Level } from './pgtable.js';
import { privateFault } from './private-fault.js';
import { kvmDoUserfaultSteps } from './userfault.js';
import { mapLeaf, mapLeafSteps } from './visitors.js';
import { defineMutant } from './mutants.js';
import { preempt, runAlone, waitUntil, type Steps } from './steps.js';

export const FAULT_IGNORES_MMU_SEQ = defineMutant({
  name: 'fault-ignores-mmu-seq',
  description: 'the fault path installs its pfn without checking mmu_invalidate_seq after a racing invalidation',
  source: 'own (INV-40: missing mmu_invalidate_retry)',
  killedBy: ['leaf-justified', 'differential'],
});

export const BLOCK_WHILE_LOGGING = defineMutant({
  name: 'block-while-logging',
  description: 'faults on a dirty-logged slot may still install 2M/1G block mappings',
  source: 'BUG-17',
  killedBy: ['block-rules', 'dirty-no-lost-write'],
});

export const BLOCK_IGNORES_ALIGNMENT = defineMutant({
  name: 'block-ignores-alignment',
  description: 'a block mapping is chosen without checking that gpa and hva agree modulo the block size',
  source: 'own (fault_supports_stage2_huge_mapping alignment check)',
  killedBy: ['block-rules', 'leaf-justified'],
});

export const BLOCK_CROSSES_SLOT_END = defineMutant({
  name: 'block-crosses-slot-end',
  description: 'a block mapping is chosen without checking that the block lies inside the memslot',
  source: 'own (fault_supports_stage2_huge_mapping bounds check)',
  killedBy: ['block-rules', 'leaf-justified'],
});

export const DIRTY_BIT_LOST_ON_FAULT = defineMutant({
  name: 'dirty-bit-lost-on-fault',
  description:
    'user_mem_abort turns ret 0 into 1 before "if (writable && !ret) mark_page_dirty", ' +
    'so a logged write fault is never marked',
  source: 'BUG-5 (S3/p11, missed in review)',
  arches: ['arm64'],
  series: ['memfault-2023'],
  killedBy: ['dirty-no-lost-write', 'differential'],
});

export const READONLY_SLOT_MAPPED_WRITABLE = defineMutant({
  name: 'readonly-slot-mapped-writable',
  description: 'a READONLY memslot is mapped writable on a read fault, so later writes reach memory',
  source: 'own (map_writable ignoring KVM_MEM_READONLY)',
  killedBy: ['readonly-no-write', 'leaf-justified'],
});

export const BLOCK_WHILE_USERFAULT = defineMutant({
  name: 'block-while-userfault',
  description: 'faults on a USERFAULT slot may still install 2M/1G blocks, exposing pages never resolved',
  source: 'BUG-17',
  series: ['userfault'],
  killedBy: ['block-rules', 'differential'],
});

export const LOCK_PERMS_RESTRICT_GUEST = defineMutant({
  name: 'lock-perms-restrict-guest',
  description: 'a guest write to a read-locked RW slot is treated as MMIO: lock flags used as guest permissions',
  source: 'own (INV-30)',
  arches: ['arm64'],
  series: ['arm64-lock'],
  killedBy: ['differential'],
});

export const FAST_GUP_RO_PIN_WRITABLE = defineMutant({
  name: 'fast-gup-ro-pin-writable',
  description: 'a read fault that fast GUP pinned read-only is mapped writable at stage 2',
  source: 'BUG-33 (S3/p03 risk)',
  series: ['exit-on-missing'],
  killedBy: ['leaf-justified'],
});

/** The point between kvm_faultin_pfn and mmu_lock: raceAccess runs its host command here. */
export const PFN_PINNED = 'kvm_faultin_pfn returned: the pfn is pinned, mmu_lock not yet taken';

/** One stage-2 fault, as the vCPU (or the arm64 lock API's premap) raises it. */
export interface FaultRequest {
  vcpu: number;
  gpa: number;
  write: boolean;
  /** gmem-private: the access is private (KVM_MEMORY_ATTRIBUTE_PRIVATE expected on the gfn). */
  private: boolean;
  /** arm64-lock: the lock API maps the slot itself; the userfault bitmap does not apply to it. */
  premap?: boolean;
}

/** A page the host pinned for the fault, with the mmu_invalidate_seq snapshot taken before the pin. */
interface Pinned {
  page: Extract<GupResult, { kind: 'page' }>;
  hva: number;
  seq: number;
  fastOnly: boolean;
}

/**
 * The largest leaf that may map gfn: PAGE_SIZE while logging or under USERFAULT; a block only if
 * the host page is at least that big, gpa and hva agree modulo the block size, and the block lies
 * inside the slot (fault_supports_stage2_huge_mapping; INV-9 and SPEC-DIGEST 1.2).
 */
function mappingLevel(kvm: Kvm, slot: EngineSlot, gfn: number, hva: number, hostPageSize: number): Level {
  if (slot.dirtyBitmap && !kvm.mutation.on(BLOCK_WHILE_LOGGING)) return 3;
  if (slot.flags & KVM_MEM_USERFAULT && seriesOn(kvm.config, 'userfault') && !kvm.mutation.on(BLOCK_WHILE_USERFAULT))
    return 3;
  const gpa = gfn * PAGE_SIZE;
  for (const level of [1, 2] as const) {
    const size = levelSize(level);
    if (hostPageSize < size) continue;
    if (!kvm.mutation.on(BLOCK_IGNORES_ALIGNMENT) && gpa % size !== hva % size) continue;
    const blockStart = gpa - (gpa % size);
    const slotStart = slot.baseGfn * PAGE_SIZE;
    const fits = blockStart >= slotStart && blockStart + size <= slotStart + slot.npages * PAGE_SIZE;
    if (!fits && !kvm.mutation.on(BLOCK_CROSSES_SLOT_END)) continue;
    if (mixedAttributes(kvm, blockStart / PAGE_SIZE, size / PAGE_SIZE)) continue;
    return level;
  }
  return 3;
}

/** gmem-private: a shared block may not cover a private gfn (KVM_LPAGE_MIXED_FLAG in lpage_info). */
function mixedAttributes(kvm: Kvm, firstGfn: number, count: number): boolean {
  return privateMemoryOn(kvm) && kvm.privateGfns.size > 0 && anyPrivateIn(kvm, firstGfn, count) !== undefined;
}

/** arm64 vma_pagesize for OQ-11: the hugetlb size, PAGE_SIZE otherwise or while logging. */
function vmaPageSize(kvm: Kvm, slot: EngineSlot, hva: number): number {
  return findVma(kvm.host.vmas, hva)?.backing === 'hugetlb1g' && !slot.dirtyBitmap ? SZ_1G : PAGE_SIZE;
}

/**
 * user_mem_abort / kvm_tdp_page_fault, alone (the arm64 lock API's premap runs it so).
 */
export function handleStage2Fault(kvm: Kvm, req: FaultRequest): FaultResult {
  return runAlone(handleStage2FaultSteps(kvm, req));
}

/**
 * user_mem_abort / kvm_tdp_page_fault as resumable steps, inside the vCPU's SRCU read section
 * (kvm_vcpu_srcu_read_lock around the exit handler): the memslot lookup, the series' exits, the
 * private and gmem-only paths, then mmu_invalidate_seq's snapshot, kvm_faultin_pfn, mmu_lock,
 * mmu_invalidate_retry, install the leaf, mark dirty (x86 under mmu_lock in make_spte; arm64 after
 * the unlock, "if (writable && !ret) mark_page_dirty_in_slot").
 */
export function* handleStage2FaultSteps(kvm: Kvm, req: FaultRequest): Steps<FaultResult> {
  kvm.srcu.readLock();
  try {
    return yield* faultUnderSrcu(kvm, req);
  } finally {
    kvm.srcu.readUnlock();
  }
}

function* faultUnderSrcu(kvm: Kvm, req: FaultRequest): Steps<FaultResult> {
  const gfn = Math.floor(req.gpa / PAGE_SIZE);
  const slot = kvm.memslots.findForVcpu(req.vcpu, gfn);
  // kvm_invalidate_memslot published this slot as KVM_MEMSLOT_INVALID (a delete or move is under
  // way): x86 kvm_faultin_pfn returns RET_PF_RETRY; arm64 gets KVM_HVA_ERR_BAD and emulates MMIO.
  if (slot && kvm.memslots.isInvalid(slot))
    return kvm.arch === 'arm64' ? { kind: 'mmio' } : { kind: 'retry', slotInvalid: slot };
  const exit = earlyExit(kvm, req, slot);
  if (exit) return exit;
  if (slot && !req.premap && (yield* kvmDoUserfaultSteps(kvm, req.vcpu, slot, gfn)))
    return { kind: 'efault', cause: { kind: 'userfault', private: req.private } };
  if (!slot) return { kind: 'mmio' };
  if (slot.gmem)
    yield* waitUntil('kvm_gmem_get_pfn: filemap_invalidate_lock_shared', () => !kvm.gmemInvalidateLock.held);
  if (req.private && privateMemoryOn(kvm)) return privateFault(kvm, slot, gfn);
  if (isGmemOnlySlot(kvm, slot)) return mapGmemOnly(kvm, slot, gfn);
  if (writeIsMmio(kvm, slot, req.write)) return { kind: 'mmio' };
  const seq = kvm.mmuInvalidateSeq;
  yield* preempt('__kvm_faultin_pfn: get_user_pages (mmu_invalidate_seq read, smp_rmb)');
  yield* kvm.host.mmapLock.readLock('get_user_pages: mmap_read_lock');
  let pinned: FaultinResult;
  try {
    pinned = yield* kvmFaultinPfn(kvm, req, slot, gfn, seq);
  } finally {
    kvm.host.mmapLock.readUnlock();
  }
  if (pinned.kind !== 'pinned') return pinned.result;
  yield* preempt(PFN_PINNED);
  // read_lock(&kvm->mmu_lock): arm64 user_mem_abort, x86 kvm_tdp_mmu_page_fault. Other faults may
  // be in the walker too; unmaps, write-protection and harvests hold the lock for write.
  yield* kvm.mmuLock.readLock();
  let writable: boolean | undefined;
  try {
    if (mmuInvalidateRetry(kvm, pinned.pin.seq)) return { kind: 'retry' };
    writable = yield* install(kvm, req, slot, gfn, pinned.pin);
    // -EAGAIN (arm64) / RET_PF_RETRY (x86): a racing fault changed the entry; re-enter the guest.
    if (writable === undefined) return { kind: 'retry' };
    if (kvm.arch === 'x86') markDirty(kvm, req, slot, gfn, writable);
  } finally {
    kvm.mmuLock.readUnlock();
  }
  if (kvm.arch === 'arm64') {
    yield* preempt('user_mem_abort: mark_page_dirty_in_slot after the unlock');
    markDirty(kvm, req, slot, gfn, writable);
  }
  return { kind: 'mapped' };
}

/**
 * Exits taken before any pfn is looked up: gmem-private's private/shared mismatch
 * (kvm_mem_is_private vs the fault's kind); userfault's bitmap bit (INV-8) follows, in steps
 * (userfault.ts kvmDoUserfaultSteps).
 */
function earlyExit(kvm: Kvm, req: FaultRequest, slot: EngineSlot | undefined): FaultResult | null {
  const gfn = Math.floor(req.gpa / PAGE_SIZE);
  if (privateMemoryOn(kvm)) {
    if (req.private !== kvm.privateGfns.has(gfn))
      return { kind: 'efault', cause: { kind: 'private', private: req.private } };
    if (req.private && !slot?.gmem) return { kind: 'efault', cause: { kind: 'private', private: true } };
  }
  return null;
}

/** KVM_MEMSLOT_GMEM_ONLY: the pfn comes from guest_memfd (kvm_gmem_get_pfn), mapped 4 KiB. */
function mapGmemOnly(kvm: Kvm, slot: EngineSlot, gfn: number): FaultResult {
  const pfn = kvmGmemGetPfn(kvm, slot, gfn);
  mapLeaf(kvm.ops, kvm.root, { ipa: gfn * PAGE_SIZE, level: 3, pfn, perms: { r: true, w: true } });
  kvm.ops.stats.leavesMapped[3]++;
  return { kind: 'mapped' };
}

/** A write to a read-only slot is emulated as MMIO (kvm_handle_noslot_fault / io_mem_abort). */
function writeIsMmio(kvm: Kvm, slot: EngineSlot, write: boolean): boolean {
  if (!write) return false;
  if (slot.flags & KVM_MEM_READONLY) return true;
  return kvm.mutation.on(LOCK_PERMS_RESTRICT_GUEST) && kvm.locked.get(slot.id)?.write === false;
}

/**
 * kvm_faultin_pfn / __kvm_faultin_pfn: pin the host page (fast GUP only on an exit-on-missing slot)
 * after the caller's mmu_invalidate_seq snapshot. raceAccess's window sits between the pin and the mmu_lock.
 */
type FaultinResult = { kind: 'pinned'; pin: Pinned } | { kind: 'failed'; result: FaultResult };

function* kvmFaultinPfn(kvm: Kvm, req: FaultRequest, slot: EngineSlot, gfn: number, seq: number): Steps<FaultinResult> {
  const readonly = (slot.flags & KVM_MEM_READONLY) !== 0;
  const hva = slot.hva + (gfn - slot.baseGfn) * PAGE_SIZE;
  const fastOnly = seriesOn(kvm.config, 'exit-on-missing') && (slot.flags & exitOnMissingFlag(kvm.config)) !== 0;
  // Before S3/p03 a read fault that may map writable asked fast GUP for a write pin too.
  const writePin = req.write || (!kvm.config.options.fastGupReadOnly && !readonly);
  const page = fastOnly ? kvm.host.gupFast(hva, writePin) : yield* kvm.host.gupSteps(hva, req.write);
  if (page.kind === 'uffd') return { kind: 'failed', result: page };
  if (page.kind === 'efault') {
    const cause = { kind: 'hva' as const, why: page.cause, fastOnly, mappingSize: vmaPageSize(kvm, slot, hva) };
    return { kind: 'failed', result: { kind: 'efault', cause } };
  }
  return { kind: 'pinned', pin: { page, hva, seq, fastOnly } };
}

/** mmu_invalidate_retry(): an invalidation is running or ran since the snapshot (INV-40). */
function mmuInvalidateRetry(kvm: Kvm, seq: number): boolean {
  const raced = kvm.mmuInvalidateInProgress > 0 || seq !== kvm.mmuInvalidateSeq;
  return raced && !kvm.mutation.on(FAULT_IGNORES_MMU_SEQ);
}

/**
 * Choose the mapping size and permissions, and install the leaf as a shared walker; returns whether
 * it is writable, or undefined when the walk lost a compare-and-swap to another fault (-EAGAIN).
 */
function* install(kvm: Kvm, req: FaultRequest, slot: EngineSlot, gfn: number, pin: Pinned): Steps<boolean | undefined> {
  const level = mappingLevel(kvm, slot, gfn, pin.hva, pin.page.hostPageSize);
  const readonly = (slot.flags & KVM_MEM_READONLY) !== 0;
  const logging = slot.dirtyBitmap !== null;
  const honourReadonly = !kvm.mutation.on(READONLY_SLOT_MAPPED_WRITABLE);
  // BUG-33: a read-only pin taken by fast GUP for a read fault must never yield a writable mapping.
  const pinWritable = pin.page.writable || (pin.fastOnly && kvm.mutation.on(FAST_GUP_RO_PIN_WRITABLE));
  const writable = pinWritable && !(readonly && honourReadonly) && (req.write || !logging);
  const size = levelSize(level);
  const blockIpa = gfn * PAGE_SIZE - ((gfn * PAGE_SIZE) % size);
  const blockPfn = pin.page.pfn - (gfn * PAGE_SIZE - blockIpa) / PAGE_SIZE;
  const req2 = { ipa: blockIpa, level, pfn: blockPfn, perms: { r: true, w: writable } };
  if (!(yield* mapLeafSteps(kvm.ops, kvm.root, req2))) return undefined;
  kvm.ops.stats.leavesMapped[level as 1 | 2 | 3]++;
  return writable;
}

/** mark_page_dirty() after a logged write fault that mapped writable (INV-2). */
function markDirty(kvm: Kvm, req: FaultRequest, slot: EngineSlot, gfn: number, writable: boolean): void {
  // BUG-5 (S3/p11): "if (ret == 0) ret = 1;" moved above "if (writable && !ret) mark_page_dirty".
  const lostByReturnFixup = kvm.arch === 'arm64' && kvm.mutation.on(DIRTY_BIT_LOST_ON_FAULT);
  if (req.write && writable && slot.dirtyBitmap !== null && !lostByReturnFixup) markPageDirty(slot, gfn);
}
