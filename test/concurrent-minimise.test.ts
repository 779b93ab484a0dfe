// The one-at-a-time pass after fast-check's shrink (src/harness/concurrent-minimise.ts): on a fake
// runner it keeps exactly what the failure needs; on a real race mutant the reported case has one
// command per thread and replays as reported.
import { describe, expect, test } from 'vitest';
import type { ConcurrentTemplate } from '../properties/concurrent-generators.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import type { Template } from '../properties/templates.js';
import { runConcurrentCampaign } from '../src/harness/concurrent-campaign.js';
import { inputOf, runConcurrentCase } from '../src/harness/concurrent.js';
import { minimiseConcurrentCase, type RunCandidate } from '../src/harness/concurrent-minimise.js';

const cap = (cap: number): Template => ({ t: 'cmd', cmd: { kind: 'checkExtension', cap } });
const capOf = (t: Template): number => (t.t === 'cmd' && t.cmd.kind === 'checkExtension' ? t.cmd.cap : -1);

describe('minimiseConcurrentCase', () => {
  const c: ConcurrentTemplate = {
    setup: [cap(1), cap(2), cap(3)],
    roles: [{ kind: 'vcpu', vcpu: 0 }, { kind: 'vmm' }],
    threads: [
      [cap(10), cap(11)],
      [cap(20), cap(21), cap(22)],
    ],
    schedule: [3, 0, 5, 7, 1, 1, 9, 2],
  };
  // "Fails" while setup has cap 2, T0 has cap 11, T1 has cap 21 and the schedule starts with an odd decision.
  const run: RunCandidate = (t, follow) => {
    const needs =
      t.setup.some((x) => capOf(x) === 2) &&
      t.threads[0]!.some((x) => capOf(x) === 11) &&
      t.threads[1]!.some((x) => capOf(x) === 21);
    const schedule = follow ? [1] : t.schedule;
    if (!needs || (schedule[0] ?? 0) % 2 === 0) return null;
    return { invariant: 'linearizable', schedule, trace: [{ thread: 1, index: 0 }] };
  };

  test('keeps exactly the commands and the decision the failure needs', () => {
    const first = run(c)!;
    const m = minimiseConcurrentCase(c, first, run);
    expect(m.case.setup.map(capOf)).toEqual([2]);
    expect(m.case.threads.map((l) => l.map(capOf))).toEqual([[11], [21]]);
    expect(m.case.schedule).toEqual([1]);
    expect(m.steps).toBeGreaterThan(0);
  });

  test('a case nothing can be removed from comes back unchanged', () => {
    const minimal = { ...c, setup: [cap(2)], threads: [[cap(11)], [cap(21)]], schedule: [1] };
    expect(minimiseConcurrentCase(minimal, run(minimal)!, run)).toEqual({ case: minimal, steps: 0 });
  });

  test('a different invariant is not the same failure', () => {
    const other: RunCandidate = (t, f) => {
      const r = run(t, f);
      return r && t.threads[1]!.length < 3 ? { ...r, invariant: 'differential' } : r;
    };
    const m = minimiseConcurrentCase(c, run(c)!, other);
    expect(m.case.threads[1]!.length).toBe(3);
  });
});

describe('a race mutant after the campaign', () => {
  test('dirty-harvest-not-atomic: one write racing one GET_DIRTY_LOG, replaying as reported', () => {
    const invariants = INVARIANT_IDS;
    const config = { arches: ['x86'] as const, maxCommands: 40, invariants, seed: 1, runs: 500, threads: [2] };
    const result = runConcurrentCampaign({ ...config, mutant: 'dirty-harvest-not-atomic' });
    expect(result.ok).toBe(false);
    const found = result.failure!.concurrent!;
    expect(found.case.threads.map((l) => l.map((x) => x.kind))).toEqual([['guestAccess'], ['getDirtyLog']]);
    const session = {
      arch: 'x86' as const,
      mutant: 'dirty-harvest-not-atomic' as const,
      invariants: new Set(invariants),
    };
    expect(() => runConcurrentCase(session, inputOf(found.case))).toThrow();
  });
});
