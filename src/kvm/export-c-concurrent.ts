// The C reproducer of a concurrent case (issue 10 item 5): src/kvm/native/repro-concurrent.c with
// repro-main.c (kvm-ops.c and the setup's data inlined), conc-threads.c (the threads the helper runs)
// and a generated data header: the threads' requests and every outcome vector an interleaving of the
// threads allows, computed here with the spec. The program runs the case until an attempt's results
// match none of them. The vectors come from every interleaving that keeps each thread's own order
// (the spec's alternatives included); the program has no real-time order to respect, so it sees what
// sequential consistency forbids, a subset of what the harness's linearizability check finds.
import { formatCommand, type Command } from '../../model/commands.js';
import type { ConcurrentCase } from '../../model/history.js';
import { formatOutcome } from '../../model/observable.js';
import { bigintAsHex, type Outcome } from '../../model/outcomes.js';
import type { ModelConfig } from '../../model/series.js';
import { applyCommand, specAlternatives, type SequentialCommand } from '../../model/spec.js';
import { newSpecState, type SpecState } from '../../model/state.js';
import { InputError } from '../util/errors.js';
import { cU32, cU64 } from './c-literals.js';
import { caseRoleRefusal } from './concurrent.js';
import {
  assemble,
  checkExportable,
  dirtyLists,
  expectInit,
  expectations,
  type ExportSource,
  inlineIncludes,
  nativeFile,
  reproData,
  serialiseCommands,
  text,
} from './export-c.js';

/** More outcome vectors than this, or more interleavings explored, and the export is refused. */
export const MAX_OUTCOME_VECTORS = 64;
export const MAX_INTERLEAVING_STEPS = 200_000;

export interface ConcurrentExportSource {
  /** The replay's architecture (x86 when absent); an arm64 case is refused as a sequence's is. */
  readonly arch?: 'x86' | 'arm64';
  readonly case: ConcurrentCase;
  readonly model: ModelConfig;
  /** The engine mutant the case was found against, or null (an adaptor mutant is refused). */
  readonly mutant: string | null;
  readonly failure: { readonly messages: readonly string[] };
}

const vectorKey = (v: readonly Outcome[]): string => JSON.stringify(v, bigintAsHex);

/**
 * Every vector of outcomes (threads' commands in thread order) some interleaving of the threads gives
 * from `initial`, or an InputError when there are too many to enumerate or write out.
 */
export function allowedOutcomeVectors(initial: SpecState, threads: readonly (readonly Command[])[]): Outcome[][] {
  const offsets = threads.map((_, t) => threads.slice(0, t).reduce((n, l) => n + l.length, 0));
  const total = threads.reduce((n, l) => n + l.length, 0);
  const found = new Map<string, Outcome[]>();
  let steps = 0;
  const tooMany = (what: string): InputError =>
    new InputError(`the case allows ${what}: a C reproducer checking every allowed outcome would be too large`);
  const walk = (state: SpecState, next: number[], vector: Outcome[], done: number): void => {
    if (done === total) {
      found.set(vectorKey(vector), [...vector]);
      if (found.size > MAX_OUTCOME_VECTORS) throw tooMany(`more than ${MAX_OUTCOME_VECTORS} outcome vectors`);
      return;
    }
    for (const [t, list] of threads.entries()) {
      const i = next[t]!;
      if (i >= list.length) continue;
      if (++steps > MAX_INTERLEAVING_STEPS) throw tooMany(`more than ${MAX_INTERLEAVING_STEPS} interleaving steps`);
      const cmd = list[i]!;
      const alternatives = specAlternatives(state, cmd) ?? [
        (() => {
          const s = structuredClone(state);
          return { outcome: applyCommand(s, cmd as SequentialCommand), state: s };
        })(),
      ];
      for (const alt of alternatives) {
        const at = offsets[t]! + i;
        const saved = vector[at]!;
        vector[at] = alt.outcome;
        next[t] = i + 1;
        walk(alt.state, next, vector, done + 1);
        next[t] = i;
        vector[at] = saved;
      }
    }
  };
  walk(
    initial,
    threads.map(() => 0),
    new Array<Outcome>(total),
    0,
  );
  return [...found.values()];
}

/** The data header of the case's threads and allowed outcome vectors (numbers and escaped strings). */
export function concurrentData(c: ConcurrentCase, vectors: readonly Outcome[][], attempts: number): string {
  const cmds = c.threads.flat();
  const lists = vectors.map((v, n) => v.map((o, j) => dirtyLists(o, `${n}_${j}`)));
  const rows = vectors.map((v, n) => `  { ${v.map((o, j) => expectInit(o, lists[n]![j]!.fields)).join(',\n    ')} },`);
  const texts = vectors.map((v) => `  { ${v.map((o) => text(formatOutcome(o))).join(',\n    ')} },`);
  const vcpu = c.roles.map((r) => (r.kind === 'vcpu' ? cU64(r.vcpu) : 'CONC_VMM'));
  return [
    '/* repro-conc-data.h: written by kvm-memmodel; numbers and escaped string literals only. */',
    `#define CONC_NREQ ${cmds.length}`,
    `#define CONC_NOUTCOMES_MAX ${vectors.length}`,
    `static const int conc_nthreads = ${c.threads.length};`,
    `static const uint64_t conc_vcpu[] = { ${vcpu.join(', ')} };`,
    `static const uint32_t conc_count[] = { ${c.threads.map((l) => cU32(l.length)).join(', ')} };`,
    `static const struct kmm_req conc_reqs[] = {\n  ${serialiseCommands(cmds).join(',\n  ')}\n};`,
    `static const struct text conc_calls[] = {\n  ${cmds.map((cmd) => text(formatCommand(cmd))).join(',\n  ')}\n};`,
    ...lists.flat().flatMap((l) => l.decls),
    `static const int conc_noutcomes = ${vectors.length};`,
    `static const struct expect conc_outcomes[][CONC_NREQ] = {\n${rows.join('\n')}\n};`,
    `static const struct text conc_outcomes_text[][CONC_NREQ] = {\n${texts.join('\n')}\n};`,
    `static const long conc_attempts = ${attempts};`,
    '',
  ].join('\n');
}

/**
 * The C source of the case's reproducer: `attempts` attempts by default (the program's argument
 * overrides it). Refused (InputError, one line) when a command cannot run in a C reproducer, a thread
 * may not run one of its commands, a setup step has several allowed outcomes, or the allowed outcomes
 * are too many to enumerate.
 */
export function exportConcurrentC(source: ConcurrentExportSource, title: string, attempts = 1000): string {
  const c = source.case;
  if (!Number.isSafeInteger(attempts) || attempts < 1) throw new InputError('attempts must be a positive integer');
  const all = [...c.setup, ...c.threads.flat()];
  const arch = source.arch ?? 'x86';
  checkExportable({ arch, mutant: source.mutant, commands: [], model: source.model, failure: source.failure });
  const role = caseRoleRefusal(c);
  if (role) throw new InputError(`the case cannot run on the kernel's threads: ${role}`);
  checkExportable({ arch, mutant: source.mutant, commands: all, model: source.model, failure: source.failure });
  expectations(c.setup, source.model); // refuses a setup step with several allowed outcomes
  const spec = newSpecState('x86', source.model);
  for (const cmd of c.setup) applyCommand(spec, cmd as SequentialCommand);
  const vectors = allowedOutcomeVectors(spec, c.threads);
  const setupSource: ExportSource = {
    arch: 'x86',
    mutant: source.mutant,
    commands: c.setup,
    model: source.model,
    failure: source.failure,
  };
  const setupData = reproData(setupSource, title);
  return inlineIncludes(
    'repro-concurrent.c',
    new Map([
      [
        '#include "repro-main.c"',
        `/* ---- src/kvm/native/repro-main.c, with the setup ---- */\n${assemble(setupData)}`,
      ],
      [
        '#include "conc-threads.c"',
        `/* ---- src/kvm/native/conc-threads.c, verbatim ---- */\n${nativeFile('conc-threads.c')}`,
      ],
      [
        '#include "repro-conc-data.h"',
        `/* ---- the threads and the outcomes allowed ---- */\n${concurrentData(c, vectors, attempts)}`,
      ],
    ]),
  );
}
