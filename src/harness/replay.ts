// Replay files: a failure as data (config, concrete commands, the violated invariant, each
// backend's outcomes), written as JSON and re-run exactly by `kvm-memmodel replay`. Reading one is
// strict: anything malformed is a one-line error naming the field (src/util: a bounded reader, the
// JSON parser's excerpt escaped); the commands are parsed with the schema the Command type is
// inferred from (model/command-schema.ts). Writing is atomic (temp file, fsync, rename).
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { ARCHES } from '../../model/abi.js';
import type { Command } from '../../model/commands.js';
import { MAX_SEQUENCE_COMMANDS, commandSequenceSchema, concurrentCaseSchema } from '../../model/command-schema.js';
import type { ConcurrentCase } from '../../model/history.js';
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
import { INVARIANT_IDS, applicableInvariants, type InvariantId } from '../../properties/invariants.js';
import { KVM_MUTANTS, type KvmMutant } from '../kvm/backend.js';
import { isKvmMutantName, settingsError } from './settings-check.js';
import { MUTANT_NAMES, type MutantName } from '../mmu/mutant-registry.js';
import type { Failure } from './runner.js';
import { InvariantViolation, Session, type SessionConfig, type StepRecord } from './session.js';
import { ConcurrentViolation, inputOf, runConcurrentCase, type ConcurrentOutcome } from './concurrent.js';
import type { KernelResult } from '../kvm/protocol.js';
import { DEVIATION_IDS, type DeviationId } from '../../model/platform.js';
import { readBoundedText } from '../util/bounded-read.js';
import { InputError } from '../util/errors.js';
import { escapeText } from '../util/escape.js';
import { parseJsonInput, schemaIssue } from '../util/json-input.js';
import { writeFileAtomic } from '../util/output-path.js';
import { formatLeftOut, kernelLeftOut } from './kernel-left-out.js';
import { DEFAULT_REPLAY_ATTEMPTS, replayOnKernel } from './kernel-concurrent.js';
import { caseRoleRefusal } from '../kvm/concurrent.js';

export const REPLAY_FORMAT = 'kvm-memmodel-replay';

const unique = (list: readonly string[]): boolean => new Set(list).size === list.length;

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
    series: z.array(z.enum(SERIES_NAMES as unknown as [string, ...string[]])).refine(unique, 'a series is repeated'),
    options: optionSchema,
    platform: z.array(z.enum(DEVIATION_IDS as unknown as [string, ...string[]])).optional(),
  })
  .strict();

/** Recorded strings (messages, outcomes) are a line or a few each; 64 KiB is far more than any is. */
const MAX_TEXT = 65_536;
const invariantSchema = z.enum(INVARIANT_IDS as unknown as [string, ...string[]]);

const replaySchema = z
  .object({
    format: z.literal(REPLAY_FORMAT),
    version: z.literal(1),
    arch: z.enum(ARCHES as [string, ...string[]]),
    /** An engine mutant, or a kvm adaptor mutant (backend kvm): replay runs with the same one. */
    mutant: z.enum([...MUTANT_NAMES, ...KVM_MUTANTS] as unknown as [string, ...string[]]).nullable(),
    invariants: z
      .array(z.enum(INVARIANT_IDS as unknown as [string, ...string[]]))
      .min(1)
      .refine(unique, 'an invariant is repeated'),
    seed: z
      .number()
      .int()
      .min(-(2 ** 31))
      .max(2 ** 31 - 1),
    path: z.string().max(MAX_TEXT),
    failure: z
      .object({ invariant: invariantSchema, messages: z.array(z.string().max(MAX_TEXT)).max(MAX_SEQUENCE_COMMANDS) })
      .strict(),
    commands: commandSequenceSchema,
    outcomes: z
      .array(
        z
          .object({
            spec: z.string().max(MAX_TEXT),
            engine: z.string().max(MAX_TEXT),
            kernel: z.string().max(MAX_TEXT).optional(),
          })
          .strict(),
      )
      .max(MAX_SEQUENCE_COMMANDS)
      .optional(),
    /** kvm: the failure involves the real kernel (check --backend kvm); replaying it needs /dev/kvm. */
    backend: z.enum(['model', 'kvm']).optional(),
    /** Series and options the failure ran with; absent in files from before the series (upstream). */
    model: modelSchema.optional(),
    /**
     * A concurrent case (check --threads): `commands` is its setup, this its roles, threads and
     * schedule; validated as a whole with concurrentCaseSchema in readReplay.
     */
    concurrent: z.object({ roles: z.unknown(), threads: z.unknown(), schedule: z.unknown() }).strict().optional(),
  })
  .strict();

export interface ReplayFile {
  readonly arch: 'x86' | 'arm64';
  readonly mutant: MutantName | KvmMutant | null;
  readonly invariants: readonly InvariantId[];
  readonly seed: number;
  readonly path: string;
  readonly failure: { readonly invariant: string; readonly messages: readonly string[] };
  readonly commands: readonly Command[];
  readonly model: ModelConfig;
  readonly backend: 'model' | 'kvm';
  /** A concurrent replay: the whole case (setup = commands); replays exactly (same schedule, same history). */
  readonly concurrent?: ConcurrentCase;
}

const describe = (o: StepRecord['spec']): string => (o ? formatOutcome(o) : 'threw (see failure)');
export const describeKernel = (k: KernelResult): string =>
  k.kind === 'harness' ? `harness: ${k.message}` : formatOutcome(k);

export function writeReplay(
  file: string,
  failure: Failure,
  mutant: MutantName | KvmMutant | null,
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
    ...(failure.concurrent ? { concurrent: concurrentSection(failure.concurrent.case) } : {}),
    outcomes: failure.steps.map((s) => ({
      spec: describe(s.spec),
      engine: describe(s.engine),
      ...(s.kernel ? { kernel: describeKernel(s.kernel) } : {}),
    })),
  };
  writeFileAtomic(file, `${JSON.stringify(body, bigintAsHex, 2)}\n`);
}

const concurrentSection = (c: ConcurrentCase) => ({ roles: c.roles, threads: c.threads, schedule: c.schedule });

/** The whole concurrent case of a replay file, or an InputError naming the field that is wrong. */
function parseConcurrent(what: string, setup: unknown, part: Record<string, unknown>): ConcurrentCase {
  const parsed = concurrentCaseSchema.safeParse({ setup, ...part });
  if (!parsed.success) throw new InputError(`${what} is malformed at concurrent.${schemaIssue(parsed.error)}`);
  return parsed.data;
}

/** The settings that shape a campaign's run: two runs that differ in any of them write different files. */
export interface RunSettings {
  readonly arches: readonly string[];
  readonly seed: number;
  readonly model: ModelConfig;
  readonly invariants: readonly InvariantId[];
  readonly mutant: string | null;
  readonly backend: 'model' | 'kvm';
  readonly maxCommands: number;
  readonly runs: number;
  /** check --threads N (N >= 2): a concurrent campaign; absent for sequential ones (their hash is unchanged). */
  readonly threads?: number;
  /** check --profile small|vmm; absent for the default profile (its hash is unchanged). */
  readonly profile?: string;
}

/** 8 hex digits of the sha256 of the settings (canonical JSON: keys in a fixed order). */
export function settingsHash(s: RunSettings): string {
  const canonical = JSON.stringify([
    s.arches,
    s.seed,
    s.model.series,
    Object.entries(s.model.options).sort(([a], [b]) => (a < b ? -1 : 1)),
    s.model.platform ?? [],
    s.invariants,
    s.mutant,
    s.backend,
    s.maxCommands,
    s.runs,
    ...(s.threads ? [s.threads] : []),
    ...(s.profile ? [['profile', s.profile]] : []),
  ]);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 8);
}

/** `x86-<invariant>[-<mutant>]-seed<N>-<hash>.json` in `dir`: readable, and unique per settings. */
export function replayFileName(dir: string, failure: Failure, s: RunSettings): string {
  const mutant = s.mutant ? `-${s.mutant}` : '';
  return join(dir, `${failure.arch}-${failure.invariant}${mutant}-seed${s.seed}-${settingsHash(s)}.json`);
}

export function readReplay(file: string): ReplayFile {
  const what = `replay file ${escapeText(file)}`;
  const json = parseJsonInput(readBoundedText(file, 'replay file'), what);
  const parsed = replaySchema.safeParse(json);
  if (!parsed.success) throw new InputError(`${what} is malformed at ${schemaIssue(parsed.error)}`);
  const data = parsed.data;
  const model = data.model
    ? makeConfig(
        data.model.series as SeriesName[],
        data.model.options as Partial<ModelConfig['options']>,
        (data.model.platform ?? []) as DeviationId[],
      )
    : UPSTREAM_CONFIG;
  const concurrent = data.concurrent
    ? { concurrent: parseConcurrent(what, (json as { commands: unknown }).commands, data.concurrent) }
    : {};
  const replay = {
    ...(data as unknown as Omit<ReplayFile, 'model' | 'backend' | 'concurrent'>),
    model,
    backend: data.backend ?? 'model',
    ...concurrent,
  };
  // A kernel concurrent replay runs each thread on its own OS thread: its roles must fit the helper's VM.
  const refusal = replay.concurrent && replay.backend === 'kvm' ? caseRoleRefusal(replay.concurrent) : null;
  if (refusal) throw new InputError(`${what}: the case cannot run on the kernel's threads: ${refusal}`);
  const contradiction = settingsError({ ...replay, arches: [replay.arch] });
  if (contradiction) throw new InputError(`${what}: ${contradiction}`);
  return replay;
}

/**
 * The replay's invariants that can apply to it (series, arch, backend: properties/invariants.ts);
 * the rest are dropped and named, so `replay` runs what `check` would have run. A replay whose
 * recorded failure is itself inapplicable is refused: re-running it could only pass, emptily.
 */
export function applicableReplayInvariants(replay: ReplayFile): {
  readonly run: readonly InvariantId[];
  readonly dropped: readonly InvariantId[];
} {
  const setting = { ...replay.model, arches: [replay.arch], backend: replay.backend };
  const run = applicableInvariants(new Set(replay.invariants), setting).map((inv) => inv.id);
  const dropped = replay.invariants.filter((id) => !run.includes(id));
  const recorded = replay.failure.invariant;
  if (!replay.invariants.includes(recorded as InvariantId))
    throw new InputError(`replay refused: its failure ${recorded} is not among its invariants`);
  if (!run.includes(recorded as InvariantId))
    throw new InputError(
      `replay refused: its failure ${recorded} cannot apply to an ${replay.arch} replay ` +
        `with ${describeSetting(replay)}`,
    );
  if (run.length === 0) throw new InputError('replay refused: none of its invariants applies to it');
  return { run, dropped };
}

const describeSetting = (r: ReplayFile): string =>
  `backend ${r.backend}, series ${r.model.series.length ? r.model.series.join(',') : 'none'}`;

/** Generated sequences replay in well under a second; a replay still running after this is hostile. */
export const REPLAY_SECONDS = 10;

export interface ReplayResult {
  readonly steps: readonly StepRecord[];
  readonly violation: InvariantViolation | null;
  /** A concurrent replay: the case, the history it produced again and the verdict (when it got that far). */
  readonly concurrent?: Partial<ConcurrentOutcome>;
  /** A kernel concurrent replay: how many runs of the case on the kernel there were, and how many failed. */
  readonly attempts?: { readonly runs: number; readonly failed: number };
}

/**
 * Re-run a replay's commands exactly, with its architecture, mutant and invariants (and, for a kvm
 * replay, the kernel backend the caller opened).
 */
export function runReplay(
  replay: ReplayFile,
  kernel?: SessionConfig['kernel'],
  seconds = REPLAY_SECONDS,
  attempts = DEFAULT_REPLAY_ATTEMPTS,
): ReplayResult {
  // kvm replays: check's left-out rule first, so a command check would not send never reaches the helper.
  const leftOut = kernel && kernelLeftOut(replay.commands, replay.arch, replay.model, kernel.backend);
  if (leftOut) throw new InputError(`replay refused: ${formatLeftOut(leftOut)}`);
  if (replay.concurrent && kernel)
    return replayOnKernel(replay, replay.concurrent, kernel.backend, applicableReplayInvariants(replay).run, attempts);
  if (replay.concurrent) return runConcurrentReplay(replay, replay.concurrent);
  const session = new Session({
    arch: replay.arch,
    // A kvm adaptor mutant lives in the backend the caller opened; the engine runs unmutated.
    mutant: isKvmMutantName(replay.mutant) ? null : replay.mutant,
    invariants: new Set(applicableReplayInvariants(replay).run),
    model: replay.model,
    kernel,
  });
  const deadline = Date.now() + seconds * 1000;
  try {
    for (const [i, cmd] of replay.commands.entries()) {
      // A time bound, not a size bound alone: each command is bounded (command-schema.ts), but a file
      // can chain thousands of the largest so the invariants after each walk gigabytes of state.
      if (i > 0 && Date.now() >= deadline)
        throw new InputError(
          `replay refused: still running after ${seconds} s at command ${i + 1} of ` +
            `${replay.commands.length} (far beyond any sequence check generates)`,
        );
      session.run(cmd);
    }
    session.finish();
  } catch (e) {
    if (e instanceof InvariantViolation) return { steps: e.steps, violation: e };
    throw e;
  }
  return { steps: session.steps, violation: null };
}

/** A concurrent replay: the same case, so the same interleaving, history and verdict (concurrent.ts). */
function runConcurrentReplay(replay: ReplayFile, c: ConcurrentCase): ReplayResult {
  const config: SessionConfig = {
    arch: replay.arch,
    mutant: isKvmMutantName(replay.mutant) ? null : replay.mutant,
    invariants: new Set(applicableReplayInvariants(replay).run),
    model: replay.model,
  };
  try {
    const outcome = runConcurrentCase(config, inputOf(c));
    return { steps: outcome.setupSteps, violation: null, concurrent: outcome };
  } catch (e) {
    if (e instanceof ConcurrentViolation) return { steps: e.steps, violation: e, concurrent: e.outcome };
    if (e instanceof InvariantViolation) return { steps: e.steps, violation: e, concurrent: { case: c } };
    throw e;
  }
}
