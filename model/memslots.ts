// KVM_SET_USER_MEMORY_REGION(2): validation in kernel order (UPSTREAM.md "validation, in kernel
// order", virt/kvm/kvm_main.c kvm_vm_ioctl_set_memory_region / kvm_set_memory_region) and the
// four change kinds CREATE, DELETE, MOVE, FLAGS_ONLY.
import {
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_SET_USER_MEMORY_REGION_V1_FLAGS,
  KVM_USER_MEM_SLOTS,
  PAGE_SIZE,
  TASK_SIZE,
  isAligned,
  type Errno,
} from './abi.js';
import type { SetMemslot } from './commands.js';
import { dirtyLogAfterChange } from './dirty-log.js';
import type { Outcome } from './outcomes.js';
import { KVM_MEM_USERFAULT, exitOnMissingFlag } from './series-abi.js';
import { seriesOn } from './series.js';
import { nrAddressSpaces, slotEndGfn, type Memslot, type SpecState } from './state.js';
import { userfaultAfterChange, userfaultFlagValid } from './userfault.js';

/** KVM_MEM_MAX_NR_PAGES: a slot holds at most 2^31 - 1 pages. */
const KVM_MEM_MAX_NR_PAGES = 2 ** 31 - 1;

export function findSlot(state: SpecState, as: number, gfn: number): Memslot | undefined {
  return state.slots.find((s) => s.as === as && gfn >= s.baseGfn && gfn < slotEndGfn(s));
}

/**
 * check_memory_region_flags(): GUEST_MEMFD excludes LOG_DIRTY_PAGES and READONLY. The series add
 * USERFAULT (region2 only: its bitmap pointer is a region2 field) and EXIT_ON_MISSING, which v7
 * made exclusive with READONLY (INV-11: accepted iff KVM_CAP_MEMORY_FAULT_NOWAIT is reported).
 */
function flagsValid(state: SpecState, flags: number, api: 'v1' | 'v2'): boolean {
  let valid = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_GUEST_MEMFD;
  if (flags & KVM_MEM_GUEST_MEMFD) valid &= ~KVM_MEM_LOG_DIRTY_PAGES;
  else valid |= KVM_MEM_READONLY;
  if (userfaultFlagValid(state, api)) valid |= KVM_MEM_USERFAULT;
  const eom = exitOnMissingFlag(state.config);
  if (seriesOn(state.config, 'exit-on-missing') && !(flags & KVM_MEM_READONLY)) valid |= eom;
  return (flags & ~valid) === 0;
}

const fail = (errno: Errno): Outcome => ({ kind: 'err', errno });

export function setMemslot(state: SpecState, cmd: SetMemslot): Outcome {
  const { flags } = cmd;
  // kvm_vm_ioctl: v1 cannot carry flags that need region2 fields.
  const v1Flags =
    KVM_SET_USER_MEMORY_REGION_V1_FLAGS |
    (seriesOn(state.config, 'exit-on-missing') ? exitOnMissingFlag(state.config) : 0);
  if (cmd.api === 'v1' && flags & ~v1Flags) return fail('EINVAL');
  // kvm_vm_ioctl_set_memory_region: user slot ids only.
  if (cmd.slot >= KVM_USER_MEM_SLOTS[state.arch]) return fail('EINVAL');
  if (!flagsValid(state, flags, cmd.api)) return fail('EINVAL');
  if (!isAligned(cmd.size, PAGE_SIZE) || !isAligned(cmd.gpa, PAGE_SIZE)) return fail('EINVAL');
  // userspace_addr aligned and access_ok() for the whole range.
  if (!isAligned(cmd.hva, PAGE_SIZE) || cmd.hva + cmd.size > TASK_SIZE) return fail('EINVAL');
  const gmem = flags & KVM_MEM_GUEST_MEMFD ? (cmd.gmem ?? { handle: -1, offset: 0 }) : undefined;
  if (gmem && !isAligned(gmem.offset, PAGE_SIZE)) return fail('EINVAL');
  if (cmd.as >= nrAddressSpaces(state)) return fail('EINVAL');
  if (cmd.size / PAGE_SIZE > KVM_MEM_MAX_NR_PAGES) return fail('EINVAL');

  const old = state.slots.find((s) => s.as === cmd.as && s.id === cmd.slot);
  if (cmd.size === 0) {
    if (!old) return fail('EINVAL');
    // arm64-lock (INV-28): no implicit unlock; the errno is OQ-8's option.
    if (old.as === 0 && state.locked.has(old.id)) return fail(state.config.options.lockedDeleteErrno);
    state.slots = state.slots.filter((s) => s !== old);
    return { kind: 'ok' };
  }

  const baseGfn = cmd.gpa / PAGE_SIZE;
  const npages = cmd.size / PAGE_SIZE;
  if (old) {
    // UPSTREAM.md: guest_memfd slots are immutable (delete only); hva, size and READONLY are fixed.
    if ((flags | old.flags) & KVM_MEM_GUEST_MEMFD) return fail('EINVAL');
    if (cmd.hva !== old.hva || npages !== old.npages || (flags ^ old.flags) & KVM_MEM_READONLY) return fail('EINVAL');
    if (baseGfn === old.baseGfn && flags === old.flags) return { kind: 'ok' };
  }
  const createOrMove = !old || baseGfn !== old.baseGfn;
  if (createOrMove) {
    const overlaps = state.slots.some(
      (s) => s !== old && s.as === cmd.as && baseGfn < slotEndGfn(s) && s.baseGfn < baseGfn + npages,
    );
    if (overlaps) return fail('EEXIST');
    // [assumption] a MOVE deletes the old slot, so a locked slot cannot move either.
    if (old && old.as === 0 && state.locked.has(old.id)) return fail(state.config.options.lockedDeleteErrno);
  }
  let binding: Memslot['gmem'];
  if (gmem) {
    const bound = bindGmem(state, gmem, npages);
    if (typeof bound === 'string') return fail(bound);
    binding = bound;
  }

  const slot: Memslot = {
    as: cmd.as,
    id: cmd.slot,
    flags,
    baseGfn,
    npages,
    hva: cmd.hva,
    dirtyLog: dirtyLogAfterChange(state, old, flags, npages),
    ...(binding ? { gmem: binding } : {}),
  };
  const lock = old && old.as === 0 ? state.locked.get(old.id) : undefined;
  // Dirty logging write-protects the slot and splits its blocks (the engine lazily, on the write
  // fault that hits one), so the lock's pre-mapping guarantee ends with it.
  if (lock && flags & KVM_MEM_LOG_DIRTY_PAGES && !old!.dirtyLog) {
    lock.writeMapped = false;
    lock.intact = false;
  }
  // [assumption] arm64-lock x userfault: the zap that turning USERFAULT on requires (INV-8) wins over
  // the lock's pre-mapping (INV-31); the VMM asked for it.
  if (lock && seriesOn(state.config, 'userfault') && flags & KVM_MEM_USERFAULT && !(old!.flags & KVM_MEM_USERFAULT))
    lock.intact = false;
  const userfault = userfaultAfterChange(state, old, flags, baseGfn);
  if (userfault) slot.userfault = userfault;
  state.slots = [...state.slots.filter((s) => s !== old), slot];
  return { kind: 'ok' };
}

/**
 * kvm_gmem_bind(): the fd must be a guest_memfd of this VM (else EBADF for no file), the range must
 * lie inside the file, and no other slot may bind any page of it (EINVAL before Linux 7.2).
 */
function bindGmem(state: SpecState, gmem: { handle: number; offset: number }, npages: number): Memslot['gmem'] | Errno {
  const file = state.gmems[gmem.handle];
  if (!file) return 'EBADF';
  if (gmem.offset + npages * PAGE_SIZE > file.size) return 'EINVAL';
  const start = gmem.offset / PAGE_SIZE;
  const clash = state.slots.some(
    (s) => s.gmem?.handle === gmem.handle && start < s.gmem.pgoff + s.npages && s.gmem.pgoff < start + npages,
  );
  if (clash) return 'EINVAL';
  return { handle: gmem.handle, pgoff: start };
}
