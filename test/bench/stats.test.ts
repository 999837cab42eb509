// The bench's arithmetic: percentiles as numpy computes them, seeded Poisson arrivals,
// length distributions, the latency metrics, goodput at an SLO and the bandwidth floor.
import t from 'tap';
import { decodeBytes, decodeFloorTokPerS, expectedExpertShare, stepBytes } from '../../src/bench/floor.js';
import { readCpuTimes, loadWarning, type CpuLoad } from '../../src/bench/load.js';
import {
  maxRateAtSlo,
  meetsSlo,
  promptTokPerS,
  decodeTokPerS,
  servingMetrics,
  steadyDecodeTokPerS,
  tpotMs,
  ttftMs,
  e2eMs,
  type RequestTrace,
} from '../../src/bench/metrics.js';
import { mean, median, percentile, poissonArrivals, Rng, sampleLength, summarize } from '../../src/bench/stats.js';
import { makePrompt, parseTgKey, planRequests, TG_PROMPT_TOKENS, workloadKey, type Workload } from '../../src/bench/workloads.js';

t.test('percentiles interpolate between closest ranks, as numpy.percentile does', async (t) => {
  const oneToTen = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5];
  t.equal(percentile([1, 2, 3, 4], 50), 2.5);
  t.equal(percentile(oneToTen, 0), 1);
  t.equal(percentile(oneToTen, 100), 10);
  t.ok(Math.abs(percentile(oneToTen, 90) - 9.1) < 1e-12, 'p90 of 1..10 is 9.1');
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  t.ok(Math.abs(percentile(hundred, 99) - 99.01) < 1e-9, 'p99 of 1..100 is 99.01');
  t.equal(percentile([7], 99), 7);
  t.ok(Number.isNaN(percentile([], 50)), 'no values: NaN');
  t.equal(median([3, NaN, 1, 2]), 2, 'NaN values are left out');
  t.equal(mean([1, 2, 3, 6]), 3);
  t.throws(() => percentile([1], 101), RangeError);
  const s = summarize(hundred);
  t.same([s.p50, s.count, s.mean], [50.5, 100, 50.5]);
});

t.test('the RNG is seeded: same seed, same sequence; different seeds differ', async (t) => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const xs = Array.from({ length: 8 }, () => a.next());
  t.same(Array.from({ length: 8 }, () => b.next()), xs);
  t.not(Array.from({ length: 8 }, () => c.next()).join(), xs.join());
  t.ok(xs.every((x) => x >= 0 && x < 1));
  const ints = Array.from({ length: 2000 }, () => a.int(3, 5));
  t.same([...new Set(ints)].sort(), [3, 4, 5], 'int(lo, hi) includes both ends');
});

t.test('Poisson arrivals: seeded, increasing, exponential gaps of mean 1/rate', async (t) => {
  const rate = 4;
  const arrivals = poissonArrivals(20000, rate, new Rng(7));
  t.same(poissonArrivals(50, rate, new Rng(7)), arrivals.slice(0, 50), 'same seed, same arrivals');
  t.ok(arrivals.every((v, i) => i === 0 || v > arrivals[i - 1]!), 'strictly increasing');
  const gaps = arrivals.map((v, i) => v - (i === 0 ? 0 : arrivals[i - 1]!));
  // Mean gap 1/rate within 3% and P(gap < mean) = 1 - 1/e for an exponential: deterministic for this seed.
  t.ok(Math.abs(mean(gaps) * rate - 1) < 0.03, `mean gap ${mean(gaps)} ≈ ${1 / rate}`);
  const below = gaps.filter((g) => g < 1 / rate).length / gaps.length;
  t.ok(Math.abs(below - (1 - Math.exp(-1))) < 0.02, `P(gap < mean) ${below} ≈ 0.632`);
  t.throws(() => poissonArrivals(3, 0, new Rng(1)), RangeError);
});

t.test('length distributions stay in range; the chat-like one has a long tail', async (t) => {
  const rng = new Rng(3);
  t.equal(sampleLength({ kind: 'fixed', value: 12 }, rng), 12);
  const u = Array.from({ length: 5000 }, () => sampleLength({ kind: 'uniform', min: 10, max: 20 }, rng));
  t.ok(u.every((v) => Number.isInteger(v) && v >= 10 && v <= 20));
  t.same(Math.min(...u), 10);
  t.same(Math.max(...u), 20);
  const d = { kind: 'lognormal', median: 100, sigma: 1, min: 4, max: 2000 } as const;
  const l = Array.from({ length: 5000 }, () => sampleLength(d, rng));
  t.ok(l.every((v) => v >= 4 && v <= 2000));
  t.ok(Math.abs(median(l) / 100 - 1) < 0.1, `median ${median(l)} ≈ 100`);
  t.ok(mean(l) > median(l) * 1.4, 'mean well above the median: a long right tail');
  t.ok(percentile(l, 99) > 5 * median(l), 'p99 many times the median');
});

t.test('prompts and request plans are seeded and shaped as asked', async (t) => {
  const source = { normalTokens: Int32Array.from([5, 6, 7, 8]), bosId: 1 };
  const p = makePrompt(source, 6, new Rng(1));
  t.equal(p.length, 6);
  t.equal(p[0], 1, 'BOS first');
  t.ok(p.slice(1).every((id) => id >= 5 && id <= 8));
  t.same(makePrompt({ ...source, bosId: -1 }, 3, new Rng(1)).length, 3);
  const w: Workload = {
    kind: 'online', lengths: 'x', rate: 2, requests: 30, concurrency: 4,
    input: { kind: 'uniform', min: 4, max: 9 }, output: { kind: 'fixed', value: 5 },
  };
  const a = planRequests(w, source, 11);
  t.same(planRequests(w, source, 11), a, 'same seed, same requests');
  t.equal(a.length, 30);
  t.ok(a.every((r) => r.prompt.length >= 4 && r.prompt.length <= 9 && r.maxTokens === 5));
  t.ok(a.every((r, i) => i === 0 || r.arrivalMs > a[i - 1]!.arrivalMs));
  const par = planRequests({ kind: 'parallel', sequences: 3, promptTokens: 4, outputTokens: 2 }, source, 1);
  t.same(par.map((r) => [r.arrivalMs, r.prompt.length, r.maxTokens]), [[0, 4, 2], [0, 4, 2], [0, 4, 2]]);
  t.equal(workloadKey(w), 'online-x@2');
  t.equal(workloadKey({ kind: 'pp', promptTokens: 512 }), 'pp512');
  t.equal(workloadKey({ kind: 'tg', promptTokens: TG_PROMPT_TOKENS, outputTokens: 128 }), 'tg128', 'the short default prompt keeps the plain key');
  t.equal(workloadKey({ kind: 'tg', promptTokens: 4096, outputTokens: 128 }), 'tg128@d4096');
  t.same(parseTgKey('tg128@d4096'), { outputTokens: 128, promptTokens: 4096 });
  t.same(parseTgKey('tg32'), { outputTokens: 32, promptTokens: TG_PROMPT_TOKENS });
  t.throws(() => parseTgKey('pp512'), { code: 'TDM_INTERNAL' });
});

const trace = (arrivalMs: number, promptTokens: number, tokenTimesMs: number[]): RequestTrace => ({ arrivalMs, promptTokens, tokenTimesMs });

t.test('TTFT, TPOT, end to end and the per-kind rates', async (t) => {
  const r = trace(100, 50, [600, 700, 800, 900]);
  t.equal(ttftMs(r), 500);
  t.equal(tpotMs(r), 100);
  t.equal(e2eMs(r), 800);
  t.equal(promptTokPerS(r), 100, '50 prompt tokens in 0.5 s');
  t.equal(decodeTokPerS(r), 10, '3 tokens in 0.3 s');
  t.ok(Number.isNaN(tpotMs(trace(0, 1, [5]))), 'one token: no TPOT');
  t.ok(Number.isNaN(ttftMs(trace(0, 1, []))), 'no token: no TTFT');
});

t.test('steady aggregate decode counts only the window where every sequence decodes', async (t) => {
  // Sequence a decodes every 10 ms from 10 to 100; b starts at 40 and ends at 130.
  const a = trace(0, 4, Array.from({ length: 10 }, (_, i) => 10 + 10 * i));
  const b = trace(0, 4, Array.from({ length: 10 }, (_, i) => 40 + 10 * i));
  // Window (40, 100]: a has 50..100 (6 tokens), b has 50..100 (6 tokens) → 12 tokens in 60 ms.
  t.equal(steadyDecodeTokPerS([a, b]), 200);
  // Disjoint sequences: no common window, so every token over the whole span.
  const c = trace(0, 4, [10, 20]);
  const d = trace(0, 4, [30, 40]);
  t.equal(steadyDecodeTokPerS([c, d]), 100, '4 tokens over 40 ms');
});

t.test('serving metrics, SLO attainment and goodput', async (t) => {
  const slo = { ttftMs: 200, tpotMs: 50 };
  const traces = [
    trace(0, 10, [100, 140, 180]), // TTFT 100, TPOT 40: meets
    trace(100, 10, [400, 420]), // TTFT 300: misses
    trace(200, 10, [300, 400, 500]), // TPOT 100: misses
    trace(300, 10, [450]), // one token, TTFT 150: meets on TTFT alone
  ];
  t.same(traces.map((r) => meetsSlo(r, slo)), [true, false, false, true]);
  const m = servingMetrics(traces, slo);
  t.equal(m.requests, 4);
  t.equal(m.durationS, 0.5, 'first arrival at 0, last token at 500 ms');
  t.equal(m.sloAttainment, 0.5);
  t.equal(m.goodputRps, 4, '2 good requests in 0.5 s');
  t.equal(m.outputTokPerS, 18, '9 tokens in 0.5 s');
  t.equal(m.totalTokPerS, 98);
  t.equal(m.ttftMs.count, 4);
  t.equal(m.tpotMs.count, 3, 'the one-token request has no TPOT');
  const sweep = [
    { rate: 1, sloAttainment: 1 },
    { rate: 2, sloAttainment: 0.95 },
    { rate: 4, sloAttainment: 0.5 },
  ];
  t.equal(maxRateAtSlo(sweep), 2);
  t.equal(maxRateAtSlo(sweep, 0.99), 1);
  t.equal(maxRateAtSlo([{ rate: 1, sloAttainment: 0.2 }]), 0);
});

t.test('the decode floor reads dense weights, active experts, one embedding row and the KV cache', async (t) => {
  const hp = { nVocab: 100, nExpert: 8, nExpertUsed: 2, nLayer: 2, nHeadKv: 2, headDim: 4, headDimV: 4 };
  const tensors = [
    { name: 'token_embd.weight', nBytes: 1000 },
    { name: 'output.weight', nBytes: 500 },
    { name: 'blk.0.attn_q.weight', nBytes: 300 },
    { name: 'blk.0.ffn_gate_inp.weight', nBytes: 8 },
    { name: 'blk.0.ffn_up_exps.weight', nBytes: 800 },
    { name: 'blk.0.ffn_down_exps.weight', nBytes: 800 },
  ];
  const b = decodeBytes(tensors, hp);
  t.equal(b.denseBytes, 808);
  t.equal(b.expertBytes, 1600);
  t.equal(b.activeExpertBytes, 400, '2 of 8 experts');
  t.equal(b.embeddingBytes, 10, 'one row of 100');
  t.equal(b.bytesPerToken, 1218);
  t.equal(b.kvBytesPerContextToken, 2 * 2 * 8 * 2, 'layers × KV heads × (K + V dims) × 2 bytes');
  t.equal(decodeFloorTokPerS(b, 1218 * 10), 10, '10 steps per second at 10 tokens worth of bandwidth');
  t.equal(stepBytes(b, 1, 0), 1218);
  t.equal(expectedExpertShare(8, 2, 1), 0.25);
  t.ok(Math.abs(expectedExpertShare(8, 2, 2) - (1 - 0.75 ** 2)) < 1e-12);
  t.ok(decodeFloorTokPerS(b, 1e6, 8) > 4 * decodeFloorTokPerS(b, 1e6, 1), 'batching shares the dense weights');
  t.ok(decodeFloorTokPerS(b, 1e6, 1, 1000) < decodeFloorTokPerS(b, 1e6, 1, 0), 'a longer context reads more KV');
  const dense = tensors.filter((x) => x.name !== 'output.weight' && !x.name.includes('exps') && !x.name.includes('gate_inp'));
  const tied = decodeBytes(dense, { ...hp, nExpert: 0, nExpertUsed: 0 });
  t.ok(tied.tiedEmbeddings);
  t.equal(tied.embeddingBytes, 1000, 'tied: the output projection reads the whole table');
  t.equal(tied.bytesPerToken, 1300, 'a dense model reads every tensor whole');
  t.equal(stepBytes(tied, 4, 0), 1300, 'a tied table is read once per step, whatever the batch');
});

t.test('CPU load: /proc/stat parsing and the warning threshold', async (t) => {
  const stat = 'cpu  1000 10 500 9000 40 5 5 30 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n';
  t.same(readCpuTimes(stat), { busyS: 15.2, stealS: 0.3 });
  t.equal(readCpuTimes('nothing here'), undefined);
  const base: CpuLoad = { wallS: 10, cpus: 2, ownCpuS: 19, otherCpuS: 0.5, otherCpus: 0.05, stealS: 0, loadAvg1: 2, measured: true };
  t.equal(loadWarning(base), undefined, '2.5% of the machine: quiet enough');
  t.match(loadWarning({ ...base, otherCpuS: 8, otherCpus: 0.8 }), /other processes used 0\.80 of 2 CPUs \(40%\)/);
  t.match(loadWarning({ ...base, stealS: 5 }), /stole 25%/);
  t.equal(loadWarning({ ...base, otherCpus: 1.5, measured: false }), undefined, 'unmeasured: no claim either way');
  t.equal(loadWarning({ ...base, wallS: 0.05, otherCpuS: 0.03, otherCpus: 0.6 }), undefined, 'within tick granularity of a short run');
});
