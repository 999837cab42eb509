// One request's state inside the engine: its tokens (prompt, then generated), how many
// of them are in the KV cache, its block table and tier, and why it stopped.
import type { KvTier, SamplingParams } from '../native/step-plan.js';
import type { KvOwner } from './kv-blocks.js';
import type { NgramIndex } from './ngram-draft.js';

/** Why a generation ended. */
export type StopReason = 'eos' | 'maxTokens' | 'stop' | 'contextFull' | 'aborted';

export type SequenceStatus = 'waiting' | 'running' | 'finished';

/** Limits the tokens a sequence may draw (JSON mode): asked before each draw, told each token drawn. */
export interface TokenConstraint {
  /** The tokens the next draw may take, as SamplingParams.allowed bits. */
  allowed(): Uint8Array;
  /** The token drawn; throws a TandemError when it was not allowed. */
  accept(token: number): void;
}

export interface SequenceParams {
  /** Tokens to generate at most (0: only process the prompt, e.g. to score it). */
  maxTokens: number;
  /** Sampling for each generated token. */
  sampling: SamplingParams;
  /** Tokens that end the generation when sampled (end-of-generation ids); empty to ignore EOS. */
  stopTokens: ReadonlySet<number>;
  /** Tokens the penalties look back over (llama.cpp's repeat_last_n). */
  penaltyWindow: number;
  /** Return the logits of every prompt position (teacher forcing); costs n_vocab floats per token. Disables prefix-cache hits. */
  returnPromptLogits: boolean;
  /** Return the hidden state after the output norm of every prompt position (embeddings; n_embd floats a token). Disables prefix-cache hits. */
  returnPromptEmbeddings?: boolean;
  /** Limits what the sequence may draw (one per sequence: it follows the sequence's tokens). */
  constraint?: TokenConstraint;
  /** Report each drawn token's logprob and this many most likely alternatives (costs the step's logits row per token). */
  logprobs?: number;
}

/** Per-request times (performance.now() milliseconds) and counts, for TTFT/TPOT and the bench. */
export interface SequenceMetrics {
  /** When the engine queued the request. */
  queuedMs: number;
  /** When a step first included it (admission). */
  scheduledMs?: number;
  /** When its first generated token reached the engine. */
  firstTokenMs?: number;
  /** When its last generated token reached the engine. */
  lastTokenMs?: number;
  /** When it ended. */
  finishedMs?: number;
  /** Prompt tokens whose KV came from the prefix cache instead of being computed (over all admissions). */
  numCachedTokens: number;
  /** Times it lost its KV and was recomputed. */
  numPreemptions: number;
  /** Times its blocks moved between tiers. */
  numMoves: number;
  /** Steps it was part of. */
  numSteps: number;
  /** Speculative decoding: draft tokens verified, and how many of them were accepted. */
  numDrafted: number;
  numAccepted: number;
}

export class Sequence implements KvOwner {
  readonly id: number;
  readonly params: SequenceParams;
  /** Prompt tokens followed by generated tokens. */
  readonly tokens: number[];
  readonly promptLength: number;
  /** Tokens whose KV is in the cache: positions [0, numComputed). Reset to 0 by preemption. */
  numComputed = 0;
  /** Prompt positions whose logits were delivered (returnPromptLogits); survives preemption so none repeat. */
  numScored = 0;
  /** Prompt positions whose hidden states were delivered (returnPromptEmbeddings); as numScored. */
  numEmbedded = 0;
  blockTable: number[] = [];
  /** With sliding layers kept apart: their blocks, -1 behind the window (see KvBlockManager). */
  slidingTable: number[] = [];
  kvTier: KvTier | undefined;
  /** Leading blocks of blockTable that are in kvTier's prefix index (prefix hits, or indexed after being computed). */
  numIndexed = 0;
  /** Chained prefix-cache keys of the first full blocks of `tokens` (computed as needed; tokens never change). */
  readonly blockHashes: string[] = [];
  status: SequenceStatus = 'waiting';
  /** Set while the consumer is not reading: the sequence takes no steps (and its blocks are reclaimed first). */
  paused = false;
  stopReason: StopReason | undefined;
  readonly metrics: SequenceMetrics;
  /** Speculative decoding: the index its drafts are looked up in, and how many it may take per step (see Scheduler). */
  drafter: NgramIndex | undefined;
  draftLimit: number | undefined;
  /** Tokens generated when drafting was last turned off for lack of hits. */
  draftPausedAt = 0;
  /** params.stopTokens as the plan of a decode burst carries them (made once). */
  private stopTokenIds: Int32Array | undefined;

  constructor(id: number, prompt: readonly number[], params: SequenceParams, queuedMs = 0) {
    this.id = id;
    this.tokens = [...prompt];
    this.promptLength = prompt.length;
    this.params = params;
    this.metrics = { queuedMs, numCachedTokens: 0, numPreemptions: 0, numMoves: 0, numSteps: 0, numDrafted: 0, numAccepted: 0 };
  }

  /** The stop tokens as an array, for the executor to end a burst on. */
  get stopTokenArray(): Int32Array {
    return (this.stopTokenIds ??= Int32Array.from(this.params.stopTokens));
  }

  /** Times the sequence lost its KV to make room for others and was recomputed. */
  get numPreemptions(): number {
    return this.metrics.numPreemptions;
  }

  /** Generated tokens so far. */
  get numGenerated(): number {
    return this.tokens.length - this.promptLength;
  }

  /** Tokens still to be fed through the model before the next sample. */
  get numPending(): number {
    return this.tokens.length - this.numComputed;
  }

  /** True while the prompt (or a recompute after preemption) is still being processed in chunks. */
  get isPrefilling(): boolean {
    return this.numPending > 1;
  }
}
