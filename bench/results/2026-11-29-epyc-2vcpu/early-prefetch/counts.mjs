// Expert cache counters of one sequence's decode on the CPU stand-in device (no GPU: the
// decisions and what they hit, not times). Usage, from the repository root after a build:
//   node bench/results/2026-11-29-epyc-2vcpu/early-prefetch/counts.mjs FILE SLOTS STEPS PER_LAYER PREGATE(0|1) EARLY(0|1) NSTAR
import path from 'node:path';
import { fileURLToPath } from 'node:url';
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const { native } = await import(path.join(root, 'dist/native/binding.js'));
const { GgufFile } = await import(path.join(root, 'dist/model/gguf.js'));
const { describeModel } = await import(path.join(root, 'dist/model/describe.js'));
const [file, slots, steps, per, pregate, early, nStar] = process.argv.slice(2);
const f = GgufFile.open(file);
const hparams = describeModel(f).hparams;
f.close();
const experts = { maxSlots: Number(slots), nStar: Number(nStar), admitPerLayer: 0, prefetchPerLayer: Number(per), admitMargin: 1, pregate: pregate === '1', prefetchEarly: early === '1' };
const m = await native().loadModel(file, { hparams, threads: 2, kvBlockTokens: 16, kvBlocks: { device: 16, host: 16 }, device: 'cpu-standin', experts });
const table = Int32Array.from({ length: 16 }, (_, i) => i);
let tokens = [1, 300, 301, 302, 303, 304, 305, 306];
let pos = 0;
const tot = {};
for (let s = 0; s <= Number(steps); s++) {
  const r = await m.step({ strategy: 'gpu-only', copies: [], sequences: [{ seqId: 1, tokens: Int32Array.from(tokens), startPos: pos, blockTable: table, kvTier: 'device', attention: 'gpu', sample: true }] });
  pos += tokens.length;
  tokens = [r.sequences[0].token];
  if (s === 0) continue;  // the prompt step
  for (const [k, v] of Object.entries(r.experts)) tot[k] = (tot[k] ?? 0) + v;
}
m.dispose();
const order = pregate === '1' ? 'pregate' : 'score';
console.log(`| ${order} | ${early === '1' ? 'early' : 'after the experts'} | ${nStar === 'Infinity' ? 'never' : `from ${nStar} row`} | ${per} | ${(tot.hits / (tot.hits + tot.misses) * 100).toFixed(1)}% | ${tot.prefetches} | ${tot.prefetchHits} | ${tot.copies} | ${tot.cpuExperts} |`);
