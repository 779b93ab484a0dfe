// The VMM side of userfaultfd demand paging, as demand_paging_test.c does it (S3/p01, p02, p14),
// run against the engine: vCPU threads touch their pages; reader threads take UFFD_EVENT_PAGEFAULTs
// and resolve them with UFFDIO_COPY(DONTWAKE) then UFFDIO_WAKE (a DONTWAKE or EEXIST result wakes
// nobody); on a fast-only slot a vCPU resolves its own memory-fault exit (ready_page: COPY with
// DONTWAKE, MADV_POPULATE_WRITE when the page turns out to exist, never a wake). Each step of a
// thread is atomic; the episode's schedule picks the interleaving, then the threads run
// round-robin. Liveness (INV-21, INV-37): every vCPU finishes; a state where nobody can run, or a
// step budget spent, is reported with who is stuck where.
// Mutation points (the protocol's bugs): demand-paging-eexist-kills-reader (BUG-19),
// demand-paging-dontwake-without-wake (BUG-20), demand-paging-populate-fallback-dead (BUG-21).
import { KVM_EXIT_HLT, KVM_MEM_READONLY, PAGE_SIZE, hex } from '../../model/abi.js';
import type { DemandPaging, GuestAccess } from '../../model/commands.js';
import { UFFD_FILL_BYTE, episodeOffset, episodeValue } from '../../model/demand-paging.js';
import { findVma } from '../../model/host-mm.js';
import { formatOutcome, isMemoryFaultReason } from '../../model/observable.js';
import type { Outcome } from '../../model/outcomes.js';
import { KVM_MEM_USERFAULT } from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import type { Kvm } from '../mmu/kvm.js';
import { Userfaultfd, type UffdMsg } from '../mmu/uffd.js';
import { kvmRun } from '../mmu/vcpu-run.js';

type VcpuState = 'run' | 'sleep' | 'resolve' | 'done' | 'dead';
interface VcpuThread {
  kind: 'vcpu';
  id: number;
  pages: number[];
  next: number;
  state: VcpuState;
  resolveHva: number;
  values: (bigint | null)[];
}
interface ReaderThread {
  kind: 'reader';
  id: number;
  state: 'idle' | 'copy' | 'wake' | 'dead';
  msg?: UffdMsg;
}
type Thread = VcpuThread | ReaderThread;

/** What the protocol checks need besides the outcome (INV-36, INV-38), and the metrics. */
export interface EpisodeReport {
  /** hva page -> successful UFFDIO_COPYs into it. */
  readonly copies: Map<number, number>;
  readonly problems: string[];
  populateFallbacks: number;
  eexists: number;
  steps: number;
}

const STEP_BUDGET = 5000;
const FILL = Array.from({ length: PAGE_SIZE }, () => UFFD_FILL_BYTE);

/** Same precondition as model/demand-paging.ts episodeSlot, checked on the engine's own state. */
function registrable(kvm: Kvm, cmd: DemandPaging): { hva: number; npages: number; baseGfn: number } | undefined {
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

export function runDemandPaging(
  kvm: Kvm,
  cmd: DemandPaging,
  enableMemfaultReasons: () => void,
): { outcome: Outcome; report?: EpisodeReport } {
  const slot = registrable(kvm, cmd);
  if (!slot) return { outcome: { kind: 'err', errno: 'EINVAL' } };
  enableMemfaultReasons();
  const uffd = new Userfaultfd(kvm.host, kvm.mutation, slot.hva, slot.hva + slot.npages * PAGE_SIZE);
  const report: EpisodeReport = { copies: new Map(), problems: [], populateFallbacks: 0, eexists: 0, steps: 0 };
  const vcpus: VcpuThread[] = cmd.vcpuPages.map((pages, id) => ({
    kind: 'vcpu',
    id,
    pages,
    next: 0,
    state: pages.length ? 'run' : 'done',
    resolveHva: 0,
    values: [],
  }));
  const readers: ReaderThread[] = Array.from({ length: cmd.readers }, (_, i) => ({
    kind: 'reader',
    id: i,
    state: 'idle',
  }));
  const threads: Thread[] = [...vcpus, ...readers];

  const copy = (hva: number): 'ok' | 'EEXIST' => {
    const { result, woken } = uffd.copy(hva, FILL, true);
    woken.forEach(wakeVcpu);
    if (result === 'ok') report.copies.set(hva, (report.copies.get(hva) ?? 0) + 1);
    else report.eexists++;
    return result;
  };
  const wakeVcpu = (id: number): void => {
    const t = vcpus[id];
    if (t?.state === 'sleep') t.state = 'run';
  };
  const gpaOf = (t: VcpuThread): number =>
    (slot.baseGfn + (t.pages[t.next]! % slot.npages)) * PAGE_SIZE + episodeOffset(t.id);

  const stepVcpu = (t: VcpuThread): void => {
    if (t.state === 'resolve') {
      // ready_page(): the vCPU resolves its own page and never wakes anyone.
      if (copy(t.resolveHva) === 'EEXIST' && !kvm.mutation.on('demand-paging-populate-fallback-dead')) {
        report.populateFallbacks++;
        kvm.host.madvisePopulate(t.resolveHva, PAGE_SIZE, true);
      }
      t.state = 'run';
      return;
    }
    const access: GuestAccess = {
      kind: 'guestAccess',
      vcpu: t.id,
      gpa: gpaOf(t),
      len: 8,
      write: cmd.write,
      value: episodeValue(t.id),
    };
    const r = kvmRun(kvm, access, () => {});
    if (r.kind === 'uffd-wait') {
      uffd.fault(r.hva, t.id);
      t.state = 'sleep';
      return;
    }
    if (r.kind === 'run' && r.rc === 0 && r.run.exitReason === KVM_EXIT_HLT) {
      t.values.push(cmd.write ? null : (r.value ?? 0n));
      t.next++;
      if (t.next === t.pages.length) t.state = 'done';
      return;
    }
    const memfault =
      r.kind === 'run' &&
      (r.rc === 0 || r.errno === 'EFAULT') &&
      isMemoryFaultReason(r.run.exitReason) &&
      r.run.payload.kind === 'memoryFault';
    if (memfault && r.run.payload.kind === 'memoryFault') {
      t.resolveHva = slot.hva + (r.run.payload.gpa - slot.baseGfn * PAGE_SIZE);
      t.resolveHva -= t.resolveHva % PAGE_SIZE;
      t.state = 'resolve';
      return;
    }
    t.state = 'dead';
    report.problems.push(
      `vcpu${t.id}: KVM_RUN on gpa ${hex(access.gpa)} returned ${formatOutcome(r)}; the protocol has no way on`,
    );
  };

  const stepReader = (t: ReaderThread): void => {
    if (t.state === 'idle') {
      const msg = uffd.read();
      if (msg !== 'EAGAIN') {
        t.msg = msg;
        t.state = 'copy';
      }
      return;
    }
    if (t.state === 'copy') {
      const result = copy(t.msg!.address);
      if (result === 'EEXIST' && kvm.mutation.on('demand-paging-eexist-kills-reader')) {
        t.state = 'dead';
        report.problems.push(
          `reader${t.id}: exited on EEXIST for hva ${hex(t.msg!.address)} (readers may exit only through their pipe, INV-38)`,
        );
        return;
      }
      t.state = 'wake';
      return;
    }
    if (!kvm.mutation.on('demand-paging-dontwake-without-wake')) uffd.wake(t.msg!.address, PAGE_SIZE).forEach(wakeVcpu);
    t.state = 'idle';
  };

  const runnable = (): Thread[] =>
    threads.filter((t) =>
      t.kind === 'vcpu'
        ? t.state === 'run' || t.state === 'resolve'
        : t.state === 'copy' || t.state === 'wake' || (t.state === 'idle' && uffd.queue.length > 0),
    );
  const step = (t: Thread): void => {
    report.steps++;
    if (t.kind === 'vcpu') stepVcpu(t);
    else stepReader(t);
  };

  for (const pick of cmd.schedule) {
    const ready = runnable();
    if (!ready.length) break;
    step(ready[pick % ready.length]!);
  }
  while (vcpus.some((t) => t.state !== 'done' && t.state !== 'dead') && report.steps < STEP_BUDGET) {
    const ready = runnable();
    if (!ready.length) break;
    for (const t of ready) step(t);
  }
  uffd.unregister();
  const stuck = vcpus
    .filter((t) => t.state !== 'done')
    .map((t) => {
      const on = uffd.sleepingOn(t.id);
      return `vcpu${t.id} ${t.state === 'sleep' ? `sleeps for ever on hva ${hex(on ?? 0)}` : t.state === 'dead' ? 'died' : `still faulting on gpa ${hex(gpaOf(t))} after ${report.steps} steps`}`;
    });
  const values = vcpus.map((t) => t.values);
  const outcome: Outcome = stuck.length
    ? { kind: 'episode', completed: false, values, stuck: stuck.join('; ') }
    : { kind: 'episode', completed: true, values };
  return { outcome, report };
}
