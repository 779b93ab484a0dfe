// What the engine reports about its own consistency during a command (DESIGN.md "Internal
// invariants on the optimized side only"): typed, so a checker matches the kind it owns instead of
// a string prefix; properties/ formats them for reports.

/** The fast table-disconnect unmap compared with the slow walker on a copy of the tree (INV-6). */
export type EngineFinding =
  /** Leaves (as "ipa@level") present in one result and not the other. */
  | { readonly kind: 'fast-slow-leaves'; readonly start: number; readonly end: number; readonly leaves: string[] }
  /** Table pages whose reachability or refcount differs. */
  | { readonly kind: 'fast-slow-tables'; readonly start: number; readonly end: number; readonly tables: number[] }
  /** Different sets of freed table pages. */
  | {
      readonly kind: 'fast-slow-freed';
      readonly start: number;
      readonly end: number;
      readonly fast: number[];
      readonly slow: number[];
    };
