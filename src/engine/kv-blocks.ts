// KV block accounting across the two tiers: each sequence's block table lives in one
// tier and grows a block at a time as the sequence does (vLLM's paged KV cache).
import type { KvTier } from '../native/step-plan.js';
import { BlockPool } from './block-pool.js';

/** What the block manager needs to know about a sequence; the Sequence class provides it. */
export interface KvOwner {
  /** Block ids in position order; block i holds positions [i*blockTokens, (i+1)*blockTokens). */
  blockTable: number[];
  /** The tier that holds every block of the table (undefined while the table is empty). */
  kvTier: KvTier | undefined;
}

export class KvBlockManager {
  /** Tokens per block. */
  readonly blockTokens: number;
  readonly pools: Readonly<Record<KvTier, BlockPool>>;
  /** Tiers a new sequence is placed in, best first; tiers with no blocks are left out. */
  private readonly placement: KvTier[];

  constructor(blockTokens: number, numBlocks: { device: number; host: number }) {
    this.blockTokens = blockTokens;
    this.pools = { device: new BlockPool('device', numBlocks.device), host: new BlockPool('host', numBlocks.host) };
    this.placement = (['device', 'host'] as const).filter((t) => numBlocks[t] > 0);
  }

  /** Blocks needed to hold `numTokens` positions. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockTokens);
  }

  /** Free blocks over both tiers. */
  get numFree(): number {
    return this.pools.device.numFree + this.pools.host.numFree;
  }

  /** Blocks over both tiers. */
  get numBlocks(): number {
    return this.pools.device.numBlocks + this.pools.host.numBlocks;
  }

  /** Whether `owner`'s table could grow to cover `numTokens` positions right now. */
  canGrow(owner: KvOwner, numTokens: number): boolean {
    const extra = this.blocksFor(numTokens) - owner.blockTable.length;
    if (extra <= 0) return true;
    if (owner.kvTier) return this.pools[owner.kvTier].numFree >= extra;
    return this.placement.some((t) => this.pools[t].numFree >= extra);
  }

  /** Grows `owner`'s table to cover `numTokens` positions; false (and no change) when its tier is short. */
  grow(owner: KvOwner, numTokens: number): boolean {
    const extra = this.blocksFor(numTokens) - owner.blockTable.length;
    if (extra <= 0) return true;
    const tiers = owner.kvTier ? [owner.kvTier] : this.placement;
    for (const tier of tiers) {
      const ids = this.pools[tier].allocate(extra);
      if (!ids) continue;
      owner.kvTier = tier;
      owner.blockTable.push(...ids);
      return true;
    }
    return false;
  }

  /** Frees every block of `owner`'s table. */
  release(owner: KvOwner): void {
    if (owner.kvTier && owner.blockTable.length > 0) this.pools[owner.kvTier].release(owner.blockTable);
    owner.blockTable = [];
    owner.kvTier = undefined;
  }
}
