// Tokenizer metadata for synthetic models: copied from any GGUF (a vocab-only file will
// do), or a small generated SentencePiece vocabulary with byte fallback that llama.cpp
// loads and tokenizes with (control tokens, 256 byte tokens, then pieces by score).
import { TandemError, asTandemError } from '../../native/errors.js';
import { GgufFile, type GgufMetadataEntry } from '../gguf.js';

/** Token types as GGUF numbers them (llama_token_type). */
const NORMAL = 1, UNKNOWN = 2, CONTROL = 3, BYTE = 6;

/** The smallest synthetic vocabulary: <unk>, <s>, </s> and the 256 byte tokens. */
export const MIN_SYNTHETIC_VOCAB = 259;

export interface VocabMetadata {
  /** tokenizer.* entries, in the order to write them. */
  entries: GgufMetadataEntry[];
  nVocab: number;
}

const SPACE = '\u2581'; // SentencePiece's word-boundary mark

/** Pieces of a synthetic vocab beyond the specials and bytes, most useful first. */
function* pieces(): Generator<string> {
  const lower = 'etaoinshrdlcumwfgypbvkjxqz';
  const chars = [...lower, ...lower.toUpperCase(), ...'0123456789', ...'.,!?\'"-:;()'];
  yield SPACE;
  yield* chars;
  // Grow by one character at a time, so every piece is the join of two existing
  // pieces and SentencePiece's merges can reach it.
  let level = [SPACE, ...chars];
  for (;;) {
    const next: string[] = [];
    for (const p of level) {
      for (const c of chars) {
        const s = p + c;
        next.push(s);
        yield s;
      }
    }
    level = next;
  }
}

/** A SentencePiece ('llama') vocabulary of exactly nVocab tokens. */
export function syntheticVocab(nVocab: number): VocabMetadata {
  if (!Number.isSafeInteger(nVocab) || nVocab < MIN_SYNTHETIC_VOCAB) {
    throw new TandemError('TDM_BAD_ARGUMENT', `a synthetic vocabulary needs at least ${MIN_SYNTHETIC_VOCAB} tokens (3 specials and 256 bytes), got ${nVocab}`);
  }
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types = new Int32Array(nVocab);
  const scores = new Float32Array(nVocab);
  types[0] = UNKNOWN;
  types[1] = CONTROL;
  types[2] = CONTROL;
  for (let b = 0; b < 256; b++) {
    types[tokens.length] = BYTE;
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  }
  const it = pieces();
  while (tokens.length < nVocab) {
    const i = tokens.length;
    tokens.push(it.next().value as string);
    types[i] = NORMAL;
    // Shorter, earlier pieces score higher, as in a trained SentencePiece model.
    scores[i] = -(i - MIN_SYNTHETIC_VOCAB);
  }
  const e = (key: string, type: GgufMetadataEntry['type'], value: unknown): GgufMetadataEntry => ({ key, type, value });
  return {
    nVocab,
    entries: [
      e('tokenizer.ggml.model', 'string', 'llama'),
      e('tokenizer.ggml.pre', 'string', 'default'),
      e('tokenizer.ggml.tokens', 'array', { elementType: 'string', value: tokens }),
      e('tokenizer.ggml.scores', 'array', { elementType: 'float32', value: scores }),
      e('tokenizer.ggml.token_type', 'array', { elementType: 'int32', value: types }),
      e('tokenizer.ggml.bos_token_id', 'uint32', 1),
      e('tokenizer.ggml.eos_token_id', 'uint32', 2),
      e('tokenizer.ggml.unknown_token_id', 'uint32', 0),
      e('tokenizer.ggml.add_bos_token', 'bool', true),
      e('tokenizer.ggml.add_eos_token', 'bool', false),
    ],
  };
}

/** Every tokenizer.* entry of a GGUF file; the vocabulary size is its token count. */
export function copiedVocab(path: string): VocabMetadata {
  let f: GgufFile;
  try {
    f = GgufFile.open(path);
  } catch (err) {
    const e = asTandemError(err);
    throw new TandemError(e.code, `vocab file: ${e.message}`, { cause: err });
  }
  try {
    const entries = [...f.metadata.values()].filter((e) => e.key.startsWith('tokenizer.'));
    const tokens = f.metadata.get('tokenizer.ggml.tokens');
    if (!tokens || tokens.type !== 'array') {
      throw new TandemError('TDM_BAD_ARGUMENT', `${path}: has no tokenizer.ggml.tokens array to copy a vocabulary from`);
    }
    return { entries, nVocab: (tokens.value as { value: ArrayLike<unknown> }).value.length };
  } finally {
    f.close();
  }
}
