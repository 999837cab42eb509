// `tandem generate -m FILE [options] "prompt"`: streams a continuation to stdout and a
// one-line summary (tokens, speed, why it stopped) to stderr. Also the option parsing and
// model loading that `chat` and `demo` share.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import path from 'node:path';
import { loadModel, type GenerateOptions, type Generation, type GenerationResult, type LoadModelOptions, type Model } from '../../api/index.js';
import { TandemError } from '../../native/errors.js';
import type { Command } from '../command.js';
import { createProgressBar } from '../progress.js';

/** Options every generating command takes: the model, its load options and sampling. */
export const SHARED_OPTIONS = {
  model: { type: 'string', short: 'm' },
  threads: { type: 'string', short: 't' },
  'cpu-kernels': { type: 'string' },
  'ctx-size': { type: 'string', short: 'c' },
  'kv-type': { type: 'string' },
  draft: { type: 'string' },
  'decode-burst': { type: 'string' },
  device: { type: 'string' },
  policy: { type: 'string' },
  'device-weight-mib': { type: 'string' },
  experts: { type: 'string' },
  'expert-prefetch': { type: 'string' },
  'no-kv-stream': { type: 'boolean' },
  'max-tokens': { type: 'string', short: 'n' },
  temp: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repeat-penalty': { type: 'string' },
  'presence-penalty': { type: 'string' },
  'frequency-penalty': { type: 'string' },
  seed: { type: 'string', short: 's' },
  stop: { type: 'string', multiple: true },
  'ignore-eos': { type: 'boolean' },
  json: { type: 'boolean' },
  'json-schema': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

export const SHARED_HELP = `  -m, --model FILE          GGUF model file
  -t, --threads N           CPU threads (default: physical cores)
      --cpu-kernels K       auto (default: the best this processor runs), avx512, avxvnni, avx2 or ref
  -c, --ctx-size N          tokens of context per sequence (default: the model's, at most 4096)
      --kv-type T           KV cache: f16 (default) or q8_0 (47% less memory; CPU only, as
                            llama.cpp's -ctk q8_0 -ctv q8_0)
      --draft N             speculative decoding: up to N tokens a step guessed from the prompt
                            and reply (prompt lookup) and verified; the same tokens, fewer steps
                            when the reply repeats what came before (default 0 = off; CPU only)
      --decode-burst N      requests decoding together draw up to N tokens a step between plans,
                            where the host's time between steps is a large share of a step (fast
                            GPU steps); the same tokens (default 8; 1 = off)
      --device D            none (default), auto (a usable GPU, else none), gpu, or cpu-standin
                            (a second CPU backend posing as a GPU: for testing, never GPU numbers)
      --policy P            with a device: auto (default), gpu-only, pipeline or overlap
      --device-weight-mib N device memory for weights (default: all that fits; the rest run on the CPU)
      --experts E           MoE with a device: stacks (default), dynamic (host RAM experts, a device
                            expert cache, each missing expert copied or run on the CPU by calibrated
                            costs), cpu-all or cpu-first-layers:N (llama.cpp's --cpu-moe, --n-cpu-moe N)
      --expert-prefetch P   with --experts dynamic: score (default) or router (the next layer's
                            router on this layer's hidden state picks the experts to copy ahead)
      --no-kv-stream        with a GPU: keep the host KV tier pageable; the GPU then never attends
                            host-tier KV streamed across the link (loadModel's kvStream: false)
  -n, --max-tokens N        tokens to generate at most (default 256; 0 = until the end or a full context)
      --temp T              temperature; 0 is greedy (default 0.8)
      --top-k K             (default 40; 0 = off)
      --top-p P             (default 0.95; 1 = off)
      --min-p P             (default 0.05; 0 = off)
      --repeat-penalty R    (default 1 = off)
      --presence-penalty P  (default 0)
      --frequency-penalty P (default 0)
  -s, --seed N              RNG seed (default: random)
      --stop TEXT           stop before TEXT (repeatable)
      --ignore-eos          keep going after end-of-generation tokens
      --json                JSON mode: the reply is one JSON object, ended once it closes
      --json-schema SCHEMA  the reply is one value of this JSON Schema (JSON text, as llama.cpp's -j)
  -h, --help                this help`;

const OPTIONS = {
  ...SHARED_OPTIONS,
  prompt: { type: 'string', short: 'p' },
} as const satisfies ParseArgsConfig['options'];

const HELP = `usage: tandem generate -m FILE [options] "prompt"

Streams the model's continuation of the prompt to stdout. With no prompt
argument, the prompt is read from stdin. Ctrl-C stops the generation.

  -p, --prompt TEXT         the prompt (as llama.cpp's -p; or give it as the argument)
${SHARED_HELP}`;

type SharedValues = { [K in keyof typeof SHARED_OPTIONS]?: (typeof SHARED_OPTIONS)[K] extends { multiple: true } ? string[] : (typeof SHARED_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

/** A CLI usage error: main prints the message and exits with 2. */
export function usageError(message: string): TandemError {
  return new TandemError('TDM_BAD_ARGUMENT', message);
}

/** parseArgs (strict, positionals allowed) with its errors (unknown flag, missing value) as usage errors. */
export function parseFlags<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    throw usageError(`${command}: ${(err as Error).message} (see \`tandem ${command} --help\`)`);
  }
}

function toNumber(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || Number.isNaN(n)) throw usageError(`--${flag} expects a number, got '${value}'`);
  return n;
}

/** Load options from the shared flags (numbers are checked again, with the API's messages, by loadModel). */
export function loadOptionsFrom(values: SharedValues): LoadModelOptions {
  const options: LoadModelOptions = {};
  const threads = toNumber('threads', values.threads);
  const contextSize = toNumber('ctx-size', values['ctx-size']);
  const deviceWeightMib = toNumber('device-weight-mib', values['device-weight-mib']);
  const draft = toNumber('draft', values.draft);
  if (draft !== undefined) options.draftTokens = draft;
  const burst = toNumber('decode-burst', values['decode-burst']);
  if (burst !== undefined) options.decodeBurst = burst;
  if (threads !== undefined) options.threads = threads;
  if (contextSize !== undefined) options.contextSize = contextSize;
  // Device, policy and kernel names are checked by loadModel, with its messages.
  if (values.device !== undefined) options.device = values.device as LoadModelOptions['device'];
  if (values['cpu-kernels'] !== undefined) options.cpuKernels = values['cpu-kernels'] as LoadModelOptions['cpuKernels'];
  if (values.policy !== undefined) options.policy = values.policy as LoadModelOptions['policy'];
  if (values.experts !== undefined) options.experts = values.experts as LoadModelOptions['experts'];
  if (values['expert-prefetch'] !== undefined) options.expertPrefetch = values['expert-prefetch'] as LoadModelOptions['expertPrefetch'];
  if (values['kv-type'] !== undefined) options.kvType = values['kv-type'] as LoadModelOptions['kvType'];
  if (values['no-kv-stream']) options.kvStream = false;
  if (deviceWeightMib !== undefined) options.deviceWeightBytes = Math.floor(deviceWeightMib * 2 ** 20);
  return options;
}

/** Generation options from the shared flags; `--max-tokens 0` means no limit. */
export function generateOptionsFrom(values: SharedValues, defaultMaxTokens = 256): GenerateOptions {
  const options: GenerateOptions = {};
  const set = <K extends keyof GenerateOptions>(key: K, flag: keyof SharedValues) => {
    const n = toNumber(flag, values[flag] as string | undefined);
    if (n !== undefined) options[key] = n as GenerateOptions[K];
  };
  const maxTokens = toNumber('max-tokens', values['max-tokens']) ?? defaultMaxTokens;
  if (maxTokens !== 0) options.maxTokens = maxTokens;
  set('temperature', 'temp');
  set('topK', 'top-k');
  set('topP', 'top-p');
  set('minP', 'min-p');
  set('repeatPenalty', 'repeat-penalty');
  set('presencePenalty', 'presence-penalty');
  set('frequencyPenalty', 'frequency-penalty');
  set('seed', 'seed');
  if (values.stop) options.stop = values.stop;
  if (values['ignore-eos']) options.ignoreEos = true;
  if (values.json) options.responseFormat = { type: 'json_object' };
  if (values['json-schema'] !== undefined) {
    let schema: unknown;
    try {
      schema = JSON.parse(values['json-schema']);
    } catch (err) {
      throw usageError(`--json-schema expects a JSON Schema as JSON text: ${(err as Error).message}`);
    }
    options.responseFormat = { type: 'json_schema', schema: schema as object };
  }
  return options;
}

/** Loads a model with a progress bar on stderr (drawn only when loading takes a moment). */
export async function loadWithProgress(file: string, options: LoadModelOptions): Promise<Model> {
  const bar = createProgressBar({ label: `loading ${path.basename(file)}` });
  try {
    return await loadModel(file, { ...options, onProgress: (f) => bar.update(f) });
  } finally {
    bar.done();
  }
}

export interface StreamStats {
  result: GenerationResult;
  /** Milliseconds from the request to the first generated token. */
  firstTokenMs: number;
  /** Milliseconds from the first to the last generated token. */
  decodeMs: number;
}

/**
 * Writes a generation's text to `out` as it streams; Ctrl-C aborts it instead of exiting. A
 * reply's reasoning (gpt-oss's analysis channel) goes dimmed to a terminal and nowhere else.
 */
export async function streamTo(gen: Generation, out: NodeJS.WritableStream): Promise<StreamStats> {
  const showReasoning = (out as { isTTY?: boolean }).isTTY === true;
  let reasoned = false;
  const started = performance.now();
  let first = 0;
  let last = 0;
  const onSigint = () => gen.abort();
  process.on('SIGINT', onSigint);
  try {
    for await (const chunk of gen) {
      if (chunk.tokens.length > 0) {
        last = performance.now();
        if (!first) first = last;
      }
      if (chunk.reasoning && showReasoning) {
        out.write(`\x1b[2m${chunk.reasoning}\x1b[22m`);
        reasoned = true;
      }
      if (chunk.text) {
        // The reply starts on a line of its own after the reasoning.
        if (reasoned) out.write('\n');
        reasoned = false;
        out.write(chunk.text);
      }
    }
    const result = await gen.result;
    return { result, firstTokenMs: first ? first - started : 0, decodeMs: first ? last - first : 0 };
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** "64 tokens in 1.23 s (52.0 tok/s), first token after 45 ms; stopped: maxTokens". */
export function summary(stats: StreamStats): string {
  const { result, firstTokenMs, decodeMs } = stats;
  const n = result.usage.completionTokens;
  // The first token comes from the prompt pass; decode speed counts the tokens after it.
  const rate = n > 1 && decodeMs > 0 ? `${(((n - 1) * 1000) / decodeMs).toFixed(1)} tok/s` : 'n/a tok/s';
  return `${n} tokens, ${rate} decode, prompt ${result.usage.promptTokens} tokens, first token after ${firstTokenMs.toFixed(0)} ms; stopped: ${result.stopReason}`;
}

async function readStdin(): Promise<string> {
  let text = '';
  process.stdin.setEncoding('utf8');
  for await (const part of process.stdin) text += part;
  return text;
}

export const command: Command = {
  summary: 'generate text from a prompt, streaming to stdout',
  async run(argv) {
    const { values, positionals } = parseFlags('generate', { args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (!values.model) throw usageError('generate: -m FILE is required (see `tandem generate --help`)');
    if (values.prompt !== undefined && positionals.length > 0) throw usageError('generate: give the prompt either with -p or as the argument, not both');
    let prompt = values.prompt ?? positionals.join(' ');
    if (!prompt && !process.stdin.isTTY) prompt = await readStdin();
    if (!prompt) throw usageError('generate: give a prompt as an argument or on stdin');
    const genOptions = generateOptionsFrom(values);
    const model = await loadWithProgress(values.model, loadOptionsFrom(values));
    try {
      const stats = await streamTo(model.generate(prompt, genOptions), process.stdout);
      process.stdout.write('\n');
      console.error(summary(stats));
    } finally {
      await model.dispose();
    }
    return 0;
  },
};
