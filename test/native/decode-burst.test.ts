// Decode bursts (SequencePlan.decodeSteps) on a real model (stories260K): a step that draws k
// tokens in a row for each sequence draws what k one-token steps would, greedy, sampled and
// with penalties, with sequences of different bursts in one step; an interrupted burst stops
// after its first round; plans a burst cannot run are refused.
import t from 'tap';
import { native, type NativeModel } from '../../src/native/binding.js';
import type { SamplingParams, SequencePlan, StepPlan } from '../../src/native/step-plan.js';
import { modelPath, hparamsOf } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };
const SAMPLED: SamplingParams = { temperature: 0.9, topK: 40, topP: 0.95, minP: 0.02, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 7, logitBias: [{ token: 13, bias: 2 }] };
const PROMPTS = [
  [1, 403, 407, 261, 378, 322, 419, 11],
  [1, 365, 301, 268, 430],
  [1, 411, 260, 277, 259, 370, 263],
];
const SAMPLINGS = [GREEDY, SAMPLED, { ...SAMPLED, seed: 99, temperature: 1.2 }];
const BLOCKS_EACH = 4;

async function load(): Promise<NativeModel> {
  return native().loadModel(STORIES, { hparams: hparamsOf(STORIES), threads: 2, kvBlockTokens: 16, kvBlocks: { device: 0, host: 16 } });
}

function row(i: number, tokens: number[], startPos: number, extra: Partial<SequencePlan> = {}): SequencePlan {
  return {
    seqId: i + 1,
    tokens: Int32Array.from(tokens),
    startPos,
    blockTable: Int32Array.from({ length: BLOCKS_EACH }, (_, b) => i * BLOCKS_EACH + b),
    kvTier: 'host',
    attention: 'cpu',
    sample: true,
    sampling: SAMPLINGS[i]!,
    ...extra,
  };
}

const step = (m: NativeModel, sequences: SequencePlan[]) => m.step({ strategy: 'cpu', copies: [], sequences } satisfies StepPlan);

/** Each prompt's reply by one-token steps, all sequences in each step. */
async function plain(m: NativeModel, n: number): Promise<number[][]> {
  const all = PROMPTS.map((p) => [...p]);
  let r = await step(m, PROMPTS.map((p, i) => row(i, p, 0)));
  r.sequences.forEach((s, i) => all[i]!.push(s.token));
  for (let k = 1; k < n; k++) {
    r = await step(m, all.map((a, i) => row(i, [a[a.length - 1]!], a.length - 1)));
    r.sequences.forEach((s, i) => all[i]!.push(s.token));
  }
  return all.map((a, i) => a.slice(PROMPTS[i]!.length));
}

t.test('a burst draws what as many one-token steps draw, sequences of different bursts together', async (t) => {
  const m = await load();
  const want = await plain(m, 20);
  const all = PROMPTS.map((p) => [...p]);
  const first = await step(m, PROMPTS.map((p, i) => row(i, p, 0)));
  first.sequences.forEach((s, i) => all[i]!.push(s.token));
  // Bursts of unequal length: shorter ones drop out of the later rounds.
  for (const bursts of [[5, 3, 1], [4, 4, 4], [1, 6, 2], [3, 1, 5]]) {
    const r = await step(m, all.map((a, i) => row(i, [a[a.length - 1]!], a.length - 1, { decodeSteps: bursts[i] })));
    r.sequences.forEach((s, i) => {
      const draws = bursts[i]! > 1 ? Array.from(s.tokens ?? []) : [s.token];
      t.equal(draws.length, bursts[i], `sequence ${i + 1}: ${bursts[i]} draws`);
      t.equal(s.token, draws[draws.length - 1], 'token is the last draw');
      all[i]!.push(...draws);
    });
    t.ok(r.totalUs > 0 && r.phaseUs.linear! > 0, 'times summed over the rounds');
  }
  all.forEach((a, i) => t.same(a.slice(PROMPTS[i]!.length, PROMPTS[i]!.length + 20), want[i]!.slice(0, a.length - PROMPTS[i]!.length), `sequence ${i + 1} (${['greedy', 'sampled', 'sampled, other seed'][i]})`));
  m.dispose();
});

t.test('plans a burst cannot run are refused with what is wrong', async (t) => {
  const m = await load();
  await step(m, [row(0, PROMPTS[0]!, 0, { sample: false })]);
  const last = [PROMPTS[0]![PROMPTS[0]!.length - 1]!];
  const at = PROMPTS[0]!.length - 1;
  const cases: [string, Partial<SequencePlan>, RegExp][] = [
    ['zero', { decodeSteps: 0 }, /decodeSteps/],
    ['above the bound', { decodeSteps: 65 }, /decodeSteps/],
    ['a fraction', { decodeSteps: 2.5 }, /decodeSteps/],
    ['without sampling', { decodeSteps: 2, sample: false }, /decodeSteps above 1 needs a decode: one token, and sample/],
    ['two tokens', { decodeSteps: 2, tokens: Int32Array.from([5, 6]) }, /decodeSteps above 1 needs a decode/],
    ['prompt logits', { decodeSteps: 2, returnAllLogits: true }, /drafts or returnAllLogits/],
    ['embeddings', { decodeSteps: 2, returnEmbeddings: true }, /decodeSteps above 1 cannot be combined with returnEmbeddings/],
    ['penalties without their window', { decodeSteps: 2, recentTokens: Int32Array.from([5, 6]), penaltyWindow: 1 }, /penaltyWindow must cover the recentTokens given with decodeSteps/],
    ['a mask', { decodeSteps: 2, sampling: { ...GREEDY, allowed: new Uint8Array(64).fill(255) } }, /decodeSteps above 1 cannot be combined with an allowed-token mask/],
    ['a table short of the burst', { decodeSteps: 60, blockTable: Int32Array.from([0, 1, 2, 3]) }, /blockTable has 4 blocks but positions \[0, 67\) need 5/],
  ];
  for (const [name, extra, message] of cases) {
    await t.rejects(step(m, [row(0, last, at, extra)]), { code: 'TDM_BAD_ARGUMENT', message }, name);
  }
  // The KV of the positions a refused burst would have written was not touched: a plain step still draws.
  const r = await step(m, [row(0, last, at, { decodeSteps: 2 })]);
  t.equal(r.sequences[0]!.tokens?.length, 2);
  m.dispose();
});

t.test('with penalties the window moves on with each draw, as one-token steps move it', async (t) => {
  const m = await load();
  const PEN: SamplingParams = { temperature: 0.9, topK: 40, topP: 0.95, minP: 0.02, repeatPenalty: 1.4, presencePenalty: 0.3, frequencyPenalty: 0.2, seed: 21 };
  for (const window of [6, 64]) {
    const prompt = PROMPTS[0]!;
    const pen = (all: number[], extra: Partial<SequencePlan> = {}) => row(0, [all[all.length - 1]!], all.length - 1, { sampling: PEN, recentTokens: Int32Array.from(all.slice(-window)), ...extra });
    // One-token steps.
    const all = [...prompt];
    all.push((await step(m, [row(0, prompt, 0, { sampling: PEN })])).sequences[0]!.token);
    for (let k = 0; k < 12; k++) all.push((await step(m, [pen(all)])).sequences[0]!.token);
    // The same from the first draw, in bursts of 5, 4 and 3.
    const burst = all.slice(0, prompt.length + 1);
    for (const k of [5, 4, 3]) {
      const r = await step(m, [pen(burst, { decodeSteps: k, penaltyWindow: window })]);
      burst.push(...Array.from(r.sequences[0]!.tokens ?? []));
    }
    t.same(burst, all, `window ${window}: the same draws`);
  }
  m.dispose();
});

t.test('an interrupted burst stops after a whole round, with the draws of that many steps; the next step is not interrupted', async (t) => {
  const m = await native().loadModel(STORIES, { hparams: hparamsOf(STORIES), threads: 1, kvBlockTokens: 16, kvBlocks: { device: 0, host: 8 } });
  const prompt = PROMPTS[1]!;
  const long = (tokens: number[], startPos: number, extra: Partial<SequencePlan> = {}): SequencePlan => ({ ...row(1, tokens, startPos, extra), blockTable: Int32Array.from({ length: 8 }, (_, b) => b) });
  const all = [...prompt];
  all.push((await step(m, [long(prompt, 0)])).sequences[0]!.token);
  for (let k = 0; k < 70; k++) all.push((await step(m, [long([all.at(-1)!], all.length - 1)])).sequences[0]!.token);
  // A burst of 60 rounds takes milliseconds; the interrupt follows the call at once. The
  // worker thread may still win the race on a loaded machine, hence three tries.
  let stopped = 0;
  for (let attempt = 0; attempt < 3 && stopped === 0; attempt++) {
    const at = prompt.length;
    const pending = step(m, [long([all[at]!], at, { decodeSteps: 60 })]);
    m.interruptBurst();
    const r = await pending;
    const draws = Array.from(r.sequences[0]!.tokens ?? []);
    t.equal(draws.length, r.rounds, 'a draw a round');
    t.same(draws, all.slice(at + 1, at + 1 + draws.length), 'the draws of as many one-token steps');
    if (r.rounds! < 60) stopped = r.rounds!;
  }
  t.ok(stopped >= 1, `the burst stopped after ${stopped} of 60 rounds`);
  const at = prompt.length;
  const whole = await step(m, [long([all[at]!], at, { decodeSteps: 60 })]);
  t.equal(whole.rounds, 60, 'the next burst ran whole: an interrupt belongs to its step');
  t.same(Array.from(whole.sequences[0]!.tokens ?? []), all.slice(at + 1, at + 61));
  m.dispose();
});

t.test('a burst ends at a stop token for its sequence alone', async (t) => {
  const m = await load();
  const want = await plain(m, 10);
  const all = PROMPTS.map((p) => [...p]);
  (await step(m, PROMPTS.map((p, i) => row(i, p, 0)))).sequences.forEach((s, i) => all[i]!.push(s.token));
  // Sequence 1 stops at its third draw of the burst; the others run on (their stop tokens are never drawn).
  const stop = want[0]![3]!;
  const stops = [Int32Array.of(stop), Int32Array.of(-5), new Int32Array(0)];
  const r = await step(m, all.map((a, i) => row(i, [a[a.length - 1]!], a.length - 1, { decodeSteps: 6, stopTokens: stops[i] })));
  t.same(Array.from(r.sequences[0]!.tokens ?? []), want[0]!.slice(1, 4), 'sequence 1: draws up to its stop token');
  t.same(Array.from(r.sequences[1]!.tokens ?? []), want[1]!.slice(1, 7), 'sequence 2: the whole burst');
  t.same(Array.from(r.sequences[2]!.tokens ?? []), want[2]!.slice(1, 7), 'sequence 3: the whole burst');
  t.equal(r.rounds, 6);
  await t.rejects(step(m, [row(0, [1], 40, { decodeSteps: 2, stopTokens: [2] as unknown as Int32Array })]), { code: 'TDM_BAD_ARGUMENT', message: /stopTokens must be an Int32Array/ });
  m.dispose();
});

t.test('a burst that returns logits returns a row for each draw, as single steps return them', async (t) => {
  const m = await load();
  const all = [...PROMPTS[1]!];
  all.push((await step(m, [row(1, all, 0)])).sequences[0]!.token);
  const at = all.length - 1;
  const rows: Float32Array[] = [];
  for (let k = 0; k < 4; k++) {
    const r = (await step(m, [row(1, [all.at(-1)!], all.length - 1, { returnLogits: true })])).sequences[0]!;
    rows.push(r.logits!);
    all.push(r.token);
  }
  const b = (await step(m, [row(1, [all[at]!], at, { decodeSteps: 4, returnLogits: true })])).sequences[0]!;
  t.same(Array.from(b.tokens ?? []), all.slice(at + 1));
  t.equal(b.logits?.length, 4 * rows[0]!.length, 'a row per draw');
  let diff = 0;
  rows.forEach((r, i) => r.forEach((v, j) => (diff = Math.max(diff, Math.abs(v - b.logits![i * r.length + j]!)))));
  t.equal(diff, 0, 'the rows single steps return, bit for bit');
  m.dispose();
});
