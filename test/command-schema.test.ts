// The command schema (model/command-schema.ts) is the replay format: every command sequence the
// generators produce must pass it after the JSON round trip a replay file makes, or a found
// counterexample could not be replayed. Also: the schema's bounds are what the bad-input table
// relies on, and the inferred Command type keeps bigint values.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { ARCHES, SZ_1G } from '../model/abi.js';
import { commandSequenceSchema, MAX_COMMAND_BYTES, MAX_SEQUENCE_COMMANDS } from '../model/command-schema.js';
import { bigintAsHex } from '../model/outcomes.js';
import { SERIES_NAMES, UPSTREAM_CONFIG, makeConfig } from '../model/series.js';
import { setupArbitraryFor, templateArbitraryFor } from '../properties/generators.js';
import { vmmGroupArbitraryFor, vmmSetupArbitrary } from '../properties/vmm-generators.js';
import { InvariantViolation, Session } from '../src/harness/session.js';

const configs = [UPSTREAM_CONFIG, makeConfig([...SERIES_NAMES])];

describe('generated sequences pass the replay schema', () => {
  for (const arch of ARCHES)
    for (const model of configs)
      test(`${arch}, series ${model.series.join(',') || 'none'}`, () => {
        const sequences = fc.tuple(setupArbitraryFor(model), fc.array(templateArbitraryFor(model), { maxLength: 40 }));
        fc.assert(
          fc.property(sequences, ([setup, templates]) => {
            const session = new Session({ arch, mutant: null, invariants: new Set(), model });
            try {
              for (const t of [...setup, ...templates]) session.step(t);
            } catch (e) {
              if (!(e instanceof InvariantViolation)) throw e;
            }
            const commands = session.steps.map((s) => s.cmd);
            if (commands.length === 0) return;
            const parsed = commandSequenceSchema.safeParse(JSON.parse(JSON.stringify(commands, bigintAsHex)));
            expect(parsed.success ? 'ok' : JSON.stringify(parsed.error.issues[0])).toBe('ok');
            expect(parsed.data).toEqual(commands);
          }),
          { seed: 9, numRuns: 150 },
        );
      });
});

// The vmm profile's machines have 2-4 GiB slots (QEMU's); a replay of one needs the schema to take them.
test('vmm profile sequences pass the replay schema', () => {
  const sequences = fc.tuple(vmmSetupArbitrary, fc.array(vmmGroupArbitraryFor(UPSTREAM_CONFIG), { maxLength: 6 }));
  fc.assert(
    fc.property(sequences, ([setup, groups]) => {
      const session = new Session({ arch: 'x86', mutant: null, invariants: new Set() });
      for (const t of [...setup, ...groups.flat()]) session.step(t);
      const commands = session.steps.map((s) => s.cmd).slice(0, MAX_SEQUENCE_COMMANDS);
      const parsed = commandSequenceSchema.safeParse(JSON.parse(JSON.stringify(commands, bigintAsHex)));
      expect(parsed.success ? 'ok' : JSON.stringify(parsed.error.issues[0])).toBe('ok');
    }),
    { seed: 9, numRuns: 5 },
  );
});

test('bounds: one command of 1 TiB is refused, of 16 GiB accepted; a populate of more than 1 GiB refused', () => {
  const mmap = (size: number) => [{ kind: 'mmap', hva: 0x10_0000_0000, size, prot: 'rw', backing: 'anon' }];
  expect(commandSequenceSchema.safeParse(mmap(2 ** 40)).success).toBe(false);
  expect(commandSequenceSchema.safeParse(mmap(MAX_COMMAND_BYTES)).success).toBe(true);
  const populate = (size: number) => [{ kind: 'madvisePopulate', hva: 0x10_0000_0000, size, write: true }];
  expect(commandSequenceSchema.safeParse(populate(SZ_1G)).success).toBe(true);
  expect(commandSequenceSchema.safeParse(populate(2 * SZ_1G)).success).toBe(false);
});
