// The cost model: interpolated tables, fitting on synthetic timings (noisy samples of a known
// machine), prediction error on held-out sizes, online refit from StepResult phases.
import t from 'tap';
import { Bilinear, PiecewiseLinear } from '../../src/sched/interp.js';
import { costShapeOf, fitTables, observationOf, planWork, predictionErrors, streamedBlocksOf, TableCostModel, type CostModel, type Measurement } from '../../src/sched/cost-model.js';
import { gridProbes, measureGrid, SIM_GRID, type ProfileGrid } from '../../src/sched/profiler.js';
import { HARDWARE, rooflineCostModel, SIM_MODELS } from '../../src/sched/hardware.js';
import { Rng } from '../../src/sched/sim/workload.js';
import type { SequencePlan, StepPlan, Strategy } from '../../src/native/step-plan.js';
import { predictStep } from '../../src/sched/step-time.js';

t.test('piecewise-linear tables interpolate, extrapolate and fit', async (t) => {
  const p = new PiecewiseLinear([1, 2, 4], [10, 20, 20]);
  t.equal(p.at(1.5), 15);
  t.equal(p.at(3), 20);
  t.equal(p.at(0), 0, 'extends the first segment (clamped at 0)');
  t.equal(p.at(6), 20, 'extends the last segment');
  t.equal(new PiecewiseLinear([2], [7]).at(100), 7, 'one knot is a constant');
  const f = PiecewiseLinear.fit([{ x: 2, y: 4 }, { x: 1, y: 1 }, { x: 2, y: 6 }]);
  t.same(f.xs, [1, 2]);
  t.same(f.ys, [1, 5], 'the mean of each knot\'s samples');
  t.throws(() => new PiecewiseLinear([1, 1], [0, 0]), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => new PiecewiseLinear([1, 2], [0, NaN]), { code: 'TDM_BAD_ARGUMENT' });
  // Online: repeated observations of a new truth pull the table to it.
  const q = new PiecewiseLinear([0, 10, 20], [0, 10, 20]);
  for (let i = 0; i < 400; i++) for (const x of [0, 5, 10, 15, 20]) q.observe(x, 3 * x + 1, 0.2);
  for (const x of [2, 7, 13, 19]) t.ok(Math.abs(q.at(x) - (3 * x + 1)) < 0.5, `refit reaches 3x+1 at ${x} (${q.at(x).toFixed(2)})`);
});

t.test('bilinear tables are exact on bilinear functions and refit online', async (t) => {
  const f = (x: number, y: number) => 3 + 2 * x + 0.5 * y + 0.25 * x * y;
  const xs = [1, 4, 16];
  const ys = [10, 100, 1000];
  const b = new Bilinear(xs, ys, xs.map((x) => ys.map((y) => f(x, y))));
  for (const [x, y] of [[2, 50], [10, 500], [16, 1000], [3, 10]] as const) t.ok(Math.abs(b.at(x, y) - f(x, y)) < 1e-9, `exact at (${x}, ${y})`);
  t.ok(Math.abs(b.at(20, 50) - f(20, 50)) < 1e-6, 'extends linearly beyond the grid');
  const fitted = Bilinear.fit(xs.flatMap((x) => ys.map((y) => ({ x, y, z: f(x, y) }))));
  t.same(fitted.toJSON(), b.toJSON());
  t.throws(() => Bilinear.fit([{ x: 1, y: 1, z: 1 }, { x: 2, y: 2, z: 2 }]), { code: 'TDM_BAD_ARGUMENT', message: /no sample/ });
  const g = new Bilinear(xs, ys, xs.map(() => ys.map(() => 0)));
  for (let i = 0; i < 300; i++) for (const x of xs) for (const y of ys) g.observe(x, y, f(x, y), 0.3);
  t.ok(Math.abs(g.at(8, 300) - f(8, 300)) / f(8, 300) < 0.2, 'refit from zero approaches the function between grid points');
});

/** A machine whose subtasks follow known laws: the simulator's T4 roofline. */
function machine(): CostModel {
  return rooflineCostModel(HARDWARE.t4!, SIM_MODELS['llama2-7b']!, 0.5);
}

t.test('tables fitted to noisy synthetic timings predict held-out sizes within 10%', async (t) => {
  const truth = machine();
  const rng = new Rng(3);
  const r = measureGrid(SIM_GRID, (m) => m.us * (1 + 0.02 * rng.normal()), truth);
  t.equal(r.measurements.length, gridProbes(SIM_GRID).length);
  const kinds = new Set(r.errors.map((e) => e.kind));
  for (const k of ['linear', 'deviceAttention', 'prefillAttention', 'cpuAttention', 'cpuPrefillAttention', 'copy']) t.ok(kinds.has(k as Measurement['kind']), `error reported for ${k}`);
  for (const e of r.errors) t.ok(e.meanAbsRelError < 0.1, `${e.kind}: mean held-out error ${(100 * e.meanAbsRelError).toFixed(1)}% over ${e.samples}`);
  const json = JSON.parse(JSON.stringify(r.model.toJSON()));
  const back = new TableCostModel(json);
  t.equal(back.linearUs(77), r.model.linearUs(77), 'JSON round trip keeps predictions');
  t.equal(back.cpuAttentionUs(5, 333), r.model.cpuAttentionUs(5, 333));
  t.throws(() => new TableCostModel({ ...json, version: 2 }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => fitTables(truth.shape, r.measurements.filter((m) => m.kind !== 'copy')), { code: 'TDM_BAD_ARGUMENT', message: /copy/ });
  // A coarse grid predicts worse between its points than a fine one: the error measure sees it.
  const coarse: ProfileGrid = { ...SIM_GRID, linearTokens: [1, 1024], attentionRequests: [1, 256], attentionContexts: [16, 4096] };
  const c = measureGrid(coarse, (m) => m.us, truth);
  const err = (k: string, errs: typeof r.errors) => errs.find((e) => e.kind === k)!.meanAbsRelError;
  t.ok(err('linear', c.errors) > err('linear', r.errors), `a 2-point linear table errs more (${(100 * err('linear', c.errors)).toFixed(1)}% vs ${(100 * err('linear', r.errors)).toFixed(1)}%)`);
  t.same(predictionErrors(r.model, []), [], 'no held-out timings, no error rows');
});

const seq = (seqId: number, startPos: number, tokens: number, attention: 'cpu' | 'gpu'): SequencePlan => ({
  seqId, tokens: new Int32Array(tokens), startPos, blockTable: new Int32Array(1), kvTier: attention === 'gpu' ? 'device' : 'host', attention, sample: true,
});

t.test('a step\'s phases become subtask measurements; online refit follows a machine that changed', async (t) => {
  const plan: StepPlan = { strategy: 'overlap', copies: [], sequences: [seq(1, 100, 1, 'gpu'), seq(2, 300, 1, 'gpu'), seq(3, 50, 1, 'cpu')] };
  const obs = observationOf(plan, { sequences: [], phaseUs: { linear: 900, embed: 50, logits: 50, attention: 200, cpuAttention: 400 }, totalUs: 1500 }, 1000);
  t.same(obs.linear, { tokens: 3, us: 1000 });
  t.same(obs.deviceAttention, { requests: 2, context: 200, us: 200 });
  t.same(obs.cpuAttention, { requests: 1, context: 50, us: 400 });
  const withPrefill: StepPlan = { ...plan, sequences: [...plan.sequences, seq(4, 0, 30, 'gpu')] };
  t.notOk(observationOf(withPrefill, { sequences: [], phaseUs: { linear: 1, attention: 1 }, totalUs: 2 }, 1000).deviceAttention, 'a side with a prefill chunk mixes tables: not measured');
  t.notOk(observationOf({ ...plan, strategy: 'pipeline' }, { sequences: [], phaseUs: { linear: 900 }, totalUs: 900 }, 1000).linear, 'two pipelined linear passes are not one table point');
  // Tables with the head apart: the logits phase is the head's, over the rows that sampled.
  const chunk: StepPlan = { ...plan, sequences: [...plan.sequences, { ...seq(4, 0, 30, 'gpu'), sample: false }] };
  const apart = observationOf(chunk, { sequences: [], phaseUs: { linear: 900, embed: 50, logits: 50 }, totalUs: 1000 }, 1000, true);
  t.same(apart.linear, { tokens: 33, us: 950 }, 'linear work without the head');
  t.same(apart.head, { rows: 3, us: 50 }, 'the head over the three sampled rows, not the chunk\'s 30');
  t.notOk(observationOf(chunk, { sequences: [], phaseUs: { linear: 900, logits: 50 }, totalUs: 1000 }, 1000).head, 'tables without a head table take no head measurement');
  const swap: StepPlan = { strategy: 'overlap', copies: [{ fromTier: 'host', fromBlock: 0, toTier: 'device', toBlock: 1 }, { fromTier: 'host', fromBlock: 2, toTier: 'device', toBlock: 3 }], sequences: [] };
  t.same(observationOf(swap, { sequences: [], phaseUs: { copies: 80 }, totalUs: 80 }, 4096).copy, { bytes: 4096, us: 40 });

  // Profiled on one machine; the CPU then gets twice as slow. Steps measured there pull the CPU table over.
  const truth = machine();
  const model = measureGrid(SIM_GRID, (m) => m.us, truth).model;
  const before = model.cpuAttentionUs(6, 500);
  for (let i = 0; i < 200; i++) {
    const n = 2 + (i % 8);
    const ctx = 200 + 50 * (i % 13);
    const p: StepPlan = { strategy: 'overlap', copies: [], sequences: Array.from({ length: n }, (_, k) => seq(k + 1, ctx, 1, 'cpu')) };
    model.observeStep(p, { sequences: [], phaseUs: { cpuAttention: 2 * truth.cpuAttentionUs(n, ctx) }, totalUs: 1 });
  }
  const after = model.cpuAttentionUs(6, 500);
  const want = 2 * truth.cpuAttentionUs(6, 500);
  t.ok(Math.abs(after - want) / want < 0.1, `CPU attention at (6, 500): ${before.toFixed(0)} µs before, ${after.toFixed(0)} after, ${want.toFixed(0)} now true`);
  t.equal(model.numObserved, 200);
  const asyncModel = measureGrid(SIM_GRID, (m) => m.us, truth).model;
  const lin = asyncModel.linearUs(3);
  asyncModel.observeStep(plan, { sequences: [], phaseUs: { linear: 1e9, attention: 1e9, cpuAttention: 1 }, totalUs: 1 }, { deviceSynchronous: false });
  t.equal(asyncModel.linearUs(3), lin, 'an asynchronous device\'s driver-side phases are not taken as device times');
});

t.test('sampling on several threads: a step takes ceil(sequences / threads) rounds of draws', async (t) => {
  const model = measureGrid(SIM_GRID, (m) => m.us, machine()).model;
  t.equal(model.samplingThreads, 1, 'one thread unless told');
  model.samplingThreads = 4;
  // The executor draws 4 at a time, 120 µs a draw: 1-4 sequences 120 µs, 5-8 240, ...
  for (let i = 0; i < 60; i++) {
    const n = 1 + (i % 13);
    const p: StepPlan = { strategy: 'gpu-only', copies: [], sequences: Array.from({ length: n }, (_, k) => seq(k + 1, 100, 1, 'gpu')) };
    model.observeStep(p, { sequences: [], phaseUs: { sampling: 120 * Math.ceil(n / 4) }, totalUs: 1 });
  }
  for (const n of [1, 3, 4, 5, 13, 32]) t.ok(Math.abs(model.samplingUs(n) - 120 * Math.ceil(n / 4)) < 1, `${n} sequences: ${model.samplingUs(n).toFixed(1)} µs`);
  const back = new TableCostModel(JSON.parse(JSON.stringify(model.toJSON())) as ReturnType<TableCostModel['toJSON']>);
  t.equal(back.samplingUs(9), model.samplingUs(9), 'threads and the round time survive the JSON round trip');
  // Taken per sequence, as one thread would, the same steps mispredict small and large batches.
  const serial = measureGrid(SIM_GRID, (m) => m.us, machine()).model;
  for (let i = 0; i < 60; i++) {
    const n = 1 + (i % 13);
    const p: StepPlan = { strategy: 'gpu-only', copies: [], sequences: Array.from({ length: n }, (_, k) => seq(k + 1, 100, 1, 'gpu')) };
    serial.observeStep(p, { sequences: [], phaseUs: { sampling: 120 * Math.ceil(n / 4) }, totalUs: 1 });
  }
  t.ok(Math.abs(serial.samplingUs(32) - 960) > 300, `one thread assumed: ${serial.samplingUs(32).toFixed(0)} µs predicted for 32 sequences, 960 true`);
  t.throws(() => {
    model.samplingThreads = 0;
  }, { code: 'TDM_BAD_ARGUMENT' });
});

t.test('an asynchronous device: sampling from its phase, each strategy\'s pass from the step total', async (t) => {
  const truth = machine();
  const model = measureGrid(SIM_GRID, (m) => m.us, truth).model;
  const plan = (strategy: Strategy, nDev: number, nCpu: number): StepPlan => ({
    strategy,
    copies: [],
    sequences: [...Array.from({ length: nDev }, (_, k) => seq(k + 1, 500, 1, 'gpu')), ...Array.from({ length: nCpu }, (_, k) => seq(nDev + k + 1, 500, 1, 'cpu'))],
  });
  const work = (p: StepPlan) => p.sequences.map((s) => ({ tokens: s.tokens.length, context: s.startPos, attention: s.attention }));
  // A GPU as the run measured it: projections and attention only queued (a few µs), the wait
  // lands in 'logits'; sampling 350 µs a sequence on the host; overlap loses 40% to its
  // per-layer waits, gpu-only matches the tables.
  const slow: Partial<Record<Strategy, number>> = { 'gpu-only': 1, overlap: 1.4 };
  const gpuStep = (p: StepPlan) => {
    const pass = (slow[p.strategy] ?? 1) * predictStep(p.strategy, work(p), truth).passUs;
    const sampling = 350 * p.sequences.length;
    return { sequences: [], phaseUs: { embed: 20, linear: 800, attention: 150, logits: pass - 970, sampling, copies: 0 }, totalUs: pass + sampling };
  };
  const obs = observationOf(plan('overlap', 4, 2), gpuStep(plan('overlap', 4, 2)), 1000);
  t.same(obs.sampling, { seqs: 6, us: 2100 }, 'sampling: the phase over the sampled sequences');
  t.equal(obs.pass?.strategy, 'overlap');
  t.ok(Math.abs(obs.pass!.us - 1.4 * predictStep('overlap', work(plan('overlap', 4, 2)), truth).passUs) < 1e-6, 'the pass: the step total less sampling and swaps');
  const prefill: StepPlan = { ...plan('gpu-only', 2, 0), sequences: [...plan('gpu-only', 2, 0).sequences, seq(9, 0, 40, 'gpu')] };
  t.notOk(observationOf(prefill, gpuStep(prefill), 1000).pass, 'no pass from a step with a prefill chunk');

  const lin = model.linearUs(8);
  const dev = model.deviceAttentionUs(8, 500);
  const before = model.toJSON();
  for (let i = 0; i < 40; i++) {
    const p = i % 2 === 0 ? plan('gpu-only', 8, 0) : plan('overlap', 8, 1 + (i % 5));
    model.observeStep(p, gpuStep(p), { deviceSynchronous: false });
  }
  // (Within rounding: the device scales fitted to the gpu-only passes stay at 1.)
  t.ok(Math.abs(model.linearUs(8) / lin - 1) < 1e-9, 'queue times do not become linear times');
  t.ok(Math.abs(model.deviceAttentionUs(8, 500) / dev - 1) < 1e-9, 'nor device attention times');
  t.ok(Math.abs(model.samplingUs(10) - 3500) < 1, `sampling learned: ${model.samplingUs(10).toFixed(0)} µs for 10 sequences`);
  t.ok(Math.abs(model.strategyFactor('overlap') - 1.4) < 0.05, `overlap factor ${model.strategyFactor('overlap').toFixed(3)}`);
  t.ok(Math.abs(model.strategyFactor('gpu-only') - 1) < 0.05, `gpu-only factor ${model.strategyFactor('gpu-only').toFixed(3)}`);
  t.equal(model.strategyFactor('pipeline'), Math.min(1, model.strategyFactor('overlap'), model.strategyFactor('gpu-only')), 'a strategy not yet run: the tables\' word, or the least factor below it');
  const untried = new TableCostModel({ ...model.toJSON(), strategyFactors: { overlap: 1.8 } });
  t.equal(untried.strategyFactor('pipeline'), 1, 'one strategy slower than its tables does not make the untried ones look slower');
  t.equal(new TableCostModel({ ...model.toJSON(), strategyFactors: { overlap: 0.7 } }).strategyFactor('pipeline'), 0.7, 'one faster than its tables makes them look as fast');
  for (const p of [plan('gpu-only', 12, 0), plan('overlap', 6, 3)]) {
    const predicted = predictStep(p.strategy, work(p), model).stepUs;
    const measured = gpuStep(p).totalUs;
    t.ok(Math.abs(predicted - measured) / measured < 0.1, `${p.strategy} ${p.sequences.length} seqs: predicted ${predicted.toFixed(0)} µs, measured ${measured.toFixed(0)}`);
  }
  const fresh = measureGrid(SIM_GRID, (m) => m.us, truth).model;
  const p = plan('overlap', 6, 3);
  t.ok(Math.abs(predictStep('overlap', work(p), fresh).stepUs - gpuStep(p).totalUs) / gpuStep(p).totalUs > 0.3, 'the tables alone were far off');

  const back = new TableCostModel(JSON.parse(JSON.stringify(model.toJSON())) as ReturnType<TableCostModel['toJSON']>);
  t.equal(back.samplingUs(3), model.samplingUs(3), 'sampling survives the JSON round trip');
  t.equal(back.strategyFactor('overlap'), model.strategyFactor('overlap'), 'factors too');
  const old = new TableCostModel({ ...before, samplingRoundUs: undefined, strategyFactors: undefined });
  t.equal(old.samplingUs(5), 0, 'tables saved without them: no sampling time');
  t.equal(old.strategyFactor('pipeline'), 1, 'and factor 1');
  t.equal(new TableCostModel({ ...before, strategyFactors: { overlap: 1e9 } }).strategyFactor('overlap'), 4, 'a saved factor is kept in range');
});

t.test('costShapeOf reads the transfer sizes from the hyperparameters', async (t) => {
  const s = costShapeOf({ nLayer: 2, nHead: 8, nHeadKv: 2, headDim: 16, headDimV: 16 }, 4096);
  t.same(s, { nLayer: 2, qkvBytesPerToken: 4 * (128 + 32 + 32), outBytesPerToken: 4 * 128, kvBlockBytes: 4096 });
  t.same(costShapeOf({ nLayer: 2, nHead: 8, nHeadKv: 2, headDim: 16, headDimV: 16 }, 4096, 16, { layers: 0, window: 0 }).slidingKv, undefined, 'no sliding layers: one KV group');
});

t.test('streamed blocks with sliding layers apart: the window\'s for them, all for the others, and the untimed link priced by bytes', async (t) => {
  // gpt-oss-20b's layout: 24 layers, 12 sliding over 128 positions; a block holds 12 layers.
  const shape = { nLayer: 24, qkvBytesPerToken: 0, outBytesPerToken: 0, kvBlockBytes: 12 * 32768, kvBlockTokens: 16, slidingKv: { layers: 12, window: 128 } };
  t.equal(streamedBlocksOf(shape, 1000, 1), (63 * 12 + 9 * 12) / 24, 'a decode at 1000: 63 blocks, the window\'s 9');
  t.equal(streamedBlocksOf(shape, 0, 100), 7, 'a prompt inside the window: every block, every layer');
  t.equal(streamedBlocksOf({ nLayer: 24, kvBlockTokens: 16 }, 1000, 1), 63, 'one KV group: every block');
  const grid: Measurement[] = [
    { kind: 'linear', tokens: 1, us: 100 }, { kind: 'deviceAttention', requests: 1, context: 64, us: 10 }, { kind: 'cpuAttention', requests: 1, context: 64, us: 10 },
    { kind: 'prefillAttention', tokens: 16, us: 10 }, { kind: 'cpuPrefillAttention', tokens: 16, us: 10 },
    { kind: 'copy', bytes: 4096, us: 1 }, { kind: 'copy', bytes: 1 << 30, us: 1 << 16 },
  ];
  const m = fitTables(shape, grid);
  // Without a stream table: 10 blocks of every layer are 20 of the 12-layer blocks the pool holds.
  t.equal(m.streamUs(10), m.copyUs(20 * shape.kvBlockBytes));
  t.equal(fitTables({ ...shape, slidingKv: undefined, nLayer: 12 }, grid).streamUs(10), m.copyUs(10 * shape.kvBlockBytes), 'one group: a block is every layer');
});

t.test('prefill and copy tables never shrink with size, and a prefill beyond the profiled prompts costs at least its share', async (t) => {
  t.same(PiecewiseLinear.fitNondecreasing([{ x: 1, y: 1 }, { x: 2, y: 10 }, { x: 3, y: 6 }]).ys, [1, 8, 8], 'a dip pools with the knot before it');
  t.same(PiecewiseLinear.fitNondecreasing([{ x: 1, y: 2 }, { x: 1, y: 4 }, { x: 2, y: 1 }, { x: 3, y: 5 }]).ys, [7 / 3, 7 / 3, 5], 'pooled by samples');
  t.same(PiecewiseLinear.fitNondecreasing([{ x: 1, y: 1 }, { x: 2, y: 2 }]).ys, [1, 2], 'increasing tables stay as measured');
  // The H200 profile of 2026-11-27: CPU prefill attention timed slower at 64 tokens than at 256.
  const shape = { nLayer: 8, qkvBytesPerToken: 24576, outBytesPerToken: 16384, kvBlockBytes: 524288 };
  const grid: Measurement[] = [
    { kind: 'linear', tokens: 1, us: 1740 }, { kind: 'linear', tokens: 128, us: 19927 },
    { kind: 'deviceAttention', requests: 1, context: 64, us: 1052 }, { kind: 'cpuAttention', requests: 1, context: 64, us: 908 },
    { kind: 'prefillAttention', tokens: 16, us: 486 }, { kind: 'prefillAttention', tokens: 64, us: 961 }, { kind: 'prefillAttention', tokens: 256, us: 2006 },
    { kind: 'cpuPrefillAttention', tokens: 16, us: 1254 }, { kind: 'cpuPrefillAttention', tokens: 64, us: 13360 }, { kind: 'cpuPrefillAttention', tokens: 256, us: 8276 },
    { kind: 'copy', bytes: 4096, us: 17.7 }, { kind: 'copy', bytes: 16777216, us: 324 },
  ];
  const m = fitTables(shape, grid);
  t.ok(m.cpuPrefillAttentionUs(256, 0) >= m.cpuPrefillAttentionUs(64, 0), 'no dip between the knots');
  // A 290-token chunk at position 1500 has 15 times the products of the largest profiled prompt.
  const big = m.cpuPrefillAttentionUs(290, 1500);
  t.ok(big >= (m.cpuPrefillAttentionUs(256, 0) * (290 * (1500 + 145))) / (256 * 128) - 1e-6, `beyond the table, at least proportional (${big.toFixed(0)} µs)`);
  t.ok(m.prefillAttentionUs(290, 1500) > m.prefillAttentionUs(256, 0), 'the device table extends upward too');
});

t.test('attention tables never shrink with requests or context; linear layers beyond the profiled sizes cost at least their share', async (t) => {
  // The CPU attention the H200 run 4 profiled: a busy spell made 1 request over 64 tokens slower than over 1024.
  const xs = [1, 4, 16, 64];
  const ys = [64, 256, 1024];
  const measured = [[5877, 8602, 1022], [295, 657, 9313], [13553, 11244, 14826], [12120, 16910, 37512]];
  const samples = xs.flatMap((x, i) => ys.map((y, j) => ({ x, y, z: measured[i]![j]! })));
  const b = Bilinear.fitNondecreasing(samples);
  t.same(b.values, [[295, 657, 1022], [295, 657, 9313], [11244, 11244, 14826], [12120, 16910, 37512]], 'each point the least of those at least as large in both sizes');
  for (let i = 0; i < xs.length; i++) {
    for (let j = 0; j < ys.length; j++) {
      if (i > 0) t.ok(b.values[i]![j]! >= b.values[i - 1]![j]!, `nondecreasing in requests at (${xs[i]}, ${ys[j]})`);
      if (j > 0) t.ok(b.values[i]![j]! >= b.values[i]![j - 1]!, `nondecreasing in context at (${xs[i]}, ${ys[j]})`);
    }
  }
  const monotone = [[1, 2], [3, 4]];
  t.same(Bilinear.fitNondecreasing([0, 1].flatMap((i) => [0, 1].map((j) => ({ x: i, y: j, z: monotone[i]![j]! })))).values, monotone, 'a monotone table stays as measured');

  // The H200's linear layers: 128 tokens 19.8 ms; a 288-token step took about 52 ms (five 64-row tiles against two).
  const shape = { nLayer: 8, qkvBytesPerToken: 24576, outBytesPerToken: 16384, kvBlockBytes: 524288 };
  const grid: Measurement[] = [
    { kind: 'linear', tokens: 1, us: 1730 }, { kind: 'linear', tokens: 64, us: 14131 }, { kind: 'linear', tokens: 128, us: 19840 },
    { kind: 'deviceAttention', requests: 1, context: 64, us: 1052 }, { kind: 'cpuAttention', requests: 1, context: 64, us: 908 },
    { kind: 'prefillAttention', tokens: 16, us: 486 }, { kind: 'cpuPrefillAttention', tokens: 16, us: 1254 },
    { kind: 'copy', bytes: 4096, us: 17.7 },
  ];
  const m = fitTables(shape, grid);
  t.equal(m.linearUs(128), 19840, 'at a knot: as measured');
  t.ok(m.linearUs(288) >= (19840 * 288) / 128 - 1e-6, `288 tokens: at least 288/128 of the 128-token time (${m.linearUs(288).toFixed(0)} µs)`);
  t.equal(m.linearUs(0), 0, 'no tokens: no time');
  const dip = fitTables(shape, [...grid, { kind: 'linear', tokens: 96, us: 9000 }]);
  t.ok(dip.linearUs(96) >= dip.linearUs(64), 'a timing below a smaller size\'s is pooled, not a dip');
});

t.test('steps that stream host KV learn a factor of their own: what the gathers cost the compute, not the strategy\'s', async (t) => {
  const truth = machine();
  const model = measureGrid(SIM_GRID, (m) => m.us, truth).model;
  const blockTokens = truth.shape.kvBlockTokens ?? 16;
  const decode = (seqId: number, kvTier: 'device' | 'host'): SequencePlan => ({
    seqId, tokens: new Int32Array(1), startPos: 300, blockTable: new Int32Array(Math.ceil(301 / blockTokens)), kvTier, attention: 'gpu', sample: true,
  });
  const plain: StepPlan = { strategy: 'gpu-only', copies: [], sequences: [decode(1, 'device'), decode(2, 'device')] };
  const streamedPlan: StepPlan = { strategy: 'gpu-only', copies: [], sequences: [decode(1, 'device'), decode(2, 'host')] };
  // A machine where plain steps take 1.2x their tables and streamed ones 1.2 x 1.5x.
  const pass = (p: StepPlan, f: number) => f * predictStep(p.strategy, planWork(p, { nLayer: 4, kvBlockTokens: blockTokens }), truth).passUs;
  const step = (p: StepPlan, f: number) => ({ sequences: [], phaseUs: { sampling: 0, copies: 0 }, totalUs: pass(p, f) });
  for (let i = 0; i < 60; i++) {
    // (Synchronous: no device scales to take the 1.2 instead of the factor.)
    model.observeStep(plain, step(plain, 1.2));
    model.observeStep(streamedPlan, step(streamedPlan, 1.2 * 1.5));
  }
  t.ok(Math.abs(model.strategyFactor('gpu-only') - 1.2) < 0.05, `the strategy factor from the plain steps alone: ${model.strategyFactor('gpu-only').toFixed(3)}`);
  t.ok(Math.abs(model.streamFactor() - 1.5) < 0.05, `the stream factor: ${model.streamFactor().toFixed(3)}`);
  const predicted = predictStep('gpu-only', planWork(streamedPlan, { nLayer: 4, kvBlockTokens: blockTokens }), model).stepUs;
  t.ok(Math.abs(predicted / pass(streamedPlan, 1.8) - 1) < 0.06, 'a streamed step is predicted with both');
  t.ok(Math.abs(predictStep('gpu-only', planWork(plain, { nLayer: 4, kvBlockTokens: blockTokens }), model).stepUs / pass(plain, 1.2) - 1) < 0.06, 'a plain one with its strategy\'s alone');
  const back = new TableCostModel(JSON.parse(JSON.stringify(model.toJSON())) as ReturnType<TableCostModel['toJSON']>);
  t.equal(back.streamFactor(), model.streamFactor(), 'the factor survives the cache');
  t.equal(new TableCostModel({ ...model.toJSON(), streamFactor: undefined }).streamFactor(), 1, 'tables saved without it: 1');
});
