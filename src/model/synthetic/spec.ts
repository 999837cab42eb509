// What a synthetic model is: architecture, shape, weight type, seed and tokenizer, with
// named presets (real models' shapes) and the checks llama.cpp's loader would otherwise
// fail on later with a less helpful message.
import { TandemError } from '../../native/errors.js';

export type SyntheticArchitecture = 'llama' | 'qwen2' | 'qwen3' | 'qwen2moe' | 'qwen3moe' | 'olmoe' | 'gpt-oss' | 'gemma' | 'gemma2' | 'gemma3';
export const SYNTHETIC_ARCHITECTURES: readonly SyntheticArchitecture[] = ['llama', 'qwen2', 'qwen3', 'qwen2moe', 'qwen3moe', 'olmoe', 'gpt-oss', 'gemma', 'gemma2', 'gemma3'];

/** Tensor types a synthetic model's weights can take. */
export type WeightType =
  | 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1'
  | 'q2_K' | 'q3_K' | 'q4_K' | 'q5_K' | 'q6_K' | 'mxfp4' | 'iq4_nl' | 'iq4_xs'
  | 'iq2_xxs' | 'iq2_xs' | 'iq2_s' | 'iq3_xxs' | 'iq3_s';
export const WEIGHT_TYPES: readonly WeightType[] = [
  'f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_K', 'q3_K', 'q4_K', 'q5_K', 'q6_K', 'mxfp4', 'iq4_nl', 'iq4_xs',
  'iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s',
];

/** llama-quantize's IQ2 and IQ3 file types (llama_ftype MOSTLY_IQ2_XXS ... MOSTLY_IQ3_M) by tandem's names. */
export type IqMixType = 'iq2_xxs_mix' | 'iq2_xs_mix' | 'iq2_s_mix' | 'iq2_m' | 'iq3_xxs_mix' | 'iq3_xs' | 'iq3_s_mix' | 'iq3_m';
export const IQ_MIX_TYPES: readonly IqMixType[] = ['iq2_xxs_mix', 'iq2_xs_mix', 'iq2_s_mix', 'iq2_m', 'iq3_xxs_mix', 'iq3_xs', 'iq3_s_mix', 'iq3_m'];

/**
 * A file's type: one WeightType for every quantizable tensor (llama-quantize --pure), or one
 * of llama.cpp's mixes, each choosing more bits for the sensitive tensors as llama-quantize
 * does (without an importance matrix): 'q4_K_M' (Q4_K with Q6_K/Q5_K/Q8_0), 'q5_K_M' (Q5_K
 * with Q6_K/Q8_0), 'q3_K_M' (Q3_K
 * with Q4_K/Q5_K/Q6_K), 'q2_K_mix' (llama-quantize's Q2_K: Q2_K with Q3_K/Q4_K/Q6_K),
 * 'iq4_xs_mix' (its IQ4_XS: IQ4_XS with Q5_K/Q6_K), the IQ2 and IQ3 mixes (IqMixType: its
 * IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M, IQ3_XXS, IQ3_XS, IQ3_S and IQ3_M: a grid type, with K types
 * and other grid types where llama.cpp puts them), 'mxfp4_moe' (MXFP4 for routed experts,
 * Q8_0 for every other tensor; gpt-oss's files). The '_mix' names keep the pure types' names
 * free.
 */
export type ModelFileType = WeightType | 'q4_K_M' | 'q5_K_M' | 'q3_K_M' | 'q2_K_mix' | 'iq4_xs_mix' | IqMixType | 'mxfp4_moe';
export const MODEL_FILE_TYPES: readonly ModelFileType[] = [...WEIGHT_TYPES, 'q4_K_M', 'q5_K_M', 'q3_K_M', 'q2_K_mix', 'iq4_xs_mix', ...IQ_MIX_TYPES, 'mxfp4_moe'];

export interface ModelShape {
  /** Width of the residual stream. */
  nEmbd: number;
  nLayer: number;
  /** Query heads. */
  nHead: number;
  /** Key/value heads; divides nHead. */
  nHeadKv: number;
  /** Elements per attention head (nEmbd / nHead unless the architecture allows otherwise). */
  headDim: number;
  /** Hidden width of the dense FFN (for llama and olmoe MoE files: of each expert). */
  nFf: number;
  /** Routed experts per layer; 0 = dense. */
  nExpert: number;
  /** Experts each token is routed to. */
  nExpertUsed: number;
  /** Hidden width of one routed expert. */
  nFfExpert: number;
  /** Hidden width of qwen2moe's shared expert (0 for the other architectures). */
  nFfShared: number;
  /** Training context length written to the file (tokens). */
  nCtx: number;
  /** Vocabulary size of a synthetic tokenizer (a copied one brings its own). */
  nVocab: number;
  /** RoPE theta. */
  ropeFreqBase: number;
  /** Epsilon of every RMSNorm. */
  rmsEps: number;
  /** gpt-oss, gemma2: the sliding window of its even layers; gemma3: of five layers in six (positions; 0 for the other architectures, and a gemma3 with every layer global). */
  slidingWindow: number;
}

export type PresetName = 'tiny' | 'tinyllama-1.1b' | 'moe-8x-top2' | 'llama2-7b' | 'llama3-8b' | 'gpt-oss-20b' | 'qwen3-30b-a3b' | 'gemma2-2b' | 'gemma3-1b' | 'gemma3-4b';

interface Preset {
  architecture: SyntheticArchitecture;
  shape: Partial<ModelShape>;
  /** Expert defaults used when the architecture is MoE and the spec names none. */
  moe?: Pick<ModelShape, 'nExpert' | 'nExpertUsed' | 'nFfExpert' | 'nFfShared'>;
  /** One line for --help. */
  about: string;
}

export const PRESETS: Record<PresetName, Preset> = {
  tiny: {
    architecture: 'llama',
    shape: { nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 512, nCtx: 512, nVocab: 512, ropeFreqBase: 10000, rmsEps: 1e-5 },
    moe: { nExpert: 4, nExpertUsed: 2, nFfExpert: 256, nFfShared: 512 },
    about: 'test-sized: 256 wide, 2 layers, 512 tokens (MoE architectures: 4 experts, top-2)',
  },
  'tinyllama-1.1b': {
    architecture: 'llama',
    shape: { nEmbd: 2048, nLayer: 22, nHead: 32, nHeadKv: 4, nFf: 5632, nCtx: 2048, nVocab: 32000, ropeFreqBase: 10000, rmsEps: 1e-5 },
    about: 'TinyLlama-1.1B: 2048 wide, 22 layers, 32 heads / 4 KV heads, FFN 5632, 32000 tokens',
  },
  'moe-8x-top2': {
    architecture: 'llama',
    shape: {
      nEmbd: 1024, nLayer: 16, nHead: 16, nHeadKv: 8, nFf: 2048, nExpert: 8, nExpertUsed: 2, nFfExpert: 2048,
      nCtx: 2048, nVocab: 32000, ropeFreqBase: 10000, rmsEps: 1e-5,
    },
    about: 'Mixtral-style llama, 8 experts top-2, about 921M parameters (about 284M active per token)',
  },
  'llama2-7b': {
    architecture: 'llama',
    shape: { nEmbd: 4096, nLayer: 32, nHead: 32, nHeadKv: 32, nFf: 11008, nCtx: 4096, nVocab: 32000, ropeFreqBase: 10000, rmsEps: 1e-5 },
    about: 'Llama-2-7B: 4096 wide, 32 layers, 32 heads, FFN 11008, 32000 tokens',
  },
  'llama3-8b': {
    architecture: 'llama',
    shape: { nEmbd: 4096, nLayer: 32, nHead: 32, nHeadKv: 8, nFf: 14336, nCtx: 8192, nVocab: 128256, ropeFreqBase: 500000, rmsEps: 1e-5 },
    about: 'Llama-3-8B: 4096 wide, 32 layers, 32 heads / 8 KV heads, FFN 14336, 128256 tokens',
  },
  'gpt-oss-20b': {
    architecture: 'gpt-oss',
    shape: {
      nEmbd: 2880, nLayer: 24, nHead: 64, nHeadKv: 8, headDim: 64, nFf: 2880, nExpert: 32, nExpertUsed: 4, nFfExpert: 2880,
      nCtx: 131072, nVocab: 201088, ropeFreqBase: 150000, rmsEps: 1e-5, slidingWindow: 128,
    },
    about: 'gpt-oss-20b: 2880 wide, 24 layers, 64 heads of 64 / 8 KV heads, 32 experts top-4 of width 2880, window 128 on even layers, 201088 tokens',
  },
  'qwen3-30b-a3b': {
    architecture: 'qwen3moe',
    shape: {
      nEmbd: 2048, nLayer: 48, nHead: 32, nHeadKv: 4, headDim: 128, nFf: 6144, nExpert: 128, nExpertUsed: 8, nFfExpert: 768,
      nCtx: 40960, nVocab: 151936, ropeFreqBase: 1000000, rmsEps: 1e-6,
    },
    about: 'Qwen3-30B-A3B: 2048 wide, 48 layers, 32 heads of 128 / 4 KV heads, 128 experts top-8 of width 768, 151936 tokens',
  },
  'gemma2-2b': {
    architecture: 'gemma2',
    shape: {
      nEmbd: 2304, nLayer: 26, nHead: 8, nHeadKv: 4, headDim: 256, nFf: 9216, nCtx: 8192, nVocab: 256000, ropeFreqBase: 10000,
      rmsEps: 1e-6, slidingWindow: 4096,
    },
    about: 'Gemma-2-2B: 2304 wide, 26 layers, 8 heads of 256 / 4 KV heads, GeGLU FFN 9216, window 4096 on every other layer, soft caps 50 and 30, 256000 tokens',
  },
  'gemma3-1b': {
    architecture: 'gemma3',
    shape: {
      nEmbd: 1152, nLayer: 26, nHead: 4, nHeadKv: 1, headDim: 256, nFf: 6912, nCtx: 32768, nVocab: 262144, ropeFreqBase: 1000000,
      rmsEps: 1e-6, slidingWindow: 512,
    },
    about: 'Gemma-3-1B: 1152 wide, 26 layers, 4 heads of 256 / 1 KV head, GeGLU FFN 6912, window 512 on five layers in six, 262144 tokens',
  },
  'gemma3-4b': {
    architecture: 'gemma3',
    shape: {
      nEmbd: 2560, nLayer: 34, nHead: 8, nHeadKv: 4, headDim: 256, nFf: 10240, nCtx: 131072, nVocab: 262144, ropeFreqBase: 1000000,
      rmsEps: 1e-6, slidingWindow: 1024,
    },
    about: "Gemma-3-4B's text model: 2560 wide, 34 layers, 8 heads of 256 / 4 KV heads, GeGLU FFN 10240, window 1024 on five layers in six, 262144 tokens",
  },
};

export interface ModelSpec extends Partial<ModelShape> {
  /** Default: the preset's architecture, else 'llama'. */
  architecture?: SyntheticArchitecture;
  /** Shape to start from; explicit shape fields override it. Default 'tiny'. */
  preset?: PresetName;
  /** Default 'f16'. */
  type?: ModelFileType;
  /** Seed of every weight (0 to 2^53); a tensor's values depend only on (seed, tensor name). Default 1. */
  seed?: number;
  /** A GGUF file whose tokenizer.* metadata is copied (a vocab-only file will do); default: a synthetic SPM vocab of nVocab tokens. */
  vocab?: string;
  /** general.name; default names the preset or architecture. */
  name?: string;
  /** Per-tensor type overrides by tensor name (applied after the file type's choice). */
  tensorTypes?: Record<string, WeightType>;
  /** Per-tensor values (all nElements of them, as f32) instead of random ones. */
  tensorData?: Record<string, Float32Array>;
  /**
   * MoE only: skews each layer's routing toward a seeded order of its experts, roughly as a
   * Zipf popularity of this exponent would (the expert of rank r about (r + 1)^-routerSkew as
   * popular; calibrated on the moe-8x-top2 shape in synthetic.ts, weaker on much smaller
   * shapes), as trained routers are skewed; 0 (default) leaves the random routers, which route
   * nearly uniformly. Up to 4.
   */
  routerSkew?: number;
  /** RoPE scaling written to rope.scaling.*: factor >= 1; originalContext (YaRN only) defaults to nCtx. Default none. */
  ropeScaling?: RopeScalingSpec;
  /** `{arch}.pooling_type` as an embedding model's file names its pooling (llama.cpp's numbering: 1 mean, 2 cls, 3 last). Default: not written. */
  pooling?: 'mean' | 'cls' | 'last';
  /** No output.weight: the output projection reads token_embd.weight, as Gemma, Qwen2.5-0.5B and Llama-3.2-1B files do (the file types then give token_embd the output's type). Default false; gemma and gemma2 always tie. */
  tiedEmbeddings?: boolean;
  /** Soft caps written to attn_logit_softcapping and final_logit_softcapping: gemma2 (default 50 and 30, as Gemma 2's files) and gemma3's final one (default 0, not written); 0 turns one off. */
  softcaps?: { attention?: number; final?: number };
}

export interface RopeScalingSpec {
  type: 'linear' | 'yarn';
  factor: number;
  /** Context the frequencies were trained for (tokens), rope.scaling.original_context_length. */
  originalContext?: number;
  /** rope.scaling.attn_factor: multiplies cos and sin (default 1, not written). */
  attnFactor?: number;
}

/** A spec with every field settled and checked. */
export interface ResolvedSpec extends ModelShape {
  architecture: SyntheticArchitecture;
  preset: PresetName;
  type: ModelFileType;
  seed: number;
  vocab: string | undefined;
  name: string;
  tensorTypes: Record<string, WeightType>;
  tensorData: Record<string, Float32Array>;
  routerSkew: number;
  ropeScaling: Required<RopeScalingSpec> | undefined;
  pooling: 'mean' | 'cls' | 'last' | undefined;
  tiedEmbeddings: boolean;
  attnLogitSoftcap: number;
  finalLogitSoftcap: number;
}

export const isMoeArchitecture = (a: SyntheticArchitecture): boolean => a === 'qwen2moe' || a === 'qwen3moe' || a === 'olmoe' || a === 'gpt-oss';

function bad(message: string): TandemError {
  return new TandemError('TDM_BAD_ARGUMENT', message);
}

/** Case-insensitive file type lookup ('Q4_K_M' → 'q4_K_M'); undefined when unknown. */
export function parseFileType(s: string): ModelFileType | undefined {
  return MODEL_FILE_TYPES.find((t) => t.toLowerCase() === s.toLowerCase());
}

const SHAPE_KEYS: (keyof ModelShape)[] = [
  'nEmbd', 'nLayer', 'nHead', 'nHeadKv', 'headDim', 'nFf', 'nExpert', 'nExpertUsed', 'nFfExpert', 'nFfShared',
  'nCtx', 'nVocab', 'ropeFreqBase', 'rmsEps', 'slidingWindow',
];

/** Fills a spec from its preset and defaults and checks it; throws TDM_BAD_ARGUMENT naming the field. */
export function resolveSpec(spec: ModelSpec): ResolvedSpec {
  const presetName = spec.preset ?? 'tiny';
  const preset = PRESETS[presetName];
  if (!preset) throw bad(`unknown preset '${String(presetName)}' (known: ${Object.keys(PRESETS).join(', ')})`);
  const architecture = spec.architecture ?? preset.architecture;
  if (!SYNTHETIC_ARCHITECTURES.includes(architecture)) {
    throw bad(`unknown architecture '${String(architecture)}' (known: ${SYNTHETIC_ARCHITECTURES.join(', ')})`);
  }
  const type = spec.type ?? 'f16';
  if (!MODEL_FILE_TYPES.includes(type)) throw bad(`unknown type '${String(type)}' (known: ${MODEL_FILE_TYPES.join(', ')})`);
  for (const k of SHAPE_KEYS) {
    const v = spec[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) throw bad(`${k} must be a number, got ${String(v)}`);
  }

  const moe = isMoeArchitecture(architecture);
  const given = (k: keyof ModelShape) => spec[k] !== undefined;
  const s: Partial<ModelShape> = { ...preset.shape };
  if (moe && !given('nExpert') && !(preset.shape.nExpert ?? 0) && preset.moe) {
    const { nFfShared, ...routed } = preset.moe;
    Object.assign(s, routed, architecture === 'qwen2moe' ? { nFfShared } : {});
  }
  for (const k of SHAPE_KEYS) if (given(k)) s[k] = spec[k];
  // OLMoE normalises K over the whole projection with an nEmbd-long weight: KV heads = heads.
  if (architecture === 'olmoe' && !given('nHeadKv')) s.nHeadKv = s.nHead;
  s.nExpert ??= 0;
  s.nExpertUsed ??= s.nExpert > 0 ? Math.min(2, s.nExpert) : 0;
  if (s.nExpert > 0 && s.nFfExpert === undefined) s.nFfExpert = s.nFf;
  s.nFfExpert ??= 0;
  s.nFfShared ??= architecture === 'qwen2moe' ? s.nFf : 0;
  if (s.nHead !== undefined && s.nEmbd !== undefined) s.headDim ??= s.nEmbd / s.nHead;
  s.nHeadKv ??= s.nHead;
  s.ropeFreqBase ??= 10000;
  s.rmsEps ??= 1e-5;
  s.slidingWindow ??= architecture === 'gpt-oss' || architecture === 'gemma2' || architecture === 'gemma3' ? 128 : 0;

  const shape = s as ModelShape;
  const positive = (k: keyof ModelShape, max: number) => {
    const v = shape[k];
    if (!Number.isSafeInteger(v) || v < 1 || v > max) throw bad(`${k} must be an integer from 1 to ${max}, got ${String(v)}`);
  };
  positive('nEmbd', 1 << 16);
  positive('nLayer', 1024);
  positive('nHead', 1024);
  positive('nHeadKv', 1024);
  positive('nFf', 1 << 20);
  positive('nCtx', 1 << 24);
  positive('nVocab', 1 << 22);
  if (!Number.isSafeInteger(shape.headDim) || shape.headDim < 2 || shape.headDim % 2 !== 0 || shape.headDim > 1024) {
    throw bad(`headDim must be an even integer from 2 to 1024, got ${shape.headDim} (nEmbd ${shape.nEmbd} / nHead ${shape.nHead})`);
  }
  if (shape.nHead % shape.nHeadKv !== 0) throw bad(`nHead (${shape.nHead}) must be a multiple of nHeadKv (${shape.nHeadKv})`);
  const headsFixed = architecture !== 'llama' && architecture !== 'qwen3' && architecture !== 'qwen3moe' && architecture !== 'gpt-oss' && architecture !== 'gemma' && architecture !== 'gemma2' && architecture !== 'gemma3';
  if (headsFixed && shape.headDim * shape.nHead !== shape.nEmbd) {
    throw bad(`${architecture} needs headDim × nHead = nEmbd (got ${shape.headDim} × ${shape.nHead} ≠ ${shape.nEmbd})`);
  }
  if (architecture === 'olmoe' && shape.nHeadKv !== shape.nHead) {
    throw bad(`olmoe needs nHeadKv = nHead (its K norm spans all ${shape.nEmbd} elements); got ${shape.nHeadKv} and ${shape.nHead}`);
  }
  if (!(shape.ropeFreqBase > 0)) throw bad(`ropeFreqBase must be positive, got ${shape.ropeFreqBase}`);
  // gemma2 always slides (a file without the key gets llama.cpp's 4096).
  if (architecture === 'gpt-oss' || architecture === 'gemma2') positive('slidingWindow', 1 << 24);
  else if (architecture === 'gemma3') {
    if (!Number.isSafeInteger(shape.slidingWindow) || shape.slidingWindow < 0 || shape.slidingWindow > 1 << 24) throw bad(`slidingWindow must be an integer from 0 to ${1 << 24}, got ${String(shape.slidingWindow)}`);
  } else if (shape.slidingWindow !== 0) throw bad(`slidingWindow exists only in gpt-oss, gemma2 and gemma3, not ${architecture}`);
  if (!(shape.rmsEps > 0 && shape.rmsEps < 1)) throw bad(`rmsEps must be in (0, 1), got ${shape.rmsEps}`);

  if (moe && shape.nExpert === 0) throw bad(`${architecture} is a mixture of experts: nExpert must be at least 2`);
  if (shape.nExpert !== 0) {
    if (architecture === 'qwen2' || architecture === 'qwen3') throw bad(`${architecture} is dense; use ${architecture}moe for experts`);
    if (architecture === 'gemma' || architecture === 'gemma2' || architecture === 'gemma3') throw bad(`${architecture} is dense: nExpert must be 0`);
    if (!Number.isSafeInteger(shape.nExpert) || shape.nExpert < 2 || shape.nExpert > 256) throw bad(`nExpert must be 0 (dense) or an integer from 2 to 256, got ${shape.nExpert}`);
    if (!Number.isSafeInteger(shape.nExpertUsed) || shape.nExpertUsed < 1 || shape.nExpertUsed > shape.nExpert) {
      throw bad(`nExpertUsed must be an integer from 1 to nExpert (${shape.nExpert}), got ${shape.nExpertUsed}`);
    }
    positive('nFfExpert', 1 << 20);
    // llama (Mixtral) and olmoe size their experts by feed_forward_length itself.
    if (architecture === 'llama' || architecture === 'olmoe') {
      if (given('nFf') && given('nFfExpert') && spec.nFf !== spec.nFfExpert) {
        throw bad(`${architecture} experts are nFf wide: nFf (${spec.nFf}) and nFfExpert (${spec.nFfExpert}) must agree`);
      }
      shape.nFf = shape.nFfExpert = given('nFfExpert') || !given('nFf') ? shape.nFfExpert : shape.nFf;
    }
  } else {
    if (shape.nExpertUsed !== 0) throw bad(`nExpertUsed (${shape.nExpertUsed}) needs nExpert > 0`);
    shape.nFfExpert = 0;
  }
  if (architecture === 'qwen2moe') positive('nFfShared', 1 << 20);
  else if (shape.nFfShared !== 0) throw bad(`nFfShared (a shared expert) exists only in qwen2moe, not ${architecture}`);

  const seed = spec.seed ?? 1;
  if (!Number.isSafeInteger(seed) || seed < 0) throw bad(`seed must be an integer from 0 to 2^53, got ${String(seed)}`);
  if (spec.vocab !== undefined && (typeof spec.vocab !== 'string' || spec.vocab.length === 0)) throw bad('vocab must be a GGUF file path');
  for (const [name, t] of Object.entries(spec.tensorTypes ?? {})) {
    if (!WEIGHT_TYPES.includes(t)) throw bad(`tensorTypes['${name}']: unknown type '${String(t)}'`);
  }
  for (const [name, d] of Object.entries(spec.tensorData ?? {})) {
    if (!(d instanceof Float32Array)) throw bad(`tensorData['${name}'] must be a Float32Array`);
  }
  const routerSkew = spec.routerSkew ?? 0;
  if (!(routerSkew >= 0 && routerSkew <= 4)) throw bad(`routerSkew must be a number from 0 to 4, got ${String(spec.routerSkew)}`);
  if (routerSkew > 0 && shape.nExpert === 0) throw bad('routerSkew needs a MoE model (nExpert > 0)');
  const rs = spec.ropeScaling;
  if (rs !== undefined) {
    if (rs.type !== 'linear' && rs.type !== 'yarn') throw bad(`ropeScaling.type must be 'linear' or 'yarn', got ${String(rs.type)}`);
    if (!(rs.factor >= 1 && Number.isFinite(rs.factor))) throw bad(`ropeScaling.factor must be a number of at least 1, got ${String(rs.factor)}`);
    if (rs.originalContext !== undefined && (rs.type !== 'yarn' || !Number.isSafeInteger(rs.originalContext) || rs.originalContext < 1 || rs.originalContext > 1 << 24)) {
      throw bad(`ropeScaling.originalContext must be an integer from 1 to ${1 << 24}, for YaRN only; got ${String(rs.originalContext)}`);
    }
    if (rs.attnFactor !== undefined && !(rs.attnFactor > 0 && Number.isFinite(rs.attnFactor))) throw bad(`ropeScaling.attnFactor must be a positive number, got ${String(rs.attnFactor)}`);
  }
  if (spec.tiedEmbeddings !== undefined && typeof spec.tiedEmbeddings !== 'boolean') throw bad(`tiedEmbeddings must be a boolean, got ${String(spec.tiedEmbeddings)}`);
  // llama.cpp reads gemma's and gemma2's output from token_embd and refuses a file with an output.weight.
  const alwaysTied = architecture === 'gemma' || architecture === 'gemma2';
  if (alwaysTied && spec.tiedEmbeddings === false) throw bad(`${architecture} always ties its output to token_embd: tiedEmbeddings cannot be false`);
  if (spec.pooling !== undefined && !['mean', 'cls', 'last'].includes(spec.pooling)) throw bad(`pooling must be 'mean', 'cls' or 'last', got ${String(spec.pooling)}`);
  const cap = (which: 'attention' | 'final', fallback: number) => {
    const v = spec.softcaps?.[which] ?? fallback;
    if (!(typeof v === 'number' && v >= 0 && Number.isFinite(v))) throw bad(`softcaps.${which} must be 0 or a positive number, got ${String(v)}`);
    return v;
  };
  if (spec.softcaps !== undefined && (typeof spec.softcaps !== 'object' || spec.softcaps === null)) throw bad('softcaps must be an object');
  const attnLogitSoftcap = cap('attention', architecture === 'gemma2' ? 50 : 0);
  const finalLogitSoftcap = cap('final', architecture === 'gemma2' ? 30 : 0);
  if (architecture !== 'gemma2' && attnLogitSoftcap !== 0) throw bad(`softcaps.attention exists only in gemma2, not ${architecture}`);
  if (architecture !== 'gemma2' && architecture !== 'gemma3' && finalLogitSoftcap !== 0) throw bad(`softcaps.final exists only in gemma2 and gemma3, not ${architecture}`);
  const name = spec.name ?? `tandem synthetic ${spec.preset ?? architecture}${spec.preset !== undefined && architecture !== preset.architecture ? ` ${architecture}` : ''}`;
  return {
    ...shape,
    architecture,
    preset: presetName,
    type,
    seed,
    vocab: spec.vocab,
    name,
    tensorTypes: { ...spec.tensorTypes },
    tensorData: { ...spec.tensorData },
    routerSkew,
    ropeScaling: rs && { type: rs.type, factor: rs.factor, originalContext: rs.originalContext ?? shape.nCtx, attnFactor: rs.attnFactor ?? 1 },
    pooling: spec.pooling,
    tiedEmbeddings: spec.tiedEmbeddings === true || alwaysTied,
    attnLogitSoftcap,
    finalLogitSoftcap,
  };
}
