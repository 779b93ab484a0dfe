// Every mutant of the engine: the table in mutants.ts and those declared next to their injection
// sites with defineMutant(). Importing the engine first evaluates every file that may declare one.
import './engine.js';
import { declaredMutants, MUTANT_TABLE, type MutantInfo, type MutantName } from './mutants.js';

export type { MutantInfo, MutantName } from './mutants.js';

export const MUTANTS: readonly MutantInfo[] = [...MUTANT_TABLE, ...declaredMutants()];
export const MUTANT_NAMES: readonly MutantName[] = MUTANTS.map((m) => m.name);

export function isMutantName(name: string): name is MutantName {
  return MUTANT_NAMES.includes(name);
}

export function mutantInfo(name: MutantName): MutantInfo {
  const info = MUTANTS.find((m) => m.name === name);
  if (!info) throw new Error(`engine bug: no mutant named ${name}`);
  return info;
}
