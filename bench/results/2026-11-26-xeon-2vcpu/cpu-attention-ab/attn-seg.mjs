const repo = process.argv[2], id = process.argv[3];
const { native } = await import(`${repo}/dist/native/binding.js`);
const ops = native().backendOps;
const cases = [
  { name: 'llama3-8b 32/8, 8 seqs x 1024', nHeads: 32, nKv: 8, nSeqs: 8, ctx: 1024, hd: 128 },
  { name: 'llama3-8b 32/8, 1 seq x 8192', nHeads: 32, nKv: 8, nSeqs: 1, ctx: 8192, hd: 128 },
  { name: 'MQA 8/1, 1 seq x 8192', nHeads: 8, nKv: 1, nSeqs: 1, ctx: 8192, hd: 128 },
  { name: 'qwen-0.5b 14/2 d64, 1 seq x 8192', nHeads: 14, nKv: 2, nSeqs: 1, ctx: 8192, hd: 64 },
];
const out = {};
for (const c of cases) {
  const o = { kvType: 'f16', blockTokens: 16, nKvHeads: c.nKv, nHeads: c.nHeads, headDim: c.hd, nSeqs: c.nSeqs, contextLen: c.ctx, nTokens: 1 };
  const us = ops.timeAttention(id, o, 5);
  out[c.name] = (c.nSeqs * (c.ctx + 1) * c.nKv * c.hd * 4) / us / 1e3;
}
console.log(JSON.stringify(out));
