// The ceiling of speculative decoding on one model: decode speed when every guess is right, as
// a reply that copies its prompt would have it. A greedy reply is made with one-token steps,
// then made again with steps that guess its next k tokens (all of them right, so each step
// yields k + 1 tokens); both are timed, and the second must give the same tokens.
//
//   node bench/speculative/ceiling.mjs --model FILE [--threads 1] [--tokens 64] [--draft 1,2,3] [--rounds 3]
//                                      [--cpu-kernels avx2]
//
// Needs a build (dist/). Prompt lookup reaches this only where its guesses are all right.
import { native } from '../../dist/native/binding.js';
import { GgufFile } from '../../dist/model/gguf.js';
import { describeModel } from '../../dist/model/describe.js';

const opt = { model: '', threads: '1', tokens: '64', draft: '1,2,3', rounds: '3', 'cpu-kernels': 'auto' };
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const key = args[i].replace(/^--/, '');
  if (!(key in opt) || i + 1 >= args.length) {
    console.error('usage: ceiling.mjs --model FILE [--threads N] [--tokens N] [--draft LIST] [--rounds N] [--cpu-kernels K]');
    process.exit(2);
  }
  opt[key] = args[++i];
}
const f = GgufFile.open(opt.model);
const hp = describeModel(f).hparams;
f.close();
const BLOCK = 16;
const n = Number(opt.tokens);
const prompt = Array.from({ length: 16 }, (_, i) => 100 + 37 * i);
const blocks = Math.ceil((prompt.length + n + 16) / BLOCK);
const m = await native().loadModel(opt.model, { hparams: hp, threads: Number(opt.threads), kvBlockTokens: BLOCK, kvBlocks: { device: 0, host: blocks },
  ...(opt['cpu-kernels'] !== 'auto' ? { cpuVariant: opt['cpu-kernels'] } : {}) });
const table = Int32Array.from({ length: blocks }, (_, i) => i);
const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };
const step = (tokens, startPos, numDraft) => m.step({
  strategy: 'cpu', copies: [],
  sequences: [{ seqId: 1, tokens: Int32Array.from(tokens), startPos, blockTable: table, kvTier: 'host', attention: 'cpu', sample: true, sampling: GREEDY, ...(numDraft ? { numDraft } : {}) }],
});

/** The reply after the prompt, k guesses a step from `known` (k = 0: one-token steps); tokens/s after the first. */
async function reply(k, known) {
  const out = [(await step(prompt, 0)).sequences[0].token];
  const t0 = performance.now();
  while (out.length < n) {
    const guesses = k > 0 ? known.slice(out.length, Math.min(out.length + k, n - 1)) : [];
    const r = (await step([out[out.length - 1], ...guesses], prompt.length + out.length - 1, guesses.length)).sequences[0];
    out.push(...(guesses.length > 0 ? r.tokens : [r.token]));
  }
  return { tokens: out.slice(0, n), tokPerS: (n - 1) / ((performance.now() - t0) / 1000) };
}

const base = await reply(0, []);
const drafts = opt.draft.split(',').map(Number);
const speeds = new Map([[0, []], ...drafts.map((k) => [k, []])]);
let same = true;
for (let r = 0; r < Number(opt.rounds); r++) {
  for (const k of [0, ...drafts]) {
    const x = await reply(k, base.tokens);
    if (x.tokens.join() !== base.tokens.join()) same = false;
    speeds.get(k).push(x.tokens.length > 0 ? x.tokPerS : 0);
  }
}
m.dispose();
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const plain = median(speeds.get(0));
console.log(`model ${opt.model.split('/').pop()}, ${opt.threads} threads, ${opt['cpu-kernels']} kernels, ${n} greedy tokens, ${opt.rounds} rounds (medians)`);
console.log(`one-token steps: ${plain.toFixed(1)} tok/s`);
for (const k of drafts) console.log(`${k} right guesses a step: ${median(speeds.get(k)).toFixed(1)} tok/s (${(median(speeds.get(k)) / plain).toFixed(2)}x)`);
console.log(`same tokens: ${same}`);
if (!same) process.exitCode = 1;
