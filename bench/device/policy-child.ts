// The device check's serving comparison of tandem's policies, in its own process: for each policy
// (gpu-only, pipeline, overlap, auto) loads the model through the public API with the device's KV
// capped, submits the same batch of concurrent requests, and measures completion throughput,
// TPOT percentiles and which strategies the policy ran. Writes a JSON report.
// Usage: node policy-child.js <model.gguf> <out.json> <workload JSON> [--device gpu|cpu-standin]
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, type GenerationResult } from '../../src/api/index.js';

export interface PolicyWorkload {
  policies: ('gpu-only' | 'pipeline' | 'overlap' | 'auto')[];
  requests: number;
  promptTokens: number;
  maxTokens: number;
  /** Device-tier KV in bytes (the cap that makes memory pressure real). */
  kvDeviceBytes: number;
  /** Host-tier KV in bytes. */
  kvHostBytes: number;
}

export interface PolicyRun {
  policy: string;
  /** Completion tokens of all requests over the time from the first submission to the last result, tokens/s. */
  tokensPerS: number;
  makespanMs: number;
  tpotMsP50: number;
  tpotMsP90: number;
  ttftMsP50: number;
  steps: number;
  strategies: Record<string, number>;
  /** Sequence-steps with host KV streamed to the device for its attention. */
  streamed?: number;
  /** Mean |predicted - measured| / measured step time, where the policy predicted. */
  meanStepError?: number;
  moves: number;
  preemptions: number;
  kvBlocks: { device: number; host: number };
  kvBlockTokens: number;
  profileSource: string;
  /** The profile cache file the policy's tables came from (what gpu-check replays them from). */
  profileFile?: string;
  /** Forward passes: steps, with each decode burst counted by its rounds. */
  rounds: number;
  /** Mean time of a forward pass and its phases (µs per round, from onStep), so that host-side work (logits, sampling) shows beside the device's. */
  stepUsMean: number;
  phaseUsMean: Record<string, number>;
  /** Host time around the steps (planning, the native call's way in and out, token delivery) per round, µs: the device idles through it. */
  hostUsMean: number;
  /** Every step: [strategy, device-KV seqs, host-KV seqs, seqs with CPU attention, tokens, measured µs, predicted µs or -1, context tokens], to see where predictions miss and to compare policies' steps at equal batch and context. */
  stepTrace: [string, number, number, number, number, number, number, number][];
}

function percentile(xs: number[], p: number): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

async function runPolicy(file: string, device: 'gpu' | 'cpu-standin', policy: PolicyWorkload['policies'][number], w: PolicyWorkload, cacheDir: string): Promise<PolicyRun> {
  const model = await loadModel(file, {
    threads: os.availableParallelism(), device, policy, contextSize: w.promptTokens + w.maxTokens + 16,
    maxSequences: w.requests, kvDeviceBytes: w.kvDeviceBytes, kvHostBytes: w.kvHostBytes, profileCacheDir: cacheDir,
  });
  try {
    const nVocab = model.info.nVocab;
    // Per forward pass: a decode burst is one step of several rounds.
    let numRounds = 0, totalUs = 0;
    const phaseUs: Record<string, number> = {};
    const stepTrace: PolicyRun['stepTrace'] = [];
    const off = model.onStep((s) => {
      numRounds += s.rounds;
      stepTrace.push([s.strategy, s.sequences.device, s.sequences.host, s.cpuAttention, s.tokens, Math.round(s.totalUs), Math.round(s.predictedUs ?? -1), s.contextTokens]);
      totalUs += s.totalUs;
      for (const [k, v] of Object.entries(s.phaseUs)) phaseUs[k] = (phaseUs[k] ?? 0) + v;
    });
    const prompts = Array.from({ length: w.requests }, (_, r) => Array.from({ length: w.promptTokens }, (_, k) => 1 + ((r * 7919 + k * 104729) % (nVocab - 1))));
    const t0 = performance.now();
    const results: GenerationResult[] = await Promise.all(
      prompts.map((p) => model.generate(p, { maxTokens: w.maxTokens, temperature: 0, ignoreEos: true }).result),
    );
    const makespanMs = performance.now() - t0;
    off();
    const completion = results.reduce((a, r) => a + r.usage.completionTokens, 0);
    const stats = model.stats;
    return {
      policy,
      tokensPerS: (completion * 1000) / makespanMs,
      makespanMs,
      tpotMsP50: percentile(results.map((r) => r.metrics?.tpotMs ?? NaN), 0.5),
      tpotMsP90: percentile(results.map((r) => r.metrics?.tpotMs ?? NaN), 0.9),
      ttftMsP50: percentile(results.map((r) => r.metrics?.ttftMs ?? NaN), 0.5),
      steps: stats.policy?.steps ?? 0,
      strategies: { ...(stats.policy?.strategies ?? {}) },
      streamed: stats.policy?.streamed ?? 0,
      meanStepError: stats.policy?.meanStepError,
      moves: stats.numMoves,
      preemptions: stats.numPreemptions,
      kvBlocks: { ...model.info.kvBlocks },
      kvBlockTokens: model.info.kvBlockTokens,
      profileSource: model.info.profile?.source ?? 'none',
      ...(model.info.profile?.file ? { profileFile: model.info.profile.file } : {}),
      rounds: numRounds,
      stepUsMean: numRounds > 0 ? totalUs / numRounds : 0,
      hostUsMean: stats.numRounds > 0 ? stats.hostUs / stats.numRounds : 0,
      phaseUsMean: Object.fromEntries(Object.entries(phaseUs).map(([k, v]) => [k, numRounds > 0 ? v / numRounds : 0])),
      stepTrace,
    };
  } finally {
    await model.dispose();
  }
}

async function main(): Promise<void> {
  const [file, out, workloadJson] = process.argv.slice(2);
  const deviceArg = process.argv.indexOf('--device');
  const device = deviceArg > 0 && process.argv[deviceArg + 1] === 'cpu-standin' ? 'cpu-standin' : 'gpu';
  const w = JSON.parse(workloadJson!) as PolicyWorkload;
  const cacheDir = path.join(path.dirname(out!), 'profiles');
  const runs: (PolicyRun | { policy: string; error: string })[] = [];
  for (const policy of w.policies) {
    try {
      runs.push(await runPolicy(file!, device, policy, w, cacheDir));
    } catch (err) {
      runs.push({ policy, error: (err as Error).message });
    }
    writeFileSync(out!, JSON.stringify({ workload: w, runs }));
  }
}

main().catch((err) => {
  console.error(`policy-child: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
