// docs/INVARIANTS.md is the catalog: it must name every invariant with its killing mutants, and every
// mutant; ARCHITECTURE.md and the README's set-up section must exist.
import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { INVARIANTS } from '../properties/invariants.js';
import { MUTANTS } from '../src/mmu/mutants.js';

const read = (p: string) => readFileSync(new URL(`../${p}`, import.meta.url), 'utf8');

test('INVARIANTS.md lists every invariant with a mutant that kills it, and every mutant', () => {
  const doc = read('docs/INVARIANTS.md');
  for (const inv of INVARIANTS) {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${inv.id}\``));
    expect(row, inv.id).toBeDefined();
    const killers = MUTANTS.filter((m) => (m.killedBy as readonly string[]).includes(inv.id));
    expect(killers.some((m) => row!.includes(m.name)), `${inv.id} row names a killing mutant`).toBe(true);
  }
  for (const m of MUTANTS) expect(doc, m.name).toContain(m.name);
});

test('README starts with the two set-up commands and the main job', () => {
  const readme = read('README.md');
  const firstSection = readme.split('\n## ')[0]! + readme.split('\n## ')[1]!;
  for (const cmd of ['npm ci', 'npm test', 'npx kvm-memmodel check']) expect(firstSection).toContain(cmd);
  expect(read('docs/ARCHITECTURE.md').length).toBeGreaterThan(1000);
});
