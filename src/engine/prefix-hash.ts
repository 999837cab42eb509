// Chained hashes of full KV blocks for prefix caching (vLLM's automatic prefix caching):
// block i's key hashes block i-1's key and the token ids of block i, so equal keys mean
// equal token prefixes and so equal KV. SHA-256 makes a collision, which would silently
// hand one prompt another's KV, not a practical concern.
import { createHash } from 'node:crypto';

/** The key of the block holding tokens[from, to), chained to its predecessor's key ('' for the first block). */
export function blockHash(parent: string, tokens: readonly number[], from: number, to: number): string {
  const ids = Int32Array.from(tokens.slice(from, to));
  return createHash('sha256').update(parent).update(new Uint8Array(ids.buffer)).digest('base64');
}

/** Extends `hashes` (the keys of the first hashes.length full blocks) to cover `numBlocks` full blocks of `tokens`. */
export function extendBlockHashes(hashes: string[], tokens: readonly number[], blockTokens: number, numBlocks: number): void {
  const limit = Math.min(numBlocks, Math.floor(tokens.length / blockTokens));
  for (let i = hashes.length; i < limit; i++) {
    hashes.push(blockHash(i === 0 ? '' : hashes[i - 1]!, tokens, i * blockTokens, (i + 1) * blockTokens));
  }
}
