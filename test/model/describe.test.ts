// describeModel: hyperparameters from real and synthetic GGUFs of every supported
// architecture, llama.cpp's per-architecture rules, and typed errors for bad metadata.
import t from 'tap';
import { describeModel, type ModelHyperparams } from '../../src/model/describe.js';
import { GgufFile } from '../../src/model/gguf.js';
import { modelPath } from '../helpers.js';
import { removeTemp, writeTinyModel, type Kv, type TinyModelOptions } from './gguf-test-writer.js';

t.teardown(removeTemp);

let counter = 0;
function describeTiny(opts: TinyModelOptions) {
  const f = GgufFile.open(writeTinyModel(`describe-${counter++}.gguf`, opts));
  try {
    return describeModel(f);
  } finally {
    f.close();
  }
}

const u32 = (key: string, value: number): Kv => ({ key, type: 'uint32', value });

t.test('stories260K', async (t) => {
  const f = GgufFile.open(modelPath('stories260K.gguf'));
  const d = describeModel(f);
  const expected: ModelHyperparams = {
    architecture: 'llama',
    nVocab: 512,
    nCtxTrain: 2048,
    nEmbd: 64,
    nLayer: 5,
    nHead: 8,
    nHeadKv: 4,
    headDim: 8,
    headDimV: 8,
    nFf: 172,
    nExpert: 0,
    nExpertUsed: 0,
    nFfExpert: 0,
    nFfShared: 0,
    ropeType: 'norm',
    ropeDim: 8,
    ropeFreqBase: 10000,
    ropeScaling: 'linear',
    ropeFreqScale: 1,
    ropeAttnFactor: 1,
    yarnExtFactor: 0,
    yarnBetaFast: 32,
    yarnBetaSlow: 1,
    yarnOrigCtx: 2048,
    rmsEps: Math.fround(1e-5),
    expertWeightsNorm: false,
    expertGating: 'softmax',
    hasQkvBias: false,
    hasQkNorm: false,
    hasSharedExpert: false,
    tiedEmbeddings: false,
    slidingWindow: 0,
    slidingWindowPeriod: 0,
    ropeFreqBaseSwa: 10000,
    ropeFreqScaleSwa: 1,
    hasAttnSinks: false,
    hasExpertBias: false,
    swigluOai: false,
    embeddingScale: 1,
    attentionScale: Math.fround(1 / Math.fround(Math.sqrt(8))),
    hasPostNorms: false,
    ffnActivation: 'silu',
    attnLogitSoftcap: 0,
    finalLogitSoftcap: 0,
  };
  t.same(d.hparams, expected);
  const perLayer = 64 + 64 * 64 + 2 * 64 * 32 + 64 * 64 + 64 + 3 * 64 * 172;
  const params = 2 * 64 * 512 + 64 + 5 * perLayer;
  t.equal(d.parameterCount, params);
  t.equal(d.weightBytes, params * 4);
  t.same(d.typesUsed, [{ type: 'f32', tensors: 48, bytes: params * 4 }]);
  t.equal(d.kvBytesPerToken, 5 * 4 * (8 + 8) * 2, 'f16 K and V: layers x kv heads x (key + value dims) x 2 bytes');
  t.equal(d.name, 'llama');
  t.equal(d.path, modelPath('stories260K.gguf'));
  t.equal(d.tensors.length, 48);
  f.close();
});

t.test('llama-2-tiny-random (f16 matrices, f32 norms)', async (t) => {
  const f = GgufFile.open(modelPath('llama-2-tiny-random.gguf'));
  const d = describeModel(f);
  t.equal(d.hparams.nVocab, 32000);
  t.equal(d.hparams.headDim, 4);
  t.equal(d.hparams.ropeDim, 4);
  t.same(d.typesUsed.map((u) => [u.type, u.tensors]), [['f16', 9], ['f32', 3]]);
  t.equal(d.typesUsed[0].bytes, (2 * 8 * 32000 + 4 * 64 + 3 * 8 * 32) * 2);
  t.equal(d.name, 'LLaMA v2');
  f.close();
});

t.test('each architecture follows its llama.cpp rules', async (t) => {
  const qwen2 = describeTiny({ arch: 'qwen2' }).hparams;
  t.match(qwen2, { architecture: 'qwen2', ropeType: 'neox', hasQkvBias: true, nExpert: 0, hasQkNorm: false, tiedEmbeddings: false });

  const tied = describeTiny({ arch: 'qwen2', tied: true }).hparams;
  t.equal(tied.tiedEmbeddings, true);

  const mixtral = describeTiny({ arch: 'llama', nExpert: 4, nExpertUsed: 2 }).hparams;
  t.match(mixtral, { ropeType: 'norm', nExpert: 4, nExpertUsed: 2, nFfExpert: 96, expertWeightsNorm: true, expertGating: 'softmax', hasSharedExpert: false });

  const q2m = describeTiny({ arch: 'qwen2moe' }).hparams;
  t.match(q2m, { ropeType: 'neox', nExpert: 4, nFfExpert: 32, nFfShared: 48, hasSharedExpert: true, expertWeightsNorm: false, hasQkvBias: true });

  const q3m = describeTiny({ arch: 'qwen3moe' }).hparams;
  t.match(q3m, { ropeType: 'neox', nFfExpert: 32, nFfShared: 0, hasSharedExpert: false, expertWeightsNorm: true, hasQkNorm: true, hasQkvBias: false });

  const olmoe = describeTiny({ arch: 'olmoe' }).hparams;
  t.match(olmoe, { ropeType: 'neox', nFfExpert: 96, expertWeightsNorm: false, hasQkNorm: true, nHeadKv: 4 });

  // llama.cpp sizes llama and olmoe experts by feed_forward_length and ignores this key.
  const ignored = describeTiny({ arch: 'olmoe', kvs: [u32('olmoe.expert_feed_forward_length', 999)] }).hparams;
  t.equal(ignored.nFfExpert, 96);

  const dense = describeTiny({ arch: 'llama' }).hparams;
  t.equal(dense.expertWeightsNorm, false, 'no experts, nothing to normalise');

  // qwen3moe without expert_feed_forward_length: llama.cpp uses n_ff / n_expert_used.
  const q3default = describeTiny({ arch: 'qwen3moe', nFf: 64, nFfExpert: 32, dropKeys: ['qwen3moe.expert_feed_forward_length'] }).hparams;
  t.equal(q3default.nFfExpert, 32);
  // qwen2moe without the shared width: llama.cpp uses n_ff.
  const q2default = describeTiny({ arch: 'qwen2moe', nFf: 48, nFfShared: 48, dropKeys: ['qwen2moe.expert_shared_feed_forward_length'] }).hparams;
  t.equal(q2default.nFfShared, 48);
});

t.test('optional keys and their defaults', async (t) => {
  const h = describeTiny({ arch: 'llama', dropKeys: ['llama.attention.head_count_kv', 'llama.rope.freq_base'], nHeadKv: 4 }).hparams;
  t.equal(h.nHeadKv, 4, 'head_count_kv defaults to head_count');
  t.equal(h.ropeFreqBase, 10000);
  t.equal(h.ropeDim, 16);

  const linear = describeTiny({
    arch: 'llama',
    kvs: [{ key: 'llama.rope.scaling.type', type: 'string', value: 'linear' }, { key: 'llama.rope.scaling.factor', type: 'float32', value: 4 }],
  }).hparams;
  t.equal(linear.ropeFreqScale, 0.25);
  const none = describeTiny({
    arch: 'llama',
    kvs: [{ key: 'llama.rope.scaling.type', type: 'string', value: 'none' }, { key: 'llama.rope.scaling.factor', type: 'float32', value: 4 }],
  }).hparams;
  t.equal(none.ropeFreqScale, 1, "scaling type 'none' never scales");

  // YaRN as llama.cpp reads it for these architectures: type, factor, original context and
  // attention factor; ext factor 1 and betas 32 and 1 are its defaults, whatever the file says.
  const yarn = describeTiny({
    arch: 'qwen2',
    kvs: [
      { key: 'qwen2.rope.scaling.type', type: 'string', value: 'yarn' },
      { key: 'qwen2.rope.scaling.factor', type: 'float32', value: 4 },
      u32('qwen2.rope.scaling.original_context_length', 64),
      { key: 'qwen2.rope.scaling.yarn_beta_fast', type: 'float32', value: 16 },
      { key: 'qwen2.rope.scaling.yarn_log_multiplier', type: 'float32', value: 0.1 },
    ],
  }).hparams;
  t.match(yarn, { ropeScaling: 'yarn', ropeFreqScale: 0.25, ropeAttnFactor: 1, yarnExtFactor: 1, yarnBetaFast: 32, yarnBetaSlow: 1, yarnOrigCtx: 64 });
  const yarnDefaults = describeTiny({ arch: 'llama', kvs: [{ key: 'llama.rope.scaling.type', type: 'string', value: 'yarn' }, u32('llama.rope.scaling.original_context_length', 0)] }).hparams;
  t.match(yarnDefaults, { ropeScaling: 'yarn', ropeFreqScale: 1, yarnExtFactor: 1, yarnOrigCtx: yarnDefaults.nCtxTrain }, 'no factor: 1; original context 0 or none: the training context');
  const attn = describeTiny({ arch: 'llama', kvs: [{ key: 'llama.rope.scaling.attn_factor', type: 'float32', value: 0.5 }] }).hparams;
  t.match(attn, { ropeScaling: 'linear', ropeAttnFactor: 0.5, yarnExtFactor: 0 }, 'rope.scaling.attn_factor applies without YaRN too');
  const stray = describeTiny({ arch: 'llama', kvs: [{ key: 'llama.rope.scaling.original_context_length', type: 'string', value: 'x' }] }).hparams;
  t.equal(stray.yarnOrigCtx, stray.nCtxTrain, 'original_context_length is read for YaRN only');

  const wide = describeTiny({ arch: 'qwen3moe', headDim: 32 }).hparams;
  t.match(wide, { nEmbd: 64, nHead: 4, headDim: 32, headDimV: 32, ropeDim: 32 }, 'key_length may differ from nEmbd / nHead');

  const perLayer = describeTiny({
    arch: 'llama',
    kvs: [{ key: 'llama.attention.head_count_kv', type: 'array', elementType: 'int32', value: [2, 2] }],
  }).hparams;
  t.equal(perLayer.nHeadKv, 2, 'a per-layer array with equal entries is accepted');

  const u64 = describeTiny({ arch: 'llama', kvs: [{ key: 'llama.context_length', type: 'uint64', value: 4096n }] }).hparams;
  t.equal(u64.nCtxTrain, 4096);
  const vocabKey = describeTiny({ arch: 'llama', dropKeys: ['tokenizer.ggml.tokens'] }).hparams;
  t.equal(vocabKey.nVocab, 64, 'vocabulary size from token_embd when the file has no tokenizer');
});

t.test('gemma3: its sliding layers, RoPE, scales, norms and activation as llama.cpp reads them', async (t) => {
  const f32 = (key: string, value: number): Kv => ({ key, type: 'float32', value });
  const scale = (d: number) => Math.fround(1 / Math.fround(Math.sqrt(d)));
  // A window: five layers in six slide, with theta 10000 and no scaling unless the file says.
  const g = describeTiny({ arch: 'gemma3', nEmbd: 96, nHead: 2, headDim: 64, nLayer: 6,
    kvs: [u32('gemma3.attention.sliding_window', 512), f32('gemma3.rope.freq_base', 1e6), { key: 'gemma3.rope.scaling.type', type: 'string', value: 'linear' }, f32('gemma3.rope.scaling.factor', 8)] }).hparams;
  t.match(g, {
    architecture: 'gemma3', ropeType: 'neox', hasQkNorm: true, hasPostNorms: true, ffnActivation: 'gelu', nExpert: 0,
    slidingWindow: 512, slidingWindowPeriod: 6, ropeFreqBase: 1e6, ropeFreqBaseSwa: 10000, ropeFreqScale: 0.125, ropeFreqScaleSwa: 1,
    embeddingScale: Math.fround(Math.sqrt(96)), attentionScale: scale(64),
  });
  t.equal(g.embeddingScale, Math.fround(Math.sqrt(96)), 'sqrtf(n_embd)');
  // The file's pattern and sliding theta; no window: every layer global.
  t.match(describeTiny({ arch: 'gemma3', kvs: [u32('gemma3.attention.sliding_window', 64), u32('gemma3.attention.sliding_window_pattern', 3), f32('gemma3.rope.freq_base_swa', 5000)] }).hparams,
    { slidingWindow: 64, slidingWindowPeriod: 3, ropeFreqBaseSwa: 5000 });
  t.match(describeTiny({ arch: 'gemma3' }).hparams, { slidingWindow: 0, slidingWindowPeriod: 0, ropeFreqBaseSwa: 10000 });
  // gemma3-27B (62 layers) scales queries by 1/sqrt(nEmbd / nHead) rather than by the head size.
  t.equal(describeTiny({ arch: 'gemma3', nLayer: 62, nEmbd: 96, nHead: 2, headDim: 64 }).hparams.attentionScale, scale(48));
  // Every other architecture keeps 1/sqrt(headDim) and its plain forward pass.
  t.match(describeTiny({ arch: 'qwen2' }).hparams, { embeddingScale: 1, attentionScale: scale(16), hasPostNorms: false, ffnActivation: 'silu' });
  t.match(describeTiny({ arch: 'gemma3' }).hparams, { attnLogitSoftcap: 0, finalLogitSoftcap: 0 }, 'no soft caps unless the file says');
  t.match(describeTiny({ arch: 'gemma3', kvs: [f32('gemma3.final_logit_softcapping', 30)] }).hparams, { attnLogitSoftcap: 0, finalLogitSoftcap: 30 }, 'the file\'s final soft cap');
  t.throws(() => describeTiny({ arch: 'gemma3', dropTensors: ['blk.1.post_ffw_norm.weight'] }), { code: 'TDM_BAD_GGUF', message: /post_ffw_norm/ }, 'a missing post norm is named');
  t.throws(() => describeTiny({ arch: 'gemma3', nExpert: 4 }), { code: 'TDM_BAD_GGUF', message: /gemma3 has no experts/ }, 'no experts');
});

t.test('gemma2: window, soft caps, scales, norms and activation as llama.cpp reads them', async (t) => {
  const f32 = (key: string, value: number): Kv => ({ key, type: 'float32', value });
  const scale = (d: number) => Math.fround(1 / Math.fround(Math.sqrt(d)));
  const g = describeTiny({ arch: 'gemma2', nEmbd: 96, nHead: 2, headDim: 64, nLayer: 4, kvs: [f32('gemma2.rope.freq_base', 1e4)] }).hparams;
  t.match(g, {
    architecture: 'gemma2', ropeType: 'neox', hasQkNorm: false, hasPostNorms: true, ffnActivation: 'gelu', nExpert: 0,
    // No window key: 4096, every other layer sliding with the global layers' RoPE.
    slidingWindow: 4096, slidingWindowPeriod: 2, ropeFreqBaseSwa: 1e4, ropeFreqScaleSwa: 1,
    embeddingScale: Math.fround(Math.sqrt(96)), attentionScale: scale(64),
    attnLogitSoftcap: 50, finalLogitSoftcap: 30,
  });
  const keys = describeTiny({ arch: 'gemma2', kvs: [u32('gemma2.attention.sliding_window', 128), u32('gemma2.attention.sliding_window_pattern', 3),
    f32('gemma2.rope.freq_base_swa', 5000), f32('gemma2.attn_logit_softcapping', 20), f32('gemma2.final_logit_softcapping', 0),
    { key: 'gemma2.rope.scaling.type', type: 'string', value: 'linear' }, f32('gemma2.rope.scaling.factor', 2)] }).hparams;
  t.match(keys, { slidingWindow: 128, slidingWindowPeriod: 3, ropeFreqBaseSwa: 5000, ropeFreqScale: 0.5, ropeFreqScaleSwa: 0.5, attnLogitSoftcap: 20, finalLogitSoftcap: 0 },
    'the file\'s window, pattern, sliding theta and caps (0: none); the sliding layers share the scaling');
  // gemma2-27B (46 layers) scales queries by 1/sqrt(nEmbd / nHead).
  t.equal(describeTiny({ arch: 'gemma2', nLayer: 46, nEmbd: 96, nHead: 2, headDim: 64 }).hparams.attentionScale, scale(48));
  t.equal(describeTiny({ arch: 'gemma2', nLayer: 4, nEmbd: 96, nHead: 2, headDim: 64 }).hparams.attentionScale, scale(64));
  t.throws(() => describeTiny({ arch: 'gemma2', kvs: [f32('gemma2.attn_logit_softcapping', -1)] }), { code: 'TDM_BAD_GGUF', message: /attn_logit_softcapping is -1/ }, 'a negative cap is refused');
  t.throws(() => describeTiny({ arch: 'gemma2', kvs: [f32('gemma2.final_logit_softcapping', Infinity)] }), { code: 'TDM_BAD_GGUF', message: /final_logit_softcapping/ }, 'an infinite cap is refused');
  t.throws(() => describeTiny({ arch: 'gemma2', dropTensors: ['blk.0.post_attention_norm.weight'] }), { code: 'TDM_BAD_GGUF', message: /post_attention_norm/ }, 'a missing post norm is named');
  t.throws(() => describeTiny({ arch: 'gemma2', nExpert: 4 }), { code: 'TDM_BAD_GGUF', message: /gemma2 has no experts/ }, 'no experts');
  t.equal(g.tiedEmbeddings, true, 'the output is token_embd');
  t.throws(() => describeTiny({ arch: 'gemma2', tied: false }), { code: 'TDM_UNSUPPORTED', message: /tensor 'output\.weight' is not part of a gemma2 model/ }, 'an output.weight is refused, as llama.cpp refuses it');
  t.match(describeTiny({ arch: 'llama' }).hparams, { attnLogitSoftcap: 0, finalLogitSoftcap: 0 }, 'other architectures have no caps');
});

t.test('gemma (Gemma 1): scaled embeddings and GeGLU, no window, caps or post norms', async (t) => {
  const g = describeTiny({ arch: 'gemma', nEmbd: 96, nHead: 2, headDim: 64, nLayer: 2 }).hparams;
  t.match(g, {
    architecture: 'gemma', ropeType: 'neox', hasQkNorm: false, hasPostNorms: false, ffnActivation: 'gelu', tiedEmbeddings: true,
    slidingWindow: 0, embeddingScale: Math.fround(Math.sqrt(96)), attentionScale: Math.fround(1 / Math.fround(Math.sqrt(64))), attnLogitSoftcap: 0, finalLogitSoftcap: 0,
  });
  t.throws(() => describeTiny({ arch: 'gemma', tied: false }), { code: 'TDM_UNSUPPORTED', message: /tensor 'output\.weight' is not part of a gemma model/ }, 'an output.weight is refused, as llama.cpp refuses it');
});

t.test('metadata errors name the file and the key', async (t) => {
  const fails = (opts: TinyModelOptions, code: string, message: RegExp, name: string) =>
    t.throws(() => describeTiny(opts), { code, message }, name);
  fails({ arch: 'llama', kvs: [{ key: 'general.architecture', type: 'string', value: 'mamba' }] }, 'TDM_UNSUPPORTED',
    /architecture 'mamba' is not supported \(supported: llama, qwen2, qwen3, qwen2moe, qwen3moe, olmoe, gpt-oss, gemma, gemma2, gemma3\)/, 'unknown architecture');
  fails({ arch: 'llama', dropKeys: ['general.architecture'] }, 'TDM_BAD_GGUF', /general\.architecture/, 'no architecture');
  fails({ arch: 'llama', dropKeys: ['llama.embedding_length'] }, 'TDM_BAD_GGUF', /describe-\d+\.gguf: missing required metadata key 'llama\.embedding_length'/, 'missing key');
  fails({ arch: 'qwen2', dropKeys: ['qwen2.attention.layer_norm_rms_epsilon'] }, 'TDM_BAD_GGUF', /layer_norm_rms_epsilon/, 'missing eps');
  fails({ arch: 'llama', kvs: [{ key: 'llama.block_count', type: 'string', value: '2' }] }, 'TDM_BAD_GGUF', /'llama\.block_count' is string, expected an unsigned integer/, 'wrong type');
  fails({ arch: 'llama', kvs: [{ key: 'llama.block_count', type: 'float32', value: 2 }] }, 'TDM_BAD_GGUF', /block_count/, 'float for an integer');
  fails({ arch: 'llama', kvs: [{ key: 'llama.block_count', type: 'int32', value: -2 }] }, 'TDM_BAD_GGUF', /block_count/, 'negative');
  fails({ arch: 'llama', kvs: [{ key: 'llama.block_count', type: 'uint64', value: 1n << 60n }] }, 'TDM_BAD_GGUF', /block_count/, '2^60 layers');
  fails({ arch: 'llama', kvs: [u32('llama.block_count', 100000)] }, 'TDM_BAD_GGUF', /block_count is 100000, outside the plausible range/, 'absurd layers');
  fails({ arch: 'llama', kvs: [u32('llama.block_count', 0)] }, 'TDM_BAD_GGUF', /block_count is 0/, 'zero layers');
  fails({ arch: 'llama', kvs: [u32('llama.attention.head_count', 0)] }, 'TDM_BAD_GGUF', /head_count is 0/, 'zero heads');
  fails({ arch: 'llama', kvs: [u32('llama.embedding_length', 66)] }, 'TDM_BAD_GGUF', /embedding_length 66 is not divisible by attention\.head_count 4/, 'indivisible');
  fails({ arch: 'llama', kvs: [u32('llama.attention.head_count_kv', 3)] }, 'TDM_BAD_GGUF', /not a multiple of attention\.head_count_kv 3/, 'bad GQA');
  fails({ arch: 'llama', kvs: [u32('llama.attention.head_count_kv', 8)] }, 'TDM_BAD_GGUF', /head_count_kv is 8/, 'more kv heads than heads');
  fails({ arch: 'llama', kvs: [u32('llama.rope.dimension_count', 8)] }, 'TDM_UNSUPPORTED', /rope dimension 8/, 'partial rope');
  fails({ arch: 'llama', kvs: [{ key: 'llama.attention.layer_norm_rms_epsilon', type: 'float32', value: 0 }] }, 'TDM_BAD_GGUF', /epsilon is 0/, 'zero eps');
  fails({ arch: 'llama', kvs: [{ key: 'llama.rope.freq_base', type: 'float32', value: -1 }] }, 'TDM_BAD_GGUF', /freq_base is -1/, 'negative theta');
  fails({ arch: 'llama', kvs: [{ key: 'llama.rope.freq_base', type: 'float64', value: NaN }] }, 'TDM_BAD_GGUF', /freq_base/, 'NaN theta');
  fails({ arch: 'llama', kvs: [{ key: 'llama.rope.scaling.type', type: 'string', value: 'longrope' }] }, 'TDM_UNSUPPORTED', /rope scaling 'longrope' is not supported/, 'longrope');
  const yarnType: Kv = { key: 'llama.rope.scaling.type', type: 'string', value: 'yarn' };
  fails({ arch: 'llama', kvs: [yarnType, { key: 'llama.rope.scaling.factor', type: 'float32', value: 0.5 }] }, 'TDM_BAD_GGUF', /rope\.scaling\.factor is 0\.5; YaRN stretches the context/, 'YaRN factor below 1');
  fails({ arch: 'llama', kvs: [yarnType, { key: 'llama.rope.scaling.factor', type: 'float32', value: -4 }] }, 'TDM_BAD_GGUF', /rope scaling factor is -4/, 'negative YaRN factor');
  fails({ arch: 'llama', kvs: [yarnType, { key: 'llama.rope.scaling.original_context_length', type: 'string', value: '64' }] }, 'TDM_BAD_GGUF', /original_context_length' is string/, 'original context of the wrong type');
  fails({ arch: 'llama', kvs: [yarnType, { key: 'llama.rope.scaling.original_context_length', type: 'uint64', value: 1n << 40n }] }, 'TDM_BAD_GGUF', /original_context_length is 1099511627776, outside the plausible range/, 'absurd original context');
  fails({ arch: 'llama', kvs: [{ key: 'llama.rope.scaling.attn_factor', type: 'float32', value: 0 }] }, 'TDM_BAD_GGUF', /rope\.scaling\.attn_factor is 0, expected a positive number/, 'zero attention factor');
  fails({ arch: 'llama', kvs: [{ key: 'llama.rope.scaling.attn_factor', type: 'float64', value: Infinity }] }, 'TDM_BAD_GGUF', /attn_factor/, 'infinite attention factor');
  fails({ arch: 'llama', kvs: [{ key: 'llama.rope.scaling.type', type: 'string', value: 'weird' }] }, 'TDM_BAD_GGUF', /rope scaling type 'weird'/, 'unknown scaling');
  fails({ arch: 'qwen3moe', dropKeys: ['qwen3moe.expert_count'] }, 'TDM_BAD_GGUF', /mixture of experts but 'qwen3moe\.expert_count' is missing/, 'MoE without experts');
  fails({ arch: 'olmoe', kvs: [u32('olmoe.expert_used_count', 5)] }, 'TDM_BAD_GGUF', /expert_used_count is 5, expected 1 to expert_count \(4\)/, 'too many used experts');
  fails({ arch: 'llama', kvs: [u32('llama.expert_used_count', 2)] }, 'TDM_BAD_GGUF', /no experts/, 'used experts without experts');
  fails({ arch: 'qwen2', kvs: [u32('qwen2.expert_count', 4), u32('qwen2.expert_used_count', 2)] }, 'TDM_BAD_GGUF', /qwen2 has no experts/, 'experts on a dense architecture');
  fails({ arch: 'llama', kvs: [{ key: 'llama.attention.head_count_kv', type: 'array', elementType: 'uint32', value: [2, 4] }] }, 'TDM_UNSUPPORTED', /differs between layers \(2, 4\)/, 'per-layer shapes');
  fails({ arch: 'llama', kvs: [{ key: 'llama.attention.head_count_kv', type: 'array', elementType: 'uint32', value: [2] }] }, 'TDM_BAD_GGUF', /1 entries, expected one per layer \(2\)/, 'short per-layer array');
  fails({ arch: 'llama', kvs: [{ key: 'tokenizer.ggml.tokens', type: 'string', value: 'x' }] }, 'TDM_BAD_GGUF', /tokenizer\.ggml\.tokens' is string, expected an array/, 'tokens not an array');
});

t.test('tensor errors name the tensor', async (t) => {
  const fails = (opts: TinyModelOptions, code: string, message: RegExp, name: string) =>
    t.throws(() => describeTiny(opts), { code, message }, name);
  fails({ arch: 'llama', dropTensors: ['blk.1.ffn_up.weight'] }, 'TDM_BAD_GGUF', /missing tensor 'blk\.1\.ffn_up\.weight'/, 'missing tensor');
  fails({ arch: 'llama', kvs: [u32('llama.attention.head_count_kv', 4)] }, 'TDM_BAD_GGUF',
    /tensor 'blk\.0\.attn_k\.weight' has shape \[64, 32\], expected \[64, 64\]/, 'shape disagrees with head_count_kv');
  fails({ arch: 'llama', kvs: [u32('llama.feed_forward_length', 100)] }, 'TDM_BAD_GGUF', /tensor 'blk\.0\.ffn_gate\.weight' has shape \[64, 96\], expected \[64, 100\]/, 'nFf');
  fails({ arch: 'qwen2moe', kvs: [u32('qwen2moe.expert_feed_forward_length', 16)] }, 'TDM_BAD_GGUF', /ffn_gate_exps\.weight' has shape \[64, 32, 4\], expected \[64, 16, 4\]/, 'expert width');
  fails({ arch: 'llama', kvs: [{ key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'string', value: ['a', 'b'] }] }, 'TDM_BAD_GGUF', /token_embd\.weight' has shape \[64, 64\], expected \[64, 2\]/, 'vocabulary size');
  fails({ arch: 'qwen2moe', tied: true }, 'TDM_BAD_GGUF', /missing tensor 'output\.weight'/, 'qwen2moe needs output.weight');
  fails({ arch: 'qwen2', dropTensors: ['blk.1.attn_k.bias'] }, 'TDM_BAD_GGUF', /missing tensor 'blk\.1\.attn_k\.bias'/, 'biases in every layer');
  fails({ arch: 'llama', extraTensors: [{ name: 'rope_freqs.weight', shape: [8] }] }, 'TDM_UNSUPPORTED', /tensor 'rope_freqs\.weight' is not part of a llama model/, 'unused tensor');
  fails({ arch: 'llama', extraTensors: [{ name: 'blk.7.attn_q.weight', shape: [64, 64] }] }, 'TDM_BAD_GGUF', /'blk\.7\.attn_q\.weight' is in layer 7 but block_count is 2/, 'layer past block_count');
});

t.test('vocabulary-only files are not models', async (t) => {
  const f = GgufFile.open(modelPath('vocab/ggml-vocab-qwen2.gguf'));
  t.throws(() => describeModel(f), { code: 'TDM_UNSUPPORTED', message: /ggml-vocab-qwen2\.gguf: vocabulary-only GGUF/ });
  f.close();
  const g = GgufFile.open(modelPath('vocab/ggml-vocab-gpt-2.gguf'));
  t.throws(() => describeModel(g), { code: 'TDM_UNSUPPORTED', message: /architecture 'gpt2' is not supported/ });
  g.close();
});

t.test('gpt-oss and qwen3 synthetic files: sliding window, sinks, expert biases, per-head QK norm', async (t) => {
  const { makeModel } = await import('../../src/model/synthetic.js');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'tandem-describe-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const describeFile = (file: string) => {
    const f = GgufFile.open(file);
    try {
      return describeModel(f);
    } finally {
      f.close();
    }
  };
  await makeModel({ architecture: 'gpt-oss', type: 'f32', slidingWindow: 32, nHead: 8, headDim: 64 }, join(dir, 'oss.gguf'));
  const oss = describeFile(join(dir, 'oss.gguf')).hparams;
  t.match(oss, {
    architecture: 'gpt-oss', ropeType: 'neox', expertGating: 'softmax_weight', expertWeightsNorm: false, hasQkvBias: true,
    slidingWindow: 32, slidingWindowPeriod: 2, ropeFreqBaseSwa: oss.ropeFreqBase, hasAttnSinks: true, hasExpertBias: true, swigluOai: true,
    nExpert: 4, nExpertUsed: 2, headDim: 64, nHead: 8,
  });
  await makeModel({ architecture: 'qwen3', type: 'f32', nHead: 4, headDim: 128 }, join(dir, 'qwen3.gguf'));
  t.match(describeFile(join(dir, 'qwen3.gguf')).hparams, { architecture: 'qwen3', hasQkNorm: true, nExpert: 0, headDim: 128, slidingWindow: 0, hasAttnSinks: false });
});
