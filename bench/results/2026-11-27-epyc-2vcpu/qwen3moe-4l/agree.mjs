// Teacher-forced agreement of tandem with llama.cpp (node-llama-cpp) on one GGUF file: N pseudo-random
// token ids, next-token distributions from both, top-1 agreement and KL(llama.cpp || tandem), and
// how far llama.cpp's distribution is from uniform (so the KL has a scale). 2 threads each.
// Usage, from the repository root after npm run build: node bench/results/2026-11-27-epyc-2vcpu/qwen3moe-4l/agree.mjs FILE [N]
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { loadModel } from '../../../../dist/api/index.js';
const file = process.argv[2];
const N = Number(process.argv[3] ?? 32);
const model = await loadModel(file, { threads: 2, contextSize: N + 16, maxSequences: 1 });
const ids = [];
let s = 12345;
for (let i = 0; i < N; i++) { s = (s * 1103515245 + 12345) >>> 0; ids.push(100 + (s % 20000)); }
const ours = await model.evaluate(ids);
const nVocab = model.info.nVocab;
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const lm = await llama.loadModel({ modelPath: file });
const ctx = await lm.createContext({ contextSize: 256, threads: 2, sequences: 1, batchSize: 512 });
const out = await ctx.getSequence().controlledEvaluate(ids.map((t) => [t, { generateNext: { probabilities: true } }]));
const softmax = (l) => { let m = -Infinity; for (const x of l) m = Math.max(m, x); const o = new Float64Array(l.length); let sum = 0; for (let i = 0; i < l.length; i++) sum += o[i] = Math.exp(l[i] - m); for (let i = 0; i < o.length; i++) o[i] /= sum; return o; };
let agree = 0, maxKl = 0, sumKl = 0, sumU = 0, flips = 0;
for (let i = 0; i < N; i++) {
  const p = new Float64Array(nVocab);
  for (const [tok, pr] of out[i].next.probabilities) p[Number(tok)] = pr;
  const q = softmax(ours[i]);
  let kl = 0; for (let j = 0; j < nVocab; j++) if (p[j] > 0) kl += p[j] * Math.log(p[j] / Math.max(q[j], 1e-30));
  let a = 0, b = 0; for (let j = 1; j < nVocab; j++) { if (p[j] > p[a]) a = j; if (q[j] > q[b]) b = j; }
  if (a === b) agree++;
  let ku = 0; for (let j = 0; j < nVocab; j++) if (p[j] > 0) ku += p[j] * Math.log(p[j] * nVocab); sumU += ku;
  if (kl > 3e-4) flips++;
  maxKl = Math.max(maxKl, kl); sumKl += kl;
}
console.log(`${file}: top-1 ${agree}/${N}, mean KL ${(sumKl / N).toExponential(2)}, max KL ${maxKl.toExponential(2)}, positions over 3e-4: ${flips}; KL(p||uniform) mean ${(sumU / N).toExponential(2)}`);
await ctx.dispose(); await lm.dispose(); model.dispose();
