// The optimized engine as a backend: one VM, commands in, observable outcomes out, plus read-only
// views of its internals for the invariants in properties/.
import { match } from 'ts-pattern';
import {
  KVM_CAP_ARM_NISV_TO_USER, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_CAPS,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, type Arch,
} from '../../model/abi.js';
import { capValue } from '../../model/caps.js';
import type { Command, EnableCap, HostCommand } from '../../model/commands.js';
import {
  planMadviseDontneed, planMmap, planMprotect, planMunmap,
} from '../../model/host-mm.js';
import type { Memory } from '../../model/memory.js';
import type { Outcome } from '../../model/outcomes.js';
import { kvmClearDirtyLog, kvmGetDirtyLog } from './dirty.js';
import { kvmGmemCreate, kvmGmemPunchHole } from './gmem.js';
import { createKvm, type Kvm } from './kvm.js';
import { kvmSetUserMemoryRegion } from './memslot-ioctl.js';
import type { MutantName } from './mutants.js';
import { createMmuNotifier } from './notifier.js';
import type { MmuEvent } from './ops.js';
import { kvmRun } from './vcpu-run.js';

export class Engine {
  readonly kvm: Kvm;

  constructor(arch: Arch, mutant: MutantName | null = null) {
    this.kvm = createKvm(arch, mutant);
    this.kvm.host.notifier = createMmuNotifier(this.kvm);
  }

  apply(cmd: Command): Outcome {
    const kvm = this.kvm;
    return match(cmd)
      .with({ kind: 'setMemslot' }, (c) => kvmSetUserMemoryRegion(kvm, c))
      .with({ kind: 'mmap' }, { kind: 'munmap' }, { kind: 'mprotect' }, { kind: 'madviseDontneed' }, { kind: 'hostWrite' }, (c) => this.host(c))
      .with({ kind: 'hostRead' }, (c) => kvm.host.hostRead(c.hva, c.len))
      .with({ kind: 'gmemCreate' }, (c) => kvmGmemCreate(kvm, c))
      .with({ kind: 'gmemPunchHole' }, (c) => kvmGmemPunchHole(kvm, c))
      .with({ kind: 'guestAccess' }, (c) => kvmRun(kvm, c, () => this.runRacingHost()))
      .with({ kind: 'getDirtyLog' }, (c) => kvmGetDirtyLog(kvm, c))
      .with({ kind: 'clearDirtyLog' }, (c) => kvmClearDirtyLog(kvm, c))
      .with({ kind: 'checkExtension' }, (c) => ({ kind: 'ok' as const, value: capValue(kvm.arch, c.cap) }))
      .with({ kind: 'enableCap' }, (c) => this.enableCap(c))
      .with({ kind: 'raceAccess' }, (c) => {
        kvm.pendingRace = { host: c.host };
        const access = kvmRun(kvm, c.access, () => this.runRacingHost());
        if (!kvm.pendingRace.outcome) this.runRacingHost();
        const host = kvm.pendingRace.outcome!;
        kvm.pendingRace = null;
        return { kind: 'race' as const, access, host };
      })
      .exhaustive();
  }

  private host(cmd: HostCommand): Outcome {
    const host = this.kvm.host;
    return match(cmd)
      .with({ kind: 'mmap' }, (c) => host.applyPlan(planMmap(host.vmas, c)))
      .with({ kind: 'munmap' }, (c) => host.applyPlan(planMunmap(host.vmas, c)))
      .with({ kind: 'mprotect' }, (c) => host.applyPlan(planMprotect(host.vmas, c)))
      .with({ kind: 'madviseDontneed' }, (c) => host.applyPlan(planMadviseDontneed(host.vmas, c)))
      .with({ kind: 'hostWrite' }, (c) => host.hostWrite(c.hva, c.len, c.value))
      .exhaustive();
  }

  /** Runs the racing host command once, from inside the fault path's race window or after the access. */
  private runRacingHost(): void {
    const race = this.kvm.pendingRace;
    if (race && !race.outcome) race.outcome = this.host(race.host);
  }

  /** kvm_vm_ioctl_enable_cap_generic() and the arm64 arch hook for the capabilities modelled. */
  private enableCap(cap: EnableCap): Outcome {
    if (cap.cap === KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) {
      let allowed = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
      if (cap.args0 & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) allowed = KVM_DIRTY_LOG_MANUAL_CAPS;
      if (cap.flags || cap.args0 & ~allowed) return { kind: 'err', errno: 'EINVAL' };
      this.kvm.manualDirtyLog = cap.args0;
      return { kind: 'ok' };
    }
    if (this.kvm.arch === 'arm64') {
      if (cap.flags) return { kind: 'err', errno: 'EINVAL' };
      if (cap.cap === KVM_CAP_ARM_NISV_TO_USER) return { kind: 'ok' };
    }
    return { kind: 'err', errno: 'EINVAL' };
  }

  /** The VMM-visible contents of its own memory, keyed by hva page. */
  hostMemory(): Memory {
    return this.kvm.host.contents();
  }

  /** Contents of each guest_memfd, keyed by file page. */
  gmemMemory(): Memory[] {
    return this.kvm.gmems.map((file) => {
      const mem: Memory = new Map();
      for (const [index, pfn] of file.pages) {
        const data = this.kvm.phys.page(pfn);
        if (data && data.size > 0) mem.set(index, data);
      }
      return mem;
    });
  }

  takeEvents(): MmuEvent[] {
    return this.kvm.ops.takeEvents();
  }
}
