// Random odd and bad input to the public API on stories260K (fixed seeds, so a failure
// reproduces): prompts of every type, options of every type and value, aborts, cancels,
// breaking out of a stream, concurrent generations, chat messages, embeddings, loadModel options. Every call must resolve or reject
// with a TandemError (code TDM_...), within a bound, and the model must serve afterwards.
import t from 'tap';
import { loadModel, TandemError, type Model } from '../../src/api/index.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');

/** A small deterministic generator (an LCG), so that every run draws the same calls. */
function randomSource(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  return { next, pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]! };
}

const ODD: unknown[] = [
  undefined, null, NaN, Infinity, -Infinity, -1, 0, 0.5, 1, 2, 1e9, 2 ** 53, -(2 ** 31), '', 'x', '1', true, false, [], [1], {},
  { type: 'json_object' }, { type: 'json_schema', jsonSchema: { type: 'object' } }, { type: 'json_schema', jsonSchema: 5 }, { type: 'zzz' },
  () => 1, Symbol('s'), 10n, new Map([[1, 2]]), { 1: 5 }, { '-1': 3 }, { 99999999: 1 },
];
const GENERATE_KEYS = ['maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repeatPenalty', 'penaltyLastN', 'presencePenalty', 'frequencyPenalty', 'logitBias', 'seed', 'stop', 'ignoreEos', 'responseFormat', 'logprobs', 'signal', 'bogusKey'];
const CHAT_KEYS = [...GENERATE_KEYS, 'templateVariables', 'reasoning'];
const EMBED_KEYS = ['pooling', 'normalize', 'signal', 'bogusKey'];
const LOAD_KEYS = ['threads', 'contextSize', 'maxSequences', 'kvBlockTokens', 'kvType', 'kvCacheBytes', 'kvCacheFraction', 'kvDeviceFraction', 'kvDeviceBytes', 'kvHostBytes', 'device', 'policy', 'cpuKernels', 'prefillChunkTokens', 'decodeBurst', 'draftTokens', 'experts', 'slidingKv', 'preemption', 'maxQueuedRequests', 'outputBufferTokens', 'prefixCaching', 'onProgress', 'kvStream', 'bogus'];

/** Values each option takes in earnest, drawn more often than the odd ones so that calls run as well as fail. */
const GOOD: Record<string, unknown[]> = {
  temperature: [0, 0.8], topK: [1, 40], topP: [0.9], minP: [0.05], repeatPenalty: [1.1], penaltyLastN: [16], presencePenalty: [0.5],
  frequencyPenalty: [0.2], logitBias: [{ 5: 1 }, new Map([[7, -100]])], seed: [7], stop: [['.'], 'the'], ignoreEos: [true],
  responseFormat: [{ type: 'json_object' }, { type: 'text' }], logprobs: [0, 2], reasoning: ['split', 'raw'], templateVariables: [{}],
  pooling: ['mean', 'cls', 'last'], normalize: [true, false],
  threads: [1], contextSize: [64, 128, 256], maxSequences: [1, 2, 4], kvBlockTokens: [8, 16, 32], kvType: ['f16', 'q8_0'],
  kvCacheBytes: [1 << 20, 4 << 20], kvCacheFraction: [0.01], device: ['none', 'cpu-standin'], policy: ['auto', 'gpu-only', 'overlap', 'pipeline'],
  cpuKernels: ['auto', 'avx2', 'ref'], prefillChunkTokens: [16, 64], decodeBurst: [1, 4], draftTokens: [0, 2], slidingKv: ['window', 'full'],
  preemption: ['swap', 'recompute'], maxQueuedRequests: [0, 8], outputBufferTokens: [16], prefixCaching: [true, false], kvStream: [true, false],
  kvHostBytes: [1 << 20], kvDeviceBytes: [1 << 20], kvDeviceFraction: [0.5], onProgress: [() => {}],
};
const value = (r: Rng, key: string): unknown => (GOOD[key] && r.next() < 0.85 ? r.pick(GOOD[key]!) : r.pick(ODD));

type Rng = ReturnType<typeof randomSource>;

function options(r: Rng, keys: readonly string[]): unknown {
  if (r.next() < 0.05) return r.pick([null, 5, 'x', []]);
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(r.next() * 4); i > 0; i--) {
    const k = r.pick(keys);
    if (k === 'signal') {
      const c = new AbortController();
      if (r.next() < 0.5) c.abort();
      else setTimeout(() => c.abort(), Math.floor(r.next() * 30));
      o[k] = r.next() < 0.8 ? c.signal : r.pick(ODD);
    } else if (k === 'maxTokens') o[k] = r.next() < 0.7 ? Math.floor(r.next() * 20) : r.pick(ODD);
    else if (k === 'stop') o[k] = r.pick([['a'], 'the', [''], ['x', 5], 'Once', [], ['\u0000'], r.pick(ODD)]);
    else o[k] = value(r, k);
  }
  if (o.maxTokens === undefined) o.maxTokens = 8;
  return o;
}

function prompt(r: Rng, nVocab: number): unknown {
  const x = r.next();
  if (x < 0.3) return r.pick(['Once upon a time', '', '\u0000\uffff', 'a'.repeat(2000), '🙂 emoji', '<s></s>', 'x']);
  if (x < 0.9) return Array.from({ length: Math.floor(r.next() * 12) }, () => (r.next() < 0.97 ? Math.floor(r.next() * nVocab) : r.pick([nVocab, -5, 2 ** 40, 1.5, NaN, '3'])));
  return r.pick(ODD);
}

function messages(r: Rng): unknown {
  if (r.next() < 0.2) return r.pick(ODD);
  const n = Math.floor(r.next() * 3) + (r.next() < 0.9 ? 1 : 0);
  return Array.from({ length: n }, () =>
    r.next() < 0.85 ? { role: r.pick(['user', 'system', 'assistant', 'tool', 'x', 5]), content: r.pick(['hi', '', 5, null, 'Once upon a time']) } : r.pick(ODD));
}

const typed = (e: unknown) => e instanceof TandemError && typeof e.code === 'string' && e.code.startsWith('TDM_');

/** Runs f; an error that is not typed, or no answer within 20 s, is recorded. */
async function guarded(what: string, f: () => Promise<unknown>, tally: { ok: number; typed: number; bad: string[] }): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no answer in 20 s')), 20000)));
  try {
    await Promise.race([f(), hang]);
    tally.ok++;
  } catch (e) {
    if (typed(e)) tally.typed++;
    else tally.bad.push(`${what}: ${(e as Error)?.name}: ${(e as Error)?.message}`.slice(0, 300));
  } finally {
    clearTimeout(timer);
  }
}

const show = (v: unknown) => {
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : typeof x === 'function' || typeof x === 'symbol' ? String(x) : x))?.slice(0, 120);
  } catch {
    return String(v);
  }
};

t.test('generate, chat, embed, tokenize and detokenize: typed errors only, and the model serves after', async (t) => {
  const model: Model = await loadModel(STORIES, { threads: 1, contextSize: 256, maxSequences: 4 });
  t.teardown(() => model.dispose());
  const nVocab = model.info.nVocab;
  for (const seed of [1, 2, 3]) {
    const r = randomSource(seed);
    const tally = { ok: 0, typed: 0, bad: [] as string[] };
    for (let i = 0; i < 250; i++) {
      const kind = r.next();
      const p = prompt(r, nVocab);
      const o = options(r, kind < 0.6 ? GENERATE_KEYS : CHAT_KEYS);
      if (kind < 0.45) {
        await guarded(`generate(${show(p)}, ${show(o)})`, () => model.generate(p as string, o as object).result, tally);
      } else if (kind < 0.6) {
        await guarded(`streamed generate(${show(p)}, ${show(o)})`, async () => {
          const g = model.generate(p as string, o as object);
          for await (const _ of g) {
            const x = r.next();
            if (x < 0.08) g.abort();
            else if (x < 0.12) break; // leaving the loop ends it too
          }
          return g.result;
        }, tally);
      } else if (kind < 0.85) {
        const m = messages(r);
        await guarded(`chat(${show(m)}, ${show(o)})`, () => model.chat(m as never, o as object).result, tally);
      } else if (kind < 0.9) {
        await guarded(`tokenize(${show(p)})`, async () => model.tokenize(p as string, r.pick([undefined, { addBos: r.pick(ODD) }, { special: true }, 5]) as object), tally);
      } else if (kind < 0.94) {
        await guarded(`detokenize(${show(p)})`, async () => model.detokenize(p as number[]), tally);
      } else {
        const eo = options(r, EMBED_KEYS);
        await guarded(`embed(${show(p)}, ${show(eo)})`, () => model.embed(p as string, eo as object), tally);
      }
      if (r.next() < 0.05) {
        await Promise.all(Array.from({ length: 6 }, () => guarded('six at once', async () => {
          const g = model.generate(prompt(r, nVocab) as string, options(r, GENERATE_KEYS) as object);
          if (r.next() < 0.3) setTimeout(() => g.abort(), 5);
          return g.result;
        }, tally)));
      }
    }
    t.same(tally.bad, [], `seed ${seed}: ${tally.ok} calls answered, ${tally.typed} refused with a TandemError, none otherwise`);
    t.ok(tally.ok > 20 && tally.typed > 20, `seed ${seed}: both answers and refusals drawn`);
  }
  const after = await model.generate('Once upon a time', { maxTokens: 8, temperature: 0 }).result;
  t.match(after.text, /^, there was a little girl/, 'the model still gives its greedy reply');
});

t.test('loadModel options: typed errors only', async (t) => {
  const r = randomSource(3);
  const tally = { ok: 0, typed: 0, bad: [] as string[] };
  for (let i = 0; i < 60; i++) {
    const o: Record<string, unknown> = {};
    for (let j = 1 + Math.floor(r.next() * 3); j > 0; j--) {
      const k = r.pick(LOAD_KEYS);
      o[k] = value(r, k);
    }
    if (o.contextSize === undefined) o.contextSize = 128;
    const file = r.pick([STORIES, STORIES, STORIES, STORIES, '/nonexistent.gguf', '/etc/hostname', 5]);
    await guarded(`loadModel(${show(file)}, ${show(o)})`, async () => {
      const m = await loadModel(file as string, o);
      try {
        await m.generate('Once', { maxTokens: 3 }).result;
      } finally {
        await m.dispose();
      }
    }, tally);
  }
  t.same(tally.bad, [], `${tally.ok} loads served, ${tally.typed} refused with a TandemError, none otherwise`);
  t.ok(tally.typed > 5 && tally.ok > 5, 'both loads and refusals drawn');
});
