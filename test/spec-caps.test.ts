// KVM_CHECK_EXTENSION, table-driven from the kernel (kvm_vm_ioctl_check_extension_generic in
// virt/kvm/kvm_main.c, the arch kvm_vm_ioctl_check_extension in x86.c and arm.c) and checked
// against the spec (model/caps.ts) and the engine (src/mmu/caps.ts) separately: the two tables
// share no code, so each must match the kernel on its own.
import { describe, expect, test } from 'vitest';
import {
  GUEST_MEMFD_SUPPORTED_FLAGS,
  KVM_CAP_ARM_NISV_TO_USER,
  KVM_CAP_ARM_SYSTEM_SUSPEND,
  KVM_CAP_GUEST_MEMFD,
  KVM_CAP_GUEST_MEMFD_FLAGS,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_CAP_MEMORY_ATTRIBUTES,
  KVM_CAP_MEMORY_FAULT_INFO,
  KVM_CAP_MULTI_ADDRESS_SPACE,
  KVM_CAP_NR_MEMSLOTS,
  KVM_CAP_READONLY_MEM,
  KVM_CAP_SYNC_MMU,
  KVM_CAP_USER_MEMORY2,
  KVM_DIRTY_LOG_MANUAL_CAPS,
  type Arch,
} from '../model/abi.js';
import type { DeviationId } from '../model/platform.js';
import {
  KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
  KVM_CAP_MEMORY_FAULT_NOWAIT,
  KVM_CAP_USERFAULT,
  KVM_CAP_X86_MEMORY_FAULT_EXIT,
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
} from '../model/series-abi.js';
import { makeConfig, type SeriesName } from '../model/series.js';
import { applyCommand } from '../model/spec.js';
import { newSpecState } from '../model/state.js';
import { Engine } from '../src/mmu/engine.js';

/** The upstream cap numbers 245-247 (SEA_TO_USER, S390_USER_OPEREXEC, S390_KEYOP): never ours. */
const UPSTREAM_HIGH = [245, 246, 247];

type Row = [Arch, number, number, SeriesName[]?, DeviationId[]?];
const ROWS: Row[] = [
  ['x86', KVM_CAP_NR_MEMSLOTS, 32764],
  ['arm64', KVM_CAP_NR_MEMSLOTS, 32767],
  ['x86', KVM_CAP_SYNC_MMU, 1],
  ['arm64', KVM_CAP_SYNC_MMU, 1],
  ['x86', KVM_CAP_READONLY_MEM, 1],
  ['arm64', KVM_CAP_READONLY_MEM, 1],
  ['x86', KVM_CAP_MULTI_ADDRESS_SPACE, 2],
  ['x86', KVM_CAP_MULTI_ADDRESS_SPACE, 0, [], ['single-address-space']],
  ['arm64', KVM_CAP_MULTI_ADDRESS_SPACE, 0],
  ['x86', KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_CAPS],
  ['arm64', KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_CAPS],
  ['x86', KVM_CAP_USER_MEMORY2, 1],
  ['x86', KVM_CAP_MEMORY_FAULT_INFO, 1],
  ['x86', KVM_CAP_MEMORY_ATTRIBUTES, 0],
  ['x86', KVM_CAP_MEMORY_ATTRIBUTES, KVM_MEMORY_ATTRIBUTE_PRIVATE, ['gmem-private']],
  ['arm64', KVM_CAP_MEMORY_ATTRIBUTES, 0, ['gmem-private']],
  ['x86', KVM_CAP_GUEST_MEMFD, 1],
  ['arm64', KVM_CAP_GUEST_MEMFD, 1],
  ['x86', KVM_CAP_GUEST_MEMFD_FLAGS, GUEST_MEMFD_SUPPORTED_FLAGS],
  ['x86', KVM_CAP_ARM_NISV_TO_USER, 0],
  ['arm64', KVM_CAP_ARM_NISV_TO_USER, 1],
  ['arm64', KVM_CAP_ARM_SYSTEM_SUSPEND, 1],
  ['x86', KVM_CAP_ARM_SYSTEM_SUSPEND, 0],
  ['x86', KVM_CAP_X86_MEMORY_FAULT_EXIT, 0],
  ['x86', KVM_CAP_X86_MEMORY_FAULT_EXIT, 1, ['memfault-2023']],
  ['arm64', KVM_CAP_X86_MEMORY_FAULT_EXIT, 0, ['memfault-2023']],
  ['x86', KVM_CAP_MEMORY_FAULT_NOWAIT, 1, ['exit-on-missing']],
  ['arm64', KVM_CAP_MEMORY_FAULT_NOWAIT, 0],
  ['x86', KVM_CAP_USERFAULT, 0],
  ['arm64', KVM_CAP_USERFAULT, 1, ['userfault']],
  ['arm64', KVM_CAP_ARM_LOCK_USER_MEMORY_REGION, 1, ['arm64-lock']],
  ['x86', KVM_CAP_ARM_LOCK_USER_MEMORY_REGION, 0, ['arm64-lock']],
  ...UPSTREAM_HIGH.map((cap): Row => ['x86', cap, 0, ['userfault']]),
  ['x86', 4095, 0],
];

const label = ([arch, cap, want, series, platform]: Row): string => {
  const withSeries = series?.length ? ` with ${series.join(',')}` : '';
  return `${arch} cap ${cap} = ${want}${withSeries}${platform?.length ? ` on ${platform}` : ''}`;
};

describe('KVM_CHECK_EXTENSION', () => {
  test.each(ROWS.map((r) => [label(r), r] as const))('spec: %s', (_l, [arch, cap, want, series, platform]) => {
    const state = newSpecState(arch, makeConfig(series ?? [], {}, platform ?? []));
    expect(applyCommand(state, { kind: 'checkExtension', cap })).toEqual({ kind: 'ok', value: want });
  });
  test.each(ROWS.map((r) => [label(r), r] as const))('engine: %s', (_l, [arch, cap, want, series, platform]) => {
    const engine = new Engine(arch, null, makeConfig(series ?? [], {}, platform ?? []));
    expect(engine.apply({ kind: 'checkExtension', cap })).toEqual({ kind: 'ok', value: want });
  });
  test('KVM_CAP_USERFAULT collides with no upstream capability', () => {
    expect(KVM_CAP_USERFAULT).toBeGreaterThan(Math.max(...UPSTREAM_HIGH));
  });
});
