// Synthetic models without llama.cpp: reproducible bytes, values that depend only on
// (seed, tensor name), sane value scales, each architecture's tensors and metadata, the
// K and IQ mixes, parameter counts of the presets, and typed errors for bad specs.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native } from '../../src/native/binding.js';
import { GgufFile, type GgufArray } from '../../src/model/gguf.js';
import {
  FILE_TYPE_IDS, makeModel, planTensors, resolveSpec, streamId, syntheticVocab, tensorValues,
  type ModelSpec, type SyntheticArchitecture,
} from '../../src/model/synthetic.js';
import { modelPath } from '../helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tandem-synthetic-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = () => path.join(dir, `m${fileNo++}.gguf`);

const f32 = (bytes: Uint8Array) => new Float32Array(bytes.slice().buffer);
/** Byte equality of two typed arrays (tap's deep compare is slow on large ones). */
const sameBytes = (a: ArrayBufferView, b: ArrayBufferView) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

t.test('same spec and seed give the same bytes; another seed other weights', async (t) => {
  const spec: ModelSpec = { architecture: 'qwen2moe', type: 'q4_K_M', seed: 42 };
  const [a, b, c] = [tmpFile(), tmpFile(), tmpFile()];
  await makeModel(spec, a);
  await makeModel(spec, b);
  await makeModel({ ...spec, seed: 43 }, c);
  t.ok(readFileSync(a).equals(readFileSync(b)), 'identical files');
  const fa = GgufFile.open(a);
  const fc = GgufFile.open(c);
  t.equal(fa.getNumber('tandem.synthetic.seed'), 42);
  for (const info of fa.tensors) {
    const same = Buffer.from(fa.tensorData(info.name)).equals(Buffer.from(fc.tensorData(info.name)));
    t.notOk(same, `${info.name} differs with another seed`);
  }
  fa.close();
  fc.close();
});

t.test("a tensor's values depend only on (seed, name), in any chunking", async (t) => {
  const small = tmpFile();
  const deep = tmpFile();
  await makeModel({ type: 'f32', seed: 5, nLayer: 1 }, small);
  await makeModel({ type: 'f32', seed: 5, nLayer: 3, nFf: 768 }, deep);
  const s = GgufFile.open(small);
  const d = GgufFile.open(deep);
  for (const name of ['token_embd.weight', 'blk.0.attn_q.weight', 'output.weight', 'blk.0.attn_norm.weight']) {
    t.ok(sameBytes(s.tensorData(name), d.tensorData(name)), `${name} is the same in another shape`);
  }
  const embd = f32(s.tensorData('token_embd.weight'));
  t.ok(sameBytes(embd, await tensorValues(5, 'token_embd.weight', 0, 1, 0, embd.length)), 'tensorValues reproduces the file');
  s.close();
  d.close();

  const whole = new Float32Array(1001);
  native().fillNormal(whole, 9, streamId('x'), 0, 0, 1);
  const pieces = new Float32Array(1001);
  for (const [from, to] of [[0, 3], [3, 4], [4, 517], [517, 1001]]) {
    native().fillNormal(pieces.subarray(from, to), 9, streamId('x'), from, 0, 1);
  }
  t.ok(sameBytes(pieces, whole), 'pieces at any offset equal the whole stream');
  await native().fillNormalAsync(pieces, 9, streamId('x'), 0, 0, 1);
  t.ok(sameBytes(pieces, whole), 'the async fill gives the same values');
  t.not(streamId('blk.0.ffn_up.weight'), streamId('blk.0.ffn_gate.weight'));
  t.throws(() => native().fillNormal(whole, -1, 0, 0, 0, 1), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => native().fillNormal(whole, 0, 0, 2 ** 53, 0, 1), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => native().fillNormal(whole, 0, 0, 0, 0, -1), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => native().fillNormal(new Float64Array(4) as never, 0, 0, 0, 0, 1), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('values are normal with the planned scale', async (t) => {
  const v = await tensorValues(3, 'probe', 0, 1, 0, 1 << 20);
  let sum = 0;
  let sq = 0;
  let beyond3 = 0;
  for (const x of v) {
    sum += x;
    sq += x * x;
    if (Math.abs(x) > 3) beyond3++;
  }
  const mean = sum / v.length;
  const std = Math.sqrt(sq / v.length - mean * mean);
  t.ok(Math.abs(mean) < 0.005, `mean ${mean}`);
  t.ok(Math.abs(std - 1) < 0.005, `std ${std}`);
  t.ok(Math.abs(beyond3 / v.length - 0.0027) < 0.0005, `tail beyond 3σ ${beyond3 / v.length} (normal: 0.0027)`);
  const plan = planTensors(resolveSpec({ preset: 'tinyllama-1.1b' }));
  const scale = (name: string) => plan.find((p) => p.name === name)!;
  t.equal(scale('blk.0.attn_q.weight').std, 1 / Math.sqrt(2048), 'weights: std 1/sqrt(fan-in)');
  t.equal(scale('blk.0.ffn_down.weight').std, 1 / Math.sqrt(5632));
  t.equal(scale('blk.0.ffn_norm.weight').mean, 1, 'norms near 1');
});

interface ArchExpect {
  perLayer: string[];
  keys: string[];
}
const COMMON = ['attn_norm.weight', 'attn_q.weight', 'attn_k.weight', 'attn_v.weight', 'attn_output.weight', 'ffn_norm.weight'];
const DENSE = ['ffn_gate.weight', 'ffn_down.weight', 'ffn_up.weight'];
const EXPERTS = ['ffn_gate_inp.weight', 'ffn_gate_exps.weight', 'ffn_down_exps.weight', 'ffn_up_exps.weight'];
const BIASES = ['attn_q.bias', 'attn_k.bias', 'attn_v.bias'];
const QK_NORM = ['attn_q_norm.weight', 'attn_k_norm.weight'];
const SHARED = ['ffn_gate_inp_shexp.weight', 'ffn_gate_shexp.weight', 'ffn_down_shexp.weight', 'ffn_up_shexp.weight'];
const EXPECT: Record<string, ArchExpect> = {
  llama: { perLayer: [...COMMON, ...DENSE], keys: [] },
  'llama-moe': { perLayer: [...COMMON, ...EXPERTS], keys: ['expert_count', 'expert_used_count'] },
  qwen2: { perLayer: [...COMMON, ...BIASES, ...DENSE], keys: [] },
  qwen2moe: { perLayer: [...COMMON, ...BIASES, ...EXPERTS, ...SHARED], keys: ['expert_count', 'expert_used_count', 'expert_feed_forward_length', 'expert_shared_feed_forward_length'] },
  qwen3moe: { perLayer: [...COMMON, ...QK_NORM, ...EXPERTS], keys: ['expert_count', 'expert_used_count', 'expert_feed_forward_length'] },
  olmoe: { perLayer: [...COMMON, ...QK_NORM, ...EXPERTS], keys: ['expert_count', 'expert_used_count'] },
  gemma: { perLayer: [...COMMON, ...DENSE], keys: [] },
  gemma2: { perLayer: [...COMMON, ...DENSE, 'post_attention_norm.weight', 'post_ffw_norm.weight'], keys: ['attention.sliding_window', 'attn_logit_softcapping', 'final_logit_softcapping'] },
  gemma3: { perLayer: [...COMMON, ...QK_NORM, ...DENSE, 'post_attention_norm.weight', 'post_ffw_norm.weight'], keys: ['attention.sliding_window'] },
};

t.test("each architecture's tensors, shapes and metadata", async (t) => {
  for (const [label, expect] of Object.entries(EXPECT)) {
    const architecture = label.replace('-moe', '') as SyntheticArchitecture;
    const spec: ModelSpec = { architecture, type: 'f16', nLayer: 2, ...(label === 'llama-moe' ? { nExpert: 4, nExpertUsed: 2 } : {}) };
    if (architecture === 'qwen3moe') spec.headDim = 128; // qwen3moe allows heads wider than nEmbd / nHead
    const p = tmpFile();
    const r = await makeModel(spec, p);
    const f = GgufFile.open(p);
    const names = f.tensors.map((x) => x.name);
    const want = ['token_embd.weight', ...[0, 1].flatMap((i) => expect.perLayer.map((n) => `blk.${i}.${n}`)), 'output_norm.weight', ...(architecture === 'gemma' || architecture === 'gemma2' ? [] : ['output.weight'])];
    t.same([...names].sort(), [...want].sort(), `${label}: tensor names`);
    t.equal(f.architecture, architecture);
    const s = r.spec;
    const key = (k: string) => f.getNumber(`${architecture}.${k}`);
    t.same(
      [key('embedding_length'), key('block_count'), key('attention.head_count'), key('attention.head_count_kv'), key('attention.key_length'), key('rope.dimension_count'), key('vocab_size')],
      [s.nEmbd, 2, s.nHead, s.nHeadKv, s.headDim, s.headDim, 512],
      `${label}: hyperparameters`,
    );
    for (const k of expect.keys) t.ok(f.has(`${architecture}.${k}`), `${label}: has ${k}`);
    t.equal(f.getNumber('general.file_type'), 1);
    const shape = (n: string) => f.tensor(n)!.shape;
    const q = s.headDim * s.nHead;
    const kv = s.headDim * s.nHeadKv;
    t.same(shape('blk.1.attn_q.weight'), [s.nEmbd, q]);
    t.same(shape('blk.1.attn_k.weight'), [s.nEmbd, kv]);
    t.same(shape('blk.1.attn_output.weight'), [q, s.nEmbd]);
    if (s.nExpert > 0) {
      t.same(shape('blk.0.ffn_gate_inp.weight'), [s.nEmbd, s.nExpert]);
      t.equal(f.tensor('blk.0.ffn_gate_inp.weight')!.type, 'f32', 'the router stays f32');
      t.same(shape('blk.0.ffn_down_exps.weight'), [s.nFfExpert, s.nEmbd, s.nExpert]);
      t.same(shape('blk.0.ffn_up_exps.weight'), [s.nEmbd, s.nFfExpert, s.nExpert]);
    }
    if (architecture === 'qwen3moe') t.same(shape('blk.0.attn_k_norm.weight'), [s.headDim], 'qwen3moe: per-head K norm');
    if (architecture === 'olmoe') t.same(shape('blk.0.attn_k_norm.weight'), [s.nEmbd], 'olmoe: K norm over the projection');
    if (architecture === 'qwen2moe') {
      t.same(shape('blk.0.ffn_gate_inp_shexp.weight'), [s.nEmbd]);
      t.same(shape('blk.0.ffn_down_shexp.weight'), [s.nFfShared, s.nEmbd]);
    }
    for (const info of f.tensors) {
      if (info.shape.length === 1) t.equal(info.type, 'f32', `${label}: ${info.name} (1-D) stays f32`);
    }
    f.close();
  }
});

t.test('the Q4_K_M mix follows llama.cpp', async (t) => {
  const count = (plan: { type: string }[]) => {
    const c: Record<string, number> = {};
    for (const p of plan) c[p.type] = (c[p.type] ?? 0) + 1;
    return c;
  };
  // TinyLlama-1.1B Q4_K_M as llama-quantize writes it: 135 q4_K, 21 q6_K, 45 f32.
  const tl = planTensors(resolveSpec({ preset: 'tinyllama-1.1b', type: 'q4_K_M' }));
  t.same(count(tl), { q4_K: 135, q6_K: 21, f32: 45 });
  const q6Layers = tl.filter((p) => p.name.endsWith('attn_v.weight') && p.type === 'q6_K').map((p) => Number(p.name.split('.')[1]));
  t.same(q6Layers, [0, 1, 4, 7, 10, 13, 16, 19, 20, 21], 'more bits in the first and last eighth and every third layer');
  const type = (plan: typeof tl, n: string) => plan.find((p) => p.name === n)!.type;
  t.equal(type(tl, 'output.weight'), 'q6_K');
  t.equal(type(tl, 'token_embd.weight'), 'q4_K');
  t.equal(type(tl, 'blk.4.ffn_down.weight'), 'q6_K');
  t.equal(type(tl, 'blk.5.ffn_down.weight'), 'q4_K');

  // Q5_K_M: the same rules from q5_K (TinyLlama-1.1B: 135 q5_K, 21 q6_K, 45 f32).
  const tl5 = planTensors(resolveSpec({ preset: 'tinyllama-1.1b', type: 'q5_K_M' }));
  t.same(count(tl5), { q5_K: 135, q6_K: 21, f32: 45 });
  t.same(tl5.map((p) => (p.type === 'q5_K' ? 'q4_K' : p.type)), tl.map((p) => p.type), 'Q5_K_M types every tensor as Q4_K_M does, q5_K for q4_K');
  t.equal(type(tl5, 'token_embd.weight'), 'q5_K');
  t.equal(FILE_TYPE_IDS.q5_K_M, 17, 'general.file_type: LLAMA_FTYPE_MOSTLY_Q5_K_M');

  const moe = planTensors(resolveSpec({ preset: 'moe-8x-top2', type: 'q4_K_M' }));
  t.equal(type(moe, 'blk.3.attn_k.weight'), 'q8_0', '8 experts: attn_k in q8_0');
  t.equal(type(moe, 'blk.3.attn_v.weight'), 'q8_0', '8 experts: attn_v in q8_0');
  t.equal(type(moe, 'blk.3.attn_output.weight'), 'q5_K', '8 experts: attn_output in q5_K');
  t.equal(type(moe, 'blk.0.ffn_down_exps.weight'), 'q6_K');
  t.equal(type(moe, 'blk.3.ffn_down_exps.weight'), 'q4_K');
  t.equal(type(moe, 'blk.3.ffn_gate_inp.weight'), 'f32');
  const moe5 = planTensors(resolveSpec({ preset: 'moe-8x-top2', type: 'q5_K_M' }));
  t.equal(type(moe5, 'blk.3.attn_v.weight'), 'q8_0', 'Q5_K_M, 8 experts: attn_v in q8_0');
  t.equal(type(moe5, 'blk.3.attn_output.weight'), 'q5_K');
  t.equal(type(moe5, 'blk.0.ffn_down_exps.weight'), 'q6_K');
  t.equal(type(moe5, 'blk.3.ffn_down_exps.weight'), 'q5_K');

  // Rows that do not fill 256-element blocks fall back as llama.cpp does.
  const odd = planTensors(resolveSpec({ nEmbd: 288, nHead: 4, nFf: 512, type: 'q4_K_M' }));
  t.equal(type(odd, 'output.weight'), 'q8_0', 'output: q8_0 when its rows do not fill q6_K blocks');
  t.equal(type(odd, 'blk.0.attn_q.weight'), 'q5_0', 'q4_K falls back to q5_0');
  t.equal(type(odd, 'blk.1.attn_v.weight'), 'q8_0', 'q6_K (the last layer) falls back to q8_0');
  t.equal(type(odd, 'blk.1.ffn_down.weight'), 'q6_K', 'ffn_down rows are nFf = 512 long: no fallback');
  const odder = planTensors(resolveSpec({ nEmbd: 200, nHead: 4, type: 'q5_K' }));
  t.equal(type(odder, 'blk.0.attn_q.weight'), 'f16', 'rows that fill no 32-block fall back to f16');
  const pure = planTensors(resolveSpec({ type: 'q5_1' }));
  t.same(count(pure), { q5_1: 16, f32: 5 }, 'a pure type: every quantizable tensor, embeddings and output included');

  // Tied embeddings: no output.weight, and token_embd typed as the output (llama.cpp's !has_output rule).
  const tied = planTensors(resolveSpec({ preset: 'tinyllama-1.1b', type: 'q4_K_M', tiedEmbeddings: true }));
  t.notOk(tied.some((p) => p.name === 'output.weight'), 'tied: no output.weight');
  t.equal(type(tied, 'token_embd.weight'), 'q6_K', 'tied: token_embd gets the output type');
  t.equal(tied.find((p) => p.name === 'token_embd.weight')!.std, 1 / Math.sqrt(2048), 'tied: embeddings at the output scale');
  const g1 = planTensors(resolveSpec({ preset: 'gemma3-1b', type: 'q4_K_M', tiedEmbeddings: true }));
  t.equal(type(g1, 'token_embd.weight'), 'q8_0', 'Gemma-3-1B tied: 1152-long rows fill no q6_K block, q8_0');
  t.equal(type(g1, 'blk.0.attn_q.weight'), 'q5_0', 'Gemma-3-1B: q4_K falls back to q5_0');
  const iqTied = planTensors(resolveSpec({ type: 'iq2_xxs_mix', tiedEmbeddings: true }));
  t.equal(type(iqTied, 'token_embd.weight'), 'q5_K', 'IQ2_XXS tied: token_embd as the output (q5_K), not q2_K');
});

t.test('the Q3_K_M, Q2_K and IQ4_XS mixes follow llama.cpp', async (t) => {
  const count = (plan: { type: string }[]) => {
    const c: Record<string, number> = {};
    for (const p of plan) c[p.type] = (c[p.type] ?? 0) + 1;
    return c;
  };
  const type = (plan: { name: string; type: string }[], n: string) => plan.find((p) => p.name === n)!.type;
  // TinyLlama-1.1B (22 layers, 8 query heads per KV head) as llama-quantize's rules type it.
  const q3 = planTensors(resolveSpec({ preset: 'tinyllama-1.1b', type: 'q3_K_M' }));
  t.same(count(q3), { q3_K: 89, q4_K: 63, q5_K: 3, q6_K: 1, f32: 45 });
  t.equal(type(q3, 'blk.1.attn_v.weight'), 'q5_K', 'Q3_K_M: the first two attn_v in q5_K');
  t.equal(type(q3, 'blk.2.attn_v.weight'), 'q4_K');
  t.equal(type(q3, 'blk.0.ffn_down.weight'), 'q5_K', 'Q3_K_M: ffn_down of the first sixteenth in q5_K');
  t.equal(type(q3, 'blk.1.ffn_down.weight'), 'q4_K');
  t.equal(type(q3, 'blk.5.attn_output.weight'), 'q4_K');
  t.equal(type(q3, 'token_embd.weight'), 'q3_K');

  const q2 = planTensors(resolveSpec({ preset: 'tinyllama-1.1b', type: 'q2_K_mix' }));
  t.same(count(q2), { q2_K: 89, q3_K: 44, q4_K: 22, q6_K: 1, f32: 45 });
  t.equal(type(q2, 'blk.7.attn_v.weight'), 'q4_K', 'Q2_K: attn_v in q4_K with 4 or more query heads per KV head');
  const q2mha = planTensors(resolveSpec({ nHead: 4, nHeadKv: 4, type: 'q2_K_mix' }));
  t.equal(type(q2mha, 'blk.0.attn_v.weight'), 'q3_K', 'Q2_K: attn_v in q3_K without grouped queries');

  const iq4 = planTensors(resolveSpec({ preset: 'tinyllama-1.1b', type: 'iq4_xs_mix' }));
  t.same(count(iq4), { iq4_xs: 131, q5_K: 24, q6_K: 1, f32: 45 });
  t.equal(type(iq4, 'blk.1.ffn_down.weight'), 'q5_K', 'IQ4_XS: ffn_down of the first eighth in q5_K');
  t.equal(type(iq4, 'blk.2.ffn_down.weight'), 'iq4_xs');

  const moe = planTensors(resolveSpec({ preset: 'moe-8x-top2', type: 'q3_K_M' }));
  t.equal(type(moe, 'blk.3.attn_v.weight'), 'q8_0', '8 experts: attn_v in q8_0');
  t.equal(type(moe, 'blk.3.attn_output.weight'), 'q5_K', '8 experts: attn_output in q5_K');

  // Rows that do not fill 256-element blocks: q2_K and q3_K fall back to q4_0, iq4_xs to iq4_nl.
  const odd = planTensors(resolveSpec({ nEmbd: 288, nHead: 4, nFf: 512, type: 'iq4_xs' }));
  t.equal(type(odd, 'blk.0.attn_q.weight'), 'iq4_nl');
  const odd3 = planTensors(resolveSpec({ nEmbd: 288, nHead: 4, nFf: 512, type: 'q3_K' }));
  t.equal(type(odd3, 'blk.0.attn_q.weight'), 'q4_0');
});

t.test('the IQ2 and IQ3 mixes follow llama.cpp', async (t) => {
  const count = (plan: { type: string }[]) => {
    const c: Record<string, number> = {};
    for (const p of plan) c[p.type] = (c[p.type] ?? 0) + 1;
    return c;
  };
  const type = (plan: { name: string; type: string }[], n: string) => plan.find((p) => p.name === n)!.type;
  const plan = (spec: ModelSpec) => planTensors(resolveSpec(spec));
  // TinyLlama-1.1B (22 layers, 8 query heads per KV head) as llama-quantize types it without an
  // importance matrix. These counts, and the per-tensor types of MHA, GQA-2, 8-expert llama,
  // qwen2moe, qwen3moe and odd-width shapes, were checked against llama_model_quantize's
  // --dry-run in node-llama-cpp's libllama.
  const tiny = (type: ModelSpec['type']) => plan({ preset: 'tinyllama-1.1b', type });
  const counts = {
    iq2_xxs_mix: { iq2_xxs: 130, q2_K: 3, q4_K: 22, q5_K: 1, f32: 45 },
    iq2_xs_mix: { iq2_xs: 130, q2_K: 3, q4_K: 22, q5_K: 1, f32: 45 },
    iq2_s_mix: { iq2_xs: 108, iq3_s: 25, q4_K: 22, q5_K: 1, f32: 45 },
    iq2_m: { iq2_s: 108, iq3_s: 25, q4_K: 22, q5_K: 1, f32: 45 },
    iq3_xxs_mix: { iq3_xxs: 44, iq2_s: 44, iq3_s: 23, q3_K: 20, q4_K: 24, q5_K: 1, f32: 45 },
    iq3_xs: { iq3_xxs: 78, iq3_s: 55, q4_K: 22, q6_K: 1, f32: 45 },
    iq3_s_mix: { iq3_s: 133, q4_K: 22, q6_K: 1, f32: 45 },
    iq3_m: { iq3_s: 109, q4_K: 46, q6_K: 1, f32: 45 },
  } as const;
  for (const [mix, c] of Object.entries(counts)) t.same(count(tiny(mix as keyof typeof counts)), c, mix);
  t.equal(FILE_TYPE_IDS.iq2_xxs_mix, 19);
  t.equal(FILE_TYPE_IDS.iq3_m, 27);

  const iq2 = tiny('iq2_xxs_mix');
  t.equal(type(iq2, 'token_embd.weight'), 'q2_K', 'IQ2_XXS: token_embd in q2_K');
  t.equal(type(iq2, 'output.weight'), 'q5_K', 'IQ2_XXS: output in q5_K');
  t.equal(type(iq2, 'blk.9.attn_v.weight'), 'q4_K', 'IQ2_XXS: attn_v in q4_K with 4 or more query heads per KV head');
  t.equal(type(iq2, 'blk.1.ffn_down.weight'), 'q2_K', 'IQ2_XXS: ffn_down of the first eighth in q2_K');
  t.equal(type(iq2, 'blk.2.ffn_down.weight'), 'iq2_xxs');
  const iq2m = tiny('iq2_m');
  t.equal(type(iq2m, 'blk.0.ffn_down.weight'), 'iq3_s', 'IQ2_M: raised tensors in iq3_s');
  t.equal(type(iq2m, 'blk.5.attn_output.weight'), 'iq3_s');
  t.equal(type(iq2m, 'blk.5.ffn_up.weight'), 'iq2_s');
  t.equal(type(tiny('iq2_s_mix'), 'blk.5.ffn_up.weight'), 'iq2_xs', "IQ2_S: llama.cpp's IQ2_S files start from iq2_xs");
  const mha = plan({ nHead: 4, nHeadKv: 4, type: 'iq2_xxs_mix' });
  t.equal(type(mha, 'blk.0.attn_v.weight'), 'q2_K', 'IQ2_XXS: attn_v in q2_K without grouped queries');
  // qwen2moe: the IQ2 rule counts ffn_down matrices (routed and shared) in llama.cpp's order,
  // so the first eighth of 24 layers is three matrices, not three layers.
  const qmoe = plan({ architecture: 'qwen2moe', nLayer: 24, nHead: 4, nHeadKv: 4, type: 'iq2_xxs_mix' });
  t.same(['blk.0.ffn_down_exps.weight', 'blk.0.ffn_down_shexp.weight', 'blk.1.ffn_down_exps.weight', 'blk.1.ffn_down_shexp.weight'].map((n) => type(qmoe, n)), ['q2_K', 'q2_K', 'q2_K', 'iq2_xxs']);
  t.equal(type(qmoe, 'blk.3.attn_v.weight'), 'q4_K', 'IQ2 mixes: attn_v in q4_K with 4 or more experts');

  const iq3 = tiny('iq3_xxs_mix');
  t.equal(type(iq3, 'token_embd.weight'), 'iq3_s');
  t.equal(type(iq3, 'blk.4.attn_q.weight'), 'iq2_s', 'IQ3_XXS: attn_q and attn_k in iq2_s');
  t.equal(type(iq3, 'blk.4.attn_k.weight'), 'iq2_s');
  t.equal(type(iq3, 'blk.4.attn_output.weight'), 'iq3_s');
  t.equal(type(iq3, 'blk.1.ffn_down.weight'), 'q4_K', 'IQ3_XXS without an importance matrix: ffn_down in q4_K, then q3_K');
  t.equal(type(iq3, 'blk.2.ffn_down.weight'), 'q3_K');
  t.equal(type(plan({ nHead: 4, nHeadKv: 4, type: 'iq3_xxs_mix' }), 'blk.1.attn_v.weight'), 'iq3_s', 'IQ3_XXS: attn_v in iq3_s without grouped queries');
  const iq3xs = tiny('iq3_xs');
  t.same([1, 2, 18, 19].map((l) => type(iq3xs, `blk.${l}.ffn_gate.weight`)), ['iq3_s', 'iq3_xxs', 'iq3_xxs', 'iq3_s'], 'IQ3_XS: iq3_xxs gate and up between the first and last eighth');
  const iq3m = tiny('iq3_m');
  t.equal(type(iq3m, 'blk.7.attn_output.weight'), 'q4_K');
  t.equal(type(iq3m, 'blk.1.ffn_down.weight'), 'q4_K');
  t.equal(type(iq3m, 'blk.2.ffn_down.weight'), 'iq3_s');
  const moe = plan({ preset: 'moe-8x-top2', type: 'iq3_m' });
  t.same([1, 2, 4, 14].map((l) => type(moe, `blk.${l}.ffn_down_exps.weight`)), ['q4_K', 'iq3_s', 'q4_K', 'q4_K'], 'IQ3_M, 8 experts: ffn_down in q4_K on the more-bits layers');
  t.equal(type(moe, 'blk.3.attn_v.weight'), 'q8_0');
  t.equal(type(plan({ preset: 'moe-8x-top2', type: 'iq2_xxs_mix' }), 'blk.3.attn_k.weight'), 'q4_K', 'IQ2 mixes, 8 experts: attn_k in q4_K');

  // Rows that do not fill 256-element blocks: the grid types fall back to iq4_nl, q2_K/q3_K to
  // q4_0, q4_K to q5_0; rows that do not fill 32 to f16 (output included).
  const odd = plan({ nEmbd: 288, nHead: 4, nFf: 544, type: 'iq3_xxs_mix' });
  t.same(['blk.0.attn_q.weight', 'blk.0.ffn_down.weight', 'blk.0.attn_v.weight', 'output.weight'].map((n) => type(odd, n)), ['iq4_nl', 'q4_0', 'iq4_nl', 'q8_0']);
  t.same(count(plan({ architecture: 'qwen2', nEmbd: 272, nHead: 4, nHeadKv: 4, nFf: 720, nLayer: 1, type: 'iq2_m' })), { f16: 9, f32: 6 });
  t.equal(type(plan({ nEmbd: 288, nHead: 4, nFf: 544, type: 'iq2_xs' }), 'blk.0.ffn_up.weight'), 'iq4_nl');
});

t.test('the MXFP4_MOE mix follows llama.cpp', async (t) => {
  const types = (plan: { name: string; type: string }[]) => Object.fromEntries(plan.filter((p) => p.name.startsWith('blk.0.') || !p.name.startsWith('blk.')).map((p) => [p.name, p.type]));
  // Stacks of experts in MXFP4, every other quantizable tensor (embeddings and output too) in Q8_0.
  const moe = types(planTensors(resolveSpec({ architecture: 'qwen2moe', type: 'mxfp4_moe' })));
  t.same(
    Object.entries(moe).filter(([, ty]) => ty === 'mxfp4').map(([n]) => n).sort(),
    ['blk.0.ffn_down_exps.weight', 'blk.0.ffn_gate_exps.weight', 'blk.0.ffn_up_exps.weight'],
    'experts only',
  );
  for (const n of ['token_embd.weight', 'output.weight', 'blk.0.attn_q.weight', 'blk.0.ffn_gate_shexp.weight']) t.equal(moe[n], 'q8_0', `${n}: q8_0`);
  t.equal(moe['blk.0.ffn_gate_inp.weight'], 'f32', 'router stays f32');
  // Pure MXFP4 (llama-quantize --pure): every quantizable tensor; rows that fill no block fall back to f16.
  const pure = types(planTensors(resolveSpec({ type: 'mxfp4' })));
  t.same([...new Set(Object.values(pure))].sort(), ['f32', 'mxfp4']);
  t.equal(types(planTensors(resolveSpec({ nEmbd: 200, nHead: 4, type: 'mxfp4' })))['blk.0.attn_q.weight'], 'f16');
  t.equal(FILE_TYPE_IDS.mxfp4_moe, 38, 'general.file_type: LLAMA_FTYPE_MOSTLY_MXFP4_MOE');
});

t.test('preset sizes', async (t) => {
  const params = (preset: ModelSpec['preset']) =>
    planTensors(resolveSpec({ preset })).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  t.equal(params('tinyllama-1.1b'), 1_100_048_384, 'TinyLlama-1.1B exactly');
  t.equal(params('llama2-7b'), 6_738_415_616, 'Llama-2-7B exactly');
  t.equal(params('llama3-8b'), 8_030_261_248, 'Llama-3-8B exactly');
  // 48 layers of 623,120,640 (attention, QK norms, router, 128 experts of 3 x 2048 x 768) and untied embeddings.
  t.equal(params('qwen3-30b-a3b'), 30_532_122_624, "Qwen3-30B-A3B's 30.5B");
  // Gemma-3-1B ties its output to the embeddings; synthetic files write output.weight apart.
  t.equal(params('gemma3-1b') - 262144 * 1152, 999_885_952, "Gemma-3-1B's 999,885,952 and an untied output");
  t.equal(params('gemma2-2b'), 2_614_341_888, "Gemma-2-2B's 2,614,341,888 (always tied)");
  const moe = params('moe-8x-top2');
  t.ok(moe > 900e6 && moe < 950e6, `8x top-2 MoE: ${moe} parameters (about 928M)`);
});

t.test('vocabularies: synthetic SPM and copied', async (t) => {
  const v = syntheticVocab(1000);
  const tokens = (v.entries.find((e) => e.key === 'tokenizer.ggml.tokens')!.value as GgufArray).value as string[];
  t.equal(tokens.length, 1000);
  t.equal(new Set(tokens).size, 1000, 'tokens are unique');
  t.same(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>']);
  t.equal(tokens[258], '<0xFF>');
  const p = tmpFile();
  await makeModel({ vocab: modelPath('vocab/ggml-vocab-llama-spm.gguf'), nVocab: 32000, nLayer: 1 }, p);
  const f = GgufFile.open(p);
  const src = GgufFile.open(modelPath('vocab/ggml-vocab-llama-spm.gguf'));
  for (const e of src.metadata.values()) {
    if (!e.key.startsWith('tokenizer.')) continue;
    const got = f.metadata.get(e.key);
    t.ok(got, `copied ${e.key}`);
    if (e.type === 'array') {
      const [a, b] = [(got!.value as GgufArray).value, (e.value as GgufArray).value];
      t.ok(a.length === b.length && Array.from(a).every((x, i) => x === b[i]), `${e.key} values`);
    }
    else t.equal(got!.value, e.value, `${e.key} value`);
  }
  t.same(f.tensor('token_embd.weight')!.shape, [256, 32000]);
  f.close();
  src.close();
});

t.test('bad specs give typed errors naming the problem', async (t) => {
  const bad = async (spec: ModelSpec, match: RegExp, code = 'TDM_BAD_ARGUMENT') => {
    await t.rejects(makeModel(spec, tmpFile()), { code, message: match }, match.source);
  };
  await bad({ architecture: 'gpt2' as never }, /unknown architecture 'gpt2'/);
  await bad({ type: 'iq1_s' as never }, /unknown type 'iq1_s'/);
  await bad({ preset: 'huge' as never }, /unknown preset 'huge'/);
  await bad({ nHead: 4, nHeadKv: 3 }, /multiple of nHeadKv/);
  await bad({ nEmbd: 250, nHead: 4 }, /headDim must be an even integer/);
  await bad({ architecture: 'qwen2', headDim: 32 }, /headDim × nHead = nEmbd/);
  await bad({ architecture: 'olmoe', nHeadKv: 2 }, /olmoe needs nHeadKv = nHead/);
  await bad({ architecture: 'qwen2moe', preset: 'tinyllama-1.1b' }, /nExpert must be at least 2/);
  await bad({ nExpert: 4, nExpertUsed: 5 }, /nExpertUsed must be an integer from 1 to nExpert/);
  await bad({ architecture: 'qwen3moe', nFfShared: 64 }, /only in qwen2moe/);
  await bad({ nVocab: 100 }, /at least 259 tokens/);
  await bad({ nLayer: 0 }, /nLayer must be an integer/);
  await bad({ nExpert: 8, nExpertUsed: 2, routerSkew: -1 }, /routerSkew must be a number from 0 to 4/);
  await bad({ nExpert: 8, nExpertUsed: 2, routerSkew: 5 }, /routerSkew must be a number from 0 to 4/);
  await bad({ routerSkew: 1 }, /routerSkew needs a MoE model/);
  await bad({ ropeScaling: { type: 'yarn', factor: 0.5 } }, /ropeScaling\.factor must be a number of at least 1/);
  await bad({ ropeScaling: { type: 'ntk' as never, factor: 2 } }, /ropeScaling\.type must be 'linear' or 'yarn'/);
  await bad({ ropeScaling: { type: 'linear', factor: 2, originalContext: 64 } }, /originalContext must be .*for YaRN only/);
  await bad({ ropeScaling: { type: 'yarn', factor: 2, originalContext: 0 } }, /originalContext must be an integer/);
  await bad({ ropeScaling: { type: 'yarn', factor: 2, attnFactor: 0 } }, /attnFactor must be a positive number/);
  await bad({ seed: -1 }, /seed must be an integer/);
  await bad({ architecture: 'gemma2', slidingWindow: 0 }, /slidingWindow must be an integer from 1/);
  await bad({ architecture: 'gemma2', nExpert: 4 }, /gemma2 is dense/);
  await bad({ architecture: 'gemma2', tiedEmbeddings: false }, /gemma2 always ties/);
  await bad({ architecture: 'gemma2', softcaps: { attention: -1 } }, /softcaps\.attention must be 0 or a positive number/);
  await bad({ architecture: 'gemma3', softcaps: { attention: 50 } }, /softcaps\.attention exists only in gemma2/);
  await bad({ architecture: 'llama', softcaps: { final: 30 } }, /softcaps\.final exists only in gemma2 and gemma3/);
  await bad({ tensorTypes: { 'blk.9.attn_q.weight': 'q8_0' } }, /no tensor 'blk.9.attn_q.weight'/);
  await bad({ tensorData: { 'output_norm.weight': new Float32Array(3) } }, /has 3 values; the tensor has 256/);
  await bad({ vocab: modelPath('vocab/ggml-vocab-llama-spm.gguf'), nVocab: 100 }, /disagrees with the 32000 tokens/);
  await bad({ vocab: path.join(dir, 'missing.gguf') }, /vocab file: .*no such file/, 'TDM_NOT_FOUND');
});

t.test("soft caps are written as Gemma's files name them", async (t) => {
  const read = async (spec: ModelSpec) => {
    const p = tmpFile();
    await makeModel({ nLayer: 1, ...spec }, p);
    const f = GgufFile.open(p);
    const a = f.architecture;
    const caps = [f.has(`${a}.attn_logit_softcapping`) ? f.getNumber(`${a}.attn_logit_softcapping`) : undefined, f.has(`${a}.final_logit_softcapping`) ? f.getNumber(`${a}.final_logit_softcapping`) : undefined];
    f.close();
    return caps;
  };
  t.same(await read({ architecture: 'gemma2' }), [50, 30], "gemma2: Gemma 2's 50 and 30");
  t.same(await read({ architecture: 'gemma2', softcaps: { attention: 1.5, final: 0 } }), [1.5, 0], 'the spec\'s caps');
  t.same(await read({ architecture: 'gemma3' }), [undefined, undefined], 'gemma3: none by default');
  t.same(await read({ architecture: 'gemma3', softcaps: { final: 30 } }), [undefined, 30], "gemma3's final cap");
});

t.test('ropeScaling is written to the rope.scaling keys', async (t) => {
  const p = tmpFile();
  await makeModel({ architecture: 'qwen2', nLayer: 1, ropeScaling: { type: 'yarn', factor: 4, originalContext: 64, attnFactor: 0.5 } }, p);
  const f = GgufFile.open(p);
  t.equal(f.metadata.get('qwen2.rope.scaling.type')?.value, 'yarn');
  t.same(['factor', 'original_context_length', 'attn_factor'].map((k) => f.getNumber(`qwen2.rope.scaling.${k}`)), [4, 64, 0.5]);
  f.close();
  const q = tmpFile();
  await makeModel({ nLayer: 1, ropeScaling: { type: 'linear', factor: 2 } }, q);
  const g = GgufFile.open(q);
  t.equal(g.getNumber('llama.rope.scaling.factor'), 2);
  t.notOk(g.has('llama.rope.scaling.original_context_length') || g.has('llama.rope.scaling.attn_factor'), 'no YaRN keys for linear scaling');
  g.close();
});

t.test('routerSkew concentrates routing on fewer experts, and is written down', async (t) => {
  // Batch 16 on the CPU stand-in with every expert on the CPU: the distinct experts each layer
  // runs per decode step (7.9 of 8 when 32 routed rows fall uniformly; fewer when skewed).
  const { measureExpertOffload } = await import('../../src/sched/experts/native.js');
  const distinct = async (routerSkew: number) => {
    const file = tmpFile();
    await makeModel({ preset: 'tiny', architecture: 'qwen2moe', nExpert: 8, nExpertUsed: 2, nLayer: 2, type: 'q8_0', seed: 21, routerSkew }, file);
    if (routerSkew > 0) {
      const g = GgufFile.open(file);
      t.equal(g.getNumber('tandem.synthetic.router_skew'), routerSkew, 'the skew is in the metadata');
      g.close();
    }
    const r = await measureExpertOffload(file, { policy: 'cpu-all', device: 'cpu-standin', threads: 1, batch: 16, promptTokens: 8, decodeSteps: 6, warmupSteps: 1, cpuVariant: 'ref' });
    return r.decode!.cpuExperts / (6 * 2);
  };
  const flat = await distinct(0);
  const skewed = await distinct(4);
  t.ok(flat > 7, `unskewed: ${flat.toFixed(2)} distinct experts of 8 per layer and step`);
  t.ok(skewed < flat - 0.5, `routerSkew 4: ${skewed.toFixed(2)}`);
});
