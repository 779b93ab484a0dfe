// docs/INVARIANTS.md is the catalog: it must name every invariant with its killing mutants and what
// it needs (series, backend), and every mutant; ARCHITECTURE.md and the README's set-up section
// must exist.
import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { INVARIANTS } from '../properties/invariants.js';
import { MUTANTS } from '../src/mmu/mutant-registry.js';
import { KVM_MUTANT_INFO } from '../src/kvm/backend.js';
import { loadProfile } from '../src/kvm/platform.js';
import { PLATFORM_DEVIATIONS } from '../model/platform.js';

const read = (p: string) => readFileSync(new URL(`../${p}`, import.meta.url), 'utf8');

test('INVARIANTS.md lists every invariant with a mutant that kills it, and every mutant', () => {
  const doc = read('docs/INVARIANTS.md');
  for (const inv of INVARIANTS) {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${inv.id}\``));
    expect(row, inv.id).toBeDefined();
    const killers = [...MUTANTS, ...KVM_MUTANT_INFO].filter((m) => (m.killedBy as readonly string[]).includes(inv.id));
    expect(
      killers.some((m) => row!.includes(m.name)),
      `${inv.id} row names a killing mutant`,
    ).toBe(true);
    // What the registry enforces (series, backend) is what the row says the invariant needs.
    for (const series of inv.series ?? []) expect(row, `${inv.id} row names its series`).toContain(`${series}`);
    if (inv.backend) expect(row, `${inv.id} row names its backend`).toContain(`ackend ${inv.backend}`);
  }
  for (const m of [...MUTANTS, ...KVM_MUTANT_INFO]) expect(doc, m.name).toContain(m.name);
});

test('PLATFORMS.md documents every recorded deviation of every profile, with its reproducer', () => {
  const doc = read('docs/PLATFORMS.md');
  const profile = loadProfile('pvm-6.18');
  expect(doc).toContain('pvm-6.18');
  for (const d of profile.deviations) {
    expect(doc, d.id).toContain(`\`${d.id}\``);
    for (const e of d.evidence) expect(doc, e.file).toContain(e.file);
  }
  for (const d of PLATFORM_DEVIATIONS) expect(doc, d.id).toContain(d.id);
});

test('README starts with the two set-up commands and the main job', () => {
  const readme = read('README.md');
  const firstSection = readme.split('\n## ')[0]! + readme.split('\n## ')[1]!;
  for (const cmd of ['npm ci', 'npm test', 'npx kvm-memmodel check']) expect(firstSection).toContain(cmd);
  expect(read('docs/ARCHITECTURE.md').length).toBeGreaterThan(1000);
});
