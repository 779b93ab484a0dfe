// The vmm profile: runs shaped like a real VMM's (QEMU 7.2 traced on this machine, see
// /work/shared/UPSTREAM.md) instead of the small biased scopes of generators.ts. A run starts from a
// machine layout (8-10 slots: RAM of GiB size split around the PCI hole or over NUMA nodes, ROM/BIOS
// and flash read-only, VGA dirty-logged, small BAR-sized slots), then its commands are groups: guest
// bursts over hundreds of pages, migrations (logging on every RAM slot, repeated GET + CLEAR harvests
// with guest writes between them, logging off), DIMM hotplug and unplug, and ordinary templates.
// Every group is a list of ordinary commands (templates), so spec, engine and kernel need nothing new.
import fc from 'fast-check';
import {
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_DIRTY_LOG_INITIALLY_SET,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  SZ_1G,
  SZ_2M,
} from '../model/abi.js';
import type { Backing } from '../model/commands.js';
import type { ModelConfig } from '../model/series.js';
import { NO_LIMITS, templateArbitraryFor, type GeneratorLimits } from './generators.js';
import type { Template } from './templates.js';

const MiB = 0x10_0000;
/**
 * Above generators.ts's host regions, each slot in its own 8 GiB window of host addresses; the
 * windows used (0-9, 32-39) stay inside the kvm helper's host window (64-512 GiB) and miss the 1 GiB
 * hugetlb region at 256 GiB (window 16).
 */
export const VMM_HVA = 0x20_0000_0000;
const HVA_WINDOW = 8 * SZ_1G;
/** QEMU's device-memory region for pc-dimm: above the RAM above 4 GiB, 1 GiB aligned. */
export const HOTPLUG_GPA = 16 * SZ_1G;
export const HOTPLUG_FIRST_ID = 16;
export const HOTPLUG_DIMMS = 8;
/** Template runs long enough to reach every slot a run can have (10 + 8 DIMMs + a few strays). */
const ALL_SLOTS = 24;

export interface VmmRegion {
  readonly id: number;
  readonly gpa: number;
  readonly size: number;
  readonly flags: number;
}

/**
 * x86 pc/q35: RAM below 640 KiB, the VGA window (logged, as QEMU logs VGA), option ROMs and the
 * ISA BIOS (read-only), RAM from 1 MiB to the PCI hole (2 GiB: QEMU's 524,032-page slot, or 3 GiB),
 * VGA VRAM (logged), a ROM BAR, the 256 KiB BIOS under 4 GiB, and the rest of RAM above 4 GiB.
 */
export function pcLayout(lowEnd: number, highRam: number): VmmRegion[] {
  const RO = KVM_MEM_READONLY;
  const LOG = KVM_MEM_LOG_DIRTY_PAGES;
  const regions: Omit<VmmRegion, 'id'>[] = [
    { gpa: 0, size: 0xa0000, flags: 0 },
    { gpa: 0xa0000, size: 0x20000, flags: LOG },
    { gpa: 0xc0000, size: 0x20000, flags: RO },
    { gpa: 0xe0000, size: 0x20000, flags: RO },
    { gpa: MiB, size: lowEnd - MiB, flags: 0 },
    { gpa: 0xfd00_0000, size: 16 * MiB, flags: LOG },
    { gpa: 0xfeb8_0000, size: 0x40000, flags: RO },
    { gpa: 0xfffc_0000, size: 0x40000, flags: RO },
    { gpa: 4 * SZ_1G, size: highRam, flags: 0 },
  ];
  return regions.map((r, id) => ({ id, ...r }));
}

/** arm64 virt: two 64 MiB flashes (firmware read-only), four ROM BARs, RAM from 1 GiB over NUMA nodes. */
export function virtLayout(nodes: number, nodeSize: number): VmmRegion[] {
  const regions: Omit<VmmRegion, 'id'>[] = [
    { gpa: 0, size: 64 * MiB, flags: KVM_MEM_READONLY },
    { gpa: 64 * MiB, size: 64 * MiB, flags: 0 },
    ...[0, 1, 2, 3].map((i) => ({ gpa: 0x1000_0000 + i * MiB, size: 0x40000, flags: KVM_MEM_READONLY })),
    ...Array.from({ length: nodes }, (_, i) => ({ gpa: SZ_1G + i * nodeSize, size: nodeSize, flags: 0 })),
  ];
  return regions.map((r, id) => ({ id, ...r }));
}

/** The host address of slot `window`: congruent with its gpa modulo 2 MiB, as QEMU aligns RAM for THP. */
const hvaFor = (window: number, gpa: number): number => VMM_HVA + window * HVA_WINDOW + (gpa % SZ_2M);

const plug = (window: number, r: VmmRegion, backing: Backing): Template[] => {
  const hva = hvaFor(window, r.gpa);
  return [
    { t: 'cmd', cmd: { kind: 'mmap', hva, size: r.size, prot: 'rw', backing } },
    {
      t: 'cmd',
      cmd: { kind: 'setMemslot', api: 'v1', slot: r.id, as: 0, flags: r.flags, gpa: r.gpa, size: r.size, hva },
    },
  ];
};

const layout = fc.oneof(
  fc
    .record({
      lowEnd: fc.constantFrom(2 * SZ_1G, 2 * SZ_1G, 3 * SZ_1G),
      high: fc.constantFrom(SZ_1G, 2 * SZ_1G, 4 * SZ_1G),
    })
    .map((x) => pcLayout(x.lowEnd, x.high)),
  fc
    .record({ nodes: fc.integer({ min: 2, max: 4 }), size: fc.constantFrom(SZ_1G, 2 * SZ_1G) })
    .map((x) => virtLayout(x.nodes, x.size)),
);

/**
 * The machine: manual dirty-log protection as QEMU enables it (with INITIALLY_SET, or without, or
 * classic GET-clears mode), then every region mmapped and plugged in as a slot.
 */
export const vmmSetupArbitrary: fc.Arbitrary<Template[]> = fc
  .record({
    layout,
    manual: fc.constantFrom(
      KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET,
      KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
      0,
    ),
    ram: fc.constantFrom<Backing>('thp', 'thp', 'anon'),
  })
  .map((x): Template[] => [
    ...(x.manual
      ? [
          {
            t: 'cmd' as const,
            cmd: { kind: 'enableCap' as const, cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, flags: 0, args0: x.manual },
          },
        ]
      : []),
    ...x.layout.flatMap((r) => plug(r.id, r, r.flags & KVM_MEM_READONLY || r.size < SZ_2M ? 'anon' : x.ram)),
  ]);

const value = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

/** "The guest touches `count` pages from here": accesses `stride` pages apart in one slot. */
const burst = (writes: fc.Arbitrary<boolean>): fc.Arbitrary<Template[]> =>
  fc
    .record({
      slot: fc.nat({ max: ALL_SLOTS - 1 }),
      start: fc.nat({ max: 1 << 20 }),
      count: fc.constantFrom(64, 256, 256, 1024),
      stride: fc.constantFrom(1, 1, 3, 512, 513),
      write: writes,
      vcpu: fc.nat({ max: 1 }),
      value,
    })
    .map((x) =>
      Array.from(
        { length: x.count },
        (_, k): Template => ({
          t: 'touch',
          slot: x.slot,
          page: x.start + k * x.stride,
          offset: (k % 8) * 8,
          write: x.write,
          value: x.value ^ BigInt(k),
          vcpu: x.vcpu,
        }),
      ),
    );

const logAll = (enable: boolean): Template[] =>
  Array.from({ length: ALL_SLOTS }, (): Template => ({ t: 'ramLog', enable }));

/** One pass of a migration's bitmap sync: GET on every logged slot, then CLEAR from `firstPage`. */
const harvestRound = (firstPage: number): Template[] => [
  ...Array.from({ length: ALL_SLOTS }, (_, slot): Template => ({ t: 'harvest', op: 'get', slot, firstPage: 0 })),
  ...Array.from({ length: ALL_SLOTS }, (_, slot): Template => ({ t: 'harvest', op: 'clear', slot, firstPage })),
];

const firstPage = fc.constantFrom(0, 0, 0, 64, 1 << 18);

/** Logging on everywhere, rounds of guest writes and harvests, then (usually) logging off. */
const migration: fc.Arbitrary<Template[]> = fc
  .record({
    rounds: fc.array(fc.tuple(burst(fc.constant(true)), firstPage), { minLength: 2, maxLength: 4 }),
    finish: fc.constantFrom(true, true, true, false),
  })
  .map((x) => [
    ...logAll(true),
    ...x.rounds.flatMap(([writes, first]) => [...writes, ...harvestRound(first)]),
    ...(x.finish ? logAll(false) : []),
  ]);

/** pc-dimm hotplug: mmap a memory backend and plug it in at the next DIMM address; unplug: the reverse. */
const dimmRegion = (i: number, size: number): VmmRegion => ({
  id: HOTPLUG_FIRST_ID + i,
  gpa: HOTPLUG_GPA + i * SZ_1G,
  size,
  flags: 0,
});
const hotplug = fc
  .record({ i: fc.nat({ max: HOTPLUG_DIMMS - 1 }), size: fc.constantFrom(128 * MiB, 512 * MiB, SZ_1G) })
  .map((x) => plug(32 + x.i, dimmRegion(x.i, x.size), 'thp'));
const unplug = fc
  .record({ i: fc.nat({ max: HOTPLUG_DIMMS - 1 }), size: fc.constantFrom(128 * MiB, 512 * MiB, SZ_1G) })
  .map((x): Template[] => {
    const r = dimmRegion(x.i, x.size);
    const hva = hvaFor(32 + x.i, r.gpa);
    return [
      { t: 'cmd', cmd: { kind: 'setMemslot', api: 'v1', slot: r.id, as: 0, flags: 0, gpa: r.gpa, size: 0, hva } },
      { t: 'cmd', cmd: { kind: 'munmap', hva, size: r.size } },
    ];
  });

/** The vmm profile's command groups with their weights; ordinary templates keep the run honest. */
export function vmmGroupArbitraryFor(
  config: ModelConfig,
  limits: GeneratorLimits = NO_LIMITS,
): fc.Arbitrary<Template[]> {
  return fc.oneof(
    { arbitrary: templateArbitraryFor(config, limits).map((t) => [t]), weight: 8 },
    { arbitrary: burst(fc.constantFrom(true, true, false)), weight: 6 },
    { arbitrary: fc.constant(harvestRound(0)), weight: 2 },
    { arbitrary: migration, weight: 2 },
    { arbitrary: hotplug, weight: 3 },
    { arbitrary: unplug, weight: 2 },
  );
}

/** Command groups per vmm run: fewer than the small profile's commands, as each group is up to ~4000 commands. */
export const VMM_MAX_GROUPS = 20;
