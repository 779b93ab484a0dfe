// userfaultfd, the kernel side (fs/userfaultfd.c, mm/userfaultfd.c) for MISSING registrations: a
// fault on a missing page in the range queues a UFFD_EVENT_PAGEFAULT and parks the faulting thread
// until UFFDIO_COPY installs the page *and* something wakes it (UFFDIO_WAKE, or a COPY without
// DONTWAKE). A COPY onto a present page fails with EEXIST and changes nothing (INV-36).
// UFFDIO_COPY is resumable (copySteps): mm/userfaultfd.c mfill_atomic_pte_copy copies the user
// data into a fresh folio (copy_mfill_atomic_pte), __folio_mark_uptodate's smp_wmb orders that
// before the PTE, and mfill_atomic_install_pte sets the PTE under the PTL. Until then no other
// thread can reach the folio, so the one preemption point is between the copy and the install.
// Mutation points: uffd-copy-overwrites-present, uffd-copy-installs-before-copy.
import { PAGE_SIZE } from '../../model/abi.js';
import { defineMutant, type Mutation } from './mutants.js';
import type { SimHostMm } from './host-mm.js';
import { preempt, type Steps } from './steps.js';

export const UFFD_COPY_OVERWRITES_PRESENT = defineMutant({
  name: 'uffd-copy-overwrites-present',
  description: 'UFFDIO_COPY onto a present page overwrites it instead of failing with EEXIST',
  source: 'own (INV-36, mfill_atomic_pte_copy)',
  series: ['exit-on-missing'],
  killedBy: ['uffd-protocol', 'differential'],
});

export const UFFD_COPY_INSTALLS_BEFORE_COPY = defineMutant({
  name: 'uffd-copy-installs-before-copy',
  description:
    'UFFDIO_COPY installs the PTE before copying the data into the folio (no smp_wmb between), ' +
    'so a vCPU faulting on the page meanwhile maps it unfilled',
  source: 'own (issue 10 item 4: mfill_atomic_pte_copy, __folio_mark_uptodate before the PTE)',
  series: ['exit-on-missing'],
  killedBy: ['differential'],
});

/** The point another thread may run at inside a UFFDIO_COPY. */
export const UFFD_COPY_POINT = 'mfill_atomic_pte_copy: __folio_mark_uptodate (smp_wmb), mfill_atomic_install_pte';

export interface UffdMsg {
  readonly address: number;
}

export class Userfaultfd {
  readonly queue: UffdMsg[] = [];
  /** hva page -> threads sleeping on it. */
  private readonly sleepers = new Map<number, Set<number>>();

  constructor(
    private readonly host: SimHostMm,
    private readonly mutation: Mutation,
    readonly start: number,
    readonly end: number,
  ) {
    host.uffd = { start, end };
  }

  /** handle_userfault(): post the message and sleep. */
  fault(hva: number, thread: number): void {
    const page = Math.floor(hva / PAGE_SIZE);
    this.queue.push({ address: page * PAGE_SIZE });
    if (!this.sleepers.has(page)) this.sleepers.set(page, new Set());
    this.sleepers.get(page)!.add(thread);
  }

  /** read(2) on the uffd: one message, or EAGAIN when another reader took it. */
  read(): UffdMsg | 'EAGAIN' {
    return this.queue.shift() ?? 'EAGAIN';
  }

  /**
   * UFFDIO_COPY of one page as resumable steps; wakes the page's sleepers unless DONTWAKE.
   * Returns who was woken.
   */
  *copySteps(
    dst: number,
    bytes: readonly number[],
    dontwake: boolean,
  ): Steps<{ result: 'ok' | 'EEXIST'; woken: number[] }> {
    let result = yield* this.fillAndInstall(dst, bytes);
    if (result === 'EEXIST' && this.mutation.on(UFFD_COPY_OVERWRITES_PRESENT)) {
      this.host.writeBytes(dst, bytes);
      result = 'ok';
    }
    return { result, woken: result === 'ok' && !dontwake ? this.wake(dst, PAGE_SIZE) : [] };
  }

  private *fillAndInstall(dst: number, bytes: readonly number[]): Steps<'ok' | 'EEXIST'> {
    if (this.host.lookup(dst)) return 'EEXIST';
    const pfn = this.host.uffdFolioAlloc();
    if (this.mutation.on(UFFD_COPY_INSTALLS_BEFORE_COPY)) {
      const installed = this.host.uffdInstallPte(dst, pfn);
      yield* preempt(UFFD_COPY_POINT);
      if (installed === 'ok') this.host.uffdFolioFill(pfn, bytes);
      return installed;
    }
    this.host.uffdFolioFill(pfn, bytes);
    yield* preempt(UFFD_COPY_POINT);
    return this.host.uffdInstallPte(dst, pfn);
  }

  /** UFFDIO_WAKE: wake every thread sleeping on a page in [start, start + len). */
  wake(start: number, len: number): number[] {
    const woken: number[] = [];
    for (const [page, threads] of this.sleepers) {
      if (page * PAGE_SIZE >= start && page * PAGE_SIZE < start + len) {
        woken.push(...threads);
        this.sleepers.delete(page);
      }
    }
    return woken;
  }

  sleepingOn(thread: number): number | undefined {
    for (const [page, threads] of this.sleepers) if (threads.has(thread)) return page * PAGE_SIZE;
    return undefined;
  }

  unregister(): void {
    this.host.uffd = null;
  }
}
