// What a campaign exercised, so a passing run says how much it checked: commands by kind, outcomes
// by class, and the engine's structural events (block mappings, splits, TLBIs).
import { match } from 'ts-pattern';
import { exitReasonName } from '../../model/observable.js';
import type { Outcome } from '../../model/outcomes.js';
import type { Command } from '../../model/commands.js';
import type { MmuStats } from '../mmu/ops.js';

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
