import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const addon = require(process.argv[2]);
const th = Number(process.argv[3] ?? 1);
const out = [];
for (const [nh, nkv, kvType, seqs, ctx] of [[32, 8, 'f16', 8, 1024], [32, 32, 'f16', 8, 1024], [32, 8, 'f16', 1, 8192], [32, 8, 'f16', 1, 128]]) {
  const opts = { kvType, blockTokens: 16, nKvHeads: nkv, nHeads: nh, headDim: 128, nSeqs: seqs, contextLen: ctx, nTokens: 1 };
  const bytes = seqs * (ctx + 1) * nkv * 128 * 2 * 2;
  const ts = [];
  for (let i = 0; i < 5; i++) ts.push(addon.backendOps.timeAttention(`cpu:avx512@${th}`, opts, ctx <= 128 ? 2000 : 10));
  ts.sort((a, b) => a - b);
  out.push(`${nh}/${nkv} ${seqs}x${ctx}: ${(bytes / ts[2] / 1e3).toFixed(1)}`);
}
console.log(process.argv[2].split('/').pop(), th, out.join(' | '));
