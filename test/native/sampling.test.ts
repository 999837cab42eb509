// Native sampling (native/core/sampling.cpp) through its test-only binding: greedy,
// the llama.cpp chain order, seeded determinism, distributions, penalties, errors.
import t, { type Test } from 'tap';
import { native } from '../../src/native/binding.js';
import type { SamplingParams } from '../../src/native/step-plan.js';

const sample = (logits: ArrayLike<number>, params: Partial<SamplingParams>, recent: number[] = [], position = 0): number =>
  native().sampleLogits(logits instanceof Float32Array ? logits : Float32Array.from(logits), { ...base, ...params }, Int32Array.from(recent), position);

const base: SamplingParams = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repeatPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  seed: 1234,
};

// A small deterministic generator for test inputs (not the sampler's RNG).
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

function softmax(logits: number[], temperature = 1): number[] {
  const m = Math.max(...logits);
  const e = logits.map((l) => Math.exp((l - m) / temperature));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** Counts of each token over `draws` positions with one seed. */
function histogram(logits: number[], params: Partial<SamplingParams>, draws: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let pos = 0; pos < draws; pos++) counts[sample(logits, params, [], pos)]++;
  return counts;
}

/** Pearson's chi-square of observed counts against expected probabilities (zero-probability cells must be empty). */
function chiSquare(counts: number[], probs: number[]): number {
  const n = counts.reduce((a, b) => a + b, 0);
  let x = 0;
  for (let i = 0; i < counts.length; i++) {
    if (probs[i] === 0) {
      if (counts[i] !== 0) return Infinity;
      continue;
    }
    const e = n * probs[i];
    x += (counts[i] - e) ** 2 / e;
  }
  return x;
}

t.test('greedy is the argmax, first index on ties', async (t) => {
  const rand = lcg(7);
  for (let row = 0; row < 50; row++) {
    const logits = Array.from({ length: 1000 + row }, () => rand() * 20 - 10);
    t.equal(sample(logits, { temperature: 0 }), argmax(logits), `row ${row}`);
  }
  t.equal(sample([1, 3, 3, 2], { temperature: 0 }), 1);
  t.equal(sample(new Array(50).fill(0), { temperature: 0 }), 0);
  t.equal(sample([-5, -1, -3], { temperature: 0, seed: 99 }, [], 12345), 1, 'seed and position do not matter');
});

t.test('top-k = 1 is greedy at any temperature and seed', async (t) => {
  const rand = lcg(11);
  for (let row = 0; row < 50; row++) {
    const logits = Array.from({ length: 300 }, () => rand() * 4);
    t.equal(sample(logits, { topK: 1, temperature: 2.5, seed: row }, [], row * 31), argmax(logits), `row ${row}`);
  }
});

t.test('a draw is a pure function of (seed, position)', async (t) => {
  const rand = lcg(3);
  const logits = Array.from({ length: 64 }, () => rand() * 3);
  const params = { temperature: 1.3, topK: 40, topP: 0.95, minP: 0.01 };
  const run = (seed: number) => Array.from({ length: 200 }, (_, pos) => sample(logits, { ...params, seed }, [], pos));
  const a = run(42);
  t.same(run(42), a, 'same seed, same sequence');
  // Interleaving other calls (other seeds, other positions) changes nothing: no hidden state.
  const interleaved = a.map((_, pos) => {
    sample(logits, { ...params, seed: 7 }, [], pos + 1000);
    return sample(logits, { ...params, seed: 42 }, [], pos);
  });
  t.same(interleaved, a, 'no hidden RNG state');
  const reversed = a.map((_, i) => sample(logits, { ...params, seed: 42 }, [], a.length - 1 - i)).reverse();
  t.same(reversed, a, 'order of positions does not matter');
  const b = run(43);
  const differ = a.filter((tok, i) => tok !== b[i]).length;
  t.ok(differ > 50, `another seed gives another sequence (${differ}/200 positions differ)`);
  t.ok(new Set(a).size > 5, 'draws vary with position');
  // Large seeds (up to 2^53 - 1) are distinct seeds.
  t.notSame(run(2 ** 53 - 1), run(2 ** 53 - 2));
});

// Chi-square critical values at p = 1e-6 are about 33 (df 3) and 42 (df 7); the bounds
// below are looser still, on fixed seeds, so these checks cannot flake.
t.test('plain temperature sampling follows softmax(logits / T)', async (t) => {
  const logits = [1.0, 0.2, -0.4, 2.1, 0.9, -1.5, 0.0, 1.6];
  for (const temperature of [1, 0.6, 1.8]) {
    const counts = histogram(logits, { temperature, seed: 5 }, 20000);
    const x = chiSquare(counts, softmax(logits, temperature));
    t.ok(x < 60, `T=${temperature}: chi-square ${x.toFixed(1)} over 7 df`);
  }
  // And it is not trivially passing: the T=1 counts are far from the T=0.6 distribution.
  const counts = histogram(logits, { temperature: 1, seed: 5 }, 20000);
  t.ok(chiSquare(counts, softmax(logits, 0.6)) > 500, 'a wrong temperature is detected');
});

t.test('top-k keeps the k largest and renormalises', async (t) => {
  const logits = [0.5, 2.0, 1.0, 1.5, -1.0, 0.0];
  const counts = histogram(logits, { topK: 3, seed: 9 }, 12000);
  const probs = softmax([2.0, 1.0, 1.5]);
  const expected = [0, probs[0], probs[1], probs[2], 0, 0];
  const x = chiSquare(counts, expected);
  t.ok(x < 50, `chi-square ${x.toFixed(1)}; counts ${counts.join(' ')}`);
});

// Probabilities 0.5, 0.3, 0.15, 0.05 as logits.
const fourProbs = [0.5, 0.3, 0.15, 0.05];
const fourLogits = fourProbs.map(Math.log);

t.test('top-p keeps the smallest prefix reaching p, before temperature', async (t) => {
  const counts = histogram(fourLogits, { topP: 0.75, seed: 2 }, 12000);
  t.ok(chiSquare(counts, [0.5 / 0.8, 0.3 / 0.8, 0, 0]) < 40, `T=1 counts ${counts.join(' ')}`);
  // At T=5 the flattened distribution would need more tokens to reach 0.75; llama.cpp's
  // chain applies top-p first, so the same two tokens survive, re-weighted by T.
  const hot = histogram(fourLogits, { topP: 0.75, temperature: 5, seed: 2 }, 12000);
  const w = softmax([fourLogits[0], fourLogits[1]], 5);
  t.ok(chiSquare(hot, [w[0], w[1], 0, 0]) < 40, `T=5 counts ${hot.join(' ')}`);
  t.equal(sample(fourLogits, { topP: 0.01, temperature: 3 }), 0, 'a tiny p keeps the top token');
  // Over a large vocabulary top-p first sorts a prefix of the candidates.
  const rand = lcg(5);
  const big = Float32Array.from({ length: 5000 }, () => rand() * 2 - 30);
  big[4000] = 0; // p about 0.62
  big[17] = -0.5; // p about 0.38
  const seen = new Set(Array.from({ length: 1000 }, (_, pos) => sample(big, { topP: 0.7, seed: 4 }, [], pos)));
  t.same([...seen].sort((a, b) => a - b), [17, 4000]);
  // Equal logits: 90% of the mass needs 4500 tokens, more than the prefix; ties keep low ids.
  const flat = new Float32Array(5000);
  const draws = Array.from({ length: 1000 }, (_, pos) => sample(flat, { topP: 0.9, seed: 4 }, [], pos));
  t.ok(Math.max(...draws) < 4500, 'nothing past the top-p cut');
  t.ok(draws.filter((d) => d >= 256).length > 700, 'tokens past the first sorted prefix are kept');
});

/** The tokens llama.cpp's top-k then top-p keep (float32 logits, ties by id). */
function topPSet(logits: Float32Array, p: number, k = 0): Set<number> {
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  const cand = k > 0 ? order.slice(0, k) : order;
  const max = logits[cand[0]];
  const sum = cand.reduce((acc, id) => acc + Math.exp(logits[id] - max), 0);
  const kept = new Set<number>();
  let cum = 0;
  for (const id of cand) {
    kept.add(id);
    cum += Math.exp(logits[id] - max);
    if (cum >= p * sum) break;
  }
  return kept;
}

/** Draws at a huge temperature, which makes every kept token about equally likely, so that
 * the draws reveal the kept set: none may fall outside `expected`, and (when there are enough
 * draws) every kept token must appear. */
function checkKeptSet(t: Test, logits: Float32Array, params: Partial<SamplingParams>, expected: Set<number>, label: string, maxDraws: number): void {
  const draws = Math.min(maxDraws, Math.max(300, 15 * expected.size));
  const seen = new Set<number>();
  for (let pos = 0; pos < draws; pos++) seen.add(sample(logits, { ...params, temperature: 1e6 }, [], pos));
  const outside = [...seen].filter((x) => !expected.has(x));
  t.equal(outside.length, 0, `${label}: no token outside the ${expected.size} kept`);
  if (15 * expected.size <= draws) t.equal(seen.size, expected.size, `${label}: every kept token is drawn`);
  else t.ok(seen.size > Math.min(expected.size, draws) * 0.5, `${label}: draws spread over the ${expected.size} kept (${seen.size} seen)`);
}

t.test('top-p keeps exactly the right set over large vocabularies', async (t) => {
  const rand = lcg(77);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const cases = [
    { vocab: 6000, scale: 4, p: 0.9, k: 0 },
    { vocab: 6000, scale: 3, p: 0.5, k: 0 },
    { vocab: 4000, scale: 2.5, p: 0.99, k: 0 },
    { vocab: 4000, scale: 1, p: 0.95, k: 0 }, // flat: thousands kept
    { vocab: 5000, scale: 1.5, p: 0.9, k: 200 },
    { vocab: 3000, scale: 6, p: 0.999, k: 0 },
    { vocab: 5000, scale: 5, p: 0.8, k: 0 },
  ];
  for (const [i, c] of cases.entries()) {
    const logits = Float32Array.from({ length: c.vocab }, () => gauss() * c.scale);
    checkKeptSet(t, logits, { topP: c.p, topK: c.k, seed: i }, topPSet(logits, c.p, c.k), `case ${i}`, 1200);
  }
});

t.test('top-p then min-p over large vocabularies keep the shorter prefix', async (t) => {
  // Without top-k the sampler searches only the tokens above min-p's floor, or those within
  // 1e-4 of the top weight when they hold the mass; the set must still be exactly llama.cpp's.
  const rand = lcg(91);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const cases = [
    { vocab: 6000, scale: 4, p: 0.95, minP: 0.05 }, // peaked: min-p is the tighter cut
    { vocab: 6000, scale: 4, p: 0.3, minP: 0.001 }, // top-p is the tighter cut
    { vocab: 4000, scale: 1, p: 0.95, minP: 0.05 }, // flat: hundreds above the floor
    { vocab: 4000, scale: 0.3, p: 0.5, minP: 0.01 }, // nearly uniform: top-p cuts inside the floor's set
    { vocab: 5000, scale: 6, p: 0.999, minP: 0 }, // the top weights hold the mass: only they are searched
    { vocab: 5000, scale: 0.5, p: 0.999, minP: 0 }, // they do not: every token is searched
  ];
  for (const [i, c] of cases.entries()) {
    const logits = Float32Array.from({ length: c.vocab }, () => gauss() * c.scale);
    const max = Math.max(...logits);
    const floor = c.minP > 0 ? Math.fround(max + Math.log(c.minP)) : -Infinity;
    const expected = new Set([...topPSet(logits, c.p)].filter((id) => logits[id] >= floor));
    checkKeptSet(t, logits, { topP: c.p, minP: c.minP, seed: i }, expected, `case ${i}`, 1500);
  }
});

t.test('top-k over a large vocabulary, ties included, keeps the k best by (logit, lowest id)', async (t) => {
  const rand = lcg(12);
  const logits = Float32Array.from({ length: 3001 }, () => Math.round(rand() * 50) / 10); // many equal values
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  for (const k of [1, 40, 333]) {
    const expected = new Set(order.slice(0, k));
    const seen = new Set<number>();
    for (let pos = 0; pos < Math.min(3000, 20 * k); pos++) seen.add(sample(logits, { topK: k, temperature: 1e6, seed: k }, [], pos));
    t.same([...seen].filter((x) => !expected.has(x)), [], `k=${k}: nothing outside the k best`);
    if (k <= 40) t.equal(seen.size, k, `k=${k}: every kept token is drawn`);
  }
  const flat = new Float32Array(1000);
  const draws = new Set(Array.from({ length: 800 }, (_, pos) => sample(flat, { topK: 40, seed: 3 }, [], pos)));
  t.ok(Math.max(...draws) < 40 && draws.size === 40, 'all equal: the 40 lowest ids');
});

t.test('temperature alone over a large vocabulary follows the softmax, banned tokens never drawn', async (t) => {
  // More than a few blocks of 64 weights, so that the draw skips whole blocks.
  const rand = lcg(3);
  const logits = Array.from({ length: 300 }, () => -8 + rand() * 3);
  for (const [id, l] of [[7, 1.0], [70, 1.5], [150, 0.5], [299, 1.2], [64, 0.8], [128, 0.9]] as const) logits[id] = l;
  const counts = histogram(logits, { temperature: 0.7, seed: 21 }, 20000);
  // Cells with tiny probabilities are pooled: the 6 large ones against the rest.
  const probs = softmax(logits, 0.7);
  const big = [7, 70, 150, 299, 64, 128];
  const pooledCounts = [...big.map((id) => counts[id]), counts.reduce((a, c, id) => (big.includes(id) ? a : a + c), 0)];
  const pooledProbs = [...big.map((id) => probs[id]), probs.reduce((a, p, id) => (big.includes(id) ? a : a + p), 0)];
  const x = chiSquare(pooledCounts, pooledProbs);
  t.ok(x < 60, `chi-square ${x.toFixed(1)} over 6 df; counts ${pooledCounts.join(' ')}`);
  // Banned tokens, the last ones included, are never drawn.
  const banned = Float32Array.from(logits);
  for (const id of [299, 298, 7, 0]) banned[id] = -Infinity;
  const seen = new Set(Array.from({ length: 3000 }, (_, pos) => sample(banned, { temperature: 0.7, seed: 2 }, [], pos)));
  t.same([299, 298, 7, 0].filter((id) => seen.has(id)), [], 'no banned token is drawn');
});

t.test('greedy finds the first maximum wherever it lies', async (t) => {
  // Vector lanes of 4 in two accumulators and a scalar tail: the first maximum must win
  // whichever lane or the tail holds the copies.
  for (const n of [1, 3, 7, 8, 9, 17, 64, 1001]) {
    for (const first of [0, n - 1, Math.floor(n / 2), Math.min(n - 1, 5)]) {
      const logits = Float32Array.from({ length: n }, (_, i) => -((i * 7919) % 13) / 7);
      logits[first] = 5;
      for (let j = first + 1; j < n; j += 3) logits[j] = 5; // later copies in other lanes
      t.equal(sample(logits, { temperature: 0 }), first, `n=${n}: first maximum at ${first}`);
    }
  }
});

t.test('min-p drops tokens below min_p * p_max', async (t) => {
  const counts = histogram(fourLogits, { minP: 0.25, seed: 8 }, 12000);
  t.equal(counts[3], 0, 'p = 0.05 < 0.25 * 0.5 is dropped');
  t.ok(chiSquare(counts, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]) < 40, `counts ${counts.join(' ')}`);
  const strict = histogram(fourLogits, { minP: 0.7, temperature: 4, seed: 8 }, 2000);
  t.same(strict, [2000, 0, 0, 0], 'min-p 0.7 leaves only the top token, whatever the temperature');
});

/** llama.cpp's penalty arithmetic in float32, for reference. */
function penalise(logits: number[], recent: number[], p: Partial<SamplingParams>): number[] {
  const f = Math.fround;
  const out = logits.map(f);
  const counts = new Map<number, number>();
  for (const tok of recent) counts.set(tok, (counts.get(tok) ?? 0) + 1);
  for (const [tok, c] of counts) {
    let l = out[tok];
    const rp = f(p.repeatPenalty ?? 1);
    l = l <= 0 ? f(l * rp) : f(l / rp);
    l = f(l - f(f(c * f(p.frequencyPenalty ?? 0)) + f(p.presencePenalty ?? 0)));
    out[tok] = l;
  }
  return out;
}

t.test('penalties act as llama.cpp applies them', async (t) => {
  // Repeat penalty divides a positive logit and multiplies a non-positive one.
  t.equal(sample([2.0, 1.5, 0.1], { temperature: 0, repeatPenalty: 1.5 }, [0]), 1);
  t.equal(sample([2.0, 1.5, 0.1], { temperature: 0, repeatPenalty: 1.2 }, [0]), 0);
  t.equal(sample([-0.5, -0.6], { temperature: 0, repeatPenalty: 2 }, [0]), 1);
  t.equal(sample([-0.5, -0.6], { temperature: 0, repeatPenalty: 2 }, [1]), 0);
  // Frequency counts every occurrence; presence counts a token once.
  t.equal(sample([3, 2.5], { temperature: 0, frequencyPenalty: 0.2 }, [0, 0, 0]), 1);
  t.equal(sample([3, 2.5], { temperature: 0, frequencyPenalty: 0.2 }, [0, 0]), 0);
  t.equal(sample([3, 2.5], { temperature: 0, presencePenalty: 0.4 }, [0, 0, 0, 0, 0]), 0);
  t.equal(sample([3, 2.5], { temperature: 0, presencePenalty: 0.6 }, [0]), 1);
  t.equal(sample([3, 2.5], { temperature: 0 }, [0, 0, 0]), 0, 'no penalty when all are disabled');
  // A negative presence penalty encourages repeats.
  t.equal(sample([3, 2.5], { temperature: 0, presencePenalty: -1 }, [1]), 1);

  const rand = lcg(21);
  for (let row = 0; row < 200; row++) {
    const logits = Array.from({ length: 40 }, () => rand() * 4 - 2);
    const recent = Array.from({ length: 1 + Math.floor(rand() * 30) }, () => Math.floor(rand() * 12));
    const p = { temperature: 0, repeatPenalty: 1 + rand(), frequencyPenalty: rand() * 0.5, presencePenalty: rand() * 0.5 };
    const expected = argmax(penalise(logits, recent, p));
    t.equal(sample(logits, p, recent), expected, `row ${row}`);
    const shuffled = [...recent].reverse();
    if (sample(logits, p, shuffled) !== expected) t.fail(`row ${row}: the order of recent tokens changed the result`);
  }

  // With sampling on, a heavily penalised token becomes rare.
  const counts = histogram([1, 1, 1], { repeatPenalty: 1, frequencyPenalty: 3 }, 3000);
  const penalised = Array.from({ length: 3000 }, (_, pos) => sample([1, 1, 1], { frequencyPenalty: 3 }, [0], pos));
  t.ok(counts[0] > 800, 'without recent tokens token 0 is common');
  t.ok(penalised.filter((x) => x === 0).length < 200, 'penalised token 0 is rare');
});

t.test('logit bias is added first; -Infinity bans', async (t) => {
  const logits = [1, 5, 2, 0];
  t.equal(sample(logits, { temperature: 0, logitBias: [{ token: 1, bias: -Infinity }] }), 2);
  t.equal(sample(logits, { temperature: 0, logitBias: [{ token: 3, bias: 6 }] }), 3);
  t.equal(sample(logits, { temperature: 0, logitBias: [{ token: 3, bias: 3 }, { token: 3, bias: 3 }] }), 3, 'repeated entries add up');
  const onlyTwo = [{ token: 0, bias: -Infinity }, { token: 1, bias: -Infinity }, { token: 3, bias: -Infinity }];
  const draws = Array.from({ length: 500 }, (_, pos) => sample(logits, { temperature: 1.5, logitBias: onlyTwo }, [], pos));
  t.same(new Set(draws), new Set([2]), 'banned tokens are never drawn');
  // Bias comes before the repeat penalty: a biased-negative logit is multiplied, not divided.
  t.equal(sample([1, 0.5], { temperature: 0, repeatPenalty: 2, logitBias: [{ token: 0, bias: -0.9 }] }, [0]), 1);
  t.throws(
    () => sample([1, 2], { logitBias: [{ token: 0, bias: -Infinity }, { token: 1, bias: -Infinity }] }),
    { code: 'TDM_BAD_ARGUMENT', message: /banned/ },
  );
});

t.test('bad parameters and inputs give typed errors', async (t) => {
  const bad = (params: Partial<SamplingParams> | Record<string, unknown>, what: RegExp, recent: number[] = [], logits = [1, 2, 3]) =>
    t.throws(() => sample(logits, params as Partial<SamplingParams>, recent), { code: 'TDM_BAD_ARGUMENT', message: what });
  bad({ temperature: -1 }, /temperature/);
  bad({ temperature: NaN }, /temperature/);
  bad({ temperature: Infinity }, /temperature/);
  bad({ topK: -1 }, /topK/);
  bad({ topK: 1.5 }, /topK/);
  bad({ topP: 0 }, /topP/);
  bad({ topP: 1.5 }, /topP/);
  bad({ minP: -0.1 }, /minP/);
  bad({ minP: 2 }, /minP/);
  bad({ repeatPenalty: 0 }, /repeatPenalty/);
  bad({ presencePenalty: NaN }, /presencePenalty/);
  bad({ frequencyPenalty: Infinity }, /frequencyPenalty/);
  bad({ seed: -1 }, /seed/);
  bad({ seed: 0.5 }, /seed/);
  bad({ seed: 2 ** 60 }, /seed/);
  bad({ temperature: '1' }, /temperature/);
  bad({ logitBias: [{ token: 3, bias: 1 }] }, /logitBias token 3/);
  bad({ logitBias: [{ token: -1, bias: 1 }] }, /logitBias/);
  bad({ logitBias: [{ token: 0, bias: NaN }] }, /logitBias/);
  bad({ logitBias: [{ token: 0, bias: Infinity }] }, /logitBias/);
  bad({ logitBias: { token: 0, bias: 1 } }, /logitBias/);
  bad({}, /recent token 7/, [0, 7]);
  bad({}, /recent token -1/, [-1]);
  bad({ temperature: 0 }, /NaN/, [], [0, NaN, 1]);
  bad({}, /Infinity/, [], [0, Infinity]);
  const n = native();
  t.throws(() => n.sampleLogits(new Float32Array(0), base, new Int32Array(), 0), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => n.sampleLogits(new Float64Array(3) as unknown as Float32Array, base, new Int32Array(), 0), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => n.sampleLogits(new Float32Array(3), base, [0] as unknown as Int32Array, 0), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => n.sampleLogits(new Float32Array(3), base, new Int32Array(), -1), { code: 'TDM_BAD_ARGUMENT', message: /position/ });
  t.throws(() => n.sampleLogits(new Float32Array(3), null as unknown as SamplingParams, new Int32Array(), 0), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('plain greedy (its own one-pass path) keeps the full path\'s choices and errors', async (t) => {
  const greedy = { temperature: 0 };
  // A zero bias on a token that is not the winner sends the same row down the full path.
  const full = (logits: number[]) => sample(logits, { temperature: 0, logitBias: [{ token: logits.length - 1, bias: 0 }] });
  const rand = lcg(19);
  for (let row = 0; row < 100; row++) {
    const logits = Array.from({ length: 1 + Math.floor(rand() * 300) }, () => Math.round((rand() * 8 - 4) * 4) / 4);
    if (rand() < 0.3) logits[Math.floor(rand() * logits.length)] = -Infinity;
    if (sample(logits, greedy) !== full(logits)) t.fail(`row ${row}: the paths differ`);
  }
  t.equal(sample([3, 7, 7, 1], greedy), 1, 'ties go to the lowest id');
  t.equal(sample([-Infinity, -Infinity, -5], greedy), 2);
  t.throws(() => sample([-Infinity, -Infinity], greedy), { code: 'TDM_BAD_ARGUMENT', message: /banned/ });
  t.throws(() => sample([1, NaN, 2], greedy), { code: 'TDM_BAD_ARGUMENT', message: /token 1 is NaN/ });
  t.throws(() => sample([1, 2, Infinity], greedy), { code: 'TDM_BAD_ARGUMENT', message: /token 2 is \+Infinity/ });
});

t.test('an allowed-token mask: only allowed tokens are drawn, greedy takes the best of them', async (t) => {
  const rnd = lcg(7);
  const logits = Array.from({ length: 1000 }, () => rnd() * 8);
  const allowed = new Uint8Array(125);
  const ok = new Set<number>();
  for (let id = 3; id < 1000; id += 37) {
    allowed[id >> 3]! |= 1 << (id & 7);
    ok.add(id);
  }
  const best = [...ok].reduce((a, b) => (logits[b]! > logits[a]! ? b : a));
  t.equal(sample(logits, { temperature: 0, allowed }), best, 'greedy');
  t.not(argmax(logits), best, 'the unmasked argmax is another token');
  for (let position = 0; position < 300; position++) {
    const id = sample(logits, { temperature: 1.5, topK: 40, allowed }, [], position);
    if (!ok.has(id)) {
      t.fail(`drew ${id}, which the mask excludes`);
      return;
    }
  }
  t.pass('300 draws, all allowed');
  // The mask applies after the bias: a banned token stays banned however it is biased.
  t.equal(sample(logits, { temperature: 0, allowed, logitBias: [{ token: 1, bias: 100 }] }), best, 'bias on an excluded token');
});

t.test('a bad allowed-token mask is a typed error', async (t) => {
  const logits = [1, 2, 3, 4, 5, 6, 7, 8, 9];
  t.throws(() => sample(logits, { allowed: new Uint8Array(1) }), { code: 'TDM_BAD_ARGUMENT', message: /needs 2/ });
  t.throws(() => sample(logits, { allowed: new Uint8Array(2) }), { code: 'TDM_BAD_ARGUMENT', message: /no allowed token/ });
  t.throws(() => sample(logits, { allowed: [255, 255] as unknown as Uint8Array }), { code: 'TDM_BAD_ARGUMENT', message: /Uint8Array/ });
  t.equal(sample(logits, { temperature: 0, allowed: Uint8Array.of(0, 1) }), 8, 'bit 0 of byte 1 is token 8');
});

t.test('sampling from a row\'s k best logits gives the token the whole row gives', async (t) => {
  const fromBest = (logits: Float32Array, params: Partial<SamplingParams>, position = 0, k = 64) =>
    native().sampleLogitsFromBest(logits, { ...base, ...params }, position, k);
  const rand = lcg(2024);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  // Kinds of row: smooth; coarse values, so that the k-th best falls inside a run of exact ties;
  // mostly banned, so that the 64 best include -Infinity; a few finite amid -Infinity and ties.
  const kinds: Record<string, (n: number) => Float32Array> = {
    gauss: (n) => Float32Array.from({ length: n }, () => gauss() * 3),
    tied: (n) => Float32Array.from({ length: n }, () => Math.round(gauss() * 2) / 2),
    banned: (n) => Float32Array.from({ length: n }, () => (rand() < 0.99 ? -Infinity : gauss() * 2)),
    flat: (n) => Float32Array.from({ length: n }, () => (rand() < 0.5 ? -Infinity : rand() < 0.1 ? 1 : 0)),
  };
  const configs: Partial<SamplingParams>[] = [{ temperature: 0 }, { temperature: 0, topK: 5, topP: 0.5, minP: 0.1 }];
  for (const topK of [1, 5, 40, 64])
    for (const topP of [1, 0.9, 0.5])
      for (const minP of [0, 0.05, 0.3]) configs.push({ temperature: 0.8, topK, topP, minP });
  let compared = 0;
  let mismatches = 0;
  let varied = 0;
  for (const vocab of [1000, 32000]) {
    for (const [kind, make] of Object.entries(kinds)) {
      for (let r = 0; r < 2; r++) {
        const row = make(vocab);
        for (const [ci, cfg] of configs.entries()) {
          const seen = new Set<number>();
          for (const seed of [0, 99, 2 ** 53 - 1]) {
            for (const position of [0, 1, 17, 4096, 123457]) {
              const p = { ...cfg, seed };
              const got = fromBest(row, p, position);
              const want = sample(row, p, [], position);
              compared++;
              seen.add(want);
              if (got.token !== want && mismatches++ < 5) t.fail(`${kind} ${vocab} row ${r} config ${ci} seed ${seed} position ${position}: ${got.token}, not ${want}`);
              if (got.needed !== (cfg.temperature === 0 ? 1 : cfg.topK)) t.fail(`${kind} config ${ci}: needed ${got.needed}`);
            }
          }
          if (seen.size > 1) varied++;
        }
      }
    }
  }
  t.equal(mismatches, 0, `${compared} draws, each the same from the 64 best as from the whole row`);
  t.ok(varied > 100, `the draws vary with seed and position (${varied} row-configs drew several tokens)`);
});

t.test('which configs sampling from the k best serves', async (t) => {
  const needed = (params: Partial<SamplingParams>, k = 64, vocab = 1000) => {
    const row = Float32Array.from({ length: vocab }, (_, i) => Math.sin(i));
    const got = native().sampleLogitsFromBest(row, { ...base, ...params }, 3, k);
    if (got.needed === 0) t.equal(got.token, -1, 'no token without the whole row');
    return got.needed;
  };
  t.equal(needed({ temperature: 0 }), 1, 'greedy');
  t.equal(needed({ temperature: 0, topK: 500, topP: 0.3 }), 1, 'greedy ignores the later stages');
  t.equal(needed({ temperature: 0.8, topK: 40, topP: 0.9, minP: 0.05 }), 40, 'a top-k chain');
  t.equal(needed({ temperature: 0.8, topK: 64 }), 64, 'top-k = k');
  t.equal(needed({ temperature: 0.8, topK: 0 }), 0, 'no top-k');
  t.equal(needed({ temperature: 0.8, topK: 65 }), 0, 'top-k above k');
  t.equal(needed({ temperature: 0.8, topK: 50 }, 50, 50), 0, 'top-k = vocabulary keeps every token');
  t.equal(needed({ temperature: 0.8, topK: 60 }, 50, 50), 0, 'top-k above the vocabulary');
  t.equal(needed({ temperature: 0, logitBias: [{ token: 3, bias: 0 }] }), 0, 'a logit bias');
  t.equal(needed({ temperature: 0.8, topK: 40, logitBias: [{ token: 3, bias: 1 }] }), 0, 'a logit bias on a top-k chain');
  t.equal(needed({ temperature: 0, allowed: new Uint8Array(125).fill(255) }), 0, 'an allowed set');
  t.equal(needed({ temperature: 0.8, topK: 40, allowed: new Uint8Array(125).fill(255) }), 0, 'an allowed set on a top-k chain');
  // Penalties change nothing without recent tokens (the binding passes none).
  const penalties = { repeatPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.2 };
  t.equal(needed({ temperature: 0, ...penalties }), 1, 'greedy with penalties and no recent tokens');
  t.equal(needed({ temperature: 0.8, topK: 40, ...penalties }), 40, 'a top-k chain with penalties and no recent tokens');
  const row = Float32Array.from({ length: 1000 }, (_, i) => Math.cos(i * 0.37) * 4);
  for (let position = 0; position < 50; position++) {
    const p = { ...base, temperature: 0.8, topK: 40, minP: 0.02, ...penalties, seed: 5 };
    if (native().sampleLogitsFromBest(row, p, position, 64).token !== sample(row, p, [], position)) t.fail(`position ${position}: the tokens differ`);
  }
});

t.test('sampling from the k best: bad input gives typed errors', async (t) => {
  const n = native();
  const row = Float32Array.from({ length: 100 }, (_, i) => i % 7);
  const greedy = { ...base, temperature: 0 };
  t.throws(() => n.sampleLogitsFromBest(row, greedy, 0, 0), { code: 'TDM_BAD_ARGUMENT', message: /k must be/ });
  t.throws(() => n.sampleLogitsFromBest(row, greedy, 0, 101), { code: 'TDM_BAD_ARGUMENT', message: /k must be/ });
  t.throws(() => n.sampleLogitsFromBest(row, greedy, -1, 8), { code: 'TDM_BAD_ARGUMENT', message: /position/ });
  t.throws(() => n.sampleLogitsFromBest(new Float64Array(4) as unknown as Float32Array, greedy, 0, 2), { code: 'TDM_BAD_ARGUMENT', message: /Float32Array/ });
  t.throws(() => n.sampleLogitsFromBest(row, { ...base, temperature: 0.5, topK: 3, topP: 0 }, 0, 8), { code: 'TDM_BAD_ARGUMENT', message: /topP/ });
  t.throws(() => n.sampleLogitsFromBest(row, { ...base, temperature: 0.5, topK: 3, seed: -1 }, 0, 8), { code: 'TDM_BAD_ARGUMENT', message: /seed/ });
  t.throws(() => n.sampleLogitsFromBest(Float32Array.of(1, NaN, 2), greedy, 0, 2), { code: 'TDM_BAD_ARGUMENT', message: /token 1 is NaN/ });
  t.throws(() => n.sampleLogitsFromBest(Float32Array.of(-Infinity, -Infinity), greedy, 0, 2), { code: 'TDM_BAD_ARGUMENT', message: /banned/ });
});
