// Named mutation points of the optimized engine. Each mutant re-creates one realistic bug: a BUG-n
// of ../shared/SPEC-DIGEST.md, or one of our own modelled on bugs KVM has had. The engine asks
// `mutation.on(...)` where the bug would be (grep for the name to find it). A mutant is either a row
// of MUTANT_TABLE below or, for a new one, declared with defineMutant() in the file of its
// injection site, so adding it touches one file; mutant-registry.ts collects both.
import type { Arch } from '../../model/abi.js';
import type { SeriesName, SeriesOptions } from '../../model/series.js';

export interface MutantInfo {
  readonly name: string;
  readonly description: string;
  /** BUG-n of SPEC-DIGEST.md, or "own" with the KVM area it imitates. */
  readonly source: string;
  /** Architectures whose code path contains the mutation point (both when absent). */
  readonly arches?: readonly Arch[];
  /** Invariant ids expected to catch it; test/ checks each property has a killer. */
  readonly killedBy: readonly string[];
  /** The proposed series whose code holds the mutation point; its campaign enables them (none: upstream). */
  readonly series?: readonly SeriesName[];
  /** Options its campaign sets, where the mutation point sits behind one (e.g. the fast unmap path). */
  readonly options?: Partial<SeriesOptions>;
}

export const MUTANT_TABLE = [
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
    description:
      'user_mem_abort turns ret 0 into 1 before "if (writable && !ret) mark_page_dirty", so a logged write fault is never marked',
    source: 'BUG-5 (S3/p11, missed in review)',
    arches: ['arm64'],
    series: ['memfault-2023'],
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
  // --- userfault (S0) ---
  {
    name: 'userfault-enable-skips-zap',
    description: 'turning KVM_MEM_USERFAULT on does not zap stage 2, so old mappings bypass the userfault bitmap',
    source: 'BUG-16',
    series: ['userfault'],
    killedBy: ['userfault-enable-zaps', 'differential'],
  },
  {
    name: 'block-while-userfault',
    description: 'faults on a USERFAULT slot may still install 2M/1G blocks, exposing pages never resolved',
    source: 'BUG-17',
    series: ['userfault'],
    killedBy: ['block-rules', 'differential'],
  },
  {
    name: 'userfault-disable-zaps',
    description: 'turning KVM_MEM_USERFAULT off zaps the slot although zapOnUserfaultDisable is off (v1 behaviour)',
    source: 'BUG-18 (OQ-7)',
    series: ['userfault'],
    killedBy: ['userfault-no-zap-on-disable'],
  },
  // --- gmem-private (S1) ---
  {
    name: 'rmp-convert-at-fault',
    description:
      'gmem pages become private in the RMP at fault (4K) instead of at allocation, and every freed page is converted back',
    source: 'BUG-22 (Isaku RFC v4 07/10)',
    arches: ['x86'],
    series: ['gmem-private'],
    killedBy: ['rmp-follows-allocation'],
  },
  {
    name: 'private-max-level-unclamped',
    description: 'a private fault maps at the folio size without clamping max_level to the RMP entry size',
    source: 'BUG-23',
    arches: ['x86'],
    series: ['gmem-private'],
    killedBy: ['private-max-level', 'leaf-justified'],
  },
  {
    name: 'attributes-skip-zap',
    description: 'KVM_SET_MEMORY_ATTRIBUTES changes private/shared without zapping the range',
    source: 'own (kvm_vm_set_mem_attributes without kvm_handle_gfn_range)',
    arches: ['x86'],
    series: ['gmem-private'],
    killedBy: ['leaf-justified', 'differential'],
  },
  // --- arm64-lock (S2) ---
  {
    name: 'arm-cap-flags-check-in-nisv-only',
    description: 'the "cap->flags must be 0" check moved into the NISV case, so other arm64 caps accept flags',
    source: 'BUG-24',
    arches: ['arm64'],
    series: ['arm64-lock'],
    killedBy: ['differential'],
  },
  {
    name: 'lock-accepts-unknown-bits',
    description: 'lock/unlock do not reject unknown bits in args[1]',
    source: 'BUG-25',
    arches: ['arm64'],
    series: ['arm64-lock'],
    killedBy: ['differential'],
  },
  {
    name: 'locked-logging-skips-wrprotect',
    description:
      'dirty logging enabled after a write lock leaves the pinned mappings writable, so writes are never logged',
    source: 'BUG-27',
    arches: ['arm64'],
    series: ['arm64-lock'],
    killedBy: ['dirty-no-lost-write', 'leaf-justified'],
  },
  {
    name: 'locked-slot-deletable',
    description: 'deleting or moving a locked memslot succeeds (implicit unlock)',
    source: 'BUG-28 (INV-28)',
    arches: ['arm64'],
    series: ['arm64-lock'],
    killedBy: ['differential'],
  },
  {
    name: 'unlock-unmaps',
    description: 'unlocking a memslot unmaps its stage-2 entries instead of only unpinning',
    source: 'BUG-28 (INV-29)',
    arches: ['arm64'],
    series: ['arm64-lock'],
    killedBy: ['lock-unlock-keeps-stage2'],
  },
  {
    name: 'lock-skips-premap',
    description: 'locking pins the pages but does not pre-map the IPA range at stage 2',
    source: 'own (INV-31: SPE must never take a stage-2 fault)',
    arches: ['arm64'],
    series: ['arm64-lock'],
    killedBy: ['locked-means-mapped'],
  },
  {
    name: 'lock-perms-restrict-guest',
    description: 'a guest write to a read-locked RW slot is treated as MMIO: lock flags used as guest permissions',
    source: 'own (INV-30)',
    arches: ['arm64'],
    series: ['arm64-lock'],
    killedBy: ['differential'],
  },
  // --- memfault-2023 and exit-on-missing (S3) ---
  {
    name: 'memfault-reasons-logical-not',
    description: 'kvm_memfault_exit_flags_valid tests reasons & !valid_flags (always 0): unknown reason bits accepted',
    source: 'BUG-1 (S3/p04, missed in review)',
    arches: ['x86'],
    series: ['memfault-2023'],
    killedBy: ['differential'],
  },
  {
    name: 'memfault-cap-generic',
    description: 'cap 227 handled in generic code without the check-extension guard, so arm64 accepts it',
    source: 'BUG-29 (S3/p04, Isaku)',
    arches: ['arm64'],
    series: ['memfault-2023'],
    killedBy: ['differential'],
  },
  {
    name: 'memfault-guesses-absent',
    description: 'every error pfn on a fast-only slot is reported as ABSENT_MAPPING, PROT_NONE and no-VMA included',
    source: 'BUG-10 (S3/p10)',
    series: ['memfault-2023', 'exit-on-missing'],
    options: { memfaultReasonFlags: true },
    killedBy: ['differential'],
  },
  {
    name: 'fast-gup-ro-pin-writable',
    description: 'a read fault that fast GUP pinned read-only is mapped writable at stage 2',
    source: 'BUG-33 (S3/p03 risk)',
    series: ['exit-on-missing'],
    killedBy: ['leaf-justified'],
  },
  {
    name: 'memfault-exit-swallowed',
    description: 'the fast-only exit path returns 1 (resume) instead of 0, so the guest re-faults for ever',
    source: 'BUG-6 (S3/p11, p12)',
    arches: ['arm64'],
    series: ['exit-on-missing'],
    killedBy: ['differential'],
  },
  {
    name: 'demand-paging-eexist-kills-reader',
    description: 'a uffd reader treats EEXIST from UFFDIO_COPY as an error and exits',
    source: 'BUG-19 (S3/p01, p14)',
    series: ['exit-on-missing'],
    killedBy: ['uffd-liveness', 'uffd-protocol'],
  },
  {
    name: 'demand-paging-dontwake-without-wake',
    description: 'a reader resolves with UFFDIO_COPY(DONTWAKE) and never issues UFFDIO_WAKE',
    source: 'BUG-20 (S3/p14)',
    series: ['exit-on-missing'],
    killedBy: ['uffd-liveness'],
  },
  {
    name: 'demand-paging-populate-fallback-dead',
    description: 'ready_page compares the return value with EEXIST, so the MADV_POPULATE_WRITE fallback never runs',
    source: 'BUG-21 (S3/p14)',
    series: ['exit-on-missing'],
    killedBy: ['uffd-liveness'],
  },
  {
    name: 'uffd-copy-overwrites-present',
    description: 'UFFDIO_COPY onto a present page overwrites it instead of failing with EEXIST',
    source: 'own (INV-36, mfill_atomic_pte_copy)',
    series: ['exit-on-missing'],
    killedBy: ['uffd-protocol', 'differential'],
  },
  // --- arm64-unmap (S4) ---
  {
    name: 'fast-unmap-get-page-after-break',
    description:
      'the fast unmap path takes its reference on the PTE page after stage2_try_break_pte, when it may already be freed',
    source: 'BUG-11 (S4, Oliver 03-29)',
    arches: ['arm64'],
    series: ['arm64-unmap'],
    options: { unmapStrategy: 'fast-disconnect' },
    killedBy: ['pgtable-refcount'],
  },
  {
    name: 'fast-unmap-skips-cmo',
    description: 'the fast unmap path frees the disconnected subtree without cleaning its pages to PoC',
    source: 'BUG-12 (S4)',
    arches: ['arm64'],
    series: ['arm64-unmap'],
    options: { unmapStrategy: 'fast-disconnect' },
    killedBy: ['cmo-coverage'],
  },
  {
    name: 'fast-unmap-leaks-subtree',
    description: 'the fast unmap path disconnects the subtree but never frees its table pages',
    source: 'own (INV-6: fast == slow)',
    arches: ['arm64'],
    series: ['arm64-unmap'],
    options: { unmapStrategy: 'fast-disconnect' },
    killedBy: ['fast-equals-slow'],
  },
  {
    name: 'deferred-tlbi-before-pte',
    description: 'the deferred range TLBI is issued before the walk invalidates the PTEs',
    source: 'BUG-13 (S4, TLBI before PTE)',
    arches: ['arm64'],
    series: ['arm64-unmap'],
    killedBy: ['unmap-ordering', 'tlb-coherent'],
  },
  {
    name: 'deferred-tlbi-no-dsb',
    description: 'the deferred range TLBI is never completed with a DSB before the unmap returns',
    source: 'BUG-13 (S4, TLBI not completed)',
    arches: ['arm64'],
    series: ['arm64-unmap'],
    killedBy: ['unmap-ordering', 'tlb-coherent'],
  },
  {
    name: 'cmo-before-tlbi-complete',
    description: 'CMOs for the unmapped pages run before the range TLBI has completed',
    source: 'BUG-13 (S4, CMO before TLBI completion)',
    arches: ['arm64'],
    series: ['arm64-unmap'],
    killedBy: ['unmap-ordering'],
  },
  {
    name: 'range-tlbi-without-feature',
    description: 'a range TLBI is used although FEAT_TLBIRANGE is absent (it would be an undefined instruction)',
    source: 'own (INV-7)',
    arches: ['arm64'],
    series: ['arm64-unmap'],
    options: { tlbiRange: false },
    killedBy: ['tlbi-choice'],
  },
] as const satisfies readonly MutantInfo[];

/** The table's names: what `mutation.on` accepts as a string, so a misspelt name does not compile. */
export type TableMutantName = (typeof MUTANT_TABLE)[number]['name'];
/** Any mutant's name, table or declared (validated against mutant-registry.ts at the input boundary). */
export type MutantName = string;

const declared: MutantInfo[] = [];

/** Declare a mutant in the file of its injection site; pass the returned object to `mutation.on`. */
export function defineMutant<const M extends MutantInfo>(info: M): M {
  if (declared.some((m) => m.name === info.name) || MUTANT_TABLE.some((m) => m.name === info.name))
    throw new Error(`engine bug: mutant ${info.name} declared twice`);
  declared.push(info);
  return info;
}

/** The declared mutants loaded so far (mutant-registry.ts loads the whole engine first). */
export const declaredMutants = (): readonly MutantInfo[] => declared;

/** The engine's view of which mutant, if any, is active. */
export class Mutation {
  constructor(readonly active: MutantName | null = null) {}
  on(mutant: TableMutantName | MutantInfo): boolean {
    return this.active === (typeof mutant === 'string' ? mutant : mutant.name);
  }
}
