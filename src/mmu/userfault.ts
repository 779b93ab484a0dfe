// KVM Userfault in the engine (S0, seed 000): the fault path reads the VMM's bitmap at fault time
// (kvm_do_userfault), so a bit set on a page that is already mapped has no effect until the slot is
// zapped; a FLAGS_ONLY change that turns USERFAULT on zaps the slot (kvm_arch_flush_shadow_memslot,
// INV-8), and turning it off zaps only with zapOnUserfaultDisable (OQ-7, INV-10).
// Mutation points: userfault-enable-skips-zap, userfault-disable-zaps.
import { PAGE_SIZE } from '../../model/abi.js';
import type { UserfaultBits } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import { KVM_MEM_USERFAULT } from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import type { Kvm } from './kvm.js';
import type { EngineSlot } from './memslots.js';
import { kvmUnmapRange } from './unmap.js';
import { defineMutant } from './mutants.js';

export const USERFAULT_ENABLE_SKIPS_ZAP = defineMutant({
  name: 'userfault-enable-skips-zap',
  description: 'turning KVM_MEM_USERFAULT on does not zap stage 2, so old mappings bypass the userfault bitmap',
  source: 'BUG-16',
  series: ['userfault'],
  killedBy: ['userfault-enable-zaps', 'differential'],
});

export const USERFAULT_DISABLE_ZAPS = defineMutant({
  name: 'userfault-disable-zaps',
  description: 'turning KVM_MEM_USERFAULT off zaps the slot although zapOnUserfaultDisable is off (v1 behaviour)',
  source: 'BUG-18 (OQ-7)',
  series: ['userfault'],
  killedBy: ['userfault-no-zap-on-disable'],
});

export function userfaultBitSet(kvm: Kvm, slot: EngineSlot, gfn: number): boolean {
  if (!seriesOn(kvm.config, 'userfault') || !(slot.flags & KVM_MEM_USERFAULT) || !slot.userfaultBitmap) return false;
  const rel = gfn - slot.baseGfn;
  return (slot.userfaultBitmap[rel >>> 3]! & (1 << (rel & 7))) !== 0;
}

/** The bitmap a new slot version uses: the VMM's memory, shared with the old version. */
export function userfaultBitmapFor(kvm: Kvm, old: EngineSlot | undefined, npages: number): Uint8Array | undefined {
  if (!seriesOn(kvm.config, 'userfault')) return undefined;
  return old?.userfaultBitmap ?? new Uint8Array(Math.ceil(npages / 8));
}

/** kvm_arch_commit_memory_region for a FLAGS_ONLY change of USERFAULT. */
export function onUserfaultToggled(kvm: Kvm, old: EngineSlot, next: EngineSlot): void {
  if (!seriesOn(kvm.config, 'userfault') || next.as !== 0) return;
  const changed = (old.flags ^ next.flags) & KVM_MEM_USERFAULT;
  if (!changed) return;
  const enabling = (next.flags & KVM_MEM_USERFAULT) !== 0;
  const zap = enabling
    ? !kvm.mutation.on(USERFAULT_ENABLE_SKIPS_ZAP)
    : kvm.config.options.zapOnUserfaultDisable || kvm.mutation.on(USERFAULT_DISABLE_ZAPS);
  if (zap) kvmUnmapRange(kvm, old.baseGfn * PAGE_SIZE, (old.baseGfn + old.npages) * PAGE_SIZE, 'userfault-toggle');
}

/** The VMM stores to its bitmap; KVM sees it at the next fault. */
export function kvmUserfaultBits(kvm: Kvm, cmd: UserfaultBits): Outcome {
  const slot = kvm.memslots.byId(cmd.as, cmd.slot);
  const bitmap = slot?.userfaultBitmap;
  if (!slot || !bitmap) return { kind: 'ok' };
  for (let rel = cmd.firstPage; rel < Math.min(slot.npages, cmd.firstPage + cmd.numPages); rel++) {
    if (cmd.set) bitmap[rel >>> 3]! |= 1 << (rel & 7);
    else bitmap[rel >>> 3]! &= ~(1 << (rel & 7));
  }
  return { kind: 'ok' };
}
