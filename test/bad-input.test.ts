// Bad input, table-driven (issue 9, requirement 1): every case must end in exactly one stderr line
// starting `error:`, exit 2, no stack frame, no raw control or non-ASCII character, within a time
// bound, and nothing written (the replay dir stays absent, an export target unchanged). The cases
// run in-process through `main` for speed; a fixed subset also runs as child processes to prove the
// process-level behaviour. BAD_INPUT_BIN=<bin> runs every case as a child of that binary (how the
// "before" numbers in the report were measured against an older build).
import { spawnSync } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { main } from '../src/cli.js';

const BIN = process.env.BAD_INPUT_BIN ?? fileURLToPath(new URL('../bin/kvm-memmodel.js', import.meta.url));
const ALL_CHILD = process.env.BAD_INPUT_BIN !== undefined;
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const VALID_REPLAY = join(ROOT, 'test/regression/thp-lookup-at-1g-aligned-hva.json');
const VALID_PROFILE = join(ROOT, 'platforms/pvm-6.18.json');
/** In-process cases are validation only; a child process pays node's start-up on top. */
const IN_PROCESS_MS = 3000;
const CHILD_MS = 10_000;

const dir = mkdtempSync(join(tmpdir(), 'kvm-memmodel-bad-input-'));
// The fixtures include a 50 MB file: never leave them behind.
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string | Buffer): string => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

// --- fixtures: paths that are not small regular files -------------------------------------------
const fifo = join(dir, 'fifo');
execFileSync('mkfifo', [fifo]);
const subdir = join(dir, 'a-directory');
mkdirSync(subdir);
const loop = join(dir, 'loop');
symlinkSync(loop, loop);
const loopA = join(dir, 'loop-a');
symlinkSync(join(dir, 'loop-b'), loopA);
symlinkSync(loopA, join(dir, 'loop-b'));
const big = file('big.json', Buffer.alloc(50 * 1024 * 1024, 0x20));
const plainFile = file('plain-file', 'not a directory\n');
const BAD_PATHS: [string, string][] = [
  ['a FIFO', fifo],
  ['/dev/zero', '/dev/zero'],
  ['/dev/null', '/dev/null'],
  ['a directory', subdir],
  ['a 50 MB file', big],
  ['a nonexistent file', join(dir, 'nonexistent.json')],
  ['a symlink to itself', loop],
  ['a symlink loop', loopA],
  ['an empty path', ''],
  ['a path under a file', join(plainFile, 'x.json')],
  ['/proc/self/mem', '/proc/self/mem'],
  ['/proc/kmsg (blocks on read)', '/proc/kmsg'],
  ['a path through /sys', '/sys/kernel/../kernel/notes'],
];

// --- fixtures: broken JSON -----------------------------------------------------------------------
const validText = readFileSync(VALID_REPLAY, 'utf8');
const validProfileText = readFileSync(VALID_PROFILE, 'utf8');
const BAD_JSON: [string, string | Buffer][] = [
  ['a byte-order mark', `\ufeff${validText}`],
  ['a // comment', `// a comment\n${validText}`],
  ['a /* comment */', `/* a comment */${validText}`],
  ['NaN', '{"format": NaN}'],
  ['Infinity', '{"seed": Infinity}'],
  ['trailing garbage', `${validText}\ngarbage`],
  ['two documents', `${validText}${validText}`],
  ['deeply nested arrays', `${'['.repeat(100_000)}${']'.repeat(100_000)}`],
  ['deeply nested objects', `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`],
  ['an empty file', ''],
  ['only whitespace', ' \n\t\n'],
  ['UTF-16', Buffer.from(validText, 'utf16le')],
  ['binary garbage', Buffer.from([0x00, 0x1b, 0x5b, 0x33, 0x31, 0x6d, 0xff, 0xfe, 0x0a, 0x07])],
  ['escape codes in bad JSON', '\x1b[2J\x1b[31m{ "boom": \n\n'],
  ['a truncated document', validText.slice(0, validText.length / 2)],
  ['single quotes', "{'format': 'kvm-memmodel-replay'}"],
  ['a trailing comma', '{"format": "kvm-memmodel-replay",}'],
  ['null', 'null'],
  ['an array', '[]'],
  ['a string', '"kvm-memmodel-replay"'],
  ['a number', '1'],
];

// --- fixtures: replay files with one field wrong --------------------------------------------------
type Json = Record<string, unknown>;
const valid = (): Json => JSON.parse(validText) as Json;
const cmds = (...c: Json[]): Json => ({ ...valid(), commands: c });
const mmap = (over: Json = {}): Json => ({
  kind: 'mmap',
  hva: 0x10_0000_0000,
  size: 0x200000,
  prot: 'rw',
  backing: 'thp',
  ...over,
});
const access = (over: Json = {}): Json => ({
  kind: 'guestAccess',
  vcpu: 0,
  gpa: 0,
  len: 8,
  write: false,
  value: '0x0',
  ...over,
});
const slot = (over: Json = {}): Json => ({
  kind: 'setMemslot',
  api: 'v2',
  slot: 0,
  as: 0,
  flags: 0,
  gpa: 0,
  size: 0x200000,
  hva: 0x10_0000_0000,
  ...over,
});
const without = (key: string): Json => {
  const v = valid();
  delete v[key];
  return v;
};
const TIB = 2 ** 40;
const REPLAY_MUTATIONS: [string, Json | string][] = [
  ...['format', 'version', 'arch', 'mutant', 'invariants', 'seed', 'path', 'failure', 'commands'].map(
    (k) => [`no ${k}`, without(k)] as [string, Json],
  ),
  ['format of another tool', { ...valid(), format: 'other-replay' }],
  ['version 2', { ...valid(), version: 2 }],
  // review: a kvm replay must fit what check --backend kvm runs (x86, upstream)
  ['a kvm replay for arm64', { ...valid(), backend: 'kvm', arch: 'arm64' }],
  ['a kvm replay with a series', { ...valid(), backend: 'kvm', model: { series: ['memfault-2023'], options: {} } }],
  ['version as a string', { ...valid(), version: '1' }],
  ['arch mips', { ...valid(), arch: 'mips' }],
  ['arch constructor', { ...valid(), arch: 'constructor' }],
  ['unknown mutant', { ...valid(), mutant: 'no-such-mutant' }],
  ['mutant __proto__', { ...valid(), mutant: '__proto__' }],
  ['no invariants', { ...valid(), invariants: [] }],
  ['unknown invariant', { ...valid(), invariants: ['nope'] }],
  ['invariant toString', { ...valid(), invariants: ['toString'] }],
  ['seed 1.5', { ...valid(), seed: 1.5 }],
  ['seed 2^40', { ...valid(), seed: 2 ** 40 }],
  ['seed as a string', { ...valid(), seed: '1' }],
  ['path as a number', { ...valid(), path: 5 }],
  ['failure.invariant with escape codes', { ...valid(), failure: { invariant: '\x1b[31mred\nline', messages: [] } }],
  ['failure.invariant unknown', { ...valid(), failure: { invariant: 'made-up', messages: [] } }],
  ['failure.invariant constructor', { ...valid(), failure: { invariant: 'constructor', messages: [] } }],
  ['failure.messages numbers', { ...valid(), failure: { invariant: 'bbm', messages: [1] } }],
  ['failure with an extra key', { ...valid(), failure: { invariant: 'bbm', messages: [], x: 1 } }],
  ['a huge message', { ...valid(), failure: { invariant: 'bbm', messages: ['x'.repeat(100_000)] } }],
  ['an extra top-level key', { ...valid(), extra: true }],
  ['a __proto__ key', '{"__proto__": {"polluted": true}, "format": "kvm-memmodel-replay"}'],
  ['no commands', cmds()],
  ['commands an object', { ...valid(), commands: {} }],
  ['unknown command kind', cmds({ kind: 'reboot' })],
  ['command kind constructor', cmds({ kind: 'constructor' })],
  ['command kind __proto__', cmds({ kind: '__proto__' })],
  ['command with an extra key', cmds(mmap({ extra: 1 }))],
  ['value as a number', cmds(access({ value: 12 }))],
  ['value over 64 bits', cmds(access({ value: `0x1${'0'.repeat(16)}` }))],
  ['value not hex', cmds(access({ value: 'abc' }))],
  ['value with escape codes', cmds(access({ value: '0x\x1b[31m' }))],
  ['gpa negative', cmds(access({ gpa: -1 }))],
  ['gpa fractional', cmds(access({ gpa: 1.5 }))],
  ['gpa 2^60', cmds(access({ gpa: 2 ** 60 }))],
  ['gpa a string', cmds(access({ gpa: '0' }))],
  ['len 0', cmds(access({ len: 0 }))],
  ['len 9', cmds(access({ len: 9 }))],
  ['vcpu 2', cmds(access({ vcpu: 2 }))],
  ['write a string', cmds(access({ write: 'yes' }))],
  ['prot x', cmds(mmap({ prot: 'rwx' }))],
  ['backing x', cmds(mmap({ backing: 'hugetlb2m' }))],
  ['mmap of 1 TiB', cmds(mmap({ size: TIB }))],
  [
    'mmap and populate 1 TiB',
    cmds(mmap({ size: TIB }), { kind: 'madvisePopulate', hva: 0x10_0000_0000, size: TIB, write: true }),
  ],
  ['hostWrite at hva 2^60', cmds({ kind: 'hostWrite', hva: 2 ** 60, len: 8, value: '0x1' })],
  [
    '40 mmaps of 1 GiB (over the mapping budget)',
    cmds(...Array.from({ length: 40 }, (_, i) => mmap({ hva: 0x100_0000_0000 + i * 2 ** 30, size: 2 ** 30 }))),
  ],
  ['10001 commands', cmds(...Array.from({ length: 10_001 }, () => ({ kind: 'checkExtension', cap: 1 })))],
  ['a memslot of 1 TiB', cmds(slot({ size: TIB }))],
  ['slot 70000', cmds(slot({ slot: 70_000 }))],
  ['api v3', cmds(slot({ api: 'v3' }))],
  ['flags negative', cmds(slot({ flags: -1 }))],
  ['gmem handle negative', cmds(slot({ gmem: { handle: -1, offset: 0 } }))],
  ['gmemCreate of 1 TiB', cmds({ kind: 'gmemCreate', size: TIB, flags: 0 })],
  ['clearDirtyLog over 2^40 pages', cmds({ kind: 'clearDirtyLog', slot: 0, as: 0, firstPage: 0, numPages: TIB })],
  ['checkExtension cap 2^40', cmds({ kind: 'checkExtension', cap: TIB })],
  ['munmap of the whole address space', cmds({ kind: 'munmap', hva: 0x1000, size: 0x7fff_ffff_e000 })],
  [
    'demandPaging with 0 readers',
    cmds({ kind: 'demandPaging', slot: 0, vcpuPages: [[0]], write: false, readers: 0, schedule: [] }),
  ],
  [
    'demandPaging with no vCPU',
    cmds({ kind: 'demandPaging', slot: 0, vcpuPages: [], write: false, readers: 1, schedule: [] }),
  ],
  ['raceAccess racing a guest access', cmds({ kind: 'raceAccess', access: access(), host: access() })],
  ['model.series unknown', { ...valid(), model: { series: ['warp-drive'], options: {} } }],
  ['model.options constructor', { ...valid(), model: { series: [], options: { constructor: 1 } } }],
  ['model.options bad value', { ...valid(), model: { series: [], options: { unmapStrategy: 'turbo' } } }],
  ['model.platform unknown', { ...valid(), model: { series: [], options: {}, platform: ['faster-than-light'] } }],
  ['backend qemu', { ...valid(), backend: 'qemu' }],
  ['outcomes not an array', { ...valid(), outcomes: 'fine' }],
];

// --- fixtures: platform profiles ---------------------------------------------------------------------
const profile = (): Json => JSON.parse(validProfileText) as Json;
const PROFILE_MUTATIONS: [string, Json | string][] = [
  ['a wrong format', { ...profile(), format: 'kvm-memmodel-replay' }],
  ['an unknown deviation', { ...profile(), deviations: [{ id: 'faster-than-light', evidence: [] }] }],
  ['a deviation named constructor', { ...profile(), deviations: [{ id: 'constructor', evidence: [] }] }],
  [
    'a missing evidence file',
    {
      ...profile(),
      deviations: [{ id: 'fault-as-mmio', evidence: [{ file: 'no.json', upstream: 'a', observed: 'b' }] }],
    },
  ],
  ['no deviations', { ...profile(), deviations: [] }],
  ['a bad name', { ...profile(), name: 'Bad Name\x1b[31m' }],
  ['an extra key', { ...profile(), extra: 1 }],
  ['version 2', { ...profile(), version: 2 }],
  ['a huge description', { ...profile(), description: 'x'.repeat(100_000) }],
];

// --- fixtures: a hostile second opinion (classes that once passed as good input, hung or crashed) ----
const procLink = join(dir, 'to-proc');
symlinkSync('/proc', procLink);
const regularLink = join(dir, 'to-regular');
symlinkSync(plainFile, regularLink);
const fifoLink = join(dir, 'to-fifo');
symlinkSync(fifo, fifoLink);
const selfReplay = file('self.json', validText);
const evidence = (path: string): Json => ({
  ...profile(),
  deviations: [{ id: 'fault-as-mmio', evidence: [{ file: path, upstream: 'a', observed: 'b' }] }],
});
const EVIDENCE_PATHS: [string, string][] = [
  ['an absolute path to /etc/shadow', '/etc/shadow'],
  ['a path out through ../', '../../../../../../etc/passwd'],
  ['/dev/zero', '/dev/zero'],
  ['a symlink to a FIFO', fifoLink],
  ['a directory', '.'],
];
const demand = (over: Json): Json => ({
  kind: 'demandPaging',
  slot: 0,
  vcpuPages: [[0]],
  write: false,
  readers: 1,
  schedule: [],
  ...over,
});
const HOSTILE_REPLAYS: [string, Json][] = [
  ['an invariant listed twice', { ...valid(), invariants: ['leaf-justified', 'leaf-justified'] }],
  ['a series listed twice', { ...valid(), model: { series: ['userfault', 'userfault'], options: {} } }],
  ['an option of a series that is off', { ...valid(), model: { series: [], options: { unmapStrategy: 'slow' } } }],
  ['a series mutant without its series', { ...valid(), mutant: 'userfault-enable-skips-zap' }],
  ['a kvm mutant without backend kvm', { ...valid(), mutant: 'kvm-adaptor-drops-readonly' }],
  ['its failure not among its invariants', { ...valid(), invariants: ['bbm'] }],
  [
    'only a series invariant without its series',
    {
      ...valid(),
      invariants: ['userfault-enable-zaps'],
      failure: { invariant: 'userfault-enable-zaps', messages: [] },
    },
  ],
  [
    'kernel-agrees without backend kvm',
    { ...valid(), invariants: ['kernel-agrees'], failure: { invariant: 'kernel-agrees', messages: [] } },
  ],
  ['a demand-paging episode of 4096 pages', cmds(demand({ vcpuPages: [Array.from({ length: 4096 }, (_, i) => i)] }))],
  ['a demand-paging schedule of 65536 steps', cmds(demand({ schedule: Array.from({ length: 65_536 }, () => 1) }))],
];

// --- the table ----------------------------------------------------------------------------------------
interface Case {
  readonly name: string;
  readonly args: readonly string[];
  /** Paths that must not exist after the case (a replay dir, an export target). */
  readonly absent?: readonly string[];
}
let outCount = 0;
/** A fresh replay dir per check case: it must still not exist afterwards. */
const outDir = (): string => join(dir, `out-${outCount++}`);
const check = (name: string, ...args: string[]): Case => {
  const out = outDir();
  // --runs 2 first: a case that is wrongly accepted then ends quickly (and fails the exit-code check).
  return { name, args: ['check', '--runs', '2', '--no-progress', '--replay-dir', out, ...args], absent: [out] };
};
const exportTo = (name: string, target: string, replay = VALID_REPLAY): Case => ({
  name,
  args: ['export', '--c', target, replay],
  absent: existsSync(target) ? [] : [target],
});
const jsonFile = (name: string, v: Json | string): string => file(name, typeof v === 'string' ? v : JSON.stringify(v));

const NUMBERS = ['-1', '0x10', '1e3', '99999999999999999999', '', ' ', '1.5', 'abc', '+5', '\uff11', '\x1b[31m'];
const OBJECT_KEYS = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf'];

const CASES: Case[] = [
  // numeric flags
  ...NUMBERS.filter((n) => n !== '-1').map((n) => check(`check --seed ${JSON.stringify(n)}`, '--seed', n)),
  check('check --seed 2^31', '--seed', String(2 ** 31)),
  ...NUMBERS.map((n) => check(`check --runs ${JSON.stringify(n)}`, '--runs', n)),
  check('check --runs 0', '--runs', '0'),
  check('check --runs 10^12', '--runs', '1000000000000'),
  ...NUMBERS.map((n) => check(`check --max-commands ${JSON.stringify(n)}`, '--max-commands', n)),
  check('check --max-commands 0', '--max-commands', '0'),
  check('check --max-commands 10^6', '--max-commands', '1000000'),
  ...NUMBERS.map((n) => check(`check --threads ${JSON.stringify(n)}`, '--threads', n)),
  check('check --threads 0', '--threads', '0'),
  check('check --threads 9 (more than 8)', '--threads', '9'),
  ...NUMBERS.map((n) => check(`check --workers ${JSON.stringify(n)}`, '--workers', n)),
  check('check --workers 0', '--workers', '0'),
  check('check --workers 65 (more than 64)', '--workers', '65'),
  check('check --workers 2 --backend kvm (one helper, one process)', '--workers', '2', '--backend', 'kvm'),
  check(
    'check --threads 2 --backend kvm --invariant bbm (the kernel runs no engine)',
    '--threads',
    '2',
    '--backend',
    'kvm',
    '--invariant',
    'bbm',
  ),
  check(
    'check --threads 2 --backend kvm with an engine mutant',
    '--threads',
    '2',
    '--backend',
    'kvm',
    '--mutant',
    'dirty-harvest-not-atomic',
  ),
  ...['-1', '0x10', '1e3', '', 'abc', '0', '1000000000000'].map((n) => ({
    name: `mutants --runs ${JSON.stringify(n)}`,
    args: ['mutants', '--runs', n],
  })),
  ...['0x10', '1e3', '', 'abc', '99999999999'].map((n) => ({
    name: `mutants --seed ${JSON.stringify(n)}`,
    args: ['mutants', '--seed', n],
  })),
  // built-in object property names as user strings
  ...OBJECT_KEYS.map((k) => check(`check --option ${k}=x`, '--option', `${k}=x`)),
  ...OBJECT_KEYS.slice(0, 3).map((k) => check(`check --series ${k}`, '--series', k)),
  ...OBJECT_KEYS.slice(0, 3).map((k) => check(`check --invariant ${k}`, '--invariant', k)),
  ...OBJECT_KEYS.slice(0, 3).map((k) => check(`check --mutant ${k}`, '--mutant', k)),
  check('check --arch constructor', '--arch', 'constructor'),
  check('check --backend constructor', '--backend', 'constructor'),
  check('check --platform constructor', '--backend', 'kvm', '--platform', 'constructor'),
  check('check --platform __proto__', '--backend', 'kvm', '--platform', '__proto__'),
  // enumerations
  check('check --arch ""', '--arch', ''),
  check('check --arch X86', '--arch', 'X86'),
  check('check --backend ""', '--backend', ''),
  check('check --profile ""', '--profile', ''),
  check('check --profile VMM', '--profile', 'VMM'),
  check('check --series ""', '--series', ''),
  check('check --series ","', '--series', ','),
  check('check --invariant ""', '--invariant', ''),
  check('check --invariant ","', '--invariant', ','),
  check('check --mutant ""', '--mutant', ''),
  check('check --option ""', '--option', ''),
  check('check --option =', '--option', '='),
  check('check --option =x', '--option', '=x'),
  check('check --option unmapStrategy=', '--option', 'unmapStrategy='),
  check('check --option with escape codes', '--option', '\x1b[31m=\x07'),
  check('check --invariant with a newline', '--invariant', 'bbm\nfoo'),
  check('check --option a huge value', '--option', `unmapStrategy=${'x'.repeat(100_000)}`),
  // flags that do not go together
  check('kvm mutant without --backend kvm', '--mutant', 'kvm-adaptor-drops-readonly'),
  check('--platform without --backend kvm', '--platform', 'pvm-6.18'),
  check('--platform "" without --backend kvm', '--platform', ''),
  check('--platform "" with --backend kvm', '--backend', 'kvm', '--platform', ''),
  check('--platform nope', '--backend', 'kvm', '--platform', 'nope'),
  check('--platform ../../etc/passwd', '--backend', 'kvm', '--platform', '../../etc/passwd'),
  check('--backend kvm --arch arm64', '--backend', 'kvm', '--arch', 'arm64'),
  check('--profile vmm --backend kvm', '--profile', 'vmm', '--backend', 'kvm'),
  check('--profile small --threads 2', '--profile', 'small', '--threads', '2'),
  check('--backend kvm --series userfault', '--backend', 'kvm', '--series', 'userfault'),
  // unknown commands, flags, arguments
  check('check --frobnicate', '--frobnicate'),
  check('check --coverage=yes', '--coverage=yes'),
  check('check --no-progress=1', '--no-progress=1'),
  { name: '--version (there is none)', args: ['--version'] },
  check('check -x', '-x'),
  check('check --seed without a value', '--seed'),
  check('check with an argument', 'extra'),
  { name: 'no command', args: [] },
  { name: 'unknown command', args: ['frobnicate'] },
  { name: 'unknown command with escape codes', args: ['\x1b[31mred'] },
  { name: 'help nope', args: ['help', 'nope'] },
  { name: 'help ""', args: ['help', ''] },
  { name: 'help of a command with escape codes', args: ['help', '\x1b]0;title\x07'] },
  { name: 'replay without a file', args: ['replay'] },
  { name: 'replay with two files', args: ['replay', VALID_REPLAY, VALID_REPLAY] },
  { name: 'series with an argument', args: ['series', 'x'] },
  { name: 'invariants with an argument', args: ['invariants', 'x'] },
  { name: 'invariants --bogus', args: ['invariants', '--bogus'] },
  { name: 'mutants --bogus', args: ['mutants', '--bogus'] },
  { name: 'export without --c', args: ['export', VALID_REPLAY] },
  { name: 'export without a replay', args: ['export', '--c', join(dir, 'never.c')], absent: [join(dir, 'never.c')] },
  { name: 'conformance --bogus', args: ['conformance', '--bogus'] },
  { name: 'conformance --backend x', args: ['conformance', '--backend', 'x'] },
  { name: 'conformance --platform ""', args: ['conformance', '--platform', ''] },
  { name: 'conformance --platform nope', args: ['conformance', '--platform', 'nope'] },
  { name: '--bogus before the command', args: ['--bogus', 'check'] },
  // --replay-dir that is no directory we may write
  ...[
    ['a file', plainFile],
    ['/dev/null', '/dev/null'],
    ['/proc/self', '/proc/self'],
    ['under /proc', '/proc/kvm-memmodel-replays'],
    ['under /sys', '/sys/kernel/kvm-memmodel'],
    ['a FIFO', fifo],
    ['under a file', join(plainFile, 'sub')],
    ['a symlink loop', loop],
  ].map(([what, path]) => ({ ...check(`--replay-dir ${what}`, '--replay-dir', path!), absent: [] })),
  check('--replay-dir ""', '--replay-dir', ''),
  // export targets that are not a file we may write
  exportTo('export --c a directory', subdir),
  exportTo('export --c /dev/null', '/dev/null'),
  exportTo('export --c a FIFO', fifo),
  exportTo('export --c under /proc', '/proc/kvm-memmodel.c'),
  exportTo('export --c under /sys', '/sys/kvm-memmodel.c'),
  exportTo('export --c ""', ''),
  exportTo('export --c under a missing directory', join(dir, 'missing-dir', 'x.c')),
  exportTo('export --c under a file', join(plainFile, 'x.c')),
  exportTo('export --c a symlink loop', loop),
  // inputs that are not small regular files
  ...BAD_PATHS.map(([what, path]) => ({ name: `replay of ${what}`, args: ['replay', path] })),
  ...BAD_PATHS.map(([what, path]) => exportTo(`export of ${what}`, join(dir, `export-${what}.c`), path)),
  ...BAD_PATHS.filter(([, p]) => p !== '').map(([what, path]) =>
    check(`--platform of ${what}`, '--backend', 'kvm', '--platform', path.endsWith('.json') ? path : `${path}`),
  ),
  // broken JSON, as a replay and as a platform profile
  ...BAD_JSON.map(([what, text], i) => ({
    name: `replay with ${what}`,
    args: ['replay', file(`json-${i}.json`, text)],
  })),
  ...BAD_JSON.map(([what, text], i) =>
    check(`platform profile with ${what}`, '--backend', 'kvm', '--platform', file(`profile-json-${i}.json`, text)),
  ),
  // replay files with one field wrong
  ...REPLAY_MUTATIONS.map(([what, v], i) => ({
    name: `replay: ${what}`,
    args: ['replay', jsonFile(`m-${i}.json`, v)],
  })),
  ...REPLAY_MUTATIONS.slice(0, 12).map(([what, v], i) =>
    exportTo(`export: ${what}`, join(dir, `export-m-${i}.c`), jsonFile(`e-${i}.json`, v)),
  ),
  // platform profiles with one field wrong
  ...PROFILE_MUTATIONS.map(([what, v], i) =>
    check(`platform profile: ${what}`, '--backend', 'kvm', '--platform', jsonFile(`p-${i}.json`, v)),
  ),
  ...PROFILE_MUTATIONS.slice(0, 3).map(([what, v], i) => ({
    name: `conformance with a platform profile: ${what}`,
    args: ['conformance', '--platform', jsonFile(`cp-${i}.json`, v)],
  })),
  // a hostile second opinion: lists with an empty item, stray arguments, contradicting settings
  check('check --series "userfault,"', '--series', 'userfault,'),
  check('check --series "userfault,,gmem-private"', '--series', 'userfault,,gmem-private'),
  check('check --invariant "bbm,,"', '--invariant', 'bbm,,'),
  check('check --arch x86 --invariant ",bbm"', '--invariant', ',bbm'),
  { name: 'help check extra', args: ['help', 'check', 'extra'] },
  { name: '-- and no command', args: ['--'] },
  check('a series mutant without its series', '--mutant', 'userfault-enable-skips-zap'),
  check('an arm64 mutant on x86 only', '--arch', 'x86', '--mutant', 'fast-unmap-skips-cmo', '--series', 'arm64-unmap'),
  check('an option of a series that is off', '--option', 'unmapStrategy=slow'),
  // review: a repeated flag kept only its last value; a platform without the kernel was ignored
  check('--series given twice', '--series', 'userfault', '--series', 'gmem-private'),
  check('--invariant given twice', '--invariant', 'bbm', '--invariant', 'differential'),
  check('--seed given twice, once as --seed=', '--seed', '1', '--seed=2'),
  { name: 'conformance --platform without --backend kvm', args: ['conformance', '--platform', 'pvm-6.18'] },
  // output paths judged by where they lead and by whether they name a file at all
  { ...check('--replay-dir under a symlink to /proc', '--replay-dir', join(procLink, 'x')), absent: [] },
  check('--replay-dir -', '--replay-dir', join(dir, '-')),
  check('--replay-dir " "', '--replay-dir', join(dir, ' ')),
  exportTo('export --c a symlink to a regular file', regularLink),
  exportTo('export --c -', join(dir, '-')),
  exportTo('export --c a blank name', join(dir, '  ')),
  exportTo('export --c a/ (trailing slash)', `${join(dir, 'new-dir')}/`),
  exportTo('export --c over its own replay file', selfReplay, selfReplay),
  exportTo('export --c a 4096-byte path', join(dir, `${'c'.repeat(4100)}.c`)),
  ...HOSTILE_REPLAYS.map(([what, v], i) => ({
    name: `replay: ${what}`,
    args: ['replay', jsonFile(`h-${i}.json`, v)],
  })),
  ...EVIDENCE_PATHS.map(([what, path], i) =>
    check(`platform evidence: ${what}`, '--backend', 'kvm', '--platform', jsonFile(`ev-${i}.json`, evidence(path))),
  ),
];

interface Outcome {
  readonly status: number | null;
  readonly stderr: string;
  readonly ms: number;
}

async function inProcess(
  args: readonly string[],
  argv: readonly string[] = ['node', 'kvm-memmodel', ...args],
): Promise<Outcome> {
  let stderr = '';
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const log = vi.spyOn(console, 'log').mockImplementation(() => {});
  const start = performance.now();
  try {
    const status = await main(argv);
    return { status, stderr, ms: performance.now() - start };
  } finally {
    err.mockRestore();
    out.mockRestore();
    log.mockRestore();
    process.exitCode = 0;
  }
}

function child(args: readonly string[]): Outcome {
  const start = performance.now();
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', KVM_MEMMODEL_DEBUG: '' },
    timeout: CHILD_MS,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return { status: r.status, stderr: r.stderr ?? '', ms: performance.now() - start };
}

/** Every property at once, so a failing case reports all that is wrong with it (and the measurement counts each). */
function expectCleanError(c: Case, r: Outcome, limitMs: number): void {
  const lines = r.stderr.split('\n');
  const first = lines[0] ?? '';
  const verdict = {
    exit: r.status,
    oneLine: lines.length === 2 && lines[1] === '',
    startsWithError: first.startsWith('error: '),
    noStackFrame: !/\n\s+at /.test(r.stderr),
    // Printable ASCII only: no escape sequence, bell, carriage return or raw non-ASCII reaches the terminal.
    printable: /^[\x20-\x7e]*\n?$/.test(r.stderr),
    inTime: r.ms < limitMs,
    wroteNothing: (c.absent ?? []).every((path) => !existsSync(path)),
  };
  const expected = {
    exit: 2,
    oneLine: true,
    startsWithError: true,
    noStackFrame: true,
    printable: true,
    inTime: true,
    wroteNothing: true,
  };
  expect(verdict, `stderr: ${JSON.stringify(r.stderr.slice(0, 300))}`).toEqual(expected);
}

describe('bad input: exactly one `error:` line, exit 2, nothing written', () => {
  test('the table has at least 150 cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(150);
  });

  // In-process runs share this process's stdout/stderr; nothing else may write meanwhile.
  beforeEach(() => {
    process.exitCode = 0;
  });
  afterEach(() => {
    process.exitCode = 0;
  });

  const named = CASES.map((c, i) => [`${i} ${JSON.stringify(c.name).slice(1, -1).slice(0, 90)}`, c] as const);
  test.skipIf(ALL_CHILD).each(named)('in-process: %s', async (_, c) => {
    expectCleanError(c, await inProcess(c.args), IN_PROCESS_MS);
  });

  // Every 12th case (about 20) as a real process: no stack trace from an uncaught error, exit status 2.
  const sample = ALL_CHILD ? named : named.filter((_, i) => i % 12 === 5);
  test.each(sample)('child process: %s', (_, c) => {
    expectCleanError(c, child(c.args), CHILD_MS);
  });
});

describe('errors that are bugs, not bad input', () => {
  test.skipIf(ALL_CHILD)('an unexpected exception is one `error: internal:` line and exit 70', async () => {
    // An argv whose slice throws stands in for any bug: the last-resort handler must catch it.
    const argv = Object.assign(['node', 'kvm-memmodel', 'series'], {
      slice: () => {
        throw new Error('boom\nsecond line \x1b[31m');
      },
    });
    const r = await inProcess([], argv);
    expect(r.status).toBe(70);
    expect(r.stderr).toBe('error: internal: boom (a bug; KVM_MEMMODEL_DEBUG=1 shows where)\n');
  });

  test.skipIf(ALL_CHILD)('with KVM_MEMMODEL_DEBUG=1 the stack follows the line', async () => {
    const argv = Object.assign(['node', 'kvm-memmodel', 'series'], {
      slice: () => {
        throw new Error('boom');
      },
    });
    process.env.KVM_MEMMODEL_DEBUG = '1';
    let r: Outcome;
    try {
      r = await inProcess([], argv);
    } finally {
      delete process.env.KVM_MEMMODEL_DEBUG;
    }
    expect(r.status).toBe(70);
    expect(r.stderr).toMatch(/^error: internal: boom .*\nError: boom\n\s+at /);
  });
});
