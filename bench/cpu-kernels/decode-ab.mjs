// Decode speed of two builds of tandem, alternated in fresh processes on the same model:
// what a kernel change gives a whole decode step (ab.sh times the kernels alone).
//
//   node bench/cpu-kernels/decode-ab.mjs --model FILE [--threads 1] [--rounds 5] [--tokens 48]
//                                        [--cpu-kernels avx2] [--parallel N] [--prompt N] DIST_A DIST_B
//
// DIST_A and DIST_B are built dist/ folders (e.g. a `git worktree` of the old revision after
// `npm install`, and this checkout's dist/). Each round runs A then B: one process each, a
// warm-up generation, then the median of three greedy 48-token decodes. With --parallel N,
// N requests with different prompts decode together, and the speed is their tokens after the
// first over the time from the last first token to the last token (aggregate tok/s). With
// --prompt N, each run is instead one N-token prompt and its first token: prompt tok/s.
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
if (args[0] === '--child') {
  const [, dist, model, threads, tokens, cpuKernels, parallel, promptTokens] = args;
  const { loadModel } = await import(pathToFileURL(resolve(dist, 'api/index.js')).href);
  const n = Number(parallel);
  const m = await loadModel(model, { threads: Number(threads), maxSequences: Math.max(n, 1), ...(cpuKernels !== 'auto' ? { cpuKernels } : {}) });
  const prompts = ['Once upon a time there was', 'The weather today is', 'In the beginning', 'My favourite food is', 'A long way from home',
    'She opened the door and', 'Numbers: one two three', 'Dear friend, I write'];
  // Each prompt starts with another token, so that no run reuses an earlier one's cached prefix.
  let calls = 0;
  const promptLength = Number(promptTokens);
  const prefill = async () => {
    const first = 100 + calls++;
    const prompt = Array.from({ length: promptLength }, (_, i) => (i === 0 ? first : 200 + ((i * 7919) % 20000)));
    const t0 = performance.now();
    for await (const _c of m.generate(prompt, { maxTokens: 1, temperature: 0 })) break;
    return prompt.length / ((performance.now() - t0) / 1000);
  };
  const decode = async () => {
    const firsts = [];
    let count = 0;
    await Promise.all(Array.from({ length: n }, async (_, i) => {
      const gen = m.generate(prompts[i % prompts.length], { maxTokens: Number(tokens), temperature: 0, ignoreEos: true });
      let k = 0;
      for await (const _c of gen) if (++k === 1) firsts.push(performance.now());
      count += k - 1;
    }));
    return count / ((performance.now() - Math.max(...firsts)) / 1000);
  };
  const run = promptLength > 0 ? prefill : decode;
  await run();
  const r = [await run(), await run(), await run()].sort((a, b) => a - b);
  m.dispose();
  console.log(r[1]);
} else {
  const opt = { model: '', threads: '1', rounds: '5', tokens: '48', 'cpu-kernels': 'auto', parallel: '1', prompt: '0' };
  const dists = [];
  for (let i = 0; i < args.length; i++) {
    const key = args[i].startsWith('--') ? args[i].slice(2) : null;
    if (key && key in opt) opt[key] = args[++i];
    else dists.push(args[i]);
  }
  if (!opt.model || dists.length !== 2) {
    console.error('usage: decode-ab.mjs --model FILE [--threads N] [--rounds N] [--tokens N] [--cpu-kernels K] [--parallel N] [--prompt N] DIST_A DIST_B');
    process.exit(2);
  }
  const me = new URL(import.meta.url).pathname;
  const speeds = [[], []];
  for (let r = 0; r < Number(opt.rounds); r++) {
    for (const [i, dist] of dists.entries()) {
      const out = spawnSync(process.execPath, [me, '--child', dist, opt.model, opt.threads, opt.tokens, opt['cpu-kernels'], opt.parallel, opt.prompt], { encoding: 'utf8' });
      if (out.status !== 0) throw new Error(`${dist}: ${out.stderr}`);
      speeds[i].push(Number(out.stdout.trim()));
    }
  }
  const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const what = Number(opt.prompt) > 0 ? `${opt.prompt}-token prompt tok/s` : 'decode tok/s';
  for (const [i, dist] of dists.entries()) console.log(`${dist}: ${speeds[i].map((s) => s.toFixed(1)).join(' ')} ${what}, median ${median(speeds[i]).toFixed(1)}`);
  // The rounds' own ratios too: a noisy machine moves both builds of a round together.
  const paired = median(speeds[1].map((b, r) => b / speeds[0][r]));
  console.log(`B/A: ${(median(speeds[1]) / median(speeds[0])).toFixed(3)}x, median of the rounds' ratios ${paired.toFixed(3)}x (${opt.threads} threads, ${opt['cpu-kernels']} kernels, ${opt.parallel} sequences)`);
}
