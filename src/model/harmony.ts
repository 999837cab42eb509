// gpt-oss answers in OpenAI's harmony format: a reply is a run of messages, each a header
// (`<|start|>assistant`, which the chat template's prompt already opened for the first one,
// perhaps with a recipient `to=functions.NAME`), then `<|channel|>NAME` (the recipient may
// follow the channel name instead), optionally `<|constrain|>TYPE`, then `<|message|>TEXT`
// closed by `<|end|>` (or `<|return|>` / `<|call|>`, which also end the generation). The
// `final` channel is what the user is meant to read; `analysis` (and `commentary`) is the
// model's reasoning; a message addressed to `functions.NAME` is a tool call whose text is its
// arguments. HarmonySplitter takes a reply's streamed text apart that way, as llama.cpp's
// server does for gpt-oss (its reasoning_content and tool_calls).

/** Text that became final with one push: the user-facing reply, and the reasoning. */
export interface ChannelText {
  text: string;
  reasoning: string;
}

/** A tool call the reply made: the function's name and its arguments as the model wrote them (JSON, as a rule). */
export interface ToolCall {
  name: string;
  arguments: string;
}

const START = '<|start|>';
const CHANNEL = '<|channel|>';
const MESSAGE = '<|message|>';
const CONSTRAIN = '<|constrain|>';
const ENDS = ['<|end|>', '<|return|>', '<|call|>'];
const MARKERS = [START, CHANNEL, MESSAGE, CONSTRAIN, ...ENDS];
const FUNCTIONS = 'functions.';

/** Whether a vocabulary speaks harmony: it has the tokens that frame a message. */
export function isHarmonyVocab(tokens: readonly string[]): boolean {
  const need = new Set([START, CHANNEL, MESSAGE]);
  for (const t of tokens) if (need.delete(t) && need.size === 0) return true;
  return false;
}

/**
 * Splits a harmony reply, pushed piece by piece, into the final channel's text, the other
 * channels' (the reasoning) and the tool calls. Markers may arrive split across pieces: a tail
 * that could begin one is held until the next push. A reply that never opens a message is not
 * harmony after all; flush() then hands back its text unchanged.
 */
export class HarmonySplitter {
  /** Inside a message's text (else in a header: role, channel name, recipient, content type). */
  private inMessage = false;
  /** The current header's text: role, recipient, channel (after `<|channel|>`), content type. */
  private header = '';
  /** The current message's channel: the first word after `<|channel|>`. */
  private channel = '';
  private readingChannel = false;
  /** The current message's tool call, when it is addressed to a function. */
  private call: ToolCall | undefined;
  private readonly calls: ToolCall[] = [];
  /** Text held because it may be the start of a marker. */
  private pending = '';
  /** Everything pushed until a message opens, for a reply that turns out not to be harmony. */
  private raw = '';
  private sawMessage = false;

  push(piece: string): ChannelText {
    if (!this.sawMessage) this.raw += piece;
    const out: ChannelText = { text: '', reasoning: '' };
    let s = this.pending + piece;
    this.pending = '';
    while (s.length > 0) {
      const at = s.indexOf('<');
      if (at < 0) {
        this.take(s, out);
        break;
      }
      this.take(s.slice(0, at), out);
      s = s.slice(at);
      const marker = MARKERS.find((m) => s.startsWith(m));
      if (marker) {
        this.mark(marker);
        s = s.slice(marker.length);
      } else if (MARKERS.some((m) => m.startsWith(s))) {
        this.pending = s; // a marker's beginning: wait for the rest
        break;
      } else {
        this.take('<', out); // not a marker: plain text
        s = s.slice(1);
      }
    }
    return out;
  }

  /** The rest at the end of the reply (and the whole reply if it never opened a message). */
  flush(): ChannelText {
    const out: ChannelText = { text: '', reasoning: '' };
    if (!this.sawMessage) return { text: this.raw, reasoning: '' };
    this.take(this.pending, out);
    this.pending = '';
    this.endMessage();
    return out;
  }

  /** The tool calls of the messages ended so far (all of them after flush()). */
  toolCalls(): ToolCall[] {
    return [...this.calls];
  }

  private mark(marker: string): void {
    if (marker === CHANNEL) {
      this.readingChannel = true;
      this.channel = '';
      this.header += ' ';
    } else if (marker === CONSTRAIN) {
      this.readingChannel = false;
      this.header += ' ';
    } else if (marker === MESSAGE) {
      this.inMessage = true;
      this.readingChannel = false;
      this.sawMessage = true;
      this.raw = '';
      const to = /(?:^|\s)to=(\S+)/.exec(this.header)?.[1];
      if (to?.startsWith(FUNCTIONS)) this.call = { name: to.slice(FUNCTIONS.length), arguments: '' };
    } else {
      // <|start|> opens a new header; an end marker closes the message.
      this.endMessage();
    }
  }

  private endMessage(): void {
    if (this.call) this.calls.push(this.call);
    this.call = undefined;
    this.inMessage = false;
    this.readingChannel = false;
    this.channel = '';
    this.header = '';
  }

  private take(text: string, out: ChannelText): void {
    if (!text) return;
    if (!this.inMessage) {
      this.header += text;
      if (this.readingChannel) this.channel += text;
    } else if (this.call) {
      this.call.arguments += text;
    } else {
      // "commentary to=...": the channel is the first word; a message with none is the reply.
      const name = this.channel.trim().split(/\s+/)[0];
      if (name === '' || name === 'final') out.text += text;
      else out.reasoning += text;
    }
  }
}
