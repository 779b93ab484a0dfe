// What a VMM observes after a command. Backends are compared on these values only (DESIGN.md,
// "Observable equality"), never on internal structure.
import { match } from 'ts-pattern';
import { KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, hex, type Errno } from './abi.js';
import { KVM_EXIT_MEMORY_FAULT_2023 } from './series-abi.js';

/**
 * The kvm_run union is one piece of storage: writing one member overwrites the others, and it keeps
 * its contents across KVM_RUN calls. We record which member was written last, with its fields.
 */
export type RunPayload =
  | { kind: 'none' }
  | { kind: 'mmio'; physAddr: number; len: number; isWrite: boolean; data: bigint }
  | { kind: 'memoryFault'; flags: number; gpa: number; size: number };

/** kvm_run as it stands when KVM_RUN returns: exit_reason plus the union, both persistent. */
export interface KvmRunState {
  exitReason: number;
  payload: RunPayload;
}

/** A copy of kvm_run, so an outcome keeps what the run returned while the state moves on. */
export const copyRun = (run: KvmRunState): KvmRunState => ({ exitReason: run.exitReason, payload: { ...run.payload } });

/** JSON.stringify replacer: bigints (guest values) as hex strings, the form replay files use. */
export const bigintAsHex = (_key: string, v: unknown): unknown => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v);

export type Outcome =
  /** rc >= 0; `value` is the ioctl's return value where it has one (check_extension, a gmem handle). */
  | { kind: 'ok'; value?: number }
  | { kind: 'err'; errno: Errno }
  | { kind: 'hostData'; value: bigint }
  /** The VMM touched its own memory where it has no access: SIGSEGV. */
  | { kind: 'segv' }
  /** KVM_RUN: rc 0 or -1 with errno; kvm_run after the call; RAX when a guest read completed. */
  | { kind: 'run'; rc: 0 | -1; errno?: Errno; run: KvmRunState; value?: bigint }
  /**
   * KVM_GET_DIRTY_LOG: the set bits (slot-relative page numbers). A spec may list pages a kernel is
   * allowed, but not obliged, to report in `mayAlsoBeDirty` (x86 maps writable on read faults).
   */
  | { kind: 'dirtyLog'; dirty: number[]; mayAlsoBeDirty?: number[] }
  | { kind: 'race'; access: Outcome; host: Outcome }
  /**
   * A demand-paging episode (exit-on-missing): whether every vCPU finished, the value each read
   * returned (null for writes), and for an episode that did not finish, who was stuck where.
   */
  | { kind: 'episode'; completed: boolean; values: (bigint | null)[][]; stuck?: string };

/** KVM_EXIT_MEMORY_FAULT as merged (39) or as posted in 2023 (38, memfault-2023 series only). */
export const isMemoryFaultReason = (reason: number): boolean =>
  reason === KVM_EXIT_MEMORY_FAULT || reason === KVM_EXIT_MEMORY_FAULT_2023;

export function formatPayload(run: KvmRunState): string {
  return match(run.payload)
    .with({ kind: 'none' }, () => 'union untouched')
    .with(
      { kind: 'mmio' },
      (p) =>
        `mmio{phys=${hex(p.physAddr)} len=${p.len} write=${p.isWrite ? 1 : 0}${p.isWrite ? ` data=${hex(p.data)}` : ''}}`,
    )
    .with({ kind: 'memoryFault' }, (p) => `memory_fault{flags=${hex(p.flags)} gpa=${hex(p.gpa)} size=${hex(p.size)}}`)
    .exhaustive();
}

export function formatOutcome(o: Outcome): string {
  return match(o)
    .with({ kind: 'ok' }, (x) => (x.value === undefined ? 'ok' : `ok ${x.value}`))
    .with({ kind: 'err' }, (x) => `-${x.errno}`)
    .with({ kind: 'hostData' }, (x) => `data ${hex(x.value)}`)
    .with({ kind: 'segv' }, () => 'SIGSEGV')
    .with({ kind: 'run' }, (x) => {
      const rc = x.rc === 0 ? 'rc=0' : `rc=-1 errno=${x.errno}`;
      const reason = exitReasonName(x.run.exitReason);
      const valid = x.run.exitReason === KVM_EXIT_MMIO || isMemoryFaultReason(x.run.exitReason);
      const payload = valid ? ` ${formatPayload(x.run)}` : '';
      const value = x.value === undefined ? '' : ` rax=${hex(x.value)}`;
      return `${rc} exit=${reason}${payload}${value}`;
    })
    .with({ kind: 'dirtyLog' }, (x) => {
      const may = x.mayAlsoBeDirty && x.mayAlsoBeDirty.length > 0 ? ` (may also: [${x.mayAlsoBeDirty.join(',')}])` : '';
      return `dirty [${x.dirty.join(',')}]${may}`;
    })
    .with({ kind: 'race' }, (x) => `access: ${formatOutcome(x.access)} | host: ${formatOutcome(x.host)}`)
    .with({ kind: 'episode' }, (x) => {
      const reads = x.values
        .map((v, i) => `vcpu${i}:[${v.map((b) => (b === null ? 'w' : hex(b))).join(',')}]`)
        .join(' ');
      return x.completed ? `all vCPUs finished ${reads}` : `STUCK: ${x.stuck ?? 'no progress'}`;
    })
    .exhaustive();
}

const EXIT_NAMES: Record<number, string> = {
  0: 'UNKNOWN',
  5: 'HLT',
  6: 'MMIO',
  38: 'MEMORY_FAULT(38, 2023)',
  39: 'MEMORY_FAULT',
};
export const exitReasonName = (reason: number): string => EXIT_NAMES[reason] ?? String(reason);
