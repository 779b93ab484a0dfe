// The `kvm-memmodel` command. Exit codes: 0 success, 1 an invariant failed (check, replay) or a
// mutant survived (mutants), 2 bad input (one line on stderr, never a stack trace).
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { ARCHES, type Arch } from '../model/abi.js';
import { INVARIANTS, INVARIANT_IDS, isInvariantId, type InvariantId } from '../properties/invariants.js';
import { MUTANTS, MUTANT_NAMES, isMutantName, type MutantName } from './mmu/mutants.js';
import { formatCoverage, formatSteps, formatSummary, formatViolation, type Style } from './harness/report.js';
import { InputError, readReplay, runReplay, writeReplay } from './harness/replay.js';
import { runCampaign, type CampaignConfig, type CampaignResult } from './harness/runner.js';
import { runKillMatrix, formatKillMatrix } from './harness/kill-matrix.js';
import {
  DEFAULT_OPTIONS, OPTION_INFO, OPTION_NAMES, SERIES, SERIES_NAMES, describeConfig, isSeriesName, makeConfig, parseOption,
  type SeriesName, type SeriesOptions,
} from '../model/series.js';

export const DEFAULT_RUNS = 25000;
export const DEFAULT_MAX_COMMANDS = 40;

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
  const ids = value.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = ids.filter((id) => !isInvariantId(id));
  if (unknown.length || ids.length === 0) throw new InvalidArgumentError(`unknown invariant "${unknown[0] ?? value}" (known: ${INVARIANT_IDS.join(', ')}).`);
  return ids as InvariantId[];
}

function mutantArg(value: string): MutantName {
  if (!isMutantName(value)) throw new InvalidArgumentError(`unknown mutant "${value}" (run \`kvm-memmodel mutants --list\`).`);
  return value;
}

function seriesList(value: string): SeriesName[] {
  if (value === 'all') return [...SERIES_NAMES];
  if (value === 'none') return [];
  const names = value.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = names.find((n) => !isSeriesName(n));
  if (unknown !== undefined || names.length === 0) throw new InvalidArgumentError(`unknown series "${unknown ?? value}" (known: ${SERIES_NAMES.join(', ')}, all, none).`);
  return names as SeriesName[];
}

function optionArg(value: string, previous: Partial<SeriesOptions> = {}): Partial<SeriesOptions> {
  const parsed = parseOption(value);
  if (typeof parsed === 'string') throw new InvalidArgumentError(`${parsed}.`);
  return { ...previous, [parsed[0]]: parsed[1] };
}

function progressBar(enabled: boolean): { update: (label: string, value: number, total: number) => void; stop: () => void } {
  if (!enabled || !process.stderr.isTTY) return { update: () => {}, stop: () => {} };
  const bar = new SingleBar({ format: '  {label} [{bar}] {value}/{total} runs', stream: process.stderr, hideCursor: true, clearOnComplete: true });
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
  seed?: number; runs: number; arch: Arch[]; invariant?: InvariantId[]; mutant?: MutantName; maxCommands: number;
  replayDir: string; progress: boolean; coverage: boolean; series: SeriesName[]; option?: Partial<SeriesOptions>;
}

function runCheck(opts: CheckOptions): number {
  const seed = opts.seed ?? (Date.now() ^ (process.pid << 8)) | 0;
  const invariants = opts.invariant ?? [...INVARIANT_IDS];
  const model = makeConfig(opts.series, opts.option ?? {});
  const config: CampaignConfig = { arches: opts.arch, seed, runs: opts.runs, maxCommands: opts.maxCommands, invariants, mutant: opts.mutant ?? null, model };
  const target = opts.mutant ? `mutant ${opts.mutant}` : 'the engine';
  console.log(`kvm-memmodel check: ${opts.runs} runs per arch (${opts.arch.join(', ')}), up to ${opts.maxCommands} commands each, against ${target}`);
  console.log(`  ${describeConfig(model)}`);
  console.log(`  invariants: ${invariants.join(', ')}`);
  const bar = progressBar(opts.progress);
  let result: CampaignResult;
  try {
    result = runCampaign(config, (p) => bar.update(`${p.arch}${p.shrinking ? ' (shrinking)' : ''}`, p.run, p.total));
  } finally {
    bar.stop();
  }
  console.log(`  ${formatSummary(result, seed)}`);
  if (opts.coverage || result.ok) console.log(`  exercised:\n${formatCoverage(result.coverage)}`);
  if (result.ok) {
    console.log(`PASS no invariant violated in ${result.runs} runs (seed ${seed}; re-run with --seed ${seed})`);
    return 0;
  }
  const f = result.failure!;
  const file = `${opts.replayDir}/${f.arch}-${f.invariant}${opts.mutant ? `-${opts.mutant}` : ''}-seed${seed}.json`;
  writeReplay(file, f, opts.mutant ?? null, invariants, model);
  console.log('');
  console.log(formatViolation(f.invariant, f.messages, style));
  console.log(`  arch ${f.arch}; found after ${f.runsToFailure} runs, shrunk ${f.shrinks} times to ${f.steps.length} commands:`);
  console.log(formatSteps(f.steps, style));
  console.log(`  replay file: ${file}`);
  const seriesFlag = model.series.length ? ` --series ${model.series.join(',')}` : '';
  const optionFlags = OPTION_NAMES.filter((n) => model.options[n] !== DEFAULT_OPTIONS[n]).map((n) => ` --option ${n}=${String(model.options[n])}`).join('');
  const invariantFlag = opts.invariant ? ` --invariant ${invariants.join(',')}` : '';
  console.log(`  re-run: kvm-memmodel replay ${file}    (or: kvm-memmodel check --seed ${seed} --arch ${f.arch}${seriesFlag}${optionFlags}${invariantFlag}${opts.mutant ? ` --mutant ${opts.mutant}` : ''})`);
  return 1;
}

function runReplayCommand(file: string): number {
  const replay = readReplay(file);
  console.log(`kvm-memmodel replay: ${replay.commands.length} commands, arch ${replay.arch}${replay.mutant ? `, mutant ${replay.mutant}` : ''}; ${describeConfig(replay.model)}`);
  const result = runReplay(replay);
  if (!result.violation) {
    console.log(formatSteps(result.steps, style).replace('   <-- invariant violated after this command', ''));
    console.log(`PASS the recorded failure (${replay.failure.invariant}) no longer reproduces`);
    return 0;
  }
  console.log(formatViolation(result.violation.invariant, result.violation.messages, style));
  console.log(formatSteps(result.steps, style));
  const same = result.violation.invariant === replay.failure.invariant;
  console.log(same ? 'reproduced: the same invariant fails as recorded' : `reproduced a different failure than recorded (${replay.failure.invariant})`);
  return 1;
}

export function buildProgram(): Command {
  const program = new Command('kvm-memmodel')
    .description('Property-based verification harness for the Linux KVM guest-memory model:\nspec vs optimized MMU engine, invariants after every command, shrunk counterexamples.')
    .showSuggestionAfterError(true)
    .exitOverride();

  program.command('check')
    .description('run a campaign: random command sequences through spec and engine, all invariants checked after every command')
    .addOption(new Option('--seed <n>', 'seed of the campaign (default: random, printed so the run can be repeated)').argParser(seedArg))
    .addOption(new Option('--runs <n>', 'runs (sequences) per architecture').argParser(positiveInt).default(DEFAULT_RUNS))
    .addOption(new Option('--arch <arch>', 'architecture profile: x86, arm64 or all').argParser(archList).default([...ARCHES], 'all'))
    .addOption(new Option('--invariant <ids>', `comma-separated invariants to check (default: all): ${INVARIANT_IDS.join(', ')}`).argParser(invariantList))
    .addOption(new Option('--mutant <name>', 'run against a mutant of the engine; a found counterexample means the mutant is killed').argParser(mutantArg))
    .addOption(new Option('--max-commands <n>', 'longest command sequence per run').argParser(positiveInt).default(DEFAULT_MAX_COMMANDS))
    .addOption(new Option('--series <names>', `proposed series to enable, comma-separated, or all/none: ${SERIES_NAMES.join(', ')}`).argParser(seriesList).default([], 'none (upstream)'))
    .addOption(new Option('--option <name=value>', 'set an open-question option (repeatable; see `kvm-memmodel series`)').argParser(optionArg))
    .option('--replay-dir <dir>', 'where failing sequences are written', 'replays')
    .option('--no-progress', 'no progress bar')
    .option('--coverage', 'print what the campaign exercised even when it fails', false)
    .action((opts) => {
      process.exitCode = runCheck(opts);
    });

  program.command('replay')
    .description('re-run a saved failure exactly; exits 1 if it still fails, 0 if it no longer does')
    .argument('<file>', 'replay file written by check')
    .action((file: string) => {
      process.exitCode = runReplayCommand(file);
    });

  program.command('mutants')
    .description('run every registered mutant and print the kill matrix; exits 1 if any mutant survives')
    .option('--list', 'only list the mutants with their source', false)
    .addOption(new Option('--runs <n>', 'run budget per mutant and architecture').argParser(positiveInt).default(DEFAULT_RUNS))
    .addOption(new Option('--seed <n>', 'seed for every mutant campaign').argParser(seedArg).default(1))
    .action((opts: { list: boolean; runs: number; seed: number }) => {
      if (opts.list) {
        for (const m of MUTANTS) {
        const series = 'series' in m ? ` [${m.series.join(',')}]` : '';
        console.log(`${m.name.padEnd(36)} ${m.source}${series}\n${' '.repeat(37)}${m.description}`);
      }
        return;
      }
      const rows = runKillMatrix(MUTANT_NAMES, { runs: opts.runs, seed: opts.seed, maxCommands: DEFAULT_MAX_COMMANDS });
      console.log(formatKillMatrix(rows));
      process.exitCode = rows.every((r) => r.killed) ? 0 : 1;
    });

  program.command('series')
    .description('list the proposed series and the open-question options with their defaults')
    .action(() => {
      for (const sr of SERIES) console.log(`${sr.name.padEnd(16)} ${sr.seed.padEnd(9)} ${sr.title}`);
      console.log('\noptions (--option name=value):');
      for (const name of OPTION_NAMES) {
        const info = OPTION_INFO[name];
        console.log(`  ${name.padEnd(24)} default ${String(DEFAULT_OPTIONS[name]).padEnd(15)} values ${info.values.join('|').padEnd(34)} ${info.series}; ${info.source}`);
      }
    });

  program.command('invariants')
    .description('list the invariants with their statement and source')
    .action(() => {
      for (const inv of INVARIANTS) {
        const series = 'series' in inv ? ` (series ${inv.series.join(', ')})` : '';
        console.log(`${inv.id.padEnd(28)} ${inv.statement}\n${' '.repeat(29)}source: ${inv.source}${series}`);
      }
    });

  return program;
}

export function main(argv: readonly string[]): void {
  const program = buildProgram();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s.split('\n').filter(Boolean)[0] + '\n') });
  for (const sub of program.commands) sub.exitOverride().configureOutput({ writeErr: (s) => process.stderr.write(s.split('\n').filter(Boolean)[0] + '\n') });
  try {
    program.parse(argv as string[], { from: 'node' });
  } catch (e) {
    if (e instanceof CommanderError) {
      const benign = e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version';
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
