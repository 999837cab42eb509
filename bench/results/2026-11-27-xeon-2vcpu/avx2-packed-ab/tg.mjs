// node tg.mjs <repo> <model> <threads> <kernels> <tokens>
const [root, file, threads, kernels, ntok] = process.argv.slice(2);
const { loadModel } = await import(`${root}/dist/api/index.js`);
const model = await loadModel(file, { threads: Number(threads), contextSize: 1024, maxSequences: 1, prefixCaching: false, cpuKernels: kernels });
let first = 0, last = 0, n = 0;
for await (const c of model.generate([1, 500, 600, 700], { maxTokens: Number(ntok), temperature: 0, ignoreEos: true })) {
  for (const _ of c.tokens) { n++; last = performance.now(); if (!first) first = last; }
}
console.log(JSON.stringify({ tg: +((n - 1) / ((last - first) / 1000)).toFixed(2) }));
await model.dispose();
