// The models a bench runs: named synthetic models (written once into a cache folder keyed
// by their spec, reused after) or any GGUF file; and what the bench needs to know of each:
// the bytes a decode step reads, and ordinary token ids to build prompts from.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describeModel } from '../model/describe.js';
import { GgufFile } from '../model/gguf.js';
import { makeModel, resolveSpec, type MakeModelProgress, type ModelSpec } from '../model/synthetic.js';
import { TandemError } from '../native/errors.js';
import { decodeBytes, type DecodeBytes } from './floor.js';

/** Synthetic models by name: the shapes and types the CPU targets (issues 3, 4, 7) are stated for. */
export const BENCH_MODELS: Record<string, { spec: ModelSpec; about: string }> = {
  'tinyllama-f16': { spec: { preset: 'tinyllama-1.1b', type: 'f16' }, about: 'TinyLlama-1.1B shape, F16 (2.2 GB)' },
  'tinyllama-q8_0': { spec: { preset: 'tinyllama-1.1b', type: 'q8_0' }, about: 'TinyLlama-1.1B shape, Q8_0 (1.2 GB)' },
  'tinyllama-q4_K_M': { spec: { preset: 'tinyllama-1.1b', type: 'q4_K_M' }, about: 'TinyLlama-1.1B shape, Q4_K_M (0.7 GB)' },
  'tinyllama-q5_K_M': { spec: { preset: 'tinyllama-1.1b', type: 'q5_K_M' }, about: 'TinyLlama-1.1B shape, Q5_K_M (0.8 GB)' },
  'tinyllama-q6_K': { spec: { preset: 'tinyllama-1.1b', type: 'q6_K' }, about: 'TinyLlama-1.1B shape, Q6_K (0.9 GB)' },
  'tinyllama-q3_K_M': { spec: { preset: 'tinyllama-1.1b', type: 'q3_K_M' }, about: 'TinyLlama-1.1B shape, Q3_K_M (0.55 GB)' },
  'tinyllama-q2_K': { spec: { preset: 'tinyllama-1.1b', type: 'q2_K_mix' }, about: "TinyLlama-1.1B shape, llama-quantize's Q2_K mix (0.45 GB)" },
  'tinyllama-iq4_xs': { spec: { preset: 'tinyllama-1.1b', type: 'iq4_xs_mix' }, about: "TinyLlama-1.1B shape, llama-quantize's IQ4_XS mix (0.6 GB)" },
  'tinyllama-iq3_m': { spec: { preset: 'tinyllama-1.1b', type: 'iq3_m' }, about: 'TinyLlama-1.1B shape, IQ3_M (0.5 GB)' },
  'tinyllama-iq3_xxs': { spec: { preset: 'tinyllama-1.1b', type: 'iq3_xxs_mix' }, about: "TinyLlama-1.1B shape, llama-quantize's IQ3_XXS mix (0.45 GB)" },
  'tinyllama-iq2_xxs': { spec: { preset: 'tinyllama-1.1b', type: 'iq2_xxs_mix' }, about: "TinyLlama-1.1B shape, llama-quantize's IQ2_XXS mix (0.3 GB)" },
  'moe-q8_0': { spec: { preset: 'moe-8x-top2', type: 'q8_0' }, about: 'Mixtral-style 8 experts top-2, 0.9B parameters, Q8_0 (1 GB)' },
  'gpt-oss-4l': {
    spec: { preset: 'gpt-oss-20b', nLayer: 4, type: 'mxfp4_moe', ropeScaling: { type: 'yarn', factor: 32, originalContext: 4096 } },
    about: "gpt-oss-20b's shape and YaRN, 4 of its 24 layers, MXFP4 experts and Q8_0 elsewhere (3 GB)",
  },
  'qwen3moe-4l': {
    spec: { preset: 'qwen3-30b-a3b', nLayer: 4, type: 'q4_K_M' },
    about: "Qwen3-30B-A3B's shape, 4 of its 48 layers: 128 small experts top-8, Q4_K_M (1.6 GB)",
  },
  'gemma2-2b-q4_K_M': {
    spec: { preset: 'gemma2-2b', type: 'q4_K_M', tiedEmbeddings: true },
    about: 'Gemma-2-2B shape (heads of 256, GeGLU, window 4096 on every other layer, soft caps 50 and 30, 256000 tokens, tied output), Q4_K_M (1.6 GB)',
  },
  'gemma3-1b-q4_K_M': {
    spec: { preset: 'gemma3-1b', type: 'q4_K_M', tiedEmbeddings: true },
    about: 'Gemma-3-1B shape (heads of 256, GeGLU, window 512 on five layers in six, 262144 tokens, tied output), Q4_K_M (0.7 GB)',
  },
  quick: {
    spec: { preset: 'tiny', nEmbd: 512, nLayer: 4, nHead: 8, nHeadKv: 4, nFf: 1408, nVocab: 4096, nCtx: 1024, type: 'q8_0' },
    about: 'a small llama for --quick: 512 wide, 4 layers, Q8_0 (about 20 MB)',
  },
};

/** Bumped when makeModel's output for a given spec changes, so that old cached files are not reused. */
const CACHE_VERSION = 1;

/** $TANDEM_CACHE/models, else ~/.cache/tandem/models. */
export function modelCacheDir(): string {
  return path.join(process.env.TANDEM_CACHE || path.join(os.homedir(), '.cache', 'tandem'), 'models');
}

/** The cache file name of a spec: readable prefix, then a hash of every resolved field. */
export function cachedModelName(spec: ModelSpec): string {
  const s = resolveSpec(spec);
  const { tensorData: _data, ...rest } = s;
  if (Object.keys(_data).length > 0) throw new TandemError('TDM_BAD_ARGUMENT', 'bench models are random: tensorData cannot be cached');
  const hash = createHash('sha256').update(JSON.stringify({ v: CACHE_VERSION, ...rest })).digest('hex').slice(0, 12);
  return `${s.preset}-${s.architecture}-${s.type}-${hash}.gguf`;
}

/**
 * The path of `nameOrPath`: a GGUF file as given, or a BENCH_MODELS name, written into
 * `cacheDir` on first use (onProgress gets 0..1 while writing).
 */
export async function resolveModel(
  nameOrPath: string,
  options: { cacheDir?: string; onWrite?: (name: string) => void; onProgress?: (fraction: number) => void } = {},
): Promise<{ path: string; label: string; synthetic: ModelSpec | undefined }> {
  const named = BENCH_MODELS[nameOrPath];
  if (!named) {
    if (!fs.existsSync(nameOrPath)) {
      throw new TandemError('TDM_NOT_FOUND', `no model file '${nameOrPath}', and it is not a bench model name (${Object.keys(BENCH_MODELS).join(', ')})`);
    }
    return { path: path.resolve(nameOrPath), label: path.basename(nameOrPath).replace(/\.gguf$/i, ''), synthetic: undefined };
  }
  const dir = options.cacheDir ?? modelCacheDir();
  const file = path.join(dir, cachedModelName(named.spec));
  if (!fs.existsSync(file)) {
    fs.mkdirSync(dir, { recursive: true });
    options.onWrite?.(file);
    await makeModel({ ...named.spec, name: `tandem bench ${nameOrPath} (random weights)` }, file, {
      onProgress: (p: MakeModelProgress) => options.onProgress?.(p.bytesWritten / p.bytesTotal),
    });
  }
  return { path: file, label: nameOrPath, synthetic: named.spec };
}

/** What a report says about a model, and what the bench builds prompts and floors from. */
export interface BenchModelInfo {
  path: string;
  label: string;
  name: string;
  architecture: string;
  parameterCount: number;
  /** Bytes of tensor data in the file. */
  weightBytes: number;
  /** ggml types by share of bytes, e.g. 'q4_K 62%, q6_K 28%, ...'. */
  types: string;
  /** Bytes a decode step reads (see floor.ts). */
  decode: DecodeBytes;
  nVocab: number;
  nCtxTrain: number;
  /** BOS id to start prompts with, or -1 when the vocabulary adds none. */
  bosId: number;
  /** Ordinary (non-control) token ids, prompts are drawn from them. */
  normalTokens: Int32Array;
  synthetic: ModelSpec | undefined;
}

export function inspectModel(file: string, label: string, synthetic?: ModelSpec): BenchModelInfo {
  const gguf = GgufFile.open(file);
  try {
    const d = describeModel(gguf);
    const hp = d.hparams;
    const types = gguf.getArray('tokenizer.ggml.token_type');
    const normal: number[] = [];
    for (let id = 0; id < hp.nVocab; id++) {
      // Type 1 is a normal token; files without types count every id past the first few as normal.
      const t = types ? Number(types.value[id]) : id >= 3 ? 1 : 0;
      if (t === 1) normal.push(id);
    }
    if (normal.length === 0) throw new TandemError('TDM_UNSUPPORTED', `${file}: the vocabulary has no ordinary tokens to build prompts from`);
    const addBos = gguf.getBool('tokenizer.ggml.add_bos_token') ?? true;
    const bos = gguf.getNumber('tokenizer.ggml.bos_token_id');
    const total = d.weightBytes || 1;
    return {
      path: file,
      label,
      name: d.name,
      architecture: hp.architecture,
      parameterCount: d.parameterCount,
      weightBytes: d.weightBytes,
      types: d.typesUsed.map((u) => `${u.type} ${Math.round((u.bytes / total) * 100)}%`).join(', '),
      decode: decodeBytes(d.tensors, hp),
      nVocab: hp.nVocab,
      nCtxTrain: hp.nCtxTrain,
      bosId: addBos && bos !== undefined ? bos : -1,
      normalTokens: Int32Array.from(normal),
      synthetic,
    };
  } finally {
    gguf.close();
  }
}
