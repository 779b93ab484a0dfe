// How KVM_RUN leaves kvm_run behind (api.rst 5, "The kvm_run structure"; UPSTREAM.md for the
// KVM_EXIT_MEMORY_FAULT contract). kvm_run persists between calls, so every rule here says exactly
// which fields a run writes and which it leaves as they were.
import { KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_EXIT_UNKNOWN, KVM_MEMORY_EXIT_FLAG_PRIVATE, PAGE_SIZE } from './abi.js';
import { copyRun, type KvmRunState, type Outcome } from './outcomes.js';
import {
  KVM_MEMFAULT_REASON_ABSENT_MAPPING,
  KVM_MEMFAULT_REASON_UNKNOWN,
  KVM_MEMORY_EXIT_FLAG_USERFAULT,
  memoryFaultExitReason,
} from './series-abi.js';
import { seriesOn } from './series.js';
import type { SpecState } from './state.js';

/**
 * arm64 resets exit_reason to KVM_EXIT_UNKNOWN on entry to KVM_RUN; upstream x86 leaves it as it
 * was. memfault-2023 (OQ-12, INV-15, favoured) resets it on every architecture.
 */
export function enterRun(state: SpecState, run: KvmRunState): void {
  const reset =
    state.arch === 'arm64' || (seriesOn(state.config, 'memfault-2023') && state.config.options.resetExitReasonOnEntry);
  if (reset) run.exitReason = KVM_EXIT_UNKNOWN;
}

/** The guest finished its access and halted. The union is not written. */
export function exitHalt(run: KvmRunState, value?: bigint): Outcome {
  run.exitReason = KVM_EXIT_HLT;
  return { kind: 'run', rc: 0, run: copyRun(run), ...(value === undefined ? {} : { value }) };
}

/** KVM_EXIT_MMIO: rc 0, the union holds the fragment; data only matters for writes. */
export function exitMmio(run: KvmRunState, physAddr: number, len: number, isWrite: boolean, data: bigint): Outcome {
  run.exitReason = KVM_EXIT_MMIO;
  run.payload = { kind: 'mmio', physAddr, len, isWrite, data: isWrite ? data : 0n };
  return { kind: 'run', rc: 0, run: copyRun(run) };
}

/** Why the guest's access could not be served. */
export type FaultCause =
  /**
   * The host could not provide the page behind the hva (an error pfn): no VMA, a protection that
   * forbids the access, or (fast-only GUP on an exit-on-missing slot) no present PTE. `mappingSize`
   * is arm64's vma_pagesize for OQ-11.
   */
  | { kind: 'hva'; why: 'no-vma' | 'protection' | 'missing'; fastOnly: boolean; mappingSize: number }
  /** userfault: the page's bit is set in the userfault bitmap of a USERFAULT slot. */
  | { kind: 'userfault'; private: boolean }
  /** gmem-private: the access's private/shared kind does not match the gfn's attribute or slot. */
  | { kind: 'private'; private: boolean };

/**
 * A memory-fault exit, or a bare -EFAULT where the rules say KVM writes nothing.
 *  - upstream: x86 annotates every error pfn (kvm_handle_error_pfn -> kvm_prepare_memory_fault_exit):
 *    flags 0 for a shared access, gpa the 4 KiB page, size PAGE_SIZE; arm64 user_mem_abort returns
 *    a bare -EFAULT (INV-14, INV-17, INV-20; private_mem_kvm_exits_test.c checks the x86 fields);
 *  - exit-on-missing: every fast-GUP failure on a fast-only slot exits, the same on both
 *    architectures (INV-18);
 *  - userfault: flags USERFAULT (UPSTREAM.md), both architectures; gmem-private: flags PRIVATE for
 *    a private access (private_mem_kvm_exits_test.c);
 *  - memfault-2023: exit 38; OQ-1 return code, OQ-2 opt-in gate (x86), OQ-3 reason bits, OQ-6
 *    arm64 annotating everything, OQ-11 length.
 */
export function exitMemoryFault(state: SpecState, run: KvmRunState, gpa: number, cause: FaultCause): Outcome {
  const m2023 = seriesOn(state.config, 'memfault-2023');
  const o = state.config.options;
  let annotate = true;
  let flags = 0;
  let size = PAGE_SIZE;
  if (cause.kind === 'userfault')
    flags = KVM_MEMORY_EXIT_FLAG_USERFAULT | (cause.private ? KVM_MEMORY_EXIT_FLAG_PRIVATE : 0);
  if (cause.kind === 'private') flags = cause.private ? KVM_MEMORY_EXIT_FLAG_PRIVATE : 0;
  if (cause.kind === 'hva') {
    annotate = state.arch === 'x86' || cause.fastOnly || (m2023 && o.arm64MemfaultAll);
    // A reason is reported only when KVM knows it: ABSENT_MAPPING for a missing PTE, never guessed (BUG-10).
    const reason = cause.why === 'missing' ? KVM_MEMFAULT_REASON_ABSENT_MAPPING : KVM_MEMFAULT_REASON_UNKNOWN;
    if (m2023 && o.memfaultReasonFlags) flags = reason;
    if (m2023 && o.memfaultOptIn && state.arch === 'x86' && !(state.memfaultExitReasons & reason)) annotate = false;
    if (m2023 && o.memfaultLength === 'mapping' && state.arch === 'arm64') size = cause.mappingSize;
  }
  if (!annotate) return { kind: 'run', rc: -1, errno: 'EFAULT', run: copyRun(run) };
  run.exitReason = memoryFaultExitReason(state.config);
  run.payload = { kind: 'memoryFault', flags, gpa: gpa - (gpa % size), size };
  if (m2023 && o.memfaultReturn === 'zero') return { kind: 'run', rc: 0, run: copyRun(run) };
  return { kind: 'run', rc: -1, errno: 'EFAULT', run: copyRun(run) };
}
