// The C reproducer of a concurrent case (issue 10 item 5): src/kvm/native/repro-concurrent.c with
// repro-main.c (kvm-ops.c and the setup's data inlined), conc-threads.c (the threads the helper runs)
// and a generated data header: the threads' requests and their order graph (export-c-orders.ts),
// computed here with the spec. The program runs the case until an attempt's results fit no path of
// the graph that respects the attempt's real-time order (each call's CLOCK_MONOTONIC invoke and
// respond, as the helper records them): what the harness's linearizability check rejects, in-flight
// allowances included, except the final-memory check (the program reads no memory back).
import { formatCommand } from '../../model/commands.js';
import type { ConcurrentCase } from '../../model/history.js';
import { formatOutcome } from '../../model/observable.js';
import type { ModelConfig } from '../../model/series.js';
import { applyCommand, type SequentialCommand } from '../../model/spec.js';
import { newSpecState } from '../../model/state.js';
import { InputError } from '../util/errors.js';
import { cU32, cU64 } from './c-literals.js';
import { caseRoleRefusal } from './concurrent.js';
import { orderGraph, type OrderGraph } from './export-c-orders.js';
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

export interface ConcurrentExportSource {
  /** The replay's architecture (x86 when absent); an arm64 case is refused as a sequence's is. */
  readonly arch?: 'x86' | 'arm64';
  readonly case: ConcurrentCase;
  readonly model: ModelConfig;
  /** The engine mutant the case was found against, or null (an adaptor mutant is refused). */
  readonly mutant: string | null;
  readonly failure: { readonly messages: readonly string[] };
}

/** The data header: the threads' requests and the order graph (numbers and escaped strings). */
export function concurrentData(c: ConcurrentCase, graph: OrderGraph, attempts: number): string {
  const cmds = c.threads.flat();
  const lists = graph.outcomes.map((o, n) => dirtyLists(o.outcome, `o${n}`));
  const expects = graph.outcomes.map((o, n) => expectInit(o.outcome, lists[n]!.fields));
  const texts = graph.outcomes.map((o) => text(formatOutcome(o.outcome)));
  const vcpu = c.roles.map((r) => (r.kind === 'vcpu' ? cU64(r.vcpu) : 'CONC_VMM'));
  const first: number[] = [0];
  for (const list of graph.edges) first.push(first[first.length - 1]! + list.length);
  const edges = graph.edges.flat().map((e) => `{ ${e.req}, ${e.outcome}, ${e.overlap}, ${e.to} }`);
  return [
    '/* repro-conc-data.h: written by kvm-memmodel; numbers and escaped string literals only. */',
    `#define CONC_NREQ ${cmds.length}`,
    `#define CONC_NNODES ${graph.done.length}`,
    `#define CONC_NOUTCOMES ${graph.outcomes.length}`,
    `static const int conc_nthreads = ${c.threads.length};`,
    `static const uint64_t conc_vcpu[] = { ${vcpu.join(', ')} };`,
    `static const uint32_t conc_count[] = { ${c.threads.map((l) => cU32(l.length)).join(', ')} };`,
    `static const struct kmm_req conc_reqs[] = {\n  ${serialiseCommands(cmds).join(',\n  ')}\n};`,
    `static const struct text conc_calls[] = {\n  ${cmds.map((cmd) => text(formatCommand(cmd))).join(',\n  ')}\n};`,
    ...lists.flatMap((l) => l.decls),
    `static const struct expect conc_expect[] = {\n  ${expects.join(',\n  ')}\n};`,
    `static const struct text conc_expect_text[] = {\n  ${texts.join(',\n  ')}\n};`,
    `static const uint32_t conc_expect_req[] = { ${graph.outcomes.map((o) => o.req).join(', ')} };`,
    `static const uint64_t conc_node_done[] = { ${graph.done.map((d) => cU64(d)).join(', ')} };`,
    `static const uint32_t conc_node_first[] = { ${first.join(', ')} };`,
    `static const struct conc_edge conc_edges[] = {\n  ${edges.join(',\n  ')}\n};`,
    `static const uint32_t conc_final = ${graph.final};`,
    `static const long conc_attempts = ${attempts};`,
    '',
  ].join('\n');
}

/**
 * The C source of the case's reproducer: `attempts` attempts by default (the program's argument
 * overrides it). Refused (InputError, one line) when a command cannot run in a C reproducer, a thread
 * may not run one of its commands, a setup step has several allowed outcomes, or the order graph
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
  if (all.length === c.setup.length) throw new InputError('the case has no thread commands to run concurrently');
  const graph = orderGraph(spec, c.threads);
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
        `/* ---- the threads and the order graph ---- */\n${concurrentData(c, graph, attempts)}`,
      ],
    ]),
  );
}
