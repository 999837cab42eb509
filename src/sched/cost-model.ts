// The cost model: predicted time of each subtask of a step (NEO's profiled tables with
// linear and bilinear interpolation, APEX's per-subtask predictions), filled by the profiler
// and refitted online from the phase times every StepResult carries (on a GPU, whose phases
// time only the queueing, from whole steps: per-sequence sampling, a scale on each device
// table fitted to gpu-only steps, and a factor per strategy).
import { TandemError } from '../native/errors.js';
import type { StepPlan, StepResult, Strategy } from '../native/step-plan.js';
import type { ModelHyperparams } from '../model/describe.js';
import { Bilinear, PiecewiseLinear, type BilinearJson, type PiecewiseLinearJson } from './interp.js';
import { predictStep, type SeqWork } from './step-time.js';

/** What the step-time formulas need to know about the model besides the tables. */
export interface CostShape {
  nLayer: number;
  /** Bytes of one token's q, k and v in one layer (f32), sent down for CPU attention. */
  qkvBytesPerToken: number;
  /** Bytes of one token's attention output in one layer (f32), sent back up. */
  outBytesPerToken: number;
  /** Bytes of one KV block (all layers, K and V): one swap copy. */
  kvBlockBytes: number;
  /** Positions in a KV block (absent: 16, the default), to count a streamed sequence's blocks. */
  kvBlockTokens?: number;
  /**
   * Sliding-window layers whose KV keeps blocks of its own (a second KV group, as gpt-oss runs):
   * how many, and the positions they see. A block then holds the larger group's layers, and a
   * streamed sequence sends the sliding layers only the blocks of their window.
   */
  slidingKv?: { layers: number; window: number };
}

export function costShapeOf(
  hp: Pick<ModelHyperparams, 'nLayer' | 'nHead' | 'nHeadKv' | 'headDim' | 'headDimV'>,
  kvBlockBytes: number,
  kvBlockTokens?: number,
  slidingKv?: CostShape['slidingKv'],
): CostShape {
  const q = hp.nHead * hp.headDim;
  const k = hp.nHeadKv * hp.headDim;
  const v = hp.nHeadKv * hp.headDimV;
  const shape: CostShape = { nLayer: hp.nLayer, qkvBytesPerToken: 4 * (q + k + v), outBytesPerToken: 4 * hp.nHead * hp.headDimV, kvBlockBytes };
  if (kvBlockTokens !== undefined) shape.kvBlockTokens = kvBlockTokens;
  if (slidingKv && slidingKv.layers > 0) shape.slidingKv = slidingKv;
  return shape;
}

/**
 * KV a streamed sequence sends across the link in a step, in blocks of every layer (what the
 * profiler's `stream` table is timed in): all the blocks of its positions for the full layers,
 * and for sliding layers kept apart only those from the window of its first new token on
 * (native/core/executor.cpp gathers each layer's own group's blocks).
 */
export function streamedBlocksOf(shape: Pick<CostShape, 'nLayer' | 'kvBlockTokens' | 'slidingKv'>, context: number, tokens: number): number {
  const bt = shape.kvBlockTokens ?? 16;
  const full = Math.ceil((context + tokens) / bt);
  const sl = shape.slidingKv;
  if (!sl || !(sl.layers > 0) || !(shape.nLayer > 0)) return full;
  const first = Math.floor(Math.max(0, context - sl.window + 1) / bt);
  return (full * (shape.nLayer - sl.layers) + (full - first) * sl.layers) / shape.nLayer;
}

/** Predicted subtask times of one step, in microseconds; attention figures cover all layers. */
export interface CostModel {
  readonly shape: CostShape;
  /**
   * The linear work of a step over `tokens` rows: embedding, every layer's projections and FFN,
   * and the LM head for every row unless headUs prices it apart.
   */
  linearUs(tokens: number): number;
  /** The LM head for `rows` sampled rows (final norm, output matmul, logits to the host), where the tables price it apart from linearUs (absent: linearUs includes it). */
  headUs?(rows: number): number;
  /** Decode attention on the device: `requests` sequences with `context` cached tokens each. */
  deviceAttentionUs(requests: number, context: number): number;
  /** Prefill attention on the device: one sequence's chunk of `tokens` new tokens after `context` cached ones. */
  prefillAttentionUs(tokens: number, context: number): number;
  /** Decode attention on the CPU: `requests` sequences with `context` cached tokens each. */
  cpuAttentionUs(requests: number, context: number): number;
  /** Prefill attention on the CPU: one host-tier sequence's chunk of `tokens` after `context` cached. */
  cpuPrefillAttentionUs(tokens: number, context: number): number;
  /** One copy of `bytes` between host and device memory. */
  copyUs(bytes: number): number;
  /** Host KV blocks streamed to the device for its attention, every layer's gather (absent: one copy of their bytes). */
  streamUs?(blocks: number): number;
  /** Host time after the pass to read and sample the next token of `seqs` sequences (absent: 0). */
  samplingUs?(seqs: number): number;
  /** Measured over predicted time of a step's forward pass under `strategy` (absent or unknown: 1). */
  strategyFactor?(strategy: Strategy): number;
  /**
   * Measured over predicted pass of steps that stream host KV, beyond their strategy's factor
   * (absent or unknown: 1): what the gathers take from the compute beside them, which no
   * profiled subtask shows, so that auto streams less where streaming costs more than its tables say.
   */
  streamFactor?(): number;
}

/**
 * A prefill chunk of n tokens after c cached ones does about n*(c + n/2) query-key products.
 * Prefill tables are keyed by that count (their cost grows with it, quadratically in the
 * prompt), so one profiled with c = 0 serves chunks after any context.
 */
export function prefillProducts(tokens: number, context: number): number {
  return tokens * (context + tokens / 2);
}


export interface CostTablesJson {
  version: 1;
  shape: CostShape;
  /** µs by tokens: the whole step's work around attention, with the LM head for every row where `head` is absent. */
  linear: PiecewiseLinearJson;
  /** µs by sampled rows: the LM head alone (absent in profiles made before it was timed apart). */
  head?: PiecewiseLinearJson;
  /** µs by (requests, context per request). */
  deviceAttention: BilinearJson;
  /** µs by query-key products (prefillProducts). */
  prefillAttention: PiecewiseLinearJson;
  /** µs by (requests, context per request). */
  cpuAttention: BilinearJson;
  /** µs by query-key products on the CPU. */
  cpuPrefillAttention: PiecewiseLinearJson;
  /** µs by bytes of one copy. */
  copy: PiecewiseLinearJson;
  /** µs by host KV blocks streamed to the device (absent where the device streams none, or in profiles made before). */
  stream?: PiecewiseLinearJson;
  /** Learned online: host µs per round of draws, one draw per sampling thread (absent: 0). */
  samplingRoundUs?: number;
  /** Threads that draw a step's tokens side by side (absent: 1): a step of n sampled sequences takes ceil(n / threads) rounds. */
  samplingThreads?: number;
  /** Learned online: measured over predicted forward pass per strategy (absent: 1). */
  strategyFactors?: Partial<Record<Strategy, number>>;
  /** Learned online: the factor on passes that stream host KV (absent: 1). */
  streamFactor?: number;
  /** Learned online on an asynchronous device: factors on the linear and device-attention tables (absent: 1). */
  deviceScales?: { linear: number; attention: number };
}

/** How the online refit treats a step's measured phases. */
export interface ObserveOptions {
  /** Fraction of each error taken into the tables (0..1). Default 0.1. */
  rate?: number;
  /**
   * Whether the device's phases are wall times of finished work. False for an asynchronous
   * device (a GPU): its driver-side phases time the queueing, so only CPU phases are refitted.
   */
  deviceSynchronous?: boolean;
}

/** Subtask measurements the online refit took from one step. */
export interface StepObservation {
  linear?: { tokens: number; us: number };
  /** The LM head over the step's sampled rows (tables with a head table only). */
  head?: { rows: number; us: number };
  deviceAttention?: { requests: number; context: number; us: number };
  cpuAttention?: { requests: number; context: number; us: number };
  copy?: { bytes: number; us: number };
  /** Host sampling of `seqs` sampled sequences. */
  sampling?: { seqs: number; us: number };
  /** The forward pass of a decode-only step: the step less its swaps and sampling (µs), for the strategy factor. */
  pass?: { strategy: Strategy; us: number };
}

/** The work of a plan's sequences, as the step-time formulas take it (streamed blocks counted for `shape`). */
export function planWork(plan: StepPlan, shape: Pick<CostShape, 'nLayer' | 'kvBlockTokens' | 'slidingKv'>): SeqWork[] {
  return plan.sequences.map((s) => {
    const w: SeqWork = { tokens: s.tokens.length, context: s.startPos, attention: s.attention };
    if (s.subBatch !== undefined) w.subBatch = s.subBatch;
    // Device attention over host-tier KV: its blocks cross the link (executor.cpp gathers them).
    if (s.kvTier === 'host' && s.attention === 'gpu') w.streamedBlocks = streamedBlocksOf(shape, s.startPos, s.tokens.length);
    return w;
  });
}

/**
 * The subtasks a StepResult's phases measure: linear work of one-pass steps, attention of
 * decode-only sides (prefill mixes two tables). With `headApart` (tables with a head table) the
 * logits phase is the head's, over the rows that returned logits, and not part of the linear work.
 */
export function observationOf(plan: StepPlan, result: StepResult, blockBytes: number, headApart = false): StepObservation {
  const ph = result.phaseUs ?? {};
  const g = (k: string) => (Number.isFinite(ph[k]) ? ph[k]! : 0);
  const obs: StepObservation = {};
  const tokens = plan.sequences.reduce((n, s) => n + s.tokens.length, 0);
  // A pipelined step makes two linear passes of different sizes: no one table point to credit.
  if (tokens > 0 && 'linear' in ph && plan.strategy !== 'pipeline') {
    // 'hidden' (embeddings returned) grows with the tokens, as the linear work does.
    const body = g('embed') + g('linear') + g('hostLinear') + g('transfer') + g('experts') + g('hidden');
    obs.linear = { tokens, us: headApart ? body : body + g('logits') };
  }
  const headRows = plan.sequences.filter((s) => s.sample || s.returnLogits).length;
  if (headApart && headRows > 0 && 'logits' in ph && plan.strategy !== 'pipeline') obs.head = { rows: headRows, us: g('logits') };
  for (const side of ['gpu', 'cpu'] as const) {
    const seqs = plan.sequences.filter((s) => s.attention === side);
    if (seqs.length === 0 || seqs.some((s) => s.tokens.length !== 1)) continue;
    const context = seqs.reduce((n, s) => n + s.startPos, 0) / seqs.length;
    const us = side === 'gpu' ? g('attention') : g('cpuAttention');
    if (us > 0) obs[side === 'gpu' ? 'deviceAttention' : 'cpuAttention'] = { requests: seqs.length, context, us };
  }
  const crossing = plan.copies.filter((c) => c.fromTier !== c.toTier).length;
  if (crossing > 0 && crossing === plan.copies.length && g('copies') > 0) obs.copy = { bytes: blockBytes, us: g('copies') / crossing };
  const sampled = plan.sequences.filter((s) => s.sample).length;
  if (sampled > 0 && 'sampling' in ph) obs.sampling = { seqs: sampled, us: g('sampling') };
  // The whole step is the one time an asynchronous device reports truly; decode-only steps
  // only, as prefill chunks price logits for every row where a step reads one per sequence.
  const pass = result.totalUs - g('copies') - g('sampling');
  if (tokens > 0 && tokens === plan.sequences.length && Number.isFinite(pass) && pass > 0) obs.pass = { strategy: plan.strategy, us: pass };
  return obs;
}

/** Weight of a new sample in a running estimate: the mean over the first ones, then `rate`. */
function blend(old: number, x: number, n: number, rate: number): number {
  return old + (x - old) * Math.max(rate, 1 / (n + 1));
}

/** Strategy factors stay in this range: a bad step cannot make a strategy look free or hopeless. */
const FACTOR_MIN = 0.25;
const FACTOR_MAX = 4;

const clampFactor = (f: number) => Math.min(FACTOR_MAX, Math.max(FACTOR_MIN, f));

/**
 * Scales on the device's linear and attention tables, fitted by recursive least squares to
 * the passes of gpu-only decode steps (pass = a * linear + b * attention): on an asynchronous
 * device the only device times are whole steps, and one factor per strategy cannot correct
 * one table against the other, so a wrong attention table would misprice every step whose
 * device attention differs from the steps the factor was learned on, and with it how much
 * CPU attention an overlapped step hides. Steps differ in their attention share as contexts
 * grow and requests come and go, which separates the two.
 */
class DeviceScales {
  /** [linear, attention]. */
  theta: [number, number] = [1, 1];
  /** Prior variance: weak, as the steps' mixes differ little and the data must move the estimate far. */
  private static readonly PRIOR = 100;
  /** Forgetting factor: the fit follows a machine whose speed drifts (about the last 200 steps). */
  private static readonly LAMBDA = 0.995;
  /** Covariance cap: without new information, forgetting would blow it up. */
  private static readonly MAX_TRACE = 2 * DeviceScales.PRIOR;
  /** Steps observed before the scales take effect: a few whole steps (warm-up, launch jitter) should not re-price the tables. */
  static readonly MIN_STEPS = 16;
  /** The estimate's covariance (symmetric 2x2: p00, p01, p11). */
  private p = [DeviceScales.PRIOR, 0, DeviceScales.PRIOR];
  /** Steps taken in (saved scales count as enough). */
  private n = 0;

  constructor(saved?: { linear: number; attention: number }) {
    if (saved && Number.isFinite(saved.linear) && Number.isFinite(saved.attention) && saved.linear > 0 && saved.attention > 0) {
      this.theta = [clampFactor(saved.linear), clampFactor(saved.attention)];
      this.n = DeviceScales.MIN_STEPS;
    }
  }

  get linear(): number {
    return this.n < DeviceScales.MIN_STEPS ? 1 : clampFactor(this.theta[0]);
  }

  get attention(): number {
    return this.n < DeviceScales.MIN_STEPS ? 1 : clampFactor(this.theta[1]);
  }

  /** One pass of `us` whose tables predict `linearUs` and `attentionUs`; each term taken relative to the pass. */
  observe(linearUs: number, attentionUs: number, us: number): void {
    if (!(us > 0) || !(linearUs >= 0) || !(attentionUs >= 0) || linearUs + attentionUs <= 0) return;
    const a0 = linearUs / us;
    const a1 = attentionUs / us;
    const [p00, p01, p11] = this.p as [number, number, number];
    const pa0 = p00 * a0 + p01 * a1;
    const pa1 = p01 * a0 + p11 * a1;
    const lambda = DeviceScales.LAMBDA;
    const denom = lambda + a0 * pa0 + a1 * pa1;
    const k0 = pa0 / denom;
    const k1 = pa1 / denom;
    const err = 1 - (a0 * this.theta[0] + a1 * this.theta[1]);
    this.theta = [this.theta[0] + k0 * err, this.theta[1] + k1 * err];
    this.n++;
    let next = [p00 - k0 * pa0, p01 - k0 * pa1, p11 - k1 * pa1];
    if (next[0]! + next[2]! < DeviceScales.MAX_TRACE) next = next.map((x) => x / lambda);
    this.p = next;
  }
}

/**
 * A table of work by size beyond its last knot: no less than the last knot's time per unit.
 * Prefill attention by query-key products (the profiled prompts are shorter than the chunks a
 * long prompt's prefill runs at its later positions); the linear layers by tokens (a step of
 * a prefill chunk and decodes outgrows the profiled sizes, and a tiled matmul's time grows
 * with its row tiles: on the H200, 288 tokens took 2.5x the 128-token time, where the last
 * segment's slope said 1.7x).
 */
function atLeastProportional(t: PiecewiseLinear, x: number): number {
  const last = t.xs.length - 1;
  const y = t.at(x);
  const xl = t.xs[last]!;
  return x > xl && xl > 0 ? Math.max(y, (t.ys[last]! * x) / xl) : y;
}

/** The cost model over profiled tables (see the profiler), refitted online. */
export class TableCostModel implements CostModel {
  readonly shape: CostShape;
  readonly linear: PiecewiseLinear;
  /** The LM head by sampled rows, when profiled apart (linear then leaves it out). */
  readonly head?: PiecewiseLinear;
  readonly deviceAttention: Bilinear;
  readonly prefillAttention: PiecewiseLinear;
  readonly cpuAttention: Bilinear;
  readonly cpuPrefillAttention: PiecewiseLinear;
  readonly copy: PiecewiseLinear;
  /** Streamed host KV by blocks, where it was profiled. */
  readonly stream?: PiecewiseLinear;
  /** Steps whose measurements were taken in. */
  numObserved = 0;
  /** Host µs per round of draws, and the steps it was measured on. */
  private samplingRound: { us: number; n: number };
  private drawThreads: number;
  /** Measured over predicted forward pass by strategy, and the steps behind each. */
  private readonly factors = new Map<Strategy, { f: number; n: number }>();
  /** Measured over predicted pass of streamed steps, beyond their strategy's factor, and the steps behind it. */
  private readonly streamed: { f: number; n: number };
  /** Factors on the linear and device-attention tables (1 unless learned from an asynchronous device's steps). */
  private readonly scales: DeviceScales;

  constructor(t: CostTablesJson) {
    if (t.version !== 1) throw new TandemError('TDM_BAD_ARGUMENT', `cost tables of version ${String(t.version)} are not supported (1 is)`);
    this.shape = { ...t.shape };
    this.linear = PiecewiseLinear.fromJSON(t.linear);
    if (t.head !== undefined) this.head = PiecewiseLinear.fromJSON(t.head);
    this.deviceAttention = Bilinear.fromJSON(t.deviceAttention);
    this.prefillAttention = PiecewiseLinear.fromJSON(t.prefillAttention);
    this.cpuAttention = Bilinear.fromJSON(t.cpuAttention);
    this.cpuPrefillAttention = PiecewiseLinear.fromJSON(t.cpuPrefillAttention);
    this.copy = PiecewiseLinear.fromJSON(t.copy);
    if (t.stream !== undefined) this.stream = PiecewiseLinear.fromJSON(t.stream);
    const round = t.samplingRoundUs;
    this.samplingRound = { us: typeof round === 'number' && Number.isFinite(round) && round >= 0 ? round : 0, n: 0 };
    const threads = t.samplingThreads;
    this.drawThreads = typeof threads === 'number' && Number.isInteger(threads) && threads >= 1 ? threads : 1;
    this.scales = new DeviceScales(t.deviceScales);
    const sf = t.streamFactor;
    this.streamed = typeof sf === 'number' && Number.isFinite(sf) && sf > 0 ? { f: clampFactor(sf), n: 1 } : { f: 1, n: 0 };
    for (const [k, f] of Object.entries(t.strategyFactors ?? {})) {
      // Saved factors are a starting point: they count as one step, so this run's steps soon outweigh them.
      if (typeof f === 'number' && Number.isFinite(f) && f > 0) this.factors.set(k as Strategy, { f: Math.min(FACTOR_MAX, Math.max(FACTOR_MIN, f)), n: 1 });
    }
  }

  linearUs(tokens: number): number {
    return tokens > 0 ? this.scales.linear * atLeastProportional(this.linear, tokens) : 0;
  }

  headUs(rows: number): number {
    return rows > 0 && this.head ? this.scales.linear * atLeastProportional(this.head, rows) : 0;
  }

  deviceAttentionUs(requests: number, context: number): number {
    return requests > 0 ? this.scales.attention * this.deviceAttention.at(requests, context) : 0;
  }

  prefillAttentionUs(tokens: number, context: number): number {
    return tokens > 0 ? atLeastProportional(this.prefillAttention, prefillProducts(tokens, context)) : 0;
  }

  /** The learned factors on the linear and device-attention tables (1 and 1 until an asynchronous device's gpu-only steps were seen). */
  get deviceScales(): { linear: number; attention: number } {
    return { linear: this.scales.linear, attention: this.scales.attention };
  }

  cpuAttentionUs(requests: number, context: number): number {
    return requests > 0 ? this.cpuAttention.at(requests, context) : 0;
  }

  cpuPrefillAttentionUs(tokens: number, context: number): number {
    return tokens > 0 ? atLeastProportional(this.cpuPrefillAttention, prefillProducts(tokens, context)) : 0;
  }

  copyUs(bytes: number): number {
    return bytes > 0 ? this.copy.at(bytes) : 0;
  }

  streamUs(blocks: number): number {
    if (!(blocks > 0)) return 0;
    if (this.stream) return atLeastProportional(this.stream, blocks);
    // A block holds the larger KV group's layers; `blocks` counts blocks of every layer.
    const sl = this.shape.slidingKv?.layers ?? 0;
    const slots = Math.max(sl, this.shape.nLayer - sl);
    return this.copyUs((blocks * this.shape.kvBlockBytes * this.shape.nLayer) / slots);
  }

  samplingUs(seqs: number): number {
    return seqs > 0 ? this.samplingRounds(seqs) * this.samplingRound.us : 0;
  }

  /**
   * Threads that draw a step's tokens side by side (the native executor spreads the draws
   * over the model's CPU threads): n sampled sequences take ceil(n / samplingThreads) rounds.
   */
  get samplingThreads(): number {
    return this.drawThreads;
  }

  set samplingThreads(n: number) {
    if (!Number.isInteger(n) || n < 1) throw new TandemError('TDM_BAD_ARGUMENT', `samplingThreads must be a whole number >= 1, got ${String(n)}`);
    this.drawThreads = n;
  }

  /** Rounds of draws for `seqs` sampled sequences (seqs > 0). */
  private samplingRounds(seqs: number): number {
    return Math.ceil(seqs / this.drawThreads);
  }

  /**
   * The strategy's own factor once one of its steps was measured, else the tables' word (1)
   * or, where every strategy tried so far ran faster than its tables, the least of those
   * factors (a bias they share). Optimistic on purpose: a policy that chooses by prediction
   * then tries the strategy once and learns its own factor.
   */
  strategyFactor(strategy: Strategy): number {
    const own = this.factors.get(strategy);
    if (own) return own.f;
    return Math.min(1, ...[...this.factors.values()].map((x) => x.f));
  }

  /** The factor on streamed steps' passes (1 until one was measured). */
  streamFactor(): number {
    return this.streamed.f;
  }

  /**
   * Takes a step's measured phases into the tables (see observationOf); returns what it took.
   * The strategy factor compares the measured pass with the tables' prediction after their
   * refit, so it keeps only what the tables cannot express (on a GPU: waits, launch gaps).
   */
  observeStep(plan: StepPlan, result: StepResult, options: ObserveOptions = {}): StepObservation {
    const rate = options.rate ?? 0.1;
    const obs = observationOf(plan, result, this.shape.kvBlockBytes, this.head !== undefined);
    const device = options.deviceSynchronous ?? true;
    if (obs.linear && device) this.linear.observe(obs.linear.tokens, obs.linear.us, rate);
    if (obs.head && device && this.head) this.head.observe(obs.head.rows, obs.head.us, rate);
    if (obs.deviceAttention && device) this.deviceAttention.observe(obs.deviceAttention.requests, obs.deviceAttention.context, obs.deviceAttention.us, rate);
    if (obs.cpuAttention) this.cpuAttention.observe(obs.cpuAttention.requests, obs.cpuAttention.context, obs.cpuAttention.us, rate);
    if (obs.copy && device) this.copy.observe(obs.copy.bytes, obs.copy.us, rate);
    if (obs.sampling) {
      const s = this.samplingRound;
      s.us = blend(s.us, obs.sampling.us / this.samplingRounds(obs.sampling.seqs), s.n++, rate);
    }
    if (obs.pass && !device && obs.pass.strategy === 'gpu-only') {
      const work = planWork(plan, this.shape);
      const tokens = work.reduce((n, w) => n + w.tokens, 0);
      const gpu = work.filter((w) => w.attention === 'gpu');
      const context = gpu.reduce((n, w) => n + w.context, 0) / Math.max(1, gpu.length);
      // Only device attention in a gpu-only decode step: the pass is linear work plus it.
      const linear = this.linear.at(tokens) + (this.head ? this.head.at(work.length) : 0);
      // A streamed step's pass may be the link's, not the device's work: not for these scales.
      if (gpu.length === work.length && !work.some((w) => w.streamedBlocks)) this.scales.observe(linear, gpu.length > 0 ? this.deviceAttention.at(gpu.length, context) : 0, obs.pass.us);
    }
    if (obs.pass) {
      const work = planWork(plan, this.shape);
      const predicted = predictStep(obs.pass.strategy, work, this).passUs;
      if (predicted > 0 && work.some((w) => w.streamedBlocks)) {
        // A streamed step teaches the stream factor, on top of its strategy's.
        const x = clampFactor(obs.pass.us / (predicted * this.strategyFactor(obs.pass.strategy)));
        this.streamed.f = blend(this.streamed.f, x, this.streamed.n++, rate);
      } else if (predicted > 0) {
        const x = clampFactor(obs.pass.us / predicted);
        const f = this.factors.get(obs.pass.strategy);
        if (f) f.f = blend(f.f, x, f.n++, rate);
        else this.factors.set(obs.pass.strategy, { f: x, n: 1 });
      }
    }
    this.numObserved++;
    return obs;
  }

  toJSON(): CostTablesJson {
    return {
      version: 1,
      shape: { ...this.shape },
      linear: this.linear.toJSON(),
      ...(this.head ? { head: this.head.toJSON() } : {}),
      deviceAttention: this.deviceAttention.toJSON(),
      prefillAttention: this.prefillAttention.toJSON(),
      cpuAttention: this.cpuAttention.toJSON(),
      cpuPrefillAttention: this.cpuPrefillAttention.toJSON(),
      copy: this.copy.toJSON(),
      ...(this.stream ? { stream: this.stream.toJSON() } : {}),
      samplingRoundUs: this.samplingRound.us,
      samplingThreads: this.samplingThreads,
      strategyFactors: Object.fromEntries([...this.factors].map(([k, v]) => [k, v.f])),
      ...(this.streamed.n > 0 ? { streamFactor: this.streamed.f } : {}),
      deviceScales: this.deviceScales,
    };
  }
}

/** One measured configuration of one subtask (what the profiler records). */
export type Measurement =
  | { kind: 'linear'; tokens: number; us: number }
  | { kind: 'head'; rows: number; us: number }
  | { kind: 'deviceAttention'; requests: number; context: number; us: number }
  | { kind: 'prefillAttention'; tokens: number; us: number }
  | { kind: 'cpuAttention'; requests: number; context: number; us: number }
  | { kind: 'cpuPrefillAttention'; tokens: number; us: number }
  | { kind: 'copy'; bytes: number; us: number }
  | { kind: 'stream'; blocks: number; us: number };

/** The model's prediction for a measured configuration. */
export function predict(cost: CostModel, m: Measurement): number {
  switch (m.kind) {
    case 'linear': return cost.linearUs(m.tokens);
    case 'head': return cost.headUs?.(m.rows) ?? 0;
    case 'deviceAttention': return cost.deviceAttentionUs(m.requests, m.context);
    case 'prefillAttention': return cost.prefillAttentionUs(m.tokens, 0);
    case 'cpuAttention': return cost.cpuAttentionUs(m.requests, m.context);
    case 'cpuPrefillAttention': return cost.cpuPrefillAttentionUs(m.tokens, 0);
    case 'copy': return cost.copyUs(m.bytes);
    case 'stream': return cost.streamUs?.(m.blocks) ?? 0;
  }
}

/** Prediction error per subtask over measurements the model was not fitted on: mean and worst |predicted - measured| / measured. */
export interface PredictionError {
  kind: Measurement['kind'];
  samples: number;
  meanAbsRelError: number;
  maxAbsRelError: number;
}

export function predictionErrors(cost: CostModel, heldOut: readonly Measurement[]): PredictionError[] {
  const by = new Map<Measurement['kind'], number[]>();
  for (const m of heldOut) {
    if (!(m.us > 0)) continue;
    const e = Math.abs(predict(cost, m) - m.us) / m.us;
    by.set(m.kind, [...(by.get(m.kind) ?? []), e]);
  }
  return [...by].map(([kind, es]) => ({
    kind,
    samples: es.length,
    meanAbsRelError: es.reduce((a, b) => a + b, 0) / es.length,
    maxAbsRelError: Math.max(...es),
  }));
}

/** Tables fitted to grid measurements (each table's grid points from the measurements of its kind). */
export function fitTables(shape: CostShape, grid: readonly Measurement[]): TableCostModel {
  const of = <K extends Measurement['kind']>(k: K) => grid.filter((m): m is Extract<Measurement, { kind: K }> => m.kind === k);
  const need = (k: Measurement['kind'], n: number) => {
    if (n === 0) throw new TandemError('TDM_BAD_ARGUMENT', `no ${k} measurement to fit`);
  };
  const linear = of('linear');
  const dev = of('deviceAttention');
  const pre = of('prefillAttention');
  const cpu = of('cpuAttention');
  const cpuPre = of('cpuPrefillAttention');
  const copy = of('copy');
  const head = of('head');
  const stream = of('stream');
  for (const [k, n] of [
    ['linear', linear.length], ['deviceAttention', dev.length], ['prefillAttention', pre.length], ['cpuAttention', cpu.length],
    ['cpuPrefillAttention', cpuPre.length], ['copy', copy.length],
  ] as const) need(k, n);
  return new TableCostModel({
    version: 1,
    shape,
    linear: PiecewiseLinear.fitNondecreasing(linear.map((m) => ({ x: m.tokens, y: m.us }))).toJSON(),
    // With head measurements the linear ones left the head out (the profiler's grid says which).
    ...(head.length > 0 ? { head: PiecewiseLinear.fitNondecreasing(head.map((m) => ({ x: m.rows, y: m.us }))).toJSON() } : {}),
    deviceAttention: Bilinear.fitNondecreasing(dev.map((m) => ({ x: m.requests, y: m.context, z: m.us }))).toJSON(),
    prefillAttention: PiecewiseLinear.fitNondecreasing(pre.map((m) => ({ x: prefillProducts(m.tokens, 0), y: m.us }))).toJSON(),
    cpuAttention: Bilinear.fitNondecreasing(cpu.map((m) => ({ x: m.requests, y: m.context, z: m.us }))).toJSON(),
    cpuPrefillAttention: PiecewiseLinear.fitNondecreasing(cpuPre.map((m) => ({ x: prefillProducts(m.tokens, 0), y: m.us }))).toJSON(),
    copy: PiecewiseLinear.fitNondecreasing(copy.map((m) => ({ x: m.bytes, y: m.us }))).toJSON(),
    ...(stream.length > 0 ? { stream: PiecewiseLinear.fitNondecreasing(stream.map((m) => ({ x: m.blocks, y: m.us }))).toJSON() } : {}),
  });
}
