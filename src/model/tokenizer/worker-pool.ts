// The worker pool behind Tokenizer.tokenizeAsync: piscina threads that each keep the tokenizers
// they have loaded. Idle threads are unref'd and retire after IDLE_MS, so the pool never keeps
// the process alive.
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Piscina } from 'piscina';
import { TandemError, type TandemErrorCode } from '../../native/errors.js';
import type { TokenizeOptions } from './tokenizer.js';

const IDLE_MS = 5_000;

/** What a worker receives and returns. */
export interface TokenizeTask {
  path: string;
  text: string;
  options: TokenizeOptions;
}
export type TokenizeTaskResult = { ids: Int32Array } | { error: { code: TandemErrorCode; message: string } };

let pool: Piscina<TokenizeTask, TokenizeTaskResult> | undefined;

/** The worker module beside this one, with this module's extension (.ts under ts-node, .js in dist/). */
function workerUrl(): string {
  const here = fileURLToPath(import.meta.url);
  return pathToFileURL(path.join(path.dirname(here), `tokenize-worker${path.extname(here)}`)).href;
}

/** The pool, created on first use (piscina itself is only loaded then). */
async function getPool(): Promise<Piscina<TokenizeTask, TokenizeTaskResult>> {
  if (!pool) {
    const { Piscina: Pool } = await import('piscina');
    pool ??= new Pool<TokenizeTask, TokenizeTaskResult>({
      filename: workerUrl(),
      minThreads: 0,
      maxThreads: Math.max(1, Math.min(4, availableParallelism() - 1)),
      idleTimeout: IDLE_MS,
    });
  }
  return pool;
}

/** Tokenizes `text` with the vocabulary of the GGUF at `vocabPath` on a pool thread. */
export async function runTokenizeTask(vocabPath: string, text: string, options: TokenizeOptions): Promise<number[]> {
  let result: TokenizeTaskResult;
  try {
    result = await (await getPool()).run({ path: vocabPath, text, options });
  } catch (err) {
    throw new TandemError('TDM_INTERNAL', `tokenizer worker failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
  if ('error' in result) throw new TandemError(result.error.code, result.error.message);
  return Array.from(result.ids);
}

/** Stops the pool's threads (a later tokenizeAsync starts a new pool). */
export async function closeTokenizerPool(): Promise<void> {
  const p = pool;
  pool = undefined;
  await p?.destroy();
}
