// Memory has content (DESIGN.md): a stale translation must show up as a wrong value. Pages are
// sparse maps from byte offset to a non-zero byte; an absent page or byte reads as zero. The same
// representation serves host pages (keyed by hva page) and guest_memfd pages (keyed by file page).
import { PAGE_SIZE } from './abi.js';

export type PageData = Map<number, number>;
/** Page number -> contents. */
export type Memory = Map<number, PageData>;

export function valueToBytes(value: bigint, len: number): number[] {
  const bytes: number[] = [];
  let v = BigInt.asUintN(64, value);
  for (let i = 0; i < len; i++) {
    bytes.push(Number(v & 0xffn));
    v >>= 8n;
  }
  return bytes;
}

export function bytesToValue(bytes: readonly number[]): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i] ?? 0);
  return v;
}

/**
 * Which pages of a tracked Memory were written or dropped since tracking (re)started: bookkeeping
 * for the differential, which then compares only those pages (no KVM rule here). A Memory that is
 * not tracked (a fresh clone, say) has no record: its reader compares everything.
 */
const changedPages = new WeakMap<Memory, Set<number>>();

/** Start (or restart) recording the pages of `mem` that change. */
export function trackPageChanges(mem: Memory): void {
  changedPages.set(mem, new Set());
}

/** The pages of `mem` changed since trackPageChanges, or undefined when it is not tracked. */
export function pageChangesOf(mem: Memory): ReadonlySet<number> | undefined {
  return changedPages.get(mem);
}

export function loadByte(mem: Memory, addr: number): number {
  const page = mem.get(Math.floor(addr / PAGE_SIZE));
  return page?.get(addr % PAGE_SIZE) ?? 0;
}

export function storeByte(mem: Memory, addr: number, byte: number): void {
  const pageNo = Math.floor(addr / PAGE_SIZE);
  changedPages.get(mem)?.add(pageNo);
  let page = mem.get(pageNo);
  if (byte === 0) {
    page?.delete(addr % PAGE_SIZE);
    return;
  }
  if (!page) {
    page = new Map();
    mem.set(pageNo, page);
  }
  page.set(addr % PAGE_SIZE, byte);
}

export function loadBytes(mem: Memory, addr: number, len: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < len; i++) out.push(loadByte(mem, addr + i));
  return out;
}

export function storeBytes(mem: Memory, addr: number, bytes: readonly number[]): void {
  bytes.forEach((b, i) => {
    storeByte(mem, addr + i, b);
  });
}

/** Forget the contents of pages [firstPage, endPage): they read as zero again. */
export function dropPages(mem: Memory, firstPage: number, endPage: number): void {
  const changed = changedPages.get(mem);
  for (const page of [...mem.keys()])
    if (page >= firstPage && page < endPage) {
      mem.delete(page);
      changed?.add(page);
    }
}

export function pagesEqual(a: PageData | undefined, b: PageData | undefined): boolean {
  const sizeA = a?.size ?? 0;
  const sizeB = b?.size ?? 0;
  if (sizeA !== sizeB) return false;
  if (!a || !b) return true;
  for (const [off, byte] of a) if (b.get(off) !== byte) return false;
  return true;
}

/** Split [addr, addr+len) at page boundaries. */
export function splitByPage(addr: number, len: number): { addr: number; len: number }[] {
  const parts: { addr: number; len: number }[] = [];
  let cur = addr;
  const end = addr + len;
  while (cur < end) {
    const pageEnd = (Math.floor(cur / PAGE_SIZE) + 1) * PAGE_SIZE;
    const partEnd = Math.min(end, pageEnd);
    parts.push({ addr: cur, len: partEnd - cur });
    cur = partEnd;
  }
  return parts;
}
