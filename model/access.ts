// One KVM_RUN in which the guest loads or stores 1..8 bytes at a gpa, answered straight from the
// memslots, the VMM's mappings and the flags (no page tables, no TLB).
//
// An access is split at page boundaries and each fragment classified:
//   ram    - backed by memory the guest may touch this way;
//   mmio   - no memslot, or a write to a READONLY slot (api.rst: writes become KVM_EXIT_MMIO, INV-39);
//   fault  - a memory-fault exit or bare -EFAULT (exits.ts): a memslot whose hva the host cannot
//            provide (no VMA, PROT_NONE, a write to a read-only mapping: mmu_stress_test.c expects
//            EFAULT), and the series' own reasons (userfault bit, private/shared mismatch, a
//            missing page on a fast-only slot).
// The first fragment that is not ram decides, as the hardware faults in address order:
//   fault -> nothing is written, though pages before it were write-faulted and may be reported dirty;
//   mmio  -> the instruction is emulated (x86 emulator_read_write): every fragment the emulator can
//            reach through the hva is read or written, every other one is MMIO, and the exit
//            reports the first MMIO fragment. [assumption] arm64 follows the same rule; the
//            arm64 generator does not straddle pages, so this corner is x86-only in practice.
// Pages faulted in on the way are populated in the host (host-mm.ts populate), as GUP would.
import { KVM_MEM_READONLY, PAGE_SIZE, SZ_1G } from './abi.js';
import type { GuestAccess } from './commands.js';
import { recordGuestRead, recordGuestWrite, recordMaybeDirty } from './dirty-log.js';
import { enterRun, exitHalt, exitMemoryFault, exitMmio, type FaultCause } from './exits.js';
import { isGmemOnly } from './gmem-access.js';
import { privateAccessFault } from './gmem-private.js';
import { fastGupAllows, findVma, hostCanAccess, populate } from './host-mm.js';
import { bytesToValue, loadBytes, splitByPage, storeBytes, valueToBytes, type Memory } from './memory.js';
import { findSlot } from './memslots.js';
import type { Outcome } from './outcomes.js';
import { exitOnMissingFlag } from './series-abi.js';
import { seriesOn, type ModelConfig } from './series.js';
import type { Memslot, SpecState } from './state.js';
import { noteMapped, userfaultBlocks } from './userfault.js';
import { deviates } from './platform.js';

type Fragment = { gpa: number; len: number; offset: number };
type Target =
  | { kind: 'ram'; memory: Memory; addr: number; slot: Memslot; hostWritable: boolean; hva?: number }
  | { kind: 'mmio' }
  | { kind: 'fault'; cause: FaultCause };

/**
 * Which pages with a userfault bit the run may still reach through a stage-2 mapping made before
 * (userfault.ts): the caller enumerates both answers for each of them.
 */
export interface AccessChoices {
  readonly staleMappingUsed: ReadonlySet<number>;
}
const NO_CHOICES: AccessChoices = { staleMappingUsed: new Set() };

/** arm64 vma_pagesize: the hugetlb page size, or PAGE_SIZE (also under dirty logging, force_pte). */
function mappingSize(state: SpecState, slot: Memslot, hva: number): number {
  const vma = findVma(state.mm.vmas, hva);
  return vma?.backing === 'hugetlb1g' && !slot.dirtyLog ? SZ_1G : PAGE_SIZE;
}

function classify(state: SpecState, gpa: number, cmd: GuestAccess, choices: AccessChoices): Target {
  const { write } = cmd;
  const priv = cmd.private === true;
  const gfn = Math.floor(gpa / PAGE_SIZE);
  const slot = findSlot(state, 0, gfn);
  const privateFault = privateAccessFault(state, slot, gfn, priv);
  if (privateFault) return { kind: 'fault', cause: privateFault };
  if (!slot) return { kind: 'mmio' };
  if (userfaultBlocks(state, slot, gfn, choices.staleMappingUsed.has(gfn)))
    return { kind: 'fault', cause: { kind: 'userfault', private: priv } };
  const offsetInSlot = gpa - slot.baseGfn * PAGE_SIZE;
  if (slot.gmem && (priv || isGmemOnly(state, slot))) {
    const file = state.gmems[slot.gmem.handle]!;
    return {
      kind: 'ram',
      memory: file.memory,
      addr: slot.gmem.pgoff * PAGE_SIZE + offsetInSlot,
      slot,
      hostWritable: true,
    };
  }
  if (write && slot.flags & KVM_MEM_READONLY) return { kind: 'mmio' };
  const hva = slot.hva + offsetInSlot;
  const why = !findVma(state.mm.vmas, hva) ? 'no-vma' : 'protection';
  if (seriesOn(state.config, 'exit-on-missing') && slot.flags & exitOnMissingFlag(state.config)) {
    // Fast-only: fast GUP or nothing (S3/p09). Before S3/p03 a read fault asked for a writable pin.
    const writePin = write || (!state.config.options.fastGupReadOnly && !(slot.flags & KVM_MEM_READONLY));
    // A read served by a stage-2 mapping made before the slot became fast-only never reaches GUP.
    const servedByOldMapping =
      choices.staleMappingUsed.has(Math.floor(gpa / PAGE_SIZE)) && !write && fastGupAllows(state.mm, hva, false);
    if (!fastGupAllows(state.mm, hva, writePin) && !servedByOldMapping) {
      // The pin that failed decides the cause: a write pin on a read-only VMA fails on protection.
      const fastWhy = hostCanAccess(state.mm.vmas, hva, writePin) ? 'missing' : why;
      return {
        kind: 'fault',
        cause: { kind: 'hva', why: fastWhy, fastOnly: true, mappingSize: mappingSize(state, slot, hva) },
      };
    }
  }
  if (!hostCanAccess(state.mm.vmas, hva, write)) {
    const cause: FaultCause = { kind: 'hva', why, fastOnly: false, mappingSize: mappingSize(state, slot, hva) };
    // Platform deviation fault-as-mmio: the error pfn is emulated, and the emulator cannot reach
    // the hva either, so the fragment is MMIO (docs/PLATFORMS.md).
    return faultBecomesMmio(state.config, cause) ? { kind: 'mmio' } : { kind: 'fault', cause };
  }
  return {
    kind: 'ram',
    memory: state.mm.memory,
    addr: hva,
    slot,
    hostWritable: hostCanAccess(state.mm.vmas, hva, true),
    hva,
  };
}

/** The fragment was faulted in: GUP populated its host page and stage 2 may now map it. */
function faultIn(state: SpecState, t: Extract<Target, { kind: 'ram' }>, gpa: number, write: boolean): void {
  if (t.hva !== undefined) populate(state.mm, t.hva, write);
  noteMapped(t.slot, Math.floor(gpa / PAGE_SIZE));
}

export function guestAccess(state: SpecState, cmd: GuestAccess, choices: AccessChoices = NO_CHOICES): Outcome {
  const run = state.vcpus[cmd.vcpu]!;
  enterRun(state, run);
  const bytes = valueToBytes(cmd.value, cmd.len);
  const fragments: Fragment[] = splitByPage(cmd.gpa, cmd.len).map((p) => ({
    gpa: p.addr,
    len: p.len,
    offset: p.addr - cmd.gpa,
  }));
  // The hardware faults fragment by fragment: each one is faulted in (populating its host page,
  // which can be the next fragment's too) before the next is looked at.
  const targets: Target[] = [];
  for (const f of fragments) {
    const t = classify(state, f.gpa, cmd, choices);
    targets.push(t);
    if (t.kind !== 'ram') break;
    faultIn(state, t, f.gpa, cmd.write);
  }
  const firstOther = targets.findIndex((t) => t.kind !== 'ram');

  if (firstOther === -1) {
    const loaded: number[] = [];
    fragments.forEach((f, i) => {
      const t = targets[i] as Extract<Target, { kind: 'ram' }>;
      const gfn = Math.floor(f.gpa / PAGE_SIZE);
      if (cmd.write) {
        storeBytes(t.memory, t.addr, bytes.slice(f.offset, f.offset + f.len));
        recordGuestWrite(t.slot, gfn);
      } else {
        loaded.push(...loadBytes(t.memory, t.addr, f.len));
        recordGuestRead(state, t.slot, gfn, t.hostWritable);
      }
    });
    return exitHalt(run, cmd.write ? undefined : bytesToValue(loaded));
  }

  const first = targets[firstOther]!;
  if (first.kind === 'fault') {
    // The pages before the failing one were faulted in for this write and may already be marked
    // dirty, although the instruction never completed: KVM may report them, need not.
    if (cmd.write)
      targets.slice(0, firstOther).forEach((t, i) => {
        if (t.kind === 'ram') recordMaybeDirty(t.slot, fragments[i]!.gpa);
      });
    return exitMemoryFault(state, run, fragments[firstOther]!.gpa, first.cause);
  }

  // Emulation: the emulator reaches guest memory through uaccess on the hva (no fast-only GUP, no
  // userfault bitmap: those are fault-path rules); it reports the first fragment it cannot reach.
  let firstMmio: Fragment | undefined;
  fragments.forEach((f) => {
    const reach = emulatorReach(state, f.gpa, cmd.write);
    if (!reach) {
      firstMmio ??= f;
      return;
    }
    if (cmd.write) {
      if (reach.hva !== undefined) populate(state.mm, reach.hva, true);
      storeBytes(reach.memory, reach.addr, bytes.slice(f.offset, f.offset + f.len));
      recordGuestWrite(reach.slot, Math.floor(f.gpa / PAGE_SIZE));
    }
  });
  const mmio = firstMmio!;
  return exitMmio(run, mmio.gpa, mmio.len, cmd.write, bytesToValue(bytes.slice(mmio.offset, mmio.offset + mmio.len)));
}

/** What x86 emulator_read_write() can reach at gpa: the guest_memfd of a gmem-only slot, or the hva. */
function emulatorReach(
  state: SpecState,
  gpa: number,
  write: boolean,
): { memory: Memory; addr: number; slot: Memslot; hva?: number } | null {
  const slot = findSlot(state, 0, Math.floor(gpa / PAGE_SIZE));
  if (!slot) return null;
  const offsetInSlot = gpa - slot.baseGfn * PAGE_SIZE;
  if (slot.gmem && isGmemOnly(state, slot)) {
    return { memory: state.gmems[slot.gmem.handle]!.memory, addr: slot.gmem.pgoff * PAGE_SIZE + offsetInSlot, slot };
  }
  if (write && slot.flags & KVM_MEM_READONLY) return null;
  const hva = slot.hva + offsetInSlot;
  return hostCanAccess(state.mm.vmas, hva, write) ? { memory: state.mm.memory, addr: hva, slot, hva } : null;
}

/**
 * Pages of this access whose answer depends on a stage-2 mapping the spec cannot see: a userfault
 * page mapped before its bit was set (userfault.ts), or, before S3/p03 (fastGupReadOnly off), a
 * read of a page fast GUP could pin only read-only, which an existing read-only mapping still serves.
 */
export function ambiguousPages(state: SpecState, cmd: GuestAccess): number[] {
  const pages = splitByPage(cmd.gpa, cmd.len).map((p) => Math.floor(p.addr / PAGE_SIZE));
  return [...new Set(pages)].filter((gfn) => {
    const slot = findSlot(state, 0, gfn);
    if (!slot) return false;
    if (userfaultBlocks(state, slot, gfn, false) && !userfaultBlocks(state, slot, gfn, true)) return true;
    const fastOnly = seriesOn(state.config, 'exit-on-missing') && (slot.flags & exitOnMissingFlag(state.config)) !== 0;
    if (!fastOnly || cmd.write || state.config.options.fastGupReadOnly || slot.gmem) return false;
    const hva = slot.hva + (gfn - slot.baseGfn) * PAGE_SIZE;
    return fastGupAllows(state.mm, hva, false) && !fastGupAllows(state.mm, hva, !(slot.flags & KVM_MEM_READONLY));
  });
}

/**
 * fault-as-mmio: which upstream memory-fault exits this platform turns into emulation: host (hva)
 * faults of the ordinary fault path. The series' own exits (fast-only, USERFAULT, PRIVATE) are
 * model-only and keep their rules.
 */
function faultBecomesMmio(config: ModelConfig, cause: FaultCause): boolean {
  return deviates(config, 'fault-as-mmio') && cause.kind === 'hva' && !cause.fastOnly;
}
