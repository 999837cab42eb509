// Speculative decoding in the scheduler, driven by a fake model (no addon): prompt-lookup
// guesses, their verification, the KV they leave behind, stops inside an accepted run, and the
// limits on how many guesses a step takes. Outputs must equal plain decoding's.
import t from 'tap';
import { Scheduler, Sequence, DRAFT_RETRY_TOKENS, NgramIndex, NGRAM_MAX, NGRAM_MIN, type SchedulerConfig, type SequenceEvent, type SequenceParams } from '../../src/engine/index.js';
import type { StepPlan, StepResult } from '../../src/native/step-plan.js';

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };
const EOS = 2;

function params(over: Partial<SequenceParams> = {}): SequenceParams {
  return { maxTokens: 40, sampling: GREEDY, stopTokens: new Set([EOS]), penaltyWindow: 64, returnPromptLogits: false, ...over };
}

function config(over: Partial<SchedulerConfig> = {}): SchedulerConfig {
  return {
    contextSize: 128,
    blockTokens: 4,
    numBlocks: { device: 0, host: 96 },
    maxRunning: 8,
    maxChunkTokens: 16,
    maxStepTokens: 64,
    strategy: 'cpu',
    ...over,
  };
}

/**
 * The fake model: the token after `prev` is next(prev), so replies cycle and prompt lookup
 * guesses them. A draft plan is verified as the executor does: each row's draw in order while
 * it equals its guess.
 */
function fakeResult(plan: StepPlan, next: (prev: number, pos: number) => number): StepResult {
  return {
    sequences: plan.sequences.map((s) => {
      if (!s.sample) return { seqId: s.seqId, token: -1 };
      const k = s.numDraft ?? 0;
      const n = s.tokens.length;
      const drawn: number[] = [];
      for (let j = 0; j <= k; j++) {
        const tok = next(s.tokens[n - 1 - k + j]!, s.startPos + n - k + j);
        drawn.push(tok);
        if (j === k || tok !== s.tokens[n - k + j]) break;
      }
      return { seqId: s.seqId, token: drawn[drawn.length - 1]!, ...(k > 0 ? { tokens: Int32Array.from(drawn) } : {}) };
    }),
    phaseUs: {},
    totalUs: 1,
  };
}

const cycle = (period: number) => (prev: number) => 10 + ((prev - 10 + 1) % period);

interface Run {
  tokens: number[][];
  steps: number;
  plans: StepPlan[];
  events: SequenceEvent[];
  scheduler: Scheduler;
  seqs: Sequence[];
}

function run(cfg: SchedulerConfig, prompts: number[][], p: Partial<SequenceParams>, next: (prev: number, pos: number) => number): Run {
  const s = new Scheduler(cfg);
  const seqs = prompts.map((pr, i) => new Sequence(i + 1, pr, params(p)));
  for (const q of seqs) s.add(q);
  const plans: StepPlan[] = [];
  const events: SequenceEvent[] = [];
  let steps = 0;
  while (s.hasWork) {
    const plan = s.schedule();
    plans.push(plan);
    events.push(...s.update(plan, fakeResult(plan, next)));
    s.audit();
    steps++;
    if (steps > 1000) throw new Error('no progress');
  }
  return { tokens: seqs.map((q) => q.tokens.slice(q.promptLength)), steps, plans, events, scheduler: s, seqs };
}

t.test('prompt lookup guesses what followed the latest earlier occurrence of the longest suffix', async (t) => {
  const ix = new NgramIndex();
  t.same(ix.propose([1, 2], 3), [], 'too short to look up');
  t.same(ix.propose([1, 2, 3, 4, 1, 2], 3), [3, 4, 1], 'the 2-gram [1, 2] was followed by 3, 4, 1');
  t.same(ix.propose([1, 2, 3, 4, 1, 2, 3], 2), [4, 1], 'the index grows with the tokens; at most max guesses');
  const ix2 = new NgramIndex();
  // [5, 6] occurs twice, [9, 5, 6] once: the longer suffix wins over the later short match.
  t.same(ix2.propose([9, 5, 6, 7, 8, 5, 6, 1, 9, 5, 6], 2), [7, 8], 'the longest suffix that occurred before decides');
  const ix3 = new NgramIndex();
  t.same(ix3.propose([5, 6, 1, 5, 6, 2, 5, 6], 1), [2], 'of equal suffixes, the latest occurrence');
  t.same(new NgramIndex().propose([1, 2, 3, 4, 5], 4), [], 'no suffix occurred before: no guess');
  t.same(new NgramIndex().propose([7, 7, 7, 7], 3), [7], 'an occurrence that overlaps the suffix guesses up to the end');
  t.ok(NGRAM_MIN >= 2 && NGRAM_MAX >= NGRAM_MIN, 'suffixes of at least two tokens: one token matches too often to guess well');
});

t.test('with guesses the tokens equal plain decoding, in fewer steps', async (t) => {
  const prompts = [[10, 11, 12, 13, 14, 10, 11], [20, 21, 22]];
  const next = cycle(5);
  const plain = run(config(), prompts, {}, next);
  const spec = run(config({ speculation: { maxDraft: 3, stepTokens: 8 } }), prompts, {}, next);
  t.same(spec.tokens, plain.tokens, 'same tokens');
  t.ok(spec.steps < plain.steps, `fewer steps: ${spec.steps} against ${plain.steps}`);
  const c = spec.scheduler.counters;
  t.ok(c.numDraftTokens > 0 && c.numAcceptedDrafts > 0 && c.numAcceptedDrafts <= c.numDraftTokens, `guessed ${c.numDraftTokens}, accepted ${c.numAcceptedDrafts}`);
  t.equal(c.numGeneratedTokens, plain.scheduler.counters.numGeneratedTokens, 'generated tokens are counted one by one');
  t.equal(spec.seqs[0]!.metrics.numAccepted + spec.seqs[1]!.metrics.numAccepted, c.numAcceptedDrafts, 'per-request counts add up');
  const withGuesses = spec.plans.flatMap((p) => p.sequences).filter((s) => (s.numDraft ?? 0) > 0);
  t.ok(withGuesses.length > 0);
  for (const s of withGuesses) {
    t.equal(s.tokens.length, 1 + s.numDraft!, 'a guessing decode feeds its last token and its guesses');
    t.ok(s.blockTable.length * 4 >= s.startPos + s.tokens.length, 'its table covers the guesses');
  }
  for (const plan of spec.plans) {
    const total = plan.sequences.reduce((n, s) => n + s.tokens.length, 0);
    if (plan.sequences.some((s) => (s.numDraft ?? 0) > 0)) t.ok(total <= 8, `a step with guesses holds at most stepTokens tokens (${total})`);
  }
  t.equal(spec.scheduler.kv.numFree, 96, 'every block comes back');
});

t.test('guesses that miss cost no tokens and leave no KV behind', async (t) => {
  // The prompt says 12 is followed by 10, the model follows it with 50: guesses from the
  // prompt miss, guesses from the reply's own repeats hit.
  const next = (prev: number) => (prev === 10 ? 11 : prev === 11 ? 12 : prev === 12 ? 50 : 10);
  const prompts = [[10, 11, 12, 10, 11, 12, 10, 11]];
  const plain = run(config(), prompts, { maxTokens: 24 }, next);
  const spec = run(config({ speculation: { maxDraft: 3, stepTokens: 8 } }), prompts, { maxTokens: 24 }, next);
  t.same(spec.tokens, plain.tokens);
  const c = spec.scheduler.counters;
  t.ok(c.numAcceptedDrafts > 0 && c.numAcceptedDrafts < c.numDraftTokens, `some guesses missed: ${c.numAcceptedDrafts} of ${c.numDraftTokens} accepted`);
  // Each step starts where the last one's accepted run ended: the missed guesses' KV is written over.
  const decodes = spec.plans.flatMap((p) => p.sequences).filter((s) => s.startPos >= prompts[0]!.length);
  for (let i = 1; i < decodes.length; i++) {
    const prev = decodes[i - 1]!;
    const accepted = decodes[i]!.startPos - prev.startPos - 1;
    t.ok(accepted >= 0 && accepted <= (prev.numDraft ?? 0), `step ${i}: starts after the ${accepted} accepted of ${prev.numDraft ?? 0} guesses`);
  }
});

t.test('a stop inside an accepted run ends there: maxTokens, EOS, the context', async (t) => {
  const next = cycle(4);
  const prompts = [[10, 11, 12, 13, 10, 11]];
  for (const maxTokens of [1, 2, 5, 7, 9]) {
    const plain = run(config(), prompts, { maxTokens }, next);
    const spec = run(config({ speculation: { maxDraft: 4, stepTokens: 8 } }), prompts, { maxTokens }, next);
    t.same(spec.tokens, plain.tokens, `maxTokens ${maxTokens}`);
    t.equal(spec.tokens[0]!.length, maxTokens);
    t.equal(spec.seqs[0]!.stopReason, 'maxTokens');
  }
  // EOS inside the cycle: 10, 11, EOS(2)... the fake cycles over 10, 11, 2.
  const withEos = (prev: number) => (prev === 10 ? 11 : prev === 11 ? EOS : 10);
  const eosPrompt = [[10, 11, EOS, 10, 11, EOS, 10]];
  const plain = run(config(), eosPrompt, {}, withEos);
  const spec = run(config({ speculation: { maxDraft: 4, stepTokens: 8 } }), eosPrompt, {}, withEos);
  t.same(spec.tokens, plain.tokens, 'EOS ends the reply where plain decoding ends it');
  t.equal(spec.seqs[0]!.stopReason, 'eos');
  const ctx = run(config({ contextSize: 20, speculation: { maxDraft: 4, stepTokens: 8 } }), prompts, {}, next);
  t.equal(ctx.seqs[0]!.tokens.length, 20, 'the context bounds an accepted run');
  t.equal(ctx.seqs[0]!.stopReason, 'contextFull');
});

t.test('events carry the accepted guesses before the drawn token', async (t) => {
  const spec = run(config({ speculation: { maxDraft: 3, stepTokens: 8 } }), [[10, 11, 12, 10, 11]], { maxTokens: 12 }, cycle(3));
  const fromEvents = spec.events.flatMap((e) => [...(e.drafted ?? []), ...(e.token !== undefined ? [e.token] : [])]);
  t.same(fromEvents, spec.tokens[0], 'the events, in order, are the reply');
  t.ok(spec.events.some((e) => (e.drafted?.length ?? 0) > 0), 'some step accepted guesses');
});

t.test('no guesses beside a prefill, for constrained or logprobs requests, or beyond the step cap', async (t) => {
  const next = cycle(3);
  const s = new Scheduler(config({ speculation: { maxDraft: 3, stepTokens: 6 } }));
  const a = new Sequence(1, [10, 11, 12, 10, 11], params());
  s.add(a);
  let plan = s.schedule();
  s.update(plan, fakeResult(plan, next));
  s.add(new Sequence(2, Array.from({ length: 40 }, (_, i) => 30 + i), params()));
  plan = s.schedule();
  t.same(plan.sequences.map((p) => [p.seqId, p.numDraft ?? 0]), [[1, 0], [2, 0]], 'a step with a prompt chunk takes no guesses');
  s.update(plan, fakeResult(plan, next));

  const constrained = new Scheduler(config({ speculation: { maxDraft: 3, stepTokens: 8 } }));
  const allowed = new Uint8Array(200).fill(255);
  constrained.add(new Sequence(1, [10, 11, 12, 10, 11], params({ constraint: { allowed: () => allowed, accept: () => undefined } })));
  constrained.add(new Sequence(2, [10, 11, 12, 10, 11], params({ logprobs: 2 })));
  for (let i = 0; i < 4; i++) {
    plan = constrained.schedule();
    t.ok(plan.sequences.every((p) => (p.numDraft ?? 0) === 0), 'a mask or logprobs are per draw: no guesses');
    constrained.update(plan, fakeResult(plan, next));
  }

  const many = run(config({ speculation: { maxDraft: 3, stepTokens: 5 } }), [[10, 11, 12, 10, 11], [10, 11, 12, 10, 11], [10, 11, 12, 10, 11]], { maxTokens: 10 }, next);
  const guessing = many.plans.filter((p) => p.sequences.some((q) => (q.numDraft ?? 0) > 0));
  t.ok(guessing.length > 0);
  for (const p of guessing) t.ok(p.sequences.reduce((n, q) => n + q.tokens.length, 0) <= 5, 'three decodes share two guesses at most');
});

t.test('a request whose guesses keep missing stops guessing, then tries again', async (t) => {
  // The reply cycles 10, 11, then a token never seen: the guess after [10, 11] (what followed
  // it last time) always misses.
  const next = (prev: number, pos: number) => (prev === 10 ? 11 : prev === 11 ? 1000 + pos : 10);
  const s = new Scheduler(config({ contextSize: 128, speculation: { maxDraft: 2, stepTokens: 8 } }));
  const seq = new Sequence(1, [10, 11, 12, 10, 11, 12, 10, 11], params({ maxTokens: 80 }));
  s.add(seq);
  const limits: number[] = [];
  while (s.hasWork) {
    const plan = s.schedule();
    s.update(plan, fakeResult(plan, next));
    limits.push(seq.draftLimit ?? -1);
  }
  const rest = limits.indexOf(0);
  t.ok(rest > 0, `the limit falls to 0 after misses (${limits.join(' ')})`);
  const back = limits.findIndex((l, i) => i > rest && l > 0);
  t.ok(back > rest, 'and rises again after the rest');
  t.ok(seq.tokens.length - seq.promptLength === 80);
});

t.test('a result that does not fit its guesses fails the request alone', async (t) => {
  const s = new Scheduler(config({ speculation: { maxDraft: 3, stepTokens: 8 } }));
  const a = new Sequence(1, [10, 11, 12, 10, 11], params());
  s.add(a);
  let plan = s.schedule();
  s.update(plan, fakeResult(plan, cycle(3)));
  plan = s.schedule();
  const p = plan.sequences[0]!;
  t.ok((p.numDraft ?? 0) > 0, 'the decode guesses');
  // An accepted run whose tokens differ from the guesses.
  const bad: StepResult = { sequences: [{ seqId: 1, token: 5, tokens: Int32Array.from([99, 5]) }], phaseUs: {}, totalUs: 1 };
  const events = s.update(plan, bad);
  t.match(events[0]!.error?.message, /no valid draws/);
  s.audit();
  t.equal(s.kv.numFree, 96);
});

t.test('a bad speculation config is refused', async (t) => {
  t.throws(() => new Scheduler(config({ speculation: { maxDraft: -1, stepTokens: 4 } })), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => new Scheduler(config({ speculation: { maxDraft: 2, stepTokens: 0 } })), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('with sliding-window tables, guesses grow both tables and leave the window consistent', async (t) => {
  const prompts = [[10, 11, 12, 13, 14, 10, 11], [20, 21, 22, 23, 20, 21]];
  const next = cycle(5);
  const cfg = { numBlocks: { device: 0, host: 64 }, slidingWindow: 6 };
  const plain = run(config(cfg), prompts, { maxTokens: 60 }, next);
  const spec = run(config({ ...cfg, speculation: { maxDraft: 3, stepTokens: 8 } }), prompts, { maxTokens: 60 }, next);
  t.same(spec.tokens, plain.tokens);
  t.ok(spec.scheduler.counters.numAcceptedDrafts > 0, `accepted ${spec.scheduler.counters.numAcceptedDrafts}`);
  for (const s of spec.plans.flatMap((p) => p.sequences).filter((q) => (q.numDraft ?? 0) > 0)) {
    t.equal(s.slidingBlockTable?.length, s.blockTable.length, 'the sliding table covers the guesses too');
  }
  t.equal(spec.scheduler.kv.numFree, 64, 'every block comes back');
});
