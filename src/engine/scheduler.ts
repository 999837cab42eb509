// The continuous-batching scheduler, with vLLM v1's contract: schedule() turns running
// and waiting sequences into a StepPlan (plain data); update(plan, result) applies what
// the step produced. It never runs the model, so tests drive it with fake StepResults.
import type { SequencePlan, StepPlan, StepResult, Strategy } from '../native/step-plan.js';
import { TandemError } from '../native/errors.js';
import { KvBlockManager } from './kv-blocks.js';
import { Sequence, type StopReason } from './sequence.js';

export interface SchedulerConfig {
  /** Tokens one sequence may hold, prompt and generated together. */
  contextSize: number;
  /** Tokens per KV block. */
  blockTokens: number;
  /** KV blocks in each tier's pool. */
  numBlocks: { device: number; host: number };
  /** Sequences in one step at most. */
  maxRunning: number;
  /** Prompt tokens of one sequence in one step at most (the prefill chunk). */
  maxChunkTokens: number;
  /** Tokens in one step at most, over all sequences (decodes count one each). */
  maxStepTokens: number;
  /** How the executor spreads the step over devices. */
  strategy: Strategy;
}

/** What one step did to one sequence. */
export interface SequenceEvent {
  seqId: number;
  /** The token sampled this step, if the step sampled. */
  token?: number;
  /** Logits of prompt positions [startPos, startPos + count) that were asked for, position-major (count × n_vocab). */
  promptLogits?: { startPos: number; count: number; logits: Float32Array };
  /** Set when the sequence ended with this step. */
  finish?: StopReason;
  /** Set when the step failed; the sequence is gone. */
  error?: Error;
}

/** Throws TDM_BAD_ARGUMENT for a configuration the scheduler cannot run (e.g. a pool too small for one sequence). */
export function checkSchedulerConfig(config: SchedulerConfig): void {
  for (const key of ['contextSize', 'blockTokens', 'maxRunning', 'maxChunkTokens', 'maxStepTokens'] as const) {
    const v = config[key];
    if (!Number.isInteger(v) || v < 1) {
      throw new TandemError('TDM_BAD_ARGUMENT', `scheduler ${key} must be a positive integer, got ${v}`);
    }
  }
  const perSequence = Math.ceil(config.contextSize / config.blockTokens);
  const largestTier = Math.max(config.numBlocks.device, config.numBlocks.host);
  if (largestTier < perSequence) {
    throw new TandemError(
      'TDM_BAD_ARGUMENT',
      `the KV cache holds ${largestTier} blocks of ${config.blockTokens} tokens in its largest tier, fewer than the ${perSequence} one sequence of ${config.contextSize} tokens needs`,
    );
  }
}

export class Scheduler {
  readonly config: Readonly<SchedulerConfig>;
  readonly kv: KvBlockManager;
  /** Live sequences (waiting or running) by id. */
  private readonly live = new Map<number, Sequence>();
  /** FIFO; preempted sequences go back to the front. */
  private readonly waiting: Sequence[] = [];
  /** In admission order; the newest is preempted first. */
  private running: Sequence[] = [];
  /** Sequences in the plan handed out by schedule() and not yet updated: their blocks must stay put. */
  private readonly inFlight = new Set<number>();
  /** Finished while in flight: their blocks are freed when the step returns. */
  private readonly deferredFree = new Map<number, Sequence>();
  private planOutstanding = false;

  constructor(config: SchedulerConfig) {
    checkSchedulerConfig(config);
    this.config = { ...config };
    this.kv = new KvBlockManager(config.blockTokens, config.numBlocks);
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get numRunning(): number {
    return this.running.length;
  }

  /** True while any sequence waits or runs. */
  get hasWork(): boolean {
    return this.live.size > 0;
  }

  /** A live sequence by id. */
  get(seqId: number): Sequence | undefined {
    return this.live.get(seqId);
  }

  /** Queues a sequence. A prompt that leaves no room to generate is a TDM_CONTEXT_FULL error. */
  add(seq: Sequence): void {
    if (seq.promptLength === 0) throw new TandemError('TDM_BAD_ARGUMENT', 'a prompt needs at least one token');
    const roomNeeded = seq.params.maxTokens > 0 ? 1 : 0;
    if (seq.promptLength + roomNeeded > this.config.contextSize) {
      throw new TandemError(
        'TDM_CONTEXT_FULL',
        `the prompt has ${seq.promptLength} tokens but the context holds ${this.config.contextSize} (prompt and generated tokens together)` +
          (roomNeeded ? `, so at most ${this.config.contextSize - 1} prompt tokens leave room to generate` : '') +
          '; shorten the prompt or load the model with a larger contextSize',
      );
    }
    if (this.live.has(seq.id)) throw new TandemError('TDM_INTERNAL', `sequence ${seq.id} added twice`);
    this.live.set(seq.id, seq);
    this.waiting.push(seq);
  }

  /**
   * Ends a live sequence now (abort, stop string). Its blocks are freed at once, or when
   * the step in flight returns if it is part of it. False when it was not live.
   */
  finish(seqId: number, reason: StopReason): boolean {
    const seq = this.live.get(seqId);
    if (!seq) return false;
    this.retire(seq, reason);
    return true;
  }

  /** The next step: decodes first, then prefill chunks, then newly admitted sequences. */
  schedule(): StepPlan {
    if (this.planOutstanding) throw new TandemError('TDM_INTERNAL', 'schedule() called before update() of the previous plan');
    const { maxChunkTokens, maxStepTokens, maxRunning } = this.config;
    const plans: SequencePlan[] = [];
    const scheduled = new Set<number>();
    let budget = maxStepTokens;

    const decoding = this.running.filter((s) => !s.isPrefilling);
    const prefilling = this.running.filter((s) => s.isPrefilling);
    for (const seq of [...decoding, ...prefilling]) {
      if (budget === 0) break;
      if (seq.status !== 'running') continue; // preempted earlier in this loop
      const n = Math.min(seq.numPending, maxChunkTokens, budget);
      if (!this.growOrPreempt(seq, n, scheduled)) continue;
      plans.push(this.planFor(seq, n));
      scheduled.add(seq.id);
      budget -= n;
    }

    while (this.waiting.length > 0 && this.running.length < maxRunning && budget > 0) {
      const seq = this.waiting[0];
      const n = Math.min(seq.numPending, maxChunkTokens, budget);
      // Admission never preempts: a new request waits for blocks rather than evicting running ones.
      if (!this.kv.grow(seq, seq.numComputed + n)) break;
      this.waiting.shift();
      seq.status = 'running';
      this.running.push(seq);
      plans.push(this.planFor(seq, n));
      scheduled.add(seq.id);
      budget -= n;
    }

    for (const id of scheduled) this.inFlight.add(id);
    this.planOutstanding = plans.length > 0;
    return { strategy: this.config.strategy, copies: [], sequences: plans };
  }

  /** Applies a step's results: appends sampled tokens, ends sequences, frees their blocks. */
  update(plan: StepPlan, result: StepResult): SequenceEvent[] {
    const results = new Map(result.sequences.map((r) => [r.seqId, r]));
    const events: SequenceEvent[] = [];
    for (const entry of plan.sequences) {
      this.inFlight.delete(entry.seqId);
      const seq = this.live.get(entry.seqId);
      if (!seq) {
        this.freeDeferred(entry.seqId);
        continue;
      }
      const r = results.get(entry.seqId);
      if (!r || (entry.sample && !(Number.isInteger(r.token) && r.token >= 0))) {
        const error = new TandemError('TDM_INTERNAL', `the step returned no ${r ? 'valid token' : 'result'} for sequence ${seq.id}`);
        this.retire(seq, undefined);
        events.push({ seqId: seq.id, error });
        continue;
      }
      const event: SequenceEvent = { seqId: seq.id };
      const end = entry.startPos + entry.tokens.length;
      seq.numComputed = end;
      if (entry.returnAllLogits && r.allLogits) event.promptLogits = this.newPromptLogits(seq, entry, r.allLogits);
      let reason: StopReason | undefined;
      if (entry.sample) {
        seq.tokens.push(r.token);
        event.token = r.token;
        if (seq.params.stopTokens.has(r.token)) reason = 'eos';
        else if (seq.numGenerated >= seq.params.maxTokens) reason = 'maxTokens';
        else if (seq.tokens.length >= this.config.contextSize) reason = 'contextFull';
      } else if (end === seq.tokens.length && seq.params.maxTokens === 0) {
        reason = 'maxTokens';
      }
      if (reason) {
        this.retire(seq, reason);
        event.finish = reason;
      }
      events.push(event);
    }
    this.planOutstanding = false;
    return events;
  }

  /** The step failed: every sequence in it ends with the error; the others carry on. */
  fail(plan: StepPlan, error: Error): SequenceEvent[] {
    const events: SequenceEvent[] = [];
    for (const entry of plan.sequences) {
      this.inFlight.delete(entry.seqId);
      const seq = this.live.get(entry.seqId);
      if (seq) {
        this.retire(seq, undefined);
        events.push({ seqId: seq.id, error });
      } else {
        this.freeDeferred(entry.seqId);
      }
    }
    this.planOutstanding = false;
    return events;
  }

  /** Grows seq's table for n more tokens, preempting newer unscheduled sequences if short; false if seq itself was preempted. */
  private growOrPreempt(seq: Sequence, n: number, scheduled: ReadonlySet<number>): boolean {
    while (!this.kv.grow(seq, seq.numComputed + n)) {
      const victim = [...this.running].reverse().find((s) => s !== seq && !scheduled.has(s.id)) ?? seq;
      this.preempt(victim);
      if (victim === seq) return false;
    }
    return true;
  }

  /** Preemption by recompute: drop the KV, keep the tokens, go back to the front of the queue. */
  private preempt(seq: Sequence): void {
    this.kv.release(seq);
    seq.numComputed = 0;
    seq.numPreemptions++;
    seq.status = 'waiting';
    this.running = this.running.filter((s) => s !== seq);
    this.waiting.unshift(seq);
  }

  private planFor(seq: Sequence, n: number): SequencePlan {
    const start = seq.numComputed;
    const sample = start + n === seq.tokens.length && seq.numGenerated < seq.params.maxTokens;
    const p = seq.params.sampling;
    const plan: SequencePlan = {
      seqId: seq.id,
      tokens: Int32Array.from(seq.tokens.slice(start, start + n)),
      startPos: start,
      blockTable: Int32Array.from(seq.blockTable),
      kvTier: seq.kvTier!,
      attention: this.config.strategy === 'cpu' || seq.kvTier === 'host' ? 'cpu' : 'gpu',
      sample,
    };
    if (sample) {
      plan.sampling = p;
      const penalised = p.repeatPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
      if (penalised && seq.params.penaltyWindow > 0) {
        plan.recentTokens = Int32Array.from(seq.tokens.slice(-seq.params.penaltyWindow));
      }
    }
    if (seq.params.returnPromptLogits && start < seq.promptLength) plan.returnAllLogits = true;
    return plan;
  }

  /** The part of a chunk's logits not delivered before (a recompute after preemption repeats positions). */
  private newPromptLogits(seq: Sequence, entry: SequencePlan, all: Float32Array): SequenceEvent['promptLogits'] {
    const n = entry.tokens.length;
    const nVocab = all.length / n;
    const from = Math.max(entry.startPos, seq.numScored);
    const to = Math.min(entry.startPos + n, seq.promptLength);
    if (to <= from) return undefined;
    seq.numScored = to;
    return {
      startPos: from,
      count: to - from,
      logits: all.subarray((from - entry.startPos) * nVocab, (to - entry.startPos) * nVocab),
    };
  }

  /** Ends a sequence; its blocks wait for the step in flight if it is part of it. */
  private retire(seq: Sequence, reason: StopReason | undefined): void {
    this.live.delete(seq.id);
    seq.status = 'finished';
    seq.stopReason = reason;
    this.running = this.running.filter((s) => s !== seq);
    const w = this.waiting.indexOf(seq);
    if (w >= 0) this.waiting.splice(w, 1);
    if (this.inFlight.has(seq.id)) this.deferredFree.set(seq.id, seq);
    else this.kv.release(seq);
  }

  private freeDeferred(seqId: number): void {
    const seq = this.deferredFree.get(seqId);
    if (!seq) return;
    this.deferredFree.delete(seqId);
    this.kv.release(seq);
  }
}
