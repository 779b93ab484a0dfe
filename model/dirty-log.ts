// Dirty logging as userspace sees it (api.rst 4.8 KVM_GET_DIRTY_LOG, 4.117 KVM_CLEAR_DIRTY_LOG,
// 7.18 KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2). INV-22: no guest write to a logged slot goes
// unreported between two harvests.
import {
  KVM_DIRTY_LOG_INITIALLY_SET,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_USER_MEM_SLOTS,
  PAGE_SIZE,
} from './abi.js';
import type { ClearDirtyLog, GetDirtyLog, GuestAccess } from './commands.js';
import { splitByPage } from './memory.js';
import type { Outcome } from './outcomes.js';
import { nrAddressSpaces, slotEndGfn, type Memslot, type SpecState } from './state.js';

/**
 * The bitmap a slot has after a create/move/flags change (kvm_prepare_memory_region): none without
 * LOG_DIRTY_PAGES; the old one if logging stays on; a new one otherwise, all ones when manual
 * protect was enabled with INITIALLY_SET.
 */
export function dirtyLogAfterChange(
  state: SpecState,
  old: Memslot | undefined,
  flags: number,
  npages: number,
): Memslot['dirtyLog'] {
  if (!(flags & KVM_MEM_LOG_DIRTY_PAGES)) return null;
  if (old?.dirtyLog) return old.dirtyLog;
  const initiallySet = (state.manualDirtyLog & KVM_DIRTY_LOG_INITIALLY_SET) !== 0;
  const dirty = new Set<number>();
  if (initiallySet) for (let i = 0; i < npages; i++) dirty.add(i);
  return { dirty, mayBeDirty: new Set() };
}

/** A completed guest write to gfn in a logged slot must be reported (mark_page_dirty_in_slot). */
export function recordGuestWrite(slot: Memslot, gfn: number): void {
  slot.dirtyLog?.dirty.add(gfn - slot.baseGfn);
}

/** A page KVM may have marked dirty without a completed guest write (a write fault that did not finish). */
export function recordMaybeDirty(slot: Memslot, gpa: number): void {
  slot.dirtyLog?.mayBeDirty.add(Math.floor(gpa / PAGE_SIZE) - slot.baseGfn);
}

/**
 * A guest write that did not complete while other threads ran (issue 10): its fault may have
 * mapped the page writable and marked it dirty (x86 make_spte, arm64 user_mem_abort's
 * mark_page_dirty_in_slot), after which a concurrent MMU-notifier invalidation or memslot change
 * zapped the mapping and the retried access exited. Only a concurrent history separates those two
 * faults, so only the history model (properties/spec-history-model.ts) applies this; each page of
 * the access in a logged slot may then be reported.
 */
export function recordInterruptedWrite(state: SpecState, cmd: GuestAccess): void {
  if (!cmd.write) return;
  for (const part of splitByPage(cmd.gpa, cmd.len)) {
    const gfn = Math.floor(part.addr / PAGE_SIZE);
    const slot = state.slots.find((s) => s.as === 0 && gfn >= s.baseGfn && gfn < slotEndGfn(s));
    if (slot) recordMaybeDirty(slot, part.addr);
  }
}

/**
 * x86 maps a page writable on a read fault when the host page is writable and marks it dirty when
 * it does (make_spte). So a read of a logged page that the host maps RW may be reported; arm64
 * grants write only on write faults while logging, so there it must not be.
 */
export function recordGuestRead(state: SpecState, slot: Memslot, gfn: number, hostWritable: boolean): void {
  if (state.arch === 'x86' && hostWritable && !(slot.flags & KVM_MEM_READONLY))
    slot.dirtyLog?.mayBeDirty.add(gfn - slot.baseGfn);
}

function lookupLogged(state: SpecState, as: number, id: number): Memslot | 'EINVAL' | 'ENOENT' {
  if (as >= nrAddressSpaces(state) || id >= KVM_USER_MEM_SLOTS[state.arch]) return 'EINVAL';
  const slot = state.slots.find((s) => s.as === as && s.id === id);
  return slot?.dirtyLog ? slot : 'ENOENT';
}

const sorted = (s: Set<number>): number[] => [...s].sort((a, b) => a - b);

/**
 * Classic mode returns the bitmap and clears it (and write-protects those pages so later writes are
 * caught). With manual protect the bitmap is returned and left alone until KVM_CLEAR_DIRTY_LOG.
 */
export function getDirtyLog(state: SpecState, cmd: GetDirtyLog): Outcome {
  const slot = lookupLogged(state, cmd.as, cmd.slot);
  if (typeof slot === 'string') return { kind: 'err', errno: slot };
  const log = slot.dirtyLog!;
  const dirty = sorted(log.dirty);
  const mayAlsoBeDirty = sorted(log.mayBeDirty).filter((p) => !log.dirty.has(p));
  if (!(state.manualDirtyLog & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
    log.dirty.clear();
    log.mayBeDirty.clear();
  }
  return { kind: 'dirtyLog', dirty, mayAlsoBeDirty };
}

/** kvm_clear_dirty_log_protect: the argument checks in kernel order, then clear the range. */
export function clearDirtyLog(state: SpecState, cmd: ClearDirtyLog): Outcome {
  if (cmd.as >= nrAddressSpaces(state) || cmd.slot >= KVM_USER_MEM_SLOTS[state.arch])
    return { kind: 'err', errno: 'EINVAL' };
  if (cmd.firstPage % 64 !== 0) return { kind: 'err', errno: 'EINVAL' };
  const slot = lookupLogged(state, cmd.as, cmd.slot);
  if (typeof slot === 'string') return { kind: 'err', errno: slot };
  const { npages } = slot;
  if (
    cmd.firstPage > npages ||
    cmd.numPages > npages - cmd.firstPage ||
    (cmd.numPages < npages - cmd.firstPage && cmd.numPages % 64 !== 0)
  ) {
    return { kind: 'err', errno: 'EINVAL' };
  }
  const log = slot.dirtyLog!;
  for (let p = cmd.firstPage; p < cmd.firstPage + cmd.numPages; p++) {
    log.dirty.delete(p);
    log.mayBeDirty.delete(p);
  }
  return { kind: 'ok' };
}
