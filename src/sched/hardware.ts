// Hardware profiles of machines tandem has not run on (T4 + 8-core Xeon, A10 + 8-core EPYC,
// MI210 + 16 cores), from datasheets and ../shared/DESIGN.md's measured host links, and a
// roofline cost model built from them for the simulator. CPU attention is the one rate taken
// from this machine: the fraction of memory bandwidth tandem's CPU attention reaches here,
// applied to the target CPU's bandwidth. Everything computed from these profiles is SIMULATED.
import { TandemError } from '../native/errors.js';
import type { CostModel, CostShape } from './cost-model.js';
import { prefillProducts } from './cost-model.js';

export interface GpuSpec {
  name: string;
  /** Device memory (bytes) as the driver reports it. */
  memoryBytes: number;
  /** Datasheet memory bandwidth (bytes/s). */
  bandwidth: number;
  /** Datasheet dense FP16 matrix rate (FLOP/s). */
  fp16Flops: number;
}

export interface HostSpec {
  name: string;
  cores: number;
  /** Read bandwidth those cores can draw (bytes/s); an assumption, stated in `note`. */
  bandwidth: number;
  /** Peak FP32 rate of those cores (FLOP/s): cores x clock x SIMD FMA width. */
  flops: number;
  /** Widest SIMD the cores have: which of tandem's CPU kernels would run there. */
  simd: 'avx2' | 'avx512';
  /** RAM given to the host KV tier (bytes). */
  kvBytes: number;
}

export interface LinkSpec {
  /** Host<->device bandwidth with page-locked buffers (bytes/s). */
  bandwidth: number;
  /** Fixed cost of one copy (µs). */
  latencyUs: number;
}

export interface HardwareProfile {
  id: string;
  label: string;
  gpu: GpuSpec;
  host: HostSpec;
  link: LinkSpec;
  /** Where the numbers come from. */
  note: string;
}

const GB = 1e9;

export const HARDWARE: Record<string, HardwareProfile> = {
  t4: {
    id: 't4',
    label: 'NVIDIA T4 16 GB + 8-core Xeon Platinum 8259CL (g4dn.4xlarge)',
    gpu: { name: 'NVIDIA T4', memoryBytes: 15360 * 2 ** 20, bandwidth: 320 * GB, fp16Flops: 65e12 },
    host: { name: 'Xeon Platinum 8259CL, 8 cores', cores: 8, bandwidth: 60 * GB, flops: 8 * 2.5e9 * 64, simd: 'avx512', kvBytes: 32 * GB },
    link: { bandwidth: 11 * GB, latencyUs: 10 },
    note: 'T4 datasheet (320 GB/s, 65 TFLOPS FP16, 16 GB); PCIe 3.0 x16 at 11 GB/s pinned (DESIGN.md: 8.9-9.2 GB/s measured, ~12 typical); host bandwidth of 8 Cascade Lake cores assumed 60 GB/s (6-channel DDR4-2933 socket: 140.8 GB/s for 24 cores); 2.5 GHz x 2 AVX-512 FMA units',
  },
  a10: {
    id: 'a10',
    label: 'NVIDIA A10 24 GB + 8-core EPYC 7R32 (g5.4xlarge)',
    gpu: { name: 'NVIDIA A10', memoryBytes: 23028 * 2 ** 20, bandwidth: 600 * GB, fp16Flops: 125e12 },
    host: { name: 'EPYC 7R32, 8 cores', cores: 8, bandwidth: 70 * GB, flops: 8 * 2.8e9 * 32, simd: 'avx2', kvBytes: 32 * GB },
    link: { bandwidth: 19.5 * GB, latencyUs: 10 },
    note: 'A10 datasheet (600 GB/s, 125 TFLOPS FP16 dense, 24 GB); PCIe 4.0 x16 at 19.5 GB/s (DESIGN.md: 19.4-19.7 measured, NUMA-local); host bandwidth of 8 Zen 2 cores assumed 70 GB/s (8-channel DDR4-3200 socket: 204.8 GB/s for 48 cores); 2.8 GHz x 2 AVX2 FMA units',
  },
  mi210: {
    id: 'mi210',
    label: 'AMD Instinct MI210 64 GB + 16 CPU cores',
    gpu: { name: 'AMD Instinct MI210', memoryBytes: 64 * 2 ** 30, bandwidth: 1600 * GB, fp16Flops: 181e12 },
    host: { name: '16 server cores', cores: 16, bandwidth: 110 * GB, flops: 16 * 3.0e9 * 32, simd: 'avx2', kvBytes: 48 * GB },
    link: { bandwidth: 22 * GB, latencyUs: 10 },
    note: 'MI210 datasheet (1.6 TB/s, 181 TFLOPS FP16, 64 GB); PCIe 4.0 x16 at 22 GB/s assumed; host bandwidth of 16 cores assumed 110 GB/s; 3.0 GHz x 2 AVX2 FMA units',
  },
};

/** A model's shape, enough to price its subtasks. */
export interface ModelShapeSpec {
  id: string;
  label: string;
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nFf: number;
  nVocab: number;
  /** Bytes per weight (2 for F16). */
  weightBytesPerParam: number;
}

export const SIM_MODELS: Record<string, ModelShapeSpec> = {
  'llama2-7b': { id: 'llama2-7b', label: 'Llama-2-7B (F16)', nLayer: 32, nEmbd: 4096, nHead: 32, nHeadKv: 32, headDim: 128, nFf: 11008, nVocab: 32000, weightBytesPerParam: 2 },
  'llama3.1-8b': { id: 'llama3.1-8b', label: 'Llama-3.1-8B (F16)', nLayer: 32, nEmbd: 4096, nHead: 32, nHeadKv: 8, headDim: 128, nFf: 14336, nVocab: 128256, weightBytesPerParam: 2 },
};

/** Parameters of the model: per layer and in all (embeddings and LM head untied). */
export function parameterCount(m: ModelShapeSpec): { perLayer: number; total: number; lmHead: number } {
  const q = m.nHead * m.headDim;
  const kv = m.nHeadKv * m.headDim;
  const perLayer = m.nEmbd * (q + 2 * kv) + q * m.nEmbd + 3 * m.nEmbd * m.nFf;
  const lmHead = m.nEmbd * m.nVocab;
  return { perLayer, total: m.nLayer * perLayer + 2 * lmHead, lmHead };
}

/** KV bytes of one token (f16 K and V, all layers). */
export function kvBytesPerToken(m: ModelShapeSpec): number {
  return 2 * m.nLayer * m.nHeadKv * m.headDim * 2;
}

/** Attainable fractions of the datasheet rates, and launch costs: assumptions of the roofline. */
export const ROOFLINE = {
  /** Of memory bandwidth, streaming weights through matmuls. */
  weightBandwidth: 0.8,
  /** Of FP16 matrix rate, in the step's matmuls. */
  flops: 0.45,
  /** Of memory bandwidth, in paged decode attention. */
  attentionBandwidth: 0.6,
  /** Of FP16 matrix rate, in prefill attention. */
  attentionFlops: 0.25,
  /** Of the host's FP32 rate, in CPU prefill attention. */
  cpuAttentionFlops: 0.25,
  /** Kernel launches per layer and their cost (µs). */
  kernelsPerLayer: 12,
  launchUs: 5,
  /** Kernel launches of the LM head: final norm, output matmul, the cut to each row's best. */
  headLaunches: 3,
  /**
   * What a sampled row sends to the host: the default sampling's 40 best logits (value and id)
   * and a flag, as the engine cuts rows on a device (greedy sends less, a penalty the row).
   */
  sampledRowBytes: (2 * 40 + 1) * 4,
  /** Host-side cost of one sequence's CPU attention per layer (µs): task setup, block-table walk. */
  cpuSeqOverheadUs: 2,
};

/** Default fraction of memory bandwidth CPU attention reaches when none was measured here. */
export const DEFAULT_CPU_ATTENTION_EFFICIENCY = 0.5;

/**
 * The roofline cost model of `model` on `hw`: linear work is the slower of reading the
 * weights and doing the FLOPs (the LM head apart, for the sampled rows, each cut to its best
 * logits on the device for the host's sampler); decode attention reads the KV; CPU attention reads it at
 * `cpuAttentionEfficiency` of the host's bandwidth (measured here, see the simulate command).
 */
export function rooflineCostModel(hw: HardwareProfile, model: ModelShapeSpec, cpuAttentionEfficiency: number, blockTokens = 16): CostModel {
  if (!(cpuAttentionEfficiency > 0 && cpuAttentionEfficiency <= 1)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `CPU attention efficiency must be in (0, 1], got ${cpuAttentionEfficiency}`);
  }
  const R = ROOFLINE;
  const p = parameterCount(model);
  const wb = model.weightBytesPerParam;
  const kvLayerToken = kvBytesPerToken(model) / model.nLayer;
  const q = model.nHead * model.headDim;
  const kv = model.nHeadKv * model.headDim;
  const shape: CostShape = {
    nLayer: model.nLayer,
    qkvBytesPerToken: 4 * (q + 2 * kv),
    outBytesPerToken: 4 * q,
    kvBlockBytes: kvBytesPerToken(model) * blockTokens,
    kvBlockTokens: blockTokens,
  };
  const us = (seconds: number) => seconds * 1e6;
  const launches = model.nLayer * R.kernelsPerLayer * R.launchUs;
  // Reading `params` weights once for `rows` rows: the slower of the bytes and the FLOPs.
  const matmulUs = (params: number, rows: number) =>
    us(Math.max((params * wb) / (hw.gpu.bandwidth * R.weightBandwidth), (2 * params * rows) / (hw.gpu.fp16Flops * R.flops)));
  return {
    shape,
    // The layers over every row; the LM head apart, over the rows a step samples (as the engine runs it).
    linearUs(tokens) {
      return tokens > 0 ? matmulUs(model.nLayer * p.perLayer, tokens) + launches : 0;
    },
    headUs(rows) {
      if (rows <= 0) return 0;
      const cutUs = us((rows * model.nVocab * 4) / (hw.gpu.bandwidth * R.weightBandwidth));  // one read of the f32 logits
      return matmulUs(p.lmHead, rows) + cutUs + R.headLaunches * R.launchUs + us((rows * R.sampledRowBytes) / hw.link.bandwidth) + hw.link.latencyUs;
    },
    deviceAttentionUs(requests, context) {
      if (requests <= 0) return 0;
      const bytes = requests * (context + 1) * kvLayerToken * model.nLayer;
      return us(bytes / (hw.gpu.bandwidth * R.attentionBandwidth)) + model.nLayer * 2 * R.launchUs;
    },
    prefillAttentionUs(tokens, context) {
      if (tokens <= 0) return 0;
      // Two matmuls (q.K and p.V) of 2 FLOPs per product and element.
      const flops = 4 * prefillProducts(tokens, context) * q * model.nLayer;
      return us(flops / (hw.gpu.fp16Flops * R.attentionFlops)) + model.nLayer * 2 * R.launchUs;
    },
    cpuAttentionUs(requests, context) {
      if (requests <= 0) return 0;
      const bytes = requests * (context + 1) * kvLayerToken * model.nLayer;
      return us(bytes / (hw.host.bandwidth * cpuAttentionEfficiency)) + requests * model.nLayer * R.cpuSeqOverheadUs;
    },
    cpuPrefillAttentionUs(tokens, context) {
      if (tokens <= 0) return 0;
      const flops = 4 * prefillProducts(tokens, context) * q * model.nLayer;
      const bytes = (context + tokens) * kvLayerToken * model.nLayer;
      return us(Math.max(flops / (hw.host.flops * R.cpuAttentionFlops), bytes / (hw.host.bandwidth * cpuAttentionEfficiency)));
    },
    copyUs(bytes) {
      return bytes > 0 ? hw.link.latencyUs + us(bytes / hw.link.bandwidth) : 0;
    },
  };
}

/**
 * KV blocks the device holds beside the weights, as vLLM sizes them: a 0.9 share of device
 * memory, less the weights and a reserve for activations and the runtime.
 */
export function deviceKvBlocks(hw: HardwareProfile, model: ModelShapeSpec, blockTokens: number): number {
  const weights = parameterCount(model).total * model.weightBytesPerParam;
  const reserve = 0.5 * GB;
  const bytes = 0.9 * hw.gpu.memoryBytes - weights - reserve;
  return Math.max(0, Math.floor(bytes / (kvBytesPerToken(model) * blockTokens)));
}
