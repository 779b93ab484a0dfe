// Stage-2 page tables in the arm64 layout (4K granule, levels 0..3): level 3 holds 4 KiB pages,
// level 2 may hold 2 MiB blocks, level 1 1 GiB blocks. One generic walker serves every operation;
// the operations themselves are small visitors (visitors.ts), as in arch/arm64/kvm/hyp/pgtable.c.

export type Level = 0 | 1 | 2 | 3;
export interface Perms {
  readonly r: boolean;
  readonly w: boolean;
}

export interface TablePage {
  readonly id: number;
  readonly level: Level;
  readonly entries: Map<number, Pte>;
  /** One base reference plus one per valid entry (INV-5). */
  refcount: number;
  freed: boolean;
}

export type Pte =
  | { readonly kind: 'invalid' }
  | { readonly kind: 'table'; readonly table: TablePage }
  /**
   * `private`: gmem-private, maps guest_memfd memory for a private gfn (the engine's shadow of the
   * SPTE's private bit).
   */
  | {
      readonly kind: 'leaf';
      readonly pfn: number;
      readonly level: Level;
      readonly perms: Perms;
      readonly private?: boolean;
    };

export type LeafPte = Extract<Pte, { kind: 'leaf' }>;

export const INVALID: Pte = { kind: 'invalid' };
export const PTRS_PER_TABLE = 512;
const LEVEL_SHIFT: Record<Level, number> = { 0: 39, 1: 30, 2: 21, 3: 12 };

// Precomputed: levelSize is on every walk step (2 ** n per call was 3.8% of a campaign's self time).
const LEVEL_SIZE: readonly number[] = [
  2 ** LEVEL_SHIFT[0],
  2 ** LEVEL_SHIFT[1],
  2 ** LEVEL_SHIFT[2],
  2 ** LEVEL_SHIFT[3],
];
export const levelSize = (level: Level): number => LEVEL_SIZE[level]!;
export const pagesPerLevel = (level: Level): number => levelSize(level) / 4096;
export const nextLevel = (level: Level): Level => (level + 1) as Level;
export const isValid = (pte: Pte): boolean => pte.kind !== 'invalid';

/** Where a visitor stands: one entry of one table. */
export interface VisitCtx {
  readonly table: TablePage;
  readonly index: number;
  /** First IPA the entry translates. */
  readonly ipa: number;
  readonly level: Level;
  readonly old: Pte;
}

export interface Visitor {
  /** Also call `leaf` for invalid entries (the map visitor installs into them). */
  readonly visitInvalid?: boolean;
  /** Called for leaf entries (and invalid ones when visitInvalid). May turn the entry into a table. */
  leaf?(ctx: VisitCtx): void;
  /** Called for a table entry before descending. May replace it. */
  tablePre?(ctx: VisitCtx): void;
  /** Called for a table entry after its children were visited. */
  tablePost?(ctx: VisitCtx): void;
}

const entryAt = (table: TablePage, index: number): Pte => table.entries.get(index) ?? INVALID;

/** Visit every entry of `table` (which translates from `base`) intersecting [start, end), depth first. */
export function walk(table: TablePage, base: number, start: number, end: number, visitor: Visitor): void {
  const size = levelSize(table.level);
  const first = Math.max(0, Math.floor((start - base) / size));
  const last = Math.min(PTRS_PER_TABLE - 1, Math.floor((end - 1 - base) / size));
  const indices = visitor.visitInvalid
    ? Array.from({ length: Math.max(0, last - first + 1) }, (_, i) => first + i)
    : [...table.entries.keys()].filter((i) => i >= first && i <= last).sort((a, b) => a - b);
  for (const index of indices) {
    const ipa = base + index * size;
    const ctx = (old: Pte): VisitCtx => ({ table, index, ipa, level: table.level, old });
    const before = entryAt(table, index);
    if (before.kind === 'table') visitor.tablePre?.(ctx(before));
    else if (before.kind === 'leaf' || visitor.visitInvalid) visitor.leaf?.(ctx(before));
    const now = entryAt(table, index);
    if (now.kind !== 'table') continue;
    walk(now.table, ipa, Math.max(start, ipa), Math.min(end, ipa + size), visitor);
    const after = entryAt(table, index);
    if (after.kind === 'table') visitor.tablePost?.(ctx(after));
  }
}

/** The hardware walk: the leaf translating ipa, if any (never allocates, never changes anything). */
export function translate(root: TablePage, ipa: number): { leaf: LeafPte; ipaBase: number } | undefined {
  let table = root;
  for (;;) {
    const size = levelSize(table.level);
    const pte = entryAt(table, Math.floor(ipa / size) % PTRS_PER_TABLE);
    if (pte.kind === 'leaf') return { leaf: pte, ipaBase: ipa - (ipa % size) };
    if (pte.kind !== 'table') return undefined;
    table = pte.table;
  }
}

/** Every leaf reachable from the root with the IPA it starts at. */
export function* leaves(table: TablePage, base = 0): Generator<{ leaf: LeafPte; ipaBase: number; table: TablePage }> {
  const size = levelSize(table.level);
  for (const [index, pte] of table.entries) {
    const ipa = base + index * size;
    if (pte.kind === 'leaf') yield { leaf: pte, ipaBase: ipa, table };
    else if (pte.kind === 'table') yield* leaves(pte.table, ipa);
  }
}

/** Every table page reachable from the root, the root included. */
export function* tables(table: TablePage): Generator<TablePage> {
  yield table;
  for (const pte of table.entries.values()) if (pte.kind === 'table') yield* tables(pte.table);
}
