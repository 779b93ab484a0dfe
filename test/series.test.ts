// The proposed series as extensions: each selectable alone and all together at a CI budget, the
// open-question options each exercised, the two review misses of S3 (BUG-1, BUG-5) found with short
// counterexamples, the demand-paging liveness property failing on the protocol mutants and passing
// otherwise, and a few spec rules pinned down directly.
import { describe, expect, test } from 'vitest';
import { KVM_EXIT_HLT, KVM_MEMORY_EXIT_FLAG_PRIVATE, KVM_MEM_LOG_DIRTY_PAGES, SZ_2M } from '../model/abi.js';
import type { Command } from '../model/commands.js';
import {
  KVM_ARM_LOCK_MEM_READ,
  KVM_ARM_LOCK_MEM_WRITE,
  KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK,
  KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
  KVM_CAP_X86_MEMORY_FAULT_EXIT,
  KVM_EXIT_MEMORY_FAULT_2023,
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
  KVM_MEMORY_EXIT_FLAG_USERFAULT,
  KVM_MEM_USERFAULT,
} from '../model/series-abi.js';
import { SERIES_NAMES, makeConfig, type SeriesName, type SeriesOptions } from '../model/series.js';
import { applyCommand } from '../model/spec.js';
import { newSpecState } from '../model/state.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { runMutant } from '../src/harness/kill-matrix.js';
import { runCampaign } from '../src/harness/runner.js';
import { DEFAULT_RUNS } from '../src/harness/budgets.js';

const CI_SEED = 20261121;
const CI_RUNS = 400;
const campaign = (series: readonly SeriesName[], options: Partial<SeriesOptions> = {}, runs = CI_RUNS) =>
  runCampaign({
    arches: ['x86', 'arm64'],
    seed: CI_SEED,
    runs,
    maxCommands: 40,
    invariants: INVARIANT_IDS,
    mutant: null,
    model: makeConfig(series, options),
  });

describe('every series passes alone and together', () => {
  test.each([...SERIES_NAMES, SERIES_NAMES.join(',')])('series %s', (list: string) => {
    const names = list.split(',') as SeriesName[];
    const result = campaign(names);
    expect(result.failure?.messages ?? []).toEqual([]);
    expect(result.runs).toBe(2 * CI_RUNS);
  });
});

describe('every open-question option away from its default still passes', () => {
  test.each<[SeriesName[], Partial<SeriesOptions>]>([
    [['userfault'], { zapOnUserfaultDisable: true }],
    [['gmem-private'], { rmpConversion: 'fault' }],
    [['arm64-lock'], { lockedDeleteErrno: 'EBUSY' }],
    [
      ['memfault-2023', 'exit-on-missing'],
      { memfaultReturn: 'zero', memfaultReasonFlags: true, arm64MemfaultAll: true, memfaultLength: 'mapping' },
    ],
    [['memfault-2023', 'exit-on-missing'], { memfaultOptIn: true, fastGupReadOnly: false }],
    [
      ['arm64-unmap'],
      { unmapStrategy: 'fast-disconnect', s2fwb: true, tlbiRange: false, s1FlushOnS2Invalidate: false },
    ],
    [['arm64-unmap'], { unmapStrategy: 'slow' }],
  ])('%j with %j', (series, options) => {
    const result = campaign(series, options, 250);
    expect(result.failure?.messages ?? []).toEqual([]);
  });
});

test('OQ-12: the 2023 opt-in without the exit_reason reset at KVM_RUN entry leaves stale payloads (BUG-7)', () => {
  const result = runCampaign({
    arches: ['x86'],
    seed: 1,
    runs: 3000,
    maxCommands: 40,
    invariants: ['memfault-contract'],
    mutant: null,
    model: makeConfig(['memfault-2023', 'exit-on-missing'], { memfaultOptIn: true, resetExitReasonOnEntry: false }),
  });
  expect(result.ok).toBe(false);
  expect(result.failure!.messages.join()).toContain('written by an earlier KVM_RUN');
});

describe('the harness finds the review misses of S3 on its own', () => {
  test('BUG-1 (logical-not reason check, S3/p04): one command', async () => {
    const row = await runMutant('memfault-reasons-logical-not', { runs: DEFAULT_RUNS, seed: 1, maxCommands: 40 });
    expect(row.killed).toBe(true);
    expect(row.shrunkLength).toBeLessThanOrEqual(2);
  });

  test('BUG-5 (lost dirty bit, S3/p11): a logged write GET_DIRTY_LOG misses, in <= 4 commands', async () => {
    const row = await runMutant('dirty-bit-lost-on-fault', {
      runs: DEFAULT_RUNS,
      seed: 1,
      maxCommands: 40,
      invariants: ['dirty-no-lost-write'],
    });
    expect(row.killed).toBe(true);
    expect(row.shrunkLength).toBeLessThanOrEqual(4);
  });
});

describe('demand-paging liveness (INV-21, INV-37)', () => {
  test.each([
    'demand-paging-eexist-kills-reader',
    'demand-paging-dontwake-without-wake',
    'demand-paging-populate-fallback-dead',
  ] as const)('%s makes the liveness property fail', async (mutant) => {
    const row = await runMutant(mutant, {
      runs: DEFAULT_RUNS,
      seed: 1,
      maxCommands: 40,
      invariants: ['uffd-liveness'],
    });
    expect(row.killed).toBe(true);
    expect(row.invariant).toBe('uffd-liveness');
  });

  test('the protocol as documented always makes progress, over many episodes', () => {
    const result = campaign(['exit-on-missing'], {}, 1500);
    expect(result.ok).toBe(true);
    expect(result.coverage.get('outcome demand-paging episode finished')).toBeGreaterThan(500);
    expect(result.coverage.get('outcome demand-paging episode STUCK')).toBe(0);
  });
});

describe('spec rules of the series', () => {
  const setup: Command[] = [
    { kind: 'mmap', hva: 0x10_0000_0000, size: SZ_2M, prot: 'rw', backing: 'anon' },
    { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 0, size: 0x10000, hva: 0x10_0000_0000 },
  ];
  const run = (arch: 'x86' | 'arm64', series: SeriesName[], cmds: Command[]) => {
    const state = newSpecState(arch, makeConfig(series));
    return {
      state,
      outcomes: [...setup, ...cmds].map((c) => applyCommand(state, c as Exclude<Command, { kind: 'raceAccess' }>)),
    };
  };

  test('userfault: a set bit exits USERFAULT on both arches; a mapping made before the bit may serve it', () => {
    for (const arch of ['x86', 'arm64'] as const) {
      const { outcomes } = run(
        arch,
        ['userfault'],
        [
          {
            kind: 'setMemslot',
            api: 'v2',
            slot: 0,
            as: 0,
            flags: KVM_MEM_USERFAULT,
            gpa: 0,
            size: 0x10000,
            hva: 0x10_0000_0000,
          },
          { kind: 'userfaultBits', slot: 0, as: 0, firstPage: 1, numPages: 1, set: true },
          { kind: 'guestAccess', vcpu: 0, gpa: 0x1008, len: 8, write: false, value: 0n },
        ],
      );
      expect(outcomes.at(-1)).toMatchObject({
        kind: 'run',
        rc: -1,
        errno: 'EFAULT',
        run: { payload: { kind: 'memoryFault', flags: KVM_MEMORY_EXIT_FLAG_USERFAULT, gpa: 0x1000, size: 0x1000 } },
      });
    }
    const v1 = run(
      'x86',
      ['userfault'],
      [
        {
          kind: 'setMemslot',
          api: 'v1',
          slot: 1,
          as: 0,
          flags: KVM_MEM_USERFAULT,
          gpa: 0x100000,
          size: 0x1000,
          hva: 0x10_0000_0000,
        },
      ],
    );
    expect(v1.outcomes.at(-1)).toEqual({ kind: 'err', errno: 'EINVAL' });
  });

  test('memfault-2023: cap 227 rejects unknown reason bits (INV-13), and its exit is numbered 38', () => {
    const { state, outcomes } = run(
      'x86',
      ['memfault-2023'],
      [
        { kind: 'enableCap', cap: KVM_CAP_X86_MEMORY_FAULT_EXIT, flags: 0, args0: 1 << 7 },
        { kind: 'enableCap', cap: KVM_CAP_X86_MEMORY_FAULT_EXIT, flags: 0, args0: 3 },
        { kind: 'mprotect', hva: 0x10_0000_0000, size: 0x1000, prot: 'none' },
        { kind: 'guestAccess', vcpu: 0, gpa: 0, len: 1, write: false, value: 0n },
      ],
    );
    expect(outcomes.slice(-4, -2)).toEqual([{ kind: 'err', errno: 'EINVAL' }, { kind: 'ok' }]);
    expect(state.memfaultExitReasons).toBe(3);
    expect(outcomes.at(-1)).toMatchObject({
      kind: 'run',
      rc: -1,
      errno: 'EFAULT',
      run: { exitReason: KVM_EXIT_MEMORY_FAULT_2023 },
    });
    expect(
      run(
        'arm64',
        ['memfault-2023'],
        [{ kind: 'enableCap', cap: KVM_CAP_X86_MEMORY_FAULT_EXIT, flags: 0, args0: 1 }],
      ).outcomes.at(-1),
    ).toEqual({ kind: 'err', errno: 'EINVAL' });
  });

  test('arm64-lock: check order and errnos (INV-27), no delete of a locked slot (INV-28)', () => {
    const lock = (args1: number, extra: Partial<Extract<Command, { kind: 'enableCap' }>> = {}): Command => ({
      kind: 'enableCap',
      cap: KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
      flags: KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK,
      args0: 0,
      args1,
      ...extra,
    });
    const { outcomes } = run(
      'arm64',
      ['arm64-lock'],
      [
        lock(KVM_ARM_LOCK_MEM_READ, { args2: 1 }),
        lock(KVM_ARM_LOCK_MEM_READ, { flags: 3 }),
        lock(KVM_ARM_LOCK_MEM_WRITE),
        lock(KVM_ARM_LOCK_MEM_READ | (1 << 5)),
        lock(KVM_ARM_LOCK_MEM_READ, { args0: 7 }),
        {
          kind: 'setMemslot',
          api: 'v2',
          slot: 0,
          as: 0,
          flags: KVM_MEM_LOG_DIRTY_PAGES,
          gpa: 0,
          size: 0x10000,
          hva: 0x10_0000_0000,
        },
        lock(KVM_ARM_LOCK_MEM_READ | KVM_ARM_LOCK_MEM_WRITE),
        lock(KVM_ARM_LOCK_MEM_READ),
        { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 0, size: 0, hva: 0x10_0000_0000 },
      ],
    );
    expect(outcomes.map((o) => (o.kind === 'err' ? o.errno : o.kind))).toEqual([
      'ok',
      'ok',
      'EINVAL',
      'EINVAL',
      'EINVAL',
      'EINVAL',
      'EINVAL',
      'ok',
      'EPERM',
      'ok',
      'EINVAL',
    ]);
  });

  // private_mem_kvm_exits_test
  test('gmem-private: a private access to a shared gfn or a slot without guest_memfd exits with PRIVATE', () => {
    const { outcomes } = run(
      'x86',
      ['gmem-private'],
      [
        { kind: 'guestAccess', vcpu: 0, gpa: 0x2000, len: 8, write: false, value: 0n, private: true },
        { kind: 'setMemoryAttributes', gpa: 0x2000, size: 0x1000, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE, flags: 0 },
        { kind: 'guestAccess', vcpu: 0, gpa: 0x2000, len: 8, write: false, value: 0n, private: true },
        { kind: 'guestAccess', vcpu: 0, gpa: 0x2000, len: 8, write: false, value: 0n },
        { kind: 'guestAccess', vcpu: 0, gpa: 0x3000, len: 8, write: false, value: 0n },
      ],
    );
    const payload = (flags: number) => ({
      kind: 'run',
      rc: -1,
      errno: 'EFAULT',
      run: { payload: { kind: 'memoryFault', flags, gpa: 0x2000, size: 0x1000 } },
    });
    expect(outcomes[2]).toMatchObject(payload(KVM_MEMORY_EXIT_FLAG_PRIVATE));
    expect(outcomes[4]).toMatchObject(payload(KVM_MEMORY_EXIT_FLAG_PRIVATE));
    expect(outcomes[5]).toMatchObject(payload(0));
    expect(outcomes[6]).toMatchObject({ kind: 'run', rc: 0, run: { exitReason: KVM_EXIT_HLT } });
  });
});
