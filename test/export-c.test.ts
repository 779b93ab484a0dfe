// C reproducers: every piece of recorded evidence exports to a program gcc compiles with
// -Wall -Wextra -Werror; on /dev/kvm it reproduces the deviation (exit 1, the differing step printed),
// and the same commands checked against the platform spec match (exit 0). Hostile replay files (and
// file names) export to programs that print their strings back byte for byte and run nothing injected;
// what a reproducer cannot honour (arm64, a kvm-adaptor mutant, a series, the harness's own memory) is
// refused.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import type { Command } from '../model/commands.js';
import { UPSTREAM_CONFIG, makeConfig } from '../model/series.js';
import { readReplay } from '../src/harness/replay.js';
import { KVM_MUTANTS } from '../src/kvm/backend.js';
import { cString } from '../src/kvm/c-literals.js';
import { type ExportSource, exportC, exportTitle, reproData } from '../src/kvm/export-c.js';
import { probeMachine } from '../src/kvm/helper.js';
import { evidencePath, loadProfile } from '../src/kvm/platform.js';
import { MUTANT_NAMES } from '../src/mmu/mutant-registry.js';
import { InputError } from '../src/util/errors.js';

const gcc = spawnSync('gcc', ['--version']).status === 0;
const probe = probeMachine();
const profile = loadProfile('pvm-6.18');
const dir = mkdtempSync(join(tmpdir(), 'kvm-memmodel-export-'));
const BIN = fileURLToPath(new URL('../bin/kvm-memmodel.js', import.meta.url));
const nativeDir = fileURLToPath(new URL('../src/kvm/native/', import.meta.url));
/** -Wformat=2 fails the build on any printf whose format is not a literal (so no replay string is one). */
const WARNINGS = ['-Wall', '-Wextra', '-Werror', '-Wformat=2'];

function build(name: string, source: string, flags: readonly string[] = []): string {
  const c = join(dir, `${name}.c`);
  writeFileSync(c, source);
  const out = join(dir, name);
  const r = spawnSync('gcc', ['-O1', ...WARNINGS, ...flags, '-o', out, c], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return out;
}

const evidence = profile.deviations.flatMap((d) => d.evidence.map((e) => [d.id, e.file, e] as const));

describe.skipIf(!gcc)(`export --c of the evidence (gcc ${gcc ? 'present' : 'missing: skipped'})`, () => {
  test.each(evidence)('%s: %s compiles, and reproduces on the kernel', (id, _file, e) => {
    const replay = readReplay(evidencePath(profile, e));
    const upstream = build(`${id}-upstream`, exportC(replay, `evidence of ${id}`));
    const platform = build(
      `${id}-platform`,
      exportC({ ...replay, model: makeConfig([], {}, [id]) }, `evidence of ${id}, platform spec`),
    );
    if (!probe.usable) return; // compiled; running needs /dev/kvm (reported by the kvm suites as skipped)
    const differs = spawnSync(upstream, { encoding: 'utf8' });
    expect(differs.stdout).toContain('DIFFERS from the spec');
    expect(differs.stdout).toMatch(/REPRODUCED: 1 of \d+ steps differ/);
    expect(differs.status).toBe(1);
    const agrees = spawnSync(platform, { encoding: 'utf8' });
    expect(agrees.stdout).toMatch(/OK: all \d+ steps match the spec/);
    expect(agrees.status).toBe(0);
  });
});

describe('C string literals', () => {
  test('escape everything outside printable ASCII as three octal digits, and \\, " and ?', () => {
    expect(cString('a\u0000' + '1\n"\\??/')).toBe('"a\\0001\\012\\"\\\\\\?\\?/"');
    expect(cString('é')).toBe('"\\303\\251"');
    expect(cString('\u001b[2J%n')).toBe('"\\033[2J%n"');
  });

  test('split long strings into adjacent literals, never inside an escape', () => {
    const lit = cString('\u0001'.repeat(50), 20);
    for (const line of lit.split('\n')) expect(line.trim()).toMatch(/^"(\\[0-7]{3})*"$/);
  });
});

/** The evidence whose reproducer differs from the spec here: exit 1 with /dev/kvm, 77 without. */
const gmemEvidence = profile.deviations.find((d) => d.id === 'gmem-faults-via-hva')!.evidence[0]!;
const BASE = readFileSync(evidencePath(profile, gmemEvidence), 'utf8');
const honestExit = probe.usable ? 1 : 77;

/** Payloads that would run `touch MARKER` (and exit 0) if any of them reached the source as code. */
const payloads = (marker: string): [string, string][] => {
  const code =
    'extern int system(const char *); extern void exit(int); ' +
    `static void __attribute__((constructor)) pwn(void) { system("touch ${marker}"); exit(0); }`;
  return [
    ['backslash-newline closing a comment', `x *\\\n/ ${code} /*`],
    ['??/ trigraph closing a comment', `x *??/\n/ ${code} /*`],
    ['*/', `x */ ${code} /*`],
    ['quotes', `"); } ${code} static void q(void) { puts("`],
    ['a backslash before a quote', `\\"); } ${code} //`],
    ['NUL bytes and digits after control bytes', `a\u0000b\u00011\u00077\u0000"); ${code}`],
    ['non-ASCII', 'é 漢字 🙂 \u0085 \u2028 \ufeff'],
    ['terminal escape codes', '\u001b[2J\u001b]0;pwned\u0007\u001b[31mred\u009b1m'],
    ['format strings', '%n%n%s%s%x%p%99999999d'],
    ['#include lines', `\n#include "/etc/passwd"\n#define main pwn\n${code}\n`],
    ['String.replace patterns', "$' $& $` $1 $$"],
    ['every trigraph', "??= ??( ??) ??< ??> ??' ??! ??- ??/"],
    ['a long string', `${'x'.repeat(5000)}\\\n${code}`],
  ];
};

/** A file name for `payload` (no slash, no NUL, at most 200 bytes). */
const fileName = (payload: string): string => {
  let name = payload.split('/').join('_').split('\u0000').join('_');
  while (Buffer.byteLength(name) > 200) name = [...name].slice(0, -1).join('');
  return `${name}.json`;
};

/**
 * An evidence replay with every free-text field set to `payload`, under a name made of it. The
 * invariant stays a known id: the replay reader refuses any other (test/bad-input.test.ts), so the
 * tests hand the hostile invariant to exportTitle directly, as a reader that let it through would.
 */
function hostileReplay(payload: string): string {
  const json = JSON.parse(BASE);
  json.failure = { invariant: json.failure.invariant, messages: [payload, `second ${payload}`] };
  json.path = payload;
  json.outcomes = json.commands.map(() => ({ spec: payload, engine: payload, kernel: payload }));
  const sub = join(dir, randomBytes(4).toString('hex'));
  mkdirSync(sub);
  const file = join(sub, fileName(payload));
  writeFileSync(file, JSON.stringify(json));
  return file;
}

/** The lines the program prints first: the title, the configuration, the recorded messages. */
const header = (title: string, messages: readonly string[]): Buffer =>
  Buffer.from(
    [
      `${title}\n  expectations: the spec, x86, series none (upstream)\n`,
      ...messages.map((m) => `  recorded: ${m}\n`),
    ].join(''),
  );

describe.skipIf(!gcc)('export --c of hostile replay files', () => {
  const marker = join(tmpdir(), `PWNED-${randomBytes(6).toString('hex')}`);
  afterAll(() => rmSync(marker, { force: true })); // only there if a test failed

  test.each(payloads(marker))('%s: compiles, prints the strings back exactly, runs nothing', (_what, payload) => {
    const file = hostileReplay(payload);
    const replay = readReplay(file);
    const title = exportTitle(file, payload);
    const source = exportC(replay, title);
    // Bytes outside printable ASCII never reach the source, and no two `?` can make a trigraph.
    expect(Buffer.from(source).every((b) => b === 0x0a || (b >= 0x20 && b <= 0x7e))).toBe(true);
    expect(source).not.toContain('??');
    const name = randomBytes(4).toString('hex');
    for (const flags of [[], ['-trigraphs']]) {
      const exe = build(`${name}${flags.join('')}`, source, flags);
      const r = spawnSync(exe, { encoding: 'buffer' });
      const want = header(title, replay.failure.messages);
      expect(r.stdout.subarray(0, want.length).equals(want)).toBe(true);
      expect(r.status).toBe(honestExit);
      expect(existsSync(marker)).toBe(false);
    }
  });

  test('through the CLI: export writes the program, which builds and runs nothing injected', () => {
    const [, payload] = payloads(marker)[0]!;
    const file = hostileReplay(payload);
    const out = join(dir, 'cli-export.c');
    const r = spawnSync(process.execPath, [BIN, 'export', '--c', out, file], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const run = spawnSync(build('cli-export', readFileSync(out, 'utf8')), { encoding: 'buffer' });
    const want = header(exportTitle(file, 'kernel-agrees'), [payload, `second ${payload}`]);
    expect(run.stdout.subarray(0, want.length).equals(want)).toBe(true);
    expect(run.status).toBe(honestExit);
    expect(existsSync(marker)).toBe(false);
  });
});

const script = spawnSync('script', ['--version']).status === 0;

describe.skipIf(!gcc || !script)(`on a terminal (script(1) ${script ? 'present' : 'missing: skipped'})`, () => {
  test('a recorded string cannot drive the terminal: bytes outside printable ASCII show as \\ooo', () => {
    const file = hostileReplay('\u001b]0;pwned\u0007\u001b[2J é');
    const replay = readReplay(file);
    const exe = build('tty', exportC(replay, exportTitle(file, '\u001b]0;pwned\u0007\u001b[2J é')));
    const r = spawnSync('script', ['-qec', exe, '/dev/null'], { encoding: 'utf8' });
    expect(r.stdout).toContain('\\033]0;pwned\\007\\033[2J \\303\\251');
    expect(r.stdout).not.toContain('\u001b]');
    expect(r.stdout).not.toContain('\u001b[2J');
  });
});

/** The evidence replay with some fields changed, as a parsed replay file. */
const changed = (edit: (json: Record<string, unknown>) => void): ExportSource => {
  const json = JSON.parse(BASE);
  edit(json);
  const file = join(dir, `changed-${randomBytes(4).toString('hex')}.json`);
  writeFileSync(file, JSON.stringify(json));
  return readReplay(file);
};

/**
 * The evidence replay as a model-only arm64 failure: `replay` refuses a kvm replay for arm64 (the
 * backend drives x86 guests), so the file the exporter must refuse is an arm64 spec/engine one.
 */
function asArm64ModelReplay(json: Record<string, unknown>): void {
  json.arch = 'arm64';
  delete json.backend;
  json.invariants = ['differential'];
  json.failure = { invariant: 'differential', messages: ['arm64'] };
}

describe('what a C reproducer cannot honour is refused', () => {
  const refuses = (source: ExportSource, why: RegExp) => {
    expect(() => exportC(source, 'refused')).toThrow(InputError);
    expect(() => exportC(source, 'refused')).toThrow(why);
  };

  test('an arm64 replay (the guest code is x86)', () => {
    refuses(changed(asArm64ModelReplay), /is for arm64; a C reproducer drives an x86_64 guest/);
  });

  test('through the CLI: one error line, exit 2, nothing written', () => {
    const source = join(dir, 'arm64.json');
    const json = JSON.parse(BASE);
    asArm64ModelReplay(json);
    writeFileSync(source, JSON.stringify(json));
    const out = join(dir, 'arm64.c');
    const r = spawnSync(process.execPath, [BIN, 'export', '--c', out, source], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/^error: the replay is for arm64[^\n]*\n$/);
    expect(r.status).toBe(2);
    expect(existsSync(out)).toBe(false);
  });

  test('through the CLI: a replay file naming a kvm-adaptor mutant is refused (exit 2)', () => {
    const source = join(dir, 'kvm-mutant.json');
    writeFileSync(source, BASE.replace('"mutant": null', `"mutant": "${KVM_MUTANTS[0]}"`));
    const out = join(dir, 'kvm-mutant.c');
    const r = spawnSync(process.execPath, [BIN, 'export', '--c', out, source], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/^error: [^\n]*mutant[^\n]*\n$/);
    expect(r.status).toBe(2);
    expect(existsSync(out)).toBe(false);
  });

  test('a kvm-adaptor mutant (the reproducer runs the adaptor unmutated)', () => {
    const replay = changed(() => {});
    for (const m of KVM_MUTANTS) refuses({ ...replay, mutant: m }, new RegExp(`kvm-adaptor mutant ${m}`));
  });

  test('a proposed series, a race, a private access', () => {
    const replay = changed(() => {});
    refuses({ ...replay, model: makeConfig(['memfault-2023']) }, /proposed series/);
    const access = { kind: 'guestAccess' as const, vcpu: 0, gpa: 0, len: 8, write: false, value: 0n };
    const race: Command = { kind: 'raceAccess', access, host: { kind: 'munmap', hva: 0x1000000000, size: 0x1000 } };
    refuses({ ...replay, commands: [race] }, /cannot be forced on a real kernel/);
    refuses({ ...replay, commands: [{ ...access, private: true }] }, /proposed series are model-only/);
  });

  test.each<[string, Command]>([
    ['a host write into the program itself', { kind: 'hostWrite', hva: 0x400000, len: 8, value: 0x90n }],
    ['an mmap over low memory', { kind: 'mmap', hva: 0x10000, size: 0x1000, prot: 'rw', backing: 'anon' }],
    ['a munmap of everything', { kind: 'munmap', hva: 0x1000, size: 0x7fffffffe000 }],
    ['a mapping past the window', { kind: 'mmap', hva: 0x7fffffe000, size: 0x4000, prot: 'rw', backing: 'anon' }],
    [
      'the harness slot',
      { kind: 'setMemslot', api: 'v2', slot: 32000, as: 0, flags: 0, gpa: 0, size: 0x1000, hva: 0x1000000000 },
    ],
    [
      "the harness's guest range",
      { kind: 'setMemslot', api: 'v2', slot: 1, as: 0, flags: 0, gpa: 0xf0000000, size: 0x1000, hva: 0x1000000000 },
    ],
    [
      'a guest access to the harness page',
      { kind: 'guestAccess', vcpu: 0, gpa: 0xf0000ff8, len: 8, write: true, value: 1n },
    ],
  ])('%s (the harness keeps it for itself)', (_what, cmd) => {
    refuses({ ...changed(() => {}), commands: [cmd] }, /touches what the helper keeps for itself/);
  });

  test('an integer that is not an exact 64-bit word (readReplay lets no such number through: a caller might)', () => {
    const replay = changed(() => {});
    refuses({ ...replay, commands: [{ kind: 'checkExtension', cap: 2 ** 70 }] }, /is not an exact integer/);
    refuses({ ...replay, commands: [{ kind: 'checkExtension', cap: 0.5 }] }, /is not an exact integer/);
  });
});

describe('an engine mutant is honoured', () => {
  const replay = changed(() => {});
  const mutant = MUTANT_NAMES[0]!;

  test("the expectations are the spec's, unchanged; the program says which mutant found the replay", () => {
    const plain = reproData(replay, 'title').split('\n');
    const mutated = reproData({ ...replay, mutant }, 'title').split('\n');
    const differ = mutated.filter((line, i) => line !== plain[i]);
    expect(differ).toEqual([`static const struct text repro_mutant = TEXT(${cString(mutant, 72)});`]);
  });

  test.skipIf(!gcc)('the program prints the mutant and exits as without it', () => {
    const r = spawnSync(build('engine-mutant', exportC({ ...replay, mutant }, 'title')), { encoding: 'utf8' });
    expect(r.stdout).toContain(`  found against engine mutant ${mutant}\n`);
    expect(r.status).toBe(honestExit);
  });
});

test('the default repro-data.h (repro-main.c compiles on its own with it) is what the exporter writes', () => {
  const source: ExportSource = {
    arch: 'x86',
    mutant: null,
    commands: [{ kind: 'checkExtension', cap: 16 }],
    model: UPSTREAM_CONFIG,
    failure: { messages: [] },
  };
  const title = 'kvm-memmodel reproducer (the default data: KVM_CHECK_EXTENSION(KVM_CAP_SYNC_MMU))';
  // On a change of the data format, rewrite the file with reproData(source, title).
  expect(readFileSync(join(nativeDir, 'repro-data.h'), 'utf8')).toBe(reproData(source, title));
});

test.skipIf(!gcc)('repro-main.c compiles on its own (the default data) and runs', () => {
  const out = join(dir, 'repro-default');
  const r = spawnSync('gcc', ['-O1', ...WARNINGS, '-o', out, join(nativeDir, 'repro-main.c')], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const run = spawnSync(out, { encoding: 'utf8' });
  expect(run.status).toBe(probe.usable ? 0 : 77);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));
