// userfaultfd, the kernel side (fs/userfaultfd.c, mm/userfaultfd.c) for MISSING registrations: a
// fault on a missing page in the range queues a UFFD_EVENT_PAGEFAULT and parks the faulting thread
// until UFFDIO_COPY installs the page *and* something wakes it (UFFDIO_WAKE, or a COPY without
// DONTWAKE). A COPY onto a present page fails with EEXIST and changes nothing (INV-36).
// Mutation point: uffd-copy-overwrites-present.
import { PAGE_SIZE } from '../../model/abi.js';
import { defineMutant, type Mutation } from './mutants.js';
import type { SimHostMm } from './host-mm.js';

export const UFFD_COPY_OVERWRITES_PRESENT = defineMutant({
  name: 'uffd-copy-overwrites-present',
  description: 'UFFDIO_COPY onto a present page overwrites it instead of failing with EEXIST',
  source: 'own (INV-36, mfill_atomic_pte_copy)',
  series: ['exit-on-missing'],
  killedBy: ['uffd-protocol', 'differential'],
});

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

  /** UFFDIO_COPY of one page; wakes the page's sleepers unless DONTWAKE. Returns who was woken. */
  copy(dst: number, bytes: readonly number[], dontwake: boolean): { result: 'ok' | 'EEXIST'; woken: number[] } {
    let result = this.host.uffdCopy(dst, bytes);
    if (result === 'EEXIST' && this.mutation.on(UFFD_COPY_OVERWRITES_PRESENT)) {
      this.host.writeBytes(dst, bytes);
      result = 'ok';
    }
    return { result, woken: result === 'ok' && !dontwake ? this.wake(dst, PAGE_SIZE) : [] };
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
