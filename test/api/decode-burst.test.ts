// loadModel({ decodeBurst }) end to end on stories260K, whose steps are short enough for the
// host's time between them to matter: requests decoding together draw several tokens a step,
// with the replies of a model that never bursts (greedy, seeded sampling, stop strings, a
// request with penalties beside them), and bad values are refused.
import t from 'tap';
import { loadModel, type GenerateOptions, type Model } from '../../src/api/index.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const single = await loadModel(STORIES, { threads: 1, contextSize: 256, maxSequences: 4, decodeBurst: 1 });
const burst = await loadModel(STORIES, { threads: 1, contextSize: 256, maxSequences: 4 });
t.teardown(() => {
  single.dispose();
  burst.dispose();
});

const PROMPTS = ['Once upon a time, there was a little girl named Lily.', 'Tom and Sam went to the park.', 'The cat sat on the mat.'];

async function replies(m: Model, options: GenerateOptions[]) {
  return Promise.all(options.map(async (o, i) => {
    const gen = m.generate(PROMPTS[i % PROMPTS.length]!, o);
    let streamed = '';
    for await (const chunk of gen) streamed += chunk.text;
    const r = await gen.result;
    return { tokens: r.tokens, text: r.text, streamed, stopReason: r.stopReason, logprobs: r.logprobs };
  }));
}

t.test('requests decoding together burst, with the replies of single steps', async (t) => {
  t.equal(burst.info.decodeBurst, 8, 'on by default');
  t.equal(single.info.decodeBurst, 1);
  const settings: [string, GenerateOptions[]][] = [
    ['greedy', PROMPTS.map(() => ({ maxTokens: 60, temperature: 0 }))],
    ['seeded sampling', PROMPTS.map((_, i) => ({ maxTokens: 60, temperature: 0.9, topK: 40, topP: 0.95, seed: 5 + i }))],
    ['different lengths and a stop string', [{ maxTokens: 9, temperature: 0 }, { maxTokens: 70, temperature: 0.7, seed: 3, stop: ['park'] }, { maxTokens: 33, temperature: 0 }]],
    ['one request with penalties beside them', [{ maxTokens: 40, temperature: 0 }, { maxTokens: 40, temperature: 0.8, seed: 9, repeatPenalty: 1.3 }, { maxTokens: 40, temperature: 0 }]],
    ['logprobs', PROMPTS.map((_, i) => ({ maxTokens: 30, temperature: 0.8, seed: 2 + i, logprobs: 3 }))],
  ];
  for (const [name, options] of settings) {
    const s0 = burst.stats;
    const a = await replies(single, options);
    const b = await replies(burst, options);
    const s1 = burst.stats;
    t.same(b, a, `${name}: the same replies`);
    for (const r of b) t.equal(r.streamed, r.text, 'the chunks add up to the text');
    if (name === 'logprobs') t.ok(b.every((r) => r.logprobs?.length === r.tokens.length), 'a logprob per token');
    {
      t.ok(s1.numRounds - s0.numRounds > (s1.numSteps - s0.numSteps) * 1.5, `${name}: ${s1.numRounds - s0.numRounds} rounds in ${s1.numSteps - s0.numSteps} steps`);
    }
  }
  const st = single.stats;
  t.equal(st.numRounds, st.numSteps, 'decodeBurst 1: a round a step');
  t.equal(burst.stats.numFreeKvBlocks, burst.stats.numKvBlocks, 'every block back');
});

t.test('bad decodeBurst values are TDM_BAD_ARGUMENT', async (t) => {
  for (const v of [0, 65, 1.5, '4']) {
    await t.rejects(loadModel(STORIES, { decodeBurst: v as number }), { code: 'TDM_BAD_ARGUMENT', message: /decodeBurst/ }, String(v));
  }
  process.env.TANDEM_DECODE_BURST = 'lots';
  await t.rejects(loadModel(STORIES, {}), { code: 'TDM_BAD_ARGUMENT', message: /TANDEM_DECODE_BURST must be an integer in \[1, 64\], got "lots"/ });
  process.env.TANDEM_DECODE_BURST = '3';
  const fromEnv = await loadModel(STORIES, { threads: 1 });
  t.equal(fromEnv.info.decodeBurst, 3, 'the environment sets the default');
  fromEnv.dispose();
  delete process.env.TANDEM_DECODE_BURST;
});
