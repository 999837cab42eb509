// The decode loop: owns the request queue (through the Scheduler) and runs one step at a
// time on an executor (the native model, or a fake in tests). Concurrent requests share
// steps; the loop awaits each native step, so compute never blocks the event loop.
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { StepPlan, StepResult } from '../native/step-plan.js';
import { asTandemError, TandemError } from '../native/errors.js';
import { Scheduler, type SchedulerConfig, type SequenceEvent } from './scheduler.js';
import { Sequence, type SequenceParams, type StopReason } from './sequence.js';

/** Runs one plan; one call at a time. The native model satisfies it. */
export interface StepExecutor {
  step(plan: StepPlan): Promise<StepResult>;
}

/** How the engine reports a sequence's progress; called on the event loop, never re-entrantly. */
export interface SequenceObserver {
  /** A token was sampled for the sequence (before onFinish when it is the last). */
  onToken?(token: number): void;
  /** Logits of prompt positions [startPos, startPos + count), position-major (count × n_vocab). */
  onPromptLogits?(startPos: number, count: number, logits: Float32Array): void;
  /** The sequence ended; called once, and nothing follows it. */
  onFinish(reason: StopReason): void;
  /** The sequence failed; called once instead of onFinish. */
  onError(error: TandemError): void;
}

export interface EngineStats {
  numWaiting: number;
  numRunning: number;
  /** KV blocks free over both tiers. */
  numFreeBlocks: number;
  numBlocks: number;
  /** Steps run since the engine started. */
  numSteps: number;
}

export class Engine {
  readonly scheduler: Scheduler;
  /** Called after every step with its plan and result (metrics, the cost model's online fit). */
  onStep: ((plan: StepPlan, result: StepResult) => void) | undefined;
  private readonly executor: StepExecutor;
  private readonly observers = new Map<number, SequenceObserver>();
  private nextSeqId = 1;
  private numSteps = 0;
  /** The running loop; `looping` says whether it is still going. */
  private loop: Promise<void> = Promise.resolve();
  private looping = false;
  private closed = false;

  constructor(executor: StepExecutor, config: SchedulerConfig) {
    this.executor = executor;
    this.scheduler = new Scheduler(config);
  }

  /** Queues a request and returns its sequence id. Throws TDM_CONTEXT_FULL for a prompt that does not fit. */
  submit(prompt: readonly number[], params: SequenceParams, observer: SequenceObserver): number {
    if (this.closed) throw new TandemError('TDM_DISPOSED', 'the model was disposed');
    const seq = new Sequence(this.nextSeqId++, prompt, params);
    this.scheduler.add(seq);
    this.observers.set(seq.id, observer);
    this.kick();
    return seq.id;
  }

  /**
   * Ends a sequence now: its observer's onFinish(reason) runs before this returns, no
   * further tokens are reported, and its KV blocks are freed by the next step at the latest.
   */
  cancel(seqId: number, reason: StopReason): void {
    const observer = this.observers.get(seqId);
    if (!observer) return;
    this.observers.delete(seqId);
    this.scheduler.finish(seqId, reason);
    observer.onFinish(reason);
  }

  get stats(): EngineStats {
    const s = this.scheduler;
    return {
      numWaiting: s.numWaiting,
      numRunning: s.numRunning,
      numFreeBlocks: s.kv.numFree,
      numBlocks: s.kv.numBlocks,
      numSteps: this.numSteps,
    };
  }

  /** Resolves when no step is in flight and nothing is queued. */
  async idle(): Promise<void> {
    while (this.looping) await this.loop;
  }

  /** Fails every live request with TDM_DISPOSED and waits for the step in flight to return. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.failAll(new TandemError('TDM_DISPOSED', 'the model was disposed while this request was running'));
    }
    await this.idle();
  }

  private kick(): void {
    if (this.looping || this.closed) return;
    this.looping = true;
    this.loop = this.run();
  }

  /** An internal error outside any one step: every live request fails with it, none hangs. */
  private failAll(error: TandemError): void {
    for (const [seqId, observer] of [...this.observers]) {
      this.observers.delete(seqId);
      this.scheduler.finish(seqId, 'aborted');
      observer.onError(error);
    }
  }

  private async run(): Promise<void> {
    try {
      while (this.scheduler.hasWork && !this.closed) {
        // One turn of the event loop between steps: abort signals, timers and I/O get their turn.
        await nextTurn();
        if (this.closed) break;
        const plan = this.scheduler.schedule();
        if (plan.sequences.length === 0) {
          throw new TandemError('TDM_INTERNAL', `the scheduler planned nothing for ${this.scheduler.numWaiting} waiting and ${this.scheduler.numRunning} running requests`);
        }
        let events: SequenceEvent[];
        try {
          const result = await this.executor.step(plan);
          this.numSteps++;
          events = this.scheduler.update(plan, result);
          this.onStep?.(plan, result);
        } catch (err) {
          events = this.scheduler.fail(plan, asTandemError(err));
        }
        for (const event of events) this.dispatch(event);
      }
    } catch (err) {
      this.failAll(asTandemError(err));
    } finally {
      // Cleared in the same turn as the last hasWork check, so a submit() right after starts a new loop.
      this.looping = false;
    }
  }

  private dispatch(event: SequenceEvent): void {
    const observer = this.observers.get(event.seqId);
    if (!observer) return;
    try {
      if (event.promptLogits) {
        const { startPos, count, logits } = event.promptLogits;
        observer.onPromptLogits?.(startPos, count, logits);
      }
      if (event.token !== undefined) observer.onToken?.(event.token);
    } catch (err) {
      // A failing consumer ends its own request, never the loop or the other requests.
      this.observers.delete(event.seqId);
      this.scheduler.finish(event.seqId, 'aborted');
      observer.onError(asTandemError(err));
      return;
    }
    // The consumer may have cancelled the request from inside onToken (a stop string).
    if (this.observers.get(event.seqId) !== observer) return;
    if (event.error) {
      this.observers.delete(event.seqId);
      observer.onError(asTandemError(event.error));
    } else if (event.finish) {
      this.observers.delete(event.seqId);
      observer.onFinish(event.finish);
    }
  }
}
