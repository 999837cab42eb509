// The work queue of the merge loops: a binary min-heap of candidate pairs keyed by
// priority * 2^32 + left symbol index (so ties go to the leftmost pair, as in llama.cpp), each
// carrying the pair's length at the time it was queued (to recognise stale entries).

/** Multiplier that puts the priority above any symbol index. */
export const PRIORITY_UNIT = 4294967296;

export class PairHeap {
  private keys = new Float64Array(256);
  private sizes = new Int32Array(256);
  length = 0;
  /** The entry removed by the last pop(). */
  topKey = 0;
  topSize = 0;

  clear(): void {
    this.length = 0;
  }

  /** Queues a pair: key = priority * PRIORITY_UNIT + left (smaller keys come out first). */
  push(key: number, size: number): void {
    if (this.length === this.keys.length) this.grow();
    const keys = this.keys, sizes = this.sizes;
    let i = this.length++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent]! <= key) break;
      keys[i] = keys[parent]!;
      sizes[i] = sizes[parent]!;
      i = parent;
    }
    keys[i] = key;
    sizes[i] = size;
  }

  /** Removes the smallest entry into topKey / topSize. The heap must not be empty. */
  pop(): void {
    const keys = this.keys, sizes = this.sizes;
    this.topKey = keys[0]!;
    this.topSize = sizes[0]!;
    const n = --this.length;
    if (n === 0) return;
    const key = keys[n]!, size = sizes[n]!;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && keys[child + 1]! < keys[child]!) child++;
      if (key <= keys[child]!) break;
      keys[i] = keys[child]!;
      sizes[i] = sizes[child]!;
      i = child;
    }
    keys[i] = key;
    sizes[i] = size;
  }

  private grow(): void {
    const keys = new Float64Array(this.keys.length * 2);
    keys.set(this.keys);
    const sizes = new Int32Array(this.sizes.length * 2);
    sizes.set(this.sizes);
    this.keys = keys;
    this.sizes = sizes;
  }
}
