// loadModel({ draftTokens }) end to end: speculative decoding with prompt-lookup guesses gives
// the tokens plain decoding gives (greedy, seeded sampling with penalties, several requests at
// once, stop strings), counts its guesses, and refuses what it cannot run.
import t from 'tap';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadModel, type GenerateOptions, type Model } from '../../src/api/index.js';
import { makeModel } from '../../src/model/synthetic.js';
import { native } from '../../src/native/binding.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const plainModel = await loadModel(STORIES, { threads: 1, contextSize: 256, maxSequences: 4 });
const specModel = await loadModel(STORIES, { threads: 1, contextSize: 256, maxSequences: 4, draftTokens: 3 });
t.teardown(() => {
  plainModel.dispose();
  specModel.dispose();
});

// Stories repeat their names and phrases: prompt lookup has something to guess from.
const PROMPTS = [
  'Once upon a time, there was a little girl named Lily. Lily liked to play. One day, Lily',
  'Tom and Sam went to the park. Tom saw a big dog. Sam saw a big dog too. Tom said',
  'The cat sat on the mat. The cat was happy. The cat',
];

async function reply(m: Model, prompt: string | readonly number[], options: GenerateOptions) {
  const gen = m.generate(prompt, options);
  let streamed = '';
  for await (const chunk of gen) streamed += chunk.text;
  const r = await gen.result;
  return { ...r, streamed };
}

t.test('replies equal plain decoding, greedy and sampled, one by one and together', async (t) => {
  t.equal(specModel.info.draftTokens, 3);
  t.equal(plainModel.info.draftTokens, 0);
  const settings: [string, GenerateOptions][] = [
    ['greedy', { maxTokens: 48, temperature: 0 }],
    ['sampled with penalties', { maxTokens: 48, temperature: 0.8, topK: 40, seed: 11, repeatPenalty: 1.2, frequencyPenalty: 0.1 }],
  ];
  let drafted = 0;
  let accepted = 0;
  for (const [name, options] of settings) {
    for (const prompt of PROMPTS) {
      const a = await reply(plainModel, prompt, options);
      const b = await reply(specModel, prompt, options);
      t.same(b.tokens, a.tokens, `${name}: ${JSON.stringify(prompt.slice(0, 20))}`);
      t.equal(b.streamed, b.text, 'the chunks add up to the text');
      t.equal(b.stopReason, a.stopReason);
      t.equal(a.metrics?.draftedTokens, 0);
      drafted += b.metrics?.draftedTokens ?? 0;
      accepted += b.metrics?.acceptedDrafts ?? 0;
    }
    // Together: a step holds a few tokens at most, so guesses are shared out.
    const together = await Promise.all(PROMPTS.map((p) => reply(specModel, p, options)));
    const alone = await Promise.all(PROMPTS.map((p) => reply(plainModel, p, options)));
    t.same(together.map((r) => r.tokens), alone.map((r) => r.tokens), `${name}: three requests at once`);
  }
  t.ok(drafted > 0, `guessed ${drafted} tokens`);
  t.ok(accepted > 0 && accepted <= drafted, `accepted ${accepted}`);
  const stats = specModel.stats;
  t.ok(stats.numAcceptedDrafts >= accepted && stats.numDraftTokens >= drafted, 'the model counts them too');
});

t.test('a stop string inside an accepted run ends the reply where plain decoding ends it', async (t) => {
  for (const prompt of PROMPTS) {
    const full = await reply(plainModel, prompt, { maxTokens: 40, temperature: 0 });
    // A stop string taken from the middle of the plain reply.
    const words = full.text.trim().split(/\s+/);
    if (words.length < 6) continue;
    const stop = ` ${words[4]}`;
    const a = await reply(plainModel, prompt, { maxTokens: 40, temperature: 0, stop: [stop] });
    const b = await reply(specModel, prompt, { maxTokens: 40, temperature: 0, stop: [stop] });
    t.equal(b.text, a.text, `stop ${JSON.stringify(stop)}`);
    t.equal(b.stopReason, 'stop');
  }
});

t.test('JSON mode and logprobs decode without guesses, with the same result', async (t) => {
  const prompt = PROMPTS[0]!;
  const a = await reply(plainModel, prompt, { maxTokens: 16, temperature: 0, logprobs: 2 });
  const b = await reply(specModel, prompt, { maxTokens: 16, temperature: 0, logprobs: 2 });
  t.same(b.tokens, a.tokens);
  t.same(b.logprobs, a.logprobs);
  t.equal(b.metrics?.draftedTokens, 0);
  const j = await reply(specModel, prompt, { maxTokens: 16, temperature: 0, responseFormat: { type: 'json_object' } });
  t.equal(j.metrics?.draftedTokens, 0);
});

t.test('bad draftTokens values and a device are refused', async (t) => {
  for (const bad of [-1, 1.5, 17, Number.NaN]) {
    await t.rejects(loadModel(STORIES, { draftTokens: bad }), { code: 'TDM_BAD_ARGUMENT' }, `draftTokens ${bad}`);
  }
  await t.rejects(loadModel(STORIES, { draftTokens: 2, device: 'cpu-standin' }), { code: 'TDM_UNSUPPORTED', message: /CPU path only/ });
});

t.test('a sliding-window model (gpt-oss) gives the same tokens with guesses', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-spec-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'oss.gguf');
  await makeModel({ architecture: 'gpt-oss', slidingWindow: 6, seed: 5 }, file);
  const a = await loadModel(file, { threads: 1, contextSize: 256, maxSequences: 2 });
  const b = await loadModel(file, { threads: 1, contextSize: 256, maxSequences: 2, draftTokens: 3 });
  t.teardown(() => {
    a.dispose();
    b.dispose();
  });
  t.ok(b.info.kvSlidingWindow > 0, 'its sliding layers keep blocks of their own');
  const ids = Array.from({ length: 24 }, (_, i) => 3 + (i % 6));
  let accepted = 0;
  const settings: GenerateOptions[] = [{ temperature: 0 }, { temperature: 0.9, seed: 2 }];
  for (const options of settings) {
    const x = await reply(a, ids, { ...options, maxTokens: 80, ignoreEos: true });
    const y = await reply(b, ids, { ...options, maxTokens: 80, ignoreEos: true });
    t.same(y.tokens, x.tokens);
    accepted += y.metrics?.acceptedDrafts ?? 0;
  }
  t.ok(accepted > 0, `guesses were accepted (${accepted}): the run crossed the window with guesses`);
});

const SIMD_KERNELS = (['avx512', 'avx2'] as const).filter((k) => native().backendOps.ids().includes(`cpu:${k}`));

t.test('a step holds 4 tokens with guesses on the AVX-512 kernels, 2 on the others', { skip: SIMD_KERNELS.length === 0 && 'neither AVX-512 nor AVX2 kernels on this processor' }, async (t) => {
  const kernels = SIMD_KERNELS;
  const prompt = PROMPTS[0]!;
  const want = await reply(plainModel, prompt, { maxTokens: 48, temperature: 0 });
  for (const cpuKernels of kernels) {
    const m = await loadModel(STORIES, { threads: 1, contextSize: 256, maxSequences: 4, draftTokens: 3, cpuKernels });
    let most = 0;
    const off = m.onStep((s) => {
      if (s.step > 1) most = Math.max(most, s.tokens);
    });
    const got = await reply(m, prompt, { maxTokens: 48, temperature: 0 });
    off();
    m.dispose();
    t.same(got.tokens, want.tokens, `${cpuKernels}: the same tokens`);
    t.ok(most > 1, `${cpuKernels}: some step held guesses (${most} tokens)`);
    t.ok(most <= (cpuKernels === 'avx512' ? 4 : 2), `${cpuKernels}: at most ${cpuKernels === 'avx512' ? 4 : 2} tokens a step (${most})`);
  }
});
