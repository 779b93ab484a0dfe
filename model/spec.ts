// The reference specification's entry points: one command in, one observable outcome out.
import { match } from 'ts-pattern';
import { ambiguousPages, guestAccess } from './access.js';
import { noteHostChange } from './arm64-lock.js';
import { checkExtension, enableCap } from './caps.js';
import { PAGE_SIZE } from './abi.js';
import type { Command, RaceAccess } from './commands.js';
import { splitByPage } from './memory.js';
import { findSlot } from './memslots.js';
import { isGmemOnly } from './gmem-access.js';
import { demandPaging } from './demand-paging.js';
import { setMemoryAttributes } from './gmem-private.js';
import { clearDirtyLog, getDirtyLog } from './dirty-log.js';
import { gmemCreate, gmemPunchHole } from './gmem.js';
import {
  applyHostPlan,
  hostCanAccess,
  hostRead,
  hostWrite,
  madvisePopulate,
  planMadviseDontneed,
  planMmap,
  planMprotect,
  planMunmap,
  populate,
  type HostPlan,
} from './host-mm.js';
import { setMemslot } from './memslots.js';
import type { Outcome } from './outcomes.js';
import { seriesOn } from './series.js';
import { cloneSpecState, type SpecState } from './state.js';
import { userfaultBits } from './userfault.js';

export type SequentialCommand = Exclude<Command, RaceAccess>;

/** A host syscall plan, applied; locked slots over the range lose their guarantee (arm64-lock). */
function hostPlan(state: SpecState, plan: HostPlan): Outcome {
  for (const change of plan.changes) {
    if (change.op !== 'map') noteHostChange(state, change.start, change.end);
  }
  return applyHostPlan(state.mm, plan);
}

/** Apply one command to the spec state (in place) and return what the VMM observes. */
export function applyCommand(state: SpecState, cmd: SequentialCommand): Outcome {
  return match(cmd)
    .with({ kind: 'setMemslot' }, (c) => setMemslot(state, c))
    .with({ kind: 'mmap' }, (c) => hostPlan(state, planMmap(state.mm.vmas, c)))
    .with({ kind: 'munmap' }, (c) => hostPlan(state, planMunmap(state.mm.vmas, c)))
    .with({ kind: 'mprotect' }, (c) => hostPlan(state, planMprotect(state.mm.vmas, c)))
    .with({ kind: 'madviseDontneed' }, (c) => hostPlan(state, planMadviseDontneed(state.mm.vmas, c)))
    .with({ kind: 'madvisePopulate' }, (c) => madvisePopulate(state.mm, c))
    .with({ kind: 'hostWrite' }, (c) => hostWrite(state.mm, c))
    .with({ kind: 'hostRead' }, (c) => hostRead(state.mm, c))
    .with({ kind: 'gmemCreate' }, (c) => gmemCreate(state, c))
    .with({ kind: 'gmemPunchHole' }, (c) => gmemPunchHole(state, c))
    .with({ kind: 'guestAccess' }, (c) => guestAccess(state, c))
    .with({ kind: 'getDirtyLog' }, (c) => getDirtyLog(state, c))
    .with({ kind: 'clearDirtyLog' }, (c) => clearDirtyLog(state, c))
    .with({ kind: 'checkExtension' }, (c) => checkExtension(state, c))
    .with({ kind: 'enableCap' }, (c) => enableCap(state, c))
    .with({ kind: 'userfaultBits' }, (c) => userfaultBits(state, c))
    .with({ kind: 'setMemoryAttributes' }, (c) => setMemoryAttributes(state, c))
    .with({ kind: 'demandPaging' }, (c) => demandPaging(state, c))
    .exhaustive();
}

/** One way a command may have gone, with the spec state it leaves. */
export interface Alternative {
  label: string;
  outcome: Outcome;
  state: SpecState;
}

/**
 * The outcomes the spec allows for a command, when there is more than one: a race (every sequential
 * order), or a guest access to pages whose userfault bit is set but which a stage-2 mapping made
 * earlier may still serve (each such page either way; userfault.ts). Null: exactly one outcome.
 */
export function specAlternatives(state: SpecState, cmd: Command): Alternative[] | null {
  if (cmd.kind === 'raceAccess') return raceAlternatives(state, cmd);
  if (cmd.kind !== 'guestAccess') return null;
  const pages = ambiguousPages(state, cmd);
  if (pages.length === 0) return null;
  return subsets(pages).map((stale) => {
    const next = cloneSpecState(state);
    const outcome = guestAccess(next, cmd, { staleMappingUsed: new Set(stale) });
    return { label: stale.length ? 'stale mapping serves the access' : 'no stale mapping', outcome, state: next };
  });
}

const subsets = (items: readonly number[]): number[][] =>
  items.reduce<number[][]>((acc, x) => acc.concat(acc.map((s) => [...s, x])), [[]]);

export interface RaceAlternative extends Alternative {
  order: 'access-first' | 'host-first';
}

/**
 * A race between a guest access and a host change is correct if it is linearizable: its outcome
 * and the resulting state equal one of the two sequential orders (DESIGN.md, "Concurrency by
 * controlled interleaving"; INV-40 makes the fault path retry rather than map a stale pfn). Under
 * userfault, each order is taken with every answer for the ambiguous pages too.
 */
export function raceAlternatives(state: SpecState, cmd: RaceAccess): RaceAlternative[] {
  const access = (s: SpecState, stale: number[]): Outcome =>
    guestAccess(s, cmd.access, { staleMappingUsed: new Set(stale) });
  const host = (s: SpecState): Outcome => applyCommand(s, cmd.host);
  const out: RaceAlternative[] = [];
  for (const stale of subsets(ambiguousPages(state, cmd.access))) {
    const accessFirst = cloneSpecState(state);
    const a1 = access(accessFirst, stale);
    const h1 = host(accessFirst);
    const hostFirst = cloneSpecState(state);
    const h2 = host(hostFirst);
    const a2 = access(hostFirst, stale);
    out.push({
      order: 'access-first',
      label: 'race: access-first',
      outcome: { kind: 'race', access: a1, host: h1 },
      state: accessFirst,
    });
    out.push({
      order: 'host-first',
      label: 'race: host-first',
      outcome: { kind: 'race', access: a2, host: h2 },
      state: hostFirst,
    });
    // The fault path's get_user_pages may have populated the page before the host change landed
    // and the fault retried (INV-40): host-first, with the population kept. Only fast-only GUP
    // can tell the difference (exit-on-missing).
    if (!seriesOn(state.config, 'exit-on-missing')) continue;
    for (const part of splitByPage(cmd.access.gpa, cmd.access.len)) {
      const populatedFirst = cloneSpecState(state);
      prefault(populatedFirst, part.addr, cmd.access.write);
      const h3 = host(populatedFirst);
      const a3 = access(populatedFirst, stale);
      out.push({
        order: 'host-first',
        label: 'race: gup, host, retry',
        outcome: { kind: 'race', access: a3, host: h3 },
        state: populatedFirst,
      });
    }
  }
  return out;
}

/** What the racing fault's get_user_pages populated for the page at gpa, if the host allowed it. */
function prefault(state: SpecState, gpa: number, write: boolean): void {
  const slot = findSlot(state, 0, Math.floor(gpa / PAGE_SIZE));
  if (!slot || (slot.gmem && isGmemOnly(state, slot))) return;
  const hva = slot.hva + gpa - slot.baseGfn * PAGE_SIZE;
  if (hostCanAccess(state.mm.vmas, hva, write)) populate(state.mm, hva, write);
}
