// KVM_CHECK_EXTENSION and KVM_ENABLE_CAP on the engine's VM fd, written from the kernel and not
// from the spec (model/caps.ts), so the differential compares two readings of the kernel: the
// KVM_CAP_READONLY_MEM number (81, not 31) was found only by the real kernel while both shared one
// table. The order of the lookups is the kernel's: kvm_vm_ioctl_check_extension_generic()
// (virt/kvm/kvm_main.c) first, then the arch's kvm_vm_ioctl_check_extension() (arch/x86/kvm/x86.c,
// arch/arm64/kvm/arm.c), which answers 0 for anything it does not know.
// Mutation points: memfault-cap-generic (BUG-29), memfault-reasons-logical-not (BUG-1).
import {
  GUEST_MEMFD_FLAG_INIT_SHARED,
  GUEST_MEMFD_FLAG_MMAP,
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
} from '../../model/abi.js';
import type { EnableCap } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import {
  KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
  KVM_CAP_MEMORY_FAULT_NOWAIT,
  KVM_CAP_USERFAULT,
  KVM_CAP_X86_MEMORY_FAULT_EXIT,
  KVM_MEMFAULT_REASON_ABSENT_MAPPING,
  KVM_MEMFAULT_REASON_UNKNOWN,
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
} from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import { arm64EnableCap } from './arm64-lock.js';
import { privateMemoryOn } from './gmem-private.js';
import { kvmNrMemslotAsIds, kvmUserMemSlots, type Kvm } from './kvm.js';
import { defineMutant } from './mutants.js';

export const MEMFAULT_REASONS_LOGICAL_NOT = defineMutant({
  name: 'memfault-reasons-logical-not',
  description: 'kvm_memfault_exit_flags_valid tests reasons & !valid_flags (always 0): unknown reason bits accepted',
  source: 'BUG-1 (S3/p04, missed in review)',
  arches: ['x86'],
  series: ['memfault-2023'],
  killedBy: ['differential'],
});

export const MEMFAULT_CAP_GENERIC = defineMutant({
  name: 'memfault-cap-generic',
  description: 'cap 227 handled in generic code without the check-extension guard, so arm64 accepts it',
  source: 'BUG-29 (S3/p04, Isaku)',
  arches: ['arm64'],
  series: ['memfault-2023'],
  killedBy: ['differential'],
});

/** KVM_CHECK_EXTENSION on the VM fd. */
export function kvmVmIoctlCheckExtension(kvm: Kvm, cap: number): number {
  return (
    checkExtensionGeneric(kvm, cap) ??
    (kvm.arch === 'x86' ? checkExtensionX86(kvm, cap) : checkExtensionArm64(kvm, cap))
  );
}

/**
 * kvm_vm_ioctl_check_extension_generic(), the cases modelled; undefined falls through to the arch.
 * Cases the kernel compiles out on an arch (#if KVM_MAX_NR_ADDRESS_SPACES > 1, CONFIG_KVM_GENERIC_-
 * MEMORY_ATTRIBUTES) fall through there too, and the arch answers 0.
 */
function checkExtensionGeneric(kvm: Kvm, cap: number): number | undefined {
  switch (cap) {
    case KVM_CAP_USER_MEMORY2:
    case KVM_CAP_GUEST_MEMFD:
      return 1;
    case KVM_CAP_READONLY_MEM:
      // "return kvm ? kvm_arch_has_readonly_mem(kvm) : true": default VM types have it on both arches.
      return 1;
    case KVM_CAP_NR_MEMSLOTS:
      return kvmUserMemSlots(kvm.arch);
    case KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2:
      return KVM_DIRTY_LOG_MANUAL_CAPS;
    case KVM_CAP_MULTI_ADDRESS_SPACE:
      // "if (kvm) return kvm_arch_nr_memslot_as_ids(kvm)", compiled only where SMM gives a second one.
      return kvmNrMemslotAsIds(kvm) > 1 ? kvmNrMemslotAsIds(kvm) : undefined;
    case KVM_CAP_MEMORY_ATTRIBUTES:
      // kvm_supported_mem_attributes(): PRIVATE only for a VM with private memory (gmem-private, x86).
      if (kvm.arch !== 'x86') return undefined;
      return privateMemoryOn(kvm) ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
    case KVM_CAP_GUEST_MEMFD_FLAGS:
      // kvm_gmem_get_supported_flags(): MMAP where the arch supports it (both, default VM), and INIT_SHARED with it.
      return GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
    case KVM_CAP_USERFAULT:
      // S0: "#ifdef CONFIG_KVM_USERFAULT case KVM_CAP_USERFAULT: return 1;" (the number is proposed).
      return seriesOn(kvm.config, 'userfault') ? 1 : undefined;
    case KVM_CAP_MEMORY_FAULT_NOWAIT:
      // S3/p09 advertises the fast-only flag on every architecture (INV-12).
      return seriesOn(kvm.config, 'exit-on-missing') ? 1 : undefined;
    default:
      return undefined;
  }
}

/** arch/x86/kvm/x86.c kvm_vm_ioctl_check_extension(), the cases modelled. */
function checkExtensionX86(kvm: Kvm, cap: number): number {
  switch (cap) {
    case KVM_CAP_SYNC_MMU:
    case KVM_CAP_MEMORY_FAULT_INFO:
      return 1;
    case KVM_CAP_X86_MEMORY_FAULT_EXIT:
      // S3/p04 (memfault-2023) adds the opt-in capability to x86 only.
      return seriesOn(kvm.config, 'memfault-2023') ? 1 : 0;
    default:
      return 0;
  }
}

/** arch/arm64/kvm/arm.c kvm_vm_ioctl_check_extension(), the cases modelled. */
function checkExtensionArm64(kvm: Kvm, cap: number): number {
  switch (cap) {
    case KVM_CAP_SYNC_MMU:
    case KVM_CAP_ARM_NISV_TO_USER:
    case KVM_CAP_ARM_SYSTEM_SUSPEND:
      return 1;
    case KVM_CAP_MEMORY_FAULT_INFO:
      // [assumption] arm64 6.18 reports it with guest_memfd support, as model/caps.ts also assumes.
      return 1;
    case KVM_CAP_ARM_LOCK_USER_MEMORY_REGION:
      return seriesOn(kvm.config, 'arm64-lock') ? 1 : 0;
    default:
      return 0;
  }
}

/**
 * KVM_ENABLE_CAP on the VM fd: kvm_vm_ioctl_enable_cap_generic() (MANUAL_DIRTY_LOG_PROTECT2), the
 * memfault-2023 x86 capability, then the arch hook. `premap` maps one page for the arm64 lock API.
 */
export function kvmVmIoctlEnableCap(kvm: Kvm, cap: EnableCap, premap: (gpa: number, write: boolean) => void): Outcome {
  if (cap.cap === KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) {
    // INITIALLY_SET is accepted only together with ENABLE; args[0] = 0 returns to classic mode.
    let allowed = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
    if (cap.args0 & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) allowed = KVM_DIRTY_LOG_MANUAL_CAPS;
    if (cap.flags || cap.args0 & ~allowed) return { kind: 'err', errno: 'EINVAL' };
    kvm.manualDirtyLog = cap.args0;
    return { kind: 'ok' };
  }
  if (cap.cap === KVM_CAP_X86_MEMORY_FAULT_EXIT && seriesOn(kvm.config, 'memfault-2023')) {
    // S3/p04: if (!kvm_vm_ioctl_check_extension(kvm, cap->cap)) ... (BUG-29 drops this guard).
    if (!kvmVmIoctlCheckExtension(kvm, cap.cap) && !kvm.mutation.on(MEMFAULT_CAP_GENERIC))
      return { kind: 'err', errno: 'EINVAL' };
    if (!kvmMemfaultExitFlagsValid(kvm, cap.args0)) return { kind: 'err', errno: 'EINVAL' };
    kvm.memfaultExitReasons = cap.args0;
    return { kind: 'ok' };
  }
  if (kvm.arch === 'arm64') return arm64EnableCap(kvm, cap, premap);
  return { kind: 'err', errno: 'EINVAL' };
}

/** kvm_memfault_exit_flags_valid() of S3/p04. BUG-1: "!valid_flags" (always 0) where "~valid_flags" was meant. */
function kvmMemfaultExitFlagsValid(kvm: Kvm, reasons: number): boolean {
  const validFlags = KVM_MEMFAULT_REASON_UNKNOWN | KVM_MEMFAULT_REASON_ABSENT_MAPPING;
  const mask = kvm.mutation.on(MEMFAULT_REASONS_LOGICAL_NOT) ? Number(!validFlags) : ~validFlags;
  return !(reasons & mask);
}
