// Human-readable reports: a failing sequence printed as the calls a VMM would make, each followed
// by what every backend returned, the violated invariant, and how to re-run it.
import { styleText } from 'node:util';
import { formatCommand } from '../../model/commands.js';
import { formatOutcome, outcomeMismatch } from '../../model/observable.js';
import type { Coverage } from './coverage.js';
import type { CampaignResult } from './runner.js';
import type { StepRecord } from './session.js';
import { describeKernel } from './replay.js';

export interface Style {
  readonly color: boolean;
}
const paint = (style: Style, format: Parameters<typeof styleText>[0], text: string): string =>
  style.color ? styleText(format, text) : text;

const VIOLATED_HERE = '   <-- invariant violated after this command';

/** One backend's line under a step: `spec:   ...`, dim unless it differs from the spec. */
function outcomeLine(style: Style, indent: number, label: string, text: string, differs: boolean): string {
  const line = `${' '.repeat(indent)}${label} ${text}${differs ? paint(style, 'red', '   (differs)') : ''}`;
  return differs ? line : paint(style, 'dim', line);
}

export function formatSteps(steps: readonly StepRecord[], style: Style): string {
  const width = String(steps.length).length;
  const indent = width + 4;
  return steps
    .map((s, i) => {
      const n = String(i + 1).padStart(width);
      const marker = i === steps.length - 1 ? paint(style, 'red', VIOLATED_HERE) : '';
      const differs = s.spec !== null && s.engine !== null && outcomeMismatch(s.spec, s.engine) !== null;
      const lines = [
        `  ${n}. ${formatCommand(s.cmd)}${marker}`,
        outcomeLine(style, indent, 'spec:  ', s.spec ? formatOutcome(s.spec) : 'threw', false),
        outcomeLine(style, indent, 'engine:', s.engine ? formatOutcome(s.engine) : 'threw', differs),
      ];
      if (s.kernel) {
        const kernelDiffers =
          s.spec !== null && (s.kernel.kind === 'harness' || outcomeMismatch(s.spec, s.kernel) !== null);
        lines.push(outcomeLine(style, indent, 'kernel:', describeKernel(s.kernel), kernelDiffers));
      }
      return lines.join('\n');
    })
    .join('\n');
}

export function formatViolation(invariant: string, messages: readonly string[], style: Style): string {
  return [
    `${paint(style, ['bold', 'red'], 'FAIL')} invariant ${paint(style, 'bold', invariant)}`,
    ...messages.map((m) => `  - ${m}`),
  ].join('\n');
}

const ORDER = ['cmd ', 'outcome ', 'race', 'engine '];

export function formatCoverage(coverage: Coverage): string {
  const rows = [...coverage.counts].sort((a, b) => {
    const ga = ORDER.findIndex((p) => a[0].startsWith(p));
    const gb = ORDER.findIndex((p) => b[0].startsWith(p));
    return ga - gb || b[1] - a[1];
  });
  return rows.map(([k, v]) => `    ${String(v).padStart(8)}  ${k}`).join('\n');
}

export function formatSummary(result: CampaignResult, seed: number): string {
  const secs = result.elapsedMs / 1000;
  const rate = result.commands / Math.max(secs, 1e-9);
  const speed = `${Math.round(rate)} commands/s`;
  return `${result.runs} runs, ${result.commands} commands in ${secs.toFixed(1)} s (${speed}), seed ${seed}`;
}
