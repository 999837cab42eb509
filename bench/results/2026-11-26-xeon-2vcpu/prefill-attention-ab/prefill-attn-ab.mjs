// A/B of prefill attention (the many-rows kernel): node prefill-attn-ab.mjs <tandem.node> <id>
// -> JSON of GFLOP/s per case (causal: token i of a chunk sees the context and i + 1 positions).
import { createRequire } from 'node:module';
const [addon, id] = process.argv.slice(2);
const ops = createRequire(import.meta.url)(addon).backendOps;
const cases = [
  { name: 'tinyllama 32/4 d64, 512 tokens from 0', nHeads: 32, nKv: 4, hd: 64, ctx: 0 },
  { name: 'tinyllama 32/4 d64, 512 tokens from 1536', nHeads: 32, nKv: 4, hd: 64, ctx: 1536 },
  { name: 'llama3-8b 32/8 d128, 512 tokens from 0', nHeads: 32, nKv: 8, hd: 128, ctx: 0 },
  { name: 'llama3-8b 32/8 d128, 512 tokens from 1536', nHeads: 32, nKv: 8, hd: 128, ctx: 1536 },
  { name: 'llama2-7b 32/32 d128, 512 tokens from 0', nHeads: 32, nKv: 32, hd: 128, ctx: 0 },
];
const out = {};
for (const c of cases) {
  const tok = 512;
  const o = { kvType: 'f16', blockTokens: 16, nKvHeads: c.nKv, nHeads: c.nHeads, headDim: c.hd, nSeqs: 1, contextLen: c.ctx, nTokens: tok };
  const us = ops.timeAttention(id, o, 3);
  const pairs = tok * c.ctx + (tok * (tok + 1)) / 2;
  out[c.name] = (4 * c.hd * c.nHeads * pairs) / us / 1e3;
}
console.log(JSON.stringify(out));
