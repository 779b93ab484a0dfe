// The VMM's own address space: anonymous private mappings with a protection and a backing, and the
// contents of their pages. Rules follow mm/mmap.c, mm/mprotect.c and mm/madvise.c as a VMM sees
// them. Each syscall is first turned into a plan (the VMA changes and the return value), so the
// simulated host kernel under src/mmu applies exactly the same Linux rules as the spec.
import { PAGE_SIZE, SZ_1G, SZ_2M, TASK_SIZE, isAligned, alignDown, type Errno } from './abi.js';
import type {
  Backing,
  HostRead,
  HostWrite,
  MadviseDontneed,
  MadvisePopulate,
  Mmap,
  Mprotect,
  Munmap,
  Prot,
} from './commands.js';
import { dropPages, loadBytes, storeBytes, valueToBytes, bytesToValue, splitByPage, type Memory } from './memory.js';
import type { Outcome } from './outcomes.js';

export interface Vma {
  start: number;
  end: number;
  prot: Prot;
  backing: Backing;
}
/**
 * Which hva pages have a host PTE: the shared zero page (a read fault on untouched anonymous memory)
 * or a page of their own. Only the fast-only GUP paths observe this (exit-on-missing, userfaultfd).
 */
export type Presence = 'zero' | 'page';
/** `present` holds 4 KiB pages; a populated 1 GiB hugetlb page is one entry in `gigantic` (its first hva page). */
export interface HostMm {
  vmas: Vma[];
  memory: Memory;
  present: Map<number, Presence>;
  gigantic: Set<number>;
}

/** One change to the VMA list. `unmap` and `zap` also discard the pages' contents. */
export type VmaChange =
  | { op: 'unmap'; start: number; end: number }
  | { op: 'map'; vma: Vma }
  | { op: 'protect'; start: number; end: number; prot: Prot }
  | { op: 'zap'; start: number; end: number };

export interface HostPlan {
  changes: VmaChange[];
  result: Outcome;
}

export const newHostMm = (): HostMm => ({ vmas: [], memory: new Map(), present: new Map(), gigantic: new Set() });

const GIGANTIC_PAGES = SZ_1G / PAGE_SIZE;

/** What backs hva page `page` now: nothing, the zero page, or a page of its own. */
export function presenceOf(mm: HostMm, page: number): Presence | undefined {
  return mm.gigantic.has(page - (page % GIGANTIC_PAGES)) ? 'page' : mm.present.get(page);
}

/** Forget the pages in [first, end) (munmap, MADV_DONTNEED). */
function dropPresence(mm: HostMm, first: number, end: number): void {
  for (const g of [...mm.gigantic]) if (g >= first && g < end) mm.gigantic.delete(g);
  if (end - first > mm.present.size) {
    for (const page of [...mm.present.keys()]) if (page >= first && page < end) mm.present.delete(page);
  } else {
    for (let page = first; page < end; page++) mm.present.delete(page);
  }
}

const roundUp = (v: number, a: number): number => Math.ceil(v / a) * a;
const hugePageSize = (vma: Vma): number => (vma.backing === 'hugetlb1g' ? SZ_1G : PAGE_SIZE);
const OK: Outcome = { kind: 'ok' };
const fail = (errno: Errno): HostPlan => ({ changes: [], result: { kind: 'err', errno } });

export function findVma(vmas: readonly Vma[], addr: number): Vma | undefined {
  return vmas.find((v) => addr >= v.start && addr < v.end);
}

/** Whether the VMM could touch hva with the given access: a VMA with enough protection. */
export function hostCanAccess(vmas: readonly Vma[], hva: number, write: boolean): boolean {
  const vma = findVma(vmas, hva);
  if (!vma || vma.prot === 'none') return false;
  return !write || vma.prot === 'rw';
}

/** Splitting a hugetlb VMA anywhere but a huge-page boundary fails with EINVAL (hugetlb_vm_op_split). */
function splitWouldFail(vmas: readonly Vma[], addr: number): boolean {
  const vma = findVma(vmas, addr);
  return vma !== undefined && vma.start !== addr && !isAligned(addr, hugePageSize(vma));
}

/** Apply one change to a VMA list; returns the new, sorted list. */
export function applyVmaChange(vmas: readonly Vma[], change: VmaChange): Vma[] {
  if (change.op === 'zap') return [...vmas];
  if (change.op === 'map') return [...vmas, change.vma].sort((a, b) => a.start - b.start);
  const { start, end } = change;
  const out: Vma[] = [];
  for (const v of vmas) {
    if (v.end <= start || v.start >= end) {
      out.push(v);
      continue;
    }
    if (v.start < start) out.push({ ...v, end: start });
    if (change.op === 'protect')
      out.push({ ...v, start: Math.max(v.start, start), end: Math.min(v.end, end), prot: change.prot });
    if (v.end > end) out.push({ ...v, start: end });
  }
  return out.sort((a, b) => a.start - b.start);
}

/** mmap(MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS [| MAP_HUGETLB | MAP_HUGE_1GB]): replaces what was there. */
export function planMmap(vmas: readonly Vma[], cmd: Mmap): HostPlan {
  const huge = cmd.backing === 'hugetlb1g' ? SZ_1G : PAGE_SIZE;
  if (!isAligned(cmd.hva, PAGE_SIZE) || cmd.size <= 0 || !isAligned(cmd.hva, huge)) return fail('EINVAL');
  const end = cmd.hva + roundUp(cmd.size, huge);
  if (end > TASK_SIZE) return fail('ENOMEM');
  if (splitWouldFail(vmas, cmd.hva) || splitWouldFail(vmas, end)) return fail('EINVAL');
  const vma: Vma = { start: cmd.hva, end, prot: cmd.prot, backing: cmd.backing };
  return {
    changes: [
      { op: 'unmap', start: cmd.hva, end },
      { op: 'map', vma },
    ],
    result: OK,
  };
}

export function planMunmap(vmas: readonly Vma[], cmd: Munmap): HostPlan {
  if (!isAligned(cmd.hva, PAGE_SIZE) || cmd.size <= 0) return fail('EINVAL');
  const end = cmd.hva + roundUp(cmd.size, PAGE_SIZE);
  if (end > TASK_SIZE) return fail('EINVAL');
  if (splitWouldFail(vmas, cmd.hva) || splitWouldFail(vmas, end)) return fail('EINVAL');
  return { changes: [{ op: 'unmap', start: cmd.hva, end }], result: OK };
}

/**
 * mprotect walks the VMAs from the start address and changes each in turn; at the first hole it
 * stops with ENOMEM, keeping what it already changed (mm/mprotect.c do_mprotect_pkey).
 */
export function planMprotect(vmas: readonly Vma[], cmd: Mprotect): HostPlan {
  if (!isAligned(cmd.hva, PAGE_SIZE)) return fail('EINVAL');
  if (cmd.size === 0) return { changes: [], result: OK };
  const end = cmd.hva + roundUp(cmd.size, PAGE_SIZE);
  if (end > TASK_SIZE) return fail('ENOMEM');
  const changes: VmaChange[] = [];
  let cur = cmd.hva;
  while (cur < end) {
    const vma = findVma(vmas, cur);
    if (!vma) return { changes, result: { kind: 'err', errno: 'ENOMEM' } };
    const pieceEnd = Math.min(end, vma.end);
    if (splitWouldFail(vmas, cur) || (pieceEnd < vma.end && !isAligned(pieceEnd, hugePageSize(vma)))) {
      return { changes, result: { kind: 'err', errno: 'EINVAL' } };
    }
    changes.push({ op: 'protect', start: cur, end: pieceEnd, prot: cmd.prot });
    cur = pieceEnd;
  }
  return { changes, result: OK };
}

/**
 * MADV_DONTNEED zaps every mapped part of the range (private anonymous memory then reads zero)
 * and reports ENOMEM at the end if the range had holes. On hugetlb the start must be huge-page
 * aligned (EINVAL) and the end is rounded down (madvise_dontneed_free_valid_vma).
 */
export function planMadviseDontneed(vmas: readonly Vma[], cmd: MadviseDontneed): HostPlan {
  if (!isAligned(cmd.hva, PAGE_SIZE)) return fail('EINVAL');
  if (cmd.size === 0) return { changes: [], result: OK };
  const end = cmd.hva + roundUp(cmd.size, PAGE_SIZE);
  const changes: VmaChange[] = [];
  let sawHole = false;
  let cur = cmd.hva;
  while (cur < end) {
    const vma = findVma(vmas, cur);
    if (!vma) {
      sawHole = true;
      const next = vmas.find((v) => v.start > cur);
      cur = next ? Math.min(next.start, end) : end;
      continue;
    }
    let pieceEnd = Math.min(end, vma.end);
    if (vma.backing === 'hugetlb1g') {
      if (!isAligned(cur, SZ_1G)) return { changes, result: { kind: 'err', errno: 'EINVAL' } };
      pieceEnd = alignDown(pieceEnd, SZ_1G);
    }
    if (pieceEnd > cur) changes.push({ op: 'zap', start: cur, end: pieceEnd });
    cur = Math.min(end, vma.end);
  }
  return { changes, result: sawHole ? { kind: 'err', errno: 'ENOMEM' } : OK };
}

/** Carry out a plan on the spec's host state. */
export function applyHostPlan(mm: HostMm, plan: HostPlan): Outcome {
  for (const change of plan.changes) {
    mm.vmas = applyVmaChange(mm.vmas, change);
    if (change.op === 'unmap' || change.op === 'zap') {
      dropPages(mm.memory, change.start / PAGE_SIZE, change.end / PAGE_SIZE);
      dropPresence(mm, change.start / PAGE_SIZE, change.end / PAGE_SIZE);
    }
  }
  return plan.result;
}

/**
 * A page fault on hva (handle_mm_fault as get_user_pages or a VMM touch sees it): hugetlb fills
 * its whole 1 GiB page; THP fills the aligned 2 MiB block if it lies inside the VMA and none of its
 * pages is populated yet; otherwise one page, the zero page for a read. A write to the zero page
 * breaks COW. The caller has checked the VMA allows the access.
 */
export function populate(mm: HostMm, hva: number, write: boolean): void {
  const page = Math.floor(hva / PAGE_SIZE);
  const now = presenceOf(mm, page);
  if (now === 'page' || (now === 'zero' && !write)) return;
  if (now === 'zero') {
    mm.present.set(page, 'page');
    return;
  }
  const vma = findVma(mm.vmas, hva)!;
  const huge = vma.backing === 'hugetlb1g' ? SZ_1G : vma.backing === 'thp' ? SZ_2M : 0;
  if (huge === SZ_1G) {
    // hugetlb: the VMA is 1 GiB aligned (planMmap), so the whole page lies inside it.
    mm.gigantic.add(alignDown(hva, SZ_1G) / PAGE_SIZE);
    return;
  }
  if (huge) {
    const start = alignDown(hva, huge) / PAGE_SIZE;
    const count = huge / PAGE_SIZE;
    const fits = start * PAGE_SIZE >= vma.start && (start + count) * PAGE_SIZE <= vma.end;
    const untouched = (): boolean =>
      Array.from({ length: count }, (_, i) => start + i).every((p) => !mm.present.has(p));
    if (fits && untouched()) {
      for (let i = 0; i < count; i++) mm.present.set(start + i, 'page');
      return;
    }
  }
  mm.present.set(page, write ? 'page' : 'zero');
}

/**
 * get_user_page_fast_only(): succeeds only on a present PTE that allows the pin. A write pin (and,
 * before S3/p03, any pin of a slot that may map writable) needs a page of its own in a writable VMA.
 */
export function fastGupAllows(mm: HostMm, hva: number, writePin: boolean): boolean {
  const now = presenceOf(mm, Math.floor(hva / PAGE_SIZE));
  if (!now || !hostCanAccess(mm.vmas, hva, false)) return false;
  return !writePin || (now === 'page' && hostCanAccess(mm.vmas, hva, true));
}

/** A host access is all or nothing: every page it touches must allow it (the generator never straddles). */
export function hostAccessAllowed(vmas: readonly Vma[], hva: number, len: number, write: boolean): boolean {
  return splitByPage(hva, len).every((p) => hostCanAccess(vmas, p.addr, write));
}

export function hostWrite(mm: HostMm, cmd: HostWrite): Outcome {
  if (!hostAccessAllowed(mm.vmas, cmd.hva, cmd.len, true)) return { kind: 'segv' };
  for (const part of splitByPage(cmd.hva, cmd.len)) populate(mm, part.addr, true);
  storeBytes(mm.memory, cmd.hva, valueToBytes(cmd.value, cmd.len));
  return OK;
}

export function hostRead(mm: HostMm, cmd: HostRead): Outcome {
  if (!hostAccessAllowed(mm.vmas, cmd.hva, cmd.len, false)) return { kind: 'segv' };
  // The VMM's read faults the page in (the shared zero page if it was never written): it is
  // present from then on, so userfaultfd MISSING no longer fires for it. Found by the real kernel
  // (an episode read 0 where the spec expected the 0xAB copy).
  for (const part of splitByPage(cmd.hva, cmd.len)) populate(mm, part.addr, false);
  return { kind: 'hostData', value: bytesToValue(loadBytes(mm.memory, cmd.hva, cmd.len)) };
}

/**
 * MADV_POPULATE_READ/WRITE (mm/madvise.c madvise_populate): fault every page in as a VMM touch
 * would, in order. A hole is ENOMEM and a protection that forbids the access EFAULT; pages before
 * the failing one stay populated.
 */
export function madvisePopulate(mm: HostMm, cmd: MadvisePopulate): Outcome {
  if (!isAligned(cmd.hva, PAGE_SIZE)) return { kind: 'err', errno: 'EINVAL' };
  const end = cmd.hva + roundUp(cmd.size, PAGE_SIZE);
  for (let hva = cmd.hva; hva < end; hva += PAGE_SIZE) {
    if (!findVma(mm.vmas, hva)) return { kind: 'err', errno: 'ENOMEM' };
    if (!hostCanAccess(mm.vmas, hva, cmd.write)) return { kind: 'err', errno: 'EFAULT' };
    populate(mm, hva, cmd.write);
  }
  return OK;
}
