// End-to-end forward pass on a real model (stories260K, llama, F32) against llama.cpp
// (node-llama-cpp 3.21.1, CPU): greedy continuations token for token, teacher-forced
// probabilities, and the executor's own invariants (prefill = decode, batch = alone, block
// swaps, errors).
import t from 'tap';
import { getLlama, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { native, type NativeModel } from '../../src/native/binding.js';
import type { SequencePlan, StepPlan } from '../../src/native/step-plan.js';
import { modelPath, hparamsOf } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const BOS = 1;
const BLOCK_TOKENS = 16;


async function load(path: string, blocks = { device: 16, host: 64 }): Promise<NativeModel> {
  return native().loadModel(path, { hparams: hparamsOf(path), threads: 2, kvBlockTokens: BLOCK_TOKENS, kvBlocks: blocks });
}

type SeqSpec = Omit<Partial<SequencePlan>, 'tokens' | 'blockTable'> & { tokens: number[]; blockTable: number[] };

function seq(p: SeqSpec): SequencePlan {
  return {
    seqId: p.seqId ?? 1,
    tokens: Int32Array.from(p.tokens),
    startPos: p.startPos ?? 0,
    blockTable: Int32Array.from(p.blockTable),
    kvTier: p.kvTier ?? 'host',
    attention: p.attention ?? 'cpu',
    sample: p.sample ?? true,
    returnLogits: p.returnLogits,
    returnAllLogits: p.returnAllLogits,
  };
}

function plan(sequences: SequencePlan[], copies: StepPlan['copies'] = []): StepPlan {
  return { strategy: 'cpu', copies, sequences };
}

/** Greedy continuation of `prompt` by n tokens, one sequence, prefill then one token per step. */
async function greedy(m: NativeModel, prompt: number[], n: number, table: number[]): Promise<number[]> {
  const out: number[] = [];
  let r = await m.step(plan([seq({ tokens: prompt, blockTable: table })]));
  out.push(r.sequences[0].token);
  let pos = prompt.length;
  while (out.length < n) {
    r = await m.step(plan([seq({ tokens: [out[out.length - 1]], startPos: pos, blockTable: table })]));
    pos += 1;
    out.push(r.sequences[0].token);
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function softmax(logits: Float32Array, offset: number, n: number): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, logits[offset + i]);
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp(logits[offset + i] - mx);
  for (let i = 0; i < n; i++) p[i] /= sum;
  return p;
}

const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

t.test('stories260K greedy continuations equal llama.cpp token for token (64 tokens, several prompts)', async (t) => {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const ref = await llama.loadModel({ modelPath: STORIES });
  const ctx = await ref.createContext({ contextSize: 256, threads: 1 });
  const m = await load(STORIES);
  const prompts: number[][] = [
    [BOS, 403, 407, 261, 378], // "Once upon a time"
    [BOS, ...ref.tokenize('Lily went to the park')],
    [BOS, ...ref.tokenize('The little dog was sad because')],
  ];
  for (const prompt of prompts) {
    const sequence = ctx.getSequence();
    const expected: number[] = [];
    for await (const tok of sequence.evaluate(prompt as Token[], { temperature: 0 })) {
      expected.push(tok);
      if (expected.length >= 64) break;
    }
    sequence.dispose();
    const got = await greedy(m, prompt, 64, range(0, 6));
    t.same(got, expected, `prompt ${JSON.stringify(prompt)}: ${ref.detokenize(got as Token[]).slice(0, 60)}...`);
  }
  const first = await greedy(m, prompts[0], 64, range(0, 6));
  t.match(ref.detokenize(first as Token[]), /^, there was a little girl named Lily\. She loved to play outside in the park\./);
  m.dispose();
  await ctx.dispose();
  await ref.dispose();
});

t.test('stories260K teacher-forced probabilities track llama.cpp', async (t) => {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const ref = await llama.loadModel({ modelPath: STORIES });
  const ctx = await ref.createContext({ contextSize: 256, threads: 1 });
  const sequence = ctx.getSequence();
  const m = await load(STORIES);
  const text = [BOS, ...ref.tokenize('Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
    'One day, she saw a big, red ball. She wanted to play with it, but it was too high. Lily asked her mom to help her.')];
  const tokens = text.slice(0, 64);
  t.equal(tokens.length, 64);
  const refOut = await sequence.controlledEvaluate(tokens.map((tok) => [tok as Token, { generateNext: { probabilities: true } }]));
  const r = await m.step(plan([seq({ tokens, blockTable: range(0, 4), sample: false, returnAllLogits: true })]));
  const all = r.sequences[0].allLogits!;
  const V = m.info.nVocab;
  let maxKl = 0;
  let agree = 0;
  for (let i = 0; i < tokens.length; i++) {
    const p = softmax(all, i * V, V);
    const q = refOut[i]!.next.probabilities!;
    let kl = 0;
    let top = 0;
    for (let v = 0; v < V; v++) {
      const qv = Math.max(q.get(v as Token) ?? 0, 1e-30);
      if (p[v] > 0) kl += p[v] * Math.log(p[v] / qv);
      if (p[v] > p[top]) top = v;
    }
    maxKl = Math.max(maxKl, kl);
    if (top === q.entries().next().value![0]) agree++;
  }
  t.comment(`stories260K, ${tokens.length} positions: max KL ${maxKl.toExponential(2)}, top-1 agreement ${agree}/${tokens.length}`);
  // Both run f32 weights with f16 KV; what is left is summation order and llama.cpp's f16 V accumulation.
  t.ok(maxKl < 1e-4, `max KL ${maxKl} < 1e-4`);
  t.equal(agree, tokens.length, 'top-1 agrees at every position');
  m.dispose();
  await ctx.dispose();
  await ref.dispose();
});

t.test('prefill of many tokens equals token-by-token decode', async (t) => {
  const m = await load(STORIES);
  const tokens = [BOS, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267];
  const pre = await m.step(plan([seq({ tokens, blockTable: [3, 9], sample: false, returnAllLogits: true })]));
  const all = pre.sequences[0].allLogits!;
  const V = m.info.nVocab;
  t.equal(all.length, tokens.length * V);
  let worst = 0;
  for (let i = 0; i < tokens.length; i++) {
    const r = await m.step(plan([seq({ tokens: [tokens[i]], startPos: i, blockTable: [5, 7], sample: false, returnLogits: true })]));
    worst = Math.max(worst, maxAbsDiff(r.sequences[0].logits!, all.subarray(i * V, (i + 1) * V)));
  }
  // The kernels are batch-invariant (a row's sums never depend on the rest of the batch), so equal means equal.
  t.equal(worst, 0, 'prefill logits equal decode logits exactly');
  // Chunked prefill (two chunks) lands on the same last-token logits.
  await m.step(plan([seq({ tokens: tokens.slice(0, 13), blockTable: [11, 12], sample: false })]));
  const chunk = await m.step(plan([seq({ tokens: tokens.slice(13), startPos: 13, blockTable: [11, 12], sample: false, returnLogits: true })]));
  t.equal(maxAbsDiff(chunk.sequences[0].logits!, all.subarray((tokens.length - 1) * V)), 0, 'chunked prefill matches');
  m.dispose();
});

t.test('a batch of sequences equals each sequence alone (mixed prefill and decode, scattered blocks, both tiers)', async (t) => {
  const m = await load(STORIES);
  const V = m.info.nVocab;
  const a = [BOS, 403, 407, 261, 378, 432, 383];
  const b = [BOS, 317, 263, 377, 267, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337];
  const c = [BOS, 291, 400, 428];
  // Warm c's cache so that its step below is a one-token decode at position 4.
  await m.step(plan([seq({ seqId: 3, tokens: c, blockTable: [0], kvTier: 'device', sample: false })]));
  const batch = await m.step(plan([
    seq({ seqId: 1, tokens: a, blockTable: [7], returnLogits: true }),
    seq({ seqId: 2, tokens: b, blockTable: [2, 40], returnLogits: true }),
    seq({ seqId: 3, tokens: [432], startPos: 4, blockTable: [0], kvTier: 'device', returnLogits: true }),
  ]));
  t.same(batch.sequences.map((s) => s.seqId), [1, 2, 3]);
  const alone = [
    await m.step(plan([seq({ seqId: 1, tokens: a, blockTable: [20], returnLogits: true })])),
    await m.step(plan([seq({ seqId: 2, tokens: b, blockTable: [21, 22], returnLogits: true })])),
  ];
  await m.step(plan([seq({ seqId: 3, tokens: c, blockTable: [5], kvTier: 'device', sample: false })]));
  alone.push(await m.step(plan([seq({ seqId: 3, tokens: [432], startPos: 4, blockTable: [5], kvTier: 'device', returnLogits: true })])));
  for (let i = 0; i < 3; i++) {
    const d = maxAbsDiff(batch.sequences[i].logits!, alone[i].sequences[0].logits!);
    t.equal(d, 0, `sequence ${i + 1}: same logits in the batch as alone`);
    t.equal(batch.sequences[i].token, alone[i].sequences[0].token, `sequence ${i + 1}: same sampled token`);
    t.equal(batch.sequences[i].logits!.length, V);
  }
  t.ok(batch.totalUs > 0 && batch.phaseUs.linear > 0 && batch.phaseUs.attention > 0, 'phase timings are reported');
  m.dispose();
});

t.test('block copies swap a sequence between tiers and its decode continues unchanged', async (t) => {
  const m = await load(STORIES);
  const tokens = [BOS, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396];
  const prefill = tokens.slice(0, 18);
  await m.step(plan([seq({ tokens: prefill, blockTable: [4, 6], sample: false })]));
  const direct = await m.step(plan([seq({ tokens: [tokens[18]], startPos: 18, blockTable: [4, 6], returnLogits: true })]));
  // Swap both blocks out to the device tier (blocks 9 and 1), then decode from there.
  await m.step(plan([seq({ tokens: prefill, blockTable: [4, 6], sample: false })]));
  const swapped = await m.step(plan(
    [seq({ tokens: [tokens[18]], startPos: 18, blockTable: [9, 1], kvTier: 'device', returnLogits: true })],
    [{ fromTier: 'host', fromBlock: 4, toTier: 'device', toBlock: 9 }, { fromTier: 'host', fromBlock: 6, toTier: 'device', toBlock: 1 }],
  ));
  t.equal(maxAbsDiff(direct.sequences[0].logits!, swapped.sequences[0].logits!), 0, 'same logits after a swap');
  t.equal(swapped.sequences[0].token, direct.sequences[0].token);
  const onlyCopies = await m.step(plan([], [{ fromTier: 'device', fromBlock: 9, toTier: 'device', toBlock: 2 }]));
  t.same(onlyCopies.sequences, [], 'a plan with only copies runs');
  m.dispose();
});

t.test('native sampling: seeded draws repeat, top-k 1 is greedy, and the GPU attention slot falls back to the CPU', async (t) => {
  const m = await load(STORIES);
  const prompt = [BOS, 403, 407, 261, 378];
  const sampling = { temperature: 1.2, topK: 0, topP: 0.95, minP: 0, repeatPenalty: 1.1, presencePenalty: 0, frequencyPenalty: 0, seed: 42 };
  const run = async (extra: Partial<SequencePlan>, blocks: number[]) => {
    const s = { ...seq({ tokens: prompt, blockTable: blocks, returnLogits: true }), ...extra };
    return (await m.step(plan([s]))).sequences[0];
  };
  const a = await run({ sampling, recentTokens: Int32Array.from(prompt) }, [0]);
  const b = await run({ sampling, recentTokens: Int32Array.from(prompt) }, [1]);
  t.equal(a.token, b.token, 'same seed and position, same token');
  const draws = new Set<number>();
  for (let seed = 0; seed < 12; seed++) draws.add((await run({ sampling: { ...sampling, temperature: 3, topP: 1, seed } }, [2])).token);
  t.ok(draws.size > 1, `seeds change hot draws (${draws.size} distinct tokens from 12 seeds)`);
  const greedy = await run({}, [3]);
  const top1 = await run({ sampling: { ...sampling, topK: 1, seed: 7 } }, [4]);
  t.equal(top1.token, greedy.token, 'top-k 1 picks the argmax');
  let best = 0;
  for (let v = 1; v < greedy.logits!.length; v++) if (greedy.logits![v] > greedy.logits![best]) best = v;
  t.equal(greedy.token, best, 'no sampling params means greedy');
  const gpu = await run({ attention: 'gpu', kvTier: 'device' }, [5]);
  t.same(m.info.backends, ['cpu']);
  t.equal(maxAbsDiff(gpu.logits!, greedy.logits!), 0, "attention 'gpu' with no GPU backend runs on the CPU backend and gives the same logits");
  m.dispose();
});

t.test('bad plans reject with a typed error and leave the model usable', async (t) => {
  const m = await load(STORIES, { device: 2, host: 4 });
  const good = plan([seq({ tokens: [BOS, 403], blockTable: [0] })]);
  await t.rejects(m.step(plan([seq({ tokens: [BOS], blockTable: [4] })])), { code: 'TDM_BAD_ARGUMENT', message: /block id 4 is outside the host tier's 4 blocks/ });
  await t.rejects(m.step(plan([seq({ tokens: [BOS], blockTable: [2], kvTier: 'device' })])), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(m.step(plan([seq({ tokens: [BOS, 2, 3], startPos: 15, blockTable: [0] })])), { code: 'TDM_BAD_ARGUMENT', message: /need 2/ });
  await t.rejects(m.step(plan([seq({ tokens: [512], blockTable: [0] })])), { code: 'TDM_BAD_ARGUMENT', message: /token id 512/ });
  await t.rejects(m.step(plan([seq({ tokens: [], blockTable: [0] })])), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(m.step(plan([seq({ seqId: 1, tokens: [BOS], blockTable: [0] }), seq({ seqId: 1, tokens: [BOS], blockTable: [1] })])), { code: 'TDM_BAD_ARGUMENT', message: /twice/ });
  await t.rejects(m.step(plan([seq({ seqId: 1, tokens: [BOS], blockTable: [0] }), seq({ seqId: 2, tokens: [BOS], blockTable: [0] })])), { code: 'TDM_BAD_ARGUMENT', message: /also writes/ });
  await t.rejects(m.step(plan([seq({ tokens: range(0, 20), blockTable: [1, 1] })])), { code: 'TDM_BAD_ARGUMENT', message: /twice/ });
  await t.rejects(m.step(plan([seq({ seqId: 1, tokens: [BOS, 2], startPos: 16, blockTable: [0, 1] }), seq({ seqId: 2, tokens: [BOS], startPos: 0, blockTable: [1] })])), { code: 'TDM_BAD_ARGUMENT', message: /also writes/ });
  await t.rejects(m.step(plan([seq({ seqId: 1, tokens: [BOS], startPos: 16, blockTable: [0, 1] }), seq({ seqId: 2, tokens: [BOS], startPos: 16, blockTable: [1, 2] })])), { code: 'TDM_BAD_ARGUMENT', message: /reads KV block 1/ });
  await m.step(plan([seq({ tokens: range(1, 17), blockTable: [0], sample: false })]));
  const shared = await m.step(plan([seq({ seqId: 1, tokens: [403], startPos: 16, blockTable: [0, 1] }), seq({ seqId: 2, tokens: [407], startPos: 16, blockTable: [0, 2] })]));
  t.ok(shared.sequences.every((s) => s.token >= 0), 'two sequences may read one shared prefix block');
  await t.rejects(m.step(plan([], [{ fromTier: 'host', fromBlock: 0, toTier: 'device', toBlock: 7 }])), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(m.step({ strategy: 'fast', copies: [], sequences: [] } as unknown as StepPlan), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(m.step({ ...good, sequences: [{ ...good.sequences[0], tokens: [1, 2] as unknown as Int32Array }] }), { code: 'TDM_BAD_ARGUMENT', message: /Int32Array/ });
  // The messages name the field's place in the plan.
  const bad = (s: object) => m.step({ ...good, sequences: [good.sequences[0], { ...good.sequences[0], seqId: 9, ...s }] } as unknown as StepPlan);
  await t.rejects(bad({ kvTier: 'gpu' }), { code: 'TDM_BAD_ARGUMENT', message: "plan.sequences[1].kvTier must be 'device' or 'host'" });
  await t.rejects(bad({ attention: 7 }), { code: 'TDM_BAD_ARGUMENT', message: 'plan.sequences[1].attention must be a string' });
  await t.rejects(bad({ startPos: 1.5 }), { code: 'TDM_BAD_ARGUMENT', message: 'plan.sequences[1].startPos must be an integer in [0, 2147483647]' });
  await t.rejects(bad({ sample: 1 }), { code: 'TDM_BAD_ARGUMENT', message: 'plan.sequences[1].sample must be a boolean' });
  const sampling = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 1 };
  await t.rejects(bad({ sampling: { ...sampling, topP: 'x' } }), { code: 'TDM_BAD_ARGUMENT', message: 'plan.sequences[1].sampling.topP must be a number' });
  await t.rejects(bad({ sampling: { ...sampling, logitBias: [{ token: 1, bias: 0 }, { token: 2 }] } }), { code: 'TDM_BAD_ARGUMENT', message: 'plan.sequences[1].sampling.logitBias[1].bias must be a number' });
  await t.rejects(bad({ sampling: { ...sampling, allowed: [1] } }), { code: 'TDM_BAD_ARGUMENT', message: 'plan.sequences[1].sampling.allowed must be a Uint8Array' });
  await t.rejects(m.step({ ...good, copies: [{ fromTier: 'host', fromBlock: 0, toTier: 'disk', toBlock: 1 }] } as unknown as StepPlan), { code: 'TDM_BAD_ARGUMENT', message: "plan.copies[0].toTier must be 'device' or 'host'" });
  await t.rejects(m.step({ ...good, sequences: [null] } as unknown as StepPlan), { code: 'TDM_BAD_ARGUMENT', message: 'plan.sequences[0] must be an object' });
  await t.rejects(m.step({ ...good, sequences: [{ ...good.sequences[0], sampling: { temperature: -1, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 1 } }] }), { code: 'TDM_BAD_ARGUMENT' });
  const ok = await m.step(good);
  t.ok(ok.sequences[0].token >= 0, 'the model still runs after rejected plans');

  const first = m.step(good);
  await t.rejects(m.step(good), { code: 'TDM_BAD_ARGUMENT', message: /another step/ });
  await first;
  const inFlight = m.step(good);
  m.dispose();
  t.ok((await inFlight).sequences[0].token >= 0, 'a step in flight when dispose() is called still completes');
  await t.rejects(m.step(good), { code: 'TDM_DISPOSED' });
  t.equal(m.info.nVocab, 512, 'info stays readable after dispose');
});

t.test('loadModel rejects bad configs and files with typed errors', async (t) => {
  const hp = hparamsOf(STORIES);
  const cfg = { hparams: hp, threads: 1, kvBlockTokens: 16, kvBlocks: { device: 0, host: 4 } };
  await t.rejects(native().loadModel('/no/such/model.gguf', cfg), { code: 'TDM_NOT_FOUND' });
  await t.rejects(native().loadModel(STORIES, { ...cfg, hparams: { ...hp, nEmbd: 32 } }), { code: 'TDM_BAD_GGUF', message: /token_embd\.weight/ });
  await t.rejects(native().loadModel(STORIES, { ...cfg, hparams: { ...hp, architecture: 'gpt2' as 'llama' } }), { code: 'TDM_UNSUPPORTED', message: /gpt2/ });
  await t.rejects(native().loadModel(STORIES, { ...cfg, hparams: { ...hp, nHeadKv: 3 } }), { code: 'TDM_BAD_ARGUMENT', message: /multiple of nHeadKv/ });
  await t.rejects(native().loadModel(STORIES, { ...cfg, hparams: { ...hp, yarnExtFactor: 1, yarnOrigCtx: 0 } }), { code: 'TDM_BAD_ARGUMENT', message: /yarnOrigCtx/ });
  await t.rejects(native().loadModel(STORIES, { ...cfg, hparams: { ...hp, ropeAttnFactor: 0 } }), { code: 'TDM_BAD_ARGUMENT', message: /ropeAttnFactor/ });
  await t.rejects(native().loadModel(STORIES, { ...cfg, kvBlocks: { device: 0, host: 0 } }), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(native().loadModel(STORIES, { ...cfg, threads: 0 }), { code: 'TDM_BAD_ARGUMENT' });
  const fractions: number[] = [];
  const m = await native().loadModel(STORIES, { ...cfg, onProgress: (f) => fractions.push(f) });
  t.ok(fractions.length > 0 && fractions[fractions.length - 1] === 1, 'progress ends at 1');
  t.ok(fractions.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f >= fractions[i - 1])), 'progress is monotone in [0, 1]');
  t.same(m.info.backends, ['cpu']);
  // 5 layers x (K + V) x 4 KV heads x 16 positions x 8 dims x 2 bytes (f16).
  t.equal(m.info.kvBlockBytes, 5 * 2 * 4 * 16 * 8 * 2);
  m.dispose();
  await t.rejects(native().loadModel(STORIES, { ...cfg, onProgress: () => { throw new Error('boom'); } }), { message: /boom/ });
});
