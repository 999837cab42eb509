// What the HTTP server costs: N concurrent greedy requests of T tokens through generate()
// directly, through POST /v1/completions (whole answers) and with "stream": true, rounds
// alternating, aggregate generated tokens/s per round.
// node server-vs-api.mjs <repo root> <model.gguf> <threads> [N=8] [T=64] [rounds=3]
const [root, file, threadsArg, nArg, tArg, roundsArg] = process.argv.slice(2);
const { loadModel } = await import(`${root}/dist/api/index.js`);
const { startServer } = await import(`${root}/dist/server/index.js`);
const N = Number(nArg ?? 8), T = Number(tArg ?? 64), rounds = Number(roundsArg ?? 3);
const model = await loadModel(file, { threads: Number(threadsArg), maxSequences: N, contextSize: 512 });
const server = await startServer(model, { port: 0 });
const prompts = Array.from({ length: N }, (_, i) => `Request ${i}: once upon a time`);
const body = (p, stream) => JSON.stringify({ prompt: p, max_tokens: T, temperature: 0, ignore_eos: true, stream });

const ways = {
  api: (p) => model.generate(p, { maxTokens: T, temperature: 0, ignoreEos: true }).result.then((r) => r.usage.completionTokens),
  http: (p) => fetch(`${server.url}/v1/completions`, { method: 'POST', body: body(p, false) }).then((r) => r.json()).then((j) => j.usage.completion_tokens),
  'http-stream': async (p) => {
    const r = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: body(p, true) });
    const text = await r.text();
    return text.split('\n\n').filter((e) => e.startsWith('data: {')).length - 1; // chunks less the finish chunk
  },
};
const results = Object.fromEntries(Object.keys(ways).map((k) => [k, []]));
await Promise.all(prompts.map(ways.api)); // warm-up
for (let r = 0; r < rounds; r++) {
  for (const [name, run] of Object.entries(ways)) {
    const t0 = performance.now();
    const counts = await Promise.all(prompts.map(run));
    const secs = (performance.now() - t0) / 1000;
    const tokens = name === 'http-stream' ? N * T : counts.reduce((a, b) => a + b, 0);
    results[name].push(tokens / secs);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [name, xs] of Object.entries(results)) {
  console.log(`${name.padEnd(12)} median ${median(xs).toFixed(1)} tok/s (${xs.map((x) => x.toFixed(1)).join(', ')}); vs api ${(median(xs) / median(results.api)).toFixed(3)}x`);
}
await server.close();
await model.dispose();
