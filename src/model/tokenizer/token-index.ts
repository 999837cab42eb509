// Token text -> id without building substrings: a polynomial hash over UTF-16 units, so the hash
// of a concatenation comes from the hashes of its parts, and an open-addressing table that checks
// candidates against the text in place. Merging loops look pairs up in O(1) with no allocation.

/** Multiplier of the polynomial hash. */
export const HASH_BASE = 0x01000193;
const BASE = HASH_BASE;

/** hash(s) = sum of s[i] * BASE^(n-1-i), mod 2^32. */
export function hashRange(s: string, start: number, end: number): number {
  let h = 0;
  for (let i = start; i < end; i++) h = (Math.imul(h, BASE) + s.charCodeAt(i)) | 0;
  return h;
}

/** A well-mixed table slot for hash h. */
export function slotOf(h: number, mask: number): number {
  let x = Math.imul(h ^ (h >>> 16), 0x45d9f3b);
  x ^= x >>> 16;
  return x & mask;
}

export class TokenIndex {
  readonly tokens: readonly string[];
  /** Longest token text in UTF-16 units. */
  readonly maxLength: number;
  /** hash of each token's text, by id. */
  readonly tokenHashes: Int32Array;
  private readonly mask: number;
  private readonly hashes: Int32Array;
  /** Token id per slot, -1 for an empty slot. */
  private readonly ids: Int32Array;
  /** powers[k] = BASE^k mod 2^32, for k <= maxLength. */
  private readonly powers: Int32Array;

  constructor(tokens: readonly string[]) {
    this.tokens = tokens;
    let cap = 1024;
    while (cap < tokens.length * 2) cap *= 2;
    this.mask = cap - 1;
    this.hashes = new Int32Array(cap);
    this.ids = new Int32Array(cap).fill(-1);
    this.tokenHashes = new Int32Array(tokens.length);
    let maxLength = 0;
    for (let id = 0; id < tokens.length; id++) {
      const t = tokens[id]!;
      if (t.length > maxLength) maxLength = t.length;
      const h = hashRange(t, 0, t.length);
      this.tokenHashes[id] = h;
      for (let i = slotOf(h, this.mask); ; i = (i + 1) & this.mask) {
        const other = this.ids[i]!;
        if (other === -1) {
          this.hashes[i] = h;
          this.ids[i] = id;
          break;
        }
        // a later duplicate text takes the slot, as token_to_id does in llama.cpp
        if (this.hashes[i] === h && tokens[other] === t) {
          this.ids[i] = id;
          break;
        }
      }
    }
    this.maxLength = maxLength;
    this.powers = new Int32Array(maxLength + 1);
    this.powers[0] = 1;
    for (let k = 1; k <= maxLength; k++) this.powers[k] = Math.imul(this.powers[k - 1]!, BASE);
  }

  /** Hash of a + b from hash(a), hash(b) and b's length (which must be <= maxLength). */
  combine(hashA: number, hashB: number, lengthB: number): number {
    return (Math.imul(hashA, this.powers[lengthB]!) + hashB) | 0;
  }

  /** Id of the token equal to s[start, end) whose hash is h, or -1. */
  find(s: string, start: number, end: number, h: number): number {
    const len = end - start;
    if (len > this.maxLength) return -1;
    const tokens = this.tokens;
    for (let i = slotOf(h, this.mask); ; i = (i + 1) & this.mask) {
      const id = this.ids[i]!;
      if (id === -1) return -1;
      if (this.hashes[i] === h) {
        const t = tokens[id]!;
        if (t.length === len && s.startsWith(t, start)) return id;
      }
    }
  }

  /** Id of the token whose text is `text`, or -1. */
  get(text: string): number {
    return this.find(text, 0, text.length, hashRange(text, 0, text.length));
  }
}
