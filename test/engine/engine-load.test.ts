// The engine under load with a fake executor that keeps real KV data (no addon): thousands
// of requests completed, aborted at every stage, paused, refused and failed, over both
// tiers with prefix sharing; the pools are audited after every step and no block leaks.
// Also the bounded output buffer that pauses a request whose reader stopped, and the
// per-request metrics the bench reads.
import t from 'tap';
import { Engine, type SchedulerConfig, type SequenceMetrics, type SequenceParams, type StopReason } from '../../src/engine/index.js';
import { GenerationStream } from '../../src/api/generation.js';
import type { TandemError } from '../../src/native/errors.js';
import { expectedContinuation, FakeKvModel } from './fake-kv-model.js';
import { flatDeviceCost } from '../sched/fake-cost.js';

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };

function params(over: Partial<SequenceParams> = {}): SequenceParams {
  return { maxTokens: 8, sampling: GREEDY, stopTokens: new Set(), penaltyWindow: 0, returnPromptLogits: false, ...over };
}

function config(over: Partial<SchedulerConfig> = {}): SchedulerConfig {
  return {
    contextSize: 48,
    blockTokens: 4,
    numBlocks: { device: 24, host: 40 },
    maxRunning: 12,
    maxChunkTokens: 8,
    maxStepTokens: 32,
    strategy: 'cpu',
    ...over,
  };
}

/** A small seeded PRNG (mulberry32), so that a failure reproduces. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface Outcome {
  reason?: StopReason;
  error?: string;
  tokens: number[];
  prompt: number[];
}

t.test('thousands of requests completed, aborted, paused, refused and failed leak no block', async (t) => {
  // The fourth field: under the auto policy, with host KV streamed to the device (a CPU too slow for any host attention).
  const variants: [string, Partial<SchedulerConfig>, number?, true?][] = [
    ['two tiers, swap, prefix cache', {}],
    ['recompute only, prefix cache', { preemption: 'recompute', numBlocks: { device: 0, host: 40 } }],
    ['gpu-only with swap-in', { strategy: 'gpu-only', numBlocks: { device: 24, host: 24 } }],
    ['no prefix cache', { prefixCaching: false, maxWaiting: 40 }],
    // The fake's steps take 1 µs, so every all-decode step bursts to the bound.
    ['two tiers, swap, prefix cache, decode bursts of up to 5', {}, 5],
    ['gpu-only with swap-in, decode bursts of up to 3', { strategy: 'gpu-only', numBlocks: { device: 24, host: 24 } }, 3],
    ['auto, host KV streamed, decode bursts of up to 3', { strategy: 'overlap', numBlocks: { device: 24, host: 24 } }, 3, true],
  ];
  for (const [name, over, maxDecodeSteps, streamed] of variants) {
    const cfg = config({ maxWaiting: 64, ...over });
    const model = new FakeKvModel(cfg.blockTokens, cfg.numBlocks);
    model.delay = () => new Promise((r) => setImmediate(r));
    model.failWhen = (plan) => plan.sequences.some((p) => p.seqId % 97 === 0);
    const policy = streamed ? { name: 'auto' as const, cost: flatDeviceCost(40, 1000), options: { streamHostKv: true } } : undefined;
    const engine = new Engine(model, cfg, { maxDecodeSteps, ...(policy ? { policy } : {}) });
    let audits = 0;
    const auditErrors: string[] = [];
    engine.onStep = () => {
      try {
        engine.scheduler.audit();
      } catch (err) {
        auditErrors.push((err as Error).message);
      }
      audits++;
    };
    const random = rng(name.length * 7919);
    const prefixes = [[], [11, 12, 13, 14, 15, 16, 17, 18], [21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]];
    const outcomes: Promise<Outcome>[] = [];
    const otherErrors = new Set<string>();
    let rejected = 0;
    const N = 1500;
    for (let i = 0; i < N; i++) {
      const prompt = [...prefixes[i % 3]!, ...Array.from({ length: 1 + Math.floor(random() * 12) }, () => 40 + Math.floor(random() * 50))];
      const maxTokens = 1 + Math.floor(random() * 12);
      const kind = random();
      outcomes.push(
        new Promise<Outcome>((resolve) => {
          const tokens: number[] = [];
          let id = 0;
          try {
            id = engine.submit(prompt, params({ maxTokens }), {
              onToken: (tok) => {
                tokens.push(tok);
                if (kind < 0.15 && tokens.length === 2) engine.cancel(id, 'aborted');
                if (kind > 0.9 && tokens.length === 1) {
                  engine.setPaused(id, true);
                  setTimeout(() => engine.setPaused(id, false), 1 + Math.floor(random() * 3));
                }
              },
              onFinish: (reason) => resolve({ reason, tokens, prompt }),
              onError: (e) => {
                if (!/injected/.test(e.message)) otherErrors.add(e.message);
                resolve({ error: e.code, tokens, prompt });
              },
            });
          } catch (err) {
            rejected++;
            resolve({ error: (err as TandemError).code, tokens, prompt });
            return;
          }
          if (kind >= 0.15 && kind < 0.2) engine.cancel(id, 'aborted');
          else if (kind >= 0.2 && kind < 0.3) setImmediate(() => engine.cancel(id, 'aborted'));
        }),
      );
      // Arrivals spread over the run, so that requests join running batches; every 150th
      // opens a burst that overflows the queue.
      const burst = i % 150 < 90;
      while (!burst && engine.stats.numWaiting > 8) await new Promise((r) => setImmediate(r));
    }
    const results = await Promise.all(outcomes);
    await engine.idle();
    const completed = results.filter((r) => r.reason === 'maxTokens' || r.reason === 'contextFull');
    const wrong = completed.filter((r) => JSON.stringify(r.tokens) !== JSON.stringify(expectedContinuation(r.prompt, r.tokens.length)));
    const aborted = results.filter((r) => r.reason === 'aborted').length;
    const failed = results.filter((r) => r.error === 'TDM_INTERNAL').length;
    const stats = engine.stats;
    t.comment(`${name}: ${completed.length} completed, ${aborted} aborted, ${failed} failed, ${rejected} refused; ` +
      `${stats.numSteps} steps, ${stats.numCachedTokens} cached prompt tokens, ${stats.numPreemptions} recomputes, ${stats.numMoves} moves`);
    t.same(auditErrors, [], `${name}: the audits found nothing`);
    t.same([...otherErrors], [], `${name}: no error but the injected one`);
    t.equal(wrong.length, 0, `${name}: every completed request has the reference tokens`);
    t.ok(completed.length > N / 3 && aborted > N / 10, `${name}: a mix of completed and aborted requests`);
    t.ok(failed > 0 && failed <= Math.ceil(N / 97) + 1, `${name}: only requests the executor refuses fail`);
    t.equal(results.filter((r) => r.error && r.error !== 'TDM_INTERNAL' && r.error !== 'TDM_QUEUE_FULL').length, 0);
    t.equal(stats.numRejected, rejected);
    t.equal(stats.numFinished + stats.numAborted + stats.numFailed, N - rejected, 'every accepted request ended once');
    t.ok(audits === stats.numSteps, `${name}: the pools were audited after each of ${audits} steps`);
    t.equal(stats.numFreeBlocks, stats.numBlocks, `${name}: every block is back in the pools`);
    if (streamed) t.ok(engine.policy!.stats.streamed > 0, `${name}: ${engine.policy!.stats.streamed} sequence-steps streamed`);
    t.equal(stats.numWaiting + stats.numRunning + stats.numPaused, 0);
    engine.scheduler.audit();
    if (cfg.prefixCaching !== false) t.ok(stats.numCachedTokens > 0, `${name}: the shared prefixes were reused`);
    if (name.startsWith('two tiers') || name.startsWith('gpu-only')) t.ok(stats.numMoves > 0, `${name}: tables moved between tiers`);
    if (maxDecodeSteps) t.ok(stats.numRounds > stats.numSteps * 1.1, `${name}: ${stats.numRounds} rounds in ${stats.numSteps} steps`);
    else t.equal(stats.numRounds, stats.numSteps, `${name}: one round a step`);
  }
});

t.test('the engine refuses with TDM_QUEUE_FULL past the queue bound and stays usable', async (t) => {
  const model = new FakeKvModel(4, { device: 0, host: 64 });
  const engine = new Engine(model, config({ numBlocks: { device: 0, host: 64 }, maxWaiting: 3, maxRunning: 1 }));
  const done: Promise<StopReason>[] = [];
  const submit = () =>
    new Promise<StopReason>((resolve, reject) => engine.submit([1, 2, 3], params({ maxTokens: 2 }), { onFinish: resolve, onError: reject }));
  for (let i = 0; i < 3; i++) done.push(submit());
  t.throws(() => engine.submit([1], params(), { onFinish() {}, onError() {} }), { code: 'TDM_QUEUE_FULL' });
  t.same(await Promise.all(done), ['maxTokens', 'maxTokens', 'maxTokens']);
  t.equal(await submit(), 'maxTokens', 'accepted again once the queue drained');
  t.equal(engine.stats.numRejected, 1);
});

t.test('a paused request stops the loop when nothing else runs, and resuming restarts it', async (t) => {
  const model = new FakeKvModel(4, { device: 0, host: 64 });
  const engine = new Engine(model, config({ numBlocks: { device: 0, host: 64 } }));
  let id = 0;
  const tokens: number[] = [];
  const finished = new Promise<StopReason>((resolve, reject) => {
    id = engine.submit([5, 6, 7], params({ maxTokens: 10 }), {
      onToken: (tok) => {
        tokens.push(tok);
        if (tokens.length === 3) engine.setPaused(id, true);
      },
      onFinish: resolve,
      onError: reject,
    });
  });
  await engine.idle();
  t.equal(tokens.length, 3, 'no tokens while paused');
  t.equal(engine.stats.numPaused, 1);
  const steps = engine.stats.numSteps;
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  t.equal(engine.stats.numSteps, steps, 'the loop does not spin for a paused request');
  engine.setPaused(id, false);
  t.equal(await finished, 'maxTokens');
  t.same(tokens, expectedContinuation([5, 6, 7], 10));
});

t.test('a reader that stops reading pauses its request at the buffer bound; reading resumes it', async (t) => {
  const model = new FakeKvModel(4, { device: 0, host: 64 });
  const engine = new Engine(model, config({ numBlocks: { device: 0, host: 64 } }));
  const start = (bufferTokens: number, maxTokens: number) => {
    let seqId = 0;
    const gen: GenerationStream = new GenerationStream({
      decoder: { push: (tok) => `<${tok}>`, flush: () => '' },
      stop: [],
      cancel: (reason) => engine.cancel(seqId, reason),
      pause: (paused) => engine.setPaused(seqId, paused),
      bufferTokens,
      startMs: 0,
    });
    seqId = engine.submit([1, 2, 3], params({ maxTokens }), gen);
    return gen;
  };
  const slow = start(4, 30);
  const it = slow[Symbol.asyncIterator]();
  const first = await it.next();
  t.notOk(first.done);
  await engine.idle();
  t.equal(engine.stats.numPaused, 1, 'paused with the buffer full');
  const unread = () => (slow as unknown as { unreadTokens: number }).unreadTokens;
  t.equal(unread(), 4, 'the stream holds exactly the bound');
  await it.next();
  await it.next();
  t.equal(engine.stats.numPaused, 0, 'read down to half: resumed');
  const rest: number[] = [];
  for (let r = await it.next(); !r.done; r = await it.next()) rest.push(...r.value.tokens);
  const result = await slow.result;
  t.equal(result.tokens.length, 30);
  t.same(result.tokens, expectedContinuation([1, 2, 3], 30));

  const awaited = start(4, 30);
  t.equal((await awaited.result).tokens.length, 30, 'a generation only awaited through result is never paused');
  t.equal(engine.stats.numFreeBlocks, engine.stats.numBlocks);
});

t.test('per-request metrics: queue, first token, last token and finish times, prefix hits', async (t) => {
  let clock = 0;
  const model = new FakeKvModel(4, { device: 0, host: 64 });
  model.delay = async () => {
    clock += 10;
  };
  const engine = new Engine(model, config({ numBlocks: { device: 0, host: 64 } }), { now: () => clock });
  const run = (prompt: number[]) =>
    new Promise<SequenceMetrics>((resolve, reject) => {
      engine.submit(prompt, params({ maxTokens: 5 }), { onFinish: (_r, m) => resolve(m!), onError: reject });
    });
  clock = 100;
  const first = await run([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
  t.equal(first.queuedMs, 100);
  t.equal(first.scheduledMs, 100, 'scheduled at once (the clock moves inside steps)');
  t.equal(first.firstTokenMs, 120, 'two prefill chunks of 8, then a token');
  t.equal(first.lastTokenMs, 160, 'one token per step after that');
  t.equal(first.finishedMs, 160);
  t.equal(first.numSteps, 6);
  t.equal(first.numCachedTokens, 0);
  const second = await run([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 99]);
  t.equal(second.numCachedTokens, 12, 'three blocks from the prefix cache');
  t.equal(second.firstTokenMs! - second.queuedMs, 10, 'one step to the first token');
  const s = engine.stats;
  t.equal(s.numGeneratedTokens, 10);
  t.equal(s.numCachedTokens, 12);
  t.equal(s.numPrefillTokens, 13 + 1);
  t.equal(s.phaseUs.forward, s.numSteps, 'phase times are summed');
  // The fake clock moves 10 ms inside each step, which reports 1 µs: the rest is the loop's.
  t.equal(s.hostUs, s.numSteps * (10_000 - 1), 'host time is the loop\'s wall time less what the steps report');
});
