// The VMM side of userfaultfd demand paging, as demand_paging_test.c does it (S3/p01, p02, p14),
// run against the engine: vCPU threads touch their pages; reader threads take UFFD_EVENT_PAGEFAULTs
// and resolve them with UFFDIO_COPY(DONTWAKE) then UFFDIO_WAKE (a DONTWAKE or EEXIST result wakes
// nobody); on a fast-only slot a vCPU resolves its own memory-fault exit (ready_page: COPY with
// DONTWAKE, MADV_POPULATE_WRITE when the page turns out to exist, never a wake). Each step of a
// thread is atomic; the episode's schedule picks the interleaving, then the threads run
// round-robin. The harness supplies it to the engine (src/mmu/agent.ts); the engine does not
// import it. Liveness (INV-21, INV-37): every vCPU finishes; a state where nobody can run, or a
// step budget spent, is reported with who is stuck where.
// Mutation points (the protocol's bugs): demand-paging-eexist-kills-reader (BUG-19),
// demand-paging-dontwake-without-wake (BUG-20), demand-paging-populate-fallback-dead (BUG-21),
// declared in src/mmu/agent.ts: mutant-registry.ts collects them from src/mmu, below this folder.
import { KVM_EXIT_HLT, KVM_MEM_READONLY, PAGE_SIZE, hex } from '../../model/abi.js';
import type { DemandPaging, GuestAccess } from '../../model/commands.js';
import { UFFD_FILL_BYTE, episodeOffset, episodeValue } from '../../model/episode.js';
import { findVma } from '../../model/host-mm.js';
import { formatOutcome, isMemoryFaultReason } from '../../model/observable.js';
import type { Outcome } from '../../model/outcomes.js';
import { KVM_MEM_USERFAULT } from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import {
  DEMAND_PAGING_DONTWAKE_WITHOUT_WAKE,
  DEMAND_PAGING_EEXIST_KILLS_READER,
  DEMAND_PAGING_POPULATE_FALLBACK_DEAD,
  type DemandPagingAgent,
  type EpisodeReport,
} from '../mmu/agent.js';
import type { Kvm } from '../mmu/kvm.js';
import { Userfaultfd, type UffdMsg } from '../mmu/uffd.js';
import { kvmRun, type UffdWait } from '../mmu/vcpu-run.js';

type VcpuState = 'run' | 'sleep' | 'resolve' | 'done' | 'dead';
interface VcpuThread {
  kind: 'vcpu';
  id: number;
  pages: number[];
  next: number;
  state: VcpuState;
  resolveHva: number;
  values: (bigint | null)[];
  /** The UFFDIO_COPY of ready_page, stopped at its preemption point (mm/uffd.ts copySteps). */
  copying?: CopyInFlight;
}
interface ReaderThread {
  kind: 'reader';
  id: number;
  state: 'idle' | 'copy' | 'wake' | 'dead';
  msg?: UffdMsg;
  copying?: CopyInFlight;
}
type CopyInFlight = ReturnType<Userfaultfd['copySteps']>;
type Thread = VcpuThread | ReaderThread;

interface EpisodeSlot {
  hva: number;
  npages: number;
  baseGfn: number;
}

/** Everything one episode owns: the VM, the registered range, the threads and the report. */
interface Episode {
  readonly kvm: Kvm;
  readonly cmd: DemandPaging;
  readonly slot: EpisodeSlot;
  readonly uffd: Userfaultfd;
  readonly report: EpisodeReport;
  readonly vcpus: VcpuThread[];
  readonly readers: ReaderThread[];
}

const STEP_BUDGET = 5000;
const FILL = Array.from({ length: PAGE_SIZE }, () => UFFD_FILL_BYTE);

/** The agent the harness hands to the engine (src/mmu/agent.ts). */
export const demandPagingAgent: DemandPagingAgent = { run: runDemandPaging };

function runDemandPaging(
  kvm: Kvm,
  cmd: DemandPaging,
  enableMemfaultReasons: () => void,
): { outcome: Outcome; report?: EpisodeReport } {
  const slot = registrable(kvm, cmd);
  if (!slot) return { outcome: { kind: 'err', errno: 'EINVAL' } };
  enableMemfaultReasons();
  const ep = newEpisode(kvm, cmd, slot);
  runSchedule(ep);
  runRoundRobin(ep);
  finishCopies(ep);
  ep.uffd.unregister();
  return { outcome: episodeOutcome(ep), report: ep.report };
}

/** A UFFDIO_COPY a thread is inside when the episode ends returns before the test joins the thread. */
function finishCopies(ep: Episode): void {
  for (const t of [...ep.vcpus, ...ep.readers]) {
    if (t.kind === 'vcpu') while (t.copying) resolveOwnPage(ep, t);
    else while (t.copying) copyForEvent(ep, t);
  }
}

/** Same precondition as model/demand-paging.ts episodeSlot, checked on the engine's own state. */
function registrable(kvm: Kvm, cmd: DemandPaging): EpisodeSlot | undefined {
  const slot = kvm.memslots.byId(0, cmd.slot);
  const userfault = seriesOn(kvm.config, 'userfault') ? KVM_MEM_USERFAULT : 0;
  if (!slot || slot.gmem || slot.flags & (KVM_MEM_READONLY | userfault)) return undefined;
  for (const gfn of kvm.privateGfns) if (gfn >= slot.baseGfn && gfn < slot.baseGfn + slot.npages) return undefined;
  for (let hva = slot.hva; hva < slot.hva + slot.npages * PAGE_SIZE; ) {
    const vma = findVma(kvm.host.vmas, hva);
    if (vma?.prot !== 'rw' || vma.backing === 'hugetlb1g') return undefined;
    hva = vma.end;
  }
  return slot;
}

/** UFFDIO_REGISTER over the slot, one thread per vCPU (idle if it has no pages) and per reader. */
function newEpisode(kvm: Kvm, cmd: DemandPaging, slot: EpisodeSlot): Episode {
  const uffd = new Userfaultfd(kvm.host, kvm.mutation, slot.hva, slot.hva + slot.npages * PAGE_SIZE);
  const report: EpisodeReport = { copies: new Map(), ends: [], populateFallbacks: 0, eexists: 0, steps: 0 };
  const vcpus = cmd.vcpuPages.map(
    (pages, id): VcpuThread => ({
      kind: 'vcpu',
      id,
      pages,
      next: 0,
      state: pages.length ? 'run' : 'done',
      resolveHva: 0,
      values: [],
    }),
  );
  const readers = Array.from({ length: cmd.readers }, (_, id): ReaderThread => ({ kind: 'reader', id, state: 'idle' }));
  return { kvm, cmd, slot, uffd, report, vcpus, readers };
}

/** The generated schedule: each pick chooses among the threads that can run (ARCHITECTURE.md 4). */
function runSchedule(ep: Episode): void {
  for (const pick of ep.cmd.schedule) {
    const ready = runnable(ep);
    if (!ready.length) return;
    step(ep, ready[pick % ready.length]!);
  }
}

/** Then round-robin until every vCPU is done or dead, nobody can run, or the budget is spent. */
function runRoundRobin(ep: Episode): void {
  while (ep.vcpus.some((t) => t.state !== 'done' && t.state !== 'dead') && ep.report.steps < STEP_BUDGET) {
    const ready = runnable(ep);
    if (!ready.length) return;
    for (const t of ready) step(ep, t);
  }
}

function runnable(ep: Episode): Thread[] {
  const vcpus = ep.vcpus.filter((t) => t.state === 'run' || t.state === 'resolve');
  const readers = ep.readers.filter(
    (t) => t.state === 'copy' || t.state === 'wake' || (t.state === 'idle' && ep.uffd.queue.length > 0),
  );
  return [...vcpus, ...readers];
}

function step(ep: Episode, t: Thread): void {
  ep.report.steps++;
  if (t.kind === 'vcpu') stepVcpu(ep, t);
  else stepReader(ep, t);
}

/**
 * UFFDIO_COPY with DONTWAKE of a filled page, one step of it: the copy stops once, between filling
 * the folio and installing the PTE, so another thread's step may run there ('pending'); counts
 * copies (INV-36) and EEXISTs once it has finished.
 */
function copyPage(ep: Episode, t: { copying?: CopyInFlight }, hva: number): 'ok' | 'EEXIST' | 'pending' {
  t.copying ??= ep.uffd.copySteps(hva, FILL, true);
  const step = t.copying.next();
  if (!step.done) return 'pending';
  t.copying = undefined;
  const { result, woken } = step.value;
  for (const id of woken) wakeVcpu(ep, id);
  if (result === 'ok') ep.report.copies.set(hva, (ep.report.copies.get(hva) ?? 0) + 1);
  else ep.report.eexists++;
  return result;
}

function wakeVcpu(ep: Episode, id: number): void {
  const t = ep.vcpus[id];
  if (t?.state === 'sleep') t.state = 'run';
}

const gpaOf = (ep: Episode, t: VcpuThread): number =>
  (ep.slot.baseGfn + (t.pages[t.next]! % ep.slot.npages)) * PAGE_SIZE + episodeOffset(t.id);

function stepVcpu(ep: Episode, t: VcpuThread): void {
  if (t.state === 'resolve') resolveOwnPage(ep, t);
  else runAccess(ep, t);
}

/** ready_page(): the vCPU resolves its own page (COPY, else MADV_POPULATE_WRITE) and wakes nobody. */
function resolveOwnPage(ep: Episode, t: VcpuThread): void {
  const copied = copyPage(ep, t, t.resolveHva);
  if (copied === 'pending') return;
  if (copied === 'EEXIST' && !ep.kvm.mutation.on(DEMAND_PAGING_POPULATE_FALLBACK_DEAD)) {
    ep.report.populateFallbacks++;
    ep.kvm.host.madvisePopulate(t.resolveHva, PAGE_SIZE, true);
  }
  t.state = 'run';
}

/** One KVM_RUN of the vCPU's next access, and what the protocol does with its result. */
function runAccess(ep: Episode, t: VcpuThread): void {
  const access: GuestAccess = {
    kind: 'guestAccess',
    vcpu: t.id,
    gpa: gpaOf(ep, t),
    len: 8,
    write: ep.cmd.write,
    value: episodeValue(t.id),
  };
  const r = kvmRun(ep.kvm, access);
  if (r.kind === 'uffd-wait') {
    sleepOnUffd(ep, t, r);
    return;
  }
  if (r.kind === 'run' && r.rc === 0 && r.run.exitReason === KVM_EXIT_HLT) {
    finishAccess(ep, t, r.value);
    return;
  }
  const fault = r.kind === 'run' && (r.rc === 0 || r.errno === 'EFAULT') && isMemoryFaultReason(r.run.exitReason);
  if (fault && r.run.payload.kind === 'memoryFault') {
    const hva = ep.slot.hva + (r.run.payload.gpa - ep.slot.baseGfn * PAGE_SIZE);
    t.resolveHva = hva - (hva % PAGE_SIZE);
    t.state = 'resolve';
    return;
  }
  t.state = 'dead';
  ep.report.ends.push({ kind: 'vcpu-dead', vcpu: t.id, gpa: access.gpa, result: formatOutcome(r) });
}

/** handle_userfault: the fault is queued for the readers and the vCPU sleeps until woken. */
function sleepOnUffd(ep: Episode, t: VcpuThread, wait: UffdWait): void {
  ep.uffd.fault(wait.hva, t.id);
  t.state = 'sleep';
}

function finishAccess(ep: Episode, t: VcpuThread, value: bigint | undefined): void {
  t.values.push(ep.cmd.write ? null : (value ?? 0n));
  t.next++;
  if (t.next === t.pages.length) t.state = 'done';
}

/** A reader: read a UFFD_EVENT_PAGEFAULT, UFFDIO_COPY(DONTWAKE) it, then UFFDIO_WAKE the range. */
function stepReader(ep: Episode, t: ReaderThread): void {
  if (t.state === 'idle') {
    readEvent(ep, t);
    return;
  }
  if (t.state === 'copy') {
    copyForEvent(ep, t);
    return;
  }
  if (!ep.kvm.mutation.on(DEMAND_PAGING_DONTWAKE_WITHOUT_WAKE))
    for (const id of ep.uffd.wake(t.msg!.address, PAGE_SIZE)) wakeVcpu(ep, id);
  t.state = 'idle';
}

function readEvent(ep: Episode, t: ReaderThread): void {
  const msg = ep.uffd.read();
  if (msg === 'EAGAIN') return;
  t.msg = msg;
  t.state = 'copy';
}

function copyForEvent(ep: Episode, t: ReaderThread): void {
  const result = copyPage(ep, t, t.msg!.address);
  if (result === 'pending') return;
  if (result === 'EEXIST' && ep.kvm.mutation.on(DEMAND_PAGING_EEXIST_KILLS_READER)) {
    t.state = 'dead';
    ep.report.ends.push({ kind: 'reader-exit', reader: t.id, errno: 'EEXIST', hva: t.msg!.address });
    return;
  }
  t.state = 'wake';
}

/** The episode's outcome: every vCPU's values, or who is stuck where (INV-21, INV-37). */
function episodeOutcome(ep: Episode): Outcome {
  const stuck = ep.vcpus.filter((t) => t.state !== 'done').map((t) => stuckReason(ep, t));
  const values = ep.vcpus.map((t) => t.values);
  return stuck.length
    ? { kind: 'episode', completed: false, values, stuck: stuck.join('; ') }
    : { kind: 'episode', completed: true, values };
}

function stuckReason(ep: Episode, t: VcpuThread): string {
  if (t.state === 'sleep') return `vcpu${t.id} sleeps for ever on hva ${hex(ep.uffd.sleepingOn(t.id) ?? 0)}`;
  if (t.state === 'dead') return `vcpu${t.id} died`;
  return `vcpu${t.id} still faulting on gpa ${hex(gpaOf(ep, t))} after ${ep.report.steps} steps`;
}
