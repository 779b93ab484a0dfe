// Per-vCPU TLBs: cached stage-2 translations that stay until a TLBI removes them, whatever the
// page tables say meanwhile (SPEC-DIGEST 1.7). A guest access that hits here never looks at the
// page tables, which is why a missed invalidation shows up as a wrong value.
import { levelSize, type Level, type Perms } from './pgtable.js';

/** `private`: the translation serves private accesses only (gmem-private), shared ones otherwise. */
export interface TlbEntry {
  ipaBase: number;
  level: Level;
  pfn: number;
  perms: Perms;
  private?: boolean;
}

const LEAF_LEVELS: readonly Level[] = [3, 2, 1];

export class Tlb {
  readonly entries = new Map<string, TlbEntry>();

  lookup(ipa: number): TlbEntry | undefined {
    for (const level of LEAF_LEVELS) {
      const size = levelSize(level);
      const entry = this.entries.get(`${level}:${ipa - (ipa % size)}`);
      if (entry) return entry;
    }
    return undefined;
  }

  fill(entry: TlbEntry): void {
    this.invalidate(entry.ipaBase, entry.ipaBase + levelSize(entry.level));
    this.entries.set(`${entry.level}:${entry.ipaBase}`, entry);
  }

  /** The entries overlapping [start, end), with their keys. */
  overlapping(start: number, end: number): [string, TlbEntry][] {
    return [...this.entries].filter(([, e]) => e.ipaBase < end && start < e.ipaBase + levelSize(e.level));
  }

  /**
   * Drop every entry overlapping [start, end): by probing the keys that could overlap when that is
   * cheaper than a scan.
   */
  invalidate(start: number, end: number): void {
    const probes = LEAF_LEVELS.reduce<number>((n, level) => n + Math.ceil((end - start) / levelSize(level)) + 1, 0);
    if (probes >= this.entries.size) {
      for (const [key, e] of this.entries) {
        if (e.ipaBase < end && start < e.ipaBase + levelSize(e.level)) this.entries.delete(key);
      }
      return;
    }
    for (const level of LEAF_LEVELS) {
      const size = levelSize(level);
      for (let base = start - (start % size); base < end; base += size) this.entries.delete(`${level}:${base}`);
    }
  }
}
