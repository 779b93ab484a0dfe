// A per-thread store buffer (issue 10 item 7), a much simplified operational reading of the Arm
// relaxed memory model (Pulte et al., "Simplifying ARM concurrency", POPL 2018) and of x86-TSO
// (Sewell et al., CACM 2010). docs/ARCHITECTURE.md "Memory ordering" says what it leaves out.
//
// API
//   new StoreBuffer(clock, model)  one per VM (Kvm.storeBuffer); model 'tso' (x86) or 'relaxed' (arm64),
//                                  memoryModelOf(arch) picks it.
//   store(loc, value, commit, release?)
//                                  the running thread stores `value` to the shared location `loc`;
//                                  `commit` writes it to memory. Run alone (clock.current < 0) it commits
//                                  at once; in an interleaved run it waits in the thread's buffer until
//                                  the schedule makes it visible (or a fence drains it).
//   load(loc, fromMemory)          the running thread reads `loc`: its own newest buffered value
//                                  (store forwarding), else `fromMemory()`.
//   fence()                        smp_mb / DSB / a locked RMW: the running thread's buffer drains.
//   drainAll()                     every buffer drains, each in program order (a TLB shootdown: the DSB
//                                  after TLBI completes every access made through the old translation).
//   committable()                  the stores the schedule may make visible next, by thread then age:
//                                  'tso' the oldest of each thread (FIFO); 'relaxed' every store with no
//                                  older store of its thread to the same location (coherence) and, for a
//                                  store-release, no older store at all.
//   makeVisible(store)             commit one store from committable().
//   origin, onVisible              the interleaver tags each store with the operation that made it and
//                                  hears when it becomes visible (an operation responds once its stores
//                                  are visible to every thread).
//
// Loads are satisfied where they run. Reordering on the reader side (a plain load satisfied before a
// program-earlier load) is not modelled here: the caller writes it as code order (the later read done
// first unless the earlier load is an acquire), see src/mmu/userfault.ts.
import type { Arch } from '../../model/abi.js';
import type { ThreadClock } from './steps.js';

export type MemoryModel = 'tso' | 'relaxed';

/** x86 is TSO: stores leave the buffer in program order. arm64 lets plain stores pass each other. */
export const memoryModelOf = (arch: Arch): MemoryModel => (arch === 'x86' ? 'tso' : 'relaxed');

export interface BufferedStore {
  readonly thread: number;
  /** Global age: lower is older (program order within a thread). */
  readonly seq: number;
  readonly loc: string;
  readonly value: unknown;
  /** A store-release (stlr, smp_store_release): visible only after every older store of its thread. */
  readonly release: boolean;
  /** The interleaver's tag of the operation that stored it. */
  readonly origin: number;
  readonly commit: () => void;
}

export class StoreBuffer {
  private readonly pending = new Map<number, BufferedStore[]>();
  private age = 0;
  /** Tag for the stores made from now on (the interleaver sets it before each step). */
  origin = -1;
  /** Told of each buffered store as it becomes visible. */
  onVisible: ((store: BufferedStore) => void) | null = null;

  constructor(
    private readonly clock: ThreadClock,
    readonly model: MemoryModel,
  ) {}

  store(loc: string, value: unknown, commit: () => void, release = false): void {
    const thread = this.clock.current;
    if (thread < 0) {
      commit();
      return;
    }
    const list = this.pending.get(thread) ?? [];
    list.push({ thread, seq: this.age++, loc, value, release, origin: this.origin, commit });
    this.pending.set(thread, list);
  }

  load<V>(loc: string, fromMemory: () => V): V {
    const own = this.pending.get(this.clock.current);
    for (let i = (own?.length ?? 0) - 1; i >= 0; i--) if (own![i]!.loc === loc) return own![i]!.value as V;
    return fromMemory();
  }

  fence(): void {
    this.drain(this.clock.current);
  }

  drainAll(): void {
    for (const thread of [...this.pending.keys()].sort((a, b) => a - b)) this.drain(thread);
  }

  get empty(): boolean {
    return this.pending.size === 0;
  }

  committable(): BufferedStore[] {
    const out: BufferedStore[] = [];
    for (const thread of [...this.pending.keys()].sort((a, b) => a - b)) {
      const list = this.pending.get(thread)!;
      if (this.model === 'tso') {
        out.push(list[0]!);
        continue;
      }
      const seen = new Set<string>();
      list.forEach((s, i) => {
        if (!(s.release && i > 0) && !seen.has(s.loc)) out.push(s);
        seen.add(s.loc);
      });
    }
    return out;
  }

  makeVisible(store: BufferedStore): void {
    if (!this.committable().includes(store)) throw new Error(`engine bug: store to ${store.loc} is not committable`);
    this.remove(store);
    store.commit();
    this.onVisible?.(store);
  }

  private drain(thread: number): void {
    const list = this.pending.get(thread);
    if (!list) return;
    this.pending.delete(thread);
    for (const s of list) {
      s.commit();
      this.onVisible?.(s);
    }
  }

  private remove(store: BufferedStore): void {
    const list = this.pending.get(store.thread)!;
    list.splice(list.indexOf(store), 1);
    if (list.length === 0) this.pending.delete(store.thread);
  }
}
