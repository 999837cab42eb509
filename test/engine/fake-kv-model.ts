// A fake executor that keeps real KV data: each tier is an array of token slots, copies
// move whole blocks, a step reads a sequence's earlier positions back from its block table
// and the "model" samples a token that hashes the whole context. A wrong block, a missed or
// misordered copy, or a block overwritten while shared changes the tokens, so outputs equal
// to expectedContinuation() prove the scheduler's block accounting, with no addon.
import type { SchedulerConfig } from '../../src/engine/index.js';
import type { KvTier, StepPlan, StepResult } from '../../src/native/step-plan.js';

/** Two tiers where the device holds about three of tieredPrompts' twelve requests at once. */
export const TIERED_CONFIG: SchedulerConfig = {
  contextSize: 48,
  blockTokens: 4,
  numBlocks: { device: 24, host: 80 },
  maxRunning: 8,
  maxChunkTokens: 8,
  maxStepTokens: 32,
  strategy: 'cpu',
};

/** A prompt of n tokens, different per salt. */
export const fakePrompt = (n: number, salt: number): number[] => Array.from({ length: n }, (_, k) => 5 + ((k * 17 + salt * 3) % 200));

/** Twelve prompts of 6 to 28 tokens. */
export const tieredPrompts = (): number[][] => Array.from({ length: 12 }, (_, i) => fakePrompt(6 + 2 * i, i));

/** Tokens the fake model samples from: [FIRST_TOKEN, FIRST_TOKEN + VOCAB). */
const FIRST_TOKEN = 3;
const VOCAB = 250;

/** The fake model: the next token is a hash of every token of the context, in order. */
export function nextToken(context: ArrayLike<number>): number {
  let h = 2166136261;
  for (let i = 0; i < context.length; i++) h = Math.imul(h ^ (context[i]! + 7 * i), 16777619) >>> 0;
  return FIRST_TOKEN + (h % VOCAB);
}

/** What a request must produce when its KV is handled correctly: greedy continuation of `prompt`. */
export function expectedContinuation(prompt: readonly number[], maxTokens: number): number[] {
  const context = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < maxTokens; i++) {
    const t = nextToken(context);
    out.push(t);
    context.push(t);
  }
  return out;
}

/** Host KV blocks a plan streams to the device, counted as the executor counts them (every round of a burst). */
export function streamedBlocks(plan: StepPlan, blockTokens: number): number {
  return plan.sequences
    .filter((s) => s.kvTier === 'host' && s.attention === 'gpu')
    .reduce((n, s) => n + Math.ceil((s.startPos + s.tokens.length + (s.decodeSteps ?? 1) - 1) / blockTokens), 0);
}

export class FakeKvModel {
  readonly blockTokens: number;
  /** Token id per position slot (block * blockTokens + offset), -1 where nothing was written. */
  readonly slots: Record<KvTier, Int32Array>;
  readonly plans: StepPlan[] = [];
  numCopies = 0;
  /** Throws from step() when it returns true (after validation, before anything runs). */
  failWhen: ((plan: StepPlan) => boolean) | undefined;
  /** Awaited at the start of each step (a timer makes steps interleave with aborts). */
  delay: (() => Promise<void>) | undefined;
  /** Keep every plan (for tests that inspect them). */
  record = false;
  /** The executor's staging for streamed host KV (placement.streamBlocksMax): a plan streaming more is refused as it refuses it. */
  streamBlocksMax: number | undefined;
  /** Awaited between the rounds of a decode burst (so that work can arrive during one). */
  roundDelay: (() => Promise<void>) | undefined;
  /** interruptBurst() was called during the step in flight. */
  private interrupted = false;

  /** Ends the burst in flight after its current round, as the executor does. */
  readonly interruptBurst = (): void => {
    this.interrupted = true;
  };

  constructor(blockTokens: number, numBlocks: { device: number; host: number }) {
    this.blockTokens = blockTokens;
    this.slots = {
      device: new Int32Array(numBlocks.device * blockTokens).fill(-1),
      host: new Int32Array(numBlocks.host * blockTokens).fill(-1),
    };
  }

  readonly step = async (plan: StepPlan): Promise<StepResult> => {
    this.interrupted = false;
    if (this.delay) await this.delay();
    if (this.record) this.plans.push(plan);
    if (this.streamBlocksMax !== undefined) {
      const streamed = streamedBlocks(plan, this.blockTokens);
      if (streamed > this.streamBlocksMax) throw Object.assign(new Error(`the plan streams ${streamed} host KV blocks, more than the ${this.streamBlocksMax} its staging holds`), { code: 'TDM_BAD_ARGUMENT' });
    }
    const rounds = Math.max(1, ...plan.sequences.map((s) => s.decodeSteps ?? 1));
    if (rounds === 1) return this.once(plan);
    // A decode burst, as the executor runs it: each round feeds back the token the last drew.
    const draws = new Map<number, number[]>(plan.sequences.map((s) => [s.seqId, []]));
    let round: StepPlan = plan;
    let totalUs = 0;
    let r = 0;
    for (; r < rounds && round.sequences.length > 0; r++) {
      if (r > 0 && this.roundDelay) await this.roundDelay();
      if (r > 0 && this.interrupted) break;
      const one = this.once(round);
      totalUs += one.totalUs;
      one.sequences.forEach((res) => draws.get(res.seqId)!.push(res.token));
      round = {
        strategy: plan.strategy,
        copies: [],
        sequences: round.sequences
          .filter((s) => (s.decodeSteps ?? 1) > 1 && !s.stopTokens?.includes(draws.get(s.seqId)!.at(-1)!))
          .map((s) => ({ ...s, startPos: s.startPos + s.tokens.length, tokens: Int32Array.of(draws.get(s.seqId)!.at(-1)!), decodeSteps: s.decodeSteps! - 1 })),
      };
    }
    return {
      sequences: plan.sequences.map((s) => {
        const d = draws.get(s.seqId)!;
        return { seqId: s.seqId, token: d.at(-1)!, ...((s.decodeSteps ?? 1) > 1 ? { tokens: Int32Array.from(d) } : {}) };
      }),
      phaseUs: { copies: plan.copies.length, forward: plan.sequences.length },
      totalUs,
      rounds: r,
    };
  };

  private once(plan: StepPlan): StepResult {
    const bt = this.blockTokens;
    const written = new Set<string>();
    for (const s of plan.sequences) {
      if (s.tokens.length === 0) throw new Error(`sequence ${s.seqId}: no tokens`);
      const end = s.startPos + s.tokens.length + (s.decodeSteps ?? 1) - 1;
      if (s.blockTable.length < Math.ceil(end / bt)) throw new Error(`sequence ${s.seqId}: block table too short`);
      for (let b = Math.floor(s.startPos / bt); b < Math.ceil(end / bt); b++) {
        const key = `${s.kvTier}:${s.blockTable[b]}`;
        if (written.has(key)) throw new Error(`sequence ${s.seqId} writes block ${key}, which another sequence of the step writes`);
        written.add(key);
      }
    }
    if (this.failWhen?.(plan)) throw Object.assign(new Error('injected step failure'), { code: 'TDM_INTERNAL' });
    // Copies in order, before the forward pass (the StepPlan contract).
    for (const c of plan.copies) {
      const from = this.slots[c.fromTier].subarray(c.fromBlock * bt, (c.fromBlock + 1) * bt);
      this.slots[c.toTier].set(from, c.toBlock * bt);
      this.numCopies++;
    }
    // Every sequence reads what is in the cache before any writes this step's tokens, as a
    // batched forward pass does.
    const contexts = plan.sequences.map((s) => {
      const pool = this.slots[s.kvTier];
      const context: number[] = [];
      for (let p = 0; p < s.startPos; p++) {
        const v = pool[s.blockTable[Math.floor(p / bt)]! * bt + (p % bt)]!;
        if (v < 0) throw new Error(`sequence ${s.seqId} reads position ${p}, never written`);
        context.push(v);
      }
      return [...context, ...s.tokens];
    });
    plan.sequences.forEach((s) => {
      const pool = this.slots[s.kvTier];
      s.tokens.forEach((tok, i) => {
        const p = s.startPos + i;
        pool[s.blockTable[Math.floor(p / bt)]! * bt + (p % bt)] = tok;
      });
    });
    return {
      sequences: plan.sequences.map((s, i) => ({ seqId: s.seqId, token: s.sample ? nextToken(contexts[i]!) : -1 })),
      phaseUs: { copies: plan.copies.length, forward: plan.sequences.length },
      totalUs: 1,
    };
  }
}
