// slidingKv 'window' (sliding layers' KV in blocks of their own, freed behind the window)
// against 'full' (every layer keeps every position), on the gpt-oss-4l bench model, through
// the public API. Run from the repository root after `npm run build`:
//   node bench/results/2026-11-27-epyc-2vcpu/sliding-kv/run.mjs [threads] [repeats] [promptTokens] [budgetMiB]
// Prints one JSON line per run and a summary; modes alternate run by run.
import { loadModel } from '../../../../dist/api/index.js';
import { resolveModel } from '../../../../dist/bench/models.js';

const threads = Number(process.argv[2] ?? 2);
const repeats = Number(process.argv[3] ?? 2);
const promptTokens = Number(process.argv[4] ?? 2048);
const budgetMiB = Number(process.argv[5] ?? 96);
const SEQS = 8;
const OUT = 64;
const MIB = 1 << 20;
const { path: file } = await resolveModel('gpt-oss-4l');

function prompt(k, n) {
  let s = 12345 + k;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return 1 + (s % 199000);
  });
}

/** Peak KV blocks in use while `work` runs, polled every 5 ms. */
async function peakBlocks(model, work) {
  let peak = 0;
  const poll = setInterval(() => (peak = Math.max(peak, model.stats.numKvBlocks - model.stats.numFreeKvBlocks)), 5);
  try {
    await work();
  } finally {
    clearInterval(poll);
  }
  return peak;
}

// 1. Eight sequences of promptTokens + OUT under one KV budget.
async function squeezed(slidingKv) {
  const model = await loadModel(file, { threads, contextSize: promptTokens + OUT + 16, maxSequences: SEQS, prefillChunkTokens: 512, kvCacheBytes: budgetMiB * MIB, prefixCaching: false, slidingKv });
  const t0 = performance.now();
  let outTokens = 0;
  const peak = await peakBlocks(model, async () => {
    const outs = await Promise.all(Array.from({ length: SEQS }, (_, k) => model.generate(prompt(k, promptTokens), { maxTokens: OUT, temperature: 0, ignoreEos: true }).result));
    for (const o of outs) outTokens += o.tokens.length;
  });
  const wallS = (performance.now() - t0) / 1000;
  const st = model.stats;
  const r = { test: 'squeezed', slidingKv, threads, seqs: SEQS, promptTokens, outTokens, budgetMiB, kvBlocks: model.info.numKvBlocks, kvBlockBytes: model.info.kvBlockBytes, peakKvMiB: +(peak * model.info.kvBlockBytes / MIB).toFixed(1), wallS: +wallS.toFixed(2), tokensPerS: +((SEQS * promptTokens + outTokens) / wallS).toFixed(1), preemptions: st.numPreemptions, prefillTokens: st.numPrefillTokens };
  await model.dispose();
  return r;
}

// 2. One sequence decoding after promptTokens: decode speed and the KV it holds.
async function single(slidingKv) {
  const model = await loadModel(file, { threads, contextSize: promptTokens + OUT + 16, maxSequences: 1, prefillChunkTokens: 512, slidingKv });
  let first = 0, last = 0, n = 0;
  const peak = await peakBlocks(model, async () => {
    const gen = model.generate(prompt(99, promptTokens), { maxTokens: OUT, temperature: 0, ignoreEos: true });
    for await (const chunk of gen) {
      const now = performance.now();
      if (n === 0) first = now;
      last = now;
      n += chunk.tokens.length;
    }
    await gen.result;
  });
  const r = { test: 'single', slidingKv, threads, promptTokens, decodeTokPerS: +(((n - 1) * 1000) / (last - first)).toFixed(2), peakKvMiB: +(peak * model.info.kvBlockBytes / MIB).toFixed(2) };
  await model.dispose();
  return r;
}

const rows = [];
for (let i = 0; i < repeats; i++) {
  for (const mode of i % 2 === 0 ? ['full', 'window'] : ['window', 'full']) {
    for (const f of [single, squeezed]) {
      const r = await f(mode);
      rows.push(r);
      console.log(JSON.stringify(r));
    }
  }
}
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
for (const test of ['single', 'squeezed']) {
  for (const mode of ['full', 'window']) {
    const rs = rows.filter((r) => r.test === test && r.slidingKv === mode);
    const key = test === 'single' ? 'decodeTokPerS' : 'tokensPerS';
    console.log(`summary ${test} ${mode}: median ${key} ${median(rs.map((r) => r[key]))}, peak KV MiB ${median(rs.map((r) => r.peakKvMiB))}` + (test === 'squeezed' ? `, preemptions ${rs.map((r) => r.preemptions).join('/')}` : ''));
  }
}
