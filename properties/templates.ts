// Command templates: what the generator produces. A template is either a concrete command (blind
// generation from the small address universe) or a recipe resolved against the spec state when it
// runs ("an access to page `page` of the `slot`-th memslot"), so that accesses, host changes and
// slot updates hit existing slots, their edges and their aliases often (DESIGN.md, "Small scopes,
// biased generation"). Resolution is deterministic, so a template list replays exactly.
import { P, match } from 'ts-pattern';
import { KVM_MEM_GUEST_MEMFD, KVM_MEM_READONLY, PAGE_SIZE, type Arch } from '../model/abi.js';
import type { Command, GuestAccess, HostCommand, Prot } from '../model/commands.js';
import type { Memslot, SpecState } from '../model/state.js';
import { resolveSeriesTemplate, type SeriesTemplate } from './series-templates.js';
import { resolveVmmTemplate, type VmmTemplate } from './vmm-templates.js';

/** Which page of a range: an index into [first, second, last, second-to-last, middle, 511, 512]. */
export type PagePick = number;

export type AccessTemplate = {
  t: 'access';
  slot: number;
  page: PagePick;
  offset: number;
  len: number;
  write: boolean;
  value: bigint;
  vcpu: number;
};
export type HostTemplate = {
  t: 'host';
  op: 'munmap' | 'mprotect' | 'madviseDontneed' | 'hostWrite' | 'hostRead';
  slot: number;
  page: PagePick;
  pages: number;
  prot: Prot;
  value: bigint;
};

export type Template =
  | { t: 'cmd'; cmd: Command }
  | {
      t: 'slotOnVma';
      vma: number;
      slot: number;
      as: number;
      flags: number;
      gpaBase: number;
      firstPage: PagePick;
      pages: number;
      api: 'v1' | 'v2';
    }
  | { t: 'gmemSlot'; slot: number; handle: number; gpaBase: number; pages: number; offsetPages: number }
  | AccessTemplate
  | HostTemplate
  | { t: 'slotUpdate'; slot: number; op: 'flags' | 'move' | 'delete'; flags: number; gpaBase: number }
  | { t: 'dirty'; slot: number; op: 'get' | 'clear'; firstPage: number; numPages: number | 'rest' }
  | { t: 'race'; access: AccessTemplate; host: HostTemplate }
  | SeriesTemplate
  | VmmTemplate;

const pick = <T>(items: readonly T[], i: number): T | undefined =>
  items.length ? items[Math.abs(i) % items.length] : undefined;

function pageIndex(npages: number, p: PagePick): number {
  const choices = [0, 1, npages - 1, npages - 2, Math.floor(npages / 2), 511, 512];
  return Math.min(npages - 1, Math.max(0, choices[Math.abs(p) % choices.length]!));
}

/** Slots in a stable order (address space, id), so an index picks the same slot on every replay. */
const orderedSlots = (s: SpecState): Memslot[] => [...s.slots].sort((a, b) => a.as - b.as || a.id - b.id);

/** arm64 accesses stay inside one page (see model/access.ts); x86 ones may straddle. */
function clampOffset(arch: Arch, offset: number, len: number): number {
  return arch === 'arm64' && offset + len > PAGE_SIZE ? PAGE_SIZE - len : offset;
}

function resolveAccess(s: SpecState, t: AccessTemplate): GuestAccess {
  const slot = pick(
    orderedSlots(s).filter((x) => x.as === 0),
    t.slot,
  );
  const base = slot ? (slot.baseGfn + pageIndex(slot.npages, t.page)) * PAGE_SIZE : (Math.abs(t.page) % 4) * PAGE_SIZE;
  return {
    kind: 'guestAccess',
    vcpu: t.vcpu,
    gpa: base + clampOffset(s.arch, t.offset, t.len),
    len: t.len,
    write: t.write,
    value: t.value,
  };
}

function resolveHost(s: SpecState, t: HostTemplate): HostCommand | Command {
  const slot = pick(orderedSlots(s), t.slot);
  const vma = slot ? undefined : pick(s.mm.vmas, t.slot);
  const hvaBase = slot ? slot.hva + pageIndex(slot.npages, t.page) * PAGE_SIZE : vma ? vma.start : 0x1000000000;
  const size = t.pages * PAGE_SIZE;
  return match(t.op)
    .with('munmap', () => ({ kind: 'munmap' as const, hva: hvaBase, size }))
    .with('mprotect', () => ({ kind: 'mprotect' as const, hva: hvaBase, size, prot: t.prot }))
    .with('madviseDontneed', () => ({ kind: 'madviseDontneed' as const, hva: hvaBase, size }))
    .with('hostWrite', () => ({ kind: 'hostWrite' as const, hva: hvaBase + 8 * (t.pages % 8), len: 8, value: t.value }))
    .with('hostRead', () => ({ kind: 'hostRead' as const, hva: hvaBase + 8 * (t.pages % 8), len: 8 }))
    .exhaustive();
}

export function resolveTemplate(s: SpecState, t: Template): Command {
  return match(t)
    .with({ t: 'cmd' }, (x): Command => x.cmd)
    .with({ t: 'slotOnVma' }, (x): Command => {
      // A negative index counts from the highest mapping (where the 1 GiB hugetlb region lives).
      const vma = x.vma < 0 ? s.mm.vmas[s.mm.vmas.length - 1] : pick(s.mm.vmas, x.vma);
      const vmaPages = vma ? (vma.end - vma.start) / PAGE_SIZE : 16;
      const first = pageIndex(vmaPages, x.firstPage);
      const pages = Math.max(1, Math.min(x.pages, vmaPages - first));
      const hva = (vma?.start ?? 0x1000000000) + first * PAGE_SIZE;
      // Keep gpa and hva congruent modulo 2 MiB half of the time, so blocks are possible.
      const gpa = x.gpaBase + (x.firstPage % 2 === 0 ? hva % 0x200000 : 0);
      return {
        kind: 'setMemslot',
        api: x.api,
        slot: x.slot,
        as: x.as,
        flags: x.flags,
        gpa,
        size: pages * PAGE_SIZE,
        hva,
      };
    })
    .with(
      { t: 'gmemSlot' },
      (x): Command => ({
        kind: 'setMemslot',
        api: 'v2',
        slot: x.slot,
        as: 0,
        flags: KVM_MEM_GUEST_MEMFD,
        gpa: x.gpaBase,
        size: x.pages * PAGE_SIZE,
        hva: 0x1000000000,
        gmem: { handle: x.handle, offset: x.offsetPages * PAGE_SIZE },
      }),
    )
    .with({ t: 'access' }, (x): Command => resolveAccess(s, x))
    .with({ t: 'host' }, (x): Command => resolveHost(s, x))
    .with({ t: 'slotUpdate' }, (x): Command => {
      const slot = pick(orderedSlots(s), x.slot);
      if (!slot)
        return { kind: 'setMemslot', api: 'v2', slot: x.slot & 3, as: 0, flags: 0, gpa: x.gpaBase, size: 0, hva: 0 };
      const common = {
        kind: 'setMemslot' as const,
        api: 'v2' as const,
        slot: slot.id,
        as: slot.as,
        hva: slot.hva,
        size: slot.npages * PAGE_SIZE,
      };
      return match(x.op)
        .with('delete', () => ({ ...common, flags: slot.flags, gpa: slot.baseGfn * PAGE_SIZE, size: 0 }))
        .with('move', () => ({ ...common, flags: slot.flags, gpa: x.gpaBase }))
        .with('flags', () => ({
          ...common,
          flags: (x.flags & ~KVM_MEM_READONLY) | (slot.flags & KVM_MEM_READONLY),
          gpa: slot.baseGfn * PAGE_SIZE,
        }))
        .exhaustive();
    })
    .with({ t: 'dirty' }, (x): Command => {
      const slot =
        pick(
          orderedSlots(s).filter((y) => y.dirtyLog),
          x.slot,
        ) ?? pick(orderedSlots(s), x.slot);
      const id = slot?.id ?? 0;
      const as = slot?.as ?? 0;
      if (x.op === 'get') return { kind: 'getDirtyLog', slot: id, as };
      const npages = slot?.npages ?? 64;
      const numPages = x.numPages === 'rest' ? Math.max(0, npages - x.firstPage) : x.numPages;
      return { kind: 'clearDirtyLog', slot: id, as, firstPage: x.firstPage, numPages };
    })
    .with(
      { t: 'race' },
      (x): Command => ({
        kind: 'raceAccess',
        access: resolveAccess(s, x.access),
        host: resolveHost(s, x.host) as HostCommand,
      }),
    )
    .with({ t: P.union('userfault', 'attributes', 'privateAccess', 'lock', 'populate', 'demandPaging') }, (x) =>
      resolveSeriesTemplate(s, x),
    )
    .with({ t: P.union('touch', 'ramLog', 'harvest') }, (x) => resolveVmmTemplate(s, x))
    .exhaustive();
}
