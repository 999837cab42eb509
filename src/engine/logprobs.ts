// Log-probabilities of a drawn token and of the most likely tokens at its place, from the
// model's logits (log-softmax: the model's own distribution, before temperature, penalties,
// bias and constraints, as vLLM and OpenAI report them).

export interface TokenLogprobs {
  /** The drawn token's log-probability. */
  logprob: number;
  /** The most likely tokens, most likely first (ties: lower id first). */
  top: { token: number; logprob: number }[];
}

/** Logprobs of `token` and of the `topN` most likely tokens under `logits` (one row of n_vocab). */
export function logprobsOf(logits: Float32Array, token: number, topN: number): TokenLogprobs {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  // The topN best, kept sorted best first: one pass, a short insertion each time one enters.
  const best: number[] = [];
  for (let i = 0; i < logits.length && topN > 0; i++) {
    const l = logits[i]!;
    if (best.length === topN && l <= logits[best[topN - 1]!]!) continue;
    let at = Math.min(best.length, topN - 1);
    if (best.length < topN) best.push(i);
    while (at > 0 && logits[best[at - 1]!]! < l) {
      best[at] = best[at - 1]!;
      at--;
    }
    best[at] = i;
  }
  return { logprob: logits[token]! - lse, top: best.map((t) => ({ token: t, logprob: logits[t]! - lse })) };
}
