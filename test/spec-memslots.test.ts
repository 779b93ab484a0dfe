// The spec's KVM_SET_USER_MEMORY_REGION(2) rules, table-driven from UPSTREAM.md's kernel-order list
// and set_memory_region_test.c.
import { describe, expect, test } from 'vitest';
import {
  KVM_CAP_NR_MEMSLOTS,
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  PAGE_SIZE,
  type Arch,
} from '../model/abi.js';
import type { SetMemslot } from '../model/commands.js';
import { applyCommand } from '../model/spec.js';
import { newSpecState, type SpecState } from '../model/state.js';
import { Engine } from '../src/mmu/engine.js';

const H = 0x1000000000;
const slot = (over: Partial<SetMemslot> = {}): SetMemslot => ({
  kind: 'setMemslot',
  api: 'v2',
  slot: 0,
  as: 0,
  flags: 0,
  gpa: 0,
  size: 0x10000,
  hva: H,
  ...over,
});
const errnoOf = (s: SpecState, c: SetMemslot): string => {
  const o = applyCommand(s, c);
  return o.kind === 'err' ? o.errno : o.kind;
};
const fresh = (arch: Arch = 'x86'): SpecState => {
  const s = newSpecState(arch);
  applyCommand(s, { kind: 'gmemCreate', size: 0x200000, flags: 0 });
  return s;
};

describe('set_memory_region validation order', () => {
  test.each([
    ['v1 with a region2-only flag', slot({ api: 'v1', flags: KVM_MEM_GUEST_MEMFD }), 'EINVAL'],
    ['slot id beyond KVM_USER_MEM_SLOTS', slot({ slot: 32764 }), 'EINVAL'],
    ['last user slot id', slot({ slot: 32763 }), 'ok'],
    ['unknown flag bit', slot({ flags: 1 << 5 }), 'EINVAL'],
    [
      'LOG_DIRTY with GUEST_MEMFD',
      slot({ flags: KVM_MEM_GUEST_MEMFD | KVM_MEM_LOG_DIRTY_PAGES, gmem: { handle: 0, offset: 0 } }),
      'EINVAL',
    ],
    [
      'READONLY with GUEST_MEMFD',
      slot({ flags: KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY, gmem: { handle: 0, offset: 0 } }),
      'EINVAL',
    ],
    ['unaligned size', slot({ size: 0x1001 }), 'EINVAL'],
    ['unaligned gpa', slot({ gpa: 0x123 }), 'EINVAL'],
    ['unaligned hva', slot({ hva: H + 0x10 }), 'EINVAL'],
    ['hva range beyond the user address space', slot({ hva: 2 ** 47 - PAGE_SIZE, size: 2 * PAGE_SIZE }), 'EINVAL'],
    ['unaligned gmem offset', slot({ flags: KVM_MEM_GUEST_MEMFD, gmem: { handle: 0, offset: 1 } }), 'EINVAL'],
    ['address space 2 on x86', slot({ as: 2 }), 'EINVAL'],
    ['address space 1 on x86 (SMM)', slot({ as: 1 }), 'ok'],
    ['delete of a missing slot', slot({ size: 0 }), 'EINVAL'],
    ['gmem handle that does not exist', slot({ flags: KVM_MEM_GUEST_MEMFD, gmem: { handle: 7, offset: 0 } }), 'EBADF'],
    [
      'gmem range past the end of the file',
      slot({ flags: KVM_MEM_GUEST_MEMFD, size: 0x400000, gmem: { handle: 0, offset: 0 } }),
      'EINVAL',
    ],
  ])('%s', (_name, cmd, expected) => {
    expect(errnoOf(fresh(), cmd)).toBe(expected);
  });

  test('address space 1 does not exist on arm64', () => {
    expect(errnoOf(fresh('arm64'), slot({ as: 1 }))).toBe('EINVAL');
  });

  test('every flag bit 0..31 alone, through v1 and v2 (set_memory_region_test.c)', () => {
    for (let bit = 0; bit < 32; bit++) {
      const flags = (1 << bit) >>> 0;
      const expectV2 =
        flags === KVM_MEM_LOG_DIRTY_PAGES || flags === KVM_MEM_READONLY || flags === KVM_MEM_GUEST_MEMFD
          ? 'ok'
          : 'EINVAL';
      const expectV1 = flags === KVM_MEM_LOG_DIRTY_PAGES || flags === KVM_MEM_READONLY ? 'ok' : 'EINVAL';
      const gmem = flags === KVM_MEM_GUEST_MEMFD ? { gmem: { handle: 0, offset: 0 } } : {};
      expect(errnoOf(fresh(), slot({ flags, ...gmem })), `v2 bit ${bit}`).toBe(expectV2);
      expect(errnoOf(fresh(), slot({ api: 'v1', flags })), `v1 bit ${bit}`).toBe(expectV1);
    }
  });
});

describe('changes to an existing slot', () => {
  const withSlot = (flags = 0): SpecState => {
    const s = fresh();
    expect(errnoOf(s, slot({ flags }))).toBe('ok');
    return s;
  };
  test.each([
    ['a new hva', slot({ hva: H + 0x10000 }), 'EINVAL'],
    ['a new size', slot({ size: 0x20000 }), 'EINVAL'],
    ['toggling READONLY', slot({ flags: KVM_MEM_READONLY }), 'EINVAL'],
    ['identical arguments', slot(), 'ok'],
    ['a move', slot({ gpa: 0x200000 }), 'ok'],
    ['a flags-only change turning on logging', slot({ flags: KVM_MEM_LOG_DIRTY_PAGES }), 'ok'],
  ])('%s', (_name, cmd, expected) => {
    expect(errnoOf(withSlot(), cmd)).toBe(expected);
  });

  test('create or move onto another slot in the same address space is EEXIST; another address space is fine', () => {
    const s = withSlot();
    expect(errnoOf(s, slot({ slot: 1, gpa: 0x8000 }))).toBe('EEXIST');
    expect(errnoOf(s, slot({ slot: 1, as: 1, gpa: 0x8000 }))).toBe('ok');
    expect(errnoOf(s, slot({ slot: 2, gpa: 0x200000 }))).toBe('ok');
    expect(errnoOf(s, slot({ slot: 2, gpa: 0x8000 }))).toBe('EEXIST');
  });

  test('guest_memfd slots can only be deleted, and one gmem range binds to one slot', () => {
    const s = fresh();
    const g = slot({ flags: KVM_MEM_GUEST_MEMFD, gmem: { handle: 0, offset: 0 } });
    expect(errnoOf(s, g)).toBe('ok');
    expect(errnoOf(s, { ...g, gpa: 0x400000 })).toBe('EINVAL');
    expect(errnoOf(s, { ...g, slot: 1, gpa: 0x400000, gmem: { handle: 0, offset: 0x8000 } })).toBe('EINVAL');
    expect(errnoOf(s, { ...g, slot: 1, gpa: 0x400000, gmem: { handle: 0, offset: 0x10000 } })).toBe('ok');
    expect(errnoOf(s, { ...g, size: 0 })).toBe('ok');
  });
});

// KVM_USER_MEM_SLOTS is SHRT_MAX minus the arch's internal slots (include/linux/kvm_host.h): x86
// keeps 3, arm64 none. Spec and engine derive it independently; both must draw the line here.
describe('the highest slot id per architecture, spec and engine', () => {
  const cases: [Arch, number, string][] = [
    ['x86', 32763, 'ok'],
    ['x86', 32764, 'EINVAL'],
    ['x86', 32766, 'EINVAL'],
    ['arm64', 32764, 'ok'],
    ['arm64', 32766, 'ok'],
    ['arm64', 32767, 'EINVAL'],
  ];
  test.each(cases)('%s slot id %i: %s', (arch, id, want) => {
    expect(errnoOf(fresh(arch), slot({ slot: id }))).toBe(want);
    const engine = new Engine(arch);
    engine.apply({ kind: 'gmemCreate', size: 0x200000, flags: 0 });
    const o = engine.apply(slot({ slot: id }));
    expect(o.kind === 'err' ? o.errno : o.kind).toBe(want);
  });
  test.each([
    ['x86', 32764],
    ['arm64', 32767],
  ] as const)('%s KVM_CAP_NR_MEMSLOTS is %i in spec and engine', (arch, n) => {
    const cmd = { kind: 'checkExtension', cap: KVM_CAP_NR_MEMSLOTS } as const;
    expect(applyCommand(newSpecState(arch), cmd)).toEqual({ kind: 'ok', value: n });
    expect(new Engine(arch).apply(cmd)).toEqual({ kind: 'ok', value: n });
  });
});
