// Host physical memory: frames with contents and an allocator that reuses freed 4 KiB frames first,
// so a stale translation to a freed frame reads or corrupts whatever the frame holds next.
import type { PageData } from '../../model/memory.js';

/** The shared zero page: read-only everywhere, always reads zero. */
export const ZERO_PFN = 0;

interface ContiguousRun {
  readonly count: number;
  readonly freed: Set<number>;
}

export class PhysMem {
  private readonly contents = new Map<number, PageData>();
  private readonly singles = new Set<number>();
  /** THP / hugetlb allocations by base pfn; their frames may be freed one by one after a split. */
  private readonly runs = new Map<number, ContiguousRun>();
  private readonly freeList: number[] = [];
  private nextPfn = 1;
  /** Frames whose contents changed (written, zeroed, freed) since the last takeWritten(). */
  private written = new Set<number>();

  /** The frames whose contents changed since the last call (the invariants' touched set). */
  takeWritten(): Set<number> {
    const out = this.written;
    this.written = new Set();
    return out;
  }

  alloc(): number {
    const pfn = this.freeList.pop() ?? this.nextPfn++;
    this.singles.add(pfn);
    if (this.contents.delete(pfn)) this.written.add(pfn);
    return pfn;
  }

  /** A naturally aligned run of `count` fresh frames (a THP or hugetlb page). */
  allocContiguous(count: number): number {
    const base = Math.ceil(this.nextPfn / count) * count;
    this.nextPfn = base + count;
    this.runs.set(base, { count, freed: new Set() });
    return base;
  }

  private runOf(pfn: number): [number, ContiguousRun] | undefined {
    for (const [base, run] of this.runs) if (pfn >= base && pfn < base + run.count) return [base, run];
    return undefined;
  }

  free(pfn: number): void {
    if (pfn === ZERO_PFN) return;
    if (this.contents.delete(pfn)) this.written.add(pfn);
    if (this.singles.delete(pfn)) {
      this.freeList.push(pfn);
      return;
    }
    const found = this.runOf(pfn);
    if (!found) return;
    const [base, run] = found;
    run.freed.add(pfn);
    if (run.freed.size === run.count) this.runs.delete(base);
  }

  /** Free a whole run at once (a huge page unmapped as a unit). */
  freeContiguous(base: number): void {
    const run = this.runs.get(base);
    if (!run) return;
    for (const [pfn] of this.pagesIn(base, run.count)) {
      this.contents.delete(pfn);
      this.written.add(pfn);
    }
    this.runs.delete(base);
  }

  isAllocated(pfn: number): boolean {
    if (pfn === ZERO_PFN || this.singles.has(pfn)) return true;
    const found = this.runOf(pfn);
    return found !== undefined && !found[1].freed.has(pfn);
  }

  page(pfn: number): PageData | undefined {
    return this.contents.get(pfn);
  }

  /** Frames in [base, base + count) that have contents. */
  pagesIn(base: number, count: number): [number, PageData][] {
    return [...this.contents].filter(([pfn]) => pfn >= base && pfn < base + count);
  }

  readByte(pfn: number, offset: number): number {
    return this.contents.get(pfn)?.get(offset) ?? 0;
  }

  writeByte(pfn: number, offset: number, byte: number): void {
    if (pfn === ZERO_PFN) throw new Error('engine bug: write to the zero page');
    this.written.add(pfn);
    let page = this.contents.get(pfn);
    if (byte === 0) {
      page?.delete(offset);
      return;
    }
    if (!page) {
      page = new Map();
      this.contents.set(pfn, page);
    }
    page.set(offset, byte);
  }
}
