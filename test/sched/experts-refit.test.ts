// The online refit of the CPU expert costs (src/sched/experts/refit.ts): recovering a call cost
// and a scale from per-call samples, following a host that slows down, staying put when the
// calibration was right, and giving its costs to a model through the refitting executor,
// against fakes and on the CPU stand-in.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ExpertCostRefit, refittingExecutor } from '../../src/sched/experts/refit.js';
import { native, type NativeExpertCost } from '../../src/native/binding.js';
import type { StepPlan, StepResult } from '../../src/native/step-plan.js';
import { makeModel } from '../../src/model/synthetic.js';
import { hparamsOf } from '../helpers.js';

const CALIBRATED: NativeExpertCost = { cpuFixedUs: 50, cpuUsPerToken: 8, cpuCallUs: 0, gpuFixedUs: 60, gpuUsPerToken: 4, linkLatencyUs: 20, linkBytesPerUs: 55000 };

/** Calls of a decode step at batch 1 (one or two experts of one row per layer) and, every fourth step, a prefill's (many rows). */
function calls(step: number, layers: number, truth: { callUs: number; scale: number }, noise = 0): number[] {
  const out: number[] = [];
  for (let l = 0; l < layers; l++) {
    const e = 1 + ((step + l) % 2);
    const r = step % 4 === 3 ? e * (8 + ((l * 5) % 24)) : e;
    const line = CALIBRATED.cpuFixedUs * e + CALIBRATED.cpuUsPerToken * r;
    const jitter = 1 + noise * Math.sin(step * 7.1 + l * 3.7);
    out.push(e, r, (truth.callUs + truth.scale * line) * jitter);
  }
  return out;
}

const near = (x: number, y: number, rel: number) => Math.abs(x - y) <= rel * Math.abs(y);

t.test('recovers a call cost and a scale from steps of mixed call sizes', async (t) => {
  const refit = new ExpertCostRefit(CALIBRATED);
  const truth = { callUs: 200, scale: 3 };
  let last: NativeExpertCost | undefined;
  for (let s = 0; s < 40; s++) last = refit.observe(calls(s, 16, truth, 0.05)) ?? last;
  const st = refit.state;
  t.ok(near(st.callUs, truth.callUs, 0.1), `call cost ${st.callUs.toFixed(1)} µs (truth 200)`);
  t.ok(near(st.scale, truth.scale, 0.05), `scale ${st.scale.toFixed(3)} (truth 3)`);
  // The costs in force change only when a typical call's prediction moves by 10%: they predict within that.
  const c = st.cost;
  const probe = calls(41, 16, truth);
  let err = 0;
  for (let i = 0; i < probe.length; i += 3) err += Math.abs(c.cpuCallUs! + c.cpuFixedUs * probe[i]! + c.cpuUsPerToken * probe[i + 1]! - probe[i + 2]!) / probe[i + 2]! / 16;
  t.ok(err < 0.1, `the costs in force predict a step's calls within ${(100 * err).toFixed(1)}%`);
  t.same(last, c, 'they are the last ones given');
  t.same([last!.gpuFixedUs, last!.gpuUsPerToken, last!.linkLatencyUs, last!.linkBytesPerUs], [60, 4, 20, 55000], 'the device and link are left as calibrated');
  t.equal(st.calls, 40 * 16);
  t.ok(st.updates >= 1 && st.updates < 10, `a few updates, not one per step (${st.updates})`);
});

t.test('calls all of one size: the refit predicts that size right, the scale taking the difference', async (t) => {
  const refit = new ExpertCostRefit(CALIBRATED);
  const one = [1, 1, 300];
  for (let s = 0; s < 30; s++) refit.observe([...one, ...one, ...one, ...one]);
  const st = refit.state;
  const predicted = st.callUs + st.cost.cpuFixedUs + st.cost.cpuUsPerToken;
  t.ok(near(predicted, 300, 0.03), `a one-expert one-row call predicted at ${predicted.toFixed(1)} µs (measured 300)`);
  t.ok(st.callUs < 1 && st.scale > 4, `the call cost stays as calibrated (${st.callUs.toFixed(2)} µs), the scale is ${st.scale.toFixed(2)}`);
});

t.test('a calibration that was right gives one update and then nothing', async (t) => {
  const refit = new ExpertCostRefit(CALIBRATED);
  const given: NativeExpertCost[] = [];
  for (let s = 0; s < 50; s++) {
    const c = refit.observe(calls(s, 8, { callUs: 0, scale: 1 }, 0.03));
    if (c) given.push(c);
  }
  t.equal(given.length, 1, 'the first fit is given once the minimum calls are in');
  t.ok(near(refit.state.scale, 1, 0.05) && refit.state.callUs < 10, `scale ${refit.state.scale.toFixed(3)}, call ${refit.state.callUs.toFixed(1)} µs`);
});

t.test('follows a host that slows down: old calls fade', async (t) => {
  const refit = new ExpertCostRefit(CALIBRATED, { halfLifeCalls: 64 });
  for (let s = 0; s < 20; s++) refit.observe(calls(s, 16, { callUs: 10, scale: 1 }));
  t.ok(near(refit.state.scale, 1, 0.1), 'first the calibrated speed');
  for (let s = 20; s < 60; s++) refit.observe(calls(s, 16, { callUs: 10, scale: 4 }));
  t.ok(near(refit.state.scale, 4, 0.1), `then four times slower (scale ${refit.state.scale.toFixed(2)})`);
  for (let s = 60; s < 100; s++) refit.observe(calls(s, 16, { callUs: 10, scale: 1 }));
  t.ok(near(refit.state.scale, 1, 0.1), `and back (scale ${refit.state.scale.toFixed(2)})`);
});

t.test('steps without CPU calls age the fit back toward the calibration, so the CPU is tried again', async (t) => {
  const refit = new ExpertCostRefit(CALIBRATED);
  for (let s = 0; s < 30; s++) refit.observe(calls(s, 16, { callUs: 10, scale: 4 }));
  t.ok(near(refit.state.scale, 4, 0.1), `a slow CPU: scale ${refit.state.scale.toFixed(2)}`);
  let given: NativeExpertCost | undefined;
  for (let s = 0; s < 100; s++) given = refit.observe(new Float64Array(0)) ?? given;
  t.ok(refit.state.scale > 3, `a hundred steps without CPU calls keep most of it (scale ${refit.state.scale.toFixed(2)})`);
  for (let s = 0; s < 900; s++) given = refit.observe(new Float64Array(0)) ?? given;
  t.ok(refit.state.scale < 1.5, `a thousand bring it back near the calibration (scale ${refit.state.scale.toFixed(2)})`);
  t.ok(given && given.cpuFixedUs < 1.5 * CALIBRATED.cpuFixedUs, 'and the model is given those costs');
  refit.observe(calls(0, 16, { callUs: 10, scale: 4 }));
  refit.observe(calls(1, 16, { callUs: 10, scale: 4 }));
  t.ok(refit.state.scale > 3, `one or two steps of the CPU tried again bring the slow scale back (${refit.state.scale.toFixed(2)})`);
  t.equal(new ExpertCostRefit(CALIBRATED).observe([]), undefined, 'before any call: nothing to age');
});

t.test('a CPU faster than calibrated: the scale falls, never below its floor, and the call cost never below 0', async (t) => {
  const refit = new ExpertCostRefit(CALIBRATED);
  for (let s = 0; s < 30; s++) refit.observe(calls(s, 16, { callUs: 0, scale: 0.5 }));
  t.ok(near(refit.state.scale, 0.5, 0.05), `scale ${refit.state.scale.toFixed(3)}`);
  const tiny = new ExpertCostRefit(CALIBRATED);
  for (let s = 0; s < 30; s++) tiny.observe([1, 1, 0.01, 2, 2, 0.02]);
  t.ok(tiny.state.scale >= 0.05 && tiny.state.callUs >= 0, `floored (scale ${tiny.state.scale}, call ${tiny.state.callUs})`);
});

t.test('bad samples are skipped; bad options are typed errors', async (t) => {
  const refit = new ExpertCostRefit(CALIBRATED, { minCalls: 1 });
  t.equal(refit.observe(undefined), undefined, 'no calls: nothing');
  t.equal(refit.observe(new Float64Array(0)), undefined);
  t.equal(refit.observe([0, 1, 100, 1, 0, 100, 1, 1, Number.NaN, 1, 1, -5, 1, 1]), undefined, 'empty, zero-row, NaN, negative and partial calls are skipped');
  t.equal(refit.state.calls, 0);
  t.ok(refit.observe([1, 1, 100]), 'one good call with minCalls 1 gives costs');
  t.throws(() => new ExpertCostRefit(CALIBRATED, { halfLifeCalls: 0 }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => new ExpertCostRefit(CALIBRATED, { tolerance: -1 }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => new ExpertCostRefit(CALIBRATED, { priorCalls: Number.NaN }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => new ExpertCostRefit(CALIBRATED, { scalePriorCalls: -1 }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => new ExpertCostRefit(CALIBRATED, { halfLifeIdleSteps: 0 }), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('the refitting executor gives the model each new cost after its step', async (t) => {
  const given: NativeExpertCost[] = [];
  let step = 0;
  const fake = {
    async step(_plan: StepPlan): Promise<StepResult> {
      return { sequences: [], phaseUs: {}, totalUs: 1, cpuExpertCalls: Float64Array.from(calls(step++, 16, { callUs: 100, scale: 2 })) };
    },
    setExpertCost(c: NativeExpertCost) {
      given.push(c);
    },
  };
  const refit = new ExpertCostRefit(CALIBRATED);
  const ex = refittingExecutor(fake, refit);
  const plan: StepPlan = { strategy: 'gpu-only', copies: [], sequences: [] };
  for (let i = 0; i < 20; i++) await ex.step(plan);
  t.ok(given.length >= 1, `the model got ${given.length} cost updates`);
  t.same(given.at(-1), refit.state.cost, 'the last one is the refit\'s');
  t.equal(refit.state.updates, given.length, 'one per update');
});

t.test('on the CPU stand-in: a calibration 100x too cheap is refitted from the steps', async (t) => {
  const dir = path.join(os.tmpdir(), 'tandem-test-models');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'experts-refit-v1-qwen2moe.gguf');
  if (!fs.existsSync(file)) await makeModel({ preset: 'tiny', architecture: 'qwen2moe', type: 'q8_0', nExpert: 8, nExpertUsed: 2, seed: 41 }, file);
  const hparams = hparamsOf(file);
  const m = await native().loadModel(file, {
    hparams, threads: 1, kvBlockTokens: 16, kvBlocks: { device: 8, host: 1 }, device: 'cpu-standin', deviceThreads: 1, cpuVariant: 'ref',
    experts: { policy: 'dynamic', maxSlots: 2, admitPerLayer: 0 },
  });
  t.teardown(() => m.dispose());
  // Copies never pay, so every missing expert runs on the CPU and the refit sees every layer.
  const wrong: NativeExpertCost = { cpuFixedUs: 0.01, cpuUsPerToken: 0.001, cpuCallUs: 0, gpuFixedUs: 1e9, gpuUsPerToken: 0, linkLatencyUs: 0, linkBytesPerUs: 1 };
  m.setExpertCost(wrong);
  const refit = new ExpertCostRefit(wrong, { minCalls: 4 });
  const given: NativeExpertCost[] = [];
  const ex = refittingExecutor({ step: (p) => m.step(p), setExpertCost: (c) => { given.push(c); m.setExpertCost(c); } }, refit);
  const table = Int32Array.from({ length: 4 }, (_, i) => i);
  let tokens = Array.from({ length: 12 }, (_, i) => 1 + ((i * 37) % (m.info.nVocab - 1)));
  let pos = 0;
  let cpuCalls = 0;
  for (let s = 0; s < 6; s++) {
    const r = await ex.step({ strategy: 'gpu-only', copies: [], sequences: [{ seqId: 0, tokens: Int32Array.from(tokens), startPos: pos, kvTier: 'device', attention: 'gpu', sample: true, blockTable: table }] });
    pos += tokens.length;
    tokens = [r.sequences[0]!.token];
    cpuCalls += r.experts!.cpuCalls;
  }
  t.equal(refit.state.calls, cpuCalls, `the refit saw every CPU call of the steps (${cpuCalls})`);
  t.ok(given.length >= 1, 'and gave the model new costs');
  const st = refit.state;
  const predicted = st.callUs + st.cost.cpuFixedUs + st.cost.cpuUsPerToken;
  t.ok(predicted > 1, `a one-row CPU expert is now priced at ${predicted.toFixed(1)} µs, not 0.011`);
});
