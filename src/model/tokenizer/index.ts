// Public entry to the tokenizers: loadTokenizer(path) for any GGUF with a vocabulary (model files
// and vocabulary-only files alike).
import { GgufFile } from '../gguf.js';
import { TandemError } from '../../native/errors.js';
import { Tokenizer } from './tokenizer.js';
import { Vocab } from './vocab.js';

export { Tokenizer, ASYNC_THRESHOLD, type TokenizeOptions, type DetokenizeOptions } from './tokenizer.js';
export { StreamingDecoder } from './detokenizer.js';
export { Vocab, type VocabType } from './vocab.js';
export { closeTokenizerPool } from './worker-pool.js';

/** Reads the vocabulary of an open GGUF file. Throws TandemError (TDM_BAD_GGUF, TDM_UNSUPPORTED). */
export function tokenizerFromGguf(file: GgufFile): Tokenizer {
  return new Tokenizer(new Vocab(file));
}

/** Opens a GGUF file, reads its vocabulary and closes it. */
export function loadTokenizer(path: string): Tokenizer {
  if (typeof path !== 'string' || path.length === 0) {
    throw new TandemError('TDM_BAD_ARGUMENT', 'loadTokenizer: path must be a non-empty string');
  }
  const file = GgufFile.open(path);
  try {
    return tokenizerFromGguf(file);
  } finally {
    file.close();
  }
}
