// The one place that turns a GGUF file's metadata into a model's hyperparameters and
// checks them against its tensor table; keys, defaults and tensor shapes follow llama.cpp
// (llama_model::load_hparams / load_tensors, llama_model_rope_type, build_moe_ffn callers).
import path from 'node:path';
import { TandemError } from '../native/errors.js';
import type { GgufFile, GgufMetadataEntry, GgufTensorInfo } from './gguf.js';

export type Architecture = 'llama' | 'qwen2' | 'qwen3' | 'qwen2moe' | 'qwen3moe' | 'olmoe' | 'gpt-oss' | 'gemma' | 'gemma2' | 'gemma3';

export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = ['llama', 'qwen2', 'qwen3', 'qwen2moe', 'qwen3moe', 'olmoe', 'gpt-oss', 'gemma', 'gemma2', 'gemma3'];

/** Hyperparameters as plain data; the native forward pass receives exactly these fields. */
export interface ModelHyperparams {
  architecture: Architecture;
  /** Vocabulary size (tokens; rows of token_embd). */
  nVocab: number;
  /** Context length the model was trained with (tokens). */
  nCtxTrain: number;
  /** Width of the residual stream. */
  nEmbd: number;
  nLayer: number;
  /** Query heads. */
  nHead: number;
  /** Key/value heads (GQA when below nHead; divides nHead). */
  nHeadKv: number;
  /** Elements per key head (attention.key_length, default nEmbd / nHead). */
  headDim: number;
  /** Elements per value head (attention.value_length, default nEmbd / nHead). */
  headDimV: number;
  /** Hidden width of the dense FFN (feed_forward_length; 0 when a MoE file omits it). */
  nFf: number;
  /** Routed experts per MoE layer; 0 = dense. */
  nExpert: number;
  /** Experts each token is routed to (0 when dense). */
  nExpertUsed: number;
  /** Hidden width of one routed expert (0 when dense). */
  nFfExpert: number;
  /** Hidden width of qwen2moe's shared expert; 0 if none. */
  nFfShared: number;
  /** 'norm' rotates consecutive pairs (llama); 'neox' rotates pairs ropeDim/2 apart. */
  ropeType: 'norm' | 'neox';
  /** Rotated elements per head (rope.dimension_count, default headDim). */
  ropeDim: number;
  /** RoPE theta (rope.freq_base, default 10000). */
  ropeFreqBase: number;
  /** rope.scaling.type: 'linear' scales every angle; 'yarn' (arXiv 2309.00071) scales the slow pairs only and cos and sin by 1 + 0.1 ln(factor). */
  ropeScaling: 'none' | 'linear' | 'yarn';
  /** Angle scale: 1 / rope.scaling.factor for linear and YaRN scaling, else 1. */
  ropeFreqScale: number;
  /** rope.scaling.attn_factor (default 1): multiplies cos and sin, whatever the scaling. */
  ropeAttnFactor: number;
  /** YaRN's mix weight of the unscaled angle: 1 for 'yarn', else 0 (llama.cpp reads no key for it on these architectures). */
  yarnExtFactor: number;
  /** YaRN's ramp ends, in turns over yarnOrigCtx: faster pairs keep their angle, slower ones are fully scaled (llama.cpp's 32 and 1; it ignores the files' yarn_beta_* keys on these architectures). */
  yarnBetaFast: number;
  yarnBetaSlow: number;
  /** Context the rotary frequencies were trained for (rope.scaling.original_context_length, default nCtxTrain). */
  yarnOrigCtx: number;
  /** Epsilon of every RMSNorm. */
  rmsEps: number;
  /** Whether the selected experts' weights are renormalised to sum to 1 (false when dense). */
  expertWeightsNorm: boolean;
  /**
   * Router probability function applied to the router logits before top-k; 'softmax_weight'
   * (gpt-oss) chooses by raw logit and takes the softmax of the chosen ones as weights.
   */
  expertGating: 'softmax' | 'sigmoid' | 'softmax_weight';
  /** Q, K and V projections carry biases (every layer). */
  hasQkvBias: boolean;
  /** RMSNorm on Q and K before RoPE: per head for qwen3 and qwen3moe, over the whole projection for olmoe. */
  hasQkNorm: boolean;
  /** A shared expert runs beside the routed ones, scaled by sigmoid(ffn_gate_inp_shexp · x). */
  hasSharedExpert: boolean;
  /** No output.weight: the output projection reuses token_embd.weight. */
  tiedEmbeddings: boolean;
  /** Sliding-window attention (gpt-oss, gemma2, gemma3): positions a sliding layer sees; 0 when none. */
  slidingWindow: number;
  /** Layer l slides when l % slidingWindowPeriod < slidingWindowPeriod - 1 (0 when none). */
  slidingWindowPeriod: number;
  /** RoPE theta of the sliding layers (rope.freq_base_swa; default ropeFreqBase for gpt-oss and gemma2, 10000 for gemma3). */
  ropeFreqBaseSwa: number;
  /** RoPE angle scale of the sliding layers (gpt-oss, gemma2: ropeFreqScale; gemma3: 1, its scaling is for the global layers). */
  ropeFreqScaleSwa: number;
  /** A learned sink logit per head joins every attention softmax (gpt-oss). */
  hasAttnSinks: boolean;
  /** The router and every expert projection carry biases (gpt-oss). */
  hasExpertBias: boolean;
  /** Experts use gpt-oss's clamped SwiGLU (alpha 1.702, limit 7) instead of SwiGLU. */
  swigluOai: boolean;
  /** Multiplies each token's embedding row before the first layer (gemma, gemma2, gemma3: sqrt(nEmbd) as a float; else 1). */
  embeddingScale: number;
  /** The softmax's scale on q·k: 1/sqrt(headDim), as a float (gemma2-27B, gemma3-27B: 1/sqrt(nEmbd/nHead)). */
  attentionScale: number;
  /** RMSNorms on the attention output and on the FFN output before each joins the residual stream (gemma2, gemma3). */
  hasPostNorms: boolean;
  /** The dense FFN's gated activation: 'silu' (SwiGLU) or 'gelu' (GeGLU, the tanh form; gemma, gemma2, gemma3). */
  ffnActivation: 'silu' | 'gelu';
  /** Attention scores s become cap * tanh(s / cap) before the softmax (gemma2: attn_logit_softcapping, default 50); 0: none. */
  attnLogitSoftcap: number;
  /** Output logits x become cap * tanh(x / cap) (gemma2: final_logit_softcapping, default 30; gemma3 where the file says); 0: none. */
  finalLogitSoftcap: number;
}

/** Tensors and bytes of one ggml type in a file. */
export interface TypeUsage {
  /** ggml type name, e.g. "q4_K". */
  type: string;
  tensors: number;
  bytes: number;
}

export interface TensorSummary {
  /** Elements over all tensors. */
  parameterCount: number;
  /** Bytes of tensor data in the file. */
  weightBytes: number;
  /** Largest share first. */
  typesUsed: TypeUsage[];
}

export interface ModelDescription extends TensorSummary {
  hparams: ModelHyperparams;
  /** The file the description came from. */
  path: string;
  /** general.name, else the file's base name. */
  name: string;
  /** Bytes of KV cache per token at f16 K and V, all layers. */
  kvBytesPerToken: number;
  tensors: GgufTensorInfo[];
}

// Ranges that no real model leaves; beyond them a value is corrupt, not large.
const LIMITS = {
  nLayer: 512, // llama.cpp's LLAMA_MAX_LAYERS
  nExpert: 1024, // LLAMA_MAX_EXPERTS
  nEmbd: 1 << 20,
  nHead: 1 << 14,
  headDim: 1 << 12,
  nFf: 1 << 22,
  nVocab: 1 << 24,
  nCtxTrain: 1 << 28,
} as const;

interface ArchRules {
  ropeType: 'norm' | 'neox';
  /** 'required' for the MoE-only architectures; llama is dense or Mixtral-style; qwen2 is dense. */
  experts: 'none' | 'optional' | 'required';
  /** The norm_w argument of this architecture's build_moe_ffn call in llama.cpp. */
  expertWeightsNorm: boolean;
  qkNorm: 'none' | 'per-head' | 'whole';
  sharedExpert: boolean;
  /** output.weight: 'optional' (absent: tied to token_embd), 'required', or 'tied' (never read; gemma's and gemma2's output is always token_embd, as in llama.cpp). */
  output: 'optional' | 'required' | 'tied';
  /** Whether expert_feed_forward_length is read (llama and olmoe size experts by feed_forward_length). */
  readsExpertFf: boolean;
  /** Expert width when expert_feed_forward_length is absent or not read. */
  defaultExpertFf: (nFf: number, nExpertUsed: number) => number;
}

const RULES: Record<Architecture, ArchRules> = {
  llama: { ropeType: 'norm', experts: 'optional', expertWeightsNorm: true, qkNorm: 'none', sharedExpert: false, output: 'optional', readsExpertFf: false, defaultExpertFf: (ff) => ff },
  qwen2: { ropeType: 'neox', experts: 'none', expertWeightsNorm: false, qkNorm: 'none', sharedExpert: false, output: 'optional', readsExpertFf: false, defaultExpertFf: (ff) => ff },
  qwen3: { ropeType: 'neox', experts: 'none', expertWeightsNorm: false, qkNorm: 'per-head', sharedExpert: false, output: 'optional', readsExpertFf: false, defaultExpertFf: (ff) => ff },
  qwen2moe: { ropeType: 'neox', experts: 'required', expertWeightsNorm: false, qkNorm: 'none', sharedExpert: true, output: 'required', readsExpertFf: true, defaultExpertFf: (ff, used) => Math.floor(ff / used) },
  qwen3moe: { ropeType: 'neox', experts: 'required', expertWeightsNorm: true, qkNorm: 'per-head', sharedExpert: false, output: 'optional', readsExpertFf: true, defaultExpertFf: (ff, used) => Math.floor(ff / used) },
  olmoe: { ropeType: 'neox', experts: 'required', expertWeightsNorm: false, qkNorm: 'whole', sharedExpert: false, output: 'required', readsExpertFf: false, defaultExpertFf: (ff) => ff },
  'gpt-oss': { ropeType: 'neox', experts: 'required', expertWeightsNorm: false, qkNorm: 'none', sharedExpert: false, output: 'required', readsExpertFf: true, defaultExpertFf: (ff) => ff },
  gemma: { ropeType: 'neox', experts: 'none', expertWeightsNorm: false, qkNorm: 'none', sharedExpert: false, output: 'tied', readsExpertFf: false, defaultExpertFf: (ff) => ff },
  gemma2: { ropeType: 'neox', experts: 'none', expertWeightsNorm: false, qkNorm: 'none', sharedExpert: false, output: 'tied', readsExpertFf: false, defaultExpertFf: (ff) => ff },
  gemma3: { ropeType: 'neox', experts: 'none', expertWeightsNorm: false, qkNorm: 'per-head', sharedExpert: false, output: 'optional', readsExpertFf: false, defaultExpertFf: (ff) => ff },
};

const INTEGER_TYPES = new Set(['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'uint64', 'int64']);
const NUMBER_TYPES = new Set([...INTEGER_TYPES, 'float32', 'float64']);

/** Reads typed hyperparameter keys from one file, naming the file and key in every error. */
class MetadataReader {
  constructor(
    private readonly file: GgufFile,
    private readonly arch: string,
  ) {}

  key(name: string): string {
    return `${this.arch}.${name}`;
  }

  bad(what: string): TandemError {
    return new TandemError('TDM_BAD_GGUF', `${this.file.path}: ${what}`);
  }

  private entry(key: string, required: boolean): GgufMetadataEntry | undefined {
    const e = this.file.metadata.get(key);
    if (!e && required) throw this.bad(`missing required metadata key '${key}'`);
    return e;
  }

  private integer(key: string, type: string, v: unknown): number {
    if (!INTEGER_TYPES.has(type)) throw this.bad(`metadata '${key}' is ${type}, expected an unsigned integer`);
    const n = typeof v === 'bigint' ? (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= 0n ? Number(v) : -1) : (v as number);
    if (!Number.isSafeInteger(n) || n < 0) throw this.bad(`metadata '${key}' is ${String(v)}, expected a non-negative integer`);
    return n;
  }

  /** A non-negative integer key (`<arch>.name`). */
  uint(name: string, required: true): number;
  uint(name: string, required: false): number | undefined;
  uint(name: string, required: boolean): number | undefined {
    const key = this.key(name);
    const e = this.entry(key, required);
    if (!e) return undefined;
    return this.integer(key, e.type, e.value);
  }

  /** An integer key that may also be a per-layer array; layers must agree (tandem runs uniform layers). */
  uintPerLayer(name: string, nLayer: number, required: true): number;
  uintPerLayer(name: string, nLayer: number, required: boolean): number | undefined;
  uintPerLayer(name: string, nLayer: number, required: boolean): number | undefined {
    const key = this.key(name);
    const e = this.entry(key, required);
    if (!e) return undefined;
    if (e.type !== 'array') return this.integer(key, e.type, e.value);
    const arr = e.value as { elementType: string; value: ArrayLike<unknown> };
    if (arr.value.length !== nLayer) throw this.bad(`metadata '${key}' has ${arr.value.length} entries, expected one per layer (${nLayer})`);
    const values = Array.from(arr.value, (v) => this.integer(key, arr.elementType, v));
    if (values.some((v) => v !== values[0])) {
      throw new TandemError('TDM_UNSUPPORTED', `${this.file.path}: metadata '${key}' differs between layers (${[...new Set(values)].join(', ')}); tandem runs models whose layers share one shape`);
    }
    return values[0];
  }

  float(name: string, fallback: number | undefined): number {
    const key = this.key(name);
    const e = this.entry(key, fallback === undefined);
    if (!e) return fallback as number;
    if (!NUMBER_TYPES.has(e.type)) throw this.bad(`metadata '${key}' is ${e.type}, expected a number`);
    const v = Number(e.value);
    if (!Number.isFinite(v)) throw this.bad(`metadata '${key}' is ${String(e.value)}, expected a finite number`);
    return v;
  }

  string(key: string): string | undefined {
    const e = this.file.metadata.get(key);
    if (!e) return undefined;
    if (e.type !== 'string') throw this.bad(`metadata '${key}' is ${e.type}, expected a string`);
    return e.value as string;
  }

  arrayLength(key: string): number | undefined {
    const e = this.file.metadata.get(key);
    if (!e) return undefined;
    if (e.type !== 'array') throw this.bad(`metadata '${key}' is ${e.type}, expected an array`);
    return (e.value as { value: ArrayLike<unknown> }).value.length;
  }
}

/** Parameter count, bytes and types of a file's tensors (any architecture, vocab-only files too). */
export function summarizeTensors(tensors: readonly GgufTensorInfo[]): TensorSummary {
  let parameterCount = 0;
  let weightBytes = 0;
  const byType = new Map<string, TypeUsage>();
  for (const t of tensors) {
    parameterCount += t.shape.reduce((a, b) => a * b, 1);
    weightBytes += t.nBytes;
    const u = byType.get(t.type) ?? { type: t.type, tensors: 0, bytes: 0 };
    u.tensors++;
    u.bytes += t.nBytes;
    byType.set(t.type, u);
  }
  const typesUsed = [...byType.values()].sort((a, b) => b.bytes - a.bytes || a.type.localeCompare(b.type));
  return { parameterCount, weightBytes, typesUsed };
}

/** general.architecture if it is one tandem runs; TDM_UNSUPPORTED naming it and the supported ones otherwise. */
export function supportedArchitecture(file: GgufFile): Architecture {
  const e = file.metadata.get('general.architecture');
  if (!e) throw new TandemError('TDM_BAD_GGUF', `${file.path}: missing required metadata key 'general.architecture'`);
  if (e.type !== 'string') throw new TandemError('TDM_BAD_GGUF', `${file.path}: metadata 'general.architecture' is ${e.type}, expected a string`);
  const arch = e.value as string;
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new TandemError(
      'TDM_UNSUPPORTED',
      `${file.path}: architecture '${arch}' is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`,
    );
  }
  return arch as Architecture;
}

function readHyperparams(file: GgufFile, arch: Architecture): ModelHyperparams {
  const rules = RULES[arch];
  const m = new MetadataReader(file, arch);
  const bad = (what: string) => m.bad(what);
  const unsupported = (what: string) => new TandemError('TDM_UNSUPPORTED', `${file.path}: ${what}`);
  const inRange = (name: string, v: number, lo: number, hi: number) => {
    if (v < lo || v > hi) throw bad(`${name} is ${v}, outside the plausible range ${lo} to ${hi}`);
    return v;
  };

  const nLayer = inRange(m.key('block_count'), m.uint('block_count', true), 1, LIMITS.nLayer);
  const nCtxTrain = inRange(m.key('context_length'), m.uint('context_length', true), 1, LIMITS.nCtxTrain);
  const nEmbd = inRange(m.key('embedding_length'), m.uint('embedding_length', true), 1, LIMITS.nEmbd);
  const nHead = inRange(m.key('attention.head_count'), m.uintPerLayer('attention.head_count', nLayer, true), 1, LIMITS.nHead);
  const nHeadKv = inRange(m.key('attention.head_count_kv'), m.uintPerLayer('attention.head_count_kv', nLayer, false) ?? nHead, 1, nHead);
  if (nHead % nHeadKv !== 0) throw bad(`attention.head_count ${nHead} is not a multiple of attention.head_count_kv ${nHeadKv}`);

  const keyLength = m.uint('attention.key_length', false);
  const valueLength = m.uint('attention.value_length', false);
  if ((keyLength === undefined || valueLength === undefined) && nEmbd % nHead !== 0) {
    throw bad(`embedding_length ${nEmbd} is not divisible by attention.head_count ${nHead}`);
  }
  const headDim = inRange(m.key('attention.key_length'), keyLength ?? nEmbd / nHead, 1, LIMITS.headDim);
  const headDimV = inRange(m.key('attention.value_length'), valueLength ?? nEmbd / nHead, 1, LIMITS.headDim);
  const ropeDim = inRange(m.key('rope.dimension_count'), m.uint('rope.dimension_count', false) ?? headDim, 1, LIMITS.headDim);
  if (headDim !== headDimV || ropeDim !== headDim) {
    // llama.cpp's graphs for these architectures assert all three are equal.
    throw unsupported(`${arch} with key length ${headDim}, value length ${headDimV} and rope dimension ${ropeDim}: tandem needs all three equal`);
  }
  if (headDim % 2 !== 0) throw bad(`head dimension ${headDim} is odd; RoPE rotates pairs`);

  const nExpert = inRange(m.key('expert_count'), m.uint('expert_count', false) ?? 0, 0, LIMITS.nExpert);
  const nExpertUsed = m.uintPerLayer('expert_used_count', nLayer, false) ?? 0;
  if (rules.experts === 'required' && nExpert === 0) throw bad(`${arch} is a mixture of experts but '${m.key('expert_count')}' is missing or 0`);
  if (rules.experts === 'none' && nExpert !== 0) throw bad(`${arch} has no experts but '${m.key('expert_count')}' is ${nExpert}`);
  if (nExpert === 0 && nExpertUsed !== 0) throw bad(`expert_used_count is ${nExpertUsed} but the model has no experts`);
  if (nExpert > 0 && (nExpertUsed < 1 || nExpertUsed > nExpert)) {
    throw bad(`expert_used_count is ${nExpertUsed}, expected 1 to expert_count (${nExpert})`);
  }

  const expertFfKey = rules.readsExpertFf ? m.uintPerLayer('expert_feed_forward_length', nLayer, false) : undefined;
  const sharedFfKey = m.uint('expert_shared_feed_forward_length', false);
  // A MoE file may omit feed_forward_length when the expert widths are given.
  const ffOptional = nExpert > 0 && expertFfKey !== undefined && (!rules.sharedExpert || sharedFfKey !== undefined);
  const nFf = inRange(m.key('feed_forward_length'), m.uintPerLayer('feed_forward_length', nLayer, !ffOptional) ?? 0, ffOptional ? 0 : 1, LIMITS.nFf);
  const nFfExpert = nExpert > 0 ? inRange('expert feed-forward length', expertFfKey ?? rules.defaultExpertFf(nFf, nExpertUsed), 1, LIMITS.nFf) : 0;
  const nFfShared = rules.sharedExpert ? inRange('shared expert feed-forward length', sharedFfKey ?? nFf, 1, LIMITS.nFf) : 0;

  const rmsEps = m.float('attention.layer_norm_rms_epsilon', undefined);
  if (!(rmsEps > 0 && rmsEps < 1)) throw bad(`attention.layer_norm_rms_epsilon is ${rmsEps}, expected a small positive number`);
  const ropeFreqBase = m.float('rope.freq_base', 10000);
  if (!(ropeFreqBase > 0)) throw bad(`rope.freq_base is ${ropeFreqBase}, expected a positive number`);
  const scalingType = m.string(m.key('rope.scaling.type')) ?? 'linear';
  if (scalingType === 'longrope') throw unsupported(`rope scaling 'longrope' is not supported (none, linear and yarn are)`);
  if (scalingType !== 'linear' && scalingType !== 'none' && scalingType !== 'yarn') throw bad(`unknown rope scaling type '${scalingType}'`);
  const factor = file.metadata.has(m.key('rope.scaling.factor')) ? m.float('rope.scaling.factor', 0) : m.float('rope.scale_linear', 0);
  if (factor < 0) throw bad(`rope scaling factor is ${factor}, expected a positive number`);
  const yarn = scalingType === 'yarn';
  // A factor of 0 (or none) means no scaling, as in llama.cpp; YaRN's magnitude term needs one of at least 1.
  if (yarn && factor !== 0 && factor < 1) throw bad(`rope.scaling.factor is ${factor}; YaRN stretches the context, so it must be at least 1`);
  const ropeFreqScale = scalingType === 'none' || factor === 0 ? 1 : 1 / factor;
  const ropeAttnFactor = m.float('rope.scaling.attn_factor', 1);
  if (!(ropeAttnFactor > 0)) throw bad(`rope.scaling.attn_factor is ${ropeAttnFactor}, expected a positive number`);
  // Read for YaRN only, the one scaling that uses it; 0 means the training context, as in llama.cpp.
  const origCtx = yarn ? (m.uint('rope.scaling.original_context_length', false) ?? 0) : 0;
  const yarnOrigCtx = origCtx === 0 ? nCtxTrain : inRange(m.key('rope.scaling.original_context_length'), origCtx, 1, LIMITS.nCtxTrain);

  // gpt-oss (llama_model_openai_moe::load_arch_hparams): a sliding window on layers l with
  // l % period < period - 1 (period 2 unless sliding_window_pattern says), RoPE theta
  // rope.freq_base_swa on those layers (default the others'), the others' angle scale.
  // gemma2 (llama_model_gemma2): the same, with a window of 4096 where the file names none.
  // gemma3 (llama_model_gemma3): the same rule with period 6, where the file names a window
  // (none: every layer global); its sliding layers keep theta 10000 unless rope.freq_base_swa
  // says, and plain RoPE (the file's scaling is its global layers').
  const gptOss = arch === 'gpt-oss';
  const gemma2 = arch === 'gemma2';
  const gemma3 = arch === 'gemma3';
  // gemma (llama_model_gemma, Gemma 1): gemma2's blocks without the post norms, the window or the caps.
  const gemma = arch === 'gemma' || gemma2 || gemma3;
  const slidingWindow = () => {
    const none = { slidingWindow: 0, slidingWindowPeriod: 0, ropeFreqBaseSwa: ropeFreqBase, ropeFreqScaleSwa: ropeFreqScale };
    if (!gptOss && !gemma2 && !gemma3) return none;
    const windowKey = gptOss ? m.uint('attention.sliding_window', true) : m.uint('attention.sliding_window', false);
    if (gemma3 && !windowKey) return none;
    const window = inRange(m.key('attention.sliding_window'), (windowKey ?? 4096) as number, 1, LIMITS.nCtxTrain);
    const period = inRange(m.key('attention.sliding_window_pattern'), m.uint('attention.sliding_window_pattern', false) ?? (gemma3 ? 6 : 2), 1, LIMITS.nLayer);
    const baseSwa = m.float('rope.freq_base_swa', gemma3 ? 10000 : ropeFreqBase);
    if (!(baseSwa > 0)) throw bad(`rope.freq_base_swa is ${baseSwa}, expected a positive number`);
    return { slidingWindow: window, slidingWindowPeriod: period, ropeFreqBaseSwa: baseSwa, ropeFreqScaleSwa: gemma3 ? 1 : ropeFreqScale };
  };
  // Soft caps (gemma2 always caps; gemma3 caps its logits where the file says), with
  // llama.cpp's defaults; 0 turns a cap off.
  const softcap = (key: string, fallback: number) => {
    const cap = m.float(key, fallback);
    if (!(cap >= 0 && Number.isFinite(cap))) throw bad(`${key} is ${cap}, expected 0 or a positive number`);
    return cap;
  };
  const attnLogitSoftcap = gemma2 ? softcap('attn_logit_softcapping', 50) : 0;
  const finalLogitSoftcap = gemma2 ? softcap('final_logit_softcapping', 30) : gemma3 ? softcap('final_logit_softcapping', 0) : 0;
  // As llama.cpp computes them in float: gemma2-27B (46 layers) and gemma3-27B (62 layers)
  // scale queries by 1/sqrt(nEmbd / nHead), every other model by 1/sqrt(headDim).
  const inverseSqrt = (v: number) => Math.fround(1 / Math.fround(Math.sqrt(v)));
  const wideScale = (gemma2 && nLayer === 46) || (gemma3 && nLayer === 62);
  const attentionScale = wideScale ? inverseSqrt(Math.trunc(nEmbd / nHead)) : inverseSqrt(headDim);

  const nVocab = m.uint('vocab_size', false) ?? m.arrayLength('tokenizer.ggml.tokens') ?? file.tensor('token_embd.weight')?.shape[1];
  if (nVocab === undefined) throw bad('cannot tell the vocabulary size: no tokenizer.ggml.tokens, vocab_size or token_embd.weight');
  inRange('vocabulary size', nVocab, 1, LIMITS.nVocab);

  return {
    architecture: arch,
    nVocab,
    nCtxTrain,
    nEmbd,
    nLayer,
    nHead,
    nHeadKv,
    headDim,
    headDimV,
    nFf,
    nExpert,
    nExpertUsed,
    nFfExpert,
    nFfShared,
    ropeType: rules.ropeType,
    ropeDim,
    ropeFreqBase,
    ropeScaling: scalingType,
    ropeFreqScale,
    ropeAttnFactor,
    yarnExtFactor: yarn ? 1 : 0,
    yarnBetaFast: 32,
    yarnBetaSlow: 1,
    yarnOrigCtx,
    rmsEps,
    expertWeightsNorm: nExpert > 0 && rules.expertWeightsNorm,
    // llama.cpp routes every supported architecture with a softmax, gpt-oss with LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT.
    expertGating: gptOss ? 'softmax_weight' : 'softmax',
    hasQkvBias: file.tensor('blk.0.attn_q.bias') !== undefined,
    hasQkNorm: rules.qkNorm !== 'none',
    hasSharedExpert: rules.sharedExpert,
    tiedEmbeddings: rules.output === 'tied' || file.tensor('output.weight') === undefined,
    ...slidingWindow(),
    hasAttnSinks: gptOss,
    hasExpertBias: gptOss,
    swigluOai: gptOss,
    embeddingScale: gemma ? Math.fround(Math.sqrt(nEmbd)) : 1,
    attentionScale,
    hasPostNorms: gemma2 || gemma3,
    ffnActivation: gemma ? 'gelu' : 'silu',
    attnLogitSoftcap,
    finalLogitSoftcap,
  };
}

/** Every tensor the model needs (or may have), with the shape it must have, innermost first. */
function expectedTensors(h: ModelHyperparams): Map<string, number[]> {
  const rules = RULES[h.architecture];
  const out = new Map<string, number[]>();
  const qDim = h.headDim * h.nHead;
  const kDim = h.headDim * h.nHeadKv;
  const vDim = h.headDimV * h.nHeadKv;
  out.set('token_embd.weight', [h.nEmbd, h.nVocab]);
  out.set('output_norm.weight', [h.nEmbd]);
  if (rules.output === 'required' || (rules.output === 'optional' && !h.tiedEmbeddings)) out.set('output.weight', [h.nEmbd, h.nVocab]);
  for (let i = 0; i < h.nLayer; i++) {
    const b = `blk.${i}.`;
    out.set(`${b}attn_norm.weight`, [h.nEmbd]);
    out.set(`${b}attn_q.weight`, [h.nEmbd, qDim]);
    out.set(`${b}attn_k.weight`, [h.nEmbd, kDim]);
    out.set(`${b}attn_v.weight`, [h.nEmbd, vDim]);
    out.set(`${b}attn_output.weight`, [h.headDimV * h.nHead, h.nEmbd]);
    if (h.hasQkvBias) {
      out.set(`${b}attn_q.bias`, [qDim]);
      out.set(`${b}attn_k.bias`, [kDim]);
      out.set(`${b}attn_v.bias`, [vDim]);
    }
    if (rules.qkNorm === 'per-head') {
      out.set(`${b}attn_q_norm.weight`, [h.headDim]);
      out.set(`${b}attn_k_norm.weight`, [h.headDim]);
    } else if (rules.qkNorm === 'whole') {
      out.set(`${b}attn_q_norm.weight`, [qDim]);
      out.set(`${b}attn_k_norm.weight`, [kDim]);
    }
    // gpt-oss names the norm before its experts post_attention_norm; gemma2 and gemma3 name so
    // the norm of their attention's output, and have one of their FFN's output too.
    out.set(h.architecture === 'gpt-oss' ? `${b}post_attention_norm.weight` : `${b}ffn_norm.weight`, [h.nEmbd]);
    if (h.hasPostNorms) {
      out.set(`${b}post_attention_norm.weight`, [h.nEmbd]);
      out.set(`${b}post_ffw_norm.weight`, [h.nEmbd]);
    }
    if (h.hasAttnSinks) out.set(`${b}attn_sinks.weight`, [h.nHead]);
    if (h.architecture === 'gpt-oss') out.set(`${b}attn_output.bias`, [h.nEmbd]);
    if (h.hasExpertBias) {
      out.set(`${b}ffn_gate_inp.bias`, [h.nExpert]);
      out.set(`${b}ffn_gate_exps.bias`, [h.nFfExpert, h.nExpert]);
      out.set(`${b}ffn_up_exps.bias`, [h.nFfExpert, h.nExpert]);
      out.set(`${b}ffn_down_exps.bias`, [h.nEmbd, h.nExpert]);
    }
    if (h.nExpert === 0) {
      out.set(`${b}ffn_gate.weight`, [h.nEmbd, h.nFf]);
      out.set(`${b}ffn_up.weight`, [h.nEmbd, h.nFf]);
      out.set(`${b}ffn_down.weight`, [h.nFf, h.nEmbd]);
    } else {
      out.set(`${b}ffn_gate_inp.weight`, [h.nEmbd, h.nExpert]);
      out.set(`${b}ffn_gate_exps.weight`, [h.nEmbd, h.nFfExpert, h.nExpert]);
      out.set(`${b}ffn_up_exps.weight`, [h.nEmbd, h.nFfExpert, h.nExpert]);
      out.set(`${b}ffn_down_exps.weight`, [h.nFfExpert, h.nEmbd, h.nExpert]);
    }
    if (h.hasSharedExpert) {
      out.set(`${b}ffn_gate_inp_shexp.weight`, [h.nEmbd]);
      out.set(`${b}ffn_gate_shexp.weight`, [h.nEmbd, h.nFfShared]);
      out.set(`${b}ffn_up_shexp.weight`, [h.nEmbd, h.nFfShared]);
      out.set(`${b}ffn_down_shexp.weight`, [h.nFfShared, h.nEmbd]);
    }
  }
  return out;
}

/** Shapes agree when equal after padding to four dimensions with 1s (ggml's view). */
function sameShape(a: readonly number[], b: readonly number[]): boolean {
  for (let d = 0; d < 4; d++) if ((a[d] ?? 1) !== (b[d] ?? 1)) return false;
  return true;
}

const fmtShape = (s: readonly number[]) => `[${s.join(', ')}]`;

function checkTensors(file: GgufFile, h: ModelHyperparams): void {
  const expected = expectedTensors(h);
  const present = new Map(file.tensors.map((t) => [t.name, t]));
  for (const [name, want] of expected) {
    const t = present.get(name);
    if (!t) throw new TandemError('TDM_BAD_GGUF', `${file.path}: missing tensor '${name}' (a ${h.architecture} model with these hyperparameters needs it)`);
    if (!sameShape(t.shape, want)) {
      throw new TandemError('TDM_BAD_GGUF', `${file.path}: tensor '${name}' has shape ${fmtShape(t.shape)}, expected ${fmtShape(want)} from the hyperparameters`);
    }
  }
  for (const t of file.tensors) {
    if (expected.has(t.name)) continue;
    const layer = /^blk\.(\d+)\./.exec(t.name);
    if (layer && Number(layer[1]) >= h.nLayer) {
      throw new TandemError('TDM_BAD_GGUF', `${file.path}: tensor '${t.name}' is in layer ${layer[1]} but block_count is ${h.nLayer}`);
    }
    // llama.cpp also refuses files with tensors its graph would not use; running such a
    // file while ignoring one (e.g. Llama-3's rope_freqs) would give wrong output.
    throw new TandemError('TDM_UNSUPPORTED', `${file.path}: tensor '${t.name}' is not part of a ${h.architecture} model as tandem runs it`);
  }
}

/**
 * Describes the model in `file`: hyperparameters checked against every tensor's shape.
 * Throws TandemError: TDM_UNSUPPORTED for an architecture, feature or vocabulary-only file
 * tandem cannot run; TDM_BAD_GGUF naming the key or tensor that is missing or wrong.
 */
export function describeModel(file: GgufFile): ModelDescription {
  const arch = supportedArchitecture(file);
  if (file.tensors.length === 0) {
    throw new TandemError('TDM_UNSUPPORTED', `${file.path}: vocabulary-only GGUF (no tensors): it holds a tokenizer, not a model`);
  }
  const hparams = readHyperparams(file, arch);
  checkTensors(file, hparams);
  const name = new MetadataReader(file, arch).string('general.name') || path.basename(file.path).replace(/\.gguf$/i, '');
  return {
    hparams,
    path: file.path,
    name,
    ...summarizeTensors(file.tensors),
    kvBytesPerToken: hparams.nLayer * hparams.nHeadKv * (hparams.headDim + hparams.headDimV) * 2,
    tensors: file.tensors,
  };
}
