// KV block ids of one tier (device or host), with reference counts and a prefix-cache
// index: an allocator of indices into a pool whose memory native code owns (SGLang-style:
// the cache stores block ids, never data). Unreferenced blocks that hold a cached prefix
// stay findable until memory runs short, then the least recently freed is evicted.
import type { KvTier } from '../native/step-plan.js';
import { TandemError } from '../native/errors.js';

export class BlockPool {
  readonly tier: KvTier;
  /** Blocks in the pool; ids are 0 .. numBlocks-1. */
  readonly numBlocks: number;
  /** Cached blocks dropped from the index to make room, since the pool was made. */
  numEvictions = 0;
  /** Holders of each block; 0 means the block is free (plain or cached-evictable). */
  private readonly refCounts: Uint32Array;
  /** The prefix hash a block is indexed under, while it is in the index. */
  private readonly hashes: (string | undefined)[];
  /** Prefix hash -> block id; one block per hash. */
  private readonly index = new Map<string, number>();
  /** Unreferenced blocks outside the index, used as a stack so recently freed (cache-warm) blocks go first. */
  private readonly freeIds: number[];
  /** Unreferenced blocks in the index, least recently freed first (a Set keeps insertion order): the eviction order. */
  private readonly evictable = new Set<number>();

  constructor(tier: KvTier, numBlocks: number) {
    if (!Number.isInteger(numBlocks) || numBlocks < 0) {
      throw new TandemError('TDM_BAD_ARGUMENT', `a ${tier} block pool needs a non-negative integer size, got ${numBlocks}`);
    }
    this.tier = tier;
    this.numBlocks = numBlocks;
    this.refCounts = new Uint32Array(numBlocks);
    this.hashes = new Array<string | undefined>(numBlocks).fill(undefined);
    this.freeIds = [];
    for (let id = numBlocks - 1; id >= 0; id--) this.freeIds.push(id);
  }

  /** Blocks allocate() can hand out: plain free ones and unreferenced cached ones (evicted on demand). */
  get numFree(): number {
    return this.freeIds.length + this.evictable.size;
  }

  /** Blocks in the prefix-cache index, referenced or not. */
  get numCached(): number {
    return this.index.size;
  }

  /** Unreferenced blocks in the index (free, but still findable). */
  get numEvictable(): number {
    return this.evictable.size;
  }

  /** Holders of block `id`. */
  refCount(id: number): number {
    return this.refCounts[id] ?? 0;
  }

  /**
   * Hands out `count` ids with one reference each, or none (undefined) when fewer are
   * available: all or nothing. Plain free blocks go first, then cached ones, least recently freed first.
   */
  allocate(count: number): number[] | undefined {
    if (count > this.numFree) return undefined;
    const ids: number[] = [];
    for (let i = 0; i < count; i++) {
      let id = this.freeIds.pop();
      if (id === undefined) {
        id = this.evictable.values().next().value as number;
        this.evictable.delete(id);
        this.index.delete(this.hashes[id]!);
        this.hashes[id] = undefined;
        this.numEvictions++;
      }
      this.refCounts[id] = 1;
      ids.push(id);
    }
    return ids;
  }

  /** Adds a holder to an indexed block found by lookup() (a prefix hit); an unreferenced one leaves the eviction queue. */
  acquire(id: number): void {
    if (this.hashes[id] === undefined) throw new TandemError('TDM_INTERNAL', `${this.tier} KV block ${id} acquired but not in the prefix index`);
    if (this.refCounts[id] === 0) this.evictable.delete(id);
    this.refCounts[id]++;
  }

  /**
   * Drops one holder of each id, in the order given; a block left with none becomes free,
   * or evictable if indexed (pass a sequence's table tail first, so that its prefix outlives its tail).
   */
  release(ids: readonly number[]): void {
    for (const id of ids) {
      if (!(id >= 0 && id < this.numBlocks) || this.refCounts[id] === 0) {
        throw new TandemError('TDM_INTERNAL', `${this.tier} KV block ${id} freed twice or never allocated`);
      }
      if (--this.refCounts[id] > 0) continue;
      if (this.hashes[id] !== undefined) this.evictable.add(id);
      else this.freeIds.push(id);
    }
  }

  /** The block indexed under `hash`, if any. */
  lookup(hash: string): number | undefined {
    return this.index.get(hash);
  }

  /**
   * Indexes a referenced block whose KV is computed and full under its prefix hash. False
   * (and no change) when the hash already has a block (a duplicate computed in parallel) or the block is indexed.
   */
  insert(id: number, hash: string): boolean {
    if (this.refCounts[id] === 0) throw new TandemError('TDM_INTERNAL', `${this.tier} KV block ${id} indexed while free`);
    if (this.index.has(hash) || this.hashes[id] !== undefined) return false;
    this.index.set(hash, id);
    this.hashes[id] = hash;
    return true;
  }

  /** Throws TDM_INTERNAL unless every block's count equals `expected` (holders found by walking live block tables). */
  audit(expected: Uint32Array): void {
    let free = 0;
    for (let id = 0; id < this.numBlocks; id++) {
      if (this.refCounts[id] !== expected[id]) {
        throw new TandemError('TDM_INTERNAL', `${this.tier} KV block ${id} has ${this.refCounts[id]} holders but ${expected[id]} tables hold it`);
      }
      if (expected[id] === 0) free++;
    }
    if (free !== this.numFree) throw new TandemError('TDM_INTERNAL', `${this.tier} pool counts ${this.numFree} free blocks but ${free} are unreferenced`);
    for (const [hash, id] of this.index) {
      if (this.hashes[id] !== hash) throw new TandemError('TDM_INTERNAL', `${this.tier} prefix index and block ${id} disagree`);
    }
  }
}
