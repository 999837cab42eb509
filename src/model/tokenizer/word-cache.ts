// A bounded memo of word -> token ids. Tokenizing a word never depends on its neighbours, so a
// cached result is exactly what merging again would give; natural text repeats words a lot.
// Words are looked up in place (text, start, end, hash), so a hit allocates nothing.
import { hashRange, slotOf } from './token-index.js';

/** Words longer than this (UTF-16 units) are not kept. */
const MAX_WORD_LENGTH = 128;
/** Table slots; the memo starts over when half are used. */
const CAPACITY = 1 << 17;

export class WordCache {
  private hashes = new Int32Array(CAPACITY);
  private words: (string | undefined)[] = new Array(CAPACITY);
  private ids: (readonly number[] | undefined)[] = new Array(CAPACITY);
  private size = 0;

  /** Hash to pass to get/set for text[start, end). */
  static hash(text: string, start: number, end: number): number {
    return hashRange(text, start, end);
  }

  /** The ids of text[start, end), if remembered. */
  get(text: string, start: number, end: number, h: number): readonly number[] | undefined {
    const len = end - start;
    if (len > MAX_WORD_LENGTH) return undefined;
    const mask = CAPACITY - 1;
    for (let i = slotOf(h, mask); ; i = (i + 1) & mask) {
      const w = this.words[i];
      if (w === undefined) return undefined;
      if (this.hashes[i] === h && w.length === len && text.startsWith(w, start)) return this.ids[i];
    }
  }

  /** Remembers out[from..] as the ids of `word` (whose hash is h). */
  set(word: string, h: number, out: readonly number[], from: number): void {
    if (word.length > MAX_WORD_LENGTH) return;
    if (this.size * 2 >= CAPACITY) {
      this.words = new Array(CAPACITY);
      this.ids = new Array(CAPACITY);
      this.size = 0;
    }
    const mask = CAPACITY - 1;
    let i = slotOf(h, mask);
    while (this.words[i] !== undefined) i = (i + 1) & mask;
    this.hashes[i] = h;
    this.words[i] = word;
    this.ids[i] = out.slice(from);
    this.size++;
  }
}
