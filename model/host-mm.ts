// The VMM's own address space: anonymous private mappings with a protection and a backing, and the
// contents of their pages. Rules follow mm/mmap.c, mm/mprotect.c and mm/madvise.c as a VMM sees
// them. KVM is not involved here; the spec derives guest-visible effects from this state directly.
import { PAGE_SIZE, SZ_1G, TASK_SIZE, isAligned, alignDown } from './abi.js';
import type { Backing, HostRead, HostWrite, MadviseDontneed, Mmap, Mprotect, Munmap, Prot } from './commands.js';
import { dropPages, loadBytes, storeBytes, valueToBytes, bytesToValue, splitByPage, type Memory } from './memory.js';
import type { Outcome } from './outcomes.js';

export interface Vma { start: number; end: number; prot: Prot; backing: Backing }
export interface HostMm { vmas: Vma[]; memory: Memory }

export const newHostMm = (): HostMm => ({ vmas: [], memory: new Map() });

const roundUp = (v: number, a: number): number => Math.ceil(v / a) * a;
const hugePageSize = (vma: Vma): number => (vma.backing === 'hugetlb1g' ? SZ_1G : PAGE_SIZE);

export function findVma(mm: HostMm, addr: number): Vma | undefined {
  return mm.vmas.find((v) => addr >= v.start && addr < v.end);
}

/** Whether the VMM could touch hva with the given access: a VMA with enough protection. */
export function hostCanAccess(mm: HostMm, hva: number, write: boolean): boolean {
  const vma = findVma(mm, hva);
  if (!vma || vma.prot === 'none') return false;
  return !write || vma.prot === 'rw';
}

/** Splitting a hugetlb VMA anywhere but a huge-page boundary fails with EINVAL (hugetlb_vm_op_split). */
function splitWouldFail(mm: HostMm, addr: number): boolean {
  const vma = findVma(mm, addr);
  return vma !== undefined && vma.start !== addr && !isAligned(addr, hugePageSize(vma));
}

/** Cut [start, end) out of every VMA and forget the contents of the pages there. */
function removeRange(mm: HostMm, start: number, end: number): void {
  const kept: Vma[] = [];
  for (const v of mm.vmas) {
    if (v.end <= start || v.start >= end) kept.push(v);
    else {
      if (v.start < start) kept.push({ ...v, end: start });
      if (v.end > end) kept.push({ ...v, start: end });
    }
  }
  mm.vmas = kept.sort((a, b) => a.start - b.start);
  dropPages(mm.memory, start / PAGE_SIZE, end / PAGE_SIZE);
}

/** mmap(MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS [| MAP_HUGETLB | MAP_HUGE_1GB]). */
export function mmap(mm: HostMm, cmd: Mmap): Outcome {
  const huge = cmd.backing === 'hugetlb1g' ? SZ_1G : PAGE_SIZE;
  if (!isAligned(cmd.hva, PAGE_SIZE) || cmd.size <= 0) return { kind: 'err', errno: 'EINVAL' };
  if (!isAligned(cmd.hva, huge)) return { kind: 'err', errno: 'EINVAL' };
  const end = cmd.hva + roundUp(cmd.size, huge);
  if (end > TASK_SIZE) return { kind: 'err', errno: 'ENOMEM' };
  if (splitWouldFail(mm, cmd.hva) || splitWouldFail(mm, end)) return { kind: 'err', errno: 'EINVAL' };
  removeRange(mm, cmd.hva, end);
  mm.vmas.push({ start: cmd.hva, end, prot: cmd.prot, backing: cmd.backing });
  mm.vmas.sort((a, b) => a.start - b.start);
  return { kind: 'ok' };
}

export function munmap(mm: HostMm, cmd: Munmap): Outcome {
  if (!isAligned(cmd.hva, PAGE_SIZE) || cmd.size <= 0) return { kind: 'err', errno: 'EINVAL' };
  const end = cmd.hva + roundUp(cmd.size, PAGE_SIZE);
  if (end > TASK_SIZE) return { kind: 'err', errno: 'EINVAL' };
  if (splitWouldFail(mm, cmd.hva) || splitWouldFail(mm, end)) return { kind: 'err', errno: 'EINVAL' };
  removeRange(mm, cmd.hva, end);
  return { kind: 'ok' };
}

/**
 * mprotect walks the VMAs from the start address and changes each in turn; at the first hole it
 * stops with ENOMEM, keeping what it already changed (mm/mprotect.c do_mprotect_pkey).
 */
export function mprotect(mm: HostMm, cmd: Mprotect): Outcome {
  if (!isAligned(cmd.hva, PAGE_SIZE)) return { kind: 'err', errno: 'EINVAL' };
  if (cmd.size === 0) return { kind: 'ok' };
  const end = cmd.hva + roundUp(cmd.size, PAGE_SIZE);
  if (end > TASK_SIZE) return { kind: 'err', errno: 'ENOMEM' };
  let cur = cmd.hva;
  while (cur < end) {
    const vma = findVma(mm, cur);
    if (!vma) return { kind: 'err', errno: 'ENOMEM' };
    const pieceEnd = Math.min(end, vma.end);
    if (splitWouldFail(mm, cur) || (pieceEnd < vma.end && !isAligned(pieceEnd, hugePageSize(vma)))) {
      return { kind: 'err', errno: 'EINVAL' };
    }
    const pieces: Vma[] = [];
    if (vma.start < cur) pieces.push({ ...vma, end: cur });
    pieces.push({ ...vma, start: cur, end: pieceEnd, prot: cmd.prot });
    if (pieceEnd < vma.end) pieces.push({ ...vma, start: pieceEnd });
    mm.vmas = [...mm.vmas.filter((v) => v !== vma), ...pieces].sort((a, b) => a.start - b.start);
    cur = pieceEnd;
  }
  return { kind: 'ok' };
}

/**
 * MADV_DONTNEED zaps every mapped part of the range (private anonymous memory then reads zero)
 * and reports ENOMEM at the end if the range had holes. On hugetlb the start must be huge-page
 * aligned (EINVAL) and the end is rounded down (madvise_dontneed_free_valid_vma).
 */
export function madviseDontneed(mm: HostMm, cmd: MadviseDontneed): Outcome {
  if (!isAligned(cmd.hva, PAGE_SIZE)) return { kind: 'err', errno: 'EINVAL' };
  if (cmd.size === 0) return { kind: 'ok' };
  const end = cmd.hva + roundUp(cmd.size, PAGE_SIZE);
  let sawHole = false;
  let cur = cmd.hva;
  while (cur < end) {
    const vma = findVma(mm, cur);
    if (!vma) {
      sawHole = true;
      const next = mm.vmas.find((v) => v.start > cur);
      cur = next ? Math.min(next.start, end) : end;
      continue;
    }
    let pieceEnd = Math.min(end, vma.end);
    if (vma.backing === 'hugetlb1g') {
      if (!isAligned(cur, SZ_1G)) return { kind: 'err', errno: 'EINVAL' };
      pieceEnd = alignDown(pieceEnd, SZ_1G);
    }
    dropPages(mm.memory, cur / PAGE_SIZE, pieceEnd / PAGE_SIZE);
    cur = Math.min(end, vma.end);
  }
  return sawHole ? { kind: 'err', errno: 'ENOMEM' } : { kind: 'ok' };
}

/** A host access is all or nothing: every page it touches must allow it (the generator never straddles). */
export function hostWrite(mm: HostMm, cmd: HostWrite): Outcome {
  const parts = splitByPage(cmd.hva, cmd.len);
  if (!parts.every((p) => hostCanAccess(mm, p.addr, true))) return { kind: 'segv' };
  storeBytes(mm.memory, cmd.hva, valueToBytes(cmd.value, cmd.len));
  return { kind: 'ok' };
}

export function hostRead(mm: HostMm, cmd: HostRead): Outcome {
  const parts = splitByPage(cmd.hva, cmd.len);
  if (!parts.every((p) => hostCanAccess(mm, p.addr, false))) return { kind: 'segv' };
  return { kind: 'hostData', value: bytesToValue(loadBytes(mm.memory, cmd.hva, cmd.len)) };
}
