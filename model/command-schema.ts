// The command vocabulary as data: one zod schema per command kind. It is the single source of the
// `Command` type (model/commands.ts infers it), of the list of kinds and of what a replay file may
// contain (src/harness/replay.ts parses with it), so the three cannot drift. A new command is one
// entry here; the compiler then points at every exhaustive match (formatCommand, the engine, the
// spec, the kvm adaptor) that does not handle it yet.
//
// Bounds are the generator's own limits (properties/generators.ts) with room to spare, so a replay
// file cannot ask a backend for more memory than a generated run ever uses (a 1 TiB populate used
// to exhaust the page map and be reported as an invariant failure).
import { z } from 'zod';
import { SZ_1G } from './abi.js';

const PAGE = 0x1000;
/**
 * Largest size/length of one command: the vmm profile's machines (properties/vmm-generators.ts) have
 * QEMU-sized slots of 2-4 GiB and up to 16 GiB of RAM, so a mapping, a memslot or a guest_memfd may be
 * 16 GiB. What costs per page of its size (MADV_POPULATE) stays at the generators' 1 GiB.
 */
export const MAX_COMMAND_BYTES = 16 * SZ_1G;
/** Largest range a command touches page by page (MADV_POPULATE_READ/WRITE): one 1 GiB hugetlb page. */
export const MAX_POPULATE_BYTES = SZ_1G;
/** Addresses (hva, gpa) stay below 2^52: x86 and arm64 physical and user-virtual ranges both fit. */
export const MAX_ADDRESS = 2 ** 52;
/** Pages a bitmap range (dirty log, userfault bits) may cover: one MAX_COMMAND_BYTES slot. */
export const MAX_PAGES = MAX_COMMAND_BYTES / PAGE;
/** Memslot ids and address spaces are 16-bit halves of the ioctl's slot field. */
const u16 = z.number().int().min(0).max(0xffff);
const u32 = z.number().int().min(0).max(0xffff_ffff);
/** ioctl arguments (caps, flags, args) are u64 in the uAPI; JSON numbers keep them exact below 2^53. */
const arg = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const address = z.number().int().min(0).max(MAX_ADDRESS);
const size = z.number().int().min(0).max(MAX_COMMAND_BYTES);
const populateSize = z.number().int().min(0).max(MAX_POPULATE_BYTES);
const pages = z.number().int().min(0).max(MAX_PAGES);
/** guest_memfd handles are creation indices; no sequence creates more than a few. */
const handle = z.number().int().min(0).max(1023);
const accessLen = z.number().int().min(1).max(8);
/** A 64-bit value: a bigint in memory, a hex string like "0x1f" in a replay file (JSON numbers lose bits). */
const u64 = z
  .string()
  .regex(/^0x[0-9a-f]{1,16}$/i, 'a hex string like "0x1f" (at most 64 bits)')
  .transform((s) => BigInt(s));

export const protSchema = z.enum(['none', 'r', 'rw']);
/** How the VMM backs an anonymous mapping: 4K pages only, transparent huge pages, or 1 GiB hugetlb. */
export const backingSchema = z.enum(['anon', 'thp', 'hugetlb1g']);

const setMemslot = z
  .object({
    kind: z.literal('setMemslot'),
    /** v1 = KVM_SET_USER_MEMORY_REGION, v2 = KVM_SET_USER_MEMORY_REGION2. */
    api: z.enum(['v1', 'v2']),
    slot: u16,
    /** Address space id: bits 16..31 of the ioctl's slot field. */
    as: u16,
    flags: u32,
    gpa: address,
    size,
    hva: address,
    /** guest_memfd binding (v2 only): which gmem (by creation index) and the byte offset in it. */
    gmem: z.object({ handle, offset: size }).strict().optional(),
  })
  .strict();
const mmap = z
  .object({ kind: z.literal('mmap'), hva: address, size, prot: protSchema, backing: backingSchema })
  .strict();
const munmap = z.object({ kind: z.literal('munmap'), hva: address, size }).strict();
const mprotect = z.object({ kind: z.literal('mprotect'), hva: address, size, prot: protSchema }).strict();
const madviseDontneed = z.object({ kind: z.literal('madviseDontneed'), hva: address, size }).strict();
/** The VMM stores `len` bytes of `value` (little endian) at hva. */
const hostWrite = z.object({ kind: z.literal('hostWrite'), hva: address, len: accessLen, value: u64 }).strict();
const hostRead = z.object({ kind: z.literal('hostRead'), hva: address, len: accessLen }).strict();
const gmemCreate = z.object({ kind: z.literal('gmemCreate'), size, flags: arg }).strict();
const gmemPunchHole = z.object({ kind: z.literal('gmemPunchHole'), handle, offset: size, len: size }).strict();
/** One KVM_RUN in which the guest does `mov` of `len` bytes (1..8) at gpa. */
const guestAccess = z
  .object({
    kind: z.literal('guestAccess'),
    vcpu: z.number().int().min(0).max(1),
    gpa: address,
    len: accessLen,
    write: z.boolean(),
    value: u64,
    /** gmem-private: the guest marks the access private (C-bit / shared bit clear). */
    private: z.boolean().optional(),
  })
  .strict();
const getDirtyLog = z.object({ kind: z.literal('getDirtyLog'), slot: u16, as: u16 }).strict();
/** KVM_CLEAR_DIRTY_LOG with an all-ones bitmap over [firstPage, firstPage + numPages). */
const clearDirtyLog = z
  .object({ kind: z.literal('clearDirtyLog'), slot: u16, as: u16, firstPage: pages, numPages: pages })
  .strict();
const checkExtension = z.object({ kind: z.literal('checkExtension'), cap: u32 }).strict();
/** KVM_ENABLE_CAP on the VM fd; args[1..3] default to 0 (only the arm64 lock API reads them). */
const enableCap = z
  .object({
    kind: z.literal('enableCap'),
    cap: u32,
    flags: arg,
    args0: arg,
    args1: arg.optional(),
    args2: arg.optional(),
    args3: arg.optional(),
  })
  .strict();
/** MADV_POPULATE_READ / MADV_POPULATE_WRITE: fault the range in as the VMM would touch it. */
const madvisePopulate = z
  .object({ kind: z.literal('madvisePopulate'), hva: address, size: populateSize, write: z.boolean() })
  .strict();
/** userfault: the VMM sets or clears bits [firstPage, firstPage + numPages) of a slot's userfault bitmap. */
const userfaultBits = z
  .object({ kind: z.literal('userfaultBits'), slot: u16, as: u16, firstPage: pages, numPages: pages, set: z.boolean() })
  .strict();
/** gmem-private: KVM_SET_MEMORY_ATTRIBUTES. */
const setMemoryAttributes = z
  .object({ kind: z.literal('setMemoryAttributes'), gpa: address, size, attributes: arg, flags: arg })
  .strict();
/**
 * exit-on-missing: one demand-paging episode (S3/p01, p02, p14 demand_paging_test): the slot's hva
 * range is registered with userfaultfd MISSING, each vCPU touches its pages in order, `readers`
 * reader threads resolve UFFD_EVENT_PAGEFAULTs with UFFDIO_COPY(DONTWAKE) + UFFDIO_WAKE, and on a
 * fast-only slot the vCPU resolves its own memory-fault exits. `schedule` picks which runnable
 * thread takes each of the first steps; after it the threads run round-robin.
 */
const demandPaging = z
  .object({
    kind: z.literal('demandPaging'),
    slot: u16,
    // The generator touches at most 4 pages per vCPU with a 12-step schedule; 16x that stays well
    // inside the replay time bound (4096 pages with a 65536-step schedule ran for minutes).
    vcpuPages: z.array(z.array(pages).max(64)).min(1).max(2),
    write: z.boolean(),
    readers: z.number().int().min(1).max(8),
    schedule: z.array(z.number().int().min(0).max(64)).max(256),
  })
  .strict();

export const hostCommandSchema = z.discriminatedUnion('kind', [mmap, munmap, mprotect, madviseDontneed, hostWrite]);
/**
 * A guest access racing with a host change: the host command runs while the vCPU is inside the
 * fault handler, after it looked up the pfn and before it installs the mapping (the
 * mmu_invalidate_seq window, INV-40). The result must equal one of the two sequential orders.
 */
const raceAccess = z.object({ kind: z.literal('raceAccess'), access: guestAccess, host: hostCommandSchema }).strict();

export const commandSchema = z.discriminatedUnion('kind', [
  setMemslot,
  mmap,
  munmap,
  mprotect,
  madviseDontneed,
  hostWrite,
  hostRead,
  gmemCreate,
  gmemPunchHole,
  guestAccess,
  getDirtyLog,
  clearDirtyLog,
  checkExtension,
  enableCap,
  raceAccess,
  madvisePopulate,
  userfaultBits,
  setMemoryAttributes,
  demandPaging,
]);

/** A replay holds at most this many commands (check --max-commands is bounded by it too). */
export const MAX_SEQUENCE_COMMANDS = 10_000;
/**
 * All mmaps of a sequence together cover at most this much address space (the small generators: four
 * 8 MiB regions and one 1 GiB hugetlb page; the vmm profile: a machine's RAM, ROMs and up to eight
 * 1 GiB DIMMs, about 16 GiB), so populating all of it stays within the page maps.
 */
export const MAX_MAPPED_BYTES = 32 * SZ_1G;

/** Bytes covered by the union of the mmaps' [hva, hva + size) ranges. */
function mappedBytes(commands: readonly { kind: string; hva?: number; size?: number }[]): number {
  const ranges = commands
    .filter((c) => c.kind === 'mmap')
    .map((c) => [c.hva!, c.hva! + c.size!] as const)
    .sort((a, b) => a[0] - b[0]);
  let total = 0;
  let end = 0;
  for (const [lo, hi] of ranges) {
    const from = Math.max(lo, end);
    if (hi > from) total += hi - from;
    end = Math.max(end, hi);
  }
  return total;
}

/** A command sequence as a replay file stores it. */
export const commandSequenceSchema = z
  .array(commandSchema)
  .min(1)
  .max(MAX_SEQUENCE_COMMANDS)
  .refine(
    (cmds) => mappedBytes(cmds) <= MAX_MAPPED_BYTES,
    `the mmaps together cover more than ${MAX_MAPPED_BYTES / SZ_1G} GiB (the generator's budget)`,
  );

// ---- Concurrent cases (issue 10): a setup prefix, then threads that interleave by a schedule ----

/** vCPUs a concurrent case may run (model/abi.ts NR_VCPUS; guestAccess.vcpu is bounded by it too). */
const CONCURRENT_VCPUS = 2;
/** Bounds of a concurrent case: a run interleaves a few short threads, never a long sequence. */
export const MAX_THREADS = 8;
export const MAX_THREAD_COMMANDS = 64;
export const MAX_SCHEDULE = 4096;

export const threadRoleSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('vcpu'),
      vcpu: z
        .number()
        .int()
        .min(0)
        .max(CONCURRENT_VCPUS - 1),
    })
    .strict(),
  z.object({ kind: z.literal('vmm') }).strict(),
]);

/**
 * What a thread may run: every command but raceAccess and demandPaging, whose windows and agents
 * are sequential stand-ins for the interleaving this case makes explicit.
 */
const threadCommandSchema = commandSchema.refine(
  (c) => c.kind !== 'raceAccess' && c.kind !== 'demandPaging',
  'a thread command cannot be raceAccess or demandPaging (the interleaving is the schedule)',
);

/** Why a case's roles and threads do not fit together, or null. */
function roleError(c: { roles: { kind: string; vcpu?: number }[]; threads: { kind: string; vcpu?: number }[][] }) {
  if (c.roles.length !== c.threads.length) return `${c.roles.length} roles for ${c.threads.length} threads`;
  const vcpus = c.roles.flatMap((r) => (r.kind === 'vcpu' ? [r.vcpu!] : []));
  if (new Set(vcpus).size !== vcpus.length) return 'two threads run the same vCPU (vcpu->mutex serializes KVM_RUN)';
  for (const [t, role] of c.roles.entries())
    for (const cmd of c.threads[t]!) {
      // INV-16: only the vCPU's own thread runs it; VMM threads make ioctls and host calls only.
      if (role.kind === 'vcpu' && (cmd.kind !== 'guestAccess' || cmd.vcpu !== role.vcpu))
        return `thread ${t} (vcpu ${role.vcpu}) may run only guestAccess on vcpu ${role.vcpu}, not ${cmd.kind}`;
      if (role.kind === 'vmm' && cmd.kind === 'guestAccess') return `thread ${t} (vmm) cannot run guestAccess`;
    }
  return null;
}

export const concurrentCaseSchema = z
  .object({
    setup: z.array(commandSchema).max(MAX_SEQUENCE_COMMANDS),
    roles: z.array(threadRoleSchema).min(1).max(MAX_THREADS),
    threads: z.array(z.array(threadCommandSchema).max(MAX_THREAD_COMMANDS)).min(1).max(MAX_THREADS),
    schedule: z.array(z.number().int().min(0).max(255)).max(MAX_SCHEDULE),
  })
  .strict()
  .superRefine((c, ctx) => {
    const why = roleError(c);
    if (why) ctx.addIssue({ code: 'custom', message: why, path: ['threads'] });
    const all = [...c.setup, ...c.threads.flat()];
    if (mappedBytes(all) > MAX_MAPPED_BYTES)
      ctx.addIssue({ code: 'custom', message: 'the mmaps cover too much', path: ['setup'] });
  });
