// The whole-state invariants check per command only what the command touched (properties/touched.ts)
// and the whole state once at the end of every run (Session.finish -> fullCheck). Two things must
// hold for that to lose nothing: after every command of random sequences (no mutant, and mutants
// these invariants kill) the incremental checks fail exactly where a full check of the state would
// first fail; and a violation outside every touched set is still caught by the end-of-run check.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import type { Arch } from '../model/abi.js';
import { UPSTREAM_CONFIG } from '../model/series.js';
import { setupArbitraryFor, templateArbitraryFor } from '../properties/generators.js';
import type { InvariantId } from '../properties/invariants.js';
import type { Template } from '../properties/templates.js';
import { InvariantViolation, Session } from '../src/harness/session.js';
import { leaves } from '../src/mmu/pgtable.js';

/** The invariants that check incrementally (each declares a full check). */
const INCREMENTAL: readonly InvariantId[] = [
  'differential',
  'tlb-coherent',
  'leaf-justified',
  'block-rules',
  'pgtable-refcount',
];

/** The violation `f` throws, or null. */
function violation(f: () => void): string | null {
  try {
    f();
    return null;
  } catch (e) {
    if (e instanceof InvariantViolation) return e.invariant;
    throw e;
  }
}

/**
 * Step by step: the incremental verdict (session.step) and a full check of the state right after
 * it (a second session kept in lockstep would cost the same; fullCheck is the end-of-run check).
 * Returns where they first disagree, or null.
 */
function firstDisagreement(arch: Arch, mutant: string | null, templates: readonly Template[]): string | null {
  const session = new Session({ arch, mutant, invariants: new Set(INCREMENTAL), model: UPSTREAM_CONFIG });
  for (const [i, t] of templates.entries()) {
    const incremental = violation(() => session.step(t));
    if (incremental === 'differential' && session.steps.at(-1)?.engine === null) return null; // a backend threw
    const full = incremental ?? violation(() => session.fullCheck());
    if ((incremental === null) !== (full === null))
      return `step ${i + 1}: incremental ${incremental ?? 'passed'}, full ${full ?? 'passed'}`;
    if (incremental) return null; // both failed here: the run would end
  }
  return null;
}

const sequences = fc.tuple(
  setupArbitraryFor(UPSTREAM_CONFIG),
  fc.array(templateArbitraryFor(UPSTREAM_CONFIG), { maxLength: 30 }),
);

describe.each([
  null,
  'block-while-logging',
  'block-crosses-slot-end',
  'tlb-fill-appends-unsorted',
  'unmap-skips-tlbi',
  'unmap-leaks-table-ref',
  'notifier-first-alias-only',
  'split-without-bbm',
])('mutant %s', (mutant) => {
  test.each(['x86', 'arm64'] as const)('%s: incremental checks fail exactly where a full check would', (arch) => {
    let failedSomewhere = 0;
    fc.assert(
      fc.property(sequences, ([setup, cmds]) => {
        const disagreement = firstDisagreement(arch, mutant, [...setup, ...cmds]);
        if (disagreement) throw new Error(disagreement);
        failedSomewhere++;
      }),
      { seed: 11, numRuns: 150 },
    );
    expect(failedSomewhere).toBe(150);
  });
});

test('a violation outside every touched set is caught at the end of the run, under its own id', () => {
  const session = new Session({ arch: 'x86', mutant: null, invariants: new Set(INCREMENTAL), model: UPSTREAM_CONFIG });
  const hva = 0x10_0000_0000;
  const cmd = (c: object): Template => ({ t: 'cmd', cmd: c }) as Template;
  session.step(cmd({ kind: 'mmap', hva, size: 0x200000, prot: 'rw', backing: 'anon' }));
  session.step(cmd({ kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 0, size: 0x200000, hva }));
  session.step(cmd({ kind: 'guestAccess', vcpu: 0, gpa: 0x1000, len: 8, write: true, value: 1n }));
  // Corrupt the leaf behind gpa 0x1000 directly (no command, no event), then touch another page only.
  const leaf = [...leaves(session.engine.kvm.root)].find((l) => l.ipaBase === 0x1000)!.leaf;
  (leaf as { pfn: number }).pfn += 1000;
  expect(
    violation(() => session.step(cmd({ kind: 'guestAccess', vcpu: 0, gpa: 0x80000, len: 8, write: false, value: 0n }))),
  ).toBeNull();
  expect(violation(() => session.finish())).toMatch(/^(leaf-justified|tlb-coherent)$/);
});
