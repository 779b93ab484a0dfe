// Per-vCPU TLBs: cached stage-2 translations that stay until a TLBI removes them, whatever the
// page tables say meanwhile (SPEC-DIGEST 1.7). A guest access that hits here never looks at the
// page tables, which is why a missed invalidation shows up as a wrong value.
// Indexed twice: by level and base (a lookup probes the three leaf sizes) and as a list ordered by
// base, so a TLBI finds what it covers by binary search instead of scanning every entry (a slow
// unmap issues one TLBI per leaf). Mutation point: tlbi-search-misses-covering-entry.
import { defineMutant, Mutation } from './mutants.js';
import { levelSize, type Level, type Perms } from './pgtable.js';

export const TLBI_SEARCH_MISSES_COVERING_ENTRY = defineMutant({
  name: 'tlbi-search-misses-covering-entry',
  description:
    "the TLB index starts a TLBI's search at the first entry based at or after the range start, so a " +
    'block entry that begins below the range and covers it survives the TLBI',
  source: 'own (a range TLBI that fails to hit a larger cached block: the ARM ARM requires it to)',
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
  private readonly ordered: TlbEntry[] = [];

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
    this.ordered.splice(this.firstEndingAfter(entry.ipaBase), 0, entry);
  }

  /** The entries overlapping [start, end), with their keys: O(log n + what they are). */
  overlapping(start: number, end: number): [string, TlbEntry][] {
    const out: [string, TlbEntry][] = [];
    for (let i = this.firstEndingAfter(start); i < this.ordered.length && this.ordered[i]!.ipaBase < end; i++) {
      const e = this.ordered[i]!;
      out.push([keyOf(e.level, e.ipaBase), e]);
    }
    return out;
  }

  /** Drop every entry overlapping [start, end). */
  invalidate(start: number, end: number): void {
    const first = this.firstEndingAfter(start);
    let last = first;
    while (last < this.ordered.length && this.ordered[last]!.ipaBase < end) {
      const e = this.ordered[last++]!;
      this.byKey.delete(keyOf(e.level, e.ipaBase));
    }
    if (last > first) this.ordered.splice(first, last - first);
  }

  /** Drop the entry under `key` if it is still `entry` (a completed TLBI removes what it covered). */
  removeIfSame(key: string, entry: TlbEntry): void {
    if (this.byKey.get(key) !== entry) return;
    this.byKey.delete(key);
    const at = this.firstEndingAfter(entry.ipaBase);
    if (this.ordered[at] === entry) this.ordered.splice(at, 1);
  }

  /** The position of the first entry whose range ends after `ipa` (the first that can reach it). */
  private firstEndingAfter(ipa: number): number {
    const byBase = this.mutation.on(TLBI_SEARCH_MISSES_COVERING_ENTRY);
    let lo = 0;
    let hi = this.ordered.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const e = this.ordered[mid]!;
      if ((byBase ? e.ipaBase : endOf(e)) <= ipa - (byBase ? 1 : 0)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
