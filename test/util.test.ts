// src/util: escaping for the terminal, atomic writes, and replay names that carry the settings.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { UPSTREAM_CONFIG, makeConfig } from '../model/series.js';
import { replayFileName, type RunSettings } from '../src/harness/replay.js';
import type { Failure } from '../src/harness/runner.js';
import { escapeLine, escapeText, excerpt } from '../src/util/escape.js';
import { writeFileAtomic } from '../src/util/output-path.js';

test('escapeText: control and non-ASCII characters become \\xNN / \\uNNNN, backslashes are doubled', () => {
  expect(escapeText('ok \x1b[31mred\nline\x07 é ☃ 😀 \\')).toBe(
    'ok \\x1b[31mred\\x0aline\\x07 \\xe9 \\u2603 \\u{1f600} \\\\',
  );
  expect(escapeLine('already \\x1b escaped \x1b')).toBe('already \\x1b escaped \\x1b');
  expect(excerpt('a'.repeat(100), 5)).toBe('aaaaa...');
});

test('writeFileAtomic replaces the file and leaves no temporary file behind', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvm-memmodel-util-'));
  const file = join(dir, 'sub', 'x.json');
  writeFileAtomic(file, 'one\n');
  writeFileAtomic(file, 'two\n');
  expect(readFileSync(file, 'utf8')).toBe('two\n');
  expect(readdirSync(join(dir, 'sub'))).toEqual(['x.json']);
});

test('replay names: same seed, different series or invariants or runs never share a file', () => {
  const failure = { arch: 'x86', invariant: 'bbm' } as Failure;
  const base: RunSettings = {
    arches: ['x86', 'arm64'],
    seed: 7,
    model: UPSTREAM_CONFIG,
    invariants: ['bbm', 'differential'],
    mutant: null,
    backend: 'model',
    maxCommands: 40,
    runs: 100,
  };
  const variants: RunSettings[] = [
    base,
    { ...base, model: makeConfig(['userfault']) },
    { ...base, model: makeConfig([], { unmapStrategy: 'fast-disconnect' }) },
    { ...base, invariants: ['bbm'] },
    { ...base, runs: 101 },
    { ...base, maxCommands: 41 },
    { ...base, arches: ['x86'] },
    { ...base, backend: 'kvm' },
  ];
  const names = variants.map((s) => replayFileName('replays', failure, s));
  expect(new Set(names).size).toBe(variants.length);
  expect(names[0]).toMatch(/^replays\/x86-bbm-seed7-[0-9a-f]{8}\.json$/);
  expect(replayFileName('replays', failure, { ...base })).toBe(names[0]);
  expect(replayFileName('r', failure, { ...base, mutant: 'unmap-skips-tlbi' })).toMatch(
    /^r\/x86-bbm-unmap-skips-tlbi-seed7-[0-9a-f]{8}\.json$/,
  );
});
