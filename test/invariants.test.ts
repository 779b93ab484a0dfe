// The invariant mechanism (properties/invariant.ts): per-run state, applicability enforced by the
// registry (an explicitly named invariant that cannot apply is an error), and the RMP check that
// judges the engine's recorded RMP updates without knowing which mutant is on.
import { describe, expect, test } from 'vitest';
import type { Command } from '../model/commands.js';
import { KVM_MEM_GUEST_MEMFD } from '../model/abi.js';
import { KVM_MEMORY_ATTRIBUTE_PRIVATE } from '../model/series-abi.js';
import { makeConfig, type SeriesName } from '../model/series.js';
import { defineInvariant, inapplicable, type RunSetting } from '../properties/invariant.js';
import { applicabilityError, applicableInvariants, INVARIANTS, type InvariantId } from '../properties/invariants.js';
import { InvariantViolation, Session } from '../src/harness/session.js';
import type { MutantName } from '../src/mmu/mutant-registry.js';

const setting = (series: SeriesName[] = [], backend: RunSetting['backend'] = 'model'): RunSetting => ({
  series,
  arches: ['x86', 'arm64'],
  backend,
});

describe('applicability', () => {
  test('an invariant named explicitly that cannot apply is one error line naming the fix', () => {
    expect(applicabilityError(['kernel-agrees'], setting())).toBe('--invariant kernel-agrees needs --backend kvm');
    expect(applicabilityError(['differential', 'uffd-liveness'], setting())).toBe(
      '--invariant uffd-liveness needs --series exit-on-missing',
    );
    expect(applicabilityError(['cmo-coverage'], { ...setting(['arm64-unmap']), arches: ['x86'] })).toContain(
      'arm64 only',
    );
  });

  test('what applies is no error, and every invariant applies somewhere', () => {
    expect(applicabilityError(['kernel-agrees'], setting([], 'kvm'))).toBeNull();
    expect(applicabilityError(['uffd-liveness'], setting(['exit-on-missing']))).toBeNull();
    for (const inv of INVARIANTS) {
      const all: RunSetting = {
        series: inv.series ?? [],
        arches: inv.arches ?? ['x86'],
        backend: inv.backend ?? 'model',
      };
      expect(inapplicable(inv, all), inv.id).toBeNull();
    }
  });

  test('unnamed invariants that cannot apply are skipped, not errors', () => {
    const ids = new Set(INVARIANTS.map((i) => i.id));
    const upstream = applicableInvariants(ids, setting()).map((i) => i.id);
    expect(upstream).toContain('differential');
    expect(upstream).not.toContain('kernel-agrees');
    expect(upstream).not.toContain('rmp-follows-allocation');
    expect(applicableInvariants(ids, setting(['gmem-private'])).map((i) => i.id)).toContain('rmp-follows-allocation');
  });
});

test('each run of an invariant has its own state, and its check sees the snapshot taken before the command', () => {
  const counted = defineInvariant({
    id: 'toy-count',
    statement: 'at most two commands per run',
    source: 'test',
    init: () => ({ commands: 0 }),
    snapshot: (pre, state) => ({ before: state.commands, kind: pre.cmd.kind }),
    check: (ctx, state, snap) => {
      state.commands++;
      expect(snap.kind).toBe(ctx.cmd.kind);
      return state.commands > 2 ? [`command ${state.commands} (${snap.before} before)`] : [];
    },
  });
  const [a, b] = [counted.start(), counted.start()];
  const pre = { cmd: { kind: 'hostRead', hva: 0, len: 1 } } as never;
  const ctx = { cmd: { kind: 'hostRead', hva: 0, len: 1 } } as never;
  for (let i = 0; i < 2; i++) {
    a.snapshot!(pre);
    expect(a.check!(ctx)).toEqual([]);
  }
  a.snapshot!(pre);
  expect(a.check!(ctx)).toEqual(['command 3 (2 before)']);
  b.snapshot!(pre);
  expect(b.check!(ctx)).toEqual([]);
});

describe('rmp-follows-allocation judges RMP updates from the event log', () => {
  const gpa = 0x200_0000;
  // A 1 MiB guest_memfd holds 4 KiB folios only, so the RMP left behind looks right under the
  // mutant: only the second fault's conversion of an assigned page shows the bug.
  const commands: Command[] = [
    { kind: 'gmemCreate', size: 0x10_0000, flags: 0 },
    {
      kind: 'setMemslot',
      api: 'v2',
      slot: 0,
      as: 0,
      flags: KVM_MEM_GUEST_MEMFD,
      gpa,
      size: 0x10_0000,
      hva: 0x10_0000_0000,
      gmem: { handle: 0, offset: 0 },
    },
    { kind: 'setMemoryAttributes', gpa, size: 0x10_0000, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE, flags: 0 },
    { kind: 'guestAccess', vcpu: 0, gpa, len: 8, write: false, value: 0n, private: true },
    { kind: 'setMemoryAttributes', gpa, size: 0x10_0000, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE, flags: 0 },
    { kind: 'guestAccess', vcpu: 0, gpa, len: 8, write: false, value: 0n, private: true },
  ];
  const run = (mutant: MutantName | null): InvariantViolation | null => {
    const invariants = new Set<InvariantId>(['rmp-follows-allocation']);
    const session = new Session({ arch: 'x86', mutant, invariants, model: makeConfig(['gmem-private']) });
    try {
      for (const cmd of commands) session.run(cmd);
      return null;
    } catch (e) {
      if (e instanceof InvariantViolation) return e;
      throw e;
    }
  };

  test('a correct engine passes', () => {
    expect(run(null)).toBeNull();
  });

  test('rmp-convert-at-fault converts an assigned page again, after the zap', () => {
    const v = run('rmp-convert-at-fault');
    expect(v?.invariant).toBe('rmp-follows-allocation');
    expect(v?.messages.join('\n')).toMatch(/converted to private twice/);
    expect(v?.steps.length).toBe(commands.length);
  });
});
