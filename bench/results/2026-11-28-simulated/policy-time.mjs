// Host time of each policy's decision per step, in the simulator's runs of
// kv-stream-staging.json: every decision a run made is recorded, then replayed 7 times (JIT
// warm, as in a long-running server); the median pass's mean, in wall µs on the machine
// running this, against the run's mean simulated step. The virtual clock leaves this time out;
// the engine pays it between every two steps.
// Usage (from the repository root, after npm run build):
//   node bench/results/2026-11-28-simulated/policy-time.mjs a10 llama3.1-8b 12.6 [dist]
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [hwName, modelName, rate, distArg] = process.argv.slice(2);
const dist = path.resolve(distArg ?? 'dist');
const { HARDWARE, SIM_MODELS, rooflineCostModel } = await import(`${dist}/sched/hardware.js`);
const { simulateRun } = await import(`${dist}/sched/sim/simulator.js`);
const { POLICIES } = await import(`${dist}/sched/policies/index.js`);
const hw = HARDWARE[hwName], model = SIM_MODELS[modelName];
// The scenario's workload lengths and TPOT target, as the recorded run had them.
const s = JSON.parse(readFileSync(new URL('kv-stream-staging.json', import.meta.url))).scenarios.find((x) => x.hardware.id === hwName && x.model.id === modelName);
const truth = rooflineCostModel(hw, model, s.cpuAttentionEfficiency, s.blockTokens);
for (const policy of ['gpu-only', 'overlap', 'auto']) {
  const decide = POLICIES[policy];
  const inputs = [];
  POLICIES[policy] = (input) => {
    inputs.push({ ...input, running: [...input.running], waiting: [...input.waiting], kv: { ...input.kv } });
    return decide(input);
  };
  let busyUs = 0;
  let steps = 0;
  simulateRun({ hardware: hw, model, policy, truth, tpotSloUs: s.tpotSloUs, blockTokens: s.blockTokens, onStep: (_now, _plan, r) => { busyUs += r.totalUs; steps++; },
    workload: { requests: s.workload.requests, ratePerSecond: Number(rate), seed: s.workload.seed, promptTokens: s.workload.promptTokens, outputTokens: s.workload.outputTokens } });
  POLICIES[policy] = decide;
  const passes = [];
  for (let p = 0; p < 7; p++) {
    const t0 = process.hrtime.bigint();
    for (const i of inputs) decide(i);
    passes.push(Number(process.hrtime.bigint() - t0) / 1000 / inputs.length);
  }
  passes.sort((a, b) => a - b);
  const stepUs = busyUs / steps;
  console.log(`${policy}: ${inputs.length} decisions in ${steps} steps, mean simulated step ${(stepUs / 1000).toFixed(1)} ms; decision µs ${passes[3].toFixed(0)} (${((100 * passes[3]) / stepUs).toFixed(2)}% of a step; passes ${passes[0].toFixed(0)}-${passes[6].toFixed(0)})`);
}
