// userfault series (S0, seed 000; proposed ABI in UPSTREAM.md): KVM_MEM_USERFAULT and the
// VMM's userfault bitmap. While the flag is on, a fault on a page whose bit is set becomes a
// memory-fault exit with KVM_MEMORY_EXIT_FLAG_USERFAULT (exits.ts), and new mappings are PAGE_SIZE
// only (INV-9, engine-side). Turning the flag on zaps the slot (INV-8), so from then on a set bit
// always exits until the guest reaches the page once with the bit clear. A bit set later on a
// page that is already mapped has no effect until the flag is toggled (UPSTREAM.md): the spec has
// no page tables, so it tracks which pages *may* still be mapped and accepts both answers there.
import type { UserfaultBits } from './commands.js';
import type { Outcome } from './outcomes.js';
import { KVM_MEM_USERFAULT } from './series-abi.js';
import { seriesOn } from './series.js';
import type { Memslot, SpecState } from './state.js';

export const userfaultFlagValid = (state: SpecState, api: 'v1' | 'v2'): boolean =>
  seriesOn(state.config, 'userfault') && api === 'v2';

/**
 * The userfault state of a slot after a create/move/flags change. The bitmap is VMM memory and
 * survives changes; `mayBeMapped` starts empty whenever the flag goes on, or the slot moves with it
 * on (both zap the slot), and is dropped while the flag is off.
 */
export function userfaultAfterChange(
  state: SpecState,
  old: Memslot | undefined,
  flags: number,
  baseGfn: number,
): Memslot['userfault'] {
  if (!seriesOn(state.config, 'userfault')) return undefined;
  const bits = old?.userfault?.bits ?? new Set<number>();
  if (!(flags & KVM_MEM_USERFAULT)) return { bits, mayBeMapped: null };
  const keep = old?.userfault?.mayBeMapped && old.baseGfn === baseGfn;
  return { bits, mayBeMapped: keep ? old.userfault!.mayBeMapped : new Set() };
}

/**
 * Whether a fault on gfn must exit for userfault. `staleMappingUsed` is the alternative where a
 * stage-2 mapping made while the bit was clear still serves the access (only possible for pages in
 * mayBeMapped).
 */
export function userfaultBlocks(state: SpecState, slot: Memslot, gfn: number, staleMappingUsed: boolean): boolean {
  if (!seriesOn(state.config, 'userfault') || !(slot.flags & KVM_MEM_USERFAULT) || !slot.userfault) return false;
  if (!slot.userfault.bits.has(gfn - slot.baseGfn)) return false;
  return !(staleMappingUsed && slot.userfault.mayBeMapped?.has(gfn));
}

/** The fault path mapped gfn (possibly): under USERFAULT it can serve later accesses whatever the bit says. */
export function noteMapped(slot: Memslot, gfn: number): void {
  slot.userfault?.mayBeMapped?.add(gfn);
}

/** The VMM writes its bitmap (store-release; KVM reads it with load-acquire at fault time). */
export function userfaultBits(state: SpecState, cmd: UserfaultBits): Outcome {
  const slot = state.slots.find((s) => s.as === cmd.as && s.id === cmd.slot);
  if (!slot?.userfault) return { kind: 'ok' };
  const end = Math.min(slot.npages, cmd.firstPage + cmd.numPages);
  for (let p = cmd.firstPage; p < end; p++) {
    if (cmd.set) slot.userfault.bits.add(p);
    else slot.userfault.bits.delete(p);
  }
  return { kind: 'ok' };
}
