// The three strategies and weight placement give the same logits as the plain CPU path:
// stories260K and a tiny synthetic MoE, run with the CPU backend standing in for both sides
// ('cpu-standin': a second CPU backend with its own threads, so overlap and pipelining run
// concurrently for real). With the scalar reference kernels every op is the same code
// wherever it runs, so the tolerance is zero. With the fast kernels, weights in the file
// mapping are repacked for the packed matmul while the stand-in's device copies are not
// (native/cpu/packed_weights.h): the same products summed in another order, so logits
// agree to a stated tolerance instead.
import t, { type Test } from 'tap';
import { mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native, type NativeModel, type NativeModelConfig } from '../../src/native/binding.js';
import type { KvTier, SequencePlan, StepPlan, Strategy } from '../../src/native/step-plan.js';
import { makeModel, type ModelSpec } from '../../src/model/synthetic.js';
import { maxAbsDiff, modelPath, hparamsOf } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const BLOCK_TOKENS = 16;
const DECODE_STEPS = 6;


async function moeFile(spec: ModelSpec = { architecture: 'qwen2moe' }): Promise<string> {
  const dir = path.join(tmpdir(), 'tandem-test-models');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `strategies-v1-${spec.architecture}-q8_0.gguf`);
  if (!existsSync(file)) await makeModel({ ...spec, type: 'q8_0', seed: 11 }, file);
  return file;
}

async function load(file: string, extra: Partial<NativeModelConfig> = {}): Promise<NativeModel> {
  return native().loadModel(file, { hparams: hparamsOf(file), threads: 1, kvBlockTokens: BLOCK_TOKENS, kvBlocks: { device: 16, host: 16 }, ...extra });
}

/** How one run places each sequence: its tier, where its attention runs, its sub-batch. */
interface Shape {
  strategy: Strategy;
  tier: (seqId: number) => KvTier;
  attention: (seqId: number, tier: KvTier) => 'cpu' | 'gpu';
  subBatch?: (seqId: number) => 0 | 1;
}

const PROMPTS = [
  [1, 403, 407, 261, 378],
  [1, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 301, 290],
  [1, 300, 301, 302],
  [1, 410, 411, 412, 413, 414, 415, 416, 417],
];

/** Prefill of four sequences in one step, then teacher-forced decode steps; every step's logits of every sequence. */
async function run(m: NativeModel, shape: Shape, forced: number[][]): Promise<{ logits: Float32Array[][]; tokens: number[][]; phases: Record<string, number>[] }> {
  const ids = PROMPTS.map((_, i) => i + 1);
  const table = (id: number) => Int32Array.from([2 * (id - 1), 2 * (id - 1) + 1]);
  const seq = (id: number, tokens: number[], startPos: number): SequencePlan => {
    const tier = shape.tier(id);
    const p: SequencePlan & { subBatch?: 0 | 1 } = {
      seqId: id, tokens: Int32Array.from(tokens), startPos, blockTable: table(id), kvTier: tier,
      attention: shape.attention(id, tier), sample: true, returnLogits: true,
    };
    if (shape.subBatch) p.subBatch = shape.subBatch(id);
    return p;
  };
  const logits: Float32Array[][] = [];
  const tokens: number[][] = [];
  const phases: Record<string, number>[] = [];
  const pos = PROMPTS.map((p) => p.length);
  let plan: StepPlan = { strategy: shape.strategy, copies: [], sequences: ids.map((id) => seq(id, PROMPTS[id - 1]!, 0)) };
  for (let step = 0; step <= DECODE_STEPS; step++) {
    const r = await m.step(plan);
    logits.push(r.sequences.map((s) => s.logits!));
    tokens.push(r.sequences.map((s) => s.token));
    phases.push(r.phaseUs);
    const next = forced[step] ?? tokens[step]!;
    plan = { strategy: shape.strategy, copies: [], sequences: ids.map((id, i) => seq(id, [next[i]!], pos[i]!)) };
    for (let i = 0; i < pos.length; i++) pos[i]!++;
  }
  return { logits, tokens, phases };
}

const byTier = (id: number): KvTier => (id % 2 === 1 ? 'device' : 'host');
const natural = (_: number, tier: KvTier): 'cpu' | 'gpu' => (tier === 'device' ? 'gpu' : 'cpu');

const SHAPES: { name: string; config: Partial<NativeModelConfig>; shape: Shape }[] = [
  { name: "stand-in, 'cpu' (in order)", config: {}, shape: { strategy: 'cpu', tier: byTier, attention: natural } },
  { name: "stand-in, 'overlap'", config: {}, shape: { strategy: 'overlap', tier: byTier, attention: natural } },
  { name: "stand-in, 'pipeline', executor's split", config: {}, shape: { strategy: 'pipeline', tier: byTier, attention: natural } },
  { name: "stand-in, 'pipeline', split given", config: {}, shape: { strategy: 'pipeline', tier: byTier, attention: natural, subBatch: (id) => (id <= 2 ? 0 : 1) } },
  { name: "stand-in, 'pipeline', CPU attention only", config: {}, shape: { strategy: 'pipeline', tier: () => 'host', attention: () => 'cpu' } },
  { name: "stand-in, 'overlap', attention across tiers", config: {}, shape: { strategy: 'overlap', tier: byTier, attention: (_, tier) => (tier === 'device' ? 'cpu' : 'gpu') } },
  { name: "stand-in, 'gpu-only'", config: {}, shape: { strategy: 'gpu-only', tier: () => 'device', attention: () => 'gpu' } },
  { name: "stand-in, 2 device threads, 'overlap'", config: { deviceThreads: 2 }, shape: { strategy: 'overlap', tier: byTier, attention: natural } },
];

/** Every shape and budget against the plain CPU path; `tolerance` bounds the max |logit difference| relative to the largest |logit|. */
async function agreement(t: Test, file: string, budgets: { name: string; bytes: number }[], variant: string | undefined, tolerance: number) {
  const kernels = variant ? { cpuVariant: variant } : {};
  const ref = await load(file, kernels);
  const refRun = await run(ref, { strategy: 'cpu', tier: byTier, attention: () => 'cpu' }, []);
  const forced = refRun.tokens;
  ref.dispose();
  t.ok(forced.flat().every((x) => x >= 0), 'the CPU path samples tokens');
  const scale = Math.max(...refRun.logits.flat().map((l) => Math.max(...l.map(Math.abs))));
  const check = (name: string, got: Float32Array[][]) => {
    const d = maxAbsDiff(got, refRun.logits) / scale;
    if (tolerance === 0) t.equal(d, 0, `${name}: logits equal the CPU path's bit for bit`);
    else t.ok(d <= tolerance, `${name}: max |logit difference| ${d.toExponential(2)} of the largest logit (tolerance ${tolerance})`);
  };
  // Every weight on the stand-in: whatever the strategy and split, the same kernels see the same weights.
  let first: Float32Array[][] | undefined;
  for (const { name, config, shape } of SHAPES) {
    const m = await load(file, { device: 'cpu-standin', ...kernels, ...config });
    const got = await run(m, shape, forced);
    check(name, got.logits);
    if (first) t.equal(maxAbsDiff(got.logits, first), 0, `${name}: bit for bit the stand-in's in-order logits`);
    first ??= got.logits;
    if (tolerance === 0) t.same(got.tokens, forced, `${name}: same greedy tokens`);
    m.dispose();
  }
  for (const { name, bytes } of budgets) {
    const m = await load(file, { device: 'cpu-standin', deviceWeightBytes: bytes, ...kernels });
    for (const strategy of ['overlap', 'pipeline'] as const) {
      const got = await run(m, { strategy, tier: byTier, attention: natural }, forced);
      check(`${name} (${m.placement.deviceTensors} matrices on the device, ${m.placement.hostTensors} in host RAM), '${strategy}'`, got.logits);
    }
    m.dispose();
  }
}

/**
 * With the fast kernels: the largest difference, relative to the largest logit, that packed
 * (mapped) and stored-layout (copied) weights may leave; 7.4e-3 measured on the q8_0 MoE.
 */
const FAST_TOLERANCE = 2e-2;

t.test('stories260K: every strategy and placement gives the CPU path\'s logits', async (t) => {
  const ref = await load(STORIES, { device: 'cpu-standin' });
  const total = ref.placement.deviceBytes;
  t.equal(ref.placement.hostTensors, 0, 'with no budget every matrix goes to the device');
  t.same(ref.info.backends, ['cpu', 'cpu-standin'], 'the stand-in is labelled as such');
  t.match(ref.placement.deviceName, /^CPU stand-in for a GPU/);
  ref.dispose();
  const budgets = [
    { name: 'half the weights on the device', bytes: Math.floor(total / 2) },
    { name: 'no weight on the device', bytes: 0 },
  ];
  await t.test('reference kernels: bit for bit', (t) => agreement(t, STORIES, budgets, 'ref', 0));
  await t.test('fast kernels: within tolerance', (t) => agreement(t, STORIES, budgets, undefined, FAST_TOLERANCE));
});

for (const [label, spec] of [
  ['tiny qwen2moe (shared expert)', { architecture: 'qwen2moe' }],
  // Sliding layers and sinks in the CPU's attention of host-tier sequences, biased experts in host RAM.
  ['tiny gpt-oss (window 4, sinks, expert biases)', { architecture: 'gpt-oss', slidingWindow: 4 }],
  // Five sliding layers and a global one, the scaled embeddings, post norms and GeGLU on both sides.
  ['tiny gemma3 (six layers, window 4, post norms, GeGLU)', { architecture: 'gemma3', nLayer: 6, slidingWindow: 4 }],
  // Soft-capped scores in the CPU's attention of host-tier sequences and on the device side; capped logits.
  ['tiny gemma2 (four layers, window 4, soft caps 1.5 and 2)', { architecture: 'gemma2', nLayer: 4, slidingWindow: 4, softcaps: { attention: 1.5, final: 2 } }],
] as [string, ModelSpec][]) t.test(`${label}: every strategy and placement gives the CPU path's logits`, async (t) => {
  const file = await moeFile(spec);
  const probe = await load(file, { device: 'cpu-standin' });
  const total = probe.placement.deviceBytes;
  probe.dispose();
  // Attention and dense weights go first: a budget short of the whole model leaves routed experts in host RAM.
  const experts = await load(file, { device: 'cpu-standin', deviceWeightBytes: Math.floor(total * 0.6) });
  t.ok(experts.placement.hostTensors > 0 && experts.placement.deviceTensors > 0, 'a 60% budget splits the model');
  experts.dispose();
  const budgets = [
    { name: '60% of the weights on the device', bytes: Math.floor(total * 0.6) },
    { name: 'no weight on the device', bytes: 0 },
  ];
  await t.test('reference kernels: bit for bit', (t) => agreement(t, file, budgets, 'ref', 0));
  await t.test('fast kernels: within tolerance', (t) => agreement(t, file, budgets, undefined, FAST_TOLERANCE));
});

t.test('phases show where the time went; overlap runs CPU attention on the worker', async (t) => {
  const m = await load(STORIES, { device: 'cpu-standin', deviceWeightBytes: 0 });
  const r = await run(m, { strategy: 'overlap', tier: byTier, attention: natural }, []);
  const last = r.phases[r.phases.length - 1]!;
  for (const k of ['linear', 'hostLinear', 'transfer', 'attentionTransfer', 'attention', 'cpuAttention', 'cpuWait']) t.ok(k in last, `phaseUs.${k} is reported`);
  t.ok(last.cpuAttention! > 0 && last.hostLinear! > 0 && last.transfer! > 0 && last.attentionTransfer! > 0, 'host attention, host matmuls and both kinds of transfer took time');
  m.dispose();
});

t.test('bad strategy plans and devices reject with typed errors', async (t) => {
  const m = await load(STORIES, { device: 'cpu-standin' });
  const s: SequencePlan = { seqId: 1, tokens: Int32Array.from([1, 403]), startPos: 0, blockTable: Int32Array.from([0]), kvTier: 'host', attention: 'cpu', sample: true };
  await t.rejects(m.step({ strategy: 'gpu-only', copies: [], sequences: [s] }), { code: 'TDM_BAD_ARGUMENT', message: /gpu-only/ });
  await t.rejects(m.step({ strategy: 'pipeline', copies: [], sequences: [{ ...s, subBatch: 2 } as unknown as SequencePlan] }), { code: 'TDM_BAD_ARGUMENT', message: /subBatch/ });
  const ok = await m.step({ strategy: 'pipeline', copies: [], sequences: [{ ...s, subBatch: 1 }] });
  t.ok(ok.sequences[0]!.token >= 0, 'a pipeline step with one sub-batch runs');
  await t.rejects(m.profile({ kind: 'attention', device: 'gpu', requests: 0, context: 1, tokens: 1 }), { code: 'TDM_BAD_ARGUMENT' });
  m.dispose();
  await t.rejects(load(STORIES, { device: 'tpu' as 'gpu' }), { code: 'TDM_BAD_ARGUMENT' });
  const gpus = native().backends().filter((b) => b.status === 'selected');
  if (gpus.length === 0) {
    await t.rejects(load(STORIES, { device: 'gpu' }), { code: 'TDM_BACKEND_UNAVAILABLE' });
    const auto = await load(STORIES, { device: 'auto' });
    t.same(auto.info.backends, ['cpu'], "'auto' with no usable GPU runs on the CPU alone");
    auto.dispose();
  } else {
    t.comment(`a GPU is present (${gpus[0]!.deviceName}): the no-GPU error is not checked here`);
  }
});

t.test('the timing entry points measure each subtask', async (t) => {
  const m = await load(STORIES, { device: 'cpu-standin' });
  const us = [
    await m.profile({ kind: 'linear', tokens: 4, iters: 2 }),
    await m.profile({ kind: 'attention', device: 'gpu', requests: 2, context: 40, tokens: 1, iters: 2 }),
    await m.profile({ kind: 'attention', device: 'cpu', requests: 3, context: 17, tokens: 1, iters: 2 }),
    await m.profile({ kind: 'attention', device: 'gpu', requests: 1, context: 0, tokens: 33 }),
    await m.profile({ kind: 'copy', direction: 'h2d', bytes: 1 << 16 }),
    await m.profile({ kind: 'copy', direction: 'd2h', bytes: 1 << 16 }),
  ];
  t.ok(us.every((x) => Number.isFinite(x) && x > 0), `every subtask reports a positive time (${us.map((x) => x.toFixed(1)).join(', ')} µs)`);
  const first = m.profile({ kind: 'linear', tokens: 1 });
  await t.rejects(m.profile({ kind: 'linear', tokens: 1 }), { code: 'TDM_BAD_ARGUMENT', message: /running/ });
  await first;
  const after = await m.step({ strategy: 'overlap', copies: [], sequences: [{ seqId: 1, tokens: Int32Array.from([1, 403]), startPos: 0, blockTable: Int32Array.from([0]), kvTier: 'host', attention: 'cpu', sample: true }] });
  t.ok(after.sequences[0]!.token >= 0, 'profiling leaves the model usable');
  m.dispose();
});

const GPUS = native().backends().filter((b) => b.status === 'selected');

t.test('on a GPU: every strategy and a split placement agree with the CPU path', { skip: GPUS.length === 0 ? 'no usable GPU backend on this machine' : false }, async (t) => {
  t.comment(`device: ${GPUS[0]!.kind} ${GPUS[0]!.deviceName}`);
  const ref = await load(STORIES);
  const refRun = await run(ref, { strategy: 'cpu', tier: byTier, attention: () => 'cpu' }, []);
  ref.dispose();
  const scale = Math.max(...refRun.logits.flat().map((l) => Math.max(...l.map(Math.abs))));
  const probe = await load(STORIES, { device: 'gpu' });
  const total = probe.placement.deviceBytes;
  probe.dispose();
  // The GPU's kernels round differently from the CPU's: the tolerance is relative to the largest logit.
  const GPU_TOLERANCE = 2e-2;
  for (const bytes of [undefined, Math.floor(total / 2)]) {
    const m = await load(STORIES, bytes === undefined ? { device: 'gpu' } : { device: 'gpu', deviceWeightBytes: bytes });
    const shapes: Shape[] = [
      { strategy: 'gpu-only', tier: () => 'device', attention: () => 'gpu' },
      { strategy: 'overlap', tier: byTier, attention: natural },
      { strategy: 'pipeline', tier: byTier, attention: natural },
    ];
    for (const shape of shapes) {
      const got = await run(m, shape, refRun.tokens);
      const d = maxAbsDiff(got.logits, refRun.logits) / scale;
      t.ok(d <= GPU_TOLERANCE, `${m.placement.hostTensors} matrices in host RAM, '${shape.strategy}': max |logit difference| ${d.toExponential(2)} (tolerance ${GPU_TOLERANCE})`);
    }
    m.dispose();
  }
});
