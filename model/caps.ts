// KVM_CHECK_EXTENSION and KVM_ENABLE_CAP on the VM fd, for the capabilities this harness models.
import {
  KVM_CAP_ARM_NISV_TO_USER, KVM_CAP_GUEST_MEMFD, KVM_CAP_GUEST_MEMFD_FLAGS, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_MEMORY_FAULT_INFO, KVM_CAP_MULTI_ADDRESS_SPACE, KVM_CAP_NR_MEMSLOTS,
  KVM_CAP_READONLY_MEM, KVM_CAP_SYNC_MMU, KVM_CAP_USER_MEMORY2, KVM_DIRTY_LOG_MANUAL_CAPS,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, KVM_USER_MEM_SLOTS, GUEST_MEMFD_SUPPORTED_FLAGS, type Arch,
} from './abi.js';
import type { CheckExtension, EnableCap } from './commands.js';
import type { Outcome } from './outcomes.js';
import type { SpecState } from './state.js';

/**
 * What a default-type VM reports. x86 values were measured on these machines (UPSTREAM.md);
 * arm64 differs in address spaces (one) and NISV_TO_USER. [assumption] arm64 6.18 reports
 * MEMORY_FAULT_INFO and guest_memfd like x86.
 */
const CAPS: Record<Arch, Record<number, number>> = {
  x86: {
    [KVM_CAP_NR_MEMSLOTS]: KVM_USER_MEM_SLOTS, [KVM_CAP_SYNC_MMU]: 1, [KVM_CAP_READONLY_MEM]: 1,
    [KVM_CAP_MULTI_ADDRESS_SPACE]: 2, [KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2]: KVM_DIRTY_LOG_MANUAL_CAPS,
    [KVM_CAP_USER_MEMORY2]: 1, [KVM_CAP_MEMORY_FAULT_INFO]: 1, [KVM_CAP_MEMORY_ATTRIBUTES]: 0,
    [KVM_CAP_GUEST_MEMFD]: 1, [KVM_CAP_GUEST_MEMFD_FLAGS]: GUEST_MEMFD_SUPPORTED_FLAGS,
  },
  arm64: {
    [KVM_CAP_NR_MEMSLOTS]: KVM_USER_MEM_SLOTS, [KVM_CAP_SYNC_MMU]: 1, [KVM_CAP_READONLY_MEM]: 1,
    [KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2]: KVM_DIRTY_LOG_MANUAL_CAPS, [KVM_CAP_ARM_NISV_TO_USER]: 1,
    [KVM_CAP_USER_MEMORY2]: 1, [KVM_CAP_MEMORY_FAULT_INFO]: 1,
    [KVM_CAP_GUEST_MEMFD]: 1, [KVM_CAP_GUEST_MEMFD_FLAGS]: GUEST_MEMFD_SUPPORTED_FLAGS,
  },
};

export const capValue = (arch: Arch, cap: number): number => CAPS[arch][cap] ?? 0;

export function checkExtension(state: SpecState, cmd: CheckExtension): Outcome {
  return { kind: 'ok', value: capValue(state.arch, cmd.cap) };
}

/**
 * kvm_vm_ioctl_enable_cap_generic(): MANUAL_DIRTY_LOG_PROTECT2 accepts ENABLE, and INITIALLY_SET
 * only together with ENABLE; args[0] = 0 returns to classic mode. arm64 NISV_TO_USER needs flags
 * 0. Informational capabilities (MEMORY_FAULT_INFO) and anything else: EINVAL.
 */
export function enableCap(state: SpecState, cmd: EnableCap): Outcome {
  if (cmd.cap === KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) {
    const allowed = cmd.args0 & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE ? KVM_DIRTY_LOG_MANUAL_CAPS : KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
    if (cmd.flags !== 0 || (cmd.args0 & ~allowed)) return { kind: 'err', errno: 'EINVAL' };
    state.manualDirtyLog = cmd.args0;
    return { kind: 'ok' };
  }
  if (cmd.cap === KVM_CAP_ARM_NISV_TO_USER && state.arch === 'arm64') {
    return cmd.flags === 0 ? { kind: 'ok' } : { kind: 'err', errno: 'EINVAL' };
  }
  return { kind: 'err', errno: 'EINVAL' };
}
