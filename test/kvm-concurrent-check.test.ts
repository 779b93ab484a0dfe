// check --threads N --backend kvm (src/harness/kernel-concurrent.ts): the campaign on /dev/kvm
// passes under the platform's profile and finds the platform's deviations without it (a real
// failure, shrunk, with its replay and timeline, that `replay` re-runs on the kernel); bad kernel
// concurrent replays are one error line; which cases the campaign generates depends on the seed only.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import type { ConcurrentCase } from '../model/history.js';
import { makeConfig, UPSTREAM_CONFIG } from '../model/series.js';
import { bigintAsHex } from '../model/outcomes.js';
import { concurrentArbitraryFor } from '../properties/concurrent-generators.js';
import { resolveThreads } from '../properties/concurrent-generators.js';
import fc from 'fast-check';
import { KvmBackend } from '../src/kvm/backend.js';
import type { ConcurrentKernelRun } from '../src/kvm/concurrent.js';
import { concurrentSeed } from '../src/harness/concurrent-campaign.js';
import { concreteCase, runKernelConcurrentCampaign } from '../src/harness/kernel-concurrent.js';
import { Session } from '../src/harness/session.js';
import { BIN, startCli } from './child.js';

const opened = KvmBackend.open();
const why = 'skipped' in opened ? `skipped: ${opened.skipped}` : 'present';
if (!('skipped' in opened)) opened.close();

const dir = mkdtempSync(join(tmpdir(), 'kvm-memmodel-kcli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cli(args: readonly string[], timeout = 120_000) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    timeout,
    env: { ...process.env, NO_COLOR: '1' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const never = { requested: () => false };
const stand = { canHugetlb: true, canUserfaultfd: true };
const key = (c: ConcurrentCase): string => JSON.stringify(c, bigintAsHex);

describe('which cases the kernel campaign generates', () => {
  /** The campaign with a stand-in kernel that records each case and leaves it out (nothing runs). */
  async function casesOf(seed: number): Promise<string[]> {
    const seen: string[] = [];
    const runCase = (c: ConcurrentCase): ConcurrentKernelRun => {
      seen.push(key(c));
      return { kind: 'left-out', where: 'case', step: 0, command: '', reason: 'recorded by the test' };
    };
    const config = { seed, runs: 40, threads: [2, 3], invariants: ['linearizable' as const], model: UPSTREAM_CONFIG };
    const result = await runKernelConcurrentCampaign({ ...config, backend: stand, runCase }, never);
    expect(result.ok).toBe(true);
    expect(result.summary.leftOut.get('recorded by the test')).toBe(80);
    return seen;
  }

  test('the same seed gives the same cases, another seed others', async () => {
    const a = await casesOf(11);
    expect(a).toHaveLength(80);
    expect(await casesOf(11)).toEqual(a);
    const b = await casesOf(12);
    expect(b.filter((c, i) => c === a[i]).length).toBeLessThan(5);
  });

  test("they are the engine campaign's cases for the same seed and generator limits", async () => {
    const seen: ConcurrentCase[] = [];
    const runCase = (c: ConcurrentCase): ConcurrentKernelRun => {
      seen.push(c);
      return { kind: 'left-out', where: 'case', step: 0, command: '', reason: 'recorded' };
    };
    const model = UPSTREAM_CONFIG;
    const config = { seed: 5, runs: 10, threads: [2], invariants: ['linearizable' as const], model };
    await runKernelConcurrentCampaign({ ...config, backend: stand, runCase }, never);
    // fast-check's generation from the same seed, made concrete as the engine's runner does
    // (harness/concurrent.ts: the setup stepped in a Session, the threads resolved after it).
    const arbitrary = concurrentArbitraryFor(model, 2, { races: false, hugetlb: true, upstreamEpisodes: true });
    const templates = fc.sample(arbitrary, { seed: concurrentSeed(5, 2, 'x86'), numRuns: 10 });
    const engine = templates.map((t) => {
      const session = new Session({ arch: 'x86', mutant: null, invariants: new Set(), model });
      for (const s of t.setup) session.step(s);
      return key({
        ...t,
        setup: session.steps.map((s) => s.cmd),
        threads: resolveThreads(session.spec, t.roles, t.threads),
      });
    });
    expect(seen.map(key)).toEqual(engine);
    expect(key(concreteCase(model, templates[0]!).case)).toBe(engine[0]);
  });
});

describe('bad kernel concurrent replays', () => {
  const replay = (roles: unknown, threads: unknown) => ({
    format: 'kvm-memmodel-replay',
    version: 1,
    arch: 'x86',
    mutant: null,
    invariants: ['kernel-agrees', 'linearizable'],
    seed: 1,
    path: '',
    backend: 'kvm',
    failure: { invariant: 'linearizable', messages: ['crafted'] },
    commands: [{ kind: 'mmap', hva: 0x10_0000_0000, size: 0x1000, prot: 'rw', backing: 'anon' }],
    concurrent: { roles, threads, schedule: [] },
  });
  const munmap = { kind: 'munmap', hva: 0x10_0000_0000, size: 0x1000 };
  const cases: [string, unknown, RegExp][] = [
    ['a VMM call on a vCPU thread', replay([{ kind: 'vcpu', vcpu: 0 }], [[munmap]]), /may run only guestAccess/],
    [
      'a vCPU the helper does not have',
      replay([{ kind: 'vcpu', vcpu: 2 }, { kind: 'vmm' }], [[], [munmap]]),
      /vCPUs 0\.\.1|vcpu/,
    ],
    ['roles and threads that differ in number', replay([{ kind: 'vmm' }], [[munmap], [munmap]]), /concurrent|roles/],
  ];
  for (const [name, body, message] of cases)
    test(`${name}: one error line, exit 2 (replay and export)`, () => {
      const file = join(dir, `${name.replace(/\W+/g, '-')}.json`);
      writeFileSync(file, JSON.stringify(body));
      for (const args of [
        ['replay', file],
        ['export', '--c', join(dir, 'out.c'), file],
      ]) {
        const r = cli(args);
        expect(r.status, r.stderr).toBe(2);
        expect(r.stdout).toBe('');
        const lines = r.stderr.trimEnd().split('\n');
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(/^error: /);
        expect(lines[0]).toMatch(message);
      }
      expect(existsSync(join(dir, 'out.c'))).toBe(false);
    });

  test('--attempts applies to kernel concurrent replays only; an engine mutant to no kernel threads', () => {
    const engine = join(dir, 'engine.json');
    writeFileSync(engine, JSON.stringify({ ...replay([{ kind: 'vmm' }], [[munmap]]), backend: 'model' }));
    const r = cli(['replay', engine, '--attempts', '3']);
    expect([r.status, r.stderr]).toEqual([2, expect.stringMatching(/^error: --attempts applies to a concurrent/)]);
    const m = cli(['check', '--threads', '2', '--backend', 'kvm', '--mutant', 'notifier-skips-invalidate-begin']);
    expect([m.status, m.stderr]).toEqual([2, expect.stringMatching(/^error: mutant .* mutates the engine/)]);
    const inv = cli(['check', '--threads', '2', '--backend', 'kvm', '--invariant', 'bbm']);
    expect([inv.status, inv.stderr]).toEqual([
      2,
      expect.stringMatching(/^error: check --threads --backend kvm checks/),
    ]);
  });
});

describe.skipIf('skipped' in opened)(`check --threads N --backend kvm on /dev/kvm (${why})`, () => {
  test('--threads 2 --runs 30 under the platform profile passes, every case judged', () => {
    const r = cli(['check', '--threads', '2', '--backend', 'kvm', '--platform', 'pvm-6.18', '--runs', '30']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/invariants: kernel-agrees, linearizable\n/);
    const judged = Number(/ {2}(\d+) concurrent cases \(2 threads/.exec(r.stdout)?.[1]);
    const left = [...r.stdout.matchAll(/left out for the kernel: (\d+) cases/g)].reduce((n, m) => n + Number(m[1]), 0);
    expect(judged + left).toBe(30);
    expect(judged).toBeGreaterThan(20);
    expect(r.stdout).toMatch(/^PASS no invariant violated in \d+ concurrent cases on the kernel/m);
  });

  test('SIGINT stops the campaign at the next case: what it did is printed, exit 130', async () => {
    const args = ['check', '--threads', '3', '--backend', 'kvm', '--platform', 'pvm-6.18', '--runs', '100000'];
    const child = startCli([...args, '--seed', '3', '--replay-dir', dir]);
    await child.waitFor(/invariants: kernel-agrees, linearizable/);
    await new Promise((r) => setTimeout(r, 1500));
    child.proc.kill('SIGINT');
    const { code } = await child.exited;
    expect(code, child.out() + child.err()).toBe(130);
    expect(child.err()).toMatch(/SIGINT: stopping after the current run/);
    expect(child.out()).toMatch(/^INTERRUPTED by SIGINT after \d+ runs \(\d+ commands\): nothing found so far$/m);
    expect(child.out()).not.toMatch(/^PASS/m);
  });

  test('without the profile it finds the kernel differing from upstream: shrunk, replay and timeline written', () => {
    const out = mkdtempSync(join(dir, 'replays-'));
    const args = ['check', '--threads', '2', '--backend', 'kvm', '--runs', '200', '--seed', '2', '--replay-dir', out];
    const r = cli(args);
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^FAIL invariant (kernel-agrees|linearizable)$/m);
    expect(r.stdout).toMatch(/then 2 threads, interleaved:/);
    const files = readdirSync(out);
    const replay = files.find((f) => f.endsWith('.json'))!;
    expect(replay).toBeDefined();
    const recorded = JSON.parse(readFileSync(join(out, replay), 'utf8'));
    expect(recorded.backend).toBe('kvm');
    expect(recorded.concurrent.roles).toHaveLength(2);
    if (recorded.failure.invariant === 'linearizable') expect(files.some((f) => f.endsWith('.svg'))).toBe(true);
    // replay re-runs it on the kernel and counts the failing runs; under the profile it passes.
    const again = cli(['replay', join(out, replay), '--attempts', '5']);
    expect(again.stdout).toMatch(/ran the case 5 times on the kernel: (\d+) failed/);
    const failed = Number(/: (\d+) failed/.exec(again.stdout)![1]);
    expect(again.status).toBe(failed > 0 ? 1 : 0);
    const platform = { ...recorded, model: { series: [], options: {}, platform: platformIds() } };
    const file = join(out, 'with-profile.json');
    writeFileSync(file, JSON.stringify(platform));
    const pass = cli(['replay', file, '--attempts', '5']);
    expect(pass.stdout).toMatch(/ran the case 5 times on the kernel: 0 failed/);
    expect(pass.status).toBe(0);
  });
});

const gcc = spawnSync('gcc', ['--version']).status === 0;
describe.skipIf('skipped' in opened || !gcc)(`export --c of a concurrent replay (${why}; gcc ${gcc})`, () => {
  test("a mutant's non-linearizable engine history: the kernel's runs fit the spec's orders in real time", () => {
    const out = mkdtempSync(join(dir, 'mutant-'));
    const args = ['check', '--threads', '2', '--arch', 'x86', '--invariant', 'linearizable'];
    const found = cli([
      ...args,
      '--mutant',
      'dirty-harvest-not-atomic',
      '--runs',
      '500',
      '--seed',
      '1',
      '--replay-dir',
      out,
    ]);
    expect(found.stdout).toMatch(/^FAIL invariant linearizable$/m);
    const file = join(out, readdirSync(out).find((f) => f.endsWith('.json'))!);
    // Judged under this machine's profile: the kernel is not the mutant, so no attempt may fail.
    const recorded = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...recorded, model: { series: [], options: {}, platform: platformIds() } }));
    const source = join(out, 'repro.c');
    const exported = cli(['export', '--c', source, file]);
    expect(exported.status, exported.stderr).toBe(0);
    expect(exported.stdout).toMatch(/then 2 threads \(\d+ commands\) run until/);
    const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-pthread', '-o', join(out, 'repro'), source], {
      encoding: 'utf8',
    });
    expect(cc.stderr).toBe('');
    const run = spawnSync(join(out, 'repro'), ['40'], { encoding: 'utf8', timeout: 120_000 });
    expect(run.stdout).toMatch(/recorded: no sequential order of the \d+ commands/);
    expect(run.stdout).toMatch(/order graph: \d+ nodes, \d+ edges/);
    const seen = /NOT SEEN in 40 attempts: .* \((\d+) with calls of different threads overlapping\)/.exec(run.stdout);
    expect(seen, run.stdout).not.toBeNull();
    expect(Number(seen![1])).toBeLessThanOrEqual(40);
    expect(run.status).toBe(0);
  });
});

function platformIds(): readonly string[] {
  return makeConfig([], {}, ['fault-as-mmio', 'gmem-faults-via-hva', 'single-address-space']).platform ?? [];
}
