// loadModel() and Model: the public surface over the engine, the native model and the
// tokenizer. Every request goes through the engine's queue, so concurrent generate()
// and chat() calls share decode steps.
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { GgufFile } from '../model/gguf.js';
import { describeModel, type ModelDescription } from '../model/describe.js';
import { tokenizerFromGguf, type Tokenizer } from '../model/tokenizer/index.js';
import type { ChatTemplate } from '../model/chat-template.js';
import { native, type NativeModel } from '../native/binding.js';
import { asTandemError, TandemError } from '../native/errors.js';
import { Engine } from '../engine/engine.js';
import { checkSchedulerConfig, PreemptionMode, type SchedulerConfig } from '../engine/scheduler.js';
import { planKvBudget } from '../engine/kv-budget.js';
import type { SequenceParams } from '../engine/sequence.js';
import { GenerationStream } from './generation.js';
import { checkKnownKeys, checkNumber, checkTokenIds, resolveGenerateOptions, SAMPLING_DEFAULTS } from './options.js';
import { physicalCoreCount } from './threads.js';
import type {
  ChatMessage,
  ChatOptions,
  GenerateOptions,
  Generation,
  LoadModelOptions,
  ModelInfo,
  ModelStats,
  TokenizeOptions,
} from './types.js';

/** Tokens of one prompt processed per step when options do not say. */
const DEFAULT_PREFILL_CHUNK = 256;
/** The default context: the trained one, capped so that a default load stays small. */
const DEFAULT_MAX_CONTEXT = 4096;

/** Requests that may wait for a slot when options do not say. */
const DEFAULT_MAX_QUEUED = 1024;
/** Unread streamed tokens that pause a request when options do not say. */
const DEFAULT_OUTPUT_BUFFER = 256;

const LOAD_OPTIONS = new Set([
  'threads', 'contextSize', 'kvBlockTokens', 'maxSequences', 'prefillChunkTokens', 'onProgress', 'kvCacheBytes',
  'kvCacheFraction', 'kvDeviceFraction', 'prefixCaching', 'preemption', 'maxQueuedRequests', 'outputBufferTokens',
]);

/**
 * Loads a GGUF model for inference. Throws TandemError: TDM_NOT_FOUND or TDM_BAD_GGUF for
 * the file, TDM_UNSUPPORTED for an architecture or type tandem does not run,
 * TDM_BAD_ARGUMENT for options.
 */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
  const where = 'loadModel()';
  if (typeof path !== 'string' || path.length === 0) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: path must be the path of a GGUF file, got ${typeof path === 'string' ? 'an empty string' : typeof path}`);
  }
  if (options === null || typeof options !== 'object') throw new TandemError('TDM_BAD_ARGUMENT', `${where}: options must be an object`);
  checkKnownKeys(where, options, LOAD_OPTIONS);
  const threads = checkNumber(where, 'threads', options.threads, physicalCoreCount(), { min: 1, max: 1024, integer: true });
  const kvBlockTokens = checkNumber(where, 'kvBlockTokens', options.kvBlockTokens, 16, { min: 1, max: 4096, integer: true });
  const maxSequences = checkNumber(where, 'maxSequences', options.maxSequences, 4, { min: 1, max: 4096, integer: true });
  const prefillChunk = checkNumber(where, 'prefillChunkTokens', options.prefillChunkTokens, DEFAULT_PREFILL_CHUNK, { min: 1, integer: true });
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: onProgress must be a function`);
  }
  const kvCacheBytes = options.kvCacheBytes === undefined ? undefined : checkNumber(where, 'kvCacheBytes', options.kvCacheBytes, 0, { min: 1 });
  const kvCacheFraction =
    options.kvCacheFraction === undefined ? undefined : checkNumber(where, 'kvCacheFraction', options.kvCacheFraction, 0, { min: 0, max: 1 });
  if (kvCacheFraction === 0) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: kvCacheFraction must be greater than 0`);
  const kvDeviceFraction = checkNumber(where, 'kvDeviceFraction', options.kvDeviceFraction, 0, { min: 0, max: 1 });
  const maxQueued = checkNumber(where, 'maxQueuedRequests', options.maxQueuedRequests, DEFAULT_MAX_QUEUED, { min: 0, integer: true, infinite: true });
  const outputBuffer = checkNumber(where, 'outputBufferTokens', options.outputBufferTokens, DEFAULT_OUTPUT_BUFFER, { min: 1, integer: true, infinite: true });
  if (options.prefixCaching !== undefined && typeof options.prefixCaching !== 'boolean') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: prefixCaching must be a boolean`);
  }
  const modes = Object.values(PreemptionMode) as string[];
  if (options.preemption !== undefined && !modes.includes(options.preemption)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: preemption must be one of ${modes.map((m) => `'${m}'`).join(', ')}, got ${String(options.preemption)}`);
  }

  const file = GgufFile.open(path);
  let description: ModelDescription;
  let tokenizer: Tokenizer;
  let template: string | undefined;
  try {
    description = describeModel(file);
    tokenizer = tokenizerFromGguf(file);
    template = file.getString('tokenizer.chat_template');
  } finally {
    file.close();
  }
  const hp = description.hparams;
  const contextSize = checkNumber(where, 'contextSize', options.contextSize, Math.min(hp.nCtxTrain, DEFAULT_MAX_CONTEXT), {
    min: 2,
    max: 1 << 24,
    integer: true,
  });
  const blockBytes = description.kvBytesPerToken * kvBlockTokens;
  // With no GPU both tiers are host RAM, so a fractional budget is a share of os.freemem().
  const budget = planKvBudget({
    blockBytes,
    blockTokens: kvBlockTokens,
    contextSize,
    bytes: kvCacheBytes,
    fraction: kvCacheFraction,
    freeBytes: os.freemem(),
    defaultBytes: Math.ceil(contextSize / kvBlockTokens) * maxSequences * blockBytes,
    deviceFraction: kvDeviceFraction,
  });
  const schedulerConfig: SchedulerConfig = {
    contextSize,
    blockTokens: kvBlockTokens,
    numBlocks: budget.numBlocks,
    maxRunning: maxSequences,
    maxChunkTokens: prefillChunk,
    // One step holds a full prefill chunk beside a decode token for every other sequence.
    maxStepTokens: prefillChunk + maxSequences,
    strategy: 'cpu',
    maxWaiting: maxQueued,
    prefixCaching: options.prefixCaching ?? true,
    preemption: options.preemption ?? PreemptionMode.Swap,
  };
  // Checked before any memory is committed.
  checkSchedulerConfig(schedulerConfig);

  const userProgress = options.onProgress;
  let progressError: unknown;
  let nativeModel: NativeModel;
  try {
    nativeModel = await native().loadModel(path, {
      hparams: hp,
      threads,
      kvBlockTokens,
      kvBlocks: schedulerConfig.numBlocks,
      // A throwing callback must not unwind through native code; its error fails the load instead.
      onProgress: userProgress && ((fraction: number) => {
        if (progressError !== undefined) return;
        try {
          userProgress(fraction);
        } catch (err) {
          progressError = err;
        }
      }),
    });
  } catch (err) {
    throw asTandemError(err);
  }
  if (progressError !== undefined) {
    nativeModel.dispose();
    throw progressError;
  }
  const engine = new Engine(nativeModel, schedulerConfig);
  const info: ModelInfo = {
    architecture: hp.architecture,
    nVocab: nativeModel.info.nVocab,
    contextSize,
    trainContextSize: hp.nCtxTrain,
    threads,
    backends: [...nativeModel.info.backends],
    kvBlockTokens,
    numKvBlocks: budget.numBlocks.device + budget.numBlocks.host,
    kvBlocks: { ...budget.numBlocks },
    kvBlockBytes: nativeModel.info.kvBlockBytes,
    kvBytesPerToken: description.kvBytesPerToken,
  };
  return new Model(path, info, nativeModel, engine, tokenizer, template, outputBuffer);
}

export class Model {
  /** The GGUF file the model came from. */
  readonly path: string;
  readonly info: Readonly<ModelInfo>;
  private readonly nativeModel: NativeModel;
  private readonly engine: Engine;
  private readonly tokenizer: Tokenizer;
  private readonly templateSource: string | undefined;
  private template: ChatTemplate | undefined;
  private disposed: Promise<void> | undefined;
  /** Unread streamed tokens that pause a request. */
  private readonly outputBufferTokens: number;

  /** Use loadModel(). */
  constructor(
    path: string,
    info: ModelInfo,
    nativeModel: NativeModel,
    engine: Engine,
    tokenizer: Tokenizer,
    template: string | undefined,
    outputBufferTokens = DEFAULT_OUTPUT_BUFFER,
  ) {
    this.outputBufferTokens = outputBufferTokens;
    this.path = path;
    this.info = info;
    this.nativeModel = nativeModel;
    this.engine = engine;
    this.tokenizer = tokenizer;
    this.templateSource = template;
  }

  /** Queue and KV cache state, and running totals since load. */
  get stats(): ModelStats {
    const s = this.engine.stats;
    return {
      numWaiting: s.numWaiting,
      numRunning: s.numRunning,
      numPaused: s.numPaused,
      numFreeKvBlocks: s.numFreeBlocks,
      numKvBlocks: s.numBlocks,
      numCachedKvBlocks: s.tiers.device.numCached + s.tiers.host.numCached,
      kvTiers: s.tiers,
      numSteps: s.numSteps,
      numRequests: s.numRequests,
      numFinished: s.numFinished,
      numAborted: s.numAborted,
      numFailed: s.numFailed,
      numRejected: s.numRejected,
      numPrefillTokens: s.numPrefillTokens,
      numCachedTokens: s.numCachedTokens,
      numGeneratedTokens: s.numGeneratedTokens,
      numPreemptions: s.numPreemptions,
      numMoves: s.numMoves,
      stepUs: s.stepUs,
      phaseUs: s.phaseUs,
    };
  }

  /** The ids that end a generation (EOS, EOT, ...), unless ignoreEos is set. */
  get eogTokens(): number[] {
    return [...this.tokenizer.vocab.eogIds];
  }

  /**
   * Generates a continuation of `prompt` (text, tokenized with BOS as the vocabulary asks
   * and special tokens parsed, as llama.cpp's completion does; or token ids, used as given).
   * Bad options throw TDM_BAD_ARGUMENT here; a prompt that does not fit the context
   * rejects the result (and the iteration) with TDM_CONTEXT_FULL, and a full request queue
   * (maxQueuedRequests waiting) with TDM_QUEUE_FULL. A reader that stops iterating pauses
   * the request after outputBufferTokens unread tokens; awaiting only `result` never does.
   */
  generate(prompt: string | readonly number[], options?: GenerateOptions): Generation {
    const where = 'generate()';
    this.checkLive(where);
    const resolved = resolveGenerateOptions(where, options, this.info.nVocab, this.tokenizer.vocab.eogIds);
    const tokens =
      typeof prompt === 'string'
        ? this.tokenizer.tokenizeAsync(prompt, { special: true })
        : Promise.resolve(checkTokenIds(where, prompt, this.info.nVocab));
    return this.start(tokens, resolved.params, resolved.stop, resolved.signal);
  }

  /**
   * Generates the assistant's reply to `messages`, rendered through the model's chat
   * template (ChatML for a file without one, as llama.cpp does).
   */
  chat(messages: readonly ChatMessage[], options?: ChatOptions): Generation {
    const where = 'chat()';
    this.checkLive(where);
    if (!Array.isArray(messages) || messages.length === 0) {
      throw new TandemError('TDM_BAD_ARGUMENT', `${where}: messages must be a non-empty array of {role, content}`);
    }
    messages.forEach((m, i) => {
      if (typeof m !== 'object' || m === null || typeof m.role !== 'string' || typeof m.content !== 'string') {
        throw new TandemError('TDM_BAD_ARGUMENT', `${where}: message ${i} must be {role: string, content: string}`);
      }
    });
    const { templateVariables, ...rest } = options ?? {};
    if (templateVariables !== undefined && (typeof templateVariables !== 'object' || templateVariables === null)) {
      throw new TandemError('TDM_BAD_ARGUMENT', `${where}: templateVariables must be an object`);
    }
    const resolved = resolveGenerateOptions(where, rest, this.info.nVocab, this.tokenizer.vocab.eogIds);
    const tokens = this.renderChat(messages, templateVariables).then((text) =>
      // The template writes BOS itself where the model wants one; parse it as the special token.
      this.tokenizer.tokenizeAsync(text, { addBos: this.addBosForTemplate(text), special: true }),
    );
    return this.start(tokens, resolved.params, resolved.stop, resolved.signal);
  }

  /** The prompt text chat() would generate from: `messages` through the chat template, opening the assistant's turn. */
  async renderChat(messages: readonly ChatMessage[], templateVariables?: Record<string, unknown>): Promise<string> {
    this.checkLive('renderChat()');
    return (await this.chatTemplate()).render(messages, { addGenerationPrompt: true, variables: templateVariables });
  }

  /** Text to token ids. */
  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    this.checkLive('tokenize()');
    if (options === null || typeof options !== 'object') throw new TandemError('TDM_BAD_ARGUMENT', 'tokenize(): options must be an object');
    checkKnownKeys('tokenize()', options, new Set(['addBos', 'special']));
    return this.tokenizer.tokenize(text, { addBos: options.addBos === false ? false : undefined, special: options.special });
  }

  /** Token ids to text (special tokens render as nothing). */
  detokenize(tokens: readonly number[]): string {
    this.checkLive('detokenize()');
    return this.tokenizer.detokenize(checkTokenIds('detokenize()', tokens, this.info.nVocab));
  }

  /**
   * Teacher forcing: runs `tokens` through the model and resolves to the logits after each
   * of them (row i scores the token at position i + 1), one Float32Array of n_vocab per token.
   */
  async evaluate(tokens: readonly number[]): Promise<Float32Array[]> {
    const where = 'evaluate()';
    this.checkLive(where);
    const ids = checkTokenIds(where, tokens, this.info.nVocab);
    const nVocab = this.info.nVocab;
    const rows: Float32Array[] = new Array(ids.length);
    const params: SequenceParams = {
      maxTokens: 0,
      sampling: { ...SAMPLING_DEFAULTS, temperature: 0, seed: 0 },
      stopTokens: new Set(),
      penaltyWindow: 0,
      returnPromptLogits: true,
    };
    await new Promise<void>((resolve, reject) => {
      this.engine.submit(ids, params, {
        onPromptLogits: (startPos, count, logits) => {
          for (let i = 0; i < count; i++) rows[startPos + i] = logits.slice(i * nVocab, (i + 1) * nVocab);
        },
        onFinish: () => resolve(),
        onError: reject,
      });
    });
    return rows;
  }

  /**
   * Frees the model: running generations fail with TDM_DISPOSED, the step in flight
   * finishes, then native memory is released. Later calls throw TDM_DISPOSED.
   */
  dispose(): Promise<void> {
    this.disposed ??= this.engine.close().then(() => this.nativeModel.dispose());
    return this.disposed;
  }

  private start(
    tokens: Promise<number[]>,
    params: SequenceParams,
    stop: string[],
    signal: AbortSignal | undefined,
  ): Generation {
    let seqId: number | undefined;
    const gen: GenerationStream = new GenerationStream({
      decoder: this.continuationDecoder(),
      stop,
      signal,
      cancel: (reason) => {
        if (seqId === undefined) gen.onFinish(reason);
        else this.engine.cancel(seqId, reason);
      },
      pause: (paused) => {
        if (seqId !== undefined) this.engine.setPaused(seqId, paused);
      },
      bufferTokens: this.outputBufferTokens,
      startMs: performance.now(),
    });
    tokens.then(
      (ids) => {
        if (gen.ended) return;
        gen.setPromptTokens(ids.length);
        if (signal?.aborted) {
          gen.abort();
          return;
        }
        try {
          seqId = this.engine.submit(ids, params, gen);
        } catch (err) {
          gen.onError(asTandemError(err));
        }
      },
      (err) => gen.onError(asTandemError(err)),
    );
    return gen;
  }

  /**
   * The streaming decoder for generated text. A decoder drops the space SentencePiece puts
   * before a text's first word, which a continuation must keep; pushing BOS first (a
   * control token, rendered as nothing) uses up that first-piece rule.
   */
  private continuationDecoder() {
    const decoder = this.tokenizer.createDecoder();
    if (this.tokenizer.bosId >= 0) decoder.push(this.tokenizer.bosId);
    return decoder;
  }

  /**
   * The compiled chat template (ChatML when the file has none, as llama.cpp does); the
   * template engine is loaded on first use.
   */
  private async chatTemplate(): Promise<ChatTemplate> {
    if (!this.template) {
      const { ChatTemplate, CHATML_TEMPLATE } = await import('../model/chat-template.js');
      this.template = new ChatTemplate(
        {
          source: this.templateSource ?? CHATML_TEMPLATE,
          isFallback: this.templateSource === undefined,
          origin: `${this.path}: tokenizer.chat_template`,
        },
        this.tokenizer,
      );
    }
    return this.template;
  }

  /** BOS is added unless the rendered template already begins with it. */
  private addBosForTemplate(text: string): boolean {
    const v = this.tokenizer.vocab;
    if (!v.addBos || v.bosId < 0) return false;
    return !text.startsWith(v.tokens[v.bosId]!);
  }

  private checkLive(where: string): void {
    if (this.disposed) throw new TandemError('TDM_DISPOSED', `${where}: the model was disposed`);
  }
}
