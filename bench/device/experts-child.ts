// The device check's MoE expert offload, in its own process: one MoE file measured under each
// expert policy at the same device weight budget (dynamic cache with the per-expert choice and
// idle-link prefetch by costs calibrated on the loaded model, and by a fixed n* threshold; llama.cpp's static
// all-experts-on-CPU and first-N-layers-on-CPU; whole stacks placed like other weights), plus
// every weight on the device as the ceiling. Decode at batch 1 and 16, prefill of 128-token
// prompts. Writes a JSON report after every run. Usage: node experts-child.js <moe.gguf>
// <out.json> <budget bytes> <n*> [--device gpu|cpu-standin]
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { measureExpertOffload, type ExpertMeasurement, type NativeExpertPolicy } from '../../src/sched/experts/native.js';

export interface ExpertRun {
  policy: NativeExpertPolicy | 'all on device' | 'dynamic n*';
  batch: number;
  /** Device weight budget in bytes, null for no budget. */
  budgetBytes: number | null;
  result?: ExpertMeasurement;
  error?: string;
}

async function main(): Promise<void> {
  const [file, out, budgetArg, nStarArg] = process.argv.slice(2);
  const deviceArg = process.argv.indexOf('--device');
  const device = deviceArg > 0 && process.argv[deviceArg + 1] === 'cpu-standin' ? 'cpu-standin' : 'gpu';
  const budget = Number(budgetArg);
  const nStar = Number(nStarArg);
  const threads = os.availableParallelism();
  const runs: ExpertRun[] = [];
  const configs: [ExpertRun['policy'], number][] = [];
  for (const batch of [1, 16]) {
    for (const p of ['all on device', 'dynamic', 'cpu-all', 'cpu-first-layers:8', 'stacks'] as const) configs.push([p, batch]);
  }
  // The fixed threshold last: the comparison that may be cut if the run's time is short.
  for (const batch of [1, 16]) configs.push(['dynamic n*', batch]);
  for (const [policy, batch] of configs) {
    const run: ExpertRun = { policy, batch, budgetBytes: policy === 'all on device' ? null : budget };
    try {
      run.result = await measureExpertOffload(file!, {
        policy: policy === 'all on device' ? 'stacks' : policy === 'dynamic n*' ? 'dynamic' : policy, device, threads, batch, promptTokens: 128, decodeSteps: 24, warmupSteps: 4,
        ...(policy === 'dynamic' ? { calibrate: true, prefetchWhenIdle: true } : { nStar }),
        ...(policy === 'all on device' ? {} : { deviceWeightBytes: budget }),
      });
    } catch (err) {
      run.error = (err as Error).message;
    }
    runs.push(run);
    writeFileSync(out!, JSON.stringify({ budgetBytes: budget, nStar, runs }));
  }
}

main().catch((err) => {
  console.error(`experts-child: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
