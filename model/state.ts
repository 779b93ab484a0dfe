// The whole spec state: plain data, no page tables, no TLBs (DESIGN.md, "model/").
import { NR_VCPUS, KVM_EXIT_UNKNOWN, type Arch } from './abi.js';
import type { HostMm } from './host-mm.js';
import { newHostMm } from './host-mm.js';
import type { Memory } from './memory.js';
import type { KvmRunState } from './outcomes.js';

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
}

export interface GmemFile {
  size: number;
  flags: number;
  /** File page -> contents; an absent page is a hole and reads as zero. */
  memory: Memory;
}

export interface SpecState {
  arch: Arch;
  /** args[0] last accepted for KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (0 = classic get-and-clear). */
  manualDirtyLog: number;
  slots: Memslot[];
  mm: HostMm;
  gmems: GmemFile[];
  /** One kvm_run per vCPU; it persists between KVM_RUN calls. */
  vcpus: KvmRunState[];
}

export function newSpecState(arch: Arch): SpecState {
  return {
    arch,
    manualDirtyLog: 0,
    slots: [],
    mm: newHostMm(),
    gmems: [],
    vcpus: Array.from({ length: NR_VCPUS }, () => ({ exitReason: KVM_EXIT_UNKNOWN, payload: { kind: 'none' as const } })),
  };
}

export const slotEndGfn = (s: Memslot): number => s.baseGfn + s.npages;
