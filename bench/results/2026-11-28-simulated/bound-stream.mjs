// SIMULATED steady-state bound with streamed host KV: the best tokens/s one step reaches on a
// hardware profile's roofline, the device KV full of sequences at one context, k more host
// sequences with CPU attention (overlap) and s more with their KV streamed to the device
// (step-time.ts prices both as the policies do), against gpu-only with the device KV alone.
// usage (repo root, after npx tsc -p tsconfig.build.json):
//   node bench/results/2026-11-28-simulated/bound-stream.mjs a10 llama3.1-8b 0.5 [context]
import { HARDWARE, SIM_MODELS, rooflineCostModel, deviceKvBlocks } from '../../../dist/sched/hardware.js';
import { predictStep } from '../../../dist/sched/step-time.js';
const [h, m, eff, ctxArg] = process.argv.slice(2);
const bt = 16;
const truth = rooflineCostModel(HARDWARE[h], SIM_MODELS[m], Number(eff), bt);
const ctx = Number(ctxArg ?? 608);
const n = Math.floor((deviceKvBlocks(HARDWARE[h], SIM_MODELS[m], bt) * bt) / ctx);
const seqs = (count, attention, streamed) =>
  Array.from({ length: count }, () => ({ tokens: 1, context: ctx, attention, ...(streamed ? { streamedBlocks: Math.ceil((ctx + 1) / bt) } : {}) }));
const g = predictStep('gpu-only', seqs(n, 'gpu'), truth);
const base = (n * 1e6) / g.stepUs;
const best = (allowStream) => {
  let b = { rate: base, k: 0, s: 0 };
  for (let k = 0; k <= 60; k++) {
    for (let s = 0; s <= (allowStream ? 200 : 0); s++) {
      const work = [...seqs(n, 'gpu'), ...seqs(k, 'cpu'), ...seqs(s, 'gpu', true)];
      const t = predictStep(k > 0 ? 'overlap' : 'gpu-only', work, truth);
      const rate = ((n + k + s) * 1e6) / t.stepUs;
      if (rate > b.rate) b = { rate, k, s, stepMs: t.stepUs / 1000, streamMs: t.streamUs / 1000 };
    }
  }
  return b;
};
const cpuOnly = best(false);
const withStream = best(true);
console.log(`SIMULATED ${h} ${m} eff ${eff}: ${n} device seqs at context ${ctx}; gpu-only ${(g.stepUs / 1000).toFixed(1)} ms => ${base.toFixed(0)} tok/s`);
console.log(`  CPU attention only: ${cpuOnly.k} host seqs, ${cpuOnly.rate.toFixed(0)} tok/s, ${(cpuOnly.rate / base).toFixed(3)}x`);
console.log(`  with streamed KV:   ${withStream.k} on the CPU + ${withStream.s} streamed, step ${withStream.stepMs?.toFixed(1)} ms (link ${withStream.streamMs?.toFixed(1)} ms), ${withStream.rate.toFixed(0)} tok/s, ${(withStream.rate / base).toFixed(3)}x`);
