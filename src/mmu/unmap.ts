// Stage-2 unmap, the one entry point every invalidation uses (MMU notifier, memslot delete/move,
// guest_memfd punch-hole, USERFAULT enable, memory-attribute changes). Upstream configurations
// use the slow walker with a TLBI per leaf. The arm64-unmap series (S4, seed 004) chooses among
// three implementations (OQ-9), with FEAT_S2FWB and FEAT_TLBIRANGE as options:
//   slow            - per leaf: invalidate, complete a TLBI, then CMO the page without S2FWB;
//   deferred-range  - (merged in 6.6) invalidate every leaf, DSB, one range TLBI (or a VMID flush
//                     without TLBIRANGE) completed by a DSB, then the CMOs, then free the tables;
//   fast-disconnect - (the seed's patch) for a range that is exactly one KVM_PGTABLE_MIN_BLOCK_LEVEL
//                     block: break that one entry, flush, free the disconnected subtree whole.
// INV-1 (nothing left at return), INV-3 (ordering), INV-4 (CMO coverage), INV-5 (table lifetime),
// INV-6 (fast == slow, checked here on a copy of the tree) and INV-7 (TLBI choice) are checked
// by properties/series-invariants.ts on the event log.
// Mutation points: fast-unmap-get-page-after-break, fast-unmap-frees-walked-table, fast-unmap-skips-cmo,
// fast-unmap-leaks-subtree,
// deferred-tlbi-before-pte, deferred-tlbi-no-dsb, s2-pte-no-dsb-before-tlbi, cmo-before-tlbi-complete,
// range-tlbi-without-feature.
import { seriesOn } from '../../model/series.js';
import type { Kvm } from './kvm.js';
import { defineMutant, Mutation } from './mutants.js';
import { MmuOps } from './ops.js';
import {
  INVALID,
  PTRS_PER_TABLE,
  leaves,
  levelSize,
  pagesPerLevel,
  tables,
  walk,
  type LeafPte,
  type TablePage,
} from './pgtable.js';
import { preempt, runAlone, type Steps } from './steps.js';
import { flushAfterUnmap, freeSubtree, releaseIfEmpty, unmapRange } from './visitors.js';

export const FAST_UNMAP_GET_PAGE_AFTER_BREAK = defineMutant({
  name: 'fast-unmap-get-page-after-break',
  description:
    'the fast unmap path takes its reference on the PTE page after stage2_try_break_pte, when it may already be freed',
  source: 'BUG-11 (S4, Oliver 03-29)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  options: { unmapStrategy: 'fast-disconnect' },
  killedBy: ['pgtable-refcount'],
});

export const FAST_UNMAP_FREES_WALKED_TABLE = defineMutant({
  name: 'fast-unmap-frees-walked-table',
  description:
    'the fast unmap frees the disconnected subtree right after stage2_try_break_pte, before the TLBI ' +
    'has completed, while a vCPU table walk may still be inside it',
  source: 'own (issue 10 item 4; INV-5, free_removed_table before the flush)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  options: { unmapStrategy: 'fast-disconnect' },
  // unmap-ordering sees the free before the TLBI completed in any sequence; the walk that reads
  // the freed page (pgtable-refcount) needs an interleaving: test/walk.test.ts drives one.
  killedBy: ['unmap-ordering'],
});

export const FAST_UNMAP_SKIPS_CMO = defineMutant({
  name: 'fast-unmap-skips-cmo',
  description: 'the fast unmap path frees the disconnected subtree without cleaning its pages to PoC',
  source: 'BUG-12 (S4)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  options: { unmapStrategy: 'fast-disconnect' },
  killedBy: ['cmo-coverage'],
});

export const FAST_UNMAP_LEAKS_SUBTREE = defineMutant({
  name: 'fast-unmap-leaks-subtree',
  description: 'the fast unmap path disconnects the subtree but never frees its table pages',
  source: 'own (INV-6: fast == slow)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  options: { unmapStrategy: 'fast-disconnect' },
  killedBy: ['fast-equals-slow'],
});

export const DEFERRED_TLBI_BEFORE_PTE = defineMutant({
  name: 'deferred-tlbi-before-pte',
  description: 'the deferred range TLBI is issued before the walk invalidates the PTEs',
  source: 'BUG-13 (S4, TLBI before PTE)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  killedBy: ['unmap-ordering', 'tlb-coherent'],
});

export const DEFERRED_TLBI_NO_DSB = defineMutant({
  name: 'deferred-tlbi-no-dsb',
  description: 'the deferred range TLBI is never completed with a DSB before the unmap returns',
  source: 'BUG-13 (S4, TLBI not completed)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  killedBy: ['unmap-ordering', 'tlb-coherent'],
});

export const S2_PTE_NO_DSB_BEFORE_TLBI = defineMutant({
  name: 's2-pte-no-dsb-before-tlbi',
  description:
    'the deferred unmap issues its range TLBI without the DSB ishst that makes the invalidated PTEs ' +
    "visible first, so another vCPU's table walk refills its TLB from an old PTE after the TLBI",
  source: 'own (S4, INV-3 step 1: PTE write, DSB, TLBI, DSB; issue 10 item 7)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  // unmap-ordering sees the missing DSB in the event log. The stale refill itself (tlb-coherent)
  // needs a walk begun before the PTE store and ending between the TLBI and its DSB: test/walk.test.ts
  // drives it; random concurrent cases reach it too rarely to claim it (0 in 1000 at 2 and 3 threads).
  killedBy: ['unmap-ordering'],
});

/** Between the range TLBI and the DSB that completes it: other vCPUs run (their walks may refill). */
export const TLBI_ISSUED = 'range TLBI issued, DSB ish not yet executed (the TLBI is not complete)';

export const CMO_BEFORE_TLBI_COMPLETE = defineMutant({
  name: 'cmo-before-tlbi-complete',
  description: 'CMOs for the unmapped pages run before the range TLBI has completed',
  source: 'BUG-13 (S4, CMO before TLBI completion)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  killedBy: ['unmap-ordering'],
});

export const RANGE_TLBI_WITHOUT_FEATURE = defineMutant({
  name: 'range-tlbi-without-feature',
  description: 'a range TLBI is used although FEAT_TLBIRANGE is absent (it would be an undefined instruction)',
  source: 'own (INV-7)',
  arches: ['arm64'],
  series: ['arm64-unmap'],
  options: { tlbiRange: false },
  killedBy: ['tlbi-choice'],
});

const MIN_BLOCK_LEVEL = 1;

export function kvmUnmapRange(kvm: Kvm, start: number, end: number, path: string): void {
  runAlone(kvmUnmapRangeSteps(kvm, start, end, path));
}

/** The point where leaves are invalid but their TLB entries not yet flushed (INV-2's benign window). */
export const TLB_FLUSH_PENDING = 'PTEs invalidated, TLB flush pending: a vCPU may still hit a stale entry (INV-2)';

/**
 * The unmap as resumable steps, called with mmu_lock held. x86 zaps the leaves, then flushes
 * remote TLBs once (kvm_tdp_mmu_unmap_gfn_range, then kvm_flush_remote_tlbs from
 * kvm_handle_hva_range); arm64's upstream walker invalidates each leaf's TLB entry as it goes;
 * arm64-unmap's deferred-range strategy issues one range TLBI after the walk. Where a flush is
 * deferred, other vCPUs may run between the walk and the flush.
 */
export function* kvmUnmapRangeSteps(kvm: Kvm, start: number, end: number, path: string): Steps<void> {
  if (start >= end) return;
  if (!(kvm.arch === 'arm64' && seriesOn(kvm.config, 'arm64-unmap'))) {
    if (kvm.arch === 'arm64') {
      unmapRange(kvm.ops, kvm.mutation, kvm.root, start, end);
      return;
    }
    const unlinked: TablePage[] = [];
    unmapRange(kvm.ops, kvm.mutation, kvm.root, start, end, undefined, unlinked);
    yield* preempt(TLB_FLUSH_PENDING);
    flushAfterUnmap(kvm.ops, kvm.mutation, start, end);
    // The TDP MMU frees zapped page-table pages through call_rcu, after the flush.
    for (const t of unlinked) kvm.ops.putPage(t);
    return;
  }
  const o = kvm.config.options;
  kvm.ops.mark({ t: 'unmap-start', start, end, path });
  if (o.s1FlushOnS2Invalidate) kvm.ops.stats.s1ContextFlushes++;
  const size = levelSize(MIN_BLOCK_LEVEL);
  const qualifies = end - start === size && start % size === 0;
  if (o.unmapStrategy === 'fast-disconnect' && qualifies) yield* fastUnmapChecked(kvm, start, end);
  else if (o.unmapStrategy === 'deferred-range') yield* deferredUnmap(kvm, start, end);
  else unmapRange(kvm.ops, kvm.mutation, kvm.root, start, end, (leaf) => cmoLeaf(kvm, leaf));
  kvm.ops.mark({ t: 'unmap-end' });
}

/** Without FEAT_S2FWB the guest may have written around the cache: clean+invalidate to PoC (INV-4). */
function cmoLeaf(kvm: Kvm, leaf: LeafPte): void {
  if (!kvm.config.options.s2fwb) kvm.ops.cmo(leaf.pfn, pagesPerLevel(leaf.level));
}

/** One range TLBI with FEAT_TLBIRANGE, else a full VMID flush (INV-7). */
function flushRange(kvm: Kvm, start: number, end: number): void {
  const range = kvm.config.options.tlbiRange || kvm.mutation.on(RANGE_TLBI_WITHOUT_FEATURE);
  kvm.ops.tlbi(range ? 'range' : 'vmid', start, end);
}

function* deferredUnmap(kvm: Kvm, start: number, end: number): Steps<void> {
  const { ops, mutation } = kvm;
  const removed: LeafPte[] = [];
  const emptied: TablePage[] = [];
  if (mutation.on(DEFERRED_TLBI_BEFORE_PTE)) flushRange(kvm, start, end);
  walk(kvm.root, 0, start, end, {
    leaf: (ctx) => {
      if (ctx.old.kind !== 'leaf') return;
      ops.writePte(ctx, INVALID);
      ops.putPage(ctx.table);
      removed.push(ctx.old);
    },
    tablePost: (ctx) => {
      if (ctx.old.kind !== 'table' || ctx.old.table.refcount !== 1) return;
      // Unlink now, free only once the TLBI covering it has completed (INV-5).
      ops.writePte(ctx, INVALID);
      ops.putPage(ctx.table);
      emptied.push(ctx.old.table);
    },
  });
  // DSB ishst: the invalid PTEs are visible to every table walker before the TLBI (INV-3 step 1).
  if (!mutation.on(S2_PTE_NO_DSB_BEFORE_TLBI)) ops.dsb();
  yield* preempt(TLB_FLUSH_PENDING);
  if (!mutation.on(DEFERRED_TLBI_BEFORE_PTE)) {
    flushRange(kvm, start, end);
    yield* preempt(TLBI_ISSUED);
  }
  if (mutation.on(CMO_BEFORE_TLBI_COMPLETE)) for (const leaf of removed) cmoLeaf(kvm, leaf);
  if (!mutation.on(DEFERRED_TLBI_NO_DSB)) ops.dsb();
  if (!mutation.on(CMO_BEFORE_TLBI_COMPLETE)) for (const leaf of removed) cmoLeaf(kvm, leaf);
  for (const t of emptied) ops.putPage(t);
}

/** The level-MIN_BLOCK_LEVEL table holding the entry for ipa, and the entry's index, if reachable. */
function blockEntry(root: TablePage, ipa: number): { table: TablePage; index: number } | undefined {
  let table = root;
  while (table.level < MIN_BLOCK_LEVEL) {
    const pte = table.entries.get(Math.floor(ipa / levelSize(table.level)) % PTRS_PER_TABLE);
    if (pte?.kind !== 'table') return undefined;
    table = pte.table;
  }
  return { table, index: Math.floor(ipa / levelSize(table.level)) % PTRS_PER_TABLE };
}

/** Drop table pages on the path to ipa that hold nothing but their base reference (the later slow pass). */
function releaseEmptyParents(kvm: Kvm, start: number, end: number): void {
  walk(kvm.root, 0, start, end, { tablePost: (ctx) => releaseIfEmpty(kvm.ops, kvm.mutation, ctx) });
}

/**
 * The fast disconnect (the seed's kvm_pgtable_stage2_fast_unmap): break the one entry, then a
 * point where a vCPU's table walk may still be inside the disconnected subtree (it holds no lock:
 * mmu_lock is held for write, so no software walker runs here), then DSB, one TLBI, DSB, the CMOs,
 * and only then free_removed_table: the completed TLBI is what guarantees no walk is left inside.
 */
function* fastUnmap(kvm: Kvm, start: number, end: number): Steps<void> {
  const { ops, mutation } = kvm;
  const found = blockEntry(kvm.root, start);
  const old = found?.table.entries.get(found.index);
  if (!found || !old) {
    // Nothing to disconnect, but the slow pass still frees table pages left empty.
    releaseEmptyParents(kvm, start, end);
    return;
  }
  const holder = found.table;
  const slot = { table: holder, index: found.index, ipa: start, level: holder.level };
  // Keep the page holding the PTE alive across the break, so the slow pass can free it later.
  if (!mutation.on(FAST_UNMAP_GET_PAGE_AFTER_BREAK)) ops.hold(holder);
  ops.writePte(slot, INVALID); // stage2_try_break_pte
  ops.putPage(holder);
  // Here another walker may run; it frees a table page left with only its base reference.
  releaseEmptyParents(kvm, start, end);
  if (mutation.on(FAST_UNMAP_GET_PAGE_AFTER_BREAK)) ops.hold(holder); // BUG-11: possibly freed
  const freedEarly = old.kind === 'table' && mutation.on(FAST_UNMAP_FREES_WALKED_TABLE);
  if (freedEarly) freeSubtree(ops, old.table, start);
  yield* preempt(TLB_FLUSH_PENDING);
  ops.dsb();
  flushRange(kvm, start, end);
  ops.dsb();
  if (!mutation.on(FAST_UNMAP_SKIPS_CMO)) {
    if (old.kind === 'leaf') cmoLeaf(kvm, old);
    else if (old.kind === 'table') for (const l of leaves(old.table, start)) cmoLeaf(kvm, l.leaf);
  }
  // free_removed_table
  if (old.kind === 'table' && !freedEarly && !mutation.on(FAST_UNMAP_LEAKS_SUBTREE)) freeSubtree(ops, old.table, start);
  ops.unhold(holder);
  releaseEmptyParents(kvm, start, end);
  ops.stats.fastUnmaps++;
}

/** A copy of the tree (same ids and refcounts), to run the reference walker on. */
function cloneTree(t: TablePage): TablePage {
  const entries = new Map(
    [...t.entries].map(([i, pte]) => [
      i,
      pte.kind === 'table' ? { kind: 'table' as const, table: cloneTree(pte.table) } : pte,
    ]),
  );
  return { id: t.id, level: t.level, entries, refcount: t.refcount, freed: t.freed };
}

function shape(root: TablePage): { leaves: Set<string>; tables: Map<number, number> } {
  const ls = new Set(
    [...leaves(root)].map((l) => `${l.ipaBase}:${l.leaf.level}:${l.leaf.pfn}:${l.leaf.perms.w ? 'w' : 'r'}`),
  );
  return { leaves: ls, tables: new Map([...tables(root)].map((t) => [t.id, t.refcount])) };
}

/** INV-6: run the slow walker on a copy first; the fast path must leave the same tables and free the same pages. */
function* fastUnmapChecked(kvm: Kvm, start: number, end: number): Steps<void> {
  const copy = cloneTree(kvm.root);
  const scratch = new MmuOps([], new Mutation(null));
  unmapRange(scratch, new Mutation(null), copy, start, end);
  const slowFreed = scratch.events
    .filter((e) => e.t === 'free')
    .map((e) => (e as { table: number }).table)
    .sort();
  const mark = kvm.ops.events.length;
  yield* fastUnmap(kvm, start, end);
  const fastFreed = kvm.ops.events
    .slice(mark)
    .filter((e) => e.t === 'free')
    .map((e) => (e as { table: number }).table)
    .sort();
  const [fast, slow] = [shape(kvm.root), shape(copy)];
  const diffLeaves = [...new Set([...fast.leaves, ...slow.leaves])].filter(
    (k) => fast.leaves.has(k) !== slow.leaves.has(k),
  );
  const diffTables = [...new Set([...fast.tables.keys(), ...slow.tables.keys()])].filter(
    (id) => fast.tables.get(id) !== slow.tables.get(id),
  );
  if (diffLeaves.length) kvm.findings.push({ kind: 'fast-slow-leaves', start, end, leaves: diffLeaves.slice(0, 2) });
  if (diffTables.length) kvm.findings.push({ kind: 'fast-slow-tables', start, end, tables: diffTables });
  if (JSON.stringify(fastFreed) !== JSON.stringify(slowFreed))
    kvm.findings.push({ kind: 'fast-slow-freed', start, end, fast: fastFreed, slow: slowFreed });
}
