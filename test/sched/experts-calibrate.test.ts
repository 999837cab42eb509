// Expert cost calibration (src/sched/experts/calibrate.ts, issue 9 item 2): the line fit, the
// calibration against a fake model with known costs, its cache, and the real thing on the CPU
// stand-in: timed experts, costs that steer the native copy-or-CPU choice, and loadModel's
// `experts` option with its typed errors.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrateExperts, fitLine, loadOrCalibrateExperts, QUICK_EXPERT_GRID, EXPERT_GRID } from '../../src/sched/experts/calibrate.js';
import { native, type NativeExpertCost, type NativeModel } from '../../src/native/binding.js';
import type { StepPlan } from '../../src/native/step-plan.js';
import { makeModel } from '../../src/model/synthetic.js';
import { GgufFile } from '../../src/model/gguf.js';
import { describeModel } from '../../src/model/describe.js';
import { loadModel, type StepInfo } from '../../src/api/index.js';
import { modelPath } from '../helpers.js';

const SLOT = 1 << 20;
const TRUTH: Required<NativeExpertCost> = { cpuFixedUs: 200, cpuUsPerToken: 30, cpuCallUs: 150, gpuFixedUs: 20, gpuUsPerToken: 2, linkLatencyUs: 10, linkBytesPerUs: 16000 };

/** A model whose experts cost exactly TRUTH (or whose device has no expert in a slot). */
function fakeTarget(opts: { noDevice?: boolean } = {}) {
  const ops: Parameters<NativeModel['profile']>[0][] = [];
  const target = {
    ops,
    placement: { device: 'fake', deviceName: 'fake', deviceBytes: 0, hostBytes: 0, deviceTensors: 0, hostTensors: 0, streamsHostKv: false, streamBlocksMax: 0, hostKvLocked: false, hostKvLockMs: 0, experts: { policy: 'dynamic', slots: 4, slotBytes: SLOT, resident: 4, hostSlabBytes: 8 * SLOT, nStar: Infinity } },
    async profile(op: Parameters<NativeModel['profile']>[0]): Promise<number> {
      ops.push(op);
      if (op.kind === 'copy') return TRUTH.linkLatencyUs + op.bytes / TRUTH.linkBytesPerUs;
      if (op.kind !== 'expert') throw new Error(`unexpected op ${op.kind}`);
      if (op.device === 'gpu' && opts.noDevice) throw Object.assign(new Error('no expert is in a device cache slot to time'), { code: 'TDM_UNSUPPORTED' });
      // After an idle spell the CPU pays its call cost (waking the pool) on top of the line.
      const woken = (op.idleUs ?? 0) > 0 ? TRUTH.cpuCallUs : 0;
      return op.device === 'cpu' ? woken + TRUTH.cpuFixedUs + TRUTH.cpuUsPerToken * op.tokens : TRUTH.gpuFixedUs + TRUTH.gpuUsPerToken * op.tokens;
    },
  };
  return target;
}

t.test('fitLine: least squares, clamped at zero', async (t) => {
  const l = fitLine([{ x: 1, us: 5 }, { x: 3, us: 9 }, { x: 5, us: 13 }]);
  t.ok(Math.abs(l.fixed - 3) < 1e-9 && Math.abs(l.perUnit - 2) < 1e-9, 'us = 3 + 2x');
  const flat = fitLine([{ x: 1, us: 10 }, { x: 2, us: 8 }]);
  t.ok(flat.perUnit === 0 && flat.fixed > 8 && flat.fixed < 10, 'a falling line is flat, between the points');
  const robust = fitLine([{ x: 1, us: 20 }, { x: 2, us: 21 }, { x: 8, us: 27 }, { x: 16, us: 2000 }]);
  t.ok(robust.fixed > 15 && robust.fixed < 25, `one slow outlier does not move the fixed part far (${robust.fixed.toFixed(1)})`);
  t.same(fitLine([{ x: 4, us: 7 }]), { fixed: 7, perUnit: 0 }, 'one point: a constant');
  t.throws(() => fitLine([]), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('calibration recovers known linear costs and measures its held-out error', async (t) => {
  const target = fakeTarget();
  const fractions: number[] = [];
  const c = await calibrateExperts(target, EXPERT_GRID, (f) => fractions.push(f));
  for (const k of Object.keys(TRUTH) as (keyof NativeExpertCost)[]) {
    t.ok(Math.abs(c.cost[k]! - TRUTH[k]) <= 1e-6 * TRUTH[k], `${k}: ${c.cost[k]} = ${TRUTH[k]}`);
  }
  t.same(c.errors.map((e) => [e.side, e.rows]), [['cpu', 4], ['cpu', 16], ['gpu', 4], ['gpu', 16]], 'held-out rows on both sides');
  t.ok(c.errors.every((e) => e.relError < 1e-9), 'no error on a linear truth');
  t.equal(fractions.at(-1), 1, 'progress ends at 1');
  t.ok(fractions.every((f, i) => i === 0 || f > fractions[i - 1]!), 'progress rises');
  const copies = target.ops.filter((o) => o.kind === 'copy').map((o) => (o as { bytes: number }).bytes);
  t.same(copies, [SLOT / 16, SLOT], 'copies of a sixteenth of a slab and a whole one');
  t.equal(c.deviceNote, undefined);
});

t.test('no expert on the device: copying is priced out and the reason kept', async (t) => {
  const c = await calibrateExperts(fakeTarget({ noDevice: true }), QUICK_EXPERT_GRID);
  t.match(c.deviceNote, /no expert is in a device cache slot/);
  t.ok(c.cost.gpuFixedUs >= 1e9, 'a device expert never pays');
  t.ok(c.errors.every((e) => e.side === 'cpu'));
  const noExperts = { ...fakeTarget(), placement: { ...fakeTarget().placement, experts: undefined } };
  await t.rejects(calibrateExperts(noExperts), { code: 'TDM_BAD_ARGUMENT' });
  const failing = { ...fakeTarget(), profile: async () => { throw Object.assign(new Error('boom'), { code: 'TDM_INTERNAL' }); } };
  await t.rejects(calibrateExperts(failing), { code: 'TDM_INTERNAL' }, 'other errors are not swallowed');
});

t.test('the calibration is cached per key, refreshed on request, remade when broken', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-cal-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const key = { machine: 'test machine', model: 'test model' };
  const a = fakeTarget();
  const first = await loadOrCalibrateExperts(a, key, { cacheDir: dir, grid: QUICK_EXPERT_GRID });
  t.equal(first.fromCache, false);
  t.ok(fs.existsSync(first.file));
  const b = fakeTarget();
  const second = await loadOrCalibrateExperts(b, key, { cacheDir: dir, grid: QUICK_EXPERT_GRID });
  t.equal(second.fromCache, true);
  t.equal(b.ops.length, 0, 'a cached calibration times nothing');
  t.same(second.cost, first.cost);
  const other = await loadOrCalibrateExperts(fakeTarget(), { ...key, model: 'another model' }, { cacheDir: dir, grid: QUICK_EXPERT_GRID });
  t.equal(other.fromCache, false, 'another key calibrates');
  t.equal((await loadOrCalibrateExperts(fakeTarget(), key, { cacheDir: dir, grid: QUICK_EXPERT_GRID, refresh: true })).fromCache, false, 'refresh calibrates');
  fs.writeFileSync(first.file, '{"schema":"tandem-expert-calibration/2","key":{"machine":"test machine","model":"test model"},"calibration":{"cost":{"cpuFixedUs":-1}}}');
  t.equal((await loadOrCalibrateExperts(fakeTarget(), key, { cacheDir: dir, grid: QUICK_EXPERT_GRID })).fromCache, false, 'a broken cache calibrates');
});

const dir = path.join(os.tmpdir(), 'tandem-test-models');
fs.mkdirSync(dir, { recursive: true });
const moeFile = path.join(dir, 'experts-calibrate-v1-qwen2moe.gguf');
if (!fs.existsSync(moeFile)) await makeModel({ preset: 'tiny', architecture: 'qwen2moe', type: 'q8_0', nExpert: 8, nExpertUsed: 2, seed: 37 }, moeFile);
const g = GgufFile.open(moeFile);
const hparams = describeModel(g).hparams;
g.close();

async function loadStandin(maxSlots: number, extra: { prefetchWhenIdle?: boolean; prefetchPerLayer?: number } = {}): Promise<NativeModel> {
  return native().loadModel(moeFile, {
    hparams, threads: 1, kvBlockTokens: 16, kvBlocks: { device: 8, host: 1 }, device: 'cpu-standin', deviceThreads: 1, cpuVariant: 'ref',
    experts: { policy: 'dynamic', maxSlots, admitPerLayer: 0, ...extra },
  });
}

/** One 12-token prefill, then 3 decode steps; the logits and the summed expert counters. */
async function run(m: NativeModel): Promise<{ logits: Float32Array[]; copies: number; cpuExperts: number; prefetches: number; cpuCalls: number; callsAgree: boolean }> {
  const table = Int32Array.from({ length: 4 }, (_, i) => i);
  const prompt = Array.from({ length: 12 }, (_, i) => 1 + ((i * 37) % (m.info.nVocab - 1)));
  const logits: Float32Array[] = [];
  let copies = 0;
  let cpuExperts = 0;
  let prefetches = 0;
  let cpuCalls = 0;
  let callsAgree = true;
  let pos = 0;
  let tokens = prompt;
  for (let s = 0; s < 4; s++) {
    const plan: StepPlan = { strategy: 'gpu-only', copies: [], sequences: [{ seqId: 0, tokens: Int32Array.from(tokens), startPos: pos, kvTier: 'device', attention: 'gpu', sample: true, returnLogits: true, blockTable: table }] };
    const r = await m.step(plan);
    pos += tokens.length;
    logits.push(r.sequences[0]!.logits!);
    tokens = [r.sequences[0]!.token];
    copies += r.experts!.copies;
    cpuExperts += r.experts!.cpuExperts;
    prefetches += r.experts!.prefetches;
    cpuCalls += r.experts!.cpuCalls;
    // The per-call samples add up to the step's counters, and every call took time.
    const calls = r.cpuExpertCalls!;
    let experts = 0;
    let rows = 0;
    for (let i = 0; i < calls.length; i += 3) {
      experts += calls[i]!;
      rows += calls[i + 1]!;
      if (!(calls[i + 2]! > 0)) callsAgree = false;
    }
    if (calls.length !== 3 * r.experts!.cpuCalls || experts !== r.experts!.cpuExperts || rows !== r.experts!.cpuRows) callsAgree = false;
    if (r.experts!.cpuCalls > hparams.nLayer || (r.experts!.cpuExperts > 0) !== (r.experts!.cpuCalls > 0)) callsAgree = false;
  }
  return { logits, copies, cpuExperts, prefetches, cpuCalls, callsAgree };
}

t.test('on the stand-in: experts are timed on both sides, and the costs steer the choice', async (t) => {
  const m = await loadStandin(4);
  t.teardown(() => m.dispose());
  const c = await calibrateExperts(m, QUICK_EXPERT_GRID);
  t.equal(c.deviceNote, undefined, 'the slots hold experts to time');
  t.ok(c.points.every((p) => p.us > 0), 'every timing is positive');
  t.ok(c.cost.cpuFixedUs + c.cost.cpuUsPerToken > 0 && c.cost.gpuFixedUs + c.cost.gpuUsPerToken > 0 && c.cost.linkBytesPerUs > 0);
  m.setExpertCost(c.cost);

  const never = await loadStandin(4);
  t.teardown(() => never.dispose());
  never.setExpertCost({ ...TRUTH, gpuFixedUs: 1e9 });
  const always = await loadStandin(4);
  t.teardown(() => always.dispose());
  always.setExpertCost({ cpuFixedUs: 1e9, cpuUsPerToken: 0, gpuFixedUs: 0, gpuUsPerToken: 0, linkLatencyUs: 0, linkBytesPerUs: 1e12 });
  const a = await run(never);
  const b = await run(always);
  t.equal(a.copies, 0, 'a device that never pays: no copies');
  t.ok(a.cpuExperts > 0, 'so missing experts run on the CPU');
  t.ok(b.copies > 0, 'a CPU that never pays: missing experts are copied');
  t.equal(b.cpuExperts, 0, 'and none runs on the CPU');
  for (let i = 0; i < a.logits.length; i++) t.same(b.logits[i], a.logits[i], `step ${i}: the same logits wherever the experts ran`);

  t.throws(() => m.setExpertCost({ ...TRUTH, linkBytesPerUs: 0 }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => m.setExpertCost({ ...TRUTH, cpuFixedUs: -1 }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => m.setExpertCost({ ...TRUTH, cpuUsPerToken: Number.NaN }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => m.setExpertCost({ ...TRUTH, cpuCallUs: -1 }), { code: 'TDM_BAD_ARGUMENT' });
  t.ok(a.callsAgree && b.callsAgree, 'the CPU calls of each step add up to its CPU experts and rows');
  await t.rejects(m.profile({ kind: 'expert', device: 'cpu', tokens: 0 }), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(m.profile({ kind: 'expert', device: 'npu' as 'cpu', tokens: 1 }), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('the CPU call cost is paid once per layer: it sends one-row experts to copies', async (t) => {
  // A CPU expert takes 10 µs and a copy 100: without a call cost every missing expert runs on
  // the CPU (a layer has at most 8, 80 µs). A 550 µs call makes the first CPU expert of a layer
  // cost 560, so a layer's first five missing experts are copied (the fifth done at 500) and a
  // prefill layer's later ones go to the CPU; a decode layer's two are both copied.
  const free = await loadStandin(4);
  t.teardown(() => free.dispose());
  const slab = free.placement.experts!.slotBytes;
  const cost: NativeExpertCost = { cpuFixedUs: 10, cpuUsPerToken: 0, gpuFixedUs: 0, gpuUsPerToken: 0, linkLatencyUs: 0, linkBytesPerUs: slab / 100 };
  free.setExpertCost(cost);
  const called = await loadStandin(4);
  t.teardown(() => called.dispose());
  called.setExpertCost({ ...cost, cpuCallUs: 550 });
  const a = await run(free);
  const b = await run(called);
  t.equal(a.copies, 0, 'no call cost: nothing is copied');
  t.ok(a.cpuCalls > 0, `so the CPU is called (${a.cpuCalls} calls)`);
  t.ok(b.copies > 0, `a call cost: missing experts are copied (${b.copies})`);
  t.ok(b.cpuCalls < a.cpuCalls, `and fewer layers call the CPU (${b.cpuCalls} < ${a.cpuCalls})`);
  t.ok(a.callsAgree && b.callsAgree, 'the per-call samples add up to the counters');
  for (let i = 0; i < a.logits.length; i++) t.same(b.logits[i], a.logits[i], `step ${i}: the same logits`);
});

t.test('prefetch while the link idles: as many as the predicted window holds', async (t) => {
  // A device expert is priced far above a CPU one, so no layer copies for itself and the link
  // idles while the layer's experts run (a resident one for its predicted 1e9 µs): a fast link
  // leaves room for prefetches; a link so slow that one slab outlasts any layer's window, none.
  const roomy = { cpuFixedUs: 5000, cpuUsPerToken: 0, gpuFixedUs: 1e9, gpuUsPerToken: 0, linkLatencyUs: 1, linkBytesPerUs: 1e6 };
  const cramped = { ...roomy, linkBytesPerUs: 1e-6 };
  const base = await run(await loadStandin(4));
  const cases: [string, { prefetchWhenIdle?: boolean; prefetchPerLayer?: number }, NativeExpertCost | undefined, (n: number) => boolean][] = [
    ['a roomy window prefetches', { prefetchWhenIdle: true }, roomy, (n) => n > 0],
    ['a window shorter than one copy prefetches nothing', { prefetchWhenIdle: true }, cramped, (n) => n === 0],
    ['without costs nothing is predicted, so nothing is prefetched', { prefetchWhenIdle: true }, undefined, (n) => n === 0],
    ['prefetchPerLayer caps the count', { prefetchWhenIdle: true, prefetchPerLayer: 1 }, roomy, (n) => n > 0 && n <= 3 * (hparams.nLayer - 1)],
  ];
  for (const [name, extra, cost, ok] of cases) {
    const m = await loadStandin(4, extra);
    if (cost) m.setExpertCost(cost);
    const r = await run(m);
    m.dispose();
    t.ok(ok(r.prefetches), `${name} (${r.prefetches} prefetches)`);
    for (let i = 0; i < r.logits.length; i++) t.same(r.logits[i], base.logits[i], `${name}: step ${i} logits unchanged`);
  }
});

t.test('without expert offload there is nothing to time or steer', async (t) => {
  const m = await native().loadModel(moeFile, { hparams, threads: 1, kvBlockTokens: 16, kvBlocks: { device: 8, host: 1 }, device: 'cpu-standin', deviceThreads: 1 });
  await t.rejects(m.profile({ kind: 'expert', device: 'cpu', tokens: 1 }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => m.setExpertCost(TRUTH), { code: 'TDM_BAD_ARGUMENT' });
  m.dispose();
  t.throws(() => m.setExpertCost(TRUTH), { code: 'TDM_DISPOSED' });
  const noSlots = await loadStandin(0);
  t.teardown(() => noSlots.dispose());
  await t.rejects(noSlots.profile({ kind: 'expert', device: 'gpu', tokens: 1 }), { code: 'TDM_UNSUPPORTED' }, 'no slot: no device expert to time');
  const c = await calibrateExperts(noSlots, QUICK_EXPERT_GRID);
  t.match(c.deviceNote, /no expert/);
});

t.test("loadModel's experts option", async (t) => {
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-cal-api-'));
  t.teardown(() => fs.rmSync(cacheDir, { recursive: true, force: true }));
  const base = { threads: 1, contextSize: 64, maxSequences: 2, device: 'cpu-standin' as const, deviceThreads: 1 };
  const plain = await loadModel(moeFile, { threads: 1, contextSize: 64, maxSequences: 2 });
  t.teardown(() => plain.dispose());
  const prompt = Array.from({ length: 10 }, (_, i) => 1 + ((i * 53) % 200));
  const want = (await plain.generate(prompt, { maxTokens: 8, temperature: 0, ignoreEos: true }).result).tokens;

  const m = await loadModel(moeFile, { ...base, experts: 'dynamic', deviceWeightBytes: 3 << 20, profile: 'quick' });
  t.teardown(() => m.dispose());
  const ex = m.info.experts!;
  t.equal(ex.policy, 'dynamic');
  t.equal(ex.prefetch, 'score', "the prefetch is ordered by score unless asked otherwise");
  t.ok(ex.slots > 0 && ex.slots < hparams.nLayer * hparams.nExpert, `a partial cache: ${ex.slots} slots`);
  t.equal(ex.calibration?.source, 'quick');
  t.ok(ex.calibration!.cost.linkBytesPerUs > 0);
  const steps: StepInfo[] = [];
  const stop = m.onStep((s) => steps.push(s));
  const got = (await m.generate(prompt, { maxTokens: 8, temperature: 0, ignoreEos: true }).result).tokens;
  stop();
  t.equal(got.length, want.length);
  t.ok(steps.length > 0 && steps.every((s) => s.experts !== undefined), 'every step reports its experts');
  t.ok(steps.reduce((n, s) => n + s.experts!.hits + s.experts!.misses, 0) > 0, 'experts were routed');
  const cpuCalls = steps.reduce((n, s) => n + s.experts!.cpuCalls, 0);
  const refit = m.stats.expertCosts!;
  t.equal(refit.calls, cpuCalls, `the online refit saw every CPU call of the steps (${cpuCalls})`);
  if (refit.calls >= 16) t.ok(refit.updates >= 1 && refit.cost.cpuCallUs === refit.callUs, 'and once it had enough, its costs are in force');
  t.equal(plain.stats.expertCosts, undefined, 'no expert offload: no refit');
  // The stand-in's device kernels sum in another order than the CPU's packed ones: greedy paths
  // may part at a near tie only, so the first token (from the same prompt logits) must agree.
  t.equal(got[0], want[0], 'the first greedy token matches the plain CPU path');

  const first = await loadModel(moeFile, { ...base, experts: 'dynamic', deviceWeightBytes: 3 << 20, profileCacheDir: cacheDir });
  t.equal(first.info.experts!.calibration!.source, 'calibrated');
  t.ok(fs.existsSync(first.info.experts!.calibration!.file!));
  first.dispose();
  const again = await loadModel(moeFile, { ...base, experts: 'dynamic', deviceWeightBytes: 3 << 20, profileCacheDir: cacheDir });
  t.equal(again.info.experts!.calibration!.source, 'cache', 'the second load reads the calibration');
  again.dispose();

  const cpuAll = await loadModel(moeFile, { ...base, experts: 'cpu-all', profile: 'quick' });
  t.equal(cpuAll.info.experts!.policy, 'cpu-all');
  t.equal(cpuAll.info.experts!.calibration, undefined, 'a static policy needs no calibration');
  cpuAll.dispose();
  const stacks = await loadModel(moeFile, { ...base, profile: 'quick' });
  t.equal(stacks.info.experts, undefined, "'stacks' (the default) has no expert offload");
  stacks.dispose();

  await t.rejects(loadModel(moeFile, { ...base, experts: 'gpu-all' as 'cpu-all' }), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(loadModel(moeFile, { threads: 1, experts: 'dynamic' }), { code: 'TDM_BAD_ARGUMENT' }, 'needs a device');
  await t.rejects(loadModel(modelPath('stories260K.gguf'), { ...base, experts: 'dynamic' }), { code: 'TDM_BAD_ARGUMENT' }, 'needs a MoE model');

  // expertPrefetch 'router': the same tokens from the first, prefetches counted with their hits.
  const routed = await loadModel(moeFile, { ...base, experts: 'dynamic', expertPrefetch: 'router', deviceWeightBytes: 3 << 20, profile: 'quick' });
  t.equal(routed.info.experts!.prefetch, 'router', 'model.info says how the prefetch is ordered');
  const routedSteps: StepInfo[] = [];
  const stopRouted = routed.onStep((s) => routedSteps.push(s));
  const routedTokens = (await routed.generate(prompt, { maxTokens: 8, temperature: 0, ignoreEos: true }).result).tokens;
  stopRouted();
  routed.dispose();
  t.equal(routedTokens[0], want[0], "expertPrefetch 'router': the first greedy token matches the plain CPU path");
  const hits = routedSteps.reduce((n, s) => n + s.experts!.prefetchHits, 0);
  const fetched = routedSteps.reduce((n, s) => n + s.experts!.prefetches, 0);
  t.ok(hits <= fetched, `prefetch hits (${hits}) never exceed prefetches (${fetched})`);
  await t.rejects(loadModel(moeFile, { ...base, experts: 'cpu-all', expertPrefetch: 'router' }), { code: 'TDM_BAD_ARGUMENT', message: /expertPrefetch/ }, "'router' needs 'dynamic'");
  await t.rejects(loadModel(moeFile, { ...base, experts: 'dynamic', expertPrefetch: 'next' as 'router' }), { code: 'TDM_BAD_ARGUMENT', message: /expertPrefetch/ }, 'an unknown prefetch');
});

t.test('a spell of slow CPU timings spoils one pass of the calibration, not the fit', async (t) => {
  // The CPU is 10x slower for six expert timings in a row, starting at the second.
  const spell = () => {
    const target = fakeTarget();
    let calls = 0;
    const inner = target.profile.bind(target);
    target.profile = async (op) => {
      const us = await inner(op);
      if (op.kind !== 'expert' || op.device !== 'cpu') return us;
      calls++;
      return calls >= 2 && calls < 8 ? 10 * us : us;
    };
    return target;
  };
  const one = await calibrateExperts(spell(), { ...EXPERT_GRID, rounds: 1 });
  const three = await calibrateExperts(spell(), EXPERT_GRID);
  t.equal(EXPERT_GRID.rounds, 3, 'the default grid takes three passes');
  const off = (c: typeof one) => Math.abs(c.cost.cpuUsPerToken - TRUTH.cpuUsPerToken) / TRUTH.cpuUsPerToken + Math.abs(c.cost.cpuFixedUs - TRUTH.cpuFixedUs) / TRUTH.cpuFixedUs;
  t.ok(off(one) > 1, `one pass: the spell bends the CPU line (${one.cost.cpuFixedUs.toFixed(0)} µs + ${one.cost.cpuUsPerToken.toFixed(1)} µs/row)`);
  t.ok(off(three) < 1e-6, `three passes: the median keeps it (${three.cost.cpuFixedUs.toFixed(0)} µs + ${three.cost.cpuUsPerToken.toFixed(1)} µs/row)`);
});
