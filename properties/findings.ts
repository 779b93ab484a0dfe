// Engine findings (src/mmu/findings.ts) as report text; the checks match on their kind.
import { hex } from '../model/abi.js';
import type { EngineFinding } from '../src/mmu/findings.js';

export function formatFinding(f: EngineFinding): string {
  const where = `fast unmap of [${hex(f.start)}, ${hex(f.end)})`;
  switch (f.kind) {
    case 'fast-slow-leaves':
      return `fast-equals-slow: ${where} leaves leaf set differing from the slow walker at ${f.leaves.join(', ')}`;
    case 'fast-slow-tables':
      return (
        `fast-equals-slow: ${where} leaves table pages [${f.tables.join(',')}] differing (reachable/refcount) ` +
        'from the slow walker'
      );
    case 'fast-slow-freed':
      return (
        `fast-equals-slow: ${where} freed table pages [${f.fast.join(',')}], ` +
        `the slow walker frees [${f.slow.join(',')}]`
      );
    default: {
      const never: never = f;
      return never;
    }
  }
}
