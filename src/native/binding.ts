// The only door to the native addon: it loads build/Release/tandem.node and declares,
// in one place, the whole native surface with its types.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { TandemError } from './errors.js';
import type { ModelHyperparams } from '../model/describe.js';
import type { StepPlan, StepResult } from './step-plan.js';

/** A metadata value as the addon returns it (arrays of numbers come as typed arrays). */
export interface NativeGgufArray {
  elementType: string;
  value: ArrayLike<unknown>;
}

export interface NativeGgufInfo {
  path: string;
  version: number;
  alignment: number;
  dataOffset: number;
  fileSize: number;
  /** Metadata in file order; string arrays come as {elementType, packed: {text, starts}} (split by src/model/gguf.ts). */
  metadata: { key: string; type: string; value: unknown }[];
  tensors: { name: string; typeId: number; type: string; shape: number[]; offset: number; nBytes: number }[];
}

export interface NativeGgufHandle {
  /** Metadata and tensor table, converted to JS values. */
  info(): NativeGgufInfo;
  /** The tensor's bytes, viewed in place over the file's mapping (no copy). */
  tensorData(name: string): Uint8Array;
  /** Drops this handle's reference to the mapping; views already taken stay valid. */
  close(): void;
}

/** A ggml type's geometry as the addon reports it (see src/model/quant.ts). */
export interface NativeQuantTypeInfo {
  id: number;
  name: string;
  blockSize: number;
  typeSize: number;
  computable: boolean;
  vecDotType: string | null;
}

/** What the addon needs to load a model besides its path (see native/addon/model_binding.cpp). */
export interface NativeModelConfig {
  hparams: ModelHyperparams;
  /** CPU threads, the calling thread included. */
  threads: number;
  /** Positions per KV block. */
  kvBlockTokens: number;
  /** K and V element type (default 'f16'); 'q8_0' only on the CPU kernels (native/core/model.h). */
  kvType?: 'f16' | 'q8_0';
  /** KV blocks per tier; with no GPU backend loaded the device tier is host RAM too. */
  kvBlocks: { device: number; host: number };
  /** Sliding-window layers' KV in blocks of their own (a slidingBlockTable per sequence, a table per sliding group). */
  kvSplitSliding?: boolean;
  /** Map the host KV tier for the device at load (page-locked while the model lives): swaps copy from locked memory, and with a staging (kvStreamStagingBytes) device attention can read host-tier KV (placement.streamsHostKv). Default true; only where the device can; TANDEM_KV_STREAM=0 also turns it off. */
  kvStream?: boolean;
  /** Device memory for streamed host KV's staging (two layers of the streamed blocks), allocated at load; it bounds the blocks a step may stream (placement.streamBlocksMax). Default 128 MiB; less than one block's worth turns streaming off. */
  kvStreamStagingBytes?: number;
  /** Called on the main thread with the fraction of weight bytes paged in, ending with 1. */
  onProgress?: (fraction: number) => void;
  /** Tests and bench only: force a CPU kernel variant ('ref', 'avx2', 'avxvnni', 'avx512'; default: the best). */
  cpuVariant?: string;
  /** The device beside the CPU: 'none' (default), 'auto' (a usable GPU, else none), 'gpu' (or TDM_BACKEND_UNAVAILABLE), 'cpu-standin' (a second CPU backend posing as one; never GPU numbers). */ device?: 'none' | 'auto' | 'gpu' | 'cpu-standin';
  /** Threads of the 'cpu-standin' device (default 1). */ deviceThreads?: number;
  /** Device memory for weights in bytes (default: all that fits); the rest stay in host RAM and their matmuls run on the CPU. */ deviceWeightBytes?: number;
  /** MoE expert offload (issue 9; needs a device): routed experts as host slabs plus a device slot cache in the budget left after the dense weights, and a per-expert choice each step. Absent: experts are placed as whole stacks like other weights. */ experts?: NativeExpertConfig;
}

/** Linear costs of one routed expert (native/core/experts.h ExpertCost): FFN time on each side by routed rows (µs), the link (µs; bytes/µs), and `cpuCallUs` once per layer that runs any expert on the CPU (default 0). */
export interface NativeExpertCost { cpuFixedUs: number; cpuUsPerToken: number; cpuCallUs?: number; gpuFixedUs: number; gpuUsPerToken: number; linkLatencyUs: number; linkBytesPerUs: number }

/** Expert offload settings (native/core/experts.h); src/sched/experts/native.ts builds them from a cost model. */
export interface NativeExpertConfig {
  /** 'dynamic' (default): cache by score, and each missing expert copied (>= nStar routed rows) or run on the CPU; 'cpu-all': every routed expert on the CPU (llama.cpp --cpu-moe); 'cpu-first-layers': layers [0, cpuLayers) on the CPU, the rest resident while the budget lasts, never copied (llama.cpp --n-cpu-moe). */
  policy?: 'dynamic' | 'cpu-all' | 'cpu-first-layers';
  /** 'cpu-first-layers': how many leading layers keep their experts on the CPU. */
  cpuLayers?: number;
  /** Copy a missing expert to the device when it has at least this many routed rows this step (Infinity: never). Given, it overrides `cost`'s makespan rule. Default: the makespan rule with `cost`, else Infinity. */
  nStar?: number;
  /** Calibrated linear costs (µs; bytes/µs). Without nStar: the makespan rule, each missing expert, heaviest first, to the side (copy + device, or CPU with its activations moved) that finishes it first, the device already busy with the resident experts; placement.experts.nStar then reports the crossover of cost.ts for information. */
  cost?: NativeExpertCost;
  /** Cache scoring (src/sched/experts/cache.ts); default 'decayed-probability'. */
  scoring?: 'decayed-probability' | 'frequency-lru';
  /** Per-step decay of 'decayed-probability', in (0, 1]; default 0.9. */
  decay?: number;
  /** At most this many cache slots (default: all the budget holds). */
  maxSlots?: number;
  /** 'dynamic': CPU-run experts per layer and step that may take the slot of a lower-scored resident expert (default 1; 0 freezes the cache apart from copies). */
  admitPerLayer?: number;
  /** 'dynamic': the next layer's highest-scored missing experts copied per layer and step on the expert stream, when the layer copied nothing for itself (default 0: off); admitMargin applies. */
  prefetchPerLayer?: number;
  /** 'dynamic' with calibrated costs: prefetch as many of the next layer's experts as copy in the predicted time of the layer's own experts, while the link would idle (at most prefetchPerLayer when that is > 0). Default false. */
  prefetchWhenIdle?: boolean;
  /** 'dynamic' with a prefetch: order the next layer's candidates by its router applied to this layer's hidden state (its top-k picks first, taking the lowest-scored slot whatever its score), then by score. Default false: by score alone. */
  pregate?: boolean;
  /** 'dynamic' with a prefetch: issue it as soon as the layer's routing is known, beside the layer's experts and behind its own copies, even when it copied (sized by the time until the next layer's routing, measured, less those copies), rather than after the experts and only when the layer copied nothing. Not in steps that stream copies (prefill). Default false. */
  prefetchEarly?: boolean;
  /** ...only when its score exceeds the resident one's times this (>= 1; default 2): damps churn under uniform routing. */
  admitMargin?: number;
  /** Where CPU-run experts read weights: 'mapping' (default: the file mapping, repacked once by the CPU backend for its packed kernels; under 'dynamic' the pinned slabs for copies sit beside it, twice the host RAM; the static policies keep no slabs) or 'slabs' (the pinned slabs only: half the host RAM, slower CPU kernels). */
  cpuWeights?: 'mapping' | 'slabs';
  /** nLayer × nExpert starting scores (layer-major) for the first fill; default: an even share of every layer. */
  initialScores?: Float64Array | number[];
}

/** A loaded model. step() runs on a worker thread; one step at a time; rejects with {code, message}. */
export interface NativeModel {
  /** Runs one plan; rejects TDM_BAD_ARGUMENT for a bad plan (nothing is run), TDM_DISPOSED after dispose(). */
  step(plan: StepPlan): Promise<StepResult>;
  /** Ends a decode burst in flight after the round under way (its result then holds fewer draws); no effect on the next step. */
  interruptBurst(): void;
  /** Frees the weights' mapping and the KV pools (after a step in flight finishes). */
  dispose(): void;
  /** kvBlockBytes: bytes of one KV block (its layer slots: all layers, or with kvSplitSliding the full layers', the sliding ones filling groups of that many; native/core/kv_pool.h); kvGroups: 1, or 1 + the sliding groups with the sliding layers apart; backends: loaded backend kinds, 'cpu' first. */
  readonly info: { nVocab: number; kvBlockBytes: number; kvGroups: number; backends: string[] };
  /** Times one subtask on this model's backends: median µs of `iters` (default 3); attention is for all layers; linear work takes the LM head for `logitsRows` rows (default all), 'head' times the head alone; not while a step runs (src/sched/profiler.ts). */ profile(op: { kind: 'linear'; tokens: number; logitsRows?: number; iters?: number } | { kind: 'head'; rows: number; iters?: number } | { kind: 'attention'; device: 'cpu' | 'gpu'; requests: number; context: number; tokens: number; iters?: number } | { kind: 'copy'; direction: 'h2d' | 'd2h'; bytes: number; iters?: number } | { kind: 'stream'; blocks: number; iters?: number } | { kind: 'expert'; device: 'cpu' | 'gpu'; tokens: number; iters?: number; idleUs?: number }): Promise<number>;
  /** Expert offload only: calibrated costs for the copy-or-CPU choice from the next step on (the makespan rule; placement.experts.nStar keeps its load-time value). Throws TDM_BAD_ARGUMENT without expert offload, for bad numbers or while a step runs; TDM_DISPOSED after dispose(). */
  setExpertCost(cost: NativeExpertCost): void;
  /** Where the weights went: the device kind (null with none) and name, bytes and matrices on it and left in host RAM; streamsHostKv: the device may attend host-tier KV (a sequence planned kvTier 'host' with attention 'gpu'), each layer's blocks gathered across the link beside its work, at most streamBlocksMax blocks a step (the staging allocated at load; 0 when not streaming); hostKvLocked: the host KV tier is page-locked and mapped (kvStream), staging or not, so swaps copy from locked memory; hostKvLockMs: what load spent locking and mapping it (0 when not tried); `experts` under expert offload (slots and slotBytes of the device cache, resident experts at load, bytes of host slabs, layer 0's n*). */ readonly placement: { device: string | null; deviceName: string; deviceBytes: number; hostBytes: number; deviceTensors: number; hostTensors: number; streamsHostKv: boolean; streamBlocksMax: number; hostKvLocked: boolean; hostKvLockMs: number; experts?: { policy: string; slots: number; slotBytes: number; resident: number; hostSlabBytes: number; nStar: number } };
}

/** One backend the registry knows (native/backend/registry.h): the CPU, or a GPU library or device. */
export interface NativeBackendInfo {
  /** 'cpu', 'cuda' or 'hip'. */
  kind: string;
  /** The GPU library's path (null for the built-in CPU backend). */
  library: string | null;
  /** Device index inside the library; -1 when no device was reached. */
  device: number;
  deviceName: string;
  /** Device memory free and total at scan time, in bytes (0 when unknown). */
  freeBytes: number;
  totalBytes: number;
  /** 'selected': the GPU tandem uses; 'available': usable, not picked; 'unavailable': see reason. */
  status: 'selected' | 'available' | 'unavailable';
  /** Why: '' when selected, else e.g. 'library missing', 'load failed', 'ABI mismatch', 'no device', 'disabled'. */
  reason: string;
  /** The loader's or the library's own message. */
  detail: string;
}

/** Test and bench only: one op of any backend, named by id ('cpu:ref', 'cpu:avx2', 'cpu:avx2@16' for 16 threads, 'cuda:0'), on host typed arrays (native/addon/backend_ops_binding.cpp). */
export interface NativeBackendOps {
  /** Backend ids this machine can run: every CPU kernel variant (reference first), then each usable GPU device. */
  ids(): string[];
  matmul(id: string, type: string, w: Float32Array, nRows: number, nCols: number, x: Float32Array, nTokens: number): Float32Array;
  /** W_i x for each weight through the backend's matmul_group (one conversion of x, one launch where it can); ys null when the backend has no such op. */
  matmulGroup(id: string, type: string, ws: Float32Array[], rows: number[], nCols: number, x: Float32Array, nTokens: number): { grouped: boolean; ys: Float32Array[] | null };
  getRows(id: string, type: string, w: Float32Array, nRows: number, nCols: number, ids: Int32Array): Float32Array;
  rmsNorm(id: string, x: Float32Array, w: Float32Array | null, nRows: number, nCols: number, eps: number): Float32Array;
  /** yarn: ggml_rope_ext's YaRN settings (backend.h tdm_rope_params); omitted: ext 0, attn 1. */
  rope(id: string, x: Float32Array, pos: Int32Array, nHeads: number, headDim: number, ropeDim: number, mode: 'norm' | 'neox', freqBase: number, freqScale: number,
    yarn?: { extFactor: number; attnFactor: number; betaFast: number; betaSlow: number; nCtxOrig: number }): Float32Array;
  add(id: string, a: Float32Array, b: Float32Array, nRows: number, nCols: number, bRowStride: number): Float32Array;
  mul(id: string, a: Float32Array, b: Float32Array, nRows: number, nCols: number, bRowStride: number): Float32Array;
  swiglu(id: string, gate: Float32Array, up: Float32Array): Float32Array;
  geglu(id: string, gate: Float32Array, up: Float32Array): Float32Array;
  scale(id: string, x: Float32Array, scale: number): Float32Array;
  /** tanh(x / cap) * cap elementwise (gemma2's final logits). */
  softcap(id: string, x: Float32Array, cap: number): Float32Array;
  scaleRows(id: string, x: Float32Array, scale: Float32Array, nRows: number, nCols: number, fn: 'identity' | 'sigmoid'): Float32Array;
  attention(id: string, opts: {
    kvType: 'f16' | 'f32' | 'q8_0'; blockTokens: number; nBlocks: number; nKvHeads: number; nHeads: number; headDim: number; headDimV: number; scale: number;
    /** sinks: nHeads sink logits (gpt-oss); window > 0: a position p sees only positions > p - window; softcap > 0: scores become softcap * tanh(score / softcap) (gemma2). */
    sinks?: Float32Array; window?: number; softcap?: number;
    seqs: { startPos: number; nTokens: number; blockTable: Int32Array; k: Float32Array; v: Float32Array; q: Float32Array }[];
  }): Float32Array;
  router(id: string, logits: Float32Array, nTokens: number, nExperts: number, nUsed: number, gating: 'softmax' | 'sigmoid' | 'softmax_weight', norm: boolean, scale: number): { ids: Int32Array; weights: Float32Array };
  /** top_k_rows: each row's k best (larger value, then lower column), best first; flags[r] 1 for a row with NaN or +Infinity or a best of -Infinity. */
  topKRows(id: string, x: Float32Array, nRows: number, nCols: number, k: number): { vals: Float32Array; ids: Int32Array; flags: Int32Array };
  moeFfn(id: string, type: string, gate: Float32Array, up: Float32Array, down: Float32Array, nExp: number, nEmbd: number, nFf: number,
    x: Float32Array, nTokens: number, ids: Int32Array, weights: Float32Array, nUsed: number,
    /** Activation and per-expert biases (gateBias/upBias nExp*nFf floats, downBias nExp*nEmbd); omitted: SwiGLU, no biases. */
    opts?: { glu?: 'swiglu' | 'swiglu_oai'; alpha?: number; limit?: number; gateBias?: Float32Array; upBias?: Float32Array; downBias?: Float32Array }): Float32Array;
  /** y[t] = sum over j < nUsed of weights[j*nTokens+t] * rows[pos[j*nTokens+t]] (choice-major), nCols floats per row. */
  moeCombine(id: string, rows: Float32Array, nRows: number, pos: Int32Array, weights: Float32Array, nTokens: number, nUsed: number, nCols: number): Float32Array;
  copyBlocks(id: string, pool: Uint8Array, blockBytes: number, srcIds: Int32Array, dstIds: Int32Array): Uint8Array;
  /** copy_pieces: dstBytes bytes, piece i from src at srcIds[i]*srcStride to dstIds[i]*dstStride (zeros elsewhere); `mapped`: the source stays in page-locked host memory the device reads across the link (host_register), where the backend can. */
  copyPieces(id: string, src: Uint8Array, srcStride: number, pieceBytes: number, srcIds: Int32Array, dstIds: Int32Array, dstBytes: number, dstStride: number, mapped?: boolean): Uint8Array;
  /** Packed copies of CPU weights made in this process so far, and those some CPU context still holds. */
  packedWeightStats(): { made: number; live: number };
  /** Microseconds per matmul with weights held as a loaded model holds them (on a CPU backend: a read-only file mapping, so its packed kernels run) and activations in the backend's memory (two warm-up calls first). */
  timeMatmul(id: string, type: string, nRows: number, nCols: number, nTokens: number, iters: number): number;
  /** Microseconds per attention call over nSeqs sequences of contextLen cached positions and nTokens new ones each. */
  timeAttention(id: string, opts: { kvType: 'f16' | 'f32' | 'q8_0'; blockTokens: number; nKvHeads: number; nHeads: number; headDim: number; nSeqs: number; contextLen: number; nTokens: number }, iters: number): number;
  /** Pinned host memory (host_alloc) round trip of `bytes` bytes through the device: intact when they come back unchanged; node: the NUMA node its pages prefer, -1 none. */
  hostRoundTrip(id: string, bytes: number): { intact: boolean; node: number };
  /** The CPU thread pool under stress (native/addon/backend_ops_binding.cpp pool_check): tasks missed or run twice, throwing runs and rethrows, and the median µs of a short job right after the pool slept `idleUs`. */
  poolCheck(threads: number, runs: number, idleUs: number): { runs: number; missed: number; doubled: number; thrown: number; rethrown: number; idleRunUs: number | null };
}

export interface NativeAddon {
  GgufHandle: new (path: string) => NativeGgufHandle;
  /** Writes normal(mean, std) values into `out`: element k is element offset+k of the stream (seed, stream); all three integers ≤ 2^53. */
  fillNormal(out: Float32Array, seed: number, stream: number, offset: number, mean: number, std: number): void;
  /** fillNormal on a worker thread; `out` must not be touched until the promise settles. */
  fillNormalAsync(out: Float32Array, seed: number, stream: number, offset: number, mean: number, std: number): Promise<void>;
  /** Test-only: one token sampled natively from one row of logits; a pure function of (params.seed, position). */
  sampleLogits(logits: Float32Array, params: import('./step-plan.js').SamplingParams, recent: Int32Array, position: number): number;
  /**
   * Test-only: the token sampled from the row's k best logits alone (picked on the host, best
   * first by larger logit then lower id, as a device's top_k_rows gives them), and how many of
   * them the config needs (0: it needs the whole row, and no token is drawn: token -1).
   */
  sampleLogitsFromBest(logits: Float32Array, params: import('./step-plan.js').SamplingParams, position: number, k: number): { token: number; needed: number };
  /** Block geometry of a ggml type, by name (case-insensitive) or id; TDM_BAD_ARGUMENT if unknown. */
  typeInfo(type: string | number): NativeQuantTypeInfo;
  /** Names of the types tandem computes with, in id order. */
  quantTypes(): string[];
  /** src.length floats (a whole number of blocks) to the type's bytes (llama.cpp's reference quantizer). */
  quantize(type: string | number, src: Float32Array): Uint8Array;
  /** quantize into `dst`, which must be exactly the row's byte length; returns the bytes written. */
  quantizeInto(type: string | number, src: Float32Array, dst: Uint8Array): number;
  /** quantize on worker threads (default: all cores); `src` must not be detached until it settles. */
  quantizeAsync(type: string | number, src: Float32Array, threads?: number): Promise<Uint8Array>;
  /** n elements of the type's bytes (exactly the row's byte length) back to floats. */
  dequantize(type: string | number, bytes: Uint8Array, n: number): Float32Array;
  /** Reference dot product of n elements: `w` in `type`, `a` in typeInfo(type).vecDotType. */
  vecDot(type: string | number, w: Uint8Array, a: Uint8Array, n: number): number;
  /** Loads a model on a worker thread (maps the file, binds weights, pages them in, allocates the KV pools). */
  loadModel(path: string, config: NativeModelConfig): Promise<NativeModel>;
  /** Read bandwidth of a `bytes` buffer over `threads` threads, best of `passes` (native/cpu/membw.h); on a worker thread. */
  measureReadBandwidth(bytes: number, threads: number, passes: number): Promise<{ bytesPerSecond: number; bestSeconds: number; bytes: number; threads: number; passes: number }>;
  /** The CPU backend, then every GPU library or device with its status and the reason; rescan probes again. */
  backends(rescan?: boolean): NativeBackendInfo[];
  /** The folder searched for libtandem_cuda.so and libtandem_hip.so. */
  gpuLibraryDir(): string;
  /** Test and bench op runner over any backend. */
  backendOps: NativeBackendOps;
  /** Quant types: see src/model/quant.ts for the typed wrappers. */
  [name: string]: unknown;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// src/native and dist/native are both two levels below the package root.
const packageRoot = path.resolve(here, '..', '..');

let cached: NativeAddon | undefined;

/** Where the addon is built. */
export function addonFile(): string {
  return path.join(packageRoot, 'build', 'Release', 'tandem.node');
}

/** Loads the addon once; a missing build is a clear error, not a crash. */
export function native(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const file = addonFile();
  try {
    cached = require(file) as NativeAddon;
  } catch (err) {
    throw new TandemError(
      'TDM_BACKEND_UNAVAILABLE',
      `cannot load the tandem native addon at ${file}: ${(err as Error).message}. Run \`npm install\` (or \`npx node-gyp rebuild\`) to build it.`,
      { cause: err },
    );
  }
  return cached;
}
