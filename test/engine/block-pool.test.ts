// The KV block pool and the two-tier block manager without a scheduler: reference counts,
// the prefix index and its eviction order, moves between tiers, the audit, and the
// memory budget that sizes the pools.
import t from 'tap';
import { BlockPool, KvBlockManager, planKvBudget, type KvOwner } from '../../src/engine/index.js';
import { blocksPerSequence } from '../../src/engine/kv-blocks.js';

type TestOwner = KvOwner & { numComputed: number };

function owner(tokens: number[]): TestOwner {
  return { blockTable: [], slidingTable: [], numComputed: 0, kvTier: undefined, numIndexed: 0, blockHashes: [], tokens };
}

t.test('a pool counts holders; a block is free only when the last lets go', async (t) => {
  const pool = new BlockPool('host', 4);
  const ids = pool.allocate(3)!;
  t.equal(pool.numFree, 1);
  t.equal(pool.allocate(2), undefined, 'all or nothing');
  t.equal(pool.numFree, 1, 'a refused allocation takes nothing');
  t.ok(pool.insert(ids[0]!, 'h0'));
  pool.acquire(ids[0]!);
  t.equal(pool.refCount(ids[0]!), 2);
  pool.release([ids[0]!]);
  t.equal(pool.numFree, 1, 'still held once');
  pool.release([ids[0]!]);
  t.equal(pool.numFree, 2, 'unreferenced and cached: free to allocate');
  t.equal(pool.numEvictable, 1);
  t.equal(pool.lookup('h0'), ids[0], 'but still findable');
  t.throws(() => pool.release([ids[0]!]), { code: 'TDM_INTERNAL' }, 'a double free is an internal error');
  t.throws(() => pool.release([9]), { code: 'TDM_INTERNAL' });
  t.throws(() => pool.acquire(ids[1]!), { code: 'TDM_INTERNAL' }, 'only indexed blocks are acquired');
  t.notOk(pool.insert(ids[1]!, 'h0'), 'one block per hash: a duplicate stays out of the index');
});

t.test('plain free blocks go before cached ones; cached ones are evicted least recently freed first', async (t) => {
  const pool = new BlockPool('device', 4);
  const [a, b, c, d] = pool.allocate(4)!;
  pool.insert(a!, 'A');
  pool.insert(b!, 'B');
  pool.insert(c!, 'C');
  pool.release([c!, a!, b!, d!]);
  t.equal(pool.numFree, 4);
  t.same(pool.allocate(1), [d], 'the uncached block first');
  t.same(pool.allocate(1), [c], 'then the least recently freed cached block');
  t.equal(pool.lookup('C'), undefined, 'evicted from the index');
  t.equal(pool.lookup('A'), a);
  t.equal(pool.numEvictions, 1);
  pool.acquire(a!);
  t.same(pool.allocate(1), [b], 'a re-acquired block is not evictable');
  t.equal(pool.allocate(1), undefined);
});

t.test('the block manager shares full blocks of a common prefix and frees a table tail first', async (t) => {
  const kv = new KvBlockManager(4, { device: 8, host: 0 });
  const a = owner([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  t.ok(kv.place(a, 'device', [], 10));
  t.equal(a.blockTable.length, 3);
  kv.indexComputed(a, 10);
  t.equal(a.numIndexed, 2, 'only full blocks are indexed');
  t.equal(kv.numCached, 2);

  const b = owner([1, 2, 3, 4, 5, 6, 7, 8, 99, 98, 97]);
  const hits = kv.matchPrefix(b, 'device', 10);
  t.same(hits, a.blockTable.slice(0, 2), 'the two shared blocks');
  t.same(kv.matchPrefix(owner([1, 2, 3, 4, 0, 6, 7, 8]), 'device', 10), [a.blockTable[0]], 'a chain stops at the first differing block');
  t.same(kv.matchPrefix(owner([5, 6, 7, 8]), 'device', 10), [], 'keys are chained: the same block after another prefix misses');
  t.equal(kv.placementCost('device', hits, 11), 1, 'referenced hits cost nothing');
  t.ok(kv.place(b, 'device', hits, 11));
  kv.audit([a, b]);
  t.equal(kv.pools.device.refCount(hits[0]!), 2);

  kv.release(a);
  kv.audit([b]);
  kv.release(b);
  kv.audit([]);
  t.equal(kv.numFree, 8, 'everything free; the shared blocks stay cached');
  t.equal(kv.pools.device.numEvictable, 2);

  const none = new KvBlockManager(4, { device: 8, host: 0 }, false);
  const c = owner([1, 2, 3, 4, 5]);
  none.place(c, 'device', [], 5);
  none.indexComputed(c, 5);
  t.same(none.matchPrefix(owner([1, 2, 3, 4, 5]), 'device', 4), [], 'prefix caching off: nothing is shared');
});

t.test('a move copies a whole table into the other tier and re-indexes it after the copies', async (t) => {
  const kv = new KvBlockManager(4, { device: 4, host: 4 });
  const a = owner([1, 2, 3, 4, 5, 6]);
  kv.place(a, 'device', [], 6);
  kv.indexComputed(a, 6);
  const old = [...a.blockTable];
  const copies = kv.move(a, 'host')!;
  t.same(copies.map((c) => [c.fromTier, c.fromBlock, c.toTier]), old.map((b) => ['device', b, 'host']));
  t.same(copies.map((c) => c.toBlock), a.blockTable);
  t.equal(a.kvTier, 'host');
  t.equal(a.numIndexed, 0, 'the new blocks join the index only once the copies have run');
  t.equal(kv.pools.device.numFree, 4);
  kv.indexComputed(a, 6);
  t.same(kv.matchPrefix(owner([1, 2, 3, 4, 0]), 'host', 4), [a.blockTable[0]]);
  t.equal(kv.numBlocksMovedTo.host, 2);
  const big = owner(Array.from({ length: 20 }, (_, i) => i));
  kv.place(big, 'device', [], 16);
  t.equal(kv.move(big, 'host'), undefined, 'no room: no move, no change');
  t.equal(big.kvTier, 'device');
  kv.audit([a, big]);
  t.throws(() => kv.audit([a]), { code: 'TDM_INTERNAL' }, 'a table the audit is not told about is a leak');
});

t.test('the KV budget: bytes or a fraction of free memory, split over the tiers', async (t) => {
  const base = { blockBytes: 1000, blockTokens: 16, contextSize: 256, freeBytes: 1e6, defaultBytes: 64_000, deviceFraction: 0 };
  t.same(planKvBudget(base), { bytes: 64_000, numBlocks: { device: 0, host: 64 } }, 'the default');
  t.same(planKvBudget({ ...base, bytes: 100_500 }).numBlocks, { device: 0, host: 100 }, 'whole blocks');
  t.same(planKvBudget({ ...base, fraction: 0.5 }).numBlocks, { device: 0, host: 500 }, 'half of what is free');
  t.same(planKvBudget({ ...base, bytes: 100_000, fraction: 0.5 }).numBlocks.host, 100, 'bytes win over a fraction');
  t.same(planKvBudget({ ...base, bytes: 100_000, deviceFraction: 0.25 }).numBlocks, { device: 25, host: 75 });
  t.throws(() => planKvBudget({ ...base, bytes: 15_000 }), { code: 'TDM_BAD_ARGUMENT', message: /15 KV blocks.*needs 16/ });
  t.throws(() => planKvBudget({ ...base, fraction: 0.01 }), { code: 'TDM_OOM', message: /kvCacheFraction 0.01/ });
  t.throws(() => planKvBudget({ ...base, bytes: 100_000, deviceFraction: 0.5, deviceOnly: true, contextSize: 1024 }), { code: 'TDM_BAD_ARGUMENT' },
    'a device-only strategy needs the device tier to hold a full context');
});

t.test('sliding tables: blocks behind the window are freed, and stay findable for a later prefix', async (t) => {
  // Blocks of 4 positions, a window of 6: computing from position p reads from p - 5.
  const kv = new KvBlockManager(4, { device: 0, host: 32 }, true, 6);
  t.equal(kv.tablesPerSequence, 2);
  const tokens = Array.from({ length: 30 }, (_, i) => 100 + i);
  const a = owner(tokens);
  t.ok(kv.place(a, 'host', [], 8));
  t.equal(a.blockTable.length, 2);
  t.equal(a.slidingTable.length, 2, 'a sliding block beside every full one');
  t.equal(kv.pools.host.numFree, 28);
  a.numComputed = 8;
  kv.indexComputed(a, 8);
  t.equal(kv.pools.host.numCached, 4, 'both groups\' full blocks are indexed');
  // Computing [8, 20) reads from position 3: block 0 of the sliding table is still needed.
  t.ok(kv.grow(a, 20));
  t.same(a.slidingTable.map((id) => id >= 0), [true, true, true, true, true]);
  a.numComputed = 20;
  kv.indexComputed(a, 20);
  // Decoding position 20 reads from 15: sliding blocks 0 to 2 go.
  t.ok(kv.grow(a, 21));
  t.same(a.slidingTable.map((id) => id >= 0), [false, false, false, true, true, true]);
  t.equal(a.blockTable.length, 6, 'the full table keeps every block');
  t.equal(kv.heldBlocks(a, 21), 9);
  t.equal(kv.pools.host.numFree, 32 - 9, 'the freed sliding blocks are free again');
  t.equal(kv.pools.host.numEvictable, 3, 'and still in the prefix index');
  kv.audit([a]);

  // A prompt sharing 20 tokens: its last hit must leave the window before it cached.
  const b = owner([...tokens.slice(0, 20), 7, 7, 7]);
  const hits = kv.matchPrefix(b, 'host', 5);
  t.same(hits, a.blockTable.slice(0, 5), 'five full blocks, and sliding blocks 3 and 4 for the window of position 20');
  t.equal(kv.placementCost('host', hits, 23, b), 2, 'one fresh block per table; the referenced hits cost nothing');
  t.ok(kv.place(b, 'host', hits, 23));
  t.same(b.slidingTable.slice(0, 3), [-1, -1, -1], 'nothing before the window');
  t.same(b.slidingTable.slice(3, 5), a.slidingTable.slice(3, 5), 'the window\'s sliding blocks are shared');
  kv.audit([a, b]);

  // Once the cached sliding blocks are evicted, the longest usable hit shrinks.
  kv.release(b);
  kv.release(a);
  kv.audit([]);
  t.equal(kv.numFree, 32);
  const hog = owner(Array.from({ length: 80 }, (_, i) => 900 + i));
  t.ok(kv.place(hog, 'host', [], 4 * 14), 'takes the free blocks, then the least recently freed cached ones');
  const c = owner([...tokens.slice(0, 20), 5]);
  const left = kv.matchPrefix(c, 'host', 5);
  t.ok(left.length < 5, `a hit whose window was evicted is cut back (to ${left.length} blocks)`);
  kv.release(hog);
});

t.test('sliding tables move between tiers with their live blocks only', async (t) => {
  const kv = new KvBlockManager(4, { device: 16, host: 16 }, true, 6);
  const a = owner(Array.from({ length: 24 }, (_, i) => i));
  kv.place(a, 'device', [], 24);
  a.numComputed = 24;
  kv.indexComputed(a, 24);
  const live = a.slidingTable.slice(kv.slidingFirst(24));
  const copies = kv.move(a, 'host')!;
  t.equal(copies.length, 6 + live.length, 'the full table and the window\'s sliding blocks');
  t.same(copies.slice(6).map((c) => c.fromBlock), live);
  t.same(a.slidingTable.slice(0, kv.slidingFirst(24)), new Array(kv.slidingFirst(24)).fill(-1), 'the trimmed part stays empty');
  t.same(copies.slice(6).map((c) => c.toBlock), a.slidingTable.slice(kv.slidingFirst(24)));
  t.equal(kv.pools.device.numFree, 16);
  kv.audit([a]);
  kv.release(a);
  kv.audit([]);
  t.throws(() => kv.placementCost('host', [], 4), { code: 'TDM_INTERNAL' }, 'with sliding tables the cost depends on the owner');
});

t.test('three sliding groups: a block index takes one block in each, freed, indexed, shared and moved together', async (t) => {
  const G = 3;
  const kv = new KvBlockManager(4, { device: 64, host: 64 }, true, 6, G);
  t.equal(kv.tablesPerSequence, 4);
  const tokens = Array.from({ length: 30 }, (_, i) => 100 + i);
  const a = owner(tokens);
  t.ok(kv.place(a, 'host', [], 8));
  t.equal(a.slidingTable.length, 2 * G, 'three sliding blocks beside every full one');
  t.equal(kv.pools.host.numFree, 64 - 8);
  a.numComputed = 8;
  t.ok(kv.grow(a, 20));
  a.numComputed = 20;
  kv.indexComputed(a, 20);
  t.equal(kv.pools.host.numCached, 5 * 4, 'every group\'s full blocks are indexed');
  // Decoding position 20 reads from 15: block indices 0 to 2 go in every group.
  t.ok(kv.grow(a, 21));
  t.same(a.slidingTable.map((id) => id >= 0), [...new Array(3 * G).fill(false), ...new Array(3 * G).fill(true)]);
  t.equal(kv.heldBlocks(a, 21), 6 + 3 * G);
  t.equal(kv.numHeld(a), 6 + 3 * G);
  kv.audit([a]);
  const b = owner([...tokens.slice(0, 20), 7, 7, 7]);
  const hits = kv.matchPrefix(b, 'host', 5);
  t.same(hits, a.blockTable.slice(0, 5));
  t.equal(kv.placementCost('host', hits, 23, b), 1 + G, 'one fresh block per table');
  t.ok(kv.place(b, 'host', hits, 23));
  t.same(b.slidingTable.slice(0, 3 * G), new Array(3 * G).fill(-1), 'nothing before the window');
  t.same(b.slidingTable.slice(3 * G, 5 * G), a.slidingTable.slice(3 * G, 5 * G), 'the window\'s blocks are shared in every group');
  kv.audit([a, b]);
  const copies = kv.move(b, 'device')!;
  t.equal(copies.length, 6 + 3 * G, 'a move copies the full table and each group\'s live blocks');
  t.same(b.slidingTable.slice(0, 3 * G), new Array(3 * G).fill(-1));
  kv.audit([a, b]);
  kv.release(a);
  kv.release(b);
  kv.audit([]);
  t.equal(kv.numFree, 128);
  t.throws(() => new KvBlockManager(4, { device: 0, host: 8 }, true, 6, 0), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('blocks per sequence: the full table, plus the window and a chunk for the sliding table', async (t) => {
  t.equal(blocksPerSequence(256, 16, 128, 64, 5), 16 + 5 * 13, 'each of five sliding groups');
  t.equal(blocksPerSequence(256, 16, 0, 64), 16);
  t.equal(blocksPerSequence(256, 16, 128, 64), 16 + 13, 'ceil((127 + 64) / 16) + 1');
  t.equal(blocksPerSequence(64, 16, 128, 64), 8, 'never more than the full table twice');
  const base = { blockBytes: 1000, blockTokens: 16, contextSize: 256, freeBytes: 1e6, defaultBytes: 64_000, deviceFraction: 0 };
  t.throws(() => planKvBudget({ ...base, bytes: 20_000, blocksPerSequence: 29 }), { code: 'TDM_BAD_ARGUMENT', message: /needs 29/ });
});
