// 16 concurrent generate() calls with the default sampling (temperature 0.8, top-k 40, top-p
// 0.95, min-p 0.05) on a small model with Llama-3's 128256-token vocabulary, where drawing
// the tokens is a large part of a step: node serve16.mjs <package root> <model.gguf> <threads>
// -> aggregate output tokens/s and the steps' sampling phase.
const [root, file, threads] = process.argv.slice(2);
const { loadModel } = await import(`${root}/dist/api/index.js`);
const model = await loadModel(file, { threads: Number(threads) });
let sampling = 0, total = 0;
model.onStep((s) => {
  sampling += s.phaseUs?.sampling ?? 0;
  total += s.totalUs ?? 0;
});
const run = async () => {
  const t0 = performance.now();
  const gens = Array.from({ length: 16 }, (_, i) => model.generate(`Request ${i}: once upon a time`, { maxTokens: 64, ignoreEos: true, seed: i }));
  let tokens = 0;
  await Promise.all(gens.map(async (g) => { for await (const _ of g) tokens++; }));
  return tokens / ((performance.now() - t0) / 1000);
};
await run();
sampling = 0; total = 0;
const rate = await run();
console.log(JSON.stringify({ tokensPerSecond: Number(rate.toFixed(1)), samplingShareOfSteps: total > 0 ? Number((sampling / total).toFixed(3)) : null }));
model.dispose();
