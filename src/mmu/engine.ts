// The optimized engine as a backend: one VM, commands in, observable outcomes out, plus read-only
// views of its internals for the invariants in properties/.
import { PAGE_SIZE, type Arch } from '../../model/abi.js';
import type { Command, DemandPaging, EnableCap, GuestAccess, RaceAccess } from '../../model/commands.js';
import { KVM_CAP_X86_MEMORY_FAULT_EXIT, KVM_MEMFAULT_VALID_REASONS } from '../../model/series-abi.js';
import { UPSTREAM_CONFIG, type ModelConfig } from '../../model/series.js';
import type { EngineAgents, EpisodeReport } from './agent.js';
import { kvmVmIoctlCheckExtension, kvmVmIoctlEnableCap } from './caps.js';
import { handleStage2Fault, PFN_PINNED } from './fault.js';
import { kvmSetMemoryAttributes } from './gmem-private.js';
import { planMadviseDontneed, planMmap, planMprotect, planMunmap } from '../../model/host-mm.js';
import type { Memory } from '../../model/memory.js';
import type { Outcome } from '../../model/outcomes.js';
import { kvmClearDirtyLogSteps, kvmGetDirtyLogSteps } from './dirty.js';
import type { EngineFinding } from './findings.js';
import { kvmGmemCreate, kvmGmemPunchHoleSteps } from './gmem.js';
import { createKvm, type Kvm } from './kvm.js';
import { kvmSetUserMemoryRegionSteps } from './memslot-ioctl.js';
import type { MutantName } from './mutants.js';
import { createMmuNotifier } from './notifier.js';
import type { MmuEvent } from './ops.js';
import { kvmUserfaultBits } from './userfault.js';
import { atomically, holding, runAlone, type Steps } from './steps.js';
import { kvmRunSteps } from './vcpu-run.js';
import { wrprotectRange } from './visitors.js';

export class Engine {
  readonly kvm: Kvm;
  /** The last demand-paging episode's protocol report (exit-on-missing), for the uffd invariants. */
  lastEpisode: EpisodeReport | null = null;

  /** `agents`: the VMM protocols some commands run (src/mmu/agent.ts), supplied by the caller. */
  constructor(
    arch: Arch,
    mutant: MutantName | null = null,
    config: ModelConfig = UPSTREAM_CONFIG,
    private readonly agents: EngineAgents = {},
  ) {
    this.kvm = createKvm(arch, mutant, config);
    this.kvm.host.notifier = createMmuNotifier(this.kvm);
  }

  /** Run one command alone, to completion. */
  apply(cmd: Command): Outcome {
    return runAlone(this.steps(cmd));
  }

  /**
   * One command as resumable steps (steps.ts): the commands whose kernel paths take or drop a lock,
   * enter or leave SRCU, or wait for a grace period yield at those points; the rest run atomically.
   */
  *steps(cmd: Command): Steps<Outcome> {
    const kvm = this.kvm;
    const host = kvm.host;
    // The model's simplification (ARCHITECTURE.md "Memory ordering"): a system call orders the
    // thread's earlier stores before it (x86: the locked RMW of the first lock it takes; on arm64
    // stricter than the kernel). Only the VMM's plain stores to its memory stay buffered across.
    if (cmd.kind !== 'hostWrite' && cmd.kind !== 'userfaultBits') kvm.storeBuffer.fence();
    switch (cmd.kind) {
      case 'setMemslot':
        return yield* kvmSetUserMemoryRegionSteps(kvm, cmd);
      case 'mmap':
        return yield* host.applyPlanSteps((vmas) => planMmap(vmas, cmd), true);
      case 'munmap':
        return yield* host.applyPlanSteps((vmas) => planMunmap(vmas, cmd), true);
      case 'mprotect':
        return yield* host.applyPlanSteps((vmas) => planMprotect(vmas, cmd), true);
      case 'madviseDontneed':
        return yield* host.applyPlanSteps((vmas) => planMadviseDontneed(vmas, cmd), false);
      case 'hostWrite':
        return yield* this.underMmapReadLock(host.hostWriteSteps(cmd.hva, cmd.len, cmd.value));
      case 'hostRead':
        return yield* this.underMmapReadLock(atomically(() => host.hostRead(cmd.hva, cmd.len)));
      case 'madvisePopulate':
        return yield* this.underMmapReadLock(host.madvisePopulateSteps(cmd.hva, cmd.size, cmd.write));
      case 'guestAccess':
        return yield* this.runSteps(cmd);
      case 'getDirtyLog':
        return yield* kvmGetDirtyLogSteps(kvm, cmd);
      case 'clearDirtyLog':
        return yield* kvmClearDirtyLogSteps(kvm, cmd);
      case 'gmemPunchHole':
        return yield* kvmGmemPunchHoleSteps(kvm, cmd);
      case 'raceAccess':
        return yield* this.raceSteps(cmd);
      case 'gmemCreate':
        return kvmGmemCreate(kvm, cmd);
      // Both may zap stage 2 (USERFAULT enable, an attribute change): under mmu_lock for write, so
      // never inside a fault's shared walk (kvm_handle_gfn_range takes it; the model holds it throughout).
      case 'userfaultBits':
        return yield* holding(
          kvm.mmuLock,
          atomically(() => kvmUserfaultBits(kvm, cmd)),
        );
      case 'setMemoryAttributes':
        return yield* holding(
          kvm.mmuLock,
          atomically(() => kvmSetMemoryAttributes(kvm, cmd)),
        );
      case 'demandPaging':
        return this.demandPaging(cmd);
      case 'checkExtension':
        return { kind: 'ok', value: kvmVmIoctlCheckExtension(kvm, cmd.cap) };
      case 'enableCap':
        return this.enableCap(cmd);
      default: {
        const never: never = cmd;
        throw new Error(`engine bug: unknown command ${JSON.stringify(never)}`);
      }
    }
  }

  /** The VMM's own page faults and MADV_POPULATE take mmap_lock for read. */
  private *underMmapReadLock(access: Steps<Outcome>): Steps<Outcome> {
    const lock = this.kvm.host.mmapLock;
    yield* lock.readLock();
    try {
      return yield* access;
    } finally {
      lock.readUnlock();
    }
  }

  private demandPaging(cmd: DemandPaging): Outcome {
    if (!this.agents.demandPaging) throw new Error('harness bug: a demandPaging command, but no agent was supplied');
    const { outcome, report } = this.agents.demandPaging.run(this.kvm, cmd, () => this.enableMemfaultReasons());
    this.lastEpisode = report ?? null;
    return outcome;
  }

  /**
   * raceAccess (ARCHITECTURE.md, "Resumable steps"): a two-thread schedule fixed in advance. The
   * access runs until its fault has pinned the pfn and not yet taken mmu_lock (PFN_PINNED); the
   * host command runs there to completion; then the access finishes. An access that never reaches
   * the point (a TLB hit, an exit before the pin) is followed by the host command.
   */
  private *raceSteps(cmd: RaceAccess): Steps<Outcome> {
    const access = this.runSteps(cmd.access);
    let host: Outcome | undefined;
    for (;;) {
      const step = access.next();
      if (step.done) {
        host ??= yield* this.steps(cmd.host);
        return { kind: 'race', access: step.value, host };
      }
      if (step.value.point === PFN_PINNED && host === undefined) host = yield* this.steps(cmd.host);
      else yield step.value;
    }
  }

  private *runSteps(cmd: GuestAccess): Steps<Outcome> {
    const out = yield* kvmRunSteps(this.kvm, cmd);
    if (out.kind === 'uffd-wait')
      throw new Error('engine bug: a vCPU sleeps on userfaultfd outside a demand-paging episode');
    return out;
  }

  /** demand_paging_test -w: where the 2023 opt-in capability exists, enable every reason. */
  private enableMemfaultReasons(): void {
    if (kvmVmIoctlCheckExtension(this.kvm, KVM_CAP_X86_MEMORY_FAULT_EXIT)) {
      this.enableCap({
        kind: 'enableCap',
        cap: KVM_CAP_X86_MEMORY_FAULT_EXIT,
        flags: 0,
        args0: KVM_MEMFAULT_VALID_REASONS,
      });
    }
  }

  private enableCap(cap: EnableCap): Outcome {
    return kvmVmIoctlEnableCap(this.kvm, cap, (gpa, write) => this.premap(gpa, write));
  }

  /** arm64-lock: map one page of a locked slot with the lock's permissions, as a fault would. */
  private premap(gpa: number, write: boolean): void {
    handleStage2Fault(this.kvm, { vcpu: 0, gpa, write, private: false, premap: true });
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
