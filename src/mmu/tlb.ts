// Per-vCPU TLBs: cached stage-2 translations that stay until a TLBI removes them, whatever the
// page tables say meanwhile (SPEC-DIGEST 1.7). A guest access that hits here never looks at the
// page tables, which is why a missed invalidation shows up as a wrong value.
// Indexed twice: by level and base (a lookup probes the three leaf sizes) and as a list ordered by
// base (sorted-chunks.ts), so a TLBI finds what it covers by binary search instead of scanning
// every entry (a slow unmap issues one TLBI per leaf). Mutation point: tlb-fill-appends-unsorted.
import { defineMutant, Mutation } from './mutants.js';
import { levelSize, type Level, type Perms } from './pgtable.js';
import { SortedChunks } from './sorted-chunks.js';

export const TLB_FILL_APPENDS_UNSORTED = defineMutant({
  name: 'tlb-fill-appends-unsorted',
  description:
    "a TLB fill appends the entry to the TLB's range index instead of inserting it in base order, so " +
    'a later TLBI, searching that index by binary search, can miss it and leave it stale',
  source: "own (an index of the TLB that stops being sorted: the TLBI's range search goes blind)",
  killedBy: ['tlb-coherent'],
});

/** `private`: the translation serves private accesses only (gmem-private), shared ones otherwise. */
export interface TlbEntry {
  ipaBase: number;
  level: Level;
  pfn: number;
  perms: Perms;
  private?: boolean;
}

const LEAF_LEVELS: readonly Level[] = [3, 2, 1];
const keyOf = (level: Level, ipaBase: number): string => `${level}:${ipaBase}`;
const endOf = (e: TlbEntry): number => e.ipaBase + levelSize(e.level);

export class Tlb {
  private readonly byKey = new Map<string, TlbEntry>();
  /**
   * The same entries ordered by base. They never overlap (fill drops whatever a new entry covers),
   * so they are ordered by end as well, which is what the range search relies on.
   */
  private readonly ordered = new SortedChunks<TlbEntry>(endOf);

  constructor(private readonly mutation: Mutation = new Mutation()) {}

  /** Read-only: every change goes through fill, invalidate and removeIfSame to keep the order. */
  get entries(): ReadonlyMap<string, TlbEntry> {
    return this.byKey;
  }

  lookup(ipa: number): TlbEntry | undefined {
    for (const level of LEAF_LEVELS) {
      const size = levelSize(level);
      const entry = this.byKey.get(keyOf(level, ipa - (ipa % size)));
      if (entry) return entry;
    }
    return undefined;
  }

  fill(entry: TlbEntry): void {
    this.invalidate(entry.ipaBase, endOf(entry));
    this.byKey.set(keyOf(entry.level, entry.ipaBase), entry);
    if (this.mutation.on(TLB_FILL_APPENDS_UNSORTED)) this.ordered.appendUnordered(entry);
    else this.ordered.insert(entry);
  }

  /** The entries overlapping [start, end), with their keys: O(log n + what they are). */
  overlapping(start: number, end: number): [string, TlbEntry][] {
    const out: [string, TlbEntry][] = [];
    // Ordered by end, and disjoint: from the first entry ending after start, until one begins at end.
    this.ordered.forEachAfter(start, (e) => {
      if (e.ipaBase >= end) return false;
      out.push([keyOf(e.level, e.ipaBase), e]);
      return true;
    });
    return out;
  }

  /** Drop every entry overlapping [start, end). */
  invalidate(start: number, end: number): void {
    if (this.byKey.size === 0) return;
    for (const [key, e] of this.overlapping(start, end)) {
      this.byKey.delete(key);
      this.ordered.remove(e);
    }
  }

  /** Drop the entry under `key` if it is still `entry` (a completed TLBI removes what it covered). */
  removeIfSame(key: string, entry: TlbEntry): void {
    if (this.byKey.get(key) !== entry) return;
    this.byKey.delete(key);
    this.ordered.remove(entry);
  }
}
