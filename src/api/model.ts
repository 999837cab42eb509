// loadModel() and Model: the public surface over the engine, the native model and the
// tokenizer. Every request goes through the engine's queue, so concurrent generate()
// and chat() calls share decode steps. With a device beside the CPU every step runs under
// a policy (src/sched) whose cost model is profiled at first use and cached.
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { GgufFile } from '../model/gguf.js';
import { describeModel, type ModelDescription } from '../model/describe.js';
import { tokenizerFromGguf, type Tokenizer } from '../model/tokenizer/index.js';
import type { ChatTemplate } from '../model/chat-template.js';
import { HarmonySplitter, isHarmonyVocab } from '../model/harmony.js';
import { JSON_START, JsonConstraint, JsonVocabulary, startState, type JsonState } from '../model/json-mode.js';
import { compileSchema } from '../model/json-schema.js';
import { detectReplyFormat, promptOpensThink, TaggedReplySplitter } from '../model/reply-format.js';
import { native, type NativeModel, type NativeModelConfig } from '../native/binding.js';
import { asTandemError, TandemError } from '../native/errors.js';
import type { StepPlan, StepResult } from '../native/step-plan.js';
import { Engine, type EnginePolicy } from '../engine/engine.js';
import { checkSchedulerConfig, PreemptionMode, type SchedulerConfig } from '../engine/scheduler.js';
import { planKvBudget, planTierBudget, type KvBudget } from '../engine/kv-budget.js';
import { kvSizing } from '../engine/kv-blocks.js';
import { costShapeOf } from '../sched/cost-model.js';
import { POLICY_NAMES, type PolicyName, type StepDecision } from '../sched/policy.js';
import { schedulerStrategyFor } from '../sched/policy-scheduler.js';
import { DEFAULT_GRID, gridWithin, loadOrProfile, profileKey, profileModel, QUICK_GRID } from '../sched/profiler.js';
import { nativeExpertConfig, type NativeExpertPolicy } from '../sched/experts/native.js';
import { calibrateExperts, loadOrCalibrateExperts, QUICK_EXPERT_GRID, type ExpertCalibration } from '../sched/experts/calibrate.js';
import { ExpertCostRefit, refittingExecutor } from '../sched/experts/refit.js';
import { createProgressBar } from '../cli/progress.js';
import type { SequenceParams } from '../engine/sequence.js';
import { GenerationStream, type ReplySplitter } from './generation.js';
import { checkKnownKeys, checkNumber, checkTokenIds, resolveGenerateOptions, SAMPLING_DEFAULTS } from './options.js';
import { physicalCoreCount } from './threads.js';
import type {
  ChatMessage,
  ChatOptions,
  CpuKernelsOption,
  GenerateOptions,
  Generation,
  DeviceOption,
  EmbeddingPooling,
  EmbedOptions,
  LoadModelOptions,
  ModelInfo,
  ModelStats,
  StepInfo,
  TokenizeOptions,
} from './types.js';

/** llama.cpp's pooling types by number (enum llama_pooling_type): none (0) embeds as its fallback does, by the last token. */
const POOLING_TYPES: Record<number, EmbeddingPooling | 'rank'> = { 0: 'last', 1: 'mean', 2: 'cls', 3: 'last', 4: 'rank' };

/** A request that only runs its prompt (nothing generated), for what the prompt's steps return. */
function promptOnly(wants: { returnPromptLogits?: boolean; returnPromptEmbeddings?: boolean }): SequenceParams {
  return {
    maxTokens: 0,
    sampling: { ...SAMPLING_DEFAULTS, temperature: 0, seed: 0 },
    stopTokens: new Set(),
    penaltyWindow: 0,
    returnPromptLogits: wants.returnPromptLogits ?? false,
    ...(wants.returnPromptEmbeddings ? { returnPromptEmbeddings: true } : {}),
  };
}

/** Tokens of one prompt processed per step when options do not say. */
export const DEFAULT_PREFILL_CHUNK = 256;
/** Positions per KV block when options do not say. */
export const DEFAULT_KV_BLOCK_TOKENS = 16;
/** The default context: the trained one, capped so that a default load stays small. */
const DEFAULT_MAX_CONTEXT = 4096;

/** Requests that may wait for a slot when options do not say. */
const DEFAULT_MAX_QUEUED = 1024;
/** Unread streamed tokens that pause a request when options do not say. */
const DEFAULT_OUTPUT_BUFFER = 256;
/** JSON schemas whose start states (and so cached masks) a model keeps. */
const SCHEMAS_KEPT = 16;
/**
 * Draws a request may take in a row between two plans (decodeBurst). Eight takes the host's
 * time per token down eightfold at most; where it is that large, larger bursts gain little more.
 */
const DEFAULT_DECODE_BURST = 8;

/** TANDEM_DECODE_BURST, when set: decodeBurst's default (for the bench's runs with and without bursts). */
function burstFromEnv(where: string): number | undefined {
  const v = process.env.TANDEM_DECODE_BURST;
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= 1 && n <= 64)) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: TANDEM_DECODE_BURST must be an integer in [1, 64], got ${JSON.stringify(v)}`);
  return n;
}

/** Guesses per sequence and step at most (draftTokens). */
const MAX_DRAFT_TOKENS = 16;
/**
 * Tokens a step may hold with its guesses, by CPU kernel set. A step reads each weight once for
 * all of its tokens, so with the AVX-512 kernels a few more cost little (tinyllama Q4_K_M: 4
 * tokens 1.1-1.4x the time of 1). The AVX2 kernels are bound by their own instructions from two
 * tokens on (2 tokens 1.1-1.6x, 4 tokens 2.2-2.7x; every guess right gave 1.27x at one guess a
 * step, 1.49x at three), so there a step takes one guess, which pays back sooner when it misses.
 * bench/results/2026-11-28-epyc-2vcpu/small-batch and speculative.
 */
function draftStepTokens(kernels: ModelInfo['cpuKernels']): number {
  return kernels === 'avx512' ? 4 : 2;
}

const LOAD_OPTIONS = new Set([
  'cpuKernels', 'threads', 'contextSize', 'kvBlockTokens', 'kvType', 'maxSequences', 'prefillChunkTokens', 'onProgress', 'kvCacheBytes',
  'kvCacheFraction', 'kvDeviceFraction', 'prefixCaching', 'preemption', 'maxQueuedRequests', 'outputBufferTokens',
  'device', 'deviceThreads', 'deviceWeightBytes', 'kvDeviceBytes', 'kvHostBytes', 'kvStream', 'kvStreamStagingBytes', 'policy', 'tpotSloMs', 'profile', 'profileCacheDir',
  'experts', 'expertPrefetch', 'slidingKv', 'draftTokens', 'decodeBurst',
]);

const DEVICES: readonly DeviceOption[] = ['none', 'auto', 'gpu', 'cpu-standin'];
const PROFILE_MODES = ['cached', 'refresh', 'quick'] as const;
/** Options that only mean something with a device. */
const DEVICE_ONLY_OPTIONS = ['deviceThreads', 'deviceWeightBytes', 'kvStreamStagingBytes', 'policy', 'tpotSloMs', 'profile', 'profileCacheDir', 'experts'] as const;
/** Share of a GPU's free memory (less the weights) the default device KV tier may take. */
const GPU_KV_SHARE = 0.9;
/** Device share of a kvCacheBytes/kvCacheFraction budget when a device is present and kvDeviceFraction is not given. */
const DEFAULT_DEVICE_FRACTION = 0.5;

const CPU_KERNELS: readonly CpuKernelsOption[] = ['auto', 'avx512', 'avxvnni', 'avx2', 'ref'];

/** The CPU kernel set a load runs: the one asked for, or for 'auto' the best this processor has. */
function resolveCpuKernels(where: string, requested: unknown): Exclude<CpuKernelsOption, 'auto'> {
  const kernels = requested ?? 'auto';
  if (!(CPU_KERNELS as readonly unknown[]).includes(kernels)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: cpuKernels must be one of ${CPU_KERNELS.map((k) => `'${k}'`).join(', ')}, got ${String(requested)}`);
  }
  // Ascending: 'ref', then the instruction sets this build and processor run.
  const available = native()
    .backendOps.ids()
    .filter((id) => id.startsWith('cpu:') && !id.includes('+'))
    .map((id) => id.slice('cpu:'.length)) as Exclude<CpuKernelsOption, 'auto'>[];
  if (kernels === 'auto') return available[available.length - 1] ?? 'ref';
  if (!available.includes(kernels as Exclude<CpuKernelsOption, 'auto'>)) {
    throw new TandemError('TDM_UNSUPPORTED', `${where}: cpuKernels '${String(kernels)}' are not available on this processor or build (it runs ${available.join(', ')})`);
  }
  return kernels as Exclude<CpuKernelsOption, 'auto'>;
}

/** The device options, checked: what the native load gets and which policy runs. */
interface DevicePlan {
  device: DeviceOption;
  /** A device is expected (for 'auto': a usable GPU was found by the backend scan). */
  present: boolean;
  policy: PolicyName;
  /** The GPU's free memory at scan time, bytes (undefined for the stand-in or when unknown). */
  gpuFreeBytes: number | undefined;
}

function planDevice(where: string, options: LoadModelOptions): DevicePlan {
  const device = options.device ?? 'none';
  if (!DEVICES.includes(device)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: device must be one of ${DEVICES.map((d) => `'${d}'`).join(', ')}, got ${String(device)}`);
  }
  if (device === 'none') {
    for (const key of DEVICE_ONLY_OPTIONS) {
      if (options[key] !== undefined) {
        throw new TandemError('TDM_BAD_ARGUMENT', `${where}: ${key} needs a device beside the CPU (device 'auto', 'gpu' or 'cpu-standin'); device is 'none'`);
      }
    }
  }
  if (options.deviceThreads !== undefined && device !== 'cpu-standin') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: deviceThreads is for device 'cpu-standin' only, device is '${device}'`);
  }
  checkNumber(where, 'deviceThreads', options.deviceThreads, 1, { min: 1, max: 1024, integer: true });
  checkNumber(where, 'deviceWeightBytes', options.deviceWeightBytes, 0, { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true });
  checkNumber(where, 'kvStreamStagingBytes', options.kvStreamStagingBytes, 0, { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true });
  if (options.policy !== undefined && !(POLICY_NAMES as readonly string[]).includes(options.policy)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: policy must be one of ${POLICY_NAMES.map((p) => `'${p}'`).join(', ')}, got ${String(options.policy)}`);
  }
  const slo = checkNumber(where, 'tpotSloMs', options.tpotSloMs, 1, { min: 0 });
  if (slo <= 0) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: tpotSloMs must be a number > 0, got ${slo}`);
  if (options.profile !== undefined && !(PROFILE_MODES as readonly string[]).includes(options.profile)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: profile must be one of ${PROFILE_MODES.map((p) => `'${p}'`).join(', ')}, got ${String(options.profile)}`);
  }
  if (options.profileCacheDir !== undefined && (typeof options.profileCacheDir !== 'string' || options.profileCacheDir.length === 0)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: profileCacheDir must be a non-empty string`);
  }
  let present = device !== 'none';
  let gpuFreeBytes: number | undefined;
  if (device === 'auto' || device === 'gpu') {
    const gpu = native().backends().find((b) => b.kind !== 'cpu' && b.status === 'selected');
    if (device === 'auto') present = gpu !== undefined;
    if (gpu && gpu.freeBytes > 0) gpuFreeBytes = gpu.freeBytes;
  }
  return { device, present, policy: options.policy ?? 'auto', gpuFreeBytes };
}

/**
 * What the host KV tier is given at load (`asked`: loadModel's kvStream). By default, where the
 * device tier cannot hold every sequence's full context (memory pressure moves sequences to the
 * host tier), it is locked, so that swaps copy from locked memory, and with 'auto' (the one
 * policy that streams) a device staging is taken for streamed KV too. Elsewhere the device has
 * room for every sequence and neither cost is paid: locked RAM and load time, 128 MiB of GPU
 * memory.
 */
export function hostKvUse(
  policy: PolicyName,
  blocks: { device: number; host: number },
  blocksForAll: number,
  asked: boolean | undefined,
): { lock: boolean; stream: boolean } {
  const lock = asked ?? (blocks.host > 0 && blocks.device < blocksForAll);
  return { lock, stream: lock && policy === 'auto' };
}

/** The KV pools' sizes: per-tier bytes, or the one budget split between the tiers. */
function planKv(
  where: string,
  options: LoadModelOptions,
  dev: DevicePlan,
  req: { blockBytes: number; blockTokens: number; contextSize: number; blocksPerSequence: number; maxSequences: number; weightBytes: number },
): KvBudget {
  const { blockBytes, blockTokens, contextSize, blocksPerSequence } = req;
  const defaultBytes = blocksPerSequence * req.maxSequences * blockBytes;
  const deviceOnly = dev.present && dev.policy === 'gpu-only';
  const perTier = options.kvDeviceBytes !== undefined || options.kvHostBytes !== undefined;
  if (perTier) {
    for (const key of ['kvCacheBytes', 'kvCacheFraction', 'kvDeviceFraction'] as const) {
      if (options[key] !== undefined) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: give either kvDeviceBytes/kvHostBytes or ${key}, not both`);
    }
  }
  const deviceBytes = checkNumber(where, 'kvDeviceBytes', options.kvDeviceBytes, -1, { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true });
  const hostBytes = checkNumber(where, 'kvHostBytes', options.kvHostBytes, -1, { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true });
  if (perTier || (dev.present && options.kvCacheBytes === undefined && options.kvCacheFraction === undefined)) {
    let defaultDevice = dev.present ? defaultBytes : 0;
    if (dev.gpuFreeBytes !== undefined) {
      const weights = Math.min(options.deviceWeightBytes ?? req.weightBytes, req.weightBytes);
      defaultDevice = Math.max(0, Math.min(defaultDevice, Math.floor(GPU_KV_SHARE * (dev.gpuFreeBytes - weights))));
    }
    return planTierBudget({
      blockBytes,
      blockTokens,
      contextSize,
      blocksPerSequence,
      deviceBytes: deviceBytes >= 0 ? deviceBytes : defaultDevice,
      hostBytes: hostBytes >= 0 ? hostBytes : defaultBytes,
      deviceOnly,
    });
  }
  const kvCacheBytes = options.kvCacheBytes === undefined ? undefined : checkNumber(where, 'kvCacheBytes', options.kvCacheBytes, 0, { min: 1 });
  const kvCacheFraction =
    options.kvCacheFraction === undefined ? undefined : checkNumber(where, 'kvCacheFraction', options.kvCacheFraction, 0, { min: 0, max: 1 });
  if (kvCacheFraction === 0) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: kvCacheFraction must be greater than 0`);
  const kvDeviceFraction = checkNumber(where, 'kvDeviceFraction', options.kvDeviceFraction, dev.present ? DEFAULT_DEVICE_FRACTION : 0, { min: 0, max: 1 });
  // With no GPU both tiers are host RAM, so a fractional budget is a share of os.freemem().
  return planKvBudget({
    blockBytes,
    blockTokens,
    contextSize,
    blocksPerSequence,
    bytes: kvCacheBytes,
    fraction: kvCacheFraction,
    freeBytes: os.freemem(),
    defaultBytes,
    deviceFraction: kvDeviceFraction,
    deviceOnly,
  });
}

/**
 * Loads a GGUF model for inference. Throws TandemError: TDM_NOT_FOUND or TDM_BAD_GGUF for
 * the file, TDM_UNSUPPORTED for an architecture or type tandem does not run,
 * TDM_BAD_ARGUMENT for options.
 */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
  const where = 'loadModel()';
  if (typeof path !== 'string' || path.length === 0) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: path must be the path of a GGUF file, got ${typeof path === 'string' ? 'an empty string' : typeof path}`);
  }
  if (options === null || typeof options !== 'object') throw new TandemError('TDM_BAD_ARGUMENT', `${where}: options must be an object`);
  checkKnownKeys(where, options, LOAD_OPTIONS);
  const threads = checkNumber(where, 'threads', options.threads, physicalCoreCount(), { min: 1, max: 1024, integer: true });
  const kvBlockTokens = checkNumber(where, 'kvBlockTokens', options.kvBlockTokens, DEFAULT_KV_BLOCK_TOKENS, { min: 1, max: 4096, integer: true });
  const kvType = options.kvType ?? 'f16';
  if (kvType !== 'f16' && kvType !== 'q8_0') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: kvType must be 'f16' or 'q8_0', got ${String(kvType)}`);
  }
  const cpuKernels = resolveCpuKernels(where, options.cpuKernels);
  const maxSequences = checkNumber(where, 'maxSequences', options.maxSequences, 4, { min: 1, max: 4096, integer: true });
  const prefillChunk = checkNumber(where, 'prefillChunkTokens', options.prefillChunkTokens, DEFAULT_PREFILL_CHUNK, { min: 1, integer: true });
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: onProgress must be a function`);
  }
  const dev = planDevice(where, options);
  const draftTokens = checkNumber(where, 'draftTokens', options.draftTokens, 0, { min: 0, max: MAX_DRAFT_TOKENS, integer: true });
  if (draftTokens > 0 && dev.present) {
    throw new TandemError('TDM_UNSUPPORTED', `${where}: draftTokens (speculative decoding) runs on the CPU path only for now; load with device: 'none', or without draftTokens`);
  }
  let decodeBurst = checkNumber(where, 'decodeBurst', options.decodeBurst ?? burstFromEnv(where), DEFAULT_DECODE_BURST, { min: 1, max: 64, integer: true });
  // Bursts would take the all-decode steps speculation guesses in; with guesses, one or the other.
  if (draftTokens > 0 && options.decodeBurst === undefined) decodeBurst = 1;
  const experts = options.experts ?? 'stacks';
  if (typeof experts !== 'string' || !/^(stacks|dynamic|cpu-all|cpu-first-layers:\d+)$/.test(experts)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: experts must be 'stacks', 'dynamic', 'cpu-all' or 'cpu-first-layers:N', got ${String(experts)}`);
  }
  const expertPrefetch = options.expertPrefetch ?? 'score';
  if (expertPrefetch !== 'score' && expertPrefetch !== 'router') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: expertPrefetch must be 'score' or 'router', got ${String(expertPrefetch)}`);
  }
  if (expertPrefetch === 'router' && experts !== 'dynamic') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: expertPrefetch 'router' needs experts: 'dynamic' (got '${experts}')`);
  }
  const maxQueued = checkNumber(where, 'maxQueuedRequests', options.maxQueuedRequests, DEFAULT_MAX_QUEUED, { min: 0, integer: true, infinite: true });
  const outputBuffer = checkNumber(where, 'outputBufferTokens', options.outputBufferTokens, DEFAULT_OUTPUT_BUFFER, { min: 1, integer: true, infinite: true });
  if (options.prefixCaching !== undefined && typeof options.prefixCaching !== 'boolean') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: prefixCaching must be a boolean`);
  }
  const slidingKv = options.slidingKv ?? 'window';
  if (slidingKv !== 'window' && slidingKv !== 'full') {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: slidingKv must be 'window' or 'full', got ${String(slidingKv)}`);
  }
  const modes = Object.values(PreemptionMode) as string[];
  if (options.preemption !== undefined && !modes.includes(options.preemption)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: preemption must be one of ${modes.map((m) => `'${m}'`).join(', ')}, got ${String(options.preemption)}`);
  }

  const file = GgufFile.open(path);
  let description: ModelDescription;
  let tokenizer: Tokenizer;
  let template: string | undefined;
  let poolingType: number | undefined;
  try {
    description = describeModel(file);
    tokenizer = tokenizerFromGguf(file);
    template = file.getString('tokenizer.chat_template');
    poolingType = file.getNumber(`${description.hparams.architecture}.pooling_type`);
    // Embedding models converted with bidirectional attention (llama.cpp's non-causal mode): every
    // token would have to see the ones after it, which tandem's attention never lets it.
    if (file.getBool(`${description.hparams.architecture}.attention.causal`) === false) {
      throw new TandemError('TDM_UNSUPPORTED', `${where}: ${path} asks for non-causal (bidirectional) attention (${description.hparams.architecture}.attention.causal false), which tandem does not run`);
    }
  } finally {
    file.close();
  }
  const hp = description.hparams;
  if (experts !== 'stacks' && !(hp.nExpert > 0)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${where}: experts '${experts}' needs a MoE model; ${path} (${hp.architecture}) has no routed experts`);
  }
  const contextSize = checkNumber(where, 'contextSize', options.contextSize, Math.min(hp.nCtxTrain, DEFAULT_MAX_CONTEXT), {
    min: 2,
    max: 1 << 24,
    integer: true,
  });
  if (kvType === 'q8_0' && (hp.headDim % 32 !== 0 || hp.headDimV % 32 !== 0)) {
    throw new TandemError('TDM_UNSUPPORTED', `${where}: kvType 'q8_0' needs head sizes that are multiples of 32; ${path} has ${hp.headDim} and ${hp.headDimV}`);
  }
  if (kvType === 'q8_0' && dev.device === 'gpu') {
    throw new TandemError('TDM_UNSUPPORTED', `${where}: kvType 'q8_0' runs on the CPU kernels only; the GPU kernels read f16 K and V (use kvType 'f16' with a GPU)`);
  }
  // q8_0 stores 32 elements in 34 bytes where f16 takes 64.
  const kvBytesPerToken = kvType === 'q8_0' ? (description.kvBytesPerToken / 2) * (34 / 32) : description.kvBytesPerToken;
  const kv = kvSizing(hp, kvBytesPerToken, contextSize, { slidingKv, blockTokens: kvBlockTokens, maxChunkTokens: prefillChunk });
  const { blockBytes, blocksPerSequence: blocksPerSeq } = kv;
  const budget = planKv(where, options, dev, {
    blockBytes,
    blockTokens: kvBlockTokens,
    contextSize,
    blocksPerSequence: blocksPerSeq,
    maxSequences,
    weightBytes: description.weightBytes,
  });
  const schedulerConfig: SchedulerConfig = {
    contextSize,
    blockTokens: kvBlockTokens,
    numBlocks: budget.numBlocks,
    maxRunning: maxSequences,
    maxChunkTokens: prefillChunk,
    // One step holds a full prefill chunk beside a decode token for every other sequence.
    maxStepTokens: prefillChunk + maxSequences,
    strategy: dev.present ? schedulerStrategyFor(dev.policy) : 'cpu',
    maxWaiting: maxQueued,
    prefixCaching: options.prefixCaching ?? true,
    preemption: options.preemption ?? PreemptionMode.Swap,
    slidingWindow: kv.slidingWindow,
    ...(kv.slidingWindow > 0 ? { slidingGroups: kv.slidingGroups } : {}),
    speculation: { maxDraft: draftTokens, stepTokens: draftStepTokens(cpuKernels) },
  };
  // Checked before any memory is committed.
  checkSchedulerConfig(schedulerConfig);

  const userProgress = options.onProgress;
  let progressError: unknown;
  let nativeModel: NativeModel;
  try {
    const deviceConfig: Partial<NativeModelConfig> = {};
    if (dev.device !== 'none') deviceConfig.device = dev.device;
    if (options.deviceThreads !== undefined) deviceConfig.deviceThreads = options.deviceThreads;
    if (options.deviceWeightBytes !== undefined) deviceConfig.deviceWeightBytes = options.deviceWeightBytes;
    if (options.kvStream !== undefined) {
      if (typeof options.kvStream !== 'boolean') throw new TandemError('TDM_BAD_ARGUMENT', `${where}: kvStream must be a boolean, got ${String(options.kvStream)}`);
      deviceConfig.kvStream = options.kvStream;
    }
    if (options.kvStreamStagingBytes !== undefined) {
      deviceConfig.kvStreamStagingBytes = options.kvStreamStagingBytes;
    } else if (dev.present) {
      const use = hostKvUse(dev.policy, budget.numBlocks, blocksPerSeq * maxSequences, options.kvStream);
      if (!use.lock) deviceConfig.kvStream = false;
      if (!use.stream) deviceConfig.kvStreamStagingBytes = 0;
    }
    // 'dynamic' prefetches by its calibrated costs (set once loaded) while the link idles.
    const prefetch = experts === 'dynamic' ? { prefetchWhenIdle: true, ...(expertPrefetch === 'router' ? { pregate: true } : {}) } : {};
    const expertConfig = nativeExpertConfig({ policy: experts as NativeExpertPolicy, ...prefetch });
    if (expertConfig) deviceConfig.experts = expertConfig;
    nativeModel = await native().loadModel(path, {
      hparams: hp,
      threads,
      ...(options.cpuKernels !== undefined && options.cpuKernels !== 'auto' ? { cpuVariant: cpuKernels } : {}),
      kvBlockTokens,
      kvType,
      kvBlocks: schedulerConfig.numBlocks,
      ...(kv.slidingWindow > 0 ? { kvSplitSliding: true } : {}),
      ...deviceConfig,
      // A throwing callback must not unwind through native code; its error fails the load instead.
      onProgress: userProgress && ((fraction: number) => {
        if (progressError !== undefined) return;
        try {
          userProgress(fraction);
        } catch (err) {
          progressError = err;
        }
      }),
    });
  } catch (err) {
    throw asTandemError(err);
  }
  if (progressError !== undefined) {
    nativeModel.dispose();
    throw progressError;
  }
  const placement = nativeModel.placement;
  let policy: EnginePolicy | undefined;
  let profile: ModelInfo['profile'];
  let expertsInfo: ModelInfo['experts'];
  // 'dynamic' with calibrated costs: refitted online from every step's CPU expert calls.
  let expertRefit: ExpertCostRefit | undefined;
  if (placement.device !== null) {
    // Expert costs first: the profile below then times the steps as they will run.
    const ex = placement.experts;
    if (ex) {
      expertsInfo = { policy: ex.policy, slots: ex.slots, slotBytes: ex.slotBytes, hostSlabBytes: ex.hostSlabBytes };
      if (experts === 'dynamic') {
        expertsInfo.prefetch = expertPrefetch;
        try {
          const c = options.profile === 'quick'
            ? { ...(await calibrateExperts(nativeModel, QUICK_EXPERT_GRID)), source: 'quick' as const }
            : await calibrateCached(nativeModel, hp, { threads, cpuKernels, kvBlockTokens, deviceThreads: options.deviceThreads }, options);
          nativeModel.setExpertCost(c.cost);
          expertRefit = new ExpertCostRefit(c.cost);
          expertsInfo.calibration = { source: c.source, cost: c.cost, errors: c.errors };
          if ('file' in c) expertsInfo.calibration.file = c.file;
          if (c.deviceNote !== undefined) expertsInfo.calibration.deviceNote = c.deviceNote;
        } catch (err) {
          nativeModel.dispose();
          throw asTandemError(err);
        }
      }
    }
    try {
      // Sliding layers kept in blocks of their own (kv.slidingWindow > 0) stream only their window.
      const slidingLayers = kv.slidingWindow > 0 ? Array.from({ length: hp.nLayer }, (_, l) => l).filter((l) => l % hp.slidingWindowPeriod < hp.slidingWindowPeriod - 1).length : 0;
      const shape = costShapeOf(hp, nativeModel.info.kvBlockBytes, kvBlockTokens, { layers: slidingLayers, window: kv.slidingWindow });
      if (options.profile === 'quick') {
        const r = await profileModel(nativeModel, shape, { grid: QUICK_GRID, iters: 1, streamsHostKv: placement.streamsHostKv });
        r.model.samplingThreads = threads;
        policy = { name: dev.policy, cost: r.model };
        profile = { source: 'quick', errors: r.errors };
      } else {
        const base = profileKey(hp, { threads, cpuKernels, placement, kvBlockTokens, kvType, deviceThreads: options.deviceThreads });
        // Only the sizes this load can reach; a cached profile that reaches them serves it.
        const grid = gridWithin(DEFAULT_GRID, { requests: maxSequences, context: contextSize, stepTokens: schedulerConfig.maxStepTokens });
        // Expert policies with the same device bytes still run their steps differently.
        const key = ex ? { ...base, model: `${base.model} | experts ${ex.policy} ${ex.slots} slots` } : base;
        const r = await loadOrProfile(nativeModel, shape, key, {
          grid,
          cacheDir: options.profileCacheDir,
          refresh: options.profile === 'refresh',
          streamsHostKv: placement.streamsHostKv,
        });
        // The executor draws the step's tokens on the model's CPU threads.
        r.model.samplingThreads = threads;
        policy = { name: dev.policy, cost: r.model };
        profile = { source: r.fromCache ? 'cache' : 'profiled', file: r.file, errors: r.errors };
      }
    } catch (err) {
      nativeModel.dispose();
      throw asTandemError(err);
    }
    // A GPU's driver-side phase times are queueing, not work: its tables are refitted from whole steps only.
    policy.options = { refit: { deviceSynchronous: placement.device === 'cpu-standin' } };
    if (options.tpotSloMs !== undefined) policy.options.tpotSloUs = options.tpotSloMs * 1000;
    if (nativeModel.placement.streamsHostKv) {
      policy.options.streamHostKv = true;
      policy.options.streamBlocksMax = nativeModel.placement.streamBlocksMax;
    }
  } else {
    // device 'auto' found no GPU: the single-device CPU path.
    schedulerConfig.strategy = 'cpu';
  }
  const engine = new Engine(expertRefit ? refittingExecutor(nativeModel, expertRefit) : nativeModel, schedulerConfig, { policy, maxDecodeSteps: decodeBurst });
  const info: ModelInfo = {
    architecture: hp.architecture,
    nVocab: nativeModel.info.nVocab,
    nEmbd: hp.nEmbd,
    pooling: POOLING_TYPES[poolingType ?? 0] ?? 'last',
    contextSize,
    trainContextSize: hp.nCtxTrain,
    threads,
    cpuKernels,
    backends: [...nativeModel.info.backends],
    kvBlockTokens,
    numKvBlocks: budget.numBlocks.device + budget.numBlocks.host,
    kvBlocks: { ...budget.numBlocks },
    kvBlockBytes: nativeModel.info.kvBlockBytes,
    kvSlidingWindow: kv.slidingWindow,
    kvType,
    kvStream: placement.streamsHostKv,
    kvStreamBlocks: placement.streamBlocksMax,
    kvHostLocked: placement.hostKvLocked,
    draftTokens,
    decodeBurst,
    replyChannels: isHarmonyVocab(tokenizer.vocab.tokens),
    replyFormat: detectReplyFormat(tokenizer.vocab.tokens, template),
    kvBytesPerToken,
    device: placement.device,
    deviceName: placement.deviceName,
    // With no device every weight is in host RAM, whatever the native split says.
    placement: placement.device === null
      ? { deviceBytes: 0, hostBytes: placement.deviceBytes + placement.hostBytes, deviceTensors: 0, hostTensors: placement.deviceTensors + placement.hostTensors }
      : { deviceBytes: placement.deviceBytes, hostBytes: placement.hostBytes, deviceTensors: placement.deviceTensors, hostTensors: placement.hostTensors },
    policy: policy ? policy.name : 'cpu',
  };
  if (policy && options.tpotSloMs !== undefined) info.tpotSloMs = options.tpotSloMs;
  if (profile) info.profile = profile;
  if (expertsInfo) info.experts = expertsInfo;
  return new Model(path, info, nativeModel, engine, tokenizer, template, outputBuffer, expertRefit);
}

/** The expert calibration of this machine and model: cached beside the profiles (a first use times it once, with a progress bar). */
async function calibrateCached(
  nativeModel: NativeModel,
  hp: ModelDescription['hparams'],
  run: { threads: number; cpuKernels: string; kvBlockTokens: number; deviceThreads: number | undefined },
  options: LoadModelOptions,
): Promise<ExpertCalibration & { source: 'cache' | 'calibrated'; file: string }> {
  const base = profileKey(hp, { ...run, placement: nativeModel.placement });
  const ex = nativeModel.placement.experts!;
  const key = { machine: base.machine, model: `${base.model} | experts ${ex.policy} ${ex.slots} slots of ${ex.slotBytes}` };
  const bar = createProgressBar({ label: 'calibrating experts' });
  try {
    const r = await loadOrCalibrateExperts(nativeModel, key, { cacheDir: options.profileCacheDir, refresh: options.profile === 'refresh', onProgress: (f) => bar.update(f) });
    return { ...r, source: r.fromCache ? 'cache' : 'calibrated' };
  } finally {
    bar.done();
  }
}

export class Model {
  /** The GGUF file the model came from. */
  readonly path: string;
  readonly info: Readonly<ModelInfo>;
  private readonly nativeModel: NativeModel;
  private readonly engine: Engine;
  private readonly tokenizer: Tokenizer;
  private readonly templateSource: string | undefined;
  private template: ChatTemplate | undefined;
  /** The vocabulary as JSON mode reads it, built at the first JSON request. */
  private jsonVocab: JsonVocabulary | undefined;
  /** Start states of the schemas asked for lately, by their JSON text, least recent first. */
  private readonly schemaStarts = new Map<string, JsonState>();
  private disposed: Promise<void> | undefined;
  /** Unread streamed tokens that pause a request. */
  private readonly outputBufferTokens: number;
  private readonly stepListeners = new Set<(step: StepInfo) => void>();
  private readonly expertRefit: ExpertCostRefit | undefined;
  /** Steps since load, counted while a listener is subscribed (and before, from the engine's stats). */
  private stepCount = 0;

  /** Use loadModel(). */
  constructor(
    path: string,
    info: ModelInfo,
    nativeModel: NativeModel,
    engine: Engine,
    tokenizer: Tokenizer,
    template: string | undefined,
    outputBufferTokens = DEFAULT_OUTPUT_BUFFER,
    expertRefit?: ExpertCostRefit,
  ) {
    this.outputBufferTokens = outputBufferTokens;
    this.expertRefit = expertRefit;
    this.path = path;
    this.info = info;
    this.nativeModel = nativeModel;
    this.engine = engine;
    this.tokenizer = tokenizer;
    this.templateSource = template;
  }

  /** Queue and KV cache state, and running totals since load. */
  get stats(): ModelStats {
    const s = this.engine.stats;
    const stats: ModelStats = {
      numWaiting: s.numWaiting,
      numRunning: s.numRunning,
      numPaused: s.numPaused,
      numFreeKvBlocks: s.numFreeBlocks,
      numKvBlocks: s.numBlocks,
      numCachedKvBlocks: s.tiers.device.numCached + s.tiers.host.numCached,
      kvTiers: s.tiers,
      numSteps: s.numSteps,
      numRounds: s.numRounds,
      numRequests: s.numRequests,
      numFinished: s.numFinished,
      numAborted: s.numAborted,
      numFailed: s.numFailed,
      numRejected: s.numRejected,
      numPrefillTokens: s.numPrefillTokens,
      numCachedTokens: s.numCachedTokens,
      numGeneratedTokens: s.numGeneratedTokens,
      numPreemptions: s.numPreemptions,
      numMoves: s.numMoves,
      numDraftTokens: s.numDraftTokens,
      numAcceptedDrafts: s.numAcceptedDrafts,
      stepUs: s.stepUs,
      hostUs: s.hostUs,
      phaseUs: s.phaseUs,
    };
    const policy = this.engine.policy;
    if (policy) {
      const p = policy.stats;
      stats.policy = {
        name: policy.policy,
        steps: p.steps,
        strategies: { ...p.strategies },
        deferrals: p.deferrals,
        predictedSteps: p.predictedSteps,
        unshapedSteps: p.unshapedSteps,
        streamed: p.streamed,
      };
      if (p.predictedSteps > 0) stats.policy.meanStepError = policy.meanStepError;
    }
    if (this.expertRefit) stats.expertCosts = this.expertRefit.state;
    return stats;
  }

  /**
   * Calls `listener` after every engine step with what the step did: its strategy, the
   * sequences per KV tier, phase times and the policy's prediction beside the measured time.
   * Called on the event loop; a listener that throws is unsubscribed. Returns the unsubscribe.
   */
  onStep(listener: (step: StepInfo) => void): () => void {
    if (typeof listener !== 'function') throw new TandemError('TDM_BAD_ARGUMENT', 'onStep(): listener must be a function');
    if (this.stepListeners.size === 0) {
      this.stepCount = this.engine.stats.numSteps;
      this.engine.onStep = (plan, result, decision) => this.emitStep(plan, result, decision);
    }
    this.stepListeners.add(listener);
    return () => {
      this.stepListeners.delete(listener);
      if (this.stepListeners.size === 0) this.engine.onStep = undefined;
    };
  }

  private emitStep(plan: StepPlan, result: StepResult, decision: StepDecision | undefined): void {
    let device = 0;
    let host = 0;
    let cpuAttention = 0;
    let tokens = 0;
    let contextTokens = 0;
    let rounds = 1;
    for (const p of plan.sequences) {
      contextTokens += p.startPos + p.tokens.length;
      if (p.kvTier === 'device') device++;
      else host++;
      if (p.attention === 'cpu') cpuAttention++;
      const steps = p.decodeSteps ?? 1;
      tokens += p.tokens.length + steps - 1;
      rounds = Math.max(rounds, steps);
    }
    const info: StepInfo = {
      step: ++this.stepCount,
      policy: this.info.policy,
      strategy: plan.strategy,
      sequences: { device, host, deferred: decision ? decision.deferred.length : 0 },
      cpuAttention,
      tokens,
      contextTokens,
      rounds,
      copies: plan.copies.length,
      phaseUs: { ...result.phaseUs },
      totalUs: result.totalUs,
    };
    if (decision) info.predictedUs = decision.predicted.stepUs * rounds;
    if (result.experts) info.experts = { ...result.experts };
    for (const listener of [...this.stepListeners]) {
      try {
        listener(info);
      } catch {
        this.stepListeners.delete(listener);
        if (this.stepListeners.size === 0) this.engine.onStep = undefined;
      }
    }
  }

  /** The ids that end a generation (EOS, EOT, ...), unless ignoreEos is set. */
  get eogTokens(): number[] {
    return [...this.tokenizer.vocab.eogIds];
  }

  /**
   * Generates a continuation of `prompt` (text, tokenized with BOS as the vocabulary asks
   * and special tokens parsed, as llama.cpp's completion does; or token ids, used as given).
   * Bad options throw TDM_BAD_ARGUMENT here; a prompt that does not fit the context
   * rejects the result (and the iteration) with TDM_CONTEXT_FULL, and a full request queue
   * (maxQueuedRequests waiting) with TDM_QUEUE_FULL. A reader that stops iterating pauses
   * the request after outputBufferTokens unread tokens; awaiting only `result` never does.
   */
  generate(prompt: string | readonly number[], options?: GenerateOptions): Generation {
    const where = 'generate()';
    this.checkLive(where);
    const resolved = resolveGenerateOptions(where, options, this.info.nVocab, this.tokenizer.vocab.eogIds);
    if (resolved.json) resolved.params.constraint = this.jsonConstraint(resolved.params, resolved.json.schema);
    const tokens =
      typeof prompt === 'string'
        ? this.tokenizer.tokenizeAsync(prompt, { special: true })
        : Promise.resolve(checkTokenIds(where, prompt, this.info.nVocab));
    return this.start(tokens, resolved.params, resolved.stop, resolved.signal);
  }

  /**
   * Generates the assistant's reply to `messages`, rendered through the model's chat
   * template (ChatML for a file without one, as llama.cpp does).
   */
  chat(messages: readonly ChatMessage[], options?: ChatOptions): Generation {
    const where = 'chat()';
    this.checkLive(where);
    if (!Array.isArray(messages) || messages.length === 0) {
      throw new TandemError('TDM_BAD_ARGUMENT', `${where}: messages must be a non-empty array of {role, content}`);
    }
    messages.forEach((m, i) => {
      if (typeof m !== 'object' || m === null || typeof m.role !== 'string' || typeof m.content !== 'string') {
        throw new TandemError('TDM_BAD_ARGUMENT', `${where}: message ${i} must be {role: string, content: string}`);
      }
    });
    const { templateVariables, reasoning, ...rest } = options ?? {};
    if (templateVariables !== undefined && (typeof templateVariables !== 'object' || templateVariables === null)) {
      throw new TandemError('TDM_BAD_ARGUMENT', `${where}: templateVariables must be an object`);
    }
    if (reasoning !== undefined && reasoning !== 'split' && reasoning !== 'raw') {
      throw new TandemError('TDM_BAD_ARGUMENT', `${where}: reasoning must be 'split' or 'raw', got ${String(reasoning)}`);
    }
    const resolved = resolveGenerateOptions(where, rest, this.info.nVocab, this.tokenizer.vocab.eogIds);
    if (resolved.json) {
      // Harmony's reply opens with channel markers (control tokens) that JSON mode cannot draw.
      if (this.info.replyFormat.reasoning === 'harmony') {
        throw new TandemError('TDM_UNSUPPORTED', `${where}: a JSON responseFormat is not offered for harmony-format models (gpt-oss): their replies open with channel markers`);
      }
      resolved.params.constraint = this.jsonConstraint(resolved.params, resolved.json.schema);
    }
    // A JSON reply holds no reasoning or tool-call markers to take apart.
    const splitter = reasoning === 'raw' || resolved.json ? undefined : this.replySplitter(templateVariables);
    const tokens = this.renderChat(messages, templateVariables).then((text) => {
      if (splitter instanceof TaggedReplySplitter && promptOpensThink(text)) splitter.startInReasoning();
      // The template writes BOS itself where the model wants one; parse it as the special token.
      return this.tokenizer.tokenizeAsync(text, { addBos: this.addBosForTemplate(text), special: true });
    });
    return this.start(tokens, resolved.params, resolved.stop, resolved.signal, splitter);
  }

  /**
   * JSON mode for one request. The vocabulary's side is built at the first such request and
   * kept; a schema's start state is kept too (by its text), so that a schema sent again reuses
   * the masks cached for it.
   */
  private jsonConstraint(params: SequenceParams, schema: object | undefined): JsonConstraint {
    let start = JSON_START;
    if (schema) {
      const text = JSON.stringify(schema);
      start = this.schemaStarts.get(text) ?? startState(compileSchema(schema));
      this.schemaStarts.delete(text);
      this.schemaStarts.set(text, start);
      if (this.schemaStarts.size > SCHEMAS_KEPT) this.schemaStarts.delete(this.schemaStarts.keys().next().value!);
    }
    this.jsonVocab ??= new JsonVocabulary(this.info.nVocab, (id) => this.tokenizer.tokenBytes(id));
    return new JsonConstraint(this.jsonVocab, (id) => this.tokenizer.tokenBytes(id), [...params.stopTokens], start);
  }

  /**
   * What takes a chat reply apart (info.replyFormat): harmony's channels; <think> reasoning;
   * tool calls in the template's format when the request offers tools. Undefined: none.
   */
  private replySplitter(templateVariables: Record<string, unknown> | undefined): HarmonySplitter | TaggedReplySplitter | undefined {
    const format = this.info.replyFormat;
    if (format.reasoning === 'harmony') return new HarmonySplitter();
    const tools = templateVariables?.tools;
    const offered = Array.isArray(tools) && tools.length > 0;
    const toolCalls = offered && format.toolCalls !== null && format.toolCalls !== 'harmony' ? format.toolCalls : null;
    if (format.reasoning !== 'think' && toolCalls === null) return undefined;
    return new TaggedReplySplitter({ think: format.reasoning === 'think', toolCalls });
  }


  /** The prompt text chat() would generate from: `messages` through the chat template, opening the assistant's turn. */
  async renderChat(messages: readonly ChatMessage[], templateVariables?: Record<string, unknown>): Promise<string> {
    this.checkLive('renderChat()');
    return (await this.chatTemplate()).render(messages, { addGenerationPrompt: true, variables: templateVariables });
  }

  /** Text to token ids. */
  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    this.checkLive('tokenize()');
    if (options === null || typeof options !== 'object') throw new TandemError('TDM_BAD_ARGUMENT', 'tokenize(): options must be an object');
    checkKnownKeys('tokenize()', options, new Set(['addBos', 'special']));
    return this.tokenizer.tokenize(text, { addBos: options.addBos === false ? false : undefined, special: options.special });
  }

  /** Token ids to text (special tokens render as nothing). */
  detokenize(tokens: readonly number[]): string {
    this.checkLive('detokenize()');
    return this.tokenizer.detokenize(checkTokenIds('detokenize()', tokens, this.info.nVocab));
  }

  /**
   * Teacher forcing: runs `tokens` through the model and resolves to the logits after each
   * of them (row i scores the token at position i + 1), one Float32Array of n_vocab per token.
   */
  async evaluate(tokens: readonly number[]): Promise<Float32Array[]> {
    const where = 'evaluate()';
    this.checkLive(where);
    const ids = checkTokenIds(where, tokens, this.info.nVocab);
    const nVocab = this.info.nVocab;
    const rows: Float32Array[] = new Array(ids.length);
    const params = promptOnly({ returnPromptLogits: true });
    await new Promise<void>((resolve, reject) => {
      this.engine.submit(ids, params, {
        onPromptLogits: (startPos, count, logits) => {
          for (let i = 0; i < count; i++) rows[startPos + i] = logits.slice(i * nVocab, (i + 1) * nVocab);
        },
        onFinish: () => resolve(),
        onError: reject,
      });
    });
    return rows;
  }

  /**
   * One vector for `input`: text (tokenized with BOS and EOS as the vocabulary asks and
   * special-token text left as text, as llama.cpp tokenizes for embeddings) or token ids (used
   * as given). Its tokens' hidden states after the output norm (what the LM head reads) are
   * pooled (`pooling`, default `info.pooling`) and scaled to unit length unless `normalize` is
   * false. Requests share steps with generations. Throws TDM_BAD_ARGUMENT for bad options or an
   * input with no tokens; rejects with TDM_CONTEXT_FULL for one longer than the context and
   * TDM_ABORTED when `signal` aborts (the request's memory is freed).
   */
  async embed(input: string | readonly number[], options: EmbedOptions = {}): Promise<Float32Array> {
    const where = 'embed()';
    this.checkLive(where);
    if (options === null || typeof options !== 'object') throw new TandemError('TDM_BAD_ARGUMENT', `${where}: options must be an object`);
    checkKnownKeys(where, options, new Set(['pooling', 'normalize', 'signal']));
    const pooling = options.pooling ?? this.info.pooling;
    if (pooling === 'rank') {
      throw new TandemError(
        'TDM_UNSUPPORTED',
        `${where}: ${this.path} is a reranker (pooling type rank), whose scores need its classifier head, which tandem does not run; pass pooling to embed its hidden states anyway`,
      );
    }
    if (pooling !== 'mean' && pooling !== 'cls' && pooling !== 'last') {
      throw new TandemError('TDM_BAD_ARGUMENT', `${where}: pooling must be 'mean', 'cls' or 'last', got ${String(pooling)}`);
    }
    if (options.normalize !== undefined && typeof options.normalize !== 'boolean') throw new TandemError('TDM_BAD_ARGUMENT', `${where}: normalize must be a boolean`);
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: signal must be an AbortSignal`);
    if (typeof input !== 'string' && !Array.isArray(input)) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: input must be a string or an array of token ids`);
    const ids = typeof input === 'string' ? await this.tokenizer.tokenizeAsync(input, { special: false }) : checkTokenIds(where, input, this.info.nVocab);
    if (ids.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: the input has no tokens to embed`);
    this.checkLive(where);
    const aborted = () => new TandemError('TDM_ABORTED', `${where}: aborted`);
    if (signal?.aborted) throw aborted();
    const E = this.info.nEmbd;
    // Summed in double: a mean over thousands of rows keeps float's precision.
    const sum = new Float64Array(E);
    const want = pooling === 'cls' ? 0 : ids.length - 1;
    const params = promptOnly({ returnPromptEmbeddings: true });
    await new Promise<void>((resolve, reject) => {
      let seqId = -1;
      const onAbort = () => this.engine.cancel(seqId, 'aborted');
      const settle = () => signal?.removeEventListener('abort', onAbort);
      try {
        seqId = this.engine.submit(ids, params, {
          onPromptEmbeddings: (startPos, count, rows) => {
            for (let i = 0; i < count; i++) {
              const pos = startPos + i;
              if (pooling !== 'mean' && pos !== want) continue;
              const row = rows.subarray(i * E, (i + 1) * E);
              for (let e = 0; e < E; e++) sum[e]! += row[e]!;
            }
          },
          onFinish: (reason) => {
            settle();
            if (reason === 'aborted') reject(aborted());
            else resolve();
          },
          onError: (err) => {
            settle();
            reject(err);
          },
        });
      } catch (err) {
        reject(asTandemError(err));
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    const out = new Float32Array(E);
    const scale = pooling === 'mean' ? 1 / ids.length : 1;
    let norm = 0;
    for (let e = 0; e < E; e++) norm += (sum[e]! * scale) ** 2;
    // A zero vector stays zero, as llama.cpp's normalisation leaves it.
    const unit = options.normalize === false || norm === 0 ? scale : scale / Math.sqrt(norm);
    for (let e = 0; e < E; e++) out[e] = sum[e]! * unit;
    return out;
  }

  /**
   * Frees the model: running generations fail with TDM_DISPOSED, the step in flight
   * finishes, then native memory is released. Later calls throw TDM_DISPOSED.
   */
  dispose(): Promise<void> {
    this.disposed ??= this.engine.close().then(() => this.nativeModel.dispose());
    return this.disposed;
  }

  private start(
    tokens: Promise<number[]>,
    params: SequenceParams,
    stop: string[],
    signal: AbortSignal | undefined,
    splitter?: ReplySplitter,
  ): Generation {
    let seqId: number | undefined;
    const gen: GenerationStream = new GenerationStream({
      decoder: this.continuationDecoder(),
      stop,
      signal,
      ...(splitter ? { splitter } : {}),
      tokenBytes: (token) => this.tokenizer.tokenBytes(token),
      cancel: (reason) => {
        if (seqId === undefined) gen.onFinish(reason);
        else this.engine.cancel(seqId, reason);
      },
      pause: (paused) => {
        if (seqId !== undefined) this.engine.setPaused(seqId, paused);
      },
      bufferTokens: this.outputBufferTokens,
      startMs: performance.now(),
    });
    tokens.then(
      (ids) => {
        if (gen.ended) return;
        gen.setPromptTokens(ids.length);
        if (signal?.aborted) {
          gen.abort();
          return;
        }
        try {
          seqId = this.engine.submit(ids, params, gen);
        } catch (err) {
          gen.onError(asTandemError(err));
        }
      },
      (err) => gen.onError(asTandemError(err)),
    );
    return gen;
  }

  /**
   * The streaming decoder for generated text. A decoder drops the space SentencePiece puts
   * before a text's first word, which a continuation must keep; pushing BOS first (a
   * control token, rendered as nothing) uses up that first-piece rule.
   */
  private continuationDecoder() {
    const decoder = this.tokenizer.createDecoder();
    if (this.tokenizer.bosId >= 0) decoder.push(this.tokenizer.bosId);
    return decoder;
  }

  /**
   * The compiled chat template (ChatML when the file has none, as llama.cpp does); the
   * template engine is loaded on first use.
   */
  private async chatTemplate(): Promise<ChatTemplate> {
    if (!this.template) {
      const { ChatTemplate, CHATML_TEMPLATE } = await import('../model/chat-template.js');
      this.template = new ChatTemplate(
        {
          source: this.templateSource ?? CHATML_TEMPLATE,
          isFallback: this.templateSource === undefined,
          origin: `${this.path}: tokenizer.chat_template`,
        },
        this.tokenizer,
      );
    }
    return this.template;
  }

  /** BOS is added unless the rendered template already begins with it. */
  private addBosForTemplate(text: string): boolean {
    const v = this.tokenizer.vocab;
    if (!v.addBos || v.bosId < 0) return false;
    return !text.startsWith(v.tokens[v.bosId]!);
  }

  private checkLive(where: string): void {
    if (this.disposed) throw new TandemError('TDM_DISPOSED', `${where}: the model was disposed`);
  }
}
