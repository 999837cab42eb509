// How a chat model marks reasoning and tool calls in its replies, told from its vocabulary and
// chat template, and a splitter for the tag-based formats (harmony has its own, harmony.ts):
// - reasoning between <think> and </think> (Qwen3, QwQ, DeepSeek-R1 distills); a template that
//   ends the prompt inside <think> leaves the reply's start in the reasoning;
// - tool calls as <tool_call>{"name": ..., "arguments": {...}}</tool_call> (Hermes 2 Pro,
//   Qwen2.5, Qwen3), as a reply that is one JSON object {"name", "parameters"} (Llama 3.1-3.3,
//   perhaps after <|python_tag|>), or after [TOOL_CALLS] as a JSON array (Mistral).
// llama.cpp's server reads the same formats into reasoning_content and tool_calls.
import { isHarmonyVocab, type ChannelText, type ToolCall } from './harmony.js';

export type ReasoningFormat = 'harmony' | 'think';
export type ToolCallFormat = 'harmony' | 'hermes' | 'llama3-json' | 'mistral';

/** What chat() can take out of a model's replies: null where the model has no such format. */
export interface ReplyFormat {
  reasoning: ReasoningFormat | null;
  toolCalls: ToolCallFormat | null;
}

const THINK_OPEN = '<think>';
const THINK_CLOSE = '</think>';
const CALL_OPEN = '<tool_call>';
const CALL_CLOSE = '</tool_call>';
const MISTRAL_CALLS = '[TOOL_CALLS]';
const PYTHON_TAG = '<|python_tag|>';

/** The reply format of a model with these vocabulary pieces and chat template source. */
export function detectReplyFormat(tokens: readonly string[], template: string | undefined): ReplyFormat {
  if (isHarmonyVocab(tokens)) return { reasoning: 'harmony', toolCalls: 'harmony' };
  const t = template ?? '';
  const hasToken = (piece: string) => tokens.includes(piece);
  const reasoning: ReasoningFormat | null = t.includes(THINK_OPEN) || (hasToken(THINK_OPEN) && hasToken(THINK_CLOSE)) ? 'think' : null;
  let toolCalls: ToolCallFormat | null = null;
  if (t.includes(CALL_OPEN)) toolCalls = 'hermes';
  else if (t.includes(MISTRAL_CALLS)) toolCalls = 'mistral';
  // Llama 3.x: header tokens, and tools described as JSON with "parameters" (or the python tag).
  else if (t.includes('<|start_header_id|>') && /\btools\b/.test(t) && (t.includes('"parameters"') || t.includes(PYTHON_TAG))) toolCalls = 'llama3-json';
  return { reasoning, toolCalls };
}

/** Whether a rendered prompt leaves the reply inside a <think> block (the template opened it). */
export function promptOpensThink(prompt: string): boolean {
  const open = prompt.lastIndexOf(THINK_OPEN);
  return open >= 0 && prompt.indexOf(THINK_CLOSE, open) < 0;
}

/**
 * One tool call from the JSON a model wrote: {"name", "arguments"} (or "parameters"), the
 * arguments an object or a JSON string. Undefined when it is not that.
 */
function callFromJson(value: unknown): ToolCall | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const v = value as Record<string, unknown>;
  const args = v.arguments ?? v.parameters ?? {};
  if (typeof v.name !== 'string' || v.name === '') return undefined;
  if (typeof args === 'string') return { name: v.name, arguments: args };
  if (typeof args !== 'object' || args === null || Array.isArray(args)) return undefined;
  return { name: v.name, arguments: JSON.stringify(args) };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Calls from a Llama 3 reply: one JSON call object, or several separated by ';'. */
function llama3Calls(text: string): ToolCall[] | undefined {
  const body = text.trim().replace(PYTHON_TAG, '').trim();
  const one = callFromJson(parseJson(body));
  if (one) return [one];
  const parts = body.split(/;\s*(?=\{)/).map((p) => callFromJson(parseJson(p)));
  return parts.length > 1 && parts.every((p) => p !== undefined) ? (parts as ToolCall[]) : undefined;
}

/** Calls from Mistral's [TOOL_CALLS] and what follows it: a JSON array of calls (or one call). */
function mistralCalls(text: string): ToolCall[] | undefined {
  const v = parseJson(text.replace(MISTRAL_CALLS, '').trim());
  const list = Array.isArray(v) ? v.map(callFromJson) : [callFromJson(v)];
  return list.length > 0 && list.every((c) => c !== undefined) ? (list as ToolCall[]) : undefined;
}

export interface TaggedSplitterOptions {
  /** Take <think>...</think> out as reasoning. */
  think: boolean;
  /** Read tool calls in this format (null: none; the model was offered no tools). */
  toolCalls: Exclude<ToolCallFormat, 'harmony'> | null;
}

type Mode = 'text' | 'think' | 'call' | 'held';

/**
 * Splits a reply, pushed piece by piece, into text, reasoning and tool calls by the markers of
 * its format. A marker split across pieces is held until it is whole. A call whose JSON does
 * not parse is given back as text, markers and all, as is a held Llama 3 reply that is no call.
 * Whitespace right after a closing marker is dropped (the newline templates put there).
 */
export class TaggedReplySplitter {
  private mode: Mode = 'text';
  private readonly markers: string[];
  /** Text held because it may be the start of a marker. */
  private pending = '';
  /** The open call's JSON (hermes), or everything since the reply turned into calls (held). */
  private body = '';
  private readonly calls: ToolCall[] = [];
  /** Nothing but whitespace has been given out as text yet (a Llama 3 call must be the whole reply). */
  private textStarted = false;
  private trimNext = false;

  constructor(private readonly options: TaggedSplitterOptions) {
    this.markers = [
      ...(options.think ? [THINK_OPEN, THINK_CLOSE] : []),
      ...(options.toolCalls === 'hermes' ? [CALL_OPEN, CALL_CLOSE] : []),
      ...(options.toolCalls === 'mistral' ? [MISTRAL_CALLS] : []),
      ...(options.toolCalls === 'llama3-json' ? [PYTHON_TAG] : []),
    ];
  }

  /** The template opened <think> in the prompt: the reply starts in the reasoning. */
  startInReasoning(): void {
    if (this.options.think && this.mode === 'text' && !this.textStarted) this.mode = 'think';
  }

  push(piece: string): ChannelText {
    const out: ChannelText = { text: '', reasoning: '' };
    let s = this.pending + piece;
    this.pending = '';
    while (s.length > 0) {
      if (this.mode === 'held') {
        this.body += s;
        break;
      }
      const at = this.nextMarkerStart(s);
      if (at < 0) {
        this.take(s, out);
        break;
      }
      this.take(s.slice(0, at), out);
      s = s.slice(at);
      const marker = this.markers.find((m) => s.startsWith(m));
      if (marker) {
        this.mark(marker, out);
        s = s.slice(marker.length);
      } else if (this.markers.some((m) => m.startsWith(s))) {
        this.pending = s; // a marker's beginning: wait for the rest
        break;
      } else {
        this.take(s[0]!, out);
        s = s.slice(1);
      }
    }
    return out;
  }

  /** The rest at the end of the reply. */
  flush(): ChannelText {
    const out: ChannelText = { text: '', reasoning: '' };
    const rest = this.pending;
    this.pending = '';
    if (this.mode === 'held') {
      this.body += rest;
      const calls = this.options.toolCalls === 'mistral' ? mistralCalls(this.body) : llama3Calls(this.body);
      if (calls) this.calls.push(...calls);
      else out.text += this.body;
    } else if (this.mode === 'call') {
      this.body += rest;
      this.endCall(out); // a call the reply never closed: kept if its JSON is whole
    } else {
      this.take(rest, out);
    }
    return out;
  }

  /** The tool calls read so far (all of them after flush()). */
  toolCalls(): ToolCall[] {
    return [...this.calls];
  }

  /** Where a marker (or the start of one) may begin in s; -1 where none can. */
  private nextMarkerStart(s: string): number {
    let best = -1;
    for (const first of new Set(this.markers.map((m) => m[0]!))) {
      const i = s.indexOf(first);
      if (i >= 0 && (best < 0 || i < best)) best = i;
    }
    return best;
  }

  private mark(marker: string, out: ChannelText): void {
    if (marker === THINK_OPEN && this.mode === 'text') this.mode = 'think';
    else if (marker === THINK_CLOSE && this.mode === 'think') this.mode = 'text';
    else if (marker === CALL_OPEN && this.mode === 'text') {
      this.mode = 'call';
      this.body = '';
    } else if (marker === CALL_CLOSE && this.mode === 'call') {
      this.trimNext = this.endCall(out);
      return;
    } else if ((marker === MISTRAL_CALLS || marker === PYTHON_TAG) && this.mode === 'text') {
      this.mode = 'held'; // the rest of the reply is its calls, read at the end
      this.body = marker;
    } else {
      this.take(marker, out, true); // a marker out of place is text
      return;
    }
    this.trimNext = marker === THINK_OPEN || marker === THINK_CLOSE;
  }

  /** Ends the open call: a call when its JSON is one, else its text given back. True for a call. */
  private endCall(out: ChannelText): boolean {
    const call = callFromJson(parseJson(this.body.trim()));
    this.mode = 'text';
    if (call) this.calls.push(call);
    else this.take(CALL_OPEN + this.body + CALL_CLOSE, out, true);
    this.body = '';
    return call !== undefined;
  }

  private take(text: string, out: ChannelText, raw = false): void {
    if (!raw && this.trimNext) {
      text = text.replace(/^\s+/, '');
      if (!text) return;
      this.trimNext = false;
    }
    if (!text) return;
    if (this.mode === 'call') {
      this.body += text; // markers inside a call's JSON belong to it
    } else if (this.mode === 'think') {
      out.reasoning += text;
    } else if (!raw && !this.textStarted && this.options.toolCalls === 'llama3-json' && /^\s*\{/.test(text)) {
      const brace = text.indexOf('{');
      out.text += text.slice(0, brace);
      this.mode = 'held'; // perhaps a call: held whole until the end
      this.body = text.slice(brace);
    } else {
      out.text += text;
      if (/\S/.test(text)) this.textStarted = true;
    }
  }
}
