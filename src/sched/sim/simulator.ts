// The simulator: the real engine Scheduler and the real policies (through PolicyScheduler)
// serve a seeded Poisson workload on a virtual clock. Each step takes the time the hardware
// profile's cost model predicts for the plan actually chosen (with seeded noise); the policy
// itself sees only tables profiled from that model on a grid, refitted online from each
// step's phases as the engine refits them on a GPU (device phases are not wall times there:
// whole steps only). Every number it produces is SIMULATED.
import { Scheduler } from '../../engine/scheduler.js';
import { Sequence, type SequenceParams } from '../../engine/sequence.js';
import { TandemError } from '../../native/errors.js';
import type { SequenceResult, StepPlan, StepResult } from '../../native/step-plan.js';
import { planWork, type CostModel, type Measurement } from '../cost-model.js';
import type { HardwareProfile, ModelShapeSpec } from '../hardware.js';
import { deviceKvBlocks, kvBytesPerToken } from '../hardware.js';
import type { PolicyName } from '../policy.js';
import { PolicyScheduler, schedulerStrategyFor, type PolicySchedulerOptions } from '../policy-scheduler.js';
import { measureGrid, SIM_GRID } from '../profiler.js';
import { predictStep } from '../step-time.js';
import { makeWorkload, Rng, type WorkloadSpec } from './workload.js';

export interface SimRunConfig {
  /** The machine and model whose KV tiers the run gets; not needed with `kvBlocks`. */
  hardware?: HardwareProfile;
  model?: ModelShapeSpec;
  /** KV blocks of each tier, given directly (a replay of a measured run). */
  kvBlocks?: { device: number; host: number };
  policy: PolicyName;
  workload: WorkloadSpec;
  /** The machine's cost model: the virtual clock's ground truth. */
  truth: CostModel;
  /** The policy's cost model as given (a replay: the tables the measured run's policy had); default profiled from `truth` on the simulator's grid with noise. Refitted online, so give each run its own. */
  policyCost?: CostModel;
  /** Relative noise (standard deviation) on each step's time and each profiled point. Default 0.03. */
  noise?: number;
  /** TPOT target given to the policies (µs). */
  tpotSloUs?: number;
  /** The machine's executor streams host KV to the device for its attention (PolicyOptions.streamHostKv; auto uses it). Default true. */
  streamHostKv?: boolean;
  /** Host KV blocks one step may stream (PolicyOptions.streamBlocksMax). Default: what the executor's staging holds for `model` (STREAM_STAGING_BYTES), or no limit without a model. */
  streamBlocksMax?: number;
  /** Default 16. */
  blockTokens?: number;
  /** Sequences in a step at most. Default 256 (vLLM's max_num_seqs). */
  maxRunning?: number;
  /** Prompt tokens of one sequence per step (chunked prefill). Default 512. */
  maxChunkTokens?: number;
  /** Factor on the policy's profiled timings of each subtask kind (a mis-profiled table; the clock is unchanged). Default 1. */
  profileBias?: Partial<Record<Measurement['kind'], number>>;
  /** Fraction of device blocks the policy keeps free when admitting (see PolicyOptions.deviceHeadroom; it is also the room a staged prefill borrows). Default the policy's. */
  deviceHeadroom?: number;
  /** The policy's online refit (see PolicySchedulerOptions); default as the engine refits on a GPU: rate 0.1, the device's phases not taken as wall times (whole steps only). */
  refit?: PolicySchedulerOptions['refit'];
  /** Called after each step with the virtual time it ended at (µs), its plan and its result: a trace of where a policy spends its time. */
  onStep?: (nowUs: number, plan: StepPlan, result: StepResult) => void;
}

/** The executor's staging for streamed host KV (native/core/model.cpp, kStreamStagingBytes): two layers of the streamed blocks. */
export const STREAM_STAGING_BYTES = 128 * 2 ** 20;

/** Host KV blocks a step may stream on `model`, as the executor sizes its staging (clamped to the host tier, as it is). */
export function streamBlocksFor(model: ModelShapeSpec, blockTokens: number, hostBlocks: number): number {
  const twoLayers = (2 * kvBytesPerToken(model) * blockTokens) / model.nLayer;
  return Math.min(hostBlocks, Math.floor(STREAM_STAGING_BYTES / twoLayers));
}

/** Percentiles of a sample (µs). */
export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  mean: number;
}

export interface SimRunResult {
  policy: PolicyName;
  ratePerSecond: number;
  requests: number;
  /** Virtual time from the first arrival to the last completion (µs). */
  durationUs: number;
  generatedTokens: number;
  /** Generated tokens per second of virtual time, first arrival to last completion. */
  throughput: number;
  /** Generated tokens per second while requests were arriving (first to last arrival): the rate the system kept up with. */
  windowThroughput: number;
  /** Tokens per second the arrivals asked for (rate x mean output length). */
  offeredThroughput: number;
  ttftUs: Percentiles;
  /** Per request: (last token - first token) / (tokens - 1). */
  tpotUs: Percentiles;
  steps: number;
  strategies: Record<string, number>;
  deferrals: number;
  preemptions: number;
  moves: number;
  /** Of the moves, tables demoted to the host tier after a device prefill (the policy's staged admissions). */
  demotions: number;
  /** Sequence-steps with host KV streamed to the device for its attention. */
  streamed: number;
  /** Mean |predicted - simulated| / simulated step time of the policy's cost model. */
  meanStepError: number;
  kvBlocks: { device: number; host: number };
}

export function percentiles(xs: readonly number[]): Percentiles {
  if (xs.length === 0) return { p50: NaN, p90: NaN, p99: NaN, mean: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

const PARAMS = (maxTokens: number): SequenceParams => ({
  maxTokens,
  sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 },
  stopTokens: new Set(),
  penaltyWindow: 0,
  returnPromptLogits: false,
});

/** Runs one policy on one workload to completion on the virtual clock. */
export function simulateRun(cfg: SimRunConfig): SimRunResult {
  const bt = cfg.blockTokens ?? 16;
  const noise = cfg.noise ?? 0.03;
  const maxRunning = cfg.maxRunning ?? 256;
  const chunk = cfg.maxChunkTokens ?? 512;
  const reqs = makeWorkload(cfg.workload);
  const contextSize = cfg.workload.promptTokens[1] + cfg.workload.outputTokens[1] + 1;
  const numBlocks = cfg.kvBlocks ?? (cfg.hardware && cfg.model
    ? { device: deviceKvBlocks(cfg.hardware, cfg.model, bt), host: Math.floor(cfg.hardware.host.kvBytes / (kvBytesPerToken(cfg.model) * bt)) }
    : undefined);
  if (!numBlocks) throw new TandemError('TDM_BAD_ARGUMENT', 'a simulated run needs kvBlocks, or a hardware profile and a model to size them');
  const scheduler = new Scheduler({
    contextSize,
    blockTokens: bt,
    numBlocks,
    maxRunning,
    maxChunkTokens: chunk,
    maxStepTokens: chunk + maxRunning,
    strategy: schedulerStrategyFor(cfg.policy),
    prefixCaching: false,
  });
  const rng = new Rng(cfg.workload.seed ^ 0x5bd1e995);
  const policyCost = cfg.policyCost ?? measureGrid(SIM_GRID, (m) => m.us * (cfg.profileBias?.[m.kind] ?? 1) * (1 + noise * rng.normal()), cfg.truth).model;
  const options: PolicySchedulerOptions = { refit: cfg.refit ?? { deviceSynchronous: false } };
  if (cfg.tpotSloUs !== undefined) options.tpotSloUs = cfg.tpotSloUs;
  if (cfg.deviceHeadroom !== undefined) options.deviceHeadroom = cfg.deviceHeadroom;
  if (cfg.streamHostKv !== false) {
    options.streamHostKv = true;
    const cap = cfg.streamBlocksMax ?? (cfg.model ? streamBlocksFor(cfg.model, bt, numBlocks.host) : undefined);
    if (cap !== undefined) options.streamBlocksMax = cap;
  }
  const ps = new PolicyScheduler(scheduler, cfg.policy, policyCost, options);

  const arrival = new Map<number, number>();
  const first = new Map<number, number>();
  const last = new Map<number, number>();
  const count = new Map<number, number>();
  let now = 0;
  let next = 0;
  let done = 0;
  let generated = 0;
  let inWindow = 0;
  const lastArrival = reqs[reqs.length - 1]?.arrivalUs ?? 0;
  let steps = 0;
  while (done < reqs.length) {
    while (next < reqs.length && reqs[next]!.arrivalUs <= now) {
      const r = reqs[next]!;
      const seq = new Sequence(next + 1, r.prompt, PARAMS(r.maxTokens), r.arrivalUs);
      ps.add(seq);
      arrival.set(seq.id, r.arrivalUs);
      next++;
    }
    if (!scheduler.hasRunnableWork) {
      if (next >= reqs.length) throw new TandemError('TDM_INTERNAL', 'the simulation has unfinished requests but nothing to run');
      now = reqs[next]!.arrivalUs;
      continue;
    }
    const plan = ps.schedule();
    if (plan.sequences.length === 0 && plan.copies.length === 0) {
      if (next >= reqs.length) throw new TandemError('TDM_INTERNAL', `the ${cfg.policy} policy planned nothing for ${scheduler.numRunning} running and ${scheduler.numWaiting} waiting requests`);
      now = reqs[next]!.arrivalUs;
      continue;
    }
    const result = simulatedStep(plan, cfg.truth, Math.max(0.5, 1 + noise * rng.normal()), bt);
    now += result.totalUs;
    steps++;
    cfg.onStep?.(now, plan, result);
    for (const e of ps.update(plan, result)) {
      if (e.token !== undefined) {
        generated++;
        if (now <= lastArrival) inWindow++;
        if (!first.has(e.seqId)) first.set(e.seqId, now);
        last.set(e.seqId, now);
        count.set(e.seqId, (count.get(e.seqId) ?? 0) + 1);
      }
      if (e.finish || e.error) done++;
    }
  }
  const ttft: number[] = [];
  const tpot: number[] = [];
  for (const [id, t0] of arrival) {
    const f = first.get(id);
    if (f === undefined) continue;
    ttft.push(f - t0);
    const n = count.get(id)!;
    if (n > 1) tpot.push((last.get(id)! - f) / (n - 1));
  }
  const start = reqs[0]?.arrivalUs ?? 0;
  const durationUs = now - start;
  const meanOutput = reqs.reduce((n, r) => n + r.maxTokens, 0) / Math.max(1, reqs.length);
  return {
    policy: cfg.policy,
    ratePerSecond: cfg.workload.ratePerSecond,
    requests: reqs.length,
    durationUs,
    generatedTokens: generated,
    throughput: durationUs > 0 ? (generated * 1e6) / durationUs : 0,
    windowThroughput: lastArrival > start ? (inWindow * 1e6) / (lastArrival - start) : 0,
    offeredThroughput: cfg.workload.ratePerSecond * meanOutput,
    ttftUs: percentiles(ttft),
    tpotUs: percentiles(tpot),
    steps,
    strategies: Object.fromEntries(Object.entries(ps.stats.strategies).filter(([, n]) => n > 0)),
    deferrals: ps.stats.deferrals,
    preemptions: scheduler.counters.numPreemptions,
    moves: scheduler.counters.numMoves,
    demotions: ps.stats.demotions,
    streamed: ps.stats.streamed,
    meanStepError: ps.meanStepError,
    kvBlocks: numBlocks,
  };
}

/** A StepResult as the simulated machine would return it: a token for every sampled sequence, phases from the cost model. */
function simulatedStep(plan: StepPlan, truth: CostModel, factor: number, blockTokens: number): StepResult {
  const crossing = plan.copies.filter((c) => c.fromTier !== c.toTier).length;
  // Device attention over host KV: the blocks its positions cover cross the link.
  const work = planWork(plan, { ...truth.shape, kvBlockTokens: blockTokens });
  const t = predictStep(plan.strategy, work, truth, crossing);
  const sequences: SequenceResult[] = plan.sequences.map((s) => ({ seqId: s.seqId, token: s.sample ? 7 : -1 }));
  return {
    sequences,
    phaseUs: {
      copies: t.copiesUs * factor,
      linear: t.linearUs * factor,
      attention: t.deviceAttentionUs * factor,
      cpuAttention: t.cpuAttentionUs * factor,
      attentionTransfer: t.transferUs * factor,
      cpuWait: t.exposedCpuUs * factor,
      sampling: t.samplingUs * factor,
    },
    totalUs: t.stepUs * factor,
  };
}
