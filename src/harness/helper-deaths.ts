// A campaign's helper-death findings (runner.ts HelperDeathFinding) as the summary lines and replay
// files `check` writes: one replay per kind of death, named by its index so none overwrites another.
import type { ModelConfig } from '../../model/series.js';
import type { InvariantId } from '../../properties/invariants.js';
import type { MutantName } from '../mmu/mutants.js';
import { writeReplay } from './replay.js';
import type { CampaignResult } from './runner.js';

export interface DeathReport {
  readonly replayDir: string;
  readonly seed: number;
  readonly mutant: MutantName | null;
  readonly invariants: readonly InvariantId[];
  readonly model: ModelConfig;
}

/** Writes a replay per finding and returns the lines for the summary (none when there were none). */
export function reportHelperDeaths(result: CampaignResult, r: DeathReport): string[] {
  return result.helperDeaths.flatMap((d, i) => {
    const file = `${r.replayDir}/${d.failure.arch}-helper-death-${i + 1}-seed${r.seed}.json`;
    writeReplay(file, d.failure, r.mutant, r.invariants, r.model, 'kvm');
    const more = d.repeats ? ` (${d.repeats} more runs died the same way)` : '';
    return [
      `FINDING kvm helper death in run ${d.failure.runsToFailure}: ${d.failure.messages[0]}${more}`,
      `  replay file: ${file}    (re-run: kvm-memmodel replay ${file})`,
    ];
  });
}

/** The INTERRUPTED line: what the campaign did and found before the signal stopped it. */
export function interruptedLine(result: CampaignResult, signal: string): string {
  const found = [
    ...(result.failure ? [`a ${result.failure.invariant} failure`] : []),
    ...(result.helperDeaths.length ? [`${result.helperDeaths.length} helper-death finding(s)`] : []),
  ];
  const what = found.length ? `found ${found.join(' and ')}` : 'nothing found so far';
  return `INTERRUPTED by ${signal} after ${result.runs} runs (${result.commands} commands): ${what}`;
}
