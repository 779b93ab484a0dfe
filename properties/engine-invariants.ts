// Internal invariants of the optimized engine, checked after every command (DESIGN.md, "Internal
// invariants on the optimized side only"). Each returns the violations it found, as sentences.
import { KVM_MEM_READONLY, PAGE_SIZE, hex } from '../model/abi.js';
import { findVma } from '../model/host-mm.js';
import { testBit } from '../src/mmu/dirty.js';
import { isGmemOnlySlot } from '../src/mmu/gmem.js';
import type { Kvm } from '../src/mmu/kvm.js';
import type { EngineSlot } from '../src/mmu/memslots.js';
import type { MmuEvent } from '../src/mmu/ops.js';
import { isValid, leaves, levelSize, tables, translate, type LeafPte } from '../src/mmu/pgtable.js';
import { ZERO_PFN } from '../src/mmu/phys.js';

const MAX_REPORTS = 3;

function limit(out: string[]): string[] {
  return out.length > MAX_REPORTS ? [...out.slice(0, MAX_REPORTS), `... and ${out.length - MAX_REPORTS} more`] : out;
}

/** tlb-coherent (INV-1 at return, SPEC-DIGEST 1.7): every TLB entry is what the walker would load now. */
export function checkTlbCoherent(kvm: Kvm): string[] {
  const out: string[] = [];
  kvm.tlbs.forEach((tlb, vcpu) => {
    for (const e of tlb.entries.values()) {
      const now = translate(kvm.root, e.ipaBase);
      const same = now && now.ipaBase === e.ipaBase && now.leaf.level === e.level && now.leaf.pfn === e.pfn;
      if (!same) {
        out.push(`vcpu${vcpu} TLB maps ipa ${hex(e.ipaBase)} (level ${e.level}) to pfn ${e.pfn}, page tables ${now ? `map it to pfn ${now.leaf.pfn} at level ${now.leaf.level}` : 'have no translation'}`);
      } else if (e.perms.w && !now.leaf.perms.w) {
        out.push(`vcpu${vcpu} TLB allows writes to ipa ${hex(e.ipaBase)} but the PTE is read-only`);
      }
    }
  });
  return limit(out);
}

function slotFor(kvm: Kvm, gfn: number): EngineSlot | undefined {
  return kvm.memslots.find(0, gfn);
}

/**
 * leaf-justified (INV-1, INV-23, INV-39, INV-22): every stage-2 leaf lies inside one memslot, points
 * at the frame the host (or the guest_memfd) has behind it right now, and is writable only if the
 * slot, the host mapping and dirty logging all allow it.
 */
export function checkLeafJustified(kvm: Kvm): string[] {
  const out: string[] = [];
  for (const { leaf, ipaBase } of leaves(kvm.root)) {
    const problem = leafProblem(kvm, leaf, ipaBase);
    if (problem) out.push(`leaf ipa ${hex(ipaBase)} level ${leaf.level} pfn ${leaf.pfn}${leaf.perms.w ? ' RW' : ' RO'}: ${problem}`);
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
  if (isGmemOnlySlot(kvm, slot)) {
    const index = slot.gmem!.pgoff + gfn - slot.baseGfn;
    const pfn = kvm.gmems[slot.gmem!.handle]!.pages.get(index);
    return pfn === leaf.pfn && leaf.level === 3 ? null : `guest_memfd page ${index} is ${pfn === undefined ? 'a hole' : `pfn ${pfn}`}`;
  }
  const hva = slot.hva + (gfn - slot.baseGfn) * PAGE_SIZE;
  const host = kvm.host.lookup(hva);
  if (!host || host.pfn !== leaf.pfn) return `the host maps hva ${hex(hva)} to ${host ? `pfn ${host.pfn}` : 'nothing'}`;
  if (host.hostPageSize < size || hva % size !== 0) return `hva ${hex(hva)} is not the start of a host page of that size`;
  if (!leaf.perms.w) return null;
  if (slot.flags & KVM_MEM_READONLY) return 'writable in a READONLY slot';
  if (findVma(kvm.host.vmas, hva)?.prot !== 'rw') return 'writable but the host mapping is not';
  if (leaf.pfn === ZERO_PFN) return 'writable mapping of the zero page';
  if (slot.dirtyBitmap && !testBit(slot.dirtyBitmap, gfn - slot.baseGfn)) return 'writable while dirty logging, but its dirty bit is clear';
  return null;
}

/** block-rules (INV-9, SPEC-DIGEST 1.2): no block while logging, across a slot edge, or misaligned. */
export function checkBlockRules(kvm: Kvm): string[] {
  const out: string[] = [];
  for (const { leaf, ipaBase } of leaves(kvm.root)) {
    if (leaf.level === 3) continue;
    const size = levelSize(leaf.level);
    const slot = slotFor(kvm, ipaBase / PAGE_SIZE);
    const where = `block ipa ${hex(ipaBase)} size ${hex(size)}`;
    if (!slot) {
      out.push(`${where} outside every memslot`);
      continue;
    }
    const slotStart = slot.baseGfn * PAGE_SIZE;
    if (slot.dirtyBitmap) out.push(`${where} in slot ${slot.id} while dirty logging is on`);
    if (ipaBase + size > slotStart + slot.npages * PAGE_SIZE) out.push(`${where} crosses the end of slot ${slot.id}`);
    const hva = slot.hva + (ipaBase - slotStart);
    if (hva % size !== 0) out.push(`${where} backed by hva ${hex(hva)}, not aligned like the gpa`);
  }
  return limit(out);
}

/** pgtable-refcount (INV-5): refcount = 1 + valid entries, and no freed table is reachable. */
export function checkTableRefcounts(kvm: Kvm): string[] {
  const out: string[] = [];
  for (const t of tables(kvm.root)) {
    if (t.freed) out.push(`table ${t.id} (level ${t.level}) is reachable after being freed`);
    else if (t.refcount !== 1 + t.entries.size) out.push(`table ${t.id} (level ${t.level}) has refcount ${t.refcount} but ${t.entries.size} valid entries`);
  }
  return limit(out);
}

/**
 * bbm (INV-3): a valid entry is never overwritten by a different valid entry (only a permission
 * change may skip the break), and a leaf broken in this command is remade only after a TLBI
 * covering what it translated.
 */
export function checkBreakBeforeMake(events: readonly MmuEvent[]): string[] {
  const out: string[] = [];
  const broken = new Map<string, { start: number; end: number; flushed: boolean }>();
  for (const ev of events) {
    if (ev.t === 'tlbi') {
      for (const b of broken.values()) if (ev.start <= b.start && ev.end >= b.end) b.flushed = true;
      continue;
    }
    if (ev.t !== 'pte') continue;
    const key = `${ev.table}:${ev.index}`;
    const where = `PTE at ipa ${hex(ev.ipa)} level ${ev.level}`;
    if (isValid(ev.old) && isValid(ev.new)) {
      const permissionOnly = ev.old.kind === 'leaf' && ev.new.kind === 'leaf' && ev.old.pfn === ev.new.pfn && ev.old.level === ev.new.level;
      if (!permissionOnly) out.push(`${where} changed from ${ev.old.kind} to ${ev.new.kind} without break-before-make`);
    } else if (ev.old.kind === 'leaf') {
      // Only a leaf can be cached in a TLB; an emptied table needs no flush before reuse.
      broken.set(key, { start: ev.ipa, end: ev.ipa + levelSize(ev.level), flushed: false });
    } else if (isValid(ev.new)) {
      const b = broken.get(key);
      if (b && !b.flushed) out.push(`${where} remade before a TLBI covered the broken entry`);
      broken.delete(key);
    }
  }
  return limit(out);
}
