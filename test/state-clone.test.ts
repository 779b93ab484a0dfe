// cloneSpecState (model/state.ts) against structuredClone: the same state, and no shared mutable part.
import { describe, expect, it } from 'vitest';
import type { Command } from '../model/commands.js';
import { applyCommand, type SequentialCommand } from '../model/spec.js';
import { cloneSpecState, newSpecState } from '../model/state.js';

const HVA = 0x10_0000_0000;
const commands = [
  { kind: 'mmap', hva: HVA, size: 0x200000, prot: 'rw', backing: 'anon' },
  { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 1, gpa: 0, size: 0x10000, hva: HVA },
  { kind: 'hostWrite', hva: HVA + 8, len: 4, value: 0x1234n },
  { kind: 'guestAccess', vcpu: 0, gpa: 0x1000, len: 8, write: true, value: 0xabn },
] as unknown as Command[];

describe('cloneSpecState', () => {
  it('equals structuredClone and shares nothing the spec mutates', () => {
    const state = newSpecState('x86');
    for (const cmd of commands) applyCommand(state, cmd as SequentialCommand);
    expect(state.mm.memory.size).toBeGreaterThan(0);
    const copy = cloneSpecState(state);
    expect(copy).toEqual(structuredClone(state));
    const before = structuredClone(state);
    copy.mm.memory.get([...copy.mm.memory.keys()][0]!)!.set(0, 7);
    copy.mm.present.clear();
    copy.slots[0]!.flags = 0;
    copy.slots[0]!.dirtyLog?.dirty.add(3);
    copy.vcpus[0]!.exitReason = 99;
    expect(state).toEqual(before);
  });
});
