// SIMULATED against MEASURED: the MoE expert simulator (src/sched/experts) on an H200 profile,
// in the setting of the device run bench/results/2026-11-26-h200/run1 (moe-8x-top2 q8_0, a
// 374 MiB weight budget, uniform routing, batch 1 and 16, 128-token context), beside what that
// run measured. The H200 profile is datasheet numbers plus two assumptions the run did not
// measure (host bandwidth of its 16 cores, PCIe 5.0 pinned bandwidth): see HOST_GBS, LINK_GBS.
// usage: node bench/results/2026-11-26-simulated/moe-h200-check.mjs [HOST_GBS] [LINK_GBS]
import { readFileSync } from 'node:fs';
import { simulateExperts, MOE_MODELS, routingTrace, reserveBytes } from '../../../dist/sched/experts/sim.js';
const GB = 1e9;
const HOST_GBS = Number(process.argv[2] ?? 60);
const LINK_GBS = Number(process.argv[3] ?? 50);
const h200 = {
  id: 'h200', label: 'NVIDIA H200 + 16 host cores (the lent machine)',
  gpu: { name: 'NVIDIA H200', memoryBytes: 141 * GB, bandwidth: 4800 * GB, fp16Flops: 989e12 },
  host: { name: '16 Xeon cores', cores: 16, bandwidth: HOST_GBS * GB, flops: 16 * 2.5e9 * 64, kvBytes: 64 * GB },
  link: { bandwidth: LINK_GBS * GB, latencyUs: 10 },
  note: `H200 datasheet (4.8 TB/s, 989 TFLOPS FP16 dense); host ${HOST_GBS} GB/s and PCIe ${LINK_GBS} GB/s assumed`,
};
const run = JSON.parse(readFileSync(new URL('../2026-11-26-h200/run1/results.json', import.meta.url), 'utf8')).experts;
const measured = (policy, batch) => run.runs.find((r) => r.policy === policy && r.batch === batch)?.result?.decodeTokensPerS;
const model = MOE_MODELS['moe-8x-top2'];
const pairs = [['cpu-moe', 'cpu-all'], ['n-cpu-moe', 'cpu-first-layers:8'], ['dynamic-decay', 'dynamic']];
console.log(`# ${h200.note}`);
console.log('| batch | simulator policy | engine policy (run1) | simulated tok/s | measured tok/s | simulated / measured | simulated hit rate | measured hit rate |');
console.log('|---|---|---|---|---|---|---|---|');
for (const batch of [1, 16]) {
  const trace = routingTrace(model, { kind: 'uniform', seed: 1 }, 40, batch);
  for (const [sim, eng] of pairs) {
    const r = simulateExperts({ hardware: h200, model, policy: sim, routing: { kind: 'uniform', seed: 1 }, batch, steps: 32, warmupSteps: 8, trace, context: 160, gpuBudgetBytes: run.budgetBytes + reserveBytes(model, batch, 160) });
    const m = measured(eng, batch);
    const mh = run.runs.find((x) => x.policy === eng && x.batch === batch)?.result?.hitRate;
    console.log(`| ${batch} | ${sim} | ${eng} | ${r.decodeTokPerS.toFixed(1)} | ${m?.toFixed(1) ?? '-'} | ${m ? (r.decodeTokPerS / m).toFixed(2) + 'x' : '-'} | ${(100 * r.hitRate).toFixed(0)}% | ${mh === undefined || mh === null ? '-' : (100 * mh).toFixed(0) + '%'} |`);
  }
}
