// The bridge from expert policies to the native engine (src/sched/experts/native.ts): each
// policy's NativeExpertConfig, n* from a cost model, and a measurement on the CPU stand-in.
import t from 'tap';
import { mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { nativeExpertConfig, nativeLinearCost, measureExpertOffload } from '../../src/sched/experts/native.js';
import { crossoverTokens, rooflineExpertCost } from '../../src/sched/experts/cost.js';
import { ExpertScoring } from '../../src/sched/experts/cache.js';
import { HARDWARE } from '../../src/sched/hardware.js';
import { MOE_MODELS } from '../../src/sched/experts/sim.js';
import { makeModel } from '../../src/model/synthetic.js';

t.test('each policy maps to its native config', async (t) => {
  t.equal(nativeExpertConfig({ policy: 'stacks' }), undefined, "'stacks' runs without expert offload");
  t.same(nativeExpertConfig({ policy: 'cpu-all' }), { policy: 'cpu-all' });
  t.same(nativeExpertConfig({ policy: 'cpu-first-layers:3', maxSlots: 9 }), { policy: 'cpu-first-layers', cpuLayers: 3, maxSlots: 9 });
  t.same(nativeExpertConfig({ policy: 'dynamic' }), { policy: 'dynamic', nStar: Infinity }, 'no cost and no n*: never copy');
  t.same(nativeExpertConfig({ policy: 'dynamic', nStar: 4, scoring: ExpertScoring.FrequencyLru, decay: 0.8, admitPerLayer: 0, admitMargin: 3, cpuWeights: 'mapping' }),
    { policy: 'dynamic', nStar: 4, scoring: 'frequency-lru', decay: 0.8, admitPerLayer: 0, admitMargin: 3, cpuWeights: 'mapping' });
  const cost = rooflineExpertCost(HARDWARE.t4!, MOE_MODELS[Object.keys(MOE_MODELS)[0]!]!);
  t.equal(nativeExpertConfig({ policy: 'dynamic', cost })!.nStar, crossoverTokens(cost), "n* is the cost model's crossover");
  const lin = nativeLinearCost(cost);
  t.ok(Math.abs(lin.linkLatencyUs + cost.expertBytes / lin.linkBytesPerUs - cost.copyUs(cost.expertBytes)) < 1e-6 * cost.copyUs(cost.expertBytes), 'the link fit reproduces a slab copy');
  t.ok(Math.abs(lin.cpuFixedUs + lin.cpuUsPerToken - cost.cpuExpertUs(1)) < 1e-9 * cost.cpuExpertUs(1), 'the CPU fit passes through one row');
  t.same(nativeExpertConfig({ policy: 'dynamic', cost, makespan: true }), { policy: 'dynamic', cost: lin }, 'makespan passes the fitted costs, no n*');
  t.same(nativeExpertConfig({ policy: 'dynamic', cost, makespan: true, nStar: 3 }), { policy: 'dynamic', nStar: 3 }, 'an explicit n* wins');
  t.throws(() => nativeExpertConfig({ policy: 'cpu-first-layers:x' as 'cpu-all' }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => nativeExpertConfig({ policy: 'gpu' as 'cpu-all' }), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('a measurement on the stand-in reports rates, hit rate and bytes per token', async (t) => {
  const dir = path.join(tmpdir(), 'tandem-test-models');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'experts-native-v1-qwen2moe.gguf');
  if (!existsSync(file)) await makeModel({ preset: 'tiny', architecture: 'qwen2moe', type: 'q8_0', nExpert: 8, nExpertUsed: 2, seed: 31 }, file);
  const base = { device: 'cpu-standin' as const, threads: 1, batch: 2, promptTokens: 12, decodeSteps: 4, warmupSteps: 1, cpuVariant: 'ref' };
  const dyn = await measureExpertOffload(file, { ...base, policy: 'dynamic', maxSlots: 6, nStar: 2 });
  t.equal(dyn.slots, 6);
  t.ok(dyn.decodeTokensPerS > 0 && dyn.prefillTokensPerS > 0, 'positive rates');
  t.ok(dyn.hitRate !== null && dyn.hitRate > 0 && dyn.hitRate < 1, `a partial hit rate (${dyn.hitRate})`);
  t.ok(dyn.activationBytesPerToken > 0, 'CPU experts move activations');
  t.ok(dyn.prefill !== null && dyn.prefill.copies > 0, 'the prefill copies experts with at least n* rows');
  const cpu = await measureExpertOffload(file, { ...base, policy: 'cpu-all' });
  t.equal(cpu.slots, 0);
  t.equal(cpu.hitRate, 0, "'cpu-all' never hits");
  t.equal(cpu.cpuExpertShare, 1);
  const stacks = await measureExpertOffload(file, { ...base, policy: 'stacks' });
  t.equal(stacks.hitRate, null, "'stacks' has no expert counters");
});
