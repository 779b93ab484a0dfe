// Platform deviations: ways a real kernel was measured to differ from upstream 6.18, recorded so
// the spec can apply them on that platform (docs/PLATFORMS.md). Each is off unless a platform
// profile (platforms/*.json) names it; every spec rule that reads one cites its id. The engine
// imitates the same kernel, so it reads which are on, but implements each rule itself. This file is
// configuration vocabulary: it imports nothing, and holds no rule.

export const PLATFORM_DEVIATIONS = [
  {
    id: 'fault-as-mmio',
    statement:
      'a guest access whose memslot hva the host cannot provide (no VMA, PROT_NONE, a write to a read-only ' +
      'mapping), which upstream fails with -EFAULT and a KVM_EXIT_MEMORY_FAULT payload, exits KVM_EXIT_MMIO ' +
      'instead: the error pfn is emulated, and the emulator cannot reach the page either',
    upstream:
      'arch/x86/kvm/mmu/mmu.c kvm_handle_error_pfn(): -EFAULT with kvm_mmu_prepare_memory_fault_exit(); ' +
      'api.rst KVM_CAP_MEMORY_FAULT_INFO; mmu_stress_test.c expects EFAULT after mprotect(PROT_READ)',
  },
  {
    id: 'gmem-faults-via-hva',
    statement:
      'guest faults on a KVM_MEM_GUEST_MEMFD slot are always served through its userspace_addr, even when the ' +
      'guest_memfd was created with GUEST_MEMFD_FLAG_MMAP (and INIT_SHARED); guest_memfd contents are never ' +
      'what the guest sees',
    upstream:
      'Linux 6.18 kvm_gmem_bind() marks a slot of an MMAP guest_memfd KVM_MEMSLOT_GMEM_ONLY, and x86 ' +
      'kvm_mmu_faultin_pfn() serves its faults with kvm_gmem_get_pfn()',
  },
  {
    id: 'single-address-space',
    statement:
      'the VM has one memslot address space (no SMM): KVM_CAP_MULTI_ADDRESS_SPACE reports 0 and every slot or ' +
      'dirty-log call with address space 1 is EINVAL',
    upstream: 'x86 with CONFIG_KVM_SMM: KVM_ADDRESS_SPACE_NUM = 2, KVM_CAP_MULTI_ADDRESS_SPACE = 2',
  },
] as const;

export type DeviationId = (typeof PLATFORM_DEVIATIONS)[number]['id'];
export const DEVIATION_IDS: readonly DeviationId[] = PLATFORM_DEVIATIONS.map((d) => d.id);

/** Whether the platform this run models has the deviation (`config` is a ModelConfig). */
export const deviates = (config: { readonly platform?: readonly DeviationId[] }, id: DeviationId): boolean =>
  config.platform?.includes(id) === true;
