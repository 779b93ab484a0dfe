// Command templates of the proposed series, resolved against the spec state like the upstream ones
// (templates.ts): they aim the series' ioctls and accesses at existing slots, their pages and edges.
import { match } from 'ts-pattern';
import { PAGE_SIZE } from '../model/abi.js';
import type { Command, GuestAccess } from '../model/commands.js';
import {
  KVM_ARM_LOCK_MEM_READ,
  KVM_ARM_LOCK_MEM_WRITE,
  KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK,
  KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK,
  KVM_ARM_UNLOCK_MEM_ALL,
  KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
  KVM_MEM_USERFAULT,
} from '../model/series-abi.js';
import type { Memslot, SpecState } from '../model/state.js';

export type SeriesTemplate =
  /** userfault: turn the flag on/off on a slot (FLAGS_ONLY), or set/clear bitmap bits. */
  | { t: 'userfault'; op: 'enable' | 'disable' | 'bits'; slot: number; page: number; numPages: number; set: boolean }
  /** gmem-private: KVM_SET_MEMORY_ATTRIBUTES over part of a guest_memfd slot. */
  | { t: 'attributes'; slot: number; page: number; numPages: number; private: boolean; badFlags: boolean }
  /** gmem-private: a private guest access. */
  | { t: 'privateAccess'; slot: number; page: number; offset: number; write: boolean; value: bigint; vcpu: number }
  /** arm64-lock: lock, unlock, unlock-all, or arguments off the beaten path. */
  | { t: 'lock'; op: 'lock' | 'unlock' | 'unlockAll'; slot: number; write: boolean; extraBits: number; args23: number }
  /** exit-on-missing: MADV_POPULATE over part of a slot (the resolution INV-21 relies on). */
  | { t: 'populate'; slot: number; page: number; numPages: number; write: boolean }
  /** exit-on-missing: one demand-paging episode on a slot. */
  | { t: 'demandPaging'; slot: number; vcpuPages: number[][]; write: boolean; readers: number; schedule: number[] };

const orderedSlots = (s: SpecState): Memslot[] =>
  [...s.slots].sort((a, b) => a.as - b.as || a.id - b.id).filter((x) => x.as === 0);
const pick = <T>(items: readonly T[], i: number): T | undefined =>
  items.length ? items[Math.abs(i) % items.length] : undefined;
const pageIn = (slot: Memslot, p: number): number =>
  [0, 1, slot.npages - 1, Math.floor(slot.npages / 2), 511, 512][Math.abs(p) % 6]! % slot.npages;

export function resolveSeriesTemplate(s: SpecState, t: SeriesTemplate): Command {
  return match(t)
    .with({ t: 'userfault' }, (x): Command => {
      const slot = pick(orderedSlots(s), x.slot);
      if (!slot) return { kind: 'userfaultBits', slot: x.slot, as: 0, firstPage: 0, numPages: 1, set: x.set };
      if (x.op === 'bits') {
        const first = pageIn(slot, x.page);
        // "All of it" is capped at 4096 pages, to keep the bitmap (and the spec's copies of it) small.
        return {
          kind: 'userfaultBits',
          slot: slot.id,
          as: 0,
          firstPage: first,
          numPages: x.numPages === 0 ? Math.min(slot.npages, 4096) : x.numPages,
          set: x.set,
        };
      }
      const flags = x.op === 'enable' ? slot.flags | KVM_MEM_USERFAULT : slot.flags & ~KVM_MEM_USERFAULT;
      return {
        kind: 'setMemslot',
        api: 'v2',
        slot: slot.id,
        as: 0,
        flags,
        gpa: slot.baseGfn * PAGE_SIZE,
        size: slot.npages * PAGE_SIZE,
        hva: slot.hva,
      };
    })
    .with({ t: 'attributes' }, (x): Command => {
      const slot =
        pick(
          orderedSlots(s).filter((y) => y.gmem),
          x.slot,
        ) ?? pick(orderedSlots(s), x.slot);
      const base = slot ? (slot.baseGfn + pageIn(slot, x.page)) * PAGE_SIZE : 0;
      const pages = slot && x.numPages === 0 ? Math.min(slot.npages, 4096) : x.numPages;
      return {
        kind: 'setMemoryAttributes',
        gpa: base,
        size: pages * PAGE_SIZE,
        attributes: x.private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
        flags: x.badFlags ? 1 : 0,
      };
    })
    .with({ t: 'privateAccess' }, (x): Command => {
      const slot =
        pick(
          orderedSlots(s).filter((y) => y.gmem),
          x.slot,
        ) ?? pick(orderedSlots(s), x.slot);
      const gpa = slot ? (slot.baseGfn + pageIn(slot, x.page)) * PAGE_SIZE + x.offset : x.offset;
      // Private memory is an x86 (SEV-SNP/TDX) notion here: arm64 gets the same access, shared.
      const access: GuestAccess = {
        kind: 'guestAccess',
        vcpu: x.vcpu,
        gpa,
        len: 8,
        write: x.write,
        value: x.value,
        ...(s.arch === 'x86' ? { private: true } : {}),
      };
      return access;
    })
    .with({ t: 'lock' }, (x): Command => {
      // Locking pre-maps the whole slot: keep to slots of up to 4096 pages so a run stays fast (a
      // locked 1 GiB slot later put under dirty logging is split into 262144 4 KiB mappings).
      const slot = pick(
        orderedSlots(s).filter((y) => y.npages <= 4096),
        x.slot,
      );
      const id = slot?.id ?? 100 + x.slot;
      const common = {
        kind: 'enableCap' as const,
        cap: KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
        args0: id,
        args2: x.args23,
        args3: 0,
      };
      return match(x.op)
        .with('lock', () => ({
          ...common,
          flags: KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_LOCK,
          args1: KVM_ARM_LOCK_MEM_READ | (x.write ? KVM_ARM_LOCK_MEM_WRITE : 0) | x.extraBits,
        }))
        .with('unlock', () => ({ ...common, flags: KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK, args1: x.extraBits }))
        .with('unlockAll', () => ({
          ...common,
          flags: KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK,
          args1: KVM_ARM_UNLOCK_MEM_ALL | x.extraBits,
        }))
        .exhaustive();
    })
    .with({ t: 'populate' }, (x): Command => {
      const slot = pick(orderedSlots(s), x.slot);
      const hva = slot ? slot.hva + pageIn(slot, x.page) * PAGE_SIZE : 0x1000000000;
      return { kind: 'madvisePopulate', hva, size: x.numPages * PAGE_SIZE, write: x.write };
    })
    .with({ t: 'demandPaging' }, (x): Command => {
      const slot = pick(
        orderedSlots(s).filter((y) => !y.gmem),
        x.slot,
      );
      return {
        kind: 'demandPaging',
        slot: slot?.id ?? x.slot,
        write: x.write,
        readers: x.readers,
        schedule: x.schedule,
        vcpuPages: x.vcpuPages.map((pages) => pages.map((p) => (slot ? pageIn(slot, p) : p))),
      };
    })
    .exhaustive();
}
