// S0's protocol under the store buffer (src/mmu/store-buffer.ts, userfault.ts): the VMM writes a
// page then clears its userfault bit with store-release while a vCPU reads the page; the fault
// path reads the bit with load-acquire. Many schedules of one case: the correct engine is
// linearizable under every one, each barrier's mutant is caught under some (arm64 only).
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import type { Arch } from '../model/abi.js';
import type { Command } from '../model/commands.js';
import { makeConfig } from '../model/series.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { ConcurrentViolation, runConcurrentCase } from '../src/harness/concurrent.js';
import type { MutantName } from '../src/mmu/mutants.js';

const HVA = 0x10_0000_0000;
const cmd = (c: Command) => ({ t: 'cmd' as const, cmd: c });
const slot = (flags: number): Command => ({
  kind: 'setMemslot',
  api: 'v2',
  as: 0,
  slot: 0,
  flags,
  gpa: 0,
  size: 0x10000,
  hva: HVA,
});
const setup = [
  cmd({ kind: 'mmap', hva: HVA, size: 0x200000, prot: 'rw', backing: 'anon' }),
  cmd(slot(0)),
  cmd({ kind: 'userfaultBits', as: 0, slot: 0, firstPage: 0, numPages: 16, set: true }),
  cmd(slot(8)),
];
const vcpu = [cmd({ kind: 'guestAccess', vcpu: 0, gpa: 0x1008, len: 8, write: false, value: 0n })];
const vmm = [
  cmd({ kind: 'hostWrite', hva: HVA + 0x1008, len: 8, value: 0x1122334455667788n }),
  cmd({ kind: 'userfaultBits', as: 0, slot: 0, firstPage: 1, numPages: 1, set: false }),
];
const model = makeConfig(['userfault']);

/** How many of `n` seeded schedules give a violation. */
function violations(arch: Arch, mutant: MutantName | null, n: number): number {
  const session = { arch, mutant, invariants: new Set(INVARIANT_IDS), model };
  const schedules = fc.sample(fc.array(fc.nat({ max: 255 }), { minLength: 8, maxLength: 24 }), { seed: 4, numRuns: n });
  let found = 0;
  for (const schedule of schedules) {
    try {
      runConcurrentCase(session, {
        setup,
        roles: [{ kind: 'vcpu', vcpu: 0 }, { kind: 'vmm' }],
        threads: [vcpu, vmm],
        schedule,
      });
    } catch (e) {
      if (!(e instanceof ConcurrentViolation)) throw e;
      found++;
    }
  }
  return found;
}

describe('userfault bitmap ordering', () => {
  test.each(['arm64', 'x86'] as const)('the correct engine passes every schedule (%s)', (arch) => {
    expect(violations(arch, null, 300)).toBe(0);
  });

  test.each(['userfault-clear-without-release', 'userfault-bit-load-without-acquire'] as const)(
    '%s is caught on arm64',
    (mutant) => {
      expect(violations('arm64', mutant, 300)).toBeGreaterThan(0);
    },
  );

  test('on x86 (TSO: stores leave in order) a plain clear is no bug, so no schedule catches it', () => {
    expect(violations('x86', 'userfault-clear-without-release', 300)).toBe(0);
  });
});
