// generate({ logprobs }) on stories260K: one entry per generated token, the model's log-softmax
// as teacher forcing (evaluate()) computes it, the greedy token first among the alternatives,
// chunks that add up to the result, and bad values as typed errors.
import t from 'tap';
import { loadModel, type TokenLogprob } from '../../src/api/index.js';
import { modelPath } from '../helpers.js';

const model = await loadModel(modelPath('stories260K.gguf'), { threads: 1, contextSize: 256, maxSequences: 4 });
t.teardown(() => model.dispose());

function logSoftmax(row: Float32Array, token: number): number {
  let max = -Infinity;
  for (const l of row) max = Math.max(max, l);
  let sum = 0;
  for (const l of row) sum += Math.exp(l - max);
  return row[token]! - max - Math.log(sum);
}

t.test('each token\'s logprob is the log-softmax teacher forcing gives; greedy draws the first alternative', async (t) => {
  const prompt = 'Once upon a time';
  const gen = model.generate(prompt, { maxTokens: 12, temperature: 0, logprobs: 4 });
  const streamed: TokenLogprob[] = [];
  for await (const chunk of gen) {
    t.equal(chunk.logprobs?.length, chunk.tokens.length, 'a chunk has one entry per token');
    streamed.push(...(chunk.logprobs ?? []));
  }
  const r = await gen.result;
  t.same(streamed, r.logprobs, 'the chunks add up to the result');
  t.equal(r.logprobs!.length, r.tokens.length);
  const ids = [...model.tokenize(prompt), ...r.tokens];
  const rows = await model.evaluate(ids);
  const start = ids.length - r.tokens.length - 1;
  r.logprobs!.forEach((e, i) => {
    t.equal(e.token, r.tokens[i]);
    t.ok(Math.abs(e.logprob - logSoftmax(rows[start + i]!, e.token)) < 1e-4, `token ${i}: ${e.logprob.toFixed(5)}`);
    t.equal(e.top.length, 4);
    t.equal(e.top[0]!.token, e.token, 'greedy: the most likely');
    t.ok(e.top.every((x, k) => k === 0 || x.logprob <= e.top[k - 1]!.logprob), 'most likely first');
    t.equal(e.text, new TextDecoder().decode(Uint8Array.from(e.bytes)));
  });
  t.equal(r.logprobs!.map((e) => e.text).join('').trim(), r.text.trim(), 'the tokens\' texts spell the reply');
});

t.test('sampled and batched: entries for every token; none unless asked', async (t) => {
  const [a, b] = await Promise.all([
    model.generate('The little dog', { maxTokens: 10, temperature: 1, seed: 3, logprobs: 0 }).result,
    model.generate('The little dog', { maxTokens: 10, temperature: 1, seed: 3 }).result,
  ]);
  t.same(a.tokens, b.tokens, 'asking for logprobs does not change the draws');
  t.equal(a.logprobs!.length, a.tokens.length);
  t.ok(a.logprobs!.every((e) => e.top.length === 0 && e.logprob <= 0));
  t.equal(b.logprobs, undefined);
});

t.test('bad logprobs values are typed errors', async (t) => {
  for (const logprobs of [-1, 21, 1.5, '3']) {
    t.throws(() => model.generate('x', { logprobs: logprobs as number }), { code: 'TDM_BAD_ARGUMENT', message: /logprobs/ });
  }
});
