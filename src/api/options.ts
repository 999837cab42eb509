// Checks user options and turns them into engine parameters; every bad value is a
// TDM_BAD_ARGUMENT error that names the option, the value and what is allowed.
import { TandemError } from '../native/errors.js';
import type { SamplingParams } from '../native/step-plan.js';
import type { SequenceParams } from '../engine/sequence.js';
import type { GenerateOptions } from './types.js';

/** llama.cpp's sampling defaults, so that results are comparable. */
export const SAMPLING_DEFAULTS = {
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  penaltyLastN: 64,
  presencePenalty: 0,
  frequencyPenalty: 0,
} as const;

interface NumberRule {
  min?: number;
  max?: number;
  integer?: boolean;
  /** Allow Infinity (e.g. maxTokens). */
  infinite?: boolean;
}

function badArgument(where: string, message: string): TandemError {
  return new TandemError('TDM_BAD_ARGUMENT', `${where}: ${message}`);
}

/** Returns `value` (or `fallback` when undefined) after checking it against `rule`. */
export function checkNumber(where: string, name: string, value: unknown, fallback: number, rule: NumberRule = {}): number {
  if (value === undefined) return fallback;
  const want = [
    rule.integer ? 'an integer' : 'a number',
    rule.min !== undefined ? `>= ${rule.min}` : '',
    rule.max !== undefined ? `<= ${rule.max}` : '',
  ]
    .filter(Boolean)
    .join(' ');
  const ok =
    typeof value === 'number' &&
    !Number.isNaN(value) &&
    (Number.isFinite(value) || (rule.infinite && value === Infinity)) &&
    (!rule.integer || Number.isInteger(value) || value === Infinity) &&
    (rule.min === undefined || value >= rule.min) &&
    (rule.max === undefined || value <= rule.max);
  if (!ok) throw badArgument(where, `${name} must be ${want}, got ${describe(value)}`);
  return value as number;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'object' && value !== null) return Array.isArray(value) ? 'an array' : 'an object';
  return String(value);
}

const KNOWN_GENERATE_OPTIONS = new Set([
  'maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repeatPenalty', 'penaltyLastN', 'presencePenalty',
  'frequencyPenalty', 'logitBias', 'seed', 'stop', 'ignoreEos', 'responseFormat', 'logprobs', 'signal',
]);

/** Rejects misspelt option names (a silently ignored `max_tokens` is a common bug). */
export function checkKnownKeys(where: string, options: object, known: ReadonlySet<string>): void {
  for (const key of Object.keys(options)) {
    if (!known.has(key)) {
      throw badArgument(where, `unknown option '${key}'; known options are ${[...known].sort().join(', ')}`);
    }
  }
}

export interface ResolvedGenerate {
  params: SequenceParams;
  stop: string[];
  signal: AbortSignal | undefined;
  /** JSON mode asked for (responseFormat json_object, or json_schema with its schema); the caller attaches the constraint. */
  json: { schema?: object } | undefined;
}

/** Checks generate()/chat() options against the model's vocabulary and end-of-generation ids. */
export function resolveGenerateOptions(
  where: string,
  options: GenerateOptions | undefined,
  nVocab: number,
  eogTokens: ReadonlySet<number>,
): ResolvedGenerate {
  if (options === undefined || options === null) options = {};
  if (typeof options !== 'object') throw badArgument(where, `options must be an object, got ${describe(options)}`);
  checkKnownKeys(where, options, KNOWN_GENERATE_OPTIONS);
  const d = SAMPLING_DEFAULTS;
  const num = (name: keyof GenerateOptions, fallback: number, rule?: NumberRule) =>
    checkNumber(where, name, options![name], fallback, rule);

  const sampling: SamplingParams = {
    temperature: num('temperature', d.temperature, { min: 0 }),
    topK: num('topK', d.topK, { min: 0, integer: true }),
    topP: num('topP', d.topP, { min: 0, max: 1 }),
    minP: num('minP', d.minP, { min: 0, max: 1 }),
    repeatPenalty: num('repeatPenalty', d.repeatPenalty, { min: 0 }),
    presencePenalty: num('presencePenalty', d.presencePenalty),
    frequencyPenalty: num('frequencyPenalty', d.frequencyPenalty),
    seed: num('seed', Math.floor(Math.random() * 2 ** 32), { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true }),
  };
  const logitBias = resolveLogitBias(where, options.logitBias, nVocab);
  if (logitBias.length > 0) sampling.logitBias = logitBias;

  const maxTokens = num('maxTokens', Infinity, { min: 0, integer: true, infinite: true });
  const logprobs = options.logprobs === undefined ? undefined : num('logprobs', 0, { min: 0, max: 20, integer: true });
  const penaltyWindow = num('penaltyLastN', d.penaltyLastN, { min: 0, integer: true });
  if (options.ignoreEos !== undefined && typeof options.ignoreEos !== 'boolean') {
    throw badArgument(where, `ignoreEos must be a boolean, got ${describe(options.ignoreEos)}`);
  }
  const json = resolveResponseFormat(where, options.responseFormat);
  if (json && options.ignoreEos) throw badArgument(where, 'a JSON responseFormat ends the reply with an end-of-generation token: it cannot be combined with ignoreEos');
  const stop = resolveStop(where, options.stop);
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw badArgument(where, `signal must be an AbortSignal, got ${describe(signal)}`);
  }
  return {
    params: {
      maxTokens,
      sampling,
      stopTokens: options.ignoreEos ? new Set() : eogTokens,
      penaltyWindow,
      returnPromptLogits: false,
      ...(logprobs !== undefined ? { logprobs } : {}),
    },
    stop,
    signal,
    json,
  };
}

function resolveResponseFormat(where: string, format: unknown): { schema?: object } | undefined {
  if (format === undefined) return undefined;
  const f = typeof format === 'object' && format !== null ? (format as { type?: unknown; schema?: unknown }) : undefined;
  if (f?.type === 'text') return undefined;
  if (f?.type === 'json_object') return {};
  if (f?.type === 'json_schema') {
    if (typeof f.schema !== 'object' || f.schema === null || Array.isArray(f.schema)) throw badArgument(where, "responseFormat 'json_schema' needs its schema as an object: { type: 'json_schema', schema }");
    return { schema: f.schema };
  }
  throw badArgument(where, `responseFormat must be { type: 'text' }, { type: 'json_object' } or { type: 'json_schema', schema }, got ${describe(format)}${f?.type !== undefined ? ` of type ${describe(f.type)}` : ''}`);
}

function resolveStop(where: string, stop: unknown): string[] {
  if (stop === undefined) return [];
  const list = typeof stop === 'string' ? [stop] : stop;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && s.length > 0)) {
    throw badArgument(where, `stop must be a non-empty string or an array of them, got ${describe(stop)}`);
  }
  return list;
}

function resolveLogitBias(where: string, bias: unknown, nVocab: number): { token: number; bias: number }[] {
  if (bias === undefined) return [];
  let entries: [unknown, unknown][];
  if (bias instanceof Map) entries = [...bias.entries()];
  else if (typeof bias === 'object' && bias !== null && !Array.isArray(bias)) entries = Object.entries(bias);
  else throw badArgument(where, `logitBias must map token ids to numbers (an object or a Map), got ${describe(bias)}`);
  return entries.map(([key, value]) => {
    const token = typeof key === 'string' ? Number(key) : key;
    if (typeof token !== 'number' || !Number.isInteger(token) || token < 0 || token >= nVocab) {
      throw badArgument(where, `logitBias key ${describe(key)} is not a token id of this model (0 to ${nVocab - 1})`);
    }
    if (typeof value !== 'number' || Number.isNaN(value) || value === Infinity) {
      throw badArgument(where, `logitBias for token ${token} must be a finite number or -Infinity, got ${describe(value)}`);
    }
    return { token, bias: value };
  });
}

/** Checks a prompt given as token ids. */
export function checkTokenIds(where: string, tokens: unknown, nVocab: number): number[] {
  if (!Array.isArray(tokens) && !(tokens instanceof Int32Array) && !(tokens instanceof Uint32Array)) {
    throw badArgument(where, `expected a string or an array of token ids, got ${describe(tokens)}`);
  }
  const ids = Array.from(tokens as ArrayLike<unknown>);
  ids.forEach((id, i) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= nVocab) {
      throw badArgument(where, `token ${i} is ${describe(id)}, not a token id of this model (0 to ${nVocab - 1})`);
    }
  });
  if (ids.length === 0) throw badArgument(where, 'the prompt is empty');
  return ids as number[];
}
