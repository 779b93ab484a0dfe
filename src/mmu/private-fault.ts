// gmem-private's fault path in the engine (S1, seed 001; x86 kvm_mmu_faultin_pfn_private() and the
// map): the gmem folio's pfn, the max level clamped by folio and RMP (INV-34), and, under Isaku's
// RFC ('fault' conversion), the RMP conversion at 4 KiB. Separate from gmem-private.ts because it
// calls guest_memfd (gmem.ts), which calls gmem-private.ts's allocation hooks.
// Mutation points: rmp-convert-at-fault (BUG-22), private-max-level-unclamped (BUG-23).
import { PAGE_SIZE } from '../../model/abi.js';
import type { FaultResult } from './fault-types.js';
import { kvmGmemGetFolio } from './gmem.js';
import { FOLIO_PAGES, convertAtAllocation, rmpAssign } from './gmem-private.js';
import type { Kvm } from './kvm.js';
import type { EngineSlot } from './memslots.js';
import type { Level } from './pgtable.js';
import { mapLeaf } from './visitors.js';
import { defineMutant } from './mutants.js';
import { RMP_CONVERT_AT_FAULT } from './gmem-private.js';

export const PRIVATE_MAX_LEVEL_UNCLAMPED = defineMutant({
  name: 'private-max-level-unclamped',
  description: 'a private fault maps at the folio size without clamping max_level to the RMP entry size',
  source: 'BUG-23',
  arches: ['x86'],
  series: ['gmem-private'],
  killedBy: ['private-max-level', 'leaf-justified'],
});

/** kvm_faultin_pfn_private + the map: gmem pfn, max_level clamped by folio and RMP (INV-34). */
export function privateFault(kvm: Kvm, slot: EngineSlot, gfn: number): FaultResult {
  const { pfn, order, index } = kvmGmemGetFolio(kvm, slot, gfn);
  if (!convertAtAllocation(kvm)) {
    // Isaku's kvm_x86_gmem_prepare: convert in the fault path, at 4 KiB, and report a 4 KiB max_level.
    if (!kvm.rmp.get(pfn)?.assigned || kvm.mutation.on(RMP_CONVERT_AT_FAULT)) rmpAssign(kvm, pfn, 3);
  }
  let level: Level = order >= 9 ? 2 : 3;
  const rmpLevel = kvm.rmp.get(pfn)?.level ?? 3;
  if (!kvm.mutation.on(PRIVATE_MAX_LEVEL_UNCLAMPED) && rmpLevel > level) level = rmpLevel;
  if (level === 2 && !blockFits(kvm, slot, gfn, index)) level = 3;
  const size = level === 2 ? FOLIO_PAGES : 1;
  const firstGfn = gfn - (gfn % size);
  mapLeaf(kvm.ops, kvm.root, {
    ipa: firstGfn * PAGE_SIZE,
    level,
    pfn: pfn - (gfn - firstGfn),
    perms: { r: true, w: true },
    private: true,
  });
  kvm.ops.stats.leavesMapped[level]++;
  return { kind: 'mapped' };
}

/** A 2 MiB private mapping needs the block inside the slot, file offset congruent, and every gfn private. */
function blockFits(kvm: Kvm, slot: EngineSlot, gfn: number, index: number): boolean {
  const first = gfn - (gfn % FOLIO_PAGES);
  if (first < slot.baseGfn || first + FOLIO_PAGES > slot.baseGfn + slot.npages) return false;
  if (index % FOLIO_PAGES !== gfn % FOLIO_PAGES) return false;
  return allPrivateIn(kvm, first, FOLIO_PAGES);
}

/** Every gfn in [first, first + count) is private. */
function allPrivateIn(kvm: Kvm, first: number, count: number): boolean {
  for (let g = first; g < first + count; g++) if (!kvm.privateGfns.has(g)) return false;
  return true;
}
