// Synthetic models: seeded random-weight GGUF files of any shape, architecture and type,
// written tensor by tensor (weights generated natively in chunks, quantized by tandem's
// llama.cpp-exact quantizers) so that llama.cpp and tandem can load the same file.
import { availableParallelism } from 'node:os';
import { native } from '../native/binding.js';
import { TandemError, asTandemError } from '../native/errors.js';
import { GgufWriter } from './gguf-writer.js';
import { quantizeAsync } from './quant.js';
import { FILE_TYPE_IDS, planTensors, tensorNames, type TensorPlan } from './synthetic/layout.js';
import { resolveSpec, type ModelSpec, type ResolvedSpec } from './synthetic/spec.js';
import { copiedVocab, syntheticVocab, type VocabMetadata } from './synthetic/vocab.js';

export * from './synthetic/spec.js';
export { planTensors, isQuantizable, fallbackType, FILE_TYPE_IDS, type TensorPlan } from './synthetic/layout.js';
export { syntheticVocab, copiedVocab, MIN_SYNTHETIC_VOCAB } from './synthetic/vocab.js';

/** Elements generated (and quantized) at a time: bounds memory whatever the tensor size. */
const CHUNK_ELEMENTS = 1 << 22;

export interface MakeModelProgress {
  /** The tensor being written. */
  tensor: string;
  /** Its index in file order, 0-based. */
  tensorIndex: number;
  nTensors: number;
  /** Tensor data bytes written so far, over all tensors. */
  bytesWritten: number;
  /** Tensor data bytes of the whole file. */
  bytesTotal: number;
}

export interface MakeModelOptions {
  /** Called after each chunk is written. */
  onProgress?: (p: MakeModelProgress) => void;
}

export interface MakeModelResult {
  /** The file written. */
  path: string;
  /** The spec with every default filled in (nVocab from the tokenizer used). */
  spec: ResolvedSpec;
  /** general.file_type written. */
  fileTypeId: number;
  /** Elements over all tensors. */
  parameterCount: number;
  /** Size of the file (bytes). */
  fileBytes: number;
  /** Tensors in the file. */
  nTensors: number;
  /** Tokens in the vocabulary (rows of token_embd.weight). */
  nVocab: number;
  /** Where the tokenizer came from: the vocab file's path, or 'synthetic'. */
  vocabSource: string;
  /** Tensors and data bytes per ggml type, largest first. */
  typesUsed: { type: string; tensors: number; bytes: number }[];
}

/** FNV-1a (64-bit) of a tensor name, cut to 53 bits: the random stream id of its values. */
export function streamId(name: string): number {
  let h = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(name, 'utf8')) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return Number(h & ((1n << 53n) - 1n));
}

/**
 * The random values of a tensor (or `count` of them from element `offset`), exactly as
 * makeModel draws them before quantizing: normal(mean, std) from the stream of (seed, name).
 */
export async function tensorValues(seed: number, name: string, mean: number, std: number, offset: number, count: number): Promise<Float32Array> {
  const out = new Float32Array(count);
  const threads = Math.max(1, Math.min(availableParallelism(), Math.floor(count / 65536)));
  const per = Math.ceil(count / threads);
  const jobs: Promise<void>[] = [];
  for (let k = 0; k < count; k += per) {
    const part = out.subarray(k, Math.min(count, k + per));
    jobs.push(native().fillNormalAsync(part, seed, streamId(name), offset + k, mean, std));
  }
  try {
    await Promise.all(jobs);
  } catch (err) {
    throw asTandemError(err);
  }
  return out;
}

function metadata(w: GgufWriter, s: ResolvedSpec, vocab: VocabMetadata): void {
  const a = s.architecture;
  const u32 = (key: string, v: number) => w.setUint32(`${a}.${key}`, v);
  w.setString('general.architecture', a);
  w.setString('general.name', s.name);
  w.setUint32('general.file_type', FILE_TYPE_IDS[s.type]);
  w.setUint32('general.quantization_version', 2);
  w.setUint64('tandem.synthetic.seed', BigInt(s.seed));
  if (s.routerSkew > 0) w.setFloat32('tandem.synthetic.router_skew', s.routerSkew);
  u32('vocab_size', vocab.nVocab);
  u32('context_length', s.nCtx);
  u32('embedding_length', s.nEmbd);
  u32('block_count', s.nLayer);
  u32('feed_forward_length', s.nFf);
  u32('attention.head_count', s.nHead);
  u32('attention.head_count_kv', s.nHeadKv);
  u32('attention.key_length', s.headDim);
  u32('attention.value_length', s.headDim);
  u32('rope.dimension_count', s.headDim);
  w.setFloat32(`${a}.rope.freq_base`, s.ropeFreqBase);
  if (s.pooling) u32('pooling_type', { mean: 1, cls: 2, last: 3 }[s.pooling]);
  if (s.ropeScaling) {
    w.setString(`${a}.rope.scaling.type`, s.ropeScaling.type);
    w.setFloat32(`${a}.rope.scaling.factor`, s.ropeScaling.factor);
    if (s.ropeScaling.type === 'yarn') u32('rope.scaling.original_context_length', s.ropeScaling.originalContext);
    if (s.ropeScaling.attnFactor !== 1) w.setFloat32(`${a}.rope.scaling.attn_factor`, s.ropeScaling.attnFactor);
  }
  w.setFloat32(`${a}.attention.layer_norm_rms_epsilon`, s.rmsEps);
  if (a === 'gpt-oss' || a === 'gemma2' || (a === 'gemma3' && s.slidingWindow > 0)) u32('attention.sliding_window', s.slidingWindow);
  // Gemma 2's files name both caps; gemma3's name a final one where it has one.
  if (a === 'gemma2') w.setFloat32(`${a}.attn_logit_softcapping`, s.attnLogitSoftcap);
  if (a === 'gemma2' || s.finalLogitSoftcap > 0) w.setFloat32(`${a}.final_logit_softcapping`, s.finalLogitSoftcap);
  if (s.nExpert > 0) {
    u32('expert_count', s.nExpert);
    u32('expert_used_count', s.nExpertUsed);
    if (a === 'qwen2moe' || a === 'qwen3moe' || a === 'gpt-oss') u32('expert_feed_forward_length', s.nFfExpert);
    if (a === 'qwen2moe') u32('expert_shared_feed_forward_length', s.nFfShared);
  }
  for (const e of vocab.entries) w.set(e.key, e.type, e.value);
}

/** Mean of every token embedding's elements under routerSkew: a direction every hidden state keeps. */
const SKEW_EMBEDDING_MEAN = 0.15;
/**
 * Router row offset of the expert of rank r: -routerSkew · ln(r + 1) · SKEW_LOGIT_SCALE / nEmbd
 * along the shared direction. Chosen by measurement on the moe-8x-top2 shape (4 layers, q8_0,
 * batch 16, CPU stand-in): 7.67, 7.44 and 6.58 distinct experts of 8 per layer and step at
 * routerSkew 0.5, 1.1 and 2, where the simulator's Zipf traces (src/sched/experts/sim.ts) give
 * 7.85, 7.51 and 6.30 at exponents 0.5, 1.1 and 2. A larger embedding mean couples the random
 * parts of the hidden states across tokens and skews routing whatever routerSkew says.
 */
const SKEW_LOGIT_SCALE = 4;

/**
 * routerSkew: every token embedding gets a shared component, and each layer's router row of the
 * expert of rank r (a seeded order per layer) an offset along it, in proportion to -ln(r + 1).
 */
function skewRouting(s: ResolvedSpec, t: TensorPlan, values: Float32Array, offset: number): void {
  if (t.name === 'token_embd.weight') {
    for (let i = 0; i < values.length; i++) values[i]! += SKEW_EMBEDDING_MEAN;
    return;
  }
  const m = /^blk\.(\d+)\.ffn_gate_inp\.weight$/.exec(t.name);
  if (!m) return;
  const layer = Number(m[1]);
  const rank = expertRanks(s.seed, layer, s.nExpert);
  const n = s.nEmbd;
  // Chunks hold whole rows. Each row loses its mean first, so that the random rows do not
  // meet the shared direction themselves: only the offsets below order the experts.
  for (let r0 = 0; r0 < values.length; r0 += n) {
    const e = Math.floor((offset + r0) / n);
    let mean = 0;
    for (let i = r0; i < r0 + n; i++) mean += values[i]!;
    mean /= n;
    const shift = (-s.routerSkew * Math.log(rank[e]! + 1) * SKEW_LOGIT_SCALE) / n - mean;
    for (let i = r0; i < r0 + n; i++) values[i]! += shift;
  }
}

/** A seeded permutation: the popularity rank of each expert of one layer. */
function expertRanks(seed: number, layer: number, nExpert: number): number[] {
  let x = (seed * 2654435761 + layer * 40503 + 1) >>> 0;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
  const order = Array.from({ length: nExpert }, (_, i) => i);
  for (let i = nExpert - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const rank = new Array<number>(nExpert);
  order.forEach((e, r) => (rank[e] = r));
  return rank;
}

/** Rows per chunk: whole rows (a quantized block never straddles chunks), about CHUNK_ELEMENTS values. */
function chunkRows(t: TensorPlan): number {
  return Math.max(1, Math.floor(CHUNK_ELEMENTS / t.shape[0]));
}

/**
 * Writes a synthetic model to `path` (through a temporary file, renamed when complete).
 * The same spec and seed always give the same bytes. Throws TDM_BAD_ARGUMENT for a bad
 * spec, TDM_IO when the file cannot be written.
 */
export async function makeModel(spec: ModelSpec, path: string, options: MakeModelOptions = {}): Promise<MakeModelResult> {
  const s = resolveSpec(spec);
  const vocab = s.vocab !== undefined ? copiedVocab(s.vocab) : syntheticVocab(s.nVocab);
  if (s.vocab !== undefined && spec.nVocab !== undefined && spec.nVocab !== vocab.nVocab) {
    throw new TandemError('TDM_BAD_ARGUMENT', `nVocab ${spec.nVocab} disagrees with the ${vocab.nVocab} tokens of ${s.vocab}`);
  }
  s.nVocab = vocab.nVocab;
  const known = new Set(tensorNames(s));
  for (const name of [...Object.keys(s.tensorTypes), ...Object.keys(s.tensorData)]) {
    if (!known.has(name)) throw new TandemError('TDM_BAD_ARGUMENT', `this ${s.architecture} model has no tensor '${name}' to override`);
  }
  const plan = planTensors(s);

  const w = new GgufWriter();
  metadata(w, s, vocab);
  const planned = plan.map((t) => w.addTensor({ name: t.name, type: t.type, shape: t.shape }));
  for (const [name, d] of Object.entries(s.tensorData)) {
    const n = planned.find((p) => p.name === name)!.nElements;
    if (d.length !== n) throw new TandemError('TDM_BAD_ARGUMENT', `tensorData['${name}'] has ${d.length} values; the tensor has ${n}`);
  }

  const stream = await w.create(path);
  const bytesTotal = stream.progress.bytesTotal;
  try {
    for (let i = 0; i < plan.length; i++) {
      const t = plan[i];
      const nElements = planned[i].nElements;
      const step = chunkRows(t) * t.shape[0];
      const given = s.tensorData[t.name];
      for (let offset = 0; offset < nElements; offset += step) {
        const count = Math.min(step, nElements - offset);
        const values = given ? given.slice(offset, offset + count) : await tensorValues(s.seed, t.name, t.mean, t.std, offset, count);
        if (!given && s.routerSkew > 0) skewRouting(s, t, values, offset);
        const bytes = t.type === 'f32' ? new Uint8Array(values.buffer, values.byteOffset, values.byteLength) : await quantizeAsync(t.type, values);
        await stream.write(t.name, bytes);
        options.onProgress?.({ tensor: t.name, tensorIndex: i, nTensors: plan.length, bytesWritten: stream.progress.bytesWritten, bytesTotal });
      }
    }
    await stream.close();
  } catch (err) {
    await stream.abort();
    throw asTandemError(err);
  }

  const byType = new Map<string, { type: string; tensors: number; bytes: number }>();
  for (const p of planned) {
    const u = byType.get(p.type) ?? { type: p.type, tensors: 0, bytes: 0 };
    u.tensors++;
    u.bytes += p.nBytes;
    byType.set(p.type, u);
  }
  return {
    path,
    spec: s,
    fileTypeId: FILE_TYPE_IDS[s.type],
    parameterCount: planned.reduce((a, p) => a + p.nElements, 0),
    fileBytes: stream.fileBytes,
    nTensors: planned.length,
    nVocab: vocab.nVocab,
    vocabSource: s.vocab ?? 'synthetic',
    typesUsed: [...byType.values()].sort((x, y) => y.bytes - x.bytes),
  };
}
