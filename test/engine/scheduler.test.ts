// Scheduler and engine driven by a fake native step (no addon): chunked prefill, batching,
// finishing, preemption, aborts that free their blocks, and the context limit.
import t from 'tap';
import { Engine, Scheduler, Sequence, type SchedulerConfig, type SequenceParams, type StopReason } from '../../src/engine/index.js';
import type { StepPlan, StepResult } from '../../src/native/step-plan.js';
import { TandemError } from '../../src/native/errors.js';

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };
const EOS = 2;

function params(over: Partial<SequenceParams> = {}): SequenceParams {
  return { maxTokens: 1000, sampling: GREEDY, stopTokens: new Set([EOS]), penaltyWindow: 64, returnPromptLogits: false, ...over };
}

function config(over: Partial<SchedulerConfig> = {}): SchedulerConfig {
  return {
    contextSize: 64,
    blockTokens: 4,
    numBlocks: { device: 64, host: 0 },
    maxRunning: 8,
    maxChunkTokens: 8,
    maxStepTokens: 32,
    strategy: 'cpu',
    ...over,
  };
}

/** The fake model: the next token is 100 + the position it will occupy, so results are checkable. */
function fakeResult(plan: StepPlan, nVocab = 0): StepResult {
  return {
    sequences: plan.sequences.map((s) => ({
      seqId: s.seqId,
      token: s.sample ? 100 + s.startPos + s.tokens.length : -1,
      allLogits: s.returnAllLogits ? Float32Array.from({ length: s.tokens.length * nVocab }, (_, i) => s.startPos * nVocab + i) : undefined,
    })),
    phaseUs: {},
    totalUs: 1,
  };
}

const prompt = (n: number, first = 10) => Array.from({ length: n }, (_, i) => first + i);

t.test('a long prompt is prefilled in chunks, then decodes one token a step', async (t) => {
  const s = new Scheduler(config());
  const seq = new Sequence(1, prompt(20), params({ maxTokens: 3 }));
  s.add(seq);
  const shapes: [number, number, number, boolean][] = [];
  while (s.hasWork) {
    const plan = s.schedule();
    const p = plan.sequences[0];
    shapes.push([p.startPos, p.tokens.length, p.blockTable.length, p.sample]);
    s.update(plan, fakeResult(plan));
  }
  t.same(shapes, [
    [0, 8, 2, false],
    [8, 8, 4, false],
    [16, 4, 5, true],
    [20, 1, 6, true],
    [21, 1, 6, true],
  ]);
  t.same(seq.tokens.slice(20), [120, 121, 122], 'each sampled token is appended and fed back');
  t.equal(seq.stopReason, 'maxTokens');
  t.equal(s.kv.numFree, 64, 'finishing frees every block');
});

t.test('decodes and prefill chunks share a step within the token budget', async (t) => {
  const s = new Scheduler(config({ maxStepTokens: 10, maxChunkTokens: 8 }));
  s.add(new Sequence(1, prompt(3), params()));
  s.add(new Sequence(2, prompt(3), params()));
  let plan = s.schedule();
  t.same(plan.sequences.map((p) => [p.seqId, p.tokens.length]), [[1, 3], [2, 3]], 'both prompts in one step');
  s.update(plan, fakeResult(plan));

  s.add(new Sequence(3, prompt(30), params()));
  plan = s.schedule();
  t.same(plan.sequences.map((p) => [p.seqId, p.tokens.length, p.sample]), [[1, 1, true], [2, 1, true], [3, 8, false]],
    'running decodes come first; the new prompt gets a chunk of what is left');
  s.update(plan, fakeResult(plan));
  plan = s.schedule();
  t.same(plan.sequences.map((p) => [p.seqId, p.tokens.length]), [[1, 1], [2, 1], [3, 8]]);
  t.ok(plan.sequences.reduce((n, p) => n + p.tokens.length, 0) <= 10);
  s.update(plan, fakeResult(plan));

  const capped = new Scheduler(config({ maxRunning: 2 }));
  for (let id = 1; id <= 3; id++) capped.add(new Sequence(id, prompt(2), params()));
  plan = capped.schedule();
  t.same(plan.sequences.map((p) => p.seqId), [1, 2], 'maxRunning caps the batch');
  t.equal(capped.numWaiting, 1);
});

t.test('a sequence ends on EOS, maxTokens or the context limit', async (t) => {
  const run = (seq: Sequence, cfg = config()) => {
    const s = new Scheduler(cfg);
    s.add(seq);
    while (s.hasWork) {
      const plan = s.schedule();
      s.update(plan, fakeResult(plan));
    }
    return s;
  };
  const eos = new Sequence(1, prompt(4), params({ stopTokens: new Set([106]) }));
  run(eos);
  t.equal(eos.stopReason, 'eos');
  t.same(eos.tokens.slice(4), [104, 105, 106], 'the EOS token is kept');

  const ignored = new Sequence(2, prompt(4), params({ stopTokens: new Set(), maxTokens: 5 }));
  run(ignored);
  t.equal(ignored.stopReason, 'maxTokens');

  const full = new Sequence(3, prompt(10), params());
  const s = run(full, config({ contextSize: 16 }));
  t.equal(full.stopReason, 'contextFull');
  t.equal(full.tokens.length, 16, 'prompt and generated tokens fill the context exactly');
  t.equal(s.kv.numFree, 64);

  const scored = new Sequence(4, prompt(5), params({ maxTokens: 0 }));
  run(scored);
  t.equal(scored.stopReason, 'maxTokens', 'maxTokens 0 processes the prompt and stops');
  t.equal(scored.tokens.length, 5);
});

t.test('a prompt that does not fit the context is a TDM_CONTEXT_FULL error naming the lengths', async (t) => {
  const s = new Scheduler(config({ contextSize: 16 }));
  t.throws(() => s.add(new Sequence(1, prompt(16), params())), {
    code: 'TDM_CONTEXT_FULL',
    message: /16 tokens.*context holds 16.*at most 15/,
  });
  t.doesNotThrow(() => s.add(new Sequence(2, prompt(15), params())));
  t.throws(() => new Scheduler(config({ contextSize: 1024, numBlocks: { device: 8, host: 0 } })), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('finishing a sequence in flight frees its blocks when the step returns', async (t) => {
  const s = new Scheduler(config());
  s.add(new Sequence(1, prompt(6), params()));
  s.add(new Sequence(2, prompt(6), params()));
  const plan = s.schedule();
  const used = 64 - s.kv.numFree;
  t.equal(used, 4);
  t.ok(s.finish(1, 'aborted'));
  t.equal(s.kv.numFree, 60, 'blocks of a sequence in flight stay put');
  const events = s.update(plan, fakeResult(plan));
  t.same(events.map((e) => e.seqId), [2], 'no events for the finished sequence');
  t.equal(s.kv.numFree, 62, 'freed by the step that returned');

  s.add(new Sequence(3, prompt(40), params()));
  t.ok(s.finish(3, 'aborted'), 'a waiting sequence can be finished');
  t.notOk(s.finish(3, 'aborted'), 'only once');
  t.equal(s.numWaiting, 0);
  t.ok(s.finish(2, 'stop'));
  t.equal(s.kv.numFree, 64, 'outside a step, finishing frees at once');
  t.notOk(s.hasWork);
});

t.test('when blocks run out the newest sequence is preempted and recomputed', async (t) => {
  // 12 blocks of 4 tokens: two sequences of 20-token prompts fit, but not as they grow past 24 tokens
  // (with no prefix sharing, and no second tier to move to).
  const s = new Scheduler(config({ contextSize: 40, numBlocks: { device: 12, host: 0 }, maxChunkTokens: 32, prefixCaching: false }));
  const a = new Sequence(1, prompt(20), params({ maxTokens: 12 }));
  const b = new Sequence(2, prompt(20), params({ maxTokens: 12 }));
  s.add(a);
  s.add(b);
  let preempted = false;
  let steps = 0;
  while (s.hasWork && steps++ < 100) {
    const plan = s.schedule();
    t.ok(plan.sequences.length > 0, 'every step makes progress');
    for (const p of plan.sequences) {
      const seq = p.seqId === 1 ? a : b;
      if (seq.numPreemptions > 0 && p.startPos === 0) {
        preempted = true;
        t.equal(p.tokens.length, seq.tokens.length, 'a recompute feeds prompt and generated tokens again');
      }
    }
    s.update(plan, fakeResult(plan));
    t.ok(s.kv.numFree >= 0);
  }
  t.ok(preempted, 'a sequence was preempted');
  t.equal(a.numPreemptions, 0, 'the older sequence keeps running');
  t.same(b.tokens.slice(20), prompt(12, 120), 'the recomputed sequence produces the same tokens');
  t.same(a.tokens.slice(20), prompt(12, 120));
  t.equal(s.kv.numFree, 12);
});

t.test('prompt logits are delivered once per position across chunks', async (t) => {
  const nVocab = 3;
  const s = new Scheduler(config({ maxChunkTokens: 4 }));
  const seq = new Sequence(1, prompt(10), params({ maxTokens: 0, returnPromptLogits: true }));
  s.add(seq);
  const got: number[] = [];
  while (s.hasWork) {
    const plan = s.schedule();
    for (const e of s.update(plan, fakeResult(plan, nVocab))) {
      if (e.promptLogits) got.push(...e.promptLogits.logits);
    }
  }
  t.same(got, Array.from({ length: 10 * nVocab }, (_, i) => i));
});

t.test('the engine shares steps between concurrent requests and reports in order', async (t) => {
  const plans: StepPlan[] = [];
  const engine = new Engine({ step: async (plan) => (plans.push(plan), fakeResult(plan)) }, config());
  const run = (p: number[], maxTokens: number) =>
    new Promise<{ tokens: number[]; reason: StopReason }>((resolve, reject) => {
      const tokens: number[] = [];
      engine.submit(p, params({ maxTokens }), {
        onToken: (tok) => tokens.push(tok),
        onFinish: (reason) => resolve({ tokens, reason }),
        onError: reject,
      });
    });
  const [x, y, z] = await Promise.all([run(prompt(5), 6), run(prompt(12), 4), run(prompt(3), 5)]);
  t.same(x, { tokens: prompt(6, 105), reason: 'maxTokens' });
  t.same(y, { tokens: prompt(4, 112), reason: 'maxTokens' });
  t.same(z, { tokens: prompt(5, 103), reason: 'maxTokens' });
  t.ok(plans.some((p) => p.sequences.length === 3), 'the three requests ran in one step');
  t.ok(engine.stats.numSteps < 6 + 4 + 5, 'fewer steps than tokens');
  t.equal(engine.stats.numFreeBlocks, engine.stats.numBlocks);
});

t.test('many aborts, in flight or queued, leak no blocks', async (t) => {
  let stepsInFlight = 0;
  let maxInFlight = 0;
  const engine = new Engine(
    {
      step: async (plan) => {
        maxInFlight = Math.max(maxInFlight, ++stepsInFlight);
        await new Promise((r) => setTimeout(r, 0));
        stepsInFlight--;
        return fakeResult(plan);
      },
    },
    config({ maxRunning: 4, numBlocks: { device: 40, host: 0 } }),
  );
  const done: Promise<StopReason>[] = [];
  for (let i = 0; i < 200; i++) {
    done.push(
      new Promise((resolve, reject) => {
        let seen = 0;
        const id = engine.submit(prompt(1 + (i % 30)), params({ maxTokens: 20 }), {
          onToken: () => {
            // Abort from inside the stream at varying depths, and some never reach a token.
            if (++seen === 1 + (i % 5)) engine.cancel(id, 'aborted');
          },
          onFinish: resolve,
          onError: reject,
        });
        if (i % 7 === 0) setTimeout(() => engine.cancel(id, 'aborted'), i % 3);
        if (i % 11 === 0) engine.cancel(id, 'aborted');
      }),
    );
  }
  const reasons = await Promise.all(done);
  await engine.idle();
  t.equal(maxInFlight, 1, 'one step at a time');
  t.ok(reasons.filter((r) => r === 'aborted').length >= 150);
  t.equal(engine.stats.numFreeBlocks, 40, 'every block is back in the pool');
  t.equal(engine.stats.numRunning + engine.stats.numWaiting, 0);
});

t.test('a failing step fails only the requests in it', async (t) => {
  let calls = 0;
  const engine = new Engine(
    {
      step: async (plan) => {
        calls++;
        if (calls === 2) throw Object.assign(new Error('kernel exploded'), { code: 'TDM_INTERNAL' });
        return fakeResult(plan);
      },
    },
    config({ maxRunning: 1 }),
  );
  const outcome = (p: number[]) =>
    new Promise<string>((resolve) => {
      engine.submit(p, params({ maxTokens: 3 }), { onFinish: (r) => resolve(r), onError: (e) => resolve(e.code) });
    });
  const [a, b] = await Promise.all([outcome(prompt(4)), outcome(prompt(4))]);
  t.equal(a, 'TDM_INTERNAL');
  t.equal(b, 'maxTokens', 'the next request runs normally');
  t.equal(engine.stats.numFreeBlocks, 64);
});

t.test('close fails live requests with TDM_DISPOSED and refuses new ones', async (t) => {
  const engine = new Engine({ step: async (plan) => fakeResult(plan) }, config());
  const failed = new Promise<string>((resolve) => {
    engine.submit(prompt(4), params(), { onFinish: (r) => resolve(r), onError: (e) => resolve(e.code) });
  });
  await engine.close();
  t.equal(await failed, 'TDM_DISPOSED');
  t.throws(() => engine.submit(prompt(2), params(), { onFinish() {}, onError() {} }), { code: 'TDM_DISPOSED' });
  t.equal(engine.stats.numFreeBlocks, 64);
});

t.test('a request submitted while the loop winds down still runs', async (t) => {
  const engine = new Engine({ step: async (plan) => fakeResult(plan) }, config());
  let second: StopReason | undefined;
  engine.submit(prompt(3), params({ maxTokens: 1 }), {
    // Submitted a microtask after the last finish, while the loop is returning.
    onFinish: () => queueMicrotask(() => engine.submit(prompt(3), params({ maxTokens: 2 }), { onFinish: (r) => (second = r), onError() {} })),
    onError() {},
  });
  for (let i = 0; i < 1000 && !second; i++) await new Promise((r) => setImmediate(r));
  t.equal(second, 'maxTokens');
});

t.test('a token constraint: its mask goes with each draw, it sees each token drawn, and a token it refuses fails only that sequence', async (t) => {
  const s = new Scheduler(config());
  const seen: number[] = [];
  const masks: (Uint8Array | undefined)[] = [];
  const constraint = {
    allowed: () => Uint8Array.of(seen.length),
    accept: (token: number) => {
      if (token === 123) throw new TandemError('TDM_INTERNAL', 'refused');
      seen.push(token);
    },
  };
  const constrained = new Sequence(1, prompt(20), params({ maxTokens: 10, constraint }));
  const free = new Sequence(2, prompt(20, 50), params({ maxTokens: 10 }));
  s.add(constrained);
  s.add(free);
  const errors: string[] = [];
  while (s.hasWork) {
    const plan = s.schedule();
    for (const p of plan.sequences) if (p.seqId === 1 && p.sample) masks.push(p.sampling?.allowed);
    for (const p of plan.sequences) if (p.seqId === 2) t.equal(p.sampling?.allowed, undefined, 'no mask without a constraint');
    for (const e of s.update(plan, fakeResult(plan))) if (e.error) errors.push(`${e.seqId}: ${e.error.message}`);
  }
  t.same(seen, [120, 121, 122], 'each drawn token, in order');
  t.same(masks.map((m) => m?.[0]), [0, 1, 2, 3], 'a mask from the state before each draw');
  t.same(errors, ['1: refused'], 'the refused token fails its sequence');
  t.same(constrained.tokens.slice(20), [120, 121, 122], 'and is not appended');
  t.equal(free.tokens.length - 20, 10, 'the other sequence runs to its end');
});
