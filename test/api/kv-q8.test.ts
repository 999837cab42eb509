// The q8_0 KV cache (loadModel({ kvType: 'q8_0' })): teacher-forced probabilities against
// llama.cpp run with the same cache type (-ctk/-ctv q8_0), against tandem's own f16 cache (what
// the quantization costs), the memory it saves, batch invariance, and its typed refusals.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadModel } from '../../src/api/index.js';
import { makeModel } from '../../src/model/synthetic.js';
import { modelPath } from '../helpers.js';
import { klDivergence, LlamaRef, softmax } from './llama-ref.js';

const POSITIONS = 128;

/**
 * Measured on the tiny llama (head size 64) with f32 and q8_0 weights, 128 positions: tandem
 * q8_0 against llama.cpp q8_0, max KL 4.2e-5 and 1.4e-4 (llama.cpp quantizes the query to q8_0
 * for its K dot products, tandem keeps it f32 and widens K); tandem q8_0 against tandem f16,
 * max KL 1.8e-5 and 1.4e-4. The bounds leave about 3x room.
 */
const MAX_KL_VS_LLAMA = 5e-4;
const MAX_KL_VS_F16 = 5e-4;
/**
 * Top-1 agreement over decisive positions: those where the reference's two best tokens are
 * more than NEAR_TIE apart in log-probability (a random model has many near ties, which the
 * quantization noise above may flip; agreement.test.ts counts them the same way).
 */
const NEAR_TIE = 0.05;
const MIN_TOP1 = 0.99;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-kv-q8-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

function ids(): number[] {
  let x = 12345;
  const out = [1];
  while (out.length < POSITIONS) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    out.push(x % 512);
  }
  return out;
}

/** KL(reference || ours) at worst, and top-1 agreement over the reference's decisive positions. */
function compare(reference: Float64Array[], ours: Float64Array[]): { maxKl: number; top1: number; decisive: number } {
  let maxKl = 0;
  let agree = 0;
  let decisive = 0;
  reference.forEach((p, i) => {
    const q = ours[i]!;
    maxKl = Math.max(maxKl, klDivergence(p, q));
    let tp = 0;
    let second = -1;
    let tq = 0;
    for (let k = 1; k < p.length; k++) {
      if (p[k]! > p[tp]!) {
        second = tp;
        tp = k;
      } else if (second < 0 || p[k]! > p[second]!) second = k;
      if (q[k]! > q[tq]!) tq = k;
    }
    if (Math.log(p[tp]! / p[second]!) < NEAR_TIE) return;
    decisive++;
    if (tp === tq) agree++;
  });
  return { maxKl, top1: agree / decisive, decisive };
}

for (const type of ['f32', 'q8_0'] as const) {
  t.test(`tiny llama, ${type} weights: q8_0 KV against llama.cpp's and against f16`, async (t) => {
    const file = path.join(dir, `tiny-${type}.gguf`);
    await makeModel({ seed: 3, architecture: 'llama', type }, file);
    const tokens = ids();
    const probs: Record<string, Float64Array[]> = {};
    for (const kvType of ['f16', 'q8_0'] as const) {
      const m = await loadModel(file, { threads: 1, contextSize: POSITIONS + 32, maxSequences: 1, kvType });
      try {
        t.equal(m.info.kvType, kvType);
        probs[kvType] = (await m.evaluate(tokens)).map((l) => softmax(l));
      } finally {
        await m.dispose();
      }
    }
    const ref = await LlamaRef.load(file);
    try {
      const theirs = await ref.probabilities(tokens, 512, { kvType: 'q8_0' });
      const vsLlama = compare(theirs, probs.q8_0!);
      t.ok(vsLlama.maxKl < MAX_KL_VS_LLAMA, `against llama.cpp q8_0: max KL ${vsLlama.maxKl.toExponential(2)} < ${MAX_KL_VS_LLAMA}`);
      t.ok(vsLlama.top1 >= MIN_TOP1, `against llama.cpp q8_0: top-1 agrees at ${(100 * vsLlama.top1).toFixed(1)}% of ${vsLlama.decisive} decisive positions`);
    } finally {
      await ref.dispose();
    }
    const vsF16 = compare(probs.f16!, probs.q8_0!);
    t.ok(vsF16.maxKl < MAX_KL_VS_F16, `against tandem's f16 cache: max KL ${vsF16.maxKl.toExponential(2)} < ${MAX_KL_VS_F16}`);
    t.ok(vsF16.top1 >= MIN_TOP1, `against tandem's f16 cache: top-1 agrees at ${(100 * vsF16.top1).toFixed(1)}% of ${vsF16.decisive} decisive positions`);
    t.ok(vsF16.maxKl > 0, 'the cache really is quantized (the logits move)');
  });
}

t.test('q8_0 blocks take 34/64 of f16 ones, so a byte budget holds more of them', async (t) => {
  const file = path.join(dir, 'tiny-f32.gguf');
  const bytes = 4 * 2 ** 20;
  const f16 = await loadModel(file, { threads: 1, contextSize: 256, maxSequences: 2, kvCacheBytes: bytes });
  const q8 = await loadModel(file, { threads: 1, contextSize: 256, maxSequences: 2, kvCacheBytes: bytes, kvType: 'q8_0' });
  try {
    t.equal(q8.info.kvBlockBytes * 64, f16.info.kvBlockBytes * 34, 'block bytes in the ratio of 34 to 64');
    t.equal(q8.info.kvBytesPerToken * 64, f16.info.kvBytesPerToken * 34);
    t.ok(q8.info.numKvBlocks >= Math.floor((f16.info.numKvBlocks * 64) / 34) - 1, `${q8.info.numKvBlocks} q8_0 blocks against ${f16.info.numKvBlocks} f16 ones in ${bytes} bytes`);
  } finally {
    await f16.dispose();
    await q8.dispose();
  }
});

t.test('q8_0 KV keeps batches invariant: a prompt decodes to the same tokens alone and beside others', async (t) => {
  const file = path.join(dir, 'tiny-f32.gguf');
  const m = await loadModel(file, { threads: 1, contextSize: 256, maxSequences: 4, kvType: 'q8_0' });
  try {
    const prompts = [ids().slice(0, 40), ids().slice(10, 90), ids().slice(5, 17)];
    const greedy = async (p: number[]) => (await m.generate(p, { temperature: 0, maxTokens: 16, ignoreEos: true }).result).tokens;
    const alone: number[][] = [];
    for (const p of prompts) alone.push(await greedy(p));
    const together = await Promise.all(prompts.map(greedy));
    t.same(together, alone);
  } finally {
    await m.dispose();
  }
});

t.test('q8_0 KV refuses what it cannot do, with typed errors', async (t) => {
  await t.rejects(loadModel(path.join(dir, 'tiny-f32.gguf'), { kvType: 'q4_0' as never }), { code: 'TDM_BAD_ARGUMENT', message: /kvType must be 'f16' or 'q8_0'/ });
  // stories260K has heads of 8: not whole q8_0 blocks.
  await t.rejects(loadModel(modelPath('stories260K.gguf'), { kvType: 'q8_0' }), { code: 'TDM_UNSUPPORTED', message: /multiples of 32; .* has 8 and 8/ });
  await t.rejects(loadModel(path.join(dir, 'tiny-f32.gguf'), { kvType: 'q8_0', device: 'gpu' }), { code: 'TDM_UNSUPPORTED', message: /CPU kernels only/ });
});

t.test('q8_0 KV on the CPU stand-in device: the hybrid path runs on it too', async (t) => {
  const m = await loadModel(path.join(dir, 'tiny-f32.gguf'), { threads: 1, contextSize: 256, maxSequences: 2, kvType: 'q8_0', device: 'cpu-standin', profile: 'quick' });
  try {
    t.equal(m.info.kvType, 'q8_0');
    const out = await m.generate(ids().slice(0, 20), { temperature: 0, maxTokens: 8, ignoreEos: true }).result;
    t.equal(out.tokens.length, 8);
  } finally {
    await m.dispose();
  }
});
