// What a VMM observes after a command. Backends are compared on these values only (DESIGN.md,
// "Observable equality"), never on internal structure. Upstream vocabulary: it knows no series;
// how outcomes are compared and printed (a series' exit numbers included) is model/observable.ts.
import type { Errno } from './abi.js';

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
