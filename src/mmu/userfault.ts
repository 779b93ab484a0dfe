// KVM Userfault in the engine (S0, seed 000): the fault path reads the VMM's bitmap at fault time
// (kvm_do_userfault), so a bit set on a page that is already mapped has no effect until the slot is
// zapped; a FLAGS_ONLY change that turns USERFAULT on zaps the slot (kvm_arch_flush_shadow_memslot,
// INV-8), and turning it off zaps only with zapOnUserfaultDisable (OQ-7, INV-10).
// Memory ordering (issue 10 item 7, docs/ARCHITECTURE.md "Memory ordering"): the bitmap's bits are
// shared locations of the store buffer (store-buffer.ts). The VMM clears a bit with store-release
// after writing the page; kvm_do_userfault reads it with load-acquire, so what the vCPU then reads
// of the page is ordered after the bit. Without the acquire the read may be satisfied first: the
// engine writes that as code order, the page read taken before the bit load.
// Mutation points: userfault-enable-skips-zap, userfault-disable-zaps, userfault-clear-without-release,
// userfault-bit-load-without-acquire.
import { PAGE_SIZE } from '../../model/abi.js';
import type { UserfaultBits } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import { KVM_MEM_USERFAULT } from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import type { Kvm } from './kvm.js';
import type { EngineSlot } from './memslots.js';
import { kvmUnmapRange } from './unmap.js';
import { defineMutant } from './mutants.js';
import { preempt, type Steps } from './steps.js';

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

export const USERFAULT_CLEAR_WITHOUT_RELEASE = defineMutant({
  name: 'userfault-clear-without-release',
  description:
    'the VMM clears a userfault bit with a plain store, so the clear may become visible before the ' +
    'page contents it wrote first and a vCPU maps the page unfilled (x86 TSO orders stores: no bug there)',
  source: 'own (S0: userspace clears the bit with store-release)',
  arches: ['arm64'],
  series: ['userfault'],
  killedBy: ['linearizable'],
  interleaving: true,
});

export const USERFAULT_BIT_LOAD_WITHOUT_ACQUIRE = defineMutant({
  name: 'userfault-bit-load-without-acquire',
  description:
    "kvm_do_userfault reads the bit with a plain load, so the vCPU's read of the page may be satisfied " +
    'before it and see the contents from before the VMM resolved the page (x86 keeps loads in order)',
  source: 'own (S0: the fault path reads the bit with load-acquire)',
  arches: ['arm64'],
  series: ['userfault'],
  killedBy: ['linearizable'],
  interleaving: true,
});

/**
 * The store-buffer location of a bit: the 64-bit word holding it (the VMM stores a word at a time;
 * properties/memory-order.ts uses the same grain), per slot id as the bitmap is that slot's memory.
 */
export const USERFAULT_WORD_BITS = 64;
const bitLoc = (slot: { as: number; id: number }, rel: number): string =>
  `userfault word ${slot.as}:${slot.id}:${Math.floor(rel / USERFAULT_WORD_BITS)}`;

const bitIn = (bitmap: Uint8Array, rel: number): boolean => (bitmap[rel >>> 3]! & (1 << (rel & 7))) !== 0;

/** Whether the slot's userfault bitmap applies to faults at all. */
const userfaultApplies = (kvm: Kvm, slot: EngineSlot): boolean =>
  seriesOn(kvm.config, 'userfault') && (slot.flags & KVM_MEM_USERFAULT) !== 0 && slot.userfaultBitmap !== undefined;

export function userfaultBitSet(kvm: Kvm, slot: EngineSlot, gfn: number): boolean {
  if (!userfaultApplies(kvm, slot)) return false;
  const rel = gfn - slot.baseGfn;
  // Forwarding from a buffered word store: the newest one covering this bit decides (the VMM
  // thread reads its own stores; a vCPU never has any).
  const own = kvm.storeBuffer.load<{ lo: number; last: number; set: boolean } | null>(bitLoc(slot, rel), () => null);
  if (own && rel >= own.lo && rel < own.last) return own.set;
  return bitIn(slot.userfaultBitmap!, rel);
}

/**
 * kvm_do_userfault (S0): the bit, read with load-acquire at a point of its own, so another thread
 * may resolve the page between the fault's memslot lookup and the bit load. Under the mutant the
 * vCPU's read of the page is satisfied before the bit load (kvm.userfaultEarlyLoads; vcpu-run.ts
 * completeAccess uses it if the fault maps the page).
 */
export function* kvmDoUserfaultSteps(kvm: Kvm, vcpu: number, slot: EngineSlot, gfn: number): Steps<boolean> {
  if (!userfaultApplies(kvm, slot)) return false;
  if (kvm.mutation.on(USERFAULT_BIT_LOAD_WITHOUT_ACQUIRE)) {
    const hva = slot.hva + (gfn - slot.baseGfn) * PAGE_SIZE;
    kvm.userfaultEarlyLoads.set(vcpu, { gfn, bytes: kvm.host.readBytes(hva, PAGE_SIZE) });
  }
  yield* preempt('kvm_do_userfault: test_bit on the userfault bitmap (load-acquire)');
  return userfaultBitSet(kvm, slot, gfn);
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

/**
 * The VMM stores to its bitmap; KVM sees it at the next fault. Each bit is a store of the VMM
 * thread (store-buffer.ts): setting is a plain store, clearing a store-release, ordered after the
 * page contents the VMM wrote to resolve the page.
 */
export function kvmUserfaultBits(kvm: Kvm, cmd: UserfaultBits): Outcome {
  const slot = kvm.memslots.byId(cmd.as, cmd.slot);
  const bitmap = slot?.userfaultBitmap;
  if (!slot || !bitmap) return { kind: 'ok' };
  const release = !cmd.set && !kvm.mutation.on(USERFAULT_CLEAR_WITHOUT_RELEASE);
  const end = Math.min(slot.npages, cmd.firstPage + cmd.numPages);
  // One store per bitmap word the range touches.
  for (let first = cmd.firstPage; first < end; ) {
    const last = Math.min(end, (Math.floor(first / USERFAULT_WORD_BITS) + 1) * USERFAULT_WORD_BITS);
    const lo = first;
    const commit = (): void => {
      for (let rel = lo; rel < last; rel++) {
        if (cmd.set) bitmap[rel >>> 3]! |= 1 << (rel & 7);
        else bitmap[rel >>> 3]! &= ~(1 << (rel & 7));
      }
    };
    kvm.storeBuffer.store(bitLoc(slot, lo), { lo, last, set: cmd.set }, commit, release);
    first = last;
  }
  return { kind: 'ok' };
}
