// Helper faults survived, with real processes and real signals on /dev/kvm: a kill -9 of the helper
// mid-campaign is retried in a fresh helper and the campaign passes; a helper that dies twice on a
// sequence is a finding with a replay file and the campaign goes on; a SIGSTOP/SIGCONT storm (what
// Ctrl-Z and fg do to the process group) fails nothing; no run leaves a kvm-memmodel-* directory.
// And `replay` refuses a kvm replay holding a command check would never send to the kernel.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { readReplay } from '../src/harness/replay.js';
import { probeMachine } from '../src/kvm/helper.js';
import { HARNESS_GPA, OP } from '../src/kvm/protocol.js';
import { BIN, alive, startCli, waitForHelper } from './child.js';

const probe = probeMachine();
const why = probe.usable ? 'present' : `skipped: ${probe.reason}`;
const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'kvm-memmodel-faults-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const leftovers = (dir: string): string[] => readdirSync(dir).filter((n) => n.startsWith('kvm-memmodel-'));
const kvmCheck = (runs: number, replayDir: string): string[] =>
  [
    'check',
    '--backend',
    'kvm',
    '--platform',
    'pvm-6.18',
    '--runs',
    String(runs),
    '--seed',
    '5',
    '--no-progress',
  ].concat(['--replay-dir', replayDir]);

describe.skipIf(!probe.usable)(`helper faults against /dev/kvm (${why})`, () => {
  test('kill -9 of the helper mid-campaign: the sequence runs again in a fresh helper; PASS', async () => {
    const dir = tmp();
    const child = startCli(kvmCheck(400, join(dir, 'replays')), { TMPDIR: dir });
    const helper = await waitForHelper(child.proc.pid!);
    await new Promise((r) => setTimeout(r, 300));
    process.kill(helper, 'SIGKILL');
    const { code } = await child.exited;
    expect(child.err()).not.toMatch(/\n\s+at /); // no stack trace
    expect(code).toBe(0);
    expect(child.out()).toMatch(/^PASS no invariant violated in 400 runs/m);
    expect(child.out()).toMatch(/helper restarts 1; sequences run again after a helper death 1/);
    expect(existsSync(join(dir, 'replays'))).toBe(false); // not a finding: nothing to replay
    expect(leftovers(dir)).toEqual([]);
    expect(alive(helper)).toBe(false);
  });

  test('a helper dying twice on a sequence is a finding with a replay; the campaign goes on', async () => {
    const dir = tmp();
    const replays = join(dir, 'replays');
    // The helper's test hook: die of SIGSEGV on every mmap request.
    const child = startCli(kvmCheck(30, replays), { TMPDIR: dir, KVM_MEMMODEL_HELPER_CRASH_OP: String(OP.mmap) });
    const { code } = await child.exited;
    const out = child.out();
    expect(child.err()).not.toMatch(/\n\s+at /);
    expect(code).toBe(1);
    expect(out).toMatch(/^ {2}30 runs, /m); // every run was made
    expect(out).not.toMatch(/^PASS/m);
    expect(out).toMatch(/^FAIL \d+ kvm helper death finding\(s\) in 30 runs/m);
    expect(out).toMatch(
      /^FINDING kvm helper death in run \d+: the kvm helper killed by signal 11 \(SIGSEGV\) at step \d+ \(mmap\(/m,
    );
    expect(out).toMatch(/and again when the sequence ran in a fresh helper/);
    const files = readdirSync(replays);
    expect(files.length).toBeGreaterThan(0);
    const replay = readReplay(join(replays, files[0]!));
    expect(replay.backend).toBe('kvm');
    expect(replay.commands.at(-1)!.kind).toBe('mmap');
    expect(leftovers(dir)).toEqual([]);
    // The replay reproduces while the helper still dies there, and passes once it does not.
    const again = (env: Record<string, string>) =>
      spawnSync(process.execPath, [BIN, 'replay', join(replays, files[0]!)], {
        encoding: 'utf8',
        env: { ...process.env, NO_COLOR: '1', TMPDIR: dir, ...env },
      });
    const dies = again({ KVM_MEMMODEL_HELPER_CRASH_OP: String(OP.mmap) });
    expect(dies.status).toBe(1);
    expect(dies.stdout).toMatch(/killed by signal 11/);
    expect(again({}).status).toBe(0);
  });

  test('a SIGSTOP/SIGCONT storm of the CLI and its helper (Ctrl-Z, fg) fails no run', async () => {
    const dir = tmp();
    const child = startCli(kvmCheck(300, join(dir, 'replays')), { TMPDIR: dir });
    const node = child.proc.pid!;
    const helper = await waitForHelper(node);
    for (let i = 0; i < 60; i++) {
      for (const p of [node, helper]) process.kill(p, 'SIGSTOP');
      await new Promise((r) => setTimeout(r, 5));
      for (const p of [helper, node]) process.kill(p, 'SIGCONT');
      await new Promise((r) => setTimeout(r, 15));
    }
    const { code } = await child.exited;
    expect(child.out()).toMatch(/^PASS no invariant violated in 300 runs/m);
    expect(code).toBe(0);
    expect(leftovers(dir)).toEqual([]);
  });
});

describe.skipIf(!probe.usable)(`replay applies check's left-out rule before anything runs (${why})`, () => {
  const base = {
    format: 'kvm-memmodel-replay',
    version: 1,
    arch: 'x86',
    mutant: null,
    invariants: ['kernel-agrees'],
    seed: 1,
    path: '',
    failure: { invariant: 'kernel-agrees', messages: ['crafted'] },
    backend: 'kvm',
  };
  const HVA = 0x10_0000_0000;
  const cases: [string, unknown[], RegExp][] = [
    [
      'mmap(0x10000, MAP_FIXED)',
      [{ kind: 'mmap', hva: 0x10000, size: 0x1000, prot: 'rw', backing: 'anon' }],
      /step 1 \(mmap\(.*host memory outside/,
    ],
    // The munmap(0x1000, 0x7fffffffe000) is beyond the schema's 1 GiB bound (bad-input.test.ts);
    // the largest munmap a replay may hold, over the helper's own low memory, is refused by the window.
    ['munmap(0x1000, 1 GiB)', [{ kind: 'munmap', hva: 0x1000, size: 0x4000_0000 }], /step 1 \(munmap/],
    ['a host write outside the window', [{ kind: 'hostWrite', hva: 0x40_0000, len: 8, value: '0x1' }], /step 1/],
    [
      "a guest write into the helper's own page",
      [
        { kind: 'mmap', hva: HVA, size: 0x1000, prot: 'rw', backing: 'anon' },
        { kind: 'guestAccess', vcpu: 0, gpa: HARNESS_GPA, len: 8, write: true, value: '0x1' },
      ],
      /step 2 \(.*harness slot 32000/,
    ],
    [
      'a race',
      [
        {
          kind: 'raceAccess',
          access: { kind: 'guestAccess', vcpu: 0, gpa: 0, len: 8, write: false, value: '0x0' },
          host: { kind: 'munmap', hva: HVA, size: 0x1000 },
        },
      ],
      /step 1 .*mmu_invalidate_seq/,
    ],
    [
      'a series command',
      [{ kind: 'setMemoryAttributes', gpa: 0, size: 0x1000, attributes: 8, flags: 0 }],
      /step 1 .*model-only/,
    ],
  ];
  test.each(cases)('%s: refused with one line naming the step, exit 2', (_name, commands, reason) => {
    const dir = tmp();
    const file = join(dir, 'crafted.json');
    writeFileSync(file, JSON.stringify({ ...base, commands }));
    const r = spawnSync(process.execPath, [BIN, 'replay', file], {
      encoding: 'utf8',
      env: { ...process.env, NO_COLOR: '1', TMPDIR: dir },
    });
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^error: replay refused: /);
    expect(lines[0]).toMatch(reason);
    expect(r.stdout).not.toMatch(/PASS|reproduced/);
  });
});
