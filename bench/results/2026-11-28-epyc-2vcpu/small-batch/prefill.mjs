// ROOT=<a package root with dist/ and build/Release/tandem.node> node prefill.mjs MODEL THREADS TOKENS
// VARIANT=avx2 picks the AVX2 kernels (step-time.mjs). Used for README.md here; not part of the package.
const { native } = await import(`${process.env.ROOT}/dist/native/binding.js`);
const { GgufFile } = await import(`${process.env.ROOT}/dist/model/gguf.js`);
const { describeModel } = await import(`${process.env.ROOT}/dist/model/describe.js`);
const path = process.argv[2]; const threads = Number(process.argv[3] ?? 1); const n = Number(process.argv[4] ?? 256);
const f = GgufFile.open(path); const hp = describeModel(f).hparams; f.close();
const m = await native().loadModel(path, { hparams: hp, threads, kvBlockTokens: 16, kvBlocks: { device: 0, host: 64 } });
const table = Int32Array.from({ length: 64 }, (_, i) => i);
const seq = (tokens, startPos) => ({ seqId: 1, tokens: Int32Array.from(tokens), startPos, blockTable: table, kvTier: 'host', attention: 'cpu', sample: true, sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 1 } });
const prompt = Array.from({ length: n }, (_, i) => 100 + i * 7);
const ts = [];
for (let r = 0; r < 5; r++) { const t0 = process.hrtime.bigint(); await m.step({ strategy: 'cpu', copies: [], sequences: [seq(prompt, 0)] }); ts.push(Number(process.hrtime.bigint() - t0) / 1e6); }
ts.sort((a, b) => a - b);
console.log(path.split('/').pop(), 'threads', threads, 'pp' + n, (n / ts[2] * 1000).toFixed(1), 'tok/s');
