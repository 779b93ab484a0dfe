// The mutant kill matrix: one campaign per mutant (on the architectures whose code it lives in),
// recording whether it was killed, by which invariant, after how many runs, and how short the
// shrunk counterexample is.
import { ARCHES } from '../../model/abi.js';
import { makeConfig } from '../../model/series.js';
import { INVARIANT_IDS, type InvariantId } from '../../properties/invariants.js';
import { mutantInfo, type MutantName } from '../mmu/mutant-registry.js';
import { DEFAULT_CONCURRENT_SHARE, SHARE_THREADS } from './budgets.js';
import { Coverage } from './coverage.js';
import {
  runConcurrentCampaign,
  runConcurrentCampaignInterruptible,
  type ConcurrentCampaignConfig,
  type ConcurrentCampaignResult,
} from './concurrent-campaign.js';
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

/** How a mutant's campaigns run: synchronously, or stoppable by a signal at a run boundary. */
interface Runners {
  readonly sequential: (config: CampaignConfig) => Promise<CampaignResult> | CampaignResult;
  readonly concurrent: (
    config: ConcurrentCampaignConfig,
  ) => Promise<ConcurrentCampaignResult> | ConcurrentCampaignResult;
}

const SYNC: Runners = { sequential: runCampaign, concurrent: runConcurrentCampaign };

/**
 * A mutant's campaign, as the default check runs: the sequential part, then, for a mutant it did
 * not kill, the concurrent share (SHARE_THREADS, at most DEFAULT_CONCURRENT_SHARE cases each),
 * where races beyond the fixed windows live. A mutant only an interleaving reaches
 * (`interleaving: true`) meets the share first. The row's runs count the runs before the kill.
 */
async function mutantResult(mutant: MutantName, budget: KillBudget, run: Runners): Promise<CampaignResult> {
  const interleaving = mutantInfo(mutant).interleaving === true;
  if (interleaving) {
    const killed = await concurrentShare(mutant, budget, 0, run);
    if (killed) return killed;
  }
  const sequential = await run.sequential(mutantCampaign(mutant, budget));
  if (!sequential.ok || sequential.interrupted || interleaving) return sequential;
  const killed = await concurrentShare(mutant, budget, sequential.runs, run);
  return killed ? { ...killed, elapsedMs: killed.elapsedMs + sequential.elapsedMs } : sequential;
}

/** The concurrent share against the mutant: a failed campaign if it killed it, else null. */
async function concurrentShare(
  mutant: MutantName,
  budget: KillBudget,
  runsBefore: number,
  run: Runners,
): Promise<CampaignResult | null> {
  const runs = Math.min(DEFAULT_CONCURRENT_SHARE, budget.runs);
  const share = await run.concurrent({ ...mutantCampaign(mutant, budget), runs, threads: SHARE_THREADS });
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

/** Synchronously: every runner above returns a value, so the promise is already settled when awaited. */
export async function runMutant(mutant: MutantName, budget: KillBudget): Promise<KillRow> {
  return killRow(mutant, await mutantResult(mutant, budget, SYNC));
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
  const run: Runners = {
    sequential: (c) => runCampaignInterruptible(c, stop),
    concurrent: (c) => runConcurrentCampaignInterruptible(c, stop),
  };
  const rows: KillRow[] = [];
  for (const m of mutants) {
    if (stop.requested()) break;
    const result = await mutantResult(m, budget, run);
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

export async function runKillMatrix(mutants: readonly MutantName[], budget: KillBudget): Promise<KillRow[]> {
  const rows: KillRow[] = [];
  for (const m of mutants) rows.push(await runMutant(m, budget));
  return rows;
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
