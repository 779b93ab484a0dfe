// The peer selftests' assertions (UPSTREAM.md "Peer test suite"), as table-driven cases: a command
// sequence and, for the steps a selftest asserts on, the outcome it expects. conformance/runner.ts
// runs each case against the spec and, where /dev/kvm exists, against the kernel.
import {
  GUEST_MEMFD_FLAG_INIT_SHARED,
  GUEST_MEMFD_FLAG_MMAP,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_EXIT_HLT,
  KVM_EXIT_MEMORY_FAULT,
  KVM_EXIT_MMIO,
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_MEMORY_EXIT_FLAG_PRIVATE,
  KVM_USER_MEM_SLOTS,
  SZ_2M,
  type Errno,
} from '../model/abi.js';
import type { Command, GuestAccess, SetMemslot } from '../model/commands.js';
import { KVM_MEMORY_ATTRIBUTE_PRIVATE } from '../model/series-abi.js';
import type { SeriesName } from '../model/series.js';

/** What a selftest asserts about one step; fields left out are not asserted. */
export type Expect =
  | { ok: true; value?: number }
  | { errno: Errno }
  | {
      run: {
        rc: 0 | -1;
        errno?: Errno;
        exitReason: number;
        value?: bigint;
        mmio?: { physAddr: number; isWrite: boolean };
        memoryFault?: { flags: number; gpa: number; size: number };
      };
    }
  | { hostData: bigint }
  | { dirty: number[] };

export interface ConformanceStep {
  cmd: Command;
  expect?: Expect;
}

export interface ConformanceCase {
  readonly name: string;
  /** The selftest and the assertion it makes. */
  readonly source: string;
  readonly steps: readonly ConformanceStep[];
  /** Series the case needs in the spec (and so cannot run on a real kernel). */
  readonly series?: readonly SeriesName[];
}

/** Assertions the tables do not encode, and why (reported as skipped by the suite). */
export const NOT_ENCODED: readonly { source: string; why: string }[] = [
  {
    source:
      "set_memory_region_test.c: a guest_memfd fd that is the kvm fd, the VM fd, a memfd or another VM's " +
      'guest_memfd is EINVAL',
    why:
      'commands name guest_memfds by creation handle; foreign fds are not in the command vocabulary (a missing ' +
      'handle is EBADF, encoded below)',
  },
  {
    source: 'guest_memfd_test.c: read/write/pread/pwrite fail; MAP_PRIVATE and mmap without GUEST_MEMFD_FLAG_MMAP fail',
    why: 'file I/O and mmap on a guest_memfd are not commands of the spec',
  },
  {
    source: 'memslot_modification_stress_test.c, demand_paging_test.c, arm64/page_fault_test.c',
    why:
      'stress tests with concurrent memslot changes are not tables; demand paging runs as generated episodes in ' +
      'check --backend kvm (not as a table); page_fault_test is arm64',
  },
];

const HVA = 0x10_0000_0000;
const mmap = (hva = HVA, size = 4 * SZ_2M): Command => ({ kind: 'mmap', hva, size, prot: 'rw', backing: 'anon' });
const slot = (over: Partial<SetMemslot> = {}): SetMemslot => ({
  kind: 'setMemslot',
  api: 'v2',
  slot: 0,
  as: 0,
  flags: 0,
  gpa: 0,
  size: SZ_2M,
  hva: HVA,
  ...over,
});
const read = (gpa: number, len = 8): GuestAccess => ({
  kind: 'guestAccess',
  vcpu: 0,
  gpa,
  len,
  write: false,
  value: 0n,
});
const write = (gpa: number, value: bigint, len = 8): GuestAccess => ({
  kind: 'guestAccess',
  vcpu: 0,
  gpa,
  len,
  write: true,
  value,
});
const einval: Expect = { errno: 'EINVAL' };
const ok: Expect = { ok: true };
const halted = (value?: bigint): Expect => ({
  run: { rc: 0, exitReason: KVM_EXIT_HLT, ...(value === undefined ? {} : { value }) },
});
const mmioExit = (gpa: number, isWrite: boolean): Expect => ({
  run: { rc: 0, exitReason: KVM_EXIT_MMIO, mmio: { physAddr: gpa, isWrite } },
});
const efaultExit = (gpa: number, flags = 0): Expect => ({
  run: { rc: -1, errno: 'EFAULT', exitReason: KVM_EXIT_MEMORY_FAULT, memoryFault: { flags, gpa, size: 0x1000 } },
});

const SUPPORTED_V2 = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD;

export const CASES: readonly ConformanceCase[] = [
  ...Array.from({ length: 32 }, (_, bit): ConformanceCase | null => {
    if (SUPPORTED_V2 & (1 << bit)) return null;
    return {
      name: `flag bit ${bit} is rejected`,
      source: 'set_memory_region_test.c test_invalid_memory_region_flags: every unsupported flag bit is EINVAL',
      steps: [{ cmd: mmap() }, { cmd: slot({ flags: (1 << bit) >>> 0 }), expect: einval }],
    };
  }).filter((c): c is ConformanceCase => c !== null),
  {
    name: 'v2-only flag through v1',
    source: 'set_memory_region_test.c: KVM_MEM_GUEST_MEMFD through KVM_SET_USER_MEMORY_REGION is EINVAL',
    steps: [
      { cmd: mmap() },
      { cmd: { kind: 'gmemCreate', size: SZ_2M, flags: 0 } },
      { cmd: slot({ api: 'v1', flags: KVM_MEM_GUEST_MEMFD }), expect: einval },
    ],
  },
  {
    name: 'guest_memfd with dirty logging or READONLY',
    source: 'set_memory_region_test.c: LOG_DIRTY_PAGES|GUEST_MEMFD and READONLY|GUEST_MEMFD are EINVAL',
    steps: [
      { cmd: mmap() },
      { cmd: { kind: 'gmemCreate', size: SZ_2M, flags: 0 }, expect: { ok: true, value: 0 } },
      {
        cmd: slot({ flags: KVM_MEM_GUEST_MEMFD | KVM_MEM_LOG_DIRTY_PAGES, gmem: { handle: 0, offset: 0 } }),
        expect: einval,
      },
      { cmd: slot({ flags: KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY, gmem: { handle: 0, offset: 0 } }), expect: einval },
      { cmd: slot({ flags: KVM_MEM_GUEST_MEMFD, gmem: { handle: 0, offset: 0 } }), expect: ok },
    ],
  },
  {
    name: 'guest_memfd offset not page aligned',
    source: 'set_memory_region_test.c: guest_memfd_offset 1..PAGE_SIZE-1 is EINVAL',
    steps: [
      { cmd: mmap() },
      { cmd: { kind: 'gmemCreate', size: 2 * SZ_2M, flags: 0 } },
      ...[1, 0x800, 0xfff].map((offset) => ({
        cmd: slot({ flags: KVM_MEM_GUEST_MEMFD, gmem: { handle: 0, offset } }),
        expect: einval,
      })),
    ],
  },
  {
    name: 'guest_memfd handle that is not open',
    source: 'set_memory_region_test.c (fd that is not a guest_memfd); kvm_gmem_bind(): no file is EBADF',
    steps: [
      { cmd: mmap() },
      { cmd: slot({ flags: KVM_MEM_GUEST_MEMFD, gmem: { handle: 3, offset: 0 } }), expect: { errno: 'EBADF' } },
    ],
  },
  {
    name: 'the highest slot id',
    source:
      'set_memory_region_test.c test_add_max_memory_regions: ids below KVM_CAP_NR_MEMSLOTS succeed, the next is EINVAL',
    // The suite runs on x86 (the runner's spec state and this machine's kernel).
    steps: [
      { cmd: mmap() },
      { cmd: { kind: 'checkExtension', cap: 10 }, expect: { ok: true, value: KVM_USER_MEM_SLOTS.x86 } },
      { cmd: slot({ slot: KVM_USER_MEM_SLOTS.x86 - 1, size: 0x1000 }), expect: ok },
      { cmd: slot({ slot: KVM_USER_MEM_SLOTS.x86, gpa: 0x1000, size: 0x1000 }), expect: einval },
    ],
  },
  {
    name: 'delete of a slot the guest uses',
    source:
      'set_memory_region_test.c test_delete_memory_region: after the delete the guest sees MMIO, never the old data',
    steps: [
      { cmd: mmap() },
      { cmd: slot() },
      { cmd: write(0x1000, 0x1234n), expect: halted() },
      { cmd: read(0x1000), expect: halted(0x1234n) },
      { cmd: slot({ size: 0 }), expect: ok },
      { cmd: read(0x1000), expect: mmioExit(0x1000, false) },
    ],
  },
  {
    name: 'move of a slot the guest uses',
    source: 'set_memory_region_test.c test_move_memory_region: the old gpa becomes MMIO, the new one has the data',
    steps: [
      { cmd: mmap() },
      { cmd: slot() },
      { cmd: write(0x2000, 0xabcdn), expect: halted() },
      { cmd: slot({ gpa: 4 * SZ_2M }), expect: ok },
      { cmd: read(0x2000), expect: mmioExit(0x2000, false) },
      { cmd: read(4 * SZ_2M + 0x2000), expect: halted(0xabcdn) },
    ],
  },
  {
    name: 'overlapping slot',
    source: 'set_memory_region_test.c / kvm_set_memory_region(): CREATE overlapping another slot is EEXIST',
    steps: [
      { cmd: mmap() },
      { cmd: slot() },
      { cmd: slot({ slot: 1, gpa: 0x1000, size: 0x1000 }), expect: { errno: 'EEXIST' } },
    ],
  },
  {
    name: 'guest_memfd size and flags',
    source: 'guest_memfd_test.c: a size that is not page aligned, zero, or an unknown flag bit is EINVAL',
    steps: [
      { cmd: { kind: 'gmemCreate', size: 0x1001, flags: 0 }, expect: einval },
      { cmd: { kind: 'gmemCreate', size: 0, flags: 0 }, expect: einval },
      { cmd: { kind: 'gmemCreate', size: SZ_2M, flags: 1 << 2 }, expect: einval },
      {
        cmd: { kind: 'gmemCreate', size: SZ_2M, flags: GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED },
        expect: { ok: true, value: 0 },
      },
    ],
  },
  {
    name: 'guest_memfd punch hole',
    source: 'guest_memfd_test.c test_fallocate: unaligned offset or length is EINVAL, a hole past EOF is fine',
    steps: [
      { cmd: { kind: 'gmemCreate', size: SZ_2M, flags: 0 } },
      { cmd: { kind: 'gmemPunchHole', handle: 0, offset: 1, len: 0x1000 }, expect: einval },
      { cmd: { kind: 'gmemPunchHole', handle: 0, offset: 0, len: 0x1001 }, expect: einval },
      { cmd: { kind: 'gmemPunchHole', handle: 0, offset: 0, len: 0 }, expect: einval },
      { cmd: { kind: 'gmemPunchHole', handle: 0, offset: SZ_2M, len: 0x1000 }, expect: ok },
      { cmd: { kind: 'gmemPunchHole', handle: 0, offset: 0, len: 0x1000 }, expect: ok },
    ],
  },
  {
    name: 'punched guest_memfd pages read back zero',
    source:
      'guest_memfd_test.c: after PUNCH_HOLE the range reads zero (here through the guest, on an MMAP|INIT_SHARED file)',
    steps: [
      { cmd: mmap() },
      { cmd: { kind: 'gmemCreate', size: SZ_2M, flags: GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED } },
      { cmd: slot({ flags: KVM_MEM_GUEST_MEMFD, gmem: { handle: 0, offset: 0 } }) },
      { cmd: write(0x3000, 0x5a5an), expect: halted() },
      { cmd: read(0x3000), expect: halted(0x5a5an) },
      { cmd: { kind: 'gmemPunchHole', handle: 0, offset: 0x3000, len: 0x1000 }, expect: ok },
      { cmd: read(0x3000), expect: halted(0n) },
    ],
  },
  {
    name: 'guest writes after mprotect(PROT_READ)',
    source:
      'mmu_stress_test.c: with the memory PROT_READ every guest write fails with EFAULT (the payload per ' +
      'api.rst); PROT_WRITE again lets it finish',
    steps: [
      { cmd: mmap() },
      { cmd: slot() },
      { cmd: write(0x4000, 1n), expect: halted() },
      { cmd: { kind: 'mprotect', hva: HVA, size: SZ_2M, prot: 'r' }, expect: ok },
      { cmd: write(0x4000, 2n), expect: efaultExit(0x4000) },
      { cmd: read(0x4000), expect: halted(1n) },
      { cmd: { kind: 'mprotect', hva: HVA, size: SZ_2M, prot: 'rw' }, expect: ok },
      { cmd: write(0x4000, 3n), expect: halted() },
      { cmd: { kind: 'hostRead', hva: HVA + 0x4000, len: 8 }, expect: { hostData: 3n } },
    ],
  },
  {
    name: 'READONLY slot',
    source: 'api.rst KVM_MEM_READONLY: guest writes exit KVM_EXIT_MMIO, reads see memory',
    steps: [
      { cmd: mmap() },
      { cmd: { kind: 'hostWrite', hva: HVA + 0x5000, len: 8, value: 0x77n } },
      { cmd: slot({ flags: KVM_MEM_READONLY }) },
      { cmd: read(0x5000), expect: halted(0x77n) },
      { cmd: write(0x5000, 9n), expect: mmioExit(0x5000, true) },
      { cmd: { kind: 'hostRead', hva: HVA + 0x5000, len: 8 }, expect: { hostData: 0x77n } },
    ],
  },
  {
    name: 'dirty log, classic mode',
    source:
      'dirty_log_test.c: written pages are reported; KVM_GET_DIRTY_LOG clears the log, so a second call ' +
      'without writes is empty',
    steps: [
      { cmd: mmap() },
      { cmd: slot({ flags: KVM_MEM_LOG_DIRTY_PAGES }) },
      { cmd: write(0x0, 1n) },
      { cmd: write(0x7000, 2n) },
      { cmd: write(0x1f_f000, 3n) },
      { cmd: { kind: 'getDirtyLog', slot: 0, as: 0 }, expect: { dirty: [0, 7, 511] } },
      { cmd: { kind: 'getDirtyLog', slot: 0, as: 0 }, expect: { dirty: [] } },
      { cmd: write(0x7000, 4n) },
      { cmd: { kind: 'getDirtyLog', slot: 0, as: 0 }, expect: { dirty: [7] } },
    ],
  },
  {
    name: 'dirty log, manual protect',
    source:
      'dirty_log_test.c (MANUAL_PROTECT2): GET does not clear; CLEAR re-protects, and only new writes are ' +
      'reported after it',
    steps: [
      {
        cmd: {
          kind: 'enableCap',
          cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
          flags: 0,
          args0: KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
        },
        expect: ok,
      },
      { cmd: mmap() },
      { cmd: slot({ flags: KVM_MEM_LOG_DIRTY_PAGES }) },
      { cmd: write(0x3000, 1n) },
      { cmd: { kind: 'getDirtyLog', slot: 0, as: 0 }, expect: { dirty: [3] } },
      { cmd: { kind: 'getDirtyLog', slot: 0, as: 0 }, expect: { dirty: [3] } },
      { cmd: { kind: 'clearDirtyLog', slot: 0, as: 0, firstPage: 0, numPages: 512 }, expect: ok },
      { cmd: { kind: 'getDirtyLog', slot: 0, as: 0 }, expect: { dirty: [] } },
      { cmd: write(0x9000, 2n) },
      { cmd: { kind: 'getDirtyLog', slot: 0, as: 0 }, expect: { dirty: [9] } },
      { cmd: { kind: 'clearDirtyLog', slot: 0, as: 0, firstPage: 1, numPages: 64 }, expect: einval },
    ],
  },
  {
    name: 'private access to a non-guest_memfd slot',
    source:
      'x86/private_mem_kvm_exits_test.c: -EFAULT, exit MEMORY_FAULT, flags PRIVATE, gpa the accessed gpa, size ' +
      'PAGE_SIZE',
    series: ['gmem-private'],
    steps: [
      { cmd: mmap() },
      { cmd: slot() },
      {
        cmd: { kind: 'setMemoryAttributes', gpa: 0, size: SZ_2M, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE, flags: 0 },
        expect: ok,
      },
      { cmd: { ...read(0x6000), private: true }, expect: efaultExit(0x6000, KVM_MEMORY_EXIT_FLAG_PRIVATE) },
    ],
  },
  {
    name: 'private access to a deleted slot',
    source:
      'x86/private_mem_kvm_exits_test.c test_private_access_memslot_deleted: -EFAULT, MEMORY_FAULT, flags ' +
      'PRIVATE, the gpa, PAGE_SIZE',
    series: ['gmem-private'],
    steps: [
      { cmd: mmap() },
      { cmd: { kind: 'gmemCreate', size: SZ_2M, flags: 0 } },
      { cmd: slot({ flags: KVM_MEM_GUEST_MEMFD, gmem: { handle: 0, offset: 0 } }) },
      { cmd: { kind: 'setMemoryAttributes', gpa: 0, size: SZ_2M, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE, flags: 0 } },
      { cmd: slot({ size: 0 }), expect: ok },
      { cmd: { ...read(0x8000), private: true }, expect: efaultExit(0x8000, KVM_MEMORY_EXIT_FLAG_PRIVATE) },
    ],
  },
];
