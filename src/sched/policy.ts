// The policies' common ground: what a policy sees (requests, KV state, the cost model),
// what it decides for one step (strategy, where each sequence's attention runs, its
// sub-batch, which host sequences sit this step out, where new requests' KV goes, which
// tables move between tiers), and the memory rules they share. Policies are pure functions
// of their input, so tests drive them with a fake cost model and hand-made requests.
import type { AttentionDevice, KvTier, Strategy } from '../native/step-plan.js';
import { streamedBlocksOf, type CostModel, type CostShape } from './cost-model.js';
import { predictStep, type SeqWork, type StepTime } from './step-time.js';

export const POLICY_NAMES = ['gpu-only', 'pipeline', 'overlap', 'auto'] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

/** A live request as a policy sees it. */
export interface RequestView {
  seqId: number;
  /** The tier holding its KV; undefined while it waits for admission. */
  tier: KvTier | undefined;
  /** Tokens whose KV is cached (positions [0, context)). */
  context: number;
  /** Tokens it would process this step: 1 for a decode, the chunk for a prefill (the whole prompt while waiting). */
  newTokens: number;
  /** KV blocks it holds, over both its tables when sliding layers have their own (see KvView.slidingWindow). */
  numBlocks: number;
  /** Rounds in a row it was left out of while it could have run (each round of a decode burst it sat out counts). */
  deferredSteps: number;
  /** Admission order: smaller is older (the priority order of vLLM's preemption). */
  arrival: number;
  /** Tokens it may still generate (its maxTokens less those generated), when known. */
  remainingTokens?: number;
  /** Running requests: tokens it has still to process before it decodes (the rest of its prompt, this step's chunk included; 1 for a decode), when known. */
  pendingTokens?: number;
}

/** Block counts of one tier. */
export interface TierView {
  numBlocks: number;
  /** Blocks that can be handed out now. */
  numFree: number;
}

export interface KvView {
  blockTokens: number;
  /** > 0: sliding layers keep a table of their own, which holds only this window's blocks (0 or absent: one table). */
  slidingWindow?: number;
  /** Layer groups the sliding layers fill: sliding blocks per block index (default 1). */
  slidingGroups?: number;
  /** The longest prefill chunk (bounds a long prompt's sliding blocks); absent: prompts run whole. */
  maxChunkTokens?: number;
  device: TierView;
  host: TierView;
}

export interface PolicyOptions {
  /** Latency target per decode step (µs); auto keeps its predicted step under it when any choice can. */
  tpotSloUs?: number;
  /** Rounds in a row a host-tier sequence may be left out before it must run (a step is one round, a decode burst one per draw). Default 4. */
  maxDeferSteps?: number;
  /** Fraction of device blocks kept free when admitting or moving tables in, for running sequences to grow. Default 0.02. */
  deviceHeadroom?: number;
  /**
   * The executor can run device attention over host-tier KV, gathering each layer's blocks
   * across the link beside the device's work (NativeModel placement.streamsHostKv): auto may
   * then stream host sequences that the CPU's attention cannot hide. Default false.
   */
  streamHostKv?: boolean;
  /** The most host KV blocks one step may stream, over all its sequences (placement.streamBlocksMax: the staging's room). Absent: no limit. */
  streamBlocksMax?: number;
}

export interface PolicyInput {
  /** Running requests (each in a tier), in the scheduler's order. */
  running: readonly RequestView[];
  /** Requests waiting for admission, in queue order. */
  waiting: readonly RequestView[];
  kv: KvView;
  cost: CostModel;
  options?: PolicyOptions;
}

/** How one running sequence takes part in the step. */
export interface SeqDecision {
  seqId: number;
  attention: AttentionDevice;
  /** Under 'pipeline': its sub-batch. */
  subBatch?: 0 | 1;
}

/** Where a waiting request's KV goes when it is admitted. */
export interface Admission {
  seqId: number;
  tier: KvTier;
  /** Prefilled in the device tier, then its table moves to the host tier (one copy of its prompt's blocks) to decode there. */
  demoteAfterPrefill?: boolean;
}

/** One strategy and host subset a policy weighed. */
export interface Candidate {
  strategy: Strategy;
  /** Host-tier sequences included. */
  numHost: number;
  stepUs: number;
  tokens: number;
  tokensPerSecond: number;
  meetsSlo: boolean;
}

export interface StepDecision {
  policy: PolicyName;
  strategy: Strategy;
  /** Running sequences that take part in the step, with their attention device and sub-batch. */
  sequences: SeqDecision[];
  /** Running sequences left out of this step (host-tier ones whose CPU attention would cost more than it brings, or, under gpu-only, tables swapped out). */
  deferred: number[];
  /** Tier for each waiting request admitted now (in queue order); requests not listed keep waiting. */
  admit: Admission[];
  /** Host-tier tables to move to the device tier before the step. */
  swapIn: number[];
  /** Device-tier tables to give up to make room: moved to the host tier, or dropped and recomputed later. */
  swapOut: { seqId: number; to: KvTier | 'recompute' }[];
  predicted: { stepUs: number; tokens: number; tokensPerSecond: number; time: StepTime };
  /** What auto (and pipeline's load-aware split) compared, best last considered. */
  candidates: Candidate[];
}

export const DEFAULT_MAX_DEFER_STEPS = 4;
export const DEFAULT_DEVICE_HEADROOM = 0.02;

export function blocksFor(tokens: number, blockTokens: number): number {
  return Math.ceil(tokens / blockTokens);
}

/**
 * Blocks a sequence's tables hold while it computes positions [context, end): its full
 * table, and with sliding layers kept apart the sliding blocks from the window of
 * `context` on (the engine frees those behind it; see KvBlockManager.slidingFirst).
 */
export function tableBlocks(kv: KvView, context: number, end: number): number {
  const full = blocksFor(end, kv.blockTokens);
  const window = kv.slidingWindow ?? 0;
  if (window <= 0) return full;
  const first = Math.floor(Math.max(0, context - window + 1) / kv.blockTokens);
  return full + (kv.slidingGroups ?? 1) * Math.max(0, full - first);
}

/** Blocks each running request of `tier` needs added to run this step. */
export function growth(reqs: readonly RequestView[], tier: KvTier, kv: KvView): number {
  let n = 0;
  for (const r of reqs) if (r.tier === tier) n += Math.max(0, tableBlocks(kv, r.context, r.context + r.newTokens) - r.numBlocks);
  return n;
}

/**
 * Blocks the prefills running in `tier` will still take for the rest of their prompts and
 * their first token, beyond this step's growth: promised to them, since a chunked prefill
 * holds its blocks chunk by chunk. Admissions and moves back that count them as free
 * over-commit the tier, and a prefill is then swapped out half done.
 */
export function committedPrompt(reqs: readonly RequestView[], tier: KvTier, kv: KvView): number {
  let n = 0;
  for (const r of reqs) {
    if (r.tier !== tier || r.pendingTokens === undefined || r.pendingTokens <= r.newTokens) continue;
    const thisStep = Math.max(r.numBlocks, tableBlocks(kv, r.context, r.context + r.newTokens));
    n += Math.max(0, promptBlocks(kv, r.context, r.pendingTokens) - thisStep);
  }
  return n;
}

/** A request's work this step; device attention over host-tier KV streams its blocks (streamedBlocksOf `shape`; absent: blocks of 16 positions, one KV group). */
export function work(r: RequestView, attention: AttentionDevice, subBatch?: 0 | 1, shape?: StreamShape): SeqWork {
  const w: SeqWork = subBatch === undefined ? { tokens: r.newTokens, context: r.context, attention } : { tokens: r.newTokens, context: r.context, attention, subBatch };
  if (attention === 'gpu' && r.tier === 'host') w.streamedBlocks = streamedBlocksOf(shape ?? { nLayer: 1 }, r.context, r.newTokens);
  return w;
}

/** What counts a streamed sequence's blocks: the positions in a block, and sliding layers kept apart. */
export type StreamShape = Pick<CostShape, 'nLayer' | 'kvBlockTokens' | 'slidingKv'>;

/** The KV blocks of a host-tier request's table that streaming it would stage (its full table: executor.cpp's staging bound). */
export function stagedBlocks(r: RequestView, blockTokens: number): number {
  return Math.ceil((r.context + r.newTokens) / blockTokens);
}

/** Attention where the request's KV lives. */
export function naturalAttention(r: RequestView): AttentionDevice {
  return r.tier === 'device' ? 'gpu' : 'cpu';
}

export function candidate(strategy: Strategy, numHost: number, time: StepTime, tokens: number, slo: number | undefined): Candidate {
  const tokensPerSecond = time.stepUs > 0 ? (tokens * 1e6) / time.stepUs : 0;
  return { strategy, numHost, stepUs: time.stepUs, tokens, tokensPerSecond, meetsSlo: slo === undefined || time.stepUs <= slo };
}

/**
 * The most blocks a prompt of `tokens` positions from `context` holds at once, its first
 * generated token included. One table holds all of it; a sliding table holds at most the
 * window behind a chunk and the chunk (as engine/kv-blocks.ts's blocksPerSequence counts).
 */
export function promptBlocks(kv: KvView, context: number, tokens: number): number {
  const end = context + tokens + 1;
  const window = kv.slidingWindow ?? 0;
  const chunk = kv.maxChunkTokens ?? tokens + 1;
  if (window <= 0 || tokens + 1 <= chunk) return tableBlocks(kv, context, end);
  const full = blocksFor(end, kv.blockTokens);
  return full + (kv.slidingGroups ?? 1) * Math.min(full, Math.ceil((window - 1 + chunk) / kv.blockTokens) + 1);
}

/**
 * Device tables to give up when the device tier cannot hold this step's growth: the newest
 * first (vLLM's priority), each moved to the host tier when it has room (`toHost`), else
 * dropped for recompute.
 */
export function makeDeviceRoom(running: readonly RequestView[], kv: KvView, toHost: boolean): { seqId: number; to: KvTier | 'recompute' }[] {
  const out: { seqId: number; to: KvTier | 'recompute' }[] = [];
  let need = growth(running, 'device', kv);
  let free = kv.device.numFree;
  let hostFree = kv.host.numFree;
  const newestFirst = running.filter((r) => r.tier === 'device').sort((a, b) => b.arrival - a.arrival);
  for (const victim of newestFirst) {
    if (need <= free) break;
    const own = Math.max(0, tableBlocks(kv, victim.context, victim.context + victim.newTokens) - victim.numBlocks);
    const moveTo = toHost && hostFree >= victim.numBlocks + own ? 'host' : 'recompute';
    if (moveTo === 'host') hostFree -= victim.numBlocks + own;
    out.push({ seqId: victim.seqId, to: moveTo });
    free += victim.numBlocks;
    need -= own;
  }
  return out;
}

/** Admission by a device prefill and a demotion (see admitInOrder). */
export interface StagedAdmission {
  /** Whether the request, beside those already sent to the host, should go this way. */
  allows: (r: RequestView, toHost: readonly RequestView[]) => boolean;
  /** Device blocks a prefill may borrow for one step (its table is demoted in the next plan, before any promotion). */
  lendable: number;
}

/**
 * Where waiting requests go, in queue order: the device tier while it has room above the
 * headroom and `reservedDevice`; then, when `staged` allows it and the device can lend the
 * prompt's blocks for one step, the device tier to be demoted to the host after the
 * prefill; then (if `host` allows the request beside those already
 * sent there) the host tier; the first that fits nowhere holds back the rest (first come,
 * first served).
 */
export function admitInOrder(
  waiting: readonly RequestView[],
  kv: KvView,
  reservedDevice: number,
  headroom: number,
  host: (r: RequestView, toHost: readonly RequestView[]) => boolean,
  staged?: StagedAdmission,
): Admission[] {
  const out: Admission[] = [];
  const toHost: RequestView[] = [];
  let devFree = kv.device.numFree - reservedDevice;
  let lendable = staged?.lendable ?? 0;
  let hostFree = kv.host.numFree;
  const keep = Math.floor(headroom * kv.device.numBlocks);
  for (const r of waiting) {
    const need = promptBlocks(kv, r.context, r.newTokens);
    if (kv.device.numBlocks > 0 && devFree - need >= keep) {
      out.push({ seqId: r.seqId, tier: 'device' });
      devFree -= need;
      lendable -= need;
    } else if (staged && kv.host.numBlocks > 0 && hostFree >= need && lendable - need >= 0 && staged.allows(r, toHost)) {
      out.push({ seqId: r.seqId, tier: 'device', demoteAfterPrefill: true });
      toHost.push(r);
      hostFree -= need;
      devFree -= need;
      lendable -= need;
    } else if (kv.host.numBlocks > 0 && hostFree >= need && host(r, toHost)) {
      out.push({ seqId: r.seqId, tier: 'host' });
      toHost.push(r);
      hostFree -= need;
    } else {
      break;
    }
  }
  return out;
}

/**
 * Device blocks the engine's Scheduler wants free before it moves the oldest host-tier
 * sequence back (its promote rule: that table, one block per device sequence, a 1%
 * watermark). A hybrid policy keeps them from new requests while the CPU falls behind, so
 * that freed device space goes to moving host sequences back.
 */
export function promoteReserve(running: readonly RequestView[], kv: KvView): number {
  let oldest: RequestView | undefined;
  let onDevice = 0;
  for (const r of running) {
    if (r.tier === 'device') onDevice++;
    else if (r.tier === 'host' && (!oldest || r.arrival < oldest.arrival)) oldest = r;
  }
  if (!oldest) return 0;
  return tableBlocks(kv, oldest.context, oldest.context + 1) + onDevice + Math.floor(0.01 * kv.device.numBlocks);
}

/** The predicted time of moving a request's prompt table from the device to the host tier (µs): one copy per block. */
export function demoteCopyUs(r: RequestView, kv: KvView, cost: CostModel): number {
  return tableBlocks(kv, r.context + r.newTokens, r.context + r.newTokens) * cost.copyUs(cost.shape.kvBlockBytes);
}

/** A waiting request as it will run once admitted to the host tier and prefilled: a decode over its prompt. */
/** The request once its prompt is in: decoding in the tier it holds. */
export function asDecode(r: RequestView): RequestView {
  return r.newTokens === 1 ? r : { ...r, context: r.context + r.newTokens, newTokens: 1 };
}

export function asHostDecode(r: RequestView): RequestView {
  return { ...r, tier: 'host', context: r.context + r.newTokens, newTokens: 1 };
}

/** The predicted step of running `reqs` with the given attention devices and sub-batches. */
export function predictFor(strategy: Strategy, seqs: readonly SeqDecision[], byId: ReadonlyMap<number, RequestView>, cost: CostModel): StepTime {
  return predictStep(strategy, seqs.map((s) => work(byId.get(s.seqId)!, s.attention, s.subBatch, cost.shape)), cost);
}

export function decisionTokens(seqs: readonly SeqDecision[], byId: ReadonlyMap<number, RequestView>): number {
  return seqs.reduce((n, s) => n + byId.get(s.seqId)!.newTokens, 0);
}
