// The command vocabulary shared by every backend. A command is what a VMM does: an ioctl, a change
// to its own address space, or one KVM_RUN in which the guest makes one memory access.
import { match } from 'ts-pattern';
import { hex } from './abi.js';

export type Prot = 'none' | 'r' | 'rw';
/** How the VMM backs an anonymous mapping: 4K pages only, transparent huge pages, or 1 GiB hugetlb. */
export type Backing = 'anon' | 'thp' | 'hugetlb1g';

export interface SetMemslot {
  kind: 'setMemslot';
  /** v1 = KVM_SET_USER_MEMORY_REGION, v2 = KVM_SET_USER_MEMORY_REGION2. */
  api: 'v1' | 'v2';
  slot: number;
  /** Address space id: bits 16..31 of the ioctl's slot field. */
  as: number;
  flags: number;
  gpa: number;
  size: number;
  hva: number;
  /** guest_memfd binding (v2 only): which gmem (by creation index) and the byte offset in it. */
  gmem?: { handle: number; offset: number };
}

export interface Mmap {
  kind: 'mmap';
  hva: number;
  size: number;
  prot: Prot;
  backing: Backing;
}
export interface Munmap {
  kind: 'munmap';
  hva: number;
  size: number;
}
export interface Mprotect {
  kind: 'mprotect';
  hva: number;
  size: number;
  prot: Prot;
}
export interface MadviseDontneed {
  kind: 'madviseDontneed';
  hva: number;
  size: number;
}
/** The VMM stores `len` bytes of `value` (little endian) at hva. */
export interface HostWrite {
  kind: 'hostWrite';
  hva: number;
  len: number;
  value: bigint;
}
export interface HostRead {
  kind: 'hostRead';
  hva: number;
  len: number;
}
export interface GmemCreate {
  kind: 'gmemCreate';
  size: number;
  flags: number;
}
export interface GmemPunchHole {
  kind: 'gmemPunchHole';
  handle: number;
  offset: number;
  len: number;
}

/** One KVM_RUN in which the guest does `mov` of `len` bytes (1..8) at gpa. */
export interface GuestAccess {
  kind: 'guestAccess';
  vcpu: number;
  gpa: number;
  len: number;
  write: boolean;
  value: bigint;
  /** gmem-private: the guest marks the access private (C-bit / shared bit clear). */
  private?: boolean;
}

export interface GetDirtyLog {
  kind: 'getDirtyLog';
  slot: number;
  as: number;
}
/** KVM_CLEAR_DIRTY_LOG with an all-ones bitmap over [firstPage, firstPage + numPages). */
export interface ClearDirtyLog {
  kind: 'clearDirtyLog';
  slot: number;
  as: number;
  firstPage: number;
  numPages: number;
}
export interface CheckExtension {
  kind: 'checkExtension';
  cap: number;
}
/** KVM_ENABLE_CAP on the VM fd; args[1..3] default to 0 (only the arm64 lock API reads them). */
export interface EnableCap {
  kind: 'enableCap';
  cap: number;
  flags: number;
  args0: number;
  args1?: number;
  args2?: number;
  args3?: number;
}
/** MADV_POPULATE_READ / MADV_POPULATE_WRITE: fault the range in as the VMM would touch it. */
export interface MadvisePopulate {
  kind: 'madvisePopulate';
  hva: number;
  size: number;
  write: boolean;
}
/** userfault: the VMM sets or clears bits [firstPage, firstPage + numPages) of a slot's userfault bitmap. */
export interface UserfaultBits {
  kind: 'userfaultBits';
  slot: number;
  as: number;
  firstPage: number;
  numPages: number;
  set: boolean;
}
/** gmem-private: KVM_SET_MEMORY_ATTRIBUTES. */
export interface SetMemoryAttributes {
  kind: 'setMemoryAttributes';
  gpa: number;
  size: number;
  attributes: number;
  flags: number;
}
/**
 * exit-on-missing: one demand-paging episode (S3/p01, p02, p14 demand_paging_test): the slot's hva
 * range is registered with userfaultfd MISSING, each vCPU touches its pages in order, `readers`
 * reader threads resolve UFFD_EVENT_PAGEFAULTs with UFFDIO_COPY(DONTWAKE) + UFFDIO_WAKE, and on a
 * fast-only slot the vCPU resolves its own memory-fault exits. `schedule` picks which runnable
 * thread takes each of the first steps; after it the threads run round-robin.
 */
export interface DemandPaging {
  kind: 'demandPaging';
  slot: number;
  vcpuPages: number[][];
  write: boolean;
  readers: number;
  schedule: number[];
}

export type HostCommand = Mmap | Munmap | Mprotect | MadviseDontneed | HostWrite;

/**
 * A guest access racing with a host change: the host command runs while the vCPU is inside the
 * fault handler, after it looked up the pfn and before it installs the mapping (the
 * mmu_invalidate_seq window, INV-40). The result must equal one of the two sequential orders.
 */
export interface RaceAccess {
  kind: 'raceAccess';
  access: GuestAccess;
  host: HostCommand;
}

export type Command =
  | SetMemslot
  | Mmap
  | Munmap
  | Mprotect
  | MadviseDontneed
  | HostWrite
  | HostRead
  | GmemCreate
  | GmemPunchHole
  | GuestAccess
  | GetDirtyLog
  | ClearDirtyLog
  | CheckExtension
  | EnableCap
  | RaceAccess
  | MadvisePopulate
  | UserfaultBits
  | SetMemoryAttributes
  | DemandPaging;

export type CommandKind = Command['kind'];

export const COMMAND_KINDS: readonly CommandKind[] = [
  'setMemslot',
  'mmap',
  'munmap',
  'mprotect',
  'madviseDontneed',
  'hostWrite',
  'hostRead',
  'gmemCreate',
  'gmemPunchHole',
  'guestAccess',
  'getDirtyLog',
  'clearDirtyLog',
  'checkExtension',
  'enableCap',
  'raceAccess',
  'madvisePopulate',
  'userfaultBits',
  'setMemoryAttributes',
  'demandPaging',
];

/** One line, in the style of the C call a VMM would make. */
export function formatCommand(cmd: Command): string {
  return match(cmd)
    .with({ kind: 'setMemslot' }, (c) => {
      const gmem = c.gmem ? ` gmem=#${c.gmem.handle}+${hex(c.gmem.offset)}` : '';
      return `set_memory_region_${c.api}(slot=${c.as}:${c.slot} flags=${hex(c.flags)} gpa=${hex(c.gpa)} size=${hex(c.size)} hva=${hex(c.hva)}${gmem})`;
    })
    .with({ kind: 'mmap' }, (c) => `mmap(hva=${hex(c.hva)} size=${hex(c.size)} prot=${c.prot} ${c.backing})`)
    .with({ kind: 'munmap' }, (c) => `munmap(hva=${hex(c.hva)} size=${hex(c.size)})`)
    .with({ kind: 'mprotect' }, (c) => `mprotect(hva=${hex(c.hva)} size=${hex(c.size)} prot=${c.prot})`)
    .with({ kind: 'madviseDontneed' }, (c) => `madvise(hva=${hex(c.hva)} size=${hex(c.size)} DONTNEED)`)
    .with({ kind: 'hostWrite' }, (c) => `host_write(hva=${hex(c.hva)} len=${c.len} value=${hex(c.value)})`)
    .with({ kind: 'hostRead' }, (c) => `host_read(hva=${hex(c.hva)} len=${c.len})`)
    .with({ kind: 'gmemCreate' }, (c) => `create_guest_memfd(size=${hex(c.size)} flags=${hex(c.flags)})`)
    .with({ kind: 'gmemPunchHole' }, (c) => `punch_hole(gmem=#${c.handle} offset=${hex(c.offset)} len=${hex(c.len)})`)
    .with({ kind: 'guestAccess' }, (c) => {
      const priv = c.private ? 'private ' : '';
      return c.write
        ? `vcpu${c.vcpu}: ${priv}write${c.len * 8}(gpa=${hex(c.gpa)}, ${hex(c.value)})`
        : `vcpu${c.vcpu}: ${priv}read${c.len * 8}(gpa=${hex(c.gpa)})`;
    })
    .with({ kind: 'getDirtyLog' }, (c) => `get_dirty_log(slot=${c.as}:${c.slot})`)
    .with(
      { kind: 'clearDirtyLog' },
      (c) => `clear_dirty_log(slot=${c.as}:${c.slot} first=${c.firstPage} num=${c.numPages})`,
    )
    .with({ kind: 'checkExtension' }, (c) => `check_extension(${c.cap})`)
    .with({ kind: 'enableCap' }, (c) => {
      const more =
        c.args1 || c.args2 || c.args3
          ? ` args1=${hex(c.args1 ?? 0)} args2=${hex(c.args2 ?? 0)} args3=${hex(c.args3 ?? 0)}`
          : '';
      return `enable_cap(${c.cap} flags=${hex(c.flags)} args0=${hex(c.args0)}${more})`;
    })
    .with(
      { kind: 'madvisePopulate' },
      (c) => `madvise(hva=${hex(c.hva)} size=${hex(c.size)} POPULATE_${c.write ? 'WRITE' : 'READ'})`,
    )
    .with(
      { kind: 'userfaultBits' },
      (c) =>
        `userfault_bitmap(slot=${c.as}:${c.slot}).${c.set ? 'set' : 'clear'}(first=${c.firstPage} num=${c.numPages})`,
    )
    .with(
      { kind: 'setMemoryAttributes' },
      (c) =>
        `set_memory_attributes(gpa=${hex(c.gpa)} size=${hex(c.size)} attrs=${hex(c.attributes)} flags=${hex(c.flags)})`,
    )
    .with({ kind: 'demandPaging' }, (c) => {
      const pages = c.vcpuPages.map((p, v) => `vcpu${v}:[${p.join(',')}]`).join(' ');
      return `demand_paging(slot=${c.slot} ${c.write ? 'write' : 'read'} ${pages} readers=${c.readers} schedule=[${c.schedule.join(',')}])`;
    })
    .with({ kind: 'raceAccess' }, (c) => `race{ ${formatCommand(c.access)} || ${formatCommand(c.host)} }`)
    .exhaustive();
}
