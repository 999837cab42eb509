// Embedding throughput of tandem (model.embed) against llama.cpp (node-llama-cpp 3.21.1's
// embedding context, CPU) on the same GGUF file and threads, alternated round by round in one
// process. Each round embeds the same inputs with both: `--inputs` texts of `--tokens` tokens
// (BOS, then random ordinary tokens), tandem's all at once (they share steps, as a service's
// concurrent calls do), llama.cpp's one after another (its embedding context holds one
// sequence and embeds one input at a time). Reports embedded tokens/s, each system's median
// and the median of the rounds' ratios, and the worst cosine between the two systems' vectors.
//
//   node bench/embeddings/embed-vs-llama.mjs --model FILE [--threads 1] [--inputs 16] [--tokens 64] [--rounds 5]
//
// Needs a build (dist/) and node-llama-cpp (a devDependency).
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { loadModel } from '../../dist/api/index.js';

const opt = { model: '', threads: '1', inputs: '16', tokens: '64', rounds: '5' };
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const key = args[i].replace(/^--/, '');
  if (!(key in opt) || i + 1 >= args.length) {
    console.error('usage: embed-vs-llama.mjs --model FILE [--threads N] [--inputs N] [--tokens N] [--rounds N]');
    process.exit(2);
  }
  opt[key] = args[++i];
}
const threads = Number(opt.threads), nInputs = Number(opt.inputs), nTokens = Number(opt.tokens), rounds = Number(opt.rounds);

const model = await loadModel(opt.model, { threads, contextSize: nTokens + 16, maxSequences: nInputs });
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, maxThreads: 0 });
const lm = await llama.loadModel({ modelPath: opt.model, gpuLayers: 0 });
const ctx = await lm.createEmbeddingContext({ contextSize: nTokens + 16, batchSize: nTokens + 16, threads });

// Ordinary tokens: ids whose text is a word piece (skips control and byte tokens by their text).
const normal = [];
for (let id = 0; id < model.info.nVocab && normal.length < 4000; id++) {
  const text = model.detokenize([id]);
  if (/^[ a-zA-Z]{2,}$/.test(text)) normal.push(id);
}
let seed = 12345;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
const bos = model.tokenize('', { addBos: true })[0];
const inputs = Array.from({ length: nInputs }, () => {
  const ids = bos !== undefined ? [bos] : [];
  while (ids.length < nTokens) ids.push(normal[Math.floor(rand() * normal.length)]);
  return ids;
});

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

const tokens = nInputs * nTokens;
const ours = [], theirs = [], ratio = [];
let worst = 1;
// One warm-up embedding each.
await model.embed(inputs[0]);
await ctx.getEmbeddingFor(inputs[0]);
for (let r = 0; r < rounds; r++) {
  let t0 = performance.now();
  const a = await Promise.all(inputs.map((ids) => model.embed(ids, { normalize: false })));
  const tandem = tokens / ((performance.now() - t0) / 1000);
  t0 = performance.now();
  const b = [];
  for (const ids of inputs) b.push((await ctx.getEmbeddingFor(ids)).vector);
  const ref = tokens / ((performance.now() - t0) / 1000);
  for (let i = 0; i < nInputs; i++) worst = Math.min(worst, cosine(a[i], b[i]));
  ours.push(tandem);
  theirs.push(ref);
  ratio.push(tandem / ref);
  console.log(`round ${r + 1}: tandem ${tandem.toFixed(1)} tok/s, llama.cpp ${ref.toFixed(1)} tok/s (${(tandem / ref).toFixed(2)}x)`);
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
console.log(
  `${opt.model.split('/').pop()}, ${threads} thread(s), ${nInputs} inputs x ${nTokens} tokens: ` +
    `tandem ${median(ours).toFixed(1)} tok/s, llama.cpp ${median(theirs).toFixed(1)} tok/s, ` +
    `${median(ratio).toFixed(2)}x (rounds ${Math.min(...ratio).toFixed(2)}-${Math.max(...ratio).toFixed(2)}); worst cosine ${worst.toFixed(6)}`,
);
await ctx.dispose();
await lm.dispose();
await model.dispose();
