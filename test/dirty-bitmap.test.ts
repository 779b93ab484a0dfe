import { describe, expect, it } from 'vitest';
import { KVM_DIRTY_LOG_INITIALLY_SET, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE } from '../model/abi.js';
import { allocDirtyBitmap, setBits, testBit } from '../src/mmu/dirty.js';
import type { Kvm } from '../src/mmu/kvm.js';

// A seeded xorshift so every run sees the same bitmaps.
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const bruteForce = (b: Uint32Array, npages: number): number[] =>
  Array.from({ length: npages }, (_, i) => i).filter((i) => testBit(b, i));

describe('engine dirty bitmap, word at a time', () => {
  it('setBits lists the same pages as a bit-by-bit scan', () => {
    const next = rng(11);
    for (let round = 0; round < 200; round++) {
      const npages = 1 + Math.floor(next() * 300);
      const b = new Uint32Array(Math.ceil(npages / 32));
      const density = next();
      for (let i = 0; i < npages; i++) if (next() < density) b[i >>> 5]! |= 1 << (i & 31);
      expect(setBits(b)).toEqual(bruteForce(b, npages));
    }
  });

  it('INITIALLY_SET sets exactly the slot pages, bit 31 included, nothing past the end', () => {
    const kvm = { manualDirtyLog: KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET } as Kvm;
    for (const npages of [1, 31, 32, 33, 64, 100]) {
      const pages = setBits(allocDirtyBitmap(kvm, npages));
      expect(pages).toEqual(Array.from({ length: npages }, (_, i) => i));
    }
    expect(setBits(allocDirtyBitmap({ manualDirtyLog: 0 } as Kvm, 100))).toEqual([]);
  });

  it('an empty 1 TiB slot (2^28 pages) harvests quickly', () => {
    const b = new Uint32Array(2 ** 28 / 32);
    b[12345] = 0x80000001;
    const t0 = performance.now();
    expect(setBits(b)).toEqual([12345 * 32, 12345 * 32 + 31]);
    // Generous bound for a shared machine; bit by bit this took over a second.
    expect(performance.now() - t0).toBeLessThan(500);
  });
});
