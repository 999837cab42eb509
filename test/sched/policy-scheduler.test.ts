// The policies driving the engine's real Scheduler through PolicyScheduler, with fake
// StepResults: plans are shaped (strategy, attention where the KV is, sub-batches), host
// sequences sit steps out without leaking blocks, admission follows the policy, and the cost
// model is refitted from the phases the steps return.
import t from 'tap';
import { Scheduler, type SchedulerConfig } from '../../src/engine/scheduler.js';
import { Sequence, type SequenceParams } from '../../src/engine/sequence.js';
import type { StepPlan, StepResult } from '../../src/native/step-plan.js';
import type { CostModel } from '../../src/sched/cost-model.js';
import { flatDeviceCost } from './fake-cost.js';
import { measureGrid, SIM_GRID } from '../../src/sched/profiler.js';
import { PolicyScheduler, schedulerStrategyFor, type PolicySchedulerOptions, type ShapedSequencePlan } from '../../src/sched/policy-scheduler.js';
import type { PolicyName } from '../../src/sched/policy.js';
import { predictStep } from '../../src/sched/step-time.js';

const fakeCost = (cpuPerToken: number): CostModel => flatDeviceCost(cpuPerToken, 1_000_000);

const PARAMS: SequenceParams = {
  maxTokens: 40,
  sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 },
  stopTokens: new Set(),
  penaltyWindow: 0,
  returnPromptLogits: false,
};

function config(policy: PolicyName): SchedulerConfig {
  return {
    contextSize: 160,
    blockTokens: 16,
    numBlocks: { device: 24, host: 96 },
    maxRunning: 10,
    maxChunkTokens: 64,
    maxStepTokens: 74,
    strategy: schedulerStrategyFor(policy),
    prefixCaching: false,
  };
}

interface Trace {
  plans: StepPlan[];
  firstTier: Map<number, string>;
  finished: number;
  /** Steps that burst, those of them that left a running sequence out, and the most rounds such a step ran. */
  bursts: number;
  burstsWithDeferral: number;
  deferredBurstRounds: number;
  /** The most rounds in a row any sequence sat out between its first step and its last. */
  longestWait: number;
  /** Sequences left out of a burst whose wait the policy counted as fewer rounds than the burst ran. */
  undercounted: number;
}

/** A step as a GPU reports it: projections and attention only queued, the wait in 'logits', host sampling per sequence; each strategy's pass `slow` times its tables'. */
function gpuStep(plan: StepPlan, truth: CostModel, slow: Partial<Record<string, number>>, samplingPerSeqUs: number): StepResult {
  const t0 = predictStep(plan.strategy, plan.sequences.map((s) => ({ tokens: s.tokens.length, context: s.startPos, attention: s.attention, subBatch: (s as ShapedSequencePlan).subBatch })), truth);
  const pass = (slow[plan.strategy] ?? 1) * t0.passUs;
  const sampling = samplingPerSeqUs * plan.sequences.filter((s) => s.sample).length;
  return {
    sequences: plan.sequences.map((s) => ({ seqId: s.seqId, token: s.sample ? 5 : -1 })),
    phaseUs: { copies: t0.copiesUs, embed: 10, linear: 300, attention: 40, cpuAttention: t0.cpuAttentionUs, attentionTransfer: 0.5 * pass, logits: 0.4 * pass, sampling },
    totalUs: pass + sampling + t0.copiesUs,
  };
}

/** Serves 10 requests to the end: fake tokens for every sampled sequence, phases from the cost model (or from `measure`). */
function serve(policy: PolicyName, truth: CostModel, ps?: PolicyScheduler, measure?: (plan: StepPlan) => StepResult, cfg = config(policy), decodeSteps = 1): { ps: PolicyScheduler; trace: Trace; totalUs: number } {
  const scheduler = new Scheduler(cfg);
  ps ??= new PolicyScheduler(scheduler, policy, measureGrid(SIM_GRID, (m) => m.us, truth).model);
  const trace: Trace = { plans: [], firstTier: new Map(), finished: 0, bursts: 0, burstsWithDeferral: 0, deferredBurstRounds: 0, longestWait: 0, undercounted: 0 };
  const waiting = new Map<number, number>();
  let totalUs = 0;
  for (let i = 0; i < 10; i++) ps.add(new Sequence(i + 1, Array.from({ length: 20 + 7 * i }, (_, k) => 3 + ((k * 31 + i) % 400)), PARAMS));
  for (let step = 0; step < 2000 && ps.scheduler.hasWork; step++) {
    const deferrals = ps.stats.deferrals;
    const plan = ps.schedule(decodeSteps > 1 ? { decodeSteps } : {});
    trace.plans.push(plan);
    const rounds = Math.max(1, ...plan.sequences.map((s) => s.decodeSteps ?? 1));
    if (rounds > 1) trace.bursts++;
    if (rounds > 1 && ps.stats.deferrals > deferrals) {
      trace.burstsWithDeferral++;
      trace.deferredBurstRounds = Math.max(trace.deferredBurstRounds, rounds);
    }
    // Rounds each started sequence sat out in a row (a finished one leaves the map below).
    for (const id of waiting.keys()) waiting.set(id, plan.sequences.some((s) => s.seqId === id) ? 0 : waiting.get(id)! + rounds);
    for (const s of plan.sequences) if (!waiting.has(s.seqId)) waiting.set(s.seqId, 0);
    for (const n of waiting.values()) trace.longestWait = Math.max(trace.longestWait, n);
    for (const s of plan.sequences) if (s.startPos === 0) trace.firstTier.set(s.seqId, s.kvTier);
    const t0 = predictStep(plan.strategy, plan.sequences.map((s) => ({ tokens: s.tokens.length, context: s.startPos, attention: s.attention, subBatch: (s as ShapedSequencePlan).subBatch })), truth);
    // A burst of even rounds: each round as the tables say (contexts grow a token a round; close enough).
    const result: StepResult = measure?.(plan) ?? {
      sequences: plan.sequences.map((s) => ({ seqId: s.seqId, token: s.sample ? 5 : -1, ...((s.decodeSteps ?? 1) > 1 ? { tokens: new Int32Array(s.decodeSteps!).fill(5) } : {}) })),
      phaseUs: { linear: rounds * t0.linearUs, attention: rounds * t0.deviceAttentionUs, cpuAttention: rounds * t0.cpuAttentionUs },
      totalUs: rounds * t0.stepUs,
      rounds,
    };
    totalUs += result.totalUs;
    for (const e of ps.update(plan, result)) {
      if (e.finish) trace.finished++;
      if (e.finish || e.error) waiting.delete(e.seqId);
    }
    if (rounds > 1 && ps.stats.deferrals > deferrals) {
      const counts = (ps as unknown as { deferredSteps: Map<number, number> }).deferredSteps;
      for (const [id, n] of counts) if (!plan.sequences.some((s) => s.seqId === id) && n < rounds) trace.undercounted++;
    }
    ps.scheduler.audit();
  }
  return { ps, trace, totalUs };
}

t.test('the policy must match the Scheduler it drives', async (t) => {
  t.throws(() => new PolicyScheduler(new Scheduler(config('gpu-only')), 'auto', fakeCost(1)), { code: 'TDM_BAD_ARGUMENT', message: /overlap/ });
  t.equal(schedulerStrategyFor('gpu-only'), 'gpu-only');
  t.equal(schedulerStrategyFor('pipeline'), 'overlap');
});

for (const policy of ['gpu-only', 'pipeline', 'overlap', 'auto'] as const) {
  t.test(`${policy}: every request finishes, plans are shaped, no block leaks`, async (t) => {
    const { ps, trace } = serve(policy, fakeCost(0.5));
    t.equal(trace.finished, 10, 'all 10 requests finished');
    let wrong = 0;
    let subBatches = 0;
    for (const p of trace.plans) {
      for (const s of p.sequences as ShapedSequencePlan[]) {
        if ((s.kvTier === 'host') !== (s.attention === 'cpu')) wrong++;
        if (s.subBatch !== undefined) subBatches++;
        if (policy === 'gpu-only' && s.kvTier !== 'device') wrong++;
      }
    }
    t.equal(wrong, 0, 'attention runs where each sequence\'s KV is (and only on the device under gpu-only)');
    if (policy === 'pipeline') t.ok(subBatches > 0, 'pipelined steps name each sequence\'s sub-batch');
    t.ok(ps.stats.steps > 0 && ps.stats.predictedSteps === ps.stats.steps, 'every step was predicted and compared');
    t.ok(ps.meanStepError < 0.2, `mean step prediction error ${(100 * ps.meanStepError).toFixed(1)}%`);
    t.ok((ps.cost as { numObserved?: number }).numObserved! > 0, 'the tables were refitted online');
    // Pipelining reads the weights twice a step: with a device batch this small it never pays, so pipeline keeps new requests on the device.
    if (policy === 'overlap' || policy === 'auto') t.ok([...trace.firstTier.values()].includes('host'), 'with a fast CPU some requests start in host RAM');
  });
}

for (const policy of ['gpu-only', 'pipeline', 'overlap', 'auto'] as const) {
  t.test(`${policy} with sliding layers apart: every request finishes over both tables, no block leaks`, async (t) => {
    const cfg: SchedulerConfig = { ...config(policy), slidingWindow: 24, numBlocks: { device: 30, host: 120 } };
    const { ps, trace } = serve(policy, fakeCost(0.5), undefined, undefined, cfg);
    t.equal(trace.finished, 10, 'all 10 requests finished');
    t.comment(`${policy}: ${ps.scheduler.counters.numMoves} moves, ${ps.scheduler.counters.numPreemptions} preemptions`);
  });
}

for (const policy of ['gpu-only', 'overlap', 'auto'] as const) {
  t.test(`${policy} with decode bursts of 8: every request finishes, predictions hold per round, a left-out sequence waits maxDeferSteps rounds at most`, async (t) => {
    for (const cpu of [0.5, 40]) {
      const { ps, trace } = serve(policy, fakeCost(cpu), undefined, undefined, config(policy), 8);
      t.equal(trace.finished, 10, `CPU ${cpu} µs a token: all 10 requests finished`);
      t.ok(trace.bursts > 0, `${trace.bursts} of ${trace.plans.length} steps burst, ${trace.burstsWithDeferral} of them leaving sequences out (${ps.stats.deferrals} left out)`);
      t.ok(trace.deferredBurstRounds <= 4, `a burst that leaves sequences out runs 4 rounds at most (${trace.deferredBurstRounds})`);
      t.equal(trace.undercounted, 0, 'a sequence left out of a burst has waited its rounds (maxDeferSteps counts rounds)');
      // Swapped-out or recomputed sequences wait for memory, not for the policy.
      if (ps.scheduler.counters.numPreemptions + ps.scheduler.counters.numMoves === 0) t.ok(trace.longestWait <= 4 + 8, `no sequence sat out more than a deferral's rounds and one burst (${trace.longestWait})`);
      t.ok(ps.meanStepError < 0.2, `mean step prediction error ${(100 * ps.meanStepError).toFixed(1)}% (per round)`);
    }
    // Under a latency target the policy's checks reckon one step's wait: no burst leaves a sequence out.
    const slo = serve(policy, fakeCost(40), new PolicyScheduler(new Scheduler(config(policy)), policy, measureGrid(SIM_GRID, (m) => m.us, fakeCost(40)).model, { tpotSloUs: 1e9 }), undefined, config(policy), 8);
    t.equal(slo.trace.finished, 10);
    t.equal(slo.trace.burstsWithDeferral, 0, `with tpotSloUs: no burst leaves a sequence out (${slo.ps.stats.deferrals} left out)`);
  });
}

t.test('auto with a slow CPU: host sequences sit steps out and new requests wait for the device', async (t) => {
  const { ps, trace } = serve('auto', fakeCost(40));
  t.equal(trace.finished, 10);
  t.same([...new Set(trace.firstTier.values())], ['device'], 'no request is started in host RAM');
  t.ok(ps.stats.strategies['gpu-only'] > 0, 'GPU-only steps were chosen');
  const hostSteps = trace.plans.filter((p) => p.sequences.some((s) => s.kvTier === 'host')).length;
  t.comment(`${ps.stats.deferrals} deferrals, ${hostSteps} steps with a host sequence, ${ps.scheduler.counters.numMoves} moves`);
});

t.test('on a GPU-like device the refit learns sampling and each strategy\'s pass: predictions hold, auto keeps up with the best fixed policy', async (t) => {
  const truth = fakeCost(0.3);
  // Pipelining loses most to its waits, overlap some; sampling 300 µs a sequence.
  const slow = { 'gpu-only': 1.1, overlap: 1.3, pipeline: 2 };
  const step = (plan: StepPlan) => gpuStep(plan, truth, slow, 300);
  const run = (policy: PolicyName, refit: PolicySchedulerOptions['refit']) => {
    const ps = new PolicyScheduler(new Scheduler(config(policy)), policy, measureGrid(SIM_GRID, (m) => m.us, truth).model, { refit });
    return serve(policy, truth, ps, step);
  };
  const rates = new Map<PolicyName, number>();
  let autoError = NaN;
  for (const policy of ['gpu-only', 'pipeline', 'overlap', 'auto'] as const) {
    const { ps, trace, totalUs } = run(policy, { deviceSynchronous: false });
    t.equal(trace.finished, 10, `${policy}: all 10 requests finished`);
    t.ok(ps.meanStepError < 0.15, `${policy}: mean step prediction error ${(100 * ps.meanStepError).toFixed(1)}%`);
    rates.set(policy, (10 * 40) / totalUs);
    if (policy === 'auto') {
      autoError = ps.meanStepError;
      t.ok(ps.stats.strategies.pipeline <= 3, `auto tried pipelining (twice its tables' time) ${ps.stats.strategies.pipeline} time(s), then left it`);
    }
    t.comment(`${policy}: ${JSON.stringify(ps.stats.strategies)}, ${((10 * 40 * 1e6) / totalUs).toFixed(1)} tokens/s`);
  }
  const best = Math.max(rates.get('gpu-only')!, rates.get('pipeline')!, rates.get('overlap')!);
  t.ok(rates.get('auto')! >= 0.97 * best, `auto ${(rates.get('auto')! / best).toFixed(3)}x the best fixed policy`);
  t.ok(rates.get('auto')! >= rates.get('gpu-only')!, 'and not below gpu-only');
  // The same steps taken as a synchronous device's: queue times become subtask times, and the predictions drift.
  const naive = run('auto', { deviceSynchronous: true });
  t.ok(naive.ps.meanStepError > 2 * autoError, `a GPU's phases taken as device times: ${(100 * naive.ps.meanStepError).toFixed(1)}% error`);
});
