// node ab-avx2.mjs <repo> <model> <threads> <kernels>: pp512 and tg64 tokens/s (best of 2 each)
const [root, file, threads, kernels] = process.argv.slice(2);
const { loadModel } = await import(`${root}/dist/api/index.js`);
const model = await loadModel(file, { threads: Number(threads), contextSize: 1024, maxSequences: 1, prefillChunkTokens: 512, prefixCaching: false, cpuKernels: kernels });
let pp = 0, tg = 0;
for (let r = 0; r < 2; r++) {
  const ids = Array.from({ length: 512 }, (_, i) => 100 + ((i + r * 11) * 37) % 20000);
  let t0 = performance.now();
  await model.generate(ids, { maxTokens: 1, temperature: 0 }).result;
  pp = Math.max(pp, 512 / ((performance.now() - t0) / 1000));
  let first = 0, last = 0, n = 0;
  for await (const c of model.generate([1, 500 + r, 600, 700], { maxTokens: 64, temperature: 0, ignoreEos: true })) {
    for (const _ of c.tokens) { n++; last = performance.now(); if (!first) first = last; }
  }
  tg = Math.max(tg, (n - 1) / ((last - first) / 1000));
}
console.log(JSON.stringify({ pp512: +pp.toFixed(2), tg64: +tg.toFixed(2), kernels: model.info.cpuKernels }));
await model.dispose();
