// The engine's memslot index, shaped like virt/kvm/kvm_main.c: per address space the slots ordered
// by gfn (sorted-chunks.ts, standing in for KVM's rb-tree), an hva index for MMU notifiers (several
// slots may alias one hva range), a generation bumped on every change, and a per-vCPU last-used-slot cache validated
// against that generation. Mutation points: slot-cache-ignores-generation,
// memslot-overlap-skips-lower-neighbour.
import { defineMutant, type Mutation } from './mutants.js';
import { SortedChunks } from './sorted-chunks.js';

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

export const MEMSLOT_OVERLAP_SKIPS_LOWER_NEIGHBOUR = defineMutant({
  name: 'memslot-overlap-skips-lower-neighbour',
  description:
    'the overlap check of a create or move skips the slots based below the new base, missing one ' +
    'that reaches into the new range, so the ioctl succeeds instead of EEXIST',
  source: 'own (the gfn-ordered search of kvm_check_memslot_overlap, kvm_for_each_memslot_in_gfn_range)',
  killedBy: ['differential'],
});

interface SlotCache {
  slot: EngineSlot | null;
  generation: number;
}

export class MemslotIndex {
  generation = 0;
  /**
   * Per address space, ordered by end gfn: slots of one address space are disjoint, so that is
   * their base order too, and the first slot ending after a gfn is the only one that can hold it.
   */
  private byGfn: SortedChunks<EngineSlot>[] = [];
  /** Ordered by hva; slots may alias, so a query looks back by the largest slot size. */
  private byHva = new SortedChunks<EngineSlot>((s) => s.hva);
  /** Per address space, slot id -> slot (id_hash in struct kvm_memslots). */
  private ids: Map<number, EngineSlot>[] = [];
  /** An upper bound on any slot's size in bytes, for the hva search window; reset when empty. */
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
    return this.byGfn.flatMap((sorted) => sorted?.toArray() ?? []);
  }

  byId(as: number, id: number): EngineSlot | undefined {
    return this.ids[as]?.get(id);
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

  /**
   * kvm_swap_active_memslots() after one create, delete, move or flags change: `old` leaves the
   * set, `next` joins it, and the generation is bumped. O(log N) per change (kvm_main.c updates
   * its gfn rb-tree and hva interval tree in place the same way) instead of rebuilding the set.
   */
  replace(old: EngineSlot | null, next: EngineSlot | null): void {
    this.generation++;
    this.invalid.clear();
    if (old) this.remove(old);
    if (next) this.add(next);
  }

  /** Replace the whole set of slots and bump the generation (unit tests build an index so). */
  install(slots: readonly EngineSlot[]): void {
    this.generation++;
    this.invalid.clear();
    for (const s of this.all()) this.remove(s);
    for (const s of slots) this.add(s);
  }

  private add(s: EngineSlot): void {
    if (!this.byGfn[s.as]) this.byGfn[s.as] = new SortedChunks((x) => x.baseGfn + x.npages);
    this.byGfn[s.as]!.insert(s);
    this.byHva.insert(s);
    if (!this.ids[s.as]) this.ids[s.as] = new Map();
    this.ids[s.as]!.set(s.id, s);
    this.maxHvaLen = Math.max(this.maxHvaLen, s.npages * 4096);
  }

  private remove(s: EngineSlot): void {
    this.byGfn[s.as]?.remove(s);
    this.byHva.remove(s);
    if (this.ids[s.as]?.get(s.id) === s) this.ids[s.as]!.delete(s.id);
    if (this.byHva.size === 0) this.maxHvaLen = 0;
  }

  /** Whether a slot of `as` other than `exceptId` intersects [baseGfn, baseGfn + npages). */
  overlapsGfn(as: number, exceptId: number, baseGfn: number, npages: number): boolean {
    const skipLower = this.mutation.on(MEMSLOT_OVERLAP_SKIPS_LOWER_NEIGHBOUR);
    let found = false;
    // From the first slot ending after baseGfn, until one starts at or after the range's end.
    this.byGfn[as]?.forEachAfter(baseGfn, (s) => {
      if (s.baseGfn >= baseGfn + npages) return false;
      if (s.id !== exceptId && !(skipLower && s.baseGfn < baseGfn)) found = true;
      return !found;
    });
    return found;
  }

  /** The slot holding gfn (search_memslots): the first slot ending after it, if it starts at or below. */
  find(as: number, gfn: number): EngineSlot | undefined {
    const s = this.byGfn[as]?.firstAfter(gfn);
    return s && s.baseGfn <= gfn ? s : undefined;
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
    // Slots based at or above start - maxHvaLen (integer keys: "after" that minus one).
    this.byHva.forEachAfter(start - this.maxHvaLen - 1, (s) => {
      if (s.hva >= end) return false;
      if (s.hva + s.npages * 4096 > start) out.push(s);
      return true;
    });
    return out;
  }
}
