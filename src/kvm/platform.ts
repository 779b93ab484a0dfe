// Comparing the real kernel with the spec, and the platform profiles that record how a kernel
// knowingly differs from upstream (docs/PLATFORMS.md). A profile names deviations from the
// registry in model/platform.ts, each with its evidence (a replay file whose last step the upstream
// spec and the kernel disagree on); the spec and engine then apply them. A difference no profile
// records fails the run.
import { existsSync, realpathSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { formatOutcome, outcomeMismatch } from '../../model/observable.js';
import type { Outcome } from '../../model/outcomes.js';
import { DEVIATION_IDS, type DeviationId } from '../../model/platform.js';
import { readBoundedText } from '../util/bounded-read.js';
import { InputError } from '../util/errors.js';
import { escapeText, excerpt } from '../util/escape.js';
import { parseJsonInput, schemaIssue } from '../util/json-input.js';
import { packageRoot } from './helper.js';
import type { KernelResult } from './protocol.js';

export const PROFILE_FORMAT = 'kvm-memmodel-platform';

export interface Evidence {
  /** Replay file (relative to the profile) holding the minimal sequence, shrunk by check --backend kvm. */
  readonly file: string;
  /** What upstream (the spec without the deviation) expects at the sequence's last step. */
  readonly upstream: string;
  /** What this platform's kernel did there. */
  readonly observed: string;
}

export interface RecordedDeviation {
  readonly id: DeviationId;
  readonly evidence: readonly Evidence[];
}

export interface PlatformProfile {
  readonly name: string;
  readonly kernel: string;
  readonly description: string;
  readonly deviations: readonly RecordedDeviation[];
  /** Where the profile was read from (evidence paths are relative to it). */
  readonly dir: string;
}

const profileSchema = z
  .object({
    format: z.literal(PROFILE_FORMAT),
    version: z.literal(1),
    name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'lower-case letters, digits, ".", "_" and "-"'),
    kernel: z.string().min(1).max(200),
    description: z.string().max(4096),
    deviations: z
      .array(
        z
          .object({
            id: z.enum(DEVIATION_IDS as unknown as [string, ...string[]]),
            evidence: z
              .array(
                z
                  .object({ file: z.string().min(1), upstream: z.string().min(1), observed: z.string().min(1) })
                  .strict(),
              )
              .min(1),
          })
          .strict(),
      )
      .min(1),
  })
  .strict();

const PROFILE_NAME = /^[a-z0-9][a-z0-9._-]*$/;

/** platforms/NAME.json in the package for a bare name, the path itself for anything with a "/" or ".json". */
function profileFile(nameOrPath: string): string {
  if (nameOrPath === '') throw new InputError('--platform: the name is empty (a name under platforms/ or a JSON file)');
  if (nameOrPath.endsWith('.json') || nameOrPath.includes('/')) return resolve(nameOrPath);
  if (!PROFILE_NAME.test(nameOrPath))
    throw new InputError(`unknown platform profile "${excerpt(nameOrPath, 40)}" (profiles live in platforms/)`);
  const file = join(packageRoot(), 'platforms', `${nameOrPath}.json`);
  if (!existsSync(file)) throw new InputError(`unknown platform profile "${nameOrPath}" (profiles live in platforms/)`);
  return file;
}

/**
 * Evidence is a replay file the profile ships beside it: a regular file (not a FIFO or a device,
 * which would hang or flood its reader) under the profile's own directory once symlinks are
 * resolved, so a profile cannot point the tools at /etc/shadow or out through `../`.
 */
function checkEvidence(path: string, dir: string, what: string): void {
  const shown = excerpt(path, 120);
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    throw new InputError(`${what} has no evidence file ${shown}`);
  }
  const root = realpathSync(dir);
  if (!real.startsWith(`${root}/`))
    throw new InputError(`${what}: evidence ${shown} is outside the profile's directory ${excerpt(root, 80)}`);
  if (!statSync(real).isFile()) throw new InputError(`${what}: evidence ${shown} is not a regular file`);
}

/** A profile by name (platforms/NAME.json in the package) or by path; bad input is an InputError. */
export function loadProfile(nameOrPath: string): PlatformProfile {
  const file = profileFile(nameOrPath);
  const what = `platform profile ${escapeText(file)}`;
  const json = parseJsonInput(readBoundedText(file, 'platform profile'), what);
  const parsed = profileSchema.safeParse(json);
  if (!parsed.success) throw new InputError(`${what} is malformed at ${schemaIssue(parsed.error)}`);
  const dir = dirname(file);
  for (const d of parsed.data.deviations) {
    for (const e of d.evidence) checkEvidence(join(dir, e.file), dir, `${what}: deviation ${d.id}`);
  }
  return { ...(parsed.data as Omit<PlatformProfile, 'dir'>), dir };
}

export const evidencePath = (profile: PlatformProfile, e: Evidence): string => join(profile.dir, e.file);

export interface KernelVerdict {
  mismatch?: string;
}

/** Whether the kernel's result is the one the spec (with the platform's deviations applied) gives. */
export function kernelMismatch(spec: Outcome, kernel: KernelResult): KernelVerdict {
  if (kernel.kind === 'harness')
    return { mismatch: `the kernel run could not be completed: ${kernel.message} (spec says ${formatOutcome(spec)})` };
  const differs = outcomeMismatch(spec, kernel);
  return differs ? { mismatch: differs.replace('backend says', 'the kernel says') } : {};
}
