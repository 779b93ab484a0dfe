// Replay files: a failure as data (config, concrete commands, the violated invariant, each
// backend's outcomes), written as JSON and re-run exactly by `kvm-memmodel replay`. Reading one is
// strict: anything malformed is a one-line error naming the field.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { ARCHES } from '../../model/abi.js';
import type { Command } from '../../model/commands.js';
import { bigintAsHex, formatOutcome } from '../../model/outcomes.js';
import { INVARIANT_IDS, type InvariantId } from '../../properties/invariants.js';
import { MUTANT_NAMES, type MutantName } from '../mmu/mutants.js';
import type { Failure } from './runner.js';
import { InvariantViolation, Session, type StepRecord } from './session.js';

export const REPLAY_FORMAT = 'kvm-memmodel-replay';

const int = z.number().int().nonnegative();
const u64 = z.string().regex(/^0x[0-9a-f]+$/i, 'a hex string like "0x1f"').transform((s) => BigInt(s))
  .refine((v) => v < 2n ** 64n, 'at most 64 bits');
const prot = z.enum(['none', 'r', 'rw']);
const access = z.object({ kind: z.literal('guestAccess'), vcpu: z.number().int().min(0).max(1), gpa: int, len: z.number().int().min(1).max(8), write: z.boolean(), value: u64 }).strict();
const host = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('mmap'), hva: int, size: int, prot, backing: z.enum(['anon', 'thp', 'hugetlb1g']) }).strict(),
  z.object({ kind: z.literal('munmap'), hva: int, size: int }).strict(),
  z.object({ kind: z.literal('mprotect'), hva: int, size: int, prot }).strict(),
  z.object({ kind: z.literal('madviseDontneed'), hva: int, size: int }).strict(),
  z.object({ kind: z.literal('hostWrite'), hva: int, len: z.number().int().min(1).max(8), value: u64 }).strict(),
]);
const command = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('setMemslot'), api: z.enum(['v1', 'v2']), slot: z.number().int().min(0).max(0xffff), as: z.number().int().min(0).max(0xffff),
    flags: int, gpa: int, size: int, hva: int, gmem: z.object({ handle: z.number().int(), offset: int }).strict().optional(),
  }).strict(),
  ...host.options,
  z.object({ kind: z.literal('hostRead'), hva: int, len: z.number().int().min(1).max(8) }).strict(),
  z.object({ kind: z.literal('gmemCreate'), size: int, flags: int }).strict(),
  z.object({ kind: z.literal('gmemPunchHole'), handle: z.number().int(), offset: int, len: int }).strict(),
  access,
  z.object({ kind: z.literal('getDirtyLog'), slot: int, as: int }).strict(),
  z.object({ kind: z.literal('clearDirtyLog'), slot: int, as: int, firstPage: int, numPages: int }).strict(),
  z.object({ kind: z.literal('checkExtension'), cap: int }).strict(),
  z.object({ kind: z.literal('enableCap'), cap: int, flags: int, args0: int }).strict(),
  z.object({ kind: z.literal('raceAccess'), access, host }).strict(),
]);

const replaySchema = z.object({
  format: z.literal(REPLAY_FORMAT),
  version: z.literal(1),
  arch: z.enum(ARCHES as [string, ...string[]]),
  mutant: z.enum(MUTANT_NAMES as unknown as [string, ...string[]]).nullable(),
  invariants: z.array(z.enum(INVARIANT_IDS as unknown as [string, ...string[]])).min(1),
  seed: z.number().int(),
  path: z.string(),
  failure: z.object({ invariant: z.string(), messages: z.array(z.string()) }),
  commands: z.array(command).min(1),
  outcomes: z.array(z.object({ spec: z.string(), engine: z.string() })).optional(),
});

export interface ReplayFile {
  readonly arch: 'x86' | 'arm64';
  readonly mutant: MutantName | null;
  readonly invariants: readonly InvariantId[];
  readonly seed: number;
  readonly path: string;
  readonly failure: { readonly invariant: string; readonly messages: readonly string[] };
  readonly commands: readonly Command[];
}

/** A user-facing problem with input: the CLI prints the message alone and exits 2. */
export class InputError extends Error {}

const describe = (o: StepRecord['spec']): string => (o ? formatOutcome(o) : 'threw (see failure)');

export function writeReplay(file: string, failure: Failure, mutant: MutantName | null, invariants: readonly InvariantId[]): void {
  const body = {
    format: REPLAY_FORMAT, version: 1, arch: failure.arch, mutant, invariants, seed: failure.seed, path: failure.path,
    failure: { invariant: failure.invariant, messages: failure.messages },
    commands: failure.steps.map((s) => s.cmd),
    outcomes: failure.steps.map((s) => ({ spec: describe(s.spec), engine: describe(s.engine) })),
  };
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(body, bigintAsHex, 2)}\n`);
}

export function readReplay(file: string): ReplayFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(`cannot read replay file ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(`replay file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  const parsed = replaySchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? issue.path.join('.') : '(top level)';
    throw new InputError(`replay file ${file} is malformed at ${where}: ${issue.message}`);
  }
  return parsed.data as unknown as ReplayFile;
}

export interface ReplayResult {
  readonly steps: readonly StepRecord[];
  readonly violation: InvariantViolation | null;
}

/** Re-run a replay's commands exactly, with its architecture, mutant and invariants. */
export function runReplay(replay: ReplayFile): ReplayResult {
  const session = new Session({ arch: replay.arch, mutant: replay.mutant, invariants: new Set(replay.invariants) });
  try {
    for (const cmd of replay.commands) session.run(cmd);
  } catch (e) {
    if (e instanceof InvariantViolation) return { steps: e.steps, violation: e };
    throw e;
  }
  return { steps: session.steps, violation: null };
}
