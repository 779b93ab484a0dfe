// Comparing the real kernel with the spec, and the platform profiles that record how a kernel
// knowingly differs from upstream (docs/PLATFORMS.md). A profile names deviations from the
// registry in model/platform.ts, each with its evidence (a replay file whose last step the upstream
// spec and the kernel disagree on); the spec and engine then apply them. A difference no profile
// records fails the run.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { formatOutcome, outcomeMismatch } from '../../model/observable.js';
import type { Outcome } from '../../model/outcomes.js';
import { DEVIATION_IDS, type DeviationId } from '../../model/platform.js';
import { InputError } from '../util/errors.js';
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
    kernel: z.string().min(1),
    description: z.string(),
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

/** A profile by name (platforms/NAME.json in the package) or by path; bad input is an InputError. */
export function loadProfile(nameOrPath: string): PlatformProfile {
  const file = nameOrPath.endsWith('.json')
    ? resolve(nameOrPath)
    : join(packageRoot(), 'platforms', `${nameOrPath}.json`);
  if (!existsSync(file))
    throw new InputError(`unknown platform profile "${nameOrPath}" (no ${file}; profiles live in platforms/)`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new InputError(`platform profile ${file} is not valid JSON: ${(e as Error).message}`);
  }
  const parsed = profileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InputError(
      `platform profile ${file} is malformed at ${issue.path.join('.') || '(top level)'}: ${issue.message}`,
    );
  }
  const dir = dirname(file);
  for (const d of parsed.data.deviations) {
    for (const e of d.evidence) {
      const path = isAbsolute(e.file) ? e.file : join(dir, e.file);
      if (!existsSync(path))
        throw new InputError(`platform profile ${file}: deviation ${d.id} has no evidence file ${path}`);
    }
  }
  return { ...(parsed.data as Omit<PlatformProfile, 'dir'>), dir };
}

export const evidencePath = (profile: PlatformProfile, e: Evidence): string =>
  isAbsolute(e.file) ? e.file : join(profile.dir, e.file);

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
