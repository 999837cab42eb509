// The engine under each policy, with a fake executor that keeps real KV data (no addon): a
// queue that overflows the device tier finishes with the tokens that correct block handling
// gives, plans are shaped by the policy (attention where the KV is), host sequences that sit
// steps out never reach the executor as an empty plan, and the step hook sees each decision.
import t from 'tap';
import { Engine, type SequenceParams, type StopReason } from '../../src/engine/index.js';
import type { CostModel } from '../../src/sched/cost-model.js';
import { flatDeviceCost } from '../sched/fake-cost.js';
import type { StepDecision } from '../../src/sched/policy.js';
import { expectedContinuation, FakeKvModel, streamedBlocks, TIERED_CONFIG, tieredPrompts } from './fake-kv-model.js';

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };
const PARAMS: SequenceParams = { maxTokens: 12, sampling: GREEDY, stopTokens: new Set(), penaltyWindow: 0, returnPromptLogits: false };

const fakeCost = (cpuPerToken: number): CostModel => flatDeviceCost(cpuPerToken, 1000);

const CONFIG = TIERED_CONFIG;

const prompts = tieredPrompts();

const ps0 = (engine: Engine) => engine.policy!.stats;

async function serve(engine: Engine): Promise<{ tokens: number[][]; reasons: StopReason[] }> {
  const tokens: number[][] = prompts.map(() => []);
  const reasons: StopReason[] = [];
  await Promise.all(
    prompts.map(
      (p, i) =>
        new Promise<void>((resolve, reject) => {
          engine.submit(p, PARAMS, {
            onToken: (tok) => tokens[i]!.push(tok),
            onFinish: (reason) => (reasons.push(reason), resolve()),
            onError: reject,
          });
        }),
    ),
  );
  return { tokens, reasons };
}

for (const [policy, cpu] of [['gpu-only', 0.5], ['pipeline', 0.5], ['overlap', 0.5], ['auto', 0.5], ['auto', 40]] as const) {
  t.test(`${policy}${policy === 'auto' ? (cpu > 1 ? ' (slow CPU)' : ' (fast CPU)') : ''}: every request finishes with the right tokens`, async (t) => {
    const model = new FakeKvModel(CONFIG.blockTokens, CONFIG.numBlocks);
    model.record = true;
    const engine = new Engine(model, CONFIG, { policy: { name: policy, cost: fakeCost(cpu) } });
    t.equal(engine.scheduler.config.strategy, policy === 'gpu-only' ? 'gpu-only' : 'overlap', "the Scheduler's strategy follows the policy");
    const decisions: (StepDecision | undefined)[] = [];
    engine.onStep = (_plan, _result, decision) => decisions.push(decision);
    const { tokens, reasons } = await serve(engine);
    t.same(reasons, prompts.map(() => 'maxTokens'));
    t.same(tokens, prompts.map((p) => expectedContinuation(p, PARAMS.maxTokens)), 'the tokens of correct block handling');
    t.equal(model.plans.filter((p) => p.sequences.length === 0 && p.copies.length === 0).length, 0, 'no empty plan reached the executor');
    t.equal(model.plans.filter((p) => p.sequences.some((s) => (s.kvTier === 'host') !== (s.attention === 'cpu'))).length, 0, 'attention runs where the KV is');
    if (policy === 'gpu-only') t.ok(model.plans.every((p) => p.sequences.every((s) => s.kvTier === 'device')), 'gpu-only runs device-tier sequences only');
    t.equal(decisions.length, engine.stats.numSteps);
    t.equal(ps0(engine).steps, engine.stats.numSteps, 'the policy shaped every step the engine ran');
    t.equal(decisions.filter((d) => d === undefined).length, ps0(engine).unshapedSteps, 'each shaped step came with its decision');
    t.ok(decisions.every((d) => d === undefined || d.policy === policy));
    const ps = engine.policy!.stats;
    t.equal(ps.strategies.cpu, 0, 'no step ran the single-device strategy');
    const hostSteps = model.plans.filter((p) => p.sequences.some((s) => s.kvTier === 'host')).length;
    t.comment(`${JSON.stringify(ps.strategies)}; ${hostSteps} steps with host sequences, ${ps.deferrals} deferrals, ${engine.stats.numMoves} moves, ${ps.unshapedSteps} unshaped`);
    await engine.close();
  });
}

t.test('auto with host KV streamed in decode bursts stays within the staging: bursts that would reach past it are cut', async (t) => {
  const model = new FakeKvModel(CONFIG.blockTokens, CONFIG.numBlocks);
  model.record = true;
  // Room for two or three host sequences' tables (of 4-token blocks) a step.
  model.streamBlocksMax = 14;
  // Rounds of 1 µs: the engine bursts to its bound.
  const executor = { step: async (plan: Parameters<FakeKvModel['step']>[0]) => ({ ...(await model.step(plan)), totalUs: Math.max(1, ...plan.sequences.map((p) => p.decodeSteps ?? 1)) }) };
  const engine = new Engine(executor, CONFIG, { policy: { name: 'auto', cost: fakeCost(40), options: { streamHostKv: true, streamBlocksMax: 14 } }, maxDecodeSteps: 6 });
  const { tokens, reasons } = await serve(engine);
  t.same(reasons, prompts.map(() => 'maxTokens'), 'no step was refused');
  t.same(tokens, prompts.map((p) => expectedContinuation(p, PARAMS.maxTokens)), 'the tokens of correct block handling');
  const streamedPlans = model.plans.filter((p) => streamedBlocks(p, CONFIG.blockTokens) > 0);
  t.ok(streamedPlans.length > 0, `${streamedPlans.length} steps streamed host KV`);
  t.ok(Math.max(...model.plans.map((p) => streamedBlocks(p, CONFIG.blockTokens))) <= 14, 'none beyond the staging');
  const burst = (p: (typeof model.plans)[number]) => p.sequences.some((s) => (s.decodeSteps ?? 1) > 1);
  t.ok(streamedPlans.some(burst), 'streamed sequences decoded in bursts');
  await engine.close();
});

t.test('no policy: the single-device path, plans as before', async (t) => {
  const model = new FakeKvModel(CONFIG.blockTokens, CONFIG.numBlocks);
  model.record = true;
  const engine = new Engine(model, CONFIG);
  t.equal(engine.policy, undefined);
  const decisions: (StepDecision | undefined)[] = [];
  engine.onStep = (_plan, _result, decision) => decisions.push(decision);
  const { tokens } = await serve(engine);
  t.same(tokens, prompts.map((p) => expectedContinuation(p, PARAMS.maxTokens)));
  t.ok(model.plans.every((p) => p.strategy === 'cpu'));
  t.ok(decisions.length > 0 && decisions.every((d) => d === undefined));
  await engine.close();
});

t.test('auto with host KV streamed: host-tier sequences attended on the device finish with the right tokens', async (t) => {
  const model = new FakeKvModel(CONFIG.blockTokens, CONFIG.numBlocks);
  model.record = true;
  // A CPU too slow to hide any host attention, and a link that carries a block in 11 µs.
  const engine = new Engine(model, CONFIG, { policy: { name: 'auto', cost: fakeCost(40), options: { streamHostKv: true } } });
  const { tokens, reasons } = await serve(engine);
  t.same(reasons, prompts.map(() => 'maxTokens'));
  t.same(tokens, prompts.map((p) => expectedContinuation(p, PARAMS.maxTokens)), 'the tokens of correct block handling');
  const streamedSeqs = model.plans.flatMap((p) => p.sequences).filter((s) => s.kvTier === 'host' && s.attention === 'gpu').length;
  t.ok(streamedSeqs > 0, `${streamedSeqs} sequence-steps ran device attention over host KV`);
  t.equal(engine.policy!.stats.streamed, streamedSeqs, 'the policy counts them');
  t.equal(model.plans.filter((p) => p.sequences.some((s) => s.kvTier === 'device' && s.attention === 'cpu')).length, 0, 'device-tier KV is never attended on the CPU');
  await engine.close();
});
