// Expert policies behind one interface: tandem's dynamic ones (a scored GPU expert cache, the
// per-expert cost-model choice, prefetch while the link idles) and llama.cpp's static
// strategies (--cpu-moe, --n-cpu-moe N, the fixed 32-token copy rule) as baselines.
import { TandemError } from '../../native/errors.js';
import { ExpertCache, ExpertScoring, type ExpertKey } from './cache.js';
import type { ExpertCostModel, MoeShape } from './cost.js';
import { Rng } from '../sim/workload.js';
import { chooseLayer, planPrefetch, type ExpertPlacement, type ExpertStepPlan, type LayerExpertPlan, type PrefetchDecision, type RoutedExpert } from './plan.js';

export enum ExpertPolicyName {
  /** Cache scored by decayed router probability, cost-model choice, prefetch. */
  DynamicDecay = 'dynamic-decay',
  /** Cache scored by frequency-weighted LRU, cost-model choice, prefetch. */
  DynamicLru = 'dynamic-lru',
  /**
   * DynamicDecay with the prefetch ordered by a simulated pregate (expertPrefetch 'router'):
   * each expert the next layer routes to this step is named with probability PREGATE_PRECISION,
   * else another expert is, and the named ones are copied first.
   */
  DynamicPregate = 'dynamic-pregate',
  /** llama.cpp --cpu-moe: every expert on the CPU. */
  CpuMoe = 'cpu-moe',
  /** llama.cpp --n-cpu-moe N: the first N layers' experts on the CPU, the rest resident; N the least that fits. */
  NCpuMoe = 'n-cpu-moe',
  /** llama.cpp's op offload rule: experts in host RAM; a layer with 32 or more rows copies its used experts to the GPU (not kept), else runs them on the CPU. */
  Copy32 = 'copy-32',
}

export const EXPERT_POLICY_NAMES: readonly ExpertPolicyName[] = Object.values(ExpertPolicyName);

/** One step's routing: per layer, the active experts. */
export type StepRouting = readonly (readonly RoutedExpert[])[];

export interface ExpertPolicyContext {
  model: MoeShape;
  placement: ExpertPlacement;
  cost: ExpertCostModel;
  /** Rows each row of the step attends over (tokens), for the dense layer time. */
  context: number;
  /** Per-step decay of DecayedProbability. Default 0.9. */
  decay?: number;
  /**
   * A score-ordered prefetch takes a slot only from a resident expert scoring below its score
   * divided by this. Default 1; the native engine's admitMargin is 2.
   */
  prefetchMargin?: number;
  /** Seed of the simulated pregate's misses (DynamicPregate). Default 1. */
  seed?: number;
}

/**
 * Share of the pregate's prefetches that the next layer routed to, as measured on the CPU
 * stand-in at one sequence (bench/results/2026-11-27-epyc-2vcpu/pregate: 135 of 188 and 92 of
 * 136 on synthetic routers). Trained routers may do better or worse.
 */
export const PREGATE_PRECISION = 0.7;

export interface ExpertPolicy {
  readonly name: ExpertPolicyName;
  /** The expert cache, when the policy keeps one. */
  readonly cache: ExpertCache | undefined;
  /** Plans one decode step of `tokens` rows and applies its cache changes. */
  planStep(routing: StepRouting, tokens: number): ExpertStepPlan;
}

interface LayerRule {
  resident: (layer: number, expert: number) => boolean;
  allowCpu: (layer: number, tokens: number) => boolean;
  allowCopy: (layer: number, tokens: number) => boolean;
}

/** The layer-by-layer loop the static policies share: no cache, no prefetch. */
function planStatic(ctx: ExpertPolicyContext, rule: LayerRule, routing: StepRouting, tokens: number): ExpertStepPlan {
  const layers: LayerExpertPlan[] = [];
  let total = 0;
  routing.forEach((routed, layer) => {
    const dense = ctx.cost.denseLayerUs(tokens, ctx.context);
    const c = chooseLayer({
      routed,
      resident: (e) => rule.resident(layer, e),
      cost: ctx.cost,
      gpuStartUs: dense,
      cpuStartUs: 0,
      linkStartUs: 0,
      allowCpu: rule.allowCpu(layer, tokens),
      allowCopy: rule.allowCopy(layer, tokens),
    });
    layers.push({ layer, assignments: c.assignments, evicted: [], prefetch: null, predicted: { gpuUs: c.gpuEndUs, cpuUs: c.cpuEndUs, linkUs: c.linkEndUs, layerUs: c.layerEndUs }, bytesMoved: c.bytesMoved });
    total += c.layerEndUs;
  });
  return { layers, predictedUs: total };
}

/** The least N such that layers N.. fit all their experts in the placement's cache and staging slabs. */
export function nCpuMoeLayers(model: MoeShape, placement: ExpertPlacement): number {
  const slabs = placement.numCacheSlots + placement.numStagingSlots;
  const gpuLayers = Math.min(model.nLayer, Math.floor(slabs / model.nExpert));
  return model.nLayer - gpuLayers;
}

class StaticPolicy implements ExpertPolicy {
  readonly cache = undefined;
  constructor(readonly name: ExpertPolicyName, private readonly ctx: ExpertPolicyContext, private readonly rule: LayerRule) {}
  planStep(routing: StepRouting, tokens: number): ExpertStepPlan {
    return planStatic(this.ctx, this.rule, routing, tokens);
  }
}

class DynamicPolicy implements ExpertPolicy {
  readonly cache: ExpertCache;
  /** Link time still owed to earlier copies when the next layer starts (µs); carried across steps. */
  private linkCarry = 0;
  private readonly rng: Rng;
  constructor(readonly name: ExpertPolicyName, private readonly ctx: ExpertPolicyContext, scoring: ExpertScoring, private readonly pregate = false) {
    const m = ctx.model;
    this.rng = new Rng(ctx.seed ?? 1);
    this.cache = new ExpertCache({ nLayer: m.nLayer, nExpert: m.nExpert, numSlots: ctx.placement.numCacheSlots, scoring, ...(ctx.decay === undefined ? {} : { decay: ctx.decay }) });
    // With no routing seen yet any fill is as good as another: start from n-cpu-moe's (the last
    // layers whole), scored 0 so that the first experts seen in use replace them.
    for (let k = m.nLayer * m.nExpert - 1; k >= 0 && this.cache.numResident < this.cache.numSlots; k--) this.cache.admit(k);
  }

  planStep(routing: StepRouting, tokens: number): ExpertStepPlan {
    const { cost, context } = this.ctx;
    const cache = this.cache;
    cache.tick();
    const layers: LayerExpertPlan[] = [];
    let total = 0;
    routing.forEach((routed, layer) => {
      for (const r of routed) if (r.tokens > 0) cache.record(cache.key(layer, r.expert), r.probability, r.tokens);
      const dense = cost.denseLayerUs(tokens, context);
      const c = chooseLayer({ routed, resident: (e) => cache.has(cache.key(layer, e)), cost, gpuStartUs: dense, cpuStartUs: 0, linkStartUs: this.linkCarry });
      const active = new Set<ExpertKey>(routed.map((r) => cache.key(layer, r.expert)));
      const evicted: ExpertKey[] = [];
      for (const a of c.assignments) {
        const k = cache.key(layer, a.expert);
        if (a.site === 'gpu-resident') a.slot = cache.slot(k) ?? null;
        if (a.site !== 'copy-gpu') continue;
        const adm = cache.admit(k, active);
        a.slot = adm.slot ?? null;
        if (adm.evicted !== undefined) evicted.push(adm.evicted);
      }
      let prefetch: PrefetchDecision | null = null;
      let linkEnd = c.linkEndUs;
      let bytes = c.bytesMoved;
      const target = prefetchTarget(layer, routing.length, c.layerEndUs, dense, c.linkEndUs, cost.copyUs(cost.expertBytes));
      if (target) {
        // The pregate sees this step's next layer only (not a wrap into the next step).
        const named = this.pregate && target.layer === layer + 1 ? this.pregateNames(routing[layer + 1]!) : undefined;
        prefetch = planPrefetch(cache, target.layer, target.windowUs - c.linkEndUs, cost, active, this.ctx.prefetchMargin ?? 1, named) ?? null;
        if (prefetch) {
          linkEnd += prefetch.experts.length * cost.copyUs(cost.expertBytes);
          bytes += prefetch.bytes;
        }
      }
      this.linkCarry = Math.max(0, linkEnd - c.layerEndUs);
      layers.push({ layer, assignments: c.assignments, evicted, prefetch, predicted: { gpuUs: c.gpuEndUs, cpuUs: c.cpuEndUs, linkUs: linkEnd, layerUs: c.layerEndUs }, bytesMoved: bytes });
      total += c.layerEndUs;
    });
    return { layers, predictedUs: total };
  }

  /** The experts a pregate names for a layer routed to `routed`: each right with probability PREGATE_PRECISION, else a random other. */
  private pregateNames(routed: readonly RoutedExpert[]): Set<number> {
    const nExpert = this.ctx.model.nExpert;
    const routedSet = new Set(routed.filter((r) => r.tokens > 0).map((r) => r.expert));
    const named = new Set<number>();
    for (const e of routedSet) {
      if (this.rng.next() < PREGATE_PRECISION || routedSet.size >= nExpert) {
        named.add(e);
        continue;
      }
      let other = this.rng.int(0, nExpert - 1);
      while (routedSet.has(other)) other = (other + 1) % nExpert;
      named.add(other);
    }
    return named;
  }
}

/**
 * Which layer a prefetch issued now should serve: the nearest later one (wrapping into the next
 * step) whose experts start after one copy could finish, estimating each layer to take as long
 * as this one. `windowUs` is when that layer's experts start, from this layer's start (µs).
 */
export function prefetchTarget(layer: number, nLayer: number, layerUs: number, denseUs: number, linkFreeUs: number, copyUs: number): { layer: number; windowUs: number } | undefined {
  for (let d = 1; d < nLayer; d++) {
    const windowUs = d * layerUs + denseUs;
    if (linkFreeUs + copyUs <= windowUs) return { layer: (layer + d) % nLayer, windowUs };
  }
  return undefined;
}

export function makeExpertPolicy(name: ExpertPolicyName, ctx: ExpertPolicyContext): ExpertPolicy {
  switch (name) {
    case ExpertPolicyName.DynamicDecay:
      return new DynamicPolicy(name, ctx, ExpertScoring.DecayedProbability);
    case ExpertPolicyName.DynamicLru:
      return new DynamicPolicy(name, ctx, ExpertScoring.FrequencyLru);
    case ExpertPolicyName.DynamicPregate:
      return new DynamicPolicy(name, ctx, ExpertScoring.DecayedProbability, true);
    case ExpertPolicyName.CpuMoe:
      return new StaticPolicy(name, ctx, { resident: () => false, allowCpu: () => true, allowCopy: () => false });
    case ExpertPolicyName.NCpuMoe: {
      const n = ctx.placement.allExpertsFit ? 0 : nCpuMoeLayers(ctx.model, ctx.placement);
      return new StaticPolicy(name, ctx, { resident: (l) => l >= n, allowCpu: () => true, allowCopy: () => false });
    }
    case ExpertPolicyName.Copy32: {
      const copies = (tokens: number) => tokens >= 32;
      return new StaticPolicy(name, ctx, { resident: () => false, allowCpu: (_, t) => !copies(t), allowCopy: (_, t) => copies(t) });
    }
    default:
      throw new TandemError('TDM_BAD_ARGUMENT', `unknown expert policy '${String(name)}' (${EXPERT_POLICY_NAMES.join(', ')})`);
  }
}
