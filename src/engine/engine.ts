// The decode loop: owns the request queue (through the Scheduler) and runs one step at a
// time on an executor (the native model, or a fake in tests). Concurrent requests share
// steps; the loop awaits each native step, so compute never blocks the event loop. With a
// device beside the CPU a policy (src/sched) gates admission and shapes every plan.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { roundsOf, type KvTier, type StepPlan, type StepResult } from '../native/step-plan.js';
import { asTandemError, TandemError } from '../native/errors.js';
import type { CostModel } from '../sched/cost-model.js';
import type { PolicyName, StepDecision } from '../sched/policy.js';
import { PolicyScheduler, schedulerStrategyFor, type PolicySchedulerOptions } from '../sched/policy-scheduler.js';
import type { TokenLogprobs } from './logprobs.js';
import { Scheduler, type SchedulerConfig, type SchedulerCounters, type SequenceEvent } from './scheduler.js';
import { Sequence, type SequenceMetrics, type SequenceParams, type StopReason } from './sequence.js';

/** Runs one plan; one call at a time. The native model satisfies it. */
export interface StepExecutor {
  step(plan: StepPlan): Promise<StepResult>;
  /** Ends a decode burst in flight after its current round (new work is waiting). Optional: without it a burst runs to its end. */
  interruptBurst?(): void;
}

/** How the engine reports a sequence's progress; called on the event loop, never re-entrantly. */
export interface SequenceObserver {
  /** A token was sampled for the sequence (before onFinish when it is the last), with its logprobs when they were asked for. */
  onToken?(token: number, logprobs?: TokenLogprobs): void;
  /** Logits of prompt positions [startPos, startPos + count), position-major (count × n_vocab). */
  onPromptLogits?(startPos: number, count: number, logits: Float32Array): void;
  /** Hidden states after the output norm of prompt positions [startPos, startPos + count) (count × n_embd), when asked for. */
  onPromptEmbeddings?(startPos: number, count: number, rows: Float32Array): void;
  /** The sequence ended; called once, and nothing follows it. `metrics` are its times and counts. */
  onFinish(reason: StopReason, metrics?: Readonly<SequenceMetrics>): void;
  /** The sequence failed; called once instead of onFinish. */
  onError(error: TandemError, metrics?: Readonly<SequenceMetrics>): void;
}

/** One tier's blocks. */
export interface TierStats {
  numBlocks: number;
  /** Blocks that can be handed out (free, or cached and unreferenced). */
  numFree: number;
  /** Blocks in the prefix-cache index (referenced or not). */
  numCached: number;
  /** Cached blocks evicted to make room, since the engine started. */
  numEvictions: number;
  /** Blocks copied into this tier by moves, since the engine started. */
  numBlocksMovedIn: number;
}

export interface EngineStats extends SchedulerCounters {
  numWaiting: number;
  numRunning: number;
  /** Live requests whose consumer stopped reading. */
  numPaused: number;
  /** KV blocks free over both tiers. */
  numFreeBlocks: number;
  numBlocks: number;
  tiers: Record<KvTier, TierStats>;
  /** Steps run since the engine started. */
  numSteps: number;
  /** Forward passes those steps ran: a decode burst of k draws is one step of k rounds. */
  numRounds: number;
  /** Requests accepted by submit(). */
  numRequests: number;
  /** Requests that ended normally (eos, maxTokens, stop, contextFull). */
  numFinished: number;
  numAborted: number;
  numFailed: number;
  /** Sum of the steps' measured wall time, microseconds. */
  stepUs: number;
  /**
   * Host time of the loop around the steps, microseconds: planning, passing the plan to the
   * native side and the result back, and delivering tokens. A device idles through it.
   */
  hostUs: number;
  /** Sum of the steps' measured time per phase, microseconds. */
  phaseUs: Record<string, number>;
}

/** The policy the engine runs every step under (a device beside the CPU). */
export interface EnginePolicy {
  name: PolicyName;
  /** Predicted subtask times (the profiler's tables); refitted online from each step's phases. */
  cost: CostModel;
  options?: PolicySchedulerOptions;
}

export interface EngineOptions {
  /** The clock of the metrics, milliseconds. Default performance.now. */
  now?: () => number;
  /**
   * Most draws a sequence takes in a row in one step when every sequence of the step decodes
   * (a decode burst; the executor must run SequencePlan.decodeSteps). Each step's burst is the
   * smallest that keeps the host's measured time between steps near HOST_SHARE of the rounds'
   * time, so a slow device gets 1. Default 1: off.
   */
  maxDecodeSteps?: number;
  /** Run under a policy; the Scheduler's strategy is set to match it. Default: none (the plain single-device path). */
  policy?: EnginePolicy;
}

/**
 * The host's time between steps the decode burst aims for, as a share of the device's time.
 * A larger burst makes tokens reach their streams in larger groups; a request that arrives
 * during one waits a round (the executor's interruptBurst), or the whole burst without it.
 */
export const HOST_SHARE = 0.05;

/** Weight of the newest sample in the host and round time averages that size the burst. */
const BURST_EMA = 0.2;

interface Live {
  seq: Sequence;
  observer: SequenceObserver;
}

/** A step handed to the executor and not yet applied. */
interface InFlightStep {
  plan: StepPlan;
  /** The policy's decision behind the plan (under a policy). */
  decision: StepDecision | undefined;
  result: Promise<StepResult>;
}

export class Engine {
  readonly scheduler: Scheduler;
  /** The policy wrapping `scheduler`, when the engine runs under one. */
  readonly policy: PolicyScheduler | undefined;
  /** Called after every step with its plan, result and (under a policy) the decision behind the plan. */
  onStep: ((plan: StepPlan, result: StepResult, decision: StepDecision | undefined) => void) | undefined;
  private readonly executor: StepExecutor;
  /** The clock of the metrics, milliseconds (performance.now by default). */
  private readonly now: () => number;
  private readonly live = new Map<number, Live>();
  private nextSeqId = 1;
  private numSteps = 0;
  private numRounds = 0;
  private readonly maxDecodeSteps: number;
  /** Moving averages of the host's time a step and of one round's time, µs (NaN before the first step). */
  private hostEmaUs = NaN;
  private roundEmaUs = NaN;
  private readonly totals = { numRequests: 0, numFinished: 0, numAborted: 0, numFailed: 0, stepUs: 0, hostUs: 0 };
  private readonly phaseUs: Record<string, number> = {};
  /** The running loop; `looping` says whether it is still going. */
  private loop: Promise<void> = Promise.resolve();
  private looping = false;
  /** The step in flight is a decode burst: new work interrupts it after its current round. */
  private burstInFlight = false;
  private closed = false;

  constructor(executor: StepExecutor, config: SchedulerConfig, options: EngineOptions = {}) {
    this.executor = executor;
    const policy = options.policy;
    this.scheduler = new Scheduler(policy ? { ...config, strategy: schedulerStrategyFor(policy.name) } : config);
    this.policy = policy && new PolicyScheduler(this.scheduler, policy.name, policy.cost, policy.options);
    this.now = options.now ?? (() => performance.now());
    const maxSteps = options.maxDecodeSteps ?? 1;
    if (!(Number.isInteger(maxSteps) && maxSteps >= 1 && maxSteps <= 64)) {
      throw new TandemError('TDM_BAD_ARGUMENT', `engine maxDecodeSteps must be an integer in [1, 64], got ${maxSteps}`);
    }
    this.maxDecodeSteps = maxSteps;
  }

  /** The burst the next step may take (see EngineOptions.maxDecodeSteps). */
  private burstSize(): number {
    if (this.maxDecodeSteps === 1 || !(this.roundEmaUs > 0) || !(this.hostEmaUs >= 0)) return 1;
    const k = Math.ceil(this.hostEmaUs / (HOST_SHARE * this.roundEmaUs));
    return Math.max(1, Math.min(this.maxDecodeSteps, k));
  }

  /**
   * Queues a request and returns its sequence id. Throws TDM_CONTEXT_FULL for a prompt that
   * does not fit, TDM_QUEUE_FULL when the queue is at its bound, TDM_DISPOSED after close().
   */
  submit(prompt: readonly number[], params: SequenceParams, observer: SequenceObserver): number {
    if (this.closed) throw new TandemError('TDM_DISPOSED', 'the model was disposed');
    const seq = new Sequence(this.nextSeqId++, prompt, params, this.now());
    if (this.policy) this.policy.add(seq);
    else this.scheduler.add(seq);
    this.live.set(seq.id, { seq, observer });
    this.totals.numRequests++;
    this.interruptBurst();
    this.kick();
    return seq.id;
  }

  /**
   * Ends a sequence now: its observer's onFinish(reason) runs before this returns, no
   * further tokens are reported, and its KV blocks are freed by the next step at the latest.
   */
  cancel(seqId: number, reason: StopReason): void {
    const entry = this.live.get(seqId);
    if (!entry) return;
    this.live.delete(seqId);
    this.scheduler.finish(seqId, reason);
    this.finished(entry, reason);
    // A burst in flight would go on drawing for it to its end: the rest restart without it.
    this.interruptBurst();
  }

  /**
   * Pauses a request whose consumer stopped reading (it takes no steps; its blocks are the
   * first reclaimed under memory pressure), or resumes it.
   */
  setPaused(seqId: number, paused: boolean): void {
    if (!this.scheduler.setPaused(seqId, paused)) return;
    if (!paused) {
      this.interruptBurst();
      this.kick();
    }
  }

  get stats(): EngineStats {
    const s = this.scheduler;
    const tier = (t: KvTier): TierStats => {
      const pool = s.kv.pools[t];
      return {
        numBlocks: pool.numBlocks,
        numFree: pool.numFree,
        numCached: pool.numCached,
        numEvictions: pool.numEvictions,
        numBlocksMovedIn: s.kv.numBlocksMovedTo[t],
      };
    };
    return {
      ...s.counters,
      ...this.totals,
      numWaiting: s.numWaiting,
      numRunning: s.numRunning,
      numPaused: s.numPaused,
      numFreeBlocks: s.kv.numFree,
      numBlocks: s.kv.numBlocks,
      tiers: { device: tier('device'), host: tier('host') },
      numSteps: this.numSteps,
      numRounds: this.numRounds,
      phaseUs: { ...this.phaseUs },
    };
  }

  /** Resolves when no step is in flight and nothing runnable is queued. */
  async idle(): Promise<void> {
    while (this.looping) await this.loop;
  }

  /** Fails every live request with TDM_DISPOSED and waits for the step in flight to return. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      // Nobody is left to take a burst's remaining rounds.
      this.interruptBurst();
      this.failAll(new TandemError('TDM_DISPOSED', 'the model was disposed while this request was running'));
    }
    await this.idle();
  }

  /** A request waits for the burst in flight at most a round: it is planned in after it. */
  private interruptBurst(): void {
    if (!this.burstInFlight) return;
    this.burstInFlight = false;
    this.executor.interruptBurst?.();
  }

  private kick(): void {
    if (this.looping || this.closed) return;
    this.looping = true;
    this.loop = this.run();
  }

  /** An internal error outside any one step: every live request fails with it, none hangs. */
  private failAll(error: TandemError): void {
    for (const [seqId, entry] of [...this.live]) {
      this.live.delete(seqId);
      this.scheduler.finish(seqId, 'aborted');
      this.failed(entry, error);
    }
  }

  /**
   * The loop: apply a step's result, deliver its tokens (observers run synchronously, so a stop
   * string or a full stream buffer takes effect before the next plan), plan and launch the
   * next step, and only then yield, so that consumers' continuations run while it does. The
   * host's time between a result and the next launch is what decode bursts pay once a burst.
   */
  private async run(): Promise<void> {
    const planner = this.policy ?? this.scheduler;
    let inFlight: InFlightStep | undefined;
    // When the executor last went idle: host time is what passes from then to its next result, less the step's own time.
    let idleSinceMs = this.now();
    try {
      // Paused requests alone do not keep the loop going; setPaused(id, false) restarts it.
      // A step in flight is always applied, even after close(): its blocks are freed with it.
      for (;;) {
        if (!inFlight) {
          if (this.closed || !this.scheduler.hasRunnableWork) break;
          // One turn of the event loop before a step that follows none: submits of the same turn share it.
          await nextTurn();
          if (this.closed) break;
          inFlight = this.launch(planner);
          if (!inFlight) break;
        }
        const { plan, decision, result: pending } = inFlight;
        inFlight = undefined;
        let result: StepResult;
        try {
          result = await pending;
        } catch (err) {
          this.burstInFlight = false;
          idleSinceMs = this.now();
          for (const event of planner.fail(plan, asTandemError(err))) this.dispatch(event);
          continue;
        }
        const arrivedMs = this.now();
        this.burstInFlight = false;
        this.numSteps++;
        const rounds = roundsOf(plan, result);
        this.numRounds += rounds;
        this.account(result);
        if (Number.isFinite(result.totalUs)) {
          const hostUs = Math.max(0, (arrivedMs - idleSinceMs) * 1000 - result.totalUs);
          this.totals.hostUs += hostUs;
          this.hostEmaUs = Number.isNaN(this.hostEmaUs) ? hostUs : this.hostEmaUs + BURST_EMA * (hostUs - this.hostEmaUs);
          // Decode rounds only: a prompt chunk's time says nothing about the next burst's.
          if (plan.sequences.every((p) => p.tokens.length === 1) && result.totalUs > 0) {
            const roundUs = result.totalUs / rounds;
            this.roundEmaUs = Number.isNaN(this.roundEmaUs) ? roundUs : this.roundEmaUs + BURST_EMA * (roundUs - this.roundEmaUs);
          }
        }
        idleSinceMs = arrivedMs;
        const events = planner.update(plan, result);
        this.onStep?.(plan, result, decision);
        // Delivery first: a stop string or a full stream buffer ends or pauses its request before the next plan.
        for (const event of events) this.dispatch(event);
        if (this.closed || !this.scheduler.hasRunnableWork) continue;
        inFlight = this.launch(planner);
        // Consumers' continuations (the promises delivery resolved), abort signals, timers and
        // I/O run here, while the next step does; an executor that answers at once would
        // otherwise hold the event loop.
        if (inFlight) await nextTurn();
      }
    } catch (err) {
      this.failAll(asTandemError(err));
    } finally {
      // Whatever ended the loop, a step handed to the executor returns before the loop is done.
      if (inFlight) await inFlight.result.catch(() => undefined);
      // Cleared in the same turn as the last check, so a submit() right after starts a new loop.
      this.looping = false;
    }
  }

  /** Plans a step and hands it to the executor; undefined when there is nothing to run. */
  private launch(planner: Scheduler | PolicyScheduler): InFlightStep | undefined {
    const steps = this.burstSize();
    const plan = planner.schedule(steps > 1 ? { decodeSteps: steps } : {});
    if (plan.sequences.length === 0 && plan.copies.length === 0) {
      if (!this.scheduler.hasRunnableWork) return undefined;
      throw new TandemError('TDM_INTERNAL', `the scheduler planned nothing for ${this.scheduler.numWaiting} waiting and ${this.scheduler.numRunning} running requests`);
    }
    const decision = this.policy?.lastDecision;
    const t = this.now();
    for (const p of plan.sequences) {
      const m = this.live.get(p.seqId)?.seq.metrics;
      if (m && m.scheduledMs === undefined) m.scheduledMs = t;
    }
    this.burstInFlight = plan.sequences.some((p) => (p.decodeSteps ?? 1) > 1);
    // An executor that throws instead of rejecting is treated as a failed step.
    let result: Promise<StepResult>;
    try {
      result = this.executor.step(plan);
    } catch (err) {
      result = Promise.reject(err);
    }
    // Handled here, awaited later: a rejection must not count as unhandled while this step's predecessor's tokens are delivered.
    result.catch(() => undefined);
    return { plan, decision, result };
  }

  private account(result: StepResult): void {
    if (Number.isFinite(result.totalUs)) this.totals.stepUs += result.totalUs;
    for (const [phase, us] of Object.entries(result.phaseUs ?? {})) {
      if (Number.isFinite(us)) this.phaseUs[phase] = (this.phaseUs[phase] ?? 0) + us;
    }
  }

  private dispatch(event: SequenceEvent): void {
    const entry = this.live.get(event.seqId);
    if (!entry) return;
    const { observer, seq } = entry;
    try {
      if (event.promptLogits) {
        const { startPos, count, logits } = event.promptLogits;
        observer.onPromptLogits?.(startPos, count, logits);
      }
      if (event.promptEmbeddings) {
        const { startPos, count, rows } = event.promptEmbeddings;
        observer.onPromptEmbeddings?.(startPos, count, rows);
      }
      if (event.token !== undefined) {
        const t = this.now();
        seq.metrics.firstTokenMs ??= t;
        seq.metrics.lastTokenMs = t;
        for (const [i, token] of (event.drafted ?? []).entries()) {
          observer.onToken?.(token, event.draftedLogprobs?.[i]);
          // The consumer may have cancelled the request (a stop string): what follows is not its.
          if (this.live.get(event.seqId) !== entry) return;
        }
        observer.onToken?.(event.token, event.logprobs);
      }
    } catch (err) {
      // A failing consumer ends its own request, never the loop or the other requests.
      this.live.delete(event.seqId);
      this.scheduler.finish(event.seqId, 'aborted');
      this.failed(entry, asTandemError(err));
      return;
    }
    // The consumer may have cancelled the request from inside onToken (a stop string).
    if (this.live.get(event.seqId) !== entry) return;
    if (event.error) {
      this.live.delete(event.seqId);
      this.failed(entry, asTandemError(event.error));
    } else if (event.finish) {
      this.live.delete(event.seqId);
      this.finished(entry, event.finish);
    }
  }

  private finished(entry: Live, reason: StopReason): void {
    entry.seq.metrics.finishedMs = this.now();
    if (reason === 'aborted') this.totals.numAborted++;
    else this.totals.numFinished++;
    entry.observer.onFinish(reason, entry.seq.metrics);
  }

  private failed(entry: Live, error: TandemError): void {
    entry.seq.metrics.finishedMs = this.now();
    this.totals.numFailed++;
    entry.observer.onError(error, entry.seq.metrics);
  }
}
