// KV block ids of one tier (device or host): an allocator of indices into a pool whose
// memory native code owns (SGLang-style: the cache stores indices, never data).
import type { KvTier } from '../native/step-plan.js';
import { TandemError } from '../native/errors.js';

export class BlockPool {
  readonly tier: KvTier;
  /** Blocks in the pool; ids are 0 .. numBlocks-1. */
  readonly numBlocks: number;
  /** Free ids, used as a stack so that recently freed (cache-warm) blocks are reused first. */
  private readonly freeIds: number[];
  /** 1 where the id is handed out; guards against double frees and foreign ids. */
  private readonly used: Uint8Array;

  constructor(tier: KvTier, numBlocks: number) {
    if (!Number.isInteger(numBlocks) || numBlocks < 0) {
      throw new TandemError('TDM_BAD_ARGUMENT', `a ${tier} block pool needs a non-negative integer size, got ${numBlocks}`);
    }
    this.tier = tier;
    this.numBlocks = numBlocks;
    this.used = new Uint8Array(numBlocks);
    this.freeIds = [];
    for (let id = numBlocks - 1; id >= 0; id--) this.freeIds.push(id);
  }

  /** Blocks not handed out. */
  get numFree(): number {
    return this.freeIds.length;
  }

  /** Hands out `count` ids, or none (undefined) when fewer are free: all or nothing. */
  allocate(count: number): number[] | undefined {
    if (count > this.freeIds.length) return undefined;
    const ids: number[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.freeIds.pop()!;
      this.used[id] = 1;
      ids.push(id);
    }
    return ids;
  }

  /** Returns ids to the pool; an id that is not handed out is an internal error. */
  release(ids: readonly number[]): void {
    for (const id of ids) {
      if (!(id >= 0 && id < this.numBlocks) || this.used[id] !== 1) {
        throw new TandemError('TDM_INTERNAL', `${this.tier} KV block ${id} freed twice or never allocated`);
      }
      this.used[id] = 0;
      this.freeIds.push(id);
    }
  }
}
