// The decode memory-bandwidth floor: decode reads every weight it uses once per step, so a
// step can be no faster than (bytes read) / (read bandwidth). For MoE only the experts a
// token is routed to are read; the token embedding is one row per token.
import type { ModelHyperparams } from '../model/describe.js';

/** A tensor as the floor needs it (GgufTensorInfo fits). */
export interface TensorSize {
  name: string;
  /** Bytes of the tensor's data. */
  nBytes: number;
}

/** Bytes one decode step reads, split by why. */
export interface DecodeBytes {
  /** Weights every token reads whole (attention, dense FFN, norms, output, routers, shared experts). */
  denseBytes: number;
  /** All routed-expert weights (0 for a dense model). */
  expertBytes: number;
  /** Routed-expert weights one token reads: expertBytes × nExpertUsed / nExpert. */
  activeExpertBytes: number;
  /** One row of token_embd (the whole table when the output projection is tied to it). */
  embeddingBytes: number;
  /** The output projection reuses token_embd, so every step reads the whole table once. */
  tiedEmbeddings: boolean;
  /** Weight bytes read to decode one token of one sequence. */
  bytesPerToken: number;
  /** KV cache bytes read per token of context (f16 K and V, all layers). */
  kvBytesPerContextToken: number;
  nExpert: number;
  nExpertUsed: number;
}

const isExpert = (name: string): boolean => /_exps\.(weight|bias)$/.test(name);

export function decodeBytes(tensors: readonly TensorSize[], hp: Pick<ModelHyperparams, 'nVocab' | 'nExpert' | 'nExpertUsed' | 'nLayer' | 'nHeadKv' | 'headDim' | 'headDimV'>): DecodeBytes {
  let denseBytes = 0;
  let expertBytes = 0;
  let embeddingBytes = 0;
  const tied = !tensors.some((t) => t.name === 'output.weight');
  for (const t of tensors) {
    if (t.name === 'token_embd.weight') embeddingBytes = tied ? t.nBytes : t.nBytes / Math.max(1, hp.nVocab);
    else if (isExpert(t.name)) expertBytes += t.nBytes;
    else denseBytes += t.nBytes;
  }
  const activeExpertBytes = hp.nExpert > 0 ? (expertBytes * hp.nExpertUsed) / hp.nExpert : 0;
  return {
    denseBytes,
    expertBytes,
    activeExpertBytes,
    embeddingBytes,
    tiedEmbeddings: tied,
    bytesPerToken: denseBytes + activeExpertBytes + embeddingBytes,
    kvBytesPerContextToken: hp.nLayer * hp.nHeadKv * (hp.headDim + hp.headDimV) * 2,
    nExpert: hp.nExpert,
    nExpertUsed: hp.nExpertUsed,
  };
}

/**
 * Expected share of a layer's experts that a step of `nTokens` tokens touches, with each
 * token routed to nExpertUsed distinct experts uniformly at random (random weights route
 * close to uniformly; real models are more skewed, so touch fewer).
 */
export function expectedExpertShare(nExpert: number, nExpertUsed: number, nTokens: number): number {
  if (nExpert === 0) return 0;
  return 1 - Math.pow(1 - nExpertUsed / nExpert, nTokens);
}

/**
 * Bytes one decode step of `nSequences` sequences reads: the shared weights once, the
 * experts the step's tokens touch, one embedding row per token, and each sequence's KV
 * cache at `contextTokens`.
 */
export function stepBytes(b: DecodeBytes, nSequences: number, contextTokens: number): number {
  const experts = b.expertBytes * expectedExpertShare(b.nExpert, b.nExpertUsed, nSequences);
  const embedding = b.tiedEmbeddings ? b.embeddingBytes : b.embeddingBytes * nSequences;
  return b.denseBytes + experts + embedding + nSequences * contextTokens * b.kvBytesPerContextToken;
}

/** Highest aggregate decode rate (tokens/s over all sequences) that `bytesPerSecond` of read bandwidth allows. */
export function decodeFloorTokPerS(b: DecodeBytes, bytesPerSecond: number, nSequences = 1, contextTokens = 0): number {
  return (nSequences * bytesPerSecond) / stepBytes(b, nSequences, contextTokens);
}
