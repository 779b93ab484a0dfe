// The store buffer adds scheduling choices only while a store is buffered (src/mmu/interleave.ts).
// A configuration that buffers nothing (x86 without the userfault series: TSO, and no location is
// routed through the buffer) must never offer a store as a choice, so its schedules mean what they
// meant before the store buffer existed; the userfault series on arm64 must offer them (else the
// first half could pass by never buffering anywhere).
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import type { Arch } from '../model/abi.js';
import { makeConfig, UPSTREAM_CONFIG, type ModelConfig } from '../model/series.js';
import { concurrentArbitraryFor, resolveThreads } from '../properties/concurrent-generators.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { Session } from '../src/harness/session.js';
import { type Chooser, runInterleaved } from '../src/mmu/interleave.js';

/** Store choices offered over 60 generated cases of `threads` threads (their own schedules followed). */
function storeChoicesOffered(arch: Arch, model: ModelConfig, threads: number): number {
  let offered = 0;
  for (const c of fc.sample(concurrentArbitraryFor(model, threads), { seed: 5, numRuns: 60 })) {
    const session = new Session({ arch, mutant: null, invariants: new Set(INVARIANT_IDS), model });
    try {
      for (const t of c.setup) session.step(t);
    } catch {
      continue; // a setup the sequential invariants reject is not this test's business
    }
    const chooser: Chooser = (choices, d) => {
      offered += choices.filter((x) => x.store).length;
      return d < c.schedule.length ? c.schedule[d]! % choices.length : 0;
    };
    try {
      runInterleaved(session.engine, resolveThreads(session.spec, c.roles, c.threads), chooser);
    } catch {
      // a stuck interleaving still offered what it offered
    }
  }
  return offered;
}

describe('store choices appear only where stores are buffered', () => {
  for (const threads of [2, 3])
    test(`x86 upstream, ${threads} threads: none offered`, () => {
      expect(storeChoicesOffered('x86', UPSTREAM_CONFIG, threads)).toBe(0);
    });

  test('arm64 with the userfault series: some offered', () => {
    expect(storeChoicesOffered('arm64', makeConfig(['userfault']), 3)).toBeGreaterThan(0);
  });
});
