// Byte-level BPE (tokenizer.ggml.model = "gpt2") as llama.cpp's llm_tokenizer_bpe runs it on each
// pre-tokenized word: map the word's UTF-8 bytes to GPT-2's byte alphabet, start from single
// bytes, repeatedly apply the lowest-ranked merge (ties: leftmost), then emit each piece's token.
import { PairHeap, PRIORITY_UNIT } from './pair-heap.js';
import { HASH_BASE, hashRange, slotOf, type TokenIndex } from './token-index.js';
import { byteToChar } from './unicode.js';
import type { Vocab } from './vocab.js';
import { WordCache } from './word-cache.js';

/** Pair-memo entries kept before it starts over. */
const MAX_MEMO = 1 << 20;
const NO_RANK = -1;
/** results[rank] before the merge has first been applied. */
const UNRESOLVED = -2;

/**
 * The merge list indexed by the hash of each "left right" line: loading costs one pass over the
 * merge strings, with no token lookups. A first occurrence keeps its rank, as in llama.cpp.
 */
class MergeIndex {
  readonly merges: readonly string[];
  /** Longest merge line in UTF-16 units: pairs that would be longer have no rank. */
  readonly maxLength: number;
  private readonly mask: number;
  private readonly hashes: Int32Array;
  private readonly ranks: Int32Array;
  /** powers[k] = HASH_BASE^k mod 2^32, k <= maxLength. */
  private readonly powers: Int32Array;

  constructor(merges: readonly string[]) {
    this.merges = merges;
    let cap = 1024;
    while (cap < merges.length * 2) cap *= 2;
    this.mask = cap - 1;
    this.hashes = new Int32Array(cap);
    this.ranks = new Int32Array(cap).fill(NO_RANK);
    let maxLength = 0;
    for (let rank = 0; rank < merges.length; rank++) {
      const m = merges[rank]!;
      if (m.length > maxLength) maxLength = m.length;
      const h = hashRange(m, 0, m.length);
      for (let i = slotOf(h, this.mask); ; i = (i + 1) & this.mask) {
        const other = this.ranks[i]!;
        if (other === NO_RANK) {
          this.hashes[i] = h;
          this.ranks[i] = rank;
          break;
        }
        if (this.hashes[i] === h && merges[other] === m) break;
      }
    }
    this.maxLength = maxLength;
    this.powers = new Int32Array(maxLength + 1);
    this.powers[0] = 1;
    for (let k = 1; k <= maxLength; k++) this.powers[k] = Math.imul(this.powers[k - 1]!, HASH_BASE);
  }

  /** Rank of merging pieces with these texts and hashes, or NO_RANK. */
  rank(left: string, leftHash: number, right: string, rightHash: number): number {
    const lenL = left.length;
    const lenR = right.length;
    const total = lenL + 1 + lenR;
    if (total > this.maxLength) return NO_RANK;
    // hash(left + " " + right)
    const h = (Math.imul(leftHash, this.powers[lenR + 1]!) + Math.imul(0x20, this.powers[lenR]!) + rightHash) | 0;
    const merges = this.merges;
    for (let i = slotOf(h, this.mask); ; i = (i + 1) & this.mask) {
      const rank = this.ranks[i]!;
      if (rank === NO_RANK) return NO_RANK;
      if (this.hashes[i] !== h) continue;
      const m = merges[rank]!;
      // llama.cpp splits each line at its first space after the first character
      if (m.length === total && m.indexOf(' ', 1) === lenL && m.startsWith(left) && m.endsWith(right)) return rank;
    }
  }
}

/**
 * Ranks by (left piece, right piece), filled as pairs are first met. A piece is a token id, or
 * an id past the vocabulary for a string that merges produce but the vocabulary lacks.
 */
class PairMemo {
  private mask = 0;
  private lefts = new Int32Array(0);
  private rights = new Int32Array(0);
  private ranks = new Int32Array(0);
  private size = 0;

  constructor() {
    this.reset(1 << 14);
  }

  private reset(cap: number): void {
    this.mask = cap - 1;
    this.lefts = new Int32Array(cap).fill(-1);
    this.rights = new Int32Array(cap);
    this.ranks = new Int32Array(cap);
    this.size = 0;
  }

  private slot(left: number, right: number): number {
    let h = Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x7f4a7c15, 0x85ebca77);
    h ^= h >>> 15;
    return h & this.mask;
  }

  /** The memoised rank, NO_RANK, or UNRESOLVED when the pair has not been seen. */
  get(left: number, right: number): number {
    for (let i = this.slot(left, right); ; i = (i + 1) & this.mask) {
      const l = this.lefts[i]!;
      if (l === -1) return UNRESOLVED;
      if (l === left && this.rights[i] === right) return this.ranks[i]!;
    }
  }

  set(left: number, right: number, rank: number): void {
    if (this.size * 2 >= this.lefts.length) {
      if (this.lefts.length >= MAX_MEMO) {
        this.reset(this.lefts.length);
      } else {
        const { lefts, rights, ranks } = this;
        this.reset(lefts.length * 2);
        for (let i = 0; i < lefts.length; i++) if (lefts[i] !== -1) this.set(lefts[i]!, rights[i]!, ranks[i]!);
      }
    }
    let i = this.slot(left, right);
    while (this.lefts[i] !== -1) i = (i + 1) & this.mask;
    this.lefts[i] = left;
    this.rights[i] = right;
    this.ranks[i] = rank;
    this.size++;
  }
}

export class BpeModel {
  private readonly index: TokenIndex;
  private readonly tokens: readonly string[];
  private readonly numTokens: number;
  private readonly ignoreMerges: boolean;
  private readonly merges: MergeIndex;
  private readonly memo = new PairMemo();
  /** Pieces that are not tokens, numbered from numTokens: text -> id, and their texts and hashes. */
  private readonly extraIds = new Map<string, number>();
  private readonly extraTexts: string[] = [];
  private readonly extraHashes: number[] = [];
  /** Piece made by each merge, by rank; resolved when the merge is first applied. */
  private readonly results: Int32Array;
  /** Piece of each char of the byte alphabet, indexed by char code (< 0x144). */
  private readonly charPieces: Int32Array;
  private readonly byteChars: string[];
  private readonly cache = new WordCache();

  // scratch for one word
  private piece = new Int32Array(64);
  private start = new Int32Array(64);
  private len = new Int32Array(64);
  private prev = new Int32Array(64);
  private next = new Int32Array(64);
  private readonly heap = new PairHeap();

  constructor(vocab: Vocab) {
    this.index = vocab.index();
    this.tokens = vocab.tokens;
    this.numTokens = vocab.numTokens;
    this.ignoreMerges = vocab.ignoreMerges;
    this.merges = new MergeIndex(vocab.merges);
    this.results = new Int32Array(vocab.merges.length).fill(UNRESOLVED);
    this.byteChars = byteToChar();
    this.charPieces = new Int32Array(0x144);
    for (let c = 0; c < 0x144; c++) this.charPieces[c] = this.intern(String.fromCharCode(c));
  }

  /** The piece id of a text: its token id, or an id past the vocabulary. */
  private intern(text: string): number {
    const id = this.index.get(text);
    if (id >= 0) return id;
    let extra = this.extraIds.get(text);
    if (extra === undefined) {
      extra = this.numTokens + this.extraTexts.length;
      this.extraIds.set(text, extra);
      this.extraTexts.push(text);
      this.extraHashes.push(hashRange(text, 0, text.length));
    }
    return extra;
  }

  /** Rank of the merge (left, right) of two pieces, or NO_RANK. */
  private rankOf(left: number, right: number): number {
    let rank = this.memo.get(left, right);
    if (rank === UNRESOLVED) {
      const n = this.numTokens;
      const hashes = this.index.tokenHashes;
      rank = this.merges.rank(
        left < n ? this.tokens[left]! : this.extraTexts[left - n]!,
        left < n ? hashes[left]! : this.extraHashes[left - n]!,
        right < n ? this.tokens[right]! : this.extraTexts[right - n]!,
        right < n ? hashes[right]! : this.extraHashes[right - n]!,
      );
      this.memo.set(left, right, rank);
    }
    return rank;
  }

  /** The piece a merge produces (its two operands joined). */
  private resultOf(rank: number): number {
    let piece = this.results[rank]!;
    if (piece === UNRESOLVED) {
      const m = this.merges.merges[rank]!;
      const at = m.indexOf(' ', 1);
      piece = this.intern(m.slice(0, at) + m.slice(at + 1));
      this.results[rank] = piece;
    }
    return piece;
  }

  /** Appends the tokens of one pre-tokenized word, text[start, end) (raw, not yet byte-mapped). */
  encodeWord(text: string, start: number, end: number, out: number[]): void {
    const h = WordCache.hash(text, start, end);
    const cached = this.cache.get(text, start, end, h);
    if (cached) {
      for (let i = 0; i < cached.length; i++) out.push(cached[i]!);
      return;
    }
    const first = out.length;
    const word = text.slice(start, end);
    const mapped = this.byteMap(word);
    const whole = this.ignoreMerges ? this.index.get(mapped) : -1;
    if (whole >= 0) out.push(whole);
    else this.merge(mapped, out);
    this.cache.set(word, h, out, first);
  }

  /** The word's UTF-8 bytes written in GPT-2's byte alphabet. */
  private byteMap(word: string): string {
    const chars = this.byteChars;
    let s = '';
    for (let i = 0; i < word.length; i++) {
      let c = word.charCodeAt(i);
      if (c < 0x80) {
        s += chars[c];
      } else if (c < 0x800) {
        s += chars[0xc0 | (c >> 6)]! + chars[0x80 | (c & 63)]!;
      } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < word.length && (word.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        c = 0x10000 + ((c - 0xd800) << 10) + (word.charCodeAt(++i) - 0xdc00);
        s += chars[0xf0 | (c >> 18)]! + chars[0x80 | ((c >> 12) & 63)]! + chars[0x80 | ((c >> 6) & 63)]! + chars[0x80 | (c & 63)]!;
      } else {
        s += chars[0xe0 | (c >> 12)]! + chars[0x80 | ((c >> 6) & 63)]! + chars[0x80 | (c & 63)]!;
      }
    }
    return s;
  }

  private ensure(n: number): void {
    if (n <= this.piece.length) return;
    const size = Math.max(n, this.piece.length * 2);
    this.piece = new Int32Array(size);
    this.start = new Int32Array(size);
    this.len = new Int32Array(size);
    this.prev = new Int32Array(size);
    this.next = new Int32Array(size);
  }

  /** Merges a byte-mapped word (one symbol per char) and appends its tokens. */
  private merge(w: string, out: number[]): void {
    const n = w.length;
    if (n === 0) return;
    this.ensure(n);
    const { piece, start, len, prev, next, charPieces } = this;
    for (let i = 0; i < n; i++) {
      piece[i] = charPieces[w.charCodeAt(i)]!;
      start[i] = i;
      len[i] = 1;
      prev[i] = i - 1;
      next[i] = i + 1;
    }
    next[n - 1] = -1;

    const heap = this.heap;
    heap.clear();
    const push = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const rank = this.rankOf(piece[left]!, piece[right]!);
      if (rank >= 0) heap.push(rank * PRIORITY_UNIT + left, len[left]! + len[right]!);
    };

    for (let i = 1; i < n; i++) push(i - 1, i);

    while (heap.length > 0) {
      heap.pop();
      const left = heap.topKey % PRIORITY_UNIT;
      const size = heap.topSize;
      const right = next[left]!;
      // stale if either side has been merged away or has grown since this pair was queued
      if (len[left] === 0 || right < 0 || len[left]! + len[right]! !== size) continue;
      piece[left] = this.resultOf((heap.topKey - left) / PRIORITY_UNIT);
      len[left] = size;
      len[right] = 0;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      push(prev[left]!, left);
      push(left, after);
    }

    const numTokens = this.numTokens;
    for (let i = 0; i !== -1; i = next[i]!) {
      const p = piece[i]!;
      if (p < numTokens) {
        out.push(p);
        continue;
      }
      // Not a token: llama.cpp looks up each UTF-8 byte of the piece as a one-byte token text,
      // which only ASCII chars of the byte alphabet can be; the rest are dropped.
      const text = w.substr(start[i]!, len[i]!);
      for (let k = 0; k < text.length; k++) {
        if (text.charCodeAt(k) >= 0x80) continue;
        const id = this.index.get(text[k]!);
        if (id >= 0) out.push(id);
      }
    }
  }
}
