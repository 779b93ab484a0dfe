// What one command touched, so the whole-state invariants can check only that (O(change), not
// O(state)); their full checks still run at the end of every run (Session.finish). Collected from
// the engine's own bookkeeping: the ops event log (PTE writes, table refs and frees), the host
// pages whose mapping or contents changed (SimHostMm.takeChanges), and a before/after comparison
// of the small things a command may change wholesale (memslots, VMAs, dirty bitmaps); the spec's
// side is its own record of changed pages (model/memory.ts). Anything not bounded is `null`: check all.
import { PAGE_SIZE } from '../model/abi.js';
import type { Command } from '../model/commands.js';
import type { Vma } from '../model/host-mm.js';
import { pageChangesOf, trackPageChanges } from '../model/memory.js';
import type { SpecState } from '../model/state.js';
import { testBit } from '../src/mmu/dirty.js';
import type { Engine } from '../src/mmu/engine.js';
import { privateMemoryOn } from '../src/mmu/gmem-private.js';
import type { EngineSlot } from '../src/mmu/memslots.js';
import type { MmuEvent } from '../src/mmu/ops.js';
import { levelSize, PTRS_PER_TABLE, type LeafPte, type TablePage } from '../src/mmu/pgtable.js';

/** A half-open range of guest frame numbers. */
export interface GfnRange {
  readonly start: number;
  readonly end: number;
}

export interface Touched {
  /** Gfns whose stage-2 leaves and TLB entries need a look; null: all of them. */
  readonly gfns: readonly GfnRange[] | null;
  /** Table ids the command wrote, referenced or freed (a refcount check needs to see each). */
  readonly tableIds: ReadonlySet<number>;
  /** Host pages (hva page numbers) whose contents may differ between spec and engine; null: all. */
  readonly hostPages: ReadonlySet<number> | null;
}

interface Before {
  readonly slots: readonly EngineSlot[];
  readonly bitmaps: readonly (Uint32Array | null)[];
  readonly vmas: readonly Vma[];
}

/** One run's touched-set collector: before() ahead of each command, after() once it returned. */
export class TouchTracker {
  private before: Before | null = null;

  start(engine: Engine): void {
    const slots = engine.kvm.memslots.all();
    this.before = {
      slots,
      bitmaps: slots.map((s) => s.dirtyBitmap?.slice() ?? null),
      vmas: engine.kvm.host.vmas,
    };
  }

  after(cmd: Command, spec: SpecState, engine: Engine, events: readonly MmuEvent[]): Touched {
    const kvm = engine.kvm;
    const host = kvm.host.takeChanges();
    const specPages = pageChangesOf(spec.mm.memory);
    trackPageChanges(spec.mm.memory);
    const before = this.before;
    this.before = null;
    const hostPages = specPages && host.contents ? new Set([...host.contents, ...specPages]) : null;
    const tableIds = new Set<number>();
    for (const ev of events) if (ev.t === 'pte' || ev.t === 'ref' || ev.t === 'free') tableIds.add(ev.table);
    // guest_memfd and private memory change leaves through paths not recorded here.
    if (!before || kvm.gmems.length > 0 || privateMemoryOn(kvm)) return { gfns: null, tableIds, hostPages };
    const gfns: GfnRange[] = [];
    for (const ev of events) if (ev.t === 'pte') gfns.push(range(ev.ipa, ev.ipa + levelSize(ev.level)));
    for (const access of accessesIn(cmd)) gfns.push(range(access.gpa, access.gpa + access.len));
    const slots = kvm.memslots.all();
    for (const s of changedSlots(before, slots)) gfns.push({ start: s.baseGfn, end: s.baseGfn + s.npages });
    for (const [i, s] of before.slots.entries())
      for (const r of flippedBits(s, before.bitmaps[i] ?? null)) gfns.push(r);
    const hvaRanges = changedVmas(before.vmas, kvm.host.vmas);
    for (const page of host.mapped) hvaRanges.push({ start: page * PAGE_SIZE, end: (page + 1) * PAGE_SIZE });
    for (const r of host.mappedRanges) hvaRanges.push({ start: r.start * PAGE_SIZE, end: r.end * PAGE_SIZE });
    for (const r of hvaToGfns(slots, merged(hvaRanges))) gfns.push(r);
    return { gfns: merged(gfns), tableIds, hostPages };
  }
}

/** The same ranges sorted, overlapping and adjacent ones joined. */
function merged<R extends { start: number; end: number }>(ranges: readonly R[]): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = [];
  for (const r of [...ranges].sort((a, b) => a.start - b.start)) {
    const top = out[out.length - 1];
    if (top && r.start <= top.end) top.end = Math.max(top.end, r.end);
    else out.push({ start: r.start, end: r.end });
  }
  return out;
}

const range = (startIpa: number, endIpa: number): GfnRange => ({
  start: Math.floor(startIpa / PAGE_SIZE),
  end: Math.ceil(endIpa / PAGE_SIZE),
});

/** The guest accesses in a command: their pages may have been filled into a TLB. */
function accessesIn(cmd: Command): { gpa: number; len: number }[] {
  if (cmd.kind === 'guestAccess') return [cmd];
  if (cmd.kind === 'raceAccess') return [cmd.access];
  return [];
}

/** Slots added, removed or replaced (by identity: a change installs a new slot object). */
function changedSlots(before: Before, now: readonly EngineSlot[]): EngineSlot[] {
  const was = new Set(before.slots);
  const is = new Set(now);
  return [...before.slots.filter((s) => !is.has(s)), ...now.filter((s) => !was.has(s))];
}

/** Gfns of a slot whose dirty bit changed during the command (one word at a time). */
function flippedBits(slot: EngineSlot, old: Uint32Array | null): GfnRange[] {
  const now = slot.dirtyBitmap;
  if (!old || !now || now.length !== old.length)
    return old || now ? [{ start: slot.baseGfn, end: slot.baseGfn + slot.npages }] : [];
  const out: GfnRange[] = [];
  for (let w = 0; w < now.length; w++) {
    if (now[w] === old[w]) continue;
    for (let b = w * 32; b < (w + 1) * 32; b++)
      if (testBit(now, b) !== testBit(old, b)) out.push({ start: slot.baseGfn + b, end: slot.baseGfn + b + 1 });
  }
  return out;
}

/** Hva ranges where the VMAs differ in existence, protection or backing (a split alone changes nothing). */
function changedVmas(before: readonly Vma[], now: readonly Vma[]): { start: number; end: number }[] {
  if (before === now) return [];
  const was = new Set(before);
  const is = new Set(now);
  const changed = [...before.filter((v) => !is.has(v)), ...now.filter((v) => !was.has(v))];
  const edges = [...new Set(changed.flatMap((v) => [v.start, v.end]))].sort((a, b) => a - b);
  const at = (vmas: readonly Vma[], hva: number): Vma | undefined => vmas.find((v) => v.start <= hva && hva < v.end);
  const out: { start: number; end: number }[] = [];
  for (let i = 0; i + 1 < edges.length; i++) {
    const [a, b] = [at(before, edges[i]!), at(now, edges[i]!)];
    if (a?.prot !== b?.prot || a?.backing !== b?.backing) out.push({ start: edges[i]!, end: edges[i + 1]! });
  }
  return out;
}

function hvaToGfns(slots: readonly EngineSlot[], hvas: readonly { start: number; end: number }[]): GfnRange[] {
  const out: GfnRange[] = [];
  for (const s of slots) {
    const end = s.hva + s.npages * PAGE_SIZE;
    for (const h of hvas) {
      const lo = Math.max(h.start, s.hva);
      const hi = Math.min(h.end, end);
      if (lo < hi) out.push(range(lo - s.hva + s.baseGfn * PAGE_SIZE, hi - s.hva + s.baseGfn * PAGE_SIZE));
    }
  }
  return out;
}

/**
 * The leaves (and the tables on the way) translating any gfn of the ranges: a walk of only the
 * subtrees that overlap them. A large (block) leaf overlapping a range is included whole.
 */
export function walkRanges(
  root: TablePage,
  gfns: readonly GfnRange[],
): { leaves: { leaf: LeafPte; ipaBase: number }[]; tables: Set<TablePage> } {
  const leaves = new Map<string, { leaf: LeafPte; ipaBase: number }>();
  const tables = new Set<TablePage>();
  const visit = (table: TablePage, base: number, start: number, end: number): void => {
    tables.add(table);
    const size = levelSize(table.level);
    const first = Math.max(0, Math.floor((start - base) / size));
    const last = Math.min(PTRS_PER_TABLE - 1, Math.floor((end - 1 - base) / size));
    for (let index = first; index <= last; index++) {
      const pte = table.entries.get(index);
      const ipa = base + index * size;
      if (pte?.kind === 'leaf') leaves.set(`${pte.level}:${ipa}`, { leaf: pte, ipaBase: ipa });
      else if (pte?.kind === 'table') visit(pte.table, ipa, start, end);
    }
  };
  const top = levelSize(root.level) * PTRS_PER_TABLE;
  for (const r of gfns) {
    const start = r.start * PAGE_SIZE;
    const end = Math.min(r.end * PAGE_SIZE, top);
    if (start < end) visit(root, 0, start, end);
  }
  return { leaves: [...leaves.values()], tables };
}
