// One streamed generation: receives tokens from the engine, turns them into text through
// the tokenizer's streaming decoder (never half a UTF-8 character) and the stop-string
// matcher, and hands chunks to a for-await loop and the final result to a promise. The
// chunks a reader has not taken are bounded: past the bound the request pauses.
import { asTandemError, type TandemError } from '../native/errors.js';
import type { SequenceObserver } from '../engine/engine.js';
import type { TokenLogprobs } from '../engine/logprobs.js';
import type { SequenceMetrics, StopReason } from '../engine/sequence.js';
import type { ChannelText, ToolCall } from '../model/harmony.js';
import { StopStringMatcher } from './stop-strings.js';
import type { Generation, GenerationChunk, GenerationMetrics, GenerationResult, LogprobToken, TokenLogprob } from './types.js';

/** Token bytes as text in logprobs entries: a partial UTF-8 character shows as U+FFFD. */
const utf8Decoder = new TextDecoder();

/** Splits a reply's text into what the user reads, the model's reasoning and its tool calls (model/harmony.ts's HarmonySplitter). */
export interface ReplySplitter {
  push(text: string): ChannelText;
  flush(): ChannelText;
  toolCalls(): ToolCall[];
}

/** Token-by-token detokenization: push returns the text that became complete. */
export interface TokenTextStream {
  push(token: number): string;
  /** The text still held at the end (an incomplete character becomes U+FFFD). */
  flush(): string;
}

export interface GenerationSetup {
  decoder: TokenTextStream;
  stop: readonly string[];
  /** Ends the sequence in the engine; the engine then calls onFinish(reason). */
  cancel: (reason: StopReason) => void;
  signal?: AbortSignal;
  /**
   * Pauses (true) or resumes (false) the sequence in the engine. Called with true when a
   * reader that has started iterating leaves `bufferTokens` tokens unread, with false once
   * it has read down to half of that. A generation that is never iterated never pauses.
   */
  pause?: (paused: boolean) => void;
  /** Unread tokens that pause the sequence. Default: no bound. */
  bufferTokens?: number;
  /** performance.now() when generate() was called, for the metrics. */
  startMs?: number;
  /** Splits the text (after the stop strings) into the reply and the reasoning; absent: all of it is the reply. */
  splitter?: ReplySplitter;
  /** A token's bytes, for the logprobs entries (the engine reports logprobs only when asked). */
  tokenBytes?: (token: number) => Uint8Array;
}

type Waiter = { resolve: (r: IteratorResult<GenerationChunk>) => void; reject: (e: unknown) => void };

export class GenerationStream implements Generation, SequenceObserver {
  readonly result: Promise<GenerationResult>;
  private readonly setup: GenerationSetup;
  private readonly stopper: StopStringMatcher;
  private readonly chunks: GenerationChunk[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly tokens: number[] = [];
  /** Per token, when the engine reports logprobs. */
  private readonly logprobs: TokenLogprob[] = [];
  private text = '';
  private reasoning = '';
  private promptTokens = 0;
  private finished = false;
  /** Tokens in `chunks` (emitted, not yet read). */
  private unreadTokens = 0;
  /** Set once [Symbol.asyncIterator]() was called: only then does the buffer bound apply. */
  private iterating = false;
  private paused = false;
  private failure: TandemError | undefined;
  private resolveResult!: (r: GenerationResult) => void;
  private rejectResult!: (e: TandemError) => void;
  private readonly onAbort = () => this.abort();

  constructor(setup: GenerationSetup) {
    this.setup = setup;
    this.stopper = new StopStringMatcher(setup.stop);
    this.result = new Promise<GenerationResult>((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    // A caller that only iterates sees the error there; the promise must not also count as unhandled.
    this.result.catch(() => undefined);
    setup.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** True once the generation finished, failed or was aborted. */
  get ended(): boolean {
    return this.finished;
  }

  /** The prompt's length, known once it is tokenized (for usage). */
  setPromptTokens(count: number): void {
    this.promptTokens = count;
  }

  abort(): void {
    if (!this.finished) this.setup.cancel('aborted');
  }

  onToken(token: number, logprobs?: TokenLogprobs): void {
    if (this.finished) return;
    this.tokens.push(token);
    const lp = logprobs && this.logprobEntry(token, logprobs);
    if (lp) this.logprobs.push(lp);
    this.emit(this.stopper.push(this.setup.decoder.push(token)), [token], lp && [lp]);
    if (this.stopper.stopped) this.setup.cancel('stop');
  }

  private logprobEntry(token: number, lp: TokenLogprobs): TokenLogprob {
    const entry = (t: number, logprob: number): LogprobToken => {
      const bytes = this.setup.tokenBytes?.(t) ?? new Uint8Array(0);
      return { token: t, text: utf8Decoder.decode(bytes), bytes: [...bytes], logprob };
    };
    return { ...entry(token, lp.logprob), top: lp.top.map((x) => entry(x.token, x.logprob)) };
  }

  onFinish(reason: StopReason, metrics?: Readonly<SequenceMetrics>): void {
    if (this.finished) return;
    if (reason !== 'stop' && reason !== 'aborted') {
      // The generation ended on its own: what the decoder and the stop matcher held back is final.
      const rest = this.stopper.push(this.setup.decoder.flush()) + (this.stopper.stopped ? '' : this.stopper.flush());
      if (rest) this.emit(rest, []);
      if (this.stopper.stopped) reason = 'stop';
    }
    if (this.setup.splitter) this.emitSplit(this.setup.splitter.flush(), []);
    this.end();
    const result: GenerationResult = {
      text: this.text,
      tokens: this.tokens,
      ...(this.logprobs.length > 0 ? { logprobs: this.logprobs } : {}),
      stopReason: reason,
      usage: { promptTokens: this.promptTokens, completionTokens: this.tokens.length },
    };
    if (this.setup.splitter) {
      result.reasoning = this.reasoning;
      const calls = this.setup.splitter.toolCalls();
      if (calls.length > 0) result.toolCalls = calls;
    }
    if (metrics) result.metrics = this.toMetrics(metrics);
    this.resolveResult(result);
  }

  onError(error: TandemError): void {
    if (this.finished) return;
    this.failure = asTandemError(error);
    this.end();
    this.rejectResult(this.failure);
  }

  [Symbol.asyncIterator](): AsyncIterator<GenerationChunk> {
    this.iterating = true;
    this.checkBuffer();
    return {
      next: () => this.next(),
      return: async () => {
        // Breaking out of the loop aborts the generation.
        this.abort();
        return { done: true, value: undefined };
      },
    };
  }

  private next(): Promise<IteratorResult<GenerationChunk>> {
    const chunk = this.chunks.shift();
    if (chunk) {
      this.unreadTokens -= chunk.tokens.length;
      this.checkBuffer();
      return Promise.resolve({ done: false, value: chunk });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.finished) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Emits newly final text, through the splitter when there is one. */
  private emit(text: string, tokens: number[], logprobs?: TokenLogprob[]): void {
    if (this.setup.splitter) this.emitSplit(this.setup.splitter.push(text), tokens, logprobs);
    else this.deliver(logprobs ? { text, tokens, logprobs } : { text, tokens });
  }

  private emitSplit(part: ChannelText, tokens: number[], logprobs?: TokenLogprob[]): void {
    if (!part.text && !part.reasoning && tokens.length === 0) return;
    const chunk: GenerationChunk = part.reasoning ? { text: part.text, reasoning: part.reasoning, tokens } : { text: part.text, tokens };
    if (logprobs) chunk.logprobs = logprobs;
    this.deliver(chunk);
  }

  private deliver(chunk: GenerationChunk): void {
    this.text += chunk.text;
    this.reasoning += chunk.reasoning ?? '';
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter.resolve({ done: false, value: chunk });
      return;
    }
    this.chunks.push(chunk);
    this.unreadTokens += chunk.tokens.length;
    this.checkBuffer();
  }

  /** Pauses the sequence when an iterating reader falls `bufferTokens` behind; resumes it at half. */
  private checkBuffer(): void {
    const { pause, bufferTokens } = this.setup;
    if (!pause || bufferTokens === undefined || this.finished || !this.iterating) return;
    if (!this.paused && this.unreadTokens >= bufferTokens) {
      this.paused = true;
      pause(true);
    } else if (this.paused && this.unreadTokens <= bufferTokens / 2) {
      this.paused = false;
      pause(false);
    }
  }

  private toMetrics(m: Readonly<SequenceMetrics>): GenerationMetrics {
    const out: GenerationMetrics = {
      startMs: this.setup.startMs ?? m.queuedMs,
      queuedMs: m.queuedMs,
      finishedMs: m.finishedMs ?? m.queuedMs,
      cachedPromptTokens: m.numCachedTokens,
      preemptions: m.numPreemptions,
      moves: m.numMoves,
      draftedTokens: m.numDrafted,
      acceptedDrafts: m.numAccepted,
    };
    if (m.scheduledMs !== undefined) out.scheduledMs = m.scheduledMs;
    if (m.firstTokenMs !== undefined) {
      out.firstTokenMs = m.firstTokenMs;
      out.ttftMs = m.firstTokenMs - out.startMs;
    }
    if (m.lastTokenMs !== undefined) out.lastTokenMs = m.lastTokenMs;
    if (m.firstTokenMs !== undefined && m.lastTokenMs !== undefined && this.tokens.length > 1) {
      out.tpotMs = (m.lastTokenMs - m.firstTokenMs) / (this.tokens.length - 1);
    }
    return out;
  }

  private end(): void {
    this.finished = true;
    this.setup.signal?.removeEventListener('abort', this.onAbort);
    for (const waiter of this.waiters.splice(0)) {
      if (this.failure) waiter.reject(this.failure);
      else waiter.resolve({ done: true, value: undefined });
    }
  }
}
