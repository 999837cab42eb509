// Cutting special tokens out of raw text before tokenization, with llama.cpp's rules
// (tokenizer_st_partition): special tokens are taken longest first, each one splitting every
// remaining text fragment at its leftmost non-overlapping occurrences; LSTRIP/RSTRIP tokens eat
// the whitespace beside them. Control and unknown tokens only count when parsing specials.
import { ATTR_CONTROL, ATTR_LSTRIP, ATTR_RSTRIP, ATTR_UNKNOWN, type Vocab } from './vocab.js';

/** A piece of the input: raw text [start, end) to tokenize, or a special token id. */
export type Fragment = { start: number; end: number; id: -1 } | { start: 0; end: 0; id: number };

/** C's isspace over UTF-16 units: only the six ASCII whitespace characters. */
const isCSpace = (c: number): boolean => c === 0x20 || (c >= 0x09 && c <= 0x0d);

interface TrieNode {
  next: Map<number, TrieNode>;
  /** Special token ending here, or -1. */
  id: number;
}

/** Finds which special tokens occur in a text at all, in one pass (a trie over UTF-16 units). */
class SpecialMatcher {
  readonly ids: readonly number[];
  private readonly root: TrieNode = { next: new Map(), id: -1 };
  private readonly firstUnit = new Uint8Array(65536);

  constructor(vocab: Vocab, ids: readonly number[]) {
    this.ids = ids;
    for (const id of ids) {
      const text = vocab.tokens[id]!;
      let node = this.root;
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        let child = node.next.get(c);
        if (!child) {
          child = { next: new Map(), id: -1 };
          node.next.set(c, child);
        }
        node = child;
      }
      node.id = id;
      this.firstUnit[text.charCodeAt(0)] = 1;
    }
  }

  /** The special tokens present in text, as a set of ids. */
  present(text: string): Set<number> {
    const found = new Set<number>();
    const first = this.firstUnit;
    for (let i = 0; i < text.length; i++) {
      if (first[text.charCodeAt(i)] === 0) continue;
      let node: TrieNode | undefined = this.root;
      for (let j = i; j < text.length; j++) {
        node = node.next.get(text.charCodeAt(j));
        if (!node) break;
        if (node.id >= 0) found.add(node.id);
      }
      if (found.size === this.ids.length) break;
    }
    return found;
  }
}

export class SpecialTokenSplitter {
  private readonly vocab: Vocab;
  private withControl: SpecialMatcher | undefined;
  private withoutControl: SpecialMatcher | undefined;

  constructor(vocab: Vocab) {
    this.vocab = vocab;
  }

  private matcher(parseSpecial: boolean): SpecialMatcher {
    const all = this.vocab.specialTokensByLength();
    if (parseSpecial) return (this.withControl ??= new SpecialMatcher(this.vocab, all));
    const attrs = this.vocab.attrs;
    return (this.withoutControl ??= new SpecialMatcher(
      this.vocab, all.filter((id) => (attrs[id]! & (ATTR_CONTROL | ATTR_UNKNOWN)) === 0)));
  }

  /** Splits text into raw fragments and special tokens. */
  split(text: string, parseSpecial: boolean): Fragment[] {
    let fragments: Fragment[] = [{ start: 0, end: text.length, id: -1 }];
    if (text.length === 0) return [];
    const matcher = this.matcher(parseSpecial);
    if (matcher.ids.length === 0) return fragments;
    const present = matcher.present(text);
    if (present.size === 0) return fragments;
    const { tokens, attrs } = this.vocab;
    for (const id of matcher.ids) {
      if (!present.has(id)) continue;
      const tok = tokens[id]!;
      const lstrip = (attrs[id]! & ATTR_LSTRIP) !== 0;
      const rstrip = (attrs[id]! & ATTR_RSTRIP) !== 0;
      const next: Fragment[] = [];
      for (const f of fragments) {
        if (f.id >= 0) {
          next.push(f);
          continue;
        }
        let s = f.start;
        const end = f.end;
        for (;;) {
          const m = text.indexOf(tok, s);
          if (m < 0 || m + tok.length > end) {
            if (s < end) next.push({ start: s, end, id: -1 });
            break;
          }
          let leftEnd = m;
          if (lstrip) while (leftEnd > s && isCSpace(text.charCodeAt(leftEnd - 1))) leftEnd--;
          if (leftEnd > s) next.push({ start: s, end: leftEnd, id: -1 });
          next.push({ start: 0, end: 0, id });
          s = m + tok.length;
          if (s >= end) break;
          if (rstrip) while (s < end && isCSpace(text.charCodeAt(s))) s++;
        }
      }
      fragments = next;
    }
    return fragments;
  }
}
