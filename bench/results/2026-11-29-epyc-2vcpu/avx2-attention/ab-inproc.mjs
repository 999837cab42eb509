// Two builds of the addon in one process, their CPU decode attention timed in alternation
// (timeAttention, f16 KV, 16-token blocks), GB/s of KV read and the median of the per-round
// time ratios A/B. Usage: node ab-inproc.mjs A.node B.node [isa avx2|avx512] [threads] [rounds]
// Each addon keeps its own kernels: they sit in anonymous namespaces, and a later dlopen'd
// library does not bind to an earlier one's symbols.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const [Ap, Bp, isa = 'avx2', th = '1', rounds = '15'] = process.argv.slice(2);
const A = require(Ap), B = require(Bp);
const cases = [[32, 8, 8, 1024], [32, 32, 8, 1024], [32, 8, 1, 8192], [32, 8, 1, 128], [32, 4, 4, 1024]];
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [nh, nkv, seqs, ctx] of cases) {
  const hd = nkv === 4 ? 64 : 128;
  const opts = { kvType: 'f16', blockTokens: 16, nKvHeads: nkv, nHeads: nh, headDim: hd, nSeqs: seqs, contextLen: ctx, nTokens: 1 };
  const bytes = seqs * (ctx + 1) * nkv * hd * 2 * 2;
  const reps = ctx <= 128 ? 400 : 6;
  const ra = [], rb = [], ratio = [];
  for (let i = 0; i < Number(rounds); i++) {
    const ta = A.backendOps.timeAttention(`cpu:${isa}@${th}`, opts, reps);
    const tb = B.backendOps.timeAttention(`cpu:${isa}@${th}`, opts, reps);
    ra.push(bytes / ta / 1e3); rb.push(bytes / tb / 1e3); ratio.push(ta / tb);
  }
  console.log(`${nh}/${nkv} d${hd} ${seqs}x${ctx}: A ${med(ra).toFixed(1)} B ${med(rb).toFixed(1)} GB/s, B/A ${med(ratio).toFixed(3)} (${Math.min(...ratio).toFixed(2)}-${Math.max(...ratio).toFixed(2)})`);
}
