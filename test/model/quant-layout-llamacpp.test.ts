// Proof that tandem's block layouts are llama.cpp's, byte for byte: a model whose
// token_embd.weight tandem quantized to type X and a model whose token_embd.weight is
// tandem's dequantize() of those same bytes (F32, all else equal) give llama.cpp the
// same next-token distributions, because llama.cpp's get_rows dequantizes embeddings
// exactly. Any disagreement in layout, scale rounding or bit order shows as a difference.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { getLlama, type Llama, type Token } from 'node-llama-cpp';
import { GgufFile } from '../../src/model/gguf.js';
import { dequantize } from '../../src/model/quant.js';
import { makeModel, type ModelSpec, type WeightType } from '../../src/model/synthetic.js';

const TYPES: WeightType[] = [
  'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_K', 'q3_K', 'q4_K', 'q5_K', 'q6_K', 'mxfp4', 'iq4_nl', 'iq4_xs',
  'iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s',
];
// Row length 256 fills every type's blocks; F32 elsewhere keeps the rest of the graph identical.
const BASE: ModelSpec = { architecture: 'llama', nEmbd: 256, nLayer: 1, nHead: 4, nHeadKv: 2, nFf: 512, nVocab: 512, nCtx: 256, type: 'f32', seed: 7 };
// Distinct prompt tokens (rows of token_embd): control, byte and piece tokens alike.
const PROMPT = Array.from({ length: 96 }, (_, i) => ((1 + i * 5) % 512) as Token);
const GENERATED = 4;

const dir = mkdtempSync(path.join(tmpdir(), 'tandem-quant-layout-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let llama: Llama;
t.before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
});

/** Next-token probabilities (by token id) after the prompt and each greedy token. */
async function distributions(file: string): Promise<{ tokens: number[]; probs: Map<number, number>[] }> {
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({ contextSize: 256, threads: 1 });
  const tokens: number[] = [];
  const probs: Map<number, number>[] = [];
  try {
    for await (const out of context.getSequence().evaluateWithMetadata(PROMPT, { probabilities: true }, { temperature: 0, yieldEogToken: true })) {
      tokens.push(out.token);
      probs.push(out.probabilities);
      if (tokens.length === GENERATED) break;
    }
  } finally {
    await context.dispose();
    await model.dispose();
  }
  return { tokens, probs };
}

/** Largest differences between two runs: probability, and log-probability where both are above 1e-30. */
function compare(a: Map<number, number>[], b: Map<number, number>[]): { prob: number; logProb: number } {
  let prob = 0;
  let logProb = 0;
  for (let s = 0; s < a.length; s++) {
    for (const [id, p] of a[s]) {
      const q = b[s].get(id) ?? 0;
      prob = Math.max(prob, Math.abs(p - q));
      if (p > 1e-30 && q > 1e-30) logProb = Math.max(logProb, Math.abs(Math.log(p) - Math.log(q)));
    }
  }
  return { prob, logProb };
}

t.test('llama.cpp dequantizes tandem-quantized embeddings exactly as tandem does', async (t) => {
  const original = path.join(dir, 'original-f32.gguf');
  await makeModel(BASE, original);
  const reference = await distributions(original);
  t.equal(reference.probs[0].size, 512, 'a full distribution over the vocabulary');
  const report: string[] = [];

  for (const type of TYPES) {
    const quantized = path.join(dir, `embd-${type}.gguf`);
    await makeModel({ ...BASE, tensorTypes: { 'token_embd.weight': type } }, quantized);
    const f = GgufFile.open(quantized);
    const info = f.tensor('token_embd.weight')!;
    t.equal(info.type, type, `${type}: token_embd.weight is stored as ${type}`);
    const n = info.shape[0] * info.shape[1];
    const predicted = dequantize(type, f.tensorData('token_embd.weight'), n);
    f.close();

    const asF32 = path.join(dir, `embd-${type}-dequantized.gguf`);
    await makeModel({ ...BASE, tensorData: { 'token_embd.weight': predicted } }, asF32);

    const q = await distributions(quantized);
    const d = await distributions(asF32);
    const diff = compare(q.probs, d.probs);
    const vsOriginal = compare(q.probs, reference.probs);
    report.push(`${type}: max |Δp| ${diff.prob}, max |Δlog p| ${diff.logProb} (vs unquantized: ${vsOriginal.prob.toExponential(2)})`);
    t.same(q.tokens, d.tokens, `${type}: same greedy tokens`);
    t.equal(diff.prob, 0, `${type}: identical probabilities from llama.cpp`);
    t.equal(diff.logProb, 0, `${type}: identical log-probabilities`);
    // The check can fail: rounding to the type alone moves the distribution.
    t.ok(vsOriginal.prob > 0, `${type}: quantization itself changes llama.cpp's output (${vsOriginal.prob.toExponential(2)})`);
  }
  t.comment(`quant layout vs llama.cpp:\n${report.join('\n')}`);
});
