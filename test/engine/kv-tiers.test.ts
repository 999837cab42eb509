// The scheduler over two KV tiers with a fake executor that keeps real KV data (no addon):
// prefix reuse, moves between tiers (swap out and in), preemption by recompute, admission
// control, and failure isolation. Every run checks tokens against the fake model's
// reference continuation and audits the pools' reference counts after every step.
import t, { type Test } from 'tap';
import { Scheduler, Sequence, type SchedulerConfig, type SequenceEvent, type SequenceParams } from '../../src/engine/index.js';
import type { StepPlan } from '../../src/native/step-plan.js';
import { expectedContinuation, FakeKvModel } from './fake-kv-model.js';

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };

function params(over: Partial<SequenceParams> = {}): SequenceParams {
  return { maxTokens: 8, sampling: GREEDY, stopTokens: new Set(), penaltyWindow: 0, returnPromptLogits: false, ...over };
}

function config(over: Partial<SchedulerConfig> = {}): SchedulerConfig {
  return {
    contextSize: 64,
    blockTokens: 4,
    numBlocks: { device: 32, host: 32 },
    maxRunning: 8,
    maxChunkTokens: 8,
    maxStepTokens: 32,
    strategy: 'cpu',
    admissionWatermark: 0,
    ...over,
  };
}

const range = (n: number, first: number) => Array.from({ length: n }, (_, i) => first + i);

/** Steps the scheduler on the fake until `until` says stop (default: no work left), auditing the pools after every step. */
async function drive(s: Scheduler, model: FakeKvModel, until: () => boolean = () => !s.hasWork, maxSteps = 2000): Promise<{ plans: StepPlan[]; events: SequenceEvent[] }> {
  const plans: StepPlan[] = [];
  const events: SequenceEvent[] = [];
  for (let i = 0; i < maxSteps && !until(); i++) {
    const plan = s.schedule();
    plans.push(plan);
    try {
      events.push(...s.update(plan, await model.step(plan)));
    } catch (err) {
      events.push(...s.fail(plan, err as Error));
    }
    s.audit();
  }
  return { plans, events };
}

function fakeFor(s: Scheduler): FakeKvModel {
  return new FakeKvModel(s.config.blockTokens, s.config.numBlocks);
}

function checkOutputs(t: Test, seqs: Sequence[]): void {
  for (const seq of seqs) {
    const prompt = seq.tokens.slice(0, seq.promptLength);
    t.same(seq.tokens.slice(seq.promptLength), expectedContinuation(prompt, seq.numGenerated), `sequence ${seq.id}: the reference tokens`);
  }
}

t.test('a shared prompt prefix is computed once; later requests start after it', async (t) => {
  const s = new Scheduler(config({ numBlocks: { device: 32, host: 0 } }));
  const model = fakeFor(s);
  const system = range(10, 20);
  const a = new Sequence(1, [...system, 1, 2], params());
  s.add(a);
  await drive(s, model, () => a.numComputed >= 12);
  const b = new Sequence(2, [...system, 3, 4, 5], params());
  const c = new Sequence(3, [...system, 1, 2], params());
  s.add(b);
  s.add(c);
  const plan = s.schedule();
  const pb = plan.sequences.find((p) => p.seqId === 2)!;
  const pc = plan.sequences.find((p) => p.seqId === 3)!;
  t.equal(pb.startPos, 8, 'two full blocks of the system prompt come from the cache');
  t.same(Array.from(pb.blockTable.slice(0, 2)), a.blockTable.slice(0, 2), 'the same block ids, not copies');
  t.equal(pc.startPos, 8, 'an identical prompt reuses its full blocks; its partial block is computed');
  t.equal(b.metrics.numCachedTokens, 8);
  t.equal(s.kv.pools.device.refCount(a.blockTable[0]!), 3);
  s.update(plan, await model.step(plan));
  await drive(s, model);
  checkOutputs(t, [a, b, c]);
  t.equal(s.counters.numCachedTokens, 16);
  t.equal(s.kv.numFree, 32, 'every block free again');
  t.ok(s.kv.numCached > 0, 'and still cached for the next request');

  const d = new Sequence(4, [...system, 1, 2], params());
  s.add(d);
  const later = s.schedule();
  t.equal(later.sequences[0]!.startPos, 8, 'a later request hits blocks nobody holds any more');
  s.update(later, await model.step(later));
  await drive(s, model);
  checkOutputs(t, [d]);

  const exact = new Sequence(5, range(8, 20), params());
  s.add(exact);
  const p = s.schedule().sequences[0]!;
  t.equal(p.startPos, 4, 'a prompt of whole cached blocks still computes its last block, for the logits to sample from');
  s.update({ strategy: 'cpu', copies: [], sequences: [p] }, await model.step({ strategy: 'cpu', copies: [], sequences: [p] }));
  await drive(s, model);
  checkOutputs(t, [exact]);

  const scored = new Sequence(6, [...system, 1, 2], params({ maxTokens: 0, returnPromptLogits: true }));
  s.add(scored);
  t.equal(s.schedule().sequences[0]!.startPos, 0, 'a request for prompt logits computes every position');
});

t.test('cached blocks nobody holds are evicted, least recently freed first, when memory runs short', async (t) => {
  const s = new Scheduler(config({ numBlocks: { device: 12, host: 0 }, contextSize: 48 }));
  const model = fakeFor(s);
  const old = new Sequence(1, range(17, 100), params({ maxTokens: 1 }));
  s.add(old);
  await drive(s, model);
  t.equal(s.kv.numCached, 4, 'four full blocks cached');
  const big = new Sequence(2, range(36, 200), params({ maxTokens: 2 }));
  s.add(big);
  await drive(s, model);
  checkOutputs(t, [big]);
  t.ok(s.kv.pools.device.numEvictions > 0, 'room was made by evicting cached blocks');
  const again = new Sequence(3, range(17, 100), params({ maxTokens: 1 }));
  s.add(again);
  const p = s.schedule();
  t.equal(p.sequences[0]!.startPos, 8, 'the two tail blocks were evicted and are computed again; the head outlived them');
  s.update(p, await model.step(p));
  await drive(s, model);
  checkOutputs(t, [again]);
});

t.test('a sequence that outgrows the device tier moves to the host tier by block copies and keeps its KV', async (t) => {
  // 6 device blocks: two 10-token prompts fit (3 blocks each) but cannot grow.
  const s = new Scheduler(config({ contextSize: 32, numBlocks: { device: 8, host: 16 }, prefixCaching: false }));
  const model = fakeFor(s);
  const a = new Sequence(1, range(10, 30), params({ maxTokens: 14 }));
  const b = new Sequence(2, range(10, 60), params({ maxTokens: 14 }));
  s.add(a);
  s.add(b);
  const { plans } = await drive(s, model);
  const moves = plans.filter((p) => p.copies.length > 0);
  t.ok(moves.length > 0, 'blocks were copied');
  const out = moves[0]!.copies;
  t.ok(out.every((c) => c.fromTier === 'device' && c.toTier === 'host'), 'swap out: device to host');
  t.equal(b.metrics.numPreemptions + a.metrics.numPreemptions, 0, 'nothing was recomputed');
  t.ok(b.metrics.numMoves > 0, 'the newer sequence moved');
  t.equal(a.metrics.numMoves, 0, 'the older one kept its place');
  t.ok(plans.some((p) => p.sequences.some((q) => q.kvTier === 'host')), 'and ran from the host tier');
  checkOutputs(t, [a, b]);
  t.equal(s.kv.numFree, 24);
});

t.test('under gpu-only a sequence in the host tier waits, then moves back when the device has room', async (t) => {
  const s = new Scheduler(config({ strategy: 'gpu-only', contextSize: 32, numBlocks: { device: 9, host: 16 }, prefixCaching: false }));
  const model = fakeFor(s);
  const a = new Sequence(1, range(10, 30), params({ maxTokens: 10 }));
  const b = new Sequence(2, range(10, 60), params({ maxTokens: 10 }));
  s.add(a);
  s.add(b);
  const { plans } = await drive(s, model);
  t.ok(plans.every((p) => p.sequences.every((q) => q.kvTier === 'device' && q.attention === 'gpu')), 'only the device tier runs');
  const dirs = plans.flatMap((p) => p.copies.map((c) => `${c.fromTier}>${c.toTier}`));
  t.ok(dirs.includes('device>host'), 'swapped out');
  t.ok(dirs.includes('host>device'), 'swapped back in');
  t.equal(a.metrics.numPreemptions + b.metrics.numPreemptions, 0);
  checkOutputs(t, [a, b]);
  t.equal(s.kv.numFree, 25);
});

t.test('with no room in either tier, or in recompute mode, the newest sequence is recomputed and gets the same tokens', async (t) => {
  for (const mode of ['swap', 'recompute'] as const) {
    const s = new Scheduler(config({ contextSize: 40, numBlocks: { device: 10, host: mode === 'swap' ? 10 : 0 }, preemption: mode }));
    const model = fakeFor(s);
    const seqs = [1, 2, 3].map((id) => new Sequence(id, range(10, 40 * id), params({ maxTokens: 20 })));
    for (const q of seqs) s.add(q);
    const { plans } = await drive(s, model);
    t.ok(s.counters.numPreemptions > 0, `${mode}: something was recomputed`);
    t.equal(seqs[0]!.metrics.numPreemptions, 0, `${mode}: never the oldest`);
    if (mode === 'recompute') t.ok(plans.every((p) => p.copies.length === 0), 'recompute mode never copies');
    checkOutputs(t, seqs);
    t.equal(s.kv.numFree, s.kv.numBlocks);
  }
});

t.test('admission takes what fits, first come first served, and never preempts running work', async (t) => {
  const s = new Scheduler(config({ contextSize: 48, numBlocks: { device: 12, host: 0 }, prefixCaching: false, maxChunkTokens: 48, maxStepTokens: 64, admissionWatermark: 0.25 }));
  const model = fakeFor(s);
  const a = new Sequence(1, range(30, 10), params({ maxTokens: 4 }));
  s.add(a);
  let plan = s.schedule();
  t.same(plan.sequences.map((p) => p.seqId), [1]);
  s.update(plan, await model.step(plan));
  const b = new Sequence(2, range(10, 50), params({ maxTokens: 4 }));
  const c = new Sequence(3, range(2, 90), params({ maxTokens: 4 }));
  s.add(b);
  s.add(c);
  plan = s.schedule();
  t.same(plan.sequences.map((p) => p.seqId), [1], 'b needs 3 blocks; 4 are free but 3 are the watermark; c waits behind b');
  t.equal(s.numWaiting, 2);
  s.update(plan, await model.step(plan));
  await drive(s, model);
  t.equal(a.metrics.numPreemptions, 0);
  checkOutputs(t, [a, b, c]);
  t.ok(b.metrics.queuedMs <= c.metrics.queuedMs);
});

t.test('a failing step of several requests retries them one by one: only the bad one fails', async (t) => {
  const s = new Scheduler(config());
  const model = fakeFor(s);
  model.failWhen = (plan) => plan.sequences.some((p) => p.seqId === 3);
  const seqs = [1, 2, 3, 4].map((id) => new Sequence(id, range(5 + id, 10 * id), params({ maxTokens: 6 })));
  for (const q of seqs) s.add(q);
  const { plans, events } = await drive(s, model);
  const failed = events.filter((e) => e.error).map((e) => e.seqId);
  t.same(failed, [3], 'one request failed');
  t.equal(s.counters.numIsolations, 1);
  t.ok(plans.slice(1, 5).every((p) => p.sequences.length === 1), 'the retries ran alone');
  checkOutputs(t, seqs.filter((q) => q.id !== 3));
  t.ok(seqs.filter((q) => q.id !== 3).every((q) => q.stopReason === 'maxTokens'));
  t.equal(s.kv.numFree, s.kv.numBlocks);
});

t.test('a failed step that moved blocks recomputes the moved sequences (their copies may not have run)', async (t) => {
  const s = new Scheduler(config({ contextSize: 32, numBlocks: { device: 8, host: 16 }, prefixCaching: false }));
  const model = fakeFor(s);
  let failedOnce = false;
  model.failWhen = (plan) => {
    if (failedOnce || plan.copies.length === 0) return false;
    failedOnce = true;
    return true;
  };
  const a = new Sequence(1, range(10, 30), params({ maxTokens: 14 }));
  const b = new Sequence(2, range(10, 60), params({ maxTokens: 14 }));
  s.add(a);
  s.add(b);
  const { events } = await drive(s, model);
  t.ok(failedOnce);
  t.same(events.filter((e) => e.error), [], 'nobody failed: the step is retried');
  t.ok(a.metrics.numPreemptions + b.metrics.numPreemptions > 0, 'the moved sequence was recomputed');
  checkOutputs(t, [a, b]);
});

t.test('a paused sequence takes no steps, and its blocks go first when memory is short', async (t) => {
  const s = new Scheduler(config({ contextSize: 40, numBlocks: { device: 10, host: 0 }, prefixCaching: false }));
  const model = fakeFor(s);
  const a = new Sequence(1, range(12, 10), params({ maxTokens: 20 }));
  s.add(a);
  await drive(s, model, () => a.numGenerated >= 2);
  s.setPaused(1, true);
  t.notOk(s.hasRunnableWork);
  const b = new Sequence(2, range(20, 50), params({ maxTokens: 16 }));
  s.add(b);
  t.ok(s.hasRunnableWork);
  const { plans } = await drive(s, model, () => b.status === 'finished');
  t.ok(plans.every((p) => p.sequences.every((q) => q.seqId === 2)), 'the paused one never ran');
  t.equal(a.metrics.numPreemptions, 1, 'its blocks were taken for the active one');
  s.setPaused(1, false);
  await drive(s, model);
  checkOutputs(t, [a, b]);
  t.equal(a.numGenerated, 20, 'resumed and finished');
});

t.test('the bounded queue refuses with TDM_QUEUE_FULL and admits again once it drains', async (t) => {
  const s = new Scheduler(config({ maxWaiting: 2, maxRunning: 1 }));
  const model = fakeFor(s);
  s.add(new Sequence(1, [1, 2], params({ maxTokens: 2 })));
  s.add(new Sequence(2, [1, 2], params({ maxTokens: 2 })));
  t.throws(() => s.add(new Sequence(3, [1, 2], params())), { code: 'TDM_QUEUE_FULL', message: /queue is full: 2 requests wait.*maxQueuedRequests/ });
  t.equal(s.counters.numRejected, 1);
  const plan = s.schedule();
  s.update(plan, await model.step(plan));
  t.doesNotThrow(() => s.add(new Sequence(4, [1, 2], params({ maxTokens: 2 }))), 'one was admitted, so one more may wait');
  await drive(s, model);
  t.equal(s.kv.numFree, s.kv.numBlocks);
});
