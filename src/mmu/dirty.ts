// Dirty logging by write protection (virt/kvm/kvm_main.c kvm_get_dirty_log_protect,
// kvm_clear_dirty_log_protect; arm64 kvm_arch_mmu_enable_log_dirty_pt_masked). A bit is set when a
// write fault installs a writable mapping; harvesting write-protects what it reports so the next
// write faults again. Mutation points: get-dirty-log-skips-wrprotect,
// dirty-harvest-not-atomic.
import { KVM_DIRTY_LOG_INITIALLY_SET, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, PAGE_SIZE } from '../../model/abi.js';
import type { ClearDirtyLog, GetDirtyLog } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import { kvmNrMemslotAsIds, kvmUserMemSlots, type Kvm } from './kvm.js';
import type { EngineSlot } from './memslots.js';
import { wrprotectRange } from './visitors.js';
import { defineMutant } from './mutants.js';
import { holding, preempt, type Steps } from './steps.js';

export const GET_DIRTY_LOG_SKIPS_WRPROTECT = defineMutant({
  name: 'get-dirty-log-skips-wrprotect',
  description: 'classic KVM_GET_DIRTY_LOG clears the bits it reports without write-protecting those pages',
  source: 'own (kvm_get_dirty_log_protect without the protect)',
  killedBy: ['dirty-no-lost-write', 'leaf-justified'],
});

export const DIRTY_HARVEST_NOT_ATOMIC = defineMutant({
  name: 'dirty-harvest-not-atomic',
  description:
    'KVM_GET_DIRTY_LOG copies the bitmap, then clears the whole of it in a second step instead of ' +
    'xchg per word, so a bit a vCPU sets in between is lost with its page left writable',
  source: 'own (issue 10: kvm_get_dirty_log_protect xchg; INV-2 dirty no lost write)',
  killedBy: ['linearizable', 'leaf-justified'],
  interleaving: true,
});

export function allocDirtyBitmap(kvm: Kvm, npages: number): Uint32Array {
  const bitmap = new Uint32Array(Math.ceil(npages / 32));
  // INITIALLY_SET: every page of the slot reported (kvm_alloc_dirty_bitmap + bitmap_set), a word at a time.
  if (kvm.manualDirtyLog & KVM_DIRTY_LOG_INITIALLY_SET) {
    bitmap.fill(0xffffffff);
    if (npages & 31) bitmap[bitmap.length - 1] = (1 << (npages & 31)) - 1;
  }
  return bitmap;
}

/**
 * The set bits, ascending, a word at a time as kvm_get_dirty_log_protect walks the bitmap: empty
 * words cost one test, so a 1 TiB slot with nothing dirty is 2^23 word reads, not 2^28 bit tests.
 */
export function setBits(bitmap: Uint32Array): number[] {
  const pages: number[] = [];
  for (let w = 0; w < bitmap.length; w++) {
    let word = bitmap[w]!;
    while (word !== 0) {
      pages.push(w * 32 + 31 - Math.clz32(word & -word));
      word &= word - 1;
    }
  }
  return pages;
}

const setBit = (b: Uint32Array, i: number): void => {
  b[i >>> 5]! |= 1 << (i & 31);
};
const clearBit = (b: Uint32Array, i: number): void => {
  b[i >>> 5]! &= ~(1 << (i & 31));
};
export const testBit = (b: Uint32Array, i: number): boolean => (b[i >>> 5]! & (1 << (i & 31))) !== 0;

/** mark_page_dirty_in_slot(). */
export function markPageDirty(slot: EngineSlot, gfn: number): void {
  if (slot.dirtyBitmap) setBit(slot.dirtyBitmap, gfn - slot.baseGfn);
}

/**
 * Logging switched on: unless INITIALLY_SET already reports every page, write-protect the slot so
 * each first write faults. Blocks are split lazily, not here: they stay mapped read-only and the
 * write fault that hits one maps PAGE_SIZE, breaking the block (fault.ts mappingLevel; arm64's
 * default, KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE 0, and x86 with eager_page_split=N). Memory stays
 * bounded by what the guest writes, not by the slot's size. With INITIALLY_SET a block stays
 * writable until KVM_CLEAR_DIRTY_LOG write-protects it (every bit under it is set until then).
 */
export function onLoggingEnabled(kvm: Kvm, slot: EngineSlot): void {
  if (slot.as !== 0) return;
  const start = slot.baseGfn * PAGE_SIZE;
  const end = start + slot.npages * PAGE_SIZE;
  if (!(kvm.manualDirtyLog & KVM_DIRTY_LOG_INITIALLY_SET)) wrprotectRange(kvm.ops, kvm.mutation, kvm.root, start, end);
}

function wrprotectGfn(kvm: Kvm, slot: EngineSlot, rel: number): void {
  if (slot.as !== 0) return;
  const gpa = (slot.baseGfn + rel) * PAGE_SIZE;
  wrprotectRange(kvm.ops, kvm.mutation, kvm.root, gpa, gpa + PAGE_SIZE);
}

function loggedSlot(kvm: Kvm, as: number, id: number): EngineSlot | 'EINVAL' | 'ENOENT' {
  if (as >= kvmNrMemslotAsIds(kvm) || id >= kvmUserMemSlots(kvm.arch)) return 'EINVAL';
  const slot = kvm.memslots.byId(as, id);
  return slot?.dirtyBitmap ? slot : 'ENOENT';
}

/**
 * kvm_vm_ioctl_get_dirty_log under kvm->slots_lock: kvm_get_dirty_log_protect harvests each word
 * with xchg and write-protects what it took under mmu_lock, so a vCPU write either lands in this
 * harvest (and the VMM copies the page after the ioctl returns) or faults and sets a bit for the next.
 */
export function* kvmGetDirtyLogSteps(kvm: Kvm, cmd: GetDirtyLog): Steps<Outcome> {
  return yield* holding(kvm.slotsLock, getDirtyLog(kvm, cmd));
}

function* getDirtyLog(kvm: Kvm, cmd: GetDirtyLog): Steps<Outcome> {
  const slot = loggedSlot(kvm, cmd.as, cmd.slot);
  if (typeof slot === 'string') return { kind: 'err', errno: slot };
  const bitmap = slot.dirtyBitmap!;
  const dirty = setBits(bitmap);
  if (kvm.manualDirtyLog & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) return { kind: 'dirtyLog', dirty };
  if (kvm.mutation.on(DIRTY_HARVEST_NOT_ATOMIC)) {
    yield* preempt('kvm_get_dirty_log_protect: the bitmap copied, not yet cleared');
    bitmap.fill(0);
  }
  yield* kvm.mmuLock.lock();
  for (const rel of dirty) {
    clearBit(bitmap, rel);
    if (!kvm.mutation.on(GET_DIRTY_LOG_SKIPS_WRPROTECT)) wrprotectGfn(kvm, slot, rel);
  }
  kvm.mmuLock.unlock();
  return { kind: 'dirtyLog', dirty };
}

/** kvm_vm_ioctl_clear_dirty_log under kvm->slots_lock: clear and re-protect under mmu_lock. */
export function* kvmClearDirtyLogSteps(kvm: Kvm, cmd: ClearDirtyLog): Steps<Outcome> {
  return yield* holding(kvm.slotsLock, clearDirtyLog(kvm, cmd));
}

function* clearDirtyLog(kvm: Kvm, cmd: ClearDirtyLog): Steps<Outcome> {
  if (cmd.as >= kvmNrMemslotAsIds(kvm) || cmd.slot >= kvmUserMemSlots(kvm.arch))
    return { kind: 'err', errno: 'EINVAL' };
  if (cmd.firstPage & 63) return { kind: 'err', errno: 'EINVAL' };
  const slot = loggedSlot(kvm, cmd.as, cmd.slot);
  if (typeof slot === 'string') return { kind: 'err', errno: slot };
  const n = slot.npages;
  if (
    cmd.firstPage > n ||
    cmd.numPages > n - cmd.firstPage ||
    (cmd.numPages < n - cmd.firstPage && cmd.numPages & 63)
  ) {
    return { kind: 'err', errno: 'EINVAL' };
  }
  const bitmap = slot.dirtyBitmap!;
  yield* kvm.mmuLock.lock();
  for (let rel = cmd.firstPage; rel < cmd.firstPage + cmd.numPages; rel++) {
    // firstPage is 64-aligned, so rel reaches each word at its first bit: skip empty words whole.
    if ((rel & 31) === 0 && bitmap[rel >>> 5] === 0) {
      rel += 31;
      continue;
    }
    if (!testBit(bitmap, rel)) continue;
    clearBit(bitmap, rel);
    wrprotectGfn(kvm, slot, rel);
  }
  kvm.mmuLock.unlock();
  return { kind: 'ok' };
}
