// The policies' seam with the engine: wraps the engine's Scheduler (vLLM's schedule/update
// contract, unchanged) through its public surface. Before each step the policy decides which
// waiting requests may be admitted (the rest are held back for that schedule() call); the
// Scheduler then builds the plan (its own tier choice: device first, host when short; its
// own swaps: the newest out when short, the oldest host table back when room frees); then
// the policy shapes the plan: strategy, each sequence's attention device and pipeline
// sub-batch, and the host-tier sequences that sit this step out. A request the policy
// admits to be demoted after its prefill is handed to the Scheduler as a `demote` request
// (a swap's copies) in the first plan after its prompt is computed. The policy's own tier and
// swap choices are reported in its decision. After each step the cost model is refitted
// from the measured phases and the prediction error is kept.
import { roundsOf, type KvTier, type SequencePlan, type StepPlan, type StepResult, type Strategy } from '../native/step-plan.js';
import { TandemError } from '../native/errors.js';
import type { Scheduler, SequenceEvent } from '../engine/scheduler.js';
import type { Sequence } from '../engine/sequence.js';
import { TableCostModel, type CostModel, type ObserveOptions } from './cost-model.js';
import { POLICIES } from './policies/index.js';
import { DEFAULT_MAX_DEFER_STEPS, type KvView, type PolicyName, type PolicyOptions, type RequestView, type StepDecision } from './policy.js';

/** A sequence plan with its pipeline sub-batch (native/addon/model_binding.cpp reads `subBatch`). */
export type ShapedSequencePlan = SequencePlan;

/** The strategy the engine's Scheduler is configured with under a policy: gpu-only keeps host-tier tables as swap space; the others run both tiers. */
export function schedulerStrategyFor(policy: PolicyName): Strategy {
  return policy === 'gpu-only' ? 'gpu-only' : 'overlap';
}

export interface PolicySchedulerOptions extends PolicyOptions {
  /** Online refit of a TableCostModel from each step's phases and total; false turns it off. Default: rate 0.1, synchronous device (say deviceSynchronous: false for a GPU). */
  refit?: false | ObserveOptions;
}

/** Running totals of what the policy did. */
export interface PolicyStats {
  steps: number;
  /** Steps run under each strategy. */
  strategies: Record<Strategy, number>;
  /** Sequence-steps left out. */
  deferrals: number;
  /** Steps whose prediction was compared with a measured time. */
  predictedSteps: number;
  /** Sum of |predicted - measured| / measured step times. */
  sumAbsRelError: number;
  /** Steps the policy would have left wholly out, run as the Scheduler planned them instead. */
  unshapedSteps: number;
  /** Requests admitted to be prefilled in the device tier and then demoted to the host tier. */
  stagedAdmissions: number;
  /** Of those, tables the Scheduler moved to the host tier after their prefill. */
  demotions: number;
  /** Sequences run with device attention over their host-tier KV (streamed), summed over steps. */
  streamed: number;
}

export class PolicyScheduler {
  readonly scheduler: Scheduler;
  readonly policy: PolicyName;
  readonly cost: CostModel;
  readonly options: PolicySchedulerOptions;
  readonly stats: PolicyStats = {
    steps: 0,
    strategies: { cpu: 0, 'gpu-only': 0, pipeline: 0, overlap: 0 },
    deferrals: 0,
    predictedSteps: 0,
    sumAbsRelError: 0,
    unshapedSteps: 0,
    stagedAdmissions: 0,
    demotions: 0,
    streamed: 0,
  };
  /** The decision behind the plan in flight (or the last one). */
  lastDecision: StepDecision | undefined;
  /** Steps in a row each live sequence was left out. */
  private readonly deferredSteps = new Map<number, number>();
  /** Sequences added through add(), until they finish: the ones whose admission the policy controls. */
  private readonly tracked = new Map<number, Sequence>();
  /** Requests the policy admitted to be demoted to the host tier once their prompt is computed. */
  private readonly staged = new Set<number>();
  /** Sequences the plan in flight leaves out while the others burst: each round they sit out counts. */
  private burstDeferred: number[] = [];

  constructor(scheduler: Scheduler, policy: PolicyName, cost: CostModel, options: PolicySchedulerOptions = {}) {
    const want = schedulerStrategyFor(policy);
    if (scheduler.config.strategy !== want) {
      throw new TandemError('TDM_BAD_ARGUMENT', `policy '${policy}' needs a Scheduler configured with strategy '${want}', not '${scheduler.config.strategy}'`);
    }
    this.scheduler = scheduler;
    this.policy = policy;
    this.cost = cost;
    this.options = options;
  }

  /** Mean |predicted - measured| / measured over the steps seen (NaN before any). */
  get meanStepError(): number {
    return this.stats.sumAbsRelError / this.stats.predictedSteps;
  }

  /** Queues a request (see Scheduler.add); its admission then follows the policy. */
  add(seq: Sequence): void {
    this.scheduler.add(seq);
    this.tracked.set(seq.id, seq);
  }

  /** The Scheduler's next plan, admission gated and the plan shaped by the policy; `decodeSteps` as in Scheduler.schedule. */
  schedule(options: { decodeSteps?: number } = {}): StepPlan {
    const demote = this.dueDemotions();
    const held = this.holdBack();
    let plan: StepPlan;
    try {
      plan = this.scheduler.schedule(demote.length > 0 ? { ...options, demote } : options);
    } finally {
      for (const seq of held) this.scheduler.setPaused(seq.id, false);
    }
    for (const id of demote) if (this.scheduler.get(id)?.kvTier === 'host') this.stats.demotions++;
    if (plan.sequences.length === 0) {
      this.lastDecision = undefined;
      return plan;
    }
    const running = plan.sequences.map((p) => this.view(p));
    const decision = POLICIES[this.policy]({ running, waiting: [], kv: this.kvView(), cost: this.cost, options: this.options });
    if (decision.sequences.length === 0 && plan.copies.length === 0) return this.unshaped(plan);
    this.lastDecision = decision;
    const how = new Map(decision.sequences.map((d) => [d.seqId, d]));
    const sequences: ShapedSequencePlan[] = [];
    for (const p of plan.sequences) {
      const d = how.get(p.seqId);
      if (!d) {
        this.deferredSteps.set(p.seqId, (this.deferredSteps.get(p.seqId) ?? 0) + 1);
        this.stats.deferrals++;
        continue;
      }
      this.deferredSteps.delete(p.seqId);
      const shaped: ShapedSequencePlan = { ...p, attention: d.attention };
      if (p.kvTier === 'host' && d.attention === 'gpu') this.stats.streamed++;
      if (decision.strategy === 'pipeline' && d.subBatch !== undefined) shaped.subBatch = d.subBatch;
      sequences.push(shaped);
    }
    this.burstDeferred = [];
    if (sequences.length < plan.sequences.length) this.capBurst(sequences, plan.sequences.filter((p) => !how.has(p.seqId)).map((p) => p.seqId));
    this.fitStaging(sequences);
    this.stats.steps++;
    this.stats.strategies[decision.strategy]++;
    return { strategy: decision.strategy, copies: plan.copies, sequences };
  }

  /**
   * The Scheduler's plan as it is, each sequence's attention where its KV lives: for a step
   * the policy would leave wholly out, so that the engine always has work to run and deferral
   * can never stall it. No decision and no prediction go with it.
   */
  private unshaped(plan: StepPlan): StepPlan {
    this.lastDecision = undefined;
    const sequences = plan.sequences.map((p): ShapedSequencePlan => ({ ...p, attention: p.kvTier === 'device' ? 'gpu' : 'cpu' }));
    for (const p of sequences) this.deferredSteps.delete(p.seqId);
    const strategy: Strategy = sequences.some((p) => p.kvTier === 'host') ? 'overlap' : 'gpu-only';
    this.stats.steps++;
    this.stats.strategies[strategy]++;
    this.stats.unshapedSteps++;
    return { strategy, copies: plan.copies, sequences };
  }

  /**
   * A burst in a step that leaves sequences out: they sit out every round of it, so it is cut
   * to the rounds the longest-waiting of them may still wait (maxDeferSteps counts rounds),
   * and to one round under a latency target, whose checks reckon a step's wait.
   */
  private capBurst(sequences: ShapedSequencePlan[], deferred: number[]): void {
    if (!sequences.some((s) => (s.decodeSteps ?? 1) > 1)) return;
    const maxDefer = this.options.maxDeferSteps ?? DEFAULT_MAX_DEFER_STEPS;
    const waited = Math.max(...deferred.map((id) => this.deferredSteps.get(id) ?? 0));
    const cap = this.options.tpotSloUs !== undefined ? 1 : Math.max(1, maxDefer - waited + 1);
    for (const s of sequences) {
      if ((s.decodeSteps ?? 1) <= cap) continue;
      if (cap === 1) delete s.decodeSteps;
      else s.decodeSteps = cap;
    }
    if (cap > 1) this.burstDeferred = deferred;
  }

  /**
   * The policy kept the streamed blocks within the executor's staging (streamBlocksMax) as the
   * sequences stood; a decode burst's later draws may reach into further blocks. Where the sum
   * then passes the staging, each streamed burst is cut to the blocks its first draw reads.
   */
  private fitStaging(sequences: ShapedSequencePlan[]): void {
    const cap = this.options.streamBlocksMax;
    if (cap === undefined) return;
    const bt = this.scheduler.config.blockTokens;
    const streamed = sequences.filter((s) => s.kvTier === 'host' && s.attention === 'gpu');
    const blocks = (s: SequencePlan) => Math.ceil((s.startPos + s.tokens.length + (s.decodeSteps ?? 1) - 1) / bt);
    if (streamed.reduce((n, s) => n + blocks(s), 0) <= cap) return;
    for (const s of streamed) {
      if ((s.decodeSteps ?? 1) === 1) continue;
      const k = Math.ceil((s.startPos + s.tokens.length) / bt) * bt - s.startPos - s.tokens.length + 1;
      if (k <= 1) delete s.decodeSteps;
      else s.decodeSteps = Math.min(s.decodeSteps!, k);
    }
  }

  /** Applies a step's results (see Scheduler.update), refits the cost model and records the prediction error. */
  update(plan: StepPlan, result: StepResult): SequenceEvent[] {
    const events = this.scheduler.update(plan, result);
    const rounds = roundsOf(plan, result);
    for (const id of this.burstDeferred) {
      const n = this.deferredSteps.get(id);
      if (n !== undefined) this.deferredSteps.set(id, n + rounds - 1);
    }
    this.burstDeferred = [];
    for (const e of events) if (e.finish || e.error) this.deferredSteps.delete(e.seqId);
    // A decode burst is several steps of the planned shape; the cost model predicts and learns one.
    const even = rounds === 1 || result.sequences.every((r) => (r.tokens?.length ?? 1) === rounds);
    const perStep = rounds === 1 ? result : burstRound(result, rounds);
    const predicted = this.lastDecision?.predicted.stepUs;
    if (predicted !== undefined && result.totalUs > 0 && plan.sequences.length > 0 && even) {
      this.stats.predictedSteps++;
      this.stats.sumAbsRelError += Math.abs(predicted - perStep.totalUs) / perStep.totalUs;
    }
    // A burst whose sequences drew different counts ran smaller batches late: not one shape to learn from.
    if (this.options.refit !== false && this.cost instanceof TableCostModel && plan.sequences.length > 0 && even) {
      this.cost.observeStep(plan, perStep, this.options.refit);
    }
    return events;
  }

  /** The step failed (see Scheduler.fail). */
  fail(plan: StepPlan, error: Error): SequenceEvent[] {
    return this.scheduler.fail(plan, error);
  }

  /**
   * Staged requests whose prompt is computed, to be demoted in the next plan (one try: one
   * the host cannot take then stays on the device). A staged request the Scheduler placed in
   * the host tier, or that was preempted, is no longer staged.
   */
  private dueDemotions(): number[] {
    const due: number[] = [];
    for (const id of this.staged) {
      const seq = this.tracked.get(id);
      if (!seq || seq.status !== 'running' || seq.kvTier !== 'device') {
        this.staged.delete(id);
      } else if (!seq.isPrefilling && !seq.paused) {
        due.push(id);
        this.staged.delete(id);
      }
    }
    return due;
  }

  /** Pauses, for one schedule() call, the waiting requests the policy does not admit now (first come, first served). */
  private holdBack(): Sequence[] {
    const waiting: Sequence[] = [];
    const running: RequestView[] = [];
    const chunk = this.scheduler.config.maxChunkTokens;
    for (const [id, seq] of this.tracked) {
      if (seq.status === 'finished') {
        this.tracked.delete(id);
        this.deferredSteps.delete(id);
      } else if (seq.paused) {
        continue;
      } else if (seq.status === 'waiting') {
        waiting.push(seq);
      } else if (seq.kvTier) {
        running.push({
          seqId: id,
          tier: seq.kvTier,
          context: seq.numComputed,
          newTokens: Math.max(1, Math.min(seq.numPending, chunk)),
          numBlocks: this.scheduler.kv.numHeld(seq),
          deferredSteps: this.deferredSteps.get(id) ?? 0,
          arrival: id,
          pendingTokens: Math.max(1, seq.numPending),
        });
      }
    }
    if (waiting.length === 0) return [];
    waiting.sort((a, b) => a.id - b.id);
    const views = waiting.map((s): RequestView => ({
      seqId: s.id, tier: undefined, context: 0, newTokens: s.tokens.length, numBlocks: 0, deferredSteps: 0, arrival: s.id,
      remainingTokens: Math.max(0, s.params.maxTokens - s.numGenerated),
    }));
    const admit = POLICIES[this.policy]({ running, waiting: views, kv: this.kvView(), cost: this.cost, options: this.options }).admit;
    const admitted = new Set(admit.map((a) => a.seqId));
    for (const a of admit) {
      if (!a.demoteAfterPrefill) continue;
      this.staged.add(a.seqId);
      this.stats.stagedAdmissions++;
    }
    const held = waiting.filter((s) => !admitted.has(s.id));
    for (const seq of held) this.scheduler.setPaused(seq.id, true);
    return held;
  }

  private view(p: SequencePlan): RequestView {
    const seq = this.scheduler.get(p.seqId);
    return {
      seqId: p.seqId,
      tier: p.kvTier,
      context: p.startPos,
      newTokens: p.tokens.length,
      numBlocks: seq ? this.scheduler.kv.numHeld(seq) : p.blockTable.length,
      deferredSteps: this.deferredSteps.get(p.seqId) ?? 0,
      arrival: p.seqId,
      pendingTokens: Math.max(p.tokens.length, seq ? seq.numPending : 1),
    };
  }

  private kvView(): KvView {
    const pools = this.scheduler.kv.pools;
    const tier = (t: KvTier) => ({ numBlocks: pools[t].numBlocks, numFree: pools[t].numFree });
    const { blockTokens, maxChunkTokens } = this.scheduler.config;
    const { slidingWindow, slidingGroups } = this.scheduler.kv;
    return { blockTokens, slidingWindow, slidingGroups, maxChunkTokens, device: tier('device'), host: tier('host') };
  }
}

/** One round of an even decode burst: its time and phases divided by the rounds. */
function burstRound(result: StepResult, rounds: number): StepResult {
  const phaseUs: Record<string, number> = {};
  for (const [phase, us] of Object.entries(result.phaseUs)) phaseUs[phase] = us / rounds;
  return { ...result, totalUs: result.totalUs / rounds, phaseUs };
}
