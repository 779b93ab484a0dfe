// The mutant kill matrix: one campaign per mutant (on the architectures whose code it lives in),
// recording whether it was killed, by which invariant, after how many runs, and how short the
// shrunk counterexample is.
import { ARCHES } from '../../model/abi.js';
import { makeConfig } from '../../model/series.js';
import { INVARIANT_IDS, type InvariantId } from '../../properties/invariants.js';
import { mutantInfo, type MutantName } from '../mmu/mutant-registry.js';
import { runCampaign } from './runner.js';

export interface KillRow {
  readonly mutant: MutantName;
  readonly source: string;
  /** The series its campaign enabled ('upstream' for none). */
  readonly series: string;
  readonly killed: boolean;
  readonly invariant?: InvariantId;
  readonly runsToKill?: number;
  readonly shrunkLength?: number;
  readonly ms: number;
}

export interface KillBudget {
  readonly runs: number;
  readonly seed: number;
  readonly maxCommands: number;
  readonly invariants?: readonly InvariantId[];
}

export function runMutant(mutant: MutantName, budget: KillBudget): KillRow {
  const info = mutantInfo(mutant);
  const model = makeConfig(info.series ?? [], info.options ?? {});
  const result = runCampaign({
    arches: info.arches ?? ARCHES,
    seed: budget.seed,
    runs: budget.runs,
    maxCommands: budget.maxCommands,
    invariants: budget.invariants ?? INVARIANT_IDS,
    mutant,
    model,
  });
  const f = result.failure;
  const options = Object.entries(info.options ?? {}).map(([k, v]) => `${k}=${String(v)}`);
  const series = [...(info.series ?? ['upstream']), ...options].join(',');
  return {
    mutant,
    source: info.source,
    series,
    killed: !result.ok,
    ms: result.elapsedMs,
    ...(f ? { invariant: f.invariant, runsToKill: f.runsToFailure, shrunkLength: f.steps.length } : {}),
  };
}

export function runKillMatrix(mutants: readonly MutantName[], budget: KillBudget): KillRow[] {
  return mutants.map((m) => runMutant(m, budget));
}

export function formatKillMatrix(rows: readonly KillRow[]): string {
  const header = ['mutant', 'source', 'series', 'killed', 'by invariant', 'runs', 'shrunk', 'time'];
  const body = rows.map((r) => [
    r.mutant,
    r.source.length > 38 ? `${r.source.slice(0, 37)}…` : r.source,
    r.series,
    r.killed ? 'yes' : 'NO',
    r.invariant ?? '-',
    String(r.runsToKill ?? '-'),
    String(r.shrunkLength ?? '-'),
    `${(r.ms / 1000).toFixed(1)}s`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  const killed = rows.filter((r) => r.killed).length;
  return [line(header), ...body.map(line), `${killed}/${rows.length} mutants killed`].join('\n');
}
