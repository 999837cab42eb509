// The tensors of each architecture as llama.cpp loads them (names, shapes; see its
// llama-arch.cpp and the per-model load_tensors), how each is initialised, and which
// type each gets: pure types as llama-quantize --pure, the mixes as llama.cpp's
// llama_tensor_get_type (src/llama-quant.cpp).
import { IQ_MIX_TYPES, type IqMixType, type ModelFileType, type ResolvedSpec, type WeightType } from './spec.js';
import { typeInfo } from '../quant.js';

export interface TensorPlan {
  name: string;
  /** Innermost first: shape[0] is the row length (the fan-in of a weight matrix). */
  shape: number[];
  type: WeightType;
  /** Values are normal(mean, std). */
  mean: number;
  std: number;
}

interface Entry {
  name: string;
  shape: number[];
  /** Block index, -1 outside the blocks. */
  layer: number;
}

/** Names and shapes, in file order. */
function entries(s: ResolvedSpec): Entry[] {
  const out: Entry[] = [];
  const add = (name: string, shape: number[], layer = -1) => out.push({ name, shape, layer });
  const q = s.headDim * s.nHead;
  const kv = s.headDim * s.nHeadKv;
  const arch = s.architecture;
  add('token_embd.weight', [s.nEmbd, s.nVocab]);
  for (let i = 0; i < s.nLayer; i++) {
    const b = (n: string, shape: number[]) => add(`blk.${i}.${n}`, shape, i);
    b('attn_norm.weight', [s.nEmbd]);
    b('attn_q.weight', [s.nEmbd, q]);
    b('attn_k.weight', [s.nEmbd, kv]);
    b('attn_v.weight', [s.nEmbd, kv]);
    if (arch === 'qwen2' || arch === 'qwen2moe' || arch === 'gpt-oss') {
      b('attn_q.bias', [q]);
      b('attn_k.bias', [kv]);
      b('attn_v.bias', [kv]);
    }
    if (arch === 'qwen3' || arch === 'qwen3moe' || arch === 'gemma3') {
      b('attn_q_norm.weight', [s.headDim]);
      b('attn_k_norm.weight', [s.headDim]);
    }
    if (arch === 'olmoe') {
      b('attn_q_norm.weight', [q]);
      b('attn_k_norm.weight', [kv]);
    }
    b('attn_output.weight', [q, s.nEmbd]);
    if (arch === 'gpt-oss') {
      b('attn_output.bias', [s.nEmbd]);
      b('attn_sinks.weight', [s.nHead]);
      b('post_attention_norm.weight', [s.nEmbd]);
    } else {
      if (arch === 'gemma2' || arch === 'gemma3') b('post_attention_norm.weight', [s.nEmbd]);
      b('ffn_norm.weight', [s.nEmbd]);
    }
    if (s.nExpert === 0) {
      b('ffn_gate.weight', [s.nEmbd, s.nFf]);
      b('ffn_down.weight', [s.nFf, s.nEmbd]);
      b('ffn_up.weight', [s.nEmbd, s.nFf]);
      if (arch === 'gemma2' || arch === 'gemma3') b('post_ffw_norm.weight', [s.nEmbd]);
    } else {
      b('ffn_gate_inp.weight', [s.nEmbd, s.nExpert]);
      b('ffn_gate_exps.weight', [s.nEmbd, s.nFfExpert, s.nExpert]);
      b('ffn_down_exps.weight', [s.nFfExpert, s.nEmbd, s.nExpert]);
      b('ffn_up_exps.weight', [s.nEmbd, s.nFfExpert, s.nExpert]);
      if (arch === 'gpt-oss') {
        b('ffn_gate_inp.bias', [s.nExpert]);
        b('ffn_gate_exps.bias', [s.nFfExpert, s.nExpert]);
        b('ffn_down_exps.bias', [s.nEmbd, s.nExpert]);
        b('ffn_up_exps.bias', [s.nFfExpert, s.nExpert]);
      }
      if (arch === 'qwen2moe') {
        b('ffn_gate_inp_shexp.weight', [s.nEmbd]);
        b('ffn_gate_shexp.weight', [s.nEmbd, s.nFfShared]);
        b('ffn_down_shexp.weight', [s.nFfShared, s.nEmbd]);
        b('ffn_up_shexp.weight', [s.nEmbd, s.nFfShared]);
      }
    }
  }
  add('output_norm.weight', [s.nEmbd]);
  // Untied unless asked: output.weight in its own type keeps token_embd's type free.
  if (!s.tiedEmbeddings) add('output.weight', [s.nEmbd, s.nVocab]);
  return out;
}

/**
 * Initialisation that keeps a random model's activations sane through any depth: weight
 * matrices normal with std 1/sqrt(fan-in) (unit-variance outputs from unit-variance
 * inputs), norms near 1, small biases, unit-variance embeddings (the residual stream
 * starts at the scale each block adds to it).
 */
function init(e: Entry, s: ResolvedSpec): { mean: number; std: number } {
  // Gemma scales its embeddings by sqrt(nEmbd) as it reads them: unit variance after that. A
  // tied matrix is also the output projection, which needs the output's scale (at unit
  // variance every next-token distribution would be one token).
  if (e.name === 'token_embd.weight') return { mean: 0, std: s.architecture.startsWith('gemma') || s.tiedEmbeddings ? 1 / Math.sqrt(s.nEmbd) : 1 };
  if (e.name.endsWith('_norm.weight')) return { mean: 1, std: 0.05 };
  if (e.name.endsWith('.bias')) return { mean: 0, std: 0.1 };
  // Sink logits of the size the scores have, so that a sink takes a real share of the softmax.
  if (e.name.endsWith('attn_sinks.weight')) return { mean: 0, std: 1 };
  return { mean: 0, std: 1 / Math.sqrt(e.shape[0]) };
}

/** llama-quantize's tensor_allows_quantization for these architectures. */
export function isQuantizable(name: string, shape: number[]): boolean {
  return shape.length >= 2 && name.endsWith('weight') && !name.includes('_norm.weight') && !name.includes('ffn_gate_inp.weight');
}

/** llama.cpp's layer pattern that keeps more bits in the first and last eighth and every third layer between. */
function useMoreBits(layer: number, nLayer: number): boolean {
  const eighth = Math.trunc(nLayer / 8);
  return layer < eighth || layer >= Math.trunc((7 * nLayer) / 8) || (layer - eighth) % 3 === 2;
}

/** llama.cpp's tensor_type_fallback: a compatible type when the row does not fill the type's blocks. */
export function fallbackType(type: WeightType, rowLength: number): WeightType {
  if (rowLength % typeInfo(type).blockSize === 0) return type;
  const next: Partial<Record<WeightType, WeightType>> = {
    q2_K: 'q4_0', q3_K: 'q4_0', q4_K: 'q5_0', q5_K: 'q5_1', q6_K: 'q8_0',
    iq2_xxs: 'iq4_nl', iq2_xs: 'iq4_nl', iq2_s: 'iq4_nl', iq3_xxs: 'iq4_nl', iq3_s: 'iq4_nl', iq4_xs: 'iq4_nl',
  };
  const t = next[type];
  return t && rowLength % typeInfo(t).blockSize === 0 ? t : 'f16';
}

/** llama_tensor_get_type types token_embd as the output matrix when the file has no output.weight. */
function isOutput(e: Entry, s: ResolvedSpec): boolean {
  return e.name === 'output.weight' || (s.tiedEmbeddings && e.name === 'token_embd.weight');
}

/**
 * The type Q4_K_M or Q5_K_M (`base` q4_K or q5_K) gives a quantizable tensor
 * (llama_tensor_get_type, ftype MOSTLY_Q4_K_M / MOSTLY_Q5_K_M): the same rules, from a
 * different base type.
 */
function kMType(e: Entry, s: ResolvedSpec, base: 'q4_K' | 'q5_K'): WeightType {
  const n = e.name;
  const eightExperts = s.nExpert === 8;
  let t: WeightType = base;
  if (isOutput(e, s)) {
    t = e.shape[0] % 256 === 0 ? 'q6_K' : 'q8_0';
  } else if (n === 'token_embd.weight') {
    t = base;
  } else if (n.includes('attn_v.weight')) {
    if (useMoreBits(e.layer, s.nLayer)) t = 'q6_K';
    // llama.cpp's LLM_TYPE_70B: 80 llama layers with GQA.
    if (s.architecture === 'llama' && s.nExpert === 0 && s.nLayer === 80 && s.nHead !== s.nHeadKv && t === 'q4_K') t = 'q5_K';
    if (eightExperts) t = 'q8_0';
  } else if (n.includes('attn_k.weight')) {
    if (eightExperts) t = 'q8_0';
  } else if (n.includes('ffn_down')) {
    if (useMoreBits(e.layer, s.nLayer)) t = 'q6_K';
  } else if (n.includes('attn_output.weight')) {
    if (eightExperts) t = 'q5_K';
  }
  return fallbackType(t, e.shape[0]);
}

/** The mixes below as llama_tensor_get_type sees a tensor. */
interface MixContext {
  output: boolean;
  eightExperts: boolean;
  /** n_head / n_head_kv */
  gqa: number;
  /** llama.cpp's LLM_TYPE_70B: 80 llama layers with GQA. */
  llama70b: boolean;
}

function mixContext(e: Entry, s: ResolvedSpec): MixContext {
  return {
    output: isOutput(e, s),
    eightExperts: s.nExpert === 8,
    gqa: s.nHead / s.nHeadKv,
    llama70b: s.architecture === 'llama' && s.nExpert === 0 && s.nLayer === 80 && s.nHead !== s.nHeadKv,
  };
}

/**
 * The output matrix of every K and IQ mix: Q6_K (the IQ1/IQ2 files and IQ3_XXS: Q5_K) where its
 * rows fill 256-element blocks, else Q8_0, else F16 (rows that do not fill 32).
 */
function mixOutputType(e: Entry, type: WeightType = 'q6_K'): WeightType {
  return fallbackType(e.shape[0] % 256 === 0 ? type : 'q8_0', e.shape[0]);
}

/** The type Q3_K_M gives a quantizable tensor (llama_tensor_get_type, ftype MOSTLY_Q3_K_M). */
function q3KMType(e: Entry, s: ResolvedSpec): WeightType {
  const c = mixContext(e, s);
  const n = e.name;
  let t: WeightType = 'q3_K';
  if (c.output) return mixOutputType(e);
  if (n.includes('attn_v.weight')) {
    // The first two attention V matrices get Q5_K.
    t = e.layer < 2 ? 'q5_K' : 'q4_K';
    if (c.llama70b) t = 'q5_K';
    if (c.eightExperts) t = 'q8_0';
  } else if (n.includes('attn_k.weight')) {
    if (c.eightExperts) t = 'q8_0';
  } else if (n.includes('ffn_down')) {
    t = e.layer < Math.trunc(s.nLayer / 16) ? 'q5_K' : 'q4_K';
  } else if (n.includes('attn_output.weight')) {
    t = c.eightExperts ? 'q5_K' : 'q4_K';
  }
  return fallbackType(t, e.shape[0]);
}

/** The type llama-quantize's Q2_K gives a quantizable tensor (ftype MOSTLY_Q2_K). */
function q2KMixType(e: Entry, s: ResolvedSpec): WeightType {
  const c = mixContext(e, s);
  const n = e.name;
  let t: WeightType = 'q2_K';
  if (c.output) return mixOutputType(e);
  if (n.includes('attn_v.weight')) {
    t = c.gqa >= 4 ? 'q4_K' : 'q3_K';
    if (c.llama70b) t = 'q5_K';
    if (c.eightExperts) t = 'q8_0';
  } else if (n.includes('attn_k.weight')) {
    if (c.eightExperts) t = 'q8_0';
  } else if (n.includes('ffn_down')) {
    t = 'q3_K';
  } else if (n.includes('attn_output.weight')) {
    t = c.eightExperts ? 'q5_K' : 'q3_K';
  }
  return fallbackType(t, e.shape[0]);
}

/** The type llama-quantize's IQ4_XS gives a quantizable tensor without an importance matrix. */
function iq4XsMixType(e: Entry, s: ResolvedSpec): WeightType {
  const c = mixContext(e, s);
  const n = e.name;
  let t: WeightType = 'iq4_xs';
  if (c.output) return mixOutputType(e);
  if (n.includes('attn_v.weight')) {
    if (c.gqa >= 4) t = 'q5_K';
    if (c.eightExperts) t = 'q8_0';
  } else if (n.includes('attn_k.weight')) {
    if (c.eightExperts) t = 'q8_0';
  } else if (n.includes('ffn_down')) {
    if (e.layer < Math.trunc(s.nLayer / 8)) t = 'q5_K';
  } else if (n.includes('attn_output.weight')) {
    if (c.eightExperts) t = 'q5_K';
  }
  return fallbackType(t, e.shape[0]);
}

/** The type each IQ2/IQ3 file type starts every tensor from (llama.cpp's default type of the ftype: IQ2_S's is IQ2_XS). */
const IQ_MIX_BASE: Record<IqMixType, WeightType> = {
  iq2_xxs_mix: 'iq2_xxs', iq2_xs_mix: 'iq2_xs', iq2_s_mix: 'iq2_xs', iq2_m: 'iq2_s',
  iq3_xxs_mix: 'iq3_xxs', iq3_xs: 'iq3_s', iq3_s_mix: 'iq3_s', iq3_m: 'iq3_s',
};

/**
 * The type llama-quantize's IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M, IQ3_XXS, IQ3_XS, IQ3_S and IQ3_M
 * give a quantizable tensor without an importance matrix (llama_tensor_get_type_impl; with
 * one, IQ3_XXS keeps IQ3_XXS in ffn_down and, below 4 query heads per KV head, attn_v).
 * `ffnDownRank` is the tensor's index among the file's ffn_down matrices in llama.cpp's order
 * (by layer, then name): the IQ2 rule counts those, not layers.
 */
function iqMixType(e: Entry, s: ResolvedSpec, mix: IqMixType, ffnDownRank: number): WeightType {
  const c = mixContext(e, s);
  const n = e.name;
  const iq2 = mix === 'iq2_xxs_mix' || mix === 'iq2_xs_mix' || mix === 'iq2_s_mix' || mix === 'iq2_m';
  // What IQ2 files give their sensitive tensors: IQ3_S in IQ2_S and IQ2_M, Q2_K in the others.
  const iq2Raised: WeightType = mix === 'iq2_s_mix' || mix === 'iq2_m' ? 'iq3_s' : 'q2_K';
  const firstEighth = e.layer < Math.trunc(s.nLayer / 8);
  let t = IQ_MIX_BASE[mix];
  if (c.output) return mixOutputType(e, iq2 || mix === 'iq3_xxs_mix' ? 'q5_K' : 'q6_K');
  if (n === 'token_embd.weight') {
    if (mix === 'iq2_xxs_mix' || mix === 'iq2_xs_mix') t = 'q2_K';
    else if (mix === 'iq2_s_mix' || mix === 'iq2_m' || mix === 'iq3_xxs_mix') t = 'iq3_s';
  } else if (iq2) {
    if (n.includes('attn_v.weight')) {
      t = c.gqa >= 4 || s.nExpert >= 4 ? 'q4_K' : iq2Raised;
    } else if (n.includes('attn_k.weight')) {
      if (c.eightExperts) t = 'q4_K';
    } else if (n.includes('ffn_down')) {
      if (ffnDownRank < Math.trunc(s.nLayer / 8)) t = iq2Raised;
    } else if (n.includes('attn_output.weight')) {
      if (c.eightExperts) t = 'q5_K';
      else if (iq2Raised === 'iq3_s') t = 'iq3_s';
    }
  } else if (n.includes('attn_v.weight')) {
    if (mix === 'iq3_xxs_mix') t = c.gqa >= 4 ? 'q4_K' : 'iq3_s';
    else if (mix === 'iq3_m' || c.gqa >= 4) t = 'q4_K';
    if (c.llama70b && t === 'q4_K') t = 'q5_K';
    if (c.eightExperts) t = 'q8_0';
  } else if (n.includes('attn_k.weight') || n.includes('attn_q.weight')) {
    if (c.eightExperts && n.includes('attn_k.weight')) t = 'q8_0';
    else if (mix === 'iq3_xs') t = 'iq3_xxs';
    else if (mix === 'iq3_xxs_mix') t = 'iq2_s';
  } else if (n.includes('ffn_down')) {
    if (mix === 'iq3_xxs_mix') t = firstEighth ? 'q4_K' : 'q3_K';
    else if (mix === 'iq3_m' && (firstEighth || (c.eightExperts && useMoreBits(e.layer, s.nLayer)))) t = 'q4_K';
  } else if (n.includes('attn_output.weight')) {
    if (c.eightExperts) t = 'q5_K';
    else if (mix === 'iq3_xxs_mix') t = 'iq3_s';
    else if (mix === 'iq3_m') t = 'q4_K';
  } else if (n.includes('ffn_up') || n.includes('ffn_gate')) {
    if (mix === 'iq3_xs' && !firstEighth && e.layer < Math.trunc((7 * s.nLayer) / 8)) t = 'iq3_xxs';
  }
  return fallbackType(t, e.shape[0]);
}

/** Each quantizable ffn_down matrix's index among them in llama.cpp's tensor order: by layer, then name. */
function ffnDownRanks(list: Entry[]): Map<string, number> {
  const downs = list.filter((e) => e.name.includes('ffn_down') && isQuantizable(e.name, e.shape));
  downs.sort((a, b) => a.layer - b.layer || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return new Map(downs.map((e, i) => [e.name, i]));
}

/** The type MXFP4_MOE gives a quantizable tensor: MXFP4 for stacks of experts, Q8_0 for the rest. */
function mxfp4MoeType(e: Entry): WeightType {
  return fallbackType(e.shape.length === 3 ? 'mxfp4' : 'q8_0', e.shape[0]);
}

const isIqMix = (t: ModelFileType): t is IqMixType => (IQ_MIX_TYPES as readonly ModelFileType[]).includes(t);

function chooseType(e: Entry, fileType: ModelFileType, s: ResolvedSpec, ffnDownRank: Map<string, number>): WeightType {
  if (!isQuantizable(e.name, e.shape)) return 'f32';
  if (fileType === 'q4_K_M') return kMType(e, s, 'q4_K');
  if (fileType === 'q5_K_M') return kMType(e, s, 'q5_K');
  if (fileType === 'q3_K_M') return q3KMType(e, s);
  if (fileType === 'q2_K_mix') return q2KMixType(e, s);
  if (fileType === 'iq4_xs_mix') return iq4XsMixType(e, s);
  if (fileType === 'mxfp4_moe') return mxfp4MoeType(e);
  if (isIqMix(fileType)) return iqMixType(e, s, fileType, ffnDownRank.get(e.name) ?? -1);
  return fallbackType(fileType, e.shape[0]);
}

/** Every tensor of the model, in file order, with its type and initialisation. */
export function planTensors(s: ResolvedSpec): TensorPlan[] {
  const list = entries(s);
  const downRanks = ffnDownRanks(list);
  return list.map((e) => {
    const override = s.tensorTypes[e.name];
    const type = override ? fallbackType(override, e.shape[0]) : chooseType(e, s.type, s, downRanks);
    return { name: e.name, shape: e.shape, type, ...init(e, s) };
  });
}

/** Names every tensor of the model would have (to check overrides against). */
export function tensorNames(s: ResolvedSpec): string[] {
  return entries(s).map((e) => e.name);
}

/** general.file_type (llama.cpp's llama_ftype) for a file type. */
export const FILE_TYPE_IDS: Record<ModelFileType, number> = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q8_0: 7, q5_0: 8, q5_1: 9, q2_K: 10, q2_K_mix: 10, q3_K: 11, q3_K_M: 12,
  q4_K: 14, q4_K_M: 15, q5_K: 16, q5_K_M: 17, q6_K: 18, iq2_xxs: 19, iq2_xxs_mix: 19, iq2_xs: 20, iq2_xs_mix: 20,
  iq3_xs: 22, iq3_xxs: 23, iq3_xxs_mix: 23, iq4_nl: 25, iq3_s: 26, iq3_s_mix: 26, iq3_m: 27, iq2_s: 28, iq2_s_mix: 28,
  iq2_m: 29, iq4_xs: 30, iq4_xs_mix: 30, bf16: 32, mxfp4: 38, mxfp4_moe: 38,
};
