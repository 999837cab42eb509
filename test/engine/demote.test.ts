// Demotion after a device prefill: the Scheduler moves a table it is asked to demote by the
// swap's copies once its prompt is computed; auto and overlap admit a request that way only
// when the predicted gain pays for the copy; served through the engine with the fake
// executor that keeps real KV data, demoted requests produce the tokens they would anywhere.
import t from 'tap';
import { Engine, Scheduler, Sequence, type SequenceParams } from '../../src/engine/index.js';
import type { CostModel } from '../../src/sched/cost-model.js';
import { autoPolicy, overlapPolicy } from '../../src/sched/policies/index.js';
import type { KvView, RequestView } from '../../src/sched/policy.js';
import { flatDeviceCost } from '../sched/fake-cost.js';
import { expectedContinuation, fakePrompt, FakeKvModel, TIERED_CONFIG, tieredPrompts } from './fake-kv-model.js';

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 };
const PARAMS: SequenceParams = { maxTokens: 12, sampling: GREEDY, stopTokens: new Set(), penaltyWindow: 0, returnPromptLogits: false };

/** A fast CPU for decodes whose prefill attention is compute-bound (0.5 µs per query-key pair); a copy of one block costs 10 µs + bytes / 1000. */
const CHEAP_COPY = 1_000;
const DEAR_COPY = 10_000_000_000;
const cost = (blockBytes: number): CostModel => ({ ...flatDeviceCost(0.5, blockBytes), cpuPrefillAttentionUs: (n, c) => n * (c + n / 2) * 0.5 });

const prompt = fakePrompt;

t.test('Scheduler: a demoted table moves to the host tier by copies once its prompt is computed, not before', async (t) => {
  const s = new Scheduler({ contextSize: 32, blockTokens: 4, numBlocks: { device: 16, host: 16 }, maxRunning: 4, maxChunkTokens: 4, maxStepTokens: 8, strategy: 'overlap' });
  s.add(new Sequence(1, prompt(6, 1), PARAMS));
  let plan = s.schedule({ demote: [1] });
  t.equal(plan.sequences[0]!.kvTier, 'device', 'admitted to the device tier');
  s.update(plan, { sequences: [{ seqId: 1, token: -1 }], phaseUs: {}, totalUs: 1 });
  plan = s.schedule({ demote: [1] });
  t.equal(plan.copies.length, 0, 'not moved while its prompt is still being prefilled');
  t.equal(plan.sequences[0]!.kvTier, 'device');
  s.update(plan, { sequences: [{ seqId: 1, token: 9 }], phaseUs: {}, totalUs: 1 });
  const deviceBlocks = [...s.get(1)!.blockTable];
  plan = s.schedule({ demote: [1] });
  t.same(plan.copies.map((c) => [c.fromTier, c.fromBlock, c.toTier]), deviceBlocks.map((b) => ['device', b, 'host']), 'its whole table is copied to the host tier');
  t.equal(plan.sequences[0]!.kvTier, 'host', 'it decodes from the host tier in the same step');
  t.equal(s.counters.numMoves, 1);
  s.update(plan, { sequences: [{ seqId: 1, token: 9 }], phaseUs: {}, totalUs: 1 });
  s.audit();
  plan = s.schedule();
  t.notOk(plan.copies.some((c) => c.toTier === 'host'), 'the Scheduler does not demote unasked');
  t.equal(plan.sequences[0]!.kvTier, 'device', 'with the device free, it is promoted back in the next plan as any host table is');
});

t.test('Scheduler: a host table does not move back into blocks promised to a device prefill under way', async (t) => {
  // 12 device blocks of 4 tokens. Sequence 1 is demoted to the host tier (3 blocks); sequence 2,
  // a 40-token prompt (11 blocks with its first token), prefills on the device 4 tokens a step.
  // Both do not fit: moved back early, sequence 1 would push the prefill out half done.
  const s = new Scheduler({ contextSize: 64, blockTokens: 4, numBlocks: { device: 12, host: 16 }, maxRunning: 4, maxChunkTokens: 4, maxStepTokens: 8, strategy: 'overlap' });
  s.add(new Sequence(1, prompt(8, 1), PARAMS));
  for (let i = 0; i < 2; i++) {
    const plan = s.schedule({ demote: [1] });
    s.update(plan, { sequences: plan.sequences.map((p) => ({ seqId: p.seqId, token: p.startPos + p.tokens.length >= 8 ? 9 : -1 })), phaseUs: {}, totalUs: 1 });
  }
  s.add(new Sequence(2, prompt(40, 2), PARAMS));
  let plan = s.schedule({ demote: [1] });
  t.equal(s.get(1)!.kvTier, 'host', 'sequence 1 is demoted');
  const homes: string[] = [];
  while (s.get(2)!.isPrefilling) {
    s.update(plan, { sequences: plan.sequences.map((p) => ({ seqId: p.seqId, token: p.sample ? 9 : -1 })), phaseUs: {}, totalUs: 1 });
    plan = s.schedule();
    homes.push(`${s.get(1)!.kvTier}/${s.get(2)!.kvTier}`);
    s.audit();
  }
  t.ok(homes.length >= 8 && homes.every((h) => h === 'host/device'), `sequence 1 stays in host RAM and sequence 2 on the device while it prefills (${homes.join(' ')})`);
  t.equal(s.counters.numMoves, 1, 'no table was moved back, nor the prefill out');
});

function waitingReq(seqId: number, promptTokens: number, remainingTokens: number): RequestView {
  return { seqId, tier: undefined, context: 0, newTokens: promptTokens, numBlocks: 0, deferredSteps: 0, arrival: seqId, remainingTokens };
}

t.test('auto and overlap: staged admission only when the gain pays for the copy', async (t) => {
  // 40 device blocks of 16 tokens, 6 free: a 64-token prompt (5 blocks with its next token) fits, but not above the 20% headroom.
  const kv: KvView = { blockTokens: 16, device: { numBlocks: 40, numFree: 6 }, host: { numBlocks: 400, numFree: 400 } };
  const running: RequestView[] = [1, 2, 3].map((id) => ({ seqId: id, tier: 'device', context: 100, newTokens: 1, numBlocks: 7, deferredSteps: 0, arrival: id }));
  const waiting = [waitingReq(10, 64, 200)];
  const options = { deviceHeadroom: 0.2 };
  for (const [name, policy] of [['auto', autoPolicy], ['overlap', overlapPolicy]] as const) {
    const cheap = policy({ running, waiting, kv, cost: cost(CHEAP_COPY), options }).admit;
    t.same(cheap, [{ seqId: 10, tier: 'device', demoteAfterPrefill: true }], `${name}: a cheap copy: prefilled on the device, then demoted`);
    const dear = policy({ running, waiting, kv, cost: cost(DEAR_COPY), options }).admit;
    t.notOk(dear.some((a) => a.demoteAfterPrefill), `${name}: a copy dearer than the gain: no demotion`);
    t.same(dear, [{ seqId: 10, tier: 'host' }], `${name}: it goes to host RAM with a CPU prefill instead`);
  }
  const roomy: KvView = { ...kv, device: { numBlocks: 40, numFree: 30 } };
  t.same(autoPolicy({ running, waiting, kv: roomy, cost: cost(CHEAP_COPY), options }).admit, [{ seqId: 10, tier: 'device' }], 'with room above the headroom it stays on the device');
  const full: KvView = { ...kv, device: { numBlocks: 40, numFree: 3 } };
  t.notOk(autoPolicy({ running, waiting, kv: full, cost: cost(CHEAP_COPY), options }).admit.some((a) => a.demoteAfterPrefill), 'no device room for the prompt: not staged');
  const soon = [waitingReq(10, 64, 1)];
  t.notOk(autoPolicy({ running, waiting: soon, kv, cost: cost(CHEAP_COPY * 10_000), options }).admit.some((a) => a.demoteAfterPrefill), 'auto: one token left does not pay for a 10 ms copy');
});

const CONFIG = TIERED_CONFIG;
const prompts = tieredPrompts();

async function serve(engine: Engine): Promise<number[][]> {
  const tokens: number[][] = prompts.map(() => []);
  await Promise.all(
    prompts.map(
      (p, i) =>
        new Promise<void>((resolve, reject) => {
          engine.submit(p, PARAMS, { onToken: (tok) => tokens[i]!.push(tok), onFinish: () => resolve(), onError: reject });
        }),
    ),
  );
  return tokens;
}

for (const policy of ['auto', 'overlap'] as const) {
  for (const blockBytes of [CHEAP_COPY, DEAR_COPY]) {
    const cheap = blockBytes === CHEAP_COPY;
    t.test(`engine, ${policy}, ${cheap ? 'cheap' : 'dear'} copies: ${cheap ? 'requests prefilled on the device are demoted' : 'nothing is demoted'}, tokens unchanged`, async (t) => {
      const model = new FakeKvModel(CONFIG.blockTokens, CONFIG.numBlocks);
      model.record = true;
      const engine = new Engine(model, CONFIG, { policy: { name: policy, cost: cost(blockBytes), options: { deviceHeadroom: 0.3 } } });
      const tokens = await serve(engine);
      t.same(tokens, prompts.map((p) => expectedContinuation(p, PARAMS.maxTokens)), 'the tokens of correct block handling');
      const stats = engine.policy!.stats;
      // Sequences whose prompt was computed in the device tier and that later decoded from the host tier.
      const prefilledOnDevice = new Set(model.plans.flatMap((p) => p.sequences.filter((s) => s.startPos === 0 && s.kvTier === 'device').map((s) => s.seqId)));
      const demotedCopies = model.plans.filter((p) => p.copies.some((c) => c.fromTier === 'device' && c.toTier === 'host'));
      const hostDecodes = new Set(model.plans.flatMap((p) => p.sequences.filter((s) => s.kvTier === 'host' && prefilledOnDevice.has(s.seqId)).map((s) => s.seqId)));
      t.comment(`${stats.stagedAdmissions} staged, ${stats.demotions} demoted, ${engine.stats.numMoves} moves`);
      if (cheap) {
        t.ok(stats.stagedAdmissions > 0, 'the policy staged some admissions');
        t.ok(stats.demotions > 0, 'and the Scheduler demoted them');
        t.ok(demotedCopies.length > 0, 'by device-to-host copies in the plans');
        t.ok(hostDecodes.size > 0, 'requests prefilled on the device decoded from the host tier');
      } else {
        t.equal(stats.stagedAdmissions, 0, 'no admission staged');
        t.equal(stats.demotions, 0, 'no demotion');
      }
      t.equal(model.plans.filter((p) => p.sequences.some((s) => (s.kvTier === 'host') !== (s.attention === 'cpu'))).length, 0, 'attention runs where the KV is');
      await engine.close();
    });
  }
}
