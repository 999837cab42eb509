// Decode tok/s with and without JSON mode, alternated, same model and threads.
import { loadModel } from '../../../../dist/api/index.js';
const [file, threads] = [process.argv[2], Number(process.argv[3] ?? 1)];
const m = await loadModel(file, { threads });
const run = async (json) => {
  const gen = m.generate('Once upon a time there was', { maxTokens: 64, temperature: 1, seed: 7, ...(json ? { responseFormat: { type: 'json_object' } } : {}) });
  let n = 0, t1 = 0;
  for await (const c of gen) { n += c.tokens.length; if (n === 1) t1 = performance.now(); }
  const r = await gen.result;
  return { tps: (r.tokens.length - 1) / ((performance.now() - t1) / 1000), n: r.tokens.length, stop: r.stopReason };
};
await run(false); await run(true);
const res = { plain: [], json: [] };
for (let i = 0; i < 5; i++) { res.plain.push((await run(false)).tps); res.json.push((await run(true)).tps); }
const med = (v) => [...v].sort((a, b) => a - b)[2];
console.log(file.split('/').pop(), `threads ${threads}: plain ${res.plain.map((x) => x.toFixed(1)).join(' ')} median ${med(res.plain).toFixed(1)}; json ${res.json.map((x) => x.toFixed(1)).join(' ')} median ${med(res.json).toFixed(1)}; json/plain ${(med(res.json) / med(res.plain)).toFixed(3)}`);
m.dispose();
