// Predicted wall time of one step under each strategy, from the cost model's subtask times,
// following the executor's schedule (native/core/executor.cpp): in order ('cpu',
// 'gpu-only'); one batch with CPU attention beside the device's and a join before o_proj
// ('overlap', APEX); two sub-batches whose device and CPU work alternate ('pipeline', NEO).
// Every layer is alike, so whole-step subtask times stand in for per-layer ones. Host-tier
// sequences with device attention (streamed) are device decodes whose KV also crosses the link,
// a layer at a time beside the pass: the pass lasts at least that copy and its last layer. Around the
// forward pass: the swaps before it, and the host's per-sequence sampling after it; the
// forward pass is scaled by the strategy's measured-over-predicted factor (learned online:
// on a GPU, waits and launch gaps no profiled subtask shows). A batch is summarised as a load
// (sums over its sequences) so that policies can try placements in O(1).
import type { AttentionDevice, Strategy } from '../native/step-plan.js';
import type { CostModel } from './cost-model.js';

/** One sequence's work in a step. */
export interface SeqWork {
  /** New tokens this step (1 for a decode, more for a prefill chunk). */
  tokens: number;
  /** Tokens cached before them. */
  context: number;
  attention: AttentionDevice;
  /** Sub-batch under 'pipeline' (default: device-attention sequences in 0, the CPU's in 1). */
  subBatch?: 0 | 1;
  /** Device attention over host-tier KV: this many KV blocks cross the link this step (native/core/executor.cpp gathers them a layer at a time). */
  streamedBlocks?: number;
}

/** What a (sub-)batch asks of each device: sums over its sequences. */
export interface Load {
  /** Rows through the linear layers. */
  tokens: number;
  gpuDecodes: number;
  /** Sum of the device decodes' cached tokens. */
  gpuDecodeContext: number;
  cpuDecodes: number;
  cpuDecodeContext: number;
  /** Prefill attention already priced (µs), per side. */
  gpuPrefillUs: number;
  cpuPrefillUs: number;
  /** Rows whose q/k/v go down and outputs come up. */
  cpuRows: number;
  /** Sequences, each sampled once after the pass. */
  seqs: number;
  /** Host KV blocks streamed to the device for its attention. */
  streamedBlocks: number;
}

export function emptyLoad(): Load {
  return { tokens: 0, gpuDecodes: 0, gpuDecodeContext: 0, cpuDecodes: 0, cpuDecodeContext: 0, gpuPrefillUs: 0, cpuPrefillUs: 0, cpuRows: 0, seqs: 0, streamedBlocks: 0 };
}

/** Adds one sequence's work to a load (in place) and returns it. */
export function addWork(load: Load, w: SeqWork, cost: CostModel): Load {
  load.tokens += w.tokens;
  load.seqs++;
  if (w.attention === 'cpu') load.cpuRows += w.tokens;
  else if (w.streamedBlocks) load.streamedBlocks += w.streamedBlocks;
  if (w.tokens === 1) {
    if (w.attention === 'gpu') {
      load.gpuDecodes++;
      load.gpuDecodeContext += w.context;
    } else {
      load.cpuDecodes++;
      load.cpuDecodeContext += w.context;
    }
  } else if (w.attention === 'gpu') {
    load.gpuPrefillUs += cost.prefillAttentionUs(w.tokens, w.context);
  } else {
    load.cpuPrefillUs += cost.cpuPrefillAttentionUs(w.tokens, w.context);
  }
  return load;
}

interface SideTime {
  tokens: number;
  deviceUs: number;
  cpuUs: number;
  transferUs: number;
}

/** The linear work of a pass over `tokens` rows that samples `seqs` sequences: the head (where the tables price it apart) runs for the sampled rows only. */
function linearPassUs(tokens: number, seqs: number, cost: CostModel): number {
  return cost.linearUs(tokens) + (seqs > 0 ? (cost.headUs?.(seqs) ?? 0) : 0);
}

function deviceSideUs(l: Load, cost: CostModel): number {
  return l.gpuPrefillUs + (l.gpuDecodes > 0 ? cost.deviceAttentionUs(l.gpuDecodes, l.gpuDecodeContext / l.gpuDecodes) : 0);
}

function cpuSideUs(l: Load, cost: CostModel): number {
  return l.cpuPrefillUs + (l.cpuDecodes > 0 ? cost.cpuAttentionUs(l.cpuDecodes, l.cpuDecodeContext / l.cpuDecodes) : 0);
}

function transferSideUs(l: Load, cost: CostModel): number {
  const sh = cost.shape;
  // Per layer: q, k and v down in three copies, the output up in one.
  return l.cpuRows > 0 ? sh.nLayer * (3 * cost.copyUs((l.cpuRows * sh.qkvBytesPerToken) / 3) + cost.copyUs(l.cpuRows * sh.outBytesPerToken)) : 0;
}

function sideTime(l: Load, cost: CostModel): SideTime {
  return { tokens: l.tokens, deviceUs: deviceSideUs(l, cost), cpuUs: cpuSideUs(l, cost), transferUs: transferSideUs(l, cost) };
}

/**
 * The forward pass of predictLoads('pipeline', b0, b1) alone, allocating nothing: what the
 * load-aware split compares for each host decode (the strategy's factor, sampling and swaps
 * are the same on both sides of that comparison).
 */
export function pipelinePassUs(b0: Load, b1: Load, cost: CostModel): number {
  if (b0.tokens > 0 && b1.tokens > 0) {
    const dev0 = linearPassUs(b0.tokens, b0.seqs, cost) + deviceSideUs(b0, cost);
    const dev1 = linearPassUs(b1.tokens, b1.seqs, cost) + deviceSideUs(b1, cost);
    const cpu0 = cpuSideUs(b0, cost) + transferSideUs(b0, cost);
    const cpu1 = cpuSideUs(b1, cost) + transferSideUs(b1, cost);
    return Math.max(dev0, cpu1) + Math.max(dev1, cpu0);
  }
  // One side empty: predictLoads merges them, and the merge is the other side.
  const l = b0.tokens > 0 ? b0 : b1;
  if (l.tokens === 0) return 0;
  return linearPassUs(l.tokens, l.seqs, cost) + Math.max(deviceSideUs(l, cost), cpuSideUs(l, cost) + transferSideUs(l, cost));
}

/** Adds (sign 1) or takes back (sign -1) one host decode at `context` in a load, in place: exact, as every term is a whole number. */
export function shiftCpuDecode(load: Load, context: number, sign: 1 | -1): void {
  load.tokens += sign;
  load.seqs += sign;
  load.cpuRows += sign;
  load.cpuDecodes += sign;
  load.cpuDecodeContext += sign * context;
}

/** A predicted step, in microseconds. */
export interface StepTime {
  stepUs: number;
  /** Linear work, summed over sub-batches. */
  linearUs: number;
  deviceAttentionUs: number;
  cpuAttentionUs: number;
  /** q/k/v down and outputs up for CPU attention. */
  transferUs: number;
  /** KV block copies (swaps) before the forward pass. */
  copiesUs: number;
  /** Time the device spent waiting for the CPU (CPU attention not hidden). */
  exposedCpuUs: number;
  /** The forward pass as the subtask tables put it, before `factor`. */
  passUs: number;
  /** The strategy's measured-over-predicted factor applied to passUs, times the stream factor on a step that streams host KV (1 when none is known). */
  factor: number;
  /** Host sampling of every sequence after the pass. */
  samplingUs: number;
  /** Streamed host KV over the link, beside the pass (0 when none). */
  streamUs: number;
}

/** The cost model's strategy factor, 1 without one (or a non-finite or non-positive one). */
function factorOf(cost: CostModel, strategy: Strategy): number {
  const f = cost.strategyFactor?.(strategy) ?? 1;
  return Number.isFinite(f) && f > 0 ? f : 1;
}

/** The link time of `blocks` streamed KV blocks: as profiled, else one copy's rate (the gathers run back to back on their own stream). */
export function streamUs(blocks: number, cost: CostModel): number {
  if (!(blocks > 0)) return 0;
  return cost.streamUs?.(blocks) ?? cost.copyUs(blocks * cost.shape.kvBlockBytes);
}

/**
 * Completes a prediction: the pass stretched to the streamed copy where that is longer (the
 * last layer's gather must land before its attention, so the pass ends no sooner than the
 * copy and one layer after it), scaled by the strategy's factor (and a streamed step's by the
 * stream factor too), then sampling and swaps added.
 */
function finish(strategy: Strategy, t: Omit<StepTime, 'stepUs' | 'factor' | 'samplingUs' | 'streamUs'>, seqs: number, cost: CostModel, streamedBlocks = 0): StepTime {
  const stream = streamUs(streamedBlocks, cost);
  const passUs = stream > 0 ? Math.max(t.passUs, stream + t.passUs / Math.max(1, cost.shape.nLayer)) : t.passUs;
  const streamFactor = stream > 0 ? cost.streamFactor?.() ?? 1 : 1;
  const factor = passUs > 0 ? factorOf(cost, strategy) * (Number.isFinite(streamFactor) && streamFactor > 0 ? streamFactor : 1) : 1;
  const samplingUs = seqs > 0 ? (cost.samplingUs?.(seqs) ?? 0) : 0;
  // Fields listed, not spread: policies make thousands of these a step.
  return {
    stepUs: factor * passUs + samplingUs + t.copiesUs, linearUs: t.linearUs, deviceAttentionUs: t.deviceAttentionUs, cpuAttentionUs: t.cpuAttentionUs,
    transferUs: t.transferUs, copiesUs: t.copiesUs, exposedCpuUs: t.exposedCpuUs, passUs, factor, samplingUs, streamUs: stream,
  };
}

/** The predicted step of one batch (`b1` absent or empty) or two pipelined sub-batches, with `copyBlocks` KV blocks swapped first. */
export function predictLoads(strategy: Strategy, b0: Load, b1: Load | undefined, cost: CostModel, copyBlocks = 0): StepTime {
  const copiesUs = copyBlocks > 0 ? copyBlocks * cost.copyUs(cost.shape.kvBlockBytes) : 0;
  if (strategy === 'pipeline' && b1 && b0.tokens > 0 && b1.tokens > 0) {
    const s0 = sideTime(b0, cost);
    const s1 = sideTime(b1, cost);
    const lin0 = linearPassUs(s0.tokens, b0.seqs, cost);
    const lin1 = linearPassUs(s1.tokens, b1.seqs, cost);
    const dev0 = lin0 + s0.deviceUs;
    const dev1 = lin1 + s1.deviceUs;
    const cpu0 = s0.cpuUs + s0.transferUs;
    const cpu1 = s1.cpuUs + s1.transferUs;
    return finish(strategy, {
      passUs: Math.max(dev0, cpu1) + Math.max(dev1, cpu0),
      linearUs: lin0 + lin1,
      deviceAttentionUs: s0.deviceUs + s1.deviceUs,
      cpuAttentionUs: s0.cpuUs + s1.cpuUs,
      transferUs: s0.transferUs + s1.transferUs,
      copiesUs,
      exposedCpuUs: Math.max(0, cpu1 - dev0) + Math.max(0, cpu0 - dev1),
    }, b0.seqs + b1.seqs, cost, b0.streamedBlocks + b1.streamedBlocks);
  }
  const all = b1 && b1.tokens > 0 ? merge(b0, b1) : b0;
  if (all.tokens === 0) return finish(strategy, { passUs: 0, linearUs: 0, deviceAttentionUs: 0, cpuAttentionUs: 0, transferUs: 0, copiesUs, exposedCpuUs: 0 }, 0, cost);
  const s = sideTime(all, cost);
  const linearUs = linearPassUs(s.tokens, all.seqs, cost);
  const cpu = s.cpuUs + s.transferUs;
  const concurrent = strategy === 'overlap' || strategy === 'pipeline';
  return finish(strategy, {
    passUs: linearUs + (concurrent ? Math.max(s.deviceUs, cpu) : s.deviceUs + cpu),
    linearUs,
    deviceAttentionUs: s.deviceUs,
    cpuAttentionUs: s.cpuUs,
    transferUs: s.transferUs,
    copiesUs,
    exposedCpuUs: concurrent ? Math.max(0, cpu - s.deviceUs) : cpu,
  }, all.seqs, cost, all.streamedBlocks);
}

export function merge(a: Load, b: Load): Load {
  return {
    tokens: a.tokens + b.tokens,
    gpuDecodes: a.gpuDecodes + b.gpuDecodes,
    gpuDecodeContext: a.gpuDecodeContext + b.gpuDecodeContext,
    cpuDecodes: a.cpuDecodes + b.cpuDecodes,
    cpuDecodeContext: a.cpuDecodeContext + b.cpuDecodeContext,
    gpuPrefillUs: a.gpuPrefillUs + b.gpuPrefillUs,
    cpuPrefillUs: a.cpuPrefillUs + b.cpuPrefillUs,
    cpuRows: a.cpuRows + b.cpuRows,
    seqs: a.seqs + b.seqs,
    streamedBlocks: a.streamedBlocks + b.streamedBlocks,
  };
}

/** The executor's sub-batch of each sequence under 'pipeline' (plan-given, else device attention in 0, the CPU's in 1, or the CPU's halved by tokens when none is on the device). */
export function pipelineSplit(seqs: readonly SeqWork[]): (0 | 1)[] {
  const nDev = seqs.filter((s) => s.attention === 'gpu').length;
  const cpuTokens = seqs.filter((s) => s.attention === 'cpu').reduce((n, s) => n + s.tokens, 0);
  let seen = 0;
  return seqs.map((s) => {
    if (s.subBatch !== undefined) return s.subBatch;
    if (s.attention === 'gpu') return 0;
    const b: 0 | 1 = nDev > 0 || seen * 2 >= cpuTokens ? 1 : 0;
    seen += s.tokens;
    return b;
  });
}

/** The predicted wall time of a step of `seqs` under `strategy`, with `copyBlocks` KV blocks swapped first. */
export function predictStep(strategy: Strategy, seqs: readonly SeqWork[], cost: CostModel, copyBlocks = 0): StepTime {
  const b0 = emptyLoad();
  const b1 = emptyLoad();
  const split = strategy === 'pipeline' ? pipelineSplit(seqs) : undefined;
  seqs.forEach((s, i) => addWork(split?.[i] === 1 ? b1 : b0, s, cost));
  return predictLoads(strategy, b0, b1, cost, copyBlocks);
}
