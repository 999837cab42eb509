// Expert policies behind one interface: tandem's dynamic ones (a scored GPU expert cache, the
// per-expert cost-model choice, prefetch while the link idles) and llama.cpp's static
// strategies (--cpu-moe, --n-cpu-moe N, the fixed 32-token copy rule) as baselines.
import { TandemError } from '../../native/errors.js';
import { ExpertCache, ExpertScoring, type ExpertKey } from './cache.js';
import type { ExpertCostModel, MoeShape } from './cost.js';
import { chooseLayer, planPrefetch, type ExpertPlacement, type ExpertStepPlan, type LayerExpertPlan, type PrefetchDecision, type RoutedExpert } from './plan.js';

export enum ExpertPolicyName {
  /** Cache scored by decayed router probability, cost-model choice, prefetch. */
  DynamicDecay = 'dynamic-decay',
  /** Cache scored by frequency-weighted LRU, cost-model choice, prefetch. */
  DynamicLru = 'dynamic-lru',
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
}

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
  constructor(readonly name: ExpertPolicyName, private readonly ctx: ExpertPolicyContext, scoring: ExpertScoring) {
    const m = ctx.model;
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
        prefetch = planPrefetch(cache, target.layer, target.windowUs - c.linkEndUs, cost, active) ?? null;
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
