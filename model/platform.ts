// Platform deviations: ways a real kernel was measured to differ from upstream 6.18, recorded so
// the spec can apply them on that platform (docs/PLATFORMS.md). Each is off unless a platform
// profile (platforms/*.json) names it; every spec rule that reads one cites its id. The engine
// imitates the same kernel, so it reads them too.
import type { ModelConfig } from './series.js';

export const PLATFORM_DEVIATIONS = [
  {
    id: 'host-fault-as-mmio',
    statement: 'a guest access whose memslot hva the host cannot provide (no VMA, PROT_NONE, a write to a read-only mapping) exits KVM_EXIT_MMIO and is emulated, instead of failing with -EFAULT and a KVM_EXIT_MEMORY_FAULT payload',
    upstream: 'arch/x86/kvm/mmu/mmu.c kvm_handle_error_pfn(): -EFAULT with kvm_mmu_prepare_memory_fault_exit(); api.rst KVM_CAP_MEMORY_FAULT_INFO; mmu_stress_test.c expects EFAULT after mprotect(PROT_READ)',
  },
  {
    id: 'single-address-space',
    statement: 'the VM has one memslot address space (no SMM): KVM_CAP_MULTI_ADDRESS_SPACE reports 0 and every slot or dirty-log call with address space 1 is EINVAL',
    upstream: 'x86 with CONFIG_KVM_SMM: KVM_ADDRESS_SPACE_NUM = 2, KVM_CAP_MULTI_ADDRESS_SPACE = 2',
  },
] as const;

export type DeviationId = (typeof PLATFORM_DEVIATIONS)[number]['id'];
export const DEVIATION_IDS: readonly DeviationId[] = PLATFORM_DEVIATIONS.map((d) => d.id);

export const isDeviationId = (id: string): id is DeviationId => (DEVIATION_IDS as readonly string[]).includes(id);

/** Whether the platform this run models has the deviation. */
export const deviates = (config: ModelConfig, id: DeviationId): boolean => config.platform?.includes(id) === true;
