// KV block accounting across the two tiers (vLLM's paged KV cache): each sequence's block
// table lives in one tier and grows a block at a time; full blocks are shared between
// sequences through the prefix-cache index; a table moves between tiers whole, as block copies.
//
// A model with sliding-window layers may keep them in blocks of their own (vLLM's hybrid
// allocator, with layer groups of one block size drawn from the same pool): each sequence
// then has a sliding table too, whose blocks behind the window of the next position to
// compute are freed (their entries become -1). Where the sliding layers outnumber the full
// ones they fill several groups (native/core/kv_pool.h), and the sliding table holds each
// group's block for every block index: entry i * slidingGroups + j is group j's block for
// positions [i*blockTokens, (i+1)*blockTokens). Freed blocks stay in the prefix index, so a
// later prompt with the same prefix finds the window it needs.
import type { BlockCopy, KvTier } from '../native/step-plan.js';
import { TandemError } from '../native/errors.js';
import type { ModelHyperparams } from '../model/describe.js';
import { BlockPool } from './block-pool.js';
import { extendBlockHashes } from './prefix-hash.js';

/** What the block manager needs to know about a sequence; the Sequence class provides it. */
export interface KvOwner {
  /** Block ids in position order; block i holds positions [i*blockTokens, (i+1)*blockTokens). */
  blockTable: number[];
  /** With sliding layers kept apart: their groups' blocks for the same positions (slidingGroups per block index), -1 where freed behind the window; else empty. */
  slidingTable: number[];
  /** Positions whose KV is computed: [0, numComputed). */
  readonly numComputed: number;
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

/** The prefix-index key of sliding group `group`'s block (its full-layer twin is indexed under `hash`). */
function slidingKey(hash: string, group: number): string {
  return `w${group}:${hash}`;
}

/**
 * Blocks one sequence of `contextSize` positions may hold at once: its full table, plus,
 * with sliding layers kept apart (`window` > 0), the sliding blocks a chunk of up to
 * `maxChunkTokens` positions and the window before it span, in each of `slidingGroups`.
 */
export function blocksPerSequence(contextSize: number, blockTokens: number, window: number, maxChunkTokens: number, slidingGroups = 1): number {
  const full = Math.ceil(contextSize / blockTokens);
  if (window <= 0) return full;
  return full + slidingGroups * Math.min(full, Math.ceil((window - 1 + maxChunkTokens) / blockTokens) + 1);
}

/** Sliding-layer groups at most (native/core/kv_pool.cpp's kMaxSlidingGroups). */
const MAX_SLIDING_GROUPS = 8;

/**
 * How the KV blocks hold the layers (native/core/kv_pool.cpp, KvLayout::make, by the same
 * rule). With slidingKv 'window' and sliding-window layers that see less than the context,
 * those layers get blocks of their own (freed behind the window): a block has a slot per
 * full layer and the sliding layers fill as many groups of that size as they need (at most
 * MAX_SLIDING_GROUPS); with no more sliding layers than full ones, one group. Otherwise every
 * layer in one group.
 */
export function kvGroups(
  hp: Pick<ModelHyperparams, 'nLayer' | 'slidingWindow' | 'slidingWindowPeriod'>,
  slidingKv: 'window' | 'full',
  contextSize: number,
): { slidingWindow: number; layersPerBlock: number; slidingGroups: number } {
  const period = hp.slidingWindowPeriod;
  const whole = { slidingWindow: 0, layersPerBlock: hp.nLayer, slidingGroups: 0 };
  if (slidingKv === 'full' || !(hp.slidingWindow > 0 && period > 0) || hp.slidingWindow >= contextSize) return whole;
  let sliding = 0;
  for (let l = 0; l < hp.nLayer; l++) if (l % period < period - 1) sliding++;
  if (sliding === 0) return whole;
  const full = hp.nLayer - sliding;
  const slots = full > 0 && full < sliding ? Math.max(full, Math.ceil(sliding / MAX_SLIDING_GROUPS)) : Math.max(full, sliding);
  return { slidingWindow: hp.slidingWindow, layersPerBlock: slots, slidingGroups: Math.ceil(sliding / slots) };
}


/**
 * How KV is sized for sequences of `contextSize` positions (kvGroups' layout): the bytes of a
 * block and the blocks one sequence may hold at once, with the sliding layers' KV kept apart or
 * not. loadModel sizes its pools by it, inspect reports it.
 */
export function kvSizing(
  hp: Pick<ModelHyperparams, 'nLayer' | 'slidingWindow' | 'slidingWindowPeriod'>,
  kvBytesPerToken: number,
  contextSize: number,
  options: { slidingKv: 'window' | 'full'; blockTokens: number; maxChunkTokens: number },
): { slidingWindow: number; slidingGroups: number; blockBytes: number; blocksPerSequence: number } {
  const kv = kvGroups(hp, options.slidingKv, contextSize);
  return {
    slidingWindow: kv.slidingWindow,
    slidingGroups: kv.slidingGroups,
    blockBytes: (kvBytesPerToken / hp.nLayer) * kv.layersPerBlock * options.blockTokens,
    blocksPerSequence: blocksPerSequence(contextSize, options.blockTokens, kv.slidingWindow, options.maxChunkTokens, kv.slidingGroups),
  };
}

export class KvBlockManager {
  /** Tokens per block. */
  readonly blockTokens: number;
  readonly pools: Readonly<Record<KvTier, BlockPool>>;
  /** Whether full blocks are indexed and shared. */
  readonly prefixCaching: boolean;
  /** Blocks copied into each tier by move(), since the manager was made. */
  readonly numBlocksMovedTo: Record<KvTier, number> = { device: 0, host: 0 };
  /** > 0: sliding layers are kept apart and see this many positions (each sequence has a sliding table). */
  readonly slidingWindow: number;
  /** Layer groups the sliding layers fill (blocks per block index in a sliding table); 0 without a window. */
  readonly slidingGroups: number;

  constructor(blockTokens: number, numBlocks: { device: number; host: number }, prefixCaching = true, slidingWindow = 0, slidingGroups = 1) {
    this.blockTokens = blockTokens;
    this.pools = { device: new BlockPool('device', numBlocks.device), host: new BlockPool('host', numBlocks.host) };
    this.prefixCaching = prefixCaching;
    this.slidingWindow = slidingWindow;
    if (slidingWindow > 0 && !(Number.isInteger(slidingGroups) && slidingGroups >= 1)) {
      throw new TandemError('TDM_BAD_ARGUMENT', `slidingGroups must be a positive integer, got ${slidingGroups}`);
    }
    this.slidingGroups = slidingWindow > 0 ? slidingGroups : 0;
  }

  /** Blocks needed to hold `numTokens` positions (in one table). */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockTokens);
  }

  /** Blocks per block index of a sequence: the full table's, and one per sliding group. */
  get tablesPerSequence(): number {
    return 1 + this.slidingGroups;
  }

  /** The first sliding-table entry a computation starting at position `pos` reads (earlier ones can go). */
  slidingFirst(pos: number): number {
    return Math.floor(Math.max(0, pos - this.slidingWindow + 1) / this.blockTokens);
  }

  /**
   * Blocks `owner` holds once its tables cover `numTokens` positions and its sliding table
   * is trimmed to the window of its next position (what a move copies, plus growth).
   */
  heldBlocks(owner: KvOwner, numTokens: number): number {
    const n = Math.max(owner.blockTable.length, this.blocksFor(numTokens));
    if (this.slidingWindow <= 0) return n;
    const G = this.slidingGroups;
    let sliding = 0;
    const first = this.slidingFirst(owner.numComputed);
    // A block index's sliding blocks are taken and freed together.
    for (let i = first; i < n; i++) if (i * G >= owner.slidingTable.length || owner.slidingTable[i * G]! >= 0) sliding += G;
    return n + sliding;
  }

  /** Blocks `owner` holds now, over both its tables. */
  numHeld(owner: KvOwner): number {
    let n = owner.blockTable.length;
    for (const id of owner.slidingTable) if (id >= 0) n++;
    return n;
  }

  /** The cached sliding blocks a sequence starting at block `numHits` reads (slidingGroups per block index), or undefined when one is missing. */
  private slidingHits(owner: KvOwner, pool: BlockPool, numHits: number): number[] | undefined {
    const ids: number[] = [];
    for (let i = this.slidingFirst(numHits * this.blockTokens); i < numHits; i++) {
      for (let j = 0; j < this.slidingGroups; j++) {
        const id = pool.lookup(slidingKey(owner.blockHashes[i]!, j));
        if (id === undefined) return undefined;
        ids.push(id);
      }
    }
    return ids;
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
    // With sliding layers apart, a hit is usable only up to where the window before it is cached too.
    if (this.slidingWindow > 0) while (hits.length > 0 && !this.slidingHits(owner, pool, hits.length)) hits.pop();
    return hits;
  }

  /** Free blocks `tier` would use up to place `owner` there with `hits` (from matchPrefix) covering `numTokens` positions. */
  placementCost(tier: KvTier, hits: readonly number[], numTokens: number, owner?: KvOwner): number {
    const pool = this.pools[tier];
    if (this.slidingWindow > 0 && !owner) throw new TandemError('TDM_INTERNAL', 'placementCost() with sliding tables needs the owner');
    const fresh = Math.max(0, this.blocksFor(numTokens) - hits.length) * this.tablesPerSequence;
    const reused = [...hits, ...(owner && this.slidingWindow > 0 ? this.slidingHits(owner, pool, hits.length)! : [])];
    // An unreferenced hit is counted as free, so taking it uses up free space too.
    return fresh + reused.filter((id) => pool.refCount(id) === 0).length;
  }

  /**
   * Gives an owner with no blocks a table in `tier`: the prefix hits, then fresh blocks up
   * to `numTokens` positions. False (and no change) when the tier is short.
   */
  place(owner: KvOwner, tier: KvTier, hits: readonly number[], numTokens: number): boolean {
    if (owner.blockTable.length > 0) throw new TandemError('TDM_INTERNAL', 'place() on a sequence that holds blocks');
    const pool = this.pools[tier];
    if (pool.numFree < this.placementCost(tier, hits, numTokens, owner)) return false;
    const slidingHits = this.slidingWindow > 0 ? this.slidingHits(owner, pool, hits.length)! : [];
    for (const id of [...hits, ...slidingHits]) pool.acquire(id);
    const numFresh = Math.max(0, this.blocksFor(numTokens) - hits.length);
    const fresh = pool.allocate(numFresh * this.tablesPerSequence)!;
    owner.kvTier = tier;
    owner.blockTable = [...hits, ...fresh.slice(0, numFresh)];
    owner.slidingTable = [];
    if (this.slidingWindow > 0) {
      const holes = hits.length * this.slidingGroups - slidingHits.length;
      owner.slidingTable = [...new Array<number>(holes).fill(-1), ...slidingHits, ...fresh.slice(numFresh)];
    }
    owner.numIndexed = hits.length;
    return true;
  }

  /** Frees `owner`'s sliding blocks behind the window of its next position (they are never read again). */
  trimWindow(owner: KvOwner): void {
    if (this.slidingWindow <= 0 || !owner.kvTier) return;
    const gone: number[] = [];
    const G = this.slidingGroups;
    const first = Math.min(this.slidingFirst(owner.numComputed), owner.slidingTable.length / G);
    for (let i = first - 1; i >= 0 && owner.slidingTable[i * G]! >= 0; i--) {
      for (let j = G - 1; j >= 0; j--) {
        gone.push(owner.slidingTable[i * G + j]!);
        owner.slidingTable[i * G + j] = -1;
      }
    }
    // Newest first, so that the oldest cached ones are evicted first.
    this.pools[owner.kvTier].release(gone.reverse());
  }

  /** Grows `owner`'s table in its tier to cover `numTokens` positions; false (and no change) when the tier is short. */
  grow(owner: KvOwner, numTokens: number): boolean {
    if (!owner.kvTier) throw new TandemError('TDM_INTERNAL', 'grow() on a sequence with no tier');
    this.trimWindow(owner);
    const extra = this.blocksFor(numTokens) - owner.blockTable.length;
    if (extra <= 0) return true;
    const ids = this.pools[owner.kvTier].allocate(extra * this.tablesPerSequence);
    if (!ids) return false;
    owner.blockTable.push(...ids.slice(0, extra));
    if (this.slidingWindow > 0) owner.slidingTable.push(...ids.slice(extra));
    return true;
  }

  /** `owner`'s blocks in both tables, tail first (so the shared head of a prefix is evicted last). */
  private heldTailFirst(owner: KvOwner): number[] {
    const ids: number[] = [];
    const G = this.slidingGroups;
    for (let i = owner.blockTable.length - 1; i >= 0; i--) {
      for (let j = G - 1; j >= 0; j--) {
        const sliding = owner.slidingTable[i * G + j];
        if (sliding !== undefined && sliding >= 0) ids.push(sliding);
      }
      ids.push(owner.blockTable[i]!);
    }
    return ids;
  }

  /** Drops `owner`'s hold on its blocks, tail first (so the shared head of a prefix is evicted last). */
  release(owner: KvOwner): void {
    if (owner.kvTier && owner.blockTable.length > 0) this.pools[owner.kvTier].release(this.heldTailFirst(owner));
    owner.blockTable = [];
    owner.slidingTable = [];
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
    for (let i = owner.numIndexed; i < full; i++) {
      pool.insert(owner.blockTable[i]!, owner.blockHashes[i]!);
      for (let j = 0; j < this.slidingGroups; j++) {
        const sliding = owner.slidingTable[i * this.slidingGroups + j];
        if (sliding !== undefined && sliding >= 0) pool.insert(sliding, slidingKey(owner.blockHashes[i]!, j));
      }
    }
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
    this.trimWindow(owner);
    const live = owner.slidingTable.filter((id) => id >= 0);
    const ids = this.pools[toTier].allocate(owner.blockTable.length + live.length);
    if (!ids) return undefined;
    const from = [...owner.blockTable, ...live];
    const copies = from.map((fromBlock, i) => ({ fromTier, fromBlock, toTier, toBlock: ids[i]! }));
    this.pools[fromTier].release(this.heldTailFirst(owner));
    let next = owner.blockTable.length;
    owner.slidingTable = owner.slidingTable.map((id) => (id >= 0 ? ids[next++]! : -1));
    owner.blockTable = ids.slice(0, owner.blockTable.length);
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
      for (const id of owner.slidingTable) if (id >= 0) expected[owner.kvTier][id]++;
    }
    for (const tier of TIERS) this.pools[tier].audit(expected[tier]);
  }
}
