// Unit tests of the engine's machinery: the walker and its visitors, break-before-make ordering,
// table lifetimes, TLB behaviour, the memslot index, and block mappings.
import { describe, expect, test } from 'vitest';
import { KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, NR_VCPUS, SZ_1G, SZ_2M } from '../model/abi.js';
import type { DemandPaging } from '../model/commands.js';
import {
  checkBlockRules,
  checkBreakBeforeMake,
  checkLeafJustified,
  checkTableRefcounts,
  checkTlbCoherent,
} from '../properties/engine-invariants.js';
import { Engine } from '../src/mmu/engine.js';
import { MemslotIndex } from '../src/mmu/memslots.js';
import { Mutation } from '../src/mmu/mutants.js';
import { MmuOps } from '../src/mmu/ops.js';
import { leaves, levelSize, tables, translate } from '../src/mmu/pgtable.js';
import { SortedChunks } from '../src/mmu/sorted-chunks.js';
import { Tlb } from '../src/mmu/tlb.js';
import { mapLeaf, unmapRange } from '../src/mmu/visitors.js';

function fixture(mutant: ConstructorParameters<typeof Mutation>[0] = null) {
  const tlbs = Array.from({ length: NR_VCPUS }, () => new Tlb());
  const mutation = new Mutation(mutant);
  const ops = new MmuOps(tlbs, mutation);
  const root = ops.allocTable(0);
  return { tlbs, mutation, ops, root };
}
const RW = { r: true, w: true };

describe('walker and visitors', () => {
  test('maps 4K, 2M and 1G leaves at the right levels and translates through them', () => {
    const { ops, root } = fixture();
    mapLeaf(ops, root, { ipa: 0x5000, level: 3, pfn: 7, perms: RW });
    mapLeaf(ops, root, { ipa: SZ_2M, level: 2, pfn: 512, perms: RW });
    mapLeaf(ops, root, { ipa: SZ_1G, level: 1, pfn: 262144, perms: RW });
    expect(translate(root, 0x5123)).toMatchObject({ ipaBase: 0x5000, leaf: { pfn: 7, level: 3 } });
    expect(translate(root, SZ_2M + 0x3000)).toMatchObject({ ipaBase: SZ_2M, leaf: { pfn: 512, level: 2 } });
    expect(translate(root, SZ_1G + 0x1234567)).toMatchObject({ ipaBase: SZ_1G, leaf: { pfn: 262144, level: 1 } });
    expect(checkTableRefcounts({ root } as never)).toEqual([]);
  });

  test('unmap removes leaves, frees emptied tables and keeps refcounts exact', () => {
    const { ops, mutation, root } = fixture();
    mapLeaf(ops, root, { ipa: 0x5000, level: 3, pfn: 7, perms: RW });
    mapLeaf(ops, root, { ipa: 0x6000, level: 3, pfn: 8, perms: RW });
    unmapRange(ops, mutation, root, 0x5000, 0x6000);
    expect([...leaves(root)].map((l) => l.ipaBase)).toEqual([0x6000]);
    unmapRange(ops, mutation, root, 0, SZ_1G);
    expect([...tables(root)]).toHaveLength(1);
    expect(root.refcount).toBe(1);
    expect(ops.stats.tablesFreed).toBe(3);
  });

  test('mapping a block over a table breaks it, flushes, and frees the subtree once the walk has ended', () => {
    const { ops, root } = fixture();
    mapLeaf(ops, root, { ipa: SZ_2M, level: 3, pfn: 600, perms: RW });
    ops.takeEvents();
    mapLeaf(ops, root, { ipa: SZ_2M, level: 2, pfn: 1024, perms: RW });
    const events = ops.takeEvents();
    expect(checkBreakBeforeMake(events)).toEqual([]);
    expect(events.map((e) => e.t).filter((t) => t !== 'ref')).toEqual(['pte', 'dsb', 'tlbi', 'dsb', 'pte', 'free']);
    expect(checkTableRefcounts({ root } as never)).toEqual([]);
  });

  test('a 4K leaf where a block is breaks the block with break-before-make; the mutant skips the break', () => {
    for (const mutant of [null, 'split-without-bbm'] as const) {
      const { ops, root } = fixture(mutant);
      mapLeaf(ops, root, { ipa: SZ_2M, level: 2, pfn: 1024, perms: { r: true, w: false } });
      ops.takeEvents();
      mapLeaf(ops, root, { ipa: SZ_2M + 0x5000, level: 3, pfn: 1029, perms: RW });
      expect(translate(root, SZ_2M + 0x5000)).toMatchObject({ leaf: { level: 3, pfn: 1029 } });
      expect(translate(root, SZ_2M + 0x6000)).toBeUndefined();
      expect(ops.stats.splits).toBe(1);
      expect(checkBreakBeforeMake(ops.takeEvents()).length > 0).toBe(mutant !== null);
    }
  });
});

describe('TLB', () => {
  test('keeps a translation until a TLBI, on every vCPU; the mutant flushes only vCPU 0', () => {
    for (const mutant of [null, 'tlbi-skips-other-vcpus'] as const) {
      const { tlbs, ops, mutation, root } = fixture(mutant);
      mapLeaf(ops, root, { ipa: 0x5000, level: 3, pfn: 7, perms: RW });
      for (const tlb of tlbs) tlb.fill({ ipaBase: 0x5000, level: 3, pfn: 7, perms: RW });
      unmapRange(ops, mutation, root, 0x5000, 0x6000);
      expect(checkTlbCoherent({ root, tlbs } as never).length > 0).toBe(mutant !== null);
    }
  });
});

describe('TLB range index', () => {
  /** xorshift32, so the sequence is the same on every run. */
  const rng = (seed: number) => () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const levels = [3, 2, 1] as const;
  test('a TLBI removes exactly the overlapping entries, through thousands of fills in random order', () => {
    for (const mutant of [null, 'tlb-fill-appends-unsorted'] as const) {
      const tlb = new Tlb(new Mutation(mutant));
      const model = new Map<string, { ipaBase: number; size: number }>();
      const next = rng(42);
      let disagreements = 0;
      for (let step = 0; step < 4000; step++) {
        const level = levels[Math.floor(next() * 10) % 3 === 0 ? 1 + Math.floor(next() * 2) : 0]!;
        const size = levelSize(level);
        const ipa = Math.floor(next() * 4 * SZ_1G);
        const base = ipa - (ipa % size);
        if (next() < 0.7) {
          tlb.fill({ ipaBase: base, level, pfn: step, perms: RW });
          for (const [k, e] of model) if (e.ipaBase < base + size && base < e.ipaBase + e.size) model.delete(k);
          model.set(`${level}:${base}`, { ipaBase: base, size });
        } else {
          const [start, end] = [ipa, ipa + Math.floor(next() * 8 * SZ_2M)];
          const want = [...model].filter(([, e]) => e.ipaBase < end && start < e.ipaBase + e.size).map(([k]) => k);
          const got = tlb.overlapping(start, end).map(([k]) => k);
          if (want.sort().join() !== got.sort().join()) disagreements++;
          tlb.invalidate(start, end);
          for (const k of want) model.delete(k);
        }
      }
      if (mutant) expect(disagreements).toBeGreaterThan(0);
      else {
        expect(disagreements).toBe(0);
        expect([...tlb.entries.keys()].sort()).toEqual([...model.keys()].sort());
      }
    }
  });
});

describe('sorted chunks', () => {
  test('stay ordered through thousands of inserts and removals, across chunk splits', () => {
    const list = new SortedChunks<{ k: number }>((x) => x.k);
    const model: { k: number }[] = [];
    // xorshift32: a deterministic sequence of 32-bit values.
    let seed = 3;
    const next = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    for (let step = 0; step < 6000; step++) {
      if (model.length && next(4) === 0) {
        const [item] = model.splice(next(model.length), 1);
        expect(list.remove(item!)).toBe(true);
        expect(list.remove(item!)).toBe(false);
      } else {
        const item = { k: next(100000) };
        list.insert(item);
        model.push(item);
      }
    }
    model.sort((a, b) => a.k - b.k);
    expect(list.size).toBe(model.length);
    expect(model.length).toBeGreaterThan(2000);
    expect(list.toArray().map((x) => x.k)).toEqual(model.map((x) => x.k));
    const k = model[Math.floor(model.length / 2)]!.k;
    expect(list.firstAfter(k)?.k).toBe(model.find((x) => x.k > k)?.k);
  });
});

describe('memslot index', () => {
  const slot = (id: number, baseGfn: number, npages: number, hva: number) => ({
    as: 0,
    id,
    flags: 0,
    baseGfn,
    npages,
    hva,
    dirtyBitmap: null,
  });
  test('binary search by gfn, hva interval lookup with aliases, generation-checked vCPU cache', () => {
    const index = new MemslotIndex(2, new Mutation());
    const a = slot(0, 0, 16, 0x1000000000);
    const b = slot(1, 0x200, 16, 0x1000000000);
    const c = slot(2, 0x400, 512, 0x1000100000);
    index.install([c, a, b]);
    expect(index.find(0, 0x20f)?.id).toBe(1);
    expect(index.find(0, 0x210)).toBeUndefined();
    expect(
      index
        .overlappingHva(0x1000000000, 0x1000001000)
        .map((s) => s.id)
        .sort(),
    ).toEqual([0, 1]);
    expect(index.overlappingHva(0x10001ff000, 0x1000200000).map((s) => s.id)).toEqual([2]);
    expect(index.findForVcpu(0, 5)?.id).toBe(0);
    index.install([b, c]);
    expect(index.findForVcpu(0, 5)).toBeUndefined();
  });
});

describe('memslot index under single updates', () => {
  test.each([null, 'memslot-overlap-skips-lower-neighbour'] as const)(
    'find, overlap and hva queries agree with a scan through random creates, moves and deletes (mutant %s)',
    (mutant) => {
      const index = new MemslotIndex(1, new Mutation(mutant));
      let overlapMisses = 0;
      const live = new Map<number, ReturnType<typeof mk>>();
      const mk = (id: number, baseGfn: number, npages: number) => ({
        as: 0,
        id,
        flags: 0,
        baseGfn,
        npages,
        hva: 0x1000000000 + baseGfn * 0x1000,
        dirtyBitmap: null,
      });
      // xorshift32: a deterministic sequence of 32-bit values.
      let seed = 7;
      const next = (n: number) => {
        seed ^= seed << 13;
        seed ^= seed >>> 17;
        seed ^= seed << 5;
        return (seed >>> 0) % n;
      };
      for (let step = 0; step < 3000; step++) {
        const id = next(64);
        const [baseGfn, npages] = [next(4096), 1 + next(64)];
        const overlapScan = [...live.values()].some(
          (s) => s.id !== id && baseGfn < s.baseGfn + s.npages && s.baseGfn < baseGfn + npages,
        );
        if (index.overlapsGfn(0, id, baseGfn, npages) !== overlapScan) overlapMisses++;
        const old = live.get(id) ?? null;
        if (old && next(3) === 0) {
          index.replace(old, null);
          live.delete(id);
        } else if (!overlapScan) {
          const s = mk(id, baseGfn, npages);
          index.replace(old, s);
          live.set(id, s);
        }
        const gfn = next(4200);
        const scan = [...live.values()].find((s) => gfn >= s.baseGfn && gfn < s.baseGfn + s.npages);
        expect(index.find(0, gfn)).toBe(scan);
        expect(index.byId(0, id)).toBe(live.get(id));
        const hva = 0x1000000000 + next(4200) * 0x1000;
        const hvaScan = [...live.values()].filter((s) => s.hva < hva + 0x3000 && hva < s.hva + s.npages * 0x1000);
        expect(new Set(index.overlappingHva(hva, hva + 0x3000))).toEqual(new Set(hvaScan));
      }
      expect(index.all().length).toBe(live.size);
      if (mutant) expect(overlapMisses).toBeGreaterThan(0);
      else expect(overlapMisses).toBe(0);
    },
  );
});

describe('engine end to end', () => {
  test('a THP-backed slot with congruent gpa/hva gets a 2M block; logging protects it, a write splits it', () => {
    const e = new Engine('arm64');
    const H = 0x1000000000;
    e.apply({ kind: 'mmap', hva: H, size: SZ_2M, prot: 'rw', backing: 'thp' });
    e.apply({ kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: SZ_2M, size: SZ_2M, hva: H });
    e.apply({ kind: 'guestAccess', vcpu: 0, gpa: SZ_2M + 0x10, len: 8, write: true, value: 1n });
    expect([...leaves(e.kvm.root)].map((l) => l.leaf.level)).toEqual([2]);
    e.apply({ kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 1, gpa: SZ_2M, size: SZ_2M, hva: H });
    expect([...leaves(e.kvm.root)].map((l) => [l.leaf.level, l.leaf.perms.w])).toEqual([[2, false]]);
    expect(e.kvm.ops.stats.splits).toBe(0);
    e.apply({ kind: 'guestAccess', vcpu: 1, gpa: SZ_2M + 0x3000, len: 8, write: true, value: 2n });
    expect(e.kvm.ops.stats.splits).toBe(1);
    expect([...leaves(e.kvm.root)].map((l) => [l.ipaBase, l.leaf.level, l.leaf.perms.w])).toEqual([
      [SZ_2M + 0x3000, 3, true],
    ]);
    expect(checkTlbCoherent(e.kvm)).toEqual([]);
  });
});

describe('dirty logging over blocks (lazy split)', () => {
  test('INITIALLY_SET keeps a block writable until CLEAR_DIRTY_LOG protects it; the next write splits it', () => {
    for (const arch of ['x86', 'arm64'] as const) {
      const e = new Engine(arch);
      const H = 0x1000000000;
      const ok = (c: Parameters<Engine['apply']>[0]) => expect(e.apply(c).kind).not.toBe('err');
      const clean = () => expect([...checkBlockRules(e.kvm), ...checkLeafJustified(e.kvm)]).toEqual([]);
      ok({ kind: 'enableCap', cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, flags: 0, args0: 3 });
      ok({ kind: 'mmap', hva: H, size: SZ_2M, prot: 'rw', backing: 'thp' });
      ok({ kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 0, size: SZ_2M, hva: H });
      ok({ kind: 'guestAccess', vcpu: 0, gpa: 0x10, len: 8, write: true, value: 1n });
      ok({ kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 1, gpa: 0, size: SZ_2M, hva: H });
      expect([...leaves(e.kvm.root)].map((l) => [l.leaf.level, l.leaf.perms.w])).toEqual([[2, true]]);
      clean();
      ok({ kind: 'clearDirtyLog', as: 0, slot: 0, firstPage: 0, numPages: 64 });
      expect([...leaves(e.kvm.root)].map((l) => [l.leaf.level, l.leaf.perms.w])).toEqual([[2, false]]);
      clean();
      ok({ kind: 'guestAccess', vcpu: 1, gpa: 0x3000, len: 8, write: true, value: 2n });
      expect([...leaves(e.kvm.root)].map((l) => [l.ipaBase, l.leaf.level, l.leaf.perms.w])).toEqual([
        [0x3000, 3, true],
      ]);
      clean();
      expect(e.apply({ kind: 'getDirtyLog', as: 0, slot: 0 })).toMatchObject({ kind: 'dirtyLog' });
    }
  });

  test('block-rules reports a writable block while logging with a clear bit under it', () => {
    const e = new Engine('arm64');
    const H = 0x1000000000;
    e.apply({ kind: 'mmap', hva: H, size: SZ_2M, prot: 'rw', backing: 'thp' });
    e.apply({ kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 0, size: SZ_2M, hva: H });
    e.apply({ kind: 'guestAccess', vcpu: 0, gpa: 0x10, len: 8, write: true, value: 1n });
    e.apply({ kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 1, gpa: 0, size: SZ_2M, hva: H });
    expect(checkBlockRules(e.kvm)).toEqual([]);
    const [block] = [...leaves(e.kvm.root)];
    // Corrupt the state on purpose: the write permission logging took away.
    Object.assign(block!.leaf, { perms: { r: true, w: true } });
    expect(checkBlockRules(e.kvm)).toEqual([
      'block ipa 0x0 size 0x200000 in slot 0 writable while dirty logging, gfn 0x0 not dirty',
    ]);
  });
});

describe('agents are supplied by the caller (src/mmu/agent.ts)', () => {
  const cmd: DemandPaging = { kind: 'demandPaging', slot: 0, vcpuPages: [[0]], write: false, readers: 1, schedule: [] };
  test('a demandPaging command runs the agent the engine was given', () => {
    const calls: number[] = [];
    const agent = {
      run: () => {
        calls.push(1);
        return { outcome: { kind: 'err', errno: 'EINVAL' } as const };
      },
    };
    const e = new Engine('x86', null, undefined, { demandPaging: agent });
    expect(e.apply(cmd)).toEqual({ kind: 'err', errno: 'EINVAL' });
    expect(calls).toEqual([1]);
  });
  test('without one it is a wiring error, not a silent outcome', () => {
    expect(() => new Engine('x86').apply(cmd)).toThrow(/no agent was supplied/);
  });
});
