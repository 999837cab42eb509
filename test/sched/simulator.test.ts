// The simulator: the real Scheduler and policies on a virtual clock. The same seed gives the
// same run to the last number; every request completes; reports say SIMULATED.
import t from 'tap';
import { HARDWARE, rooflineCostModel, SIM_MODELS, deviceKvBlocks } from '../../src/sched/hardware.js';
import { simulateRun, type SimRunConfig } from '../../src/sched/sim/simulator.js';
import { equalLatency, runScenario } from '../../src/sched/sim/scenario.js';
import { formatReport } from '../../src/sched/sim/report.js';
import { DECODE_HEAVY, makeWorkload } from '../../src/sched/sim/workload.js';
import { measureCpuAttentionEfficiency } from '../../src/sched/sim/command.js';
import { native } from '../../src/native/binding.js';

const hw = HARDWARE.t4!;
const model = SIM_MODELS['llama2-7b']!;
const truth = rooflineCostModel(hw, model, 0.5);

function cfg(policy: SimRunConfig['policy'], seed: number): SimRunConfig {
  return { hardware: hw, model, policy, truth, workload: { requests: 12, ratePerSecond: 0.3, promptTokens: [32, 128], outputTokens: [32, 96], seed } };
}

t.test('workloads repeat by seed', async (t) => {
  const spec = { requests: 20, ratePerSecond: 2, promptTokens: [10, 50] as [number, number], outputTokens: [5, 9] as [number, number], seed: 9 };
  t.same(makeWorkload(spec), makeWorkload(spec));
  t.notSame(makeWorkload(spec), makeWorkload({ ...spec, seed: 10 }));
  const w = makeWorkload(spec);
  t.ok(w.every((r, i) => r.prompt.length >= 10 && r.prompt.length <= 50 && r.maxTokens >= 5 && r.maxTokens <= 9 && (i === 0 || r.arrivalUs > w[i - 1]!.arrivalUs)));
});

t.test('a run is a pure function of its seed, and finishes every request', async (t) => {
  for (const policy of ['gpu-only', 'pipeline', 'overlap', 'auto'] as const) {
    const a = simulateRun(cfg(policy, 5));
    const b = simulateRun(cfg(policy, 5));
    t.same(a, b, `${policy}: identical results from the same seed`);
    const expected = makeWorkload(cfg(policy, 5).workload).reduce((n, r) => n + r.maxTokens, 0);
    t.equal(a.generatedTokens, expected, `${policy}: every request generated all its tokens`);
    t.ok(a.throughput > 0 && a.tpotUs.p50 > 0 && a.steps > 0);
    t.notSame(simulateRun(cfg(policy, 6)).durationUs, a.durationUs, `${policy}: another seed, another run`);
  }
  t.equal(simulateRun(cfg('gpu-only', 5)).kvBlocks.device, deviceKvBlocks(hw, model, 16), 'the device tier is what the weights leave on a T4');
});

t.test('a scenario compares policies at equal latency and labels every number SIMULATED', async (t) => {
  const s = runScenario({ hardware: hw, model, cpuAttentionEfficiency: 0.5, requests: 10, seed: 2, rates: [0.05, 0.2], policies: ['gpu-only', 'auto'] });
  t.equal(s.simulated, true);
  t.equal(s.runs.length, 4);
  t.equal(s.equalLatency.length, 2);
  const again = runScenario({ hardware: hw, model, cpuAttentionEfficiency: 0.5, requests: 10, seed: 2, rates: [0.05, 0.2], policies: ['gpu-only', 'auto'] });
  t.same(again.runs, s.runs, 'deterministic');
  const text = formatReport([s], ['a note']);
  t.match(text, /SIMULATED/);
  t.ok(text.split('\n').filter((l) => l.startsWith('| policy')).every((l) => l.includes('SIMULATED')), 'every table header says SIMULATED');
  const skipped = runScenario({ hardware: hw, model: SIM_MODELS['llama3.1-8b']!, cpuAttentionEfficiency: 0.5, requests: 4, seed: 1 });
  t.match(skipped.skipped, /room for 0 KV tokens/, 'an F16 8B model does not fit a T4: reported, not run');
  t.match(formatReport([skipped], []), /not run/);
});

t.test('equal latency takes the highest rate served inside both targets', async (t) => {
  const run = (policy: 'gpu-only' | 'auto', rate: number, throughput: number, tpot: number, ttft: number) =>
    ({ policy, ratePerSecond: rate, throughput, tpotUs: { p50: tpot, p90: tpot, p99: tpot, mean: tpot }, ttftUs: { p50: ttft, p90: ttft, p99: ttft, mean: ttft } }) as Parameters<typeof equalLatency>[0][number];
  const e = equalLatency([run('gpu-only', 1, 10, 50, 100), run('gpu-only', 2, 15, 200, 100), run('auto', 1, 10, 50, 100), run('auto', 2, 19, 90, 100), run('auto', 3, 22, 90, 1e9)], ['gpu-only', 'auto'], 100, 1000);
  t.same(e.map((x) => [x.policy, x.ratePerSecond, x.throughput, x.vsGpuOnly]), [['gpu-only', 1, 10, 1], ['auto', 2, 19, 1.9]], 'too slow a TPOT, or a queue that grows (TTFT), disqualifies a rate');
});

t.test('CPU attention efficiency is measured with the kernels of the profile host', async (t) => {
  t.same(
    Object.values(HARDWARE).map((h) => [h.id, h.host.simd]),
    [['t4', 'avx512'], ['a10', 'avx2'], ['mi210', 'avx2']],
    'the T4 host (Cascade Lake) has AVX-512; the Zen 2 and MI210 hosts run the AVX2 kernels',
  );
  const ids = native().backendOps.ids();
  for (const simd of ['avx2', 'avx512'] as const) {
    const m = await measureCpuAttentionEfficiency(1, simd, 1);
    t.ok(m.efficiency > 0 && m.efficiency <= 1, `${simd}: efficiency ${m.efficiency.toFixed(2)} in (0, 1]`);
    if (ids.includes(`cpu:${simd}`)) t.match(m.note, `cpu:${simd}@1):`, `${simd}: measured with its own kernels`);
    else t.match(m.note, `no ${simd}`, `${simd}: the note says another kernel stood in`);
  }
});

t.test('the roofline prices the LM head apart, over the rows a step samples, as the engine runs it', async (t) => {
  const a10 = HARDWARE.a10!;
  const llama3 = SIM_MODELS['llama3.1-8b']!;
  const m = rooflineCostModel(a10, llama3, 0.5);
  const bigVocab = rooflineCostModel(a10, { ...llama3, nVocab: 4 * llama3.nVocab }, 0.5);
  t.equal(bigVocab.linearUs(512), m.linearUs(512), 'the layers do not depend on the vocabulary');
  t.ok(bigVocab.headUs!(1) > m.headUs!(1), 'the head does');
  t.equal(m.headUs!(0), 0);
  // A 512-token prompt chunk samples one row: its head reads the output matrix once; the old
  // roofline ran it over all 512 rows (1 GFLOP a row for this vocabulary).
  const headBytes = llama3.nEmbd * llama3.nVocab * llama3.weightBytesPerParam;
  const oneRow = headBytes / (a10.gpu.bandwidth * 0.8) * 1e6;
  t.ok(m.headUs!(1) > oneRow && m.headUs!(1) < 1.2 * oneRow, `one row: about a read of the matrix (${m.headUs!(1).toFixed(0)} µs)`);
  const flopsUs = (2 * llama3.nEmbd * llama3.nVocab * 512) / (a10.gpu.fp16Flops * 0.45) * 1e6;
  t.ok(m.headUs!(512) > flopsUs && flopsUs > 4 * oneRow, `512 rows: compute-bound (${m.headUs!(512).toFixed(0)} µs)`);
  // Each row is cut to its 40 best on the device (one read of its logits) and those cross the
  // link. (64 rows still read the matrix in the time of one: the rest is 63 rows' cut and copy.)
  const perRow = (llama3.nVocab * 4) / (a10.gpu.bandwidth * 0.8) * 1e6 + ((2 * 40 + 1) * 4) / a10.link.bandwidth * 1e6;
  t.ok(Math.abs(m.headUs!(64) - m.headUs!(1) - 63 * perRow) < 1e-6 * perRow, 'each sampled row adds its cut and its best\'s copy');
});

t.test('on the A10 with Llama-3.1-8B under load, auto streams host KV to the device and serves more than without it (SIMULATED)', async (t) => {
  const a10 = HARDWARE.a10!;
  const llama3 = SIM_MODELS['llama3.1-8b']!;
  const a10Truth = rooflineCostModel(a10, llama3, 0.5);
  const run = (streamHostKv: boolean) => simulateRun({
    hardware: a10, model: llama3, policy: 'auto', truth: a10Truth, streamHostKv,
    workload: { requests: 120, ratePerSecond: 3, ...DECODE_HEAVY, seed: 3 },
  });
  const on = run(true);
  const off = run(false);
  t.equal(off.streamed, 0, 'without the option nothing is streamed');
  t.ok(on.streamed > 0, `with it, ${on.streamed} sequence-steps ran device attention over host KV`);
  t.ok(on.throughput > off.throughput, `and the run's tokens/s rose: ${off.throughput.toFixed(0)} -> ${on.throughput.toFixed(0)} (SIMULATED)`);
  t.equal(on.generatedTokens, off.generatedTokens, 'every request finished either way');
});
