// The engine's memslot index, shaped like virt/kvm/kvm_main.c: per address space the slots sorted
// by base gfn (binary search), an hva interval index for MMU notifiers (several slots may alias one
// hva range), a generation bumped on every change, and a per-vCPU last-used-slot cache validated
// against that generation. Mutation points: slot-cache-ignores-generation,
// memslot-overlap-skips-lower-neighbour.
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

export const MEMSLOT_OVERLAP_SKIPS_LOWER_NEIGHBOUR = defineMutant({
  name: 'memslot-overlap-skips-lower-neighbour',
  description:
    'the overlap check of a create or move searches from the first slot based at or above the new base, ' +
    'missing a slot that starts below it and reaches into the new range, so the ioctl succeeds instead of EEXIST',
  source: 'own (the gfn-ordered search of kvm_check_memslot_overlap, kvm_for_each_memslot_in_gfn_range)',
  killedBy: ['differential'],
});

interface SlotCache {
  slot: EngineSlot | null;
  generation: number;
}

/**
 * An array kept sorted by `key` under single inserts and removals: a binary search finds the
 * position, a splice moves the tail (memmove, as KVM's sorted memslots array did before 5.17).
 */
class SortedSlots {
  readonly list: EngineSlot[] = [];

  constructor(private readonly key: (s: EngineSlot) => number) {}

  /** The first position whose key is >= k. */
  lowerBound(k: number): number {
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.key(this.list[mid]!) < k) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  insert(s: EngineSlot): void {
    const k = this.key(s);
    let at = this.lowerBound(k);
    while (at < this.list.length && this.key(this.list[at]!) === k) at++;
    this.list.splice(at, 0, s);
  }

  remove(s: EngineSlot): void {
    for (let i = this.lowerBound(this.key(s)); i < this.list.length; i++) {
      if (this.list[i] === s) {
        this.list.splice(i, 1);
        return;
      }
    }
  }
}

export class MemslotIndex {
  generation = 0;
  /** Per address space, ordered by base gfn (no two slots of one address space overlap). */
  private byGfn: SortedSlots[] = [];
  private byHva = new SortedSlots((s) => s.hva);
  /** Per address space, slot id -> slot (id_hash in struct kvm_memslots). */
  private ids: Map<number, EngineSlot>[] = [];
  /** An upper bound on any slot's size in bytes, for the hva search window; reset when empty. */
  private maxHvaLen = 0;
  private count = 0;
  private readonly invalid = new Set<EngineSlot>();
  private readonly vcpuCache: SlotCache[];

  constructor(
    nrVcpus: number,
    private readonly mutation: Mutation,
  ) {
    this.vcpuCache = Array.from({ length: nrVcpus }, () => ({ slot: null, generation: -1 }));
  }

  all(): EngineSlot[] {
    return this.byGfn.flatMap((sorted) => sorted?.list ?? []);
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
   * set, `next` joins it, and the generation is bumped. O(log N) to find the positions plus the
   * arrays' memmove, instead of rebuilding and re-sorting the whole set.
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
    if (!this.byGfn[s.as]) this.byGfn[s.as] = new SortedSlots((x) => x.baseGfn);
    this.byGfn[s.as]!.insert(s);
    this.byHva.insert(s);
    if (!this.ids[s.as]) this.ids[s.as] = new Map();
    this.ids[s.as]!.set(s.id, s);
    this.maxHvaLen = Math.max(this.maxHvaLen, s.npages * 4096);
    this.count++;
  }

  private remove(s: EngineSlot): void {
    this.byGfn[s.as]?.remove(s);
    this.byHva.remove(s);
    if (this.ids[s.as]?.get(s.id) === s) this.ids[s.as]!.delete(s.id);
    if (--this.count === 0) this.maxHvaLen = 0;
  }

  /** Whether a slot of `as` other than `exceptId` intersects [baseGfn, baseGfn + npages). */
  overlapsGfn(as: number, exceptId: number, baseGfn: number, npages: number): boolean {
    const sorted = this.byGfn[as];
    if (!sorted) return false;
    // Slots of one address space are disjoint, so their ends are ordered like their bases: start
    // at the last slot beginning at or below baseGfn (the only earlier one that can reach it).
    const list = sorted.list;
    const from = this.mutation.on(MEMSLOT_OVERLAP_SKIPS_LOWER_NEIGHBOUR)
      ? sorted.lowerBound(baseGfn)
      : Math.max(0, sorted.lowerBound(baseGfn + 1) - 1);
    for (let i = from; i < list.length; i++) {
      const s = list[i]!;
      if (s.baseGfn >= baseGfn + npages) break;
      if (s.id !== exceptId && baseGfn < s.baseGfn + s.npages) return true;
    }
    return false;
  }

  /** Binary search of the gfn-sorted array (search_memslots). */
  find(as: number, gfn: number): EngineSlot | undefined {
    const list = this.byGfn[as]?.list ?? [];
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
    const list = this.byHva.list;
    for (let i = this.byHva.lowerBound(start - this.maxHvaLen); i < list.length && list[i]!.hva < end; i++) {
      const s = list[i]!;
      if (s.hva + s.npages * 4096 > start) out.push(s);
    }
    return out;
  }
}
