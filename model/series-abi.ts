// uAPI numbers of the proposed series (never merged, or merged with other numbers). Each value
// says where it comes from; values the seeds leave open are marked [assumption].
import { KVM_EXIT_MEMORY_FAULT } from './abi.js';
import { seriesOn, type ModelConfig } from './series.js';

// --- userfault (S0; UPSTREAM.md "KVM_MEM_USERFAULT", v3 2025) ---
export const KVM_MEM_USERFAULT = 1 << 3;
export const KVM_MEMORY_EXIT_FLAG_USERFAULT = 1 << 4;
/**
 * [proposed] The series posts no number we can use: 245, assumed before, is upstream's
 * KVM_CAP_ARM_SEA_TO_USER (include/uapi/linux/kvm.h, "#define KVM_CAP_ARM_SEA_TO_USER 245", l. 975
 * in v6.18; the highest upstream cap is KVM_CAP_S390_KEYOP 247 in kvm/next, and pending series
 * already claim 248 and 249). 4096 lies far above every upstream number, so a real kernel answers 0
 * for it and the harness's number can never alias a merged capability. Informational only
 * (ENABLE_CAP -> EINVAL).
 */
export const KVM_CAP_USERFAULT = 4096;

// --- memfault-2023 (S3/p04-p10, the API as posted) ---
/** The posted series numbered the exit 38; upstream merged it as 39 (UPSTREAM.md). */
export const KVM_EXIT_MEMORY_FAULT_2023 = 38;
export const KVM_CAP_X86_MEMORY_FAULT_EXIT = 227;
export const KVM_MEMFAULT_REASON_UNKNOWN = 1 << 0;
export const KVM_MEMFAULT_REASON_ABSENT_MAPPING = 1 << 1;
export const KVM_MEMFAULT_VALID_REASONS = KVM_MEMFAULT_REASON_UNKNOWN | KVM_MEMFAULT_REASON_ABSENT_MAPPING;

// --- exit-on-missing (S3/p09; renamed ABSENT_MAPPING_FAULT -> EXIT_ON_MISSING, v7 2024) ---
export const KVM_CAP_MEMORY_FAULT_NOWAIT = 228;
/**
 * v2 used bit 2, which GUEST_MEMFD took upstream; v7 moved to bit 3, which USERFAULT (its successor)
 * proposes too. [assumption] With both series enabled the harness moves EXIT_ON_MISSING to bit 4.
 */
export function exitOnMissingFlag(config: ModelConfig): number {
  return seriesOn(config, 'userfault') ? 1 << 4 : 1 << 3;
}

// --- arm64-lock (S2, 2021 numbering) ---
export const KVM_CAP_ARM_MTE = 205;
export const KVM_CAP_ARM_LOCK_USER_MEMORY_REGION = 207;
export const KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK = 1 << 0;
export const KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK = 1 << 1;
export const KVM_ARM_LOCK_MEM_READ = 1 << 0;
export const KVM_ARM_LOCK_MEM_WRITE = 1 << 1;
export const KVM_ARM_UNLOCK_MEM_ALL = 1 << 0;

// --- gmem-private (S1; upstream KVM_SET_MEMORY_ATTRIBUTES for a VM type with private memory) ---
export const KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3;

/** Which exit_reason a memory-fault exit uses under this configuration. */
export function memoryFaultExitReason(config: ModelConfig): number {
  return seriesOn(config, 'memfault-2023') ? KVM_EXIT_MEMORY_FAULT_2023 : KVM_EXIT_MEMORY_FAULT;
}
