// A campaign's helper-death findings (runner.ts HelperDeathFinding) as the summary lines and replay
// files `check` writes: one replay per kind of death, named by its index and the settings hash so
// none overwrites another.
import { join } from 'node:path';
import { escapeText } from '../util/escape.js';
import { settingsHash, writeReplay, type RunSettings } from './replay.js';
import type { CampaignResult } from './runner.js';

export interface DeathReport {
  readonly replayDir: string;
  /** The campaign's settings: their hash keeps two campaigns' replay files apart (replay.ts). */
  readonly settings: RunSettings;
}

/** Writes a replay per finding and returns the lines for the summary (none when there were none). */
export function reportHelperDeaths(result: Pick<CampaignResult, 'helperDeaths'>, r: DeathReport): string[] {
  return result.helperDeaths.flatMap((d, i) => {
    const name = `${d.failure.arch}-helper-death-${i + 1}-seed${r.settings.seed}-${settingsHash(r.settings)}.json`;
    const file = join(r.replayDir, name);
    // The mutant as given (an engine or a kvm-adaptor one), so `replay` runs what the campaign ran.
    const { mutant, invariants, model } = r.settings;
    writeReplay(file, d.failure, mutant, invariants, model, 'kvm');
    const shown = escapeText(file);
    const more = d.repeats ? ` (${d.repeats} more runs died the same way)` : '';
    return [
      `FINDING kvm helper death in run ${d.failure.runsToFailure}: ${d.failure.messages[0]}${more}`,
      `  replay file: ${shown}    (re-run: kvm-memmodel replay ${shown})`,
    ];
  });
}

/** The INTERRUPTED line: what the campaign did and found before the signal stopped it. */
export function interruptedLine(
  result: Pick<CampaignResult, 'runs' | 'commands' | 'failure' | 'helperDeaths'>,
  signal: string,
): string {
  const found = [
    ...(result.failure ? [`a ${result.failure.invariant} failure`] : []),
    ...(result.helperDeaths.length ? [`${result.helperDeaths.length} helper-death finding(s)`] : []),
  ];
  const what = found.length ? `found ${found.join(' and ')}` : 'nothing found so far';
  return `INTERRUPTED by ${signal} after ${result.runs} runs (${result.commands} commands): ${what}`;
}
