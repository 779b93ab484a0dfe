// Every mutant of the engine, each declared with defineMutant() next to its injection site.
// Importing the engine first evaluates every file that may declare one. The engine does not load
// the demand-paging agent's side (src/agent/ sits above this folder, so its mutants are declared in
// agent.ts, and its uffd.ts is the agent's import): both are loaded here. test/mutants.test.ts
// fails when a declaration in the tree is not collected.
import './engine.js';
import './agent.js';
import './uffd.js';
import { SERIES_NAMES } from '../../model/series.js';
import { declaredMutants, type MutantInfo, type MutantName } from './mutants.js';

export type { MutantInfo, MutantName } from './mutants.js';

/** Upstream mutants first, then by series in SERIES order; by name within: import order cannot reorder it. */
function rank(m: MutantInfo): number {
  return m.series?.length ? 1 + Math.min(...m.series.map((s) => SERIES_NAMES.indexOf(s))) : 0;
}

export const MUTANTS: readonly MutantInfo[] = [...declaredMutants()].sort(
  (a, b) => rank(a) - rank(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
);
export const MUTANT_NAMES: readonly MutantName[] = MUTANTS.map((m) => m.name);

export function isMutantName(name: string): name is MutantName {
  return MUTANT_NAMES.includes(name);
}

export function mutantInfo(name: MutantName): MutantInfo {
  const info = MUTANTS.find((m) => m.name === name);
  if (!info) throw new Error(`engine bug: no mutant named ${name}`);
  return info;
}
