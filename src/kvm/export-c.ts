// `kvm-memmodel export --c FILE REPLAY`: one standalone C program that replays a sequence on a real
// kernel and checks every step against what the spec expects, printing where reality differs. The
// program is src/kvm/native/repro-main.c with src/kvm/native/kvm-ops.c (the code the kvm backend
// runs) and a generated data header inlined; the exporter writes data only into it: integer literals
// it checked and string literals it escaped (c-literals.ts). It needs only gcc, the libc and the
// distribution's <linux/kvm.h>.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { match } from 'ts-pattern';
import type { Arch } from '../../model/abi.js';
import { formatCommand, type Command } from '../../model/commands.js';
import { formatOutcome, payloadIsValid } from '../../model/observable.js';
import type { Outcome } from '../../model/outcomes.js';
import { describeConfig, type ModelConfig } from '../../model/series.js';
import { applyCommand, specAlternatives } from '../../model/spec.js';
import { newSpecState } from '../../model/state.js';
import { InputError } from '../util/errors.js';
import { KVM_MUTANTS, LEFT_OUT } from './backend.js';
import { cI32, cString, cU32, cU64 } from './c-literals.js';
import { packageRoot } from './helper.js';
import { touchesHarness } from './harness-window.js';
import { encodeCommand, errnoNumber } from './protocol.js';

/** What an export needs of a replay file (src/harness/replay.ts's ReplayFile has these fields). */
export interface ExportSource {
  readonly arch: Arch;
  /** The mutant the replay was found against: an engine mutant (honoured) or a kvm-adaptor one (refused). */
  readonly mutant: string | null;
  readonly commands: readonly Command[];
  readonly model: ModelConfig;
  readonly failure: { readonly messages: readonly string[] };
}

/** Why a C reproducer cannot run `cmd`, or null. */
function commandRefusal(cmd: Command): string | null {
  if (cmd.kind === 'demandPaging')
    return 'C reproducers of demand-paging episodes are not written yet (the kvm backend runs them)';
  if (encodeCommand(cmd) === null) return cmd.kind === 'raceAccess' ? LEFT_OUT.race : LEFT_OUT.series;
  return touchesHarness(cmd) ? LEFT_OUT.harness : null;
}

/**
 * Refuses (InputError) what a C reproducer would otherwise silently get wrong: another architecture,
 * an adaptor mutant, a proposed series, or a command it cannot run. An engine mutant is honoured: the
 * spec's expectations do not depend on it, and the program prints that the replay was found with it.
 */
export function checkExportable(source: ExportSource): void {
  if (source.arch !== 'x86')
    throw new InputError(
      `the replay is for ${source.arch}; a C reproducer drives an x86_64 guest (its guest code and page ` +
        'tables are x86): an arm64 reproducer is not written',
    );
  if (source.mutant !== null && (KVM_MUTANTS as readonly string[]).includes(source.mutant))
    throw new InputError(
      `the replay was found against the kvm-adaptor mutant ${source.mutant}; a C reproducer runs the adaptor ` +
        'unmutated, so it would check a different sequence of ioctls than the one that failed',
    );
  if (source.model.series.length) throw new InputError(`the replay enables proposed series: ${LEFT_OUT.series}`);
  for (const cmd of source.commands) {
    const why = commandRefusal(cmd);
    if (why) throw new InputError(`the replay contains ${formatCommand(cmd)}, which a C reproducer cannot run: ${why}`);
  }
}

/** The spec's expected outcome for each command (x86, upstream or the replay's platform). */
export function expectations(commands: readonly Command[], model: ModelConfig): Outcome[] {
  const state = newSpecState('x86', model);
  return commands.map((cmd, i) => {
    if (cmd.kind === 'raceAccess' || specAlternatives(state, cmd))
      throw new InputError(
        `step ${i + 1} (${formatCommand(cmd)}) has more than one allowed outcome; a C reproducer checks one`,
      );
    return applyCommand(state, cmd);
  });
}

/** The kvm_run payload the spec expects, as struct expect fields. */
function payloadFields(o: Extract<Outcome, { kind: 'run' }>): string {
  const p = o.run.payload;
  if (!payloadIsValid(o)) return '.payload_kind = P_NONE';
  return match(p)
    .with(
      { kind: 'mmio' },
      (m) =>
        `.payload_kind = P_MMIO, .p = { ${cU64(m.physAddr)}, ${cU64(m.data)}, ${cU64(m.len)}, ${m.isWrite ? 1 : 0} }`,
    )
    .with(
      { kind: 'memoryFault' },
      (f) => `.payload_kind = P_FAULT, .p = { ${cU64(f.flags)}, ${cU64(f.gpa)}, ${cU64(f.size)}, 0 }`,
    )
    .otherwise(() => '.payload_kind = P_NONE');
}

/** One struct expect initialiser; `dirty` names the step's page lists for a dirty log. */
export function expectInit(o: Outcome, dirty: string): string {
  return match(o)
    .with({ kind: 'ok' }, (x) =>
      x.value === undefined ? '{ .kind = E_OK }' : `{ .kind = E_OK, .has_value = 1, .value = ${cU64(x.value)} }`,
    )
    .with({ kind: 'err' }, (x) => `{ .kind = E_ERR, .err = ${cI32(errnoNumber(x.errno))} }`)
    .with({ kind: 'hostData' }, (x) => `{ .kind = E_HOSTDATA, .value = ${cU64(x.value)} }`)
    .with({ kind: 'segv' }, () => '{ .kind = E_SEGV }')
    .with({ kind: 'run' }, (x) => {
      const err = x.errno ? cI32(errnoNumber(x.errno)) : '0';
      const value = x.value === undefined ? '.has_value = 0' : `.has_value = 1, .value = ${cU64(x.value)}`;
      const head = `.kind = E_RUN, .rc = ${cI32(x.rc)}, .err = ${err}, .exit_reason = ${cU32(x.run.exitReason)}`;
      return `{ ${head},\n      ${value}, ${payloadFields(x)} }`;
    })
    .with({ kind: 'dirtyLog' }, () => `{ .kind = E_DIRTY, ${dirty} }`)
    .with({ kind: 'race' }, { kind: 'episode' }, () => {
      throw new InputError('a race or demand-paging outcome cannot be checked by a C reproducer');
    })
    .exhaustive();
}

const pageList = (name: string, pages: readonly number[]): string =>
  `static const uint32_t ${name}[] = { ${pages.length ? pages.map((p) => cU32(p, 'a page')).join(', ') : '0'} };`;

/** The dirty-page lists of step `i` (declarations) and the struct expect fields naming them. */
export function dirtyLists(o: Outcome, i: number | string): { decls: string[]; fields: string } {
  if (o.kind !== 'dirtyLog') return { decls: [], fields: '' };
  const may = o.mayAlsoBeDirty ?? [];
  return {
    decls: [pageList(`must_${i}`, o.dirty), pageList(`may_${i}`, may)],
    fields: `.must = must_${i}, .nmust = ${o.dirty.length}, .may = may_${i}, .nmay = ${may.length}`,
  };
}

/** The wire request of each command, as struct kmm_req initialisers. */
export function serialiseCommands(commands: readonly Command[]): string[] {
  return commands.map((cmd) => {
    const req = encodeCommand(cmd)![0]!;
    const args = req.args.map((a) => cU64(a, 'a command argument')).join(', ');
    return `{ ${cU32(req.op)}, ${cU32(req.a32)}, { ${args} } }`;
  });
}

/** The spec's expectations: the page-list declarations, and one struct expect initialiser a step. */
function serialiseExpectations(expected: readonly Outcome[]): { decls: string[]; inits: string[] } {
  const lists = expected.map(dirtyLists);
  return { decls: lists.flatMap((l) => l.decls), inits: expected.map((o, i) => expectInit(o, lists[i]!.fields)) };
}

/** A `struct text` initialiser: the escaped literal and its length (the program prints NULs too). */
export const text = (s: string): string => `TEXT(${cString(s, 72)})`;

/** The body of repro-data.h for `source`: declarations of numbers and escaped strings only. */
export function reproData(source: ExportSource, title: string): string {
  checkExportable(source);
  const expected = expectations(source.commands, source.model);
  const requests = serialiseCommands(source.commands);
  const { decls, inits } = serialiseExpectations(expected);
  const steps = source.commands.map((cmd, i) => {
    const strings = `${text(formatCommand(cmd))},\n    ${text(formatOutcome(expected[i]!))}`;
    return `  { ${requests[i]},\n    ${inits[i]},\n    ${strings} },`;
  });
  const messages = source.failure.messages;
  // An empty array is not C: no messages is one empty entry and a count of 0.
  const messageList = (messages.length ? messages : ['']).map(text).join(',\n  ');
  const mutant = source.mutant ?? '';
  return [
    '/* repro-data.h: written by kvm-memmodel export --c; numbers and escaped string literals only. */',
    `static const struct text repro_title = ${text(title)};`,
    `static const struct text repro_config = ${text(describeConfig(source.model))};`,
    `static const struct text repro_mutant = ${text(mutant)};`,
    `static const struct text repro_messages[] = {\n  ${messageList}\n};`,
    `static const size_t repro_nmessages = ${messages.length};`,
    ...decls,
    'static const struct step steps[] = {',
    ...steps,
    '};',
    '',
  ].join('\n');
}

export const nativeFile = (name: string): string =>
  readFileSync(join(packageRoot(), 'src', 'kvm', 'native', name), 'utf8');

/**
 * repro-main.c with its `#include "kvm-ops.c"` and `#include "repro-data.h"` lines replaced by those
 * files' text. Lines are replaced whole (never String.replace, whose `$'`-patterns would read the data).
 */
export function assemble(data: string): string {
  return inlineIncludes(
    'repro-main.c',
    new Map([
      ['#include "kvm-ops.c"', `/* ---- src/kvm/native/kvm-ops.c, verbatim ---- */\n${nativeFile('kvm-ops.c')}`],
      ['#include "repro-data.h"', `/* ---- the sequence and the spec's expected outcomes ---- */\n${data}`],
    ]),
  );
}

/** A native file with each `#include` line of `inlined` (present exactly once) replaced by its text. */
export function inlineIncludes(file: string, inlined: ReadonlyMap<string, string>): string {
  const lines = nativeFile(file).split('\n');
  for (const include of inlined.keys())
    if (lines.filter((l) => l === include).length !== 1)
      throw new Error(`src/kvm/native/${file} must have the line ${include} exactly once`);
  return lines.map((l) => inlined.get(l) ?? l).join('\n');
}

/** The C source of the reproducer for `source`'s commands, checked against the spec under its model. */
export function exportC(source: ExportSource, title: string): string {
  return assemble(reproData(source, title));
}

export const exportTitle = (file: string, invariant: string): string =>
  `kvm-memmodel reproducer for ${file} (recorded failure: ${invariant})`;
