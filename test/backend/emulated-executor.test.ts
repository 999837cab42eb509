// The executor's GPU paths with no GPU: the kernel sources built for the host emulation
// (emulated-build.ts) load through the backend registry as a CUDA device that reports
// asynchronous streams and events, so the code a real GPU runs (copy streams and events for
// CPU attention, weights left in host RAM, the expert cache's copies, prefill streaming through
// the double buffer, admissions and prefetches on the expert stream, the fused combine, expert
// timing) runs end to end here, and so do loadModel's policies and expert offload through the
// public API. Logits are checked against the plain CPU path; the emulation
// runs work at once in queue order, so this checks the logic, not the GPU's concurrency.
import t, { type Test } from 'tap';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native, type NativeExpertConfig, type NativeModel, type NativeModelConfig } from '../../src/native/binding.js';
import type { ExpertStepStats, KvTier, SequencePlan, Strategy } from '../../src/native/step-plan.js';
import { makeModel, type ModelSpec } from '../../src/model/synthetic.js';
import { calibrateExperts, QUICK_EXPERT_GRID } from '../../src/sched/experts/calibrate.js';
import { emulatedLibDir, noCompiler } from './emulated-build.js';
import { loadModel } from '../../src/api/index.js';
import { hparamsOf, maxAbsDiff, modelPath } from '../helpers.js';

/**
 * Largest |logit difference| relative to the largest |logit| between the emulated GPU kernels
 * and the CPU's packed kernels (the same products summed in other orders); the device script's
 * NMSE bound is the same idea.
 */
const TOLERANCE = 2e-2;

const built = noCompiler ? { dir: '', error: noCompiler } : await emulatedLibDir();
// Before the first registry scan of this process: the emulated libraries stand in for the GPU's.
process.env.TANDEM_GPU_LIB_DIR = built.dir;
const skip = noCompiler || (built.error ? `the emulation did not build: ${built.error.slice(0, 200)}` : false);


async function load(file: string, extra: Partial<NativeModelConfig> = {}): Promise<NativeModel> {
  return native().loadModel(file, { hparams: hparamsOf(file), threads: 1, kvBlockTokens: 16, kvBlocks: { device: 16, host: 16 }, ...extra });
}

const PROMPTS = [
  [1, 403, 407, 261, 378],
  [1, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426],
  [1, 300, 301, 302],
];
const DECODE_STEPS = 3;

interface Shape {
  strategy: Strategy;
  tier: (id: number) => KvTier;
  /** The model keeps its sliding layers' KV apart (kvSplitSliding): give each sequence a sliding table for each of this many groups (true: 1). */
  sliding?: boolean | number;
  /** Where host-tier sequence `id` attends (default the CPU; 'gpu' streams its KV to the device a layer at a time). */
  hostAttention?: (id: number) => 'cpu' | 'gpu';
  /** KV blocks of each sequence's table (default 2); the pool needs 3 × this (twice with `sliding`). */
  blocksPerSeq?: number;
  /** Blocks in each tier of the pool the model was loaded with (default 16). */
  poolBlocks?: number;
}

/** A prefill of every prompt in one step, then teacher-forced decode steps: each step's logits, tokens and expert counters. */
async function run(m: NativeModel, shape: Shape, forced: number[][]): Promise<{ logits: Float32Array[][]; tokens: number[][]; experts: ExpertStepStats[] }> {
  const ids = PROMPTS.map((_, i) => i + 1);
  const per = shape.blocksPerSeq ?? 2;
  const last = (shape.poolBlocks ?? 16) - 1;
  const seq = (id: number, tokens: number[], startPos: number): SequencePlan => {
    const tier = shape.tier(id);
    const own = Array.from({ length: per }, (_, j) => per * (id - 1) + j);
    return {
      seqId: id, tokens: Int32Array.from(tokens), startPos, blockTable: Int32Array.from(own), kvTier: tier,
      attention: tier === 'device' ? 'gpu' : (shape.hostAttention?.(id) ?? 'cpu'), sample: true, returnLogits: true,
      // Group j's blocks count down from the pool's end, after those of the groups before it.
      ...(shape.sliding ? { slidingBlockTable: Int32Array.from(Array.from({ length: Number(shape.sliding) }, (_, j) => own.map((b) => last - b - j * per * PROMPTS.length)).flat()) } : {}),
    };
  };
  const out = { logits: [] as Float32Array[][], tokens: [] as number[][], experts: [] as ExpertStepStats[] };
  const pos = PROMPTS.map((p) => p.length);
  let sequences = ids.map((id) => seq(id, PROMPTS[id - 1]!, 0));
  for (let step = 0; step <= DECODE_STEPS; step++) {
    const r = await m.step({ strategy: shape.strategy, copies: [], sequences });
    out.logits.push(r.sequences.map((s) => s.logits!));
    out.tokens.push(r.sequences.map((s) => s.token));
    if (r.experts) out.experts.push(r.experts);
    const next = forced[step] ?? out.tokens[step]!;
    sequences = ids.map((id, i) => seq(id, [next[i]!], pos[i]!));
    for (let i = 0; i < pos.length; i++) pos[i]!++;
  }
  return out;
}

/** The largest |logit difference|, relative to the largest |logit| of `want`. */
function relDiff(got: Float32Array[][], want: Float32Array[][]): number {
  const scale = Math.max(...want.flat().map((l) => Math.max(...l.map(Math.abs))));
  return maxAbsDiff(got, want) / scale;
}

const sum = (xs: ExpertStepStats[], k: keyof ExpertStepStats) => xs.reduce((n, x) => n + x[k], 0);
const odd = (id: number): KvTier => (id % 2 === 1 ? 'device' : 'host');

t.test('dense: every strategy and a split placement on the emulated GPU give the CPU path\'s logits', { skip }, async (t) => {
  const file = modelPath('stories260K.gguf');
  const ref = await load(file);
  const want = await run(ref, { strategy: 'cpu', tier: odd }, []);
  t.equal(ref.placement.streamsHostKv, false, 'no device, nothing to stream to');
  t.equal(ref.placement.hostKvLockMs, 0, 'and nothing locked');
  await t.rejects(ref.profile({ kind: 'stream', blocks: 4, iters: 1 }), { code: 'TDM_UNSUPPORTED' }, 'and no streaming to time');
  ref.dispose();
  const probe = await load(file, { device: 'gpu' });
  t.match(probe.placement.deviceName, /emulated on the host/, 'the emulated library is the device');
  t.equal(probe.placement.streamsHostKv, true, 'the device maps the host tier');
  t.ok((await probe.profile({ kind: 'stream', blocks: 4, iters: 1 })) > 0, 'the profiler can time streamed host KV');
  t.equal(probe.placement.streamBlocksMax, 16, 'the default staging holds the whole host tier of so small a model');
  t.ok(probe.placement.hostKvLockMs > 0, `locking the host tier timed (${(probe.placement.hostKvLockMs * 1000).toFixed(1)} µs on the emulation)`);
  const total = probe.placement.deviceBytes;
  probe.dispose();
  const cases: { name: string; config: Partial<NativeModelConfig>; shape: Shape }[] = [
    { name: 'gpu-only', config: {}, shape: { strategy: 'gpu-only', tier: () => 'device' } },
    { name: 'overlap, host-tier attention on the CPU', config: {}, shape: { strategy: 'overlap', tier: odd } },
    { name: 'pipeline', config: {}, shape: { strategy: 'pipeline', tier: odd } },
    { name: 'overlap, half the weights in host RAM', config: { deviceWeightBytes: Math.floor(total / 2) }, shape: { strategy: 'overlap', tier: odd } },
    { name: 'gpu-only, host-tier KV streamed to the device', config: {}, shape: { strategy: 'gpu-only', tier: odd, hostAttention: () => 'gpu' } },
    { name: 'gpu-only, every sequence\'s KV streamed from the host', config: {}, shape: { strategy: 'gpu-only', tier: () => 'host', hostAttention: () => 'gpu' } },
    { name: 'overlap, host KV: two sequences streamed, one attended on the CPU', config: {}, shape: { strategy: 'overlap', tier: () => 'host', hostAttention: (id) => (id === 2 ? 'cpu' : 'gpu') } },
    { name: 'pipeline, host-tier KV streamed', config: {}, shape: { strategy: 'pipeline', tier: odd, hostAttention: () => 'gpu' } },
  ];
  for (const c of cases) {
    const m = await load(file, { device: 'gpu', ...c.config });
    const got = await run(m, c.shape, want.tokens);
    m.dispose();
    const d = relDiff(got.logits, want.logits);
    t.ok(d <= TOLERANCE, `${c.name}: max |logit difference| ${d.toExponential(2)} of the largest logit`);
  }
});

t.test('streamed host KV stays within the staging allocated at load, and a plan beyond it is refused whole', { skip }, async (t) => {
  const file = modelPath('stories260K.gguf');
  const ref = await load(file);
  const want = await run(ref, { strategy: 'cpu', tier: () => 'host' }, []);
  // Two layers of a block's K and V: a block's share of the staging.
  const perBlock = (2 * ref.info.kvBlockBytes) / hparamsOf(file).nLayer;
  ref.dispose();
  const m = await load(file, { device: 'gpu', kvStreamStagingBytes: 2 * perBlock });
  t.teardown(() => m.dispose());
  t.equal(m.placement.streamBlocksMax, 2, 'staging for two blocks');
  // Each sequence reads one block: two streamed and one on the CPU fit.
  const got = await run(m, { strategy: 'overlap', tier: () => 'host', hostAttention: (id) => (id === 2 ? 'cpu' : 'gpu') }, want.tokens);
  const d = relDiff(got.logits, want.logits);
  t.ok(d <= TOLERANCE, `two streamed sequences in a staging of two blocks: max |logit difference| ${d.toExponential(2)}`);
  await t.rejects(run(m, { strategy: 'gpu-only', tier: () => 'host', hostAttention: () => 'gpu' }, want.tokens),
    { code: 'TDM_BAD_ARGUMENT', message: /streams 3 host KV blocks .* more than the 2 its staging holds/ }, 'three streamed sequences are refused');
  // The refused plan changed nothing: the model still gives the reference logits.
  const again = await run(m, { strategy: 'overlap', tier: () => 'host', hostAttention: (id) => (id === 2 ? 'cpu' : 'gpu') }, want.tokens);
  t.ok(relDiff(again.logits, want.logits) <= TOLERANCE, 'and the model runs on after it');
  const none = await load(file, { device: 'gpu', kvStreamStagingBytes: Math.floor(perBlock) - 1 });
  t.equal(none.placement.streamsHostKv, false, 'staging too small for one block: no streaming');
  t.equal(none.placement.streamBlocksMax, 0);
  t.equal(none.placement.hostKvLocked, true, 'the host tier is locked all the same, for swaps');
  // Host-tier KV then needs CPU attention.
  await t.rejects(run(none, { strategy: 'gpu-only', tier: () => 'host', hostAttention: () => 'gpu' }, want.tokens),
    { code: 'TDM_UNSUPPORTED', message: /cannot read KV blocks in the host tier/ });
  const cpuSide = await run(none, { strategy: 'overlap', tier: () => 'host', hostAttention: () => 'cpu' }, want.tokens);
  t.ok(relDiff(cpuSide.logits, want.logits) <= TOLERANCE, 'CPU attention over the locked host tier: the reference logits');
  none.dispose();
  const unlocked = await load(file, { device: 'gpu', kvStream: false });
  t.equal(unlocked.placement.hostKvLocked, false, 'kvStream: false locks nothing');
  t.equal(unlocked.placement.hostKvLockMs, 0);
  unlocked.dispose();
});

t.test('MoE expert offload on the emulated GPU: every policy\'s logits, and the counters of the async paths', { skip }, async (t) => {
  const dir = path.join(tmpdir(), 'tandem-test-models');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'emulated-executor-v1-qwen2moe.gguf');
  if (!existsSync(file)) await makeModel({ preset: 'tiny', architecture: 'qwen2moe', type: 'q8_0', nExpert: 8, nExpertUsed: 2, seed: 41 }, file);
  const ref = await load(file);
  const want = await run(ref, { strategy: 'cpu', tier: () => 'device' }, []);
  ref.dispose();
  const gpuOnly: Shape = { strategy: 'gpu-only', tier: () => 'device' };
  const budget = 3 << 20;
  const policies: { name: string; experts: NativeExpertConfig; calibrate?: boolean; shape?: Shape }[] = [
    { name: 'dynamic, n* = 2', experts: { policy: 'dynamic', maxSlots: 4, nStar: 2, admitPerLayer: 1, admitMargin: 1 } },
    // CPU experts and the hybrid scheduler's CPU attention for host-tier sequences in one step.
    { name: 'dynamic, n* = 2, overlap with host-tier attention', experts: { policy: 'dynamic', maxSlots: 4, nStar: 2 }, shape: { strategy: 'overlap', tier: odd } },
    { name: 'cpu-all, pipeline with host-tier attention', experts: { policy: 'cpu-all' }, shape: { strategy: 'pipeline', tier: odd } },
    { name: 'dynamic, calibrated, idle-link prefetch', experts: { policy: 'dynamic', maxSlots: 6, prefetchWhenIdle: true }, calibrate: true },
    // The next router on the device, its logits down with the routing, the prefetch it orders.
    { name: 'dynamic, prefetch by the pregate', experts: { policy: 'dynamic', maxSlots: 4, nStar: Infinity, admitPerLayer: 0, prefetchPerLayer: 2, pregate: true } },
    // The same prefetch issued when the routing is known, on the expert stream beside the layer's experts.
    { name: 'dynamic, early prefetch by the pregate', experts: { policy: 'dynamic', maxSlots: 4, nStar: Infinity, admitPerLayer: 0, prefetchPerLayer: 2, pregate: true, prefetchEarly: true } },
    { name: 'dynamic, calibrated, early prefetch by the pregate', experts: { policy: 'dynamic', maxSlots: 6, prefetchWhenIdle: true, pregate: true, prefetchEarly: true }, calibrate: true },
    { name: 'cpu-all', experts: { policy: 'cpu-all' } },
    { name: 'cpu-first-layers:1', experts: { policy: 'cpu-first-layers', cpuLayers: 1 } },
  ];
  for (const p of policies) {
    const m = await load(file, { device: 'gpu', deviceWeightBytes: budget, experts: p.experts });
    if (p.calibrate) {
      const c = await calibrateExperts(m, QUICK_EXPERT_GRID);
      t.equal(c.deviceNote, undefined, `${p.name}: the device side is timed from the cache slots`);
      t.ok(c.points.every((x) => x.us > 0), `${p.name}: every timing is positive`);
      m.setExpertCost(c.cost);
    }
    const got = await run(m, p.shape ?? gpuOnly, want.tokens);
    m.dispose();
    const d = relDiff(got.logits, want.logits);
    t.ok(d <= TOLERANCE, `${p.name}: max |logit difference| ${d.toExponential(2)} of the largest logit`);
    const e = got.experts;
    t.ok(e.length >= DECODE_STEPS + 1, `${p.name}: every step reports its experts`);
    if (p.experts.policy === 'cpu-all') {
      t.equal(sum(e, 'deviceExperts'), 0, `${p.name}: no expert on the device`);
    } else {
      t.ok(sum(e, 'deviceExperts') > 0 && sum(e, 'cpuExperts') > 0, `${p.name}: experts ran on both sides`);
    }
    if (p.name === 'dynamic, n* = 2') {
      t.ok(e[0]!.prefillCopies > 0, `${p.name}: the prefill streams missing experts (${e[0]!.prefillCopies} copies)`);
      t.ok(e[0]!.overlappedCopies > 0, `${p.name}: fills queued ahead of device compute on the copy stream`);
      t.ok(sum(e, 'admissions') > 0, `${p.name}: CPU-run experts are admitted to the cache on the expert stream`);
    }
    if (p.experts.pregate) {
      const hits = sum(e, 'prefetchHits');
      t.ok(hits > 0 && hits <= sum(e, 'prefetches'), `${p.name}: ${hits} of ${sum(e, 'prefetches')} prefetched experts were routed to`);
    }
    if (p.calibrate) {
      // The emulated device is far slower than the CPU, so its resident experts leave the link a long idle window.
      t.ok(sum(e, 'prefetches') > 0, `${p.name}: next-layer experts prefetched on the expert stream (${sum(e, 'prefetches')})`);
    }
  }
});

t.test('gpt-oss with MXFP4 experts on the emulated GPU: on the device and offloaded, the CPU path\'s logits', { skip }, async (t) => {
  const dir = path.join(tmpdir(), 'tandem-test-models');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'emulated-executor-v1-gpt-oss-mxfp4_moe.gguf');
  // A window shorter than the prompts, sinks, YaRN, biased experts: every gpt-oss op runs on the device.
  const spec = { preset: 'tiny', architecture: 'gpt-oss', type: 'mxfp4_moe', nExpert: 8, nExpertUsed: 2, seed: 41, slidingWindow: 4 } as const;
  if (!existsSync(file)) await makeModel({ ...spec, ropeScaling: { type: 'yarn', factor: 4, originalContext: 8 } }, file);
  const ref = await load(file);
  const want = await run(ref, { strategy: 'cpu', tier: () => 'device' }, []);
  ref.dispose();
  for (const c of [
    { name: 'every weight on the device', config: {} as Partial<NativeModelConfig> },
    { name: 'the sliding layers\' KV in blocks of their own', config: { kvSplitSliding: true } as Partial<NativeModelConfig> },
    { name: 'dynamic expert offload, n* = 2', config: { deviceWeightBytes: 3 << 20, experts: { policy: 'dynamic', maxSlots: 4, nStar: 2 } as NativeExpertConfig } },
    // The next layer's router has a bias too.
    { name: 'dynamic, prefetch by the pregate', config: { deviceWeightBytes: 3 << 20, experts: { policy: 'dynamic', maxSlots: 4, nStar: Infinity, prefetchPerLayer: 2, pregate: true } as NativeExpertConfig } },
  ]) {
    const m = await load(file, { device: 'gpu', ...c.config });
    const got = await run(m, { strategy: 'gpu-only', tier: () => 'device', sliding: c.config.kvSplitSliding }, want.tokens);
    m.dispose();
    const d = relDiff(got.logits, want.logits);
    t.ok(d <= TOLERANCE, `${c.name}: max |logit difference| ${d.toExponential(2)} of the largest logit`);
    if (c.config.experts) t.ok(sum(got.experts, 'deviceExperts') > 0 && sum(got.experts, 'cpuExperts') > 0, `${c.name}: experts ran on both sides`);
  }
});

t.test('gpt-oss with its sliding layers\' KV apart, streamed from host RAM: each layer gathers its own group\'s blocks (the sliding ones from the window on), the CPU path\'s logits', { skip }, async (t) => {
  const file = path.join(tmpdir(), 'tandem-test-models', 'emulated-executor-v1-gpt-oss-mxfp4_moe.gguf');
  t.ok(existsSync(file), 'made by the test above');
  // Blocks of 4 positions and a window of 4: by the last decodes the first blocks of each
  // sliding table are behind the window, so the gather leaves them out.
  const small = { kvBlockTokens: 4, kvBlocks: { device: 32, host: 32 } };
  const base = { blocksPerSeq: 4, poolBlocks: 32 };
  const ref = await load(file, small);
  const want = await run(ref, { strategy: 'cpu', tier: () => 'device', ...base }, []);
  ref.dispose();
  const m = await load(file, { ...small, device: 'gpu', kvSplitSliding: true });
  t.teardown(() => m.dispose());
  t.equal(m.placement.streamsHostKv, true, 'a model with two KV groups streams');
  for (const c of [
    { name: 'gpu-only, every sequence streamed', shape: { strategy: 'gpu-only', tier: () => 'host', hostAttention: () => 'gpu' } as Shape },
    { name: 'overlap, two streamed and one on the CPU', shape: { strategy: 'overlap', tier: () => 'host', hostAttention: (id: number) => (id === 2 ? 'cpu' : 'gpu') } as Shape },
    { name: 'pipeline, the host-tier one streamed', shape: { strategy: 'pipeline', tier: odd, hostAttention: () => 'gpu' } as Shape },
  ]) {
    const got = await run(m, { ...c.shape, sliding: true, ...base }, want.tokens);
    const d = relDiff(got.logits, want.logits);
    t.ok(d <= TOLERANCE, `${c.name}: max |logit difference| ${d.toExponential(2)} of the largest logit`);
  }
  // Through the API: auto under a device KV of two blocks, the sliding layers apart.
  const opts = { threads: 1, contextSize: 64, maxSequences: 3 };
  const plain = await loadModel(file, opts);
  const prompt = [1, 5, 9, 13, 17, 21, 25, 29];
  const greedy = { maxTokens: 12, temperature: 0, ignoreEos: true };
  const wantTokens = (await plain.generate(prompt, greedy).result).tokens;
  const blockBytes = plain.info.kvBlockBytes;
  plain.dispose();
  const api = await loadModel(file, { ...opts, device: 'gpu', policy: 'auto', profile: 'quick', kvDeviceBytes: 2 * blockBytes });
  t.equal(api.info.kvStream, true, 'the API streams a model with its sliding layers apart');
  t.ok(api.info.kvSlidingWindow > 0);
  const got = await Promise.all([0, 1, 2].map(() => api.generate(prompt, greedy).result));
  const { streamed } = api.stats.policy!;
  api.dispose();
  for (const g of got) t.same(g.tokens, wantTokens, `auto: the CPU path's greedy tokens (${streamed} sequence-steps streamed)`);
});

type GpuCase = { name: string; config: Partial<NativeModelConfig>; shape: Shape };

/** Writes (once) a synthetic model, then checks each case on the emulated GPU against the CPU path's logits. */
async function agreesWithCpu(t: Test, name: string, spec: ModelSpec, cases: (deviceBytes: number) => GpuCase[]): Promise<void> {
  const dir = path.join(tmpdir(), 'tandem-test-models');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `emulated-executor-v1-${name}.gguf`);
  if (!existsSync(file)) await makeModel(spec, file);
  const ref = await load(file);
  const want = await run(ref, { strategy: 'cpu', tier: odd }, []);
  ref.dispose();
  const probe = await load(file, { device: 'gpu' });
  const total = probe.placement.deviceBytes;
  probe.dispose();
  for (const c of cases(total)) {
    const m = await load(file, { device: 'gpu', ...c.config });
    const got = await run(m, c.shape, want.tokens);
    m.dispose();
    const d = relDiff(got.logits, want.logits);
    t.ok(d <= TOLERANCE, `${c.name}: max |logit difference| ${d.toExponential(2)} of the largest logit`);
  }
}

t.test('gemma3 on the emulated GPU (heads of 256, scaled embeddings, post norms, GeGLU, five sliding layers in six): every strategy, the CPU path\'s logits', { skip }, async (t) => {
  // Gemma-3-1B's heads (256 wide, one KV head) over a narrow model, a window shorter than the prompts.
  const spec = { preset: 'tiny', architecture: 'gemma3', type: 'q8_0', nEmbd: 128, nFf: 256, nLayer: 6, nHead: 2, nHeadKv: 1, headDim: 256, slidingWindow: 4, seed: 43 } as const;
  await agreesWithCpu(t, 'gemma3-q8_0', spec, (total) => [
    { name: 'gpu-only', config: {}, shape: { strategy: 'gpu-only', tier: () => 'device' } },
    { name: 'overlap, host-tier attention on the CPU', config: {}, shape: { strategy: 'overlap', tier: odd } },
    { name: 'pipeline, half the weights in host RAM', config: { deviceWeightBytes: Math.floor(total / 2) }, shape: { strategy: 'pipeline', tier: odd } },
    // One full layer: blocks of one slot, the five sliding layers in five groups of their own.
    { name: 'gpu-only, the sliding layers apart in five groups, host KV streamed', config: { kvSplitSliding: true, kvBlocks: { device: 64, host: 64 } }, shape: { strategy: 'gpu-only', tier: odd, hostAttention: () => 'gpu', sliding: 5, poolBlocks: 64 } },
    { name: 'overlap, the sliding layers apart in five groups', config: { kvSplitSliding: true, kvBlocks: { device: 64, host: 64 } }, shape: { strategy: 'overlap', tier: odd, sliding: 5, poolBlocks: 64 } },
  ]);
});

t.test('gemma2 on the emulated GPU (soft-capped scores and logits, every other layer sliding): every strategy, the CPU path\'s logits', { skip }, async (t) => {
  // Gemma 2's heads of 256 over a narrow model; caps about the size of the scores and logits, so that tanh bends them.
  // f32 weights: in q8_0, this shape without QK norms sits on activation rounding edges, where
  // the two sides' float summation orders flip a q8 level and the logits move by 1-2% (measured
  // with the caps off too, 1e-7 for other seeds); in f32 the sides differ by their sums alone (2e-4).
  const spec = { preset: 'tiny', architecture: 'gemma2', type: 'f32', nEmbd: 128, nFf: 256, nLayer: 4, nHead: 2, nHeadKv: 1, headDim: 256, slidingWindow: 4, softcaps: { attention: 1, final: 2 }, seed: 44 } as const;
  await agreesWithCpu(t, 'gemma2-f32', spec, (total) => [
    { name: 'gpu-only', config: {}, shape: { strategy: 'gpu-only', tier: () => 'device' } },
    { name: 'overlap, host-tier attention on the CPU', config: {}, shape: { strategy: 'overlap', tier: odd } },
    { name: 'pipeline, half the weights in host RAM', config: { deviceWeightBytes: Math.floor(total / 2) }, shape: { strategy: 'pipeline', tier: odd } },
    { name: 'gpu-only, host KV streamed', config: { kvBlocks: { device: 64, host: 64 } }, shape: { strategy: 'gpu-only', tier: odd, hostAttention: () => 'gpu', poolBlocks: 64 } },
  ]);
});

t.test('the public API on the emulated GPU: policies under a capped device KV, and dynamic experts', { skip }, async (t) => {
  const file = modelPath('stories260K.gguf');
  const opts = { threads: 1, contextSize: 128, maxSequences: 4 };
  const plain = await loadModel(file, opts);
  t.teardown(() => plain.dispose());
  const prompt = plain.tokenize('Once upon a time');
  const want = (await plain.generate(prompt, { maxTokens: 12, temperature: 0, ignoreEos: true }).result).tokens;
  for (const policy of ['auto', 'overlap'] as const) {
    // A device KV tier of two blocks: the three requests cannot all keep their KV on the device.
    const m = await loadModel(file, { ...opts, device: 'gpu', policy, profile: 'quick', kvDeviceBytes: 2 * plain.info.kvBlockBytes });
    t.match(m.info.deviceName, /emulated on the host/);
    // Only auto streams: the fixed policies take no staging, and lock the host tier for their swaps.
    t.equal(m.info.kvStream, policy === 'auto', `${policy}: streamed KV only under auto`);
    t.equal(m.info.kvHostLocked, true, `${policy}: the host tier is locked`);
    if (policy === 'overlap') t.equal(m.info.kvStreamBlocks, 0, 'overlap: no staging');
    let hostSeqSteps = 0;
    const stop = m.onStep((s) => (hostSeqSteps += s.sequences.host > 0 ? 1 : 0));
    const got = await Promise.all([0, 1, 2].map(() => m.generate(prompt, { maxTokens: 12, temperature: 0, ignoreEos: true }).result));
    stop();
    const { strategies, streamed } = m.stats.policy!;
    m.dispose();
    for (const g of got) t.same(g.tokens, want, `${policy}: the CPU path's greedy tokens`);
    t.ok(hostSeqSteps > 0, `${policy}: ${hostSeqSteps} steps ran sequences whose KV is in host RAM (${JSON.stringify(strategies)}, ${streamed} sequence-steps streamed)`);
    if (policy === 'overlap') t.equal(streamed, 0, 'the fixed APEX policy never streams');
  }
  const pageable = await loadModel(file, { ...opts, device: 'gpu', profile: 'quick', kvStream: false });
  t.equal(pageable.info.kvStream, false, 'kvStream: false leaves the host tier unmapped');
  t.equal(pageable.info.kvStreamBlocks, 0);
  t.equal(pageable.info.kvHostLocked, false);
  pageable.dispose();
  // A device tier with room for every sequence's full context: nothing would stream, so nothing is locked or staged.
  const roomy = await loadModel(file, { ...opts, device: 'gpu', policy: 'auto', profile: 'quick' });
  t.ok(roomy.info.kvBlocks.device >= 4 * Math.ceil(128 / roomy.info.kvBlockTokens), `the default device tier holds all 4 contexts (${roomy.info.kvBlocks.device} blocks)`);
  t.equal(roomy.info.kvStream, false, 'no streaming where the device tier holds every context');
  t.equal(roomy.info.kvStreamBlocks, 0);
  t.equal(roomy.info.kvHostLocked, false, 'nor a locked host tier');
  roomy.dispose();
  const asked = await loadModel(file, { ...opts, device: 'gpu', policy: 'auto', profile: 'quick', kvStream: true });
  t.equal(asked.info.kvStream, true, 'kvStream: true streams even so');
  asked.dispose();
  // Staging for two blocks: auto streams within it, and the tokens stay the CPU path's.
  const perBlock = (2 * plain.info.kvBlockBytes) / hparamsOf(file).nLayer;
  const narrow = await loadModel(file, { ...opts, device: 'gpu', policy: 'auto', profile: 'quick', kvDeviceBytes: 2 * plain.info.kvBlockBytes, kvStreamStagingBytes: 2 * perBlock });
  t.equal(narrow.info.kvStreamBlocks, 2, 'kvStreamStagingBytes sizes the staging');
  const narrowGot = await Promise.all([0, 1, 2].map(() => narrow.generate(prompt, { maxTokens: 12, temperature: 0, ignoreEos: true }).result));
  narrow.dispose();
  for (const g of narrowGot) t.same(g.tokens, want, 'auto within a staging of two blocks: the CPU path\'s greedy tokens');
  await t.rejects(loadModel(file, { ...opts, device: 'gpu', kvStreamStagingBytes: -1 }), { code: 'TDM_BAD_ARGUMENT', message: /kvStreamStagingBytes/ });
  await t.rejects(loadModel(file, { ...opts, kvStreamStagingBytes: 1 << 20 }), { code: 'TDM_BAD_ARGUMENT', message: /kvStreamStagingBytes needs a device/ });
  await t.rejects(loadModel(file, { ...opts, device: 'gpu', kvStream: 'yes' as unknown as boolean }), { code: 'TDM_BAD_ARGUMENT' });
  const moe = path.join(tmpdir(), 'tandem-test-models', 'emulated-executor-v1-qwen2moe.gguf');
  const m = await loadModel(moe, { threads: 1, contextSize: 64, maxSequences: 2, device: 'gpu', experts: 'dynamic', deviceWeightBytes: 3 << 20, profile: 'quick' });
  t.teardown(() => m.dispose());
  const cal = m.info.experts!.calibration!;
  t.equal(cal.deviceNote, undefined, 'the emulated device times its experts');
  t.ok(cal.cost.gpuFixedUs > 0 && cal.cost.linkBytesPerUs > 0, 'device and link costs calibrated');
  const steps: number[] = [];
  const stop = m.onStep((s) => steps.push(s.experts ? s.experts.hits + s.experts.misses : -1));
  const r = await m.generate([1, 5, 9, 13, 17, 21], { maxTokens: 6, temperature: 0, ignoreEos: true }).result;
  stop();
  t.equal(r.tokens.length, 6);
  t.ok(steps.length > 0 && steps.every((n) => n > 0), 'every step routed experts');
});

t.test('sampling from each row\'s best logits, cut on the emulated GPU, draws the tokens whole rows give', { skip }, async (t) => {
  const file = modelPath('stories260K.gguf');
  const best = await load(file, { device: 'gpu' });
  t.teardown(() => best.dispose());
  process.env.TANDEM_DEVICE_TOP_K = '0';
  const whole = await load(file, { device: 'gpu' }).finally(() => delete process.env.TANDEM_DEVICE_TOP_K);
  t.teardown(() => whole.dispose());
  const base = { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 7 };
  const configs: { name: string; sampling: typeof base; recent?: boolean }[] = [
    { name: 'greedy', sampling: { ...base, temperature: 0, topK: 0, topP: 1, minP: 0 } },
    { name: 'the defaults (top-k 40, top-p, min-p)', sampling: base },
    { name: 'top-k 5 at temperature 1.5', sampling: { ...base, temperature: 1.5, topK: 5, topP: 1, minP: 0, seed: 3 } },
    { name: 'top-k 64', sampling: { ...base, topK: 64, minP: 0, seed: 11 } },
    { name: 'top-p alone (whole rows)', sampling: { ...base, topK: 0 } },
    { name: 'a repeat penalty (whole rows)', sampling: { ...base, repeatPenalty: 1.3 }, recent: true },
  ];
  const draw = async (m: NativeModel, c: (typeof configs)[number]) => {
    const tokens = PROMPTS.map((p) => [...p]);
    const drawn: number[][] = [];
    for (let step = 0; step < 8; step++) {
      const sequences: SequencePlan[] = tokens.map((all, i) => {
        const start = step === 0 ? 0 : all.length - 1;
        return {
          seqId: i + 1, tokens: Int32Array.from(all.slice(start)), startPos: start, blockTable: Int32Array.from([2 * i, 2 * i + 1]),
          kvTier: 'device', attention: 'gpu', sample: true, sampling: { ...c.sampling, seed: c.sampling.seed + i },
          ...(c.recent ? { recentTokens: Int32Array.from(all.slice(-16)) } : {}),
        };
      });
      const r = await m.step({ strategy: 'gpu-only', copies: [], sequences });
      drawn.push(r.sequences.map((s) => s.token));
      r.sequences.forEach((s, i) => tokens[i]!.push(s.token));
    }
    return drawn;
  };
  for (const c of configs) {
    const got = await draw(best, c);
    t.same(got, await draw(whole, c), `${c.name}: the same tokens (${got.flat().slice(0, 6).join(' ')} ...)`);
  }
});

t.test('decode bursts on the emulated GPU draw what single steps draw, under every strategy and with expert offload', { skip }, async (t) => {
  const dense = modelPath('stories260K.gguf');
  const moe = path.join(tmpdir(), 'tandem-test-models', 'emulated-executor-v1-qwen2moe.gguf');
  mkdirSync(path.dirname(moe), { recursive: true });
  if (!existsSync(moe)) await makeModel({ preset: 'tiny', architecture: 'qwen2moe', type: 'q8_0', nExpert: 8, nExpertUsed: 2, seed: 41 }, moe);
  const offload: Partial<NativeModelConfig> = { deviceWeightBytes: 3 << 20, experts: { policy: 'dynamic', maxSlots: 4, nStar: 2 } };
  const shapes: [string, string, Partial<NativeModelConfig>, Shape][] = [
    ['gpu-only', dense, {}, { strategy: 'gpu-only', tier: () => 'device' }],
    ['overlap, host-tier attention on the CPU', dense, {}, { strategy: 'overlap', tier: odd }],
    ['pipeline', dense, {}, { strategy: 'pipeline', tier: odd }],
    ['MoE, dynamic experts, overlap', moe, offload, { strategy: 'overlap', tier: odd }],
    ['gpu-only, host-tier KV streamed to the device', dense, {}, { strategy: 'gpu-only', tier: odd, hostAttention: () => 'gpu' }],
  ];
  const BURST = 4;
  for (const [name, file, config, shape] of shapes) {
    const m = await load(file, { device: 'gpu', ...config });
    let routed = 0;
    const ids = PROMPTS.map((_, i) => i + 1);
    const seq = (id: number, tokens: number[], startPos: number, decodeSteps?: number): SequencePlan => ({
      seqId: id, tokens: Int32Array.from(tokens), startPos, blockTable: Int32Array.from([2 * (id - 1), 2 * (id - 1) + 1]), kvTier: shape.tier(id),
      attention: shape.tier(id) === 'device' ? 'gpu' : (shape.hostAttention?.(id) ?? 'cpu'), sample: true, ...(decodeSteps ? { decodeSteps } : {}),
    });
    const prefill = async () => (await m.step({ strategy: shape.strategy, copies: [], sequences: ids.map((id) => seq(id, PROMPTS[id - 1]!, 0)) })).sequences.map((s) => s.token);
    // Single steps.
    const first = await prefill();
    const single = ids.map(() => [] as number[]);
    let last = first;
    for (let k = 0; k < BURST; k++) {
      const r = await m.step({ strategy: shape.strategy, copies: [], sequences: ids.map((id, i) => seq(id, [last[i]!], PROMPTS[i]!.length + k)) });
      routed += r.experts ? r.experts.hits + r.experts.misses : 0;
      last = r.sequences.map((s) => s.token);
      last.forEach((tok, i) => single[i]!.push(tok));
    }
    // The same from a fresh prefill, as one burst.
    t.same(await prefill(), first);
    const r = await m.step({ strategy: shape.strategy, copies: [], sequences: ids.map((id, i) => seq(id, [first[i]!], PROMPTS[i]!.length, BURST)) });
    m.dispose();
    t.same(r.sequences.map((s) => Array.from(s.tokens ?? [])), single, `${name}: ${BURST} draws each, as ${BURST} steps drew them`);
    if (r.experts) {
      t.equal(r.experts.hits + r.experts.misses, routed, `${name}: the burst's expert counters sum its rounds (${routed} active experts)`);
      t.ok(r.experts.cpuExperts > 0 && r.cpuExpertCalls!.length > 0, `${name}: experts ran on the CPU in the burst`);
    }
  }
});
