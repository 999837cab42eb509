// The device check's MoE expert offload, in its own process: one MoE file under one expert
// policy at a device weight budget, decode at batch 1 and 16 and prefill of 128-token prompts.
// The policies: dynamic (cache plus the per-expert choice by costs calibrated on the loaded
// model, with idle-link prefetch), the same with the prefetch ordered by the next layer's router
// (the pregate), the same without prefetch, dynamic by a fixed n* threshold,
// llama.cpp's static all-experts-on-CPU and first-N-layers-on-CPU, whole stacks placed like
// other weights, and every weight on the device as the ceiling. gpu-check runs one process per
// policy, so that a crash costs one policy's numbers. Writes its JSON runs after each batch and
// each stage to stderr (where a crash happened). Usage: node experts-child.js <moe.gguf>
// <out.json> <budget bytes> <n*> <policy> [--device gpu|cpu-standin]
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { measureExpertOffload, type ExpertMeasureOptions, type ExpertMeasurement, type NativeExpertPolicy } from '../../src/sched/experts/native.js';

export type ExpertRunPolicy = NativeExpertPolicy | 'all on device' | 'dynamic n*' | 'dynamic, no refit' | 'dynamic, no prefetch' | 'dynamic, pregate' | 'dynamic, pregate, early' | 'dynamic, cudaHostAlloc';
// The baseline and tandem's policy first: a run short of device time still compares them.
export const EXPERT_RUN_POLICIES: ExpertRunPolicy[] = ['cpu-all', 'dynamic', 'dynamic, pregate, early', 'dynamic, pregate', 'dynamic, no refit', 'all on device', 'stacks', 'cpu-first-layers:8', 'dynamic n*', 'dynamic, no prefetch', 'dynamic, cudaHostAlloc'];

export interface ExpertRun {
  policy: ExpertRunPolicy | string;
  batch: number;
  /** Device weight budget in bytes, null for no budget. */
  budgetBytes: number | null;
  result?: ExpertMeasurement;
  error?: string;
}

function options(policy: ExpertRunPolicy | `cpu-first-layers:${number}`, budget: number, nStar: number): Partial<ExpertMeasureOptions> & Pick<ExpertMeasureOptions, 'policy'> {
  switch (policy) {
    case 'all on device': return { policy: 'stacks' };
    case 'dynamic':
    case 'dynamic, cudaHostAlloc': return { policy: 'dynamic', calibrate: true, prefetchWhenIdle: true, deviceWeightBytes: budget };
    case 'dynamic, no refit': return { policy: 'dynamic', calibrate: true, prefetchWhenIdle: true, refit: false, deviceWeightBytes: budget };
    case 'dynamic, no prefetch': return { policy: 'dynamic', calibrate: true, prefetchWhenIdle: false, deviceWeightBytes: budget };
    case 'dynamic, pregate': return { policy: 'dynamic', calibrate: true, prefetchWhenIdle: true, pregate: true, deviceWeightBytes: budget };
    case 'dynamic, pregate, early': return { policy: 'dynamic', calibrate: true, prefetchWhenIdle: true, pregate: true, prefetchEarly: true, deviceWeightBytes: budget };
    case 'dynamic n*': return { policy: 'dynamic', nStar, deviceWeightBytes: budget };
    default: return { policy, nStar, deviceWeightBytes: budget };
  }
}

async function main(): Promise<void> {
  const [file, out, budgetArg, nStarArg, policyArg] = process.argv.slice(2);
  const deviceArg = process.argv.indexOf('--device');
  const device = deviceArg > 0 && process.argv[deviceArg + 1] === 'cpu-standin' ? 'cpu-standin' : 'gpu';
  const budget = Number(budgetArg);
  const nStar = Number(nStarArg);
  const policy = policyArg as ExpertRunPolicy | `cpu-first-layers:${number}`;
  if (!EXPERT_RUN_POLICIES.includes(policy) && !/^cpu-first-layers:\d+$/.test(policy)) throw new Error(`unknown policy '${policyArg}' (${EXPERT_RUN_POLICIES.join(', ')})`);
  // Pinned slabs from the runtime's allocator instead of pages placed on the GPU's NUMA node.
  if (policy === 'dynamic, cudaHostAlloc') process.env.TANDEM_PIN_NUMA_NODE = 'off';
  const threads = os.availableParallelism();
  const runs: ExpertRun[] = [];
  for (const batch of [1, 16]) {
    const run: ExpertRun = { policy, batch, budgetBytes: policy === 'all on device' ? null : budget };
    try {
      run.result = await measureExpertOffload(file!, {
        device, threads, batch, promptTokens: 128, decodeSteps: 24, warmupSteps: 4, ...options(policy, budget, nStar),
        onStage: (s) => process.stderr.write(`${policy} batch ${batch}: ${s}\n`),
      });
    } catch (err) {
      run.error = (err as Error).message;
    }
    runs.push(run);
    writeFileSync(out!, JSON.stringify(runs));
  }
}

// gpu-check imports the policy list from here: run only as a process of its own.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`experts-child: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  });
}
