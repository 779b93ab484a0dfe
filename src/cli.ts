// The `kvm-memmodel` command. Exit codes: 0 success, 1 an invariant failed (check, replay) or a
// mutant survived (mutants), 2 bad input (one line on stderr, never a stack trace), 4 the requested
// backend cannot run on this machine (skipped: never a pass), 70 an internal error (a bug).
import { availableParallelism } from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { ARCHES, type Arch } from '../model/abi.js';
import {
  INVARIANTS,
  INVARIANT_IDS,
  applicabilityError,
  applicableInvariants,
  type InvariantId,
} from '../properties/invariants.js';
import { MUTANTS, MUTANT_NAMES, type MutantName } from './mmu/mutant-registry.js';
import { formatCoverage, formatSteps, formatSummary, formatViolation, type Style } from './harness/report.js';
import {
  applicableReplayInvariants,
  readReplay,
  replayFileName,
  runReplay,
  writeReplay,
  type ReplayFile,
  type RunSettings,
} from './harness/replay.js';
import { isKvmMutantName, settingsError } from './harness/settings-check.js';
import { InputError, errnoWords } from './util/errors.js';
import {
  DEFAULT_CONCURRENT_RUNS,
  DEFAULT_CONCURRENT_SHARE,
  DEFAULT_KVM_CONCURRENT_RUNS,
  DEFAULT_KVM_RUNS,
  DEFAULT_MAX_COMMANDS,
  DEFAULT_RUNS,
  SHARE_THREADS,
  VMM_SHARE_EVERY,
} from './harness/budgets.js';
import {
  formatConcurrentSummary,
  runConcurrentCampaignInterruptible,
  type ConcurrentCampaignResult,
} from './harness/concurrent-campaign.js';
import { formatThreads } from './harness/concurrent-report.js';
import {
  DEFAULT_REPLAY_ATTEMPTS,
  KERNEL_CONCURRENT_INVARIANTS,
  formatLeftOutCases,
  runKernelConcurrentCampaign,
} from './harness/kernel-concurrent.js';
import { renderTimelineSvg, writeTimeline } from './harness/timeline.js';
import {
  runCampaignInterruptible,
  type CampaignConfig,
  type CampaignResult,
  type Failure,
  type GeneratorProfile,
  type Progress,
} from './harness/runner.js';
import { formatKillMatrix, runKillMatrixInterruptible, type KillRow } from './harness/kill-matrix.js';
import { MAX_WORKERS, runCampaignInWorkers } from './harness/workers.js';
import { SIGNAL_EXIT, installInterrupt, type Interrupt } from './harness/interrupt.js';
import { interruptedLine, reportHelperDeaths } from './harness/helper-deaths.js';
import { KvmBackend, LEFT_OUT, type KvmMutant } from './kvm/backend.js';
import { loadProfile, type PlatformProfile } from './kvm/platform.js';
import { exportC, exportTitle } from './kvm/export-c.js';
import { exportConcurrentC } from './kvm/export-c-concurrent.js';
import { CASES, NOT_ENCODED } from '../conformance/cases.js';
import { failures, formatVerdict, runOnKernel, specOutcomes } from '../conformance/runner.js';
import { MAX_SEQUENCE_COMMANDS } from '../model/command-schema.js';
import {
  archList,
  backendArg,
  profileArg,
  invariantList,
  isKvmMutant,
  maxCommandsArg,
  mutantArg,
  optionArg,
  runsArg,
  seedArg,
  attemptsArg,
  seriesList,
  threadsArg,
  workersArg,
} from './cli-args.js';
import { escapeLine, escapeText, excerpt } from './util/escape.js';
import { checkOutputDir, checkOutputFile, sameFile, writeFileAtomic } from './util/output-path.js';
import {
  DEFAULT_OPTIONS,
  OPTION_INFO,
  OPTION_NAMES,
  SERIES,
  SERIES_NAMES,
  describeConfig,
  makeConfig,
  type ModelConfig,
  type SeriesName,
  type SeriesOptions,
} from '../model/series.js';

const style: Style = { color: process.stdout.isTTY === true && !process.env.NO_COLOR };

function progressBar(enabled: boolean): {
  update: (label: string, value: number, total: number) => void;
  stop: () => void;
} {
  if (!enabled || !process.stderr.isTTY) return { update: () => {}, stop: () => {} };
  const bar = new SingleBar({
    format: '  {label} [{bar}] {value}/{total} runs',
    stream: process.stderr,
    hideCursor: true,
    clearOnComplete: true,
  });
  let started = false;
  return {
    update(label, value, total) {
      if (!started) {
        bar.start(total, value, { label });
        started = true;
      }
      bar.setTotal(total);
      bar.update(value, { label });
    },
    stop: () => started && bar.stop(),
  };
}

interface CheckOptions {
  seed?: number;
  runs?: number;
  arch?: Arch[];
  invariant?: InvariantId[];
  mutant?: MutantName | KvmMutant;
  maxCommands: number;
  replayDir: string;
  progress: boolean;
  coverage: boolean;
  series: SeriesName[];
  option?: Partial<SeriesOptions>;
  backend: 'model' | 'kvm';
  platform?: string;
  threads?: number;
  workers?: number;
  profile: GeneratorProfile;
}

/** A check's options resolved and validated: everything the campaign and its report need. */
interface CheckPlan {
  readonly opts: CheckOptions;
  readonly kvm: boolean;
  readonly profile: PlatformProfile | null;
  readonly config: Omit<CampaignConfig, 'kernel' | 'model'> & { readonly model: ModelConfig };
  readonly settings: RunSettings;
  /** Invariants left out because they cannot apply here (a series that is off, another arch or backend). */
  readonly skipped: number;
  /** Worker threads of the sequential campaign (1: in this process). */
  readonly workers: number;
}

/** Validate the flags against each other and resolve the defaults; bad input is an InputError. */
function resolveCheck(opts: CheckOptions): CheckPlan {
  const kvm = opts.backend === 'kvm';
  if (isKvmMutant(opts.mutant) && !kvm)
    throw new InputError(`mutant ${opts.mutant} mutates the kvm backend's adaptor: add --backend kvm`);
  if (opts.platform !== undefined && !kvm)
    throw new InputError('--platform applies to the kvm backend: add --backend kvm');
  if (kvm && opts.arch?.some((a) => a !== 'x86'))
    throw new InputError('--backend kvm drives x86_64 guests: use --arch x86 (or leave --arch out)');
  const kernelThreads = kvm && (opts.threads ?? 1) >= 2;
  // The kernel's concurrent campaign runs no engine, so an engine mutant would be silently ignored.
  if (kernelThreads && opts.mutant && !isKvmMutant(opts.mutant))
    throw new InputError(
      `mutant ${opts.mutant} mutates the engine, which check --threads --backend kvm does not run ` +
        '(drop --backend kvm, or --threads for the sequential kvm check)',
    );
  // One kvm helper serves one process; sharing it between threads would serialise them anyway.
  if (kvm && (opts.workers ?? 1) >= 2)
    throw new InputError('--backend kvm runs in one process (one kvm helper): drop --workers or use --workers 1');
  if (kvm && opts.series.length)
    throw new InputError('--backend kvm runs the upstream subset; proposed series are model-only (drop --series)');
  checkOutputDir(opts.replayDir, '--replay-dir');
  const profile = opts.platform !== undefined ? loadProfile(opts.platform) : null;
  const seed = opts.seed ?? (Date.now() ^ (process.pid << 8)) | 0;
  const concurrentOnly = (opts.threads ?? 1) >= 2;
  const runs =
    opts.runs ??
    (kernelThreads
      ? DEFAULT_KVM_CONCURRENT_RUNS
      : kvm
        ? DEFAULT_KVM_RUNS
        : concurrentOnly
          ? DEFAULT_CONCURRENT_RUNS
          : DEFAULT_RUNS);
  const arches: Arch[] = opts.arch ?? (kvm ? ['x86'] : [...ARCHES]);
  const named = opts.invariant ?? [...INVARIANT_IDS];
  const model = makeConfig(opts.series, opts.option ?? {}, profile?.deviations.map((d) => d.id) ?? []);
  const backend = kvm ? ('kvm' as const) : ('model' as const);
  const setting = { ...model, arches, backend };
  const inapplicable = applicabilityError(opts.invariant ?? [], setting);
  if (inapplicable) throw new InputError(inapplicable);
  const contradiction = settingsError({ mutant: opts.mutant ?? null, model, arches, backend });
  if (contradiction) throw new InputError(contradiction);
  // What will run: the header, the replay file and the settings hash all name only these.
  const applicable = applicableInvariants(new Set(named), setting).map((inv) => inv.id);
  // On the kernel's threads only the kernel's results are judged (the engine does not run).
  const invariants = kernelThreads ? applicable.filter((id) => KERNEL_CONCURRENT_INVARIANTS.includes(id)) : applicable;
  if (kernelThreads && invariants.length === 0)
    throw new InputError(
      `check --threads --backend kvm checks only ${KERNEL_CONCURRENT_INVARIANTS.join(' and ')}: name one of them`,
    );
  const mutant = opts.mutant && !isKvmMutant(opts.mutant) ? opts.mutant : null;
  if (concurrentOnly && opts.profile !== 'default')
    throw new InputError('--profile shapes the sequential campaign: drop --threads (or --profile)');
  // The kvm helper's guest maps only the first 4 GiB (src/kvm/native/kvm-ops.c), and vmm machines
  // have RAM above it: the kernel would fault where spec and engine exit to MMIO.
  if (kvm && opts.profile === 'vmm')
    throw new InputError(
      '--profile vmm needs guest accesses above 4 GiB, which the kvm helper guest does not map: drop --backend kvm',
    );
  const runsLike = kvm && opts.profile === 'default' ? ('small' as const) : opts.profile;
  const config = { arches, seed, runs, maxCommands: opts.maxCommands, invariants, mutant, model, profile: runsLike };
  const threads = concurrentOnly ? { threads: opts.threads } : {};
  const profileSetting = opts.profile !== 'default' ? { profile: opts.profile } : {};
  const settings: RunSettings = { ...config, mutant: opts.mutant ?? null, backend, ...threads, ...profileSetting };
  const workers = kvm ? 1 : Math.min(opts.workers ?? availableParallelism(), MAX_WORKERS);
  return { opts, kvm, profile, config, settings, skipped: named.length - invariants.length, workers };
}

/** The kvm backend for a check, or the exit code 4 when this machine cannot run it (skipped). */
function openKernel(plan: CheckPlan): CampaignConfig['kernel'] | number {
  if (!plan.kvm) return undefined;
  const backend = KvmBackend.open(isKvmMutant(plan.opts.mutant) ? plan.opts.mutant : null);
  if ('skipped' in backend) {
    console.log(`SKIPPED kvm backend: ${backend.skipped} (nothing was checked against a real kernel)`);
    return 4;
  }
  return { backend, profile: plan.profile };
}

function printCheckHeader(plan: CheckPlan, kernel: CampaignConfig['kernel']): void {
  const { config, opts, profile } = plan;
  const target = opts.mutant ? `mutant ${opts.mutant}` : kernel ? 'the engine and the real kernel' : 'the engine';
  console.log(
    `kvm-memmodel check: ${config.runs} runs per arch (${config.arches.join(', ')}), ` +
      `up to ${config.maxCommands} commands each, against ${target}`,
  );
  console.log(`  ${describeConfig(config.model)}`);
  if (kernel) {
    const deviations = profile ? `${profile.name} (${profile.deviations.map((d) => d.id).join(', ')})` : null;
    console.log(
      `  kvm backend: /dev/kvm, ${kernel.backend.addressSpaces} address space(s); ` +
        `platform profile ${deviations ?? 'none: every difference from upstream fails'}`,
    );
  }
  const skipped = plan.skipped ? ` (${plan.skipped} more skipped: they do not apply to this configuration)` : '';
  console.log(`  invariants: ${config.invariants.join(', ')}${skipped}`);
}

/** The campaign with a progress bar; SIGINT/SIGTERM stop it at the next run boundary (harness/interrupt.ts). */
async function runWithProgress(
  config: CampaignConfig,
  progress: boolean,
  interrupt: Interrupt,
  workers: number,
): Promise<CampaignResult> {
  const bar = progressBar(progress);
  try {
    const update = (p: Progress): void => bar.update(`${p.arch}${p.shrinking ? ' (shrinking)' : ''}`, p.run, p.total);
    // The same result either way (harness/workers.ts); one worker needs no thread.
    if (workers >= 2) return await runCampaignInWorkers(config, workers, interrupt, update);
    return await runCampaignInterruptible(config, interrupt, update);
  } finally {
    bar.stop();
  }
}

/** What the kvm backend did, and which commands it left out for the kernel and why. */
function printKernelSummary(result: CampaignResult, kernel: NonNullable<CampaignConfig['kernel']>): void {
  console.log(
    `  kvm backend: ${kernel.backend.sequences} sequences ran in fresh VMs; ` +
      `helper restarts ${kernel.backend.restarts}` +
      `; sequences run again after a helper death ${kernel.backend.retries}`,
  );
  const leftOut = [...result.coverage.counts].filter(([k]) => k.startsWith('left out '));
  for (const [key, why] of Object.entries(LEFT_OUT)) {
    if (key === 'series') continue;
    const n = leftOut.filter(([k]) => k.endsWith(`: ${key}`)).reduce((a, [, v]) => a + v, 0);
    const generatorLevel = key === 'race' || (key === 'hugetlb' && !kernel.backend.canHugetlb);
    if (n || generatorLevel)
      console.log(
        `  left out for the kernel${generatorLevel ? ' (not generated)' : ''}: ${n ? `${n} commands, ` : ''}${why}`,
      );
  }
}

/** The flags that re-run the same campaign (check --seed ...). */
function rerunFlags(plan: CheckPlan, arch: Arch): string {
  const { opts, config } = plan;
  const model = config.model;
  const series = model.series.length ? ` --series ${model.series.join(',')}` : '';
  const options = OPTION_NAMES.filter((n) => model.options[n] !== DEFAULT_OPTIONS[n])
    .map((n) => ` --option ${n}=${String(model.options[n])}`)
    .join('');
  const invariants = opts.invariant ? ` --invariant ${config.invariants.join(',')}` : '';
  const platform = opts.platform !== undefined ? ` --platform ${escapeText(opts.platform)}` : '';
  const kernel = plan.kvm ? ` --backend kvm${platform}` : '';
  const mutant = opts.mutant ? ` --mutant ${opts.mutant}` : '';
  // The sequence length shapes what is generated; the run budget only how long the search goes on.
  const length = config.maxCommands !== DEFAULT_MAX_COMMANDS ? ` --max-commands ${config.maxCommands}` : '';
  const threads = plan.settings.threads ? ` --threads ${plan.settings.threads}` : '';
  const profile = opts.profile !== 'default' ? ` --profile ${opts.profile}` : '';
  const shape = `${length}${threads}${profile}`;
  return `--seed ${config.seed} --arch ${arch}${kernel}${series}${options}${invariants}${mutant}${shape}`;
}

/** Write the shrunk counterexample as a replay file and print it with how to re-run it. */
function reportFailure(f: Failure, plan: CheckPlan): void {
  const file = replayFileName(plan.opts.replayDir, f, plan.settings);
  // settings.mutant, not config.mutant: a kvm adaptor mutant is recorded so replay opens the backend with it.
  const mutant = plan.opts.mutant ?? null;
  writeReplay(file, f, mutant, plan.config.invariants, plan.config.model, plan.settings.backend);
  const shown = escapeText(file);
  console.log('');
  console.log(formatViolation(f.invariant, f.messages, style));
  console.log(
    `  arch ${f.arch}; found after ${f.runsToFailure} runs, shrunk ${f.shrinks} times to ${f.steps.length} commands:`,
  );
  console.log(formatSteps(f.steps, style));
  console.log(`  replay file: ${shown}`);
  console.log(`  re-run: kvm-memmodel replay ${shown}    (or: kvm-memmodel check ${rerunFlags(plan, f.arch)})`);
  if (f.invariant === 'kernel-agrees') {
    console.log(`  C reproducer: kvm-memmodel export --c repro.c ${shown} && gcc -o repro repro.c && ./repro`);
    console.log(
      '  if this is how this platform behaves, record it as a deviation in a platform profile (docs/PLATFORMS.md)',
    );
  }
}

/**
 * The concurrent part of a check with its progress bar (--threads N, or the default check's share);
 * a signal stops it at the next case, as it stops the sequential part.
 */
async function runConcurrentPart(
  plan: CheckPlan,
  threads: readonly number[],
  runs: number,
  interrupt: Interrupt,
): Promise<ConcurrentCampaignResult> {
  const bar = progressBar(plan.opts.progress);
  try {
    const update = (p: Progress): void =>
      bar.update(`${p.arch} concurrent${p.shrinking ? ' (shrinking)' : ''}`, p.run, p.total);
    return await runConcurrentCampaignInterruptible({ ...plan.config, runs, threads }, interrupt, update);
  } finally {
    bar.stop();
  }
}

/** The INTERRUPTED line of a concurrent part a signal stopped (it found nothing, or it would have returned). */
const concurrentInterruptedLine = (result: ConcurrentCampaignResult, signal: string): string =>
  `INTERRUPTED by ${signal} after ${result.summary.cases} concurrent cases ` +
  `(${result.summary.commands} commands): nothing found so far`;

/** A failing concurrent case: its replay file, the setup as a sequential failure prints, then the threads. */
function reportConcurrentFailure(f: Failure, plan: CheckPlan): void {
  const threads = f.concurrent?.case.threads.length ?? plan.settings.threads;
  const sub = { ...plan, settings: { ...plan.settings, ...(threads ? { threads } : {}) } };
  const file = replayFileName(plan.opts.replayDir, f, sub.settings);
  writeReplay(file, f, plan.opts.mutant ?? null, plan.config.invariants, plan.config.model, plan.settings.backend);
  const shown = escapeText(file);
  console.log('');
  console.log(formatViolation(f.invariant, f.messages, style));
  console.log(`  arch ${f.arch}; found after ${f.runsToFailure} cases, shrunk ${f.shrinks} times; the setup:`);
  // The setup ran sequentially and passed; the failure is in the threads below.
  const setup = formatSteps(f.steps, style).replace('   <-- invariant violated after this command', '');
  console.log(f.concurrent ? setup : formatSteps(f.steps, style));
  if (f.concurrent) {
    console.log(`  then ${f.concurrent.case.threads.length} threads, interleaved:`);
    for (const line of formatThreads(f.concurrent.case, f.concurrent.history, f.concurrent.verdict)) console.log(line);
  }
  console.log(`  replay file: ${shown}`);
  const c = f.concurrent;
  if (c?.history && c.verdict) {
    const svg = renderTimelineSvg(c.history, c.verdict, { roles: c.case.roles, title: `${f.arch} ${f.invariant}` });
    console.log(`  timeline: ${escapeText(writeTimeline(file, svg))}`);
  }
  console.log(`  re-run: kvm-memmodel replay ${shown}    (or: kvm-memmodel check ${rerunFlags(sub, f.arch)})`);
}

/** check --threads N (2..8): a concurrent campaign only, at its own budget. */
async function runConcurrentCheck(plan: CheckPlan, threads: number): Promise<number> {
  if (plan.kvm) return runKernelConcurrentCheck(plan, threads);
  const { config } = plan;
  const arches = config.arches.join(', ');
  const cases = `${config.runs} concurrent cases of ${threads} threads`;
  console.log(`kvm-memmodel check: ${cases} per arch (${arches}), against the engine`);
  console.log(`  ${describeConfig(config.model)}`);
  console.log(`  invariants: ${config.invariants.join(', ')}`);
  const interrupt = installInterrupt();
  const result = await runConcurrentPart(plan, [threads], config.runs, interrupt).finally(interrupt.uninstall);
  console.log(`  ${formatConcurrentSummary(result.summary)}, seed ${config.seed}`);
  const stopped = interrupt.signal();
  if (result.ok && stopped) {
    console.log(concurrentInterruptedLine(result, stopped));
    return SIGNAL_EXIT[stopped];
  }
  if (result.ok) {
    console.log(`PASS no invariant violated in ${result.summary.cases} concurrent cases (seed ${config.seed})`);
    return 0;
  }
  reportConcurrentFailure(result.failure!, plan);
  return stopped ? SIGNAL_EXIT[stopped] : 1;
}

/** check --threads N --backend kvm: the concurrent cases on /dev/kvm (harness/kernel-concurrent.ts). */
async function runKernelConcurrentCheck(plan: CheckPlan, threads: number): Promise<number> {
  const kernel = openKernel(plan);
  if (typeof kernel === 'number') return kernel;
  if (!kernel) throw new Error('harness bug: a kernel check without the kvm backend');
  const { config } = plan;
  console.log(`kvm-memmodel check: ${config.runs} concurrent cases of ${threads} threads (x86), on the real kernel`);
  printKernelLines(plan, kernel);
  const interrupt = installInterrupt();
  const bar = progressBar(plan.opts.progress);
  const update = (p: Progress): void =>
    bar.update(`kvm concurrent${p.shrinking ? ' (shrinking)' : ''}`, p.run, p.total);
  const campaign = { ...config, threads: [threads], backend: kernel.backend };
  const result = await runKernelConcurrentCampaign(campaign, interrupt, update).finally(() => {
    bar.stop();
    interrupt.uninstall();
    kernel.backend.close();
  });
  const s = result.summary;
  console.log(`  ${formatConcurrentSummary(s)}, seed ${config.seed}`);
  const backend = kernel.backend;
  console.log(
    `  kvm backend: ${backend.sequences} cases ran in fresh VMs; helper restarts ${backend.restarts}; ` +
      `cases run again after a helper death ${backend.retries}`,
  );
  for (const line of formatLeftOutCases(s)) console.log(`  ${line}`);
  const deaths = reportHelperDeaths(result, { replayDir: plan.opts.replayDir, settings: plan.settings });
  for (const line of deaths) console.log(line);
  const stopped = interrupt.signal();
  const tallied = { runs: s.cases, commands: s.commands, failure: result.failure, helperDeaths: result.helperDeaths };
  if (stopped) console.log(interruptedLine(tallied, stopped));
  const exitCode = (code: number): number => (stopped ? SIGNAL_EXIT[stopped] : code);
  if (result.failure) {
    reportConcurrentFailure(result.failure, plan);
    return exitCode(1);
  }
  if (!stopped && deaths.length)
    console.log(
      `FAIL ${result.helperDeaths.length} kvm helper death finding(s) in ${s.cases} cases (seed ${config.seed})`,
    );
  else if (!stopped)
    console.log(`PASS no invariant violated in ${s.cases} concurrent cases on the kernel (seed ${config.seed})`);
  return exitCode(deaths.length ? 1 : 0);
}

/** The model and platform lines of a kernel check's header. */
function printKernelLines(plan: CheckPlan, kernel: NonNullable<CampaignConfig['kernel']>): void {
  const { config, profile } = plan;
  console.log(`  ${describeConfig(config.model)}`);
  const deviations = profile ? `${profile.name} (${profile.deviations.map((d) => d.id).join(', ')})` : null;
  console.log(
    `  kvm backend: /dev/kvm, ${kernel.backend.addressSpaces} address space(s); ` +
      `platform profile ${deviations ?? 'none: every difference from upstream fails'}`,
  );
  console.log(`  invariants: ${config.invariants.join(', ')}`);
}

/**
 * The default check's concurrent share (SHARE_THREADS, DEFAULT_CONCURRENT_SHARE cases each): null
 * if it passed, else the exit code (1 for a failure, 130/143 when a signal stopped it).
 */
async function runConcurrentShare(plan: CheckPlan, interrupt: Interrupt): Promise<number | null> {
  const runs = Math.min(DEFAULT_CONCURRENT_SHARE, plan.config.runs);
  const result = await runConcurrentPart(plan, SHARE_THREADS, runs, interrupt);
  console.log(`  concurrent share: ${formatConcurrentSummary(result.summary)}`);
  const stopped = interrupt.signal();
  if (result.ok && stopped) console.log(concurrentInterruptedLine(result, stopped));
  if (!result.ok) reportConcurrentFailure(result.failure!, plan);
  if (stopped) return SIGNAL_EXIT[stopped];
  return result.ok ? null : 1;
}

async function runCheck(opts: CheckOptions): Promise<number> {
  const plan = resolveCheck(opts);
  if ((opts.threads ?? 1) >= 2) return runConcurrentCheck(plan, opts.threads!);
  return runSequentialCheck(plan);
}

async function runSequentialCheck(plan: CheckPlan): Promise<number> {
  const kernel = openKernel(plan);
  if (typeof kernel === 'number') return kernel;
  printCheckHeader(plan, kernel);
  const interrupt = installInterrupt();
  try {
    return await runSequentialCheckUnder(plan, kernel, interrupt);
  } finally {
    interrupt.uninstall();
  }
}

/** The sequential check, then (in the default check) the concurrent share, both stopped by `interrupt`. */
async function runSequentialCheckUnder(
  plan: CheckPlan,
  kernel: CampaignConfig['kernel'],
  interrupt: Interrupt,
): Promise<number> {
  const opts = plan.opts;
  const result = await runWithProgress({ ...plan.config, kernel }, opts.progress, interrupt, plan.workers);
  console.log(`  ${formatSummary(result, plan.config.seed)}`);
  if (kernel) {
    kernel.backend.close();
    printKernelSummary(result, kernel);
  }
  if (opts.coverage || result.ok) console.log(`  exercised:\n${formatCoverage(result.coverage)}`);
  // Helper-death findings (exit 1) and an interrupt (exit 130/143): harness/helper-deaths.ts, interrupt.ts.
  const deaths = reportHelperDeaths(result, { replayDir: opts.replayDir, settings: plan.settings });
  for (const line of deaths) console.log(line);
  const stopped = interrupt.signal();
  if (stopped) console.log(interruptedLine(result, stopped));
  const exitCode = (code: number): number => (stopped ? SIGNAL_EXIT[stopped] : deaths.length ? 1 : code);
  // The concurrent share runs in the default check only (not --threads 1, not the kernel backend).
  const shareRuns = result.ok && !stopped && !kernel && opts.threads === undefined;
  const share = shareRuns ? await runConcurrentShare(plan, interrupt) : null;
  if (share !== null) return exitCode(share);
  if (result.ok) {
    const seed = plan.config.seed;
    if (!stopped && !deaths.length)
      console.log(`PASS no invariant violated in ${result.runs} runs (seed ${seed}; re-run with --seed ${seed})`);
    // The verdict line of a campaign whose only findings are helper deaths (each listed above).
    if (!stopped && deaths.length)
      console.log(
        `FAIL ${result.helperDeaths.length} kvm helper death finding(s) in ${result.runs} runs (seed ${seed})`,
      );
    return exitCode(0);
  }
  if (!result.failure) throw new Error('the campaign failed without a counterexample');
  reportFailure(result.failure, plan);
  return exitCode(1);
}

function runConformance(backendName: 'model' | 'kvm', platform?: string): number {
  const profile = platform !== undefined ? loadProfile(platform) : null;
  // A profile explains a kernel's differences; without the kernel it would be silently ignored.
  if (profile && backendName !== 'kvm')
    throw new InputError('--platform applies to the kvm backend: add --backend kvm');
  let backend: KvmBackend | undefined;
  if (backendName === 'kvm') {
    const opened = KvmBackend.open();
    if ('skipped' in opened) {
      console.log(`SKIPPED kvm backend: ${opened.skipped}`);
      return 4;
    }
    backend = opened;
  }
  let failed = 0;
  for (const c of CASES) {
    const specFailures = failures(c, specOutcomes(c, makeConfig(c.series ?? [])));
    const verdict = backend ? runOnKernel(c, backend, profile) : undefined;
    const bad = specFailures.length > 0 || verdict?.kind === 'fails';
    if (bad) failed++;
    console.log(`${bad ? 'FAIL' : 'ok  '} ${c.name}  (${c.source})`);
    if (specFailures.length) console.log(`       SPEC FAILS: ${specFailures.join('; ')}`);
    if (verdict) console.log(`       ${formatVerdict(verdict)}`);
  }
  for (const n of NOT_ENCODED) console.log(`skip ${n.source}\n       not encoded: ${n.why}`);
  backend?.close();
  console.log(
    `${CASES.length - failed} of ${CASES.length} cases pass` +
      (backend ? ' (spec and kernel)' : ' (spec only; --backend kvm adds the kernel)'),
  );
  return failed ? 1 : 0;
}

function runReplayCommand(file: string, attempts?: number): number {
  const replay = readReplay(file);
  const kernelThreads = replay.concurrent !== undefined && replay.backend === 'kvm';
  if (attempts !== undefined && !kernelThreads)
    throw new InputError(
      '--attempts applies to a concurrent replay of the kvm backend (check --threads N --backend kvm)',
    );
  const { dropped } = applicableReplayInvariants(replay);
  console.log(
    `kvm-memmodel replay: ${replay.commands.length} commands, arch ${replay.arch}` +
      `${replay.mutant ? `, mutant ${replay.mutant}` : ''}; ${describeConfig(replay.model)}` +
      (replay.backend === 'kvm' ? '; with the real kernel' : ''),
  );
  if (dropped.length) console.log(`  not run (they do not apply to this replay): ${dropped.join(', ')}`);
  let kernel: CampaignConfig['kernel'];
  if (replay.backend === 'kvm') {
    const backend = KvmBackend.open(isKvmMutantName(replay.mutant) ? replay.mutant : null);
    if ('skipped' in backend) {
      console.log(`SKIPPED this replay needs the kvm backend: ${backend.skipped}`);
      return 4;
    }
    kernel = { backend, profile: null };
  }
  const result = runReplay(replay, kernel, undefined, attempts);
  kernel?.backend.close();
  const tried = result.attempts;
  if (tried) console.log(`  ran the case ${tried.runs} times on the kernel: ${tried.failed} failed`);
  const c = result.concurrent;
  const threads = c?.case ? formatThreads(c.case, c.history, c.verdict) : [];
  if (!result.violation) {
    console.log(formatSteps(result.steps, style).replace('   <-- invariant violated after this command', ''));
    for (const line of threads) console.log(line);
    console.log(`PASS the recorded failure (${replay.failure.invariant}) no longer reproduces`);
    return 0;
  }
  console.log(formatViolation(result.violation.invariant, result.violation.messages, style));
  const steps = formatSteps(result.steps, style);
  // A concurrent case's setup passed; its failure is in the threads printed after it.
  console.log(c ? steps.replace('   <-- invariant violated after this command', '') : steps);
  for (const line of threads) console.log(line);
  const same = result.violation.invariant === replay.failure.invariant;
  console.log(
    same
      ? 'reproduced: the same invariant fails as recorded'
      : `reproduced a different failure than recorded (${replay.failure.invariant})`,
  );
  return 1;
}

function runExport(replayFile: string, out: string): number {
  const replay = readReplay(replayFile);
  checkOutputFile(out, '--c');
  if (sameFile(out, replayFile))
    throw new InputError(`--c ${escapeText(out)} is the replay file itself (it would be overwritten)`);
  if (replay.concurrent) return runConcurrentExport(replay, replayFile, out);
  const source = exportC(replay, exportTitle(replayFile, replay.failure.invariant));
  writeFileAtomic(out, source);
  const shown = escapeText(out);
  console.log(
    `wrote ${shown}: ${replay.commands.length} steps checked against the spec (${describeConfig(replay.model)})`,
  );
  console.log(
    `  build and run: gcc -O2 -o repro ${shown} && ./repro    (exit 0: matches the spec, 1: differs, 77: no /dev/kvm)`,
  );
  return 0;
}

/** export --c of a concurrent replay: its threads in a repeat-until-seen loop (kvm/export-c-concurrent.ts). */
function runConcurrentExport(replay: ReplayFile, replayFile: string, out: string): number {
  const c = replay.concurrent!;
  const title = exportTitle(replayFile, replay.failure.invariant);
  const source = { arch: replay.arch, case: c, model: replay.model, mutant: replay.mutant, failure: replay.failure };
  writeFileAtomic(out, exportConcurrentC(source, title));
  const shown = escapeText(out);
  const commands = c.threads.reduce((n, l) => n + l.length, 0);
  console.log(
    `wrote ${shown}: the setup (${c.setup.length} steps), then ${c.threads.length} threads (${commands} commands) ` +
      `run until their results match no order the spec allows (${describeConfig(replay.model)})`,
  );
  console.log(
    `  build and run: gcc -O2 -pthread -o repro ${shown} && ./repro [ATTEMPTS]    ` +
      '(exit 0: not seen, 1: seen, 77: no /dev/kvm)',
  );
  return 0;
}

interface MutantsOptions {
  list: boolean;
  runs: number;
  seed: number;
  progress: boolean;
}

function listMutants(): void {
  for (const m of MUTANTS) {
    const series = m.series ? ` [${m.series.join(',')}]` : '';
    console.log(`${m.name.padEnd(36)} ${m.source}${series}\n${' '.repeat(37)}${m.description}`);
  }
}

/** The kill matrix, one mutant at a time so the progress bar can count them; SIGINT/SIGTERM stop it between runs. */
async function runMutants(opts: MutantsOptions): Promise<number> {
  if (opts.list) {
    listMutants();
    return 0;
  }
  const bar = progressBar(opts.progress);
  const budget = { runs: opts.runs, seed: opts.seed, maxCommands: DEFAULT_MAX_COMMANDS };
  const interrupt = installInterrupt();
  const rows: KillRow[] = [];
  try {
    for (const [i, name] of MUTANT_NAMES.entries()) {
      if (interrupt.signal()) break;
      bar.update(name, i, MUTANT_NAMES.length);
      rows.push(...(await runKillMatrixInterruptible([name], budget, interrupt)));
    }
  } finally {
    bar.stop();
    interrupt.uninstall();
  }
  console.log(formatKillMatrix(rows));
  const stopped = interrupt.signal();
  if (stopped) console.log(`INTERRUPTED by ${stopped} after ${rows.length} of ${MUTANT_NAMES.length} mutants`);
  return stopped ? SIGNAL_EXIT[stopped] : rows.every((r) => r.killed) ? 0 : 1;
}

export function buildProgram(): Command {
  const program = new Command('kvm-memmodel')
    .description(
      'Property-based verification harness for the Linux KVM guest-memory model:\n' +
        'spec vs optimized MMU engine, invariants after every command, shrunk counterexamples.',
    )
    .showSuggestionAfterError(true)
    .exitOverride();

  program
    .command('check')
    .description(
      'run a campaign: random command sequences through spec and engine, all invariants checked after every command',
    )
    .addOption(
      new Option('--seed <n>', 'seed of the campaign (default: random, printed so the run can be repeated)').argParser(
        seedArg,
      ),
    )
    .addOption(
      new Option(
        '--runs <n>',
        `runs (sequences; concurrent cases with --threads 2..8) per architecture (default: ${DEFAULT_RUNS}, ` +
          `${DEFAULT_CONCURRENT_RUNS} with --threads, ${DEFAULT_KVM_RUNS} with --backend kvm, ` +
          `${DEFAULT_KVM_CONCURRENT_RUNS} with both)`,
      ).argParser(runsArg),
    )
    .addOption(
      new Option(
        '--threads <n>',
        `1: the sequential campaign only; 2..8: a concurrent campaign of n threads (${DEFAULT_CONCURRENT_RUNS} ` +
          `cases per arch by default); without it check also runs ${DEFAULT_CONCURRENT_SHARE} concurrent cases ` +
          `per arch of ${SHARE_THREADS.join(' and ')} threads`,
      ).argParser(threadsArg),
    )
    .addOption(
      new Option(
        '--workers <n>',
        `worker threads for the sequential campaign, 1..${MAX_WORKERS} (default: the number of cores); the ` +
          'result is the same for every n; the concurrent part and --backend kvm run in one thread',
      ).argParser(workersArg),
    )
    .addOption(
      new Option(
        '--arch <arch>',
        'architecture profile: x86, arm64 or all (default: all; x86 with --backend kvm)',
      ).argParser(archList),
    )
    .addOption(
      new Option('--backend <name>', 'model: spec and engine; kvm: spec, engine and the real kernel through /dev/kvm')
        .argParser(backendArg)
        .default('model'),
    )
    .option(
      '--platform <name>',
      'platform profile (a name under platforms/ or a JSON file) whose recorded deviations the spec applies',
    )
    .addOption(
      new Option(
        '--invariant <ids>',
        `comma-separated invariants to check (default: all): ${INVARIANT_IDS.join(', ')}`,
      ).argParser(invariantList),
    )
    .addOption(
      new Option(
        '--mutant <name>',
        'run against a mutant of the engine; a found counterexample means the mutant is killed',
      ).argParser(mutantArg),
    )
    .addOption(
      new Option('--max-commands <n>', `longest command sequence per run (at most ${MAX_SEQUENCE_COMMANDS})`)
        .argParser(maxCommandsArg)
        .default(DEFAULT_MAX_COMMANDS),
    )
    .addOption(
      new Option(
        '--series <names>',
        `proposed series to enable, comma-separated, or all/none: ${SERIES_NAMES.join(', ')}`,
      )
        .argParser(seriesList)
        .default([], 'none (upstream)'),
    )
    .addOption(
      new Option(
        '--option <name=value>',
        'set an open-question option (repeatable; see `kvm-memmodel series`)',
      ).argParser(optionArg),
    )
    .addOption(
      new Option(
        '--profile <name>',
        'what the runs look like: small (small biased states), vmm (real-VMM-sized machines: GiB slots, ' +
          `bursts, migrations, hotplug) or default (small, and one run in ${VMM_SHARE_EVERY} per arch with vmm)`,
      )
        .argParser(profileArg)
        .default('default'),
    )
    .option('--replay-dir <dir>', 'where failing sequences are written', 'replays')
    .option('--no-progress', 'no progress bar')
    .option('--coverage', 'print what the campaign exercised even when it fails', false)
    .action(async (opts) => {
      process.exitCode = await runCheck(opts);
    });

  program
    .command('replay')
    .description('re-run a saved failure exactly; exits 1 if it still fails, 0 if it no longer does')
    .argument('<file>', 'replay file written by check')
    .option(
      '--attempts <n>',
      `a kernel concurrent replay's runs on /dev/kvm (default ${DEFAULT_REPLAY_ATTEMPTS}; ` +
        'its history depends on timing)',
      attemptsArg,
    )
    .action((file: string, opts: { attempts?: number }) => {
      process.exitCode = runReplayCommand(file, opts.attempts);
    });

  program
    .command('conformance')
    .description(
      "run the peer selftests' assertions (conformance/cases.ts) against the spec and, " +
        'with --backend kvm, the real kernel',
    )
    .addOption(
      new Option('--backend <name>', 'model: the spec only; kvm: the spec and the real kernel')
        .argParser(backendArg)
        .default('model'),
    )
    .option('--platform <name>', 'platform profile whose recorded deviations may explain a kernel that differs')
    .action((opts: { backend: 'model' | 'kvm'; platform?: string }) => {
      process.exitCode = runConformance(opts.backend, opts.platform);
    });

  program
    .command('export')
    .description(
      'turn a replay file (of upstream commands) into a standalone C program that replays it on a real kernel ' +
        "and checks the spec's outcomes",
    )
    .requiredOption('--c <file>', 'where to write the C program')
    .argument('<replay>', 'replay file written by check')
    .action((replayFile: string, opts: { c: string }) => {
      process.exitCode = runExport(replayFile, opts.c);
    });

  program
    .command('mutants')
    .description('run every registered mutant and print the kill matrix; exits 1 if any mutant survives')
    .option('--list', 'only list the mutants with their source', false)
    .addOption(
      new Option('--runs <n>', 'run budget per mutant and architecture').argParser(runsArg).default(DEFAULT_RUNS),
    )
    .addOption(new Option('--seed <n>', 'seed for every mutant campaign').argParser(seedArg).default(1))
    .option('--no-progress', 'no progress bar')
    .action(async (opts: MutantsOptions) => {
      process.exitCode = await runMutants(opts);
    });

  program
    .command('series')
    .description('list the proposed series and the open-question options with their defaults')
    .action(() => {
      for (const sr of SERIES) console.log(`${sr.name.padEnd(16)} ${sr.seed.padEnd(9)} ${sr.title}`);
      console.log('\noptions (--option name=value):');
      for (const name of OPTION_NAMES) {
        const info = OPTION_INFO[name];
        console.log(
          `  ${name.padEnd(24)} default ${String(DEFAULT_OPTIONS[name]).padEnd(15)} ` +
            `values ${info.values.join('|').padEnd(34)} ${info.series}; ${info.source}`,
        );
      }
    });

  program
    .command('invariants')
    .description('list the invariants with their statement and source')
    .action(() => {
      for (const inv of INVARIANTS) {
        const series = inv.series ? ` (series ${inv.series.join(', ')})` : '';
        console.log(`${inv.id.padEnd(28)} ${inv.statement}\n${' '.repeat(29)}source: ${inv.source}${series}`);
      }
    });

  return program;
}

/** An error line longer than this is cut (a flag value may be megabytes). */
const MAX_ERROR_LINE = 600;

/** One line for the terminal: commander's messages can quote the user's argument. */
const firstLine = (s: string): string => {
  const line = escapeLine(s.split('\n').find((l) => l.trim() !== '') ?? '');
  return line.length > MAX_ERROR_LINE ? `${line.slice(0, MAX_ERROR_LINE)}...` : line;
};

/** `help <command>` for a command that does not exist is bad input (commander would print the top help). */
function checkHelpTopic(program: Command, args: readonly string[]): void {
  const [first, topic, extra] = args;
  if (first === '--' && topic === undefined)
    throw new InputError('no command given after -- (run kvm-memmodel --help)');
  if (first !== 'help' || topic === undefined) return;
  if (extra !== undefined) throw new InputError(`help takes one command (got "${excerpt(extra, 40)}" after it)`);
  if (!program.commands.some((c) => c.name() === topic))
    throw new InputError(`unknown command "${excerpt(topic, 40)}" (run kvm-memmodel --help)`);
}

/** Flags that may be given more than once (each adds to the last); any other one given twice is an error. */
const REPEATABLE_FLAGS = new Set(['--option']);

/** `--series a --series b` would silently keep only b: refuse a repeated flag instead of guessing. */
function checkRepeatedFlags(args: readonly string[]): void {
  const seen = new Set<string>();
  for (const arg of args) {
    if (arg === '--') return;
    const flag = /^--[a-z][a-z-]*(?==|$)/.exec(arg)?.[0];
    if (!flag || REPEATABLE_FLAGS.has(flag)) continue;
    if (seen.has(flag)) throw new InputError(`${flag} is given twice (give it once; lists are comma-separated)`);
    seen.add(flag);
  }
}

async function parseArgs(argv: readonly string[]): Promise<void> {
  const program = buildProgram();
  const writeErr = (s: string) => process.stderr.write(`${firstLine(s)}\n`);
  program.configureOutput({ writeErr });
  for (const sub of program.commands) sub.exitOverride().configureOutput({ writeErr });
  const args = argv.slice(2);
  if (args.length === 0) throw new InputError('no command given (run kvm-memmodel --help)');
  checkHelpTopic(program, args);
  checkRepeatedFlags(args);
  await program.parseAsync(argv as string[], { from: 'node' });
}

/** An error we did not expect is a bug, not bad input: one line (the stack only with KVM_MEMMODEL_DEBUG=1), exit 70. */
function reportInternal(e: unknown): number {
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`error: internal: ${firstLine(message)} (a bug; KVM_MEMMODEL_DEBUG=1 shows where)\n`);
  if (process.env.KVM_MEMMODEL_DEBUG === '1' && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  return 70;
}

/** 128 + SIGPIPE: what a shell reports for a writer whose reader went away (`| head -1`). */
const EXIT_EPIPE = 141;

/** A failed write to stdout (a closed pipe, a full disk): the environment, not a bug; null for anything else. */
function outputFailure(e: unknown): number | null {
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof Error) || err.syscall !== 'write' || err.code === undefined) return null;
  if (err.code === 'EPIPE') return EXIT_EPIPE;
  try {
    process.stderr.write(`error: cannot write the output: ${errnoWords(err.code)}\n`);
  } catch {
    // stderr is gone too: the exit code is all that is left to say it
  }
  return 2;
}

let outputGuarded = false;
/** Asynchronous stdout errors (a pipe's reader gone) arrive as events, after the write returned. */
function guardOutput(): void {
  if (outputGuarded) return;
  outputGuarded = true;
  process.stdout.on('error', (e) => process.exit(outputFailure(e) ?? reportInternal(e)));
}

/** Run the CLI; the exit code is returned and set on process.exitCode. */
export async function main(argv: readonly string[]): Promise<number> {
  process.exitCode = 0;
  guardOutput();
  try {
    await parseArgs(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      const benign =
        e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version';
      process.exitCode = benign ? 0 : 2;
    } else if (e instanceof InputError) {
      process.stderr.write(`error: ${firstLine(e.message)}\n`);
      process.exitCode = 2;
    } else process.exitCode = outputFailure(e) ?? reportInternal(e);
  }
  return Number(process.exitCode ?? 0);
}
