const [root, file, threads, kernels, n] = process.argv.slice(2);
const { loadModel } = await import(`${root}/dist/api/index.js`);
const model = await loadModel(file, { threads: Number(threads), contextSize: 1024, maxSequences: 1, prefillChunkTokens: 512, prefixCaching: false, cpuKernels: kernels });
const ids = Array.from({ length: Number(n) }, (_, i) => 100 + (i * 37) % 20000);
const t0 = performance.now();
await model.generate(ids, { maxTokens: 1, temperature: 0 }).result;
console.log(JSON.stringify({ pp: +(Number(n) / ((performance.now() - t0) / 1000)).toFixed(2) }));
await model.dispose();
