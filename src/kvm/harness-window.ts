// What the helper (and a C reproducer) keeps for itself: host memory outside HVA_WINDOW (its own
// text, stack and libc live there), the harness memslot and its guest range (the guest's page
// tables, GDT and access stubs). One rule for the kvm backend's left-out check, `replay`'s refusal
// and the C export; the helper enforces the same window itself (kvm-ops.c kmm_refusal).
import { P, match } from 'ts-pattern';
import { PAGE_SIZE } from '../../model/abi.js';
import type { Command } from '../../model/commands.js';
import { HARNESS_GPA, HARNESS_SIZE, HARNESS_SLOT, HVA_WINDOW } from './protocol.js';

const overlaps = (a: number, alen: number, b: number, blen: number): boolean => a < b + blen && b < a + alen;

/** Whether [hva, hva + size) lies inside the window (an empty range counts as one byte at hva). */
export const inWindow = (hva: number, size: number): boolean =>
  hva >= HVA_WINDOW.start && hva + Math.max(size, 1) <= HVA_WINDOW.end;

const harnessSlot = (as: number, slot: number): boolean => as === 0 && slot === HARNESS_SLOT;

/** Whether `cmd` would touch what the helper keeps for itself. */
export function touchesHarness(cmd: Command): boolean {
  return match(cmd)
    .returnType<boolean>()
    .with({ kind: 'guestAccess' }, (c) => overlaps(c.gpa, c.len, HARNESS_GPA, HARNESS_SIZE))
    .with(
      { kind: P.union('mmap', 'munmap', 'mprotect', 'madviseDontneed', 'madvisePopulate') },
      (c) => !inWindow(c.hva, c.size),
    )
    .with({ kind: P.union('hostWrite', 'hostRead') }, (c) => !inWindow(c.hva, c.len))
    .with({ kind: 'setMemslot' }, (c) => {
      if (harnessSlot(c.as, c.slot)) return true;
      if (c.size > 0 && overlaps(c.gpa, c.size, HARNESS_GPA, HARNESS_SIZE)) return true;
      // An aligned host range outside the window would give the guest the helper's own memory (the
      // kernel checks only access_ok); an unaligned one is refused by the kernel itself (EINVAL).
      return c.size > 0 && c.hva % PAGE_SIZE === 0 && !inWindow(c.hva, c.size);
    })
    .with({ kind: P.union('getDirtyLog', 'clearDirtyLog') }, (c) => harnessSlot(c.as, c.slot))
    .with({ kind: 'demandPaging' }, (c) => c.slot === HARNESS_SLOT)
    .with({ kind: P.union('raceAccess', 'userfaultBits', 'setMemoryAttributes') }, () => false)
    .with({ kind: P.union('gmemCreate', 'gmemPunchHole', 'checkExtension', 'enableCap') }, () => false)
    .exhaustive();
}
