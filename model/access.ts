// One KVM_RUN in which the guest loads or stores 1..8 bytes at a gpa, answered straight from the
// memslots, the VMM's mappings and the flags (no page tables, no TLB).
//
// An access is split at page boundaries and each fragment classified:
//   ram    - backed by memory the guest may touch this way;
//   mmio   - no memslot, or a write to a READONLY slot (api.rst: writes become KVM_EXIT_MMIO, INV-39);
//   efault - a memslot whose hva the host cannot provide (no VMA, PROT_NONE, or a write to a
//            read-only mapping: mmu_stress_test.c expects EFAULT there).
// The first fragment that is not ram decides, as the hardware faults in address order:
//   efault -> KVM_RUN fails with EFAULT (exits.ts says what kvm_run then holds); nothing is written,
//             though pages before it were write-faulted and may be reported dirty;
//   mmio   -> the instruction is emulated (x86 emulator_read_write): every fragment the emulator can
//             reach through the hva is read or written, every other one is MMIO, and the exit
//             reports the first MMIO fragment. [assumption] arm64 follows the same rule; the
//             arm64 generator does not straddle pages, so this corner is x86-only in practice.
import { KVM_MEM_READONLY, PAGE_SIZE } from './abi.js';
import type { GuestAccess } from './commands.js';
import { recordGuestRead, recordGuestWrite, recordMaybeDirty } from './dirty-log.js';
import { enterRun, exitHalt, exitMemoryFault, exitMmio } from './exits.js';
import { isGmemOnly } from './gmem-access.js';
import { hostCanAccess } from './host-mm.js';
import { bytesToValue, loadBytes, splitByPage, storeBytes, valueToBytes, type Memory } from './memory.js';
import { findSlot } from './memslots.js';
import type { Outcome } from './outcomes.js';
import type { Memslot, SpecState } from './state.js';

type Fragment = { gpa: number; len: number; offset: number };
type Target =
  | { kind: 'ram'; memory: Memory; addr: number; slot: Memslot; hostWritable: boolean }
  | { kind: 'mmio' }
  | { kind: 'efault' };

function classify(state: SpecState, gpa: number, write: boolean): Target {
  const gfn = Math.floor(gpa / PAGE_SIZE);
  const slot = findSlot(state, 0, gfn);
  if (!slot) return { kind: 'mmio' };
  const offsetInSlot = gpa - slot.baseGfn * PAGE_SIZE;
  if (slot.gmem && isGmemOnly(state, slot)) {
    const file = state.gmems[slot.gmem.handle]!;
    return { kind: 'ram', memory: file.memory, addr: slot.gmem.pgoff * PAGE_SIZE + offsetInSlot, slot, hostWritable: true };
  }
  if (write && slot.flags & KVM_MEM_READONLY) return { kind: 'mmio' };
  const hva = slot.hva + offsetInSlot;
  if (!hostCanAccess(state.mm.vmas, hva, write)) return { kind: 'efault' };
  return { kind: 'ram', memory: state.mm.memory, addr: hva, slot, hostWritable: hostCanAccess(state.mm.vmas, hva, true) };
}

export function guestAccess(state: SpecState, cmd: GuestAccess): Outcome {
  const run = state.vcpus[cmd.vcpu]!;
  enterRun(state.arch, run);
  const bytes = valueToBytes(cmd.value, cmd.len);
  const fragments: Fragment[] = splitByPage(cmd.gpa, cmd.len).map((p) => ({ gpa: p.addr, len: p.len, offset: p.addr - cmd.gpa }));
  const targets = fragments.map((f) => classify(state, f.gpa, cmd.write));
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

  if (targets[firstOther]!.kind === 'efault') {
    // The pages before the failing one were faulted in for this write and may already be marked
    // dirty, although the instruction never completed: KVM may report them, need not.
    if (cmd.write) targets.slice(0, firstOther).forEach((t, i) => t.kind === 'ram' && recordMaybeDirty(t.slot, fragments[i]!.gpa));
    return exitMemoryFault(state.arch, run, fragments[firstOther]!.gpa);
  }

  // Emulation: reach what the hva allows, report the first fragment that is MMIO.
  let firstMmio: Fragment | undefined;
  fragments.forEach((f, i) => {
    const t = targets[i]!;
    if (t.kind !== 'ram') {
      firstMmio ??= f;
      return;
    }
    if (cmd.write) {
      storeBytes(t.memory, t.addr, bytes.slice(f.offset, f.offset + f.len));
      recordGuestWrite(t.slot, Math.floor(f.gpa / PAGE_SIZE));
    }
  });
  const mmio = firstMmio!;
  return exitMmio(run, mmio.gpa, mmio.len, cmd.write, bytesToValue(bytes.slice(mmio.offset, mmio.offset + mmio.len)));
}
