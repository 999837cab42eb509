// Decode of MoE models with experts offloaded, on a virtual clock: seeded routing traces (Zipf
// or uniform expert popularity), each expert policy planning every step, and the step taking
// the time the hardware profile's roofline predicts for that plan. Every number is SIMULATED.
import { TandemError } from '../../native/errors.js';
import { PRESETS } from '../../model/synthetic/spec.js';
import { HARDWARE, type HardwareProfile } from '../hardware.js';
import { Rng } from '../sim/workload.js';
import { EXPERT_ROOFLINE, denseBytes, expertBytes, meanKvContext, rooflineExpertCost, crossoverTokens, type MoeShape } from './cost.js';
import { placeExperts, type ExpertPlacement, type RoutedExpert } from './plan.js';
import { EXPERT_POLICY_NAMES, ExpertPolicyName, makeExpertPolicy, nCpuMoeLayers, type StepRouting } from './policies.js';

const moe8x = PRESETS['moe-8x-top2'].shape;

/** MoE shapes the simulator knows (public configs; Q4_K_M ≈ 4.5 bits, Q8_0 = 8.5 bits per weight). */
export const MOE_MODELS: Record<string, MoeShape> = {
  'mixtral-8x7b': { id: 'mixtral-8x7b', label: 'Mixtral-8x7B (Q4_K_M)', nLayer: 32, nEmbd: 4096, nHead: 32, nHeadKv: 8, headDim: 128, nExpert: 8, nExpertUsed: 2, nFfExpert: 14336, nFfShared: 0, nVocab: 32000, bitsPerWeight: 4.5 },
  'qwen3-30b-a3b': { id: 'qwen3-30b-a3b', label: 'Qwen3-30B-A3B (Q4_K_M)', nLayer: 48, nEmbd: 2048, nHead: 32, nHeadKv: 4, headDim: 128, nExpert: 128, nExpertUsed: 8, nFfExpert: 768, nFfShared: 0, nVocab: 151936, bitsPerWeight: 4.5 },
  // MXFP4 experts (17 bytes per 32 weights), the other tensors at Q8_0 as in ggml-org's gpt-oss GGUFs' attention.
  'gpt-oss-20b': { id: 'gpt-oss-20b', label: 'gpt-oss-20b (MXFP4 experts, Q8_0 rest)', nLayer: 24, nEmbd: 2880, nHead: 64, nHeadKv: 8, headDim: 64, nExpert: 32, nExpertUsed: 4, nFfExpert: 2880, nFfShared: 0, nVocab: 201088, bitsPerWeight: 4.25, denseBitsPerWeight: 8.5, slidingLayers: 12, slidingWindow: 128 },
  'olmoe-1b-7b': { id: 'olmoe-1b-7b', label: 'OLMoE-1B-7B (Q4_K_M)', nLayer: 16, nEmbd: 2048, nHead: 16, nHeadKv: 16, headDim: 128, nExpert: 64, nExpertUsed: 8, nFfExpert: 1024, nFfShared: 0, nVocab: 50304, bitsPerWeight: 4.5 },
  'moe-8x-top2': {
    id: 'moe-8x-top2', label: 'moe-8x-top2 synthetic preset (Q8_0)', nLayer: moe8x.nLayer!, nEmbd: moe8x.nEmbd!, nHead: moe8x.nHead!, nHeadKv: moe8x.nHeadKv!,
    headDim: moe8x.nEmbd! / moe8x.nHead!, nExpert: moe8x.nExpert!, nExpertUsed: moe8x.nExpertUsed!, nFfExpert: moe8x.nFfExpert!, nFfShared: 0, nVocab: moe8x.nVocab!, bitsPerWeight: 8.5,
  },
};

export type RoutingKind = 'zipf' | 'uniform' | 'zipf-drift';
export const ROUTING_KINDS: readonly RoutingKind[] = ['zipf', 'uniform', 'zipf-drift'];

export interface RoutingSpec {
  kind: RoutingKind;
  /** Zipf exponent of expert popularity (per layer, over a seeded permutation). Default 1.1. */
  zipfS?: number;
  /** zipf-drift: steps between reshuffles of each layer's popularity. Default 16. */
  driftSteps?: number;
  seed: number;
}

/**
 * A seeded routing trace: per step, per layer, the experts `tokens` rows are routed to (top-k
 * by Gumbel-perturbed log popularity, i.e. sampling without replacement by popularity) and
 * the router probabilities (a softmax over each row's chosen keys).
 */
export function routingTrace(model: MoeShape, spec: RoutingSpec, steps: number, tokens: number): StepRouting[] {
  const rng = new Rng(spec.seed);
  const s = spec.zipfS ?? 1.1;
  const drift = spec.driftSteps ?? 16;
  const E = model.nExpert;
  const k = model.nExpertUsed;
  const permute = () => {
    const p = Array.from({ length: E }, (_, i) => i);
    for (let i = E - 1; i > 0; i--) {
      const j = rng.int(0, i);
      [p[i], p[j]] = [p[j]!, p[i]!];
    }
    return p;
  };
  const logW = (perm: number[]) => {
    const w = new Float64Array(E);
    for (let r = 0; r < E; r++) w[perm[r]!] = spec.kind === 'uniform' ? 0 : -s * Math.log(r + 1);
    return w;
  };
  let weights = Array.from({ length: model.nLayer }, () => logW(permute()));
  const out: StepRouting[] = [];
  const keys = new Float64Array(E);
  for (let step = 0; step < steps; step++) {
    if (spec.kind === 'zipf-drift' && step > 0 && step % drift === 0) weights = weights.map(() => logW(permute()));
    const layers: RoutedExpert[][] = [];
    for (let l = 0; l < model.nLayer; l++) {
      const count = new Float64Array(E);
      const prob = new Float64Array(E);
      for (let t = 0; t < tokens; t++) {
        for (let e = 0; e < E; e++) keys[e] = weights[l]![e]! - Math.log(-Math.log(1 - rng.next() * (1 - 1e-12)));
        const top = Array.from({ length: E }, (_, i) => i).sort((a, b) => keys[b]! - keys[a]!).slice(0, k);
        const m = keys[top[0]!]!;
        const z = top.reduce((acc, e) => acc + Math.exp(keys[e]! - m), 0);
        for (const e of top) {
          count[e]! += 1;
          prob[e]! += Math.exp(keys[e]! - m) / z;
        }
      }
      const routed: RoutedExpert[] = [];
      for (let e = 0; e < E; e++) if (count[e]! > 0) routed.push({ expert: e, tokens: count[e]!, probability: prob[e]! });
      layers.push(routed);
    }
    out.push(layers);
  }
  return out;
}

export interface ExpertSimConfig {
  hardware: HardwareProfile;
  model: MoeShape;
  policy: ExpertPolicyName;
  routing: RoutingSpec;
  /** Sequences decoding together (rows per step). */
  batch: number;
  /** Measured steps. */
  steps: number;
  /** Steps run first and not counted (they warm the cache). Default steps / 4. */
  warmupSteps?: number;
  /** GPU bytes for weights, KV and activations; default 0.9 of device memory. */
  gpuBudgetBytes?: number;
  /** Cached tokens each sequence attends over (tokens). Default 1024. */
  context?: number;
  /** A trace to reuse (steps = warmup + measured), so that policies see the same routing. */
  trace?: StepRouting[];
  /** The dynamic policies' prefetch margin (ExpertPolicyContext.prefetchMargin). Default 1. */
  prefetchMargin?: number;
}

export interface ExpertSimResult {
  simulated: true;
  policy: ExpertPolicyName;
  hardware: string;
  model: string;
  routing: RoutingKind;
  batch: number;
  gpuBudgetBytes: number;
  placement: ExpertPlacement;
  /** Layers whose experts n-cpu-moe keeps on the CPU. */
  nCpuMoeLayers: number;
  /** Routed tokens per expert above which a copy beats the CPU on idle devices. */
  crossoverTokens: number;
  /** Generated tokens per second of virtual time (SIMULATED). */
  decodeTokPerS: number;
  /** Active expert instances found resident on the GPU (0..1). */
  hitRate: number;
  /** Bytes over the link per generated token: expert copies, prefetches, activations. */
  bytesPerToken: number;
  /** Share of active expert instances computed on the CPU (0..1). */
  cpuShare: number;
}

/** KV cache and activations kept beside the weights: f16 K and V for batch x context tokens (sliding layers: their window), and 0.5 GB. */
export function reserveBytes(model: MoeShape, batch: number, context: number): number {
  return 2 * model.nLayer * model.nHeadKv * model.headDim * 2 * batch * meanKvContext(model, context) + 0.5e9;
}

export function simulateExperts(cfg: ExpertSimConfig): ExpertSimResult {
  if (!(Number.isInteger(cfg.batch) && cfg.batch > 0 && Number.isInteger(cfg.steps) && cfg.steps > 0)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `batch and steps must be positive integers, got ${cfg.batch} and ${cfg.steps}`);
  }
  const context = cfg.context ?? EXPERT_ROOFLINE.defaultContext;
  const warm = cfg.warmupSteps ?? Math.floor(cfg.steps / 4);
  const budget = cfg.gpuBudgetBytes ?? 0.9 * cfg.hardware.gpu.memoryBytes;
  const placement = placeExperts(cfg.model, budget, reserveBytes(cfg.model, cfg.batch, context));
  const cost = rooflineExpertCost(cfg.hardware, cfg.model);
  const policy = makeExpertPolicy(cfg.policy, { model: cfg.model, placement, cost, context, seed: cfg.routing.seed, ...(cfg.prefetchMargin === undefined ? {} : { prefetchMargin: cfg.prefetchMargin }) });
  const trace = cfg.trace ?? routingTrace(cfg.model, cfg.routing, warm + cfg.steps, cfg.batch);
  if (trace.length < warm + cfg.steps) throw new TandemError('TDM_BAD_ARGUMENT', `the trace has ${trace.length} steps, fewer than ${warm + cfg.steps}`);
  let us = 0;
  let active = 0;
  let hits = 0;
  let cpu = 0;
  let bytes = 0;
  for (let s = 0; s < warm + cfg.steps; s++) {
    const plan = policy.planStep(trace[s]!, cfg.batch);
    if (s < warm) continue;
    us += plan.predictedUs;
    for (const l of plan.layers) {
      bytes += l.bytesMoved;
      for (const a of l.assignments) {
        active++;
        if (a.site === 'gpu-resident') hits++;
        else if (a.site === 'cpu') cpu++;
      }
    }
  }
  const tokens = cfg.steps * cfg.batch;
  return {
    simulated: true,
    policy: cfg.policy,
    hardware: cfg.hardware.id,
    model: cfg.model.id,
    routing: cfg.routing.kind,
    batch: cfg.batch,
    gpuBudgetBytes: budget,
    placement,
    nCpuMoeLayers: placement.allExpertsFit ? 0 : nCpuMoeLayers(cfg.model, placement),
    crossoverTokens: crossoverTokens(cost),
    decodeTokPerS: us > 0 ? (tokens * 1e6) / us : 0,
    hitRate: active > 0 ? hits / active : 0,
    bytesPerToken: bytes / tokens,
    cpuShare: active > 0 ? cpu / active : 0,
  };
}

export interface ExpertSuiteOptions {
  hardware?: readonly string[];
  models?: readonly string[];
  routings?: readonly RoutingKind[];
  policies?: readonly ExpertPolicyName[];
  batches?: readonly number[];
  steps?: number;
  seed?: number;
  /** When every expert fits the device, also run with the budget capped to the dense part, the reserve and this share of the experts. Default 0.25. */
  cappedExpertShare?: number;
  /** Device memory budgets (bytes) to run at besides those, e.g. an 8 GB card's; each must not exceed the device's. */
  budgetBytes?: readonly number[];
  /** The dynamic policies' prefetch margin. Default 1. */
  prefetchMargin?: number;
}

/** One (hardware, model, budget, routing, batch) setting with every policy on the same trace. */
export interface ExpertSetting {
  hardware: string;
  model: string;
  /** 'device': 90% of the device's memory; 'capped': a share of the experts (cappedExpertShare); 'given': one of budgetBytes. */
  budget: 'device' | 'capped' | 'given';
  gpuBudgetBytes: number;
  routing: RoutingKind;
  batch: number;
  results: ExpertSimResult[];
}

/** Every policy on every requested setting; what `tandem simulate --moe` prints. SIMULATED. */
export function runExpertSuite(opt: ExpertSuiteOptions = {}): ExpertSetting[] {
  const hws = opt.hardware ?? ['t4', 'a10'];
  const models = opt.models ?? Object.keys(MOE_MODELS);
  const routings = opt.routings ?? ROUTING_KINDS;
  const policies = opt.policies ?? EXPERT_POLICY_NAMES;
  const batches = opt.batches ?? [1, 16, 32];
  const steps = opt.steps ?? 64;
  const seed = opt.seed ?? 1;
  const share = opt.cappedExpertShare ?? 0.25;
  const out: ExpertSetting[] = [];
  for (const h of hws) {
    const hw = HARDWARE[h];
    if (!hw) throw new TandemError('TDM_BAD_ARGUMENT', `unknown hardware profile '${h}' (${Object.keys(HARDWARE).join(', ')})`);
    for (const id of models) {
      const model = MOE_MODELS[id];
      if (!model) throw new TandemError('TDM_BAD_ARGUMENT', `unknown MoE model '${id}' (${Object.keys(MOE_MODELS).join(', ')})`);
      for (const batch of batches) {
        const reserve = reserveBytes(model, batch, EXPERT_ROOFLINE.defaultContext);
        const device = 0.9 * hw.gpu.memoryBytes;
        const budgets: { budget: ExpertSetting['budget']; bytes: number }[] = [{ budget: 'device', bytes: device }];
        if (placeSafe(model, device, reserve)?.allExpertsFit) {
          budgets.push({ budget: 'capped', bytes: denseBytes(model) + reserve + share * model.nLayer * model.nExpert * expertBytes(model) });
        }
        for (const bytes of opt.budgetBytes ?? []) {
          if (!(bytes > 0 && bytes <= hw.gpu.memoryBytes)) {
            throw new TandemError('TDM_BAD_ARGUMENT', `a budget of ${(bytes / 1e9).toFixed(1)} GB does not fit the ${h} profile's ${(hw.gpu.memoryBytes / 1e9).toFixed(1)} GB`);
          }
          budgets.push({ budget: 'given', bytes });
        }
        for (const b of budgets) {
          if (!placeSafe(model, b.bytes, reserve)) continue;
          for (const kind of routings) {
            const warm = Math.floor(steps / 4);
            const trace = routingTrace(model, { kind, seed }, warm + steps, batch);
            const results = policies.map((policy) => simulateExperts({ hardware: hw, model, policy, routing: { kind, seed }, batch, steps, warmupSteps: warm, gpuBudgetBytes: b.bytes, trace,
              ...(opt.prefetchMargin === undefined ? {} : { prefetchMargin: opt.prefetchMargin }) }));
            out.push({ hardware: h, model: id, budget: b.budget, gpuBudgetBytes: b.bytes, routing: kind, batch, results });
          }
        }
      }
    }
  }
  return out;
}

function placeSafe(model: MoeShape, budget: number, reserve: number): ExpertPlacement | undefined {
  try {
    return placeExperts(model, budget, reserve);
  } catch {
    return undefined;
  }
}

/** A markdown report of a suite; every number labelled SIMULATED. */
export function formatExpertSuite(settings: readonly ExpertSetting[]): string {
  const gb = (b: number) => (b / 1e9).toFixed(1);
  const lines = [
    '# MoE expert offload [SIMULATED]',
    '',
    'SIMULATED: expert policies on a virtual clock; times from datasheet rooflines (src/sched/hardware.ts, src/sched/experts/cost.ts), seeded routing traces. No GPU was used.',
    '',
    '| hw | model | budget GB | routing | batch | policy | decode tok/s (SIMULATED) | vs cpu-moe | hit rate | MB moved/token | CPU share | cache slots | n* tokens |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const s of settings) {
    const base = s.results.find((r) => r.policy === ExpertPolicyName.CpuMoe)?.decodeTokPerS;
    for (const r of s.results) {
      const vs = base ? `${(r.decodeTokPerS / base).toFixed(2)}x` : '-';
      lines.push(`| ${s.hardware} | ${s.model} | ${gb(s.gpuBudgetBytes)}${s.budget === 'device' ? '' : ` (${s.budget})`} | ${s.routing} | ${s.batch} | ${r.policy} | ${r.decodeTokPerS.toFixed(1)} | ${vs} | ${(100 * r.hitRate).toFixed(1)}% | ${(r.bytesPerToken / 1e6).toFixed(2)} | ${(100 * r.cpuShare).toFixed(0)}% | ${r.placement.numCacheSlots} | ${r.crossoverTokens} |`);
    }
  }
  return lines.join('\n');
}
