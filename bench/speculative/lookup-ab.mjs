// Speculative decoding by prompt lookup against plain decoding, on one model in one process:
// the same prompts and settings through a model loaded with draftTokens 0 and one with
// draftTokens N, alternated round by round. Reports decode tok/s (tokens after the first over
// the time they took), steps per token, and the guesses made and accepted, and checks that
// both give the same tokens.
//
//   node bench/speculative/lookup-ab.mjs --model FILE [--threads 1] [--draft 3] [--rounds 5]
//                                        [--tokens 128] [--temp 0]
//
// Needs a build (dist/). The prompts are story openings (stories260K's kind of text).
import { loadModel } from '../../dist/api/index.js';

const opt = { model: '', threads: '1', draft: '3', rounds: '5', tokens: '128', temp: '0' };
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const key = args[i].replace(/^--/, '');
  if (!(key in opt) || i + 1 >= args.length) {
    console.error('usage: lookup-ab.mjs --model FILE [--threads N] [--draft N] [--rounds N] [--tokens N] [--temp T]');
    process.exit(2);
  }
  opt[key] = args[++i];
}
if (!opt.model) {
  console.error('lookup-ab.mjs: --model FILE is required');
  process.exit(2);
}

const prompts = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside.',
  'Tom had a red ball. He liked to throw the ball to his dog, Max.',
  'One day, a big bear came to the forest. The bear was hungry.',
  'Sue and her mom went to the store. They wanted to buy some apples.',
];

const load = (draftTokens) => loadModel(opt.model, { threads: Number(opt.threads), maxSequences: 1, draftTokens });
const plain = await load(0);
const spec = await load(Number(opt.draft));
const settings = { maxTokens: Number(opt.tokens), temperature: Number(opt.temp), seed: 1, ignoreEos: true };

async function once(model, prompt) {
  const before = model.stats;
  const gen = model.generate(prompt, settings);
  let first = 0;
  let n = 0;
  for await (const chunk of gen) {
    if (n === 0) first = performance.now();
    n += chunk.tokens.length;
  }
  const r = await gen.result;
  const after = model.stats;
  return {
    tokens: r.tokens,
    tokPerS: (n - 1) / ((performance.now() - first) / 1000),
    steps: after.numSteps - before.numSteps,
    drafted: after.numDraftTokens - before.numDraftTokens,
    accepted: after.numAcceptedDrafts - before.numAcceptedDrafts,
  };
}

// Warm-up.
await once(plain, prompts[0]);
await once(spec, prompts[0]);
const rows = { plain: [], spec: [] };
let same = true;
for (let round = 0; round < Number(opt.rounds); round++) {
  for (const prompt of prompts) {
    const a = await once(plain, prompt);
    const b = await once(spec, prompt);
    if (a.tokens.join() !== b.tokens.join()) same = false;
    rows.plain.push(a);
    rows.spec.push(b);
  }
}
plain.dispose();
spec.dispose();

const median = (v) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)];
const sum = (v, k) => v.reduce((s, r) => s + r[k], 0);
const tokens = rows.spec.reduce((s, r) => s + r.tokens.length, 0);
const speed = (v) => median(v.map((r) => r.tokPerS));
console.log(`model ${opt.model.split('/').pop()}, ${opt.threads} threads, ${opt.tokens} tokens, temperature ${opt.temp}, ${opt.rounds} rounds`);
console.log(`plain: ${speed(rows.plain).toFixed(1)} decode tok/s (median), ${(sum(rows.plain, 'steps') / tokens).toFixed(3)} steps/token`);
console.log(`draft ${opt.draft}: ${speed(rows.spec).toFixed(1)} decode tok/s (median), ${(sum(rows.spec, 'steps') / tokens).toFixed(3)} steps/token, ` +
  `${sum(rows.spec, 'accepted')} of ${sum(rows.spec, 'drafted')} guesses accepted (${((100 * sum(rows.spec, 'accepted')) / tokens).toFixed(1)}% of the tokens)`);
console.log(`draft/plain: ${(speed(rows.spec) / speed(rows.plain)).toFixed(3)}x; same tokens: ${same}`);
if (!same) process.exitCode = 1;
