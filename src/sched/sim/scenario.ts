// One simulated setting (a hardware profile and a model shape, APEX's decode-heavy workload
// with Poisson arrivals): every policy at a sweep of arrival rates, and each policy's
// throughput at equal latency: at the highest arrival rate it serves with p90 TPOT and p90
// TTFT within the same targets (a queue that keeps growing shows in TTFT). Every number here
// is SIMULATED.
import type { CostModel } from '../cost-model.js';
import { deviceKvBlocks, kvBytesPerToken, rooflineCostModel, type HardwareProfile, type ModelShapeSpec } from '../hardware.js';
import { POLICY_NAMES, type PolicyName } from '../policy.js';
import { simulateRun, streamBlocksFor, type SimRunResult } from './simulator.js';
import { DECODE_HEAVY, type WorkloadSpec } from './workload.js';

/** The decode-heavy lengths for a device whose KV tier holds fewer than two full-length sequences (a T4 with a 7B model). */
export const DECODE_HEAVY_SHORT: Pick<WorkloadSpec, 'promptTokens' | 'outputTokens'> = { promptTokens: [32, 256], outputTokens: [128, 512] };

export interface ScenarioConfig {
  hardware: HardwareProfile;
  model: ModelShapeSpec;
  /** Fraction of host memory bandwidth CPU attention reaches (measured on this machine). */
  cpuAttentionEfficiency: number;
  /** Requests per run. */
  requests: number;
  seed: number;
  /** Arrival rates (requests/s); default: multiples of gpu-only's estimated capacity. */
  rates?: number[];
  policies?: readonly PolicyName[];
  /** Latency targets; default TPOT 3x a lone request's step, TTFT 10 s. */
  tpotSloUs?: number;
  ttftSloUs?: number;
  /** Host KV streamed to the device for its attention, where auto chooses it (SimRunConfig.streamHostKv). Default true. */
  streamHostKv?: boolean;
  /** Called after each run. */
  onRun?: (done: number, total: number) => void;
}

export interface EqualLatency {
  policy: PolicyName;
  /** The highest rate served within both targets; undefined when none was. */
  ratePerSecond: number | undefined;
  /** Generated tokens/s at that rate (0 when none qualified). */
  throughput: number;
  /** Throughput over gpu-only's (NaN when gpu-only met no target). */
  vsGpuOnly: number;
}

export interface ScenarioResult {
  simulated: true;
  hardware: HardwareProfile;
  model: ModelShapeSpec;
  /** Why the setting was not run (e.g. the weights do not fit the device). */
  skipped?: string;
  workload: Pick<WorkloadSpec, 'promptTokens' | 'outputTokens' | 'requests' | 'seed'>;
  kvBlocks: { device: number; host: number };
  blockTokens: number;
  cpuAttentionEfficiency: number;
  /** Whether auto could stream host KV to the device. */
  streamHostKv: boolean;
  /** Host KV blocks one step may stream (the executor's staging; 0 when not streaming). */
  streamBlocksMax: number;
  tpotSloUs: number;
  ttftSloUs: number;
  rates: number[];
  runs: SimRunResult[];
  equalLatency: EqualLatency[];
}

const BLOCK_TOKENS = 16;

function mean(r: [number, number]): number {
  return (r[0] + r[1]) / 2;
}

/** gpu-only's decode capacity (tokens/s) when its KV tier is full of average requests. */
function gpuOnlyCapacity(truth: CostModel, deviceTokens: number, lengths: Pick<WorkloadSpec, 'promptTokens' | 'outputTokens'>): number {
  const footprint = mean(lengths.promptTokens) + mean(lengths.outputTokens) / 2;
  const batch = Math.max(1, Math.min(256, Math.floor(deviceTokens / footprint)));
  const stepUs = truth.linearUs(batch) + (truth.headUs?.(batch) ?? 0) + truth.deviceAttentionUs(batch, footprint);
  return (batch * 1e6) / stepUs;
}

export function runScenario(cfg: ScenarioConfig): ScenarioResult {
  const truth = rooflineCostModel(cfg.hardware, cfg.model, cfg.cpuAttentionEfficiency, BLOCK_TOKENS);
  const device = deviceKvBlocks(cfg.hardware, cfg.model, BLOCK_TOKENS);
  const host = Math.floor(cfg.hardware.host.kvBytes / (kvBytesPerToken(cfg.model) * BLOCK_TOKENS));
  const deviceTokens = device * BLOCK_TOKENS;
  const lengths = deviceTokens >= 2 * (DECODE_HEAVY.promptTokens[1] + DECODE_HEAVY.outputTokens[1]) ? DECODE_HEAVY : DECODE_HEAVY_SHORT;
  const lone = truth.linearUs(1) + (truth.headUs?.(1) ?? 0) + truth.deviceAttentionUs(1, mean(lengths.promptTokens) + mean(lengths.outputTokens) / 2);
  const tpotSloUs = cfg.tpotSloUs ?? 3 * lone;
  const ttftSloUs = cfg.ttftSloUs ?? 10e6;
  const policies = cfg.policies ?? POLICY_NAMES;
  const base: ScenarioResult = {
    simulated: true,
    hardware: cfg.hardware,
    model: cfg.model,
    workload: { ...lengths, requests: cfg.requests, seed: cfg.seed },
    kvBlocks: { device, host },
    blockTokens: BLOCK_TOKENS,
    cpuAttentionEfficiency: cfg.cpuAttentionEfficiency,
    streamHostKv: cfg.streamHostKv !== false,
    streamBlocksMax: cfg.streamHostKv !== false ? streamBlocksFor(cfg.model, BLOCK_TOKENS, host) : 0,
    tpotSloUs,
    ttftSloUs,
    rates: [],
    runs: [],
    equalLatency: [],
  };
  if (deviceTokens < lengths.promptTokens[1] + lengths.outputTokens[1] + 1) {
    return { ...base, skipped: `the ${cfg.model.label} weights leave the ${cfg.hardware.gpu.name} room for ${deviceTokens} KV tokens, less than one request of ${lengths.promptTokens[1] + lengths.outputTokens[1] + 1}` };
  }
  const capRate = gpuOnlyCapacity(truth, deviceTokens, lengths) / mean(lengths.outputTokens);
  const rates = cfg.rates ?? [0.5, 0.75, 1, 1.5, 2, 3, 4, 6].map((k) => Number((k * capRate).toPrecision(3)));
  const runs: SimRunResult[] = [];
  const total = rates.length * policies.length;
  for (const policy of policies) {
    for (const rate of rates) {
      runs.push(
        simulateRun({
          hardware: cfg.hardware,
          model: cfg.model,
          policy,
          truth,
          tpotSloUs,
          streamHostKv: cfg.streamHostKv !== false,
          blockTokens: BLOCK_TOKENS,
          workload: { requests: cfg.requests, ratePerSecond: rate, seed: cfg.seed, ...lengths },
        }),
      );
      cfg.onRun?.(runs.length, total);
    }
  }
  return { ...base, rates, runs, equalLatency: equalLatency(runs, policies, tpotSloUs, ttftSloUs) };
}

/** Each policy's throughput at the highest rate whose p90 TPOT and p90 TTFT meet the targets. */
export function equalLatency(runs: readonly SimRunResult[], policies: readonly PolicyName[], tpotSloUs: number, ttftSloUs: number): EqualLatency[] {
  const best = policies.map((policy) => {
    const ok = runs.filter((r) => r.policy === policy && r.tpotUs.p90 <= tpotSloUs && r.ttftUs.p90 <= ttftSloUs);
    const top = ok.reduce<SimRunResult | undefined>((a, r) => (!a || r.ratePerSecond > a.ratePerSecond ? r : a), undefined);
    return { policy, ratePerSecond: top?.ratePerSecond, throughput: top?.throughput ?? 0 };
  });
  const gpu = best.find((b) => b.policy === 'gpu-only')?.throughput ?? 0;
  return best.map((b) => ({ ...b, vsGpuOnly: gpu > 0 ? b.throughput / gpu : NaN }));
}
