// loadModel's cpuKernels: 'auto' runs the best kernel set this processor has, each named set
// runs when the processor has it, and the sets agree on stories260K (same greedy tokens,
// logits within float rounding of each other).
import t from 'tap';
import { loadModel, type CpuKernelsOption } from '../../src/api/index.js';
import { native } from '../../src/native/binding.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const available = native()
  .backendOps.ids()
  .filter((id) => id.startsWith('cpu:') && !id.includes('+'))
  .map((id) => id.slice(4));

async function run(cpuKernels?: CpuKernelsOption) {
  const model = await loadModel(STORIES, { threads: 1, contextSize: 128, maxSequences: 1, ...(cpuKernels ? { cpuKernels } : {}) });
  try {
    const result = await model.generate('Once upon a time', { maxTokens: 32, temperature: 0 }).result;
    const logits = await model.evaluate(model.tokenize('Once upon a time, there was'));
    return { info: model.info, tokens: result.tokens, logits };
  } finally {
    await model.dispose();
  }
}

t.test('auto is the best set available, and says so', async (t) => {
  const auto = await run();
  t.equal(auto.info.cpuKernels, available.at(-1), `auto runs ${available.at(-1)} (available: ${available.join(', ')})`);
  t.equal((await run('auto')).info.cpuKernels, auto.info.cpuKernels);
});

t.test('every available set gives the same greedy tokens and logits within rounding', async (t) => {
  const best = await run();
  for (const k of available as Exclude<CpuKernelsOption, 'auto'>[]) {
    const r = await run(k);
    t.equal(r.info.cpuKernels, k);
    t.same(r.tokens, best.tokens, `${k}: greedy tokens as ${best.info.cpuKernels}`);
    // Each set sums in its own order, and values a rounding apart can round to neighbouring f16s in
    // the KV cache: about 1e-4 of the logits' size here, where a wrong kernel is off by their size.
    let worst = 0;
    let scale = 0;
    for (let p = 0; p < r.logits.length; p++) {
      for (let i = 0; i < r.logits[p]!.length; i++) {
        worst = Math.max(worst, Math.abs(r.logits[p]![i]! - best.logits[p]![i]!));
        scale = Math.max(scale, Math.abs(best.logits[p]![i]!));
      }
    }
    t.ok(worst < 1e-3 * scale, `${k}: largest logit difference ${worst.toExponential(2)} of logits up to ${scale.toFixed(1)}`);
  }
});

t.test('an unknown set is a typed error', async (t) => {
  await t.rejects(loadModel(STORIES, { cpuKernels: 'sse2' as never }), { code: 'TDM_BAD_ARGUMENT', message: /cpuKernels must be one of 'auto', 'avx512', 'avxvnni', 'avx2', 'ref'/ });
});
