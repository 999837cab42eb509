// BPE pre-tokenizers: split text into words before merging, exactly as llama.cpp does for each
// tokenizer.ggml.pre. llama.cpp runs hand-written scanners for the common regexes (gpt-2, llama3,
// qwen2) and std::regex over "collapsed" text for the rest (gpt-4o among them); both are reproduced
// here over a code point array, with the Unicode classes of llama.cpp's tables (unicode.ts), not
// JS RegExp's.
import {
  CAT_LETTER, CAT_MASK, CAT_NUMBER, CAT_PUNCTUATION, WHITESPACE, codePointClasses,
} from './unicode.js';

/**
 * The word-splitting rules, each named after the regex it implements:
 * - gpt2:      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * - llama3:    (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * - qwen2:     as llama3 with \p{N} (one digit per word)
 * - starcoder: \p{N} isolated, then gpt2
 * - default:   [\p{P}$+<=>^~|]+ isolated, then gpt2, then \p{N}+, then [0-9]{3}
 * - gpt4o:     [^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|
 *              [^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|...|'[dD])?|
 *              \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *              (llama.cpp's stand-in for o200k's \p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M} / \p{Ll}\p{Lm}\p{Lo}\p{M} classes)
 */
export type PreTokenizerKind = 'default' | 'gpt2' | 'gpt4o' | 'llama3' | 'qwen2' | 'starcoder';

export interface PreTokenizerSpec {
  kind: PreTokenizerKind;
  /** llama.cpp's clean_spaces for this name (detokenizer). */
  cleanSpaces: boolean;
  /** A word that is already a token is emitted whole. */
  ignoreMerges: boolean;
  /** Default for tokenizer.ggml.add_bos_token. */
  addBos: boolean;
}

const spec = (kind: PreTokenizerKind, cleanSpaces = true, ignoreMerges = false, addBos = false): PreTokenizerSpec =>
  ({ kind, cleanSpaces, ignoreMerges, addBos });

/** tokenizer.ggml.pre names with the settings llama.cpp gives them. Names not here are unsupported. */
const PRE_TOKENIZERS: Record<string, PreTokenizerSpec> = {
  '': spec('default'),
  default: spec('default'),
  llama3: spec('llama3', true, true, true),
  'llama-v3': spec('llama3', true, true, true),
  'llama-bpe': spec('llama3', true, true, true),
  falcon3: spec('llama3', true, true, true),
  'falcon-h1': spec('llama3', true, true, true),
  pixtral: spec('llama3', true, true, true),
  'midm-2.0': spec('llama3', true, true, true),
  lfm2: spec('llama3', true, true, true),
  'jina-v5-nano': spec('llama3', true, true, true),
  dbrx: spec('llama3'),
  'smaug-bpe': spec('llama3'),
  qwen2: spec('qwen2', false),
  'deepseek-r1-qwen': spec('qwen2', false),
  kormo: spec('qwen2', false),
  f2llmv2: spec('qwen2', false),
  megrez: spec('qwen2'),
  stablelm2: spec('qwen2'),
  hunyuan: spec('qwen2', false),
  'solar-open': spec('qwen2', false),
  'gpt-2': spec('gpt2'),
  'phi-2': spec('gpt2'),
  gigachat: spec('gpt2'),
  'a.x-4.0': spec('gpt2'),
  mellum: spec('gpt2'),
  mpt: spec('gpt2'),
  olmo: spec('gpt2'),
  jais: spec('gpt2'),
  exaone4: spec('gpt2'),
  trillion: spec('gpt2', false),
  'granite-docling': spec('gpt2', false),
  'gpt-4o': spec('gpt4o', false),
  llama4: spec('gpt4o', false),
  kanana2: spec('gpt4o', false),
  talkie: spec('gpt4o', false),
  'minimax-m2': spec('gpt4o', false),
  starcoder: spec('starcoder'),
  refact: spec('starcoder'),
  'command-r': spec('starcoder', false),
  smollm: spec('starcoder', false),
  codeshell: spec('starcoder'),
  exaone: spec('starcoder'),
  'minerva-7b': spec('starcoder'),
  mellum2: spec('starcoder'),
};

export function resolvePreTokenizer(name: string): PreTokenizerSpec | undefined {
  return Object.hasOwn(PRE_TOKENIZERS, name) ? PRE_TOKENIZERS[name] : undefined;
}

/** A fragment decoded to code points, with each code point's class and UTF-16 offset. */
interface CodePoints {
  cps: Int32Array;
  cls: Uint8Array;
  /** offsets[i] = UTF-16 index of code point i; offsets[n] = text length. */
  offsets: Int32Array;
  n: number;
}

function decode(text: string): CodePoints {
  const table = codePointClasses();
  const len = text.length;
  const cps = new Int32Array(len);
  const cls = new Uint8Array(len);
  const offsets = new Int32Array(len + 1);
  let n = 0;
  for (let i = 0; i < len; i++) {
    let c = text.charCodeAt(i);
    offsets[n] = i;
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < len) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    cps[n] = c;
    cls[n] = table[c]!;
    n++;
  }
  offsets[n] = len;
  return { cps, cls, offsets, n };
}

const CR = 0x0d, LF = 0x0a, SPACE = 0x20, APOSTROPHE = 0x27, SLASH = 0x2f;

const isLetter = (c: number): boolean => (c & CAT_MASK) === CAT_LETTER;
const isNumber = (c: number): boolean => (c & CAT_MASK) === CAT_NUMBER;
/** Neither \s, \p{L} nor \p{N}: the "punctuation" class of the BPE regexes. */
const isOther = (c: number): boolean => (c & WHITESPACE) === 0 && (c & CAT_MASK) !== CAT_LETTER && (c & CAT_MASK) !== CAT_NUMBER;
const lowerAscii = (c: number): number => (c >= 0x41 && c <= 0x5a ? c + 32 : c);

/**
 * Length of a contraction ('s 't 'm 'd 're 've 'll) starting at `pos`, or 0. Both llama.cpp
 * scanners only look inside [pos, end); the llama3/qwen2 ones ignore case.
 */
function contraction(cps: Int32Array, pos: number, end: number, ignoreCase: boolean): number {
  if (cps[pos] !== APOSTROPHE || pos + 1 >= end) return 0;
  const a = ignoreCase ? lowerAscii(cps[pos + 1]!) : cps[pos + 1]!;
  if (a === 0x73 || a === 0x74 || a === 0x6d || a === 0x64) return 2; // s t m d
  if (pos + 2 >= end) return 0;
  const b = ignoreCase ? lowerAscii(cps[pos + 2]!) : cps[pos + 2]!;
  if ((a === 0x72 && b === 0x65) || (a === 0x76 && b === 0x65) || (a === 0x6c && b === 0x6c)) return 3; // re ve ll
  return 0;
}

/** The gpt-2 regex over [start, end), pushing word lengths (in code points). */
function splitGpt2(p: CodePoints, start: number, end: number, out: number[]): void {
  const { cps, cls } = p;
  let pos = start;
  while (pos < end) {
    const from = pos;
    const c = cps[pos]!;
    const k = contraction(cps, pos, end, false);
    if (k > 0) {
      out.push(k);
      pos += k;
      continue;
    }
    // the class of the first character after an optional leading space; -1 past the end
    const f2 = c === SPACE ? (pos + 1 < end ? cls[pos + 1]! : -1) : cls[pos]!;
    if (f2 >= 0 && (isLetter(f2) || isNumber(f2) || isOther(f2))) {
      const same = isLetter(f2) ? isLetter : isNumber(f2) ? isNumber : isOther;
      if (c === SPACE) pos++;
      pos++;
      while (pos < end && same(cls[pos]!)) pos++;
      out.push(pos - from);
      continue;
    }
    let ws = 0;
    while (pos + ws < end && (cls[pos + ws]! & WHITESPACE) !== 0) ws++;
    if (ws > 1 && pos + ws < end) {
      // \s+(?!\S): leave the last space to the word that follows
      pos += ws - 1;
    } else if (ws > 0) {
      pos += ws;
    } else {
      pos++;
    }
    out.push(pos - from);
  }
}

/** The llama3 regex (maxDigits 3) or the qwen2 one (maxDigits 1) over [start, end). */
function splitLlama3(p: CodePoints, start: number, end: number, maxDigits: number, out: number[]): void {
  const { cps, cls } = p;
  let pos = start;
  while (pos < end) {
    const from = pos;
    const c = cps[pos]!;
    const f = cls[pos]!;
    const k = contraction(cps, pos, end, true);
    if (k > 0) {
      out.push(k);
      pos += k;
      continue;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c !== CR && c !== LF && !isNumber(f) && (isLetter(f) || (pos + 1 < end && isLetter(cls[pos + 1]!)))) {
      pos++;
      while (pos < end && isLetter(cls[pos]!)) pos++;
      out.push(pos - from);
      continue;
    }
    // \p{N}{1,maxDigits}
    if (isNumber(f)) {
      let groupStart = pos;
      while (pos < end && isNumber(cls[pos]!)) {
        pos++;
        if (pos - groupStart >= maxDigits) {
          out.push(pos - groupStart);
          groupStart = pos;
        }
      }
      if (pos > groupStart) out.push(pos - groupStart);
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'; past the end counts as "not \s, \p{L}, \p{N}" here
    const f2 = c === SPACE ? (pos + 1 < end ? cls[pos + 1]! : -1) : f;
    if (f2 < 0 || isOther(f2)) {
      if (c === SPACE) pos++;
      while (pos < end && isOther(cls[pos]!)) pos++;
      while (pos < end && (cps[pos] === CR || cps[pos] === LF)) pos++;
      out.push(pos - from);
      continue;
    }
    pos = whitespaceEnd(cls, cps, pos, end);
    out.push(pos - from);
  }
}

/**
 * End of the letter word that starts at `s` (a letter) in the gpt-4o regex. llama.cpp matches it
 * on collapsed text, where every non-ASCII letter is one byte that is neither a-z nor A-Z, so it
 * counts as both upper case and lower case; only ASCII letters have a case. The regex engine
 * backtracks in ECMAScript order: U*W+ with U* as long as possible, else U+W*.
 */
function gpt4oLetterWordEnd(cps: Int32Array, cls: Uint8Array, s: number, end: number): number {
  const isLower = (c: number): boolean => c >= 0x61 && c <= 0x7a;
  const isUpper = (c: number): boolean => c >= 0x41 && c <= 0x5a;
  let runEnd = s;
  while (runEnd < end && isLetter(cls[runEnd]!)) runEnd++;
  // the longest "upper" prefix: everything but a-z
  let upperEnd = s;
  while (upperEnd < runEnd && !isLower(cps[upperEnd]!)) upperEnd++;
  // U*W+: W+ starts at the last place within that prefix (or just after it) that is not A-Z
  let w = upperEnd < runEnd ? upperEnd : upperEnd - 1;
  while (w >= s && isUpper(cps[w]!)) w--;
  if (w < s) return runEnd; // U+W*: only A-Z up to the end of the letters
  while (w < runEnd && !isUpper(cps[w]!)) w++;
  return w;
}

/** The gpt-4o regex over [start, end), as llama.cpp's std::regex runs it on collapsed text. */
function splitGpt4o(p: CodePoints, start: number, end: number, out: number[]): void {
  const { cps, cls } = p;
  let pos = start;
  while (pos < end) {
    const from = pos;
    const c = cps[pos]!;
    const f = cls[pos]!;
    // [^\r\n\p{L}\p{N}]? before letters, then the letter word and an optional contraction
    let s = pos;
    if (!isLetter(f) && !isNumber(f) && c !== CR && c !== LF && pos + 1 < end && isLetter(cls[pos + 1]!)) s = pos + 1;
    if (isLetter(cls[s]!)) {
      pos = gpt4oLetterWordEnd(cps, cls, s, end);
      pos += contraction(cps, pos, end, true);
      out.push(pos - from);
      continue;
    }
    // \p{N}{1,3}
    if (isNumber(f)) {
      pos++;
      while (pos < end && pos - from < 3 && isNumber(cls[pos]!)) pos++;
      out.push(pos - from);
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n/]*'
    const o = c === SPACE && pos + 1 < end && isOther(cls[pos + 1]!) ? pos + 1 : pos;
    if (isOther(cls[o]!)) {
      pos = o + 1;
      while (pos < end && isOther(cls[pos]!)) pos++;
      while (pos < end && (cps[pos] === CR || cps[pos] === LF || cps[pos] === SLASH)) pos++;
      out.push(pos - from);
      continue;
    }
    pos = whitespaceEnd(cls, cps, pos, end);
    out.push(pos - from);
  }
}

/**
 * The end of the whitespace alternatives the llama3 and gpt-4o regexes share, from `pos`:
 * \s*[\r\n]+ up to the last newline, else \s+(?!\S), else \s+; one code point when none
 * matches (the caller's catch-all).
 */
function whitespaceEnd(cls: Uint8Array | number[], cps: ArrayLike<number>, pos: number, end: number): number {
  let ws = 0;
  let afterLastNewline = 0;
  while (pos + ws < end && (cls[pos + ws]! & WHITESPACE) !== 0) {
    const w = cps[pos + ws];
    if (w === CR || w === LF) afterLastNewline = pos + ws + 1;
    ws++;
  }
  if (afterLastNewline > 0) return afterLastNewline;
  if (ws > 1 && pos + ws < end) return pos + ws - 1;
  return pos + Math.max(ws, 1);
}

/** Refines each segment: runs of code points matching `match` become their own segments. */
function isolateRuns(segments: number[], match: (i: number) => boolean, singly: boolean): number[] {
  const out: number[] = [];
  let start = 0;
  for (const len of segments) {
    const end = start + len;
    let gap = start;
    let i = start;
    while (i < end) {
      if (!match(i)) {
        i++;
        continue;
      }
      if (i > gap) out.push(i - gap);
      const runStart = i;
      i++;
      if (!singly) while (i < end && match(i)) i++;
      out.push(i - runStart);
      gap = i;
    }
    if (end > gap) out.push(end - gap);
    start = end;
  }
  return out;
}

/** Refines each segment with a scanner that works within bounds. */
function refine(segments: number[], scan: (start: number, end: number, out: number[]) => void): number[] {
  const out: number[] = [];
  let start = 0;
  for (const len of segments) {
    scan(start, start + len, out);
    start += len;
  }
  return out;
}

/** ASCII characters of the default pre-tokenizer's first regex: llama.cpp's ASCII \p{P}, plus $ + < = > ^ ~ |. */
const DEFAULT_PUNCT = new Uint8Array(128);
for (const ch of '!"#%&\'()*,-./:;?@[\\]_{}$+<=>^~|') DEFAULT_PUNCT[ch.charCodeAt(0)] = 1;

/** [0-9]{3} matches, left to right, as isolated segments. */
function isolateDigitTriples(p: CodePoints, segments: number[]): number[] {
  const { cps } = p;
  const isDigit = (i: number): boolean => cps[i]! >= 0x30 && cps[i]! <= 0x39;
  const out: number[] = [];
  let start = 0;
  for (const len of segments) {
    const end = start + len;
    let gap = start;
    let i = start;
    while (i + 3 <= end) {
      if (isDigit(i) && isDigit(i + 1) && isDigit(i + 2)) {
        if (i > gap) out.push(i - gap);
        out.push(3);
        i += 3;
        gap = i;
      } else {
        i++;
      }
    }
    if (end > gap) out.push(end - gap);
    start = end;
  }
  return out;
}

/**
 * Splits `text` into pre-tokenizer words and calls `word(start, end)` with UTF-16 offsets
 * for each, in order.
 */
export function preTokenize(text: string, kind: PreTokenizerKind, word: (start: number, end: number) => void): void {
  if (text.length === 0) return;
  const p = decode(text);
  const { cps, cls } = p;
  let segments: number[] = [p.n];
  const gpt2 = (s: number, e: number, out: number[]): void => splitGpt2(p, s, e, out);
  // \p{N} and \p{P} as llama.cpp's collapsed-text regexes see them: ASCII by its own table,
  // other code points by category, and non-ASCII whitespace never.
  const number = (i: number): boolean => cps[i]! < 128
    ? cps[i]! >= 0x30 && cps[i]! <= 0x39
    : (cls[i]! & WHITESPACE) === 0 && isNumber(cls[i]!);
  const punct = (i: number): boolean => cps[i]! < 128
    ? DEFAULT_PUNCT[cps[i]!] === 1
    : (cls[i]! & WHITESPACE) === 0 && (cls[i]! & CAT_MASK) === CAT_PUNCTUATION;
  switch (kind) {
    case 'gpt2':
      segments = refine(segments, gpt2);
      break;
    case 'llama3':
      segments = refine(segments, (s, e, out) => splitLlama3(p, s, e, 3, out));
      break;
    case 'qwen2':
      segments = refine(segments, (s, e, out) => splitLlama3(p, s, e, 1, out));
      break;
    case 'gpt4o':
      segments = refine(segments, (s, e, out) => splitGpt4o(p, s, e, out));
      break;
    case 'starcoder':
      segments = isolateRuns(segments, number, true);
      segments = refine(segments, gpt2);
      break;
    case 'default':
      segments = isolateRuns(segments, punct, false);
      segments = refine(segments, gpt2);
      segments = isolateRuns(segments, number, false);
      segments = isolateDigitTriples(p, segments);
      break;
  }
  const { offsets } = p;
  let at = 0;
  for (const len of segments) {
    word(offsets[at]!, offsets[at + len]!);
    at += len;
  }
}
