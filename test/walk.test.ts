// Shared walkers and vCPU table walks as steps (issue 10 items 1 and 3): two faults in the map
// walker at once under mmu_lock held for read, a compare-and-swap that loses and retries, and a
// vCPU walk paused between levels while an arm64 fast unmap disconnects the subtree it is in.
import { describe, expect, test } from 'vitest';
import { SZ_1G, SZ_2M } from '../model/abi.js';
import type { Command, GuestAccess } from '../model/commands.js';
import { makeConfig, type ModelConfig } from '../model/series.js';
import { ConcurrentChecks, type StepProblem } from '../properties/concurrent-invariants.js';
import { Engine } from '../src/mmu/engine.js';
import { runInterleaved } from '../src/mmu/interleave.js';
import type { MutantName } from '../src/mmu/mutants.js';
import { TLBI_ISSUED } from '../src/mmu/unmap.js';
import type { Arch } from '../model/abi.js';

const HVA = 0x40_0000_0000;
const access = (vcpu: number, gpa: number, write = false): GuestAccess => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len: 1,
  write,
  value: write ? 5n : 0n,
});

interface Run {
  points: string[];
  problems: StepProblem[];
  engine: Engine;
}

function run(
  arch: Arch,
  config: ModelConfig | undefined,
  mutant: MutantName | null,
  setup: Command[],
  threads: Command[][],
  schedule: number[],
): Run {
  const engine = new Engine(arch, mutant, config);
  for (const c of setup) engine.apply(c);
  engine.takeEvents();
  const checks = new ConcurrentChecks(engine, [{ kind: 'vcpu', vcpu: 0 }, { kind: 'vmm' }, { kind: 'vcpu', vcpu: 1 }]);
  const points: string[] = [];
  const problems: StepProblem[] = [];
  runInterleaved(engine, threads, schedule, (s) => {
    points.push(`T${s.thread} ${s.point}`);
    problems.push(...checks.afterStep(s, engine.takeEvents()));
  });
  return { points, problems, engine };
}

describe('two vCPUs fault in the map walker at once (mmu_lock for read)', () => {
  const setup: Command[] = [
    { kind: 'mmap', hva: HVA, size: SZ_2M, prot: 'rw', backing: 'anon' },
    { kind: 'setMemslot', api: 'v2', as: 0, slot: 0, flags: 0, gpa: 0, size: SZ_2M, hva: HVA },
  ];
  const threads: Command[][] = [[access(0, 0x1000)], [], [access(1, 0x2000)]];

  for (const arch of ['arm64', 'x86'] as const) {
    test(`${arch}: both are inside the walker; the loser of the table install retries; refcounts stay exact`, () => {
      // Alternate the two vCPUs step by step, so both read the empty root entry before either installs.
      const r = run(
        arch,
        undefined,
        null,
        setup,
        threads,
        Array<number>(80)
          .fill(0)
          .map((_, i) => i % 2),
      );
      expect(r.problems).toEqual([]);
      // Both read the empty level-0 entry before either installed the level-1 table.
      const firstTwo = r.points.filter((p) => p.includes('stage2_map_walker: level 0')).slice(0, 2);
      expect(firstTwo.map((p) => p.slice(0, 2)).sort()).toEqual(['T0', 'T2']);
      expect(r.points.indexOf(firstTwo[1]!)).toBeLessThan(r.points.findIndex((p) => p.includes('level 1 PTE read')));
      // The loser's cmpxchg failed: it re-entered the guest and found the winner's tables.
      expect(r.points.some((p) => p.endsWith('vcpu_enter_guest: the guest retries the access'))).toBe(true);
      expect(r.points.filter((p) => p.endsWith('returned'))).toHaveLength(2);
      expect(r.engine.kvm.mmuLock.readerCount).toBe(0);
    });
  }
});

describe('arm64 fast unmap against a vCPU table walk inside the disconnected subtree', () => {
  const config = makeConfig(['arm64-unmap'], { unmapStrategy: 'fast-disconnect' });
  // A 1 GiB slot logged, so faults map 4 KiB pages under level-2 and level-3 tables.
  const setup: Command[] = [
    { kind: 'mmap', hva: HVA, size: SZ_1G, prot: 'rw', backing: 'hugetlb1g' },
    { kind: 'setMemslot', api: 'v2', as: 0, slot: 0, flags: 1, gpa: SZ_1G, size: SZ_1G, hva: HVA },
    access(1, SZ_1G + 0x1000, true),
  ];
  // vCPU 0 has never touched the slot: its access misses its TLB and walks root -> L1 -> L2 -> L3.
  const threads: Command[][] = [[access(0, SZ_1G + 0x1000)], [{ kind: 'munmap', hva: HVA, size: SZ_1G }]];
  const probe = (mutant: MutantName | null) => run('arm64', config, mutant, setup, threads, []);

  for (const mutant of [null, 'fast-unmap-frees-walked-table'] as const) {
    test(`${mutant ?? 'the correct engine'}: the walk paused after its level-1 read resumes in the window`, () => {
      const walkPoint = 'stage-2 table walk: level 1 descriptor read, level 2 next';
      const p = probe(mutant);
      const at = p.points.indexOf(`T0 ${walkPoint}`);
      expect(at).toBeGreaterThanOrEqual(0);
      // T0 to its level-1 read; T1 until its unmap stops in the flush window; T0 one step; the rest.
      const t1ToWindow = (r: Run) =>
        r.points.filter((x) => x.startsWith('T1')).findIndex((x) => x.includes('TLB flush pending')) + 1;
      const munmapAlone = run('arm64', config, mutant, setup, [[], threads[1]!], []);
      const n = t1ToWindow(munmapAlone);
      expect(n).toBeGreaterThan(0);
      const schedule = [...Array<number>(at + 1).fill(0), ...Array<number>(n).fill(1), 0];
      const r = run('arm64', config, mutant, setup, threads, schedule);
      expect(r.points[at + n]).toBe(
        'T1 PTEs invalidated, TLB flush pending: a vCPU may still hit a stale entry (INV-2)',
      );
      const refcount = r.problems.filter((x) => x.invariant === 'pgtable-refcount').map((x) => x.message);
      if (mutant === null) expect(r.problems).toEqual([]);
      else expect(refcount.some((m) => /table walk read table \d+ \(level 2\) after it was freed/.test(m))).toBe(true);
    });
  }
});

describe('S4: the PTE store, DSB ishst, TLBI, DSB ish of the deferred unmap against another vCPU walk', () => {
  const config = makeConfig(['arm64-unmap'], { unmapStrategy: 'deferred-range' });
  // A 1 GiB block mapped through vCPU 1's fault; vCPU 0 has no TLB entry for it.
  const setup: Command[] = [
    { kind: 'mmap', hva: HVA, size: SZ_1G, prot: 'rw', backing: 'hugetlb1g' },
    { kind: 'setMemslot', api: 'v2', as: 0, slot: 0, flags: 0, gpa: SZ_1G, size: SZ_1G, hva: HVA },
    access(1, SZ_1G),
  ];
  const threads: Command[][] = [[access(0, SZ_1G)], [{ kind: 'munmap', hva: HVA, size: SZ_1G }]];

  for (const mutant of [null, 's2-pte-no-dsb-before-tlbi'] as const) {
    test(`${mutant ?? 'the correct engine'}: vCPU 0 walks between the TLBI and its DSB`, () => {
      const alone = run('arm64', config, mutant, setup, [[], threads[1]!], []);
      const n = alone.points.findIndex((x) => x.startsWith(`T1 ${TLBI_ISSUED}`)) + 1;
      expect(n).toBeGreaterThan(0);
      // T0 reads the root entry; T1 unmaps up to the point after its TLBI; T0 reads the level-1 entry.
      const r = run('arm64', config, mutant, setup, threads, [0, ...Array<number>(n).fill(1), 0]);
      expect(r.points[n]).toBe(`T1 ${TLBI_ISSUED}`);
      const stale = r.problems.filter((x) => x.invariant === 'tlb-coherent').map((x) => x.message);
      if (mutant === null) expect(r.problems).toEqual([]);
      else expect(stale.some((m) => /vcpu0 TLB maps ipa 0x40000000 \(level 1\)/.test(m))).toBe(true);
    });
  }
});
