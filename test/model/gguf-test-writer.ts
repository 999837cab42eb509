// A deliberately small GGUF writer for tests: builds valid files of any supported
// architecture (zero weights) and lets tests corrupt them byte by byte. Not the
// product's writer; it exists so reader and describe tests need no model files.
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export type KvType =
  | 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32'
  | 'bool' | 'string' | 'uint64' | 'int64' | 'float64';

const TYPE_IDS: Record<KvType | 'array', number> = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6, bool: 7,
  string: 8, array: 9, uint64: 10, int64: 11, float64: 12,
};

export type Kv =
  | { key: string; type: KvType; value: number | bigint | boolean | string }
  | { key: string; type: 'array'; elementType: KvType; value: (number | bigint | boolean | string)[] };

export interface TensorSpec {
  name: string;
  /** ggml type name, one of TENSOR_TYPES. */
  type?: string;
  /** Innermost first. */
  shape: number[];
}

/** ggml type id, block size, bytes per block (a subset; enough for tests). */
export const TENSOR_TYPES: Record<string, [id: number, block: number, bytes: number]> = {
  f32: [0, 1, 4],
  f16: [1, 1, 2],
  q4_0: [2, 32, 18],
  q8_0: [8, 32, 34],
  q4_K: [12, 256, 144],
  q6_K: [14, 256, 210],
  bf16: [30, 1, 2],
};

export interface GgufLayout {
  bytes: Buffer;
  /** Byte offset where each metadata entry (its key length) starts. */
  kvOffsets: number[];
  /** Byte offset where each tensor info (its name length) starts. */
  tensorInfoOffsets: number[];
  /** Start of the data section. */
  dataOffset: number;
}

class Out {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  scalar(type: KvType, v: number | bigint | boolean | string): void {
    const b = Buffer.alloc(8);
    switch (type) {
      case 'uint8': return this.push(Buffer.from([Number(v) & 0xff]));
      case 'int8': b.writeInt8(Number(v)); return this.push(b.subarray(0, 1));
      case 'uint16': b.writeUInt16LE(Number(v)); return this.push(b.subarray(0, 2));
      case 'int16': b.writeInt16LE(Number(v)); return this.push(b.subarray(0, 2));
      case 'uint32': b.writeUInt32LE(Number(v)); return this.push(b.subarray(0, 4));
      case 'int32': b.writeInt32LE(Number(v)); return this.push(b.subarray(0, 4));
      case 'float32': b.writeFloatLE(Number(v)); return this.push(b.subarray(0, 4));
      case 'bool': return this.push(Buffer.from([v ? 1 : 0]));
      case 'string': return this.str(String(v));
      case 'uint64': b.writeBigUInt64LE(BigInt(v as number)); return this.push(b);
      case 'int64': b.writeBigInt64LE(BigInt(v as number)); return this.push(b);
      case 'float64': b.writeDoubleLE(Number(v)); return this.push(b);
    }
  }
  concat(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

export function tensorBytes(t: TensorSpec): number {
  const info = TENSOR_TYPES[t.type ?? 'f32'];
  if (!info) throw new Error(`test writer: unknown tensor type ${t.type}`);
  const n = t.shape.reduce((a, b) => a * b, 1);
  return (n / info[1]) * info[2];
}

/** Serialises a GGUF v3 file (alignment 32 unless general.alignment says otherwise); weights are zero. */
export function buildGguf(kvs: Kv[], tensors: TensorSpec[]): GgufLayout {
  const alignKv = kvs.find((k) => k.key === 'general.alignment');
  // Lay out with the file's alignment when it is usable, so tests can also write bad ones.
  const requested = alignKv ? Number(alignKv.value) : 32;
  const align = requested > 0 && Number.isInteger(requested) ? requested : 32;
  const o = new Out();
  o.u32(0x46554747);
  o.u32(3);
  o.u64(tensors.length);
  o.u64(kvs.length);
  const kvOffsets: number[] = [];
  for (const kv of kvs) {
    kvOffsets.push(o.length);
    o.str(kv.key);
    o.u32(TYPE_IDS[kv.type]);
    if (kv.type === 'array') {
      o.u32(TYPE_IDS[kv.elementType]);
      o.u64(kv.value.length);
      for (const v of kv.value) o.scalar(kv.elementType, v);
    } else {
      o.scalar(kv.type, kv.value);
    }
  }
  const tensorInfoOffsets: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    tensorInfoOffsets.push(o.length);
    o.str(t.name);
    o.u32(t.shape.length);
    for (const d of t.shape) o.u64(d);
    o.u32(TENSOR_TYPES[t.type ?? 'f32'][0]);
    o.u64(offset);
    offset += Math.ceil(tensorBytes(t) / align) * align;
  }
  const dataOffset = Math.ceil(o.length / align) * align;
  o.push(Buffer.alloc(dataOffset - o.length));
  o.push(Buffer.alloc(offset));
  return { bytes: o.concat(), kvOffsets, tensorInfoOffsets, dataOffset };
}

export interface TinyModelOptions {
  arch: 'llama' | 'qwen2' | 'qwen2moe' | 'qwen3moe' | 'olmoe' | 'gemma' | 'gemma2' | 'gemma3';
  nEmbd?: number;
  nHead?: number;
  nHeadKv?: number;
  nLayer?: number;
  nFf?: number;
  nVocab?: number;
  /** Experts for llama (Mixtral-style); the MoE architectures default to 4. */
  nExpert?: number;
  nExpertUsed?: number;
  nFfExpert?: number;
  nFfShared?: number;
  /** Weight type of the 2-D matrices (norms stay f32). */
  type?: string;
  tied?: boolean;
  qkvBias?: boolean;
  /** Elements per head (writes attention.key_length/value_length when not nEmbd / nHead). */
  headDim?: number;
  /** Extra or replacing metadata (same key replaces). */
  kvs?: Kv[];
  /** Metadata keys to leave out. */
  dropKeys?: string[];
  /** Tensors to leave out, and tensors to add. */
  dropTensors?: string[];
  extraTensors?: TensorSpec[];
}

/** Metadata and tensors of a tiny valid model of `arch` (shapes as llama.cpp loads them). */
export function tinyModel(opts: TinyModelOptions): { kvs: Kv[]; tensors: TensorSpec[] } {
  const a = opts.arch;
  const moe = a === 'qwen2moe' || a === 'qwen3moe' || a === 'olmoe';
  const nEmbd = opts.nEmbd ?? 64;
  const nHead = opts.nHead ?? 4;
  const nHeadKv = opts.nHeadKv ?? (a === 'olmoe' ? nHead : 2);
  const nLayer = opts.nLayer ?? 2;
  const nFf = opts.nFf ?? 96;
  const nVocab = opts.nVocab ?? 64;
  const nExpert = opts.nExpert ?? (moe ? 4 : 0);
  const nExpertUsed = opts.nExpertUsed ?? (nExpert ? 2 : 0);
  const nFfExpert = opts.nFfExpert ?? 32;
  const nFfShared = opts.nFfShared ?? 48;
  const type = opts.type ?? 'f32';
  const headDim = opts.headDim ?? nEmbd / nHead;
  const kvs: Kv[] = [
    { key: 'general.architecture', type: 'string', value: a },
    { key: 'general.name', type: 'string', value: `tiny-${a}` },
    { key: `${a}.context_length`, type: 'uint32', value: 256 },
    { key: `${a}.embedding_length`, type: 'uint32', value: nEmbd },
    { key: `${a}.block_count`, type: 'uint32', value: nLayer },
    { key: `${a}.feed_forward_length`, type: 'uint32', value: nFf },
    { key: `${a}.attention.head_count`, type: 'uint32', value: nHead },
    { key: `${a}.attention.head_count_kv`, type: 'uint32', value: nHeadKv },
    { key: `${a}.attention.layer_norm_rms_epsilon`, type: 'float32', value: 1e-6 },
    { key: `${a}.rope.freq_base`, type: 'float32', value: 10000 },
  ];
  if (nExpert) {
    kvs.push({ key: `${a}.expert_count`, type: 'uint32', value: nExpert });
    kvs.push({ key: `${a}.expert_used_count`, type: 'uint32', value: nExpertUsed });
    if (a === 'qwen2moe' || a === 'qwen3moe') kvs.push({ key: `${a}.expert_feed_forward_length`, type: 'uint32', value: nFfExpert });
    if (a === 'qwen2moe') kvs.push({ key: `${a}.expert_shared_feed_forward_length`, type: 'uint32', value: nFfShared });
  }
  if (headDim !== nEmbd / nHead) {
    kvs.push({ key: `${a}.attention.key_length`, type: 'uint32', value: headDim });
    kvs.push({ key: `${a}.attention.value_length`, type: 'uint32', value: headDim });
  }
  kvs.push({ key: 'tokenizer.ggml.model', type: 'string', value: 'llama' });
  kvs.push({ key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'string', value: Array.from({ length: nVocab }, (_, i) => `t${i}`) });
  for (const kv of opts.kvs ?? []) {
    const i = kvs.findIndex((k) => k.key === kv.key);
    if (i >= 0) kvs[i] = kv;
    else kvs.push(kv);
  }

  const expFf = a === 'olmoe' || a === 'llama' ? nFf : nFfExpert;
  const t: TensorSpec[] = [];
  const mat = (name: string, shape: number[]) => t.push({ name, type, shape });
  const vec = (name: string, shape: number[]) => t.push({ name, type: 'f32', shape });
  mat('token_embd.weight', [nEmbd, nVocab]);
  vec('output_norm.weight', [nEmbd]);
  // gemma and gemma2 files never have one: llama.cpp reads their output from token_embd.
  if (!(opts.tied ?? (a === 'gemma' || a === 'gemma2'))) mat('output.weight', [nEmbd, nVocab]);
  for (let i = 0; i < nLayer; i++) {
    const b = `blk.${i}.`;
    vec(`${b}attn_norm.weight`, [nEmbd]);
    mat(`${b}attn_q.weight`, [nEmbd, headDim * nHead]);
    mat(`${b}attn_k.weight`, [nEmbd, headDim * nHeadKv]);
    mat(`${b}attn_v.weight`, [nEmbd, headDim * nHeadKv]);
    mat(`${b}attn_output.weight`, [headDim * nHead, nEmbd]);
    if (opts.qkvBias ?? (a === 'qwen2' || a === 'qwen2moe')) {
      vec(`${b}attn_q.bias`, [headDim * nHead]);
      vec(`${b}attn_k.bias`, [headDim * nHeadKv]);
      vec(`${b}attn_v.bias`, [headDim * nHeadKv]);
    }
    if (a === 'qwen3moe' || a === 'gemma3') {
      vec(`${b}attn_q_norm.weight`, [headDim]);
      vec(`${b}attn_k_norm.weight`, [headDim]);
    }
    if (a === 'olmoe') {
      vec(`${b}attn_q_norm.weight`, [headDim * nHead]);
      vec(`${b}attn_k_norm.weight`, [headDim * nHeadKv]);
    }
    vec(`${b}ffn_norm.weight`, [nEmbd]);
    if (a === 'gemma2' || a === 'gemma3') {
      vec(`${b}post_attention_norm.weight`, [nEmbd]);
      vec(`${b}post_ffw_norm.weight`, [nEmbd]);
    }
    if (!nExpert) {
      mat(`${b}ffn_gate.weight`, [nEmbd, nFf]);
      mat(`${b}ffn_up.weight`, [nEmbd, nFf]);
      mat(`${b}ffn_down.weight`, [nFf, nEmbd]);
    } else {
      vec(`${b}ffn_gate_inp.weight`, [nEmbd, nExpert]);
      mat(`${b}ffn_gate_exps.weight`, [nEmbd, expFf, nExpert]);
      mat(`${b}ffn_up_exps.weight`, [nEmbd, expFf, nExpert]);
      mat(`${b}ffn_down_exps.weight`, [expFf, nEmbd, nExpert]);
    }
    if (a === 'qwen2moe') {
      vec(`${b}ffn_gate_inp_shexp.weight`, [nEmbd]);
      mat(`${b}ffn_gate_shexp.weight`, [nEmbd, nFfShared]);
      mat(`${b}ffn_up_shexp.weight`, [nEmbd, nFfShared]);
      mat(`${b}ffn_down_shexp.weight`, [nFfShared, nEmbd]);
    }
  }
  t.push(...(opts.extraTensors ?? []));
  const dropK = new Set(opts.dropKeys ?? []);
  const dropT = new Set(opts.dropTensors ?? []);
  return { kvs: kvs.filter((k) => !dropK.has(k.key)), tensors: t.filter((x) => !dropT.has(x.name)) };
}

let scratchDir: string | undefined;

/** Memory-backed /dev/shm where there is one (writes there are ~100x faster than to disk here). */
function scratchRoot(): string {
  try {
    accessSync('/dev/shm', constants.W_OK);
    return '/dev/shm';
  } catch {
    return tmpdir();
  }
}

/** Writes bytes to a fresh file in a per-process temporary folder and returns its path. */
export function writeTemp(name: string, bytes: Uint8Array): string {
  const p = path.join(tempDir(), name);
  writeFileSync(p, bytes);
  return p;
}

/** The per-process temporary folder (created on first use). */
export function tempDir(): string {
  scratchDir ??= mkdtempSync(path.join(scratchRoot(), 'tandem-gguf-'));
  return scratchDir;
}

/** Removes the temporary folder and everything written to it. */
export function removeTemp(): void {
  if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
  scratchDir = undefined;
}

/** Builds a tiny model and writes it; returns the path. */
export function writeTinyModel(name: string, opts: TinyModelOptions): string {
  const { kvs, tensors } = tinyModel(opts);
  return writeTemp(name, buildGguf(kvs, tensors).bytes);
}
