// The one door for side effects on page tables, TLBs and table-page lifetimes (DESIGN.md). Every
// effect is recorded in an event log so that ordering rules (break-before-make, INV-3) can be
// checked after each command, and counted so campaigns can report what they exercised.
import type { Mutation } from './mutants.js';
import { INVALID, isValid, leaves, levelSize, type Level, type Pte, type TablePage } from './pgtable.js';
import type { Tlb } from './tlb.js';

export interface PteSlot { readonly table: TablePage; readonly index: number; readonly ipa: number; readonly level: Level }

/** ipa: one entry (TLBI IPAS2E1IS); range: FEAT_TLBIRANGE (TLBI RIPAS2E1IS); vmid: the whole VMID (TLBI VMALLS12E1IS). */
export type TlbiKind = 'ipa' | 'range' | 'vmid';

export type MmuEvent =
  /**
   * A PTE write. When a table entry is invalidated, `detached` lists the leaves of the subtree it
   * cut off (bookkeeping by the ops layer, so the checkers see what became unreachable).
   */
  | { t: 'pte'; table: number; index: number; ipa: number; level: Level; old: Pte; new: Pte; detached?: { ipa: number; level: Level; pfn: number }[] }
  /** Issued; it takes effect on every TLB at the next DSB. */
  | { t: 'tlbi'; kind: TlbiKind; start: number; end: number }
  | { t: 'dsb' }
  /** Clean + invalidate to PoC of frames [pfn, pfn + pages) (arm64 without FEAT_S2FWB). */
  | { t: 'cmo'; pfn: number; pages: number }
  /** An unmap path (INV-1, INV-3, INV-4 are about what happens between these two). */
  | { t: 'unmap-start'; start: number; end: number; path: string }
  | { t: 'unmap-end' }
  | { t: 'ref'; table: number; delta: 1 | -1; refcount: number; freed: boolean }
  | { t: 'free'; table: number };

export interface MmuStats {
  pteWrites: number;
  tlbis: number;
  tablesAllocated: number;
  tablesFreed: number;
  /** Leaves installed by the fault path, by level (3 = 4K, 2 = 2M, 1 = 1G). */
  leavesMapped: Record<1 | 2 | 3, number>;
  splits: number;
  /** Cache maintenance operations (arm64 without FEAT_S2FWB; S0's "CMO storm" metric). */
  cmos: number;
  /** Stage-1 context discarded along with a stage-2 invalidation (BUG-15, a metric). */
  s1ContextFlushes: number;
  /** Unmaps that took the table-disconnect fast path (arm64-unmap). */
  fastUnmaps: number;
}

export class MmuOps {
  events: MmuEvent[] = [];
  readonly stats: MmuStats = {
    pteWrites: 0, tlbis: 0, tablesAllocated: 0, tablesFreed: 0, leavesMapped: { 1: 0, 2: 0, 3: 0 }, splits: 0,
    cmos: 0, s1ContextFlushes: 0, fastUnmaps: 0,
  };
  private nextTableId = 0;
  /** TLBIs issued and not yet completed by a DSB. */
  private pending: { start: number; end: number }[] = [];

  constructor(private readonly tlbs: readonly Tlb[], private readonly mutation: Mutation) {}

  allocTable(level: Level): TablePage {
    this.stats.tablesAllocated++;
    return { id: this.nextTableId++, level, entries: new Map(), refcount: 1, freed: false };
  }

  getPage(table: TablePage): void {
    table.refcount++;
    this.events.push({ t: 'ref', table: table.id, delta: 1, refcount: table.refcount, freed: table.freed });
  }

  putPage(table: TablePage): void {
    table.refcount--;
    this.events.push({ t: 'ref', table: table.id, delta: -1, refcount: table.refcount, freed: table.freed });
    if (table.refcount === 0 && !table.freed) this.freeTable(table);
  }

  freeTable(table: TablePage): void {
    table.freed = true;
    table.refcount = 0;
    this.stats.tablesFreed++;
    this.events.push({ t: 'free', table: table.id });
  }

  writePte(slot: PteSlot, pte: Pte): void {
    const old = slot.table.entries.get(slot.index) ?? INVALID;
    if (isValid(pte)) slot.table.entries.set(slot.index, pte);
    else slot.table.entries.delete(slot.index);
    this.stats.pteWrites++;
    const detached = old.kind === 'table' && !isValid(pte)
      ? [...leaves(old.table, slot.ipa)].map((l) => ({ ipa: l.ipaBase, level: l.leaf.level, pfn: l.leaf.pfn }))
      : undefined;
    this.events.push({ t: 'pte', table: slot.table.id, index: slot.index, ipa: slot.ipa, level: slot.level, old, new: pte, ...(detached?.length ? { detached } : {}) });
  }

  /** Issue a broadcast TLB invalidation of [start, end); it takes effect at the next DSB. */
  tlbi(kind: TlbiKind, start: number, end: number): void {
    this.stats.tlbis++;
    this.pending.push(kind === 'vmid' ? { start: 0, end: Number.POSITIVE_INFINITY } : { start, end });
    this.events.push({ t: 'tlbi', kind, start, end });
  }

  /** __kvm_tlb_flush_vmid_ipa(): DSB (publish the PTE), TLBI, DSB (complete it). */
  tlbiRange(start: number, end: number): void {
    this.dsb();
    this.tlbi('ipa', start, end);
    this.dsb();
  }

  tlbiEntry(slot: PteSlot): void {
    this.tlbiRange(slot.ipa, slot.ipa + levelSize(slot.level));
  }

  /** Completes every TLBI issued so far, on every vCPU's TLB. */
  dsb(): void {
    this.events.push({ t: 'dsb' });
    const targets = this.mutation.on('tlbi-skips-other-vcpus') ? this.tlbs.slice(0, 1) : this.tlbs;
    for (const p of this.pending) for (const tlb of targets) tlb.invalidate(p.start, p.end);
    this.pending = [];
  }

  cmo(pfn: number, pages: number): void {
    this.stats.cmos++;
    this.events.push({ t: 'cmo', pfn, pages });
  }

  mark(event: Extract<MmuEvent, { t: 'unmap-start' | 'unmap-end' }>): void {
    this.events.push(event);
  }

  /** Start a fresh event log for the next command. */
  takeEvents(): MmuEvent[] {
    const events = this.events;
    this.events = [];
    return events;
  }
}
