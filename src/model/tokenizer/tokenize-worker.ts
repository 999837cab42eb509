// A tokenizer pool thread (see worker-pool.ts): loads each vocabulary once, then tokenizes.
import { asTandemError } from '../../native/errors.js';
import { loadTokenizer } from './index.js';
import type { Tokenizer } from './tokenizer.js';
import type { TokenizeTask, TokenizeTaskResult } from './worker-pool.js';

const loaded = new Map<string, Tokenizer>();

export default function tokenizeTask(task: TokenizeTask): TokenizeTaskResult {
  try {
    let tokenizer = loaded.get(task.path);
    if (!tokenizer) {
      tokenizer = loadTokenizer(task.path);
      loaded.set(task.path, tokenizer);
    }
    return { ids: Int32Array.from(tokenizer.tokenize(task.text, task.options)) };
  } catch (err) {
    const e = asTandemError(err);
    return { error: { code: e.code, message: e.message } };
  }
}
