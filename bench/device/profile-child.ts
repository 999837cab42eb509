// One model's decode steps with every weight on the device, for a kernel profiler (bench/device/
// profile.sh runs it under ncu): a short prefill, then decode steps at one batch size. Prints the
// measured step time, so that the kernels' summed durations can be set against it.
// Usage: node profile-child.js <model.gguf> <batch> <decode steps> [--device gpu|cpu-standin]
import os from 'node:os';
import { measureExpertOffload } from '../../src/sched/experts/native.js';

async function main(): Promise<void> {
  const [file, batchArg, stepsArg] = process.argv.slice(2);
  const device = process.argv.includes('cpu-standin') ? 'cpu-standin' : 'gpu';
  const batch = Number(batchArg);
  const decodeSteps = Number(stepsArg);
  const r = await measureExpertOffload(file!, {
    policy: 'stacks', device, threads: os.availableParallelism(), batch, promptTokens: 16, decodeSteps, warmupSteps: 2,
  });
  const stepUs = (1e6 * batch) / r.decodeTokensPerS;
  console.log(`profile-child: ${file} batch ${batch}: ${stepUs.toFixed(0)} µs a decode step (${decodeSteps} steps), phases ${JSON.stringify(r.decodePhaseUs)}`);
}

main().catch((err) => {
  console.error(`profile-child: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
