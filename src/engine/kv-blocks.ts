// KV block accounting across the two tiers (vLLM's paged KV cache): each sequence's block
// table lives in one tier and grows a block at a time; full blocks are shared between
// sequences through the prefix-cache index; a table moves between tiers whole, as block copies.
import type { BlockCopy, KvTier } from '../native/step-plan.js';
import { TandemError } from '../native/errors.js';
import { BlockPool } from './block-pool.js';
import { extendBlockHashes } from './prefix-hash.js';

/** What the block manager needs to know about a sequence; the Sequence class provides it. */
export interface KvOwner {
  /** Block ids in position order; block i holds positions [i*blockTokens, (i+1)*blockTokens). */
  blockTable: number[];
  /** The tier that holds every block of the table (undefined while the table is empty). */
  kvTier: KvTier | undefined;
  /** Leading blocks of the table already offered to kvTier's prefix index. */
  numIndexed: number;
  /** Prefix-cache keys of the leading full blocks of `tokens`, extended as needed. */
  readonly blockHashes: string[];
  /** The sequence's token ids (prompt, then generated). */
  readonly tokens: readonly number[];
}

export const TIERS: readonly KvTier[] = ['device', 'host'];

export function otherTier(tier: KvTier): KvTier {
  return tier === 'device' ? 'host' : 'device';
}

export class KvBlockManager {
  /** Tokens per block. */
  readonly blockTokens: number;
  readonly pools: Readonly<Record<KvTier, BlockPool>>;
  /** Whether full blocks are indexed and shared. */
  readonly prefixCaching: boolean;
  /** Blocks copied into each tier by move(), since the manager was made. */
  readonly numBlocksMovedTo: Record<KvTier, number> = { device: 0, host: 0 };

  constructor(blockTokens: number, numBlocks: { device: number; host: number }, prefixCaching = true) {
    this.blockTokens = blockTokens;
    this.pools = { device: new BlockPool('device', numBlocks.device), host: new BlockPool('host', numBlocks.host) };
    this.prefixCaching = prefixCaching;
  }

  /** Blocks needed to hold `numTokens` positions. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockTokens);
  }

  /** Blocks that can be handed out over both tiers (free or evictable). */
  get numFree(): number {
    return this.pools.device.numFree + this.pools.host.numFree;
  }

  /** Blocks over both tiers. */
  get numBlocks(): number {
    return this.pools.device.numBlocks + this.pools.host.numBlocks;
  }

  /** Blocks in the prefix index over both tiers. */
  get numCached(): number {
    return this.pools.device.numCached + this.pools.host.numCached;
  }

  /** Cached blocks in `tier` that hold `owner`'s leading full blocks, at most `maxBlocks` (the longest run of hits). */
  matchPrefix(owner: KvOwner, tier: KvTier, maxBlocks: number): number[] {
    if (!this.prefixCaching || maxBlocks <= 0) return [];
    extendBlockHashes(owner.blockHashes, owner.tokens, this.blockTokens, maxBlocks);
    const pool = this.pools[tier];
    const hits: number[] = [];
    for (let i = 0; i < Math.min(maxBlocks, owner.blockHashes.length); i++) {
      const id = pool.lookup(owner.blockHashes[i]!);
      if (id === undefined) break;
      hits.push(id);
    }
    return hits;
  }

  /** Free blocks `tier` would use up to place a sequence there with `hits` covering `numTokens` positions. */
  placementCost(tier: KvTier, hits: readonly number[], numTokens: number): number {
    const pool = this.pools[tier];
    const fresh = Math.max(0, this.blocksFor(numTokens) - hits.length);
    // An unreferenced hit is counted as free, so taking it uses up free space too.
    return fresh + hits.filter((id) => pool.refCount(id) === 0).length;
  }

  /**
   * Gives an owner with no blocks a table in `tier`: the prefix hits, then fresh blocks up
   * to `numTokens` positions. False (and no change) when the tier is short.
   */
  place(owner: KvOwner, tier: KvTier, hits: readonly number[], numTokens: number): boolean {
    if (owner.blockTable.length > 0) throw new TandemError('TDM_INTERNAL', 'place() on a sequence that holds blocks');
    const pool = this.pools[tier];
    if (pool.numFree < this.placementCost(tier, hits, numTokens)) return false;
    for (const id of hits) pool.acquire(id);
    const fresh = pool.allocate(Math.max(0, this.blocksFor(numTokens) - hits.length))!;
    owner.kvTier = tier;
    owner.blockTable = [...hits, ...fresh];
    owner.numIndexed = hits.length;
    return true;
  }

  /** Grows `owner`'s table in its tier to cover `numTokens` positions; false (and no change) when the tier is short. */
  grow(owner: KvOwner, numTokens: number): boolean {
    if (!owner.kvTier) throw new TandemError('TDM_INTERNAL', 'grow() on a sequence with no tier');
    const extra = this.blocksFor(numTokens) - owner.blockTable.length;
    if (extra <= 0) return true;
    const ids = this.pools[owner.kvTier].allocate(extra);
    if (!ids) return false;
    owner.blockTable.push(...ids);
    return true;
  }

  /** Drops `owner`'s hold on its blocks, tail first (so the shared head of a prefix is evicted last). */
  release(owner: KvOwner): void {
    if (owner.kvTier && owner.blockTable.length > 0) this.pools[owner.kvTier].release([...owner.blockTable].reverse());
    owner.blockTable = [];
    owner.kvTier = undefined;
    owner.numIndexed = 0;
  }

  /** Offers `owner`'s full blocks among positions [0, numComputed) (KV computed by a step that returned) to the index. */
  indexComputed(owner: KvOwner, numComputed: number): void {
    if (!this.prefixCaching || !owner.kvTier) return;
    const full = Math.min(Math.floor(numComputed / this.blockTokens), owner.blockTable.length);
    if (full <= owner.numIndexed) return;
    extendBlockHashes(owner.blockHashes, owner.tokens, this.blockTokens, full);
    const pool = this.pools[owner.kvTier];
    for (let i = owner.numIndexed; i < full; i++) pool.insert(owner.blockTable[i]!, owner.blockHashes[i]!);
    owner.numIndexed = full;
  }

  /** Whether `tier` has room for `numBlocks` more blocks right now. */
  hasRoom(tier: KvTier, numBlocks: number): boolean {
    const pool = this.pools[tier];
    return pool.numBlocks > 0 && pool.numFree >= numBlocks;
  }

  /**
   * Moves `owner`'s whole table to `toTier`: new blocks there, the copies that fill them
   * (to run before the next forward pass, in order), and the old blocks released. The
   * new blocks join the index only once the copies have run (indexComputed after the step).
   * Undefined (and no change) when `toTier` is short.
   */
  move(owner: KvOwner, toTier: KvTier): BlockCopy[] | undefined {
    const fromTier = owner.kvTier;
    if (!fromTier || fromTier === toTier) throw new TandemError('TDM_INTERNAL', `move() of a sequence in tier ${fromTier} to ${toTier}`);
    const ids = this.pools[toTier].allocate(owner.blockTable.length);
    if (!ids) return undefined;
    const copies = owner.blockTable.map((fromBlock, i) => ({ fromTier, fromBlock, toTier, toBlock: ids[i]! }));
    this.pools[fromTier].release([...owner.blockTable].reverse());
    owner.blockTable = ids;
    owner.kvTier = toTier;
    owner.numIndexed = 0;
    this.numBlocksMovedTo[toTier] += ids.length;
    return copies;
  }

  /** Throws TDM_INTERNAL unless each pool's reference counts equal the holds of `owners` (every live block table). */
  audit(owners: Iterable<KvOwner>): void {
    const expected = { device: new Uint32Array(this.pools.device.numBlocks), host: new Uint32Array(this.pools.host.numBlocks) };
    for (const owner of owners) {
      if (owner.blockTable.length === 0) continue;
      if (!owner.kvTier) throw new TandemError('TDM_INTERNAL', 'a block table with no tier');
      for (const id of owner.blockTable) expected[owner.kvTier][id]++;
    }
    for (const tier of TIERS) this.pools[tier].audit(expected[tier]);
  }
}
