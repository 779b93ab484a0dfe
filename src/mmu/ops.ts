// The one door for side effects on page tables, TLBs and table-page lifetimes (DESIGN.md). Every
// effect is recorded in an event log so that ordering rules (break-before-make, INV-3) can be
// checked after each command, and counted so campaigns can report what they exercised.
import { defineMutant, type Mutation } from './mutants.js';
import { INVALID, isValid, leaves, levelSize, type Level, type Pte, type TablePage } from './pgtable.js';
import type { StoreBuffer } from './store-buffer.js';
import type { Tlb, TlbEntry } from './tlb.js';

export const TLBI_SKIPS_OTHER_VCPUS = defineMutant({
  name: 'tlbi-skips-other-vcpus',
  description: 'TLB invalidation reaches only vCPU 0 instead of being broadcast to every vCPU',
  source: 'own (kvm_flush_remote_tlbs without the IPI to other vCPUs)',
  killedBy: ['tlb-coherent', 'differential'],
});

export interface PteSlot {
  readonly table: TablePage;
  readonly index: number;
  readonly ipa: number;
  readonly level: Level;
}

/**
 * ipa: one entry (TLBI IPAS2E1IS); range: FEAT_TLBIRANGE (TLBI RIPAS2E1IS); vmid: the whole VMID
 * (TLBI VMALLS12E1IS).
 */
export type TlbiKind = 'ipa' | 'range' | 'vmid';

export type MmuEvent =
  /**
   * A PTE write. When a table entry is invalidated, `detached` lists the leaves of the subtree it
   * cut off (bookkeeping by the ops layer, so the checkers see what became unreachable).
   */
  | {
      t: 'pte';
      table: number;
      index: number;
      ipa: number;
      level: Level;
      old: Pte;
      new: Pte;
      detached?: { ipa: number; level: Level; pfn: number }[];
    }
  /** Issued; it takes effect on every TLB at the next DSB. */
  | { t: 'tlbi'; kind: TlbiKind; start: number; end: number }
  | { t: 'dsb' }
  /** Clean + invalidate to PoC of frames [pfn, pfn + pages) (arm64 without FEAT_S2FWB). */
  | { t: 'cmo'; pfn: number; pages: number }
  /** An unmap path (INV-1, INV-3, INV-4 are about what happens between these two). */
  | { t: 'unmap-start'; start: number; end: number; path: string }
  | { t: 'unmap-end' }
  | { t: 'ref'; table: number; delta: 1 | -1; refcount: number; freed: boolean }
  /** A vCPU's hardware table walk read a descriptor of this table page (INV-5: never a freed one). */
  | { t: 'walk'; vcpu: number; table: number; level: Level; freed: boolean }
  | { t: 'free'; table: number }
  /**
   * An RMP update (gmem-private): a pfn assigned private at a level, reverted to shared, or its
   * 2 MiB entry smashed to 4 KiB. `wasAssigned` is the entry's state before, for the RMP checks.
   */
  | { t: 'rmp'; op: 'assign'; pfn: number; level: 2 | 3; wasAssigned: boolean }
  | { t: 'rmp'; op: 'revert' | 'smash'; pfn: number; wasAssigned: boolean };

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

/**
 * A vCPU's stage-2 table walk in flight (vcpu-run.ts walks level by level). A DSB that completes a
 * TLBI waits for the walks that started before it (ARM ARM D8.13.4: completion of the TLBI includes
 * the walks that could use the old entries); the model aborts them instead, and they restart from
 * the root, which is the same to every observer and never blocks.
 */
export interface HardwareWalk {
  readonly vcpu: number;
  aborted: boolean;
}

export class MmuOps {
  events: MmuEvent[] = [];
  readonly stats: MmuStats = {
    pteWrites: 0,
    tlbis: 0,
    tablesAllocated: 0,
    tablesFreed: 0,
    leavesMapped: { 1: 0, 2: 0, 3: 0 },
    splits: 0,
    cmos: 0,
    s1ContextFlushes: 0,
    fastUnmaps: 0,
  };
  private nextTableId = 0;
  /**
   * TLBIs issued and not yet completed: the entries each one will have removed once a DSB completes
   * it. Only entries cached *before* the TLBI was issued are covered; one refilled afterwards from a
   * still-valid PTE survives (that is what makes an early TLBI a bug).
   */
  private pending: { tlb: Tlb; key: string; entry: TlbEntry }[] = [];
  private readonly walks = new Set<HardwareWalk>();
  private readonly held = new Map<TablePage, number>();
  /**
   * arm64 (S4): the store buffer that invalidating PTE stores go through on their way to other
   * vCPUs' table walks, and what those walks still read meanwhile (table id:index -> old entry).
   * The engine's software walkers read the tables themselves: they run on the storing thread
   * (store forwarding) or are excluded by mmu_lock, whose release orders the stores.
   */
  walkerStores: StoreBuffer | null = null;
  private readonly staleForWalkers = new Map<string, Pte>();
  /** A TLBI was issued since the last DSB (whether or not a TLB held anything it covers). */
  private tlbiIssued = false;
  /** Shared (mmu_lock read) software walkers inside kvm_pgtable_walk_begin/end (an RCU read section). */
  private sharedWalkers = 0;
  /** Tables a shared walker unlinked, freed by call_rcu once no shared walker is inside any more. */
  private rcuPending: { table: TablePage; base: number }[] = [];

  constructor(
    private readonly tlbs: readonly Tlb[],
    readonly mutation: Mutation,
  ) {}

  allocTable(level: Level): TablePage {
    this.stats.tablesAllocated++;
    return { id: this.nextTableId++, level, entries: new Map(), refcount: 1, freed: false };
  }

  getPage(table: TablePage): void {
    table.refcount++;
    this.events.push({ t: 'ref', table: table.id, delta: 1, refcount: table.refcount, freed: table.freed });
  }

  /**
   * A reference an operation in flight holds on a table page across its points (the fast unmap's
   * get_page on the page holding the broken PTE): refcount = 1 + valid entries + held.
   */
  hold(table: TablePage): void {
    this.held.set(table, (this.held.get(table) ?? 0) + 1);
    this.getPage(table);
  }

  /** Drop a reference taken by hold(); a page freed meanwhile (BUG-11) is not touched again. */
  unhold(table: TablePage): void {
    const n = (this.held.get(table) ?? 0) - 1;
    if (n > 0) this.held.set(table, n);
    else this.held.delete(table);
    if (!table.freed) this.putPage(table);
  }

  /** References held on `table` by operations in flight. */
  heldOn(table: TablePage): number {
    return this.held.get(table) ?? 0;
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
    // A hardware walker may refill a TLB from any valid PTE at any moment (SPEC-DIGEST 1.7): take
    // the worst case, that every vCPU cached the old leaf just before this write. Only a TLBI
    // completed after the write removes it, so a flush issued too early leaves it stale.
    if (old.kind === 'leaf' && !isRelaxation(old, pte)) {
      for (const tlb of this.tlbs)
        tlb.fill({
          ipaBase: slot.ipa,
          level: old.level,
          pfn: old.pfn,
          perms: old.perms,
          ...(old.private ? { private: true } : {}),
        });
    }
    if (isValid(pte)) slot.table.entries.set(slot.index, pte);
    else slot.table.entries.delete(slot.index);
    this.bufferForWalkers(slot, old, pte);
    this.stats.pteWrites++;
    const detached =
      old.kind === 'table' && !isValid(pte)
        ? [...leaves(old.table, slot.ipa)].map((l) => ({ ipa: l.ipaBase, level: l.leaf.level, pfn: l.leaf.pfn }))
        : undefined;
    this.events.push({
      t: 'pte',
      table: slot.table.id,
      index: slot.index,
      ipa: slot.ipa,
      level: slot.level,
      old,
      new: pte,
      ...(detached?.length ? { detached } : {}),
    });
  }

  /** Issue a broadcast TLB invalidation of [start, end); it takes effect at the next DSB. */
  tlbi(kind: TlbiKind, start: number, end: number): void {
    this.stats.tlbis++;
    const [from, to] = kind === 'vmid' ? [0, Number.POSITIVE_INFINITY] : [start, end];
    const targets = this.mutation.on(TLBI_SKIPS_OTHER_VCPUS) ? this.tlbs.slice(0, 1) : this.tlbs;
    for (const tlb of targets)
      for (const [key, entry] of tlb.overlapping(from, to)) this.pending.push({ tlb, key, entry });
    this.tlbiIssued = true;
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

  /**
   * kvm_clear_pte / stage2_try_break_pte on arm64: until the store is visible (a DSB ishst, or
   * the schedule), another vCPU's table walk still reads `old`. A valid store is visible at once
   * (the model buffers only invalidations: the ones INV-3 orders before a TLBI).
   */
  private bufferForWalkers(slot: PteSlot, old: Pte, pte: Pte): void {
    const key = `${slot.table.id}:${slot.index}`;
    if (isValid(pte) || !isValid(old) || !this.walkerStores) {
      this.staleForWalkers.delete(key);
      return;
    }
    if (!this.staleForWalkers.has(key)) this.staleForWalkers.set(key, old);
    this.walkerStores.store(`stage-2 PTE ${key}`, pte, () => this.staleForWalkers.delete(key));
  }

  /** The entry a vCPU's table walk reads: what is visible to it, not the storing thread's newest. */
  walkerView(table: TablePage, index: number): Pte {
    return this.staleForWalkers.get(`${table.id}:${index}`) ?? table.entries.get(index) ?? INVALID;
  }

  /** A vCPU starts a table walk (a TLB miss). */
  walkBegin(vcpu: number): HardwareWalk {
    const w = { vcpu, aborted: false };
    this.walks.add(w);
    return w;
  }

  walkEnd(w: HardwareWalk): void {
    this.walks.delete(w);
  }

  /** The walk reads a descriptor of `table`: recorded so INV-5 can see a read of a freed page. */
  walkRead(w: HardwareWalk, table: TablePage): void {
    this.events.push({ t: 'walk', vcpu: w.vcpu, table: table.id, level: table.level, freed: table.freed });
  }

  /** kvm_pgtable_walk_begin for a KVM_PGTABLE_WALK_SHARED walk: rcu_read_lock. */
  sharedWalkBegin(): void {
    this.sharedWalkers++;
  }

  /** kvm_pgtable_walk_end: rcu_read_unlock; the last reader out ends the grace period. */
  sharedWalkEnd(): void {
    this.sharedWalkers--;
    if (this.sharedWalkers > 0) return;
    const due = this.rcuPending;
    this.rcuPending = [];
    for (const { table, base } of due) this.freeSubtreeNow(table, base);
  }

  /**
   * Free a subtree unlinked (and flushed) by a walker: at once when no shared walker can be inside
   * it, else after the grace period (stage2_free_unlinked_table via call_rcu).
   */
  freeUnlinked(table: TablePage, base: number): void {
    if (this.sharedWalkers > 0) this.rcuPending.push({ table, base });
    else this.freeSubtreeNow(table, base);
  }

  /** Every table below `table`, then `table` itself, children first. */
  private freeSubtreeNow(table: TablePage, base: number): void {
    for (const [index, pte] of [...table.entries].sort((a, b) => a[0] - b[0]))
      if (pte.kind === 'table') this.freeSubtreeNow(pte.table, base + index * levelSize(table.level));
    this.freeTable(table);
  }

  /** Completes every TLBI issued so far, on every vCPU's TLB, and the table walks in flight. */
  dsb(): void {
    this.events.push({ t: 'dsb' });
    // DSB ishst / ish: the running thread's earlier stores are visible before anything after it.
    this.walkerStores?.fence();
    if (this.tlbiIssued) for (const w of this.walks) w.aborted = true;
    this.tlbiIssued = false;
    for (const p of this.pending) p.tlb.removeIfSame(p.key, p.entry);
    this.pending = [];
  }

  cmo(pfn: number, pages: number): void {
    this.stats.cmos++;
    this.events.push({ t: 'cmo', pfn, pages });
  }

  mark(event: Extract<MmuEvent, { t: 'unmap-start' | 'unmap-end' | 'rmp' }>): void {
    this.events.push(event);
  }

  /** Start a fresh event log for the next command. */
  takeEvents(): MmuEvent[] {
    const events = this.events;
    this.events = [];
    return events;
  }
}

/** The same leaf with at least the old permissions: a TLB entry of the old one is not stale. */
function isRelaxation(old: Extract<Pte, { kind: 'leaf' }>, next: Pte): boolean {
  return (
    next.kind === 'leaf' &&
    next.pfn === old.pfn &&
    next.level === old.level &&
    !!next.private === !!old.private &&
    (next.perms.w || !old.perms.w) &&
    (next.perms.r || !old.perms.r)
  );
}
