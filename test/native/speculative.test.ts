// The executor's verification of drafted tokens (SequencePlan.numDraft) on a real model
// (stories260K): a step with guesses draws each position as one-token steps would have, greedy
// and sampled with penalties, and stops at the first draw that differs from its guess.
import t, { type Test } from 'tap';
import { native, type NativeModel } from '../../src/native/binding.js';
import type { SamplingParams, SequencePlan } from '../../src/native/step-plan.js';
import { modelPath, hparamsOf } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const PROMPT = [1, 403, 407, 261, 378, 322, 419, 11];
const TABLE = Int32Array.from({ length: 8 }, (_, i) => i);
const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };
const SAMPLED: SamplingParams = { temperature: 0.9, topK: 40, topP: 0.95, minP: 0.02, repeatPenalty: 1.3, presencePenalty: 0.2, frequencyPenalty: 0.1, seed: 7 };
const WINDOW = 6;

async function load(): Promise<NativeModel> {
  return native().loadModel(STORIES, { hparams: hparamsOf(STORIES), threads: 2, kvBlockTokens: 16, kvBlocks: { device: 0, host: 16 } });
}

function seq(tokens: number[], startPos: number, sampling: SamplingParams, history: number[], extra: Partial<SequencePlan> = {}): SequencePlan {
  const penalised = sampling.repeatPenalty !== 1 || sampling.presencePenalty !== 0 || sampling.frequencyPenalty !== 0;
  return {
    seqId: 1,
    tokens: Int32Array.from(tokens),
    startPos,
    blockTable: TABLE,
    kvTier: 'host',
    attention: 'cpu',
    sample: true,
    sampling,
    ...(penalised ? { recentTokens: Int32Array.from(history.slice(-WINDOW)) } : {}),
    ...extra,
  };
}

/** The prompt's continuation by n one-token steps. */
async function plain(m: NativeModel, sampling: SamplingParams, n: number): Promise<number[]> {
  const all = [...PROMPT];
  let r = await m.step({ strategy: 'cpu', copies: [], sequences: [seq(PROMPT, 0, sampling, all)] });
  all.push(r.sequences[0]!.token);
  while (all.length < PROMPT.length + n) {
    r = await m.step({ strategy: 'cpu', copies: [], sequences: [seq([all[all.length - 1]!], all.length - 1, sampling, all)] });
    all.push(r.sequences[0]!.token);
  }
  return all.slice(PROMPT.length);
}

/** From a fresh prefill, one step at the end of `reply[0..at)` guessing `guesses`; the draws it returns. */
async function verify(t: Test, m: NativeModel, sampling: SamplingParams, reply: number[], at: number, guesses: number[]): Promise<number[]> {
  const all = [...PROMPT, ...reply.slice(0, at)];
  await m.step({ strategy: 'cpu', copies: [], sequences: [{ ...seq(all.slice(0, -1), 0, sampling, all), sample: false }] });
  const plan = seq([all[all.length - 1]!, ...guesses], all.length - 1, sampling, all, { numDraft: guesses.length, ...(sampling === SAMPLED ? { penaltyWindow: WINDOW } : {}) });
  const r = (await m.step({ strategy: 'cpu', copies: [], sequences: [plan] })).sequences[0]!;
  t.equal(r.token, r.tokens?.[r.tokens.length - 1], 'token is the last draw');
  return Array.from(r.tokens ?? []);
}

t.test('right guesses are all accepted and the draw after them is the plain one', async (t) => {
  const m = await load();
  for (const [name, sampling] of [['greedy', GREEDY], ['sampled with penalties', SAMPLED]] as const) {
    const reply = await plain(m, sampling, 16);
    for (const at of [1, 5, 9]) {
      t.same(await verify(t, m, sampling, reply, at, reply.slice(at, at + 4)), reply.slice(at, at + 5), `${name}, 4 guesses after ${at} tokens`);
      t.same(await verify(t, m, sampling, reply, at, reply.slice(at, at + 1)), reply.slice(at, at + 2), `${name}, 1 guess after ${at} tokens`);
    }
  }
  m.dispose();
});

t.test('a wrong guess ends the run: the draws up to it, then the plain draw in its place', async (t) => {
  const m = await load();
  for (const [name, sampling] of [['greedy', GREEDY], ['sampled with penalties', SAMPLED]] as const) {
    const reply = await plain(m, sampling, 12);
    const wrong = (tok: number) => (tok + 1) % 512;
    t.same(await verify(t, m, sampling, reply, 3, [wrong(reply[3]!), reply[4]!, reply[5]!]), reply.slice(3, 4), `${name}: the first guess wrong`);
    t.same(await verify(t, m, sampling, reply, 3, [reply[3]!, reply[4]!, wrong(reply[5]!)]), reply.slice(3, 6), `${name}: the third guess wrong`);
  }
  m.dispose();
});

t.test('guesses the executor cannot verify are refused', async (t) => {
  const m = await load();
  const bad = async (p: Partial<SequencePlan>, re: RegExp, what: string) => {
    await t.rejects(m.step({ strategy: 'cpu', copies: [], sequences: [{ ...seq([1, 403, 407], 0, GREEDY, []), ...p }] }), { code: 'TDM_BAD_ARGUMENT', message: re }, what);
  };
  await bad({ numDraft: 3 }, /numDraft must be in \[0, 3\)/, 'as many guesses as tokens');
  await bad({ numDraft: 1, sample: false }, /needs sample/, 'without sampling');
  await bad({ numDraft: 1, returnLogits: true }, /returned logits/, 'with logits returned');
  await bad({ numDraft: 1, returnEmbeddings: true }, /returned logits or embeddings/, 'with embeddings returned');
  await bad({ numDraft: 1, sampling: { ...GREEDY, allowed: new Uint8Array(64).fill(255) } }, /allowed-token mask/, 'with a mask');
  await bad({ numDraft: 1, recentTokens: Int32Array.from([5, 6, 7]), penaltyWindow: 2 }, /penaltyWindow must cover/, 'a window shorter than the recent tokens');
  m.dispose();
});
