// The stage-2 operations, each a small visitor over the one walker (pgtable.ts), plus the single
// break-before-make helper. Mutation points: unmap-skips-tlbi, unmap-leaks-table-ref,
// table-freed-while-linked, wrprotect-skips-tlbi, split-without-bbm.
import { defineMutant, type Mutation } from './mutants.js';
import type { MmuOps, PteSlot } from './ops.js';
import { preempt, runAlone, type Steps } from './steps.js';
import {
  INVALID,
  PTRS_PER_TABLE,
  levelSize,
  nextLevel,
  walk,
  type Level,
  type LeafPte,
  type Perms,
  type Pte,
  type TablePage,
  type VisitCtx,
} from './pgtable.js';

export const MAP_SAME_PTE_TAKES_REF = defineMutant({
  name: 'map-same-pte-takes-ref',
  description:
    'a fault that finds the PTE a racing vCPU already installed takes another reference on the table ' +
    '(stage2_map_walker must return -EAGAIN without touching the refcount)',
  source: 'own (issue 10: two vCPUs faulting the same gfn; INV-5)',
  killedBy: ['pgtable-refcount'],
  interleaving: true,
});

export const UNMAP_SKIPS_TLBI = defineMutant({
  name: 'unmap-skips-tlbi',
  description: 'stage-2 unmap clears the PTE but never invalidates the TLB entry for it',
  source: 'BUG-13 (TLBI missing before return)',
  killedBy: ['tlb-coherent', 'differential'],
});

export const WRPROTECT_SKIPS_TLBI = defineMutant({
  name: 'wrprotect-skips-tlbi',
  description: 'write protection for dirty logging drops W from the PTE but leaves writable TLB entries',
  source: 'own (kvm_arch_mmu_enable_log_dirty_pt_masked without the flush)',
  killedBy: ['tlb-coherent', 'dirty-no-lost-write'],
});

export const SPLIT_WITHOUT_BBM = defineMutant({
  name: 'split-without-bbm',
  description:
    'a block broken into a table for a smaller leaf (the write fault that splits a block under dirty ' +
    'logging) writes the new table over the valid block (no break-before-make)',
  source: 'own (INV-3 ordering; stage2_map_walker replacing a block by a table)',
  killedBy: ['bbm', 'tlb-coherent'],
});

export const UNMAP_LEAKS_TABLE_REF = defineMutant({
  name: 'unmap-leaks-table-ref',
  description: 'unmapping a leaf does not drop the reference it held on its table page',
  source: 'own (INV-5; missing mm_ops->put_page in stage2_unmap_walker)',
  killedBy: ['pgtable-refcount'],
});

export const TABLE_FREED_WHILE_LINKED = defineMutant({
  name: 'table-freed-while-linked',
  description: 'an emptied table page is freed before its parent entry is cleared',
  source: 'BUG-11 analogue (INV-5 table-page lifetime)',
  killedBy: ['pgtable-refcount'],
});

/**
 * Break-before-make (ARM ARM D8.14; INV-3): make the old entry invalid, complete a TLBI for the
 * range it translated, and only then write the new entry. `beforeMake` runs between the two, once
 * no walker or TLB can reach what the old entry pointed to (used to free a replaced subtree).
 */
export function breakBeforeMake(ops: MmuOps, slot: PteSlot, next: Pte, beforeMake?: () => void): void {
  ops.writePte(slot, INVALID);
  ops.tlbiEntry(slot); // DSB (publish the invalid entry), TLBI, DSB (complete it)
  beforeMake?.();
  ops.writePte(slot, next);
}

/**
 * Free a detached subtree: every table below `table`, then `table` itself; after the grace period
 * if a shared walker may be inside it (MmuOps.freeUnlinked).
 */
export function freeSubtree(ops: MmuOps, table: TablePage, base: number): void {
  ops.freeUnlinked(table, base);
}

export interface MapRequest {
  ipa: number;
  level: Level;
  pfn: number;
  perms: Perms;
  private?: boolean;
}

/** Install one leaf, alone (the arm64 lock API's premap, guest_memfd and private faults). */
export function mapLeaf(ops: MmuOps, root: TablePage, req: MapRequest): void {
  runAlone(mapLeafSteps(ops, root, req));
}

/**
 * Install one leaf as a shared walker (kvm_pgtable_stage2_map with KVM_PGTABLE_WALK_SHARED, under
 * mmu_lock for read): descend one level per step through (or creating) tables down to the target
 * level. Where it will write, it reads the entry, lets another thread run, then installs with a compare-and-swap
 * against what it read (stage2_try_set_pte, tdp_mmu_set_spte_atomic): if another walker changed the
 * entry meanwhile, the walk returns false (-EAGAIN) and the vCPU re-enters the guest. A larger
 * block in the way is broken and replaced by a table; a table where a block should go is broken
 * and its subtree freed after the grace period; an existing leaf for the same pfn only has its
 * permissions relaxed. A break and its make stay in one step (stage2_try_break_pte locks the entry
 * with KVM_INVALID_PTE_LOCKED, so another shared walker only ever sees it locked and retries).
 */
export function* mapLeafSteps(ops: MmuOps, root: TablePage, req: MapRequest): Steps<boolean> {
  const leaf: LeafPte = {
    kind: 'leaf',
    pfn: req.pfn,
    level: req.level,
    perms: req.perms,
    ...(req.private ? { private: true } : {}),
  };
  ops.sharedWalkBegin();
  try {
    let table = root;
    for (;;) {
      const size = levelSize(table.level);
      const index = Math.floor(req.ipa / size) % PTRS_PER_TABLE;
      const observed = table.entries.get(index) ?? INVALID;
      // A point only where the walk will write: descending through a table entry it read is the
      // same to every other thread as descending at once (a table unlinked meanwhile by another
      // shared walker stays allocated until the grace period, so the walk ends the same way).
      const descends = observed.kind === 'table' && table.level !== req.level;
      if (!descends) yield* preempt(`stage2_map_walker: level ${table.level} PTE read, stage2_try_set_pte next`);
      // The cmpxchg fails: another shared walker installed or broke this entry since the read.
      if ((table.entries.get(index) ?? INVALID) !== observed) return false;
      const ctx: VisitCtx = { table, index, ipa: req.ipa - (req.ipa % size), level: table.level, old: observed };
      const child = mapVisit(ops, ctx, req.level, leaf);
      if (!child) return true;
      table = child;
    }
  } finally {
    ops.sharedWalkEnd();
  }
}

/** One entry of the map walk: the table to descend into next, or null once the leaf is in place. */
function mapVisit(ops: MmuOps, ctx: VisitCtx, target: Level, leaf: LeafPte): TablePage | null {
  const old = ctx.old;
  if (old.kind === 'table') {
    if (ctx.level !== target) return old.table;
    breakBeforeMake(ops, ctx, leaf, () => freeSubtree(ops, old.table, ctx.ipa));
    return null;
  }
  if (ctx.level < target) {
    const child = ops.allocTable(nextLevel(ctx.level));
    if (old.kind === 'invalid') {
      ops.writePte(ctx, { kind: 'table', table: child });
      ops.getPage(ctx.table);
      return child;
    }
    // A block where a smaller leaf must go (dirty logging's lazy split on a write fault): the block
    // goes whole and the rest of its pages refault at the smaller size.
    ops.stats.splits++;
    if (ops.mutation.on(SPLIT_WITHOUT_BBM)) ops.writePte(ctx, { kind: 'table', table: child });
    else breakBeforeMake(ops, ctx, { kind: 'table', table: child });
    return child;
  }
  if (old.kind === 'invalid') {
    ops.writePte(ctx, leaf);
    ops.getPage(ctx.table);
  } else if (old.pfn === leaf.pfn && old.level === leaf.level && !!old.private === !!leaf.private) {
    if (old.perms.w === leaf.perms.w && old.perms.r === leaf.perms.r) {
      if (ops.mutation.on(MAP_SAME_PTE_TAKES_REF)) ops.getPage(ctx.table);
      return null;
    }
    ops.writePte(ctx, leaf);
    // Relaxing permissions needs no flush; taking one away does (a TLB may still allow it).
    if ((old.perms.w && !leaf.perms.w) || (old.perms.r && !leaf.perms.r)) ops.tlbiEntry(ctx);
  } else {
    breakBeforeMake(ops, ctx, leaf);
  }
  return null;
}

/**
 * The slow walker: remove every leaf intersecting [start, end) (a block is removed whole), each
 * invalidated and flushed on its own (stage2_unmap_walker), and free emptied tables. `removed`
 * runs once a leaf's TLBI has completed (arm64 does its CMO there). `unlinked` (x86): no per-leaf
 * TLBI; the caller flushes once after the walk and then frees the emptied tables collected here.
 */
export function unmapRange(
  ops: MmuOps,
  mutation: Mutation,
  root: TablePage,
  start: number,
  end: number,
  removed?: (leaf: LeafPte) => void,
  unlinked?: TablePage[],
): void {
  walk(root, 0, start, end, {
    leaf: (ctx) => {
      if (ctx.old.kind !== 'leaf') return;
      ops.writePte(ctx, INVALID);
      if (!mutation.on(UNMAP_LEAKS_TABLE_REF)) ops.putPage(ctx.table);
      if (!unlinked && !mutation.on(UNMAP_SKIPS_TLBI)) ops.tlbiEntry(ctx);
      removed?.(ctx.old);
    },
    tablePost: (ctx) => releaseIfEmpty(ops, mutation, ctx, unlinked),
  });
  ops.dsb();
}

/** The remote flush that follows a batch of zapped leaves (x86 kvm_flush_remote_tlbs after unmap). */
export function flushAfterUnmap(ops: MmuOps, mutation: Mutation, start: number, end: number): void {
  if (!mutation.on(UNMAP_SKIPS_TLBI)) ops.tlbiRange(start, end);
  ops.dsb();
}

/**
 * A table entry whose child table holds nothing but its base reference: unlink it, flush the walk
 * caches for it, and free the child (stage2_unmap_put_pte TLBIs a table entry even when leaf TLBIs
 * are deferred). `later`: the caller flushes once after the walk (x86 kvm_flush_remote_tlbs) and
 * frees the unlinked children only then, as the TDP MMU does through call_rcu; a vCPU walk still
 * inside one until that flush reads a page that is not yet free (INV-5).
 */
export function releaseIfEmpty(ops: MmuOps, mutation: Mutation, ctx: VisitCtx, later?: TablePage[]): void {
  if (ctx.old.kind !== 'table' || ctx.old.table.refcount !== 1) return;
  const child = ctx.old.table;
  if (mutation.on(TABLE_FREED_WHILE_LINKED)) {
    ops.putPage(child);
    return;
  }
  ops.writePte(ctx, INVALID);
  ops.putPage(ctx.table);
  if (later) {
    later.push(child);
    return;
  }
  ops.tlbiEntry(ctx);
  ops.putPage(child);
}

/** Drop write permission from every leaf in [start, end). A permission-only change needs no BBM. */
export function wrprotectRange(ops: MmuOps, mutation: Mutation, root: TablePage, start: number, end: number): void {
  walk(root, 0, start, end, {
    leaf: (ctx) => {
      if (ctx.old.kind !== 'leaf' || !ctx.old.perms.w) return;
      ops.writePte(ctx, { ...ctx.old, perms: { r: ctx.old.perms.r, w: false } });
      if (!mutation.on(WRPROTECT_SKIPS_TLBI)) ops.tlbiEntry(ctx);
    },
  });
  ops.dsb();
}
