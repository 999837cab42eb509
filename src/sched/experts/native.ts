// The bridge from the expert policies to the native executor's expert offload (issue 9):
// the NativeExpertConfig a policy and a cost model give, and a measurement of decode and
// prefill with experts offloaded on a real engine (tokens/s, cache hit rate, bytes moved per
// token) under each policy at one device budget.
import { native, type NativeExpertConfig, type NativeModelConfig } from '../../native/binding.js';
import type { ExpertStepStats, SequencePlan, StepPlan } from '../../native/step-plan.js';
import { TandemError } from '../../native/errors.js';
import { GgufFile } from '../../model/gguf.js';
import { describeModel } from '../../model/describe.js';
import { crossoverTokens, type ExpertCostModel } from './cost.js';
import { ExpertScoring } from './cache.js';
import { calibrateExperts, type ExpertCalibration } from './calibrate.js';
import { ExpertCostRefit, refittingExecutor, type ExpertRefitState } from './refit.js';

/** A policy of the native engine: 'dynamic' (cache plus per-expert choice), llama.cpp's 'cpu-all' and 'cpu-first-layers:N', or 'stacks' (no offload: whole expert stacks placed like other weights). */
export type NativeExpertPolicy = 'dynamic' | 'cpu-all' | `cpu-first-layers:${number}` | 'stacks';

export interface NativeExpertOptions {
  policy: NativeExpertPolicy;
  /** Cost model whose crossover gives n* (the routed rows from which a missing expert is copied); ignored when nStar is given. */
  cost?: ExpertCostModel;
  /** Use the makespan rule natively with `cost` fitted to linear costs (nativeLinearCost) instead of its n* threshold. */
  makespan?: boolean;
  /** Linear costs for the makespan rule given directly (wins over `cost`). */
  linearCost?: NonNullable<NativeExpertConfig['cost']>;
  /** n* directly (Infinity: never copy). Default: from `cost`, else Infinity. */
  nStar?: number;
  scoring?: ExpertScoring;
  decay?: number;
  maxSlots?: number;
  admitPerLayer?: number;
  admitMargin?: number;
  prefetchPerLayer?: number;
  prefetchWhenIdle?: boolean;
  /** Order the prefetch by the next layer's router on this layer's hidden state (NativeExpertConfig.pregate). */
  pregate?: boolean;
  /** Prefetch as soon as the routing is known (NativeExpertConfig.prefetchEarly). */
  prefetchEarly?: boolean;
  /** Where CPU-run experts read weights (NativeExpertConfig.cpuWeights). */
  cpuWeights?: 'mapping' | 'slabs';
}

/** Linear fits of a cost model for the native makespan rule: each side through its 1-row and `rows`-row times, the link through two copy sizes. */
export function nativeLinearCost(cost: ExpertCostModel, rows = 64): NonNullable<NativeExpertConfig['cost']> {
  const slope = (f: (n: number) => number) => (f(rows) - f(1)) / (rows - 1);
  const cpu = slope((n) => cost.cpuExpertUs(n));
  const gpu = slope((n) => cost.gpuExpertUs(n));
  const b = Math.max(1, cost.expertBytes);
  const perByte = (cost.copyUs(2 * b) - cost.copyUs(b)) / b;
  return {
    cpuFixedUs: cost.cpuExpertUs(1) - cpu, cpuUsPerToken: cpu, cpuCallUs: cost.cpuCallUs ?? 0, gpuFixedUs: cost.gpuExpertUs(1) - gpu, gpuUsPerToken: gpu,
    linkLatencyUs: Math.max(0, cost.copyUs(b) - perByte * b), linkBytesPerUs: 1 / perByte,
  };
}

/** The native expert config for a policy; undefined for 'stacks'. Throws TDM_BAD_ARGUMENT for a bad policy. */
export function nativeExpertConfig(o: NativeExpertOptions): NativeExpertConfig | undefined {
  if (o.policy === 'stacks') return undefined;
  const out: NativeExpertConfig = {};
  if (o.policy === 'cpu-all') {
    out.policy = 'cpu-all';
  } else if (o.policy.startsWith('cpu-first-layers:')) {
    const n = Number(o.policy.slice('cpu-first-layers:'.length));
    if (!Number.isSafeInteger(n) || n < 0) throw new TandemError('TDM_BAD_ARGUMENT', `policy '${o.policy}': the layer count must be a non-negative integer`);
    out.policy = 'cpu-first-layers';
    out.cpuLayers = n;
  } else if (o.policy === 'dynamic') {
    out.policy = 'dynamic';
    const linear = o.linearCost ?? (o.makespan && o.cost ? nativeLinearCost(o.cost) : undefined);
    if (o.nStar === undefined && linear) out.cost = linear;
    else out.nStar = o.nStar ?? (o.cost ? crossoverTokens(o.cost) : Infinity);
    if (o.scoring !== undefined) out.scoring = o.scoring;
    if (o.decay !== undefined) out.decay = o.decay;
    if (o.admitPerLayer !== undefined) out.admitPerLayer = o.admitPerLayer;
    if (o.admitMargin !== undefined) out.admitMargin = o.admitMargin;
    if (o.prefetchPerLayer !== undefined) out.prefetchPerLayer = o.prefetchPerLayer;
    if (o.prefetchWhenIdle !== undefined) out.prefetchWhenIdle = o.prefetchWhenIdle;
    if (o.pregate !== undefined) out.pregate = o.pregate;
    if (o.prefetchEarly !== undefined) out.prefetchEarly = o.prefetchEarly;
  } else {
    throw new TandemError('TDM_BAD_ARGUMENT', `unknown expert policy '${String(o.policy)}' (dynamic, cpu-all, cpu-first-layers:N, stacks)`);
  }
  if (o.maxSlots !== undefined) out.maxSlots = o.maxSlots;
  if (o.cpuWeights !== undefined) out.cpuWeights = o.cpuWeights;
  return out;
}

export interface ExpertMeasureOptions extends NativeExpertOptions {
  /** 'gpu' for measurements; 'cpu-standin' runs the same code on the CPU (never GPU numbers). */
  device: 'gpu' | 'cpu-standin';
  /** Device memory for weights (bytes); undefined: all that fits. */
  deviceWeightBytes?: number;
  threads: number;
  /** Sequences decoded together. */
  batch: number;
  /** Prompt tokens per sequence (one prefill step for all). */
  promptTokens: number;
  /** Decode steps measured after `warmupSteps`. */
  decodeSteps: number;
  warmupSteps: number;
  cpuVariant?: string;
  /** 'dynamic' with neither nStar nor costs given: calibrate the expert costs on the loaded model first (calibrate.ts) and choose by the makespan rule. */
  calibrate?: boolean;
  /** Called as the measurement passes each stage (loaded, calibrated, prefill, decode step n): where a crash happened. */
  onStage?: (stage: string) => void;
  /** 'dynamic' choosing by the makespan rule: refit the CPU costs online from the steps' CPU calls (refit.ts). Default true. */
  refit?: boolean;
}

export interface ExpertMeasurement {
  policy: NativeExpertPolicy;
  device: string;
  deviceName: string;
  deviceBytes: number;
  hostBytes: number;
  slots: number;
  slotBytes: number;
  nStar: number | null;
  prefillTokensPerS: number;
  decodeTokensPerS: number;
  /** Over the measured decode steps: hits / (hits + misses) of active experts. */
  hitRate: number | null;
  /** Over the measured decode steps: the share of routed rows whose expert was resident. */
  rowHitRate: number | null;
  /** Over the measured decode steps, per generated token. */
  copyBytesPerToken: number;
  activationBytesPerToken: number;
  cpuExpertShare: number | null;
  prefill: ExpertStepStats | null;
  decode: ExpertStepStats | null;
  /** Mean µs per measured decode step, by phase. */
  decodePhaseUs: Record<string, number>;
  /** Over the measured decode steps: the CPU expert calls (one per layer with CPU experts), their mean measured time (µs), experts and rows; null without any. */
  decodeCpuCalls: { calls: number; meanUs: number; expertsPerCall: number; rowsPerCall: number } | null;
  /** With `calibrate`: the calibrated costs the choice started from. */
  calibration?: ExpertCalibration;
  /** With the online refit: where it ended (call cost, scale, calls seen, updates, the costs in force). */
  refit?: ExpertRefitState;
}

function addStats(a: ExpertStepStats | null, b: ExpertStepStats | undefined): ExpertStepStats | null {
  if (!b) return a;
  if (!a) return { ...b };
  for (const k of Object.keys(b) as (keyof ExpertStepStats)[]) a[k] += b[k];
  return a;
}

/** Loads `modelPath` under one policy, prefills `batch` prompts, decodes greedily and reports what expert offload did. */
export async function measureExpertOffload(modelPath: string, o: ExpertMeasureOptions): Promise<ExpertMeasurement> {
  const f = GgufFile.open(modelPath);
  let hparams;
  try {
    hparams = describeModel(f).hparams;
  } finally {
    f.close();
  }
  const blockTokens = 16;
  const perSeq = Math.ceil((o.promptTokens + o.warmupSteps + o.decodeSteps + 1) / blockTokens);
  // One more sequence warms up first: its prefill pays one-time costs (CPU weight repacking, device allocations).
  const cfg: NativeModelConfig = {
    hparams, threads: o.threads, kvBlockTokens: blockTokens, kvBlocks: { device: perSeq * (o.batch + 1), host: 1 }, device: o.device,
  };
  if (o.deviceWeightBytes !== undefined) cfg.deviceWeightBytes = o.deviceWeightBytes;
  if (o.cpuVariant !== undefined) cfg.cpuVariant = o.cpuVariant;
  const experts = nativeExpertConfig(o);
  if (experts) cfg.experts = experts;
  const stage = o.onStage ?? (() => {});
  const m = await native().loadModel(modelPath, cfg);
  stage('loaded');
  try {
    let calibration: ExpertCalibration | undefined;
    if (o.calibrate && o.policy === 'dynamic' && o.nStar === undefined && !o.linearCost && !o.cost) {
      calibration = await calibrateExperts(m, undefined, (f) => stage(`calibrating ${(100 * f).toFixed(0)}%`));
      m.setExpertCost(calibration.cost);
      stage('calibrated');
    }
    // The costs the makespan rule runs on, refitted from every step that follows (the warm-up's too).
    const inForce = calibration?.cost ?? (experts?.nStar === undefined ? experts?.cost : undefined);
    const refit = o.refit !== false && inForce ? new ExpertCostRefit(inForce) : undefined;
    const executor = refit ? refittingExecutor(m, refit) : m;
    const step = (p: StepPlan) => executor.step(p);
    const nVocab = m.info.nVocab;
    const pos: number[] = [];
    const seq = (i: number, tokens: number[]): SequencePlan => ({
      seqId: i, tokens: Int32Array.from(tokens), startPos: pos[i]!, kvTier: 'device', attention: 'gpu', sample: true,
      blockTable: Int32Array.from({ length: perSeq }, (_, b) => i * perSeq + b),
    });
    const prompts = Array.from({ length: o.batch }, (_, i) => Array.from({ length: o.promptTokens }, (_, t) => (1 + ((i * 7919 + t * 104729) % (nVocab - 1)))));
    for (let i = 0; i <= o.batch; i++) pos.push(0);
    const warm = Array.from({ length: o.promptTokens }, (_, t) => 1 + ((t * 7727) % (nVocab - 1)));
    await step({ strategy: 'gpu-only', copies: [], sequences: [seq(o.batch, warm)] });
    stage('warm-up prefill');
    let plan: StepPlan = { strategy: 'gpu-only', copies: [], sequences: prompts.map((p, i) => seq(i, p)) };
    const pre = await step(plan);
    stage('prefill');
    const prefillUs = pre.totalUs;
    let last = pre.sequences.map((s) => s.token);
    for (let i = 0; i < o.batch; i++) pos[i] = o.promptTokens;
    let decode: ExpertStepStats | null = null;
    let decodeUs = 0;
    const phases: Record<string, number> = {};
    const calls = { calls: 0, us: 0, experts: 0, rows: 0 };
    for (let i = 0; i < o.warmupSteps + o.decodeSteps; i++) {
      plan = { strategy: 'gpu-only', copies: [], sequences: last.map((tok, i) => seq(i, [tok])) };
      const r = await step(plan);
      stage(`decode step ${i}`);
      last = r.sequences.map((s) => s.token);
      for (let i = 0; i < o.batch; i++) pos[i]!++;
      if (i < o.warmupSteps) continue;
      decodeUs += r.totalUs;
      decode = addStats(decode, r.experts);
      const c = r.cpuExpertCalls ?? new Float64Array(0);
      for (let j = 0; j + 2 < c.length; j += 3) {
        calls.calls++;
        calls.experts += c[j]!;
        calls.rows += c[j + 1]!;
        calls.us += c[j + 2]!;
      }
      for (const [k, v] of Object.entries(r.phaseUs)) phases[k] = (phases[k] ?? 0) + v / o.decodeSteps;
    }
    const tokens = o.batch * o.decodeSteps;
    const ex = m.placement.experts;
    return {
      policy: o.policy,
      device: m.placement.device ?? 'none',
      deviceName: m.placement.deviceName,
      deviceBytes: m.placement.deviceBytes,
      hostBytes: m.placement.hostBytes,
      slots: ex?.slots ?? 0,
      slotBytes: ex?.slotBytes ?? 0,
      // A calibrated choice follows the makespan rule, not a threshold.
      nStar: ex && !calibration ? ex.nStar : null,
      prefillTokensPerS: (o.batch * o.promptTokens) / (prefillUs / 1e6),
      decodeTokensPerS: tokens / (decodeUs / 1e6),
      hitRate: decode && decode.hits + decode.misses > 0 ? decode.hits / (decode.hits + decode.misses) : null,
      rowHitRate: decode && decode.deviceRows + decode.cpuRows > 0 ? decode.hitRows / (decode.deviceRows + decode.cpuRows) : null,
      copyBytesPerToken: decode ? (decode.copyBytes) / tokens : 0,
      activationBytesPerToken: decode ? decode.activationBytes / tokens : 0,
      cpuExpertShare: decode && decode.cpuExperts + decode.deviceExperts > 0 ? decode.cpuExperts / (decode.cpuExperts + decode.deviceExperts) : null,
      prefill: pre.experts ?? null,
      decode,
      decodePhaseUs: phases,
      decodeCpuCalls: calls.calls > 0 ? { calls: calls.calls, meanUs: calls.us / calls.calls, expertsPerCall: calls.experts / calls.calls, rowsPerCall: calls.rows / calls.calls } : null,
      ...(calibration ? { calibration } : {}),
      ...(refit ? { refit: refit.state } : {}),
    };
  } finally {
    m.dispose();
  }
}
