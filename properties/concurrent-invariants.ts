// The engine invariants of a concurrent run, at every point where they must hold (issue 10, oracle
// b and c). Table refcounts (INV-5) and break-before-make (INV-3) hold after every step: each
// break and make happens inside one step. leaf-justified and tlb-coherent are checked only at
// quiescent points, where no thread is inside a command: while an invalidation, a memslot update
// or a dirty-log harvest runs, a stale TLB entry (INV-2) and the leaves of a slot being updated
// are legal, and KVM's guarantee is stated at the ioctl's return (INV-1); while a fault runs,
// arm64 marks the page dirty only after dropping mmu_lock, so a writable leaf of a logged slot may
// wait a step for its dirty bit. INV-16: only the thread running a vCPU writes that vCPU's kvm_run.
import { bigintAsHex } from '../model/outcomes.js';
import type { Command } from '../model/commands.js';
import type { ThreadRole } from '../model/history.js';
import type { Engine } from '../src/mmu/engine.js';
import type { MmuEvent } from '../src/mmu/ops.js';
import {
  checkBreakBeforeMake,
  checkLeafJustified,
  checkTableRefcounts,
  checkTlbCoherent,
} from './engine-invariants.js';

/** A problem seen at one step of the interleaving, under the invariant's id. */
export interface StepProblem {
  invariant: 'pgtable-refcount' | 'bbm' | 'leaf-justified' | 'tlb-coherent' | 'kvm-run-owner';
  message: string;
}

export class ConcurrentChecks {
  private readonly busy = new Set<number>();
  private runs: string[];

  constructor(
    private readonly engine: Engine,
    private readonly roles: readonly ThreadRole[],
  ) {
    this.runs = engineRuns(engine);
  }

  /** After one scheduling decision: `events` are the MMU events that step recorded. */
  afterStep(step: { thread: number; finished: boolean }, events: readonly MmuEvent[]): StepProblem[] {
    const kvm = this.engine.kvm;
    const out: StepProblem[] = [];
    const add = (invariant: StepProblem['invariant'], messages: string[]): void => {
      for (const message of messages) out.push({ invariant, message });
    };
    add('pgtable-refcount', checkTableRefcounts(kvm, events));
    add('bbm', checkBreakBeforeMake(events));
    add('kvm-run-owner', this.checkRunOwner(step.thread));
    if (step.finished) this.busy.delete(step.thread);
    else this.busy.add(step.thread);
    if (this.busy.size === 0) {
      add('leaf-justified', checkLeafJustified(kvm));
      add('tlb-coherent', checkTlbCoherent(kvm));
    }
    return out;
  }

  /** INV-16 (S3, Sean 03-21): a step may change only the kvm_run of the vCPU its thread runs. */
  private checkRunOwner(thread: number): string[] {
    const now = engineRuns(this.engine);
    const role = this.roles[thread];
    const own = role?.kind === 'vcpu' ? [role.vcpu] : [];
    const out = runsChangedOutside(own, this.runs, now).map(
      (vcpu) =>
        `thread ${thread} (${role?.kind === 'vcpu' ? `vcpu${role.vcpu}` : 'vmm'}) changed vcpu${vcpu}'s kvm_run`,
    );
    this.runs = now;
    return out;
  }
}

/** Each vCPU's kvm_run as the engine holds it, comparable as strings. */
export const engineRuns = (engine: Engine): string[] => engine.kvm.runs.map((r) => JSON.stringify(r, bigintAsHex));

/** The vCPUs whose kvm_run a command may write: those it runs (KVM_RUN, a race's access, an episode's vCPUs). */
export function vcpusRunBy(cmd: Command): number[] {
  switch (cmd.kind) {
    case 'guestAccess':
      return [cmd.vcpu];
    case 'raceAccess':
      return [cmd.access.vcpu];
    case 'demandPaging':
      return cmd.vcpuPages.map((_, vcpu) => vcpu);
    default:
      return [];
  }
}

const runsChangedOutside = (own: readonly number[], before: readonly string[], after: readonly string[]): number[] =>
  after.flatMap((run, vcpu) => (!own.includes(vcpu) && run !== before[vcpu] ? [vcpu] : []));

/** INV-16 for one command run alone. */
export function checkRunOwner(cmd: Command, before: readonly string[], after: readonly string[]): string[] {
  return runsChangedOutside(vcpusRunBy(cmd), before, after).map(
    (vcpu) => `the command changed vcpu${vcpu}'s kvm_run, which it does not run`,
  );
}
