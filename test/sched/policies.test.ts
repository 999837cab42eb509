// The policies as pure functions, with a fake cost model: which strategy when, which
// requests run on the CPU or sit a step out, where new requests go, what moves between tiers.
import t from 'tap';
import type { CostModel } from '../../src/sched/cost-model.js';
import { autoPolicy, gpuOnlyPolicy, loadAwareSplit, overlapPolicy, pipelinePolicy } from '../../src/sched/policies/index.js';
import { loadAwareLoads } from '../../src/sched/policies/pipeline.js';
import { committedPrompt, growth, promptBlocks, tableBlocks, work, type KvView, type PolicyInput, type RequestView } from '../../src/sched/policy.js';
import { KvBlockManager, type KvOwner } from '../../src/engine/kv-blocks.js';
import { flatDeviceCost } from './fake-cost.js';
import { pipelinePassUs, predictLoads, predictStep } from '../../src/sched/step-time.js';
import { Rng } from '../../src/sched/sim/workload.js';

/** Costs in µs: linear work flat up to 64 rows (memory-bound), attention proportional to the KV read. */
function fakeCost(o: { cpuPerToken?: number; devPerToken?: number; linearUs?: number } = {}): CostModel {
  const lin = o.linearUs ?? 10_000;
  const dev = o.devPerToken ?? 0.1;
  const cpu = o.cpuPerToken ?? 1;
  return {
    shape: { nLayer: 1, qkvBytesPerToken: 0, outBytesPerToken: 0, kvBlockBytes: 1_000_000 },
    linearUs: (n) => (n <= 0 ? 0 : lin + Math.max(0, n - 64) * 50),
    deviceAttentionUs: (r, c) => (r > 0 ? r * (c + 1) * dev : 0),
    prefillAttentionUs: (n, c) => n * (c + n / 2) * dev * 0.01,
    cpuAttentionUs: (r, c) => (r > 0 ? r * (c + 1) * cpu : 0),
    cpuPrefillAttentionUs: (n, c) => n * (c + n / 2) * cpu * 0.01,
    copyUs: (b) => (b > 0 ? 10 + b / 1000 : 0),
  };
}

let nextId = 1;
function req(tier: RequestView['tier'], context: number, o: Partial<RequestView> = {}): RequestView {
  const seqId = o.seqId ?? nextId++;
  return { seqId, tier, context, newTokens: 1, numBlocks: Math.ceil((context + 1) / 16), deferredSteps: 0, arrival: seqId, ...o };
}

function kv(device: [number, number], host: [number, number] = [1000, 1000]): KvView {
  return { blockTokens: 16, device: { numBlocks: device[0], numFree: device[1] }, host: { numBlocks: host[0], numFree: host[1] } };
}

function input(running: RequestView[], cost: CostModel, o: Partial<PolicyInput> = {}): PolicyInput {
  return { running, waiting: [], kv: kv([100, 50]), cost, ...o };
}

t.test('gpu-only: device sequences run on the device; swapped-out ones wait and come back oldest first', async (t) => {
  const d1 = req('device', 100);
  const d2 = req('device', 200);
  const h1 = req('host', 300);
  const h2 = req('host', 300);
  const cost = fakeCost();
  const a = gpuOnlyPolicy(input([d1, d2, h1, h2], cost, { kv: kv([100, 30]) }));
  t.equal(a.strategy, 'gpu-only');
  t.same(a.sequences, [{ seqId: d1.seqId, attention: 'gpu' }, { seqId: d2.seqId, attention: 'gpu' }]);
  t.same(a.deferred, [h1.seqId, h2.seqId], 'host-tier tables are swapped out: they do not run');
  t.same(a.swapIn, [h1.seqId], 'room for one table of 19 blocks: the oldest comes back');
  const w = req(undefined, 0, { newTokens: 50 });
  t.same(gpuOnlyPolicy(input([d1, h1], cost, { kv: kv([100, 10]), waiting: [w] })).admit, [], 'no admission while a swapped-out table cannot return');
  t.same(gpuOnlyPolicy(input([d1], cost, { kv: kv([100, 30]), waiting: [w] })).admit, [{ seqId: w.seqId, tier: 'device' }], 'then new requests go to the device');
  t.same(gpuOnlyPolicy(input([d1], cost, { kv: kv([100, 2]), waiting: [w] })).admit, [], 'never to host RAM');

  // Two device sequences each cross into a new block this step, and the device has one free block.
  const g1 = req('device', 32, { numBlocks: 2 });
  const g2 = req('device', 48, { numBlocks: 3 });
  const out = gpuOnlyPolicy(input([g1, g2], cost, { kv: kv([10, 1]) }));
  t.same(out.swapOut, [{ seqId: g2.seqId, to: 'host' }], 'the newest is swapped out to make room (vLLM)');
  t.same(out.sequences.map((s) => s.seqId), [g1.seqId]);
  const full = gpuOnlyPolicy(input([g1, g2], cost, { kv: kv([10, 1], [10, 0]) }));
  t.same(full.swapOut, [{ seqId: g2.seqId, to: 'recompute' }], 'with host RAM full it is dropped for recompute');
});

t.test('overlap: every sequence runs, host-tier ones on the CPU; host admission while it raises throughput', async (t) => {
  const d = [req('device', 500), req('device', 500)];
  const h = [req('host', 1000), req('host', 2000)];
  const fast = fakeCost({ cpuPerToken: 1 });
  const a = overlapPolicy(input([...d, ...h], fast));
  t.equal(a.strategy, 'overlap');
  t.same(a.deferred, []);
  t.same(a.sequences.map((s) => s.attention), ['gpu', 'gpu', 'cpu', 'cpu']);
  t.equal(a.predicted.time.exposedCpuUs, 3002 - 100.2, 'the CPU overlaps the device\'s own attention (100 µs), not its linear layers');
  const waiting = [req(undefined, 0, { newTokens: 2000 }), req(undefined, 0, { newTokens: 2000 }), req(undefined, 0, { newTokens: 2000 }), req(undefined, 0, { newTokens: 2000 })];
  const adm = overlapPolicy(input([...d, ...h], fast, { kv: kv([100, 0]), waiting })).admit;
  t.same(adm.map((x) => x.tier), ['host', 'host', 'host', 'host'], 'device full: 2 ms of CPU per request buys a token in a 13 ms step, so all go to host RAM');
  const slow = fakeCost({ cpuPerToken: 20 });
  t.same(overlapPolicy(input([...d, ...h], slow, { kv: kv([100, 0]), waiting })).admit, [], 'a CPU already behind takes no more');
  const back = overlapPolicy(input([...d, ...h], fast, { kv: kv([1000, 900]) }));
  t.same(back.swapIn, [h[1]!.seqId], 'with device room the longest host table moves back first');
});

t.test('pipeline: load-aware split, GPU-only when pipelining does not pay, never for prefills or starved sequences', async (t) => {
  const dev = [req('device', 100), req('device', 100)];
  const host = [req('host', 4000), req('host', 3000), req('host', 2000), req('host', 1000)];
  const cost = fakeCost({ cpuPerToken: 2 });
  const split = loadAwareSplit(dev, host, cost);
  const sub = new Map(split.map((s) => [s.seqId, s.subBatch]));
  t.equal(sub.get(dev[0]!.seqId), 0);
  const cpu = [0, 1].map((b) => host.filter((r) => sub.get(r.seqId) === b).reduce((n, r) => n + r.context, 0));
  t.ok(cpu[0]! > 0 && cpu[1]! > 0, `host work is spread over both sub-batches (${cpu.join(' / ')} context tokens)`);
  const balanced = predictStep('pipeline', split.map((s) => ({ tokens: 1, context: [...dev, ...host].find((r) => r.seqId === s.seqId)!.context, attention: s.attention, subBatch: s.subBatch })), cost).stepUs;
  const lopsided = predictStep('pipeline', [...dev, ...host].map((r) => ({ tokens: 1, context: r.context, attention: r.tier === 'device' ? 'gpu' as const : 'cpu' as const, subBatch: r.tier === 'device' ? 0 as const : 1 as const })), cost).stepUs;
  t.ok(balanced < lopsided, `the split predicts a shorter step than all host work in one sub-batch (${balanced.toFixed(0)} < ${lopsided.toFixed(0)} µs)`);

  const p = pipelinePolicy(input([...dev, ...host], cost));
  t.equal(p.strategy, 'pipeline');
  t.same(p.deferred, []);
  const verySlow = fakeCost({ cpuPerToken: 50 });
  const g = pipelinePolicy(input([...dev, ...host], verySlow));
  t.equal(g.strategy, 'gpu-only', 'a CPU this slow makes pipelining lose to the device alone');
  t.same(g.deferred.sort(), host.map((r) => r.seqId).sort(), 'its host sequences wait this step');
  const starved = pipelinePolicy(input([...dev, ...host.slice(0, 3), { ...host[3]!, deferredSteps: 4 }], verySlow));
  t.equal(starved.strategy, 'pipeline', 'a host sequence left out 4 steps forces pipelining');
  const prefill = pipelinePolicy(input([...dev, req('host', 0, { newTokens: 64 })], verySlow));
  t.equal(prefill.strategy, 'pipeline', 'a host prefill chunk never waits');
});

t.test('auto: chooses the strategy and the host subset with the best predicted throughput', async (t) => {
  const dev = [req('device', 500), req('device', 500), req('device', 500), req('device', 500)];
  const host = Array.from({ length: 10 }, () => req('host', 1500));
  const cpuSum = (d: ReturnType<typeof autoPolicy>) => d.sequences.filter((s) => s.attention === 'cpu').length;

  const fast = autoPolicy(input([...dev, ...host], fakeCost({ cpuPerToken: 0.3 })));
  t.equal(fast.strategy, 'overlap', 'a fast CPU hides all host attention behind one device batch');
  t.equal(cpuSum(fast), 10);

  // 1.5 ms of CPU per host sequence: 15 ms in all, more than the 10 ms device batch hides but less than two.
  const mid = autoPolicy(input([...dev, ...host], fakeCost({ cpuPerToken: 1 })));
  t.equal(mid.strategy, 'pipeline', 'CPU work between one and two device batches: pipelining wins');
  t.equal(cpuSum(mid), 10);

  const slow = autoPolicy(input([...dev, ...host], fakeCost({ cpuPerToken: 40 })));
  t.equal(slow.strategy, 'gpu-only', 'a very slow CPU: the device runs alone');
  t.equal(slow.deferred.length, 10);
  t.ok(slow.candidates.some((c) => c.strategy === 'overlap') && slow.candidates.some((c) => c.strategy === 'pipeline'), 'all three were weighed');

  // One device sequence, 6 ms of CPU per host sequence: two sub-batches hide one each; the best step takes four.
  const some = autoPolicy(input([dev[0]!, ...host], fakeCost({ cpuPerToken: 4 })));
  t.equal(some.strategy, 'pipeline');
  t.ok(cpuSum(some) > 0 && cpuSum(some) < 10, `a middling CPU takes part of the host sequences (${cpuSum(some)} of 10)`);

  const sloUs = 14_000;
  const capped = autoPolicy(input([...dev, ...host], fakeCost({ cpuPerToken: 1 }), { options: { tpotSloUs: sloUs } }));
  t.ok(capped.predicted.stepUs <= sloUs, `a TPOT target of 14 ms caps the step (${capped.predicted.stepUs.toFixed(0)} µs) by leaving host sequences out`);
  t.ok(cpuSum(capped) < 10);

  // Left out 4 steps, a long host sequence joins ahead of the cheap ones when some host sequences run.
  const long = req('host', 2500, { deferredSteps: 4 });
  const first = autoPolicy(input([dev[0]!, ...host.slice(1), long], fakeCost({ cpuPerToken: 4 })));
  t.ok(first.sequences.some((s) => s.seqId === long.seqId), 'a host sequence left out 4 steps joins first');
  const waitAtSlo = autoPolicy(input([dev[0]!, ...host.slice(1), { ...long, deferredSteps: 1 }], fakeCost({ cpuPerToken: 4 }), { options: { tpotSloUs: 25_000 } }));
  t.ok(waitAtSlo.sequences.some((s) => s.seqId === long.seqId), 'and so does one whose next wait would push its token gap past the target');
  const slowStarved = autoPolicy(input([...dev, ...host.slice(1), long], fakeCost({ cpuPerToken: 40 })));
  t.notOk(slowStarved.sequences.some((s) => s.seqId === long.seqId), 'but when running it would make the step slower than the device alone, it waits as under gpu-only');
});

t.test('auto: new requests go to host RAM only when that raises predicted throughput', async (t) => {
  const dev = [req('device', 500), req('device', 500)];
  const waiting = [req(undefined, 0, { newTokens: 1000 }), req(undefined, 0, { newTokens: 1000 })];
  const full = kv([100, 0]);
  const fast = autoPolicy(input(dev, fakeCost({ cpuPerToken: 0.3 }), { kv: full, waiting }));
  t.same(fast.admit.map((a) => a.tier), ['host', 'host'], 'a fast CPU: the device being full, both go to host RAM');
  const slow = autoPolicy(input(dev, fakeCost({ cpuPerToken: 40 }), { kv: full, waiting }));
  t.same(slow.admit, [], 'a slow CPU: they wait for device room');
  const roomy = autoPolicy(input(dev, fakeCost({ cpuPerToken: 40 }), { kv: kv([1000, 900]), waiting }));
  t.same(roomy.admit.map((a) => a.tier), ['device', 'device'], 'device room goes first');
});

/** Up to 12 device and 20 host requests at random contexts, and a random fake cost; undefined when no request is on the device. */
/** 200 random situations (some draws give none) on a 32-layer shape whose link moves blocks of up to `maxBlockBytes`. */
function forStreamingSituations(seed: number, maxBlockBytes: number, visit: (running: RequestView[], cost: CostModel, rng: Rng, i: number) => void): void {
  const rng = new Rng(seed);
  for (let i = 0; i < 200; i++) {
    const situation = randomSituation(rng);
    if (!situation) continue;
    const { running, cost: base } = situation;
    visit(running, { ...base, shape: { ...base.shape, nLayer: 32, kvBlockBytes: Math.round(1000 + maxBlockBytes * rng.next()), kvBlockTokens: 16 } }, rng, i);
  }
}

function randomSituation(rng: Rng): { running: RequestView[]; cost: CostModel } | undefined {
  const running = [
    ...Array.from({ length: rng.int(0, 12) }, () => req('device', rng.int(1, 3000))),
    ...Array.from({ length: rng.int(0, 20) }, () => req('host', rng.int(1, 3000), { deferredSteps: rng.int(0, 2) })),
  ];
  if (!running.some((r) => r.tier === 'device')) return undefined;
  return { running, cost: fakeCost({ cpuPerToken: 0.1 + 10 * rng.next(), devPerToken: 0.05 + 0.5 * rng.next(), linearUs: 2000 + 20000 * rng.next() }) };
}

t.test('auto is never predicted slower than gpu-only (200 random situations)', async (t) => {
  const rng = new Rng(42);
  let worse = 0;
  for (let i = 0; i < 200; i++) {
    const situation = randomSituation(rng);
    if (!situation) continue;
    const { running, cost } = situation;
    const a = autoPolicy(input(running, cost, { options: { maxDeferSteps: 1000 } }));
    const g = a.candidates.find((c) => c.strategy === 'gpu-only')!;
    if (a.predicted.tokensPerSecond < g.tokensPerSecond - 1e-9) worse++;
  }
  t.equal(worse, 0, 'the chosen step\'s predicted tokens/s is at least gpu-only\'s');
});

t.test('auto weighs the learned strategy factors and sampling: never predicted below any fixed policy', async (t) => {
  const rng = new Rng(7);
  let below = 0;
  let unpriced = 0;
  const picks = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const running = [
      ...Array.from({ length: rng.int(1, 12) }, () => req('device', rng.int(1, 3000))),
      ...Array.from({ length: rng.int(1, 20) }, () => req('host', rng.int(1, 3000))),
    ];
    const base = fakeCost({ cpuPerToken: 0.1 + 3 * rng.next(), devPerToken: 0.05 + 0.5 * rng.next(), linearUs: 2000 + 20000 * rng.next() });
    const factors: Record<string, number> = { 'gpu-only': 0.8 + rng.next(), overlap: 0.8 + rng.next(), pipeline: 0.8 + rng.next() };
    const perSeq = 500 * rng.next();
    const cost: CostModel = { ...base, samplingUs: (n) => n * perSeq, strategyFactor: (s) => factors[s] ?? 1 };
    const a = autoPolicy(input(running, cost, { options: { maxDeferSteps: 1000 } }));
    picks.set(a.strategy, (picks.get(a.strategy) ?? 0) + 1);
    for (const fixed of [gpuOnlyPolicy, overlapPolicy, pipelinePolicy]) {
      const d = fixed(input(running, cost, { options: { maxDeferSteps: 1000 } }));
      if (a.predicted.tokensPerSecond < d.predicted.tokensPerSecond * (1 - 1e-9)) below++;
    }
    if (Math.abs(a.predicted.time.samplingUs - a.sequences.length * perSeq) > 1e-6 || a.predicted.time.factor !== factors[a.strategy]) unpriced++;
  }
  t.equal(unpriced, 0, 'each chosen step carries every sequence\'s sampling and its strategy\'s factor');
  t.equal(below, 0, 'auto\'s chosen step is predicted at least as fast as each fixed policy\'s');
  t.ok(picks.size === 3, `every strategy wins somewhere: ${JSON.stringify(Object.fromEntries(picks))}`);
});

t.test('a strategy measured slower than its tables loses auto\'s choice', async (t) => {
  const running = [...Array.from({ length: 8 }, () => req('device', 500)), ...Array.from({ length: 6 }, () => req('host', 500))];
  const base = fakeCost({ cpuPerToken: 0.5, linearUs: 10_000 });
  const first = autoPolicy(input(running, base));
  t.not(first.strategy, 'gpu-only', `the tables alone run the host sequences (${first.strategy})`);
  const slower: CostModel = { ...base, strategyFactor: (s) => (s === first.strategy ? 3 : 1) };
  const second = autoPolicy(input(running, slower));
  t.not(second.strategy, first.strategy, `three times slower than predicted, ${first.strategy} gives way to ${second.strategy}`);
  const allSlow: CostModel = { ...base, strategyFactor: (s) => (s === 'gpu-only' ? 1 : 3) };
  const third = autoPolicy(input(running, allSlow));
  t.equal(third.strategy, 'gpu-only', 'with both hybrids that slow, the host sequences wait');
  t.equal(third.deferred.length, 6);
});

t.test('auto sends a new request to host RAM only if it pays for its CPU prefill and beats the device alone', async (t) => {
  const dev = Array.from({ length: 8 }, () => req('device', 500));
  const full = kv([100, 0]);
  const waiting = (o: Partial<RequestView> = {}) => [req(undefined, 0, { newTokens: 512, numBlocks: 0, ...o })];
  // CPU decode attention is cheap and hidden; the CPU prefill of a 512-token prompt is not (1 s).
  const cost: CostModel = { ...fakeCost({ cpuPerToken: 0.5 }), cpuPrefillAttentionUs: (n) => (n > 0 ? 1e6 : 0) };
  const admitted = (o: Partial<RequestView>) => autoPolicy(input(dev, cost, { waiting: waiting(o), kv: full })).admit;
  t.same(admitted({ remainingTokens: 128 }).map((a) => a.tier), [], '128 tokens to go do not repay a 1 s CPU prefill');
  t.same(admitted({ remainingTokens: 100_000 }).map((a) => a.tier), ['host'], '100k tokens do');
  t.same(admitted({}).map((a) => a.tier), ['host'], 'with its length unknown, the step rate alone decides');
  // Four long host sequences already make the step slower per token than the device alone: one more short one
  // would raise that step's rate, but auto would defer them all, so it waits instead.
  const host = Array.from({ length: 4 }, () => req('host', 3000));
  const slowCpu = fakeCost({ cpuPerToken: 1 });
  const running = [...dev, ...host];
  t.same(autoPolicy(input(running, slowCpu, { waiting: waiting(), kv: full })).admit, [], 'auto: not to host');
  t.same(overlapPolicy(input(running, slowCpu, { waiting: waiting(), kv: full })).admit.map((a) => a.tier), ['host'], 'overlap (the marginal rule alone) would');
});

t.test('the load-aware split prices its sub-batches as predictStep does the split it returns (200 random situations)', async (t) => {
  const rng = new Rng(17);
  const cost = flatDeviceCost(0.05, 1 << 16);
  let checked = 0;
  for (let i = 0; i < 200; i++) {
    const req = (seqId: number, tier: 'device' | 'host'): RequestView => ({
      seqId, tier, context: 1 + Math.floor(rng.next() * 3000), newTokens: rng.next() < 0.1 ? 1 + Math.floor(rng.next() * 300) : 1,
      numBlocks: 1, deferredSteps: 0, arrival: seqId,
    });
    const dev = Array.from({ length: Math.floor(rng.next() * 12) }, (_, k) => req(k, 'device'));
    const host = Array.from({ length: Math.floor(rng.next() * 20) }, (_, k) => req(100 + k, 'host'));
    const byId = new Map([...dev, ...host].map((r) => [r.seqId, r]));
    const { split, b0, b1 } = loadAwareLoads(dev, host, cost);
    const viaSeqs = predictStep('pipeline', split.map((s) => work(byId.get(s.seqId)!, s.attention, s.subBatch)), cost).stepUs;
    if (predictLoads('pipeline', b0, b1, cost).stepUs !== viaSeqs) t.fail(`situation ${i}: ${predictLoads('pipeline', b0, b1, cost).stepUs} != ${viaSeqs}`);
    if (Math.abs(pipelinePassUs(b0, b1, cost) - predictLoads('pipeline', b0, b1, cost).passUs) > 1e-9) t.fail(`situation ${i}: pass times differ`);
    checked++;
  }
  t.equal(checked, 200);
});

t.test('auto admits no new request to host RAM while host decodes sit the step out', async (t) => {
  const cost = fakeCost({ cpuPerToken: 0.3 });
  const dev = [req('device', 500), req('device', 500)];
  const host = [req('host', 200), req('host', 200)];
  const waiting = [req(undefined, 0, { newTokens: 100, remainingTokens: 500 })];
  const all = autoPolicy(input([...dev, ...host], cost, { kv: kv([100, 0]), waiting }));
  t.equal(all.deferred.length, 0, 'control: every host decode runs');
  t.same(all.admit.map((a) => a.tier), ['host'], 'control: the new request goes to host RAM');
  // A host decode over a context so long that its CPU attention would slow the step: it waits.
  const long = req('host', 60_000);
  const some = autoPolicy(input([...dev, ...host, long], cost, { kv: kv([100, 0]), waiting }));
  t.ok(some.deferred.includes(long.seqId), 'the long host decode sits out');
  t.same(some.admit, [], 'and the new request waits for the device');
});

t.test('auto prices a host admission on the decode steps to come, not on a step of long prefill chunks', async (t) => {
  const waiting = [req(undefined, 0, { newTokens: 1536, remainingTokens: 64 })];
  // Ten device sequences in the middle of their prompts: a host decode would join their long step almost for free,
  // but once they decode, its CPU attention (at a 1536-token context, 2 µs a token) outlasts the device's.
  const prefilling = Array.from({ length: 10 }, () => req('device', 1000, { newTokens: 256 }));
  const d = autoPolicy(input(prefilling, fakeCost({ cpuPerToken: 2 }), { kv: kv([1000, 0]), waiting }));
  t.same(d.admit, [], 'a slowish CPU: it waits for device room');
  const decoding = Array.from({ length: 10 }, () => req('device', 1256));
  const fast = autoPolicy(input(decoding, fakeCost({ cpuPerToken: 0.5 }), { kv: kv([1000, 0]), waiting }));
  t.same(fast.admit.map((a) => a.tier), ['host'], 'control: a CPU fast enough to hide its attention takes it in host RAM');
});

t.test('the rest of a running prefill\'s prompt is promised: no admission or move back takes those blocks', async (t) => {
  const cost = fakeCost();
  // A device prefill of a 1600-token prompt has computed 256 tokens (17 blocks held, 32 once
  // this step's chunk is in): 69 more blocks are promised to it. The device has 100 free blocks
  // of 200: a 640-token request (41 blocks) fits what is free, not what is free and unpromised.
  const prefilling = req('device', 256, { newTokens: 256, numBlocks: 17, pendingTokens: 1344 });
  t.equal(committedPrompt([prefilling], 'device', kv([100, 50])), Math.ceil(1601 / 16) - 32, 'promised: the blocks of its whole prompt and first token, less those this step grows to');
  t.equal(committedPrompt([req('device', 100)], 'device', kv([100, 50])), 0, 'a decode has nothing promised');
  t.equal(committedPrompt([{ ...prefilling, pendingTokens: undefined }], 'device', kv([100, 50])), 0, 'nor a request whose pending prompt is not known');
  const w = req(undefined, 0, { newTokens: 640 });
  const roomy = kv([200, 100]);
  t.same(gpuOnlyPolicy(input([{ ...prefilling, pendingTokens: undefined }], cost, { kv: roomy, waiting: [w] })).admit.map((a) => a.tier), ['device'], 'control: counting the promised blocks as free, it is admitted');
  for (const [name, policy] of [['gpu-only', gpuOnlyPolicy], ['pipeline', pipelinePolicy], ['overlap', overlapPolicy], ['auto', autoPolicy]] as const) {
    const a = policy(input([prefilling], cost, { kv: roomy, waiting: [w] })).admit;
    t.notOk(a.some((x) => x.tier === 'device' && !x.demoteAfterPrefill), `${name}: it does not go to the device beside the prefill`);
  }
  // A host table of 45 blocks fits the free blocks, not once the prefill's 69 promised ones are kept.
  const back = req('host', 700, { numBlocks: 45 });
  t.same(overlapPolicy(input([{ ...prefilling, pendingTokens: undefined }, back], cost, { kv: roomy })).swapIn, [back.seqId], 'control: it would come back');
  t.same(overlapPolicy(input([prefilling, back], cost, { kv: roomy })).swapIn, [], 'it stays in host RAM until the prefill has its blocks');
  t.same(gpuOnlyPolicy(input([prefilling, back], cost, { kv: roomy })).swapIn, [], 'gpu-only: the swapped-out table waits too');
});

t.test('with sliding layers apart, the policies count both tables as the engine holds them', async (t) => {
  const window = 128;
  const chunk = 512;
  const sliding: KvView = { ...kv([10_000, 10_000]), slidingWindow: window, maxChunkTokens: chunk };
  // A decode at position 4096: 257 full blocks, and the sliding blocks from the window's first (248) on.
  t.equal(tableBlocks(sliding, 4096, 4097), 257 + 9);
  t.equal(tableBlocks(kv([1, 1]), 4096, 4097), 257, 'one table: the full blocks only');

  // Against KvBlockManager: a 3000-token prompt in chunks, then 300 decodes. Before each step the
  // policy's growth must be what the pool gives up, and no prompt chunk may hold more than promptBlocks.
  const manager = new KvBlockManager(16, { device: 10_000, host: 0 }, false, window);
  const tokens = Array.from({ length: 3300 }, (_, i) => i);
  const owner: KvOwner = { blockTable: [], slidingTable: [], numComputed: 0, kvTier: undefined, numIndexed: 0, blockHashes: [], tokens };
  const computed = (n: number) => Object.assign(owner, { numComputed: n });
  manager.place(owner, 'device', [], chunk);
  let peak = manager.numHeld(owner);
  const mismatches: string[] = [];
  for (let pos = 0; pos < 3300; ) {
    const n = pos < 3000 ? Math.min(chunk, 3000 - pos) : 1;
    const view: RequestView = { seqId: 1, tier: 'device', context: pos, newTokens: n, numBlocks: manager.numHeld(owner), deferredSteps: 0, arrival: 1 };
    const predicted = growth([view], 'device', sliding);
    const free = manager.pools.device.numFree;
    if (!manager.grow(owner, pos + n)) throw new Error('pool too small');
    // A step may free more sliding blocks than it takes; growth reserves nothing then.
    const used = Math.max(0, free - manager.pools.device.numFree);
    if (predicted !== used) mismatches.push(`at ${pos}+${n}: predicted ${predicted}, pool gave ${used}`);
    if (pos < 3000) peak = Math.max(peak, manager.numHeld(owner));
    pos += n;
    computed(pos);
  }
  t.same(mismatches, [], 'growth matches the pool at every chunk and decode');
  const bound = promptBlocks(sliding, 0, 3000);
  t.ok(peak <= bound, `the prompt's peak (${peak}) is within promptBlocks (${bound})`);
  t.ok(bound < 2 * Math.ceil(3001 / 16), 'and well under two whole tables');

  // Admission: a 3000-token prompt needs its full table and a window and chunk of sliding blocks.
  const w = req(undefined, 0, { newTokens: 3000 });
  const room = (free: number): KvView => ({ ...sliding, device: { numBlocks: 1000, numFree: free + 20 } });
  t.same(gpuOnlyPolicy(input([], fakeCost(), { kv: room(bound), waiting: [w] })).admit, [{ seqId: w.seqId, tier: 'device' }], 'admitted when both tables fit');
  t.same(gpuOnlyPolicy(input([], fakeCost(), { kv: room(bound - 1), waiting: [w] })).admit, [], 'held back a block short');
  t.same(gpuOnlyPolicy(input([], fakeCost(), { kv: { ...room(bound - 1), slidingWindow: 0 }, waiting: [w] })).admit, [{ seqId: w.seqId, tier: 'device' }], 'control: one table would fit');
});

t.test('auto with host KV streamed: the host decodes the CPU cannot hide run with device attention, as many as the link carries beside the pass', async (t) => {
  const dev = [req('device', 500), req('device', 500), req('device', 500), req('device', 500)];
  const host = Array.from({ length: 10 }, () => req('host', 1500));
  // 32 layers, a link at 1 byte/ns and a 40 µs/token CPU: CPU attention never pays.
  const linkCost = (kvBlockBytes: number): CostModel => ({ ...fakeCost({ cpuPerToken: 40 }), shape: { nLayer: 32, qkvBytesPerToken: 0, outBytesPerToken: 0, kvBlockBytes, kvBlockTokens: 16 } });
  const streamed = (d: ReturnType<typeof autoPolicy>) => d.sequences.filter((s) => host.some((h) => h.seqId === s.seqId) && s.attention === 'gpu').length;

  const off = autoPolicy(input([...dev, ...host], linkCost(10_000)));
  t.equal(off.deferred.length, 10, 'without streamHostKv the host decodes wait, as before');

  // 94 blocks of 10 kB a sequence: 0.95 ms of link each, ten beside a 10.2 ms pass.
  const fast = autoPolicy(input([...dev, ...host], linkCost(10_000), { options: { streamHostKv: true } }));
  t.equal(fast.strategy, 'gpu-only', 'every attention on the device');
  t.equal(streamed(fast), 10, 'all ten host decodes streamed');
  t.ok(fast.predicted.time.streamUs > 0 && fast.predicted.time.streamUs < fast.predicted.time.passUs, `the link (${fast.predicted.time.streamUs.toFixed(0)} µs) hides beside the pass (${fast.predicted.time.passUs.toFixed(0)} µs)`);
  t.ok(fast.predicted.tokensPerSecond > off.predicted.tokensPerSecond, 'and the step yields more tokens/s than the device alone');

  // 100 kB blocks: 9.4 ms of link a sequence, so one hides beside the pass and two would not.
  const slow = autoPolicy(input([...dev, ...host], linkCost(100_000), { options: { streamHostKv: true } }));
  t.equal(streamed(slow), 1, 'a slower link streams only what it carries within the pass');
  t.equal(slow.deferred.length, 9);

  // Half the layers sliding over 128 positions, in blocks of their own: those send 9 of a sequence's 94 blocks.
  const slidingShape = (kvBlockBytes: number): CostModel => ({ ...linkCost(kvBlockBytes), shape: { ...linkCost(kvBlockBytes).shape, slidingKv: { layers: 16, window: 128 } } });
  t.equal(work(host[0]!, 'gpu', undefined, slidingShape(100_000).shape).streamedBlocks, (94 * 16 + 9 * 16) / 32, 'a streamed sequence sends the full layers all its blocks, the sliding ones their window\'s');
  const halved = autoPolicy(input([...dev, ...host], slidingShape(100_000), { options: { streamHostKv: true } }));
  t.ok(streamed(halved) > streamed(slow), `so the same link streams more of them (${streamed(halved)} against ${streamed(slow)})`);

  // A fast CPU still takes host attention where it hides.
  const cpu = autoPolicy(input([...dev, ...host], { ...linkCost(10_000), cpuAttentionUs: (r, c) => (r > 0 ? r * (c + 1) * 0.01 : 0) }, { options: { streamHostKv: true } }));
  t.equal(cpu.sequences.filter((s) => s.attention === 'cpu').length, 10, 'a CPU that hides every host attention keeps them');
});

t.test('auto streams no more host KV blocks in a step than the executor\'s staging holds (streamBlocksMax)', async (t) => {
  const dev = [req('device', 500), req('device', 500), req('device', 500), req('device', 500)];
  const host = Array.from({ length: 10 }, () => req('host', 1500));
  const cost: CostModel = { ...fakeCost({ cpuPerToken: 40 }), shape: { nLayer: 32, qkvBytesPerToken: 0, outBytesPerToken: 0, kvBlockBytes: 10_000, kvBlockTokens: 16 } };
  const streamedBlocks = (d: ReturnType<typeof autoPolicy>, running: readonly RequestView[]) =>
    d.sequences.reduce((n, s) => n + (work(running.find((r) => r.seqId === s.seqId)!, s.attention).streamedBlocks ?? 0), 0);
  // Each host decode streams 94 blocks; unbounded, all ten are streamed (the test above).
  const capped = autoPolicy(input([...dev, ...host], cost, { options: { streamHostKv: true, streamBlocksMax: 300 } }));
  t.equal(streamedBlocks(capped, [...dev, ...host]), 282, 'three sequences fill 300 blocks of staging as far as they can');
  t.equal(capped.deferred.length, 7);
  const none = autoPolicy(input([...dev, ...host], cost, { options: { streamHostKv: true, streamBlocksMax: 93 } }));
  t.equal(streamedBlocks(none, [...dev, ...host]), 0, 'a staging smaller than one sequence streams none');
  // A host prompt of 512 tokens streams 32 blocks when prefilled on the device.
  const prompt = req('host', 0, { newTokens: 512 });
  const attentionOf = (d: ReturnType<typeof autoPolicy>) => d.sequences.find((s) => s.seqId === prompt.seqId)?.attention;
  t.equal(attentionOf(autoPolicy(input([...dev, prompt], cost, { options: { streamHostKv: true, streamBlocksMax: 32 } }))), 'gpu', 'a prompt that fits is prefilled on the device');
  t.equal(attentionOf(autoPolicy(input([...dev, prompt], cost, { options: { streamHostKv: true, streamBlocksMax: 31 } }))), 'cpu', 'one that does not goes to the CPU');

  const over: string[] = [];
  let bound = 0;
  forStreamingSituations(11, 20_000, (running, c, rng, i) => {
    const cap = Math.floor(200 * rng.next());
    const free = streamedBlocks(autoPolicy(input(running, c, { options: { streamHostKv: true, maxDeferSteps: 1000 } })), running);
    const got = streamedBlocks(autoPolicy(input(running, c, { options: { streamHostKv: true, maxDeferSteps: 1000, streamBlocksMax: cap } })), running);
    if (got > cap) over.push(`situation ${i}: ${got} blocks streamed, staging ${cap}`);
    if (free > cap) bound++;
  });
  t.same(over, [], 'never beyond the staging in 200 random situations');
  t.ok(bound > 20, `where the staging binds (${bound} of them)`);
});

t.test('auto with host KV streamed is never predicted slower than without (200 random situations)', async (t) => {
  let worse = 0;
  let streamedAny = 0;
  forStreamingSituations(7, 200_000, (running, cost) => {
    const options = { maxDeferSteps: 1000 };
    const without = autoPolicy(input(running, cost, { options }));
    const withStream = autoPolicy(input(running, cost, { options: { ...options, streamHostKv: true } }));
    if (withStream.predicted.tokensPerSecond < without.predicted.tokensPerSecond - 1e-9) worse++;
    if (withStream.sequences.some((s) => s.attention === 'gpu' && running.find((r) => r.seqId === s.seqId)!.tier === 'host')) streamedAny++;
  });
  t.equal(worse, 0, 'the streamed choices only add candidates');
  t.ok(streamedAny > 10, `and some are taken (${streamedAny} of the situations)`);
});

t.test('a streamed sequence is a device decode whose blocks cross the link: the pass lasts at least the copy and one layer', async (t) => {
  const cost: CostModel = { ...fakeCost(), shape: { nLayer: 4, qkvBytesPerToken: 0, outBytesPerToken: 0, kvBlockBytes: 100_000, kvBlockTokens: 16 } };
  const plain = predictStep('gpu-only', [{ tokens: 1, context: 500, attention: 'gpu' }], cost);
  t.equal(plain.streamUs, 0);
  const hidden = predictStep('gpu-only', [{ tokens: 1, context: 500, attention: 'gpu' }, { tokens: 1, context: 159, attention: 'gpu', streamedBlocks: 10 }], cost);
  t.equal(hidden.streamUs, cost.copyUs(10 * 100_000));
  t.equal(hidden.passUs, predictStep('gpu-only', [{ tokens: 1, context: 500, attention: 'gpu' }, { tokens: 1, context: 159, attention: 'gpu' }], cost).passUs, 'a copy shorter than the pass costs only its device attention');
  const long = predictStep('gpu-only', [{ tokens: 1, context: 500, attention: 'gpu' }, { tokens: 1, context: 1599, attention: 'gpu', streamedBlocks: 100 }], cost);
  const pass = predictStep('gpu-only', [{ tokens: 1, context: 500, attention: 'gpu' }, { tokens: 1, context: 1599, attention: 'gpu' }], cost).passUs;
  t.equal(long.passUs, long.streamUs + pass / 4, 'a longer copy sets the pass: the copy, then the last layer');
  t.same(work(req('host', 40), 'gpu', undefined, { nLayer: 32, kvBlockTokens: 16 }).streamedBlocks, 3, 'a host request with device attention streams the blocks of its positions and the new one');
  t.equal(work(req('device', 40), 'gpu').streamedBlocks, undefined, 'a device-tier one streams nothing');
  t.equal(work(req('host', 40), 'cpu').streamedBlocks, undefined);
});

t.test('auto with host KV streamed prefills a host-tier prompt on the device where the CPU prefill is slower', async (t) => {
  const dev = [req('device', 500), req('device', 500)];
  const prompt = req('host', 0, { newTokens: 512 });
  const cost = (cpuPerToken: number): CostModel => ({ ...fakeCost({ cpuPerToken }), shape: { nLayer: 32, qkvBytesPerToken: 0, outBytesPerToken: 0, kvBlockBytes: 10_000, kvBlockTokens: 16 } });
  const attentionOf = (d: ReturnType<typeof autoPolicy>) => d.sequences.find((s) => s.seqId === prompt.seqId)?.attention;
  t.equal(attentionOf(autoPolicy(input([...dev, prompt], cost(40)))), 'cpu', 'without streaming a host prompt is prefilled on the CPU');
  const slowCpu = autoPolicy(input([...dev, prompt], cost(40), { options: { streamHostKv: true } }));
  t.equal(attentionOf(slowCpu), 'gpu', 'with it, on the device, its KV stored into host RAM');
  t.equal(slowCpu.strategy, 'gpu-only');
  t.ok(slowCpu.predicted.time.streamUs > 0, 'its blocks are priced on the link');
  const fastCpu = autoPolicy(input([...dev, prompt], { ...cost(40), cpuPrefillAttentionUs: () => 1 }, { options: { streamHostKv: true } }));
  t.equal(attentionOf(fastCpu), 'cpu', 'a CPU prefill hidden behind the device keeps the CPU');
});
