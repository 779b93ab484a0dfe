// struct kvm of the engine: everything one VM owns. The behaviour lives in the files named after
// the kernel code they imitate (fault.ts, vcpu-run.ts, notifier.ts, dirty.ts, memslot-ioctl.ts).
import { NR_VCPUS, KVM_EXIT_UNKNOWN, type Arch } from '../../model/abi.js';
import type { HostCommand } from '../../model/commands.js';
import type { KvmRunState, Outcome } from '../../model/outcomes.js';
import { SimHostMm } from './host-mm.js';
import { MemslotIndex } from './memslots.js';
import { Mutation, type MutantName } from './mutants.js';
import { MmuOps } from './ops.js';
import type { TablePage } from './pgtable.js';
import { PhysMem } from './phys.js';
import { Tlb } from './tlb.js';

export interface EngineGmem {
  readonly size: number;
  readonly flags: number;
  /** File page -> pfn of its folio (order 0). */
  readonly pages: Map<number, number>;
}

export interface Kvm {
  readonly arch: Arch;
  readonly mutation: Mutation;
  readonly phys: PhysMem;
  readonly host: SimHostMm;
  readonly memslots: MemslotIndex;
  readonly tlbs: Tlb[];
  readonly ops: MmuOps;
  /** Stage-2 root for address space 0 (the only one guest accesses use). */
  readonly root: TablePage;
  readonly runs: KvmRunState[];
  /** Internal bookkeeping for the stale-payload check: KVM_RUN count, and when each payload was written. */
  runSerial: number;
  readonly payloadWrittenInRun: number[];
  mmuInvalidateSeq: number;
  mmuInvalidateInProgress: number;
  manualDirtyLog: number;
  readonly gmems: EngineGmem[];
  /** A host command waiting to run inside the next fault's race window. */
  pendingRace: { host: HostCommand; outcome?: Outcome } | null;
}

export function createKvm(arch: Arch, mutant: MutantName | null): Kvm {
  const mutation = new Mutation(mutant);
  const phys = new PhysMem();
  const tlbs = Array.from({ length: NR_VCPUS }, () => new Tlb());
  const ops = new MmuOps(tlbs, mutation);
  return {
    arch, mutation, phys, tlbs, ops,
    host: new SimHostMm(phys),
    memslots: new MemslotIndex(NR_VCPUS, mutation),
    root: ops.allocTable(0),
    runs: Array.from({ length: NR_VCPUS }, () => ({ exitReason: KVM_EXIT_UNKNOWN, payload: { kind: 'none' as const } })),
    runSerial: 0,
    payloadWrittenInRun: Array.from({ length: NR_VCPUS }, () => -1),
    mmuInvalidateSeq: 0,
    mmuInvalidateInProgress: 0,
    manualDirtyLog: 0,
    gmems: [],
    pendingRace: null,
  };
}
