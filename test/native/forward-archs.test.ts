// Every supported architecture and weight type against llama.cpp (node-llama-cpp 3.21.1,
// CPU) on tiny synthetic models (src/model/synthetic.ts): teacher-forced next-token
// distributions over 2 x 64 positions, reported as max/mean KL divergence and top-1
// agreement. Random models are chaotic: one activation rounding that falls the other way
// moves the logits by about as much as llama.cpp's own prefill and decode paths differ
// (measured in the last test), so the tolerances below are set from that floor.
import t from 'tap';
import { mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { native } from '../../src/native/binding.js';
import { GgufFile } from '../../src/model/gguf.js';
import { describeModel } from '../../src/model/describe.js';
import { makeModel, planTensors, resolveSpec, tensorValues, type ModelFileType, type ModelSpec } from '../../src/model/synthetic.js';

const N_POS = 64;
const CACHE = path.join(tmpdir(), 'tandem-test-models');

interface Case {
  name: string;
  spec: ModelSpec;
  type: ModelFileType;
}

const ARCHS: { name: string; spec: ModelSpec }[] = [
  { name: 'llama', spec: { architecture: 'llama' } },
  { name: 'qwen2', spec: { architecture: 'qwen2' } },
  { name: 'qwen3', spec: { architecture: 'qwen3', nHead: 4, nHeadKv: 2, headDim: 128 } },
  { name: 'llama-moe', spec: { architecture: 'llama', nExpert: 4, nExpertUsed: 2 } },
  { name: 'qwen2moe', spec: { architecture: 'qwen2moe' } },
  { name: 'qwen3moe', spec: { architecture: 'qwen3moe' } },
  { name: 'olmoe', spec: { architecture: 'olmoe' } },
  // Heads of 32 that do not tile nEmbd, a window shorter than the sequences: every gpt-oss feature.
  { name: 'gpt-oss', spec: { architecture: 'gpt-oss', nHead: 4, nHeadKv: 2, headDim: 32, slidingWindow: 24 } },
  // Scaled embeddings, per-head QK norms, post norms and GeGLU, heads of 128 over 256, a window shorter than the sequences.
  { name: 'gemma3', spec: { architecture: 'gemma3', nHead: 4, nHeadKv: 2, headDim: 128, slidingWindow: 24, rmsEps: 1e-6 } },
  // gemma2: every other layer sliding, scores soft-capped hard (1.5: about their size here), logits at Gemma 2's 30.
  { name: 'gemma2', spec: { architecture: 'gemma2', nHead: 4, nHeadKv: 2, headDim: 128, slidingWindow: 24, rmsEps: 1e-6, softcaps: { attention: 1.5, final: 30 } } },
];
const CASES: Case[] = [
  ...ARCHS.flatMap((a) => (['f16', 'q8_0', 'q4_K_M'] as ModelFileType[]).map((type) => ({ ...a, type }))),
  ...(['f32', 'bf16', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_K', 'q5_K', 'q6_K'] as ModelFileType[]).map((type) => ({ ...ARCHS[0], type })),
  ...(['f32', 'bf16', 'q4_0', 'q5_K', 'q6_K'] as ModelFileType[]).map((type) => ({ ...ARCHS.find((a) => a.name === 'qwen3moe')!, type })),
  { ...ARCHS.find((a) => a.name === 'gpt-oss')!, type: 'mxfp4_moe' },
];

/** Builds (once) a tiny model whose output projection is 4x the default scale, so that its
 * next-token distributions have clear winners (the default gives nearly flat ones). */
async function modelFile(c: Case): Promise<string> {
  mkdirSync(CACHE, { recursive: true });
  const file = path.join(CACHE, `archs-v1-${c.name}-${c.type}.gguf`);
  if (existsSync(file)) return file;
  const spec: ModelSpec = { ...c.spec, type: c.type, seed: 7 };
  const resolved = resolveSpec(spec);
  // A tied output (gemma2's) is the embeddings too: left at the generator's scale, where each
  // token's own row does not swamp its next-token distribution.
  if (!planTensors(resolved).some((p) => p.name === 'output.weight')) {
    await makeModel(spec, file);
    return file;
  }
  const values = await tensorValues(99, 'output.weight', 0, 4 / Math.sqrt(resolved.nEmbd), 0, resolved.nEmbd * resolved.nVocab);
  await makeModel({ ...spec, tensorData: { 'output.weight': values } }, file);
  return file;
}

/** Two fixed pseudo-random token sequences (BOS first) inside a 512-token vocabulary. */
function sequences(): number[][] {
  let s = 12345;
  return [0, 1].map(() => {
    const seq = [1];
    while (seq.length < N_POS) {
      s = (s * 1103515245 + 12345) % 2147483648;
      seq.push(3 + (s % 500));
    }
    return seq;
  });
}

function softmax(logits: Float32Array, offset: number, n: number): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, logits[offset + i]);
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp(logits[offset + i] - mx);
  for (let i = 0; i < n; i++) p[i] /= sum;
  return p;
}

interface Agreement {
  maxKl: number;
  meanKl: number;
  top1: number;
  positions: number;
}

/** KL(p || q) per position and top-1 agreement between two lists of distributions. */
function compare(ps: Float64Array[], qs: Map<Token, number>[]): Agreement {
  let maxKl = 0;
  let sumKl = 0;
  let top1 = 0;
  for (let i = 0; i < ps.length; i++) {
    const p = ps[i];
    const q = qs[i];
    let kl = 0;
    let top = 0;
    for (let v = 0; v < p.length; v++) {
      if (p[v] > 0) kl += p[v] * Math.log(p[v] / Math.max(q.get(v as Token) ?? 0, 1e-30));
      if (p[v] > p[top]) top = v;
    }
    maxKl = Math.max(maxKl, kl);
    sumKl += kl;
    if (top === q.entries().next().value![0]) top1++;
  }
  return { maxKl, meanKl: sumKl / ps.length, top1: top1 / ps.length, positions: ps.length };
}

async function llamaProbs(llama: Llama, file: string, seqs: number[][], oneByOne = false): Promise<Map<Token, number>[]> {
  const model = await llama.loadModel({ modelPath: file });
  const ctx = await model.createContext({ contextSize: 2 * N_POS, threads: 1, sequences: seqs.length });
  const out: Map<Token, number>[] = [];
  try {
    for (const s of seqs) {
      const sequence = ctx.getSequence();
      const items = s.map((tok) => [tok as Token, { generateNext: { probabilities: true } }] as [Token, { generateNext: { probabilities: true } }]);
      if (oneByOne) {
        for (const item of items) out.push((await sequence.controlledEvaluate([item]))[0]!.next.probabilities!);
      } else {
        for (const r of await sequence.controlledEvaluate(items)) out.push(r!.next.probabilities!);
      }
      sequence.dispose();
    }
  } finally {
    await ctx.dispose();
    await model.dispose();
  }
  return out;
}

async function tandemProbs(file: string, seqs: number[][]): Promise<Float64Array[]> {
  const f = GgufFile.open(file);
  const hparams = describeModel(f).hparams;
  f.close();
  const m = await native().loadModel(file, { hparams, threads: 2, kvBlockTokens: 16, kvBlocks: { device: 0, host: 16 } });
  try {
    // Both sequences in one step: the batched path is the one under test.
    const r = await m.step({
      strategy: 'cpu',
      copies: [],
      sequences: seqs.map((s, i) => ({
        seqId: i, tokens: Int32Array.from(s), startPos: 0, blockTable: Int32Array.from([0, 1, 2, 3].map((b) => b + 4 * i)),
        kvTier: 'host' as const, attention: 'cpu' as const, sample: false, returnAllLogits: true,
      })),
    });
    const V = m.info.nVocab;
    return r.sequences.flatMap((s) => Array.from({ length: N_POS }, (_, i) => softmax(s.allLogits!, i * V, V)));
  } finally {
    m.dispose();
  }
}

/** Tolerances by weight type (see the file comment for why quantized ones are loose). */
function limits(type: ModelFileType): { maxKl: number; meanKl: number; top1: number } {
  if (type === 'f32' || type === 'f16') return { maxKl: 1e-4, meanKl: 1e-5, top1: 0.97 };
  if (type === 'bf16') return { maxKl: 0.1, meanKl: 2e-3, top1: 0.95 };
  return { maxKl: 1.0, meanKl: 0.02, top1: 0.9 };
}

const fmt = (a: Agreement) => `max KL ${a.maxKl.toExponential(2)}, mean KL ${a.meanKl.toExponential(2)}, top-1 ${(100 * a.top1).toFixed(1)}% of ${a.positions}`;

t.test('next-token distributions agree with llama.cpp for every architecture and weight type', async (t) => {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const seqs = sequences();
  for (const c of CASES) {
    const file = await modelFile(c);
    const a = compare(await tandemProbs(file, seqs), await llamaProbs(llama, file, seqs));
    const lim = limits(c.type);
    t.comment(`${c.name} ${c.type}: ${fmt(a)}`);
    t.ok(a.maxKl <= lim.maxKl && a.meanKl <= lim.meanKl && a.top1 >= lim.top1, `${c.name} ${c.type} within (max KL ${lim.maxKl}, mean KL ${lim.meanKl}, top-1 ${lim.top1})`);
  }
});

t.test("llama.cpp's own prefill and decode differ as much on quantized random models (the noise floor)", async (t) => {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const seqs = sequences().slice(0, 1);
  for (const c of [CASES.find((x) => x.name === 'llama' && x.type === 'q8_0')!, CASES.find((x) => x.name === 'qwen3moe' && x.type === 'q6_K')!]) {
    const file = await modelFile(c);
    const prefill = await llamaProbs(llama, file, seqs);
    const decode = await llamaProbs(llama, file, seqs, true);
    const self = compare(prefill.map((m) => Float64Array.from({ length: 512 }, (_, v) => m.get(v as Token) ?? 0)), decode);
    const ours = compare(await tandemProbs(file, [seqs[0], seqs[0]]).then((p) => p.slice(0, N_POS)), prefill);
    t.comment(`${c.name} ${c.type}: llama.cpp prefill vs its decode: ${fmt(self)}; tandem vs llama.cpp prefill: ${fmt(ours)}`);
    t.ok(ours.meanKl <= 4 * self.meanKl + 1e-4, 'tandem is as close to llama.cpp as llama.cpp is to itself (within 4x)');
  }
});

t.test('quantized dense and MoE models: batched, alone and token-by-token runs give identical logits', async (t) => {
  const seqs = sequences();
  for (const c of [CASES.find((x) => x.name === 'llama' && x.type === 'q4_0')!, CASES.find((x) => x.name === 'qwen2moe' && x.type === 'q4_K_M')!]) {
    const file = await modelFile(c);
    const f = GgufFile.open(file);
    const hparams = describeModel(f).hparams;
    f.close();
    const m = await native().loadModel(file, { hparams, threads: 2, kvBlockTokens: 16, kvBlocks: { device: 0, host: 24 } });
    const V = m.info.nVocab;
    const entry = (s: number[], i: number, start: number, blocks: number[]) => ({
      seqId: i, tokens: Int32Array.from(s), startPos: start, blockTable: Int32Array.from(blocks),
      kvTier: 'host' as const, attention: 'cpu' as const, sample: false, returnAllLogits: true,
    });
    const both = await m.step({ strategy: 'cpu', copies: [], sequences: [entry(seqs[0], 0, 0, [0, 1, 2, 3]), entry(seqs[1], 1, 0, [4, 5, 6, 7])] });
    const alone = await m.step({ strategy: 'cpu', copies: [], sequences: [entry(seqs[1], 1, 0, [8, 9, 10, 11])] });
    t.same(Array.from(both.sequences[1].allLogits!), Array.from(alone.sequences[0].allLogits!), `${c.name} ${c.type}: batched = alone`);
    let same = true;
    for (let i = 0; i < 20; i++) {
      const r = await m.step({ strategy: 'cpu', copies: [], sequences: [entry([seqs[0][i]], 0, i, [12, 13])] });
      const row = both.sequences[0].allLogits!.subarray(i * V, (i + 1) * V);
      if (!r.sequences[0].allLogits!.every((x, k) => x === row[k])) same = false;
    }
    t.ok(same, `${c.name} ${c.type}: token-by-token decode = prefill`);
    m.dispose();
  }
});
