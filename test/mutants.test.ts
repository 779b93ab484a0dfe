// The kill suite: every registered mutant is caught within the default budget, by each invariant
// that claims to catch it when that invariant runs alone; every invariant has a killing mutant.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { DEFAULT_MAX_COMMANDS, DEFAULT_RUNS } from '../src/harness/budgets.js';
import { runMutant } from '../src/harness/kill-matrix.js';
import { MUTANTS, MUTANT_NAMES } from '../src/mmu/mutant-registry.js';
import { KVM_MUTANT_INFO } from '../src/kvm/backend.js';

const budget = { runs: DEFAULT_RUNS, seed: 1, maxCommands: DEFAULT_MAX_COMMANDS };

/** Names given to defineMutant() anywhere under src/, read from the source text. */
function declaredInSource(): string[] {
  const files = readdirSync('src', { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  return files.flatMap((f) =>
    [...readFileSync(join('src', f), 'utf8').matchAll(/defineMutant\(\{\s*name:\s*'([^']+)'/g)].map((m) => m[1]!),
  );
}

test('the registry collects every mutant declared in the tree, each once', () => {
  // A declaration in a file the registry does not load would silently drop out of the kill matrix.
  expect([...MUTANT_NAMES].sort()).toEqual(declaredInSource().sort());
  expect(new Set(MUTANT_NAMES).size).toBe(MUTANT_NAMES.length);
});

test('at least 8 mutants, each with a source and a description', () => {
  expect(MUTANTS.length).toBeGreaterThanOrEqual(8);
  for (const m of MUTANTS) expect(m.source.length * m.description.length).toBeGreaterThan(0);
});

test('every invariant is claimed by at least one mutant, and every claim names a real invariant', () => {
  // kernel-agrees is claimed by the kvm adaptor's mutant (killed in test/kvm-backend.test.ts).
  const claimed = new Set([...MUTANTS, ...KVM_MUTANT_INFO].flatMap((m) => m.killedBy));
  expect([...claimed].filter((id) => !(INVARIANT_IDS as readonly string[]).includes(id))).toEqual([]);
  expect(INVARIANT_IDS.filter((id) => !claimed.has(id))).toEqual([]);
});

describe.each(MUTANT_NAMES)('mutant %s', (name) => {
  test('is killed with all invariants on, with a short counterexample', async () => {
    const row = await runMutant(name, budget);
    expect(row.killed).toBe(true);
    expect(row.shrunkLength).toBeLessThanOrEqual(6);
  });

  const info = MUTANTS.find((m) => m.name === name)!;
  test.each(info.killedBy)('is killed by %s alone', async (invariant) => {
    const row = await runMutant(name, { ...budget, invariants: [invariant as (typeof INVARIANT_IDS)[number]] });
    expect(row.killed).toBe(true);
    expect(row.invariant).toBe(invariant);
  });
});
