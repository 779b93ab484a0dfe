// How KVM_RUN leaves kvm_run behind (api.rst 5, "The kvm_run structure"; UPSTREAM.md for the
// KVM_EXIT_MEMORY_FAULT contract). kvm_run persists between calls, so every rule here says exactly
// which fields a run writes and which it leaves as they were.
import { KVM_EXIT_HLT, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, KVM_EXIT_UNKNOWN, PAGE_SIZE, type Arch } from './abi.js';
import { copyRun, type KvmRunState, type Outcome } from './outcomes.js';

/** arm64 resets exit_reason to KVM_EXIT_UNKNOWN on entry to KVM_RUN; x86 leaves it as it was. */
export function enterRun(arch: Arch, run: KvmRunState): void {
  if (arch === 'arm64') run.exitReason = KVM_EXIT_UNKNOWN;
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

/**
 * The host could not provide the page behind gpa. x86 annotates every such -EFAULT
 * (kvm_handle_error_pfn -> kvm_prepare_memory_fault_exit): exit_reason MEMORY_FAULT, flags 0 for a
 * shared access, gpa the 4 KiB page, size PAGE_SIZE (private_mem_kvm_exits_test.c checks the same
 * fields). arm64 user_mem_abort returns a bare -EFAULT and writes nothing. (INV-14, INV-17, INV-20)
 */
export function exitMemoryFault(arch: Arch, run: KvmRunState, gpa: number): Outcome {
  if (arch === 'x86') {
    run.exitReason = KVM_EXIT_MEMORY_FAULT;
    run.payload = { kind: 'memoryFault', flags: 0, gpa: gpa - (gpa % PAGE_SIZE), size: PAGE_SIZE };
  }
  return { kind: 'run', rc: -1, errno: 'EFAULT', run: copyRun(run) };
}
