// The spec's guest-access rules: completion, MMIO, READONLY, EFAULT and the memory_fault payload per
// architecture, kvm_run persistence, page-straddling accesses, and dirty logging.
import { describe, expect, test } from 'vitest';
import {
  KVM_EXIT_HLT,
  KVM_EXIT_MEMORY_FAULT,
  KVM_EXIT_MMIO,
  KVM_EXIT_UNKNOWN,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  type Arch,
} from '../model/abi.js';
import type { Command } from '../model/commands.js';
import type { Outcome } from '../model/outcomes.js';
import { applyCommand, type SequentialCommand } from '../model/spec.js';
import { newSpecState, type SpecState } from '../model/state.js';

const H = 0x1000000000;
function vm(arch: Arch, flags = 0): SpecState {
  const s = newSpecState(arch);
  applyCommand(s, { kind: 'mmap', hva: H, size: 0x10000, prot: 'rw', backing: 'anon' });
  applyCommand(s, { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags, gpa: 0, size: 0x10000, hva: H });
  return s;
}
const run = (s: SpecState, c: SequentialCommand): Extract<Outcome, { kind: 'run' }> => {
  const o = applyCommand(s, c);
  if (o.kind !== 'run') throw new Error(`expected a KVM_RUN outcome, got ${o.kind}`);
  return o;
};
const rd = (gpa: number, len = 8, vcpu = 0): Command & SequentialCommand => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len,
  write: false,
  value: 0n,
});
const wr = (gpa: number, value: bigint, len = 8, vcpu = 0): Command & SequentialCommand => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len,
  write: true,
  value,
});

describe.each(['x86', 'arm64'] as const)('%s', (arch) => {
  test('a write then a read of backed memory completes with HLT and the value', () => {
    const s = vm(arch);
    expect(run(s, wr(0x1000, 0x1122334455667788n)).run.exitReason).toBe(KVM_EXIT_HLT);
    expect(run(s, rd(0x1004, 4)).value).toBe(0x11223344n);
    expect(applyCommand(s, { kind: 'hostRead', hva: H + 0x1000, len: 8 })).toEqual({
      kind: 'hostData',
      value: 0x1122334455667788n,
    });
  });

  test('no memslot: KVM_EXIT_MMIO with the access, data only for writes', () => {
    const s = vm(arch);
    const o = run(s, wr(0x200000, 0xabn, 1));
    expect(o.rc).toBe(0);
    expect(o.run).toEqual({
      exitReason: KVM_EXIT_MMIO,
      payload: { kind: 'mmio', physAddr: 0x200000, len: 1, isWrite: true, data: 0xabn },
    });
  });

  test('a write to a READONLY slot is MMIO and leaves memory unchanged (INV-39); reads see memory', () => {
    const s = vm(arch, KVM_MEM_READONLY);
    applyCommand(s, { kind: 'hostWrite', hva: H, len: 8, value: 7n });
    expect(run(s, wr(0, 9n)).run.exitReason).toBe(KVM_EXIT_MMIO);
    expect(run(s, rd(0)).value).toBe(7n);
  });

  test('after mprotect(PROT_READ) guest writes fail with EFAULT and reads still work (mmu_stress_test.c)', () => {
    const s = vm(arch);
    applyCommand(s, { kind: 'mprotect', hva: H, size: 0x10000, prot: 'r' });
    const o = run(s, wr(0x2008, 1n));
    expect([o.rc, o.errno]).toEqual([-1, 'EFAULT']);
    expect(run(s, rd(0x2008)).rc).toBe(0);
  });
});

describe('memory_fault payload', () => {
  test('x86 annotates: exit_reason MEMORY_FAULT, flags 0, the faulting page, PAGE_SIZE', () => {
    const s = vm('x86');
    applyCommand(s, { kind: 'munmap', hva: H + 0x3000, size: 0x1000 });
    const o = run(s, rd(0x3010, 4));
    expect([o.rc, o.errno]).toEqual([-1, 'EFAULT']);
    expect(o.run).toEqual({
      exitReason: KVM_EXIT_MEMORY_FAULT,
      payload: { kind: 'memoryFault', flags: 0, gpa: 0x3000, size: 0x1000 },
    });
  });

  test('arm64 returns a bare EFAULT with exit_reason reset to UNKNOWN and the union untouched', () => {
    const s = vm('arm64');
    run(s, wr(0x200000, 5n, 4));
    applyCommand(s, { kind: 'munmap', hva: H + 0x3000, size: 0x1000 });
    const o = run(s, rd(0x3010, 4));
    expect([o.rc, o.errno, o.run.exitReason]).toEqual([-1, 'EFAULT', KVM_EXIT_UNKNOWN]);
    expect(o.run.payload.kind).toBe('mmio');
  });

  test('kvm_run persists: a completed run keeps the old union, only exit_reason changes', () => {
    const s = vm('x86');
    applyCommand(s, { kind: 'munmap', hva: H + 0x3000, size: 0x1000 });
    run(s, rd(0x3000));
    const o = run(s, rd(0x1000));
    expect(o.run.exitReason).toBe(KVM_EXIT_HLT);
    expect(o.run.payload).toEqual({ kind: 'memoryFault', flags: 0, gpa: 0x3000, size: 0x1000 });
  });
});

describe('page-straddling accesses (x86)', () => {
  test('RAM then no slot: emulated, the RAM part is written, the MMIO part reported', () => {
    const s = vm('x86');
    const o = run(s, wr(0xfffe, 0x44332211n, 4));
    expect(o.run.payload).toEqual({ kind: 'mmio', physAddr: 0x10000, len: 2, isWrite: true, data: 0x4433n });
    expect(applyCommand(s, { kind: 'hostRead', hva: H + 0xfff8, len: 8 })).toEqual({
      kind: 'hostData',
      value: 0x2211n << 48n,
    });
  });

  test('RAM then a missing host page: EFAULT on the second page, nothing written, first page may be dirty', () => {
    const s = vm('x86', KVM_MEM_LOG_DIRTY_PAGES);
    applyCommand(s, { kind: 'munmap', hva: H + 0x1000, size: 0x1000 });
    const o = run(s, wr(0xffe, 0xffffn, 4));
    expect(o.run.payload).toEqual({ kind: 'memoryFault', flags: 0, gpa: 0x1000, size: 0x1000 });
    expect(applyCommand(s, { kind: 'hostRead', hva: H + 0xff8, len: 8 })).toEqual({ kind: 'hostData', value: 0n });
    expect(applyCommand(s, { kind: 'getDirtyLog', slot: 0, as: 0 })).toEqual({
      kind: 'dirtyLog',
      dirty: [],
      mayAlsoBeDirty: [0],
    });
  });
});

describe('dirty logging', () => {
  test('classic mode: get reports writes and clears; manual mode keeps bits until clear', () => {
    const s = vm('arm64', KVM_MEM_LOG_DIRTY_PAGES);
    run(s, wr(0x2000, 1n));
    expect(applyCommand(s, { kind: 'getDirtyLog', slot: 0, as: 0 })).toEqual({
      kind: 'dirtyLog',
      dirty: [2],
      mayAlsoBeDirty: [],
    });
    expect(applyCommand(s, { kind: 'getDirtyLog', slot: 0, as: 0 })).toEqual({
      kind: 'dirtyLog',
      dirty: [],
      mayAlsoBeDirty: [],
    });
    expect(applyCommand(s, { kind: 'enableCap', cap: 168, flags: 0, args0: 1 })).toEqual({ kind: 'ok' });
    run(s, wr(0x3000, 1n));
    expect(applyCommand(s, { kind: 'getDirtyLog', slot: 0, as: 0 })).toMatchObject({ dirty: [3] });
    expect(applyCommand(s, { kind: 'getDirtyLog', slot: 0, as: 0 })).toMatchObject({ dirty: [3] });
    expect(applyCommand(s, { kind: 'clearDirtyLog', slot: 0, as: 0, firstPage: 0, numPages: 16 })).toEqual({
      kind: 'ok',
    });
    expect(applyCommand(s, { kind: 'getDirtyLog', slot: 0, as: 0 })).toMatchObject({ dirty: [] });
  });

  test('INITIALLY_SET needs ENABLE, and then a new bitmap starts all ones', () => {
    const s = newSpecState('x86');
    expect(applyCommand(s, { kind: 'enableCap', cap: 168, flags: 0, args0: 2 })).toEqual({
      kind: 'err',
      errno: 'EINVAL',
    });
    expect(applyCommand(s, { kind: 'enableCap', cap: 168, flags: 0, args0: 3 })).toEqual({ kind: 'ok' });
    applyCommand(s, {
      kind: 'setMemslot',
      api: 'v2',
      slot: 0,
      as: 0,
      flags: KVM_MEM_LOG_DIRTY_PAGES,
      gpa: 0,
      size: 0x3000,
      hva: H,
    });
    expect(applyCommand(s, { kind: 'getDirtyLog', slot: 0, as: 0 })).toMatchObject({ dirty: [0, 1, 2] });
  });

  test('clear_dirty_log argument checks (kvm_clear_dirty_log_protect)', () => {
    const s = vm('x86', KVM_MEM_LOG_DIRTY_PAGES);
    const clear = (firstPage: number, numPages: number): Outcome =>
      applyCommand(s, { kind: 'clearDirtyLog', slot: 0, as: 0, firstPage, numPages });
    expect(clear(1, 1)).toEqual({ kind: 'err', errno: 'EINVAL' });
    expect(clear(0, 17)).toEqual({ kind: 'err', errno: 'EINVAL' });
    expect(clear(0, 16)).toEqual({ kind: 'ok' });
    expect(applyCommand(s, { kind: 'clearDirtyLog', slot: 1, as: 0, firstPage: 0, numPages: 1 })).toEqual({
      kind: 'err',
      errno: 'ENOENT',
    });
  });
});
