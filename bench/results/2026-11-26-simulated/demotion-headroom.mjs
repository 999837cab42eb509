// auto (or another policy) on A10 Llama-3.1-8B at the given rates and device headrooms, with the
// simulate command's workload and TPOT target (SIMULATED). usage: node demotion-headroom.mjs 6.29,12.6 0.02,0.06 [auto]
import { simulateRun } from '../../../dist/sched/sim/simulator.js';
import { HARDWARE, SIM_MODELS, rooflineCostModel } from '../../../dist/sched/hardware.js';
const [, , rates, heads, pols] = process.argv;
const truth = rooflineCostModel(HARDWARE.a10, SIM_MODELS['llama3.1-8b'], 0.5, 16);
for (const rate of rates.split(',').map(Number)) {
  for (const h of heads.split(',').map(Number)) {
    for (const policy of (pols ?? 'auto').split(',')) {
      const r = simulateRun({
        hardware: HARDWARE.a10, model: SIM_MODELS['llama3.1-8b'], policy, truth, tpotSloUs: 101.2e3, blockTokens: 16, deviceHeadroom: h,
        workload: { requests: 120, ratePerSecond: rate, seed: 1, promptTokens: [64, 512], outputTokens: [256, 1024] },
      });
      console.log(`rate ${rate} headroom ${h} ${policy}: ${r.throughput.toFixed(1)} tok/s SIMULATED, p90 TPOT ${(r.tpotUs.p90 / 1000).toFixed(1)} ms, p90 TTFT ${(r.ttftUs.p90 / 1000).toFixed(0)} ms, ${JSON.stringify(r.strategies)}, moves ${r.moves}, demotions ${r.demotions}, deferrals ${r.deferrals}`);
    }
  }
}
