// The layers of docs/ARCHITECTURE.md, enforced on every import in the tree (type-only imports
// included: a type is a dependency too). TypeScript's own pre-processor finds the imports, so
// comments and strings that look like imports do not count.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, test } from 'vitest';

const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), '..'));
const SCANNED = ['model', 'src', 'properties', 'conformance', 'bench', 'test'];

/**
 * Rank of each folder: a file may import its own folder and any folder of a lower rank, never a
 * peer or a higher one. bench and test are leaves: they may import anything, nothing imports them.
 */
const RANK: Record<string, number> = {
  'src/util': 0,
  model: 1,
  'src/mmu': 2,
  'src/kvm': 2,
  'src/agent': 3,
  properties: 3,
  conformance: 3,
  'src/harness': 4,
  src: 5,
};
const LEAVES = new Set(['bench', 'test', 'test/regression']);

/**
 * The model/ files the engine (src/mmu) and the uffd agent (src/agent) may import: vocabulary
 * (types, uAPI numbers, configuration, formatting, the representation of memory) and the host-MM
 * plan rules that ARCHITECTURE.md deviation 2 shares. Every other model/ file holds spec rules.
 */
const ENGINE_MAY_IMPORT = new Set([
  'model/abi.ts',
  'model/commands.ts',
  'model/outcomes.ts',
  'model/observable.ts',
  'model/series.ts',
  'model/series-abi.ts',
  'model/platform.ts',
  'model/memory.ts',
  'model/episode.ts',
  'model/history.ts',
  'model/host-mm.ts',
]);

/**
 * The functions src/mmu and src/agent may call from those vocabulary files: configuration queries,
 * config-dependent uAPI numbers, arithmetic, encodings and formats. A function that decides how KVM
 * behaves is a rule and must be the engine's own; constants (UPPER_CASE) and types are always fine.
 * host-mm.ts is exempt (deviation 2 shares its rules on purpose).
 */
const ENGINE_MAY_CALL = new Set([
  'seriesOn',
  'deviates',
  'exitOnMissingFlag',
  'memoryFaultExitReason',
  'isAligned',
  'alignDown',
  'hex',
  'copyRun',
  'bytesToValue',
  'valueToBytes',
  'splitByPage',
  'isMemoryFaultReason',
  'formatOutcome',
  'episodeValue',
  'episodeOffset',
]);

/** Value (not type-only) names each file imports from each module specifier. */
function valueImports(file: string): { spec: string; names: string[] }[] {
  const sf = ts.createSourceFile(file, readFileSync(join(ROOT, file), 'utf8'), ts.ScriptTarget.Latest);
  return sf.statements.filter(ts.isImportDeclaration).flatMap((st) => {
    const clause = st.importClause;
    if (!clause || clause.isTypeOnly || !ts.isStringLiteral(st.moduleSpecifier)) return [];
    const named = clause.namedBindings && ts.isNamedImports(clause.namedBindings) ? clause.namedBindings.elements : [];
    const names = named.filter((e) => !e.isTypeOnly).map((e) => (e.propertyName ?? e.name).text);
    return [{ spec: st.moduleSpecifier.text, names }];
  });
}

function tsFiles(dir: string): string[] {
  const abs = join(ROOT, dir);
  let entries: string[];
  try {
    entries = readdirSync(abs);
  } catch {
    return [];
  }
  return entries.flatMap((name) => {
    const rel = join(dir, name);
    if (statSync(join(ROOT, rel)).isDirectory()) return tsFiles(rel);
    return name.endsWith('.ts') ? [rel] : [];
  });
}

/** Project files each file imports (relative specifiers; `./x.js` is the source `./x.ts`). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of SCANNED.flatMap(tsFiles)) {
    const info = ts.preProcessFile(readFileSync(join(ROOT, file), 'utf8'), true, true);
    const targets = info.importedFiles
      .map((f) => f.fileName)
      .filter((spec) => spec.startsWith('./') || spec.startsWith('../'))
      .map((spec) => relative(ROOT, join(ROOT, dirname(file), spec)).replace(/\.js$/, '.ts'));
    graph.set(file, targets);
  }
  return graph;
}

const folderOf = (file: string): string => dirname(file).replaceAll('\\', '/');

/** Every import edge that goes against the layers, as "from -> to". */
function layerViolations(graph: Map<string, string[]>): string[] {
  const out: string[] = [];
  for (const [from, targets] of graph) {
    const fromFolder = folderOf(from);
    for (const to of targets) {
      const toFolder = folderOf(to);
      if (toFolder === fromFolder) continue;
      if (LEAVES.has(toFolder)) out.push(`${from} -> ${to} (nothing imports ${toFolder}/)`);
      else if (LEAVES.has(fromFolder)) continue;
      else if (RANK[fromFolder] === undefined || RANK[toFolder] === undefined)
        out.push(`${from} -> ${to} (a folder with no layer: add it to RANK and ARCHITECTURE.md)`);
      else if (RANK[toFolder]! >= RANK[fromFolder]!) out.push(`${from} -> ${to}`);
    }
  }
  return out;
}

/** Strongly connected components with more than one file (Tarjan), each sorted. */
function circles(graph: Map<string, string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1) out.push(scc.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

const graph = importGraph();

describe('import layers (docs/ARCHITECTURE.md, "Layout and dependency direction")', () => {
  test('the scan sees the tree', () => {
    // A broken scan would make every other check here pass vacuously.
    expect(graph.get('src/mmu/engine.ts')?.length ?? 0).toBeGreaterThan(5);
    expect(graph.get('src/cli.ts')?.length ?? 0).toBeGreaterThan(5);
  });

  test('src/mmu and src/agent import only vocabulary from model/', () => {
    const bad = [...graph]
      .filter(([from]) => from.startsWith('src/mmu/') || from.startsWith('src/agent/'))
      .flatMap(([from, targets]) =>
        targets.filter((t) => t.startsWith('model/') && !ENGINE_MAY_IMPORT.has(t)).map((t) => `${from} -> ${t}`),
      );
    expect(bad).toEqual([]);
  });

  test('src/mmu and src/agent call no spec rule through a vocabulary file', () => {
    const bad = [...graph.keys()]
      .filter((f) => f.startsWith('src/mmu/') || f.startsWith('src/agent/'))
      .flatMap((f) =>
        valueImports(f)
          .filter((i) => i.spec.includes('/model/') && !i.spec.endsWith('/host-mm.js'))
          .flatMap((i) => i.names.filter((n) => !/^[A-Z0-9_]+$/.test(n) && !ENGINE_MAY_CALL.has(n)))
          .map((n) => `${f} imports ${n}`),
      );
    expect(bad).toEqual([]);
  });

  test('the vocabulary allow-list names files that exist', () => {
    for (const f of ENGINE_MAY_IMPORT) expect(graph.has(f), f).toBe(true);
  });

  test('no import against the layers', () => {
    expect(layerViolations(graph)).toEqual([]);
  });

  test('no import circle between files of different folders', () => {
    const across = circles(graph).filter((scc) => new Set(scc.map(folderOf)).size > 1);
    expect(across).toEqual([]);
  });

  test('no import circle inside model/, src/mmu or src/agent', () => {
    const inside = circles(graph).filter((scc) =>
      scc.every((f) => f.startsWith('model/') || f.startsWith('src/mmu/') || f.startsWith('src/agent/')),
    );
    expect(inside).toEqual([]);
  });

  test('the checks catch what they are for', () => {
    // A synthetic graph with one of each fault, so the rules above cannot pass by being blind.
    const bad = new Map<string, string[]>([
      ['model/a.ts', ['src/mmu/b.ts']],
      ['src/mmu/b.ts', ['model/a.ts', 'src/kvm/c.ts']],
      ['src/kvm/c.ts', ['test/t.ts']],
      ['src/util/u.ts', []],
    ]);
    expect(layerViolations(bad)).toEqual([
      'model/a.ts -> src/mmu/b.ts',
      'src/mmu/b.ts -> src/kvm/c.ts',
      'src/kvm/c.ts -> test/t.ts (nothing imports test/)',
    ]);
    expect(circles(bad)).toEqual([['model/a.ts', 'src/mmu/b.ts']]);
  });
});
