// Generators of the proposed series: which memslot flags they add, and their templates with
// weights. Nothing here is generated while a series is off, so upstream campaigns are unchanged.
import fc from 'fast-check';
import { KVM_MEM_LOG_DIRTY_PAGES } from '../model/abi.js';
import {
  KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
  KVM_CAP_ARM_MTE,
  KVM_CAP_MEMORY_FAULT_NOWAIT,
  KVM_CAP_USERFAULT,
  KVM_CAP_X86_MEMORY_FAULT_EXIT,
  KVM_MEM_USERFAULT,
  exitOnMissingFlag,
} from '../model/series-abi.js';
import { seriesOn, type ModelConfig } from '../model/series.js';
import type { Template } from './templates.js';

/** Extra flag values slotOnVma and slotUpdate may use. */
export function seriesFlagChoices(config: ModelConfig): number[] {
  const out: number[] = [];
  if (seriesOn(config, 'userfault')) out.push(KVM_MEM_USERFAULT, KVM_MEM_USERFAULT | KVM_MEM_LOG_DIRTY_PAGES);
  if (seriesOn(config, 'exit-on-missing'))
    out.push(exitOnMissingFlag(config), exitOnMissingFlag(config), exitOnMissingFlag(config) | KVM_MEM_LOG_DIRTY_PAGES);
  return out;
}

const slotIndex = fc.nat({ max: 3 });
const pagePick = fc.nat({ max: 5 });
const value = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

const userfault: fc.Arbitrary<Template> = fc.record({
  t: fc.constant('userfault' as const),
  op: fc.constantFrom(
    'enable' as const,
    'enable' as const,
    'disable' as const,
    'bits' as const,
    'bits' as const,
    'bits' as const,
  ),
  slot: slotIndex,
  page: pagePick,
  numPages: fc.constantFrom(0, 1, 1, 16),
  set: fc.boolean(),
});

const attributes: fc.Arbitrary<Template> = fc.record({
  t: fc.constant('attributes' as const),
  slot: slotIndex,
  page: pagePick,
  numPages: fc.constantFrom(0, 0, 1, 512),
  private: fc.constantFrom(true, true, false),
  badFlags: fc.constantFrom(false, false, false, false, true),
});

const privateAccess: fc.Arbitrary<Template> = fc.record({
  t: fc.constant('privateAccess' as const),
  slot: slotIndex,
  page: pagePick,
  offset: fc.constantFrom(0, 8, 0xff8),
  write: fc.boolean(),
  value,
  vcpu: fc.nat({ max: 1 }),
});

const lock: fc.Arbitrary<Template> = fc.record({
  t: fc.constant('lock' as const),
  op: fc.constantFrom('lock' as const, 'lock' as const, 'unlock' as const, 'unlockAll' as const),
  slot: slotIndex,
  write: fc.boolean(),
  extraBits: fc.constantFrom(0, 0, 0, 0, 1 << 5),
  args23: fc.constantFrom(0, 0, 0, 0, 0, 1),
});

const capCalls = (caps: number[]): fc.Arbitrary<Template> =>
  fc
    .oneof(
      fc.record({
        kind: fc.constant('enableCap' as const),
        cap: fc.constantFrom(...caps),
        flags: fc.constantFrom(0, 0, 0, 1),
        args0: fc.constantFrom(0, 1, 2, 3, 3, 4, 1 << 7),
      }),
      fc.record({ kind: fc.constant('checkExtension' as const), cap: fc.constantFrom(...caps) }),
    )
    .map((cmd) => ({ t: 'cmd' as const, cmd }));

const populate: fc.Arbitrary<Template> = fc.record({
  t: fc.constant('populate' as const),
  slot: slotIndex,
  page: pagePick,
  numPages: fc.constantFrom(1, 1, 16),
  write: fc.boolean(),
});

export const demandPaging: fc.Arbitrary<Template> = fc.record({
  t: fc.constant('demandPaging' as const),
  slot: slotIndex,
  vcpuPages: fc.array(fc.array(pagePick, { maxLength: 4 }), { minLength: 1, maxLength: 2 }),
  write: fc.boolean(),
  readers: fc.constantFrom(1, 1, 2),
  schedule: fc.array(fc.nat({ max: 7 }), { maxLength: 12 }),
});

/** Templates and weights each enabled series adds to the mix. */
export function seriesArbitraries(config: ModelConfig): { arbitrary: fc.Arbitrary<Template>; weight: number }[] {
  const out: { arbitrary: fc.Arbitrary<Template>; weight: number }[] = [];
  if (seriesOn(config, 'userfault'))
    out.push({ arbitrary: userfault, weight: 8 }, { arbitrary: capCalls([KVM_CAP_USERFAULT]), weight: 1 });
  if (seriesOn(config, 'gmem-private'))
    out.push({ arbitrary: attributes, weight: 5 }, { arbitrary: privateAccess, weight: 8 });
  if (seriesOn(config, 'arm64-lock'))
    out.push(
      { arbitrary: lock, weight: 6 },
      { arbitrary: capCalls([KVM_CAP_ARM_LOCK_USER_MEMORY_REGION, KVM_CAP_ARM_MTE]), weight: 1 },
    );
  if (seriesOn(config, 'memfault-2023')) out.push({ arbitrary: capCalls([KVM_CAP_X86_MEMORY_FAULT_EXIT]), weight: 3 });
  if (seriesOn(config, 'exit-on-missing')) {
    out.push(
      { arbitrary: populate, weight: 4 },
      { arbitrary: demandPaging, weight: 5 },
      { arbitrary: capCalls([KVM_CAP_MEMORY_FAULT_NOWAIT]), weight: 1 },
    );
  }
  return out;
}
