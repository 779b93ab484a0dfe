// Named mutation points of the optimized engine. Each mutant re-creates one realistic bug: a BUG-n
// of ../shared/SPEC-DIGEST.md, or one of our own modelled on bugs KVM has had. The engine asks
// `mutation.on(name)` at exactly one place per mutant (grep for the name to find it).
import type { Arch } from '../../model/abi.js';

export interface MutantInfo {
  readonly name: string;
  readonly description: string;
  /** BUG-n of SPEC-DIGEST.md, or "own" with the KVM area it imitates. */
  readonly source: string;
  /** Architectures whose code path contains the mutation point (both when absent). */
  readonly arches?: readonly Arch[];
  /** Invariant ids expected to catch it; test/ checks each property has a killer. */
  readonly killedBy: readonly string[];
}

export const MUTANTS = [
  {
    name: 'unmap-skips-tlbi',
    description: 'stage-2 unmap clears the PTE but never invalidates the TLB entry for it',
    source: 'BUG-13 (TLBI missing before return)',
    killedBy: ['tlb-coherent', 'differential'],
  },
  {
    name: 'tlbi-skips-other-vcpus',
    description: 'TLB invalidation reaches only vCPU 0 instead of being broadcast to every vCPU',
    source: 'own (kvm_flush_remote_tlbs without the IPI to other vCPUs)',
    killedBy: ['tlb-coherent', 'differential'],
  },
  {
    name: 'wrprotect-skips-tlbi',
    description: 'write protection for dirty logging drops W from the PTE but leaves writable TLB entries',
    source: 'own (kvm_arch_mmu_enable_log_dirty_pt_masked without the flush)',
    killedBy: ['tlb-coherent', 'dirty-no-lost-write'],
  },
  {
    name: 'notifier-first-alias-only',
    description: 'the MMU notifier unmaps only the first memslot found for an hva range, missing aliases',
    source: 'own (kvm_handle_hva_range stopping at the first slot)',
    killedBy: ['leaf-justified', 'differential'],
  },
  {
    name: 'fault-ignores-mmu-seq',
    description: 'the fault path installs its pfn without checking mmu_invalidate_seq after a racing invalidation',
    source: 'own (INV-40: missing mmu_invalidate_retry)',
    killedBy: ['leaf-justified', 'differential'],
  },
  {
    name: 'slot-cache-ignores-generation',
    description: "the per-vCPU last-used-slot cache is trusted after the memslots' generation changed",
    source: 'own (kvm_vcpu_gfn_to_memslot with a stale vcpu->last_used_slot)',
    killedBy: ['differential'],
  },
  {
    name: 'block-while-logging',
    description: 'faults on a dirty-logged slot may still install 2M/1G block mappings',
    source: 'BUG-17',
    killedBy: ['block-rules', 'dirty-no-lost-write'],
  },
  {
    name: 'block-ignores-alignment',
    description: 'a block mapping is chosen without checking that gpa and hva agree modulo the block size',
    source: 'own (fault_supports_stage2_huge_mapping alignment check)',
    killedBy: ['block-rules', 'leaf-justified'],
  },
  {
    name: 'block-crosses-slot-end',
    description: 'a block mapping is chosen without checking that the block lies inside the memslot',
    source: 'own (fault_supports_stage2_huge_mapping bounds check)',
    killedBy: ['block-rules', 'leaf-justified'],
  },
  {
    name: 'dirty-bit-lost-on-fault',
    description: 'a write fault on a logged slot maps the page writable without mark_page_dirty (ret fixed up too early)',
    source: 'BUG-5',
    killedBy: ['dirty-no-lost-write', 'differential'],
  },
  {
    name: 'get-dirty-log-skips-wrprotect',
    description: 'classic KVM_GET_DIRTY_LOG clears the bits it reports without write-protecting those pages',
    source: 'own (kvm_get_dirty_log_protect without the protect)',
    killedBy: ['dirty-no-lost-write', 'leaf-justified'],
  },
  {
    name: 'readonly-slot-mapped-writable',
    description: 'a READONLY memslot is mapped writable on a read fault, so later writes reach memory',
    source: 'own (map_writable ignoring KVM_MEM_READONLY)',
    killedBy: ['readonly-no-write', 'leaf-justified'],
  },
  {
    name: 'memfault-bare-efault',
    description: 'a write to a host read-only mapping returns -EFAULT without filling kvm_run.memory_fault',
    source: 'BUG-7 / INV-17',
    arches: ['x86'],
    killedBy: ['memfault-contract', 'differential'],
  },
  {
    name: 'memfault-size-in-pages',
    description: 'memory_fault.size is KVM_PAGES_PER_HPAGE(level), a page count, not bytes',
    source: 'BUG-3',
    arches: ['x86'],
    killedBy: ['memfault-contract', 'differential'],
  },
  {
    name: 'memfault-errno-eperm',
    description: 'the memory-fault exit path returns -1 (EPERM) instead of -EFAULT',
    source: 'BUG-2',
    arches: ['x86'],
    killedBy: ['memfault-contract', 'differential'],
  },
  {
    name: 'split-without-bbm',
    description: 'splitting a block for dirty logging writes the new table over the valid block (no break-before-make)',
    source: 'own (INV-3 ordering; stage2_split_walker)',
    killedBy: ['bbm', 'tlb-coherent'],
  },
  {
    name: 'unmap-leaks-table-ref',
    description: 'unmapping a leaf does not drop the reference it held on its table page',
    source: 'own (INV-5; missing mm_ops->put_page in stage2_unmap_walker)',
    killedBy: ['pgtable-refcount'],
  },
  {
    name: 'table-freed-while-linked',
    description: 'an emptied table page is freed before its parent entry is cleared',
    source: 'BUG-11 analogue (INV-5 table-page lifetime)',
    killedBy: ['pgtable-refcount'],
  },
] as const satisfies readonly MutantInfo[];

export type MutantName = (typeof MUTANTS)[number]['name'];
export const MUTANT_NAMES: readonly MutantName[] = MUTANTS.map((m) => m.name);

export function isMutantName(name: string): name is MutantName {
  return (MUTANT_NAMES as readonly string[]).includes(name);
}

export function mutantInfo(name: MutantName): MutantInfo {
  return MUTANTS.find((m) => m.name === name)!;
}

/** The engine's view of which mutant, if any, is active. */
export class Mutation {
  constructor(readonly active: MutantName | null = null) {}
  on(name: MutantName): boolean {
    return this.active === name;
  }
}
