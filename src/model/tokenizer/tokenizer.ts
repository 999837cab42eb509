// The tokenizer of one GGUF vocabulary: text -> ids and ids -> text, token-for-token equal to
// llama.cpp (llama_vocab::tokenize / detokenize). Large inputs can go to a worker pool.
import { TandemError } from '../../native/errors.js';
import { BpeModel } from './bpe.js';
import { StreamingDecoder, TokenPieces, type DecodeOptions } from './detokenizer.js';
import { preTokenize } from './pre-tokenizer.js';
import { runTokenizeTask } from './worker-pool.js';
import { SpecialTokenSplitter } from './special-tokens.js';
import { SpmModel, SPM_SPACE } from './spm.js';
import { wellFormed } from './unicode.js';
import type { Vocab, VocabType } from './vocab.js';

export interface TokenizeOptions {
  /** Prepend BOS. Default: what the vocabulary asks for (tokenizer.ggml.add_bos_token). */
  addBos?: boolean;
  /** Append EOS. Default: what the vocabulary asks for (tokenizer.ggml.add_eos_token). */
  addEos?: boolean;
  /**
   * Parse control tokens written in the text (e.g. "<|im_start|>") as those tokens. Default false:
   * such text is tokenized as plain text. User-defined tokens are always parsed, as in llama.cpp.
   */
  special?: boolean;
}

export type DetokenizeOptions = DecodeOptions;

/** Inputs longer than this (UTF-16 units) are tokenized in a worker by tokenizeAsync. */
export const ASYNC_THRESHOLD = 64 * 1024;

export class Tokenizer {
  readonly vocab: Vocab;
  private readonly splitter: SpecialTokenSplitter;
  private readonly pieces: TokenPieces;
  private spm: SpmModel | undefined;
  private bpe: BpeModel | undefined;

  constructor(vocab: Vocab) {
    this.vocab = vocab;
    this.splitter = new SpecialTokenSplitter(vocab);
    this.pieces = new TokenPieces(vocab);
  }

  /** The GGUF file this vocabulary came from. */
  get path(): string { return this.vocab.path; }
  get type(): VocabType { return this.vocab.type; }
  get numTokens(): number { return this.vocab.numTokens; }
  /** -1 where the vocabulary has none. */
  get bosId(): number { return this.vocab.bosId; }
  get eosId(): number { return this.vocab.eosId; }
  get eotId(): number { return this.vocab.eotId; }

  /** Whether generating this id should end generation (EOS, EOT, <|im_end|>, ...). */
  isEog(id: number): boolean {
    return this.vocab.eogIds.has(id);
  }

  /** The text of a token as stored in the vocabulary (e.g. "▁Hello", "Ġworld", "<0x0A>"). */
  tokenText(id: number): string {
    this.checkId(id);
    return this.vocab.tokens[id]!;
  }

  /** The bytes token `id` adds to generated text; empty for control and unknown tokens (which render as nothing). */
  tokenBytes(id: number): Uint8Array {
    this.checkId(id);
    return this.pieces.get(id, false);
  }

  /** Text -> token ids. */
  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    if (typeof text !== 'string') {
      throw new TandemError('TDM_BAD_ARGUMENT', `tokenize: text must be a string, got ${typeof text}`);
    }
    if (options === null || typeof options !== 'object') {
      throw new TandemError('TDM_BAD_ARGUMENT', 'tokenize: options must be an object');
    }
    const vocab = this.vocab;
    const addBos = options.addBos ?? vocab.addBos;
    const addEos = options.addEos ?? vocab.addEos;
    if (addBos && vocab.bosId < 0) throw new TandemError('TDM_BAD_ARGUMENT', `${vocab.path}: the vocabulary has no BOS token`);
    if (addEos && vocab.eosId < 0) throw new TandemError('TDM_BAD_ARGUMENT', `${vocab.path}: the vocabulary has no EOS token`);

    const input = wellFormed(text);
    const out: number[] = [];
    if (addBos) out.push(vocab.bosId);
    const fragments = this.splitter.split(input, options.special === true);
    if (vocab.type === 'spm') {
      const spm = (this.spm ??= new SpmModel(vocab));
      // A space goes before the first text and before any text that follows a special token.
      let afterSpecial = true;
      for (const f of fragments) {
        if (f.id >= 0) {
          out.push(f.id);
          afterSpecial = true;
          continue;
        }
        let piece = input.slice(f.start, f.end);
        if (vocab.addSpacePrefix && afterSpecial) piece = ' ' + piece;
        spm.encode(piece.replaceAll(' ', SPM_SPACE), out);
        afterSpecial = false;
      }
    } else {
      const bpe = (this.bpe ??= new BpeModel(vocab));
      for (const f of fragments) {
        if (f.id >= 0) {
          out.push(f.id);
          continue;
        }
        const piece = input.slice(f.start, f.end);
        preTokenize(piece, vocab.preTokenizer, (s, e) => bpe.encodeWord(piece, s, e, out));
      }
    }
    if (addEos) out.push(vocab.eosId);
    return out;
  }

  /**
   * tokenize() off the main thread for inputs over ASYNC_THRESHOLD, so a large text never stalls
   * the event loop; smaller inputs are tokenized in place.
   */
  async tokenizeAsync(text: string, options: TokenizeOptions = {}): Promise<number[]> {
    if (typeof text !== 'string') {
      throw new TandemError('TDM_BAD_ARGUMENT', `tokenizeAsync: text must be a string, got ${typeof text}`);
    }
    if (text.length <= ASYNC_THRESHOLD) return this.tokenize(text, options);
    return runTokenizeTask(this.vocab.path, text, {
      addBos: options.addBos, addEos: options.addEos, special: options.special,
    });
  }

  /** Token ids -> text (llama.cpp's detokenize, leaving special tokens in the id list). */
  detokenize(ids: ArrayLike<number>, options: DetokenizeOptions = {}): string {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') {
      throw new TandemError('TDM_BAD_ARGUMENT', 'detokenize: ids must be an array of token ids');
    }
    const decoder = this.createDecoder(options);
    return decoder.pushAll(ids) + decoder.flush();
  }

  /** A decoder to feed ids one by one (streaming generation). */
  createDecoder(options: DetokenizeOptions = {}): StreamingDecoder {
    return new StreamingDecoder(this.vocab, this.pieces, (id) => this.checkId(id), options);
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocab.numTokens) {
      throw new TandemError('TDM_BAD_ARGUMENT',
        `token id ${String(id)} is not in the vocabulary (0..${this.vocab.numTokens - 1})`);
    }
  }
}
