// model.embed() against llama.cpp's embeddings (node-llama-cpp's embedding context, CPU) on
// stories260K and synthetic files of each pooling, and its options, chunking, concurrency with
// generations, and bad input as typed errors.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadModel, type EmbeddingPooling } from '../../src/api/index.js';
import { makeModel, type ModelSpec } from '../../src/model/synthetic.js';
import { modelPath } from '../helpers.js';
import { removeTemp, writeTinyModel } from '../model/gguf-test-writer.js';
import { LlamaRef } from './llama-ref.js';

const TEXTS = ['Once upon a time, there was a little girl named Lily.', 'The cat sat on the mat'];

/**
 * Cosine similarity to llama.cpp's vector, at least. Float files (f32, f16) measured 0.9999998
 * to 1.0000000 (only summation order differs); q8_0 files 0.99995 to 0.99998 (llama.cpp runs a
 * prompt's q8_0 matmuls in another order than its one-token ones, which tandem follows).
 */
const MIN_COSINE = { float: 0.99999, quantized: 0.9999 } as const;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-embed-'));
t.teardown(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  removeTemp();
});

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

const norm = (a: Float32Array): number => Math.sqrt(a.reduce((s, x) => s + x * x, 0));
const maxAbsDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

type Case = { name: string; file: () => Promise<string>; pooling: EmbeddingPooling; float: boolean };
const synthetic = (name: string, spec: ModelSpec) => async (): Promise<string> => {
  const file = path.join(dir, `${name}.gguf`);
  await makeModel({ seed: 7, ...spec }, file);
  return file;
};
const cases: Case[] = [
  { name: 'stories260K (no pooling type: the last token)', file: async () => modelPath('stories260K.gguf'), pooling: 'last', float: true },
  { name: 'llama f16, pooling mean', file: synthetic('llama-mean', { architecture: 'llama', type: 'f16', pooling: 'mean' }), pooling: 'mean', float: true },
  { name: 'qwen3 f16, pooling last (as Qwen3-Embedding)', file: synthetic('qwen3-last', { architecture: 'qwen3', type: 'f16', pooling: 'last' }), pooling: 'last', float: true },
  { name: 'llama q8_0, pooling cls', file: synthetic('llama-cls', { architecture: 'llama', type: 'q8_0', pooling: 'cls' }), pooling: 'cls', float: false },
  { name: 'qwen2 q8_0, pooling mean', file: synthetic('qwen2-mean', { architecture: 'qwen2', type: 'q8_0', pooling: 'mean' }), pooling: 'mean', float: false },
  { name: 'gemma3 f16, tied, pooling mean', file: synthetic('gemma3-mean', { architecture: 'gemma3', type: 'f16', nLayer: 6, slidingWindow: 8, tiedEmbeddings: true, pooling: 'mean' }), pooling: 'mean', float: true },
];

for (const c of cases) {
  t.test(`as llama.cpp embeds: ${c.name}`, async (t) => {
    const file = await c.file();
    const model = await loadModel(file, { threads: 1, contextSize: 256 });
    const ref = await LlamaRef.load(file);
    try {
      t.equal(model.info.pooling, c.pooling, 'the pooling the file names');
      for (const text of TEXTS) {
        const ours = await model.embed(text, { normalize: false });
        const theirs = await ref.embedding(text);
        t.equal(ours.length, model.info.nEmbd);
        t.equal(theirs.length, ours.length);
        const cos = cosine(ours, theirs);
        t.ok(cos >= MIN_COSINE[c.float ? 'float' : 'quantized'], `cosine ${cos.toFixed(7)}, max |diff| ${maxAbsDiff(ours, theirs).toExponential(2)}`);
        t.ok(Math.abs(norm(ours) / norm(theirs) - 1) < 1e-3, 'the same length');
        const unit = await model.embed(text);
        t.ok(Math.abs(norm(unit) - 1) < 1e-6, 'normalized by default');
        t.ok(cosine(unit, ours) > 0.9999999, 'in the same direction');
      }
    } finally {
      await model.dispose();
      await ref.model.dispose();
    }
  });
}

t.test('pooling: cls is the first token alone, last the last, mean their mean; chunked prompts pool alike', async (t) => {
  const file = path.join(dir, 'llama-mean.gguf');
  const whole = await loadModel(file, { threads: 1, contextSize: 256 });
  const chunked = await loadModel(file, { threads: 1, contextSize: 256, prefillChunkTokens: 3 });
  t.teardown(async () => {
    await whole.dispose();
    await chunked.dispose();
  });
  const ids = whole.tokenize(TEXTS[0]!);
  t.ok(ids.length > 9, 'several chunks of 3');
  const opt = { normalize: false } as const;
  // A causal model: the first token's state does not see the rest.
  t.ok(maxAbsDiff(await whole.embed(ids, { ...opt, pooling: 'cls' }), await whole.embed(ids.slice(0, 1), { ...opt, pooling: 'last' })) < 1e-5, 'cls');
  const rows: Float32Array[] = [];
  for (let n = 1; n <= ids.length; n++) rows.push(await whole.embed(ids.slice(0, n), { ...opt, pooling: 'last' }));
  const mean = new Float32Array(whole.info.nEmbd).map((_, e) => rows.reduce((s, r) => s + r[e]!, 0) / rows.length);
  t.ok(maxAbsDiff(await whole.embed(ids, { ...opt, pooling: 'mean' }), mean) < 1e-4, 'mean of the last-token states of every prefix');
  for (const pooling of ['mean', 'cls', 'last'] as const) {
    const d = maxAbsDiff(await whole.embed(ids, { ...opt, pooling }), await chunked.embed(ids, { ...opt, pooling }));
    t.ok(d < 1e-4, `${pooling}: chunks of 3 against one chunk, max |diff| ${d.toExponential(2)}`);
  }
  t.equal(whole.stats.numFreeKvBlocks, whole.info.numKvBlocks, 'every KV block back');
});

t.test('embeds while other requests generate, without changing their tokens', async (t) => {
  const model = await loadModel(modelPath('stories260K.gguf'), { threads: 1, contextSize: 256, maxSequences: 4 });
  t.teardown(() => model.dispose());
  const alone = await model.generate('Once upon a time', { maxTokens: 24, temperature: 0 }).result;
  const single = await model.embed(TEXTS[1]!);
  const [gen, a, b] = await Promise.all([
    model.generate('Once upon a time', { maxTokens: 24, temperature: 0 }).result,
    model.embed(TEXTS[1]!),
    model.embed(TEXTS[1]!),
  ]);
  t.same(gen.tokens, alone.tokens, 'the generation is unchanged');
  t.ok(maxAbsDiff(a, single) < 1e-5 && maxAbsDiff(b, single) < 1e-5, 'each embedding as alone');
  t.equal(model.stats.numFreeKvBlocks, model.info.numKvBlocks, 'every KV block back');
});

t.test('bad input and aborts are typed errors; nothing is left behind', async (t) => {
  const model = await loadModel(modelPath('stories260K.gguf'), { threads: 1, contextSize: 64 });
  t.teardown(() => model.dispose());
  await t.rejects(model.embed([]), { code: 'TDM_BAD_ARGUMENT' }, 'no tokens');
  await t.rejects(model.embed([1, 99999]), { code: 'TDM_BAD_ARGUMENT' }, 'a token outside the vocabulary');
  await t.rejects(model.embed(42 as unknown as string), { code: 'TDM_BAD_ARGUMENT' }, 'not text or ids');
  await t.rejects(model.embed('x', { pooling: 'max' as EmbeddingPooling }), { code: 'TDM_BAD_ARGUMENT' }, 'an unknown pooling');
  await t.rejects(model.embed('x', { normalise: true } as object), { code: 'TDM_BAD_ARGUMENT' }, 'an unknown option');
  await t.rejects(model.embed('x', { normalize: 1 as unknown as boolean }), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(model.embed('x', { signal: {} as AbortSignal }), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(model.embed(new Array(65).fill(1)), { code: 'TDM_CONTEXT_FULL' }, 'longer than the context');
  t.equal((await model.embed(new Array(64).fill(1))).length, model.info.nEmbd, 'a whole context fits');
  await t.rejects(model.embed('x', { signal: AbortSignal.abort() }), { code: 'TDM_ABORTED' }, 'aborted before it starts');
  const controller = new AbortController();
  const pending = model.embed(new Array(60).fill(1), { signal: controller.signal });
  controller.abort();
  await t.rejects(pending, { code: 'TDM_ABORTED' }, 'aborted while it waits or runs');
  t.equal(model.stats.numFreeKvBlocks, model.info.numKvBlocks, 'every KV block back after the aborts');
  t.ok((await model.embed('Once')).length > 0, 'the model goes on');
  await model.dispose();
  await t.rejects(model.embed('x'), { code: 'TDM_DISPOSED' });
});

t.test('files embed() cannot serve as they ask are refused by name', async (t) => {
  // A reranker: its score comes from a classifier head tandem does not run.
  const rank = writeTinyModel('rank.gguf', { arch: 'llama', kvs: [{ key: 'llama.pooling_type', type: 'uint32', value: 4 }] });
  const model = await loadModel(rank, { threads: 1, contextSize: 32 });
  t.teardown(() => model.dispose());
  t.equal(model.info.pooling, 'rank');
  await t.rejects(model.embed('x'), { code: 'TDM_UNSUPPORTED', message: /reranker/ });
  t.equal((await model.embed([1, 2], { pooling: 'mean' })).length, model.info.nEmbd, 'its hidden states, when a pooling is given');
  // Bidirectional attention (llama.cpp's non-causal embedding models).
  const bidirectional = writeTinyModel('non-causal.gguf', { arch: 'qwen2', kvs: [{ key: 'qwen2.attention.causal', type: 'bool', value: false }] });
  await t.rejects(loadModel(bidirectional, { threads: 1 }), { code: 'TDM_UNSUPPORTED', message: /non-causal/ });
});
