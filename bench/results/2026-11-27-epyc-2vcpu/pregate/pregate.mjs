// Hit rates of the dynamic expert cache on the CPU stand-in, with the prefetch ordered by score
// and by the pregate (the next layer's router on this layer's hidden state). Counts only: the
// stand-in runs both sides on this machine's CPU, so its tokens/s say nothing of a GPU.
// Usage (repo root, after npx tsc -p tsconfig.build.json): node bench/results/2026-11-27-epyc-2vcpu/pregate/pregate.mjs
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeModel } from '../../../../dist/model/synthetic.js';
import { measureExpertOffload } from '../../../../dist/sched/experts/native.js';

// moe-8x-top2's shape with 4 layers (32 experts of 6.4 MiB), 12 cache slots (37%).
const files = {};
for (const [name, skew] of [['random routers', undefined], ['skewed routing (routerSkew 1.1)', 1.1]]) {
  const f = path.join(os.tmpdir(), `tandem-pregate-${skew ?? 0}.gguf`);
  if (!existsSync(f)) await makeModel({ preset: 'moe-8x-top2', nLayer: 4, type: 'q8_0', seed: 9, ...(skew ? { routerSkew: skew } : {}) }, f);
  files[name] = f;
}
console.log('| routers | batch | prefetch by | hit rate | routed-row hit rate | prefetches | of them routed to | evictions |');
console.log('|---|---|---|---|---|---|---|---|');
for (const [name, f] of Object.entries(files)) {
  for (const batch of [1, 16]) {
    // By score with the default admission margin (2) and with margin 1, then by the pregate.
    for (const [label, margin, pregate] of [['score', 2, false], ['score, margin 1', 1, false], ['pregate, then score', 2, true]]) {
      // Never copy for compute (n* = Infinity), two prefetches a layer at most, one admission.
      const r = await measureExpertOffload(f, {
        policy: 'dynamic', device: 'cpu-standin', threads: 2, batch, promptTokens: 16, decodeSteps: 48, warmupSteps: 4,
        nStar: Infinity, maxSlots: 12, prefetchPerLayer: 2, admitPerLayer: 1, admitMargin: margin, pregate,
      });
      const d = r.decode;
      console.log(`| ${name} | ${batch} | ${label} | ${(100 * r.hitRate).toFixed(1)}% | ${(100 * r.rowHitRate).toFixed(1)}% | ${d.prefetches} | ${d.prefetchHits} | ${d.evictions} |`);
    }
  }
}
