// SIMULATED: policies on a virtual clock whose profiled device tables are off by a factor (profileBias; the clock
// is unchanged) and refitted as on a GPU (whole steps only). 'noscales' resets the cost model's learned device
// scales after every step (reaching into its private field), which is the cost model before this change.
// usage: node bench/results/2026-11-26-simulated/misprofiled.mjs a10 llama3.1-8b 0.5 4.19 'gpu-only||;auto|noscales|{"deviceAttention":2};auto|scales|{"deviceAttention":2}'
import { HARDWARE, SIM_MODELS, rooflineCostModel } from '../../../dist/sched/hardware.js';
import { simulateRun } from '../../../dist/sched/sim/simulator.js';
import { TableCostModel } from '../../../dist/sched/cost-model.js';
const [h, m, eff, rate, runs] = process.argv.slice(2);
const hw = HARDWARE[h], model = SIM_MODELS[m];
const truth = rooflineCostModel(hw, model, Number(eff), 16);
const lengths = h === 't4' ? { promptTokens: [32, 256], outputTokens: [128, 512] } : { promptTokens: [64, 512], outputTokens: [256, 1024] };
const lone = truth.linearUs(1) + truth.deviceAttentionUs(1, (lengths.promptTokens[0]+lengths.promptTokens[1])/2 + (lengths.outputTokens[0]+lengths.outputTokens[1])/4);
const observe = TableCostModel.prototype.observeStep;
for (const spec of runs.split(';')) {
  const [policy, variant, biasJson] = spec.split('|');
  TableCostModel.prototype.observeStep = variant === 'noscales'
    ? function (p, r, o) { const x = observe.call(this, p, r, o); this.scales.theta = [1, 1]; return x; }
    : observe;
  const x = simulateRun({ hardware: hw, model, policy, truth, tpotSloUs: 3 * lone, blockTokens: 16, profileBias: JSON.parse(biasJson || '{}'), workload: { requests: 120, ratePerSecond: Number(rate), seed: 1, ...lengths } });
  console.log(`| ${h} ${m} | ${rate} | ${policy}${policy === 'auto' ? (variant === 'noscales' ? ' (no device scales)' : ' (device scales)') : ''} | ${biasJson || 'none'} | ${x.throughput.toFixed(1)} | ${(x.tpotUs.p90/1000).toFixed(1)} | ${(100*x.meanStepError).toFixed(1)}% | ${JSON.stringify(x.strategies).replace(/[{}"]/g, '')} |`);
}
