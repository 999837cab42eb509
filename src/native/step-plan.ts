// The seam between policy and mechanism (../shared/DESIGN.md): once per step the
// TypeScript scheduler hands native code a StepPlan (plain data) and gets back a
// StepResult with sampled tokens and measured phase times.

/** How a step spreads work over the devices. `cpu` is the single-device CPU path. */
export type Strategy = 'cpu' | 'gpu-only' | 'pipeline' | 'overlap';

/** Where a sequence's KV blocks live. On a CPU-only machine both tiers are host RAM. */
export type KvTier = 'device' | 'host';

/** Where a sequence's attention runs this step. */
export type AttentionDevice = 'cpu' | 'gpu';

export interface SamplingParams {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** 0 disables. */
  topK: number;
  /** 1 disables. */
  topP: number;
  /** 0 disables. */
  minP: number;
  /** 1 disables; llama.cpp's repeat penalty over `recentTokens`. */
  repeatPenalty: number;
  /** 0 disables. */
  presencePenalty: number;
  /** 0 disables. */
  frequencyPenalty: number;
  /** Added to the logit of the token id before sampling; -Infinity bans it. */
  logitBias?: { token: number; bias: number }[];
  /** Bit t (byte t >> 3, bit t & 7) set: token t may be drawn (a constraint such as JSON mode); ceil(n_vocab / 8) bytes. Absent: any token. */
  allowed?: Uint8Array;
  /** Seed of the sequence's RNG; a draw is a pure function of (seed, position), so the same seed gives the same output. */
  seed: number;
}

export interface SequencePlan {
  /** Engine-wide id of the sequence. */
  seqId: number;
  /** Token ids to process this step (a prefill chunk, or one decode token). */
  tokens: Int32Array;
  /** Position of tokens[0]; KV for positions [0, startPos) is already in the cache. */
  startPos: number;
  /** KV block ids, in order, covering positions [0, startPos + tokens.length). */
  blockTable: Int32Array;
  /** With the sliding layers' KV kept apart: each sliding group's blocks for the same positions, one group's table after another (info.kvGroups - 1 tables of one length); entries wholly behind the window of tokens[0] may be -1. */
  slidingBlockTable?: Int32Array;
  kvTier: KvTier;
  attention: AttentionDevice;
  /** Sample a token after the last one (false for a prefill chunk that is not the last). */
  sample: boolean;
  sampling?: SamplingParams;
  /** Tokens the penalties look at (the last penalty-window tokens of the sequence). */
  recentTokens?: Int32Array;
  /** Return the logits of every processed token (teacher forcing, probabilities in tests). */
  returnAllLogits?: boolean;
  /** Return the logits of the last token. */
  returnLogits?: boolean;
  /** Return every processed token's hidden state after the output norm (the head's input): embeddings. Not with drafts or a burst. */
  returnEmbeddings?: boolean;
  /** Under 'pipeline', the sub-batch this sequence runs in (the executor splits when absent). */
  subBatch?: 0 | 1;
  /**
   * Speculative decoding: the last numDraft tokens are guesses (drafts) to verify. The rows of
   * the token before them and of each guess are drawn in order, each as a step that had taken
   * the guesses before it would have drawn it (same position and penalty window), while the
   * draws equal the guesses; SequenceResult.tokens says how far they got. Needs `sample`; not
   * with returned logits or an `allowed` mask.
   */
  numDraft?: number;
  /** With drafts and recentTokens: the penalty window recentTokens was cut to (a draft row's penalties see the last this many tokens). */
  penaltyWindow?: number;
  /**
   * A decode burst (1 to 64; default 1): draw this many tokens in a row, each fed back as the
   * next round's token at the next position, with no return to the scheduler in between, so the
   * host's time between steps is paid once a burst. The draws equal those of as many steps
   * (a draw depends on seed and position only); SequenceResult.tokens holds them, fewer when
   * the burst was interrupted (NativeModel.interruptBurst). Needs a one-token decode that
   * samples, without drafts, returnAllLogits or `allowed`; with recentTokens, penaltyWindow
   * (each draw joins the window). blockTable covers the burst's positions.
   */
  decodeSteps?: number;
  /** With decodeSteps: tokens that end the sequence; its burst stops at the round that draws one. */
  stopTokens?: Int32Array;
}

/** Copies whole KV blocks between tiers (swap out/in) or within one (copy on write). */
export interface BlockCopy {
  fromTier: KvTier;
  fromBlock: number;
  toTier: KvTier;
  toBlock: number;
}

export interface StepPlan {
  strategy: Strategy;
  /** Block copies, run in list order before the forward pass (a later copy may overwrite a block an earlier one read). */
  copies: BlockCopy[];
  sequences: SequencePlan[];
}

export interface SequenceResult {
  seqId: number;
  /** The sampled token, or -1 when the plan did not ask to sample. */
  token: number;
  /** Logits of the last token (n_vocab) when asked for; with a decode burst, of each draw in order (draws × n_vocab). */
  logits?: Float32Array;
  /** Logits of every processed token (tokens.length × n_vocab) when asked for. */
  allLogits?: Float32Array;
  /** Hidden states after the output norm of every processed token (tokens.length × n_embd), when asked for (returnEmbeddings). */
  embeddings?: Float32Array;
  /** With drafts: the guesses accepted, then the token drawn after them; with a burst: its draws in order (`token` is the last). */
  tokens?: Int32Array;
}

export interface StepResult {
  sequences: SequenceResult[];
  /** Measured time per phase in microseconds (e.g. copies, linear, attention, sampling). */
  phaseUs: Record<string, number>;
  /** Wall time of the whole step in microseconds. */
  totalUs: number;
  /** Forward passes run: above 1 for a decode burst (fewer than planned when interrupted). Absent: 1. */
  rounds?: number;
  /** Expert offload counters of this step, when the model was loaded with `experts`. */
  experts?: ExpertStepStats;
  /** With `experts`: each layer's CPU expert call as (experts, routed rows, measured µs), flattened; what the expert costs are refitted from (src/sched/experts/refit.ts). */
  cpuExpertCalls?: Float64Array;
}

/** What expert offload did in one step, summed over layers; an active expert is one (layer, expert) pair with routed rows. */
export interface ExpertStepStats {
  /** Active experts found resident on the device. */
  hits: number;
  /** Routed rows (token, choice) of those experts. */
  hitRows: number;
  /** Active experts not resident. */
  misses: number;
  /** Misses copied to a cache slot and run on the device. */
  copies: number;
  /** CPU-run misses copied into the cache afterwards because their score beat a resident one's. */
  admissions: number;
  /** The next layer's missing experts copied ahead of it (by score, or by the pregate first). */
  prefetches: number;
  /** Prefetched experts routed to before they were evicted. */
  prefetchHits: number;
  /** Resident experts replaced. */
  evictions: number;
  /** Active experts run on the device (hits + copies) and on the CPU. */
  deviceExperts: number;
  cpuExperts: number;
  /** Routed rows (token, choice) run on each side. */
  deviceRows: number;
  cpuRows: number;
  /** Layers that ran experts on the CPU: one CPU call each. */
  cpuCalls: number;
  /** Bytes of expert slabs copied host -> device. */
  copyBytes: number;
  /** Bytes of hidden states down and expert outputs up for CPU experts. */
  activationBytes: number;
  /** Copies of steps of several tokens (prefill), streamed through the double buffer, and their slab bytes (also in copies, copyBytes). */
  prefillCopies: number;
  prefillCopyBytes: number;
  /** Streamed copies queued ahead of device compute that ran before their use (the copy could hide behind it). */
  overlappedCopies: number;
}

/** Forward passes a step ran: the result's count, else the plan's longest decode burst. */
export function roundsOf(plan: StepPlan, result: StepResult): number {
  return result.rounds ?? Math.max(1, ...plan.sequences.map((p) => p.decodeSteps ?? 1));
}
