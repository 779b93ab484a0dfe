// fast-check arbitraries for command templates, biased toward overlaps, aliases, slot edges and
// block alignment: a few 2 MiB-aligned host regions and guest bases, offsets at page and block
// edges, slot sizes around 512 pages, and most commands aimed at existing slots (templates.ts).
import fc from 'fast-check';
import {
  KVM_CAP_GUEST_MEMFD,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_CAP_MEMORY_FAULT_INFO,
  KVM_CAP_NR_MEMSLOTS,
  KVM_CAP_ARM_NISV_TO_USER,
  KVM_CAP_ARM_SYSTEM_SUSPEND,
  KVM_CAP_MULTI_ADDRESS_SPACE,
  KVM_CAP_USER_MEMORY2,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  SZ_1G,
  SZ_2M,
} from '../model/abi.js';
import { KVM_MEMORY_ATTRIBUTE_PRIVATE, exitOnMissingFlag } from '../model/series-abi.js';
import type { Command, Prot } from '../model/commands.js';
import { UPSTREAM_CONFIG, type ModelConfig } from '../model/series.js';
import { demandPaging, seriesArbitraries, seriesFlagChoices } from './series-generators.js';
import type { AccessTemplate, HostTemplate, Template } from './templates.js';

export const HVA_BASE = 0x10_0000_0000;
export const HVA_REGIONS = [0, 1, 2, 3].map((i) => HVA_BASE + i * 4 * SZ_2M);
export const HVA_1G = 0x40_0000_0000;
export const GPA_BASES = [0, SZ_2M, 2 * SZ_2M, 3 * SZ_2M, 8 * SZ_2M];
export const GPA_1G = SZ_1G;

const cmd = (arb: fc.Arbitrary<Command>): fc.Arbitrary<Template> => arb.map((c) => ({ t: 'cmd' as const, cmd: c }));
const prot: fc.Arbitrary<Prot> = fc.constantFrom<Prot>('rw', 'rw', 'rw', 'r', 'none');
const value = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const slotIndex = fc.nat({ max: 3 });
const pagePick = fc.nat({ max: 6 });

const mmap = cmd(
  fc.record({
    kind: fc.constant('mmap' as const),
    hva: fc.tuple(fc.constantFrom(...HVA_REGIONS), fc.constantFrom(0, 0x1000, SZ_2M)).map(([r, o]) => r + o),
    size: fc.constantFrom(0x2000, 0x10000, SZ_2M, 2 * SZ_2M, 4 * SZ_2M),
    prot,
    backing: fc.constantFrom('thp' as const, 'thp' as const, 'anon' as const),
  }),
);

const hugetlb = cmd(
  fc.constant({ kind: 'mmap' as const, hva: HVA_1G, size: SZ_1G, prot: 'rw' as const, backing: 'hugetlb1g' as const }),
);

const slotOnVma = (config: ModelConfig): fc.Arbitrary<Template> =>
  fc.record({
    t: fc.constant('slotOnVma' as const),
    vma: fc.integer({ min: -1, max: 5 }),
    slot: slotIndex,
    as: fc.constantFrom(0, 0, 0, 0, 1),
    flags: fc.constantFrom(
      0,
      0,
      0,
      KVM_MEM_LOG_DIRTY_PAGES,
      KVM_MEM_READONLY,
      KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY,
      ...seriesFlagChoices(config),
    ),
    gpaBase: fc.constantFrom(...GPA_BASES, GPA_1G),
    firstPage: pagePick,
    pages: fc.constantFrom(1, 2, 16, 512, 1024, 2048, 1 << 18),
    api: fc.constantFrom('v2' as const, 'v2' as const, 'v1' as const),
  });

const blindSlot = cmd(
  fc.record({
    kind: fc.constant('setMemslot' as const),
    api: fc.constantFrom('v1' as const, 'v2' as const),
    slot: fc.constantFrom(0, 1, 2, 3, 32763, 32764),
    as: fc.constantFrom(0, 0, 1, 2),
    flags: fc.oneof(fc.nat({ max: 15 }), fc.constant(1 << 5)),
    gpa: fc.tuple(fc.constantFrom(...GPA_BASES), fc.constantFrom(0, 0x1000, 0x123)).map(([b, o]) => b + o),
    size: fc.constantFrom(0, 0x1000, 0x2000, SZ_2M, 0x1001),
    hva: fc.tuple(fc.constantFrom(...HVA_REGIONS), fc.constantFrom(0, 0x1000, 0x10)).map(([b, o]) => b + o),
  }),
);

const accessTemplate: fc.Arbitrary<AccessTemplate> = fc.record({
  t: fc.constant('access' as const),
  slot: slotIndex,
  page: pagePick,
  offset: fc.constantFrom(0, 8, 0x800, 0xff8, 0xffc, 0xffe, 0xfff),
  len: fc.constantFrom(1, 2, 4, 8),
  write: fc.boolean(),
  value,
  vcpu: fc.nat({ max: 1 }),
});

const blindAccess = cmd(
  fc.record({
    kind: fc.constant('guestAccess' as const),
    vcpu: fc.nat({ max: 1 }),
    gpa: fc.tuple(fc.constantFrom(...GPA_BASES), fc.constantFrom(0, 0x1000, 0x1ff000)).map(([b, o]) => b + o),
    len: fc.constantFrom(1, 4, 8),
    write: fc.boolean(),
    value,
  }),
);

const hostOp = (ops: HostTemplate['op'][], bigUnmaps = false): fc.Arbitrary<HostTemplate> =>
  fc.record({
    t: fc.constant('host' as const),
    op: fc.constantFrom(...ops),
    slot: slotIndex,
    page: pagePick,
    pages: fc.constantFrom(1, 2, 512, 1024, ...(bigUnmaps ? [1 << 18, 1 << 18] : [])),
    prot,
    value,
  });

const slotUpdate = (config: ModelConfig): fc.Arbitrary<Template> =>
  fc.record({
    t: fc.constant('slotUpdate' as const),
    slot: slotIndex,
    op: fc.constantFrom('flags' as const, 'flags' as const, 'move' as const, 'delete' as const),
    flags: fc.constantFrom(
      0,
      KVM_MEM_LOG_DIRTY_PAGES,
      0,
      KVM_MEM_LOG_DIRTY_PAGES,
      KVM_MEM_READONLY,
      ...seriesFlagChoices(config),
    ),
    gpaBase: fc.constantFrom(...GPA_BASES),
  });

const dirty: fc.Arbitrary<Template> = fc.record({
  t: fc.constant('dirty' as const),
  slot: slotIndex,
  op: fc.constantFrom('get' as const, 'get' as const, 'clear' as const),
  firstPage: fc.constantFrom(0, 0, 64, 1),
  numPages: fc.constantFrom('rest' as const, 'rest' as const, 64, 1, 0),
});

const caps = cmd(
  fc.oneof(
    fc.record({
      kind: fc.constant('enableCap' as const),
      cap: fc.constantFrom(
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        KVM_CAP_ARM_NISV_TO_USER,
        KVM_CAP_MEMORY_FAULT_INFO,
        KVM_CAP_ARM_SYSTEM_SUSPEND,
        999,
      ),
      flags: fc.constantFrom(0, 0, 0, 1),
      args0: fc.constantFrom(0, 1, 3, 3, 2, 4),
    }),
    fc.record({
      kind: fc.constant('checkExtension' as const),
      cap: fc.constantFrom(
        KVM_CAP_NR_MEMSLOTS,
        KVM_CAP_USER_MEMORY2,
        KVM_CAP_MEMORY_FAULT_INFO,
        KVM_CAP_GUEST_MEMFD,
        KVM_CAP_MULTI_ADDRESS_SPACE,
        KVM_CAP_ARM_NISV_TO_USER,
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        4242,
      ),
    }),
  ),
);

const gmem: fc.Arbitrary<Template> = fc.oneof(
  cmd(
    fc.record({
      kind: fc.constant('gmemCreate' as const),
      size: fc.constantFrom(SZ_2M, 0x10000, SZ_2M, 0, 0x1001),
      flags: fc.constantFrom(0, 1, 3, 3, 2, 4),
    }),
  ),
  fc.record({
    t: fc.constant('gmemSlot' as const),
    slot: slotIndex,
    handle: fc.nat({ max: 2 }),
    gpaBase: fc.constantFrom(...GPA_BASES),
    pages: fc.constantFrom(1, 16, 512),
    offsetPages: fc.constantFrom(0, 1, 16),
  }),
  cmd(
    fc.record({
      kind: fc.constant('gmemPunchHole' as const),
      handle: fc.nat({ max: 2 }),
      offset: fc.constantFrom(0, 0x1000, 0x3000, 1),
      len: fc.constantFrom(0x1000, 0x10000, SZ_2M, 0),
    }),
  ),
);

const race: fc.Arbitrary<Template> = fc.record({
  t: fc.constant('race' as const),
  access: accessTemplate,
  host: hostOp(['munmap', 'mprotect', 'madviseDontneed', 'hostWrite']),
});

/**
 * What a backend cannot run, so it is not generated at all (the real kernel cannot force a race
 * inside its fault handler, and 1 GiB hugetlb pages exist only where the machine reserved them).
 */
export interface GeneratorLimits {
  readonly races: boolean;
  readonly hugetlb: boolean;
  readonly upstreamEpisodes?: boolean;
}
export const NO_LIMITS: GeneratorLimits = { races: true, hugetlb: true };

/** Every template arbitrary with its weight, for a configuration (series add their own). */
export function templateArbitraries(
  config: ModelConfig,
  limits: GeneratorLimits = NO_LIMITS,
): { arbitrary: fc.Arbitrary<Template>; weight: number }[] {
  const all = [
    { arbitrary: accessTemplate, weight: 30 },
    {
      arbitrary: hostOp(
        ['munmap', 'mprotect', 'madviseDontneed', 'hostWrite', 'hostRead'],
        config.series.includes('arm64-unmap'),
      ),
      weight: 12,
    },
    { arbitrary: slotOnVma(config), weight: 10 },
    { arbitrary: mmap, weight: 8 },
    { arbitrary: hugetlb, weight: limits.hugetlb ? 1 : 0 },
    { arbitrary: slotUpdate(config), weight: 6 },
    { arbitrary: dirty, weight: 6 },
    { arbitrary: race, weight: limits.races ? 5 : 0 },
    { arbitrary: blindSlot, weight: 3 },
    { arbitrary: blindAccess, weight: 3 },
    { arbitrary: caps, weight: 3 },
    { arbitrary: gmem, weight: 4 },
    ...seriesArbitraries(config),
    // Upstream userfaultfd demand-paging episodes, generated where a real kernel runs them too.
    { arbitrary: demandPaging, weight: limits.upstreamEpisodes && !config.series.includes('exit-on-missing') ? 3 : 0 },
  ];
  return all.filter((a) => a.weight > 0);
}

const byConfig = new Map<string, fc.Arbitrary<Template>>();

export function templateArbitraryFor(config: ModelConfig, limits: GeneratorLimits = NO_LIMITS): fc.Arbitrary<Template> {
  const key = JSON.stringify([config, limits]);
  if (!byConfig.has(key)) byConfig.set(key, fc.oneof(...templateArbitraries(config, limits)));
  return byConfig.get(key)!;
}

export const templateArbitrary: fc.Arbitrary<Template> = templateArbitraryFor(UPSTREAM_CONFIG);

/**
 * Every run starts from one to three host regions, each with a memslot over it whose gpa is
 * congruent to its hva modulo 2 MiB, so accesses land in backed memory and blocks are possible
 * from the first command. fast-check shrinks this prefix like the rest of the sequence.
 */
const regularSetup = fc
  .record({
    region: fc.constantFrom(...HVA_REGIONS),
    size: fc.constantFrom(SZ_2M, 2 * SZ_2M, 4 * SZ_2M),
    backing: fc.constantFrom('thp' as const, 'thp' as const, 'anon' as const),
    slot: slotIndex,
    gpaBase: fc.constantFrom(...GPA_BASES),
    firstPage: fc.constantFrom(0, 0, 1, 512),
    pages: fc.constantFrom(16, 512, 1024, 2048),
    flags: fc.constantFrom(0, 0, 0, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY),
  })
  .map((x): Template[] => {
    const pages = Math.max(1, Math.min(x.pages, x.size / 0x1000 - x.firstPage));
    const hva = x.region + x.firstPage * 0x1000;
    return [
      { t: 'cmd', cmd: { kind: 'mmap', hva: x.region, size: x.size, prot: 'rw', backing: x.backing } },
      {
        t: 'cmd',
        cmd: {
          kind: 'setMemslot',
          api: 'v2',
          slot: x.slot,
          as: 0,
          flags: x.flags,
          gpa: x.gpaBase + x.firstPage * 0x1000,
          size: pages * 0x1000,
          hva,
        },
      },
    ];
  });

/** A 1 GiB hugetlb region under a 1 GiB slot, so 1 GiB stage-2 blocks are reachable. */
const gigantSetup = fc
  .record({ slot: slotIndex, flags: fc.constantFrom(0, 0, KVM_MEM_LOG_DIRTY_PAGES) })
  .map((x): Template[] => [
    { t: 'cmd', cmd: { kind: 'mmap', hva: HVA_1G, size: SZ_1G, prot: 'rw', backing: 'hugetlb1g' } },
    {
      t: 'cmd',
      cmd: {
        kind: 'setMemslot',
        api: 'v2',
        slot: x.slot,
        as: 0,
        flags: x.flags,
        gpa: GPA_1G,
        size: SZ_1G,
        hva: HVA_1G,
      },
    },
  ]);

/**
 * gmem-private: a 4 MiB guest_memfd bound to a 1024-page slot at a 2 MiB-aligned gpa, all of it
 * private, so private faults can use 2 MiB folios from the first command (INV-33, INV-34).
 */
const privateSetup = fc
  .record({ slot: slotIndex, privatePages: fc.constantFrom(1024, 1024, 512) })
  .map((x): Template[] => [
    { t: 'cmd', cmd: { kind: 'gmemCreate', size: 2 * SZ_2M, flags: 0 } },
    { t: 'gmemSlot', slot: x.slot, handle: 0, gpaBase: PRIVATE_GPA, pages: 1024, offsetPages: 0 },
    {
      t: 'cmd',
      cmd: {
        kind: 'setMemoryAttributes',
        gpa: PRIVATE_GPA,
        size: x.privatePages * 0x1000,
        attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE,
        flags: 0,
      },
    },
  ]);
const PRIVATE_GPA = 16 * SZ_2M;

/**
 * exit-on-missing: 4 KiB anonymous memory under a fast-only slot with a few pages read in first
 * (MADV_POPULATE_READ maps the shared zero page), so fast GUP meets missing, zero and real pages.
 */
const fastOnlySetup = (config: ModelConfig) =>
  fc
    .record({ slot: slotIndex, region: fc.constantFrom(...HVA_REGIONS), populated: fc.constantFrom(1, 2, 16) })
    .map((x): Template[] => [
      { t: 'cmd', cmd: { kind: 'mmap', hva: x.region, size: SZ_2M, prot: 'rw', backing: 'anon' } },
      {
        t: 'cmd',
        cmd: {
          kind: 'setMemslot',
          api: 'v2',
          slot: x.slot,
          as: 0,
          flags: exitOnMissingFlag(config),
          gpa: 24 * SZ_2M,
          size: 16 * 0x1000,
          hva: x.region,
        },
      },
      { t: 'cmd', cmd: { kind: 'madvisePopulate', hva: x.region, size: x.populated * 0x1000, write: false } },
    ]);

/** The setup prefix; arm64-unmap makes the 1 GiB scenario (the fast path's only case) common. */
export function setupArbitraryFor(config: ModelConfig, limits: GeneratorLimits = NO_LIMITS): fc.Arbitrary<Template[]> {
  const gigant = !limits.hugetlb ? 0 : config.series.includes('arm64-unmap') ? 4 : 1;
  const priv = config.series.includes('gmem-private') ? 3 : 0;
  const fastOnly = config.series.includes('exit-on-missing') ? 3 : 0;
  return fc
    .array(
      fc.oneof(
        ...[
          { arbitrary: regularSetup, weight: 9 },
          { arbitrary: gigantSetup, weight: gigant },
          { arbitrary: privateSetup, weight: priv },
          { arbitrary: fastOnlySetup(config), weight: fastOnly },
        ].filter((a) => a.weight > 0),
      ),
      { minLength: 1, maxLength: 3 },
    )
    .map((pairs) => pairs.flat());
}

export const setupArbitrary: fc.Arbitrary<Template[]> = setupArbitraryFor(UPSTREAM_CONFIG);
