// The engine's host time around each step (model.stats.hostUs: planning, the native call's way
// in and out, token delivery) with many sequences decoding at once on a tiny model, where the
// steps are short enough for it to show. Prints one JSON line: host and step µs per step of
// each repeat (the first repeats warm the JIT).
// Usage: node host-gap.mjs [model.gguf] [sequences] [tokens each] [repeats]
import { loadModel } from '../../../../dist/api/index.js';

const [file = '../shared/models/stories260K.gguf', n = '48', tokens = '200', repeats = '4'] = process.argv.slice(2);
const model = await loadModel(file, { threads: 1, maxSequences: Number(n), contextSize: 256 });
const reps = [];
for (let rep = 0; rep < Number(repeats); rep++) {
  const s0 = model.stats;
  const prompts = Array.from({ length: Number(n) }, (_, r) => Array.from({ length: 16 }, (_, k) => 1 + ((r * 31 + k * 17) % 400)));
  await Promise.all(prompts.map(async (p) => {
    const gen = model.generate(p, { maxTokens: Number(tokens), temperature: 0, ignoreEos: true });
    for await (const _ of gen);
    await gen.result;
  }));
  const s1 = model.stats;
  const steps = s1.numSteps - s0.numSteps;
  reps.push({ steps, hostUs: Math.round((s1.hostUs - s0.hostUs) / steps), stepUs: Math.round((s1.stepUs - s0.stepUs) / steps) });
}
await model.dispose();
console.log(JSON.stringify(reps));
