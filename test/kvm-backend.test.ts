// The real kernel as the third backend: a campaign agrees with the spec under the platform profile
// of this machine; without the profile the recorded deviations fail the run (never absorbed); every
// piece of recorded evidence still reproduces; the adaptor mutant is killed by kernel-agrees.
import { afterAll, describe, expect, test } from 'vitest';
import { UPSTREAM_CONFIG, makeConfig } from '../model/series.js';
import { readReplay, runReplay } from '../src/harness/replay.js';
import { runCampaign } from '../src/harness/runner.js';
import { KvmBackend } from '../src/kvm/backend.js';
import { evidencePath, loadProfile } from '../src/kvm/platform.js';
import { probeMachine } from '../src/kvm/helper.js';
import { OP } from '../src/kvm/protocol.js';
import type { Command } from '../model/commands.js';
import { INVARIANT_IDS } from '../properties/invariants.js';

const probe = probeMachine();
const why = probe.usable ? 'present' : `skipped: ${probe.reason}`;
const profile = loadProfile('pvm-6.18');
const platformModel = makeConfig(
  [],
  {},
  profile.deviations.map((d) => d.id),
);

describe.skipIf(!probe.usable)(`kvm backend against /dev/kvm (${why})`, () => {
  const opened = KvmBackend.open();
  const backend = 'skipped' in opened ? undefined : opened;
  afterAll(() => backend?.close());
  const kernel = () => ({ backend: backend!, profile });

  test('spec, engine and kernel agree for 400 sequences under the platform profile', () => {
    const result = runCampaign({
      arches: ['x86'],
      seed: 20261121,
      runs: 400,
      maxCommands: 40,
      invariants: [...INVARIANT_IDS],
      mutant: null,
      model: platformModel,
      kernel: kernel(),
    });
    expect(result.failure?.messages).toBeUndefined();
    expect(result.ok).toBe(true);
    expect(result.coverage.get('kernel agrees guestAccess')).toBeGreaterThan(1000);
    expect(result.coverage.get('kernel agrees getDirtyLog')).toBeGreaterThan(50);
  });

  test('without the profile the upstream spec fails on this kernel: a deviation is never silently absorbed', () => {
    const result = runCampaign({
      arches: ['x86'],
      seed: 1,
      runs: 2000,
      maxCommands: 40,
      invariants: ['kernel-agrees'],
      mutant: null,
      model: UPSTREAM_CONFIG,
      kernel: kernel(),
    });
    expect(result.ok).toBe(false);
    expect(result.failure!.invariant).toBe('kernel-agrees');
    expect(result.failure!.steps.length).toBeLessThanOrEqual(3);
  });

  for (const d of profile.deviations) {
    for (const e of d.evidence) {
      test(`evidence ${e.file} still shows ${d.id}, and the platform spec explains it`, () => {
        const replay = readReplay(evidencePath(profile, e));
        const upstream = runReplay({ ...replay, model: UPSTREAM_CONFIG }, kernel());
        expect(upstream.violation?.invariant).toBe('kernel-agrees');
        expect(upstream.steps.length).toBe(replay.commands.length);
        const withDeviation = runReplay({ ...replay, model: makeConfig([], {}, [d.id]) }, kernel());
        expect(withDeviation.violation).toBeNull();
      });
    }
  }

  const HVA = 0x10_0000_0000;
  const seq: Command[] = [
    { kind: 'mmap', hva: HVA, size: 0x2000, prot: 'rw', backing: 'anon' },
    { kind: 'hostWrite', hva: HVA, len: 8, value: 7n },
    { kind: 'hostRead', hva: HVA, len: 8 },
  ];

  test('a helper killed between sequences: the next sequence runs again in a fresh helper and succeeds', () => {
    const own = KvmBackend.open();
    if ('skipped' in own) throw new Error(own.skipped);
    try {
      expect(own.run(seq).died).toBeUndefined();
      process.kill(own.helperPid!, 'SIGKILL');
      const run = own.run(seq);
      expect(run.died).toBeUndefined();
      expect(run.results[2]).toEqual({ kind: 'hostData', value: 7n });
      expect(own.retries).toBe(1);
      expect(own.restarts).toBe(1);
    } finally {
      own.close();
    }
  });

  test('a helper that dies on the same command twice is reported as retried, with the command index', () => {
    const own = KvmBackend.open();
    if ('skipped' in own) throw new Error(own.skipped);
    process.env.KVM_MEMMODEL_HELPER_CRASH_OP = String(OP.hostWrite); // read by each helper at its start
    try {
      const run = own.run(seq);
      expect(run.died).toMatchObject({ at: 1, retried: true, how: expect.stringMatching(/signal 11/) });
      expect(run.results).toHaveLength(1);
      expect(own.retries).toBe(1);
    } finally {
      delete process.env.KVM_MEMMODEL_HELPER_CRASH_OP;
      own.close();
    }
  });

  test('mutant kvm-adaptor-drops-readonly is killed by kernel-agrees', () => {
    const mutated = KvmBackend.open('kvm-adaptor-drops-readonly');
    if ('skipped' in mutated) throw new Error(mutated.skipped);
    try {
      const result = runCampaign({
        arches: ['x86'],
        seed: 1,
        runs: 2000,
        maxCommands: 40,
        invariants: ['kernel-agrees'],
        mutant: null,
        model: platformModel,
        kernel: { backend: mutated, profile },
      });
      expect(result.failure?.invariant).toBe('kernel-agrees');
    } finally {
      mutated.close();
    }
  });
});
