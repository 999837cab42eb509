// Token ids -> text, as llama.cpp's token_to_piece and detokenize produce it: byte tokens become
// raw bytes, U+2581 becomes a space (SPM), GPT-2's byte alphabet is mapped back to bytes (BPE),
// control tokens render only on request, the first SPM piece loses the space the tokenizer added,
// and clean_spaces vocabularies drop the spaces English punctuation would not have.
// StreamingDecoder does this one id at a time and only ever emits complete UTF-8 characters.
import { charToByte, utf8Encode } from './unicode.js';
import {
  ATTR_BYTE, ATTR_CONTROL, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_USER_DEFINED, type Vocab,
} from './vocab.js';
import { SPM_SPACE } from './spm.js';

const EMPTY = new Uint8Array(0);
const SPACE = 0x20, APOS = 0x27;

/** The bytes each token renders to with special tokens shown (llama.cpp's piece cache), built lazily. */
export class TokenPieces {
  private readonly vocab: Vocab;
  private readonly pieces: (Uint8Array | undefined)[];

  constructor(vocab: Vocab) {
    this.vocab = vocab;
    this.pieces = new Array(vocab.numTokens);
  }

  /** The piece of `id`, or empty when `special` is false and the token is control or unknown. */
  get(id: number, special: boolean): Uint8Array {
    if (!special && (this.vocab.attrs[id]! & (ATTR_CONTROL | ATTR_UNKNOWN)) !== 0) return EMPTY;
    return this.pieces[id] ??= this.render(id);
  }

  private render(id: number): Uint8Array {
    const attr = this.vocab.attrs[id]!;
    const text = this.vocab.tokens[id]!;
    if (attr & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED)) return utf8Encode(text);
    if (attr & ATTR_NORMAL) {
      return this.vocab.type === 'spm' ? utf8Encode(text.replaceAll(SPM_SPACE, ' ')) : unmapBytes(text);
    }
    if (attr & ATTR_BYTE) return Uint8Array.of(parseHexByte(text));
    return EMPTY;
  }
}

/** "<0xAB>" -> 0xAB, reading the two chars after "<0x" as strtol would (stops at a non-hex digit). */
function parseHexByte(text: string): number {
  let v = 0;
  for (let i = 3; i < 5 && i < text.length; i++) {
    const d = parseInt(text[i]!, 16);
    if (Number.isNaN(d)) break;
    v = v * 16 + d;
  }
  return v & 0xff;
}

/**
 * GPT-2 byte alphabet -> bytes. A char outside the alphabet is written as llama.cpp does:
 * "[UNK_BYTE_0x" + its UTF-8 in hex + the whole token text + "]".
 */
function unmapBytes(text: string): Uint8Array {
  const toByte = charToByte();
  const out: number[] = [];
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    const b = c < toByte.length ? toByte[c]! : -1;
    if (b >= 0) {
      out.push(b);
      continue;
    }
    let hex = '';
    for (const u of utf8Encode(ch)) hex += u.toString(16).padStart(2, '0');
    for (const u of utf8Encode(`[UNK_BYTE_0x${hex}${text}]`)) out.push(u);
  }
  return Uint8Array.from(out);
}

/**
 * llama.cpp's three clean_spaces passes, run as a stream over bytes (all patterns are ASCII, so
 * bytes of multi-byte characters pass through): 1. drop a space before ? ! . , ; 2. " ' " -> "'";
 * 3. drop a space before 's 'm 're 've. Each pass holds back at most three bytes it cannot
 * decide on yet; end() releases them.
 */
class SpaceCleaner {
  /** Pass 1 holds a space (1) or nothing (0). */
  private p1 = 0;
  /** Pass 2 holds nothing (0), " " (1) or " '" (2). */
  private p2 = 0;
  /** Pass 3 holds nothing (0), " " (1), " '" (2) or " '" + p3Char (3). */
  private p3 = 0;
  private p3Char = 0;
  private out = new Uint8Array(256);
  private outLen = 0;

  /** Feeds bytes; their final form accumulates until take(). */
  push(bytes: Uint8Array): void {
    if (this.out.length < this.outLen + bytes.length + 8) this.grow(this.outLen + bytes.length + 8);
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      // nothing held and not a space: every pass lets the byte through
      if (b !== SPACE && (this.p1 | this.p2 | this.p3) === 0) this.out[this.outLen++] = b;
      else this.pass1(b);
    }
  }

  /** Ends the stream, releasing what the passes still hold. */
  end(): void {
    this.grow(this.outLen + 8);
    if (this.p1 === 1) {
      this.p1 = 0;
      this.pass2(SPACE);
    }
    if (this.p2 >= 1) this.pass3(SPACE);
    if (this.p2 === 2) this.pass3(APOS);
    this.p2 = 0;
    if (this.p3 >= 1) this.emit(SPACE);
    if (this.p3 >= 2) this.emit(APOS);
    if (this.p3 === 3) this.emit(this.p3Char);
    this.p3 = 0;
  }

  /** The bytes made final so far (a view valid until the next call). */
  take(): Uint8Array {
    const bytes = this.out.subarray(0, this.outLen);
    this.outLen = 0;
    return bytes;
  }

  private grow(need: number): void {
    if (need <= this.out.length) return;
    const bigger = new Uint8Array(Math.max(need, this.out.length * 2));
    bigger.set(this.out.subarray(0, this.outLen));
    this.out = bigger;
  }

  private emit(b: number): void {
    this.out[this.outLen++] = b;
  }

  private pass1(b: number): void {
    if (this.p1 === 1) {
      this.p1 = 0;
      if (!(b === 0x3f || b === 0x21 || b === 0x2e || b === 0x2c)) this.pass2(SPACE); // ? ! . ,
    }
    if (b === SPACE) this.p1 = 1;
    else this.pass2(b);
  }

  private pass2(b: number): void {
    if (this.p2 === 2) {
      this.p2 = 0;
      if (b === SPACE) {
        // " ' " -> "'": both spaces go, and the second cannot start another pattern
        this.pass3(APOS);
        return;
      }
      this.pass3(SPACE);
      this.pass3(APOS);
    } else if (this.p2 === 1) {
      if (b === APOS) {
        this.p2 = 2;
        return;
      }
      this.p2 = 0;
      this.pass3(SPACE);
    }
    if (b === SPACE) this.p2 = 1;
    else this.pass3(b);
  }

  private pass3(b: number): void {
    switch (this.p3) {
      case 0:
        if (b === SPACE) this.p3 = 1;
        else this.emit(b);
        return;
      case 1:
        if (b === APOS) {
          this.p3 = 2;
          return;
        }
        this.p3 = 0;
        this.emit(SPACE);
        this.pass3(b);
        return;
      case 2:
        if (b === 0x73 || b === 0x6d) { // " 's", " 'm": the space goes
          this.p3 = 0;
          this.emit(APOS);
          this.emit(b);
          return;
        }
        if (b === 0x72 || b === 0x76) { // " 'r", " 'v": wait for the e
          this.p3 = 3;
          this.p3Char = b;
          return;
        }
        this.p3 = 0;
        this.emit(SPACE);
        this.emit(APOS);
        this.pass3(b);
        return;
      default:
        this.p3 = 0;
        if (b === 0x65) { // " 're", " 've": the space goes
          this.emit(APOS);
          this.emit(this.p3Char);
          this.emit(b);
          return;
        }
        this.emit(SPACE);
        this.emit(APOS);
        this.emit(this.p3Char);
        this.pass3(b);
    }
  }
}

export interface DecodeOptions {
  /** Render control and unknown tokens as their text (default false). */
  special?: boolean;
}

/**
 * Turns ids into text one at a time. Concatenating every push() and the final flush() gives
 * exactly detokenize(ids); no call ever returns half of a UTF-8 character.
 */
export class StreamingDecoder {
  private readonly pieces: TokenPieces;
  private readonly special: boolean;
  private readonly validate: (id: number) => void;
  private readonly cleaner: SpaceCleaner | undefined;
  private readonly decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  /** Strip one leading space from the next piece (SPM's added prefix, first token only). */
  private stripSpace: boolean;

  constructor(vocab: Vocab, pieces: TokenPieces, validate: (id: number) => void, options: DecodeOptions = {}) {
    this.pieces = pieces;
    this.special = options.special ?? false;
    this.validate = validate;
    this.cleaner = vocab.cleanSpaces ? new SpaceCleaner() : undefined;
    this.stripSpace = vocab.addSpacePrefix;
  }

  /** Adds one token; returns the text it completes (possibly ''). */
  push(id: number): string {
    this.validate(id);
    let piece = this.pieces.get(id, this.special);
    if (this.stripSpace) {
      this.stripSpace = false;
      if (piece.length > 0 && piece[0] === SPACE) piece = piece.subarray(1);
    }
    if (piece.length === 0) return '';
    if (!this.cleaner) return this.decoder.decode(piece, { stream: true });
    this.cleaner.push(piece);
    const bytes = this.cleaner.take();
    return bytes.length === 0 ? '' : this.decoder.decode(bytes, { stream: true });
  }

  /** Adds many tokens at once; returns the text they complete. */
  pushAll(ids: ArrayLike<number>): string {
    let total = 0;
    const parts: Uint8Array[] = new Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      this.validate(id);
      let piece = this.pieces.get(id, this.special);
      if (this.stripSpace) {
        this.stripSpace = false;
        if (piece.length > 0 && piece[0] === SPACE) piece = piece.subarray(1);
      }
      parts[i] = piece;
      total += piece.length;
    }
    let bytes: Uint8Array = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    if (this.cleaner) {
      this.cleaner.push(bytes);
      bytes = this.cleaner.take();
    }
    return this.decoder.decode(bytes, { stream: true });
  }

  /** Ends the stream: releases held bytes; an unfinished character becomes U+FFFD. */
  flush(): string {
    if (!this.cleaner) return this.decoder.decode();
    this.cleaner.end();
    return this.decoder.decode(this.cleaner.take());
  }
}
