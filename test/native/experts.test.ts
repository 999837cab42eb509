// MoE expert offload (issue 9) on the CPU stand-in: routed experts in host slabs, a device
// slot cache, and each active expert run resident, copied or on the CPU, give the logits of
// the all-on-one-device run, for a qwen2moe with a shared expert and a Mixtral-style llama
// MoE, under several cache sizes, copy thresholds, policies and a skewed router. With the
// scalar reference kernels the same code computes every expert row wherever it runs and the
// rows are combined in one order, so the tolerance is zero; with the fast kernels the CPU
// reference repacks its mapped weights while slabs and slots hold the stored layout
// (native/cpu/packed_weights.h), so a tolerance. A prefill on a router that never picks half
// the experts streams exactly the routed, missing ones through the double buffer.
import t, { type Test } from 'tap';
import { mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native, type NativeExpertConfig, type NativeModel, type NativeModelConfig } from '../../src/native/binding.js';
import type { ExpertStepStats, SequencePlan, StepPlan } from '../../src/native/step-plan.js';
import { makeModel } from '../../src/model/synthetic.js';
import type { ModelSpec } from '../../src/model/synthetic/spec.js';
import { maxAbsDiff, hparamsOf } from '../helpers.js';

const N_EXPERT = 8;
const N_LAYER = 2;
const DECODE_STEPS = 5;


/** A deterministic normal-ish stream (sum of uniforms) for router weights. */
function routerRows(seed: number, nExpert: number, nEmbd: number, boost: number[]): Float32Array {
  const out = new Float32Array(nExpert * nEmbd);
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  for (let e = 0; e < nExpert; e++) {
    const scale = 0.05 * (boost[e] ?? 1);
    for (let i = 0; i < nEmbd; i++) out[e * nEmbd + i] = (u() + u() + u() - 1.5) * scale;
  }
  return out;
}

async function modelFile(name: string, spec: ModelSpec): Promise<string> {
  const dir = path.join(tmpdir(), 'tandem-test-models');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `experts-v1-${name}.gguf`);
  if (!existsSync(file)) await makeModel(spec, file);
  return file;
}

const SHAPE = { preset: 'tiny', nLayer: N_LAYER, nExpert: N_EXPERT, nExpertUsed: 2, nFfExpert: 256 } as const;

const MODELS: { name: string; spec: () => ModelSpec }[] = [
  { name: 'qwen2moe (shared expert), q8_0', spec: () => ({ ...SHAPE, architecture: 'qwen2moe', type: 'q8_0', seed: 21 }) },
  { name: 'Mixtral-style llama MoE, q4_K_M (mixed slab sizes)', spec: () => ({ ...SHAPE, architecture: 'llama', type: 'q4_K_M', seed: 22 }) },
  {
    name: 'qwen2moe, skewed router (experts 0 and 1 boosted 6x)',
    spec: () => {
      const data: Record<string, Float32Array> = {};
      for (let l = 0; l < N_LAYER; l++) data[`blk.${l}.ffn_gate_inp.weight`] = routerRows(100 + l, N_EXPERT, 256, [6, 6]);
      return { ...SHAPE, architecture: 'qwen2moe', type: 'q8_0', seed: 23, tensorData: data };
    },
  },
  // Expert biases travel in the slabs; the clamped SwiGLU and softmax-of-chosen routing.
  { name: 'gpt-oss (expert biases), q8_0', spec: () => ({ ...SHAPE, architecture: 'gpt-oss', type: 'q8_0', seed: 25, slidingWindow: 4 }) },
];

const slugs = ['qwen2moe-q8_0', 'llama-moe-q4_K_M', 'qwen2moe-skewed', 'gpt-oss-q8_0'];

async function load(file: string, extra: Partial<NativeModelConfig> = {}): Promise<NativeModel> {
  return native().loadModel(file, { hparams: hparamsOf(file), threads: 1, kvBlockTokens: 16, kvBlocks: { device: 16, host: 16 }, ...extra });
}

const PROMPTS = [
  [1, 403, 407, 261, 378, 17, 99],
  [1, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 301, 290],
  [1, 300, 301],
];

interface Run {
  logits: Float32Array[][];
  tokens: number[][];
  stats: ExpertStepStats[];
  phases: Record<string, number>[];
}

/** Prefill of three sequences in one step, then teacher-forced decode steps (half the sequences attend on the CPU). */
async function run(m: NativeModel, forced: number[][], strategy: 'overlap' | 'pipeline' = 'overlap'): Promise<Run> {
  const ids = PROMPTS.map((_, i) => i + 1);
  const table = (id: number) => Int32Array.from([2 * (id - 1), 2 * (id - 1) + 1]);
  const seq = (id: number, tokens: number[], startPos: number): SequencePlan => {
    const tier = id % 2 === 1 ? 'device' : 'host';
    return { seqId: id, tokens: Int32Array.from(tokens), startPos, blockTable: table(id), kvTier: tier, attention: tier === 'device' ? 'gpu' : 'cpu', sample: true, returnLogits: true };
  };
  const out: Run = { logits: [], tokens: [], stats: [], phases: [] };
  const pos = PROMPTS.map((p) => p.length);
  let plan: StepPlan = { strategy, copies: [], sequences: ids.map((id) => seq(id, PROMPTS[id - 1]!, 0)) };
  for (let step = 0; step <= DECODE_STEPS; step++) {
    const r = await m.step(plan);
    out.logits.push(r.sequences.map((s) => s.logits!));
    out.tokens.push(r.sequences.map((s) => s.token));
    if (r.experts) out.stats.push(r.experts);
    out.phases.push(r.phaseUs);
    const next = forced[step] ?? out.tokens[step]!;
    plan = { strategy, copies: [], sequences: ids.map((id, i) => seq(id, [next[i]!], pos[i]!)) };
    for (let i = 0; i < pos.length; i++) pos[i]!++;
  }
  return out;
}

function sum(stats: ExpertStepStats[], key: keyof ExpertStepStats): number {
  return stats.reduce((a, s) => a + s[key], 0);
}

/** Expert configurations run against the reference, with what each must show in its counters. */
const CASES: { name: string; experts: NativeExpertConfig; deviceWeightBytes?: 'dense+3'; strategy?: 'pipeline'; hostSlabs?: 0; expect: (t: Test, s: ExpertStepStats[], slots: number) => void }[] = [
  {
    name: 'every expert fits: all resident',
    experts: {},
    expect: (t, s, slots) => {
      t.equal(slots, N_LAYER * N_EXPERT, 'one slot per expert');
      t.equal(sum(s, 'misses'), 0, 'no misses');
      t.equal(sum(s, 'cpuExperts'), 0, 'nothing on the CPU');
    },
  },
  {
    name: 'no slots, dynamic: every expert on the CPU',
    experts: { maxSlots: 0, nStar: 1 },
    expect: (t, s) => {
      t.equal(sum(s, 'deviceExperts'), 0, 'nothing on the device');
      t.ok(sum(s, 'activationBytes') > 0, 'activations moved');
    },
  },
  {
    name: '3 slots, never copy (n* = Infinity), no admissions',
    experts: { maxSlots: 3, nStar: Infinity, admitPerLayer: 0 },
    expect: (t, s) => {
      t.ok(sum(s, 'hits') > 0 && sum(s, 'cpuExperts') > 0, 'resident hits and CPU experts in one run');
      t.equal(sum(s, 'copies') + sum(s, 'admissions'), 0, 'no copies');
    },
  },
  {
    name: '3 slots, copy from 1 row (n* = 1)',
    experts: { maxSlots: 3, nStar: 1 },
    expect: (t, s) => {
      t.ok(sum(s, 'copies') > 0 && sum(s, 'evictions') > 0, 'misses copied, residents evicted');
      t.ok(sum(s, 'copyBytes') > 0, 'slab bytes counted');
    },
  },
  {
    name: '6 slots, never copy for compute, prefetch 2 per layer, no admissions',
    experts: { maxSlots: 6, nStar: Infinity, admitPerLayer: 0, prefetchPerLayer: 2, admitMargin: 1 },
    expect: (t, s) => {
      t.ok(sum(s, 'prefetches') > 0, `the next layer's experts were prefetched (${sum(s, 'prefetches')})`);
      t.equal(sum(s, 'copies') + sum(s, 'admissions'), 0, 'no other copies');
    },
  },
  {
    name: '6 slots, never copy for compute, prefetch 2 per layer picked by the pregate',
    experts: { maxSlots: 6, nStar: Infinity, admitPerLayer: 0, prefetchPerLayer: 2, pregate: true },
    expect: (t, s) => {
      t.ok(sum(s, 'prefetchHits') > 0, `prefetched experts were routed to (${sum(s, 'prefetchHits')} of ${sum(s, 'prefetches')})`);
      t.ok(sum(s, 'prefetchHits') <= sum(s, 'prefetches'), 'no more prefetch hits than prefetches');
      t.equal(sum(s, 'copies') + sum(s, 'admissions'), 0, 'no other copies');
    },
  },
  {
    // Several sequences a step stream their copies, so here the early prefetch runs in the layers
    // that copy nothing; one sequence beside copies: the 'early prefetch' test below.
    name: '6 slots, never copy for compute, early prefetch 2 per layer by the pregate',
    experts: { maxSlots: 6, nStar: Infinity, admitPerLayer: 0, prefetchPerLayer: 2, pregate: true, prefetchEarly: true },
    expect: (t, s) => {
      t.ok(sum(s, 'prefetchHits') > 0, `prefetched experts were routed to (${sum(s, 'prefetchHits')} of ${sum(s, 'prefetches')})`);
      t.equal(sum(s, 'copies') + sum(s, 'admissions'), 0, 'no other copies');
    },
  },
  {
    name: "3 slots, n* = 1, 'pipeline' (two sub-batches share the cache)",
    experts: { maxSlots: 3, nStar: 1 },
    strategy: 'pipeline',
    expect: (t, s) => t.ok(sum(s, 'copies') > 0 && sum(s, 'cpuExperts') > 0, 'copies and CPU experts in one run'),
  },
  {
    name: "3 slots, n* = 2, CPU experts read the slabs ('slabs') instead of the mapping",
    experts: { maxSlots: 3, nStar: 2, cpuWeights: 'slabs' },
    expect: (t, s) => t.ok(sum(s, 'copies') > 0 && sum(s, 'cpuExperts') > 0, 'copies and CPU experts in one run'),
  },
  {
    name: '5 slots, n* = 3 (prefill copies, decode on the CPU), frequency-LRU, admissions',
    experts: { maxSlots: 5, nStar: 3, scoring: 'frequency-lru', admitPerLayer: 1 },
    expect: (t, s) => {
      t.ok(s[0]!.copies > 0, 'the prefill step copies heavy experts');
      t.ok(sum(s.slice(1), 'cpuExperts') > 0, 'decode runs missing experts on the CPU');
    },
  },
  {
    name: 'budget for the dense weights and 3 slabs, makespan rule from calibrated costs',
    experts: { cost: { cpuFixedUs: 40, cpuUsPerToken: 20, gpuFixedUs: 5, gpuUsPerToken: 0.5, linkLatencyUs: 10, linkBytesPerUs: 20000 } },
    deviceWeightBytes: 'dense+3',
    // The token embeddings are placed after the cache, so the cache may take their share too.
    expect: (t, s, slots) => t.ok(slots >= 3 && slots < N_LAYER * N_EXPERT, `the budget holds ${slots} slots (at least 3, not all)`),
  },
  {
    name: "policy 'cpu-all' (llama.cpp --cpu-moe)",
    experts: { policy: 'cpu-all' },
    expect: (t, s, slots) => {
      t.equal(slots, 0, 'no slots');
      t.equal(sum(s, 'deviceExperts'), 0, 'every routed expert on the CPU');
    },
    hostSlabs: 0,
  },
  {
    name: "policy 'cpu-first-layers' 1 (llama.cpp --n-cpu-moe 1)",
    experts: { policy: 'cpu-first-layers', cpuLayers: 1, nStar: 1 },
    hostSlabs: 0,
    expect: (t, s, slots) => {
      t.equal(slots, (N_LAYER - 1) * N_EXPERT, "the other layers' experts resident");
      t.ok(sum(s, 'cpuExperts') > 0 && sum(s, 'deviceExperts') > 0, 'both sides run experts');
      t.equal(sum(s, 'copies') + sum(s, 'evictions'), 0, 'static: no copies');
    },
  },
];

async function agreement(t: Test, file: string, variant: string | undefined, tolerance: number) {
  const kernels = variant ? { cpuVariant: variant } : {};
  const ref = await load(file, kernels);
  const refRun = await run(ref, []);
  ref.dispose();
  const forced = refRun.tokens;
  const scale = Math.max(...refRun.logits.flat().map((l) => Math.max(...l.map(Math.abs))));
  // The all-on-one-device run of the stand-in with the per-expert path: every expert resident.
  const probe = await load(file, { device: 'cpu-standin', ...kernels, experts: { maxSlots: 0 } });
  const dense = probe.placement.deviceBytes;
  const slab = probe.placement.experts!.slotBytes;
  probe.dispose();
  for (const c of CASES) {
    const extra: Partial<NativeModelConfig> = c.deviceWeightBytes ? { deviceWeightBytes: dense + 3 * slab + Math.floor(slab / 2) } : {};
    const m = await load(file, { device: 'cpu-standin', ...kernels, ...extra, experts: c.experts });
    const got = await run(m, forced, c.strategy);
    const d = maxAbsDiff(got.logits, refRun.logits) / scale;
    if (tolerance === 0) t.equal(d, 0, `${c.name}: logits equal the CPU path's bit for bit`);
    else t.ok(d <= tolerance, `${c.name}: max |logit difference| ${d.toExponential(2)} of the largest logit (tolerance ${tolerance})`);
    t.equal(got.stats.length, DECODE_STEPS + 1, `${c.name}: every step reports expert counters`);
    for (const s of got.stats) {
      t.equal(s.hits + s.misses, s.deviceExperts + s.cpuExperts, `${c.name}: every active expert ran once`);
      t.equal(s.deviceExperts, s.hits + s.copies, `${c.name}: device experts are hits and copies`);
    }
    if (c.deviceWeightBytes) t.ok(m.placement.deviceBytes <= (extra.deviceWeightBytes ?? 0), `${c.name}: device bytes within the budget`);
    if (tolerance === 0) c.expect(t, got.stats, m.placement.experts!.slots);
    if (c.hostSlabs === 0) t.equal(m.placement.experts!.hostSlabBytes, 0, `${c.name}: a static policy reading the mapping keeps no slabs`);
    else t.ok(m.placement.experts!.hostSlabBytes > 0, `${c.name}: host slabs for copies`);
    m.dispose();
  }
}

/** Fast kernels: packed (mapped) against stored-layout (slab) weights; as strategies.test.ts's FAST_TOLERANCE. */
const FAST_TOLERANCE = 2e-2;

for (const [i, model] of MODELS.entries()) {
  t.test(`${model.name}: expert offload gives the CPU path's logits`, async (t) => {
    const file = await modelFile(slugs[i]!, model.spec());
    await t.test('reference kernels: bit for bit', (t) => agreement(t, file, 'ref', 0));
    if (i === 0) await t.test('fast kernels: within tolerance', (t) => agreement(t, file, undefined, FAST_TOLERANCE));
  });
}

/** Decode of one sequence for `steps` steps on the reference kernels; the summed counters of the decode steps. */
async function decodeStats(file: string, experts: NativeExpertConfig, steps: number): Promise<ExpertStepStats & { slotBytes: number; tokens: number[] }> {
  const m = await load(file, { device: 'cpu-standin', cpuVariant: 'ref', experts });
  const slotBytes = m.placement.experts!.slotBytes;
  const table = Int32Array.from({ length: 8 }, (_, i) => i);
  let tokens = [1, 300, 301, 302, 303, 304, 305, 306];
  let pos = 0;
  const sampled: number[] = [];
  const total: ExpertStepStats = { hits: 0, hitRows: 0, misses: 0, copies: 0, admissions: 0, prefetches: 0, prefetchHits: 0, evictions: 0, deviceExperts: 0, cpuExperts: 0, deviceRows: 0, cpuRows: 0, cpuCalls: 0, copyBytes: 0, activationBytes: 0, prefillCopies: 0, prefillCopyBytes: 0, overlappedCopies: 0 };
  for (let s = 0; s <= steps; s++) {
    const r = await m.step({ strategy: 'gpu-only', copies: [], sequences: [{ seqId: 1, tokens: Int32Array.from(tokens), startPos: pos, blockTable: table, kvTier: 'device', attention: 'gpu', sample: true }] });
    pos += tokens.length;
    tokens = [r.sequences[0]!.token];
    sampled.push(tokens[0]!);
    if (s === 0) continue;
    for (const k of Object.keys(total) as (keyof ExpertStepStats)[]) total[k] += r.experts![k];
  }
  m.dispose();
  return { ...total, slotBytes, tokens: sampled };
}

t.test('early prefetch: the link also prefetches in layers that copy for their own compute, and only as much as its window holds', async (t) => {
  const file = await modelFile(slugs[0]!, MODELS[0]!.spec());
  const rate = (s: ExpertStepStats) => s.hits / (s.hits + s.misses);
  const copying = { maxSlots: 6, nStar: 1, admitPerLayer: 0, prefetchPerLayer: 2, pregate: true };
  const late = await decodeStats(file, copying, 40);
  const early = await decodeStats(file, { ...copying, prefetchEarly: true }, 40);
  t.ok(early.prefetches > 2 * late.prefetches, `every miss copied: ${early.prefetches} prefetches early, ${late.prefetches} after the experts`);
  t.ok(rate(early) > rate(late), `hit rate ${rate(early).toFixed(2)} early, ${rate(late).toFixed(2)} after`);
  t.ok(early.copies < late.copies, `fewer copies for compute (${early.copies} < ${late.copies})`);
  // Reference kernels: the same logits wherever an expert runs, so the same greedy tokens.
  const cpuOnly = await decodeStats(file, { maxSlots: 0, nStar: Infinity }, 40);
  t.same(early.tokens, cpuOnly.tokens, 'the same tokens as with every expert on the CPU');
  t.same(late.tokens, cpuOnly.tokens, '...and as the prefetch after the experts');
  // With costs the window decides: a slab that takes longer than any step to copy is never prefetched.
  const cost = { cpuFixedUs: 40, cpuUsPerToken: 20, gpuFixedUs: 5, gpuUsPerToken: 0.5, cpuCallUs: 10, linkLatencyUs: 1 };
  const sized = { maxSlots: 6, admitPerLayer: 0, prefetchWhenIdle: true, pregate: true, prefetchEarly: true };
  const fast = await decodeStats(file, { ...sized, cost: { ...cost, linkBytesPerUs: 1e6 } }, 20);
  const slow = await decodeStats(file, { ...sized, cost: { ...cost, linkBytesPerUs: 1e-3 } }, 20);
  t.ok(fast.prefetches > 0, `fast link: ${fast.prefetches} prefetches`);
  t.equal(slow.prefetches, 0, 'a link too slow for the window: none');
});

t.test('cache behaviour: skewed routing hits more, admissions follow the routing, the margin damps churn', async (t) => {
  const uniform = await modelFile(slugs[0]!, MODELS[0]!.spec());
  const skewed = await modelFile(slugs[2]!, MODELS[2]!.spec());
  const rate = (s: ExpertStepStats) => s.hits / (s.hits + s.misses);
  const frozen = { maxSlots: 6, nStar: Infinity, admitPerLayer: 0 };
  const u0 = await decodeStats(uniform, frozen, 40);
  const s0 = await decodeStats(skewed, frozen, 40);
  t.ok(rate(s0) > rate(u0), `6 of 16 slots, no admissions: skewed hit rate ${rate(s0).toFixed(2)} > uniform ${rate(u0).toFixed(2)}`);
  t.equal(u0.copyBytes + s0.copyBytes, 0, 'a frozen cache moves no slabs');
  t.ok(s0.hitRows === s0.deviceRows && s0.hitRows >= s0.hits, `with no copies every device row is a hit's row (${s0.hitRows} rows of ${s0.hits} hits)`);
  const u1 = await decodeStats(uniform, { maxSlots: 6, nStar: Infinity, admitPerLayer: 1, admitMargin: 1 }, 40);
  t.ok(u1.admissions > 0 && rate(u1) > rate(u0), `uniform routing: admissions (${u1.admissions}) raise the hit rate to ${rate(u1).toFixed(2)}`);
  t.equal(u1.copyBytes, u1.admissions * u1.slotBytes, 'each admission moves one slab (one q8_0 layout: slab = slot)');
  const u2 = await decodeStats(uniform, { maxSlots: 6, nStar: Infinity, admitPerLayer: 1, admitMargin: 2 }, 40);
  t.ok(u2.admissions < u1.admissions, `margin 2 admits fewer (${u2.admissions} < ${u1.admissions})`);
  for (const s of [u0, s0, u1, u2]) t.equal(s.copies, 0, 'decode rows never reach n* = Infinity');
});

t.test("the pregate: the next layer's router on this hidden state picks the prefetch, and more of it is used", async (t) => {
  const rate = (s: ExpertStepStats) => s.hits / (s.hits + s.misses);
  for (const [name, i] of [['uniform', 0], ['skewed', 2]] as const) {
    const file = await modelFile(slugs[i]!, MODELS[i]!.spec());
    const prefetch = { maxSlots: 6, nStar: Infinity, admitPerLayer: 0, prefetchPerLayer: 2, admitMargin: 1 };
    const byScore = await decodeStats(file, prefetch, 40);
    const byRouter = await decodeStats(file, { ...prefetch, pregate: true }, 40);
    t.ok(rate(byRouter) > rate(byScore), `${name}: hit rate ${rate(byRouter).toFixed(2)} with the pregate, ${rate(byScore).toFixed(2)} by score`);
    const used = (s: ExpertStepStats) => (s.prefetches > 0 ? s.prefetchHits / s.prefetches : 0);
    t.ok(used(byRouter) > used(byScore), `${name}: ${byRouter.prefetchHits} of ${byRouter.prefetches} prefetches used with the pregate, ${byScore.prefetchHits} of ${byScore.prefetches} by score`);
  }
});

t.test('bad expert settings reject with TDM_BAD_ARGUMENT', async (t) => {
  const file = await modelFile(slugs[0]!, MODELS[0]!.spec());
  await t.rejects(load(file, { device: 'cpu-standin', experts: { decay: 0 } }), { code: 'TDM_BAD_ARGUMENT', message: /decay/ });
  await t.rejects(load(file, { device: 'cpu-standin', experts: { admitMargin: 0.5 } }), { code: 'TDM_BAD_ARGUMENT', message: /admitMargin/ });
  await t.rejects(load(file, { device: 'cpu-standin', experts: { initialScores: [1, 2] } }), { code: 'TDM_BAD_ARGUMENT', message: /initialScores/ });
  await t.rejects(load(file, { device: 'cpu-standin', experts: { policy: 'gpu-all' as 'cpu-all' } }), { code: 'TDM_BAD_ARGUMENT', message: /policy/ });
  await t.rejects(load(file, { device: 'cpu-standin', experts: { cost: { cpuFixedUs: 1, cpuUsPerToken: 1, gpuFixedUs: 1, gpuUsPerToken: 1, linkLatencyUs: 1, linkBytesPerUs: 0 } } }), { code: 'TDM_BAD_ARGUMENT', message: /linkBytesPerUs/ });
  const scored = Array.from({ length: N_LAYER * N_EXPERT }, (_, k) => (k === 5 || k === 12 ? 10 : 0));
  const m = await load(file, { device: 'cpu-standin', experts: { maxSlots: 2, initialScores: scored, admitPerLayer: 0, nStar: Infinity } });
  t.equal(m.placement.experts!.resident, 2, 'initial scores fill the two slots');
  m.dispose();
});

t.test('the makespan rule copies single-row experts over a fast link and keeps them on the CPU over a slow one', async (t) => {
  const file = await modelFile(slugs[0]!, MODELS[0]!.spec());
  const cpuSlow = { cpuFixedUs: 200, cpuUsPerToken: 20, gpuFixedUs: 5, gpuUsPerToken: 0.5, linkLatencyUs: 5 };
  const fast = await decodeStats(file, { maxSlots: 6, admitPerLayer: 0, cost: { ...cpuSlow, linkBytesPerUs: 50000 } }, 10);
  t.ok(fast.copies > 0 && fast.cpuExperts === 0, `fast link: every miss copied (${fast.copies} copies)`);
  const slow = await decodeStats(file, { maxSlots: 6, admitPerLayer: 0, cost: { ...cpuSlow, linkBytesPerUs: 10 } }, 10);
  t.ok(slow.copies === 0 && slow.cpuExperts > 0, `slow link: misses on the CPU (${slow.cpuExperts})`);
  const fixed = await decodeStats(file, { maxSlots: 6, admitPerLayer: 0, nStar: Infinity, cost: { ...cpuSlow, linkBytesPerUs: 50000 } }, 10);
  t.equal(fixed.copies, 0, 'an explicit n* overrides the makespan rule');
});

/**
 * A qwen2moe whose router can only choose experts 0 to 3: expert 1's router row is expert 0's
 * negated and expert 3's expert 2's, so each pair always has a positive logit, and experts 4 to 7
 * have zero rows (logit 0), so they never make a token's top two.
 */
function routedSubsetSpec(): ModelSpec {
  const data: Record<string, Float32Array> = {};
  for (let l = 0; l < N_LAYER; l++) {
    const rows = routerRows(300 + l, N_EXPERT, 256, []);
    const E = 256;
    for (const [neg, pos] of [[1, 0], [3, 2]] as const) for (let i = 0; i < E; i++) rows[neg * E + i] = -rows[pos * E + i]!;
    rows.fill(0, 4 * E);
    data[`blk.${l}.ffn_gate_inp.weight`] = rows;
  }
  return { ...SHAPE, architecture: 'qwen2moe', type: 'q8_0', seed: 24, tensorData: data };
}

/** One sequence: a prefill of `prompt` in one step, then `decode` teacher-forced decode steps; logits and counters of each step. */
async function prefillRun(m: NativeModel, prompt: number[], decode: number, forced: number[]): Promise<Run> {
  const table = Int32Array.from({ length: 8 }, (_, i) => i);
  const out: Run = { logits: [], tokens: [], stats: [], phases: [] };
  let tokens = prompt;
  let pos = 0;
  for (let s = 0; s <= decode; s++) {
    const r = await m.step({ strategy: 'gpu-only', copies: [], sequences: [{ seqId: 1, tokens: Int32Array.from(tokens), startPos: pos, blockTable: table, kvTier: 'device', attention: 'gpu', sample: true, returnLogits: true }] });
    out.logits.push([r.sequences[0]!.logits!]);
    out.tokens.push([r.sequences[0]!.token]);
    if (r.experts) out.stats.push(r.experts);
    out.phases.push(r.phaseUs);
    pos += tokens.length;
    tokens = [forced[s] ?? r.sequences[0]!.token];
  }
  return out;
}

t.test('prefill streams only the routed experts through the double buffer, bit for bit', async (t) => {
  const file = await modelFile('qwen2moe-routed-subset', routedSubsetSpec());
  const prompt = Array.from({ length: 48 }, (_, i) => 1 + ((i * 37 + 11) % 400));
  const ref = await load(file, { cpuVariant: 'ref' });
  const refRun = await prefillRun(ref, prompt, 2, []);
  ref.dispose();
  const forced = refRun.tokens.map((x) => x[0]!);
  const resident = await load(file, { device: 'cpu-standin', cpuVariant: 'ref', experts: {} });
  const residentRun = await prefillRun(resident, prompt, 2, forced);
  resident.dispose();
  t.equal(maxAbsDiff(residentRun.logits, refRun.logits), 0, 'every expert resident on the stand-in: the CPU-only logits');
  t.equal(residentRun.stats[0]!.prefillCopies, 0, 'nothing resident is copied');

  // Two slots, first filled with layer 1's never-routed experts 4 and 5; every miss copied (n* = 1), no admissions.
  const scores = Array.from({ length: N_LAYER * N_EXPERT }, (_, k) => (k === N_EXPERT + 4 || k === N_EXPERT + 5 ? 1 : 0));
  const m = await load(file, { device: 'cpu-standin', cpuVariant: 'ref', experts: { maxSlots: 2, nStar: 1, admitPerLayer: 0, initialScores: scores } });
  const slab = m.placement.experts!.slotBytes;
  const got = await prefillRun(m, prompt, 2, forced);
  m.dispose();
  t.equal(maxAbsDiff(got.logits, refRun.logits), 0, 'streamed prefill and decode: logits equal the CPU-only run bit for bit');
  const pre = got.stats[0]!;
  t.ok(pre.hits + pre.misses <= 4 * N_LAYER, `the router chose only experts 0-3 (${pre.hits + pre.misses} active pairs)`);
  t.equal(pre.hits, 0, "the slots held only experts no token routes to");
  t.equal(pre.cpuExperts, 0, 'every routed expert ran on the device');
  t.equal(pre.prefillCopies, pre.misses, 'each routed, missing expert copied once');
  t.ok(pre.prefillCopies > 2 * N_LAYER, `more copies (${pre.prefillCopies}) than two slots per layer: buffers refilled`);
  // An unrouted expert copied would add a slab to the bytes without a miss to match it.
  t.equal(pre.prefillCopyBytes, pre.misses * slab, 'bytes moved: one slab per routed, missing expert, no more');
  t.equal(pre.copyBytes, pre.prefillCopyBytes, 'no other copies in the prefill step');
  // With nothing resident a layer's first copy has no compute to hide behind; every later one has the expert before it.
  t.equal(pre.overlappedCopies, pre.prefillCopies - N_LAYER, `${pre.overlappedCopies} of ${pre.prefillCopies} copies queued ahead of compute`);
  for (const s of got.stats.slice(1)) t.equal(s.prefillCopies, 0, 'one-token decode steps copy in place, not streamed');
});
