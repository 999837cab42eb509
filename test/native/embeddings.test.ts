// SequencePlan.returnEmbeddings on a real model (stories260K, f32): each processed token's
// hidden state after the output norm, the very rows the LM head multiplies, alone or beside
// returned logits and sampling, in one batch with other sequences and under every strategy of
// the CPU stand-in device.
import t from 'tap';
import { native, type NativeModel } from '../../src/native/binding.js';
import type { SequencePlan, Strategy } from '../../src/native/step-plan.js';
import { GgufFile } from '../../src/model/gguf.js';
import { modelPath, hparamsOf } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const PROMPT = [1, 403, 407, 261, 378, 322, 419, 11];
const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };

function outputMatrix(): { w: Float32Array; nEmbd: number; nVocab: number } {
  const f = GgufFile.open(STORIES);
  try {
    const bytes = f.tensorData('output.weight');
    const w = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    return { w, nEmbd: 64, nVocab: w.length / 64 };
  } finally {
    f.close();
  }
}

function seq(seqId: number, tokens: number[], blocks: number[], extra: Partial<SequencePlan> = {}): SequencePlan {
  return { seqId, tokens: Int32Array.from(tokens), startPos: 0, blockTable: Int32Array.from(blocks), kvTier: 'host', attention: 'cpu', sample: false, ...extra };
}

async function load(device?: 'cpu-standin'): Promise<NativeModel> {
  const kvBlocks = device ? { device: 8, host: 8 } : { device: 0, host: 16 };
  return native().loadModel(STORIES, { hparams: hparamsOf(STORIES), threads: 1, kvBlockTokens: 16, kvBlocks, ...(device ? { device } : {}) });
}

t.test('the rows returned are the head\'s input: times the output matrix they give the logits', async (t) => {
  const m = await load();
  t.teardown(() => m.dispose());
  const { w, nEmbd, nVocab } = outputMatrix();
  const step = await m.step({ strategy: 'cpu', copies: [], sequences: [seq(1, PROMPT, [0], { returnEmbeddings: true, returnAllLogits: true })] });
  const r = step.sequences[0]!;
  t.ok(step.phaseUs.hidden! > 0, 'their time is a phase of its own, apart from the head\'s');
  t.equal(r.embeddings?.length, PROMPT.length * nEmbd, 'a row per token');
  t.equal(r.allLogits?.length, PROMPT.length * nVocab);
  let worst = 0;
  for (let i = 0; i < PROMPT.length; i++) {
    const h = r.embeddings!.subarray(i * nEmbd, (i + 1) * nEmbd);
    for (let v = 0; v < nVocab; v++) {
      let dot = 0;
      for (let e = 0; e < nEmbd; e++) dot += h[e]! * w[v * nEmbd + e]!;
      worst = Math.max(worst, Math.abs(dot - r.allLogits![i * nVocab + v]!));
    }
  }
  t.ok(worst < 1e-4, `max |h · W - logits| ${worst.toExponential(2)}`);
});

t.test('alone, sampling beside it, in a batch with others: the same rows', async (t) => {
  const m = await load();
  t.teardown(() => m.dispose());
  const alone = (await m.step({ strategy: 'cpu', copies: [], sequences: [seq(1, PROMPT, [0], { returnEmbeddings: true })] })).sequences[0]!;
  t.equal(alone.allLogits, undefined, 'no logits asked for, none returned');
  t.equal(alone.token, -1);
  const sampled = (await m.step({ strategy: 'cpu', copies: [], sequences: [seq(1, PROMPT, [1], { returnEmbeddings: true, sample: true, sampling: GREEDY })] })).sequences[0]!;
  t.ok(sampled.token >= 0, 'a token drawn');
  t.same(sampled.embeddings, alone.embeddings, 'the same rows beside the head');
  const batch = await m.step({
    strategy: 'cpu',
    copies: [],
    sequences: [seq(2, [1, 300, 301], [2], { sample: true, sampling: GREEDY }), seq(3, PROMPT, [3], { returnEmbeddings: true }), seq(4, PROMPT.slice(0, 5), [4], { returnEmbeddings: true })],
  });
  t.equal(batch.sequences[0]!.embeddings, undefined, 'only the sequences that asked');
  t.same(batch.sequences[1]!.embeddings, alone.embeddings, 'the same rows in a batch');
  t.same(batch.sequences[2]!.embeddings, alone.embeddings!.subarray(0, 5 * 64), 'a shorter prompt: its rows (causal)');
});

t.test('every strategy of the stand-in device returns the CPU path\'s rows', async (t) => {
  const cpu = await load();
  const want = (await cpu.step({ strategy: 'cpu', copies: [], sequences: [seq(1, PROMPT, [0], { returnEmbeddings: true })] })).sequences[0]!.embeddings!;
  cpu.dispose();
  const m = await load('cpu-standin');
  t.teardown(() => m.dispose());
  const cases: [Strategy, 'host' | 'device', 'cpu' | 'gpu'][] = [['gpu-only', 'device', 'gpu'], ['overlap', 'host', 'cpu'], ['pipeline', 'host', 'cpu'], ['overlap', 'device', 'gpu']];
  for (const [i, [strategy, kvTier, attention]] of cases.entries()) {
    const r = await m.step({ strategy, copies: [], sequences: [seq(1, PROMPT, [i], { kvTier, attention, returnEmbeddings: true })] });
    const got = r.sequences[0]!.embeddings!;
    const d = got.reduce((x, v, k) => Math.max(x, Math.abs(v - want[k]!)), 0);
    t.ok(d < 1e-5, `${strategy}, ${kvTier} KV, ${attention} attention: max |diff| ${d.toExponential(2)}`);
  }
});
