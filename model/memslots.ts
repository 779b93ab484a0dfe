// KVM_SET_USER_MEMORY_REGION(2): validation in kernel order (UPSTREAM.md "validation, in kernel
// order", virt/kvm/kvm_main.c kvm_vm_ioctl_set_memory_region / kvm_set_memory_region) and the
// four change kinds CREATE, DELETE, MOVE, FLAGS_ONLY.
import {
  KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_SET_USER_MEMORY_REGION_V1_FLAGS,
  KVM_USER_MEM_SLOTS, PAGE_SIZE, TASK_SIZE, isAligned, nrAddressSpaces, type Errno,
} from './abi.js';
import type { SetMemslot } from './commands.js';
import { dirtyLogAfterChange } from './dirty-log.js';
import type { Outcome } from './outcomes.js';
import { slotEndGfn, type Memslot, type SpecState } from './state.js';

/** KVM_MEM_MAX_NR_PAGES: a slot holds at most 2^31 - 1 pages. */
const KVM_MEM_MAX_NR_PAGES = 2 ** 31 - 1;

export function findSlot(state: SpecState, as: number, gfn: number): Memslot | undefined {
  return state.slots.find((s) => s.as === as && gfn >= s.baseGfn && gfn < slotEndGfn(s));
}

/** check_memory_region_flags(): GUEST_MEMFD excludes LOG_DIRTY_PAGES and READONLY. */
function flagsValid(flags: number): boolean {
  let valid = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_GUEST_MEMFD;
  if (flags & KVM_MEM_GUEST_MEMFD) valid &= ~KVM_MEM_LOG_DIRTY_PAGES;
  else valid |= KVM_MEM_READONLY;
  return (flags & ~valid) === 0;
}

const fail = (errno: Errno): Outcome => ({ kind: 'err', errno });

export function setMemslot(state: SpecState, cmd: SetMemslot): Outcome {
  const { flags } = cmd;
  // kvm_vm_ioctl: v1 cannot carry flags that need region2 fields.
  if (cmd.api === 'v1' && (flags & ~KVM_SET_USER_MEMORY_REGION_V1_FLAGS)) return fail('EINVAL');
  // kvm_vm_ioctl_set_memory_region: user slot ids only.
  if (cmd.slot >= KVM_USER_MEM_SLOTS) return fail('EINVAL');
  if (!flagsValid(flags)) return fail('EINVAL');
  if (!isAligned(cmd.size, PAGE_SIZE) || !isAligned(cmd.gpa, PAGE_SIZE)) return fail('EINVAL');
  // userspace_addr aligned and access_ok() for the whole range.
  if (!isAligned(cmd.hva, PAGE_SIZE) || cmd.hva + cmd.size > TASK_SIZE) return fail('EINVAL');
  const gmem = flags & KVM_MEM_GUEST_MEMFD ? cmd.gmem ?? { handle: -1, offset: 0 } : undefined;
  if (gmem && !isAligned(gmem.offset, PAGE_SIZE)) return fail('EINVAL');
  if (cmd.as >= nrAddressSpaces(state.arch)) return fail('EINVAL');
  if (cmd.size / PAGE_SIZE > KVM_MEM_MAX_NR_PAGES) return fail('EINVAL');

  const old = state.slots.find((s) => s.as === cmd.as && s.id === cmd.slot);
  if (cmd.size === 0) {
    if (!old) return fail('EINVAL');
    state.slots = state.slots.filter((s) => s !== old);
    return { kind: 'ok' };
  }

  const baseGfn = cmd.gpa / PAGE_SIZE;
  const npages = cmd.size / PAGE_SIZE;
  if (old) {
    // UPSTREAM.md: guest_memfd slots are immutable (delete only); hva, size and READONLY are fixed.
    if ((flags | old.flags) & KVM_MEM_GUEST_MEMFD) return fail('EINVAL');
    if (cmd.hva !== old.hva || npages !== old.npages || ((flags ^ old.flags) & KVM_MEM_READONLY)) return fail('EINVAL');
    if (baseGfn === old.baseGfn && flags === old.flags) return { kind: 'ok' };
  }
  const createOrMove = !old || baseGfn !== old.baseGfn;
  if (createOrMove) {
    const overlaps = state.slots.some((s) => s !== old && s.as === cmd.as &&
      baseGfn < slotEndGfn(s) && s.baseGfn < baseGfn + npages);
    if (overlaps) return fail('EEXIST');
  }
  let binding: Memslot['gmem'];
  if (gmem) {
    const bound = bindGmem(state, gmem, npages);
    if (typeof bound === 'string') return fail(bound);
    binding = bound;
  }

  const slot: Memslot = {
    as: cmd.as, id: cmd.slot, flags, baseGfn, npages, hva: cmd.hva,
    dirtyLog: dirtyLogAfterChange(state, old, flags, npages),
    ...(binding ? { gmem: binding } : {}),
  };
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
  const clash = state.slots.some((s) => s.gmem?.handle === gmem.handle &&
    start < s.gmem.pgoff + s.npages && s.gmem.pgoff < start + npages);
  if (clash) return 'EINVAL';
  return { handle: gmem.handle, pgoff: start };
}
