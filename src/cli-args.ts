// Parsing the CLI's flag values. Every parser refuses what it does not understand (commander turns
// the InvalidArgumentError into one `error:` line); a user string never indexes an object except
// through an own-property check, so `constructor` or `__proto__` is just an unknown name.
import { InvalidArgumentError } from 'commander';
import { ARCHES, type Arch } from '../model/abi.js';
import { MAX_SEQUENCE_COMMANDS, MAX_THREADS } from '../model/command-schema.js';
import { SERIES_NAMES, isSeriesName, parseOption, type SeriesName, type SeriesOptions } from '../model/series.js';
import { INVARIANT_IDS, isInvariantId, type InvariantId } from '../properties/invariants.js';
import { GENERATOR_PROFILES, type GeneratorProfile } from './harness/runner.js';
import { KVM_MUTANTS, type KvmMutant } from './kvm/backend.js';
import { isMutantName, type MutantName } from './mmu/mutant-registry.js';
import { MAX_WORKERS } from './harness/workers.js';
import { excerpt } from './util/escape.js';

/** Far more runs than any campaign needs (the default is thousands); a typo'd huge number is refused. */
export const MAX_RUNS = 100_000_000;

const quoted = (value: string): string => `"${excerpt(value, 40)}"`;

function boundedInt(value: string, min: number, max: number): number {
  if (!/^\d+$/.test(value))
    throw new InvalidArgumentError(`must be a decimal integer from ${min} to ${max} (got ${quoted(value)}).`);
  const n = Number(value);
  if (n < min || n > max) throw new InvalidArgumentError(`must be from ${min} to ${max} (got ${quoted(value)}).`);
  return n;
}

export const runsArg = (value: string): number => boundedInt(value, 1, MAX_RUNS);
/** replay --attempts: runs of a kernel concurrent replay (each a fresh VM; 10,000 is minutes). */
export const attemptsArg = (value: string): number => boundedInt(value, 1, 10_000);
export const maxCommandsArg = (value: string): number => boundedInt(value, 1, MAX_SEQUENCE_COMMANDS);
/** check --threads: 1 is the sequential campaign, 2..8 a concurrent one (model/command-schema.ts MAX_THREADS). */
export const threadsArg = (value: string): number => boundedInt(value, 1, MAX_THREADS);
/** check --workers: worker threads for the sequential campaign (harness/workers.ts). */
export const workersArg = (value: string): number => boundedInt(value, 1, MAX_WORKERS);

export function seedArg(value: string): number {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`must be a decimal integer (got ${quoted(value)}).`);
  const n = Number(value);
  if (n < -(2 ** 31) || n >= 2 ** 31) throw new InvalidArgumentError(`must fit in 32 bits (got ${quoted(value)}).`);
  return n;
}

export function archList(value: string): Arch[] {
  if (value === 'all') return [...ARCHES];
  if ((ARCHES as readonly string[]).includes(value)) return [value as Arch];
  throw new InvalidArgumentError(`must be one of ${ARCHES.join(', ')}, all (got ${quoted(value)}).`);
}

/** A comma-separated list; an empty item (`a,,b`, `a,`) is refused: a name went missing there. */
function names(value: string): string[] {
  const list = value.split(',').map((s) => s.trim());
  if (list.some((s) => s === '')) throw new InvalidArgumentError(`has an empty name in ${quoted(value)}.`);
  return list;
}

export function invariantList(value: string): InvariantId[] {
  const ids = names(value);
  const unknown = ids.find((id) => !isInvariantId(id));
  if (unknown !== undefined || ids.length === 0)
    throw new InvalidArgumentError(
      `unknown invariant ${quoted(unknown ?? value)} (known: ${INVARIANT_IDS.join(', ')}).`,
    );
  return ids as InvariantId[];
}

export const isKvmMutant = (m: string | undefined): m is KvmMutant =>
  m !== undefined && (KVM_MUTANTS as readonly string[]).includes(m);

export function mutantArg(value: string): MutantName | KvmMutant {
  if (isKvmMutant(value) || isMutantName(value)) return value;
  throw new InvalidArgumentError(`unknown mutant ${quoted(value)} (run \`kvm-memmodel mutants --list\`).`);
}

export function profileArg(value: string): GeneratorProfile {
  const found = GENERATOR_PROFILES.find((p) => p === value);
  if (found) return found;
  throw new InvalidArgumentError(
    `must be default (small runs and a vmm share), small or vmm (real-VMM-sized machines) (got ${quoted(value)}).`,
  );
}

export function backendArg(value: string): 'model' | 'kvm' {
  if (value === 'model' || value === 'kvm') return value;
  throw new InvalidArgumentError(
    `must be model (spec and engine) or kvm (spec, engine and the real kernel) (got ${quoted(value)}).`,
  );
}

export function seriesList(value: string): SeriesName[] {
  if (value === 'all') return [...SERIES_NAMES];
  if (value === 'none') return [];
  const list = names(value);
  const unknown = list.find((n) => !isSeriesName(n));
  if (unknown !== undefined || list.length === 0)
    throw new InvalidArgumentError(
      `unknown series ${quoted(unknown ?? value)} (known: ${SERIES_NAMES.join(', ')}, all, none).`,
    );
  return list as SeriesName[];
}

export function optionArg(value: string, previous: Partial<SeriesOptions> = {}): Partial<SeriesOptions> {
  const parsed = parseOption(value);
  if (typeof parsed === 'string') throw new InvalidArgumentError(`${parsed}.`);
  return { ...previous, [parsed[0]]: parsed[1] };
}
