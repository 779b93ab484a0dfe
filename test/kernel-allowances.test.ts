// The spec allowances check --threads --backend kvm found missing on pvm-6.18 (model/in-flight.ts):
// the kernel's history, rebuilt here, is linearizable only when the calls overlapped in real time,
// and the checker still rejects it once they are disjoint (so the allowance is no blanket pass).
import { describe, expect, test } from 'vitest';
import type { Command, GuestAccess } from '../model/commands.js';
import type { History } from '../model/history.js';
import { inFlightAlternatives } from '../model/in-flight.js';
import { formatOutcome } from '../model/observable.js';
import type { Outcome } from '../model/outcomes.js';
import { makeConfig } from '../model/series.js';
import { applyCommand, type SequentialCommand } from '../model/spec.js';
import { newSpecState } from '../model/state.js';
import { checkLinearizable } from '../properties/linearizability.js';
import { specHistoryModel } from '../properties/spec-history-model.js';

const model = makeConfig([], {}, ['fault-as-mmio', 'gmem-faults-via-hva', 'single-address-space']);
const HVA = 0x10_0000_0000;
const setup: Command[] = [
  { kind: 'mmap', hva: HVA, size: 0x200000, prot: 'rw', backing: 'thp' },
  { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 0, size: 0x10000, hva: HVA },
];
const afterSetup = () => {
  const s = newSpecState('x86', model);
  for (const c of setup) applyCommand(s, c as SequentialCommand);
  return s;
};
/** The outcome the kernel gave (the allowance labelled `label`: the test checks that it is the one). */
function allowed(cmd: GuestAccess, during: Command, label: RegExp): Outcome {
  const alt = inFlightAlternatives(afterSetup(), cmd, [during]).find((a) => label.test(a.label));
  if (!alt) throw new Error(`no allowance ${label}`);
  return alt.outcome;
}
const history = (events: Omit<History['events'][number], 'id'>[]): History => ({
  threads: 2,
  clock: 'ns',
  events: events.map((e, id) => ({ ...e, id })),
});
const verdict = (h: History) => checkLinearizable(specHistoryModel(afterSetup(), undefined, h), h).kind;

describe('allowances found on the kernel', () => {
  test('a page-straddling write during a memslot MOVE: first page done, MMIO on the second', () => {
    const write: GuestAccess = { kind: 'guestAccess', vcpu: 0, gpa: 0xeffc, len: 8, write: true, value: 0n };
    const move: Command = {
      kind: 'setMemslot',
      api: 'v2',
      slot: 0,
      as: 0,
      flags: 0,
      gpa: 0x200000,
      size: 0x10000,
      hva: HVA,
    };
    const outcome = allowed(write, move, /first page done/);
    expect(formatOutcome(outcome)).toMatch(/exit=MMIO mmio\{phys=0xf000 len=4 write=1/);
    const events = (w: [number, number]) =>
      history([
        { thread: 0, index: 0, command: write, outcome, invoke: w[0], respond: w[1] },
        { thread: 1, index: 0, command: move, outcome: { kind: 'ok' }, invoke: 618_941, respond: 1_532_145 },
      ]);
    expect(verdict(events([0, 1_265_545]))).toBe('linearizable'); // the kernel's times: they overlap
    expect(verdict(events([0, 600_000]))).toBe('not-linearizable'); // done before the move began
  });

  test('a read during munmap of its range may find the pages gone while a later read still reads them', () => {
    const first: GuestAccess = { kind: 'guestAccess', vcpu: 0, gpa: 0x1008, len: 8, write: false, value: 0n };
    const straddle: GuestAccess = { kind: 'guestAccess', vcpu: 0, gpa: 0xfffc, len: 8, write: false, value: 0n };
    const munmap: Command = { kind: 'munmap', hva: HVA + 0x1000, size: 0x400000 };
    const gone = allowed(first, munmap, /already gone/);
    expect(formatOutcome(gone)).toMatch(/exit=MMIO mmio\{phys=0x1008/);
    // The straddling read before the unmap: its first page read, MMIO past the slot's end.
    const s = afterSetup();
    const old = applyCommand(s, straddle);
    expect(formatOutcome(old)).toMatch(/exit=MMIO mmio\{phys=0x10000 len=4/);
    const events = (unmap: [number, number]) =>
      history([
        { thread: 0, index: 0, command: first, outcome: gone, invoke: 0, respond: 795_703 },
        { thread: 0, index: 1, command: straddle, outcome: old, invoke: 795_822, respond: 825_329 },
        { thread: 1, index: 0, command: munmap, outcome: { kind: 'ok' }, invoke: unmap[0], respond: unmap[1] },
      ]);
    expect(verdict(events([587_392, 893_287]))).toBe('linearizable');
    expect(verdict(events([900_000, 950_000]))).toBe('not-linearizable'); // the unmap after both reads
  });

  test('a read straddling two pages during munmap of both: first page read, the second already gone', () => {
    const straddle: GuestAccess = { kind: 'guestAccess', vcpu: 0, gpa: 0xffc, len: 8, write: false, value: 0n };
    const munmap: Command = { kind: 'munmap', hva: HVA, size: 0x200000 };
    const outcome = allowed(straddle, munmap, /first page done, the second after the munmap/);
    expect(formatOutcome(outcome)).toMatch(/exit=MMIO mmio\{phys=0x1000 len=4/);
    // Neither sequential order gives it: before the unmap the read completes, after it the first page faults.
    const s = afterSetup();
    expect(formatOutcome(applyCommand(s, straddle))).not.toMatch(/phys=0x1000/);
    applyCommand(s, munmap as SequentialCommand);
    expect(formatOutcome(applyCommand(s, straddle))).toMatch(/phys=0xffc/);
    const events = (unmap: [number, number]) =>
      history([
        { thread: 0, index: 0, command: straddle, outcome, invoke: 0, respond: 47 },
        { thread: 1, index: 0, command: munmap, outcome: { kind: 'ok' }, invoke: unmap[0], respond: unmap[1] },
      ]);
    expect(verdict(events([6, 45]))).toBe('linearizable');
    expect(verdict(events([50, 60]))).toBe('not-linearizable'); // the unmap after the read
    const protect: Command = { kind: 'mprotect', hva: HVA, size: 0x200000, prot: 'none' };
    expect(formatOutcome(allowed(straddle, protect, /after the mprotect/))).toMatch(/phys=0x1000 len=4/);
    // A read within one page has no split to offer.
    const within: GuestAccess = { ...straddle, gpa: 0xff0 };
    expect(inFlightAlternatives(afterSetup(), within, [munmap]).map((a) => a.label)).not.toContainEqual(
      expect.stringMatching(/first page done/),
    );
  });
});
