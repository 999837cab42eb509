// auto on an asynchronous device whose profiled tables are off: the cost model learns a scale
// on each device table from whole gpu-only steps (the only device times a GPU gives), so
// that auto's choice between gpu-only and overlap follows the machine, not the wrong table.
import t from 'tap';
import type { StepPlan, StepResult } from '../../src/native/step-plan.js';
import { TableCostModel, type CostModel } from '../../src/sched/cost-model.js';
import { HARDWARE, rooflineCostModel, SIM_MODELS } from '../../src/sched/hardware.js';
import { autoPolicy } from '../../src/sched/policies/index.js';
import type { KvView, RequestView, StepDecision } from '../../src/sched/policy.js';
import { measureGrid, SIM_GRID } from '../../src/sched/profiler.js';
import { predictStep } from '../../src/sched/step-time.js';
import { Rng } from '../../src/sched/sim/workload.js';

const truth = rooflineCostModel(HARDWARE.a10!, SIM_MODELS['llama3.1-8b']!, 0.5);

/** Tables profiled with each device-attention timing off by `bias` (the clock is `truth`). */
function misprofiled(bias: number): TableCostModel {
  return measureGrid(SIM_GRID, (m) => (m.kind === 'deviceAttention' ? bias * m.us : m.us), truth).model;
}

/** A decode step: the first `contexts.length - onCpu` sequences on the device, the rest on the CPU. */
function decodePlan(strategy: StepPlan['strategy'], contexts: readonly number[], onCpu = 0): StepPlan {
  return {
    strategy,
    copies: [],
    sequences: contexts.map((c, i) => ({
      seqId: i + 1, tokens: Int32Array.of(5), startPos: c, blockTable: new Int32Array(0), kvTier: i < contexts.length - onCpu ? 'device' : 'host', sample: true,
      attention: i < contexts.length - onCpu ? 'gpu' : 'cpu',
    })),
  };
}

/** A GPU's StepResult: device phases only queued (a few µs), the step total true. */
function gpuStep(plan: StepPlan): StepResult {
  const work = plan.sequences.map((s) => ({ tokens: s.tokens.length, context: s.startPos, attention: s.attention }));
  const total = predictStep(plan.strategy, work, truth).stepUs;
  return { sequences: [], phaseUs: { linear: 5, attention: 3, logits: total - 8 }, totalUs: total };
}

/** gpu-only steps of 20-70 sequences at contexts of 100-1500, as a serving run sees them. */
function learn(model: TableCostModel, steps: number, deviceSynchronous: boolean): void {
  const rng = new Rng(3);
  for (let i = 0; i < steps; i++) {
    const n = rng.int(20, 70);
    const base = rng.int(100, 1500);
    const plan = decodePlan('gpu-only', Array.from({ length: n }, () => base + rng.int(0, 100)));
    model.observeStep(plan, gpuStep(plan), { deviceSynchronous });
  }
}

const relErr = (a: number, b: number) => Math.abs(a - b) / b;

t.test('whole gpu-only steps of an asynchronous device correct each device table', async (t) => {
  for (const bias of [0.5, 2]) {
    const model = misprofiled(bias);
    t.ok(relErr(model.deviceAttentionUs(40, 800), truth.deviceAttentionUs(40, 800)) > 0.3, `profiled device attention off by ${bias}x`);
    learn(model, 150, false);
    const { linear, attention } = model.deviceScales;
    t.ok(relErr(model.deviceAttentionUs(40, 800), truth.deviceAttentionUs(40, 800)) < 0.05, `bias ${bias}: device attention scale ${attention.toFixed(3)}, (40, 800) now ${model.deviceAttentionUs(40, 800).toFixed(0)} µs, true ${truth.deviceAttentionUs(40, 800).toFixed(0)}`);
    t.ok(relErr(model.linearUs(64), truth.linearUs(64)) < 0.05, `bias ${bias}: linear scale ${linear.toFixed(3)}, still right`);
    const back = new TableCostModel(JSON.parse(JSON.stringify(model.toJSON())) as ReturnType<TableCostModel['toJSON']>);
    t.equal(back.deviceAttentionUs(40, 800), model.deviceAttentionUs(40, 800), 'the scales survive the JSON round trip');
  }
  const mixed = misprofiled(2);
  const rng0 = new Rng(5);
  for (let i = 0; i < 50; i++) {
    const plan = decodePlan('overlap', Array.from({ length: 40 }, () => rng0.int(100, 1500)), 8);
    mixed.observeStep(plan, gpuStep(plan), { deviceSynchronous: false });
  }
  t.same(mixed.deviceScales, { linear: 1, attention: 1 }, 'overlapped steps (CPU attention in the pass) leave the scales alone: their factor covers them');
  const sync = misprofiled(2);
  const before = sync.deviceAttentionUs(40, 800);
  const rng = new Rng(4);
  for (let i = 0; i < 50; i++) {
    const plan = decodePlan('gpu-only', Array.from({ length: 30 }, () => rng.int(100, 1500)));
    // A synchronous device reports its phases as wall times: those refit the tables, not the scales.
    sync.observeStep(plan, { sequences: [], phaseUs: { linear: 1, attention: 1 }, totalUs: 2 }, { deviceSynchronous: true });
  }
  t.same(sync.deviceScales, { linear: 1, attention: 1 }, 'a synchronous device leaves the scales alone');
  t.not(sync.deviceAttentionUs(40, 800), before, 'and refits the table from its phase');
});

const kv: KvView = { blockTokens: 16, device: { numBlocks: 2466, numFree: 200 }, host: { numBlocks: 15000, numFree: 10000 } };
let nextId = 1;
const req = (tier: 'device' | 'host', context: number): RequestView => {
  const seqId = nextId++;
  return { seqId, tier, context, newTokens: 1, numBlocks: Math.ceil((context + 1) / 16), deferredSteps: 0, arrival: seqId };
};

/** The decision's step on the true machine: generated tokens per second. */
function trueRate(d: StepDecision, running: readonly RequestView[]): number {
  const byId = new Map(running.map((r) => [r.seqId, r]));
  const work = d.sequences.map((s) => ({ tokens: 1, context: byId.get(s.seqId)!.context, attention: s.attention, ...(s.subBatch === undefined ? {} : { subBatch: s.subBatch }) }));
  return (work.length * 1e6) / predictStep(d.strategy, work, truth).stepUs;
}

t.test('auto picks overlap where it is faster and keeps gpu-only where the host path is slower, once the device tables are learned', async (t) => {
  const dev = Array.from({ length: 60 }, () => req('device', 600));
  const short = Array.from({ length: 8 }, () => req('host', 200));
  const long = Array.from({ length: 8 }, () => req('host', 4000));
  const decide = (cost: CostModel, running: RequestView[]) => autoPolicy({ running, waiting: [], kv, cost });
  const exact = measureGrid(SIM_GRID, (m) => m.us, truth).model;

  // Short host sequences: their CPU attention hides behind the device's, so overlap is faster.
  const hidden = [...dev, ...short];
  const right = decide(exact, hidden);
  t.equal(right.strategy, 'overlap', 'with true tables: overlap');
  const gpuRate = trueRate(decide(exact, dev), dev);
  t.ok(trueRate(right, hidden) > 1.05 * gpuRate, `overlap ${trueRate(right, hidden).toFixed(0)} tok/s against gpu-only ${gpuRate.toFixed(0)}`);

  // A device-attention table profiled at half the truth leaves too little to hide the CPU behind.
  const optimistic = misprofiled(0.5);
  const wrong = decide(optimistic, hidden);
  t.ok(trueRate(wrong, hidden) < 0.99 * trueRate(right, hidden), `mis-profiled: ${wrong.strategy} with ${wrong.sequences.filter((s) => s.attention === 'cpu').length} host sequences, ${trueRate(wrong, hidden).toFixed(0)} tok/s`);
  learn(optimistic, 150, false);
  const learned = decide(optimistic, hidden);
  t.equal(learned.strategy, 'overlap', 'after 150 gpu-only steps: overlap');
  t.ok(trueRate(learned, hidden) >= 0.99 * trueRate(right, hidden), `as fast as with true tables (${trueRate(learned, hidden).toFixed(0)} tok/s)`);

  // Long host sequences: CPU attention far beyond the device's. A table profiled at twice the
  // truth would hide them; learned, auto keeps gpu-only.
  const exposed = [...dev, ...long];
  t.equal(decide(exact, exposed).strategy, 'gpu-only', 'with true tables: gpu-only, the host sequences wait');
  const pessimistic = misprofiled(2);
  learn(pessimistic, 150, false);
  const kept = decide(pessimistic, exposed);
  t.equal(kept.strategy, 'gpu-only', 'learned from a table at twice the truth: gpu-only');
  t.ok(trueRate(kept, exposed) >= 0.99 * gpuRate, `and never below gpu-only on the true machine (${trueRate(kept, exposed).toFixed(0)} tok/s)`);
});
