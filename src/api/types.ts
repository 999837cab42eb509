// The public types of tandem's API: options of loadModel(), generate() and chat(), and
// what a generation streams and returns.
import type { StopReason } from '../engine/sequence.js';
import type { ExpertStepStats, Strategy } from '../native/step-plan.js';
import type { NativeExpertCost } from '../native/binding.js';
import type { ExpertCalibrationError } from '../sched/experts/calibrate.js';
import type { ExpertRefitState } from '../sched/experts/refit.js';
import type { ToolCall } from '../model/harmony.js';
import type { ReplyFormat } from '../model/reply-format.js';
import type { PredictionError } from '../sched/cost-model.js';
import type { PolicyName } from '../sched/policy.js';

export type { StopReason, Strategy, PolicyName };

/** The device beside the CPU: 'none', 'auto' (a usable GPU, else none), 'gpu' (or TDM_BACKEND_UNAVAILABLE), 'cpu-standin' (a second CPU backend posing as a GPU: for tests, never GPU numbers). */
export type DeviceOption = 'none' | 'auto' | 'gpu' | 'cpu-standin';

export interface LoadModelOptions {
  /** CPU threads for compute. Default: the machine's physical cores. */
  threads?: number;
  /** Tokens one sequence may hold, prompt and generated together. Default: the model's training context, at most 4096. */
  contextSize?: number;
  /** Tokens per KV cache block. Default 16. */
  kvBlockTokens?: number;
  /**
   * How K and V are stored: 'f16' (default, as llama.cpp) or 'q8_0' (blocks of 32 int8 levels
   * with an f16 scale: 47% less KV memory, so about twice the context or sequences in the same
   * kvCacheBytes; logits move by the quantization, as llama.cpp's `-ctk q8_0 -ctv q8_0`). q8_0
   * runs on the CPU kernels only (no GPU device) and needs head sizes in multiples of 32.
   */
  kvType?: 'f16' | 'q8_0';
  /** Sequences decoded together at most (one step holds at most this many). Default 4. */
  maxSequences?: number;
  /** Prompt tokens of one sequence processed per step (the prefill chunk); longer prompts take several steps. Default 256. */
  prefillChunkTokens?: number;
  /** Bytes of KV cache over both tiers. Default: room for maxSequences full contexts. */
  kvCacheBytes?: number;
  /** KV cache as a fraction (0, 1] of the memory free at load time (os.freemem() with no GPU); kvCacheBytes wins. */
  kvCacheFraction?: number;
  /**
   * Share of the KV cache in the device tier, [0, 1]. With no GPU both tiers are host RAM
   * and the split only exercises placement and moves; default 0 there, 0.5 with a device.
   */
  kvDeviceFraction?: number;
  /** Share KV blocks between requests with a common prompt prefix (system prompts, multi-turn chats). Default true. */
  prefixCaching?: boolean;
  /**
   * KV of sliding-window layers (gpt-oss): 'window' (default) keeps only the blocks their
   * window still sees, in blocks of their own, so that their memory stops growing with the
   * context; 'full' keeps every position for every layer (llama.cpp's --swa-full). Results
   * are the same.
   */
  slidingKv?: 'window' | 'full';
  /**
   * Speculative decoding with prompt-lookup drafts: in steps where every request decodes, each
   * may add up to this many tokens guessed from its own prompt and reply (what followed the
   * last time its latest few tokens occurred), which the step verifies by drawing each position
   * as plain decoding would. The tokens are the same as without it, seeded sampling and
   * penalties included; a step of a few tokens costs little more than one on the CPU, so each
   * accepted guess saves most of a step. Requests with responseFormat or logprobs decode
   * without guesses. CPU path only (no device). Default 0 (off).
   */
  draftTokens?: number;
  /**
   * Decode bursts: in steps where every request decodes with nothing the host must do between
   * draws (no responseFormat or guesses), each request may draw up to this many
   * tokens in a row before the engine plans again, so that the host's time between steps
   * (planning, passing the plan, delivering tokens; about a millisecond at 48 requests) is paid
   * once a burst. Each step's burst is sized from measured times so that this host time stays
   * near 5% of the device's, and is 1 when it already is: a fast GPU step gets a burst, a
   * slow CPU step does not. Tokens and logprobs are the same as without it, penalties and
   * seeded sampling included. Tokens reach the stream a burst at a time; a request that arrives (or resumes)
   * during a burst ends it after the round under way; a stream's buffer may hold up to a burst
   * more than outputBufferTokens. 1 turns it off. Default 8, or the environment's
   * TANDEM_DECODE_BURST; 1 with draftTokens (guesses take those steps instead).
   */
  decodeBurst?: number;
  /** When KV memory runs short: 'swap' moves a request's blocks to the other tier when it has room, else recomputes; 'recompute' always recomputes. Default 'swap'. */
  preemption?: 'swap' | 'recompute';
  /** Requests waiting for a slot at most; more reject with TDM_QUEUE_FULL. Default 1024. */
  maxQueuedRequests?: number;
  /**
   * Tokens a streamed generation holds for a consumer that iterates but stops reading;
   * when that many are unread the request pauses (takes no steps, and its KV is reclaimed
   * first under memory pressure) until the reader catches up. Default 256.
   */
  outputBufferTokens?: number;
  /** Called with the fraction of weights loaded, 0 to 1. */
  onProgress?: (fraction: number) => void;
  /**
   * The CPU kernels: 'auto' (default) runs the best set this processor supports; 'avx512',
   * 'avxvnni' (the AVX2 set with AVX-VNNI's integer dot products), 'avx2' or 'ref' (scalar
   * reference) pick one, to compare them or to work around a problem.
   * A set the processor lacks is TDM_UNSUPPORTED. Results agree across sets to float rounding.
   */
  cpuKernels?: CpuKernelsOption;
  /** The device beside the CPU. Default 'none': the single-device CPU path. */
  device?: DeviceOption;
  /** Threads of the 'cpu-standin' device (only with it). Default 1. */
  deviceThreads?: number;
  /** Device memory for weights, bytes (needs a device). Default: all that fits; the rest stay in host RAM and their matmuls run on the CPU. */
  deviceWeightBytes?: number;
  /**
   * Bytes of KV cache in the device tier (device memory with a GPU): a cap that makes
   * device-KV pressure real. With kvHostBytes it replaces kvCacheBytes, kvCacheFraction and
   * kvDeviceFraction. Default with a device: room for maxSequences full contexts, within
   * 90% of the GPU's free memory less the weights.
   */
  kvDeviceBytes?: number;
  /** Bytes of KV cache in the host tier (host RAM). Default with a device: room for maxSequences full contexts; with none, see kvCacheBytes. */
  kvHostBytes?: number;
  /**
   * With a GPU that can read page-locked host memory: the host KV tier is locked and mapped at
   * load (info.kvHostLocked), so that swaps between the tiers copy from locked memory and 'auto'
   * may run attention for host-tier sequences on the GPU over their KV gathered across the link
   * (beside the CPU's; info.kvStream). Default: on where the device KV tier cannot hold
   * maxSequences full contexts (elsewhere the device has room for every sequence, and the host
   * tier is seldom used) or where kvStreamStagingBytes is given; false keeps the host tier
   * ordinary pageable memory (less locked RAM, for a desktop app) and takes no staging. Where
   * sliding-window layers keep their KV apart (gpt-oss), only their window's blocks cross.
   * TANDEM_KV_STREAM=0 turns it off too.
   */
  kvStream?: boolean;
  /**
   * Device memory for streamed KV's staging, in bytes, taken at load: it bounds how much host
   * KV one step may stream (info.kvStreamBlocks). Default 128 MiB (2 GiB of Llama-3.1-8B KV a
   * step, about 90 ms of a PCIe 4 link) with policy 'auto' where the host tier is locked, else
   * none: only 'auto' streams. Less than one KV block's worth turns streaming off.
   */
  kvStreamStagingBytes?: number;
  /** What decides every step with a device (needs one): 'auto' (default) picks per step; 'gpu-only', 'pipeline' (NEO) and 'overlap' (APEX) always run that strategy. */
  policy?: PolicyName;
  /** Target time per output token, milliseconds, that 'auto' keeps its predicted step under when it can (needs a device). */
  tpotSloMs?: number;
  /**
   * The cost model's timings (needs a device): 'cached' (default) reads this machine's and
   * model's profile from the cache or profiles once (a few seconds to a minute) and caches
   * it; 'refresh' profiles again; 'quick' times a dozen sizes and caches nothing (tests).
   */
  profile?: 'cached' | 'refresh' | 'quick';
  /** Where profiles are cached. Default $TANDEM_CACHE, else ~/.cache/tandem. */
  profileCacheDir?: string;
  /**
   * MoE models with a device: where the routed experts live (needs one). 'stacks' (default):
   * placed like other weights; stacks that do not fit stay in host RAM and run on the CPU.
   * 'dynamic': every expert in host RAM as one slab, a device expert cache filled by score in
   * the memory the dense weights leave, and each step each missing expert either copied and
   * run on the device or run on the CPU, whichever finishes first by costs calibrated on this
   * machine (at first use, cached like the profile). 'cpu-all' and 'cpu-first-layers:N' are
   * llama.cpp's --cpu-moe and --n-cpu-moe N.
   */
  experts?: ExpertsOption;
  /**
   * experts: 'dynamic': how it picks the next layer's experts to copy ahead while the link
   * would idle. 'score' (default): the highest routing scores. 'router': first the experts the
   * next layer's router picks on this layer's hidden state (one small matmul a layer on the
   * device), then by score. On the CPU stand-in 'router' raised the one-sequence hit rate of a
   * synthetic MoE from 48% to 77%; its speed on a GPU has not been measured yet.
   */
  expertPrefetch?: 'score' | 'router';
}

/** The CPU kernel sets (LoadModelOptions.cpuKernels). */
export type CpuKernelsOption = 'auto' | 'avx512' | 'avxvnni' | 'avx2' | 'ref';

/** Where a MoE model's routed experts live with a device (LoadModelOptions.experts). */
export type ExpertsOption = 'stacks' | 'dynamic' | 'cpu-all' | `cpu-first-layers:${number}`;

export interface GenerateOptions {
  /** Tokens to generate at most. Default: until end of generation or a full context. */
  maxTokens?: number;
  /** Softmax temperature; 0 samples greedily (argmax). Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 keeps all. Default 40. */
  topK?: number;
  /** Keep the smallest set of tokens whose probabilities sum to at least p; 1 keeps all. Default 0.95. */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one; 0 keeps all. Default 0.05. */
  minP?: number;
  /** Divides positive logits (multiplies negative ones) of recently seen tokens; 1 disables. Default 1. */
  repeatPenalty?: number;
  /** Recent tokens (prompt included) the penalties look at. Default 64. */
  penaltyLastN?: number;
  /** Subtracted from the logit of every recently seen token; 0 disables. Default 0. */
  presencePenalty?: number;
  /** Subtracted once per occurrence of a recently seen token; 0 disables. Default 0. */
  frequencyPenalty?: number;
  /** Added to a token's logit before sampling, by token id; -Infinity bans the token. */
  logitBias?: Record<number, number> | Map<number, number>;
  /** RNG seed: the same seed, prompt and options give the same output. Default: random. */
  seed?: number;
  /** Generation ends before any of these strings; no text from a stop string onward is emitted. */
  stop?: string | string[];
  /** Keep generating after end-of-generation tokens. Default false. */
  ignoreEos?: boolean;
  /**
   * `{ type: 'json_object' }`: the reply is one JSON object (OpenAI's JSON mode). `{ type:
   * 'json_schema', schema }`: one value of that JSON Schema (the subset src/model/json-schema.ts
   * describes; other keywords are refused). Only tokens that keep the text a valid prefix are
   * drawn, and the reply ends once the value closes. Default `{ type: 'text' }`.
   */
  responseFormat?: { type: 'text' } | { type: 'json_object' } | { type: 'json_schema'; schema: object };
  /**
   * Report each generated token's log-probability under the model (the log-softmax of its
   * logits, before temperature, penalties, bias and constraints) and this many most likely
   * tokens at its place, 0 to 20 (GenerationChunk.logprobs, GenerationResult.logprobs).
   */
  logprobs?: number;
  /** Aborting it ends the generation with stopReason 'aborted' and frees its memory at the next step. */
  signal?: AbortSignal;
}

export interface ChatMessage {
  /** 'system', 'user' or 'assistant' (any role the model's chat template knows). */
  role: string;
  content: string;
  /** Other fields the chat template may read (e.g. tool_calls, name). */
  [key: string]: unknown;
}

export interface ChatOptions extends GenerateOptions {
  /** Variables passed to the chat template besides messages (e.g. enable_thinking). */
  templateVariables?: Record<string, unknown>;
  /**
   * For models with a reply format (ModelInfo.replyFormat): 'split' (default) puts the reply
   * in `text`, the reasoning (harmony's analysis and commentary channels, or <think> blocks)
   * in `reasoning` and tool calls in the result's `toolCalls` (harmony's messages to functions
   * always; the other formats when `templateVariables.tools` offers tools); 'raw' keeps the
   * reply as generated, markers included. Stop strings match the raw text either way.
   */
  reasoning?: 'split' | 'raw';
}

export interface TokenizeOptions {
  /** Prepend BOS when the model's vocabulary asks for it. Default true. */
  addBos?: boolean;
  /** Parse special-token text (e.g. "<|im_start|>") as the special token. Default false. */
  special?: boolean;
}

/**
 * How embed() makes one vector of a text's hidden states (each token's state after the output
 * norm, what the LM head reads): their mean, the first token's ('cls', as llama.cpp names it)
 * or the last token's (decoder embedding models such as Qwen3-Embedding, e5-mistral).
 */
export type EmbeddingPooling = 'mean' | 'cls' | 'last';

export interface EmbedOptions {
  /** Default: the model's own (`info.pooling`). */
  pooling?: EmbeddingPooling;
  /** Scale the vector to unit length (as OpenAI's and llama.cpp's servers do). Default true. */
  normalize?: boolean;
  /** Aborting rejects with TDM_ABORTED and frees the request's memory. */
  signal?: AbortSignal;
}

/** A piece of a streamed generation. */
/** A token as logprobs report it: its id, its bytes, and those bytes as text (a partial UTF-8 character shows as U+FFFD). */
export interface LogprobToken {
  token: number;
  text: string;
  bytes: number[];
  logprob: number;
}

/** A generated token's log-probability, and the most likely tokens at its place (most likely first). */
export interface TokenLogprob extends LogprobToken {
  top: LogprobToken[];
}

export interface GenerationChunk {
  /** Text that became final with this chunk ('' while a character or a possible stop string is incomplete). */
  text: string;
  /** Tokens generated since the previous chunk. */
  tokens: number[];
  /** With GenerateOptions.logprobs: one entry per token of `tokens`. */
  logprobs?: TokenLogprob[];
  /** Reasoning that became final with this chunk (chat() with a split reply, see ChatOptions.reasoning). */
  reasoning?: string;
}

export interface GenerationResult {
  /** All emitted text: nothing from a stop string onward (chat() with a split reply: the final channel only). */
  text: string;
  /** chat() with a split reply (ChatOptions.reasoning): the reasoning channels' text. */
  reasoning?: string;
  /** chat() with a split reply: the tool calls it made (ModelInfo.replyFormat.toolCalls), when it made any. */
  toolCalls?: ToolCall[];
  /** Every generated token, including an EOS token and the token that completed a stop string. */
  tokens: number[];
  /** With GenerateOptions.logprobs: one entry per token of `tokens`. */
  logprobs?: TokenLogprob[];
  stopReason: StopReason;
  usage: { promptTokens: number; completionTokens: number };
  /** Times and counts of the request inside the engine (absent if it never reached it). */
  metrics?: GenerationMetrics;
}

/** When things happened to a request (performance.now() milliseconds) and what it cost, for TTFT/TPOT. */
export interface GenerationMetrics {
  /** generate() or chat() was called. */
  startMs: number;
  /** The tokenized prompt entered the engine's queue. */
  queuedMs: number;
  /** A step first included the request. */
  scheduledMs?: number;
  /** The first generated token came back from its step. */
  firstTokenMs?: number;
  /** The last generated token came back from its step. */
  lastTokenMs?: number;
  /** The request ended. */
  finishedMs: number;
  /** Time to first token: firstTokenMs - startMs. */
  ttftMs?: number;
  /** Time per output token after the first: (lastTokenMs - firstTokenMs) / (generated tokens - 1). */
  tpotMs?: number;
  /** Prompt tokens whose KV came from the prefix cache. */
  cachedPromptTokens: number;
  /** Times the request's KV was dropped and recomputed. */
  preemptions: number;
  /** Times its KV moved between tiers. */
  moves: number;
  /** Speculative decoding (draftTokens): guessed tokens its steps verified, and how many were right (each saved a step). */
  draftedTokens: number;
  acceptedDrafts: number;
}

/** A running generation: iterate it for chunks; `result` settles when it ends (a failure rejects both). */
export interface Generation extends AsyncIterable<GenerationChunk> {
  readonly result: Promise<GenerationResult>;
  /** Ends the generation with stopReason 'aborted' (as breaking out of the loop does). */
  abort(): void;
}

export interface ModelInfo {
  /** general.architecture, e.g. 'qwen3moe'. */
  architecture: string;
  nVocab: number;
  /** Hidden size: the length of embed()'s vectors. */
  nEmbd: number;
  /**
   * embed()'s default pooling: the file's `{arch}.pooling_type` (mean, cls or last), else 'last',
   * as llama.cpp falls back to for a model that names none; 'rank' for a reranker, which
   * embed() takes only with a pooling of its own.
   */
  pooling: EmbeddingPooling | 'rank';
  contextSize: number;
  /** Context the model was trained with. */
  trainContextSize: number;
  threads: number;
  /** The CPU kernel set in use: 'avx512', 'avxvnni', 'avx2' or 'ref'. */
  cpuKernels: Exclude<CpuKernelsOption, 'auto'>;
  /** Compute backends the native model uses, e.g. ['cpu']. */
  backends: string[];
  kvBlockTokens: number;
  /** KV cache blocks over all tiers. */
  numKvBlocks: number;
  /** KV cache blocks per tier. */
  kvBlocks: { device: number; host: number };
  /** Bytes of one KV block (its layer group's layers, K and V). */
  kvBlockBytes: number;
  /** > 0: sliding-window layers keep this many positions in blocks of their own (slidingKv 'window'); 0: one block table holds every layer. */
  kvSlidingWindow: number;
  /** How K and V are stored ('f16' or 'q8_0'). */
  kvType: 'f16' | 'q8_0';
  /** The GPU may attend host-tier KV streamed across the link (loadModel's kvStream, where the device can): auto then weighs it every step. */
  kvStream: boolean;
  /** Host KV blocks one step may stream (the staging's room, loadModel's kvStreamStagingBytes); 0 when kvStream is false. */
  kvStreamBlocks: number;
  /** The host KV tier is page-locked RAM for the model's life (kvStream): swaps between the tiers copy from it at the link's full rate. */
  kvHostLocked: boolean;
  /** Guesses per request and step at most (speculative decoding, loadModel's draftTokens); 0: off. */
  draftTokens: number;
  /** Draws per request and step at most (loadModel's decodeBurst); 1: off. */
  decodeBurst: number;
  /** The model replies on harmony's channels (gpt-oss's vocabulary): chat() splits its replies into text, reasoning and tool calls. */
  replyChannels: boolean;
  /**
   * How the model marks reasoning and tool calls, from its vocabulary and chat template
   * (model/reply-format.ts): reasoning on harmony's channels or between <think> tags; tool calls
   * on harmony's channels, in <tool_call> tags (Hermes, Qwen), as a Llama 3 JSON reply or after
   * Mistral's [TOOL_CALLS]. null: none that chat() can read.
   */
  replyFormat: ReplyFormat;
  /** Bytes of KV cache per token over every layer (with kvSlidingWindow > 0 the sliding layers keep only their window, so a long context takes less). */
  kvBytesPerToken: number;
  /** The device in use beside the CPU: its kind ('cuda', 'hip', 'cpu-standin'), or null on the single-device CPU path. */
  device: string | null;
  /** The device's name ('' with none). */
  deviceName: string;
  /** Where the weights went: bytes and matrices on the device and in host RAM. */
  placement: { deviceBytes: number; hostBytes: number; deviceTensors: number; hostTensors: number };
  /** The policy every step runs under; 'cpu' on the single-device path. */
  policy: PolicyName | 'cpu';
  /** The TPOT target given to the policy, milliseconds. */
  tpotSloMs?: number;
  /** With a policy: where its cost model came from (the cache file, a fresh profile, a quick one) and its error on held-out sizes. */
  profile?: { source: 'cache' | 'profiled' | 'quick'; file?: string; errors: PredictionError[] };
  /**
   * With expert offload (experts other than 'stacks'): the policy, the device cache's slots and
   * slot bytes, host slab bytes, and for 'dynamic' the calibrated expert costs (µs; bytes/µs),
   * where they came from and their error at row counts they were not fitted on.
   */
  experts?: {
    policy: string;
    /** 'dynamic': how it orders its prefetch (LoadModelOptions.expertPrefetch). */
    prefetch?: 'score' | 'router';
    slots: number;
    slotBytes: number;
    hostSlabBytes: number;
    calibration?: { source: 'cache' | 'calibrated' | 'quick'; file?: string; cost: NativeExpertCost; errors: ExpertCalibrationError[]; deviceNote?: string };
  };
}

/** What one engine step did, for Model.onStep (the bench's and a user's view of the scheduler). */
export interface StepInfo {
  /** Steps since load, this one included. */
  step: number;
  /** The policy that shaped the step; 'cpu' on the single-device path. */
  policy: PolicyName | 'cpu';
  strategy: Strategy;
  /** Sequences in the step by KV tier, and running ones the policy left out of it. */
  sequences: { device: number; host: number; deferred: number };
  /** Sequences whose attention ran on the CPU while the device did the rest (host-tier KV). */
  cpuAttention: number;
  /** Tokens processed (prefill chunks and decodes, every round of a decode burst). */
  tokens: number;
  /** Positions the step's first round attends over, summed over its sequences (each one's context with the step's tokens): what its attention reads. */
  contextTokens: number;
  /** Forward passes: the longest decode burst in the step (1 without one). */
  rounds: number;
  /** KV block copies before the forward pass (swaps, copy on write). */
  copies: number;
  /** Measured time per phase, microseconds. */
  phaseUs: Record<string, number>;
  /** Measured wall time of the step, microseconds. */
  totalUs: number;
  /** The policy's predicted step time, microseconds, times the rounds (absent on the single-device path). */
  predictedUs?: number;
  /** With expert offload: what it did this step (hits, copies, CPU experts, bytes moved). */
  experts?: ExpertStepStats;
}

/** Running totals of the policy (Model.stats.policy). */
export interface PolicyStatsView {
  name: PolicyName;
  steps: number;
  /** Steps run under each strategy. */
  strategies: Record<Strategy, number>;
  /** Sequence-steps left out (host-tier sequences sitting a step out). */
  deferrals: number;
  /** Steps whose prediction was compared with the measured time. */
  predictedSteps: number;
  /** Mean |predicted - measured| / measured step time (undefined before any). */
  meanStepError?: number;
  /** Steps the policy would have left wholly out, run unshaped instead (attention where the KV is). */
  unshapedSteps: number;
  /** Sequence-steps run with device attention over host-tier KV streamed across the link (auto, where the device streams). */
  streamed: number;
}

/** Load, queue and KV cache state, and running totals since load, for monitoring and the bench. */
export interface ModelStats {
  numWaiting: number;
  numRunning: number;
  /** Requests paused because their consumer stopped reading. */
  numPaused: number;
  /** KV blocks that can be handed out (free, or cached and unreferenced). */
  numFreeKvBlocks: number;
  numKvBlocks: number;
  /** KV blocks in the prefix-cache index. */
  numCachedKvBlocks: number;
  /** Per tier: blocks, free, cached, evicted (total), moved in (total). */
  kvTiers: Record<'device' | 'host', { numBlocks: number; numFree: number; numCached: number; numEvictions: number; numBlocksMovedIn: number }>;
  numSteps: number;
  /** Forward passes of those steps: a decode burst of k draws is one step of k rounds. */
  numRounds: number;
  /** Requests accepted, ended normally, aborted, failed, and refused with TDM_QUEUE_FULL. */
  numRequests: number;
  numFinished: number;
  numAborted: number;
  numFailed: number;
  numRejected: number;
  /** Tokens run in prompt chunks (and recomputes), served from the prefix cache, and sampled. */
  numPrefillTokens: number;
  numCachedTokens: number;
  numGeneratedTokens: number;
  /** Sequences recomputed, and block tables moved between tiers. */
  numPreemptions: number;
  numMoves: number;
  /** Speculative decoding (draftTokens): guessed tokens verified, and those accepted. */
  numDraftTokens: number;
  numAcceptedDrafts: number;
  /** Summed step wall time and per-phase time, microseconds. */
  stepUs: number;
  /** Summed host time around the steps (planning, the native call's way in and out, token delivery), microseconds: a device idles through it. */
  hostUs: number;
  phaseUs: Record<string, number>;
  /** With a device: what the policy did. */
  policy?: PolicyStatsView;
  /** With 'dynamic' expert offload: the CPU expert costs in force, refitted online from the steps' CPU calls (call cost, scale of the calibrated line, calls seen, updates). */
  expertCosts?: ExpertRefitState;
}
