// The real kernel as a backend: a sequence of commands runs in one fresh VM of the helper, in one
// batch, and comes back as one result per command. Commands this backend cannot run are named
// with the reason, so campaigns leave them out and say so.
import { P, match } from 'ts-pattern';
import { KVM_CAP_MULTI_ADDRESS_SPACE, KVM_CAP_USER_MEMORY2, PAGE_SIZE, SZ_1G, type Arch } from '../../model/abi.js';
import type { Command } from '../../model/commands.js';
import type { SpecState } from '../../model/state.js';
import { episodeSlot } from '../../model/demand-paging.js';
import { touchesHarness } from './harness-window.js';
import { HelperProcess, probeMachine, type BatchOptions, type BatchResult, type MachineProbe } from './helper.js';
import {
  FLAG_MUTANT_DROP_READONLY,
  OP,
  decodeOutcome,
  encodeCommand,
  type KernelResult,
  type Request,
} from './protocol.js';

/** Why a command is left out for the kvm backend; the summary prints these. */
export const LEFT_OUT = {
  race: 'a race inside the fault handler (the mmu_invalidate_seq window) cannot be forced on a real kernel',
  series: 'proposed series are model-only (UPSTREAM.md): the kvm backend runs the upstream subset',
  hugetlb: 'no free 1 GiB hugetlb page on this machine (hugepages-1048576kB/free_hugepages = 0)',
  userfaultfd: 'userfaultfd is not available to this process',
  episodeSlot:
    'a demand-paging episode whose slot is not entirely private anonymous read-write memory: ' +
    'the spec refuses it by assumption, UFFDIO_REGISTER has its own rules (it accepts holes)',
  thp:
    'a demand-paging episode over transparent huge pages: whether the kernel allocates a huge page ' +
    '(and so which pages are missing) is its choice',
  harness:
    'it touches what the helper keeps for itself (harness slot 32000, gpa 0xf0000000-0xf01fffff, ' +
    'or host memory outside the 0x1000000000-0x7fffffffff window)',
} as const;
export type LeftOutReason = keyof typeof LEFT_OUT;

/** Mutants of the kvm backend's adaptor, proving kernel-agrees can fail (docs/INVARIANTS.md). */
export const KVM_MUTANT_INFO = [
  {
    name: 'kvm-adaptor-drops-readonly',
    description:
      'the helper passes memslot flags to the kernel without KVM_MEM_READONLY, ' +
      'so the kernel sees a writable slot the spec does not',
    source: 'own (a VMM or harness adaptor that loses a flag on the way to the ioctl)',
    killedBy: ['kernel-agrees'],
  },
] as const;
export const KVM_MUTANTS = KVM_MUTANT_INFO.map((m) => m.name);
export type KvmMutant = (typeof KVM_MUTANT_INFO)[number]['name'];

export interface KernelRun {
  readonly results: KernelResult[];
  /**
   * The helper died on command `at` (the sequence's index), how, and what it printed; `retried`:
   * it died in the first helper and again, on the same command or another, in a fresh one.
   */
  readonly died?: { at: number; how: string; stderr: string; retried: boolean };
}

export class KvmBackend {
  readonly arch: Arch = 'x86';
  private readonly helper: HelperProcess;
  sequences = 0;
  /** Helper deaths survived by running the sequence again in a fresh helper. */
  retries = 0;

  private constructor(
    readonly probe: MachineProbe,
    readonly mutant: KvmMutant | null,
  ) {
    this.helper = new HelperProcess();
  }

  /** The backend on this machine, or why it cannot run here (then it is skipped, never passed). */
  static open(mutant: KvmMutant | null = null): KvmBackend | { skipped: string } {
    const probe = probeMachine();
    if (!probe.usable) return { skipped: probe.reason ?? 'unknown' };
    if (!probe.caps.get(KVM_CAP_USER_MEMORY2))
      return { skipped: 'KVM_CAP_USER_MEMORY2 is not reported: the upstream spec needs KVM_SET_USER_MEMORY_REGION2' };
    return new KvmBackend(probe, mutant);
  }

  get restarts(): number {
    return this.helper.restarts;
  }

  /** Address spaces this kernel has (KVM_CAP_MULTI_ADDRESS_SPACE; 0 means 1). */
  get addressSpaces(): number {
    return Math.max(1, this.probe.caps.get(KVM_CAP_MULTI_ADDRESS_SPACE) ?? 1);
  }

  /** Whether 1 GiB hugetlb mappings can be made here (else the generator leaves them out). */
  get canHugetlb(): boolean {
    return this.probe.hugetlb1gFree > 0;
  }

  get canUserfaultfd(): boolean {
    return this.probe.userfaultfd;
  }

  /** Why this backend cannot run `cmd`, or null when it can. */
  leftOut(cmd: Command, spec?: SpecState): LeftOutReason | null {
    if (touchesHarness(cmd)) return 'harness';
    return match(cmd)
      .returnType<LeftOutReason | null>()
      .with({ kind: 'raceAccess' }, () => 'race')
      .with({ kind: 'userfaultBits' }, { kind: 'setMemoryAttributes' }, () => 'series')
      .with({ kind: 'demandPaging' }, (c) => this.episodeLeftOut(c, spec))
      .with({ kind: 'guestAccess' }, (c) => (c.private ? 'series' : null))
      .with({ kind: 'mmap' }, (c) =>
        c.backing === 'hugetlb1g' && this.probe.hugetlb1gFree < Math.ceil(c.size / SZ_1G) ? 'hugetlb' : null,
      )
      .with({ kind: P.union('munmap', 'mprotect', 'madviseDontneed', 'madvisePopulate') }, () => null)
      .with({ kind: P.union('hostWrite', 'hostRead', 'setMemslot', 'getDirtyLog', 'clearDirtyLog') }, () => null)
      .with({ kind: P.union('gmemCreate', 'gmemPunchHole', 'checkExtension', 'enableCap') }, () => null)
      .exhaustive();
  }

  /** The running helper's process id, for tests that kill it. */
  get helperPid(): number | undefined {
    return this.helper.pid;
  }

  private episodeLeftOut(c: Extract<Command, { kind: 'demandPaging' }>, spec?: SpecState): LeftOutReason | null {
    if (!this.canUserfaultfd) return 'userfaultfd';
    const slot = spec && episodeSlot(spec, c);
    if (!slot) return 'episodeSlot';
    const thp = spec.mm.vmas.some(
      (v) => v.backing === 'thp' && v.start < slot.hva + slot.npages * PAGE_SIZE && slot.hva < v.end,
    );
    return thp ? 'thp' : null;
  }

  /**
   * Run a whole sequence in a fresh VM. A helper that dies (a crash, or a kill from outside) takes
   * its VM with it, so the sequence is run once more from the start in a fresh helper; only a
   * second death is reported, and then it is the sequence's (the caller makes it a finding).
   */
  run(cmds: readonly Command[], runTimeoutMs = 2000): KernelRun {
    this.sequences++;
    const first = this.runOnce(cmds, runTimeoutMs);
    if (!first.died) return first;
    this.retries++;
    const again = this.runOnce(cmds, runTimeoutMs);
    return again.died ? { ...again, died: { ...again.died, retried: true } } : again;
  }

  private runOnce(cmds: readonly Command[], runTimeoutMs: number): KernelRun {
    const requests: Request[] = [{ op: OP.reset, a32: 0, args: [] }];
    /** The index of the request that answers for each command (its last). */
    const answers: number[] = [];
    for (const cmd of cmds) {
      const reqs = encodeCommand(cmd);
      if (!reqs) throw new Error(`kvm backend: no request for ${cmd.kind} (it should have been left out)`);
      requests.push(...reqs);
      answers.push(requests.length - 1);
    }
    const flags = this.mutant === 'kvm-adaptor-drops-readonly' ? FLAG_MUTANT_DROP_READONLY : 0;
    const batch = this.helper.runBatch(requests, { flags, runTimeoutMs, endsSequence: true });
    const reset = batch.responses[0];
    if (reset && reset.status !== 0) {
      return {
        results: [],
        died: {
          at: 0,
          how: `KVM_CREATE_VM or KVM_CREATE_VCPU failed with errno ${reset.err}`,
          stderr: '',
          retried: false,
        },
      };
    }
    const results: KernelResult[] = [];
    for (const [i, at] of answers.entries()) {
      const r = batch.responses[at];
      if (!r) break;
      results.push(decodeOutcome(cmds[i]!, r));
    }
    if (!batch.died) return { results };
    return { results, died: { ...batch.died, at: results.length, retried: false } };
  }

  /**
   * Requests already encoded (a concurrent case, src/kvm/concurrent.ts), on this backend's helper,
   * with this backend's adaptor mutant in force; no retry (the caller decides).
   */
  runRequests(requests: readonly Request[], options: Omit<BatchOptions, 'flags'> = {}): BatchResult {
    const flags = this.mutant === 'kvm-adaptor-drops-readonly' ? FLAG_MUTANT_DROP_READONLY : 0;
    return this.helper.runBatch(requests, { ...options, flags });
  }

  close(): void {
    this.helper.stop();
  }
}
