// A list kept ordered by a numeric key under single inserts and removals, stored as a sequence of
// short sorted chunks (the leaf level of a B+ tree): a binary search over the chunks' last keys,
// then one within a chunk, and a splice of at most CHUNK entries. Inserting or removing costs
// O(log n + CHUNK) instead of a memmove of the whole list, and a range is read from its first
// element on. Holds no KVM rule: the TLB (tlb.ts) and the memslot index (memslots.ts) use it.
const CHUNK = 256;

export class SortedChunks<T> {
  private chunks: T[][] = [];
  private count = 0;

  constructor(private readonly key: (item: T) => number) {}

  get size(): number {
    return this.count;
  }

  /** Items in order whose key is greater than k, while `visit` returns true. */
  forEachAfter(k: number, visit: (item: T) => boolean): void {
    let c = this.chunkAfter(k);
    if (c === this.chunks.length) return;
    let i = this.indexAfter(this.chunks[c]!, k);
    for (; c < this.chunks.length; c++, i = 0) {
      const chunk = this.chunks[c]!;
      for (; i < chunk.length; i++) if (!visit(chunk[i]!)) return;
    }
  }

  /** The first item whose key is greater than k. */
  firstAfter(k: number): T | undefined {
    const c = this.chunkAfter(k);
    if (c === this.chunks.length) return undefined;
    const chunk = this.chunks[c]!;
    return chunk[this.indexAfter(chunk, k)];
  }

  /** Every item, in order. */
  toArray(): T[] {
    return this.chunks.flat();
  }

  /** Insert after every item with a key <= the new one's. */
  insert(item: T): void {
    const k = this.key(item);
    this.count++;
    if (this.chunks.length === 0) {
      this.chunks.push([item]);
      return;
    }
    const c = Math.min(this.chunkAfter(k), this.chunks.length - 1);
    const chunk = this.chunks[c]!;
    chunk.splice(this.indexAfter(chunk, k), 0, item);
    if (chunk.length > 2 * CHUNK) this.chunks.splice(c + 1, 0, chunk.splice(CHUNK));
  }

  /** Append without keeping the order (only for a mutant that breaks the index on purpose). */
  appendUnordered(item: T): void {
    this.count++;
    if (this.chunks.length === 0) this.chunks.push([]);
    this.chunks[this.chunks.length - 1]!.push(item);
  }

  /** Remove this very item (found by its key, then by identity); false if it is not here. Integer keys. */
  remove(item: T): boolean {
    const k = this.key(item);
    let c = this.chunkAfter(k - 1);
    let i = c < this.chunks.length ? this.indexAfter(this.chunks[c]!, k - 1) : 0;
    for (; c < this.chunks.length; c++, i = 0) {
      const chunk = this.chunks[c]!;
      for (; i < chunk.length; i++) {
        if (chunk[i] === item) {
          chunk.splice(i, 1);
          if (chunk.length === 0) this.chunks.splice(c, 1);
          this.count--;
          return true;
        }
        if (this.key(chunk[i]!) > k) return false;
      }
    }
    return false;
  }

  /** The first chunk whose last key is greater than k (chunks.length if none). */
  private chunkAfter(k: number): number {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const chunk = this.chunks[mid]!;
      if (this.key(chunk[chunk.length - 1]!) <= k) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The first position in `chunk` whose key is greater than k. */
  private indexAfter(chunk: readonly T[], k: number): number {
    let lo = 0;
    let hi = chunk.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.key(chunk[mid]!) <= k) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
