// Replay files: a failure as data (config, concrete commands, the violated invariant, each
// backend's outcomes), written as JSON and re-run exactly by `kvm-memmodel replay`. Reading one is
// strict: anything malformed is a one-line error naming the field.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { ARCHES } from '../../model/abi.js';
import type { Command } from '../../model/commands.js';
import { formatOutcome } from '../../model/observable.js';
import { bigintAsHex } from '../../model/outcomes.js';
import {
  DEFAULT_OPTIONS,
  OPTION_INFO,
  SERIES_NAMES,
  UPSTREAM_CONFIG,
  makeConfig,
  type ModelConfig,
  type SeriesName,
} from '../../model/series.js';
import { INVARIANT_IDS, type InvariantId } from '../../properties/invariants.js';
import { MUTANT_NAMES, type MutantName } from '../mmu/mutant-registry.js';
import type { Failure } from './runner.js';
import { InvariantViolation, Session, type SessionConfig, type StepRecord } from './session.js';
import type { KernelResult } from '../kvm/protocol.js';
import { DEVIATION_IDS, type DeviationId } from '../../model/platform.js';
import { InputError } from '../util/errors.js';
import { formatLeftOut, kernelLeftOut } from './kernel-left-out.js';

export const REPLAY_FORMAT = 'kvm-memmodel-replay';

const int = z.number().int().nonnegative();
const u64 = z
  .string()
  .regex(/^0x[0-9a-f]+$/i, 'a hex string like "0x1f"')
  .transform((s) => BigInt(s))
  .refine((v) => v < 2n ** 64n, 'at most 64 bits');
const prot = z.enum(['none', 'r', 'rw']);
const access = z
  .object({
    kind: z.literal('guestAccess'),
    vcpu: z.number().int().min(0).max(1),
    gpa: int,
    len: z.number().int().min(1).max(8),
    write: z.boolean(),
    value: u64,
    private: z.boolean().optional(),
  })
  .strict();
const host = z.discriminatedUnion('kind', [
  z
    .object({ kind: z.literal('mmap'), hva: int, size: int, prot, backing: z.enum(['anon', 'thp', 'hugetlb1g']) })
    .strict(),
  z.object({ kind: z.literal('munmap'), hva: int, size: int }).strict(),
  z.object({ kind: z.literal('mprotect'), hva: int, size: int, prot }).strict(),
  z.object({ kind: z.literal('madviseDontneed'), hva: int, size: int }).strict(),
  z.object({ kind: z.literal('hostWrite'), hva: int, len: z.number().int().min(1).max(8), value: u64 }).strict(),
]);
const command = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('setMemslot'),
      api: z.enum(['v1', 'v2']),
      slot: z.number().int().min(0).max(0xffff),
      as: z.number().int().min(0).max(0xffff),
      flags: int,
      gpa: int,
      size: int,
      hva: int,
      gmem: z.object({ handle: z.number().int(), offset: int }).strict().optional(),
    })
    .strict(),
  ...host.options,
  z.object({ kind: z.literal('hostRead'), hva: int, len: z.number().int().min(1).max(8) }).strict(),
  z.object({ kind: z.literal('gmemCreate'), size: int, flags: int }).strict(),
  z.object({ kind: z.literal('gmemPunchHole'), handle: z.number().int(), offset: int, len: int }).strict(),
  access,
  z.object({ kind: z.literal('getDirtyLog'), slot: int, as: int }).strict(),
  z.object({ kind: z.literal('clearDirtyLog'), slot: int, as: int, firstPage: int, numPages: int }).strict(),
  z.object({ kind: z.literal('checkExtension'), cap: int }).strict(),
  z
    .object({
      kind: z.literal('enableCap'),
      cap: int,
      flags: int,
      args0: int,
      args1: int.optional(),
      args2: int.optional(),
      args3: int.optional(),
    })
    .strict(),
  z.object({ kind: z.literal('raceAccess'), access, host }).strict(),
  z.object({ kind: z.literal('madvisePopulate'), hva: int, size: int, write: z.boolean() }).strict(),
  z
    .object({ kind: z.literal('userfaultBits'), slot: int, as: int, firstPage: int, numPages: int, set: z.boolean() })
    .strict(),
  z.object({ kind: z.literal('setMemoryAttributes'), gpa: int, size: int, attributes: int, flags: int }).strict(),
  z
    .object({
      kind: z.literal('demandPaging'),
      slot: int,
      vcpuPages: z.array(z.array(int)).min(1).max(2),
      write: z.boolean(),
      readers: z.number().int().min(1).max(8),
      schedule: z.array(int),
    })
    .strict(),
]);

/** Each option's allowed values, from the registry (series.ts). */
const optionSchema = z
  .object(
    Object.fromEntries(
      Object.entries(OPTION_INFO).map(([name, info]) => [
        name,
        z
          .union(
            info.values.map((v) => z.literal(v)) as unknown as [
              z.ZodLiteral<string | boolean>,
              z.ZodLiteral<string | boolean>,
            ],
          )
          .optional(),
      ]),
    ),
  )
  .strict();
const modelSchema = z
  .object({
    series: z.array(z.enum(SERIES_NAMES as unknown as [string, ...string[]])),
    options: optionSchema,
    platform: z.array(z.enum(DEVIATION_IDS as unknown as [string, ...string[]])).optional(),
  })
  .strict();

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
  outcomes: z
    .array(z.object({ spec: z.string(), engine: z.string(), kernel: z.string().optional() }).strict())
    .optional(),
  /** kvm: the failure involves the real kernel (check --backend kvm); replaying it needs /dev/kvm. */
  backend: z.enum(['model', 'kvm']).optional(),
  /** Series and options the failure ran with; absent in files from before the series (upstream). */
  model: modelSchema.optional(),
});

export interface ReplayFile {
  readonly arch: 'x86' | 'arm64';
  readonly mutant: MutantName | null;
  readonly invariants: readonly InvariantId[];
  readonly seed: number;
  readonly path: string;
  readonly failure: { readonly invariant: string; readonly messages: readonly string[] };
  readonly commands: readonly Command[];
  readonly model: ModelConfig;
  readonly backend: 'model' | 'kvm';
}

const describe = (o: StepRecord['spec']): string => (o ? formatOutcome(o) : 'threw (see failure)');
export const describeKernel = (k: KernelResult): string =>
  k.kind === 'harness' ? `harness: ${k.message}` : formatOutcome(k);

export function writeReplay(
  file: string,
  failure: Failure,
  mutant: MutantName | null,
  invariants: readonly InvariantId[],
  model: ModelConfig = UPSTREAM_CONFIG,
  backend: 'model' | 'kvm' = 'model',
): void {
  const changed = Object.fromEntries(
    Object.entries(model.options).filter(([k, v]) => DEFAULT_OPTIONS[k as keyof typeof DEFAULT_OPTIONS] !== v),
  );
  const platform = model.platform?.length ? { platform: model.platform } : {};
  const body = {
    format: REPLAY_FORMAT,
    version: 1,
    arch: failure.arch,
    mutant,
    invariants,
    seed: failure.seed,
    path: failure.path,
    ...(backend === 'kvm' ? { backend } : {}),
    ...(model.series.length || Object.keys(changed).length || model.platform?.length
      ? { model: { series: model.series, options: changed, ...platform } }
      : {}),
    failure: { invariant: failure.invariant, messages: failure.messages },
    commands: failure.steps.map((s) => s.cmd),
    outcomes: failure.steps.map((s) => ({
      spec: describe(s.spec),
      engine: describe(s.engine),
      ...(s.kernel ? { kernel: describeKernel(s.kernel) } : {}),
    })),
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
  const data = parsed.data;
  const model = data.model
    ? makeConfig(
        data.model.series as SeriesName[],
        data.model.options as Partial<ModelConfig['options']>,
        (data.model.platform ?? []) as DeviationId[],
      )
    : UPSTREAM_CONFIG;
  return { ...(data as unknown as Omit<ReplayFile, 'model' | 'backend'>), model, backend: data.backend ?? 'model' };
}

export interface ReplayResult {
  readonly steps: readonly StepRecord[];
  readonly violation: InvariantViolation | null;
}

/**
 * Re-run a replay's commands exactly, with its architecture, mutant and invariants (and, for a kvm
 * replay, the kernel backend the caller opened).
 */
export function runReplay(replay: ReplayFile, kernel?: SessionConfig['kernel']): ReplayResult {
  // kvm replays: check's left-out rule first, so a command check would not send never reaches the helper.
  const leftOut = kernel && kernelLeftOut(replay.commands, replay.arch, replay.model, kernel.backend);
  if (leftOut) throw new InputError(`replay refused: ${formatLeftOut(leftOut)}`);
  const session = new Session({
    arch: replay.arch,
    mutant: replay.mutant,
    invariants: new Set(replay.invariants),
    model: replay.model,
    kernel,
  });
  try {
    for (const cmd of replay.commands) session.run(cmd);
    session.finish();
  } catch (e) {
    if (e instanceof InvariantViolation) return { steps: e.steps, violation: e };
    throw e;
  }
  return { steps: session.steps, violation: null };
}
