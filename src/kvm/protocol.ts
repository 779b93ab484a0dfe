// The wire format of src/kvm/native/kvm-ops.c (struct kmm_req / kmm_resp), and the translation between
// our commands and outcomes and the helper's requests and responses. Keep in step with the C.
//
// A batch goes down the request FIFO in one write (header, then its requests); its responses come up
// the response FIFO in one write when the whole batch is done (helper-main.c), and each is also kept,
// as it finishes, in the answers file the helper shares with us (answers.c, ANSWERS_HEADER below),
// which is read only when the helper dies mid-batch. FLAG_SEQUENCE_END lets the helper make the next
// VM while we compute (worker.c).
import { constants as osConstants } from 'node:os';
import { match } from 'ts-pattern';
import { ERRNOS, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, type Errno } from '../../model/abi.js';
import type { Command, Prot } from '../../model/commands.js';
import type { Outcome, RunPayload } from '../../model/outcomes.js';

export const OP = {
  reset: 0,
  setRegion: 1,
  mmap: 2,
  munmap: 3,
  mprotect: 4,
  madvDontneed: 5,
  madvPopulate: 6,
  hostWrite: 7,
  hostRead: 8,
  gmemCreate: 9,
  gmemPunch: 10,
  guestAccess: 11,
  getDirtyLog: 12,
  clearDirtyLog: 13,
  checkExtension: 14,
  enableCap: 15,
  setMemoryAttributes: 16,
  demandPaging: 17,
  episodePage: 18,
  /** A concurrent case's section header and per-thread markers (native/concurrent.c). */
  concBegin: 19,
  concThread: 20,
  guestSpin: 100,
  crash: 101,
  guestUd2: 102,
  /** Debug: a read of the harness's own guest code, which guestAccess refuses (the probe, tests). */
  guestPeek: 103,
} as const;

export const BATCH_MAGIC = 0x424d4d4b;
export const ERROR_MAGIC = 0x454d4d4b;
/**
 * The answers file's header (answers.c): u32 magic, u32 the helper's batch number (1 for its first),
 * u32 responses, u32 reserved, u64 bytes of responses.
 */
export const ANSWERS_HEADER = 24;
export const ANSWERS_MAGIC = 0x414d4d4b;
export const REQ_SIZE = 72;
export const RESP_SIZE = 72;
export const FLAG_MUTANT_DROP_READONLY = 1;
/**
 * The batch is the last of its sequence: once it is answered the helper tears the sequence's VM down
 * and makes the next one (VM, vCPUs, guest code) while the harness computes, for the next reset to
 * adopt (helper-main.c). Without it a VM lives on until the next reset, as a batch may continue it.
 */
export const FLAG_SEQUENCE_END = 2;

/** The harness slot and host window the helper keeps for itself (kvm-ops.c). */
export const HARNESS_SLOT = 32000;
export const HARNESS_GPA = 0xf000_0000;
export const HARNESS_SIZE = 0x20_0000;
export const HVA_WINDOW = { start: 0x10_0000_0000, end: 0x80_0000_0000 } as const;

export interface Request {
  op: number;
  a32: number;
  args: readonly (number | bigint)[];
}

export const STATUS = { ok: 0, err: 1, segv: 2, run: 3, harness: 4, refused: 5 } as const;
const HARNESS_DETAIL: Record<number, string> = {
  1: 'setting up the guest failed',
  2: 'guest exception',
  3: 'guest did not return (its guest-time budget ran out, KVM_EXIT_INTR)',
  4: 'unexpected exit',
  5: 'KVM_RUN blocked in the kernel past the wall-clock backstop without using its guest time',
};
/** Why the helper refused a request (kvm-ops.c KMM_REFUSE_*): the operation was not performed. */
export const REFUSAL: Record<number, string> = {
  1: 'host memory outside the helper window 0x1000000000-0x7fffffffff',
  2: 'a memslot operation on the harness slot 32000',
  3: 'a range overlapping the harness gpa range 0xf0000000-0xf01fffff',
  4: "a guest access into the harness's own guest pages (gpa 0xf0000000-0xf01fffff)",
  5: 'a host access of 0 or more than 8 bytes',
  6: 'a memslot whose host range lies outside the helper window 0x1000000000-0x7fffffffff',
  7: "in a concurrent case, a request this thread's role may not make (or a malformed section)",
};
/** The vCPU field of a VMM thread's marker (concurrent.c CONC_VMM). */
export const CONC_VMM = (1n << 64n) - 1n;
/** The message for a refused request, as reports and tests see it. */
export const refusalMessage = (detail: number): string =>
  `refused by the helper: ${REFUSAL[detail] ?? `reason ${detail}`}`;

/** What the helper answered for one request. */
export interface Response {
  status: number;
  err: number;
  rc: bigint;
  exitReason: number;
  hasValue: boolean;
  payload: [bigint, bigint, bigint, bigint];
  value: bigint;
  detail: number;
  data: Buffer;
}

/** A result no outcome can express: the harness itself could not do what was asked. */
export interface HarnessProblem {
  kind: 'harness';
  message: string;
}
export type KernelResult = Outcome | HarnessProblem;

const PROT: Record<Prot, number> = { none: 0, r: 1, rw: 2 };
const BACKING = { anon: 0, thp: 1, hugetlb1g: 2 } as const;
const slotField = (as: number, slot: number): bigint => (BigInt(as) << 16n) | BigInt(slot >>> 0);

/**
 * The requests for a command the helper can run (the last one answers for the command), or null
 * (raceAccess and the series' commands).
 */
export function encodeCommand(cmd: Command): Request[] | null {
  const req = (op: number, args: (number | bigint)[], a32 = 0): Request[] => [{ op, a32, args }];
  return match(cmd)
    .returnType<Request[] | null>()
    .with({ kind: 'setMemslot' }, (c) =>
      req(
        OP.setRegion,
        [slotField(c.as, c.slot), c.flags, c.gpa, c.size, c.hva, c.gmem ? c.gmem.handle : -1, c.gmem?.offset ?? 0],
        c.api === 'v1' ? 1 : 2,
      ),
    )
    .with({ kind: 'mmap' }, (c) => req(OP.mmap, [c.hva, c.size, PROT[c.prot], BACKING[c.backing]]))
    .with({ kind: 'munmap' }, (c) => req(OP.munmap, [c.hva, c.size]))
    .with({ kind: 'mprotect' }, (c) => req(OP.mprotect, [c.hva, c.size, PROT[c.prot]]))
    .with({ kind: 'madviseDontneed' }, (c) => req(OP.madvDontneed, [c.hva, c.size]))
    .with({ kind: 'madvisePopulate' }, (c) => req(OP.madvPopulate, [c.hva, c.size, c.write ? 1 : 0]))
    .with({ kind: 'hostWrite' }, (c) => req(OP.hostWrite, [c.hva, c.len, c.value]))
    .with({ kind: 'hostRead' }, (c) => req(OP.hostRead, [c.hva, c.len]))
    .with({ kind: 'gmemCreate' }, (c) => req(OP.gmemCreate, [c.size, c.flags]))
    .with({ kind: 'gmemPunchHole' }, (c) => req(OP.gmemPunch, [c.handle, c.offset, c.len]))
    .with({ kind: 'guestAccess' }, (c) =>
      c.private ? null : req(OP.guestAccess, [c.vcpu, c.gpa, c.len, c.write ? 1 : 0, c.value]),
    )
    .with({ kind: 'getDirtyLog' }, (c) => req(OP.getDirtyLog, [slotField(c.as, c.slot)]))
    .with({ kind: 'clearDirtyLog' }, (c) => req(OP.clearDirtyLog, [slotField(c.as, c.slot), c.firstPage, c.numPages]))
    .with({ kind: 'checkExtension' }, (c) => req(OP.checkExtension, [c.cap]))
    .with({ kind: 'enableCap' }, (c) =>
      req(OP.enableCap, [c.cap, c.flags, c.args0, c.args1 ?? 0, c.args2 ?? 0, c.args3 ?? 0]),
    )
    .with({ kind: 'setMemoryAttributes' }, (c) => req(OP.setMemoryAttributes, [c.gpa, c.size, c.attributes, c.flags]))
    .with({ kind: 'demandPaging' }, (c) => [
      ...c.vcpuPages.flatMap((pages, vcpu) =>
        pages.map((page) => ({ op: OP.episodePage, a32: 0, args: [vcpu, page] })),
      ),
      ...req(OP.demandPaging, [c.slot, c.write ? 1 : 0, c.readers]),
    ])
    .with({ kind: 'raceAccess' }, { kind: 'userfaultBits' }, () => null)
    .exhaustive();
}

const u64 = (v: number | bigint): bigint => BigInt.asUintN(64, BigInt(v));

export function encodeBatch(requests: readonly Request[], flags = 0, runTimeoutMs = 2000): Buffer {
  const buf = Buffer.alloc(16 + REQ_SIZE * requests.length);
  buf.writeUInt32LE(BATCH_MAGIC, 0);
  buf.writeUInt32LE(requests.length, 4);
  buf.writeUInt32LE(flags, 8);
  buf.writeUInt32LE(runTimeoutMs, 12);
  requests.forEach((r, i) => {
    const at = 16 + REQ_SIZE * i;
    buf.writeUInt32LE(r.op, at);
    buf.writeUInt32LE(r.a32, at + 4);
    for (const [j, a] of r.args.entries()) buf.writeBigUInt64LE(u64(a), at + 8 + 8 * j);
  });
  return buf;
}

/** One response header (72 bytes); `data` is filled in by the reader. */
export function decodeResponseHeader(buf: Buffer): Response {
  return {
    status: buf.readUInt32LE(0),
    err: buf.readInt32LE(4),
    rc: buf.readBigInt64LE(8),
    exitReason: buf.readUInt32LE(16),
    hasValue: buf.readUInt32LE(20) !== 0,
    payload: [buf.readBigUInt64LE(24), buf.readBigUInt64LE(32), buf.readBigUInt64LE(40), buf.readBigUInt64LE(48)],
    value: buf.readBigUInt64LE(56),
    detail: buf.readUInt32LE(68),
    data: Buffer.alloc(0),
  };
}
export const responseDataLength = (header: Buffer): number => header.readUInt32LE(64);

/** Linux errno numbers by name (Node's table lacks EHWPOISON). */
const ERRNO_NUMBERS: Record<string, number> = { ...(osConstants.errno as Record<string, number>), EHWPOISON: 133 };
const errnoNames = new Map<number, string>(Object.entries(ERRNO_NUMBERS).map(([name, n]) => [n, name]));
const KNOWN = new Set<string>(ERRNOS);

export function errnoName(n: number): Errno | null {
  const name = errnoNames.get(n);
  return name && KNOWN.has(name) ? (name as Errno) : null;
}

export const errnoNumber = (name: Errno): number => ERRNO_NUMBERS[name] ?? -1;

/** The kvm_run union as our outcomes describe it, for the exit reasons that have a payload. */
function decodePayload(exitReason: number, p: Response['payload']): RunPayload {
  if (exitReason === KVM_EXIT_MMIO) {
    const len = Number(p[2] & 0xffffffffn);
    const isWrite = ((p[2] >> 32n) & 0xffn) !== 0n;
    // For a read, mmio.data is the VMM's to fill: the kernel's leftover bytes there mean nothing.
    const data = isWrite ? p[1] & ((1n << BigInt(8 * Math.min(len, 8))) - 1n) : 0n;
    return { kind: 'mmio', physAddr: Number(p[0]), len, isWrite, data };
  }
  if (exitReason === KVM_EXIT_MEMORY_FAULT)
    return { kind: 'memoryFault', flags: Number(p[0]), gpa: Number(p[1]), size: Number(p[2]) };
  return { kind: 'none' };
}

function dirtyPages(bitmap: Buffer): number[] {
  const out: number[] = [];
  for (let byte = 0; byte < bitmap.length; byte++) {
    const b = bitmap[byte]!;
    if (b === 0) continue;
    for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) out.push(byte * 8 + bit);
  }
  return out;
}

/** The helper's answer as the outcome the spec would give for the same command. */
export function decodeOutcome(cmd: Command, r: Response): KernelResult {
  const errno = (): KernelResult => {
    const name = errnoName(r.err);
    return name
      ? { kind: 'err', errno: name }
      : { kind: 'harness', message: `errno ${r.err} has no name in the harness` };
  };
  if (r.status === STATUS.harness) {
    const what = HARNESS_DETAIL[r.detail] ?? `problem ${r.detail}`;
    const extra =
      r.detail === 2
        ? ` vector ${r.value}`
        : r.detail === 4
          ? ` exit_reason ${r.value}`
          : r.detail === 1
            ? ` (errno ${r.err})`
            : '';
    return { kind: 'harness', message: `${what}${extra}` };
  }
  if (r.status === STATUS.refused) return { kind: 'harness', message: refusalMessage(r.detail) };
  if (r.status === STATUS.segv) return { kind: 'segv' };
  if (r.status === STATUS.err) return errno();
  if (r.status === STATUS.run) {
    const run = { exitReason: r.exitReason, payload: decodePayload(r.exitReason, r.payload) };
    if (r.rc === 0n) return { kind: 'run', rc: 0, run, ...(r.hasValue ? { value: r.value } : {}) };
    const name = errnoName(r.err);
    if (!name)
      return { kind: 'harness', message: `KVM_RUN failed with errno ${r.err}, which has no name in the harness` };
    return { kind: 'run', rc: -1, errno: name, run };
  }
  return match(cmd)
    .returnType<KernelResult>()
    .with({ kind: 'hostRead' }, () => ({ kind: 'hostData', value: r.value }))
    .with({ kind: 'getDirtyLog' }, () => ({ kind: 'dirtyLog', dirty: dirtyPages(r.data) }))
    .with({ kind: 'checkExtension' }, { kind: 'gmemCreate' }, () => ({ kind: 'ok', value: Number(r.rc) }))
    .with({ kind: 'demandPaging' }, (c) => {
      let at = 0;
      const values = c.vcpuPages.map((pages) =>
        pages.map(() => {
          const v = at + 8 <= r.data.length ? r.data.readBigUInt64LE(at) : 0n;
          at += 8;
          return c.write ? null : v;
        }),
      );
      return r.value === 1n
        ? { kind: 'episode', completed: true, values }
        : { kind: 'episode', completed: false, values, stuck: 'a vCPU thread did not finish before the timeout' };
    })
    .otherwise(() => ({ kind: 'ok' }));
}
