// struct kvm of the engine: everything one VM owns. The behaviour lives in the files named after
// the kernel code they imitate (fault.ts, vcpu-run.ts, notifier.ts, dirty.ts, memslot-ioctl.ts).
import { NR_VCPUS, KVM_EXIT_UNKNOWN, type Arch } from '../../model/abi.js';
import type { KvmRunState } from '../../model/outcomes.js';
import { deviates } from '../../model/platform.js';
import { UPSTREAM_CONFIG, seriesOn, type ModelConfig } from '../../model/series.js';
import type { EngineFinding } from './findings.js';
import { SimHostMm } from './host-mm.js';
import { MemslotIndex } from './memslots.js';
import { Mutation, type MutantName } from './mutants.js';
import { MmuOps } from './ops.js';
import type { TablePage } from './pgtable.js';
import { PhysMem } from './phys.js';
import { Mutex, RwLock, Srcu, type ThreadClock } from './steps.js';
import { StoreBuffer, memoryModelOf } from './store-buffer.js';
import { Tlb } from './tlb.js';

/** include/linux/kvm_host.h: "#define KVM_MEM_SLOTS_NUM SHRT_MAX". */
const KVM_MEM_SLOTS_NUM = 0x7fff;
/**
 * Memslots KVM keeps for itself: x86 has 3 (arch/x86/include/asm/kvm_host.h, "memory slots that are
 * not exposed to userspace": APIC access, identity map, TSS); arm64 defines none, so kvm_host.h's
 * default of 0 applies.
 */
const KVM_INTERNAL_MEM_SLOTS: Readonly<Record<Arch, number>> = { x86: 3, arm64: 0 };

/** KVM_USER_MEM_SLOTS: slot ids must stay below it, and KVM_CAP_NR_MEMSLOTS reports it. */
export const kvmUserMemSlots = (arch: Arch): number => KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS[arch];

/**
 * kvm_arch_nr_memslot_as_ids(): x86 with CONFIG_KVM_SMM has 2 (KVM_MAX_NR_ADDRESS_SPACES), arm64 1;
 * a platform without SMM (deviation single-address-space) has 1 on x86 too.
 */
export const kvmNrMemslotAsIds = (kvm: Kvm): number =>
  kvm.arch === 'x86' && !deviates(kvm.config, 'single-address-space') ? 2 : 1;

export interface EngineGmem {
  readonly size: number;
  readonly flags: number;
  /** File page -> pfn backing it. */
  readonly pages: Map<number, number>;
  /** File page -> order of the folio it was allocated in (0, or 9 for a 2 MiB folio under gmem-private). */
  readonly orders: Map<number, number>;
}

/** gmem-private: one RMP entry per pfn (SEV-SNP reverse map), tied to physical allocation (INV-32). */
export interface RmpEntry {
  assigned: boolean /** 3 = 4 KiB entry, 2 = part of a 2 MiB entry. */;
  level: 2 | 3;
}

export interface Kvm {
  readonly arch: Arch;
  /** Enabled series and open-question options (model/series.ts). */
  readonly config: ModelConfig;
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
  /** Which thread runs engine code now (steps.ts), and the locks threads own. */
  readonly thread: ThreadClock;
  /** Faults take it for read, everything else for write (steps.ts RwLock). */
  readonly mmuLock: RwLock;
  readonly slotsLock: Mutex;
  /** guest_memfd's filemap_invalidate_lock (one for every file: stricter than the kernel's per-inode lock). */
  readonly gmemInvalidateLock: Mutex;
  readonly srcu: Srcu;
  /** The threads' store buffers (store-buffer.ts): the userfault bitmap and the VMM's page data. */
  readonly storeBuffer: StoreBuffer;
  /**
   * userfault-bit-load-without-acquire: a vCPU's read of a page satisfied before the fault's bit
   * load (userfault.ts), per vCPU; KVM_RUN uses it for that gfn and drops it.
   */
  readonly userfaultEarlyLoads: Map<number, { gfn: number; bytes: number[] }>;
  manualDirtyLog: number;
  readonly gmems: EngineGmem[];
  /** memfault-2023: kvm->memfault_exit_reasons. */
  memfaultExitReasons: number;
  /** arm64-lock: locked slot ids and whether the lock allows writes. */
  readonly locked: Map<number, { write: boolean }>;
  /** gmem-private: private gfns (memory attributes) and the RMP, keyed by pfn. */
  readonly privateGfns: Set<number>;
  readonly rmp: Map<number, RmpEntry>;
  /** The engine's self-check findings during a command (fast != slow unmap), taken after it. */
  findings: EngineFinding[];
}

export function createKvm(arch: Arch, mutant: MutantName | null, config: ModelConfig = UPSTREAM_CONFIG): Kvm {
  const mutation = new Mutation(mutant);
  const phys = new PhysMem();
  const tlbs = Array.from({ length: NR_VCPUS }, () => new Tlb(mutation));
  const ops = new MmuOps(tlbs, mutation);
  const thread: ThreadClock = { current: -1 };
  const storeBuffer = new StoreBuffer(thread, memoryModelOf(arch));
  // S4: on arm64 an invalidating stage-2 PTE store reaches other vCPUs' table walks only when a DSB
  // (or the schedule) makes it visible.
  if (arch === 'arm64') ops.walkerStores = storeBuffer;
  return {
    arch,
    config,
    mutation,
    phys,
    tlbs,
    ops,
    host: new SimHostMm(phys, thread, seriesOn(config, 'userfault') ? storeBuffer : null),
    memslots: new MemslotIndex(NR_VCPUS, mutation),
    root: ops.allocTable(0),
    runs: Array.from({ length: NR_VCPUS }, () => ({
      exitReason: KVM_EXIT_UNKNOWN,
      payload: { kind: 'none' as const },
    })),
    runSerial: 0,
    payloadWrittenInRun: Array.from({ length: NR_VCPUS }, () => -1),
    mmuInvalidateSeq: 0,
    mmuInvalidateInProgress: 0,
    thread,
    mmuLock: new RwLock(thread, 'kvm->mmu_lock'),
    slotsLock: new Mutex(thread, 'kvm->slots_lock'),
    gmemInvalidateLock: new Mutex(thread, 'filemap_invalidate_lock'),
    srcu: new Srcu(thread),
    storeBuffer,
    userfaultEarlyLoads: new Map(),
    manualDirtyLog: 0,
    gmems: [],
    memfaultExitReasons: 0,
    locked: new Map(),
    privateGfns: new Set(),
    rmp: new Map(),
    findings: [],
  };
}
