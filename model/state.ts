// The whole spec state: plain data, no page tables, no TLBs (DESIGN.md, "model/").
import { NR_VCPUS, KVM_EXIT_UNKNOWN, type Arch } from './abi.js';
import type { HostMm } from './host-mm.js';
import { newHostMm } from './host-mm.js';
import type { Memory } from './memory.js';
import type { KvmRunState } from './outcomes.js';
import { deviates } from './platform.js';
import { UPSTREAM_CONFIG, type ModelConfig } from './series.js';

export interface Memslot {
  as: number;
  id: number;
  flags: number;
  baseGfn: number;
  npages: number;
  /** userspace_addr: the hva of the slot's first page. */
  hva: number;
  /** guest_memfd binding: gmem handle and first file page. */
  gmem?: { handle: number; pgoff: number };
  /**
   * The dirty bitmap exists only while LOG_DIRTY_PAGES is set. `dirty` holds the pages KVM must
   * report; `mayBeDirty` those it may report without a guest write (see dirty-log.ts).
   */
  dirtyLog: { dirty: Set<number>; mayBeDirty: Set<number> } | null;
  /**
   * userfault series: the VMM's userfault bitmap (slot-relative pages whose bit is set) and, while
   * KVM_MEM_USERFAULT is on, the pages that may still have a stage-2 mapping (userfault.ts).
   */
  userfault?: { bits: Set<number>; mayBeMapped: Set<number> | null };
}

/**
 * arm64-lock series: a locked memslot's permissions; `intact` until the VMM changes its host range;
 * `writeMapped` until dirty logging write-protects the slot (the write guarantee ends there).
 */
export interface LockedSlot {
  write: boolean;
  intact: boolean;
  writeMapped: boolean;
}

export interface GmemFile {
  size: number;
  flags: number;
  /** File page -> contents; an absent page is a hole and reads as zero. */
  memory: Memory;
}

export interface SpecState {
  arch: Arch;
  /** Which proposed series are enabled, and the open-question options (series.ts). */
  config: ModelConfig;
  /** args[0] last accepted for KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (0 = classic get-and-clear). */
  manualDirtyLog: number;
  slots: Memslot[];
  mm: HostMm;
  gmems: GmemFile[];
  /** One kvm_run per vCPU; it persists between KVM_RUN calls. */
  vcpus: KvmRunState[];
  /** memfault-2023: args[0] last accepted for KVM_CAP_X86_MEMORY_FAULT_EXIT. */
  memfaultExitReasons: number;
  /** arm64-lock: locked memslot ids (address space 0). */
  locked: Map<number, LockedSlot>;
  /** gmem-private: gfns whose memory attribute is PRIVATE; every gfn starts shared. */
  privateGfns: Set<number>;
}

export function newSpecState(arch: Arch, config: ModelConfig = UPSTREAM_CONFIG): SpecState {
  return {
    arch,
    config,
    manualDirtyLog: 0,
    slots: [],
    mm: newHostMm(),
    gmems: [],
    vcpus: Array.from({ length: NR_VCPUS }, () => ({
      exitReason: KVM_EXIT_UNKNOWN,
      payload: { kind: 'none' as const },
    })),
    memfaultExitReasons: 0,
    locked: new Map(),
    privateGfns: new Set(),
  };
}

/**
 * A copy of the state that a race or ambiguity alternative may change without touching the
 * original (spec.ts, in-flight.ts). Hand-written because structuredClone serialises everything,
 * config included, and was a tenth of a campaign's time. Shared, not copied: `config` (readonly)
 * and the Vma objects (host-mm.ts replaces a Vma, never changes one); everything else is mutable
 * and copied: slots and their bitmaps, memory pages, presence, guest_memfds, kvm_runs, locks.
 */
export function cloneSpecState(state: SpecState): SpecState {
  return {
    arch: state.arch,
    config: state.config,
    manualDirtyLog: state.manualDirtyLog,
    slots: state.slots.map(cloneMemslot),
    mm: {
      vmas: [...state.mm.vmas],
      memory: cloneMemory(state.mm.memory),
      present: new Map(state.mm.present),
      gigantic: new Set(state.mm.gigantic),
    },
    gmems: state.gmems.map((f) => ({ size: f.size, flags: f.flags, memory: cloneMemory(f.memory) })),
    vcpus: state.vcpus.map((run) => ({ exitReason: run.exitReason, payload: { ...run.payload } })),
    memfaultExitReasons: state.memfaultExitReasons,
    locked: new Map([...state.locked].map(([id, lock]) => [id, { ...lock }])),
    privateGfns: new Set(state.privateGfns),
  };
}

function cloneMemslot(slot: Memslot): Memslot {
  const copy: Memslot = { ...slot };
  if (slot.gmem) copy.gmem = { ...slot.gmem };
  if (slot.dirtyLog)
    copy.dirtyLog = { dirty: new Set(slot.dirtyLog.dirty), mayBeDirty: new Set(slot.dirtyLog.mayBeDirty) };
  if (slot.userfault) {
    const { bits, mayBeMapped } = slot.userfault;
    copy.userfault = { bits: new Set(bits), mayBeMapped: mayBeMapped && new Set(mayBeMapped) };
  }
  return copy;
}

function cloneMemory(memory: Memory): Memory {
  const copy: Memory = new Map();
  for (const [page, data] of memory) copy.set(page, new Map(data));
  return copy;
}

export const slotEndGfn = (s: Memslot): number => s.baseGfn + s.npages;

/**
 * Number of memslot address spaces (KVM_ADDRESS_SPACE_NUM): x86 has the SMM address space, arm64
 * only one. A platform without SMM has one on x86 too (deviation single-address-space).
 */
export function nrAddressSpaces(state: SpecState): number {
  return state.arch === 'x86' && !deviates(state.config, 'single-address-space') ? 2 : 1;
}
