// KVM_RUN for one guest access: the vCPU translates through its TLB, then the stage-2 tables (and
// refills the TLB), and takes a stage-2 fault when neither allows the access; the fault path maps
// and the guest retries. MMIO is emulated (x86 emulator_read_write): fragments the hva can serve
// are accessed through it, and the first MMIO fragment is reported.
// Mutation points: memfault-bare-efault, memfault-size-in-pages, memfault-errno-eperm,
// memfault-guesses-absent, memfault-exit-swallowed, memfault-fills-vcpu0-run.
import { deviates } from '../../model/platform.js';
import {
  KVM_EXIT_HLT,
  KVM_EXIT_MMIO,
  KVM_EXIT_UNKNOWN,
  KVM_MEM_READONLY,
  KVM_MEMORY_EXIT_FLAG_PRIVATE,
  PAGE_SIZE,
} from '../../model/abi.js';
import type { GuestAccess } from '../../model/commands.js';
import {
  KVM_MEMFAULT_REASON_ABSENT_MAPPING,
  KVM_MEMFAULT_REASON_UNKNOWN,
  KVM_MEMORY_EXIT_FLAG_USERFAULT,
  memoryFaultExitReason,
} from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import { bytesToValue, splitByPage, valueToBytes } from '../../model/memory.js';
import { copyRun, type KvmRunState, type Outcome } from '../../model/outcomes.js';
import { hostCanAccess } from '../../model/host-mm.js';
import { markPageDirty } from './dirty.js';
import { handleStage2FaultSteps } from './fault.js';
import type { FaultCause, FaultResult } from './fault-types.js';
import { isGmemOnlySlot, kvmGmemGetPfn } from './gmem.js';
import type { Kvm } from './kvm.js';
import { levelSize, PTRS_PER_TABLE, type LeafPte } from './pgtable.js';
import { defineMutant } from './mutants.js';
import { preempt, runAlone, waitUntil, type Steps } from './steps.js';

export const MEMFAULT_BARE_EFAULT = defineMutant({
  name: 'memfault-bare-efault',
  description: 'a write to a host read-only mapping returns -EFAULT without filling kvm_run.memory_fault',
  source: 'BUG-7 / INV-17',
  arches: ['x86'],
  killedBy: ['memfault-contract', 'differential'],
});

export const MEMFAULT_SIZE_IN_PAGES = defineMutant({
  name: 'memfault-size-in-pages',
  description: 'memory_fault.size is KVM_PAGES_PER_HPAGE(level), a page count, not bytes',
  source: 'BUG-3',
  arches: ['x86'],
  killedBy: ['memfault-contract', 'differential'],
});

export const MEMFAULT_ERRNO_EPERM = defineMutant({
  name: 'memfault-errno-eperm',
  description: 'the memory-fault exit path returns -1 (EPERM) instead of -EFAULT',
  source: 'BUG-2',
  arches: ['x86'],
  killedBy: ['memfault-contract', 'differential'],
});

export const MEMFAULT_GUESSES_ABSENT = defineMutant({
  name: 'memfault-guesses-absent',
  description: 'every error pfn on a fast-only slot is reported as ABSENT_MAPPING, PROT_NONE and no-VMA included',
  source: 'BUG-10 (S3/p10)',
  series: ['memfault-2023', 'exit-on-missing'],
  options: { memfaultReasonFlags: true },
  killedBy: ['differential'],
});

export const MEMFAULT_FILLS_VCPU0_RUN = defineMutant({
  name: 'memfault-fills-vcpu0-run',
  description:
    "the memory-fault exit is prepared in vCPU 0's kvm_run whichever vCPU faulted (a path holding only " +
    'struct kvm picks a vCPU)',
  source: 'INV-16 (S3, Sean 03-21: only the running vCPU fills kvm_run.memory_fault)',
  arches: ['x86'],
  killedBy: ['kvm-run-owner'],
});

export const MEMFAULT_EXIT_SWALLOWED = defineMutant({
  name: 'memfault-exit-swallowed',
  description: 'the fast-only exit path returns 1 (resume) instead of 0, so the guest re-faults for ever',
  source: 'BUG-6 (S3/p11, p12)',
  arches: ['arm64'],
  series: ['exit-on-missing'],
  killedBy: ['differential'],
});

/** A vCPU that keeps faulting on the same access without progress is a bug, not a wait. */
const MAX_FAULTS_PER_RUN = 16;

type Fragment = { gpa: number; len: number; offset: number };

/**
 * Hardware translation: TLB first, then the page-table walker (hardwareWalk), which refills the
 * TLB. A private access is served only by a private translation and a shared one only by a shared
 * translation (the SEV-SNP RMP check / TDX shared bit); anything else faults. Yields between the
 * walk's levels only.
 */
function* translateAccess(
  kvm: Kvm,
  vcpu: number,
  gpa: number,
  write: boolean,
  priv: boolean,
): Steps<number | undefined> {
  const tlb = kvm.tlbs[vcpu]!;
  const hit = tlb.lookup(gpa);
  if (hit && (!write || hit.perms.w) && !!hit.private === priv)
    return hit.pfn + Math.floor((gpa - hit.ipaBase) / PAGE_SIZE);
  const walked = yield* hardwareWalk(kvm, vcpu, gpa);
  if (!walked || (write && !walked.leaf.perms.w) || !!walked.leaf.private !== priv) return undefined;
  const isPrivate = walked.leaf.private === true;
  tlb.fill({
    ipaBase: walked.ipaBase,
    level: walked.leaf.level,
    pfn: walked.leaf.pfn,
    perms: walked.leaf.perms,
    ...(isPrivate ? { private: true } : {}),
  });
  return walked.leaf.pfn + Math.floor((gpa - walked.ipaBase) / PAGE_SIZE);
}

/**
 * The stage-2 table walk of a TLB miss, one step per table level: the walker reads a descriptor,
 * and another thread may run before it reads the next table (an unmap may unlink or free it, a
 * fault may install under it). The walk takes no lock: it relies on break-before-make and on the
 * TLBI + DSB that must precede freeing a table page, which aborts a walk in flight (MmuOps.dsb);
 * an aborted walk restarts from the root. The leaf's read, the TLB fill and the access are one
 * step, as the hardware does them.
 */
function* hardwareWalk(kvm: Kvm, vcpu: number, gpa: number): Steps<{ leaf: LeafPte; ipaBase: number } | undefined> {
  for (;;) {
    const w = kvm.ops.walkBegin(vcpu);
    try {
      let table = kvm.root;
      for (;;) {
        kvm.ops.walkRead(w, table);
        const size = levelSize(table.level);
        const pte = kvm.ops.walkerView(table, Math.floor(gpa / size) % PTRS_PER_TABLE);
        if (pte.kind === 'leaf') return { leaf: pte, ipaBase: gpa - (gpa % size) };
        if (pte.kind !== 'table') return undefined;
        yield* preempt(`stage-2 table walk: level ${table.level} descriptor read, level ${pte.table.level} next`);
        if (w.aborted) break;
        table = pte.table;
      }
    } finally {
      kvm.ops.walkEnd(w);
    }
  }
}

/** KVM_RUN did not return: the vCPU thread sleeps in handle_userfault on this hva page. */
export interface UffdWait {
  kind: 'uffd-wait';
  hva: number;
}

export function kvmRun(kvm: Kvm, cmd: GuestAccess): Outcome | UffdWait {
  return runAlone(kvmRunSteps(kvm, cmd));
}

/**
 * KVM_RUN as resumable steps: each guest entry (translate and access, atomic like the hardware's
 * walk and load/store) is one step; a stage-2 fault runs the fault path's steps (fault.ts); a fault
 * that must retry because an invalidation or a memslot update is under way waits for it to end
 * (the guest would spin re-faulting) without counting as an attempt.
 */
export function* kvmRunSteps(kvm: Kvm, cmd: GuestAccess): Steps<Outcome | UffdWait> {
  const run = kvm.runs[cmd.vcpu]!;
  kvm.runSerial++;
  kvm.userfaultEarlyLoads.delete(cmd.vcpu);
  const reset =
    kvm.arch === 'arm64' || (seriesOn(kvm.config, 'memfault-2023') && kvm.config.options.resetExitReasonOnEntry);
  if (reset) run.exitReason = KVM_EXIT_UNKNOWN;
  const bytes = valueToBytes(cmd.value, cmd.len);
  const fragments: Fragment[] = splitByPage(cmd.gpa, cmd.len).map((p) => ({
    gpa: p.addr,
    len: p.len,
    offset: p.addr - cmd.gpa,
  }));

  for (let attempt = 0; attempt < MAX_FAULTS_PER_RUN; attempt++) {
    if (attempt > 0) yield* preempt('vcpu_enter_guest: the guest retries the access');
    const pfns: number[] = [];
    let fault: FaultResult | undefined;
    let faultGpa = 0;
    let walkedAcross = false;
    for (const f of fragments) {
      const walk = translateAccess(kvm, cmd.vcpu, f.gpa, cmd.write, cmd.private === true);
      const before = pfns.length;
      let r = walk.next();
      while (!r.done) {
        walkedAcross ||= before > 0;
        yield r.value;
        r = walk.next();
      }
      const pfn = r.value;
      if (pfn === undefined) {
        const req = { vcpu: cmd.vcpu, gpa: f.gpa, write: cmd.write, private: cmd.private === true };
        fault = yield* handleStage2FaultSteps(kvm, req);
        faultGpa = f.gpa;
        break;
      }
      pfns.push(pfn);
    }
    // An earlier fragment's translation is older than this step: translate again (from the TLB).
    if (!fault && walkedAcross) {
      attempt--;
      continue;
    }
    if (!fault) return completeAccess(kvm, run, cmd, fragments, pfns, bytes);
    if (fault.kind === 'retry' && (fault.slotInvalid || kvm.mmuInvalidateInProgress > 0)) {
      const invalid = fault.slotInvalid;
      if (invalid) yield* waitUntil('RET_PF_RETRY: memslot invalid', () => !kvm.memslots.isInvalid(invalid));
      else yield* waitUntil('RET_PF_RETRY: invalidation in progress', () => kvm.mmuInvalidateInProgress === 0);
      attempt--;
      continue;
    }
    if (fault.kind === 'mmio') return yield* emulate(kvm, run, cmd, fragments, bytes);
    if (fault.kind === 'uffd') return { kind: 'uffd-wait', hva: fault.hva };
    // Platform deviation fault-as-mmio: the fault goes to the emulator instead of userspace.
    if (fault.kind === 'efault' && errorPfnEmulated(kvm, fault.cause))
      return yield* emulate(kvm, run, cmd, fragments, bytes);
    if (fault.kind === 'efault') {
      // BUG-6: the fast-only exit "returns 1" (resume) instead of 0, so the guest re-faults for ever.
      const swallowed =
        kvm.arch === 'arm64' &&
        fault.cause.kind === 'hva' &&
        fault.cause.fastOnly &&
        kvm.mutation.on(MEMFAULT_EXIT_SWALLOWED);
      if (!swallowed) return memoryFaultExit(kvm, cmd.vcpu, faultGpa, fault.cause);
    }
  }
  return { kind: 'run', rc: -1, errno: 'ELIVELOCK', run: copyRun(run) };
}

/**
 * Platform deviation fault-as-mmio (model/platform.ts): the host's error pfn goes to the emulator
 * (x86 kvm_handle_error_pfn() turned into emulation on that kernel), which cannot reach the hva
 * either, so the access exits as MMIO. Only the ordinary path's hva faults: fast-only GUP and the
 * series' own exits (USERFAULT, PRIVATE) are model-only and never reach this kernel's emulator.
 */
function errorPfnEmulated(kvm: Kvm, cause: FaultCause): boolean {
  if (!deviates(kvm.config, 'fault-as-mmio')) return false;
  return cause.kind === 'hva' && !cause.fastOnly;
}

function completeAccess(
  kvm: Kvm,
  run: KvmRunState,
  cmd: GuestAccess,
  fragments: Fragment[],
  pfns: number[],
  bytes: number[],
): Outcome {
  const loaded: number[] = [];
  // userfault-bit-load-without-acquire: the read of that page was satisfied before the bit load.
  const early = kvm.userfaultEarlyLoads.get(cmd.vcpu);
  kvm.userfaultEarlyLoads.delete(cmd.vcpu);
  fragments.forEach((f, i) => {
    const pfn = pfns[i]!;
    const earlyPage = early?.gfn === Math.floor(f.gpa / PAGE_SIZE) ? early.bytes : undefined;
    for (let b = 0; b < f.len; b++) {
      const offset = (f.gpa + b) % PAGE_SIZE;
      if (cmd.write) kvm.phys.writeByte(pfn, offset, bytes[f.offset + b]!);
      else loaded.push(earlyPage ? earlyPage[offset]! : kvm.phys.readByte(pfn, offset));
    }
  });
  run.exitReason = KVM_EXIT_HLT;
  return { kind: 'run', rc: 0, run: copyRun(run), ...(cmd.write ? {} : { value: bytesToValue(loaded) }) };
}

/** x86 emulator_read_write(): RAM fragments go through the hva (or the gmem file), the rest is MMIO. */
function* emulate(
  kvm: Kvm,
  run: KvmRunState,
  cmd: GuestAccess,
  fragments: Fragment[],
  bytes: number[],
): Steps<Outcome> {
  let firstMmio: Fragment | undefined;
  for (const f of fragments) {
    const gfn = Math.floor(f.gpa / PAGE_SIZE);
    // A slot being deleted or moved (KVM_MEMSLOT_INVALID) has no hva: __gfn_to_hva_many says KVM_HVA_ERR_BAD.
    const found = kvm.memslots.findForVcpu(cmd.vcpu, gfn);
    const slot = found && !kvm.memslots.isInvalid(found) ? found : undefined;
    const part = bytes.slice(f.offset, f.offset + f.len);
    if (slot && isGmemOnlySlot(kvm, slot)) {
      const pfn = kvmGmemGetPfn(kvm, slot, gfn);
      if (cmd.write) for (const [i, b] of part.entries()) kvm.phys.writeByte(pfn, (f.gpa + i) % PAGE_SIZE, b);
      continue;
    }
    const hva = slot ? slot.hva + (f.gpa - slot.baseGfn * PAGE_SIZE) : 0;
    const ram = slot && !(cmd.write && slot.flags & KVM_MEM_READONLY) && hostCanAccess(kvm.host.vmas, hva, cmd.write);
    if (!ram) {
      firstMmio ??= f;
      continue;
    }
    if (cmd.write) {
      yield* kvm.host.writeBytesSteps(hva, part);
      markPageDirty(slot, gfn);
    }
  }
  const mmio = firstMmio!;
  run.exitReason = KVM_EXIT_MMIO;
  const data = cmd.write ? bytesToValue(bytes.slice(mmio.offset, mmio.offset + mmio.len)) : 0n;
  run.payload = { kind: 'mmio', physAddr: mmio.gpa, len: mmio.len, isWrite: cmd.write, data };
  return { kind: 'run', rc: 0, run: copyRun(run) };
}

/**
 * The memory-fault exit (kvm_prepare_memory_fault_exit and the series' variants of it). Upstream
 * x86 annotates every error pfn from kvm_handle_error_pfn(); arm64 user_mem_abort() returns a bare
 * -EFAULT (exit_reason stays KVM_EXIT_UNKNOWN from entry). The series add: fast-only exits on both
 * architectures (exit-on-missing), USERFAULT and PRIVATE exits, and the 2023 API's options.
 */
function memoryFaultExit(kvm: Kvm, vcpu: number, gpa: number, cause: FaultCause): Outcome {
  const run = kvm.runs[kvm.mutation.on(MEMFAULT_FILLS_VCPU0_RUN) ? 0 : vcpu]!;
  const o = kvm.config.options;
  const v2023 = seriesOn(kvm.config, 'memfault-2023');
  const bare: Outcome = { kind: 'run', rc: -1, errno: 'EFAULT', run: copyRun(run) };
  let flags = 0;
  let size = PAGE_SIZE;
  if (cause.kind === 'userfault')
    flags = KVM_MEMORY_EXIT_FLAG_USERFAULT | (cause.private ? KVM_MEMORY_EXIT_FLAG_PRIVATE : 0);
  else if (cause.kind === 'private') flags = cause.private ? KVM_MEMORY_EXIT_FLAG_PRIVATE : 0;
  else {
    if (kvm.arch === 'arm64' && !cause.fastOnly && !(v2023 && o.arm64MemfaultAll)) return bare;
    if (kvm.arch === 'x86' && cause.why === 'protection' && kvm.mutation.on(MEMFAULT_BARE_EFAULT)) return bare;
    // BUG-10: v2 x86 reported ABSENT_MAPPING for every error pfn on a fast-only slot.
    const absent = cause.why === 'missing' || (cause.fastOnly && kvm.mutation.on(MEMFAULT_GUESSES_ABSENT));
    const reason = absent ? KVM_MEMFAULT_REASON_ABSENT_MAPPING : KVM_MEMFAULT_REASON_UNKNOWN;
    if (v2023 && o.memfaultReasonFlags) flags = reason;
    if (v2023 && o.memfaultOptIn && kvm.arch === 'x86' && !(kvm.memfaultExitReasons & reason)) return bare;
    if (v2023 && o.memfaultLength === 'mapping' && kvm.arch === 'arm64') size = cause.mappingSize;
    if (kvm.arch === 'x86' && kvm.mutation.on(MEMFAULT_SIZE_IN_PAGES)) size = 1;
  }
  run.exitReason = memoryFaultExitReason(kvm.config);
  run.payload = { kind: 'memoryFault', flags, gpa: gpa - (gpa % Math.max(size, PAGE_SIZE)), size };
  kvm.payloadWrittenInRun[vcpu] = kvm.runSerial;
  if (v2023 && o.memfaultReturn === 'zero') return { kind: 'run', rc: 0, run: copyRun(run) };
  const errno = kvm.arch === 'x86' && kvm.mutation.on(MEMFAULT_ERRNO_EPERM) ? 'EPERM' : 'EFAULT';
  return { kind: 'run', rc: -1, errno, run: copyRun(run) };
}
