// logprobsOf against a plain computation: the log-softmax of the drawn token and the top N by
// sorting every token (ties: lower id first).
import t from 'tap';
import { logprobsOf } from '../../src/engine/logprobs.js';

function reference(logits: number[], token: number, n: number) {
  const max = Math.max(...logits);
  const lse = max + Math.log(logits.reduce((a, l) => a + Math.exp(l - max), 0));
  const order = logits.map((l, i) => [l, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return { logprob: logits[token]! - lse, top: order.slice(0, n).map(([l, i]) => ({ token: i, logprob: l - lse })) };
}

t.test('matches sorting every token, ties included', async (t) => {
  let seed = 5;
  const rand = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed / 2 ** 32;
  };
  for (const [size, n] of [[1, 1], [7, 3], [100, 0], [100, 20], [5000, 5], [5, 20]] as const) {
    // Rounded to a few values so that ties are common.
    const logits = Array.from({ length: size }, () => Math.round(rand() * 12) / 2 - 3);
    const token = Math.floor(rand() * size);
    const got = logprobsOf(Float32Array.from(logits), token, n);
    const want = reference(logits, token, Math.min(n, size));
    t.ok(Math.abs(got.logprob - want.logprob) < 1e-9, `size ${size}: the drawn token's logprob`);
    t.same(got.top.map((x) => x.token), want.top.map((x) => x.token), `size ${size}, top ${n}: the same tokens, in order`);
    t.ok(got.top.every((x, i) => Math.abs(x.logprob - want.top[i]!.logprob) < 1e-9), 'and logprobs');
  }
  const probs = logprobsOf(Float32Array.of(0, Math.log(3)), 1, 2);
  t.ok(Math.abs(Math.exp(probs.logprob) - 0.75) < 1e-7, 'softmax of (0, ln 3) gives 3/4 (ln 3 rounded to float32)');
});
