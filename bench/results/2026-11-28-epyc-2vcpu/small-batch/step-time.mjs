// ROOT=<a package root with dist/ and build/Release/tandem.node> node step-time.mjs MODEL THREADS
// VARIANT=avx2 picks the AVX2 kernels (step-time.mjs). Used for README.md here; not part of the package.
const { native } = await import(`${process.env.ROOT}/dist/native/binding.js`);
const { GgufFile } = await import(`${process.env.ROOT}/dist/model/gguf.js`);
const { describeModel } = await import(`${process.env.ROOT}/dist/model/describe.js`);
const path = process.argv[2]; const threads = Number(process.argv[3] ?? 1);
const f = GgufFile.open(path); const hp = describeModel(f).hparams; f.close();
const m = await native().loadModel(path, { hparams: hp, threads, kvBlockTokens: 16, kvBlocks: { device: 0, host: 64 }, ...(process.env.VARIANT ? { cpuVariant: process.env.VARIANT } : {}) });
const table = Int32Array.from({ length: 32 }, (_, i) => i);
const seq = (tokens, startPos) => ({ seqId: 1, tokens: Int32Array.from(tokens), startPos, blockTable: table, kvTier: 'host', attention: 'cpu', sample: true, sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 1 } });
const prompt = Array.from({ length: 128 }, (_, i) => 100 + i * 7);
await m.step({ strategy: 'cpu', copies: [], sequences: [seq(prompt, 0)] });
const sizes = [1, 2, 3, 4, 5, 6, 8];
const times = Object.fromEntries(sizes.map((s) => [s, []]));
for (let round = 0; round < 7; round++) for (const s of sizes) {
  const t0 = process.hrtime.bigint();
  await m.step({ strategy: 'cpu', copies: [], sequences: [seq(Array.from({ length: s }, (_, i) => 300 + i), 128)] });
  times[s].push(Number(process.hrtime.bigint() - t0) / 1e6);
}
const med = (a) => a.slice().sort((x, y) => x - y)[a.length >> 1];
const base = med(times[1]);
console.log(path.split('/').pop(), 'threads', threads, sizes.map((s) => `${s}:${med(times[s]).toFixed(1)}ms(${(med(times[s]) / base).toFixed(2)}x)`).join(' '));
m.dispose?.();
