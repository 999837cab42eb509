// Batching must not change results: on the real addon, each of 64 mixed-length requests
// decoded together gives the same greedy tokens as decoded alone, and so do requests that
// share prefix blocks, move between tiers by block copies and are recomputed after
// preemption. Bit-exact, because every kernel computes a token's row the same way whatever
// the batch (a sequence's attention reads only its own blocks; matmul rows are per token).
import t, { type Test } from 'tap';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadModel, type LoadModelOptions, type Model } from '../../src/api/index.js';
import { makeModel } from '../../src/model/synthetic.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const NEW_TOKENS = 24;

/** 64 prompts of 1 to 120 tokens cut from one story at different places (BOS first). */
function prompts(model: Model, count: number): number[][] {
  const story = model.tokenize(
    'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. ' +
      'She wanted to play with it, but it was too high. Lily\'s mom said she could have it if she shared it with her friend Tom. ' +
      'Tom was a kind boy who liked to run and jump. They played all day until the sun went down and the sky turned orange and pink. ' +
      'Then they went home, ate soup with bread, and dreamed of the big red ball and of the tall tree in the park.',
  );
  const bos = story[0]!;
  const body = story.slice(1);
  return Array.from({ length: count }, (_, i) => {
    const len = 1 + ((i * 37) % 120);
    const from = (i * 13) % Math.max(1, body.length - len);
    return [bos, ...body.slice(from, from + len)].slice(0, len);
  });
}

async function greedy(model: Model, prompt: number[]): Promise<number[]> {
  return (await model.generate(prompt, { temperature: 0, maxTokens: NEW_TOKENS, ignoreEos: true }).result).tokens;
}

async function alone(model: Model, list: number[][]): Promise<number[][]> {
  const out: number[][] = [];
  for (const p of list) out.push(await greedy(model, p));
  return out;
}

function firstMismatch(a: number[][], b: number[][]): string | undefined {
  for (let i = 0; i < a.length; i++) {
    const k = a[i]!.findIndex((tok, j) => tok !== b[i]![j]);
    if (k >= 0 || a[i]!.length !== b[i]!.length) return `request ${i} parts at token ${k}`;
  }
  return undefined;
}

async function check(t: Test, file: string, what: string, options: LoadModelOptions, countOf = 64, referenceOptions: LoadModelOptions = {}) {
  const reference = await loadModel(file, { threads: 1, contextSize: 160, maxSequences: 1, prefixCaching: false, ...referenceOptions });
  const list = prompts(reference, countOf);
  const expected = await alone(reference, list);
  await reference.dispose();

  const model = await loadModel(file, { threads: 1, contextSize: 160, ...options });
  const before = model.stats.numSteps;
  const batched = await Promise.all(list.map((p) => greedy(model, p)));
  const stats = model.stats;
  t.comment(
    `${what}: ${stats.numSteps - before} steps for ${countOf} requests of ${NEW_TOKENS} tokens; ${stats.numCachedTokens} cached prompt tokens, ` +
      `${stats.numMoves} moves (${stats.kvTiers.host.numBlocksMovedIn} blocks to host, ${stats.kvTiers.device.numBlocksMovedIn} to device), ${stats.numPreemptions} recomputes`,
  );
  t.equal(firstMismatch(batched, expected), undefined, `${what}: every request's tokens equal its tokens decoded alone`);
  t.equal(stats.numFreeKvBlocks, stats.numKvBlocks, `${what}: every block free at the end`);
  await model.dispose();
  return stats;
}

t.test('stories260K: 64 mixed-length requests in one batch give the tokens each gives alone', async (t) => {
  const stats = await check(t, STORIES, 'batch of 64', { maxSequences: 64, prefixCaching: false });
  t.ok(stats.numSteps < 64 * NEW_TOKENS / 4, 'the requests shared steps');
});

t.test('stories260K: the same under memory pressure, with prefix sharing, moves between tiers and recompute', async (t) => {
  // About 40 KB per 16-token block: 90 blocks over two tiers cannot hold 32 growing sequences.
  const probe = await loadModel(STORIES, { threads: 1, contextSize: 160, maxSequences: 1 });
  const blockBytes = probe.info.kvBlockBytes;
  await probe.dispose();
  const stats = await check(t, STORIES, 'tight two-tier cache', {
    maxSequences: 32,
    kvCacheBytes: 90 * blockBytes,
    kvDeviceFraction: 0.4,
    prefixCaching: true,
  });
  t.ok(stats.numMoves > 0, 'tables moved between tiers');
  t.ok(stats.kvTiers.device.numBlocksMovedIn > 0 && stats.kvTiers.host.numBlocksMovedIn > 0, 'in both directions');
  t.ok(stats.numCachedTokens > 0, 'prefix blocks were shared');
  t.ok(stats.numPreemptions > 0, 'some requests were recomputed');
});

t.test('a quantized synthetic model (q4_K_M): batched equals alone', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-batch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'tiny-q4km.gguf');
  await makeModel({ type: 'q4_K_M', seed: 11, vocab: STORIES }, file);
  await check(t, file, 'q4_K_M batch of 16', { maxSequences: 16, prefixCaching: false }, 16);
});

/** 32 requests through a two-tier cache of kvCacheBytes with sliding KV kept apart, against
 * each alone with every position kept: tables must have moved, prefixes been shared and
 * requests recomputed, so that every path ran. */
async function squeezed(t: Test, file: string, label: string, kvCacheBytes: number): Promise<void> {
  const stats = await check(t, file, label, {
    maxSequences: 16,
    prefillChunkTokens: 24,
    kvCacheBytes,
    kvDeviceFraction: 0.4,
    prefixCaching: true,
  }, 32, { slidingKv: 'full' });
  t.ok(stats.numMoves > 0, 'tables moved between tiers');
  t.ok(stats.numCachedTokens > 0, 'prefix blocks were shared');
  t.ok(stats.numPreemptions > 0, 'some requests were recomputed');
}

t.test('gpt-oss with its sliding layers in blocks of their own: batched, squeezed and shared equals alone with every position kept', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-batch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'tiny-oss.gguf');
  // A window of 8 over prompts of up to 120 tokens: most sliding blocks fall behind it.
  await makeModel({ architecture: 'gpt-oss', slidingWindow: 8, seed: 12, vocab: STORIES }, file);
  const probe = await loadModel(file, { threads: 1, contextSize: 160, maxSequences: 1 });
  t.equal(probe.info.kvSlidingWindow, 8, 'the sliding layers are kept apart by default');
  const blockBytes = probe.info.kvBlockBytes;
  await probe.dispose();
  const full = await loadModel(file, { threads: 1, contextSize: 160, maxSequences: 1, slidingKv: 'full' });
  t.equal(full.info.kvSlidingWindow, 0);
  t.equal(full.info.kvBlockBytes, 2 * blockBytes, "slidingKv 'full': one block holds both groups' layers");
  await full.dispose();
  await squeezed(t, file, 'gpt-oss sliding blocks, tight two-tier cache', 80 * blockBytes);
});

t.test('gemma3 with its sliding layers in five groups of their own: batched, squeezed and shared equals alone with every position kept', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-batch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'tiny-gemma3.gguf');
  // Twelve layers (2 global, 10 sliding in 5 groups), a window of 8 over prompts of up to 120 tokens.
  await makeModel({ architecture: 'gemma3', nLayer: 12, nEmbd: 128, nFf: 256, nHead: 2, nHeadKv: 1, headDim: 64, slidingWindow: 8, tiedEmbeddings: true, seed: 13, vocab: STORIES }, file);
  const probe = await loadModel(file, { threads: 1, contextSize: 160, maxSequences: 1 });
  const blockBytes = probe.info.kvBlockBytes;
  await probe.dispose();
  await squeezed(t, file, 'gemma3 sliding groups, tight two-tier cache', 120 * blockBytes);
});
