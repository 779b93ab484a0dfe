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

/** What holding() needs: a lock taken exclusively. */
export interface ExclusiveLock {
  lock(): Steps<void>;
  unlock(): void;
}

/** A sleeping lock owned by one thread: kvm->slots_lock, filemap_invalidate_lock. */
export class Mutex implements ExclusiveLock {
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

/** Code with no point of its own, as steps (to run it under holding()). */
// biome-ignore lint/correctness/useYield: a generator that never yields is the point
export function* atomically<T>(body: () => T): Steps<T> {
  return body();
}

/** Run `body` holding `lock`, released however the body ends. */
export function* holding<T>(lock: ExclusiveLock, body: Steps<T>): Steps<T> {
  yield* lock.lock();
  try {
    return yield* body;
  } finally {
    lock.unlock();
  }
}

/**
 * kvm->mmu_lock, an rwlock_t on arm64 and x86 (KVM_HAVE_MMU_RWLOCK): stage-2 faults take it for
 * read (arm64 user_mem_abort since 6.2, x86 kvm_tdp_mmu_page_fault) and walk the tables as shared
 * walkers, installing with cmpxchg; unmaps, write-protection, dirty-log harvests and memslot zaps
 * take it for write. lock()/unlock() are the write side. A writer waits for every reader to leave
 * and readers wait for the writer; a waiting writer does not block new readers (rwlock_t is not
 * fair in the model: stricter schedules are still generated, none is lost).
 */
export class RwLock implements ExclusiveLock {
  private writer: number | null = null;
  private readonly readers = new Map<number, number>();

  constructor(
    private readonly clock: ThreadClock,
    private readonly name: string,
  ) {}

  *lock(): Steps<void> {
    yield* waitUntil(`write_lock(${this.name})`, () => this.writer === null && this.readers.size === 0);
    this.writer = this.clock.current;
  }

  unlock(): void {
    if (this.writer !== this.clock.current)
      throw new Error(`engine bug: ${this.name} write-released by a thread not holding it`);
    this.writer = null;
  }

  *readLock(): Steps<void> {
    yield* waitUntil(`read_lock(${this.name})`, () => this.writer === null);
    const me = this.clock.current;
    this.readers.set(me, (this.readers.get(me) ?? 0) + 1);
  }

  readUnlock(): void {
    const me = this.clock.current;
    const n = this.readers.get(me);
    if (n === undefined) throw new Error(`engine bug: ${this.name} read-released by a thread not holding it`);
    if (n === 1) this.readers.delete(me);
    else this.readers.set(me, n - 1);
  }

  /** Held for write. */
  get held(): boolean {
    return this.writer !== null;
  }

  get readerCount(): number {
    return this.readers.size;
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
