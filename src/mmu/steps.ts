// Resumable engine operations (issue 10). An operation that KVM runs in more than one critical
// section is a generator: it yields at each point where KVM takes or drops a lock, enters or leaves
// an SRCU read section, or reads state another thread may change, and the code between two yields
// runs atomically. Run alone (Engine.apply) the generator is drained at once; run by the
// interleaver (interleave.ts), the schedule decides which thread's generator advances next.
// Granularity and the kernel function behind each point: docs/ARCHITECTURE.md, "Resumable steps".

/** Where an operation stopped, and (when it waits for a lock or a grace period) when it may go on. */
export interface StepPoint {
  /** The kernel function or action the operation is about to perform (or is blocked in). */
  readonly point: string;
  /** Absent: the operation may resume at once. Present: only once this returns true. */
  readonly ready?: () => boolean;
}

export type Steps<T> = Generator<StepPoint, T, undefined>;

/** A preemption point: another thread may run here. */
export function* preempt(point: string): Steps<void> {
  yield { point };
}

/** Block until `ready` holds (a lock is free, a grace period has elapsed). */
export function* waitUntil(point: string, ready: () => boolean): Steps<void> {
  while (!ready()) yield { point, ready };
}

/** Drain an operation that runs alone: nothing else can release what it would wait for. */
export function runAlone<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    if (r.value.ready && !r.value.ready())
      throw new Error(`engine bug: an operation running alone blocked in ${r.value.point}`);
  }
}

/**
 * The thread that is running engine code (interleave.ts sets it before each step; -1 when a
 * command runs alone). Locks and SRCU sections are owned by threads.
 */
export interface ThreadClock {
  current: number;
}

/**
 * A sleeping or spinning lock owned by one thread: kvm->mmu_lock (x86's TDP MMU takes it for read
 * on faults; a mutex is stricter, see docs) and kvm->slots_lock.
 */
export class Mutex {
  private holder: number | null = null;

  constructor(
    private readonly clock: ThreadClock,
    private readonly name: string,
  ) {}

  *lock(): Steps<void> {
    yield* waitUntil(`lock(${this.name})`, () => this.holder === null);
    this.holder = this.clock.current;
  }

  unlock(): void {
    if (this.holder !== this.clock.current)
      throw new Error(`engine bug: ${this.name} released by a thread not holding it`);
    this.holder = null;
  }

  get held(): boolean {
    return this.holder !== null;
  }
}

/** Run `body` holding `lock`, released however the body ends. */
export function* holding<T>(lock: Mutex, body: Steps<T>): Steps<T> {
  yield* lock.lock();
  try {
    return yield* body;
  } finally {
    lock.unlock();
  }
}

/**
 * kvm->srcu: readers (vCPUs in the fault path) enter and leave; synchronize_srcu() waits until
 * every reader that entered before it started has left (a grace period). Readers that enter later
 * do not delay it.
 */
export class Srcu {
  private readonly readers = new Map<number, number>();
  private epoch = 0;

  constructor(private readonly clock: ThreadClock) {}

  readLock(): void {
    this.readers.set(this.clock.current, this.epoch);
  }

  readUnlock(): void {
    this.readers.delete(this.clock.current);
  }

  *synchronize(point = 'synchronize_srcu(&kvm->srcu)'): Steps<void> {
    const started = ++this.epoch;
    yield* waitUntil(point, () => {
      for (const entered of this.readers.values()) if (entered < started) return false;
      return true;
    });
  }

  get readerCount(): number {
    return this.readers.size;
  }
}

/**
 * mm->mmap_lock: munmap, mmap and mprotect hold it for write across their MMU-notifier calls;
 * get_user_pages, MADV_DONTNEED and the VMM's own page faults take it for read.
 */
export class MmapLock {
  private writer: number | null = null;
  private readers = 0;

  constructor(private readonly clock: ThreadClock) {}

  *writeLock(point = 'mmap_write_lock'): Steps<void> {
    yield* waitUntil(point, () => this.writer === null && this.readers === 0);
    this.writer = this.clock.current;
  }

  writeUnlock(): void {
    this.writer = null;
  }

  *readLock(point = 'mmap_read_lock'): Steps<void> {
    yield* waitUntil(point, () => this.writer === null || this.writer === this.clock.current);
    this.readers++;
  }

  readUnlock(): void {
    this.readers--;
  }
}
