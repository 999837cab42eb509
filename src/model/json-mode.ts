// JSON mode (OpenAI's response_format json_object and json_schema): the reply is one JSON
// object, or one value of a schema (json-schema.ts compiles a schema into the value nodes
// below). A byte-level recognizer of RFC 8259 text, guided by those nodes, says which bytes may
// come next; from it, the tokens of the vocabulary whose bytes all may come next form the set
// the sampler draws from (SamplingParams.allowed, as llama.cpp's grammar sampler), and once the
// value closes only the end-of-generation tokens remain, so the reply ends there.
import { TandemError } from '../native/errors.js';
import { utf8Encode } from './tokenizer/unicode.js';

/** What a value may be. Node ids are unique in the process: masks are cached by them. */
export type ValueNode =
  | { kind: 'any'; id: number }
  /** props: the keys in the order they are written (each at most once); null: any keys, each value a `values`. */
  | { kind: 'object'; id: number; props: PropNode[] | null; values: ValueNode }
  | { kind: 'array'; id: number; items: ValueNode; minItems: number; maxItems: number }
  /** Lengths count characters, an escape as one. */
  | { kind: 'string'; id: number; minLength: number; maxLength: number }
  /** min and max: bounds of an integer (inclusive), when the schema gives them. */
  | { kind: 'number'; id: number; integer: boolean; min?: bigint; max?: bigint }
  /** One of these JSON texts (enum, const, booleans, null). */
  | { kind: 'literals'; id: number; texts: Uint8Array[] }
  /** One of these, told apart by their first byte (json-schema.ts checks that they can be). */
  | { kind: 'union'; id: number; options: ValueNode[] };

export interface PropNode {
  /** The key as JSON text, quotes included. */
  key: Uint8Array;
  value: ValueNode;
  required: boolean;
}

let lastNodeId = 0;
/** A fresh id for a value node. */
export const nodeId = () => ++lastNodeId;

const ANY: ValueNode = { kind: 'any', id: nodeId() };
/** Any object: JSON mode's reply. */
export const ANY_OBJECT: ValueNode = { kind: 'object', id: nodeId(), props: null, values: ANY };
const ANY_ARRAY: ValueNode = { kind: 'array', id: nodeId(), items: ANY, minItems: 0, maxItems: Infinity };
const ANY_STRING: ValueNode = { kind: 'string', id: nodeId(), minLength: 0, maxLength: Infinity };
const ANY_NUMBER: ValueNode = { kind: 'number', id: nodeId(), integer: false };
const TRUE_FALSE_NULL: ValueNode = { kind: 'literals', id: nodeId(), texts: ['true', 'false', 'null'].map(utf8Encode) };

// Recognizer modes. "Structural" modes (START to AFTER) wait for punctuation or a value and
// keep the whitespace run in `aux` (WS_*); the others are inside a string, number or literal.
const START = 0; // before the reply's value (node: the root)
const OBJ_OPEN = 1; // after '{': a key or '}'
const KEY_NEXT = 2; // after ',' in an object: a key
const COLON = 3; // after a key (node: its value)
const VALUE = 4; // a value (node)
const ARR_OPEN = 5; // after '[': an item or ']'
const AFTER = 6; // after a value: ',' or the container's closer
// Strings (node: the string's node): aux = a free key (1) + 2 * hex digits still to come in a \u
// escape + 16 * characters so far (counted only as far as the node's lengths need).
const STR = 7;
const STR_ESC = 8; // after '\'
const STR_HEX = 9; // in a \u escape
const NUM_MINUS = 10; // numbers: aux = integer (1) + 2 * digits so far in the part being read
const NUM_ZERO = 11;
const NUM_INT = 12;
const NUM_DOT = 13;
const NUM_FRAC = 14;
const NUM_E = 15;
const NUM_E_SIGN = 16;
const NUM_EXP = 17;
const LITERAL = 18; // matching one of several JSON texts (lit)
const DONE = 19; // the reply's value closed
const INT_BOUNDED = 20; // in an integer with bounds (node; digits: the sign and digits so far)

// Whitespace between the text's tokens, as llama.cpp's JSON grammar allows it: one space, or a
// newline and an indent of up to MAX_INDENT spaces or tabs. Enough for any layout, and a model
// cannot spend its reply on blanks.
const WS_NONE = 0;
const WS_SPACE = 1;
const WS_NEWLINE = 2; // + the indent so far
const MAX_INDENT = 20;
/** Digits in a number's integer part, fraction and exponent, each (llama.cpp's JSON grammar: 16). */
const MAX_DIGITS = 16;
/** Nesting depth: deeper objects and arrays are not offered (and the masks' cache stays small). */
const MAX_DEPTH = 64;

/** An open object or array: for an object, the index of the first property still to come; for an array, the items so far. */
class Frame {
  readonly key: string;
  readonly depth: number;
  constructor(
    readonly parent: Frame | null,
    readonly node: Extract<ValueNode, { kind: 'object' | 'array' }>,
    readonly index: number,
  ) {
    this.depth = parent ? parent.depth + 1 : 1;
    this.key = `${parent ? parent.key : ''}/${node.id}:${index}`;
  }
}

/** Matching one of several JSON texts: the candidates still possible (indices into `texts`) after `pos` bytes. */
interface LiteralMatch {
  texts: Uint8Array[];
  alive: number[];
  pos: number;
  /** Matching an object's key (the candidates index its props). */
  forKey: boolean;
}

/** Where the recognizer is: immutable, so a state can be shared by every token that reaches it. */
export class JsonState {
  private keyText: string | undefined;
  constructor(
    readonly mode: number,
    readonly aux: number,
    readonly frames: Frame | null,
    /** START, VALUE, COLON: the value expected; LITERAL of a value: its literals node. */
    readonly node: ValueNode | null = null,
    readonly lit: LiteralMatch | null = null,
    readonly digits = '',
  ) {}

  get done(): boolean {
    return this.mode === DONE;
  }

  /** Equal for states that accept the same continuations (the masks' cache key). */
  get key(): string {
    if (this.keyText === undefined) {
      // Strings with the same lengths continue alike, whichever node they are.
      const node = this.node?.kind === 'string' ? `s${this.node.minLength}:${this.node.maxLength}` : (this.node?.id ?? 0);
      const lit = this.lit ? `${this.lit.alive.join('.')}@${this.lit.pos}` : '';
      this.keyText = `${this.mode}|${this.aux}|${node}|${this.frames?.key ?? ''}|${lit}|${this.digits}`;
    }
    return this.keyText;
  }
}

/** The state before a reply whose value is `root` (an object or array node, or a union of them). */
export function startState(root: ValueNode): JsonState {
  return new JsonState(START, WS_NONE, null, root);
}

/** JSON mode's start: any one object. */
export const JSON_START = startState(ANY_OBJECT);
const JSON_DONE = new JsonState(DONE, 0, null);

const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

/** The whitespace run after byte `b` (a space, tab or newline) following run `ws`, or -1 when it may not grow. */
function whitespace(ws: number, b: number): number {
  if (b === 0x0a) return ws === WS_NONE ? WS_NEWLINE : -1;
  if (b === 0x20 && ws === WS_NONE) return WS_SPACE;
  if ((b === 0x20 || b === 0x09) && ws >= WS_NEWLINE && ws - WS_NEWLINE < MAX_INDENT) return ws + 1;
  return -1;
}

function open(frames: Frame | null, node: Extract<ValueNode, { kind: 'object' | 'array' }>): JsonState | null {
  if (frames && frames.depth >= MAX_DEPTH) return null;
  return new JsonState(node.kind === 'object' ? OBJ_OPEN : ARR_OPEN, WS_NONE, new Frame(frames, node, 0));
}

/**
 * After a complete value in the innermost container. An array counts its items only as far as
 * its bounds need (to maxItems, or with none to minItems): an unbounded array's states, and so
 * their masks, are the same at every item.
 */
function afterValue(frames: Frame): JsonState {
  const node = frames.node;
  if (node.kind !== 'array') return new JsonState(AFTER, WS_NONE, frames);
  const cap = Number.isFinite(node.maxItems) ? node.maxItems : node.minItems;
  const count = Math.min(frames.index + 1, cap);
  return new JsonState(AFTER, WS_NONE, count === frames.index ? frames : new Frame(frames.parent, node, count));
}

function close(frames: Frame): JsonState {
  return frames.parent ? afterValue(frames.parent) : JSON_DONE;
}

/** Whether the innermost object still needs a property. */
function requiredLeft(f: Frame): boolean {
  const props = f.node.kind === 'object' ? f.node.props : null;
  if (!props) return false;
  for (let i = f.index; i < props.length; i++) if (props[i]!.required) return true;
  return false;
}

/** Each object node's keys as literal texts, made once (a key starts at every '"' a mask walk tries). */
const keyTexts = new WeakMap<PropNode[], Uint8Array[]>();

/** A key starts ('"' read): a free one, or the object's next properties up to its next required one. */
function keyStart(frames: Frame): JsonState | null {
  const node = frames.node as Extract<ValueNode, { kind: 'object' }>;
  if (!node.props) return new JsonState(STR, 1, frames, ANY_STRING);
  const alive: number[] = [];
  for (let i = frames.index; i < node.props.length; i++) {
    alive.push(i);
    if (node.props[i]!.required) break;
  }
  if (alive.length === 0) return null;
  let texts = keyTexts.get(node.props);
  if (!texts) keyTexts.set(node.props, (texts = node.props.map((p) => p.key)));
  return new JsonState(LITERAL, 0, frames, null, { texts, alive, pos: 1, forKey: true });
}

function literalStep(st: JsonState, b: number): JsonState | null {
  const { texts, alive, pos, forKey } = st.lit!;
  const next = alive.filter((i) => texts[i]!.length > pos && texts[i]![pos] === b);
  if (next.length > 0) {
    const lit = { texts, alive: next, pos: pos + 1, forKey };
    // Complete when no candidate is longer (JSON texts that are numbers can prefix each other: 1, 12).
    if (next.every((i) => texts[i]!.length === pos + 1)) return literalDone(st, next[0]!);
    return new JsonState(LITERAL, 0, st.frames, st.node, lit);
  }
  const complete = alive.find((i) => texts[i]!.length === pos);
  return complete === undefined ? null : step(literalDone(st, complete), b);
}

function literalDone(st: JsonState, i: number): JsonState {
  const frames = st.frames!;
  if (!st.lit!.forKey) return afterValue(frames);
  const node = frames.node as Extract<ValueNode, { kind: 'object' }>;
  return new JsonState(COLON, WS_NONE, new Frame(frames.parent, node, i + 1), node.props![i]!.value);
}

function valueStart(frames: Frame | null, node: ValueNode, b: number): JsonState | null {
  switch (node.kind) {
    case 'any':
      if (b === 0x7b) return open(frames, ANY_OBJECT as Extract<ValueNode, { kind: 'object' }>);
      if (b === 0x5b) return open(frames, ANY_ARRAY as Extract<ValueNode, { kind: 'array' }>);
      if (b === 0x22) return valueStart(frames, ANY_STRING, b);
      if (b === 0x2d || isDigit(b)) return valueStart(frames, ANY_NUMBER, b);
      return valueStart(frames, TRUE_FALSE_NULL, b);
    case 'object':
      return b === 0x7b ? open(frames, node) : null;
    case 'array':
      return b === 0x5b ? open(frames, node) : null;
    case 'string':
      return b === 0x22 && frames ? new JsonState(STR, 0, frames, node) : null;
    case 'number': {
      if (!frames) return null;
      if (node.min !== undefined || node.max !== undefined) return b === 0x2d || isDigit(b) ? boundedInteger(frames, node, String.fromCharCode(b)) : null;
      const integer = node.integer ? 1 : 0;
      if (b === 0x2d) return new JsonState(NUM_MINUS, integer, frames);
      if (b === 0x30) return new JsonState(NUM_ZERO, integer, frames);
      return b >= 0x31 && b <= 0x39 ? new JsonState(NUM_INT, integer + 2, frames) : null;
    }
    case 'literals': {
      if (!frames) return null;
      const start = new JsonState(LITERAL, 0, frames, node, { texts: node.texts, alive: node.texts.map((_, i) => i), pos: 0, forKey: false });
      return literalStep(start, b);
    }
    case 'union':
      for (const option of node.options) {
        const st = valueStart(frames, option, b);
        if (st) return st;
      }
      return null;
  }
}

const within = (node: { min?: bigint; max?: bigint }, v: bigint) => (node.min === undefined || v >= node.min) && (node.max === undefined || v <= node.max);

/** An integer with bounds after `digits` (a sign, digits), or null when no integer of at most MAX_DIGITS digits that starts so is within them. */
function boundedInteger(frames: Frame, node: Extract<ValueNode, { kind: 'number' }>, digits: string): JsonState | null {
  const negative = digits.startsWith('-');
  const d = negative ? digits.slice(1) : digits;
  // The integers it can still become, by their digit count: one interval of magnitudes each.
  for (let length = Math.max(d.length, 1); length <= MAX_DIGITS; length++) {
    if (d.startsWith('0') && length > 1) break;
    const spare = 10n ** BigInt(length - d.length);
    const low = d === '' ? (length === 1 ? 0n : 10n ** BigInt(length - 1)) : BigInt(d) * spare;
    const high = d === '' ? 10n ** BigInt(length) - 1n : low + spare - 1n;
    const [a, b] = negative ? [-high, -low] : [low, high];
    if ((node.max === undefined || a <= node.max) && (node.min === undefined || b >= node.min)) {
      return new JsonState(INT_BOUNDED, 0, frames, node, null, digits);
    }
  }
  return null;
}

/** The state after byte `b`, or null when no reply continues that way. */
export function step(st: JsonState, b: number): JsonState | null {
  const { mode, aux, frames } = st;
  switch (mode) {
    case STR: {
      const node = st.node as Extract<ValueNode, { kind: 'string' }>;
      const chars = aux >> 4;
      if (b === 0x22) {
        if (chars < node.minLength) return null;
        return aux & 1 ? new JsonState(COLON, WS_NONE, frames, (frames!.node as Extract<ValueNode, { kind: 'object' }>).values) : afterValue(frames!);
      }
      if (b < 0x20) return null; // control characters must be escaped
      if (b >= 0x80 && b < 0xc0) return st; // the rest of a UTF-8 character already counted
      // A character begins (an escape counts as one).
      if (chars >= node.maxLength) return null;
      const cap = Number.isFinite(node.maxLength) ? node.maxLength : node.minLength;
      const next = (aux & 15) | (Math.min(chars + 1, cap) << 4);
      if (b === 0x5c) return new JsonState(STR_ESC, next, frames, node);
      return next === aux ? st : new JsonState(STR, next, frames, node);
    }
    case STR_ESC:
      if (b === 0x75) return new JsonState(STR_HEX, aux | (4 << 1), frames, st.node);
      return b === 0x22 || b === 0x5c || b === 0x2f || b === 0x62 || b === 0x66 || b === 0x6e || b === 0x72 || b === 0x74
        ? new JsonState(STR, aux, frames, st.node)
        : null;
    case STR_HEX:
      if (!isHex(b)) return null;
      return new JsonState(((aux >> 1) & 7) > 1 ? STR_HEX : STR, aux - 2, frames, st.node);
    case LITERAL:
      return literalStep(st, b);
    case NUM_MINUS:
      if (b === 0x30) return new JsonState(NUM_ZERO, aux, frames);
      return b >= 0x31 && b <= 0x39 ? new JsonState(NUM_INT, aux + 2, frames) : null;
    case NUM_DOT:
      return isDigit(b) ? new JsonState(NUM_FRAC, 2, frames) : null;
    case NUM_E:
      if (b === 0x2b || b === 0x2d) return new JsonState(NUM_E_SIGN, 0, frames);
      return isDigit(b) ? new JsonState(NUM_EXP, 2, frames) : null;
    case NUM_E_SIGN:
      return isDigit(b) ? new JsonState(NUM_EXP, 2, frames) : null;
    case NUM_ZERO:
    case NUM_INT:
    case NUM_FRAC:
    case NUM_EXP: {
      if (isDigit(b) && mode !== NUM_ZERO && aux >> 1 < MAX_DIGITS) return new JsonState(mode, aux + 2, frames);
      const integer = aux & 1;
      if (!integer && b === 0x2e && (mode === NUM_ZERO || mode === NUM_INT)) return new JsonState(NUM_DOT, 0, frames);
      if (!integer && (b === 0x65 || b === 0x45) && mode !== NUM_EXP) return new JsonState(NUM_E, 0, frames);
      // A complete number ends at the first byte that cannot continue it, which then counts after it.
      return step(afterValue(frames!), b);
    }
    case INT_BOUNDED: {
      const node = st.node as Extract<ValueNode, { kind: 'number' }>;
      const magnitude = st.digits.replace('-', '');
      if (isDigit(b)) return magnitude === '0' || magnitude.length >= MAX_DIGITS ? null : boundedInteger(frames!, node, st.digits + String.fromCharCode(b));
      // The integer ends here: it must be whole and in bounds.
      if (magnitude === '' || !within(node, BigInt(st.digits))) return null;
      return step(afterValue(frames!), b);
    }
    case DONE:
      return null;
  }
  // Structural modes.
  if (b === 0x20 || b === 0x0a || b === 0x09 || b === 0x0d) {
    const ws = whitespace(aux, b);
    return ws < 0 ? null : new JsonState(mode, ws, frames, st.node);
  }
  switch (mode) {
    case START:
    case VALUE:
      return valueStart(frames, st.node!, b);
    case COLON:
      return b === 0x3a ? new JsonState(VALUE, WS_NONE, frames, st.node) : null;
    case OBJ_OPEN:
      if (b === 0x7d) return requiredLeft(frames!) ? null : close(frames!);
      return b === 0x22 ? keyStart(frames!) : null;
    case KEY_NEXT:
      return b === 0x22 ? keyStart(frames!) : null;
    case ARR_OPEN: {
      const node = frames!.node as Extract<ValueNode, { kind: 'array' }>;
      if (b === 0x5d) return node.minItems === 0 ? close(frames!) : null;
      return node.maxItems > 0 ? valueStart(frames, node.items, b) : null;
    }
    case AFTER: {
      const f = frames!;
      if (f.node.kind === 'object') {
        if (b === 0x2c) return !f.node.props || f.index < f.node.props.length ? new JsonState(KEY_NEXT, WS_NONE, f) : null;
        return b === 0x7d && !requiredLeft(f) ? close(f) : null;
      }
      if (b === 0x2c) return f.index < f.node.maxItems ? new JsonState(VALUE, WS_NONE, f, f.node.items) : null;
      return b === 0x5d && f.index >= f.node.minItems ? close(f) : null;
    }
  }
  return null;
}

/** The state after `bytes`, or null. */
export function stepBytes(st: JsonState, bytes: Uint8Array): JsonState | null {
  let s: JsonState | null = st;
  for (let i = 0; i < bytes.length && s; i++) s = step(s, bytes[i]!);
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
    // states[k]: the state after the current token's first k bytes, set up to where the last walk
    // stopped, which a token sharing `common` bytes with the one before never passes.
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
        const next = step(s, bytes[begin + k]!);
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
  private state: JsonState;
  private readonly vocab: JsonVocabulary;
  private readonly endTokens: readonly number[];
  private readonly pieces: (id: number) => Uint8Array;

  /** `start`: JSON_START for JSON mode, startState(compileSchema(schema)) for a schema. */
  constructor(vocab: JsonVocabulary, pieces: (id: number) => Uint8Array, endTokens: readonly number[], start: JsonState = JSON_START) {
    if (endTokens.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', 'JSON mode needs end-of-generation tokens to end the reply (it cannot be combined with ignoreEos)');
    this.vocab = vocab;
    this.pieces = pieces;
    this.endTokens = endTokens;
    this.state = start;
  }

  /** True once the reply's value closed. */
  get complete(): boolean {
    return this.state.done;
  }

  allowed(): Uint8Array {
    return this.vocab.mask(this.state, this.endTokens);
  }

  accept(token: number): void {
    if (this.state.done && this.endTokens.includes(token)) return;
    const bytes = this.pieces(token);
    const next = bytes.length > 0 ? stepBytes(this.state, bytes) : null;
    if (!next) throw new TandemError('TDM_INTERNAL', `JSON mode: token ${token} does not continue the reply's JSON`);
    this.state = next;
  }
}
