// C reproducers: every piece of recorded evidence exports to a program gcc compiles with
// -Wall -Werror; on /dev/kvm it reproduces the deviation (exit 1, the differing step printed), and
// the same commands checked against the platform spec match (exit 0).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { makeConfig } from '../model/series.js';
import { readReplay } from '../src/harness/replay.js';
import { InputError } from '../src/util/errors.js';
import { exportC } from '../src/kvm/export-c.js';
import { probeMachine } from '../src/kvm/helper.js';
import { evidencePath, loadProfile } from '../src/kvm/platform.js';

const gcc = spawnSync('gcc', ['--version']).status === 0;
const probe = probeMachine();
const profile = loadProfile('pvm-6.18');
const dir = mkdtempSync(join(tmpdir(), 'kvm-memmodel-export-'));

function build(name: string, source: string): string {
  const c = join(dir, `${name}.c`);
  writeFileSync(c, source);
  const out = join(dir, name);
  const r = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', out, c], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return out;
}

const evidence = profile.deviations.flatMap((d) => d.evidence.map((e) => [d.id, e.file, e] as const));

describe.skipIf(!gcc)(`export --c (gcc ${gcc ? 'present' : 'missing: skipped'})`, () => {
  test.each(evidence)('%s: %s compiles, and reproduces on the kernel', (id, _file, e) => {
    const replay = readReplay(evidencePath(profile, e));
    const upstream = build(`${id}-upstream`, exportC(replay.commands, replay.model, `evidence of ${id}`));
    const platform = build(
      `${id}-platform`,
      exportC(replay.commands, makeConfig([], {}, [id]), `evidence of ${id}, platform spec`),
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

  test('a replay the kernel cannot run is refused with a clear error', () => {
    const race = {
      kind: 'raceAccess' as const,
      access: { kind: 'guestAccess' as const, vcpu: 0, gpa: 0, len: 8, write: false, value: 0n },
      host: { kind: 'munmap' as const, hva: 0x1000000000, size: 0x1000 },
    };
    expect(() => exportC([race], makeConfig([]), 'race')).toThrow(InputError);
    expect(() => exportC([race], makeConfig([]), 'race')).toThrow(/cannot be forced on a real kernel/);
  });
});
