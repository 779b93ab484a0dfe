// The command line as a user meets it: help, bad input (one line, exit 2, no stack trace),
// reproducible seeds, failures written to replay files and replayed exactly.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { probeMachine } from '../src/kvm/helper.js';

const BIN = fileURLToPath(new URL('../bin/kvm-memmodel.js', import.meta.url));
const cli = (...args: string[]) => cliWith({}, ...args);
const cliWith = (env: Record<string, string>, ...args: string[]) => {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};
const tmp = () => mkdtempSync(join(tmpdir(), 'kvm-memmodel-cli-'));

describe('help', () => {
  test('documents every command and option', () => {
    const top = cli('--help');
    expect(top.status).toBe(0);
    for (const word of ['check', 'replay', 'mutants', 'series', 'invariants']) expect(top.stdout).toContain(word);
    const check = cli('check', '--help');
    for (const opt of [
      '--seed',
      '--runs',
      '--arch',
      '--invariant',
      '--mutant',
      '--max-commands',
      '--replay-dir',
      '--series',
      '--option',
    ])
      expect(check.stdout).toContain(opt);
  });
});

describe('bad input: one line on stderr, exit 2, no stack trace', () => {
  const malformed = join(tmp(), 'bad.json');
  writeFileSync(
    malformed,
    JSON.stringify({
      format: 'kvm-memmodel-replay',
      version: 1,
      arch: 'x86',
      mutant: null,
      invariants: ['bbm'],
      seed: 1,
      path: '',
      failure: { invariant: 'bbm', messages: [] },
      commands: [{ kind: 'guestAccess', vcpu: 0, gpa: 0, len: 8, write: true, value: 12 }],
    }),
  );
  const badSeries = join(tmp(), 'series.json');
  writeFileSync(
    badSeries,
    JSON.stringify({
      format: 'kvm-memmodel-replay',
      version: 1,
      arch: 'x86',
      mutant: null,
      invariants: ['bbm'],
      seed: 1,
      path: '',
      failure: { invariant: 'bbm', messages: [] },
      commands: [{ kind: 'checkExtension', cap: 1 }],
      model: { series: ['warp-drive'], options: {} },
    }),
  );
  const badProfile = join(tmp(), 'profile.json');
  writeFileSync(
    badProfile,
    JSON.stringify({
      format: 'kvm-memmodel-platform',
      version: 1,
      name: 'x',
      kernel: 'k',
      description: '',
      deviations: [{ id: 'faster-than-light', evidence: [] }],
    }),
  );
  const raceReplay = join(tmp(), 'race.json');
  writeFileSync(
    raceReplay,
    JSON.stringify({
      format: 'kvm-memmodel-replay',
      version: 1,
      arch: 'x86',
      mutant: null,
      invariants: ['differential'],
      seed: 1,
      path: '',
      failure: { invariant: 'differential', messages: [] },
      commands: [
        {
          kind: 'raceAccess',
          access: { kind: 'guestAccess', vcpu: 0, gpa: 0, len: 8, write: false, value: '0x0' },
          host: { kind: 'munmap', hva: 4096, size: 4096 },
        },
      ],
    }),
  );
  const notJson = join(tmp(), 'not.json');
  writeFileSync(notJson, '{ nope');
  test.each([
    [['check', '--mutant', 'no-such-mutant'], /unknown mutant "no-such-mutant"/],
    [['check', '--invariant', 'tlb-coherent,bogus'], /unknown invariant "bogus"/],
    [['check', '--runs', 'abc'], /must be a decimal integer from 1/],
    [['check', '--runs', '0'], /must be from 1 to/],
    [['check', '--arch', 'mips'], /must be one of x86, arm64, all/],
    [['check', '--seed', '1.5'], /must be a decimal integer/],
    [['check', '--frobnicate'], /unknown option/],
    [['frobnicate'], /unknown command/],
    [['replay'], /missing required argument/],
    [['replay', '/nonexistent/replay.json'], /cannot read replay file .*: no such file/],
    [['replay', notJson], /not valid JSON/],
    [['replay', malformed], /malformed at commands\.0\.value/],
    [['check', '--series', 'userfault,nope'], /unknown series "nope"/],
    [
      ['check', '--option', 'unmapStrategy=turbo'],
      /option unmapStrategy must be one of slow, fast-disconnect, deferred-range/,
    ],
    [['check', '--option', 'warp=9'], /unknown option "warp"/],
    [['check', '--option', 'novalue'], /not name=value/],
    [['replay', badSeries], /malformed at model\.series\.0/],
    [['check', '--backend', 'qemu'], /must be model .* or kvm/],
    [['check', '--platform', 'pvm-6.18'], /--platform applies to the kvm backend/],
    [['check', '--backend', 'kvm', '--platform', 'nope'], /unknown platform profile "nope"/],
    [['check', '--backend', 'kvm', '--platform', badProfile], /platform profile .* is malformed at deviations\.0\.id/],
    [['check', '--backend', 'kvm', '--series', 'userfault'], /proposed series are model-only/],
    [['check', '--backend', 'kvm', '--arch', 'arm64'], /drives x86_64 guests/],
    [['check', '--mutant', 'kvm-adaptor-drops-readonly'], /add --backend kvm/],
    [['export', '--c', join(tmp(), 'x.c'), '/nonexistent/replay.json'], /cannot read replay file/],
    [['export', '--c', join(tmp(), 'x.c'), raceReplay], /cannot be forced on a real kernel/],
    [['export', raceReplay], /required option '--c <file>'/],
    [['conformance', '--backend', 'bochs'], /must be model .* or kvm/],
  ])('%j', (args, message) => {
    const r = cli(...args);
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^error: /);
    expect(lines[0]).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('check and replay', () => {
  test('the same seed prints the same campaign', () => {
    const strip = (s: string) => s.replace(/in [\d.]+ s \(\d+ commands\/s\)/, '');
    const a = cli('check', '--seed', '42', '--runs', '200', '--no-progress');
    const b = cli('check', '--seed', '42', '--runs', '200', '--no-progress');
    expect(a.status).toBe(0);
    expect(a.stdout).toContain('PASS');
    expect(strip(a.stdout)).toBe(strip(b.stdout));
  });

  test('a mutant is caught, written to a replay file, and replay reproduces it exactly', () => {
    const dir = tmp();
    const r = cli(
      'check',
      '--seed',
      '3',
      '--runs',
      '500',
      '--mutant',
      'unmap-skips-tlbi',
      '--replay-dir',
      dir,
      '--no-progress',
    );
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/FAIL invariant (tlb-coherent|differential)/);
    expect(r.stdout).toMatch(/spec: {3}.*\n\s+engine: /);
    const [file, ...more] = readdirSync(dir);
    // Named by arch, invariant, mutant, seed and a hash of the settings; written by rename (no temp left).
    expect(file).toMatch(/^x86-(tlb-coherent|differential)-unmap-skips-tlbi-seed3-[0-9a-f]{8}\.json$/);
    expect(more).toEqual([]);
    const replayed = cli('replay', join(dir, file!));
    expect(replayed.status).toBe(1);
    expect(replayed.stdout).toContain('reproduced: the same invariant fails as recorded');

    const fixed = JSON.parse(readFileSync(join(dir, file!), 'utf8'));
    fixed.mutant = null;
    const fixedFile = join(dir, 'fixed.json');
    writeFileSync(fixedFile, JSON.stringify(fixed));
    const passes = cli('replay', fixedFile);
    expect(passes.status).toBe(0);
    expect(passes.stdout).toContain('no longer reproduces');
  });

  test('a series mutant is caught with its series, and the replay file carries series and options', () => {
    const dir = tmp();
    const r = cli(
      'check',
      '--seed',
      '1',
      '--runs',
      '2000',
      '--arch',
      'arm64',
      '--series',
      'arm64-unmap',
      '--option',
      'unmapStrategy=fast-disconnect',
      '--mutant',
      'fast-unmap-skips-cmo',
      '--replay-dir',
      dir,
      '--no-progress',
    );
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('series arm64-unmap; options unmapStrategy=fast-disconnect');
    expect(r.stdout).toContain('--series arm64-unmap --option unmapStrategy=fast-disconnect');
    const [file] = readdirSync(dir);
    const saved = JSON.parse(readFileSync(join(dir, file!), 'utf8'));
    expect(saved.model).toEqual({ series: ['arm64-unmap'], options: { unmapStrategy: 'fast-disconnect' } });
    const replayed = cli('replay', join(dir, file!));
    expect(replayed.status).toBe(1);
    expect(replayed.stdout).toContain('reproduced: the same invariant fails as recorded');
  });

  test('series lists every series and option with its default', () => {
    const r = cli('series');
    expect(r.status).toBe(0);
    for (const word of [
      'userfault',
      'gmem-private',
      'arm64-lock',
      'memfault-2023',
      'exit-on-missing',
      'arm64-unmap',
      'zapOnUserfaultDisable',
      'OQ-7',
    ]) {
      expect(r.stdout).toContain(word);
    }
  });

  test('mutants --list names every mutant with its source', () => {
    const r = cli('mutants', '--list');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('dirty-bit-lost-on-fault');
    expect(r.stdout).toContain('BUG-5');
  });
});

describe('the kvm backend', () => {
  test('without a usable helper or /dev/kvm it is reported SKIPPED with the reason (exit 4), never PASS', () => {
    const r = cliWith(
      { KVM_MEMMODEL_HELPER: '/nonexistent/kvm-helper' },
      'check',
      '--backend',
      'kvm',
      '--runs',
      '10',
      '--no-progress',
    );
    expect(r.status).toBe(4);
    expect(r.stdout).toMatch(/SKIPPED kvm backend: .*(helper is not built|\/dev\/kvm)/);
    expect(r.stdout).not.toContain('PASS');
    const c = cliWith({ KVM_MEMMODEL_HELPER: '/nonexistent/kvm-helper' }, 'conformance', '--backend', 'kvm');
    expect(c.status).toBe(4);
  });

  const probe = probeMachine();
  const kvmWhy = probe.usable ? 'present' : `skipped: ${probe.reason}`;
  test.skipIf(!probe.usable)(
    `check --backend kvm --platform pvm-6.18 prints a summary of what ran and what was left out (${kvmWhy})`,
    () => {
      const r = cli(
        'check',
        '--backend',
        'kvm',
        '--platform',
        'pvm-6.18',
        '--runs',
        '150',
        '--seed',
        '7',
        '--no-progress',
      );
      expect(r.stdout).toContain('PASS');
      expect(r.stdout).toMatch(/kvm backend: 150 sequences ran in fresh VMs; helper restarts 0/);
      expect(r.stdout).toMatch(/left out for the kernel \(not generated\): a race inside the fault handler/);
      expect(r.stdout).toMatch(
        /platform profile pvm-6\.18 \(fault-as-mmio, gmem-faults-via-hva, single-address-space\)/,
      );
      expect(r.stdout).toMatch(/kernel agrees guestAccess/);
      expect(r.status).toBe(0);
    },
  );

  // Gap (a): a kvm-adaptor mutant is recorded in the replay, and replay opens the backend with it.
  test.skipIf(!probe.usable)(
    `a kvm-adaptor mutant's replay records the mutant and replay honours it (${kvmWhy})`,
    () => {
      const dir = tmp();
      const args = ['--backend', 'kvm', '--platform', 'pvm-6.18', '--mutant', 'kvm-adaptor-drops-readonly'];
      const r = cli('check', ...args, '--runs', '100', '--seed', '1', '--replay-dir', dir, '--no-progress');
      expect(r.status).toBe(1);
      const [file] = readdirSync(dir);
      const saved = JSON.parse(readFileSync(join(dir, file!), 'utf8'));
      expect(saved).toMatchObject({ mutant: 'kvm-adaptor-drops-readonly', backend: 'kvm' });
      const replayed = cli('replay', join(dir, file!));
      expect(replayed.stdout).toContain('mutant kvm-adaptor-drops-readonly');
      expect(replayed.stdout).toContain('reproduced: the same invariant fails as recorded');
      expect(replayed.status).toBe(1);
      // Without the mutant the same commands agree with the kernel: the mutant, not chance, made it fail.
      const fixedFile = join(dir, 'fixed.json');
      writeFileSync(fixedFile, JSON.stringify({ ...saved, mutant: null }));
      expect(cli('replay', fixedFile).status).toBe(0);
    },
  );
});

describe('invariants that cannot apply (series, arch, backend)', () => {
  const regression = fileURLToPath(new URL('./regression/thp-lookup-at-1g-aligned-hva.json', import.meta.url));
  const base = JSON.parse(readFileSync(regression, 'utf8'));

  // Gap (c): the header names what runs and counts what was skipped.
  test("check's header lists only the invariants that apply and counts the rest", () => {
    const r = cli('check', '--runs', '2', '--seed', '1', '--arch', 'x86', '--no-progress', '--replay-dir', tmp());
    const line = r.stdout.split('\n').find((l) => l.startsWith('  invariants: '))!;
    expect(line).toContain('differential');
    for (const id of ['kernel-agrees', 'userfault-enable-zaps', 'unmap-ordering', 'uffd-liveness'])
      expect(line).not.toContain(id);
    expect(line).toMatch(/\((\d+) more skipped: they do not apply to this configuration\)$/);
  });

  // Gap (b): replay runs what check would have run; inapplicable ones are dropped with a note.
  test('replay drops invariants that cannot apply, and says so', () => {
    const file = join(tmp(), 'extra.json');
    writeFileSync(
      file,
      JSON.stringify({ ...base, invariants: [...base.invariants, 'kernel-agrees', 'uffd-protocol'] }),
    );
    const r = cli('replay', file);
    expect(r.stdout).toContain('not run (they do not apply to this replay): kernel-agrees, uffd-protocol');
    // A regression replay: the bug it recorded is fixed, so the invariants that do apply pass.
    expect(r.stdout).toContain('no longer reproduces');
    expect(r.status).toBe(0);
  });

  test('replay refuses a replay whose recorded failure cannot apply to it', () => {
    const file = join(tmp(), 'kernel.json');
    const failure = { invariant: 'kernel-agrees', messages: [] };
    writeFileSync(file, JSON.stringify({ ...base, invariants: ['kernel-agrees'], failure }));
    const r = cli('replay', file);
    expect(r.stderr).toBe(
      'error: replay refused: its failure kernel-agrees cannot apply to an x86 replay ' +
        'with backend model, series none\n',
    );
    expect(r.stdout).toBe('');
    expect(r.status).toBe(2);
  });
});

describe('bounds that are not sizes', () => {
  test('a replay running past the time bound is refused as bad input, not left to hang', async () => {
    const { readReplay, runReplay } = await import('../src/harness/replay.js');
    const regression = fileURLToPath(new URL('./regression/thp-lookup-at-1g-aligned-hva.json', import.meta.url));
    expect(() => runReplay(readReplay(regression), undefined, 0)).toThrow(
      /^replay refused: still running after 0 s at command 2 of 5/,
    );
  });

  test('stdout a full device is one error line, exit 2; a closed pipe ends quietly', () => {
    const full = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" series > /dev/full`], { encoding: 'utf8' });
    expect(full.stderr).toBe('error: cannot write the output: no space left on device\n');
    expect(full.status).toBe(2);
    const pipe = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" mutants --list | head -c1 >/dev/null`], {
      encoding: 'utf8',
    });
    expect(pipe.stderr).toBe('');
  });
});
