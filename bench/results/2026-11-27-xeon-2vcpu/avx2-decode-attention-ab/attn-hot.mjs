const { native } = await import(`${process.argv[2]}/dist/native/binding.js`);
const ops = native().backendOps;
const id = process.argv[3];
const out = {};
for (const c of [{ nKv: 1, nHeads: 4, ctx: 512 }, { nKv: 1, nHeads: 1, ctx: 512 }, { nKv: 2, nHeads: 8, ctx: 1024 }]) {
  const o = { kvType: 'f16', blockTokens: 16, nKvHeads: c.nKv, nHeads: c.nHeads, headDim: 128, nSeqs: 1, contextLen: c.ctx, nTokens: 1 };
  let best = Infinity;
  for (let i = 0; i < 5; i++) best = Math.min(best, ops.timeAttention(id, o, 200));
  out[`gqa${c.nHeads / c.nKv} kv${c.nKv} ctx${c.ctx}`] = +((c.ctx + 1) * c.nKv * 128 * 4 / best / 1e3).toFixed(2);
}
console.log(id, JSON.stringify(out));
