// Prompt lookup: draft tokens for speculative decoding with no draft model. The guess is what
// followed the latest earlier occurrence of the sequence's last n tokens (n from NGRAM_MAX down
// to NGRAM_MIN), in its own prompt and reply, so a reply that quotes its prompt (code edits,
// extraction, summaries) or repeats itself is guessed for free. As vLLM's 'ngram' method and
// llama.cpp's lookup decoding; the guesses are verified by the model (SequencePlan.numDraft),
// so they change the speed, never the tokens.

/** The longest and shortest suffix looked up, in tokens. */
export const NGRAM_MAX = 4;
export const NGRAM_MIN = 2;

function key(tokens: readonly number[], end: number, n: number): string {
  let k = String(tokens[end - n]);
  for (let i = end - n + 1; i < end; i++) k += ',' + tokens[i];
  return k;
}

/** An index of one token list's n-grams, extended as the list grows (tokens are only appended). */
export class NgramIndex {
  /** Per n (NGRAM_MIN..NGRAM_MAX): the latest end (exclusive) of each n-gram seen. */
  private readonly latest: Map<string, number>[] = [];
  /** n-grams ending before this position are indexed. */
  private indexedTo = 0;

  constructor() {
    for (let n = NGRAM_MIN; n <= NGRAM_MAX; n++) this.latest.push(new Map());
  }

  /**
   * Up to `max` tokens guessed to follow `tokens`: the continuation of the latest earlier
   * occurrence of its longest suffix (NGRAM_MAX down to NGRAM_MIN tokens) seen before. Empty
   * when no suffix occurred before.
   */
  propose(tokens: readonly number[], max: number): number[] {
    const end = tokens.length;
    if (max <= 0 || end <= NGRAM_MIN) return [];
    // Index the n-grams ending before the suffix's own end, so that the suffix never finds itself.
    for (let e = Math.max(this.indexedTo, NGRAM_MIN); e < end; e++) {
      for (let n = NGRAM_MIN; n <= Math.min(NGRAM_MAX, e); n++) this.latest[n - NGRAM_MIN]!.set(key(tokens, e, n), e);
    }
    this.indexedTo = Math.max(this.indexedTo, end);
    for (let n = Math.min(NGRAM_MAX, end - 1); n >= NGRAM_MIN; n--) {
      const at = this.latest[n - NGRAM_MIN]!.get(key(tokens, end, n));
      if (at !== undefined) return tokens.slice(at, Math.min(at + max, end));
    }
    return [];
  }
}
