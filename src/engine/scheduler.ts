// The continuous-batching scheduler, with vLLM v1's contract: schedule() turns running
// and waiting sequences into a StepPlan (plain data); update(plan, result) applies what
// the step produced. It never runs the model, so tests drive it with fake StepResults.
// Memory: paged KV in two tiers, prefix sharing, moves between tiers, recompute.
import type { KvTier, SequencePlan, SequenceResult, StepPlan, StepResult, Strategy } from '../native/step-plan.js';
import type { BlockCopy } from '../native/step-plan.js';
import { asTandemError, TandemError } from '../native/errors.js';
import { blocksPerSequence, KvBlockManager, otherTier, TIERS } from './kv-blocks.js';
import { logprobsOf, type TokenLogprobs } from './logprobs.js';
import { NgramIndex } from './ngram-draft.js';
import { Sequence, type StopReason } from './sequence.js';

/** What the scheduler does with a sequence whose tier has no block left for it. */
export const PreemptionMode = {
  /** Move the sequence's blocks whole to the other tier when it has room (a copy, no recompute); else recompute. */
  Swap: 'swap',
  /** Always drop the KV and recompute it later from the tokens (vLLM v1's only mode). */
  Recompute: 'recompute',
} as const;
export type PreemptionMode = (typeof PreemptionMode)[keyof typeof PreemptionMode];

export interface SchedulerConfig {
  /** Tokens one sequence may hold, prompt and generated together. */
  contextSize: number;
  /** Tokens per KV block. */
  blockTokens: number;
  /** KV blocks in each tier's pool. */
  numBlocks: { device: number; host: number };
  /** Sequences in one step at most (and sequences admitted and not paused at most). */
  maxRunning: number;
  /** Prompt tokens of one sequence in one step at most (the prefill chunk). */
  maxChunkTokens: number;
  /** Tokens in one step at most, over all sequences (decodes count one each). */
  maxStepTokens: number;
  /** How the executor spreads the step over devices; under 'gpu-only' a sequence in the host tier waits to move back. */
  strategy: Strategy;
  /** Requests waiting for admission at most; add() beyond it throws TDM_QUEUE_FULL. Default: no bound. */
  maxWaiting?: number;
  /** Share full KV blocks between sequences with a common prefix. Default true. */
  prefixCaching?: boolean;
  /** Default 'swap'. */
  preemption?: PreemptionMode;
  /** Fraction of a tier's blocks that admission leaves free for running sequences to grow into. Default 0.01. */
  admissionWatermark?: number;
  /**
   * > 0 when the model's sliding-window layers keep their KV in blocks of their own: the
   * positions they see. Each sequence then has a sliding table whose blocks behind the
   * window are freed. Default 0 (one table holds every layer).
   */
  slidingWindow?: number;
  /** Layer groups the sliding layers fill (native/core/kv_pool.h): sliding blocks per block index. Default 1. */
  slidingGroups?: number;
  /**
   * Speculative decoding with prompt-lookup drafts (NgramIndex): in a step where every
   * sequence decodes, each may add up to maxDraft guessed tokens, verified by the model, while
   * the step holds at most stepTokens tokens. maxDraft 0 (the default) turns it off.
   */
  speculation?: { maxDraft: number; stepTokens: number };
}

/** A sliding table (slidingGroups entries per block index) as the native plan takes it: each group's table in turn. */
function groupMajor(table: readonly number[], groups: number): Int32Array {
  const out = new Int32Array(table.length);
  const per = table.length / groups;
  for (let i = 0; i < per; i++) for (let j = 0; j < groups; j++) out[j * per + i] = table[i * groups + j]!;
  return out;
}

/** Tokens a request whose guesses kept missing generates without guesses before it tries one again. */
export const DRAFT_RETRY_TOKENS = 16;

/** Requests for one schedule() call. */
export interface ScheduleOptions {
  /** Device-tier sequences to move to the host tier before the step (those whose prompt is computed and that fit there). */
  demote?: readonly number[];
  /** Draws each sequence may take in a row when the whole step is plain decodes (a decode burst, SequencePlan.decodeSteps). Default 1. */
  decodeSteps?: number;
}

/** What one step did to one sequence. */
export interface SequenceEvent {
  seqId: number;
  /** The token sampled this step, if the step sampled. */
  token?: number;
  /** Guesses the step accepted, or a decode burst's draws, drawn before `token`, in order. */
  drafted?: number[];
  /** With logprobs asked for: those of each `drafted` token (a decode burst's). */
  draftedLogprobs?: TokenLogprobs[];
  /** Logits of prompt positions [startPos, startPos + count) that were asked for, position-major (count × n_vocab). */
  promptLogits?: { startPos: number; count: number; logits: Float32Array };
  /** Hidden states after the output norm of prompt positions [startPos, startPos + count) that were asked for (count × n_embd). */
  promptEmbeddings?: { startPos: number; count: number; rows: Float32Array };
  /** The drawn token's logprobs, when the sequence asked for them. */
  logprobs?: TokenLogprobs;
  /** Set when the sequence ended with this step. */
  finish?: StopReason;
  /** Set when the step failed; the sequence is gone. */
  error?: Error;
}

/** Running totals since the scheduler was made, for stats and the bench. */
export interface SchedulerCounters {
  /** Sequences admitted from the queue (a preempted one counts again when readmitted). */
  numAdmissions: number;
  /** Tokens run through the model in prompt chunks and recomputes (everything but one-token decodes). */
  numPrefillTokens: number;
  /** Prompt tokens whose KV was found in the prefix cache instead. */
  numCachedTokens: number;
  /** Tokens sampled. */
  numGeneratedTokens: number;
  /** Sequences that lost their KV to be recomputed. */
  numPreemptions: number;
  /** Whole block tables moved between tiers. */
  numMoves: number;
  /** Requests refused because the queue was full. */
  numRejected: number;
  /** Failed steps of several sequences whose sequences were retried one by one. */
  numIsolations: number;
  /** Speculative decoding: guessed tokens verified, and those accepted (each saved a step). */
  numDraftTokens: number;
  numAcceptedDrafts: number;
}

/** Throws TDM_BAD_ARGUMENT for a configuration the scheduler cannot run (e.g. a pool too small for one sequence). */
export function checkSchedulerConfig(config: SchedulerConfig): void {
  for (const key of ['contextSize', 'blockTokens', 'maxRunning', 'maxChunkTokens', 'maxStepTokens'] as const) {
    const v = config[key];
    if (!Number.isInteger(v) || v < 1) {
      throw new TandemError('TDM_BAD_ARGUMENT', `scheduler ${key} must be a positive integer, got ${v}`);
    }
  }
  const w = config.admissionWatermark ?? 0;
  if (!(w >= 0 && w < 1)) throw new TandemError('TDM_BAD_ARGUMENT', `scheduler admissionWatermark must be in [0, 1), got ${w}`);
  const q = config.maxWaiting ?? Infinity;
  if (!(q >= 0) || (q !== Infinity && !Number.isInteger(q))) throw new TandemError('TDM_BAD_ARGUMENT', `scheduler maxWaiting must be a non-negative integer, got ${q}`);
  const window = config.slidingWindow ?? 0;
  if (!(Number.isInteger(window) && window >= 0)) throw new TandemError('TDM_BAD_ARGUMENT', `scheduler slidingWindow must be a non-negative integer, got ${window}`);
  const spec = config.speculation ?? { maxDraft: 0, stepTokens: 1 };
  if (!(Number.isInteger(spec.maxDraft) && spec.maxDraft >= 0) || !(Number.isInteger(spec.stepTokens) && spec.stepTokens >= 1)) {
    throw new TandemError('TDM_BAD_ARGUMENT', `scheduler speculation needs a non-negative integer maxDraft and a positive integer stepTokens, got ${spec.maxDraft} and ${spec.stepTokens}`);
  }
  const groups = config.slidingGroups ?? 1;
  if (!(Number.isInteger(groups) && groups >= 1)) throw new TandemError('TDM_BAD_ARGUMENT', `scheduler slidingGroups must be a positive integer, got ${groups}`);
  const perSequence = blocksPerSequence(config.contextSize, config.blockTokens, window, config.maxChunkTokens, groups);
  const runnable = config.strategy === 'gpu-only' ? ['device' as const] : TIERS;
  const largestTier = Math.max(...runnable.map((t) => config.numBlocks[t]));
  if (largestTier < perSequence) {
    throw new TandemError(
      'TDM_BAD_ARGUMENT',
      `the KV cache holds ${largestTier} blocks of ${config.blockTokens} tokens in its largest ${config.strategy === 'gpu-only' ? 'runnable ' : ''}tier, fewer than the ${perSequence} one sequence of ${config.contextSize} tokens needs`,
    );
  }
}

/** The plan being built by one schedule() call. */
interface StepDraft {
  plans: SequencePlan[];
  copies: BlockCopy[];
  /** Sequences in `plans`: their blocks are in use this step and they are not victims. */
  scheduled: Set<number>;
  /** Sequences whose tables moved this step: they do not move again until it returns. */
  moved: Set<Sequence>;
  /** Tokens left in the step's budget. */
  budget: number;
}

export class Scheduler {
  readonly config: Readonly<Required<SchedulerConfig>>;
  readonly kv: KvBlockManager;
  readonly counters: SchedulerCounters = {
    numAdmissions: 0,
    numPrefillTokens: 0,
    numCachedTokens: 0,
    numGeneratedTokens: 0,
    numPreemptions: 0,
    numMoves: 0,
    numRejected: 0,
    numIsolations: 0,
    numDraftTokens: 0,
    numAcceptedDrafts: 0,
  };
  /** Live sequences (waiting or running) by id. */
  private readonly live = new Map<number, Sequence>();
  /** FIFO; preempted sequences go back to the front. */
  private readonly waiting: Sequence[] = [];
  /** In admission order: earlier is higher priority; victims are taken from the end. */
  private running: Sequence[] = [];
  /** Sequences the outstanding plan computes or copies: their blocks must stay put until it returns. */
  private readonly inFlight = new Set<number>();
  /** Finished while in flight: their blocks are freed when the step returns. */
  private readonly deferredFree = new Map<number, Sequence>();
  /** Sequences of a failed step of several, each to be retried alone so that one bad request fails alone. */
  private isolating: number[] = [];
  /** Tables the outstanding plan moves (indexed once the copies have run; recomputed if the step fails). */
  private movedInPlan: Sequence[] = [];
  private planOutstanding = false;

  constructor(config: SchedulerConfig) {
    checkSchedulerConfig(config);
    this.config = {
      maxWaiting: Infinity,
      prefixCaching: true,
      preemption: PreemptionMode.Swap,
      admissionWatermark: 0.01,
      slidingWindow: 0,
      slidingGroups: 1,
      speculation: { maxDraft: 0, stepTokens: 1 },
      ...config,
    };
    this.kv = new KvBlockManager(config.blockTokens, config.numBlocks, this.config.prefixCaching, this.config.slidingWindow, this.config.slidingGroups);
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get numRunning(): number {
    return this.running.length;
  }

  /** Live sequences whose consumer stopped reading. */
  get numPaused(): number {
    let n = 0;
    for (const s of this.live.values()) if (s.paused) n++;
    return n;
  }

  /** True while any sequence waits or runs. */
  get hasWork(): boolean {
    return this.live.size > 0;
  }

  /** True while a sequence that is not paused waits or runs: a step would make progress. */
  get hasRunnableWork(): boolean {
    for (const s of this.live.values()) if (!s.paused) return true;
    return false;
  }

  /** A live sequence by id. */
  get(seqId: number): Sequence | undefined {
    return this.live.get(seqId);
  }

  /**
   * Queues a sequence. A prompt that leaves no room to generate is a TDM_CONTEXT_FULL error;
   * a full queue is TDM_QUEUE_FULL (back-pressure: the caller retries later).
   */
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
    if (this.waiting.length >= this.config.maxWaiting) {
      this.counters.numRejected++;
      throw new TandemError(
        'TDM_QUEUE_FULL',
        `the request queue is full: ${this.waiting.length} requests wait behind ${this.running.length} running ones; retry later, or load the model with a larger maxQueuedRequests`,
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

  /**
   * Pauses a sequence (its consumer stopped reading) or resumes it. A paused sequence takes
   * no steps and is not admitted; its blocks are the first reclaimed when memory is short.
   * False when it is not live.
   */
  setPaused(seqId: number, paused: boolean): boolean {
    const seq = this.live.get(seqId);
    if (!seq) return false;
    seq.paused = paused;
    return true;
  }

  /**
   * The next step. A failed step of several sequences is followed by steps of one each;
   * otherwise: the tables in `demote` move to the host tier, at most one table moves back to
   * the device tier, then running decodes, then running prefill chunks (oldest first), then
   * newly admitted sequences, within the token budget.
   */
  schedule(options: ScheduleOptions = {}): StepPlan {
    if (this.planOutstanding) throw new TandemError('TDM_INTERNAL', 'schedule() called before update() of the previous plan');
    const draft: StepDraft = { plans: [], copies: [], scheduled: new Set(), moved: new Set(), budget: this.config.maxStepTokens };

    while (this.isolating.length > 0 && draft.plans.length === 0) {
      const seq = this.live.get(this.isolating[0]!);
      // A waiting (preempted) or paused one rejoins normal scheduling; a repeat failure isolates it again.
      if (!seq || seq.paused || seq.status !== 'running' || !this.runsIn(seq.kvTier!)) {
        this.isolating.shift();
        continue;
      }
      if (!this.scheduleRunning(seq, draft)) this.isolating.shift();
    }
    if (draft.plans.length > 0) return this.finalize(draft);

    if (options.demote) this.demote(options.demote, draft);
    this.promote(draft);
    const active = this.running.filter((s) => !s.paused && this.runsIn(s.kvTier!));
    const order = [...active.filter((s) => !s.isPrefilling), ...active.filter((s) => s.isPrefilling)];
    for (const seq of order) {
      if (draft.budget === 0 || draft.plans.length >= this.config.maxRunning) break;
      // Preempted, or moved to a tier that cannot run, earlier in this loop.
      if (seq.status !== 'running' || !this.runsIn(seq.kvTier!)) continue;
      this.scheduleRunning(seq, draft);
    }
    this.admit(draft);
    this.addDrafts(draft);
    this.addBurst(draft, options.decodeSteps ?? 1);
    return this.finalize(draft);
  }

  /** Applies a step's results: appends sampled tokens, indexes computed blocks, ends sequences and frees their blocks. */
  update(plan: StepPlan, result: StepResult): SequenceEvent[] {
    const results = new Map(result.sequences.map((r) => [r.seqId, r]));
    const events: SequenceEvent[] = [];
    for (const entry of plan.sequences) {
      if (this.isolating.length > 0) this.isolating = this.isolating.filter((id) => id !== entry.seqId);
      const seq = this.live.get(entry.seqId);
      if (!seq) continue;
      const r = results.get(entry.seqId);
      if (!r || (entry.sample && !(Number.isInteger(r.token) && r.token >= 0))) {
        const error = new TandemError('TDM_INTERNAL', `the step returned no ${r ? 'valid token' : 'result'} for sequence ${seq.id}`);
        this.retire(seq, undefined);
        events.push({ seqId: seq.id, error });
        continue;
      }
      const numDraft = entry.numDraft ?? 0;
      const drawn = numDraft > 0 ? this.verifiedDraws(entry, r) : (entry.decodeSteps ?? 1) > 1 ? this.burstDraws(entry, r) : [r.token];
      if (!drawn) {
        this.retire(seq, undefined);
        const asked = numDraft > 0 ? `its ${numDraft} drafts` : `its burst of ${entry.decodeSteps}`;
        events.push({ seqId: seq.id, error: new TandemError('TDM_INTERNAL', `the step returned no valid draws of ${asked} for sequence ${seq.id}`) });
        continue;
      }
      const event: SequenceEvent = { seqId: seq.id };
      // Positions whose KV holds tokens of the sequence: the guesses drawn past were written over nothing it keeps.
      const end = entry.startPos + entry.tokens.length - numDraft + (drawn.length - 1);
      seq.metrics.numSteps++;
      // A decode feeds back one generated token (and its guesses); anything else is a prompt chunk or a recompute.
      if (entry.tokens.length - numDraft > 1 || entry.startPos < seq.promptLength) this.counters.numPrefillTokens += entry.tokens.length;
      if (entry.returnAllLogits && r.allLogits) {
        const rows = this.newPromptRows(seq, entry, r.allLogits, 'numScored');
        if (rows) event.promptLogits = { startPos: rows.startPos, count: rows.count, logits: rows.rows };
      }
      if (entry.returnEmbeddings && r.embeddings) event.promptEmbeddings = this.newPromptRows(seq, entry, r.embeddings, 'numEmbedded');
      let reason: StopReason | undefined;
      if (entry.sample) {
        if (numDraft > 0) this.countDrafts(seq, numDraft, drawn.length - 1);
        // A burst returns a logits row per draw; other steps one, for their last draw.
        const rowLogprobs = (j: number): TokenLogprobs | undefined => {
          if (seq.params.logprobs === undefined || !r.logits) return undefined;
          const nVocab = r.logits.length / (r.tokens && (entry.decodeSteps ?? 1) > 1 ? r.tokens.length : 1);
          const row = (entry.decodeSteps ?? 1) > 1 ? j : 0;
          return logprobsOf(r.logits.subarray(row * nVocab, (row + 1) * nVocab), drawn[j]!, seq.params.logprobs);
        };
        for (const [j, token] of drawn.entries()) {
          try {
            seq.params.constraint?.accept(token);
          } catch (err) {
            event.error = asTandemError(err);
            break;
          }
          seq.tokens.push(token);
          this.counters.numGeneratedTokens++;
          if (event.token !== undefined) {
            (event.drafted ??= []).push(event.token);
            if (event.logprobs) (event.draftedLogprobs ??= []).push(event.logprobs);
          }
          event.token = token;
          if ((entry.decodeSteps ?? 1) > 1) event.logprobs = rowLogprobs(j);
          if (seq.params.stopTokens.has(token)) reason = 'eos';
          else if (seq.numGenerated >= seq.params.maxTokens) reason = 'maxTokens';
          else if (seq.tokens.length >= this.config.contextSize) reason = 'contextFull';
          if (reason) break;
        }
        if (event.error) {
          this.retire(seq, undefined);
          events.push({ seqId: seq.id, error: event.error });
          continue;
        }
        if ((entry.decodeSteps ?? 1) === 1 && event.token !== undefined) event.logprobs = rowLogprobs(0);
      } else if (end === seq.tokens.length && seq.params.maxTokens === 0) {
        reason = 'maxTokens';
      }
      // A stop on an accepted guess leaves the KV of the guesses after it unused.
      seq.numComputed = Math.min(end, seq.tokens.length);
      this.kv.indexComputed(seq, seq.numComputed);
      if (reason) {
        this.retire(seq, reason);
        event.finish = reason;
      }
      events.push(event);
    }
    // Moved tables hold valid KV now that the copies have run.
    for (const seq of this.movedInPlan) if (seq.status === 'running') this.kv.indexComputed(seq, seq.numComputed);
    this.endStep();
    return events;
  }

  /**
   * The step failed. Tables it moved are recomputed (their copies may not have run). A step
   * of one sequence fails that sequence; the sequences of a larger step are retried one per
   * step, so that a request that breaks the executor fails alone and the others carry on.
   */
  fail(plan: StepPlan, error: Error): SequenceEvent[] {
    for (const seq of this.movedInPlan) if (seq.status === 'running') this.preempt(seq);
    const live = plan.sequences.map((e) => this.live.get(e.seqId)).filter((s): s is Sequence => s !== undefined);
    const events: SequenceEvent[] = [];
    if (plan.sequences.length > 1) {
      this.counters.numIsolations++;
      for (const seq of live) if (!this.isolating.includes(seq.id)) this.isolating.push(seq.id);
    } else {
      for (const seq of live) {
        this.retire(seq, undefined);
        events.push({ seqId: seq.id, error });
      }
    }
    this.endStep();
    return events;
  }

  /** Throws TDM_INTERNAL unless the pools' reference counts match the live block tables (tests call it after each step). */
  audit(): void {
    for (const seq of this.waiting) {
      if (seq.blockTable.length + seq.slidingTable.length > 0) throw new TandemError('TDM_INTERNAL', `waiting sequence ${seq.id} holds ${seq.blockTable.length} KV blocks`);
    }
    for (const seq of this.running) {
      if (seq.blockTable.length < this.kv.blocksFor(seq.numComputed)) throw new TandemError('TDM_INTERNAL', `running sequence ${seq.id} has KV for ${seq.numComputed} tokens in ${seq.blockTable.length} blocks`);
    }
    this.kv.audit([...this.live.values(), ...this.deferredFree.values()]);
  }

  private runsIn(tier: KvTier): boolean {
    return this.config.strategy !== 'gpu-only' || tier === 'device';
  }

  private endStep(): void {
    for (const id of this.inFlight) this.freeDeferred(id);
    this.inFlight.clear();
    this.movedInPlan = [];
    this.planOutstanding = false;
  }

  private finalize(draft: StepDraft): StepPlan {
    for (const id of draft.scheduled) this.inFlight.add(id);
    for (const seq of draft.moved) this.inFlight.add(seq.id);
    this.movedInPlan = [...draft.moved];
    this.planOutstanding = draft.plans.length > 0 || draft.copies.length > 0;
    return { strategy: this.config.strategy, copies: draft.copies, sequences: draft.plans };
  }

  /** Plans the next chunk (or decode token) of a running sequence, making room for it; false if it had to yield. */
  private scheduleRunning(seq: Sequence, draft: StepDraft): boolean {
    const n = Math.min(seq.numPending, this.config.maxChunkTokens, draft.budget);
    if (!this.ensureBlocks(seq, seq.numComputed + n, draft)) return false;
    draft.plans.push(this.planFor(seq, n));
    draft.scheduled.add(seq.id);
    draft.budget -= n;
    return true;
  }

  /**
   * Grows seq's table to cover `numTokens` positions. When its tier is short, lower-priority
   * sequences there (paused ones first, then the newest) give up their blocks; when none
   * is left, seq itself moves or is preempted. False when seq cannot run this step.
   */
  private ensureBlocks(seq: Sequence, numTokens: number, draft: StepDraft): boolean {
    for (;;) {
      if (this.kv.grow(seq, numTokens)) return true;
      const victim = this.pickVictim(seq.kvTier!, draft, seq);
      if (victim) {
        this.reclaim(victim, draft);
        continue;
      }
      const to = otherTier(seq.kvTier!);
      if (this.canMove(seq, to, this.kv.heldBlocks(seq, numTokens), draft)) {
        this.move(seq, to, draft);
        if (this.runsIn(to)) continue;
        return false;
      }
      this.preempt(seq);
      return false;
    }
  }

  /**
   * The sequence to take blocks of `tier` from: a paused one (newest first), else, when
   * `forSeq` is given, the newest unscheduled one admitted after it.
   */
  private pickVictim(tier: KvTier, draft: StepDraft, forSeq?: Sequence): Sequence | undefined {
    const eligible = (s: Sequence) => s.kvTier === tier && s !== forSeq && !draft.scheduled.has(s.id) && s.blockTable.length > 0;
    for (let i = this.running.length - 1; i >= 0; i--) {
      const s = this.running[i]!;
      if (s.paused && eligible(s)) return s;
    }
    if (!forSeq) return undefined;
    const floor = this.running.indexOf(forSeq);
    for (let i = this.running.length - 1; i > floor; i--) {
      const s = this.running[i]!;
      if (eligible(s)) return s;
    }
    return undefined;
  }

  /** Frees a victim's blocks in its tier: a move to the other tier if allowed and it fits, else preemption. */
  private reclaim(victim: Sequence, draft: StepDraft): void {
    const to = otherTier(victim.kvTier!);
    if (this.canMove(victim, to, this.kv.heldBlocks(victim, 0), draft)) this.move(victim, to, draft);
    else this.preempt(victim);
  }

  private canMove(seq: Sequence, to: KvTier, numBlocks: number, draft: StepDraft): boolean {
    return this.config.preemption === PreemptionMode.Swap && !draft.moved.has(seq) && this.kv.hasRoom(to, numBlocks);
  }

  private move(seq: Sequence, to: KvTier, draft: StepDraft): void {
    const copies = this.kv.move(seq, to);
    if (!copies) throw new TandemError('TDM_INTERNAL', `no room to move sequence ${seq.id} to the ${to} tier after checking for it`);
    draft.copies.push(...copies);
    draft.moved.add(seq);
    seq.metrics.numMoves++;
    this.counters.numMoves++;
  }

  /**
   * Moves each listed device-tier sequence whose prompt is computed to the host tier, by the
   * same copies as a swap, when the host has room for its table and its next token; the rest
   * are left where they are. A prefill still under way is not moved: its copy would grow.
   */
  private demote(seqIds: readonly number[], draft: StepDraft): void {
    if (this.config.preemption !== PreemptionMode.Swap || !this.runsIn('host')) return;
    for (const id of seqIds) {
      const seq = this.live.get(id);
      if (!seq || seq.status !== 'running' || seq.paused || seq.kvTier !== 'device' || seq.isPrefilling) continue;
      if (this.canMove(seq, 'host', this.kv.heldBlocks(seq, seq.numComputed + 1), draft)) this.move(seq, 'host', draft);
    }
  }

  /**
   * Moves the oldest running sequence in the host tier back to the device tier when the
   * device has room for it with headroom for the device sequences' growth and the rest of
   * the prompts they are prefilling (one per step, so copies stay short). Under 'gpu-only'
   * it is how a swapped-out sequence resumes.
   */
  private promote(draft: StepDraft): void {
    if (this.config.preemption !== PreemptionMode.Swap || this.kv.pools.device.numBlocks === 0) return;
    // A table demoted in this plan does not come straight back.
    const seq = this.running.find((s) => s.kvTier === 'host' && !s.paused && !draft.moved.has(s));
    if (!seq) return;
    // Each device sequence may take a block per table next step.
    const tables = this.kv.tablesPerSequence;
    const deviceActive = this.running.filter((s) => s.kvTier === 'device' && !s.paused).length * tables;
    // The move copies the whole table, which a prefill chunk may have grown past numComputed.
    const tableBlocks = this.kv.heldBlocks(seq, seq.numComputed + 1);
    // Blocks promised to device prefills under way: taking them, the move would push one out half done.
    let promised = 0;
    for (const s of this.running) {
      if (s.kvTier === 'device' && !s.paused && s.isPrefilling) promised += Math.max(0, this.kv.blocksFor(s.tokens.length + 1) - s.blockTable.length) * tables;
    }
    const need = tableBlocks + deviceActive + promised + this.watermark('device');
    if (!this.runsIn('host')) {
      // A swapped-out sequence cannot run at all: paused device sequences make way for it.
      for (let v = this.pickVictim('device', draft); v && !this.kv.hasRoom('device', need); v = this.pickVictim('device', draft)) {
        this.reclaim(v, draft);
      }
    }
    if (this.kv.hasRoom('device', need)) this.move(seq, 'device', draft);
  }

  /** Admits waiting sequences in order (paused ones are skipped) while the batch, the budget and memory allow. */
  private admit(draft: StepDraft): void {
    let active = this.running.filter((s) => !s.paused && this.runsIn(s.kvTier!)).length;
    for (let i = 0; i < this.waiting.length; ) {
      if (draft.budget === 0 || draft.plans.length >= this.config.maxRunning || active >= this.config.maxRunning) return;
      const seq = this.waiting[i]!;
      if (seq.paused) {
        i++;
        continue;
      }
      const n = this.place(seq, draft);
      // First come, first served: a request that does not fit holds back the ones behind it.
      if (n === undefined) return;
      // place() may have preempted paused sequences to the front of the queue: find seq again.
      this.waiting.splice(this.waiting.indexOf(seq), 1);
      i = 0;
      seq.status = 'running';
      this.running.push(seq);
      this.counters.numAdmissions++;
      active++;
      draft.plans.push(this.planFor(seq, n));
      draft.scheduled.add(seq.id);
      draft.budget -= n;
    }
  }

  /**
   * Gives a waiting sequence its blocks: in the runnable tier with the longest prefix hit
   * (ties go to the device tier) that has room for its first chunk above the watermark.
   * Paused sequences give up memory if needed; running ones never do. Returns the chunk
   * length, or undefined when it does not fit.
   */
  private place(seq: Sequence, draft: StepDraft): number | undefined {
    const bt = this.config.blockTokens;
    // At least one token is computed, for the logits that sample the next one.
    const wantsPrompt = seq.params.returnPromptLogits || seq.params.returnPromptEmbeddings;
    const maxHits = wantsPrompt ? 0 : Math.floor((seq.tokens.length - 1) / bt);
    for (;;) {
      let best: { tier: KvTier; hits: number[]; n: number } | undefined;
      for (const tier of TIERS) {
        if (!this.runsIn(tier) || this.kv.pools[tier].numBlocks === 0) continue;
        const hits = this.kv.matchPrefix(seq, tier, maxHits);
        const n = Math.min(seq.tokens.length - hits.length * bt, this.config.maxChunkTokens, draft.budget);
        const cost = this.kv.placementCost(tier, hits, hits.length * bt + n, seq);
        if (this.kv.pools[tier].numFree - cost < this.watermark(tier)) continue;
        if (!best || hits.length > best.hits.length) best = { tier, hits, n };
      }
      if (best) {
        this.kv.place(seq, best.tier, best.hits, best.hits.length * bt + best.n);
        const cached = best.hits.length * bt;
        seq.numComputed = cached;
        seq.metrics.numCachedTokens += cached;
        this.counters.numCachedTokens += cached;
        return best.n;
      }
      const victim = TIERS.map((t) => this.pickVictim(t, draft)).find((v) => v !== undefined);
      if (!victim) return undefined;
      this.reclaim(victim, draft);
    }
  }

  /** Blocks of `tier` that admission leaves free. */
  private watermark(tier: KvTier): number {
    return Math.floor(this.config.admissionWatermark * this.kv.pools[tier].numBlocks);
  }

  /** Preemption by recompute: drop the KV, keep the tokens, go back to the front of the queue. */
  private preempt(seq: Sequence): void {
    this.kv.release(seq);
    seq.numComputed = 0;
    seq.metrics.numPreemptions++;
    this.counters.numPreemptions++;
    seq.status = 'waiting';
    this.running = this.running.filter((s) => s !== seq);
    this.waiting.unshift(seq);
  }

  /** The plan of seq's next n tokens, and of `guesses` after them (speculative decoding). */
  private planFor(seq: Sequence, n: number, guesses: readonly number[] = []): SequencePlan {
    const start = seq.numComputed;
    const sample = start + n === seq.tokens.length && seq.numGenerated < seq.params.maxTokens;
    const p = seq.params.sampling;
    // Typed-array copies built directly: this runs for every sequence of every step.
    const tokens = new Int32Array(n + guesses.length);
    for (let i = 0; i < n; i++) tokens[i] = seq.tokens[start + i]!;
    tokens.set(guesses, n);
    const plan: SequencePlan = {
      seqId: seq.id,
      tokens,
      startPos: start,
      blockTable: new Int32Array(seq.blockTable),
      ...(this.kv.slidingWindow > 0 ? { slidingBlockTable: groupMajor(seq.slidingTable, this.kv.slidingGroups) } : {}),
      kvTier: seq.kvTier!,
      attention: this.config.strategy === 'cpu' || seq.kvTier === 'host' ? 'cpu' : 'gpu',
      sample,
    };
    if (sample) {
      plan.sampling = seq.params.constraint ? { ...p, allowed: seq.params.constraint.allowed() } : p;
      const penalised = p.repeatPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
      if (penalised && seq.params.penaltyWindow > 0) {
        plan.recentTokens = Int32Array.from(seq.tokens.slice(-seq.params.penaltyWindow));
      }
    }
    if (seq.params.returnPromptLogits && start < seq.promptLength) plan.returnAllLogits = true;
    if (seq.params.returnPromptEmbeddings && start < seq.promptLength) plan.returnEmbeddings = true;
    if (sample && seq.params.logprobs !== undefined) plan.returnLogits = true;
    if (guesses.length > 0) {
      plan.numDraft = guesses.length;
      if (plan.recentTokens) plan.penaltyWindow = seq.params.penaltyWindow;
    }
    return plan;
  }

  /**
   * Speculative decoding: in a step where every sequence decodes, each adds the guesses its
   * prompt lookup gives, while the step stays within speculation.stepTokens (a few tokens more
   * cost a CPU step little: it reads each weight once either way) and its token budget. Guesses
   * never take blocks from other sequences.
   */
  private addDrafts(draft: StepDraft): void {
    const { maxDraft, stepTokens } = this.config.speculation;
    if (maxDraft === 0 || draft.plans.some((p) => p.tokens.length !== 1 || !p.sample)) return;
    let total = draft.plans.length;
    for (let i = 0; i < draft.plans.length && total < stepTokens && draft.budget > 0; i++) {
      const seq = this.live.get(draft.plans[i]!.seqId)!;
      const room = Math.min(this.draftRoom(seq), stepTokens - total, draft.budget);
      if (room <= 0) continue;
      seq.drafter ??= new NgramIndex();
      const guesses = seq.drafter.propose(seq.tokens, room);
      if (guesses.length === 0 || !this.kv.grow(seq, seq.numComputed + 1 + guesses.length)) continue;
      draft.plans[i] = this.planFor(seq, 1, guesses);
      total += guesses.length;
      draft.budget -= guesses.length;
    }
  }

  /**
   * A decode burst: when every planned sequence decodes one token with nothing the host must do
   * between draws (no guesses, constraint mask or prompt logits), each draws
   * up to `steps` tokens in a row, within its maxTokens and the context, on blocks it can take
   * without taking any from others. The step held no prompt chunk, so admit() found nothing
   * it could admit; a request arriving during the burst is the engine's to let in (it
   * interrupts the burst).
   */
  private addBurst(draft: StepDraft, steps: number): void {
    if (!(steps > 1) || draft.plans.length === 0) return;
    const plain = (p: SequencePlan) => p.tokens.length === 1 && p.sample && !p.numDraft && !p.returnAllLogits && !p.returnEmbeddings && !p.sampling?.allowed;
    if (!draft.plans.every(plain)) return;
    for (let i = 0; i < draft.plans.length; i++) {
      const seq = this.live.get(draft.plans[i]!.seqId)!;
      const k = Math.min(Math.floor(steps), 64, seq.params.maxTokens - seq.numGenerated, this.config.contextSize - seq.tokens.length);
      if (k <= 1 || !this.kv.grow(seq, seq.numComputed + k)) continue;
      const plan = this.planFor(seq, 1);
      plan.decodeSteps = k;
      if (seq.params.stopTokens.size > 0) plan.stopTokens = seq.stopTokenArray;
      // The executor moves the penalty window on with each draw.
      if (plan.recentTokens) plan.penaltyWindow = seq.params.penaltyWindow;
      draft.plans[i] = plan;
    }
  }

  /**
   * Guesses seq may take this step: its limit (maxDraft at first, one more after a step that
   * accepted all, one fewer after one that accepted none; at 0 it rests for
   * DRAFT_RETRY_TOKENS tokens, then tries one), within maxTokens and the context. None for
   * draws a guess cannot be verified for: a constraint's mask, logprobs, prompt logits.
   */
  private draftRoom(seq: Sequence): number {
    const p = seq.params;
    if (p.constraint || p.logprobs !== undefined || p.returnPromptLogits || p.returnPromptEmbeddings) return 0;
    if (seq.draftLimit === undefined) seq.draftLimit = this.config.speculation.maxDraft;
    if (seq.draftLimit === 0 && seq.numGenerated - seq.draftPausedAt >= DRAFT_RETRY_TOKENS) seq.draftLimit = 1;
    return Math.min(seq.draftLimit, p.maxTokens - seq.numGenerated - 1, this.config.contextSize - seq.tokens.length - 1);
  }

  /** Counts a verified step's guesses and moves seq's limit (see draftRoom). */
  private countDrafts(seq: Sequence, guessed: number, accepted: number): void {
    seq.metrics.numDrafted += guessed;
    seq.metrics.numAccepted += accepted;
    this.counters.numDraftTokens += guessed;
    this.counters.numAcceptedDrafts += accepted;
    const limit = seq.draftLimit ?? this.config.speculation.maxDraft;
    if (accepted === guessed) seq.draftLimit = Math.min(this.config.speculation.maxDraft, limit + 1);
    else if (accepted === 0) seq.draftLimit = Math.max(0, limit - 1);
    if (seq.draftLimit === 0) seq.draftPausedAt = seq.numGenerated;
  }

  /** A draft step's draws (accepted guesses, then the next draw), or undefined when the result does not fit its plan. */
  private verifiedDraws(entry: SequencePlan, r: SequenceResult): number[] | undefined {
    const numDraft = entry.numDraft ?? 0;
    const t = r.tokens;
    if (!t || t.length < 1 || t.length > numDraft + 1 || t[t.length - 1] !== r.token) return undefined;
    const first = entry.tokens.length - numDraft;
    for (let i = 0; i + 1 < t.length; i++) if (t[i] !== entry.tokens[first + i]) return undefined;
    return Array.from(t);
  }

  /** A burst's draws, or undefined when the result does not fit its plan (a burst may draw fewer than asked, never more). */
  private burstDraws(entry: SequencePlan, r: SequenceResult): number[] | undefined {
    const t = r.tokens;
    if (!t || t.length < 1 || t.length > entry.decodeSteps! || t[t.length - 1] !== r.token) return undefined;
    for (const token of t) if (!(Number.isInteger(token) && token >= 0)) return undefined;
    return Array.from(t);
  }

  /**
   * The prompt rows of a chunk's logits or hidden states not delivered before (a recompute after
   * preemption repeats positions); `done` is the sequence's counter of delivered positions.
   */
  private newPromptRows(seq: Sequence, entry: SequencePlan, all: Float32Array, done: 'numScored' | 'numEmbedded'): SequenceEvent['promptEmbeddings'] {
    const n = entry.tokens.length;
    const width = all.length / n;
    const from = Math.max(entry.startPos, seq[done]);
    const to = Math.min(entry.startPos + n, seq.promptLength);
    if (to <= from) return undefined;
    seq[done] = to;
    return { startPos: from, count: to - from, rows: all.subarray((from - entry.startPos) * width, (to - entry.startPos) * width) };
  }

  /** Ends a sequence; its blocks wait for the step in flight if it is part of it. */
  private retire(seq: Sequence, reason: StopReason | undefined): void {
    this.live.delete(seq.id);
    seq.status = 'finished';
    seq.stopReason = reason;
    seq.paused = false;
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
