// The simulated host kernel under the engine: the VMM's page tables (hva -> pfn), transparent huge
// pages, hugetlb pages, the shared zero page with copy-on-write, and the MMU-notifier calls KVM
// relies on. VMA rules come from model/host-mm.ts (the same Linux rules as the spec): this is
// the environment KVM runs in, not the code under test.
import { PAGE_SIZE, SZ_1G, SZ_2M, alignDown } from '../../model/abi.js';
import {
  applyVmaChange,
  findVma,
  hostAccessAllowed,
  type HostPlan,
  type Vma,
  type VmaChange,
} from '../../model/host-mm.js';
import { RecordingMap } from './recording-map.js';
import { bytesToValue, splitByPage, valueToBytes, type PageData } from '../../model/memory.js';
import type { Outcome } from '../../model/outcomes.js';
import { ZERO_PFN, type PhysMem } from './phys.js';
import { MmapLock, preempt, runAlone, type Steps, type ThreadClock } from './steps.js';
import type { StoreBuffer } from './store-buffer.js';

/** KVM's MMU-notifier callbacks, resumable (they take mmu_lock). */
export interface MmuNotifier {
  invalidateRangeStart(start: number, end: number): Steps<void>;
  invalidateRangeEnd(start: number, end: number): Steps<void>;
}

/** Above this many pages of huge mappings changed in one command, the touched set says "all contents". */
const HUGE_CONTENTS_LIMIT = 4096;

/** A huge host mapping: one THP (2 MiB) or hugetlb (1 GiB) page. */
interface HugeMapping {
  readonly start: number;
  readonly size: number;
  readonly basePfn: number;
}

export type GupResult =
  | { kind: 'page'; pfn: number; writable: boolean; hostPageSize: number }
  | { kind: 'efault'; cause: 'no-vma' | 'protection' | 'missing' }
  /** The page is missing in a userfaultfd MISSING range: the faulting thread must wait (handle_userfault). */
  | { kind: 'uffd'; hva: number };

/** A userfaultfd MISSING registration (exit-on-missing episodes); `fault` posts the event and parks the thread. */
export interface UffdRange {
  readonly start: number;
  readonly end: number;
}

export class SimHostMm {
  vmas: Vma[] = [];
  /** 4 KiB host PTEs: hva page -> pfn (ZERO_PFN for the shared zero page). */
  private readonly ptes = new RecordingMap<number, number>((page, old, now) => {
    this.remapped.add(page);
    if (old !== undefined && old !== ZERO_PFN) this.pagesOfPfn.delete(old);
    if (now !== undefined && now !== ZERO_PFN) this.pagesOfPfn.set(now, page);
  });
  /** Huge mappings keyed by their start hva. */
  private readonly huge = new RecordingMap<number, HugeMapping>((_start, old, now) => {
    // One range per huge change, not one entry per page: a 1 GiB page is 262,144 of them.
    for (const h of [old, now])
      if (h) this.remappedRanges.push({ start: h.start / PAGE_SIZE, end: (h.start + h.size) / PAGE_SIZE });
    if (old) this.hugeByBasePfn.delete(old.basePfn);
    if (now) this.hugeByBasePfn.set(now.basePfn, now);
  });
  /** Touched-set bookkeeping (takeChanges): hva pages whose mapping changed, and pfn -> hva page. */
  private remapped = new Set<number>();
  private remappedRanges: { start: number; end: number }[] = [];
  private readonly pagesOfPfn = new Map<number, number>();
  private readonly hugeByBasePfn = new Map<number, HugeMapping>();
  notifier: MmuNotifier | null = null;
  uffd: UffdRange | null = null;

  readonly mmapLock: MmapLock;

  /**
   * `stores`: route the VMM's writes to its pages through the store buffer (the userfault series,
   * where a page's contents and its bitmap bit are ordered by a release). Null: writes are visible at once.
   */
  constructor(
    private readonly phys: PhysMem,
    clock: ThreadClock,
    private readonly stores: StoreBuffer | null = null,
  ) {
    this.mmapLock = new MmapLock(clock);
  }

  private hugeAt(hva: number): HugeMapping | undefined {
    for (const size of [SZ_2M, SZ_1G]) {
      const h = this.huge.get(alignDown(hva, size));
      if (h && hva < h.start + h.size) return h;
    }
    return undefined;
  }

  /** The frame behind hva and the size of the host page it belongs to, if populated. */
  lookup(hva: number): { pfn: number; hostPageSize: number } | undefined {
    const h = this.hugeAt(hva);
    if (h) return { pfn: h.basePfn + Math.floor((hva - h.start) / PAGE_SIZE), hostPageSize: h.size };
    const pfn = this.ptes.get(Math.floor(hva / PAGE_SIZE));
    return pfn === undefined ? undefined : { pfn, hostPageSize: PAGE_SIZE };
  }

  /**
   * A PTE change bracketed by the MMU notifier (mmu_notifier_invalidate_range_start, the zap,
   * mmu_notifier_invalidate_range_end), with a preemption point on either side of the change.
   */
  private *notify(start: number, end: number, change: () => void): Steps<void> {
    if (this.notifier) yield* this.notifier.invalidateRangeStart(start, end);
    yield* preempt('zap_page_range_single: the host PTEs change');
    // The TLB shootdown's DSB completes every store made through the old translation.
    this.stores?.drainAll();
    change();
    yield* preempt('mmu_notifier_invalidate_range_end');
    if (this.notifier) yield* this.notifier.invalidateRangeEnd(start, end);
  }

  /**
   * Plan a syscall from the VMAs and carry it out; every PTE change is bracketed by MMU-notifier
   * calls. munmap, mmap and mprotect hold mmap_lock for write throughout, MADV_DONTNEED for read
   * (`exclusive`); the plan is made once the lock is held.
   */
  *applyPlanSteps(planFor: (vmas: readonly Vma[]) => HostPlan, exclusive: boolean): Steps<Outcome> {
    if (exclusive) yield* this.mmapLock.writeLock();
    else yield* this.mmapLock.readLock();
    try {
      const plan = planFor(this.vmas);
      for (const change of plan.changes) yield* this.applyChange(change);
      return plan.result;
    } finally {
      if (exclusive) this.mmapLock.writeUnlock();
      else this.mmapLock.readUnlock();
    }
  }

  private *applyChange(change: VmaChange): Steps<void> {
    if (change.op === 'map') {
      this.vmas = applyVmaChange(this.vmas, change);
      return;
    }
    const { start, end } = change;
    yield* this.splitHugeAcross(start, end);
    yield* this.notify(start, end, () => {
      if (change.op !== 'protect') this.release(start, end);
      this.vmas = applyVmaChange(this.vmas, change);
    });
  }

  /** A THP only partly inside [start, end) is split into 4 KiB PTEs first (__split_huge_pmd). */
  private *splitHugeAcross(start: number, end: number): Steps<void> {
    for (const h of [...this.huge.values()]) {
      const overlaps = h.start < end && start < h.start + h.size;
      const covered = start <= h.start && h.start + h.size <= end;
      if (!overlaps || covered || h.size !== SZ_2M) continue;
      yield* this.notify(h.start, h.start + h.size, () => {
        this.huge.delete(h.start);
        for (let i = 0; i < h.size / PAGE_SIZE; i++) this.ptes.set(h.start / PAGE_SIZE + i, h.basePfn + i);
      });
    }
  }

  /** Drop the mappings in [start, end) and free their frames. */
  private release(start: number, end: number): void {
    this.stores?.drainAll();
    for (const h of [...this.huge.values()]) {
      if (h.start >= start && h.start + h.size <= end) {
        this.huge.delete(h.start);
        this.phys.freeContiguous(h.basePfn);
      }
    }
    for (const [page, pfn] of [...this.ptes]) {
      if (page * PAGE_SIZE >= start && page * PAGE_SIZE < end) {
        this.ptes.delete(page);
        this.phys.free(pfn);
      }
    }
  }

  /**
   * get_user_page_fast_only(): no faulting in, no sleeping. A write pin needs a present page of its
   * own in a writable VMA; a read pin (S3/p03) any present page the VMA lets us read.
   */
  gupFast(hva: number, writePin: boolean): GupResult {
    const vma = findVma(this.vmas, hva);
    if (!vma) return { kind: 'efault', cause: 'no-vma' };
    if (vma.prot === 'none' || (writePin && vma.prot !== 'rw')) return { kind: 'efault', cause: 'protection' };
    const present = this.lookup(hva);
    if (!present || (writePin && present.pfn === ZERO_PFN)) return { kind: 'efault', cause: 'missing' };
    return {
      kind: 'page',
      pfn: present.pfn,
      writable: vma.prot === 'rw' && present.pfn !== ZERO_PFN,
      hostPageSize: present.hostPageSize,
    };
  }

  /** Fault the page in for get_user_pages: populate, or break COW of the zero page on write. */
  /**
   * `unshare`: a FOLL_PIN | FOLL_LONGTERM pin never pins the shared zero page; it gets a page of
   * its own even for a read pin (gup_must_unshare).
   */
  gup(hva: number, write: boolean, unshare = false): GupResult {
    return runAlone(this.gupSteps(hva, write, unshare));
  }

  /** get_user_pages as steps: breaking COW of the zero page calls the MMU notifier, which may wait for mmu_lock. */
  *gupSteps(hva: number, write: boolean, unshare = false): Steps<GupResult> {
    const vma = findVma(this.vmas, hva);
    if (!vma) return { kind: 'efault', cause: 'no-vma' };
    if (vma.prot === 'none' || (write && vma.prot !== 'rw')) return { kind: 'efault', cause: 'protection' };
    let present = this.lookup(hva);
    if (!present && this.uffd && hva >= this.uffd.start && hva < this.uffd.end)
      return { kind: 'uffd', hva: alignDown(hva, PAGE_SIZE) };
    if (!present) {
      this.populate(vma, hva, write || unshare);
      present = this.lookup(hva)!;
    } else if (present.pfn === ZERO_PFN && (write || unshare)) {
      const page = Math.floor(hva / PAGE_SIZE);
      yield* this.notify(page * PAGE_SIZE, (page + 1) * PAGE_SIZE, () => this.ptes.set(page, this.phys.alloc()));
      present = this.lookup(hva)!;
    }
    const writable = vma.prot === 'rw' && present.pfn !== ZERO_PFN;
    return { kind: 'page', pfn: present.pfn, writable, hostPageSize: present.hostPageSize };
  }

  private populate(vma: Vma, hva: number, write: boolean): void {
    const hugeSize = vma.backing === 'hugetlb1g' ? SZ_1G : vma.backing === 'thp' ? SZ_2M : 0;
    if (hugeSize) {
      const start = alignDown(hva, hugeSize);
      const fits = start >= vma.start && start + hugeSize <= vma.end;
      // A THP forms only where no 4 KiB page of the block is populated yet.
      const untouched = (): boolean =>
        Array.from({ length: hugeSize / PAGE_SIZE }, (_, i) => start / PAGE_SIZE + i).every((p) => !this.ptes.has(p));
      if (fits && (hugeSize === SZ_1G || untouched())) {
        const basePfn = this.phys.allocContiguous(hugeSize / PAGE_SIZE);
        this.huge.set(start, { start, size: hugeSize, basePfn });
        return;
      }
    }
    this.ptes.set(Math.floor(hva / PAGE_SIZE), write ? this.phys.alloc() : ZERO_PFN);
  }

  /** MADV_POPULATE_READ/WRITE: gup every page in order; ENOMEM at a hole, EFAULT where protection forbids. */
  madvisePopulate(hva: number, size: number, write: boolean): Outcome {
    return runAlone(this.madvisePopulateSteps(hva, size, write));
  }

  *madvisePopulateSteps(hva: number, size: number, write: boolean): Steps<Outcome> {
    if (hva % PAGE_SIZE) return { kind: 'err', errno: 'EINVAL' };
    for (let at = hva; at < hva + size; at += PAGE_SIZE) {
      const got = yield* this.gupSteps(at, write);
      if (got.kind === 'efault') return { kind: 'err', errno: got.cause === 'no-vma' ? 'ENOMEM' : 'EFAULT' };
    }
    return { kind: 'ok' };
  }

  /**
   * UFFDIO_COPY of one page (mm/userfaultfd.c mfill_atomic_pte_copy): EEXIST if a PTE is already
   * there, else a new page with the contents, installed without an MMU-notifier call (nothing to
   * invalidate: the PTE was empty).
   */
  uffdCopy(hva: number, bytes: readonly number[]): 'ok' | 'EEXIST' {
    if (this.lookup(hva)) return 'EEXIST';
    const pfn = this.uffdFolioAlloc();
    this.uffdFolioFill(pfn, bytes);
    return this.uffdInstallPte(hva, pfn);
  }

  /** mfill_atomic_pte_copy's fresh folio (folio_prealloc): no PTE maps it yet. */
  uffdFolioAlloc(): number {
    return this.phys.alloc();
  }

  /** copy_mfill_atomic_pte: copy_from_user of the page contents into the folio. */
  uffdFolioFill(pfn: number, bytes: readonly number[]): void {
    for (const [i, b] of bytes.entries()) this.phys.writeByte(pfn, i, b);
  }

  /** mfill_atomic_install_pte under the PTL: EEXIST (and the folio freed) unless the PTE is none. */
  uffdInstallPte(hva: number, pfn: number): 'ok' | 'EEXIST' {
    if (this.lookup(hva)) {
      this.phys.free(pfn);
      return 'EEXIST';
    }
    this.ptes.set(Math.floor(hva / PAGE_SIZE), pfn);
    return 'ok';
  }

  *hostWriteSteps(hva: number, len: number, value: bigint): Steps<Outcome> {
    if (!hostAccessAllowed(this.vmas, hva, len, true)) return { kind: 'segv' };
    yield* this.writeBytesSteps(hva, valueToBytes(value, len), true);
    return { kind: 'ok' };
  }

  hostRead(hva: number, len: number): Outcome {
    if (!hostAccessAllowed(this.vmas, hva, len, false)) return { kind: 'segv' };
    // The model keeps a VMM load after its own earlier stores (no store->load reordering here).
    this.stores?.fence();
    // A read fault maps the zero page (or its huge page): the page is present from now on.
    for (const part of splitByPage(hva, len))
      if (!this.lookup(part.addr)) this.populate(findVma(this.vmas, part.addr)!, part.addr, false);
    return { kind: 'hostData', value: bytesToValue(this.readBytes(hva, len)) };
  }

  /**
   * copy_to_user: the caller checked access; faults pages in for write (at once: the fault is
   * program-ordered), then stores each page's bytes, through the store buffer when it has one.
   */
  writeBytes(hva: number, bytes: readonly number[], buffered = false): void {
    runAlone(this.writeBytesSteps(hva, bytes, buffered));
  }

  *writeBytesSteps(hva: number, bytes: readonly number[], buffered = false): Steps<void> {
    for (const part of splitByPage(hva, bytes.length)) {
      const got = yield* this.gupSteps(part.addr, true);
      if (got.kind !== 'page')
        throw new Error(`engine bug: host write to inaccessible hva 0x${part.addr.toString(16)}`);
      const pfn = got.pfn;
      const data = bytes.slice(part.addr - hva, part.addr - hva + part.len);
      const commit = (): void => {
        for (let i = 0; i < part.len; i++) this.phys.writeByte(pfn, (part.addr + i) % PAGE_SIZE, data[i]!);
      };
      if (buffered && this.stores) this.stores.store(`page pfn ${pfn}`, data, commit);
      else commit();
    }
  }

  readBytes(hva: number, len: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < len; i++) {
      const at = this.lookup(hva + i);
      out.push(at ? this.phys.readByte(at.pfn, (hva + i) % PAGE_SIZE) : 0);
    }
    return out;
  }

  /**
   * What changed since the last call: the hva pages whose 4 KiB mapping changed (mapped), the hva
   * page ranges of huge mappings made or removed (mappedRanges), and the pages whose contents may
   * have changed (contents: all of those plus the pages whose frame was written; null when the huge
   * ranges hold more than HUGE_CONTENTS_LIMIT pages, where comparing everything costs less).
   */
  takeChanges(): {
    mapped: Set<number>;
    mappedRanges: { start: number; end: number }[];
    contents: Set<number> | null;
  } {
    const mapped = this.remapped;
    const mappedRanges = this.remappedRanges;
    this.remapped = new Set();
    this.remappedRanges = [];
    const written = this.phys.takeWritten();
    const hugePages = mappedRanges.reduce((n, r) => n + r.end - r.start, 0);
    if (hugePages > HUGE_CONTENTS_LIMIT) return { mapped, mappedRanges, contents: null };
    const contents = new Set(mapped);
    for (const r of mappedRanges) for (let page = r.start; page < r.end; page++) contents.add(page);
    for (const pfn of written) {
      const page = this.pagesOfPfn.get(pfn);
      if (page !== undefined && this.ptes.get(page) === pfn) contents.add(page);
      for (const size of [SZ_2M, SZ_1G]) {
        const count = size / PAGE_SIZE;
        const h = this.hugeByBasePfn.get(pfn - (pfn % count));
        if (h && h.size === size) contents.add(h.start / PAGE_SIZE + (pfn - h.basePfn));
      }
    }
    return { mapped, mappedRanges, contents };
  }

  /** The contents of one hva page (undefined: zeros), as contents() has them. */
  pageContents(page: number): PageData | undefined {
    const at = this.lookup(page * PAGE_SIZE);
    const data = at ? this.phys.page(at.pfn) : undefined;
    return data && data.size > 0 ? data : undefined;
  }

  /** Which hva pages are populated, in the spec's terms (model/host-mm.ts HostMm.present / gigantic). */
  presence(): { present: Map<number, 'zero' | 'page'>; gigantic: Set<number> } {
    const present = new Map<number, 'zero' | 'page'>();
    const gigantic = new Set<number>();
    for (const [page, pfn] of this.ptes) present.set(page, pfn === ZERO_PFN ? 'zero' : 'page');
    for (const h of this.huge.values()) {
      if (h.size === SZ_1G) gigantic.add(h.start / PAGE_SIZE);
      else for (let i = 0; i < h.size / PAGE_SIZE; i++) present.set(h.start / PAGE_SIZE + i, 'page');
    }
    return { present, gigantic };
  }

  /** Contents of every populated host page that holds a non-zero byte, keyed by hva page. */
  contents(): Map<number, PageData> {
    const out = new Map<number, PageData>();
    for (const [page, pfn] of this.ptes) {
      const data = this.phys.page(pfn);
      if (data && data.size > 0) out.set(page, data);
    }
    for (const h of this.huge.values()) {
      for (const [pfn, data] of this.phys.pagesIn(h.basePfn, h.size / PAGE_SIZE)) {
        if (data.size > 0) out.set(h.start / PAGE_SIZE + (pfn - h.basePfn), data);
      }
    }
    return out;
  }
}
