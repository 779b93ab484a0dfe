// What a campaign exercised, so a passing run says how much it checked: commands by kind, outcomes
// by class, and the engine's structural events (block mappings, splits, TLBIs).
import { match } from 'ts-pattern';
import { exitReasonName } from '../../model/observable.js';
import type { Outcome } from '../../model/outcomes.js';
import type { Command } from '../../model/commands.js';
import type { SpecState } from '../../model/state.js';
import type { MmuStats } from '../mmu/ops.js';
import { leaves, walk, type TablePage } from '../mmu/pgtable.js';

/** Pages in 1 GiB: the slot size from which a dirty log is real-VMM-sized (QEMU logs 2-4 GiB slots). */
const GIB_PAGES = 1 << 18;

export class Coverage {
  readonly counts = new Map<string, number>();

  count(key: string, by = 1): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + by);
  }

  record(cmd: Command, outcome: Outcome): void {
    this.count(`cmd ${cmd.kind}`);
    this.count(`outcome ${outcomeClass(outcome)}`);
  }

  addEngineStats(stats: MmuStats): void {
    this.count('engine 4K leaves mapped', stats.leavesMapped[3]);
    this.count('engine 2M blocks mapped', stats.leavesMapped[2]);
    this.count('engine 1G blocks mapped', stats.leavesMapped[1]);
    this.count('engine blocks split', stats.splits);
    this.count('engine TLBIs', stats.tlbis);
    this.count('engine tables freed', stats.tablesFreed);
    // arm64-unmap metrics (S0's CMO storm, BUG-15's stage-1 over-invalidation): counted, never a failure.
    if (stats.cmos) this.count('engine CMOs', stats.cmos);
    if (stats.s1ContextFlushes) this.count('engine stage-1 context flushes', stats.s1ContextFlushes);
    if (stats.fastUnmaps) this.count('engine fast unmaps', stats.fastUnmaps);
  }

  /**
   * What only big states have, from the state before a command: harvests over GiB-sized logged
   * slots, and slot deletes (hotplug unplug) while the slot still has stage-2 mappings.
   */
  scaleBefore(cmd: Command, spec: SpecState, root: TablePage): void {
    if (cmd.kind !== 'getDirtyLog' && cmd.kind !== 'clearDirtyLog' && !(cmd.kind === 'setMemslot' && cmd.size === 0))
      return;
    const slot = spec.slots.find((x) => x.id === cmd.slot && x.as === cmd.as);
    if (!slot) return;
    if (cmd.kind !== 'setMemslot') {
      if (slot.dirtyLog && slot.npages >= GIB_PAGES) this.count(`scale ${cmd.kind} over a logged slot of >= 1 GiB`);
      return;
    }
    let mapped = 0;
    const start = slot.baseGfn * 0x1000;
    if (slot.as === 0) walk(root, 0, start, start + slot.npages * 0x1000, { leaf: () => void mapped++ });
    if (mapped) this.count('scale slot deleted with stage-2 mappings');
  }

  /** At the end of a run: how big its state got. */
  addScale(spec: SpecState, root: TablePage): void {
    let n = 0;
    for (const _ of leaves(root)) n++;
    if (n > 1000) this.count('scale runs ending with > 1000 stage-2 leaves');
    if (spec.slots.length >= 8) this.count('scale runs ending with >= 8 memslots');
    if (spec.slots.some((x) => x.npages >= GIB_PAGES)) this.count('scale runs ending with a memslot of >= 1 GiB');
  }

  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }
}

export function outcomeClass(o: Outcome): string {
  return match(o)
    .with({ kind: 'ok' }, () => 'ok')
    .with({ kind: 'err' }, (x) => `-${x.errno}`)
    .with({ kind: 'hostData' }, () => 'host data')
    .with({ kind: 'segv' }, () => 'SIGSEGV')
    .with({ kind: 'run' }, (x) =>
      x.rc === 0
        ? `run exit ${exitReasonName(x.run.exitReason)}`
        : `run -${x.errno} exit ${exitReasonName(x.run.exitReason)}`,
    )
    .with({ kind: 'dirtyLog' }, (x) => (x.dirty.length ? 'dirty log (non-empty)' : 'dirty log (empty)'))
    .with({ kind: 'race' }, (x) => `race ${outcomeClass(x.access)}`)
    .with({ kind: 'episode' }, (x) => (x.completed ? 'demand-paging episode finished' : 'demand-paging episode STUCK'))
    .exhaustive();
}
