// The reference specification's entry points: one command in, one observable outcome out.
import { match } from 'ts-pattern';
import { guestAccess } from './access.js';
import { checkExtension, enableCap } from './caps.js';
import type { Command, RaceAccess } from './commands.js';
import { clearDirtyLog, getDirtyLog } from './dirty-log.js';
import { gmemCreate, gmemPunchHole } from './gmem.js';
import {
  applyHostPlan, hostRead, hostWrite, planMadviseDontneed, planMmap, planMprotect, planMunmap,
} from './host-mm.js';
import { setMemslot } from './memslots.js';
import type { Outcome } from './outcomes.js';
import type { SpecState } from './state.js';

export type SequentialCommand = Exclude<Command, RaceAccess>;

/** Apply one command to the spec state (in place) and return what the VMM observes. */
export function applyCommand(state: SpecState, cmd: SequentialCommand): Outcome {
  return match(cmd)
    .with({ kind: 'setMemslot' }, (c) => setMemslot(state, c))
    .with({ kind: 'mmap' }, (c) => applyHostPlan(state.mm, planMmap(state.mm.vmas, c)))
    .with({ kind: 'munmap' }, (c) => applyHostPlan(state.mm, planMunmap(state.mm.vmas, c)))
    .with({ kind: 'mprotect' }, (c) => applyHostPlan(state.mm, planMprotect(state.mm.vmas, c)))
    .with({ kind: 'madviseDontneed' }, (c) => applyHostPlan(state.mm, planMadviseDontneed(state.mm.vmas, c)))
    .with({ kind: 'hostWrite' }, (c) => hostWrite(state.mm, c))
    .with({ kind: 'hostRead' }, (c) => hostRead(state.mm, c))
    .with({ kind: 'gmemCreate' }, (c) => gmemCreate(state, c))
    .with({ kind: 'gmemPunchHole' }, (c) => gmemPunchHole(state, c))
    .with({ kind: 'guestAccess' }, (c) => guestAccess(state, c))
    .with({ kind: 'getDirtyLog' }, (c) => getDirtyLog(state, c))
    .with({ kind: 'clearDirtyLog' }, (c) => clearDirtyLog(state, c))
    .with({ kind: 'checkExtension' }, (c) => checkExtension(state, c))
    .with({ kind: 'enableCap' }, (c) => enableCap(state, c))
    .exhaustive();
}

export interface RaceAlternative { order: 'access-first' | 'host-first'; outcome: Outcome; state: SpecState }

/**
 * A race between a guest access and a host change is correct if it is linearizable: its outcome
 * and the resulting state equal one of the two sequential orders (DESIGN.md, "Concurrency by
 * controlled interleaving"; INV-40 makes the fault path retry rather than map a stale pfn).
 */
export function raceAlternatives(state: SpecState, cmd: RaceAccess): RaceAlternative[] {
  const accessFirst = structuredClone(state);
  const a1 = applyCommand(accessFirst, cmd.access);
  const h1 = applyCommand(accessFirst, cmd.host);
  const hostFirst = structuredClone(state);
  const h2 = applyCommand(hostFirst, cmd.host);
  const a2 = applyCommand(hostFirst, cmd.access);
  return [
    { order: 'access-first', outcome: { kind: 'race', access: a1, host: h1 }, state: accessFirst },
    { order: 'host-first', outcome: { kind: 'race', access: a2, host: h2 }, state: hostFirst },
  ];
}
