// The uAPI numbers the spec speaks in. Values are upstream Linux 6.18 (include/uapi/linux/kvm.h),
// cross-checked with ../shared/UPSTREAM.md; the seed threads' proposed values are not used here.

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
export const SZ_2M = 2 * 1024 * 1024;
export const SZ_1G = 1024 * 1024 * 1024;
/** access_ok() bound for a 4-level x86-64 / arm64 48-bit user address space. */
export const TASK_SIZE = 2 ** 47;

export type Arch = 'x86' | 'arm64';
export const ARCHES: readonly Arch[] = ['x86', 'arm64'];
export const NR_VCPUS = 2;

// Memslot flags (kvm_userspace_memory_region[2].flags).
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;
export const KVM_MEM_GUEST_MEMFD = 1 << 2;
/** KVM_SET_USER_MEMORY_REGION (v1) accepts only the flags that need no region2 field. */
export const KVM_SET_USER_MEMORY_REGION_V1_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;

/**
 * KVM_USER_MEM_SLOTS, which KVM_CAP_NR_MEMSLOTS reports and slot ids must stay below. In
 * include/linux/kvm_host.h (l. 692-693 in v6.8-v6.18) it is "KVM_MEM_SLOTS_NUM SHRT_MAX" minus
 * KVM_INTERNAL_MEM_SLOTS; x86 reserves 3 internal slots (arch/x86/include/asm/kvm_host.h, "memory
 * slots that are not exposed to userspace", "#define KVM_INTERNAL_MEM_SLOTS 3"); arm64 defines
 * none, so kvm_host.h's "#define KVM_INTERNAL_MEM_SLOTS 0" applies: 32767.
 */
export const KVM_USER_MEM_SLOTS: Readonly<Record<Arch, number>> = { x86: 32764, arm64: 32767 };

// Exit reasons.
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_MEMORY_FAULT = 39;
/** kvm_run.memory_fault.flags bit for a private access (UPSTREAM.md). */
export const KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3;

// Capabilities (numbers from include/uapi/linux/kvm.h).
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_SYNC_MMU = 16;
/** 81 (31 is KVM_CAP_MCE): the real kernel's answer to check_extension(31) showed the old value wrong. */
export const KVM_CAP_READONLY_MEM = 81;
export const KVM_CAP_MULTI_ADDRESS_SPACE = 118;
export const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168;
export const KVM_CAP_ARM_NISV_TO_USER = 177;
/** arm64 KVM_CAP_ARM_SYSTEM_SUSPEND: a flags-less capability whose enable just sets a VM flag. */
export const KVM_CAP_ARM_SYSTEM_SUSPEND = 216;
export const KVM_CAP_USER_MEMORY2 = 231;
export const KVM_CAP_MEMORY_FAULT_INFO = 232;
export const KVM_CAP_MEMORY_ATTRIBUTES = 233;
export const KVM_CAP_GUEST_MEMFD = 234;
export const KVM_CAP_GUEST_MEMFD_FLAGS = 244;

export const KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0;
export const KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1;
export const KVM_DIRTY_LOG_MANUAL_CAPS = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;

export const GUEST_MEMFD_FLAG_MMAP = 1 << 0;
export const GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1;
export const GUEST_MEMFD_SUPPORTED_FLAGS = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;

export const ERRNOS = [
  'EPERM',
  'ENOENT',
  'EINTR',
  'EBADF',
  'ENOMEM',
  'EFAULT',
  'EEXIST',
  'EINVAL',
  'ENOSYS',
  'ENXIO',
  'EOPNOTSUPP',
  'EHWPOISON',
  'EBUSY',
  // Errnos only a real kernel has given so far (the kvm backend decodes every errno it can name).
  'E2BIG',
  'EAGAIN',
  'EACCES',
  'ENODEV',
  'ENOTTY',
  'ENOSPC',
  'EMFILE',
  'ERANGE',
  'EOVERFLOW',
  // Not a kernel errno: the harness's verdict on a KVM_RUN that never stopped retrying.
  'ELIVELOCK',
] as const;
export type Errno = (typeof ERRNOS)[number];

export const isAligned = (value: number, alignment: number): boolean => value % alignment === 0;
export const alignDown = (value: number, alignment: number): number => value - (value % alignment);
export const hex = (n: number | bigint): string => `0x${n.toString(16)}`;
