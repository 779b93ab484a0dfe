// The engine's memslot index, shaped like virt/kvm/kvm_main.c: per address space the slots sorted
// by base gfn (binary search), an hva interval index for MMU notifiers (several slots may alias one
// hva range), a generation bumped on every change, and a per-vCPU last-used-slot cache validated
// against that generation. Mutation point: slot-cache-ignores-generation.
import { defineMutant, type Mutation } from './mutants.js';

export const SLOT_CACHE_IGNORES_GENERATION = defineMutant({
  name: 'slot-cache-ignores-generation',
  description: "the per-vCPU last-used-slot cache is trusted after the memslots' generation changed",
  source: 'own (kvm_vcpu_gfn_to_memslot with a stale vcpu->last_used_slot)',
  killedBy: ['differential'],
});

export interface EngineSlot {
  readonly as: number;
  readonly id: number;
  readonly flags: number;
  readonly baseGfn: number;
  readonly npages: number;
  readonly hva: number;
  readonly gmem?: { readonly handle: number; readonly pgoff: number };
  /** One bit per page while LOG_DIRTY_PAGES is set (kvm_memory_slot.dirty_bitmap). */
  dirtyBitmap: Uint32Array | null;
  /** userfault series: the VMM's userfault bitmap (kvm_memory_slot.userfault_bitmap), read at fault time. */
  readonly userfaultBitmap?: Uint8Array;
}

interface SlotCache {
  slot: EngineSlot | null;
  generation: number;
}

export class MemslotIndex {
  generation = 0;
  private byGfn: EngineSlot[][] = [];
  private byHva: EngineSlot[] = [];
  private maxHvaLen = 0;
  private readonly invalid = new Set<EngineSlot>();
  private readonly vcpuCache: SlotCache[];

  constructor(
    nrVcpus: number,
    private readonly mutation: Mutation,
  ) {
    this.vcpuCache = Array.from({ length: nrVcpus }, () => ({ slot: null, generation: -1 }));
  }

  all(): EngineSlot[] {
    return this.byGfn.flat();
  }

  byId(as: number, id: number): EngineSlot | undefined {
    return this.byGfn[as]?.find((s) => s.id === id);
  }

  /**
   * kvm_invalidate_memslot(): the slot stays in the active set as a KVM_MEMSLOT_INVALID copy until
   * the delete or move installs the final set, so faults that find it back off (fault.ts).
   */
  markInvalid(slot: EngineSlot): void {
    this.invalid.add(slot);
    this.generation++;
  }

  isInvalid(slot: EngineSlot): boolean {
    return this.invalid.size > 0 && this.invalid.has(slot);
  }

  /** Replace the whole set of slots (KVM swaps in a new memslots array) and bump the generation. */
  install(slots: readonly EngineSlot[]): void {
    this.generation++;
    this.invalid.clear();
    this.byGfn = [];
    for (const s of slots) {
      this.byGfn[s.as] ??= [];
      this.byGfn[s.as]!.push(s);
    }
    for (const list of this.byGfn) list?.sort((a, b) => a.baseGfn - b.baseGfn);
    this.byHva = [...slots].sort((a, b) => a.hva - b.hva);
    this.maxHvaLen = Math.max(0, ...slots.map((s) => s.npages * 4096));
  }

  /** Binary search of the gfn-sorted array (search_memslots). */
  find(as: number, gfn: number): EngineSlot | undefined {
    const list = this.byGfn[as] ?? [];
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = list[mid]!;
      if (gfn < s.baseGfn) hi = mid - 1;
      else if (gfn >= s.baseGfn + s.npages) lo = mid + 1;
      else return s;
    }
    return undefined;
  }

  /** kvm_vcpu_gfn_to_memslot(): try the vCPU's last used slot first (address space 0). */
  findForVcpu(vcpu: number, gfn: number): EngineSlot | undefined {
    const cache = this.vcpuCache[vcpu]!;
    const fresh = cache.generation === this.generation || this.mutation.on(SLOT_CACHE_IGNORES_GENERATION);
    const cached = fresh ? cache.slot : null;
    if (cached && gfn >= cached.baseGfn && gfn < cached.baseGfn + cached.npages) return cached;
    const slot = this.find(0, gfn);
    cache.slot = slot ?? null;
    cache.generation = this.generation;
    return slot;
  }

  /** Slots whose hva range intersects [start, end), in hva order (kvm_handle_hva_range). */
  overlappingHva(start: number, end: number): EngineSlot[] {
    const out: EngineSlot[] = [];
    let lo = 0;
    let hi = this.byHva.length;
    const from = start - this.maxHvaLen;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.byHva[mid]!.hva < from) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.byHva.length && this.byHva[i]!.hva < end; i++) {
      const s = this.byHva[i]!;
      if (s.hva + s.npages * 4096 > start) out.push(s);
    }
    return out;
  }
}
