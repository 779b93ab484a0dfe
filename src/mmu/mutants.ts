// Named mutation points of the optimized engine. Each mutant re-creates one realistic bug: a BUG-n
// of ../shared/SPEC-DIGEST.md, or one of our own modelled on bugs KVM has had. Every mutant is
// declared with defineMutant() in the file of its injection site, and the engine asks
// `mutation.on(THAT_OBJECT)` where the bug would be, so adding one touches one file and a typo
// cannot compile; mutant-registry.ts collects them.
import type { Arch } from '../../model/abi.js';
import type { SeriesName, SeriesOptions } from '../../model/series.js';

export interface MutantInfo {
  readonly name: string;
  readonly description: string;
  /** BUG-n of SPEC-DIGEST.md, or "own" with the KVM area it imitates. */
  readonly source: string;
  /** Architectures whose code path contains the mutation point (both when absent). */
  readonly arches?: readonly Arch[];
  /** Invariant ids expected to catch it; test/ checks each property has a killer. */
  readonly killedBy: readonly string[];
  /** The proposed series whose code holds the mutation point; its campaign enables them (none: upstream). */
  readonly series?: readonly SeriesName[];
  /** Options its campaign sets, where the mutation point sits behind one (e.g. the fast unmap path). */
  readonly options?: Partial<SeriesOptions>;
  /**
   * Only an interleaving of threads reaches it (no sequence can): its kill-matrix campaign runs the
   * default check's concurrent share first. Campaign configuration, like `series`; no check reads it.
   */
  readonly interleaving?: true;
}

/** A mutant's name (validated against mutant-registry.ts where a name comes from input). */
export type MutantName = string;

const declared: MutantInfo[] = [];

/** Declare a mutant in the file of its injection site; pass the returned object to `mutation.on`. */
export function defineMutant<const M extends MutantInfo>(info: M): M {
  if (declared.some((m) => m.name === info.name)) throw new Error(`engine bug: mutant ${info.name} declared twice`);
  declared.push(info);
  return info;
}

/** The declared mutants loaded so far (mutant-registry.ts loads the whole engine first). */
export const declaredMutants = (): readonly MutantInfo[] => declared;

/** The engine's view of which mutant, if any, is active. */
export class Mutation {
  constructor(readonly active: MutantName | null = null) {}
  /** Takes the declared object, never a name: a misspelt mutant does not compile. */
  on(mutant: MutantInfo): boolean {
    return this.active === mutant.name;
  }
}
