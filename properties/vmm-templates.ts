// Templates of the vmm profile (vmm-generators.ts), resolved against the spec state like the others
// (templates.ts). They aim at a VMM's view of its memory: "RAM slots" (address space 0, writable,
// not guest_memfd), any page of them (not just the edges a PagePick names), and the slots that are
// being dirty-logged, so a migration's harvests follow the slots whatever hotplug did before.
import { match } from 'ts-pattern';
import {
  KVM_CAP_NR_MEMSLOTS,
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  PAGE_SIZE,
} from '../model/abi.js';
import type { Command } from '../model/commands.js';
import type { Memslot, SpecState } from '../model/state.js';

export type VmmTemplate =
  /** A guest access to page `page` (any index, taken modulo the size) of the `slot`-th slot of address space 0. */
  | { t: 'touch'; slot: number; page: number; offset: number; write: boolean; value: bigint; vcpu: number }
  /**
   * Dirty logging on (off) for the first RAM slot that is not (is) logged yet; nothing to do when
   * there is none. A run of them turns logging on (off) over the whole guest.
   */
  | { t: 'ramLog'; enable: boolean }
  /** KVM_GET_DIRTY_LOG, or KVM_CLEAR_DIRTY_LOG from `firstPage` to the end, on the `slot`-th logged slot (if any). */
  | { t: 'harvest'; op: 'get' | 'clear'; slot: number; firstPage: number };

const byId = (a: Memslot, b: Memslot): number => a.as - b.as || a.id - b.id;
const as0Slots = (s: SpecState): Memslot[] => s.slots.filter((x) => x.as === 0).sort(byId);
/** What a VMM dirty-logs during migration: guest RAM it can write (not ROM, not guest_memfd). */
export const isRamSlot = (x: Memslot): boolean => x.as === 0 && !(x.flags & (KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD));
const ramSlots = (s: SpecState): Memslot[] => s.slots.filter(isRamSlot).sort(byId);
const pick = <T>(items: readonly T[], i: number): T | undefined =>
  items.length ? items[Math.abs(i) % items.length] : undefined;
const logged = (x: Memslot): boolean => (x.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
/** A harmless ioctl for a template with nothing to aim at (QEMU makes dozens of these calls). */
const idle: Command = { kind: 'checkExtension', cap: KVM_CAP_NR_MEMSLOTS };

export function resolveVmmTemplate(s: SpecState, t: VmmTemplate): Command {
  return match(t)
    .with({ t: 'touch' }, (x): Command => {
      const slot = pick(as0Slots(s), x.slot);
      const gfn = slot ? slot.baseGfn + (Math.abs(x.page) % slot.npages) : Math.abs(x.page) % 16;
      const write = x.write && !(slot && slot.flags & KVM_MEM_READONLY);
      return { kind: 'guestAccess', vcpu: x.vcpu, gpa: gfn * PAGE_SIZE + x.offset, len: 8, write, value: x.value };
    })
    .with({ t: 'ramLog' }, (x): Command => {
      const slot = ramSlots(s).find((y) => logged(y) !== x.enable);
      if (!slot) return idle;
      const flags = x.enable ? slot.flags | KVM_MEM_LOG_DIRTY_PAGES : slot.flags & ~KVM_MEM_LOG_DIRTY_PAGES;
      const { id, as, hva } = slot;
      return {
        kind: 'setMemslot',
        api: 'v1',
        slot: id,
        as,
        flags,
        gpa: slot.baseGfn * PAGE_SIZE,
        size: slot.npages * PAGE_SIZE,
        hva,
      };
    })
    .with({ t: 'harvest' }, (x): Command => {
      const slot = s.slots.filter(logged).sort(byId)[x.slot];
      if (!slot) return idle;
      if (x.op === 'get') return { kind: 'getDirtyLog', slot: slot.id, as: slot.as };
      // KVM_CLEAR_DIRTY_LOG wants first_page 64-aligned: a first page past the end starts at 0.
      const first = x.firstPage < slot.npages ? x.firstPage - (x.firstPage % 64) : 0;
      return { kind: 'clearDirtyLog', slot: slot.id, as: slot.as, firstPage: first, numPages: slot.npages - first };
    })
    .exhaustive();
}
