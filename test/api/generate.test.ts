// generate() end to end on stories260K (a real tiny llama): greedy continuations equal to
// llama.cpp's, alone and batched; stop strings; aborts that leak nothing; seeded sampling;
// the context limit; argument errors.
import t, { type Test } from 'tap';
import { loadModel, type Generation } from '../../src/api/index.js';
import os from 'node:os';
import { physicalCoreCount } from '../../src/api/threads.js';
import { modelPath } from '../helpers.js';
import { argmax, klDivergence, LlamaRef, softmax } from './llama-ref.js';

const STORIES = modelPath('stories260K.gguf');
const PROMPTS = ['Once upon a time', 'The little dog', 'Tom and Sue went to the', 'One day, a bird', 'Lily wanted', 'The sun was'];
const N = 64;

const model = await loadModel(STORIES, { threads: 1, contextSize: 256, maxSequences: 4 });
const ref = await LlamaRef.load(STORIES);
t.teardown(async () => {
  await model.dispose();
  await ref.dispose();
});

async function collect(gen: Generation) {
  let text = '';
  const tokens: number[] = [];
  for await (const c of gen) {
    text += c.text;
    tokens.push(...c.tokens);
  }
  return { text, tokens, result: await gen.result };
}

/**
 * Where greedy paths part: llama.cpp rounds Q and the attention weights to f16 before its
 * f16 K/V products, so two tokens whose logits lie within a few thousandths can swap.
 * A divergence passes only at such a near tie, with tandem on llama.cpp's runner-up.
 */
const NEAR_TIE_LOGITS = 0.01;

async function checkGreedy(t: Test, prompt: string, ids: number[], got: number[], expected: number[]): Promise<boolean> {
  let k = 0;
  while (k < expected.length && got[k] === expected[k]) k++;
  if (k === expected.length && got.length === expected.length) return true;
  const probs = (await ref.probabilities([...ids, ...expected.slice(0, k)], model.info.nVocab)).at(-1)!;
  const ranked = [...probs.keys()].sort((a, b) => probs[b]! - probs[a]!);
  const margin = Math.log(probs[ranked[0]!]! / probs[ranked[1]!]!);
  t.comment(`"${prompt}": parts from llama.cpp at token ${k}, where llama.cpp's top two logits differ by ${margin.toFixed(4)}`);
  t.ok(margin < NEAR_TIE_LOGITS && got[k] === ranked[1], `"${prompt}": the divergence at ${k} is a near tie`);
  return false;
}

t.test('greedy continuations equal llama.cpp for 64 tokens, alone and batched', async (t) => {
  const expected: number[][] = [];
  for (const prompt of PROMPTS) {
    const ids = ref.tokenize(prompt);
    t.same(model.tokenize(prompt), ids, `tokens of "${prompt}" as llama.cpp`);
    expected.push(await ref.greedy(ids, N));
  }
  const alone: number[][] = [];
  let identical = 0;
  for (const [i, prompt] of PROMPTS.entries()) {
    const { text, tokens, result } = await collect(model.generate(prompt, { temperature: 0, maxTokens: N }));
    alone.push(result.tokens);
    if (await checkGreedy(t, prompt, model.tokenize(prompt), result.tokens, expected[i]!)) identical++;
    t.same(tokens, result.tokens, 'the chunks carry every token');
    t.equal(text, result.text, 'the chunks carry all the text');
    const promptIds = model.tokenize(prompt);
    t.equal(result.text, model.detokenize([...promptIds, ...result.tokens]).slice(model.detokenize(promptIds).length), 'streamed text is the detokenized tokens');
    t.same(result.usage, { promptTokens: promptIds.length, completionTokens: result.tokens.length });
  }
  t.ok(identical >= PROMPTS.length - 1, `${identical} of ${PROMPTS.length} prompts identical to llama.cpp for ${N} tokens`);

  const stepsBefore = model.stats.numSteps;
  const together = await Promise.all(PROMPTS.map((p) => model.generate(p, { temperature: 0, maxTokens: N }).result));
  together.forEach((r, i) => t.same(r.tokens, alone[i], `"${PROMPTS[i]}" batched with the others: the same tokens as alone`));
  t.ok(model.stats.numSteps - stepsBefore < PROMPTS.length * N, 'the generations shared steps');

  const first = await model.generate('Once upon a time', { temperature: 0, maxTokens: N }).result;
  t.equal(
    first.text,
    ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily\'s mom said',
    'the continuation shared/models/README.md records from llama.cpp',
  );
});

t.test('teacher-forced probabilities match llama.cpp (F32 file: float rounding only)', async (t) => {
  const ids = [...ref.tokenize('Once upon a time'), ...(await ref.greedy(ref.tokenize('Once upon a time'), 70))];
  const rows = await model.evaluate(ids);
  const refRows = await ref.probabilities(ids, model.info.nVocab);
  let maxKl = 0;
  let agree = 0;
  rows.forEach((logits, i) => {
    const p = softmax(logits);
    maxKl = Math.max(maxKl, klDivergence(refRows[i]!, p));
    if (argmax(p) === argmax(refRows[i]!)) agree++;
  });
  t.comment(`stories260K: ${ids.length} positions, max KL ${maxKl.toExponential(2)}, top-1 ${agree}/${ids.length}`);
  t.ok(maxKl < 1e-4, `max KL ${maxKl} < 1e-4`);
  t.equal(agree, ids.length, 'top-1 agrees everywhere');
});

t.test('stop strings end the generation before the match, even across tokens', async (t) => {
  const { text, result } = await collect(model.generate('Once upon a time', { temperature: 0, maxTokens: N, stop: ['Lily.', 'xyzzy'] }));
  t.equal(result.stopReason, 'stop');
  t.equal(result.text, ', there was a little girl named ');
  t.equal(text, result.text, 'no chunk ever carried text of the stop string');
  t.ok(result.tokens.length < N);
  t.equal(model.stats.numFreeKvBlocks, model.stats.numKvBlocks, 'the stopped sequence freed its blocks');

  // A generation that ends inside a possible match releases the held-back text at the end.
  const plain = await model.generate('Once upon a time', { temperature: 0, maxTokens: 8 }).result;
  const partial = plain.text.slice(-3) + '#never#';
  const held = await collect(model.generate('Once upon a time', { temperature: 0, maxTokens: 8, stop: partial }));
  t.equal(held.result.stopReason, 'maxTokens');
  t.equal(held.result.text, plain.text);
  t.equal(held.text, plain.text);
});

t.test('abort and break stop the generation and free its blocks', async (t) => {
  const controller = new AbortController();
  const gen = model.generate('Once upon a time', { temperature: 0, maxTokens: 200, signal: controller.signal });
  let n = 0;
  for await (const c of gen) {
    n += c.tokens.length;
    if (n >= 5 && !controller.signal.aborted) controller.abort();
  }
  const r = await gen.result;
  t.equal(r.stopReason, 'aborted');
  // The tokens drawn before the abort: the rest of a decode burst may have reached the stream unread.
  t.ok(r.tokens.length >= 5 && r.tokens.length < 5 + model.info.decodeBurst, `nothing after the abort (${r.tokens.length} tokens)`);

  const broken = model.generate('The little dog', { temperature: 0, maxTokens: 200 });
  for await (const c of broken) if (c.tokens.length) break;
  t.equal((await broken.result).stopReason, 'aborted');

  const pre = new AbortController();
  pre.abort();
  const never = await model.generate('Once', { signal: pre.signal }).result;
  t.same([never.stopReason, never.tokens], ['aborted', []], 'an already aborted signal generates nothing');

  // Many requests at once, aborted at random depths: every KV block comes back.
  const gens: Promise<unknown>[] = [];
  for (let i = 0; i < 40; i++) {
    const c = new AbortController();
    const g = model.generate(PROMPTS[i % PROMPTS.length]!, { temperature: 0.8, seed: i, maxTokens: 100, signal: c.signal });
    gens.push(
      (async () => {
        let k = 0;
        for await (const chunk of g) {
          k += chunk.tokens.length;
          if (k >= i % 9) {
            if (i % 2) c.abort();
            else break;
          }
        }
        return g.result;
      })(),
    );
  }
  const results = (await Promise.all(gens)) as { stopReason: string }[];
  t.ok(results.every((r) => r.stopReason === 'aborted' || r.stopReason === 'eos'));
  // One more request: once it is done, every step that held an aborted sequence has returned.
  await model.generate('Once', { maxTokens: 1 }).result;
  t.equal(model.stats.numRunning + model.stats.numWaiting, 0);
  t.equal(model.stats.numFreeKvBlocks, model.stats.numKvBlocks, 'no block leaked');
});

t.test('the same seed gives the same sample, alone or batched', async (t) => {
  const opts = { temperature: 1.5, topK: 0, topP: 1, minP: 0, maxTokens: 32, ignoreEos: true };
  const a = await model.generate('Once upon a time', { ...opts, seed: 7 }).result;
  const [b, other] = await Promise.all([
    model.generate('Once upon a time', { ...opts, seed: 7 }).result,
    model.generate('Once upon a time', { ...opts, seed: 8 }).result,
  ]);
  t.same(b.tokens, a.tokens, 'same seed, same tokens');
  t.notSame(other.tokens, a.tokens, 'another seed, other tokens');
  t.equal(a.tokens.length, 32);

  const banned = await model.generate('Once upon a time', { temperature: 0, maxTokens: 4, logitBias: { 432: -Infinity } }).result;
  t.not(banned.tokens[0], 432, 'logitBias -Infinity bans the greedy choice');
});

t.test('the context limit: too long a prompt is an error, a full context a stop reason', async (t) => {
  const small = await loadModel(STORIES, { threads: 1, contextSize: 32 });
  t.teardown(() => small.dispose());
  const long = Array.from({ length: 32 }, (_, i) => 300 + i);
  await t.rejects(small.generate(long).result, { code: 'TDM_CONTEXT_FULL', message: /32 tokens.*context holds 32/ });
  const full = await small.generate('Once upon a time', { temperature: 0, ignoreEos: true }).result;
  t.equal(full.stopReason, 'contextFull');
  t.equal(full.usage.promptTokens + full.usage.completionTokens, 32);
  t.equal(small.stats.numFreeKvBlocks, small.stats.numKvBlocks);
});

t.test('loading reports progress, uses physical cores by default, and frees everything on dispose', async (t) => {
  const seen: number[] = [];
  const m = await loadModel(STORIES, { contextSize: 64, onProgress: (f) => seen.push(f) });
  t.ok(seen.length > 0 && seen.at(-1) === 1, 'progress ends at 1');
  t.ok(seen.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f >= seen[i - 1]!)), 'fractions rise from 0 to 1');
  t.equal(m.info.threads, physicalCoreCount());
  t.ok(m.info.threads >= 1 && m.info.threads <= os.availableParallelism());
  t.same(m.info.backends.slice(0, 1), ['cpu']);
  await m.dispose();
  const boom = new Error('progress callback failed');
  await t.rejects(loadModel(STORIES, { contextSize: 64, onProgress: () => { throw boom; } }), boom, 'a throwing callback fails the load');
});

t.test('bad arguments are TDM_BAD_ARGUMENT errors that say what is wrong', async (t) => {
  t.throws(() => model.generate('x', { temperature: -1 }), { code: 'TDM_BAD_ARGUMENT', message: /temperature must be a number >= 0, got -1/ });
  t.throws(() => model.generate('x', { max_tokens: 5 } as never), { code: 'TDM_BAD_ARGUMENT', message: /unknown option 'max_tokens'/ });
  t.throws(() => model.generate([1, 99999]), { code: 'TDM_BAD_ARGUMENT', message: /token 1 is 99999/ });
  t.throws(() => model.generate('x', { stop: [''] }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => model.generate('x', { logitBias: { 600: 1 } }), { code: 'TDM_BAD_ARGUMENT', message: /not a token id/ });
  t.throws(() => model.generate(42 as never), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => model.chat([{ role: 'user' }] as never), { code: 'TDM_BAD_ARGUMENT', message: /message 0 must be/ });
  t.throws(() => model.chat([]), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(loadModel(STORIES, { threads: 0 }), { code: 'TDM_BAD_ARGUMENT', message: /threads/ });
  await t.rejects(loadModel('/no/such/model.gguf'), { code: 'TDM_NOT_FOUND' });
  const gone = await loadModel(STORIES, { threads: 1, contextSize: 64 });
  const running = gone.generate('Once upon a time', { temperature: 0, maxTokens: 50 });
  await gone.dispose();
  await t.rejects(running.result, { code: 'TDM_DISPOSED' });
  t.throws(() => gone.generate('x'), { code: 'TDM_DISPOSED' });
});
