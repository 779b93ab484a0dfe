// The `kvm-memmodel` command. Exit codes: 0 success, 1 an invariant failed (check, replay) or a
// mutant survived (mutants), 2 bad input (one line on stderr, never a stack trace), 4 the requested
// backend cannot run on this machine (skipped: never a pass).
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { ARCHES, type Arch } from '../model/abi.js';
import {
  applicabilityError,
  INVARIANTS,
  INVARIANT_IDS,
  isInvariantId,
  type InvariantId,
} from '../properties/invariants.js';
import { MUTANTS, MUTANT_NAMES, isMutantName, type MutantName } from './mmu/mutant-registry.js';
import { formatCoverage, formatSteps, formatSummary, formatViolation, type Style } from './harness/report.js';
import { readReplay, runReplay, writeReplay } from './harness/replay.js';
import { InputError } from './util/errors.js';
import { DEFAULT_KVM_RUNS, DEFAULT_MAX_COMMANDS, DEFAULT_RUNS } from './harness/budgets.js';
import { runCampaignInterruptible, type CampaignConfig, type CampaignResult, type Progress } from './harness/runner.js';
import { runKillMatrixInterruptible, formatKillMatrix } from './harness/kill-matrix.js';
import { SIGNAL_EXIT, installInterrupt } from './harness/interrupt.js';
import { interruptedLine, reportHelperDeaths } from './harness/helper-deaths.js';
import { KVM_MUTANTS, KvmBackend, LEFT_OUT, type KvmMutant } from './kvm/backend.js';
import { loadProfile, type PlatformProfile } from './kvm/platform.js';
import { exportC, exportTitle } from './kvm/export-c.js';
import { CASES, NOT_ENCODED } from '../conformance/cases.js';
import { failures, formatVerdict, runOnKernel, specOutcomes } from '../conformance/runner.js';
import { writeFileSync } from 'node:fs';
import {
  DEFAULT_OPTIONS,
  OPTION_INFO,
  OPTION_NAMES,
  SERIES,
  SERIES_NAMES,
  describeConfig,
  isSeriesName,
  makeConfig,
  parseOption,
  type SeriesName,
  type SeriesOptions,
} from '../model/series.js';

const style: Style = { color: process.stdout.isTTY === true && !process.env.NO_COLOR };

function nonNegativeInt(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('must be a non-negative integer.');
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError('is too large.');
  return n;
}

function positiveInt(value: string): number {
  const n = nonNegativeInt(value);
  if (n === 0) throw new InvalidArgumentError('must be at least 1.');
  return n;
}

function seedArg(value: string): number {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError('must be an integer.');
  const n = Number(value);
  if (n < -(2 ** 31) || n >= 2 ** 31) throw new InvalidArgumentError('must fit in 32 bits.');
  return n;
}

function archList(value: string): Arch[] {
  if (value === 'all') return [...ARCHES];
  if ((ARCHES as readonly string[]).includes(value)) return [value as Arch];
  throw new InvalidArgumentError(`must be one of ${ARCHES.join(', ')}, all.`);
}

function invariantList(value: string): InvariantId[] {
  const ids = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = ids.filter((id) => !isInvariantId(id));
  if (unknown.length || ids.length === 0)
    throw new InvalidArgumentError(`unknown invariant "${unknown[0] ?? value}" (known: ${INVARIANT_IDS.join(', ')}).`);
  return ids as InvariantId[];
}

function mutantArg(value: string): MutantName | KvmMutant {
  if ((KVM_MUTANTS as readonly string[]).includes(value)) return value as KvmMutant;
  if (!isMutantName(value))
    throw new InvalidArgumentError(`unknown mutant "${value}" (run \`kvm-memmodel mutants --list\`).`);
  return value;
}

function backendArg(value: string): 'model' | 'kvm' {
  if (value === 'model' || value === 'kvm') return value;
  throw new InvalidArgumentError('must be model (spec and engine) or kvm (spec, engine and the real kernel).');
}

function seriesList(value: string): SeriesName[] {
  if (value === 'all') return [...SERIES_NAMES];
  if (value === 'none') return [];
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = names.find((n) => !isSeriesName(n));
  if (unknown !== undefined || names.length === 0)
    throw new InvalidArgumentError(
      `unknown series "${unknown ?? value}" (known: ${SERIES_NAMES.join(', ')}, all, none).`,
    );
  return names as SeriesName[];
}

function optionArg(value: string, previous: Partial<SeriesOptions> = {}): Partial<SeriesOptions> {
  const parsed = parseOption(value);
  if (typeof parsed === 'string') throw new InvalidArgumentError(`${parsed}.`);
  return { ...previous, [parsed[0]]: parsed[1] };
}

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
}

const isKvmMutant = (m: string | undefined): m is KvmMutant =>
  m !== undefined && (KVM_MUTANTS as readonly string[]).includes(m);

/** The kvm backend for a check, or the exit code when it cannot be used (bad flags: 2, skipped: 4). */
function openKernel(opts: CheckOptions, profile: PlatformProfile | null): CampaignConfig['kernel'] | number {
  if (opts.arch?.some((a) => a !== 'x86')) {
    process.stderr.write('error: --backend kvm drives x86_64 guests: use --arch x86 (or leave --arch out)\n');
    return 2;
  }
  if (opts.series.length) {
    process.stderr.write(
      'error: --backend kvm runs the upstream subset; proposed series are model-only (drop --series)\n',
    );
    return 2;
  }
  const backend = KvmBackend.open(isKvmMutant(opts.mutant) ? opts.mutant : null);
  if ('skipped' in backend) {
    console.log(`SKIPPED kvm backend: ${backend.skipped} (nothing was checked against a real kernel)`);
    return 4;
  }
  return { backend, profile };
}

async function runCheck(opts: CheckOptions): Promise<number> {
  const seed = opts.seed ?? (Date.now() ^ (process.pid << 8)) | 0;
  const kvm = opts.backend === 'kvm';
  if (isKvmMutant(opts.mutant) && !kvm) {
    process.stderr.write(`error: mutant ${opts.mutant} mutates the kvm backend's adaptor: add --backend kvm\n`);
    return 2;
  }
  if (opts.platform && !kvm) {
    process.stderr.write('error: --platform applies to the kvm backend: add --backend kvm\n');
    return 2;
  }
  const profile = opts.platform ? loadProfile(opts.platform) : null;
  const arches: Arch[] = opts.arch ?? (kvm ? ['x86'] : [...ARCHES]);
  const model = makeConfig(opts.series, opts.option ?? {}, profile?.deviations.map((d) => d.id) ?? []);
  const inapplicable = applicabilityError(opts.invariant ?? [], { ...model, arches, backend: kvm ? 'kvm' : 'model' });
  if (inapplicable) {
    process.stderr.write(`error: ${inapplicable}\n`);
    return 2;
  }
  const kernel = kvm ? openKernel(opts, profile) : undefined;
  if (typeof kernel === 'number') return kernel;
  const runs = opts.runs ?? (kvm ? DEFAULT_KVM_RUNS : DEFAULT_RUNS);
  const invariants = opts.invariant ?? [...INVARIANT_IDS];
  const engineMutant = opts.mutant && !isKvmMutant(opts.mutant) ? opts.mutant : null;
  const config: CampaignConfig = {
    arches,
    seed,
    runs,
    maxCommands: opts.maxCommands,
    invariants,
    mutant: engineMutant,
    model,
    kernel,
  };
  const target = opts.mutant ? `mutant ${opts.mutant}` : kvm ? 'the engine and the real kernel' : 'the engine';
  console.log(
    `kvm-memmodel check: ${runs} runs per arch (${arches.join(', ')}), up to ${opts.maxCommands} commands each, against ${target}`,
  );
  console.log(`  ${describeConfig(model)}`);
  if (kernel)
    console.log(
      `  kvm backend: /dev/kvm, ${kernel.backend.addressSpaces} address space(s); platform profile ${profile ? `${profile.name} (${profile.deviations.map((d) => d.id).join(', ')})` : 'none: every difference from upstream fails'}`,
    );
  console.log(`  invariants: ${invariants.join(', ')}`);
  const bar = progressBar(opts.progress);
  let result: CampaignResult;
  const interrupt = installInterrupt();
  try {
    const progress = (p: Progress): void => bar.update(`${p.arch}${p.shrinking ? ' (shrinking)' : ''}`, p.run, p.total);
    result = await runCampaignInterruptible(config, interrupt, progress);
  } finally {
    bar.stop();
    interrupt.uninstall();
  }
  console.log(`  ${formatSummary(result, seed)}`);
  // Interrupted (exit 130/143) and helper-death findings (exit 1): see harness/interrupt.ts, helper-deaths.ts.
  const stopped = interrupt.signal();
  const deaths = reportHelperDeaths(result, {
    replayDir: opts.replayDir,
    seed,
    mutant: engineMutant,
    invariants,
    model,
  });
  const exitCode = (code: number): number => (stopped ? SIGNAL_EXIT[stopped] : deaths.length ? 1 : code);
  if (kernel) {
    kernel.backend.close();
    console.log(
      `  kvm backend: ${kernel.backend.sequences} sequences ran in fresh VMs; helper restarts ${kernel.backend.restarts}` +
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
  if (opts.coverage || result.ok) console.log(`  exercised:\n${formatCoverage(result.coverage)}`);
  for (const line of deaths) console.log(line);
  if (stopped) console.log(interruptedLine(result, stopped));
  if (result.ok) {
    if (!stopped && !deaths.length)
      console.log(`PASS no invariant violated in ${result.runs} runs (seed ${seed}; re-run with --seed ${seed})`);
    return exitCode(0);
  }
  const f = result.failure!;
  const file = `${opts.replayDir}/${f.arch}-${f.invariant}${opts.mutant ? `-${opts.mutant}` : ''}-seed${seed}.json`;
  writeReplay(file, f, engineMutant, invariants, model, kvm ? 'kvm' : 'model');
  console.log('');
  console.log(formatViolation(f.invariant, f.messages, style));
  console.log(
    `  arch ${f.arch}; found after ${f.runsToFailure} runs, shrunk ${f.shrinks} times to ${f.steps.length} commands:`,
  );
  console.log(formatSteps(f.steps, style));
  console.log(`  replay file: ${file}`);
  const seriesFlag = model.series.length ? ` --series ${model.series.join(',')}` : '';
  const optionFlags = OPTION_NAMES.filter((n) => model.options[n] !== DEFAULT_OPTIONS[n])
    .map((n) => ` --option ${n}=${String(model.options[n])}`)
    .join('');
  const invariantFlag = opts.invariant ? ` --invariant ${invariants.join(',')}` : '';
  const kernelFlags = kvm ? ` --backend kvm${opts.platform ? ` --platform ${opts.platform}` : ''}` : '';
  console.log(
    `  re-run: kvm-memmodel replay ${file}    (or: kvm-memmodel check --seed ${seed} --arch ${f.arch}${kernelFlags}${seriesFlag}${optionFlags}${invariantFlag}${opts.mutant ? ` --mutant ${opts.mutant}` : ''})`,
  );
  if (f.invariant === 'kernel-agrees') {
    console.log(`  C reproducer: kvm-memmodel export --c repro.c ${file} && gcc -o repro repro.c && ./repro`);
    console.log(
      '  if this is how this platform behaves, record it as a deviation in a platform profile (docs/PLATFORMS.md)',
    );
  }
  return exitCode(1);
}

function runConformance(backendName: 'model' | 'kvm', platform?: string): number {
  const profile = platform ? loadProfile(platform) : null;
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
    `${CASES.length - failed} of ${CASES.length} cases pass${backend ? ' (spec and kernel)' : ' (spec only; --backend kvm adds the kernel)'}`,
  );
  return failed ? 1 : 0;
}

function runReplayCommand(file: string): number {
  const replay = readReplay(file);
  console.log(
    `kvm-memmodel replay: ${replay.commands.length} commands, arch ${replay.arch}${replay.mutant ? `, mutant ${replay.mutant}` : ''}; ${describeConfig(replay.model)}${replay.backend === 'kvm' ? '; with the real kernel' : ''}`,
  );
  let kernel: CampaignConfig['kernel'];
  if (replay.backend === 'kvm') {
    const backend = KvmBackend.open();
    if ('skipped' in backend) {
      console.log(`SKIPPED this replay needs the kvm backend: ${backend.skipped}`);
      return 4;
    }
    kernel = { backend, profile: null };
  }
  const result = runReplay(replay, kernel);
  kernel?.backend.close();
  if (!result.violation) {
    console.log(formatSteps(result.steps, style).replace('   <-- invariant violated after this command', ''));
    console.log(`PASS the recorded failure (${replay.failure.invariant}) no longer reproduces`);
    return 0;
  }
  console.log(formatViolation(result.violation.invariant, result.violation.messages, style));
  console.log(formatSteps(result.steps, style));
  const same = result.violation.invariant === replay.failure.invariant;
  console.log(
    same
      ? 'reproduced: the same invariant fails as recorded'
      : `reproduced a different failure than recorded (${replay.failure.invariant})`,
  );
  return 1;
}

export function buildProgram(): Command {
  const program = new Command('kvm-memmodel')
    .description(
      'Property-based verification harness for the Linux KVM guest-memory model:\nspec vs optimized MMU engine, invariants after every command, shrunk counterexamples.',
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
        `runs (sequences) per architecture (default: ${DEFAULT_RUNS}, ${DEFAULT_KVM_RUNS} with --backend kvm)`,
      ).argParser(positiveInt),
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
      new Option('--max-commands <n>', 'longest command sequence per run')
        .argParser(positiveInt)
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
    .action((file: string) => {
      process.exitCode = runReplayCommand(file);
    });

  program
    .command('conformance')
    .description(
      "run the peer selftests' assertions (properties/conformance-cases.ts) against the spec and, with --backend kvm, the real kernel",
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
      "turn a replay file (of upstream commands) into a standalone C program that replays it on a real kernel and checks the spec's outcomes",
    )
    .requiredOption('--c <file>', 'where to write the C program')
    .argument('<replay>', 'replay file written by check')
    .action((replayFile: string, opts: { c: string }) => {
      const replay = readReplay(replayFile);
      const source = exportC(replay, exportTitle(replayFile, replay.failure.invariant));
      writeFileSync(opts.c, source);
      console.log(
        `wrote ${opts.c}: ${replay.commands.length} steps checked against the spec (${describeConfig(replay.model)})`,
      );
      console.log(
        `  build and run: gcc -O2 -o repro ${opts.c} && ./repro    (exit 0: matches the spec, 1: differs, 77: no /dev/kvm)`,
      );
    });

  program
    .command('mutants')
    .description('run every registered mutant and print the kill matrix; exits 1 if any mutant survives')
    .option('--list', 'only list the mutants with their source', false)
    .addOption(
      new Option('--runs <n>', 'run budget per mutant and architecture').argParser(positiveInt).default(DEFAULT_RUNS),
    )
    .addOption(new Option('--seed <n>', 'seed for every mutant campaign').argParser(seedArg).default(1))
    .action(async (opts: { list: boolean; runs: number; seed: number }) => {
      if (opts.list) {
        for (const m of MUTANTS) {
          const series = m.series ? ` [${m.series.join(',')}]` : '';
          console.log(`${m.name.padEnd(36)} ${m.source}${series}\n${' '.repeat(37)}${m.description}`);
        }
        return;
      }
      const interrupt = installInterrupt();
      const budget = { runs: opts.runs, seed: opts.seed, maxCommands: DEFAULT_MAX_COMMANDS };
      const rows = await runKillMatrixInterruptible(MUTANT_NAMES, budget, interrupt).finally(interrupt.uninstall);
      console.log(formatKillMatrix(rows));
      const stopped = interrupt.signal();
      if (stopped) console.log(`INTERRUPTED by ${stopped} after ${rows.length} of ${MUTANT_NAMES.length} mutants`);
      process.exitCode = stopped ? SIGNAL_EXIT[stopped] : rows.every((r) => r.killed) ? 0 : 1;
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
          `  ${name.padEnd(24)} default ${String(DEFAULT_OPTIONS[name]).padEnd(15)} values ${info.values.join('|').padEnd(34)} ${info.series}; ${info.source}`,
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

export async function main(argv: readonly string[]): Promise<void> {
  const program = buildProgram();
  program.configureOutput({ writeErr: (s) => process.stderr.write(`${s.split('\n').filter(Boolean)[0]}\n`) });
  for (const sub of program.commands)
    sub
      .exitOverride()
      .configureOutput({ writeErr: (s) => process.stderr.write(`${s.split('\n').filter(Boolean)[0]}\n`) });
  try {
    await program.parseAsync(argv as string[], { from: 'node' });
  } catch (e) {
    if (e instanceof CommanderError) {
      const benign =
        e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version';
      process.exitCode = benign ? 0 : 2;
      return;
    }
    if (e instanceof InputError) {
      process.stderr.write(`error: ${e.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
}
