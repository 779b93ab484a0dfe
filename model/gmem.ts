// guest_memfd as its user sees it (virt/kvm/guest_memfd.c): KVM_CREATE_GUEST_MEMFD and
// fallocate(PUNCH_HOLE | KEEP_SIZE). Binding to memslots is in memslots.ts; guest accesses in access.ts.
import { GUEST_MEMFD_SUPPORTED_FLAGS, PAGE_SIZE, isAligned } from './abi.js';
import type { GmemCreate, GmemPunchHole } from './commands.js';
import { dropPages } from './memory.js';
import type { Outcome } from './outcomes.js';
import type { SpecState } from './state.js';

/** kvm_gmem_create(): unsupported flag bits, then a size that is zero or not page aligned, are EINVAL. */
export function gmemCreate(state: SpecState, cmd: GmemCreate): Outcome {
  if (cmd.flags & ~GUEST_MEMFD_SUPPORTED_FLAGS) return { kind: 'err', errno: 'EINVAL' };
  if (cmd.size <= 0 || !isAligned(cmd.size, PAGE_SIZE)) return { kind: 'err', errno: 'EINVAL' };
  state.gmems.push({ size: cmd.size, flags: cmd.flags, memory: new Map() });
  return { kind: 'ok', value: state.gmems.length - 1 };
}

/**
 * vfs_fallocate() rejects len <= 0, kvm_gmem_fallocate() unaligned offset or length; a hole past
 * EOF is fine. Punched pages read back as zero (guest_memfd_test.c).
 */
export function gmemPunchHole(state: SpecState, cmd: GmemPunchHole): Outcome {
  const file = state.gmems[cmd.handle];
  if (!file) return { kind: 'err', errno: 'EBADF' };
  if (cmd.offset < 0 || cmd.len <= 0) return { kind: 'err', errno: 'EINVAL' };
  if (!isAligned(cmd.offset, PAGE_SIZE) || !isAligned(cmd.len, PAGE_SIZE)) return { kind: 'err', errno: 'EINVAL' };
  dropPages(file.memory, cmd.offset / PAGE_SIZE, (cmd.offset + cmd.len) / PAGE_SIZE);
  return { kind: 'ok' };
}
