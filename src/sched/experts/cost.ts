// What the expert scheduler needs priced: one expert's FFN on each device by routed token
// count, and host<->device copies; a roofline of it from the hybrid scheduler's hardware
// profiles (src/sched/hardware.ts), and the copy crossover n* of DESIGN.md's MoE section.
import { TandemError } from '../../native/errors.js';
import type { CostModel } from '../cost-model.js';
import { ROOFLINE, type HardwareProfile } from '../hardware.js';

/** The shape of a MoE model, enough to size and price its experts. */
export interface MoeShape {
  id: string;
  label: string;
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  /** Routed experts per layer. */
  nExpert: number;
  /** Experts each token is routed to. */
  nExpertUsed: number;
  /** Hidden width of one routed expert. */
  nFfExpert: number;
  /** Hidden width of the shared (always active) expert; 0 when none. */
  nFfShared: number;
  nVocab: number;
  /** Bits per weight of the expert and dense tensors (4.5 for Q4_K_M, 8.5 for Q8_0, 16 for F16). */
  bitsPerWeight: number;
  /** Bits per weight of the dense tensors when they differ from the experts' (gpt-oss: MXFP4 experts only). */
  denseBitsPerWeight?: number;
  /** Layers whose attention sees only the last `slidingWindow` positions (gpt-oss: every other one); absent: none. */
  slidingLayers?: number;
  slidingWindow?: number;
}

/**
 * KV positions a layer holds and attention reads at `context`, averaged over the layers:
 * sliding layers keep only their window, as the engine's sliding KV blocks do.
 */
export function meanKvContext(m: MoeShape, context: number): number {
  const sliding = m.slidingLayers ?? 0;
  if (sliding <= 0 || !(m.slidingWindow! > 0)) return context;
  return ((m.nLayer - sliding) * context + sliding * Math.min(context, m.slidingWindow!)) / m.nLayer;
}

/** Bytes of one expert's gate, up and down matrices: the one contiguous slab a copy moves. */
export function expertBytes(m: MoeShape): number {
  return Math.ceil((3 * m.nEmbd * m.nFfExpert * m.bitsPerWeight) / 8);
}

/** Bytes of everything that is not a routed expert: attention, router, shared expert, norms, embeddings and LM head. */
export function denseBytes(m: MoeShape): number {
  const q = m.nHead * m.headDim;
  const kv = m.nHeadKv * m.headDim;
  const attn = m.nEmbd * (q + 2 * kv) + q * m.nEmbd;
  const perLayer = attn + m.nEmbd * m.nExpert + 3 * m.nEmbd * m.nFfShared;
  return Math.ceil(((m.nLayer * perLayer + 2 * m.nEmbd * m.nVocab) * (m.denseBitsPerWeight ?? m.bitsPerWeight)) / 8);
}

/** Predicted times (µs) of the pieces of a MoE layer the expert scheduler moves between devices. */
export interface ExpertCostModel {
  /** Bytes of one expert slab. */
  readonly expertBytes: number;
  /** Bytes of one token's hidden state (f32) crossing the link, each way, for a CPU expert. */
  readonly activationBytesPerToken: number;
  /** One expert's FFN over `tokens` routed rows on the GPU, weights resident (µs). */
  gpuExpertUs(tokens: number): number;
  /** One expert's FFN over `tokens` routed rows on the CPU, weights in host RAM (µs). */
  cpuExpertUs(tokens: number): number;
  /** Paid once per layer that runs any expert on the CPU, beyond the experts' own times (µs; default 0). */
  readonly cpuCallUs?: number;
  /** One host<->device copy of `bytes` (µs); the hybrid scheduler's CostModel.copyUs. */
  copyUs: CostModel['copyUs'];
  /** The GPU's per-layer work that is not a routed expert (attention over `context` cached tokens per row, projections, router, shared expert) for `tokens` rows (µs). */
  denseLayerUs(tokens: number, context: number): number;
}

/**
 * The smallest routed-token count at which copying an expert and running it on an idle GPU
 * finishes before running it on an idle CPU: n* of DESIGN.md (≈ (bits/8)·F_cpu/(2·B_link)
 * when the CPU is compute-bound and the GPU time is small). Infinity when copying never pays
 * up to `maxTokens`.
 */
export function crossoverTokens(cost: ExpertCostModel, maxTokens = 1 << 16): number {
  const pays = (n: number) => cost.copyUs(cost.expertBytes) + cost.gpuExpertUs(n) < (cost.cpuCallUs ?? 0) + cost.cpuExpertUs(n) + cpuActivationUs(cost, n);
  if (pays(1)) return 1;
  let hi = 2;
  while (hi <= maxTokens && !pays(hi)) hi *= 2;
  if (hi > maxTokens) return Infinity;
  let lo = hi / 2;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (pays(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** Moving `tokens` hidden states to the host and the expert's output back (µs). */
export function cpuActivationUs(cost: ExpertCostModel, tokens: number): number {
  return tokens > 0 ? 2 * cost.copyUs(tokens * cost.activationBytesPerToken) : 0;
}

/** The closed form n* = (bits/8)·F_cpu/(2·B_link), F_cpu in FLOP/s and B_link in bytes/s. */
export function crossoverFormula(bitsPerWeight: number, cpuFlops: number, linkBandwidth: number): number {
  return ((bitsPerWeight / 8) * cpuFlops) / (2 * linkBandwidth);
}

/** Assumptions the expert roofline adds to ROOFLINE: the CPU's matrix rate and how much of its bandwidth an expert GEMV draws. */
export const EXPERT_ROOFLINE = {
  /** Sustained FLOP/s of one server core on quantized expert matmuls (AVX-512/AVX2 int8 dot products, well under peak). */
  cpuFlopsPerCore: 50e9,
  /** Of host memory bandwidth, streaming one expert's weights. */
  cpuBandwidth: 0.6,
  /** Kernel launches of one expert on the GPU (gate, up, down). */
  gpuLaunches: 3,
  /**
   * A layer's round trip to the CPU beyond its experts' own time (µs): the hidden rows down,
   * the wait, waking the CPU pool, the outputs back up. The H200's calibrations measured 40-90
   * µs (bench/results/2026-11-27-h200) and the CPU stand-in 37; this takes the low end.
   */
  cpuCallUs: 40,
  /** Decode context each row attends over when the simulator prices a layer (tokens). */
  defaultContext: 1024,
};

/** The roofline expert cost of `model` on `hw`: each side is the slower of reading the weights and doing the FLOPs. SIMULATED. */
export function rooflineExpertCost(hw: HardwareProfile, model: MoeShape): ExpertCostModel {
  if (!(model.bitsPerWeight > 0)) throw new TandemError('TDM_BAD_ARGUMENT', `bits per weight must be positive, got ${model.bitsPerWeight}`);
  const R = ROOFLINE;
  const E = EXPERT_ROOFLINE;
  const bytes = expertBytes(model);
  const flopsPerToken = 2 * 3 * model.nEmbd * model.nFfExpert;
  const cpuFlops = hw.host.cores * E.cpuFlopsPerCore;
  const us = (s: number) => s * 1e6;
  const q = model.nHead * model.headDim;
  const kv = model.nHeadKv * model.headDim;
  const denseLayerBytes = denseBytes(model) / model.nLayer;
  const denseFlopsPerToken = 2 * (model.nEmbd * (q + 2 * kv) + q * model.nEmbd + model.nEmbd * model.nExpert + 3 * model.nEmbd * model.nFfShared);
  const kvBytesPerTokenLayer = 2 * kv * 2;
  return {
    expertBytes: bytes,
    activationBytesPerToken: 4 * model.nEmbd,
    cpuCallUs: E.cpuCallUs,
    gpuExpertUs(tokens) {
      if (tokens <= 0) return 0;
      return us(Math.max(bytes / (hw.gpu.bandwidth * R.weightBandwidth), (flopsPerToken * tokens) / (hw.gpu.fp16Flops * R.flops))) + E.gpuLaunches * R.launchUs;
    },
    cpuExpertUs(tokens) {
      if (tokens <= 0) return 0;
      return us(Math.max(bytes / (hw.host.bandwidth * E.cpuBandwidth), (flopsPerToken * tokens) / cpuFlops));
    },
    copyUs(b) {
      return b > 0 ? hw.link.latencyUs + us(b / hw.link.bandwidth) : 0;
    },
    denseLayerUs(tokens, context) {
      if (tokens <= 0) return 0;
      const weights = us(Math.max(denseLayerBytes / (hw.gpu.bandwidth * R.weightBandwidth), (denseFlopsPerToken * tokens) / (hw.gpu.fp16Flops * R.flops)));
      const attention = us((tokens * (meanKvContext(model, context) + 1) * kvBytesPerTokenLayer) / (hw.gpu.bandwidth * R.attentionBandwidth));
      return weights + attention + R.kernelsPerLayer * R.launchUs;
    },
  };
}
