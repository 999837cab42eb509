// The OpenAI wire format, without HTTP: request bodies of /v1/completions and
// /v1/chat/completions checked and turned into tandem's generate() and chat() calls, and
// the response objects and stream chunks built from what those return. Fields are
// snake_case as OpenAI's; tandem's own sampling options (top_k, min_p, repeat_penalty,
// ignore_eos) are accepted as the extensions llama.cpp's server also takes.
import { randomUUID } from 'node:crypto';
import type { ChatMessage, GenerateOptions, GenerationResult, LogprobToken, StopReason, TokenLogprob } from '../api/index.js';
import type { ToolCall } from '../model/harmony.js';

/** A request the server refuses: HTTP status, OpenAI error type and code, and the field at fault. */
export class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = status >= 500 ? 'server_error' : 'invalid_request_error',
  ) {
    super(message);
    this.name = 'RequestError';
  }
}

function bad(param: string, message: string): RequestError {
  return new RequestError(400, `${param}: ${message}`, param);
}

/** Most choices (prompts x n) one request may ask for. */
export const MAX_CHOICES = 64;

type Body = Record<string, unknown>;

function numberField(body: Body, name: string, rule: { min?: number; max?: number; integer?: boolean } = {}): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(name, `must be a number, got ${JSON.stringify(v)}`);
  if (rule.integer && !Number.isInteger(v)) throw bad(name, `must be an integer, got ${v}`);
  if (rule.min !== undefined && v < rule.min) throw bad(name, `must be at least ${rule.min}, got ${v}`);
  if (rule.max !== undefined && v > rule.max) throw bad(name, `must be at most ${rule.max}, got ${v}`);
  return v;
}

function booleanField(body: Body, name: string): boolean | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw bad(name, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Fields that would change what comes back in ways tandem does not do: refused, not ignored. */
function refuseUnsupported(body: Body, fields: Record<string, (v: unknown) => boolean>): void {
  for (const [name, used] of Object.entries(fields)) {
    const v = body[name];
    if (v !== undefined && v !== null && used(v)) throw new RequestError(400, `${name} is not supported by tandem's server`, name, 'unsupported_parameter');
  }
}

export interface SamplingRequest {
  /** Options for generate()/chat() (no signal yet); the server's defaults lie under them. */
  options: GenerateOptions;
  /** Choices per prompt. */
  n: number;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the usage. */
  includeUsage: boolean;
}

/** The sampling and streaming fields both endpoints share, over the server's defaults. */
function samplingFrom(body: Body, defaults: GenerateOptions, maxTokensNames: string[]): SamplingRequest {
  const options: GenerateOptions = { ...defaults };
  for (const name of maxTokensNames) {
    const v = numberField(body, name, { min: 1, integer: true });
    if (v !== undefined) options.maxTokens = v;
  }
  const set = <K extends keyof GenerateOptions>(key: K, name: string, rule?: { min?: number; max?: number; integer?: boolean }) => {
    const v = numberField(body, name, rule);
    if (v !== undefined) options[key] = v as GenerateOptions[K];
  };
  set('temperature', 'temperature', { min: 0, max: 2 });
  set('topP', 'top_p', { min: 0, max: 1 });
  set('topK', 'top_k', { min: 0, integer: true });
  set('minP', 'min_p', { min: 0, max: 1 });
  set('presencePenalty', 'presence_penalty', { min: -2, max: 2 });
  set('frequencyPenalty', 'frequency_penalty', { min: -2, max: 2 });
  set('repeatPenalty', 'repeat_penalty', { min: 0 });
  set('seed', 'seed', { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true });
  const ignoreEos = booleanField(body, 'ignore_eos');
  if (ignoreEos !== undefined) options.ignoreEos = ignoreEos;

  const stop = body.stop;
  if (stop !== undefined && stop !== null) {
    const list = typeof stop === 'string' ? [stop] : stop;
    if (!Array.isArray(list) || list.length > 16 || !list.every((s) => typeof s === 'string' && s.length > 0)) {
      throw bad('stop', 'must be a non-empty string or an array of at most 16 of them');
    }
    if (list.length > 0) options.stop = list as string[];
  }

  // OpenAI's JSON mode and structured outputs ({type: 'json_schema', json_schema: {name, schema, strict}}).
  const format = body.response_format;
  if (format !== undefined && format !== null) {
    const f = typeof format === 'object' && !Array.isArray(format) ? (format as Body) : undefined;
    if (f?.type === 'json_schema') {
      const schema = (f.json_schema as Body | undefined)?.schema;
      if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw bad('response_format', 'json_schema.schema must be a JSON Schema object');
      options.responseFormat = { type: 'json_schema', schema };
    } else if (f?.type === 'json_object') {
      options.responseFormat = { type: 'json_object' };
    } else if (f?.type === 'text') {
      // Plain text, whatever the server's defaults say (tandem serve --json).
      delete options.responseFormat;
    } else {
      throw bad('response_format', "must be {type: 'text'}, {type: 'json_object'} or {type: 'json_schema', json_schema: {schema}}");
    }
  }

  const bias = body.logit_bias;
  if (bias !== undefined && bias !== null) {
    if (typeof bias !== 'object' || Array.isArray(bias)) throw bad('logit_bias', 'must be an object of token id to bias');
    const map = new Map<number, number>();
    for (const [key, value] of Object.entries(bias)) {
      const id = Number(key);
      if (!/^\d+$/.test(key) || !Number.isSafeInteger(id)) throw bad('logit_bias', `keys must be token ids, got '${key}'`);
      if (typeof value !== 'number' || !Number.isFinite(value) || value < -100 || value > 100) {
        throw bad('logit_bias', `values must be numbers from -100 to 100, got ${JSON.stringify(value)} for token ${key}`);
      }
      // As OpenAI documents it: -100 bans the token.
      map.set(id, value <= -100 ? -Infinity : value);
    }
    if (map.size > 0) options.logitBias = map;
  }

  const n = numberField(body, 'n', { min: 1, max: MAX_CHOICES, integer: true }) ?? 1;
  const stream = booleanField(body, 'stream') ?? false;
  const so = body.stream_options;
  let includeUsage = false;
  if (so !== undefined && so !== null) {
    if (typeof so !== 'object' || Array.isArray(so)) throw bad('stream_options', 'must be an object');
    if (!stream) throw bad('stream_options', 'is only allowed with stream: true');
    includeUsage = booleanField(so as Body, 'include_usage') ?? false;
  }
  return { options, n, stream, includeUsage };
}

export interface CompletionRequest extends SamplingRequest {
  /** Each prompt: text, or token ids used as given. */
  prompts: (string | number[])[];
}

function isTokenArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((t) => typeof t === 'number' && Number.isInteger(t) && t >= 0);
}

/** A field holding text, token ids, or a non-empty list of either (prompts, embedding inputs), none of them empty. */
function textsOrTokenLists(body: Body, name: string): (string | number[])[] {
  const p = body[name];
  let out: (string | number[])[];
  if (typeof p === 'string') out = [p];
  else if (isTokenArray(p)) out = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || isTokenArray(x))) out = p as (string | number[])[];
  else throw bad(name, 'must be a string, an array of token ids, or a non-empty array of those');
  if (out.some((x) => x.length === 0)) throw bad(name, 'must not be empty');
  return out;
}

/** A /v1/completions body: prompt as text, token ids, or a list of either (one choice set each). */
export function parseCompletionRequest(body: Body, defaults: GenerateOptions): CompletionRequest {
  refuseUnsupported(body, {
    echo: (v) => v === true,
    suffix: (v) => v !== '',
    best_of: (v) => v !== 1,
  });
  const prompts = textsOrTokenLists(body, 'prompt');
  const sampling = samplingFrom(body, defaults, ['max_tokens']);
  // The legacy endpoint's logprobs: how many alternatives per token (0: the drawn token's only).
  const logprobs = numberField(body, 'logprobs', { min: 0, max: 20, integer: true });
  if (logprobs !== undefined) sampling.options.logprobs = logprobs;
  if (prompts.length * sampling.n > MAX_CHOICES) throw bad('n', `prompts x n must be at most ${MAX_CHOICES}, got ${prompts.length * sampling.n}`);
  return { ...sampling, prompts };
}

export interface ChatRequest extends SamplingRequest {
  messages: ChatMessage[];
  /** chat_template_kwargs, reasoning_effort (which gpt-oss's template reads) and tools, for the chat template. */
  templateVariables?: Record<string, unknown>;
  /** reasoning_format 'none' (llama.cpp's name): the reply as generated, reasoning and call markers in the content. */
  reasoning?: 'raw';
}

/**
 * A /v1/chat/completions body: messages whose content is text or a list of text parts.
 * `tools` are taken only where the model's tool calls can be read back (`toolCalls`: the model
 * has a tool-call format, ModelInfo.replyFormat); elsewhere they are refused.
 */
export function parseChatRequest(body: Body, defaults: GenerateOptions, toolCalls = false): ChatRequest {
  refuseUnsupported(body, {
    functions: () => true,
    tool_choice: (v) => v !== 'none' && v !== 'auto',
  });
  const list = body.messages;
  if (!Array.isArray(list) || list.length === 0) throw bad('messages', 'must be a non-empty array of {role, content}');
  const messages = list.map((m: unknown, i): ChatMessage => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw bad(`messages[${i}]`, 'must be an object {role, content}');
    const { role, content, ...rest } = m as Body;
    if (typeof role !== 'string' || role.length === 0) throw bad(`messages[${i}].role`, 'must be a non-empty string');
    if (rest.tool_calls !== undefined) rest.tool_calls = historyToolCalls(rest.tool_calls, i);
    return { ...rest, role, content: messageText(content, i) };
  });
  const sampling = samplingFrom(body, defaults, ['max_tokens', 'max_completion_tokens']);
  const logprobs = booleanField(body, 'logprobs');
  const top = numberField(body, 'top_logprobs', { min: 0, max: 20, integer: true });
  if (top !== undefined && logprobs !== true) throw bad('top_logprobs', 'needs logprobs: true');
  if (logprobs) sampling.options.logprobs = top ?? 0;
  const kwargs = body.chat_template_kwargs;
  if (kwargs !== undefined && (typeof kwargs !== 'object' || kwargs === null || Array.isArray(kwargs))) throw bad('chat_template_kwargs', 'must be an object');
  const effort = body.reasoning_effort;
  if (effort !== undefined && typeof effort !== 'string') throw bad('reasoning_effort', 'must be a string');
  const tools = body.tool_choice === 'none' ? [] : checkTools(body.tools, toolCalls);
  const templateVariables = {
    ...(kwargs as Body | undefined),
    ...(effort !== undefined ? { reasoning_effort: effort } : {}),
    ...(tools.length > 0 ? { tools } : {}),
  };
  // llama.cpp's reasoning_format: 'none' leaves the reply whole; 'auto' and 'deepseek' split it (the default).
  const format = body.reasoning_format;
  if (format !== undefined && format !== 'none' && format !== 'auto' && format !== 'deepseek') throw bad('reasoning_format', "must be 'auto', 'deepseek' or 'none'");
  return {
    ...sampling,
    messages,
    ...(Object.keys(templateVariables).length > 0 ? { templateVariables } : {}),
    ...(format === 'none' ? { reasoning: 'raw' as const } : {}),
  };
}

/** `tools`: function definitions, {type: 'function', function: {name, description?, parameters?}}. */
function checkTools(tools: unknown, supported: boolean): Body[] {
  if (tools === undefined || tools === null || (Array.isArray(tools) && tools.length === 0)) return [];
  if (!supported) {
    throw new RequestError(400, 'tools is not supported by tandem\'s server for this model: its chat template has no tool-call format tandem reads back (harmony, <tool_call> tags, Llama 3 JSON, Mistral [TOOL_CALLS])', 'tools', 'unsupported_parameter');
  }
  if (!Array.isArray(tools)) throw bad('tools', 'must be an array of {type: "function", function: {name, ...}}');
  return tools.map((tool: unknown, i) => {
    const f = (tool as Body | null)?.function as Body | undefined;
    if ((tool as Body | null)?.type !== 'function' || typeof f !== 'object' || f === null || typeof f.name !== 'string' || f.name === '') {
      throw bad(`tools[${i}]`, 'must be {type: "function", function: {name, ...}}');
    }
    return tool as Body;
  });
}

/**
 * An assistant turn's earlier tool calls, as a template reads them: OpenAI sends each call's
 * arguments as a JSON string, and templates (gpt-oss's) write them out with tojson, so the
 * string is parsed back into its object (left as it is when it is not JSON).
 */
function historyToolCalls(calls: unknown, i: number): unknown[] {
  if (!Array.isArray(calls)) throw bad(`messages[${i}].tool_calls`, 'must be an array');
  return calls.map((call: unknown) => {
    const f = (call as Body | null)?.function as Body | undefined;
    if (typeof f !== 'object' || f === null || typeof f.arguments !== 'string') return call;
    try {
      return { ...(call as Body), function: { ...f, arguments: JSON.parse(f.arguments) } };
    } catch {
      return call;
    }
  });
}

/** A message's content as text: a string, null (an assistant turn with none), or text parts joined. */
function messageText(content: unknown, i: number): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (Array.isArray(content)) {
    return content
      .map((part: unknown, j) => {
        const p = part as Body;
        if (typeof p !== 'object' || p === null || p.type !== 'text' || typeof p.text !== 'string') {
          throw new RequestError(400, `messages[${i}].content[${j}]: only text parts are supported`, `messages[${i}].content`, 'unsupported_content');
        }
        return p.text;
      })
      .join('');
  }
  throw bad(`messages[${i}].content`, 'must be a string or an array of text parts');
}

/** OpenAI's finish_reason for how a generation ended. */
export function finishReason(reason: StopReason): 'stop' | 'length' {
  return reason === 'maxTokens' || reason === 'contextFull' ? 'length' : 'stop';
}

/** A chat result's finish reason: 'tool_calls' when the reply called tools. */
function chatFinishReason(r: GenerationResult): 'stop' | 'length' | 'tool_calls' {
  return r.toolCalls && r.toolCalls.length > 0 ? 'tool_calls' : finishReason(r.stopReason);
}

/** OpenAI's tool_calls entries for choice `index`'s calls: ids from the response's, unique within it. */
function toolCallsJson(calls: readonly ToolCall[], responseId: string, index: number) {
  return calls.map((c, k) => ({ id: `call_${responseId.slice(-8)}_${index}_${k}`, type: 'function' as const, function: { name: c.name, arguments: c.arguments } }));
}

export type Endpoint = 'completion' | 'chat';

/**
 * A chat reply; a model that reasons on its own channel (gpt-oss) has it as reasoning_content,
 * as llama.cpp's server gives it, and its tool calls as tool_calls (content null when empty).
 */
function assistantMessage(r: GenerationResult, responseId: string, index: number): Record<string, unknown> {
  const calls = r.toolCalls ?? [];
  const message: Record<string, unknown> = { role: 'assistant', content: calls.length > 0 && !r.text ? null : r.text };
  if (r.reasoning) message.reasoning_content = r.reasoning;
  if (calls.length > 0) message.tool_calls = toolCallsJson(calls, responseId, index);
  return message;
}

/** The id, object names and creation time every response and chunk of one request share. */
export class ResponseShape {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);

  constructor(
    readonly endpoint: Endpoint,
    readonly model: string,
  ) {
    this.id = `${endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
  }

  private head(object: string) {
    return { id: this.id, object, created: this.created, model: this.model };
  }

  /** Text offsets of the completion endpoint's logprobs, per choice, across a stream's chunks. */
  private readonly textOffsets = new Map<number, number>();

  /** OpenAI's logprobs object for these tokens' entries (null when none were asked for). */
  private logprobsJson(index: number, entries: readonly TokenLogprob[] | undefined) {
    if (!entries) return null;
    if (this.endpoint === 'chat') {
      const entry = (e: LogprobToken) => ({ token: e.text, logprob: e.logprob, bytes: e.bytes });
      return { content: entries.map((e) => ({ ...entry(e), top_logprobs: e.top.map(entry) })), refusal: null };
    }
    let offset = this.textOffsets.get(index) ?? 0;
    const textOffset = entries.map((e) => {
      const at = offset;
      offset += e.text.length;
      return at;
    });
    this.textOffsets.set(index, offset);
    return {
      tokens: entries.map((e) => e.text),
      token_logprobs: entries.map((e) => e.logprob),
      top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((x) => [x.text, x.logprob]))),
      text_offset: textOffset,
    };
  }

  /** The whole response: one choice per result, in order, and the usage over all of them. */
  response(results: GenerationResult[], promptTokens: number) {
    const completionTokens = results.reduce((a, r) => a + r.usage.completionTokens, 0);
    const choices = results.map((r, index) =>
      this.endpoint === 'chat'
        ? { index, message: assistantMessage(r, this.id, index), logprobs: this.logprobsJson(index, r.logprobs), finish_reason: chatFinishReason(r) }
        : { index, text: r.text, logprobs: this.logprobsJson(index, r.logprobs), finish_reason: finishReason(r.stopReason) },
    );
    return {
      ...this.head(this.endpoint === 'chat' ? 'chat.completion' : 'text_completion'),
      choices,
      usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    };
  }

  /**
   * A stream chunk for choice `index`: text (and reasoning), a chat turn's opening (role), or
   * its end (finish: the result, whose tool calls, if any, come whole in this last delta).
   */
  chunk(index: number, part: { text?: string; reasoning?: string; role?: boolean; finish?: GenerationResult; logprobs?: TokenLogprob[] }) {
    const end = part.finish;
    const logprobs = this.logprobsJson(index, part.logprobs);
    if (this.endpoint === 'chat') {
      const delta: Record<string, unknown> = {};
      if (part.role) delta.role = 'assistant';
      if (part.text !== undefined) delta.content = part.text;
      if (part.reasoning) delta.reasoning_content = part.reasoning;
      if (end?.toolCalls && end.toolCalls.length > 0) {
        delta.tool_calls = toolCallsJson(end.toolCalls, this.id, index).map((c, k) => ({ index: k, ...c }));
      }
      const finish_reason = end === undefined ? null : chatFinishReason(end);
      return { ...this.head('chat.completion.chunk'), choices: [{ index, delta, logprobs, finish_reason }] };
    }
    const finish_reason = end === undefined ? null : finishReason(end.stopReason);
    return { ...this.head('text_completion'), choices: [{ index, text: part.text ?? '', logprobs, finish_reason }] };
  }

  /** The last chunk of a stream that asked for usage: no choices. */
  usageChunk(promptTokens: number, completionTokens: number) {
    return {
      ...this.head(this.endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion'),
      choices: [],
      usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    };
  }
}

/** Most inputs one /v1/embeddings request may hold. */
export const MAX_EMBEDDING_INPUTS = 256;

export interface EmbeddingRequest {
  /** Each input: text, or token ids used as given. */
  inputs: (string | number[])[];
  /** Answer each vector as base64 of its little-endian float32 bytes instead of a number array. */
  base64: boolean;
  /** Keep the first this many elements and scale them back to unit length (as OpenAI's `dimensions`). */
  dimensions?: number;
}

/** A /v1/embeddings body: input as text, token ids, or a list of either; nEmbd bounds `dimensions`. */
export function parseEmbeddingRequest(body: Body, nEmbd: number): EmbeddingRequest {
  const inputs = textsOrTokenLists(body, 'input');
  if (inputs.length > MAX_EMBEDDING_INPUTS) throw bad('input', `holds ${inputs.length} inputs; at most ${MAX_EMBEDDING_INPUTS} a request`);
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') throw bad('encoding_format', `must be 'float' or 'base64', got ${JSON.stringify(format)}`);
  const dimensions = numberField(body, 'dimensions', { min: 1, max: nEmbd, integer: true });
  return { inputs, base64: format === 'base64', ...(dimensions !== undefined ? { dimensions } : {}) };
}

/** The /v1/embeddings answer for unit vectors in input order. */
export function embeddingResponse(model: string, vectors: Float32Array[], promptTokens: number, req: EmbeddingRequest) {
  const data = vectors.map((v, index) => {
    let out = v;
    if (req.dimensions !== undefined && req.dimensions < v.length) {
      out = v.slice(0, req.dimensions);
      const norm = Math.sqrt(out.reduce((s, x) => s + x * x, 0));
      if (norm > 0) out = out.map((x) => x / norm);
    }
    const embedding = req.base64 ? Buffer.from(out.buffer, out.byteOffset, out.byteLength).toString('base64') : Array.from(out);
    return { object: 'embedding', index, embedding };
  });
  return { object: 'list', data, model, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } };
}
