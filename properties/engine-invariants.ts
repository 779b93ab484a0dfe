// Internal invariants of the optimized engine, checked after every command (DESIGN.md, "Internal
// invariants on the optimized side only"). Each returns the violations it found, as sentences.
import { KVM_MEM_READONLY, PAGE_SIZE, hex } from '../model/abi.js';
import { findVma } from '../model/host-mm.js';
import { testBit } from '../src/mmu/dirty.js';
import { isGmemOnlySlot } from '../src/mmu/gmem.js';
import type { Kvm } from '../src/mmu/kvm.js';
import type { EngineSlot } from '../src/mmu/memslots.js';
import type { MmuEvent } from '../src/mmu/ops.js';
import type { Tlb, TlbEntry } from '../src/mmu/tlb.js';
import { isValid, leaves, levelSize, tables, translate, type LeafPte, type TablePage } from '../src/mmu/pgtable.js';
import { walkRanges, type GfnRange, type Touched } from './touched.js';
import { ZERO_PFN } from '../src/mmu/phys.js';
import { anyPrivateIn, privateMemoryOn } from '../src/mmu/gmem-private.js';
import { KVM_MEM_USERFAULT } from '../model/series-abi.js';
import { seriesOn } from '../model/series.js';

const MAX_REPORTS = 3;

function limit(out: string[]): string[] {
  return out.length > MAX_REPORTS ? [...out.slice(0, MAX_REPORTS), `... and ${out.length - MAX_REPORTS} more`] : out;
}

/**
 * tlb-coherent (INV-1 at return, SPEC-DIGEST 1.7): every TLB entry is what the walker would load now.
 * With `gfns`, only the entries over those gfns (what the command touched).
 */
export function checkTlbCoherent(kvm: Kvm, gfns: readonly GfnRange[] | null = null): string[] {
  const out: string[] = [];
  kvm.tlbs.forEach((tlb, vcpu) => {
    const entries = gfns ? tlbEntriesIn(tlb, gfns) : tlb.entries.values();
    for (const e of entries) {
      const now = translate(kvm.root, e.ipaBase);
      const same = now && now.ipaBase === e.ipaBase && now.leaf.level === e.level && now.leaf.pfn === e.pfn;
      if (!same) {
        out.push(
          `vcpu${vcpu} TLB maps ipa ${hex(e.ipaBase)} (level ${e.level}) to pfn ${e.pfn}, page tables ` +
            `${now ? `map it to pfn ${now.leaf.pfn} at level ${now.leaf.level}` : 'have no translation'}`,
        );
      } else if (e.perms.w && !now.leaf.perms.w) {
        out.push(`vcpu${vcpu} TLB allows writes to ipa ${hex(e.ipaBase)} but the PTE is read-only`);
      }
    }
  });
  return limit(out);
}

/**
 * The TLB entries over the touched gfns, found without the TLB's range index (the index a TLBI
 * searches, which tlb-fill-appends-unsorted breaks: a check through it would go blind with it):
 * each page probed by lookup, or every entry filtered when that is fewer.
 */
function tlbEntriesIn(tlb: Tlb, gfns: readonly GfnRange[]): Iterable<TlbEntry> {
  const pages = gfns.reduce((n, r) => n + r.end - r.start, 0);
  const inRanges = (e: TlbEntry): boolean =>
    gfns.some((r) => e.ipaBase < r.end * PAGE_SIZE && e.ipaBase + levelSize(e.level) > r.start * PAGE_SIZE);
  if (pages >= tlb.entries.size) return [...tlb.entries.values()].filter(inRanges);
  const found = new Set<TlbEntry>();
  for (const r of gfns)
    for (let gfn = r.start; gfn < r.end; gfn++) {
      const e = tlb.lookup(gfn * PAGE_SIZE);
      if (e) found.add(e);
    }
  return found;
}

function slotFor(kvm: Kvm, gfn: number): EngineSlot | undefined {
  return kvm.memslots.find(0, gfn);
}

/**
 * leaf-justified (INV-1, INV-23, INV-39, INV-22): every stage-2 leaf lies inside one memslot, points
 * at the frame the host (or the guest_memfd) has behind it right now, and is writable only if the
 * slot, the host mapping and dirty logging all allow it.
 */
export function checkLeafJustified(kvm: Kvm, gfns: readonly GfnRange[] | null = null): string[] {
  const out: string[] = [];
  for (const { leaf, ipaBase } of gfns ? walkRanges(kvm.root, gfns).leaves : leaves(kvm.root)) {
    const problem = leafProblem(kvm, leaf, ipaBase);
    if (problem)
      out.push(
        `leaf ipa ${hex(ipaBase)} level ${leaf.level} pfn ${leaf.pfn}${leaf.perms.w ? ' RW' : ' RO'}: ${problem}`,
      );
  }
  return limit(out);
}

function leafProblem(kvm: Kvm, leaf: LeafPte, ipaBase: number): string | null {
  const size = levelSize(leaf.level);
  const gfn = ipaBase / PAGE_SIZE;
  const slot = slotFor(kvm, gfn);
  if (!slot) return 'no memslot covers it';
  if (gfn + size / PAGE_SIZE > slot.baseGfn + slot.npages) return `it runs past the end of slot ${slot.id}`;
  if (!kvm.phys.isAllocated(leaf.pfn)) return 'its frame has been freed';
  if (leaf.private) return privateLeafProblem(kvm, slot, leaf, gfn);
  const privateGfn = privateMemoryOn(kvm) ? anyPrivateIn(kvm, gfn, size / PAGE_SIZE) : undefined;
  if (privateGfn !== undefined) return `shared mapping of gfn ${hex(privateGfn)}, whose attribute is PRIVATE`;
  if (isGmemOnlySlot(kvm, slot)) {
    const index = slot.gmem!.pgoff + gfn - slot.baseGfn;
    const pfn = kvm.gmems[slot.gmem!.handle]!.pages.get(index);
    return pfn === leaf.pfn && leaf.level === 3
      ? null
      : `guest_memfd page ${index} is ${pfn === undefined ? 'a hole' : `pfn ${pfn}`}`;
  }
  const hva = slot.hva + (gfn - slot.baseGfn) * PAGE_SIZE;
  const host = kvm.host.lookup(hva);
  if (!host || host.pfn !== leaf.pfn) return `the host maps hva ${hex(hva)} to ${host ? `pfn ${host.pfn}` : 'nothing'}`;
  if (host.hostPageSize < size || hva % size !== 0)
    return `hva ${hex(hva)} is not the start of a host page of that size`;
  if (!leaf.perms.w) return null;
  if (slot.flags & KVM_MEM_READONLY) return 'writable in a READONLY slot';
  if (findVma(kvm.host.vmas, hva)?.prot !== 'rw') return 'writable but the host mapping is not';
  if (leaf.pfn === ZERO_PFN) return 'writable mapping of the zero page';
  const clear = slot.dirtyBitmap ? firstClearBit(slot.dirtyBitmap, gfn - slot.baseGfn, size / PAGE_SIZE) : -1;
  if (clear >= 0)
    return `writable while dirty logging, but the dirty bit of gfn ${hex(slot.baseGfn + clear)} under it is clear`;
  return null;
}

/** The first of bits [first, first + count) that is clear, or -1 (a writable leaf needs them all set). */
function firstClearBit(bitmap: Uint32Array, first: number, count: number): number {
  for (let i = first; i < first + count; i++) if (!testBit(bitmap, i)) return i;
  return -1;
}

/** A private leaf maps the guest_memfd pages of private gfns, page by page (gmem-private). */
function privateLeafProblem(kvm: Kvm, slot: EngineSlot, leaf: LeafPte, gfn: number): string | null {
  if (!slot.gmem) return 'private mapping in a slot without guest_memfd';
  const file = kvm.gmems[slot.gmem.handle]!;
  for (let i = 0; i < levelSize(leaf.level) / PAGE_SIZE; i++) {
    if (!kvm.privateGfns.has(gfn + i)) return `private mapping of gfn ${hex(gfn + i)}, whose attribute is shared`;
    const index = slot.gmem.pgoff + gfn + i - slot.baseGfn;
    const pfn = file.pages.get(index);
    if (pfn !== leaf.pfn + i)
      return (
        `guest_memfd page ${index} is ${pfn === undefined ? 'a hole' : `pfn ${pfn}`}, ` +
        `the mapping says pfn ${leaf.pfn + i}`
      );
  }
  return null;
}

/**
 * block-rules (INV-9, SPEC-DIGEST 1.2): no block under USERFAULT, across a slot edge, or misaligned;
 * while logging no writable block unless every page under it is already reported dirty. Blocks are
 * split lazily (src/mmu/dirty.ts): one mapped before logging started stays, read-only, until a
 * write fault breaks it (arm64 user_mem_abort with force_pte; kvm_mmu_wp_memory_region
 * write-protects blocks too), or writable under INITIALLY_SET until CLEAR_DIRTY_LOG protects it.
 */
export function checkBlockRules(kvm: Kvm, gfns: readonly GfnRange[] | null = null): string[] {
  const out: string[] = [];
  for (const { leaf, ipaBase } of gfns ? walkRanges(kvm.root, gfns).leaves : leaves(kvm.root)) {
    if (leaf.level === 3) continue;
    const size = levelSize(leaf.level);
    const slot = slotFor(kvm, ipaBase / PAGE_SIZE);
    const where = `block ipa ${hex(ipaBase)} size ${hex(size)}`;
    if (!slot) {
      out.push(`${where} outside every memslot`);
      continue;
    }
    const slotStart = slot.baseGfn * PAGE_SIZE;
    const clear =
      slot.dirtyBitmap && leaf.perms.w
        ? firstClearBit(slot.dirtyBitmap, (ipaBase - slotStart) / PAGE_SIZE, size / PAGE_SIZE)
        : -1;
    if (clear >= 0)
      out.push(`${where} in slot ${slot.id} writable while dirty logging, gfn ${hex(slot.baseGfn + clear)} not dirty`);
    if (slot.flags & KVM_MEM_USERFAULT && seriesOn(kvm.config, 'userfault'))
      out.push(`${where} in slot ${slot.id} while KVM_MEM_USERFAULT is on`);
    if (ipaBase + size > slotStart + slot.npages * PAGE_SIZE) out.push(`${where} crosses the end of slot ${slot.id}`);
    const hva = slot.hva + (ipaBase - slotStart);
    if (!leaf.private && hva % size !== 0) out.push(`${where} backed by hva ${hex(hva)}, not aligned like the gpa`);
  }
  return limit(out);
}

/**
 * pgtable-refcount (INV-5): refcount = 1 + valid entries, no freed table is reachable or referenced
 * again. With `touched`, only the tables over its gfns, unless a table the command referenced or
 * freed is not among them (then all).
 */
export function checkTableRefcounts(kvm: Kvm, events: readonly MmuEvent[] = [], touched?: Touched): string[] {
  const out: string[] = [];
  for (const ev of events) {
    if (ev.t === 'ref' && ev.freed)
      out.push(`table ${ev.table} had its refcount changed after it was freed (use after free)`);
    // INV-5: "no walker touches a table page after its refcount reaches 0", the hardware's included.
    if (ev.t === 'walk' && ev.freed)
      out.push(`vcpu${ev.vcpu}'s table walk read table ${ev.table} (level ${ev.level}) after it was freed`);
  }
  for (const t of touchedTables(kvm, touched)) {
    if (t.freed) out.push(`table ${t.id} (level ${t.level}) is reachable after being freed`);
    else if (t.refcount !== 1 + t.entries.size + (kvm.ops?.heldOn(t) ?? 0))
      out.push(`table ${t.id} (level ${t.level}) has refcount ${t.refcount} but ${t.entries.size} valid entries`);
  }
  return limit(out);
}

function touchedTables(kvm: Kvm, touched: Touched | undefined): Iterable<TablePage> {
  if (!touched?.gfns) return tables(kvm.root);
  const near = walkRanges(kvm.root, touched.gfns).tables;
  const ids = new Set([...near].map((t) => t.id));
  return [...touched.tableIds].every((id) => ids.has(id)) ? near : tables(kvm.root);
}

/**
 * bbm (INV-3): a valid entry is never overwritten by a different valid entry (only a permission
 * change may skip the break), and a leaf broken in this command is remade only after a TLBI
 * covering what it translated.
 */
export function checkBreakBeforeMake(events: readonly MmuEvent[]): string[] {
  const out: string[] = [];
  const broken = new Map<string, { start: number; end: number; flushed: boolean }>();
  let issued: { start: number; end: number }[] = [];
  for (const ev of events) {
    if (ev.t === 'tlbi') {
      issued.push(ev.kind === 'vmid' ? { start: 0, end: Number.POSITIVE_INFINITY } : ev);
      continue;
    }
    if (ev.t === 'dsb') {
      for (const b of broken.values()) if (issued.some((i) => i.start <= b.start && i.end >= b.end)) b.flushed = true;
      issued = [];
      continue;
    }
    if (ev.t !== 'pte') continue;
    const key = `${ev.table}:${ev.index}`;
    const where = `PTE at ipa ${hex(ev.ipa)} level ${ev.level}`;
    if (isValid(ev.old) && isValid(ev.new)) {
      const permissionOnly =
        ev.old.kind === 'leaf' && ev.new.kind === 'leaf' && ev.old.pfn === ev.new.pfn && ev.old.level === ev.new.level;
      if (!permissionOnly) out.push(`${where} changed from ${ev.old.kind} to ${ev.new.kind} without break-before-make`);
    } else if (ev.old.kind === 'leaf') {
      // Only a leaf can be cached in a TLB; an emptied table needs no flush before reuse.
      broken.set(key, { start: ev.ipa, end: ev.ipa + levelSize(ev.level), flushed: false });
    } else if (isValid(ev.new)) {
      const b = broken.get(key);
      if (b && !b.flushed) out.push(`${where} remade before a completed TLBI covered the broken entry`);
      broken.delete(key);
    }
  }
  return limit(out);
}
