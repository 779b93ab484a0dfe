// The vmm profile (properties/vmm-generators.ts) must really build real-VMM-sized states, measured
// from the engine's state as its runs go (not from what the generator meant to do), and its runs
// must pass every invariant on the unmutated engine.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { KVM_MEM_GUEST_MEMFD, KVM_MEM_READONLY } from '../model/abi.js';
import { UPSTREAM_CONFIG } from '../model/series.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { VMM_MAX_GROUPS, vmmGroupArbitraryFor, vmmSetupArbitrary } from '../properties/vmm-generators.js';
import { leaves } from '../src/mmu/pgtable.js';
import { runCampaign } from '../src/harness/runner.js';
import { Session } from '../src/harness/session.js';

const GIB_PAGES = 1 << 18;

interface RunScale {
  meanSlots: number;
  biggestSlotPages: number;
  touchedPages: number;
  maxLeaves: number;
  /** At some step every RAM slot of the engine (writable, address space 0) had a dirty bitmap. */
  loggedEverywhere: boolean;
  /** Most successful GET_DIRTY_LOGs of one slot. */
  harvestsOfOneSlot: number;
}

/** One vmm run, measured from the engine (no invariants: this test is about the states). */
function measureRun(seed: number): RunScale {
  const run = fc.tuple(
    vmmSetupArbitrary,
    fc.array(vmmGroupArbitraryFor(UPSTREAM_CONFIG), { minLength: VMM_MAX_GROUPS, maxLength: VMM_MAX_GROUPS }),
  );
  const [setup, groups] = fc.sample(run, { seed, numRuns: 1 })[0]!;
  const session = new Session({ arch: seed % 2 ? 'x86' : 'arm64', mutant: null, invariants: new Set() });
  const touched = new Set<number>();
  const harvests = new Map<number, number>();
  const slotCounts: number[] = [];
  let biggestSlotPages = 0;
  let maxLeaves = 0;
  let loggedEverywhere = false;
  for (const t of setup) session.step(t);
  for (const group of groups) {
    for (const t of group) {
      const step = session.step(t)!;
      if (step.cmd.kind === 'guestAccess' && step.engine?.kind === 'run')
        touched.add(Math.floor(step.cmd.gpa / 0x1000));
      if (step.cmd.kind === 'getDirtyLog' && step.engine?.kind === 'dirtyLog')
        harvests.set(step.cmd.slot, (harvests.get(step.cmd.slot) ?? 0) + 1);
      const slots = session.engine.kvm.memslots.all();
      const ram = slots.filter((s) => s.as === 0 && !(s.flags & (KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD)));
      if (ram.length >= 4 && ram.every((s) => s.dirtyBitmap)) loggedEverywhere = true;
      for (const s of slots) biggestSlotPages = Math.max(biggestSlotPages, s.npages);
    }
    slotCounts.push(session.engine.kvm.memslots.all().length);
    let n = 0;
    for (const _ of leaves(session.engine.kvm.root)) n++;
    maxLeaves = Math.max(maxLeaves, n);
  }
  return {
    meanSlots: slotCounts.reduce((a, b) => a + b, 0) / slotCounts.length,
    biggestSlotPages,
    touchedPages: touched.size,
    maxLeaves,
    loggedEverywhere,
    harvestsOfOneSlot: Math.max(0, ...harvests.values()),
  };
}

describe('vmm profile', () => {
  test('its runs have real-VMM-sized states', () => {
    const runs = [1, 2, 3, 4, 5, 6].map(measureRun);
    const mean = runs.reduce((a, r) => a + r.meanSlots, 0) / runs.length;
    expect(mean).toBeGreaterThanOrEqual(8);
    expect(runs.every((r) => r.biggestSlotPages >= GIB_PAGES)).toBe(true);
    expect(Math.max(...runs.map((r) => r.touchedPages))).toBeGreaterThanOrEqual(1000);
    expect(Math.max(...runs.map((r) => r.maxLeaves))).toBeGreaterThan(1000);
    expect(runs.some((r) => r.loggedEverywhere)).toBe(true);
    expect(Math.max(...runs.map((r) => r.harvestsOfOneSlot))).toBeGreaterThanOrEqual(2);
  });

  test('its runs pass every invariant on the unmutated engine (small budget)', () => {
    const result = runCampaign({
      arches: ['x86', 'arm64'],
      seed: 11,
      runs: 1,
      maxCommands: 5,
      invariants: INVARIANT_IDS,
      mutant: null,
      profile: 'vmm',
    });
    expect(result.failure?.messages ?? []).toEqual([]);
    expect(result.ok).toBe(true);
    // Groups, not single commands: five of them are hundreds of commands.
    expect(result.commands).toBeGreaterThan(500);
    expect(result.coverage.get('scale runs ending with >= 8 memslots')).toBe(2);
    expect(result.coverage.get('scale runs ending with a memslot of >= 1 GiB')).toBe(2);
  }, 300_000);
});
