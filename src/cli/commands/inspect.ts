// `tandem inspect FILE [--json]`: what a GGUF file holds (architecture, shapes,
// parameters, types, memory for weights and KV cache) without loading any weights.
import path from 'node:path';
import {
  describeModel,
  summarizeTensors,
  type ModelDescription,
  type ModelHyperparams,
  type TensorSummary,
} from '../../model/describe.js';
import { GgufFile, type GgufTensorInfo } from '../../model/gguf.js';
import { DEFAULT_KV_BLOCK_TOKENS, DEFAULT_PREFILL_CHUNK } from '../../api/model.js';
import { kvSizing } from '../../engine/kv-blocks.js';
import { TandemError } from '../../native/errors.js';
import type { Command } from '../command.js';

const HELP = `usage: tandem inspect FILE [--json]

Shows what a GGUF file holds: architecture, hyperparameters, tensor shapes,
parameter count, the types used, memory for the weights and per token of KV cache.
Vocabulary-only files show their tokenizer.

  --json    print one JSON object instead of text`;

/** Tokenizer facts of a file (vocabulary-only files are little else). */
export interface TokenizerSummary {
  /** tokenizer.ggml.model, e.g. "llama" (SentencePiece) or "gpt2" (BPE). */
  model?: string;
  /** tokenizer.ggml.pre, the pre-tokenizer name. */
  pre?: string;
  tokens?: number;
  merges?: number;
  /** Special token ids by role (bos, eos, unknown, padding, ...). */
  special: Record<string, number>;
  /** Characters of tokenizer.chat_template, 0 when absent. */
  chatTemplateChars: number;
}

/** The JSON `tandem inspect --json` prints. */
export interface InspectReport extends TensorSummary {
  path: string;
  ggufVersion: number;
  fileBytes: number;
  metadataKeys: number;
  architecture: string;
  /** No tensors: a tokenizer only. */
  vocabOnly: boolean;
  /** Whether tandem can run the model (false for vocabulary-only files). */
  supported: boolean;
  /** Why not, when supported is false. */
  reason?: string;
  name?: string;
  hparams?: ModelHyperparams;
  kvBytesPerToken?: number;
  tokenizer: TokenizerSummary;
  /** The architecture's own metadata (`<arch>.*`), for files tandem cannot describe. */
  archMetadata?: Record<string, unknown>;
  tensors: { name: string; type: string; shape: number[]; bytes: number }[];
}

function tokenizerSummary(file: GgufFile): TokenizerSummary {
  const str = (k: string) => {
    const e = file.metadata.get(k);
    return e?.type === 'string' ? (e.value as string) : undefined;
  };
  const len = (k: string) => {
    const e = file.metadata.get(k);
    return e?.type === 'array' ? (e.value as { value: ArrayLike<unknown> }).value.length : undefined;
  };
  const special: Record<string, number> = {};
  for (const [key, e] of file.metadata) {
    const m = /^tokenizer\.ggml\.(\w+)_token_id$/.exec(key);
    // -1 and 0xFFFFFFFF are how converters write "no such token".
    const id = typeof e.value === 'number' || typeof e.value === 'bigint' ? Number(e.value) : -1;
    if (m && id >= 0 && id < 0xffffffff) special[m[1]] = id;
  }
  return { model: str('tokenizer.ggml.model'), pre: str('tokenizer.ggml.pre'), tokens: len('tokenizer.ggml.tokens'), merges: len('tokenizer.ggml.merges'), special, chatTemplateChars: str('tokenizer.chat_template')?.length ?? 0 };
}

function archMetadata(file: GgufFile, arch: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, e] of file.metadata) {
    if (!key.startsWith(`${arch}.`)) continue;
    if (e.type === 'array') {
      const a = e.value as { elementType: string; value: ArrayLike<unknown> };
      out[key] = a.value.length <= 16 ? Array.from(a.value, (v) => (typeof v === 'bigint' ? Number(v) : v)) : `[${a.elementType} x ${a.value.length}]`;
    } else {
      out[key] = typeof e.value === 'bigint' ? Number(e.value) : e.value;
    }
  }
  return out;
}

/**
 * Builds the report for an open file. Unsupported architectures and vocabulary-only files
 * are reported (supported: false, with the reason); a file whose metadata or tensors are
 * inconsistent throws TandemError (TDM_BAD_GGUF).
 */
export function inspectGguf(file: GgufFile): InspectReport {
  const archEntry = file.metadata.get('general.architecture');
  const architecture = archEntry?.type === 'string' ? (archEntry.value as string) : '';
  const head = {
    path: file.path,
    ggufVersion: file.version,
    fileBytes: file.fileSize,
    metadataKeys: file.metadata.size,
    architecture,
    vocabOnly: file.tensors.length === 0,
  };
  const tail = {
    tokenizer: tokenizerSummary(file),
    tensors: file.tensors.map((t) => ({ name: t.name, type: t.type, shape: t.shape, bytes: t.nBytes })),
  };
  let d: ModelDescription;
  try {
    d = describeModel(file);
  } catch (err) {
    if (!(err instanceof TandemError) || err.code !== 'TDM_UNSUPPORTED') throw err;
    // Say what is there, and why tandem cannot run it.
    const reason = err.message.startsWith(`${file.path}: `) ? err.message.slice(file.path.length + 2) : err.message;
    return { ...head, supported: false, reason, ...summarizeTensors(file.tensors), archMetadata: archMetadata(file, architecture), ...tail };
  }
  const { parameterCount, weightBytes, typesUsed } = d;
  return { ...head, supported: true, name: d.name, parameterCount, weightBytes, kvBytesPerToken: d.kvBytesPerToken, hparams: d.hparams, typesUsed, ...tail };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[u]}`;
}

export function formatCount(n: number): string {
  const steps: [number, string][] = [[1e12, 'T'], [1e9, 'B'], [1e6, 'M'], [1e3, 'K']];
  for (const [s, suffix] of steps) if (n >= s) return `${(n / s).toFixed(n / s < 10 ? 2 : 1)}${suffix}`;
  return String(n);
}

const thousands = (n: number) => n.toLocaleString('en-US');

/** Two aligned columns. */
function table(rows: [string, string][], indent = '  '): string[] {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${indent}${k.padEnd(w)}  ${v}`);
}

/** Rows of any width, columns aligned; `right` marks right-aligned columns. */
function grid(rows: string[][], right: boolean[], indent = '  '): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => indent + r.map((cell, c) => (right[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ').trimEnd());
}

function hparamRows(h: ModelHyperparams): [string, string][] {
  const rows: [string, string][] = [
    ['vocabulary', `${thousands(h.nVocab)} tokens`],
    ['training context', `${thousands(h.nCtxTrain)} tokens`],
    ['embedding', String(h.nEmbd)],
    ['layers', String(h.nLayer)],
    ['attention heads', `${h.nHead} query, ${h.nHeadKv} key/value${h.nHeadKv < h.nHead ? ` (GQA ${h.nHead / h.nHeadKv}:1)` : ''}`],
    ['head dim', h.headDim === h.headDimV ? String(h.headDim) : `${h.headDim} key, ${h.headDimV} value`],
    ['feed-forward', h.nExpert > 0 && h.nFf === 0 ? '-' : String(h.nFf)],
  ];
  if (h.nExpert > 0) {
    rows.push([
      'experts',
      `${h.nExpert}, ${h.nExpertUsed} per token, width ${h.nFfExpert}, ${h.expertGating} router${h.expertWeightsNorm ? ', weights renormalised' : ''}`,
    ]);
  }
  if (h.hasSharedExpert) rows.push(['shared expert', `width ${h.nFfShared}, sigmoid-gated`]);
  const ropeScaling =
    h.ropeScaling === 'yarn' ? `, YaRN factor ${1 / h.ropeFreqScale} from ${h.yarnOrigCtx} tokens` : h.ropeFreqScale !== 1 ? `, linear scale ${h.ropeFreqScale}` : '';
  const ropeAttn = h.ropeAttnFactor !== 1 ? `, attn factor ${h.ropeAttnFactor}` : '';
  rows.push(['rope', `${h.ropeType}, ${h.ropeDim} dims, base ${h.ropeFreqBase}${ropeScaling}${ropeAttn}`]);
  rows.push(['rms norm eps', String(Number(h.rmsEps.toPrecision(6)))]);
  const features = [
    h.hasQkvBias && 'QKV bias',
    h.hasQkNorm && 'QK norm',
    h.tiedEmbeddings && 'tied embeddings',
    h.slidingWindow > 0 &&
      `sliding window ${h.slidingWindow} (${h.slidingWindowPeriod - 1} of every ${h.slidingWindowPeriod} layers${h.ropeFreqBaseSwa !== h.ropeFreqBase ? `, rope base ${h.ropeFreqBaseSwa}` : ''})`,
    h.hasAttnSinks && 'attention sinks',
    h.hasExpertBias && 'expert biases',
    h.swigluOai && 'clamped SwiGLU',
    h.embeddingScale !== 1 && `embeddings scaled by ${Number(h.embeddingScale.toPrecision(6))}`,
    h.hasPostNorms && 'post-attention and post-FFN norms',
    h.ffnActivation === 'gelu' && 'GeGLU',
    h.attnLogitSoftcap > 0 && `attention soft cap ${h.attnLogitSoftcap}`,
    h.finalLogitSoftcap > 0 && `logit soft cap ${h.finalLogitSoftcap}`,
  ].filter(Boolean);
  if (features.length) rows.push(['features', features.join(', ')]);
  return rows;
}

/** Global tensors and those of the first layer; the other layers repeat layer 0's shapes. */
function tensorLines(tensors: readonly GgufTensorInfo[] | InspectReport['tensors'], nLayer?: number): string[] {
  const shown = tensors.filter((t) => !/^blk\.(?!0\.)\d+\./.test(t.name));
  if (shown.length === 0) return [];
  const rows = shown.map((t) => [t.name, t.type, t.shape.join(' x '), formatBytes('nBytes' in t ? t.nBytes : t.bytes)]);
  const lines = grid(rows, [false, false, false, true]);
  const hidden = tensors.length - shown.length;
  if (hidden > 0) {
    lines.push(`  (${hidden} more in ${nLayer !== undefined ? `layers 1-${nLayer - 1}` : 'other layers'}${nLayer !== undefined ? ', shaped as layer 0' : ''})`);
  }
  return lines;
}

export function renderReport(r: InspectReport): string {
  const out: string[] = [];
  const file = path.basename(r.path);
  if (r.vocabOnly) {
    out.push(`${file}: vocabulary only (no tensors), GGUF v${r.ggufVersion}, ${formatBytes(r.fileBytes)}`);
  } else {
    out.push(`${file}: ${r.architecture || 'unknown architecture'}${r.supported ? '' : ' (tandem cannot run it)'}, GGUF v${r.ggufVersion}, ${formatBytes(r.fileBytes)}`);
  }
  const tk = r.tokenizer;
  const special = Object.entries(tk.special).map(([k, v]) => `${k} ${v}`).join(', ');
  const summary: [string, string][] = [];
  if (r.name) summary.push(['name', r.name]);
  summary.push(['architecture', r.architecture || '(none)']);
  if (!r.supported && r.reason && !r.vocabOnly) summary.push(['not supported', r.reason]);
  if (!r.vocabOnly) {
    summary.push(['parameters', `${formatCount(r.parameterCount)} (${thousands(r.parameterCount)})`]);
    summary.push(['weights', `${formatBytes(r.weightBytes)} (${thousands(r.weightBytes)} bytes, ${(r.weightBytes * 8 / Math.max(1, r.parameterCount)).toFixed(2)} bits per parameter)`]);
  }
  if (r.hparams && r.kvBytesPerToken !== undefined) {
    const h = r.hparams;
    // With the sliding layers' KV kept to their window (loadModel's default), at its default block and chunk sizes.
    const sized = kvSizing(h, r.kvBytesPerToken, h.nCtxTrain, { slidingKv: 'window', blockTokens: DEFAULT_KV_BLOCK_TOKENS, maxChunkTokens: DEFAULT_PREFILL_CHUNK });
    const windowed = sized.blockBytes * sized.blocksPerSequence;
    const full = r.kvBytesPerToken * h.nCtxTrain;
    const kept = windowed < full ? `, ${formatBytes(windowed)} keeping the sliding layers' window` : '';
    summary.push(['KV cache per token', `${formatBytes(r.kvBytesPerToken)} (f16 K and V, ${h.nLayer} layers); ${formatBytes(full)} for the training context of ${thousands(h.nCtxTrain)}${kept}`]);
  }
  summary.push(['tokenizer', tk.model ? `${tk.model}${tk.pre ? ` (pre-tokenizer ${tk.pre})` : ''}, ${thousands(tk.tokens ?? 0)} tokens${tk.merges ? `, ${thousands(tk.merges)} merges` : ''}` : '(none)']);
  if (special) summary.push(['special tokens', special]);
  summary.push(['chat template', tk.chatTemplateChars ? `yes (${thousands(tk.chatTemplateChars)} characters)` : 'no']);
  summary.push(['metadata', `${r.metadataKeys} keys`]);
  out.push(...table(summary));

  if (r.hparams) {
    out.push('', 'hyperparameters', ...table(hparamRows(r.hparams)));
  } else if (r.archMetadata && Object.keys(r.archMetadata).length) {
    const show = (v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? String(Number(v.toPrecision(6))) : String(v));
    out.push('', `${r.architecture} metadata`, ...table(Object.entries(r.archMetadata).map(([k, v]) => [k.slice(r.architecture.length + 1), show(v)])));
  }
  if (r.typesUsed.length) {
    const rows = [['type', 'tensors', 'bytes', 'share']];
    for (const u of r.typesUsed) rows.push([u.type, String(u.tensors), formatBytes(u.bytes), `${((100 * u.bytes) / Math.max(1, r.weightBytes)).toFixed(1)}%`]);
    out.push('', 'types used', ...grid(rows, [false, true, true, true]));
  }
  if (r.tensors.length) {
    out.push('', `tensors (${r.tensors.length})`, ...tensorLines(r.tensors, r.hparams?.nLayer));
  }
  return out.join('\n');
}

/** JSON with 64-bit and typed-array values made plain. */
function toJson(r: InspectReport): string {
  return JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? Number(v) : ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v), 2);
}

export const command: Command = {
  summary: 'show what a GGUF file holds: architecture, shapes, parameters, types, memory',
  async run(argv: string[]): Promise<number> {
    let json = false;
    const files: string[] = [];
    for (const a of argv) {
      if (a === '--json') json = true;
      else if (a === '--help' || a === '-h') {
        console.log(HELP);
        return 0;
      } else if (a.startsWith('-') && a !== '-') throw new TandemError('TDM_BAD_ARGUMENT', `inspect: unknown option '${a}'\n\n${HELP}`);
      else files.push(a);
    }
    if (files.length !== 1) throw new TandemError('TDM_BAD_ARGUMENT', `inspect: expected one FILE, got ${files.length}\n\n${HELP}`);
    const file = GgufFile.open(files[0]);
    try {
      const report = inspectGguf(file);
      console.log(json ? toJson(report) : renderReport(report));
    } finally {
      file.close();
    }
    return 0;
  },
};
