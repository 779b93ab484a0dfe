// The optimized engine as a backend: one VM, commands in, observable outcomes out, plus read-only
// views of its internals for the invariants in properties/.
import { match } from 'ts-pattern';
import {
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_DIRTY_LOG_MANUAL_CAPS,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  PAGE_SIZE,
  type Arch,
} from '../../model/abi.js';
import { capValue } from '../../model/caps.js';
import type { Command, EnableCap, GuestAccess, HostCommand } from '../../model/commands.js';
import {
  KVM_CAP_X86_MEMORY_FAULT_EXIT,
  KVM_MEMFAULT_REASON_ABSENT_MAPPING,
  KVM_MEMFAULT_REASON_UNKNOWN,
  KVM_MEMFAULT_VALID_REASONS,
} from '../../model/series-abi.js';
import { UPSTREAM_CONFIG, seriesOn, type ModelConfig } from '../../model/series.js';
import { runDemandPaging, type EpisodeReport } from '../agent/demand-paging.js';
import { arm64EnableCap } from './arm64-lock.js';
import { handleStage2Fault } from './fault.js';
import { kvmSetMemoryAttributes } from './gmem-private.js';
import { planMadviseDontneed, planMmap, planMprotect, planMunmap } from '../../model/host-mm.js';
import type { Memory } from '../../model/memory.js';
import type { Outcome } from '../../model/outcomes.js';
import { kvmClearDirtyLog, kvmGetDirtyLog } from './dirty.js';
import type { EngineFinding } from './findings.js';
import { kvmGmemCreate, kvmGmemPunchHole } from './gmem.js';
import { createKvm, type Kvm } from './kvm.js';
import { kvmSetUserMemoryRegion } from './memslot-ioctl.js';
import type { MutantName } from './mutants.js';
import { createMmuNotifier } from './notifier.js';
import type { MmuEvent } from './ops.js';
import { kvmUserfaultBits } from './userfault.js';
import { kvmRun } from './vcpu-run.js';
import { wrprotectRange } from './visitors.js';

export class Engine {
  readonly kvm: Kvm;
  /** The last demand-paging episode's protocol report (exit-on-missing), for the uffd invariants. */
  lastEpisode: EpisodeReport | null = null;

  constructor(arch: Arch, mutant: MutantName | null = null, config: ModelConfig = UPSTREAM_CONFIG) {
    this.kvm = createKvm(arch, mutant, config);
    this.kvm.host.notifier = createMmuNotifier(this.kvm);
  }

  apply(cmd: Command): Outcome {
    const kvm = this.kvm;
    return match(cmd)
      .with({ kind: 'setMemslot' }, (c) => kvmSetUserMemoryRegion(kvm, c))
      .with(
        { kind: 'mmap' },
        { kind: 'munmap' },
        { kind: 'mprotect' },
        { kind: 'madviseDontneed' },
        { kind: 'hostWrite' },
        (c) => this.host(c),
      )
      .with({ kind: 'hostRead' }, (c) => kvm.host.hostRead(c.hva, c.len))
      .with({ kind: 'gmemCreate' }, (c) => kvmGmemCreate(kvm, c))
      .with({ kind: 'gmemPunchHole' }, (c) => kvmGmemPunchHole(kvm, c))
      .with({ kind: 'guestAccess' }, (c) => this.run(c))
      .with({ kind: 'madvisePopulate' }, (c) => kvm.host.madvisePopulate(c.hva, c.size, c.write))
      .with({ kind: 'userfaultBits' }, (c) => kvmUserfaultBits(kvm, c))
      .with({ kind: 'setMemoryAttributes' }, (c) => kvmSetMemoryAttributes(kvm, c))
      .with({ kind: 'demandPaging' }, (c) => {
        const { outcome, report } = runDemandPaging(kvm, c, () => this.enableMemfaultReasons());
        this.lastEpisode = report ?? null;
        return outcome;
      })
      .with({ kind: 'getDirtyLog' }, (c) => kvmGetDirtyLog(kvm, c))
      .with({ kind: 'clearDirtyLog' }, (c) => kvmClearDirtyLog(kvm, c))
      .with({ kind: 'checkExtension' }, (c) => ({ kind: 'ok' as const, value: capValue(kvm.arch, c.cap, kvm.config) }))
      .with({ kind: 'enableCap' }, (c) => this.enableCap(c))
      .with({ kind: 'raceAccess' }, (c) => {
        kvm.pendingRace = { host: c.host };
        const access = this.run(c.access);
        if (!kvm.pendingRace.outcome) this.runRacingHost();
        const host = kvm.pendingRace.outcome!;
        kvm.pendingRace = null;
        return { kind: 'race' as const, access, host };
      })
      .exhaustive();
  }

  private run(cmd: GuestAccess): Outcome {
    const out = kvmRun(this.kvm, cmd, () => this.runRacingHost());
    if (out.kind === 'uffd-wait')
      throw new Error('engine bug: a vCPU sleeps on userfaultfd outside a demand-paging episode');
    return out;
  }

  /** demand_paging_test -w: where the 2023 opt-in capability exists, enable every reason. */
  private enableMemfaultReasons(): void {
    if (capValue(this.kvm.arch, KVM_CAP_X86_MEMORY_FAULT_EXIT, this.kvm.config)) {
      this.enableCap({
        kind: 'enableCap',
        cap: KVM_CAP_X86_MEMORY_FAULT_EXIT,
        flags: 0,
        args0: KVM_MEMFAULT_VALID_REASONS,
      });
    }
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

  /** kvm_vm_ioctl_enable_cap_generic() and the arch hooks for the capabilities modelled. */
  private enableCap(cap: EnableCap): Outcome {
    const kvm = this.kvm;
    if (cap.cap === KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) {
      let allowed = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
      if (cap.args0 & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) allowed = KVM_DIRTY_LOG_MANUAL_CAPS;
      if (cap.flags || cap.args0 & ~allowed) return { kind: 'err', errno: 'EINVAL' };
      kvm.manualDirtyLog = cap.args0;
      return { kind: 'ok' };
    }
    if (cap.cap === KVM_CAP_X86_MEMORY_FAULT_EXIT && seriesOn(kvm.config, 'memfault-2023')) {
      // S3/p04: if (!kvm_vm_ioctl_check_extension(kvm, cap->cap)) ... (BUG-29 drops this guard).
      if (!capValue(kvm.arch, cap.cap, kvm.config) && !kvm.mutation.on('memfault-cap-generic'))
        return { kind: 'err', errno: 'EINVAL' };
      if (!kvmMemfaultExitFlagsValid(kvm, cap.args0)) return { kind: 'err', errno: 'EINVAL' };
      kvm.memfaultExitReasons = cap.args0;
      return { kind: 'ok' };
    }
    if (kvm.arch === 'arm64') return arm64EnableCap(kvm, cap, (gpa, write) => this.premap(gpa, write));
    return { kind: 'err', errno: 'EINVAL' };
  }

  /** arm64-lock: map one page of a locked slot with the lock's permissions, as a fault would. */
  private premap(gpa: number, write: boolean): void {
    handleStage2Fault(this.kvm, 0, gpa, write, false, () => {}, true);
    if (!write)
      wrprotectRange(
        this.kvm.ops,
        this.kvm.mutation,
        this.kvm.root,
        gpa - (gpa % PAGE_SIZE),
        gpa - (gpa % PAGE_SIZE) + PAGE_SIZE,
      );
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

  /** Self-check findings recorded by the engine during the last command (then cleared). */
  takeFindings(): EngineFinding[] {
    const out = this.kvm.findings;
    this.kvm.findings = [];
    return out;
  }

  takeEvents(): MmuEvent[] {
    return this.kvm.ops.takeEvents();
  }
}

/** kvm_memfault_exit_flags_valid() of S3/p04. BUG-1: "!valid_flags" (always 0) where "~valid_flags" was meant. */
function kvmMemfaultExitFlagsValid(kvm: Kvm, reasons: number): boolean {
  const validFlags = KVM_MEMFAULT_REASON_UNKNOWN | KVM_MEMFAULT_REASON_ABSENT_MAPPING;
  const mask = kvm.mutation.on('memfault-reasons-logical-not') ? Number(!validFlags) : ~validFlags;
  return !(reasons & mask);
}
