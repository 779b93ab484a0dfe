// KVM_CHECK_EXTENSION and KVM_ENABLE_CAP on the VM fd, for the capabilities this harness models.
import {
  KVM_CAP_ARM_NISV_TO_USER,
  KVM_CAP_ARM_SYSTEM_SUSPEND,
  KVM_CAP_GUEST_MEMFD,
  KVM_CAP_GUEST_MEMFD_FLAGS,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_CAP_MEMORY_ATTRIBUTES,
  KVM_CAP_MEMORY_FAULT_INFO,
  KVM_CAP_MULTI_ADDRESS_SPACE,
  KVM_CAP_NR_MEMSLOTS,
  KVM_CAP_READONLY_MEM,
  KVM_CAP_SYNC_MMU,
  KVM_CAP_USER_MEMORY2,
  KVM_DIRTY_LOG_MANUAL_CAPS,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_USER_MEM_SLOTS,
  GUEST_MEMFD_SUPPORTED_FLAGS,
  type Arch,
} from './abi.js';
import { lockCap } from './arm64-lock.js';
import { deviates } from './platform.js';
import type { CheckExtension, EnableCap } from './commands.js';
import type { Outcome } from './outcomes.js';
import {
  KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
  KVM_CAP_MEMORY_FAULT_NOWAIT,
  KVM_CAP_USERFAULT,
  KVM_CAP_X86_MEMORY_FAULT_EXIT,
  KVM_MEMFAULT_VALID_REASONS,
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
} from './series-abi.js';
import { seriesOn, type ModelConfig } from './series.js';
import type { SpecState } from './state.js';

/**
 * What a default-type VM reports. x86 values were measured on these machines (UPSTREAM.md);
 * arm64 differs in address spaces (one) and NISV_TO_USER. [assumption] arm64 6.18 reports
 * MEMORY_FAULT_INFO and guest_memfd like x86.
 */
const CAPS: Record<Arch, Record<number, number>> = {
  x86: {
    [KVM_CAP_NR_MEMSLOTS]: KVM_USER_MEM_SLOTS.x86,
    [KVM_CAP_SYNC_MMU]: 1,
    [KVM_CAP_READONLY_MEM]: 1,
    [KVM_CAP_MULTI_ADDRESS_SPACE]: 2,
    [KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2]: KVM_DIRTY_LOG_MANUAL_CAPS,
    [KVM_CAP_USER_MEMORY2]: 1,
    [KVM_CAP_MEMORY_FAULT_INFO]: 1,
    [KVM_CAP_MEMORY_ATTRIBUTES]: 0,
    [KVM_CAP_GUEST_MEMFD]: 1,
    [KVM_CAP_GUEST_MEMFD_FLAGS]: GUEST_MEMFD_SUPPORTED_FLAGS,
  },
  arm64: {
    [KVM_CAP_NR_MEMSLOTS]: KVM_USER_MEM_SLOTS.arm64,
    [KVM_CAP_SYNC_MMU]: 1,
    [KVM_CAP_READONLY_MEM]: 1,
    [KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2]: KVM_DIRTY_LOG_MANUAL_CAPS,
    [KVM_CAP_ARM_NISV_TO_USER]: 1,
    [KVM_CAP_ARM_SYSTEM_SUSPEND]: 1,
    [KVM_CAP_USER_MEMORY2]: 1,
    [KVM_CAP_MEMORY_FAULT_INFO]: 1,
    [KVM_CAP_GUEST_MEMFD]: 1,
    [KVM_CAP_GUEST_MEMFD_FLAGS]: GUEST_MEMFD_SUPPORTED_FLAGS,
  },
};

/** What each enabled series adds to KVM_CHECK_EXTENSION. */
function seriesCapValue(arch: Arch, config: ModelConfig, cap: number): number | undefined {
  if (cap === KVM_CAP_X86_MEMORY_FAULT_EXIT && seriesOn(config, 'memfault-2023')) return arch === 'x86' ? 1 : 0;
  if (cap === KVM_CAP_MEMORY_FAULT_NOWAIT && seriesOn(config, 'exit-on-missing')) return 1;
  if (cap === KVM_CAP_USERFAULT && seriesOn(config, 'userfault')) return 1;
  if (cap === KVM_CAP_ARM_LOCK_USER_MEMORY_REGION && seriesOn(config, 'arm64-lock')) return arch === 'arm64' ? 1 : 0;
  if (cap === KVM_CAP_MEMORY_ATTRIBUTES && seriesOn(config, 'gmem-private'))
    return arch === 'x86' ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
  return undefined;
}

/** What a recorded platform deviation changes (model/platform.ts). */
function platformCapValue(config: ModelConfig, cap: number): number | undefined {
  if (cap === KVM_CAP_MULTI_ADDRESS_SPACE && deviates(config, 'single-address-space')) return 0;
  return undefined;
}

export const capValue = (arch: Arch, cap: number, config?: ModelConfig): number =>
  (config && (platformCapValue(config, cap) ?? seriesCapValue(arch, config, cap))) ?? CAPS[arch][cap] ?? 0;

export function checkExtension(state: SpecState, cmd: CheckExtension): Outcome {
  return { kind: 'ok', value: capValue(state.arch, cmd.cap, state.config) };
}

/**
 * kvm_vm_ioctl_enable_cap_generic(): MANUAL_DIRTY_LOG_PROTECT2 accepts ENABLE, and INITIALLY_SET
 * only together with ENABLE; args[0] = 0 returns to classic mode. arm64 NISV_TO_USER needs flags
 * 0, and so does SYSTEM_SUSPEND. Informational capabilities (MEMORY_FAULT_INFO, and the series'
 * MEMORY_FAULT_NOWAIT (INV-12) and USERFAULT) and anything else: EINVAL. The series add cap 227
 * (memfault-2023) and the arm64 lock API.
 */
export function enableCap(state: SpecState, cmd: EnableCap): Outcome {
  if (cmd.cap === KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) {
    const allowed =
      cmd.args0 & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE ? KVM_DIRTY_LOG_MANUAL_CAPS : KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
    if (cmd.flags !== 0 || cmd.args0 & ~allowed) return { kind: 'err', errno: 'EINVAL' };
    state.manualDirtyLog = cmd.args0;
    return { kind: 'ok' };
  }
  if (cmd.cap === KVM_CAP_X86_MEMORY_FAULT_EXIT && seriesOn(state.config, 'memfault-2023') && state.arch === 'x86') {
    // S3/p04 as intended (INV-13): unknown reason bits are EINVAL and leave the reasons unchanged.
    if (cmd.args0 & ~KVM_MEMFAULT_VALID_REASONS) return { kind: 'err', errno: 'EINVAL' };
    state.memfaultExitReasons = cmd.args0;
    return { kind: 'ok' };
  }
  if (state.arch === 'arm64') {
    if (cmd.cap === KVM_CAP_ARM_LOCK_USER_MEMORY_REGION && seriesOn(state.config, 'arm64-lock'))
      return lockCap(state, cmd);
    // kvm_vm_ioctl_enable_cap: every other arm64 capability takes no flags (BUG-24 lost this check).
    const known = cmd.cap === KVM_CAP_ARM_NISV_TO_USER || cmd.cap === KVM_CAP_ARM_SYSTEM_SUSPEND;
    if (known) return cmd.flags === 0 ? { kind: 'ok' } : { kind: 'err', errno: 'EINVAL' };
  }
  return { kind: 'err', errno: 'EINVAL' };
}
