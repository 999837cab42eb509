// Decode bursts in the scheduler and the engine, with the fake KV model (no addon): which
// steps burst and how far, the blocks a burst takes, stops inside a burst, a result that does
// not fit its burst, and the engine's sizing of each burst from measured times.
import t from 'tap';
import { Engine, Scheduler, Sequence, type SchedulerConfig, type SequenceEvent, type SequenceParams, type StopReason } from '../../src/engine/index.js';
import type { StepPlan, StepResult } from '../../src/native/step-plan.js';
import { expectedContinuation, FakeKvModel, nextToken } from './fake-kv-model.js';

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };

function params(over: Partial<SequenceParams> = {}): SequenceParams {
  return { maxTokens: 12, sampling: GREEDY, stopTokens: new Set(), penaltyWindow: 0, returnPromptLogits: false, ...over };
}

function config(over: Partial<SchedulerConfig> = {}): SchedulerConfig {
  return { contextSize: 48, blockTokens: 4, numBlocks: { device: 0, host: 64 }, maxRunning: 8, maxChunkTokens: 8, maxStepTokens: 32, strategy: 'cpu', ...over };
}

/** Runs the scheduler to the end on the fake model, asking every step for `steps` draws; the plans and events. */
async function drive(s: Scheduler, steps: number): Promise<{ plans: StepPlan[]; events: SequenceEvent[] }> {
  const model = new FakeKvModel(4, s.config.numBlocks);
  const plans: StepPlan[] = [];
  const events: SequenceEvent[] = [];
  while (s.hasWork) {
    const plan = s.schedule({ decodeSteps: steps });
    plans.push(plan);
    events.push(...s.update(plan, await model.step(plan)));
    s.audit();
    if (plans.length > 500) throw new Error('no progress');
  }
  return { plans, events };
}

t.test('all-decode steps burst within maxTokens and the context; prompt chunks never', async (t) => {
  const s = new Scheduler(config());
  const seqs = [new Sequence(1, [5, 6, 7], params({ maxTokens: 12 })), new Sequence(2, [8, 9, 10, 11, 12], params({ maxTokens: 7 })), new Sequence(3, [13, 14], params({ maxTokens: 60 }))];
  for (const q of seqs) s.add(q);
  const { plans } = await drive(s, 4);
  t.equal(plans[0]!.sequences.some((p) => p.decodeSteps !== undefined), false, 'the step of prompt chunks does not burst');
  const bursts = plans.slice(1).flatMap((p) => p.sequences.map((q) => q.decodeSteps ?? 1));
  t.ok(bursts.every((k) => k >= 1 && k <= 4), 'no burst beyond the asked four');
  t.ok(bursts.filter((k) => k === 4).length >= 4, 'full bursts while requests have room');
  for (const [i, q] of seqs.entries()) {
    t.same(q.tokens.slice(q.promptLength), expectedContinuation(q.tokens.slice(0, q.promptLength), q.params.maxTokens === 60 ? 46 : q.params.maxTokens), `request ${i + 1}: the reference tokens`);
  }
  t.equal(seqs[2]!.stopReason, 'contextFull', 'a burst stops at the context');
  t.equal(seqs[1]!.numGenerated, 7, 'and at maxTokens: never a token past it');
  for (const p of plans.flatMap((x) => x.sequences)) {
    t.ok(p.blockTable.length * 4 >= p.startPos + p.tokens.length + (p.decodeSteps ?? 1) - 1, 'the table covers every position the burst writes');
  }
  t.equal(s.kv.numFree, 64, 'every block comes back');
});

t.test('one request the host must see between draws (a constraint) keeps the whole step from bursting', async (t) => {
  const cases: [string, Partial<SequenceParams>][] = [
    ['a constraint', { constraint: { allowed: () => new Uint8Array(32).fill(255), accept: () => undefined } }],
  ];
  for (const [name, over] of cases) {
    const s = new Scheduler(config());
    s.add(new Sequence(1, [5, 6, 7], params({ maxTokens: 24 })));
    s.add(new Sequence(2, [8, 9], params(over)));
    const { plans } = await drive(s, 4);
    const bursting = plans.filter((p) => p.sequences.length === 2 && p.sequences.some((q) => q.decodeSteps !== undefined));
    t.equal(bursting.length, 0, `${name}: no burst while it runs`);
    t.ok(plans.some((p) => p.sequences.length === 1 && p.sequences[0]!.decodeSteps !== undefined), `${name}: the other bursts once alone`);
  }
});

t.test('a stop token inside a burst ends the request there; its blocks come back', async (t) => {
  const prompt = [5, 6, 7];
  const ref = expectedContinuation(prompt, 12);
  const s = new Scheduler(config());
  const q = new Sequence(1, prompt, params({ stopTokens: new Set([ref[5]!]) }));
  s.add(q);
  const { plans, events } = await drive(s, 8);
  t.same(q.tokens.slice(3), ref.slice(0, 6), 'tokens up to the stop, none after');
  t.equal(q.stopReason, 'eos');
  const burst = plans.flatMap((p) => p.sequences).find((p) => (p.decodeSteps ?? 1) > 1);
  t.same(Array.from(burst?.stopTokens ?? []), [ref[5]!], 'the burst carries the stop tokens, for the executor to end it there');
  const last = events.at(-1)!;
  t.equal(last.finish, 'eos');
  t.same([...(last.drafted ?? []), last.token], ref.slice(1, 6), 'one event carries the burst up to the stop');
  t.equal(s.kv.numFree, 64);
});

t.test('a result that does not fit its burst fails that request alone', async (t) => {
  const s = new Scheduler(config());
  const a = new Sequence(1, [5, 6, 7], params());
  const b = new Sequence(2, [8, 9, 10], params());
  s.add(a);
  s.add(b);
  const model = new FakeKvModel(4, s.config.numBlocks);
  let plan = s.schedule();
  s.update(plan, await model.step(plan));
  plan = s.schedule({ decodeSteps: 3 });
  t.same(plan.sequences.map((p) => p.decodeSteps), [3, 3]);
  const good = await model.step(plan);
  const bad: StepResult = {
    ...good,
    sequences: good.sequences.map((r) => (r.seqId === 1 ? { ...r, tokens: Int32Array.from([...r.tokens!, r.token]) } : r)),
  };
  const events = s.update(plan, bad);
  t.match(events.find((e) => e.seqId === 1)?.error?.message, /no valid draws of its burst of 3 for sequence 1/);
  t.same(events.find((e) => e.seqId === 2)?.drafted?.length, 2, 'the other request took its three draws');
  t.equal(a.status, 'finished');
  s.audit();
});

/** An engine over the fake model whose steps report `roundUs` a round; the tokens, steps and rounds. */
async function engineRun(roundUs: number, maxDecodeSteps: number): Promise<{ tokens: number[][]; steps: number; rounds: number; bursts: number[] }> {
  const model = new FakeKvModel(4, { device: 0, host: 64 });
  model.record = true;
  const engine = new Engine({ step: async (plan) => ({ ...(await model.step(plan)), totalUs: roundUs * Math.max(1, ...plan.sequences.map((p) => p.decodeSteps ?? 1)) }) }, config(), { maxDecodeSteps });
  const prompts = [[5, 6, 7], [8, 9, 10, 11], [12, 13]];
  const tokens = await Promise.all(prompts.map((p) => new Promise<number[]>((resolve, reject) => {
    const out: number[] = [];
    engine.submit(p, params({ maxTokens: 20 }), { onToken: (tok) => out.push(tok), onFinish: (_r: StopReason) => resolve(out), onError: reject });
  })));
  await engine.idle();
  t.equal(engine.stats.numFreeBlocks, 64);
  return { tokens, steps: engine.stats.numSteps, rounds: engine.stats.numRounds, bursts: model.plans.flatMap((p) => p.sequences.map((q) => q.decodeSteps ?? 1)) };
}

t.test('the engine bursts only where the host time between steps is a large share of a round', async (t) => {
  const want = [[5, 6, 7], [8, 9, 10, 11], [12, 13]].map((p) => expectedContinuation(p, 20));
  const off = await engineRun(1, 1);
  t.same(off.tokens, want);
  t.equal(off.rounds, off.steps, 'maxDecodeSteps 1: no burst');
  const fast = await engineRun(1, 6);
  t.same(fast.tokens, want, 'the same tokens in bursts');
  t.ok(fast.bursts.includes(6) && Math.max(...fast.bursts) === 6, 'steps of 1 µs burst to the bound');
  t.ok(fast.steps < off.steps / 2, `${fast.steps} steps against ${off.steps}`);
  // A round of 10 s dwarfs any host time: bursting would only delay arrivals.
  const slow = await engineRun(1e7, 6);
  t.same(slow.tokens, want);
  t.equal(slow.rounds, slow.steps, 'slow rounds: no burst');
  t.throws(() => new Engine(new FakeKvModel(4, { device: 0, host: 64 }), config(), { maxDecodeSteps: 0 }), { code: 'TDM_BAD_ARGUMENT', message: /maxDecodeSteps must be an integer in \[1, 64\], got 0/ });
  t.equal(nextToken([1]) >= 3, true);
});

t.test('penalties burst: each plan carries its window, which the executor moves on', async (t) => {
  const s = new Scheduler(config());
  const q = new Sequence(1, [5, 6, 7], params({ sampling: { ...GREEDY, repeatPenalty: 1.2 }, penaltyWindow: 16, maxTokens: 20 }));
  s.add(q);
  const { plans } = await drive(s, 4);
  const bursts = plans.flatMap((p) => p.sequences).filter((p) => (p.decodeSteps ?? 1) > 1);
  t.ok(bursts.length > 0, 'it bursts');
  for (const p of bursts) {
    t.equal(p.penaltyWindow, 16);
    t.ok(p.recentTokens && p.recentTokens.length <= 16, 'the window it starts from');
  }
  t.same(q.tokens.slice(3), expectedContinuation([5, 6, 7], 20));
});

t.test('a request that arrives during a burst interrupts it after the round under way', async (t) => {
  const model = new FakeKvModel(4, { device: 0, host: 64 });
  model.roundDelay = () => new Promise((r) => setImmediate(r));
  const engine = new Engine(model, config(), { maxDecodeSteps: 8 });
  const seen: { planned: number; ran: number; seqs: number }[] = [];
  engine.onStep = (plan, result) => seen.push({ planned: Math.max(1, ...plan.sequences.map((p) => p.decodeSteps ?? 1)), ran: result.rounds ?? 1, seqs: plan.sequences.length });
  const run = (p: number[], n: number) =>
    new Promise<number[]>((resolve, reject) => {
      const out: number[] = [];
      engine.submit(p, params({ maxTokens: n }), { onToken: (x) => out.push(x), onFinish: () => resolve(out), onError: reject });
    });
  const first = run([5, 6, 7], 40);
  // A burst has run, and the next one is in flight (launched right after it).
  while (!seen.some((s) => s.planned > 1)) await new Promise((r) => setImmediate(r));
  const before = seen.length;
  const late = run([8, 9], 10);
  t.same(await first, expectedContinuation([5, 6, 7], 40));
  t.same(await late, expectedContinuation([8, 9], 10));
  await engine.idle();
  const cut = seen[before]!;
  t.ok(cut.planned > 1 && cut.ran < cut.planned, `the burst in flight stopped early (${cut.ran} of ${cut.planned} rounds)`);
  t.equal(seen[before + 1]!.seqs, 2, 'the next step took the new request in');
  t.equal(engine.stats.numRounds, seen.reduce((n, s) => n + s.ran, 0), 'rounds are counted as run');
  t.equal(engine.stats.numFreeBlocks, 64);
});

t.test('a request cancelled during a burst ends it after the round under way; the others go on without it', async (t) => {
  const model = new FakeKvModel(4, { device: 0, host: 64 });
  model.roundDelay = () => new Promise((r) => setImmediate(r));
  const engine = new Engine(model, config(), { maxDecodeSteps: 8 });
  const seen: { planned: number; ran: number; seqs: number }[] = [];
  engine.onStep = (plan, result) => seen.push({ planned: Math.max(1, ...plan.sequences.map((p) => p.decodeSteps ?? 1)), ran: result.rounds ?? 1, seqs: plan.sequences.length });
  const ids: number[] = [];
  const run = (p: number[], n: number) =>
    new Promise<{ tokens: number[]; reason: StopReason }>((resolve, reject) => {
      const tokens: number[] = [];
      ids.push(engine.submit(p, params({ maxTokens: n }), { onToken: (x) => tokens.push(x), onFinish: (reason) => resolve({ tokens, reason }), onError: reject }));
    });
  const kept = run([5, 6, 7], 40);
  const dropped = run([8, 9], 40);
  while (!seen.some((s) => s.planned > 1 && s.seqs === 2)) await new Promise((r) => setImmediate(r));
  const before = seen.length;
  engine.cancel(ids[1]!, 'aborted');
  t.equal((await dropped).reason, 'aborted');
  t.same((await kept).tokens, expectedContinuation([5, 6, 7], 40), 'the other request draws what it would have');
  await engine.idle();
  const cut = seen[before]!;
  t.ok(cut.planned > 1 && cut.ran < cut.planned, `the burst in flight stopped early (${cut.ran} of ${cut.planned} rounds)`);
  t.equal(seen[before + 1]!.seqs, 1, 'the next step runs without the cancelled request');
  t.equal(engine.stats.numFreeBlocks, 64);
});

t.test('close() during a burst ends it after the round under way', async (t) => {
  const model = new FakeKvModel(4, { device: 0, host: 64 });
  model.roundDelay = () => new Promise((r) => setImmediate(r));
  const engine = new Engine(model, config(), { maxDecodeSteps: 8 });
  const seen: { planned: number; ran: number }[] = [];
  engine.onStep = (plan, result) => seen.push({ planned: Math.max(1, ...plan.sequences.map((p) => p.decodeSteps ?? 1)), ran: result.rounds ?? 1 });
  const done = new Promise<string>((resolve) => engine.submit([5, 6, 7], params({ maxTokens: 40 }), { onFinish: (r) => resolve(r), onError: (e) => resolve(e.code) }));
  while (!seen.some((s) => s.planned > 1)) await new Promise((r) => setImmediate(r));
  const before = seen.length;
  await engine.close();
  t.equal(await done, 'TDM_DISPOSED');
  const last = seen[before]!;
  t.ok(last.planned > 1 && last.ran < last.planned, `the burst in flight stopped early (${last.ran} of ${last.planned} rounds)`);
  t.equal(seen.length, before + 1, 'no step after it');
  t.equal(engine.stats.numFreeBlocks, 64, 'its blocks came back');
});
