// Decode bursts against a plan every step, alternated in one process: N requests decoding
// together on one model, greedy, each run in a fresh model (decodeBurst 1, then the default),
// repeated. Prints one JSON line per run: decode tokens/s over the whole batch, steps, rounds,
// and the host's time between steps per generated token.
// Usage: node burst.mjs [model.gguf] [requests] [tokens each] [pairs] [threads]
import { loadModel } from '../../../../dist/api/index.js';

const [file = '../shared/models/stories260K.gguf', n = '48', tokens = '200', pairs = '5', threads = '1'] = process.argv.slice(2);

async function once(decodeBurst) {
  const model = await loadModel(file, { threads: Number(threads), maxSequences: Number(n), contextSize: 16 + Number(tokens) + 8, decodeBurst });
  try {
    const prompts = Array.from({ length: Number(n) }, (_, r) => Array.from({ length: 16 }, (_, k) => 1 + ((r * 31 + k * 17) % 400)));
    // One warm-up batch for the JIT and the caches, then the measured one.
    for (const measured of [false, true]) {
      const s0 = model.stats;
      const t0 = performance.now();
      await Promise.all(prompts.map((p) => model.generate(p, { maxTokens: Number(tokens), temperature: 0, ignoreEos: true }).result));
      const ms = performance.now() - t0;
      const s1 = model.stats;
      const generated = s1.numGeneratedTokens - s0.numGeneratedTokens;
      if (measured) {
        return {
          decodeBurst, tokPerS: Math.round((generated * 1000) / ms), steps: s1.numSteps - s0.numSteps, rounds: s1.numRounds - s0.numRounds,
          hostUsPerToken: +((s1.hostUs - s0.hostUs) / generated).toFixed(1), stepUsPerRound: Math.round((s1.stepUs - s0.stepUs) / (s1.numRounds - s0.numRounds)),
        };
      }
    }
  } finally {
    model.dispose();
  }
}

for (let i = 0; i < Number(pairs); i++) {
  for (const b of [1, 8]) console.log(JSON.stringify({ file: file.split('/').pop(), requests: Number(n), threads: Number(threads), ...(await once(b)) }));
}
