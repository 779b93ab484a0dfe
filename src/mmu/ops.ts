// The one door for side effects on page tables, TLBs and table-page lifetimes (DESIGN.md). Every
// effect is recorded in an event log so that ordering rules (break-before-make, INV-3) can be
// checked after each command, and counted so campaigns can report what they exercised.
import type { Mutation } from './mutants.js';
import { INVALID, isValid, levelSize, type Level, type Pte, type TablePage } from './pgtable.js';
import type { Tlb } from './tlb.js';

export interface PteSlot { readonly table: TablePage; readonly index: number; readonly ipa: number; readonly level: Level }

export type MmuEvent =
  | { t: 'pte'; table: number; index: number; ipa: number; level: Level; old: Pte; new: Pte }
  | { t: 'tlbi'; start: number; end: number }
  | { t: 'dsb' }
  | { t: 'ref'; table: number; delta: 1 | -1; refcount: number }
  | { t: 'free'; table: number };

export interface MmuStats {
  pteWrites: number;
  tlbis: number;
  tablesAllocated: number;
  tablesFreed: number;
  /** Leaves installed by the fault path, by level (3 = 4K, 2 = 2M, 1 = 1G). */
  leavesMapped: Record<1 | 2 | 3, number>;
  splits: number;
}

export class MmuOps {
  events: MmuEvent[] = [];
  readonly stats: MmuStats = { pteWrites: 0, tlbis: 0, tablesAllocated: 0, tablesFreed: 0, leavesMapped: { 1: 0, 2: 0, 3: 0 }, splits: 0 };
  private nextTableId = 0;

  constructor(private readonly tlbs: readonly Tlb[], private readonly mutation: Mutation) {}

  allocTable(level: Level): TablePage {
    this.stats.tablesAllocated++;
    return { id: this.nextTableId++, level, entries: new Map(), refcount: 1, freed: false };
  }

  getPage(table: TablePage): void {
    table.refcount++;
    this.events.push({ t: 'ref', table: table.id, delta: 1, refcount: table.refcount });
  }

  putPage(table: TablePage): void {
    table.refcount--;
    this.events.push({ t: 'ref', table: table.id, delta: -1, refcount: table.refcount });
    if (table.refcount === 0) this.freeTable(table);
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
    this.events.push({ t: 'pte', table: slot.table.id, index: slot.index, ipa: slot.ipa, level: slot.level, old, new: pte });
  }

  /** Broadcast TLB invalidation of [start, end) to every vCPU, completed (TLBI + DSB). */
  tlbiRange(start: number, end: number): void {
    this.stats.tlbis++;
    const targets = this.mutation.on('tlbi-skips-other-vcpus') ? this.tlbs.slice(0, 1) : this.tlbs;
    for (const tlb of targets) tlb.invalidate(start, end);
    this.events.push({ t: 'tlbi', start, end });
  }

  tlbiEntry(slot: PteSlot): void {
    this.tlbiRange(slot.ipa, slot.ipa + levelSize(slot.level));
  }

  dsb(): void {
    this.events.push({ t: 'dsb' });
  }

  /** Start a fresh event log for the next command. */
  takeEvents(): MmuEvent[] {
    const events = this.events;
    this.events = [];
    return events;
  }
}
