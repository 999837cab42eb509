// Sliding-window layers in KV blocks of their own (kvSplitSliding): the executor reads a
// second block table for them, whose entries behind the window may be freed (-1) and their
// blocks reused; results stay bit-identical to keeping every layer in one table. Through the
// API, the same memory then holds more of a long sequence.
import t, { type Test } from 'tap';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { native, type NativeModel } from '../../src/native/binding.js';
import type { SequencePlan, StepPlan } from '../../src/native/step-plan.js';
import { makeModel } from '../../src/model/synthetic.js';
import { loadModel } from '../../src/api/index.js';
import { kvGroups } from '../../src/engine/kv-blocks.js';
import { hparamsOf, modelPath } from '../helpers.js';

const BT = 4;
const WINDOW = 6;

async function ossModel(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-sliding-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'oss.gguf');
  await makeModel({ architecture: 'gpt-oss', slidingWindow: WINDOW, seed: 21 }, file);
  return file;
}

function load(file: string, split: boolean, blocks = 64): Promise<NativeModel> {
  return native().loadModel(file, { hparams: hparamsOf(file), threads: 2, kvBlockTokens: BT, kvBlocks: { device: 0, host: blocks }, kvSplitSliding: split });
}

function step(tokens: number[], startPos: number, blockTable: number[], sliding?: number[]): StepPlan {
  const s: SequencePlan = {
    seqId: 1,
    tokens: Int32Array.from(tokens),
    startPos,
    blockTable: Int32Array.from(blockTable),
    kvTier: 'host',
    attention: 'cpu',
    sample: false,
    returnAllLogits: true,
  };
  if (sliding) s.slidingBlockTable = Int32Array.from(sliding);
  return { strategy: 'cpu', copies: [], sequences: [s] };
}

t.test('sliding blocks freed behind the window and reused give the logits of one table for every layer', async (t) => {
  const file = await ossModel(t);
  const whole = await load(file, false);
  const split = await load(file, true);
  t.equal(whole.info.kvGroups, 1);
  t.equal(split.info.kvGroups, 2);
  t.equal(split.info.kvBlockBytes * 2, whole.info.kvBlockBytes, 'gpt-oss alternates: each group has half the layers');

  // Chunks of 5, then one token at a time, to position 40.
  const tokens = Array.from({ length: 40 }, (_, i) => 1 + ((i * 37) % 200));
  const chunks: [number, number][] = [[0, 5], [5, 10], [10, 15], [15, 20]];
  for (let p = 20; p < 40; p++) chunks.push([p, p + 1]);
  const full: number[] = [];
  const sliding: number[] = [];
  const spare: number[] = [];  // freed sliding blocks, reused first
  let next = 0;
  let mismatches = 0;
  for (const [a, b] of chunks) {
    while (full.length < Math.ceil(b / BT)) full.push(next++);
    // Free what the window of position a no longer sees, then grow with reused blocks first.
    const first = Math.floor(Math.max(0, a - WINDOW + 1) / BT);
    for (let i = 0; i < first; i++) if (sliding[i]! >= 0) { spare.push(sliding[i]!); sliding[i] = -1; }
    while (sliding.length < Math.ceil(b / BT)) sliding.push(spare.pop() ?? next++);
    const ref = await whole.step(step(tokens.slice(a, b), a, full));
    const got = await split.step(step(tokens.slice(a, b), a, full, sliding));
    const x = ref.sequences[0]!.allLogits!, y = got.sequences[0]!.allLogits!;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) mismatches++;
  }
  t.ok(next - full.length < sliding.length, `freed sliding blocks were reused (${next - full.length} ids for ${sliding.length} blocks of positions)`);
  t.equal(mismatches, 0, 'every logit of every position is bit-identical');
  whole.dispose();
  split.dispose();
});

t.test('sliding tables are checked like block tables', async (t) => {
  const file = await ossModel(t);
  const split = await load(file, true, 8);
  const whole = await load(file, false, 8);
  await t.rejects(whole.step(step([1, 2], 0, [0], [1])), { code: 'TDM_BAD_ARGUMENT', message: /keeps every layer/ });
  await t.rejects(split.step(step([1, 2, 3, 4, 5], 0, [0, 1], [2])), { code: 'TDM_BAD_ARGUMENT', message: /slidingBlockTable has 1 blocks/ });
  await t.rejects(split.step(step([1, 2], 0, [0], [0])), { code: 'TDM_BAD_ARGUMENT', message: /twice/ });
  await t.rejects(split.step(step([1, 2], 0, [0], [8])), { code: 'TDM_BAD_ARGUMENT', message: /outside the host tier's 8 blocks/ });
  // Position 10 sees from 5: block 1 (positions 4..7) must be there, block 0 may be freed.
  await t.rejects(split.step(step([1], 10, [0, 1, 2], [-1, -1, 3])), { code: 'TDM_BAD_ARGUMENT', message: /block id -1/ });
  const ok = await split.step(step([1], 10, [0, 1, 2], [-1, 4, 3]));
  t.equal(ok.sequences.length, 1, 'a freed entry behind the window is not read');
  const two = { strategy: 'cpu', copies: [], sequences: [
    step([1], 10, [0, 1, 2], [-1, 4, 3]).sequences[0]!,
    { ...step([1], 10, [5, 6, 7], [-1, 4, 3]).sequences[0]!, seqId: 2 },
  ] } satisfies StepPlan;
  await t.rejects(split.step(two), { code: 'TDM_BAD_ARGUMENT', message: /also writes|reads KV block/ }, 'a sliding block two sequences write is refused');
  split.dispose();
  whole.dispose();
});

t.test("through the API, slidingKv 'window' holds two long sequences where 'full' holds one", async (t) => {
  const file = await ossModel(t);
  const base = { threads: 1, contextSize: 160, maxSequences: 2, prefillChunkTokens: 16, kvBlockTokens: 16 } as const;
  const probe = await loadModel(file, base);
  const half = probe.info.kvBlockBytes;
  t.equal(probe.info.kvSlidingWindow, WINDOW);
  await probe.dispose();
  // Per sequence of 160: 10 full-group blocks and at most 3 sliding ones (window 6, chunk 16).
  const budget = { ...base, kvCacheBytes: 26 * half, prefixCaching: false };
  const prompt = (k: number) => Array.from({ length: 100 }, (_, i) => 1 + ((i * 13 + k) % 200));
  const run = async (slidingKv: 'window' | 'full') => {
    const m = await loadModel(file, { ...budget, slidingKv });
    const outs = await Promise.all([0, 1].map((k) => m.generate(prompt(k), { temperature: 0, maxTokens: 50, ignoreEos: true }).result));
    const stats = m.stats;
    await m.dispose();
    return { tokens: outs.map((o) => o.tokens), preemptions: stats.numPreemptions, blocks: stats.numKvBlocks };
  };
  const window = await run('window');
  const full = await run('full');
  t.same(window.tokens, full.tokens, 'the same tokens');
  t.equal(window.preemptions, 0, `'window': both fit (${window.blocks} blocks of ${half} bytes)`);
  t.ok(full.preemptions > 0, `'full': the same bytes (${full.blocks} blocks of ${2 * half}) hold one, the other is recomputed (${full.preemptions} times)`);
});

for (const [arch, make] of [['gpt-oss', ossModel], ['gemma3 (five sliding groups)', gemmaModel]] as const) t.test(`${arch}: a q8_0 KV cache in sliding blocks gives the tokens of 'full'`, async (t) => {
  const file = await make(t);
  const prompt = Array.from({ length: 60 }, (_, i) => 1 + ((i * 29) % 200));
  const tokens: number[][] = [];
  for (const slidingKv of ['full', 'window'] as const) {
    const m = await loadModel(file, { threads: 1, contextSize: 128, maxSequences: 1, kvBlockTokens: 4, kvType: 'q8_0', slidingKv });
    tokens.push((await m.generate(prompt, { temperature: 0, maxTokens: 24, ignoreEos: true }).result).tokens);
    await m.dispose();
  }
  t.same(tokens[1], tokens[0]);
});

// gemma3: 2 full and 10 sliding layers in 12. A block has 2 slots and the sliding layers fill
// 5 groups of 2, each with its table, freed behind the window as one.
async function gemmaModel(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-sliding-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'gemma3.gguf');
  await makeModel({ architecture: 'gemma3', nLayer: 12, nEmbd: 128, nFf: 256, nHead: 2, nHeadKv: 1, headDim: 64, slidingWindow: WINDOW, seed: 22 }, file);
  return file;
}

t.test('gemma3: five sliding groups of two layers, each with its own table, give the logits of one table for every layer', async (t) => {
  const file = await gemmaModel(t);
  const whole = await load(file, false, 256);
  const split = await load(file, true, 256);
  t.equal(split.info.kvGroups, 6, 'the full layers and five sliding groups');
  t.equal(split.info.kvBlockBytes * 6, whole.info.kvBlockBytes, 'a block has a slot per full layer: 2 of 12');
  t.same(kvGroups({ nLayer: 12, slidingWindow: WINDOW, slidingWindowPeriod: 6 }, 'window', 64), { slidingWindow: WINDOW, layersPerBlock: 2, slidingGroups: 5 }, 'the API sizes blocks by the same rule');
  const G = 5;
  const tokens = Array.from({ length: 40 }, (_, i) => 1 + ((i * 37) % 200));
  const chunks: [number, number][] = [[0, 5], [5, 10], [10, 15], [15, 20]];
  for (let p = 20; p < 40; p++) chunks.push([p, p + 1]);
  const full: number[] = [];
  const sliding: number[][] = Array.from({ length: G }, () => []);
  const spare: number[] = [];
  let next = 0;
  let mismatches = 0;
  for (const [a, b] of chunks) {
    while (full.length < Math.ceil(b / BT)) full.push(next++);
    const first = Math.floor(Math.max(0, a - WINDOW + 1) / BT);
    for (const table of sliding) {
      for (let i = 0; i < first; i++) if (table[i]! >= 0) { spare.push(table[i]!); table[i] = -1; }
      while (table.length < Math.ceil(b / BT)) table.push(spare.pop() ?? next++);
    }
    const ref = await whole.step(step(tokens.slice(a, b), a, full));
    const got = await split.step(step(tokens.slice(a, b), a, full, sliding.flat()));
    const x = ref.sequences[0]!.allLogits!, y = got.sequences[0]!.allLogits!;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) mismatches++;
  }
  t.equal(mismatches, 0, 'every logit of every position is bit-identical');
  await t.rejects(split.step(step([1, 2], 0, [0], [1, 2, 3, 4])), { code: 'TDM_BAD_ARGUMENT', message: /not one table of equal length for each of the 5/ });
  await t.rejects(split.step(step([1, 2], 0, [0], [1, 2, 3, 4, 1])), { code: 'TDM_BAD_ARGUMENT', message: /twice/ }, 'a block in two groups is refused');
  whole.dispose();
  split.dispose();
});

t.test("gemma3 through the API: 'window' keeps a small share of 'full''s KV and gives its tokens", async (t) => {
  const file = await gemmaModel(t);
  const base = { threads: 1, contextSize: 160, maxSequences: 2, prefillChunkTokens: 16, kvBlockTokens: 16 } as const;
  const probe = await loadModel(file, { ...base, slidingKv: 'full' });
  const fullBlock = probe.info.kvBlockBytes;
  await probe.dispose();
  const probeWindow = await loadModel(file, base);
  t.equal(probeWindow.info.kvBlockBytes * 6, fullBlock, 'blocks of 2 layer slots, not 10');
  await probeWindow.dispose();
  // Per sequence of 160: 10 blocks of 2 full layers, and 5 groups of at most 3 sliding blocks
  // (window 6, chunk 16): 25 small blocks, where 'full' takes 10 of 6 times the size (60).
  const budget = { ...base, kvCacheBytes: 50 * (fullBlock / 6), prefixCaching: false };
  const prompt = (k: number) => Array.from({ length: 100 }, (_, i) => 1 + ((i * 13 + k) % 200));
  const run = async (slidingKv: 'window' | 'full') => {
    const m = await loadModel(file, { ...budget, slidingKv });
    const outs = await Promise.all([0, 1].map((k) => m.generate(prompt(k), { temperature: 0, maxTokens: 50, ignoreEos: true }).result));
    const stats = m.stats;
    await m.dispose();
    return { tokens: outs.map((o) => o.tokens), preemptions: stats.numPreemptions };
  };
  const window = await run('window');
  t.equal(window.preemptions, 0, "'window': both sequences fit in 50 blocks of 2 layer slots (8.3 of 'full''s blocks, where 'full' needs 10 a sequence)");
  const full = await loadModel(file, { ...base, slidingKv: 'full' });
  const want = await Promise.all([0, 1].map((k) => full.generate(prompt(k), { temperature: 0, maxTokens: 50, ignoreEos: true }).result));
  await full.dispose();
  t.same(window.tokens, want.map((o) => o.tokens), "the tokens of 'full'");
});

t.test('models without sliding layers keep one table whatever slidingKv says', async (t) => {
  const m = await loadModel(modelPath('stories260K.gguf'), { threads: 1, contextSize: 64, maxSequences: 1, slidingKv: 'window' });
  t.equal(m.info.kvSlidingWindow, 0);
  await m.dispose();
  await t.rejects(loadModel(modelPath('stories260K.gguf'), { slidingKv: 'ring' as 'full' }), { code: 'TDM_BAD_ARGUMENT', message: /slidingKv/ });
});
