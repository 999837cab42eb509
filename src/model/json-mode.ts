// JSON mode (OpenAI's response_format json_object): the reply is one JSON object. A byte-level
// recognizer of RFC 8259 text says which bytes may come next; from it, the tokens of the
// vocabulary whose bytes all may come next form the set the sampler draws from
// (SamplingParams.allowed, as llama.cpp's grammar sampler), and once the object closes only
// the end-of-generation tokens remain, so the reply ends there.
import { TandemError } from '../native/errors.js';

// Recognizer modes. "Structural" modes (START to AFTER) wait for punctuation or a value and
// keep the whitespace run in `aux` (WS_*); the others are inside a string, number or literal.
const START = 0; // before the top-level object
const OBJ_OPEN = 1; // after '{': a key or '}'
const KEY_NEXT = 2; // after ',' in an object: a key
const COLON = 3; // after a key
const VALUE = 4; // a value
const ARR_OPEN = 5; // after '[': a value or ']'
const AFTER = 6; // after a value: ',' or the container's closer
const STR = 7; // in a string; aux 1 for a key
const STR_ESC = 8; // after '\'
const STR_HEX = 9; // in \uXXXX; aux = key + 2 * hex digits still to come
const NUM_MINUS = 10;
const NUM_ZERO = 11;
const NUM_INT = 12;
const NUM_DOT = 13;
const NUM_FRAC = 14;
const NUM_E = 15;
const NUM_E_SIGN = 16;
const NUM_EXP = 17;
const LITERAL = 18; // aux = literal * 8 + bytes matched
const DONE = 19; // the top-level object closed

const LITERALS = ['true', 'false', 'null'];
// Whitespace between the text's tokens, as llama.cpp's JSON grammar allows it: one space, or a
// newline and an indent of up to MAX_INDENT spaces or tabs. Enough for any layout, and a model
// cannot spend its reply on blanks.
const WS_NONE = 0;
const WS_SPACE = 1;
const WS_NEWLINE = 2; // + the indent so far
const MAX_INDENT = 20;
/** Nesting depth: deeper objects and arrays are not offered (and the masks' cache stays small). */
const MAX_DEPTH = 64;

/** Where the recognizer is: immutable, so a state can be shared by every token that reaches it. */
export class JsonState {
  constructor(
    readonly mode: number,
    /** Open containers, outermost first: '{' and '['. */
    readonly stack: string,
    readonly aux: number,
  ) {}

  get done(): boolean {
    return this.mode === DONE;
  }

  get key(): string {
    return `${this.mode},${this.aux},${this.stack}`;
  }
}

export const JSON_START = new JsonState(START, '', 0);
const JSON_DONE = new JsonState(DONE, '', 0);

const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

/** The whitespace run after byte `b` (a space, tab or newline) following run `ws`, or -1 when it may not grow. */
function whitespace(ws: number, b: number): number {
  if (b === 0x0a) return ws === WS_NONE ? WS_NEWLINE : -1;
  if (b === 0x20 && ws === WS_NONE) return WS_SPACE;
  if ((b === 0x20 || b === 0x09) && ws >= WS_NEWLINE && ws - WS_NEWLINE < MAX_INDENT) return ws + 1;
  return -1;
}

function open(stack: string, c: '{' | '['): JsonState | null {
  if (stack.length >= MAX_DEPTH) return null;
  return new JsonState(c === '{' ? OBJ_OPEN : ARR_OPEN, stack + c, 0);
}

function close(stack: string): JsonState {
  const rest = stack.slice(0, -1);
  return rest === '' ? JSON_DONE : new JsonState(AFTER, rest, 0);
}

function afterValue(stack: string): JsonState {
  return new JsonState(AFTER, stack, 0);
}

function valueStart(stack: string, b: number): JsonState | null {
  switch (b) {
    case 0x7b: return open(stack, '{');
    case 0x5b: return open(stack, '[');
    case 0x22: return new JsonState(STR, stack, 0);
    case 0x2d: return new JsonState(NUM_MINUS, stack, 0);
    case 0x30: return new JsonState(NUM_ZERO, stack, 0);
    case 0x74: return new JsonState(LITERAL, stack, 0 * 8 + 1);
    case 0x66: return new JsonState(LITERAL, stack, 1 * 8 + 1);
    case 0x6e: return new JsonState(LITERAL, stack, 2 * 8 + 1);
    default: return b >= 0x31 && b <= 0x39 ? new JsonState(NUM_INT, stack, 0) : null;
  }
}

/** The state after byte `b`, or null when no JSON object text continues that way. */
export function jsonStep(st: JsonState, b: number): JsonState | null {
  const { mode, stack, aux } = st;
  switch (mode) {
    case STR:
      if (b === 0x22) return aux === 1 ? new JsonState(COLON, stack, 0) : afterValue(stack);
      if (b === 0x5c) return new JsonState(STR_ESC, stack, aux);
      return b < 0x20 ? null : st; // any other byte, UTF-8 included; control characters must be escaped
    case STR_ESC:
      if (b === 0x75) return new JsonState(STR_HEX, stack, aux + 8);
      return b === 0x22 || b === 0x5c || b === 0x2f || b === 0x62 || b === 0x66 || b === 0x6e || b === 0x72 || b === 0x74
        ? new JsonState(STR, stack, aux)
        : null;
    case STR_HEX:
      if (!isHex(b)) return null;
      return aux >= 4 ? new JsonState(STR_HEX, stack, aux - 2) : new JsonState(STR, stack, aux & 1);
    case LITERAL: {
      const word = LITERALS[aux >> 3]!;
      const at = aux & 7;
      if (b !== word.charCodeAt(at)) return null;
      return at + 1 === word.length ? afterValue(stack) : new JsonState(LITERAL, stack, aux + 1);
    }
    case NUM_MINUS:
      if (b === 0x30) return new JsonState(NUM_ZERO, stack, 0);
      return b >= 0x31 && b <= 0x39 ? new JsonState(NUM_INT, stack, 0) : null;
    case NUM_DOT:
      return isDigit(b) ? new JsonState(NUM_FRAC, stack, 0) : null;
    case NUM_E:
      if (b === 0x2b || b === 0x2d) return new JsonState(NUM_E_SIGN, stack, 0);
      return isDigit(b) ? new JsonState(NUM_EXP, stack, 0) : null;
    case NUM_E_SIGN:
      return isDigit(b) ? new JsonState(NUM_EXP, stack, 0) : null;
    case NUM_ZERO:
    case NUM_INT:
    case NUM_FRAC:
    case NUM_EXP:
      if (isDigit(b) && mode !== NUM_ZERO) return st;
      if (b === 0x2e && (mode === NUM_ZERO || mode === NUM_INT)) return new JsonState(NUM_DOT, stack, 0);
      if ((b === 0x65 || b === 0x45) && mode !== NUM_EXP) return new JsonState(NUM_E, stack, 0);
      // A complete number ends at the first byte that cannot continue it, which then counts after it.
      return jsonStep(afterValue(stack), b);
    case DONE:
      return null;
  }
  // Structural modes.
  if (b === 0x20 || b === 0x0a || b === 0x09 || b === 0x0d) {
    const ws = whitespace(aux, b);
    return ws < 0 ? null : new JsonState(mode, stack, ws);
  }
  switch (mode) {
    case START:
      return b === 0x7b ? open(stack, '{') : null;
    case OBJ_OPEN:
      if (b === 0x7d) return close(stack);
      return b === 0x22 ? new JsonState(STR, stack, 1) : null;
    case KEY_NEXT:
      return b === 0x22 ? new JsonState(STR, stack, 1) : null;
    case COLON:
      return b === 0x3a ? new JsonState(VALUE, stack, 0) : null;
    case ARR_OPEN:
      if (b === 0x5d) return close(stack);
      return valueStart(stack, b);
    case VALUE:
      return valueStart(stack, b);
    case AFTER: {
      const top = stack[stack.length - 1];
      if (b === 0x2c) return new JsonState(top === '{' ? KEY_NEXT : VALUE, stack, 0);
      if ((b === 0x7d && top === '{') || (b === 0x5d && top === '[')) return close(stack);
      return null;
    }
  }
  return null;
}

/** The state after `bytes`, or null. */
export function jsonStepBytes(st: JsonState, bytes: Uint8Array): JsonState | null {
  let s: JsonState | null = st;
  for (let i = 0; i < bytes.length && s; i++) s = jsonStep(s, bytes[i]!);
  return s;
}

/** Masks kept per vocabulary before the cache starts over (a mask is n_vocab / 8 bytes). */
const MASK_CACHE_ENTRIES = 1024;

/**
 * The vocabulary as JSON mode needs it: every token's bytes, sorted so that tokens sharing a
 * prefix are neighbours, and the masks of the states met so far. One per model, shared by its
 * JSON requests.
 */
export class JsonVocabulary {
  readonly nVocab: number;
  /** Token ids in byte order, their bytes (concatenated), where each starts, and how many leading bytes each shares with the one before. */
  private readonly order: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly starts: Int32Array;
  private readonly shared: Int32Array;
  private readonly masks = new Map<string, Uint8Array>();

  /**
   * `pieces(id)`: the bytes token `id` adds to the text, empty for control and unknown tokens
   * (never offered). Throws TDM_UNSUPPORTED when the vocabulary cannot spell every printable
   * ASCII character and newline as a token of its own, which JSON mode relies on so that some
   * token always continues the reply.
   */
  constructor(nVocab: number, pieces: (id: number) => Uint8Array) {
    this.nVocab = nVocab;
    const ids: number[] = [];
    const all: Uint8Array[] = new Array(nVocab);
    const single = new Set<number>();
    for (let id = 0; id < nVocab; id++) {
      const p = pieces(id);
      all[id] = p;
      if (p.length === 0) continue;
      ids.push(id);
      if (p.length === 1) single.add(p[0]!);
    }
    for (const b of [0x0a, ...Array.from({ length: 0x7f - 0x20 }, (_, i) => 0x20 + i)]) {
      if (!single.has(b)) {
        throw new TandemError('TDM_UNSUPPORTED', `JSON mode needs a token for each printable ASCII character; this vocabulary has none for ${JSON.stringify(String.fromCharCode(b))}`);
      }
    }
    ids.sort((a, b) => compareBytes(all[a]!, all[b]!));
    this.order = Int32Array.from(ids);
    this.starts = new Int32Array(ids.length + 1);
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      this.starts[i] = total;
      total += all[ids[i]!]!.length;
    }
    this.starts[ids.length] = total;
    this.bytes = new Uint8Array(total);
    this.shared = new Int32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const p = all[ids[i]!]!;
      this.bytes.set(p, this.starts[i]!);
      if (i > 0) this.shared[i] = commonPrefix(all[ids[i - 1]!]!, p);
    }
  }

  /** The tokens allowed in `state` (bit t of byte t >> 3); at the end, the `endTokens`. */
  mask(state: JsonState, endTokens: readonly number[]): Uint8Array {
    if (state.done) {
      const m = new Uint8Array((this.nVocab + 7) >> 3);
      for (const t of endTokens) m[t >> 3]! |= 1 << (t & 7);
      return m;
    }
    const key = state.key;
    let m = this.masks.get(key);
    if (!m) {
      m = this.compute(state);
      if (this.masks.size >= MASK_CACHE_ENTRIES) this.masks.clear();
      this.masks.set(key, m);
    }
    return m;
  }

  /** Walks the sorted tokens once, stepping only the bytes a token does not share with the one before. */
  private compute(start: JsonState): Uint8Array {
    const m = new Uint8Array((this.nVocab + 7) >> 3);
    const { order, bytes, starts, shared } = this;
    // states[k]: the state after the current token's first k bytes (valid up to `valid`).
    const states: (JsonState | null)[] = [start];
    // The previous tokens' bytes [0, failedAt] do not continue the text: neither does a token sharing them.
    let failedAt = -1;
    for (let i = 0; i < order.length; i++) {
      const common = shared[i]!;
      if (failedAt >= 0 && common > failedAt) continue;
      failedAt = -1;
      const begin = starts[i]!, len = starts[i + 1]! - begin;
      let s = states[common]!;
      let k = common;
      for (; k < len; k++) {
        const next = jsonStep(s, bytes[begin + k]!);
        if (!next) break;
        s = next;
        states[k + 1] = next;
      }
      if (k < len) {
        failedAt = k;
        continue;
      }
      const id = order[i]!;
      m[id >> 3]! |= 1 << (id & 7);
    }
    return m;
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function commonPrefix(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** One reply's JSON mode (an engine TokenConstraint): asked for the allowed tokens before each draw, told each token drawn. */
export class JsonConstraint {
  private state = JSON_START;
  private readonly vocab: JsonVocabulary;
  private readonly endTokens: readonly number[];
  private readonly pieces: (id: number) => Uint8Array;

  constructor(vocab: JsonVocabulary, pieces: (id: number) => Uint8Array, endTokens: readonly number[]) {
    if (endTokens.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', 'JSON mode needs end-of-generation tokens to end the reply (it cannot be combined with ignoreEos)');
    this.vocab = vocab;
    this.pieces = pieces;
    this.endTokens = endTokens;
  }

  /** True once the object closed. */
  get complete(): boolean {
    return this.state.done;
  }

  allowed(): Uint8Array {
    return this.vocab.mask(this.state, this.endTokens);
  }

  accept(token: number): void {
    if (this.state.done && this.endTokens.includes(token)) return;
    const bytes = this.pieces(token);
    const next = bytes.length > 0 ? jsonStepBytes(this.state, bytes) : null;
    if (!next) throw new TandemError('TDM_INTERNAL', `JSON mode: token ${token} does not continue the reply's JSON`);
    this.state = next;
  }
}
