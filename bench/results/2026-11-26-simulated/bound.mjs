// SIMULATED steady-state bound: the best tokens/s any strategy reaches in one step on a hardware profile's
// roofline (the simulator's clock), the device KV full of sequences at one context, k more on the host (at hostContext).
// usage (repo root, after npx tsc -p tsconfig.build.json): node bench/results/2026-11-26-simulated/bound.mjs a10 llama3.1-8b 0.5 [context] [hostContext]
import { HARDWARE, SIM_MODELS, rooflineCostModel, deviceKvBlocks } from '../../../dist/sched/hardware.js';
import { predictStep } from '../../../dist/sched/step-time.js';
const [h, m, eff, ctxArg, hostCtxArg] = process.argv.slice(2);
const truth = rooflineCostModel(HARDWARE[h], SIM_MODELS[m], Number(eff), 16);
const dev = deviceKvBlocks(HARDWARE[h], SIM_MODELS[m], 16) * 16;
const ctx = Number(ctxArg ?? 608);
const n = Math.floor(dev / ctx);
const hostCtx = Number(hostCtxArg ?? ctx);
const seq = (k, att, sub) => Array.from({ length: k }, () => {
  const context = att === 'cpu' ? hostCtx : ctx;
  return sub === undefined ? { tokens: 1, context, attention: att } : { tokens: 1, context, attention: att, subBatch: sub };
});
const g = predictStep('gpu-only', seq(n, 'gpu'), truth);
console.log(`SIMULATED ${h} ${m} eff ${eff}: device tokens ${dev}, ctx ${ctx} (host ${hostCtx}), ${n} device seqs; gpu-only step ${(g.stepUs/1000).toFixed(1)} ms lin ${(g.linearUs/1000).toFixed(1)} att ${(g.deviceAttentionUs/1000).toFixed(1)} => ${(n*1e6/g.stepUs).toFixed(0)} tok/s`);
let best = { r: n * 1e6 / g.stepUs, s: 'gpu-only', k: 0 };
for (let k = 1; k <= 400; k++) {
  const o = predictStep('overlap', [...seq(n, 'gpu'), ...seq(k, 'cpu')], truth);
  const r = (n + k) * 1e6 / o.stepUs;
  if (r > best.r) best = { r, s: 'overlap', k, st: o.stepUs };
  for (const k1 of [Math.floor(k / 2), k]) {
    const p = predictStep('pipeline', [...seq(n, 'gpu', 0), ...seq(k - k1, 'cpu', 0), ...seq(k1, 'cpu', 1)], truth);
    const rp = (n + k) * 1e6 / p.stepUs;
    if (rp > best.r) best = { r: rp, s: 'pipeline', k, k1, st: p.stepUs };
  }
}
console.log('best', JSON.stringify(best), 'ratio', (best.r / (n * 1e6 / g.stepUs)).toFixed(3));
