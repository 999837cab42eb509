// SentencePiece (tokenizer.ggml.model = "llama") as llama.cpp's llm_tokenizer_spm runs it: start
// from single code points, repeatedly merge the adjacent pair whose concatenation is the
// highest-scoring token (ties: leftmost), then emit each piece as its token or as <0xXX> bytes.
import { TandemError } from '../../native/errors.js';
import { PairHeap, PRIORITY_UNIT } from './pair-heap.js';
import { hashRange, type TokenIndex } from './token-index.js';
import { utf8Encode } from './unicode.js';
import type { Vocab } from './vocab.js';
import { WordCache } from './word-cache.js';

/** U+2581, SentencePiece's visible space. */
export const SPM_SPACE = '\u2581';

/** Scratch arrays for one merge run, grown on demand and reused. */
class Scratch {
  start = new Int32Array(64);
  len = new Int32Array(64);
  hash = new Int32Array(64);
  prev = new Int32Array(64);
  next = new Int32Array(64);
  heap = new PairHeap();

  ensureSymbols(n: number): void {
    if (n <= this.start.length) return;
    const size = Math.max(n, this.start.length * 2);
    this.start = new Int32Array(size);
    this.len = new Int32Array(size);
    this.hash = new Int32Array(size);
    this.prev = new Int32Array(size);
    this.next = new Int32Array(size);
  }
}

export class SpmModel {
  private readonly vocab: Vocab;
  private readonly index: TokenIndex;
  /** Per token: its score's place among all scores, highest first (equal scores share a place). */
  private readonly scoreRank: Int32Array;
  /** Token id for each byte value (<0xXX>, or the one-char token for ASCII), -1 if none. */
  private readonly byteTokens: Int32Array;
  /** Code units that precede U+2581 inside some token: no word boundary may follow them. */
  private readonly beforeMark: Uint8Array;
  private readonly cache = new WordCache();
  private readonly s = new Scratch();

  constructor(vocab: Vocab) {
    this.vocab = vocab;
    this.index = vocab.index();
    this.scoreRank = rankScores(vocab.scores);
    const beforeMark = new Uint8Array(65536);
    for (const t of vocab.tokens) {
      for (let i = t.indexOf(SPM_SPACE, 1); i > 0; i = t.indexOf(SPM_SPACE, i + 1)) beforeMark[t.charCodeAt(i - 1)] = 1;
    }
    this.beforeMark = beforeMark;
    const byteTokens = new Int32Array(256).fill(-1);
    for (let b = 0; b < 256; b++) {
      const hex = b.toString(16).toUpperCase().padStart(2, '0');
      const id = this.index.get(`<0x${hex}>`);
      byteTokens[b] = id >= 0 || b >= 0x80 ? id : this.index.get(String.fromCharCode(b));
    }
    this.byteTokens = byteTokens;
  }

  /**
   * Tokenizes text whose spaces are already U+2581. The text is cut before a U+2581 wherever
   * no token spans that boundary, so each word merges alone (and is cached) with the same result.
   */
  encode(text: string, out: number[]): void {
    const beforeMark = this.beforeMark;
    let wordStart = 0;
    for (let i = text.indexOf(SPM_SPACE, 1); i > 0; i = text.indexOf(SPM_SPACE, i + 1)) {
      if (beforeMark[text.charCodeAt(i - 1)] === 0) {
        this.encodeWord(text, wordStart, i, out);
        wordStart = i;
      }
    }
    this.encodeWord(text, wordStart, text.length, out);
  }

  private encodeWord(text: string, start: number, end: number, out: number[]): void {
    const h = WordCache.hash(text, start, end);
    const cached = this.cache.get(text, start, end, h);
    if (cached) {
      for (let i = 0; i < cached.length; i++) out.push(cached[i]!);
      return;
    }
    const first = out.length;
    const word = start === 0 && end === text.length ? text : text.slice(start, end);
    this.merge(word, out);
    this.cache.set(word, h, out, first);
  }

  private merge(word: string, out: number[]): void {
    const s = this.s;
    s.ensureSymbols(word.length);
    const { start, len, hash, prev, next } = s;
    let n = 0;
    for (let i = 0; i < word.length; n++) {
      const c = word.charCodeAt(i);
      const units = c >= 0xd800 && c <= 0xdbff && i + 1 < word.length &&
        (word.charCodeAt(i + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
      start[n] = i;
      len[n] = units;
      hash[n] = hashRange(word, i, i + units);
      prev[n] = n - 1;
      next[n] = n + 1;
      i += units;
    }
    if (n === 0) return;
    next[n - 1] = -1;

    const index = this.index;
    const scoreRank = this.scoreRank;
    const maxLen = index.maxLength;
    const heap = s.heap;
    heap.clear();
    const push = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const size = len[left]! + len[right]!;
      if (size > maxLen) return;
      const from = start[left]!;
      const id = index.find(word, from, from + size, index.combine(hash[left]!, hash[right]!, len[right]!));
      if (id >= 0) heap.push(scoreRank[id]! * PRIORITY_UNIT + left, size);
    };

    for (let i = 1; i < n; i++) push(i - 1, i);

    while (heap.length > 0) {
      heap.pop();
      const left = heap.topKey % PRIORITY_UNIT;
      const size = heap.topSize;
      const right = next[left]!;
      // stale if either side has been merged away or has grown since this pair was queued
      if (len[left] === 0 || right < 0 || len[left]! + len[right]! !== size) continue;
      hash[left] = index.combine(hash[left]!, hash[right]!, len[right]!);
      len[left] = size;
      len[right] = 0;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      push(prev[left]!, left);
      push(left, after);
    }

    for (let i = 0; i !== -1; i = next[i]!) {
      const id = index.find(word, start[i]!, start[i]! + len[i]!, hash[i]!);
      if (id >= 0) out.push(id);
      else this.pushBytes(word.substr(start[i]!, len[i]!), out);
    }
  }

  /** Byte fallback: one <0xXX> token per UTF-8 byte of the piece. */
  private pushBytes(piece: string, out: number[]): void {
    for (const b of utf8Encode(piece)) {
      const id = this.byteTokens[b]!;
      if (id < 0) {
        throw new TandemError('TDM_BAD_GGUF',
          `${this.vocab.path}: the vocabulary has no byte token <0x${b.toString(16).toUpperCase().padStart(2, '0')}> for byte fallback`);
      }
      out.push(id);
    }
  }
}

/**
 * Places of scores in descending order (0 = highest), so that merge priority is an integer.
 * NaN scores come last.
 */
function rankScores(scores: Float32Array): Int32Array {
  const sorted = Float32Array.from(scores).sort().reverse();
  const distinct: number[] = [];
  for (const v of sorted) {
    if (Number.isNaN(v)) continue;
    if (distinct.length === 0 || distinct[distinct.length - 1] !== v) distinct.push(v);
  }
  const ranks = new Int32Array(scores.length);
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i]!;
    if (Number.isNaN(v)) {
      ranks[i] = distinct.length;
      continue;
    }
    let lo = 0, hi = distinct.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (distinct[mid]! > v) lo = mid + 1;
      else hi = mid;
    }
    ranks[i] = lo;
  }
  return ranks;
}
