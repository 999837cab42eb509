// Expert placement and the per-layer expert plan: what a StepPlan extension would carry (where
// each active expert runs, which copies are cached, what is prefetched), and the functions
// that decide it from an ExpertCostModel. Plain data in, plain data out; no addon needed.
import { TandemError } from '../../native/errors.js';
import type { ExpertCache, ExpertKey } from './cache.js';
import { cpuActivationUs, denseBytes, expertBytes, type ExpertCostModel, type MoeShape } from './cost.js';

/** Where one active expert runs this step. */
export type ExpertSite = 'gpu-resident' | 'cpu' | 'copy-gpu';

/** One active expert of one layer this step. */
export interface RoutedExpert {
  expert: number;
  /** Rows routed to it this step (tokens). */
  tokens: number;
  /** Sum of those rows' router probabilities for it. */
  probability: number;
}

export interface ExpertAssignment {
  expert: number;
  tokens: number;
  site: ExpertSite;
  /** Cache slot the weights are in (resident) or go to (a cached copy); null for CPU experts and uncached copies (a staging buffer). */
  slot: number | null;
  /** Predicted finish of this expert from the layer's start (µs). */
  finishUs: number;
}

/** Copies of the next layer's likely experts, issued on the copy stream while the link would idle. */
export interface PrefetchDecision {
  /** The layer whose experts are copied. */
  layer: number;
  experts: number[];
  /** Cache slots they go to, parallel to `experts`. */
  slots: number[];
  /** Experts evicted to make room. */
  evicted: number[];
  bytes: number;
  /** Link time free before the target layer's experts start (µs). */
  linkIdleUs: number;
}

/** The expert part of one layer's plan: a StepPlan extension would carry one per MoE layer. */
export interface LayerExpertPlan {
  layer: number;
  assignments: ExpertAssignment[];
  /** Experts of this layer evicted from the cache by this layer's copies. */
  evicted: ExpertKey[];
  prefetch: PrefetchDecision | null;
  /** Predicted times from the layer's start (µs): the GPU's dense and expert work, the CPU's experts, the copies, and the layer's end. */
  predicted: { gpuUs: number; cpuUs: number; linkUs: number; layerUs: number };
  /** Bytes over the link for this layer: expert copies, prefetches and CPU experts' activations. */
  bytesMoved: number;
}

/** The expert part of one decode step. */
export interface ExpertStepPlan {
  layers: LayerExpertPlan[];
  /** Sum of the layers' predicted times (µs). */
  predictedUs: number;
}

/** How the GPU's memory budget is split. */
export interface ExpertPlacement {
  /** The budget given (bytes). */
  gpuBudgetBytes: number;
  /** Dense weights and attention, placed first (bytes). */
  denseBytes: number;
  /** KV cache and activation reserve placed beside them (bytes). */
  reserveBytes: number;
  /** One expert slab (bytes). */
  expertBytes: number;
  /** Slabs kept for copies that are not cached. */
  numStagingSlots: number;
  /** Slabs of the expert cache. */
  numCacheSlots: number;
  /** Whether every expert fits (the cache then never evicts). */
  allExpertsFit: boolean;
  /** Bytes used: dense + reserve + (staging + cache) slabs; never above the budget. */
  usedBytes: number;
}

/**
 * Places dense weights and attention first, then a reserve (KV cache, activations), then
 * staging slabs for uncached copies, then as many cache slabs as the budget allows.
 * Throws TDM_OOM when the dense part and reserve do not fit.
 */
export function placeExperts(model: MoeShape, gpuBudgetBytes: number, reserveBytes = 0, numStagingSlots = 2): ExpertPlacement {
  const dense = denseBytes(model);
  const slab = expertBytes(model);
  const left = gpuBudgetBytes - dense - reserveBytes;
  if (!(left >= 0)) {
    throw new TandemError('TDM_OOM', `the ${model.label} dense weights (${dense} bytes) and reserve (${reserveBytes} bytes) do not fit a GPU budget of ${gpuBudgetBytes} bytes; raise the budget or run on the CPU`);
  }
  const total = model.nLayer * model.nExpert;
  const allFit = left >= total * slab;
  const staging = allFit ? 0 : Math.min(numStagingSlots, Math.floor(left / slab));
  const cache = allFit ? total : Math.min(total, Math.floor((left - staging * slab) / slab));
  return {
    gpuBudgetBytes,
    denseBytes: dense,
    reserveBytes,
    expertBytes: slab,
    numStagingSlots: staging,
    numCacheSlots: cache,
    allExpertsFit: allFit,
    usedBytes: dense + reserveBytes + (staging + cache) * slab,
  };
}

/** Fills free cache slots with the highest-scoring experts (the cache's own scoring, ties by key). */
export function fillByScore(cache: ExpertCache): void {
  const keys = Array.from({ length: cache.nLayer * cache.nExpert }, (_, k) => k).filter((k) => cache.score(k) > 0);
  keys.sort((a, b) => cache.score(b) - cache.score(a) || a - b);
  for (const k of keys) {
    if (cache.numResident >= cache.numSlots) break;
    cache.admit(k);
  }
}

export interface LayerChoiceInput {
  routed: readonly RoutedExpert[];
  /** Whether an expert's weights are on the GPU now. */
  resident: (expert: number) => boolean;
  cost: ExpertCostModel;
  /** When the GPU can start this layer's experts (after attention, router, shared expert) (µs from the layer's start). */
  gpuStartUs: number;
  /** When the CPU is free for experts (µs). */
  cpuStartUs: number;
  /** When the link is free (a prefetch may still run) (µs). */
  linkStartUs: number;
  /** Sites a non-resident expert may take. Default both. */
  allowCpu?: boolean;
  allowCopy?: boolean;
}

export interface LayerChoice {
  assignments: ExpertAssignment[];
  gpuEndUs: number;
  cpuEndUs: number;
  linkEndUs: number;
  layerEndUs: number;
  bytesMoved: number;
}

/**
 * Where each active expert of a layer runs. Resident experts run on the GPU. The rest, heaviest
 * (most tokens) first, each go to the site where they would finish earliest given the work
 * already assigned (greedy list scheduling, LPT order): the CPU (weights stay, activations
 * move) or a copy then the GPU (the copy waits for the link, the compute for the copy and the
 * GPU). On idle devices this is exactly the n* crossover; on busy ones it balances the two so
 * both finish as early as the greedy order allows.
 */
export function chooseLayer(input: LayerChoiceInput): LayerChoice {
  const { cost } = input;
  const allowCpu = input.allowCpu ?? true;
  const allowCopy = input.allowCopy ?? true;
  if (!allowCpu && !allowCopy && input.routed.some((r) => !input.resident(r.expert))) {
    throw new TandemError('TDM_BAD_ARGUMENT', 'a non-resident expert needs the CPU or a copy allowed');
  }
  const order = [...input.routed].filter((r) => r.tokens > 0).sort((a, b) => b.tokens - a.tokens || a.expert - b.expert);
  let gpu = input.gpuStartUs;
  let cpu = Math.max(input.cpuStartUs, input.gpuStartUs);
  let cpuEnd = cpu;
  let cpuCall = cost.cpuCallUs ?? 0;  // paid by the layer's first CPU expert
  let link = input.linkStartUs;
  let bytes = 0;
  const out: ExpertAssignment[] = [];
  for (const r of order) {
    if (!input.resident(r.expert)) continue;
    gpu += cost.gpuExpertUs(r.tokens);
    out.push({ expert: r.expert, tokens: r.tokens, site: 'gpu-resident', slot: null, finishUs: gpu });
  }
  for (const r of order) {
    if (input.resident(r.expert)) continue;
    const copied = Math.max(gpu, link + cost.copyUs(cost.expertBytes)) + cost.gpuExpertUs(r.tokens);
    const cpuDone = cpu + cpuCall + cost.cpuExpertUs(r.tokens);
    const cpuFinish = cpuDone + cpuActivationUs(cost, r.tokens);
    if (allowCopy && (!allowCpu || copied < cpuFinish)) {
      link += cost.copyUs(cost.expertBytes);
      gpu = copied;
      bytes += cost.expertBytes;
      out.push({ expert: r.expert, tokens: r.tokens, site: 'copy-gpu', slot: null, finishUs: copied });
    } else {
      cpu = cpuDone;
      cpuCall = 0;
      cpuEnd = Math.max(cpuEnd, cpuFinish);
      bytes += 2 * r.tokens * cost.activationBytesPerToken;
      out.push({ expert: r.expert, tokens: r.tokens, site: 'cpu', slot: null, finishUs: cpuFinish });
    }
  }
  return { assignments: out, gpuEndUs: gpu, cpuEndUs: cpuEnd, linkEndUs: link, layerEndUs: Math.max(gpu, cpuEnd), bytesMoved: bytes };
}

/**
 * Prefetch for `layer`: its non-resident experts with a positive score, best first, while
 * their copies fit in `linkIdleUs` and the cache admits them without evicting anything in
 * `protect` or anything scoring higher.
 */
export function planPrefetch(cache: ExpertCache, layer: number, linkIdleUs: number, cost: ExpertCostModel, protect: ReadonlySet<ExpertKey>,
  margin = 1, named?: ReadonlySet<number>): PrefetchDecision | undefined {
  if (!(linkIdleUs > 0) || cache.numSlots === 0) return undefined;
  const copyUs = cost.copyUs(cost.expertBytes);
  const isNamed = (e: number) => named?.has(e) ?? false;
  const candidates: number[] = [];
  const keep = new Set(protect);
  for (let e = 0; e < cache.nExpert; e++) {
    const k = cache.key(layer, e);
    if (cache.has(k)) {
      if (isNamed(e)) keep.add(k);  // wanted by that layer: no victim
    } else if (isNamed(e) || cache.score(k) > 0) candidates.push(e);
  }
  // The pregate's names first (as the native engine orders them), then by score.
  const score = (e: number) => cache.score(cache.key(layer, e));
  candidates.sort((a, b) => Number(isNamed(b)) - Number(isNamed(a)) || score(b) - score(a) || a - b);
  const d: PrefetchDecision = { layer, experts: [], slots: [], evicted: [], bytes: 0, linkIdleUs };
  let used = 0;
  for (const e of candidates) {
    if (used + copyUs > linkIdleUs) break;
    const k = cache.key(layer, e);
    // A named expert takes the lowest-scored slot; others only past the margin.
    const victim = cache.numResident < cache.numSlots ? undefined : cache.victim(keep);
    if (!isNamed(e) && victim !== undefined && !(cache.score(k) > margin * cache.score(victim))) break;
    const a = cache.admit(k, keep, isNamed(e));
    if (a.slot === undefined) break;
    keep.add(k);
    d.experts.push(e);
    d.slots.push(a.slot);
    if (a.evicted !== undefined) d.evicted.push(a.evicted);
    d.bytes += cost.expertBytes;
    used += copyUs;
  }
  return d.experts.length > 0 ? d : undefined;
}
