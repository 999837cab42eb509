// The public types of tandem's API: options of loadModel(), generate() and chat(), and
// what a generation streams and returns.
import type { StopReason } from '../engine/sequence.js';

export type { StopReason };

export interface LoadModelOptions {
  /** CPU threads for compute. Default: the machine's physical cores. */
  threads?: number;
  /** Tokens one sequence may hold, prompt and generated together. Default: the model's training context, at most 4096. */
  contextSize?: number;
  /** Tokens per KV cache block. Default 16. */
  kvBlockTokens?: number;
  /** Sequences decoded together at most; the KV cache holds this many full contexts. Default 4. */
  maxSequences?: number;
  /** Prompt tokens of one sequence processed per step (the prefill chunk); longer prompts take several steps. Default 256. */
  prefillChunkTokens?: number;
  /** Called with the fraction of weights loaded, 0 to 1. */
  onProgress?: (fraction: number) => void;
}

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
}

export interface TokenizeOptions {
  /** Prepend BOS when the model's vocabulary asks for it. Default true. */
  addBos?: boolean;
  /** Parse special-token text (e.g. "<|im_start|>") as the special token. Default false. */
  special?: boolean;
}

/** A piece of a streamed generation. */
export interface GenerationChunk {
  /** Text that became final with this chunk ('' while a character or a possible stop string is incomplete). */
  text: string;
  /** Tokens generated since the previous chunk. */
  tokens: number[];
}

export interface GenerationResult {
  /** All emitted text: nothing from a stop string onward. */
  text: string;
  /** Every generated token, including an EOS token and the token that completed a stop string. */
  tokens: number[];
  stopReason: StopReason;
  usage: { promptTokens: number; completionTokens: number };
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
  /** Tokens one sequence may hold. */
  contextSize: number;
  /** Context the model was trained with. */
  trainContextSize: number;
  threads: number;
  /** Compute backends the native model uses, e.g. ['cpu']. */
  backends: string[];
  kvBlockTokens: number;
  /** KV cache blocks over all tiers. */
  numKvBlocks: number;
  /** Bytes of KV cache per token. */
  kvBytesPerToken: number;
}

/** Load and queue state, for monitoring. */
export interface ModelStats {
  numWaiting: number;
  numRunning: number;
  numFreeKvBlocks: number;
  numKvBlocks: number;
  numSteps: number;
}
