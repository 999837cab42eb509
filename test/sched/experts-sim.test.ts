// The MoE offload simulator: same seed, same numbers; budgets kept; baselines behave as their
// llama.cpp namesakes; the report labels everything SIMULATED. Small shapes, few steps.
import t from 'tap';
import { HARDWARE } from '../../src/sched/hardware.js';
import { denseBytes, expertBytes, meanKvContext, rooflineExpertCost } from '../../src/sched/experts/cost.js';
import { ExpertPolicyName, EXPERT_POLICY_NAMES } from '../../src/sched/experts/policies.js';
import { formatExpertSuite, MOE_MODELS, reserveBytes, routingTrace, runExpertSuite, simulateExperts } from '../../src/sched/experts/sim.js';

const model = MOE_MODELS['moe-8x-top2']!;
const capped = (share: number, batch: number) => denseBytes(model) + reserveBytes(model, batch, 1024) + share * model.nLayer * model.nExpert * expertBytes(model);

t.test('a seed repeats exactly; another seed differs', async (t) => {
  const run = (seed: number) => simulateExperts({ hardware: HARDWARE.t4!, model, policy: ExpertPolicyName.DynamicDecay, routing: { kind: 'zipf', seed }, batch: 4, steps: 12, gpuBudgetBytes: capped(0.25, 4) });
  t.same(run(5), run(5));
  t.same(routingTrace(model, { kind: 'zipf', seed: 5 }, 3, 2), routingTrace(model, { kind: 'zipf', seed: 5 }, 3, 2));
  t.not(JSON.stringify(routingTrace(model, { kind: 'zipf', seed: 5 }, 3, 2)), JSON.stringify(routingTrace(model, { kind: 'zipf', seed: 6 }, 3, 2)));
  t.equal(run(5).simulated, true);
});

t.test('every policy keeps the budget and runs every expert somewhere', async (t) => {
  const batch = 8;
  const budget = capped(0.25, batch);
  const trace = routingTrace(model, { kind: 'zipf', seed: 2 }, 20, batch);
  const by = new Map(EXPERT_POLICY_NAMES.map((policy) => [policy, simulateExperts({ hardware: HARDWARE.a10!, model, policy, routing: { kind: 'zipf', seed: 2 }, batch, steps: 16, warmupSteps: 4, gpuBudgetBytes: budget, trace })]));
  for (const [policy, r] of by) {
    t.ok(r.placement.usedBytes <= budget, `${policy}: ${r.placement.usedBytes} <= ${budget}`);
    t.ok(r.decodeTokPerS > 0 && Number.isFinite(r.decodeTokPerS), `${policy}: ${r.decodeTokPerS.toFixed(1)} tok/s SIMULATED`);
  }
  t.equal(by.get(ExpertPolicyName.CpuMoe)!.hitRate, 0);
  t.equal(by.get(ExpertPolicyName.CpuMoe)!.cpuShare, 1);
  t.equal(by.get(ExpertPolicyName.Copy32)!.cpuShare, 1, 'batch 8 is under the 32-token rule');
  const n = by.get(ExpertPolicyName.NCpuMoe)!;
  const measured = trace.slice(4, 20).flatMap((step) => step.map((routed, layer) => ({ layer, active: routed.length })));
  const onGpu = measured.filter((x) => x.layer >= n.nCpuMoeLayers).reduce((a, x) => a + x.active, 0);
  t.ok(n.nCpuMoeLayers > 0 && n.nCpuMoeLayers < model.nLayer, `n-cpu-moe keeps ${n.nCpuMoeLayers} layers on the CPU`);
  t.equal(n.hitRate, onGpu / measured.reduce((a, x) => a + x.active, 0), 'n-cpu-moe hits exactly the experts of its GPU layers');
  for (const p of [ExpertPolicyName.DynamicDecay, ExpertPolicyName.DynamicLru]) {
    t.ok(by.get(p)!.decodeTokPerS >= by.get(ExpertPolicyName.CpuMoe)!.decodeTokPerS, `${p} is no slower than all experts on the CPU`);
  }
});

t.test('the suite covers policies per setting and labels its numbers', async (t) => {
  const s = runExpertSuite({ hardware: ['t4'], models: ['moe-8x-top2'], routings: ['uniform'], batches: [2], steps: 4 });
  t.same(s.map((x) => x.budget), ['device', 'capped'], 'a model that fits is also run with a capped budget');
  for (const x of s) t.same(x.results.map((r) => r.policy), EXPERT_POLICY_NAMES);
  const text = formatExpertSuite(s);
  t.match(text, /SIMULATED/);
  t.equal(text.split('\n').filter((l) => l.startsWith('| t4 |')).length, 2 * EXPERT_POLICY_NAMES.length);
  t.throws(() => runExpertSuite({ hardware: ['h100'] }), { code: 'TDM_BAD_ARGUMENT' });
  const given = runExpertSuite({ hardware: ['t4'], models: ['moe-8x-top2'], routings: ['uniform'], batches: [2], steps: 4, budgetBytes: [1.5e9] });
  t.same(given.map((x) => [x.budget, x.gpuBudgetBytes]), [['device', 0.9 * HARDWARE.t4!.gpu.memoryBytes], ['capped', s[1]!.gpuBudgetBytes], ['given', 1.5e9]], 'a given budget runs besides them');
  t.match(formatExpertSuite(given), /\| 1\.5 \(given\) \|/);
  t.throws(() => runExpertSuite({ hardware: ['t4'], models: ['moe-8x-top2'], budgetBytes: [40e9] }), { code: 'TDM_BAD_ARGUMENT', message: /does not fit the t4 profile/ });
  t.throws(() => simulateExperts({ hardware: HARDWARE.t4!, model, policy: ExpertPolicyName.CpuMoe, routing: { kind: 'zipf', seed: 1 }, batch: 0, steps: 1 }), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('tandem simulate --moe runs the suite and checks its flags', async (t) => {
  const { command } = await import('../../src/sched/sim/command.js');
  const out: string[] = [];
  const log = console.log;
  console.log = (s: string) => out.push(s);
  let code: number;
  try {
    code = await command.run(['--moe', 't4', '--moe-model', 'moe-8x-top2', '--routing', 'uniform', '--batch', '2', '--steps', '2']);
  } finally {
    console.log = log;
  }
  t.equal(code, 0);
  t.match(out.join('\n'), /MoE expert offload \[SIMULATED\]/);
  t.equal(out.join('\n').split('\n').filter((l) => l.startsWith('| t4 | moe-8x-top2 |')).length, 2 * EXPERT_POLICY_NAMES.length, 'device and capped budgets, every policy');
  await t.rejects(command.run(['--moe', 't4', '--moe-model', 'gpt-5']), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(command.run(['--moe', 't4', '--routing', 'zipf,skewed']), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(command.run(['--moe', 't4', '--batch', '1.5']), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(command.run(['--moe', 't4', '--policies', 'auto']), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(command.run(['t4', '--batch', '4']), { code: 'TDM_BAD_ARGUMENT' }, '--batch is for --moe');
  await t.rejects(command.run(['t4', '--gpu-gb', '8']), { code: 'TDM_BAD_ARGUMENT' }, '--gpu-gb is for --moe');
  await t.rejects(command.run(['--moe', 't4', '--gpu-gb', '0']), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('gpt-oss-20b\'s sliding layers hold only their window: its KV reserve and attention time', async (t) => {
  const oss = MOE_MODELS['gpt-oss-20b']!;
  const full = { ...oss, slidingLayers: 0 };
  t.equal(meanKvContext(oss, 1024), (12 * 1024 + 12 * 128) / 24, 'half the layers at 1024 positions, half at 128');
  t.equal(meanKvContext(oss, 100), 100, 'inside the window every layer holds the whole context');
  const kv = (m: typeof oss) => reserveBytes(m, 16, 1024) - 0.5e9;
  t.equal(kv(oss) / kv(full), 1152 / 2048, 'the KV reserve shrinks by the sliding layers\' share beyond the window');
  const cost = (m: typeof oss) => rooflineExpertCost(HARDWARE.t4!, m).denseLayerUs(16, 8192);
  t.ok(cost(oss) < cost(full), 'a long context\'s attention costs less with the window');
  t.equal(rooflineExpertCost(HARDWARE.t4!, oss).denseLayerUs(16, 64), rooflineExpertCost(HARDWARE.t4!, full).denseLayerUs(16, 64), 'and the same inside it');
});

t.test('the simulated pregate: dynamic-pregate hits at least as often as dynamic-decay on the same trace', async (t) => {
  const model = MOE_MODELS['gpt-oss-20b']!;
  const trace = routingTrace(model, { kind: 'uniform', seed: 3 }, 24, 1);
  const run = (policy: ExpertPolicyName, prefetchMargin?: number) => simulateExperts({ hardware: HARDWARE.a10!, model, policy, routing: { kind: 'uniform', seed: 3 }, batch: 1, steps: 16, warmupSteps: 8,
    gpuBudgetBytes: 8e9, trace, ...(prefetchMargin === undefined ? {} : { prefetchMargin }) });
  for (const margin of [1, 2]) {
    const plain = run(ExpertPolicyName.DynamicDecay, margin);
    const pregate = run(ExpertPolicyName.DynamicPregate, margin);
    t.ok(pregate.hitRate >= plain.hitRate, `margin ${margin}: hit rate ${pregate.hitRate.toFixed(3)} with the pregate, ${plain.hitRate.toFixed(3)} without`);
    t.equal(pregate.simulated, true);
  }
});
