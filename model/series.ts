// The proposed series of the seed threads, as switchable extensions of the upstream spec
// (UPSTREAM.md "What became of each series"), and the open questions (SPEC-DIGEST 5, OQ-n) as named
// options. An empty series list is upstream Linux 6.18; each series adds the ABI it proposed.
// Defaults are the choices the later messages of each thread favour.
import type { DeviationId } from './platform.js';

export const SERIES = [
  {
    name: 'userfault',
    seed: 'S0 (000)',
    title: 'KVM_MEM_USERFAULT memslot flag and userfault bitmap (Houghton, v1 2024 / v3 2025)',
  },
  {
    name: 'gmem-private',
    seed: 'S1 (001)',
    title: 'private/shared memory attributes, private faults, RMP assignment and max-level clamp',
  },
  { name: 'arm64-lock', seed: 'S2 (002)', title: 'arm64 KVM_CAP_ARM_LOCK_USER_MEMORY_REGION lock/unlock memslot API' },
  {
    name: 'memfault-2023',
    seed: 'S3 (003)',
    title: 'memory-fault exit as posted in 2023: exit 38, cap 227 reason bitfield, fast GUP for read faults',
  },
  {
    name: 'exit-on-missing',
    seed: 'S3 (003)',
    title: 'fast-only memslot flag (ABSENT_MAPPING_FAULT -> EXIT_ON_MISSING) and the uffd demand-paging protocol',
  },
  {
    name: 'arm64-unmap',
    seed: 'S4 (004)',
    title: 'arm64 stage-2 unmap paths: slow walker, table-disconnect fast path, deferred range TLBI, CMOs',
  },
] as const;

export type SeriesName = (typeof SERIES)[number]['name'];
export const SERIES_NAMES: readonly SeriesName[] = SERIES.map((s) => s.name);

export function isSeriesName(name: string): name is SeriesName {
  return (SERIES_NAMES as readonly string[]).includes(name);
}

/** The named options. Each says which OQ-n (or hardware feature) it settles and which series reads it. */
export interface SeriesOptions {
  /** OQ-7 / INV-10: zap stage 2 when USERFAULT is turned off (v1) or leave the mappings (Oliver, favoured). */
  zapOnUserfaultDisable: boolean;
  /** OQ-10: when a gmem page becomes private in the RMP: at allocation (Sean, favoured) or at fault (Isaku's RFC). */
  rmpConversion: 'allocation' | 'fault';
  /** OQ-8: errno for deleting a locked memslot (the seed names none). */
  lockedDeleteErrno: 'EINVAL' | 'EBUSY' | 'EPERM';
  /** OQ-1: KVM_RUN's return for a memory-fault exit: -EFAULT with the payload (favoured) or 0 (arm64 v2). */
  memfaultReturn: 'efault' | 'zero';
  /** OQ-2: cap 227 gates which exits are converted (v2 opt-in) or only validates/advertises (favoured). */
  memfaultOptIn: boolean;
  /** OQ-3: report UNKNOWN/ABSENT_MAPPING reason bits in memory_fault.flags (v2 doc) or flags 0 (favoured). */
  memfaultReasonFlags: boolean;
  /** OQ-6: arm64 annotates every user_mem_abort -EFAULT, not only fast-only exits (Anish's minimal arm64 version). */
  arm64MemfaultAll: boolean;
  /** OQ-11: memory_fault length: the faulting 4 KiB page (favoured) or the host mapping size (arm64 vma_pagesize). */
  memfaultLength: 'page' | 'mapping';
  /** OQ-12 / INV-15: KVM_RUN resets exit_reason on entry on every architecture (favoured). */
  resetExitReasonOnEntry: boolean;
  /** S3/p03: fast GUP pins read faults without FOLL_WRITE, so they succeed on read-only host mappings. */
  fastGupReadOnly: boolean;
  /** OQ-9: the arm64 stage-2 unmap implementation. */
  unmapStrategy: 'slow' | 'fast-disconnect' | 'deferred-range';
  /** FEAT_S2FWB: stage 2 forces write-back, so unmaps need no CMOs. */
  s2fwb: boolean;
  /** FEAT_TLBIRANGE: range TLBI instructions exist; without them a range flush is a full VMID flush. */
  tlbiRange: boolean;
  /** BUG-15 baseline: every stage-2 invalidation also discards the whole stage-1 context (counted). */
  s1FlushOnS2Invalidate: boolean;
}

export const DEFAULT_OPTIONS: SeriesOptions = {
  zapOnUserfaultDisable: false,
  rmpConversion: 'allocation',
  lockedDeleteErrno: 'EINVAL',
  memfaultReturn: 'efault',
  memfaultOptIn: false,
  memfaultReasonFlags: false,
  arm64MemfaultAll: false,
  memfaultLength: 'page',
  resetExitReasonOnEntry: true,
  fastGupReadOnly: true,
  unmapStrategy: 'deferred-range',
  s2fwb: false,
  tlbiRange: true,
  s1FlushOnS2Invalidate: true,
};

export type OptionName = keyof SeriesOptions;

interface OptionInfo {
  readonly series: SeriesName;
  readonly source: string;
  readonly values: readonly (string | boolean)[];
}

export const OPTION_INFO: Record<OptionName, OptionInfo> = {
  zapOnUserfaultDisable: { series: 'userfault', source: 'OQ-7, INV-10', values: [true, false] },
  rmpConversion: { series: 'gmem-private', source: 'OQ-10, INV-32', values: ['allocation', 'fault'] },
  lockedDeleteErrno: { series: 'arm64-lock', source: 'OQ-8, INV-28', values: ['EINVAL', 'EBUSY', 'EPERM'] },
  memfaultReturn: { series: 'memfault-2023', source: 'OQ-1, INV-14', values: ['efault', 'zero'] },
  memfaultOptIn: { series: 'memfault-2023', source: 'OQ-2, INV-13', values: [true, false] },
  memfaultReasonFlags: { series: 'memfault-2023', source: 'OQ-3, INV-18, BUG-10', values: [true, false] },
  arm64MemfaultAll: { series: 'memfault-2023', source: 'OQ-6', values: [true, false] },
  memfaultLength: { series: 'memfault-2023', source: 'OQ-11, INV-20', values: ['page', 'mapping'] },
  resetExitReasonOnEntry: { series: 'memfault-2023', source: 'OQ-12, INV-15', values: [true, false] },
  fastGupReadOnly: { series: 'exit-on-missing', source: 'S3/p03, INV-23', values: [true, false] },
  unmapStrategy: {
    series: 'arm64-unmap',
    source: 'OQ-9, INV-6',
    values: ['slow', 'fast-disconnect', 'deferred-range'],
  },
  s2fwb: { series: 'arm64-unmap', source: 'FEAT_S2FWB, INV-4', values: [true, false] },
  tlbiRange: { series: 'arm64-unmap', source: 'FEAT_TLBIRANGE, INV-7', values: [true, false] },
  s1FlushOnS2Invalidate: { series: 'arm64-unmap', source: 'BUG-15 (metric)', values: [true, false] },
};

export const OPTION_NAMES = Object.keys(DEFAULT_OPTIONS) as OptionName[];

/** Which semantics a run uses: the enabled series and the options. Plain data (it goes into replay files). */
export interface ModelConfig {
  readonly series: readonly SeriesName[];
  readonly options: SeriesOptions;
  /** Recorded deviations of the platform being checked (model/platform.ts); absent: upstream. */
  readonly platform?: readonly DeviationId[];
}

export const UPSTREAM_CONFIG: ModelConfig = { series: [], options: DEFAULT_OPTIONS };

export const seriesOn = (config: ModelConfig, name: SeriesName): boolean => config.series.includes(name);

export const isOptionName = (name: string): name is OptionName => Object.hasOwn(OPTION_INFO, name);

/** Parse `name=value` against the option's allowed values; an error message on bad input. */
export function parseOption(text: string): [OptionName, string | boolean] | string {
  const eq = text.indexOf('=');
  if (eq <= 0) return `option "${text.slice(0, 40)}" is not name=value`;
  const name = text.slice(0, eq);
  const raw = text.slice(eq + 1);
  // An own-property check: `constructor=x` or `__proto__=x` is an unknown name, not Object's member.
  if (!isOptionName(name)) return `unknown option "${name.slice(0, 40)}" (known: ${OPTION_NAMES.join(', ')})`;
  const info = OPTION_INFO[name];
  const value = raw === 'true' ? true : raw === 'false' ? false : raw;
  if (!info.values.includes(value))
    return `option ${name} must be one of ${info.values.join(', ')} (got "${raw.slice(0, 40)}")`;
  return [name, value];
}

export function makeConfig(
  series: readonly SeriesName[],
  overrides: Partial<SeriesOptions> = {},
  platform: readonly DeviationId[] = [],
): ModelConfig {
  const ordered = SERIES_NAMES.filter((n) => series.includes(n));
  return {
    series: ordered,
    options: { ...DEFAULT_OPTIONS, ...overrides },
    ...(platform.length ? { platform: [...platform].sort() } : {}),
  };
}

export function describeConfig(config: ModelConfig): string {
  const changed = OPTION_NAMES.filter((n) => config.options[n] !== DEFAULT_OPTIONS[n]).map(
    (n) => `${n}=${String(config.options[n])}`,
  );
  const series = config.series.length ? config.series.join(',') : 'none (upstream)';
  const platform = config.platform?.length ? `; platform deviations ${config.platform.join(', ')}` : '';
  return `series ${series}${changed.length ? `; options ${changed.join(' ')}` : ''}${platform}`;
}
