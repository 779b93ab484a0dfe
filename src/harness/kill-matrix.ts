// The mutant kill matrix: one campaign per mutant (on the architectures whose code it lives in),
// recording whether it was killed, by which invariant, after how many runs, and how short the
// shrunk counterexample is.
import { ARCHES } from '../../model/abi.js';
import { makeConfig } from '../../model/series.js';
import { INVARIANT_IDS, type InvariantId } from '../../properties/invariants.js';
import { mutantInfo, type MutantName } from '../mmu/mutant-registry.js';
import { DEFAULT_CONCURRENT_SHARE, SHARE_THREADS } from './budgets.js';
import { Coverage } from './coverage.js';
import { runConcurrentCampaign } from './concurrent-campaign.js';
import {
  runCampaign,
  runCampaignInterruptible,
  type CampaignConfig,
  type CampaignResult,
  type StopRequest,
} from './runner.js';

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

function mutantCampaign(mutant: MutantName, budget: KillBudget): CampaignConfig {
  const info = mutantInfo(mutant);
  return {
    arches: info.arches ?? ARCHES,
    seed: budget.seed,
    runs: budget.runs,
    maxCommands: budget.maxCommands,
    invariants: budget.invariants ?? INVARIANT_IDS,
    mutant,
    model: makeConfig(info.series ?? [], info.options ?? {}),
  };
}

export function runMutant(mutant: MutantName, budget: KillBudget): KillRow {
  if (mutantInfo(mutant).interleaving) {
    const share = concurrentShare(mutant, budget, 0);
    if (share) return killRow(mutant, share);
  }
  return killRow(mutant, withConcurrentShare(runCampaign(mutantCampaign(mutant, budget)), mutant, budget));
}

/**
 * As the default check does: a mutant the sequential campaign did not kill meets the concurrent
 * share (SHARE_THREADS, at most DEFAULT_CONCURRENT_SHARE cases each), where races beyond the fixed
 * windows live. The row's runs count the sequential runs plus the cases up to the kill.
 */
function withConcurrentShare(sequential: CampaignResult, mutant: MutantName, budget: KillBudget): CampaignResult {
  if (!sequential.ok || sequential.interrupted) return sequential;
  if (mutantInfo(mutant).interleaving) return sequential; // its share ran first and survived
  const killed = concurrentShare(mutant, budget, sequential.runs);
  return killed ? { ...killed, elapsedMs: killed.elapsedMs + sequential.elapsedMs } : sequential;
}

/** The concurrent share against the mutant: a failed campaign if it killed it, else null. */
function concurrentShare(mutant: MutantName, budget: KillBudget, runsBefore: number): CampaignResult | null {
  const runs = Math.min(DEFAULT_CONCURRENT_SHARE, budget.runs);
  const share = runConcurrentCampaign({ ...mutantCampaign(mutant, budget), runs, threads: SHARE_THREADS });
  if (share.ok || !share.failure) return null;
  const failure = { ...share.failure, runsToFailure: runsBefore + share.failure.runsToFailure };
  const counts = { runs: runsBefore + share.summary.cases, commands: share.summary.commands };
  // The share tallies no command-kind coverage (the kill matrix does not print it).
  return {
    ok: false,
    ...counts,
    failure,
    elapsedMs: share.summary.elapsedMs,
    coverage: new Coverage(),
    helperDeaths: [],
  };
}

/**
 * The kill matrix that a signal stops at a run boundary (`mutants` on SIGINT/SIGTERM): the rows of
 * the mutants finished so far, plus the interrupted one only if it was already killed (a mutant
 * whose campaign was cut short has not survived anything).
 */
export async function runKillMatrixInterruptible(
  mutants: readonly MutantName[],
  budget: KillBudget,
  stop: StopRequest,
): Promise<KillRow[]> {
  const rows: KillRow[] = [];
  for (const m of mutants) {
    if (stop.requested()) break;
    const result = withConcurrentShare(await runCampaignInterruptible(mutantCampaign(m, budget), stop), m, budget);
    if (!result.interrupted || !result.ok) rows.push(killRow(m, result));
  }
  return rows;
}

function killRow(mutant: MutantName, result: CampaignResult): KillRow {
  const info = mutantInfo(mutant);
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
