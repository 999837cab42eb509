// A/B of decode attention: node attn-ab.mjs <repo> <id> -> JSON of GB/s per case
const repo = process.argv[2], id = process.argv[3];
const { native } = await import(`${repo}/dist/native/binding.js`);
const ops = native().backendOps;
const cases = [
  { name: 'llama3-8b heads 32/8, 8 seqs x 1024', nHeads: 32, nKv: 8, nSeqs: 8, ctx: 1024 },
  { name: 'llama3-8b heads 32/8, 1 seq x 4096', nHeads: 32, nKv: 8, nSeqs: 1, ctx: 4096 },
  { name: 'llama2-7b heads 32/32, 4 seqs x 1024', nHeads: 32, nKv: 32, nSeqs: 4, ctx: 1024 },
];
const out = {};
for (const c of cases) {
  const o = { kvType: 'f16', blockTokens: 16, nKvHeads: c.nKv, nHeads: c.nHeads, headDim: 128, nSeqs: c.nSeqs, contextLen: c.ctx, nTokens: 1 };
  const us = ops.timeAttention(id, o, 5);
  out[c.name] = (c.nSeqs * (c.ctx + 1) * c.nKv * 128 * 4) / us / 1e3;
}
console.log(JSON.stringify(out));
