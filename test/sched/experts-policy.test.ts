// Expert placement, the per-expert choice and prefetch, and the static baselines, driven by
// fake cost models with round numbers (no GPU, no addon).
import t from 'tap';
import { crossoverFormula, crossoverTokens, expertBytes, type ExpertCostModel, type MoeShape } from '../../src/sched/experts/cost.js';
import { ExpertCache, ExpertScoring } from '../../src/sched/experts/cache.js';
import { chooseLayer, placeExperts, planPrefetch, type RoutedExpert } from '../../src/sched/experts/plan.js';
import { ExpertPolicyName, makeExpertPolicy, prefetchTarget } from '../../src/sched/experts/policies.js';

/** Compute-bound CPU at `cpuFlops`, free GPU, a link of `linkBandwidth` bytes/s, no latency: n* is the closed form exactly. */
function fakeCost(o: { params?: number; bits?: number; cpuFlops?: number; linkBandwidth?: number; gpuPerTokenUs?: number; dense?: number } = {}): ExpertCostModel {
  const params = o.params ?? 1000;
  const bytes = (params * (o.bits ?? 4)) / 8;
  const cpuFlops = o.cpuFlops ?? 1e9;
  const link = o.linkBandwidth ?? 1e8;
  return {
    expertBytes: bytes,
    activationBytesPerToken: 0,
    gpuExpertUs: (n) => n * (o.gpuPerTokenUs ?? 0),
    cpuExpertUs: (n) => (n * 2 * params * 1e6) / cpuFlops,
    copyUs: (b) => (b * 1e6) / link,
    denseLayerUs: () => o.dense ?? 0,
  };
}

const routed = (tokens: number[]): RoutedExpert[] => tokens.map((n, expert) => ({ expert, tokens: n, probability: n / 2 }));

t.test('crossover n* matches (bits/8)·F_cpu/(2·B_link) and the choice respects it', async (t) => {
  for (const [bits, cpuFlops, link] of [[4, 1e9, 1e8], [8, 3e9, 2e8], [4.5, 4e11, 1.1e10], [16, 1e9, 1e8]] as const) {
    const cost = fakeCost({ bits, cpuFlops, linkBandwidth: link });
    const formula = crossoverFormula(bits, cpuFlops, link);
    const n = crossoverTokens(cost);
    t.equal(n, Math.floor(formula) + 1, `bits ${bits}: n* ${n} for formula ${formula}`);
    const below = chooseLayer({ routed: routed([n - 1]), resident: () => false, cost, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0 });
    const above = chooseLayer({ routed: routed([n]), resident: () => false, cost, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0 });
    if (n > 1) t.equal(below.assignments[0]!.site, 'cpu', `${n - 1} tokens stay on the CPU`);
    t.equal(above.assignments[0]!.site, 'copy-gpu', `${n} tokens are copied`);
  }
  t.equal(crossoverTokens({ ...fakeCost(), cpuExpertUs: () => 0 }), Infinity, 'a free CPU never copies');
});

t.test('heaviest experts go to the GPU, lightest to the CPU, and the split beats either side alone', async (t) => {
  const cost = fakeCost({ gpuPerTokenUs: 0.1 });
  const tokens = [1, 40, 2, 25, 1, 3, 30, 2];
  const c = chooseLayer({ routed: routed(tokens), resident: () => false, cost, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0 });
  const gpu = c.assignments.filter((a) => a.site === 'copy-gpu').map((a) => a.tokens);
  const cpu = c.assignments.filter((a) => a.site === 'cpu').map((a) => a.tokens);
  t.ok(gpu.length > 0 && cpu.length > 0, `both sides used: gpu ${gpu}, cpu ${cpu}`);
  t.ok(Math.min(...gpu) >= Math.max(...cpu), 'every GPU expert is at least as heavy as every CPU expert');
  const allCpu = chooseLayer({ routed: routed(tokens), resident: () => false, cost, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0, allowCopy: false });
  const allGpu = chooseLayer({ routed: routed(tokens), resident: () => false, cost, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0, allowCpu: false });
  t.ok(c.layerEndUs <= allCpu.layerEndUs && c.layerEndUs <= allGpu.layerEndUs, `makespan ${c.layerEndUs} vs all-CPU ${allCpu.layerEndUs} and all-copy ${allGpu.layerEndUs}`);
  t.equal(c.assignments.length, tokens.length, 'every active expert is assigned (none skipped)');
  const copies = c.assignments.filter((a) => a.site === 'copy-gpu').length;
  t.equal(c.bytesMoved, copies * cost.expertBytes, 'bytes moved are the copied slabs');
});

t.test('a CPU call cost is paid once per layer: the first CPU expert carries it, later ones do not', async (t) => {
  // A copy takes 100 µs; a one-token CPU expert 10. With a 250 µs call, copying wins for the
  // first two experts (done at 100 and 200, against 260), then the call is worth paying once.
  const base = { ...fakeCost(), cpuExpertUs: (n: number) => 10 * n, copyUs: (b: number) => (b > 0 ? 100 : 0) };
  const called: ExpertCostModel = { ...base, cpuCallUs: 250 };
  const c = chooseLayer({ routed: routed([1, 1, 1, 1, 1]), resident: () => false, cost: called, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0 });
  t.same(c.assignments.map((a) => a.site), ['copy-gpu', 'copy-gpu', 'cpu', 'cpu', 'cpu'], 'two copies, then the CPU');
  t.same(c.assignments.filter((a) => a.site === 'cpu').map((a) => a.finishUs), [260, 270, 280], 'the call is paid by the first CPU expert alone');
  const free = chooseLayer({ routed: routed([1, 1, 1, 1, 1]), resident: () => false, cost: base, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0 });
  t.ok(free.assignments.every((a) => a.site === 'cpu'), 'without it every expert stays on the CPU');
  t.equal(crossoverTokens(base), 11, 'n* on idle devices: 100 µs of copy pays above 10 tokens at 10 µs each');
  t.equal(crossoverTokens(called), 1, 'with the call, a single token already pays for a copy');
});

t.test('resident experts run on the GPU; a busy link sends work to the CPU', async (t) => {
  const cost = fakeCost();
  const c = chooseLayer({ routed: routed([1, 50]), resident: (e) => e === 0, cost, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0 });
  t.same(c.assignments.map((a) => [a.expert, a.site]), [[0, 'gpu-resident'], [1, 'copy-gpu']]);
  const busy = chooseLayer({ routed: routed([50]), resident: () => false, cost, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 1e6 });
  t.equal(busy.assignments[0]!.site, 'cpu', 'a link busy for 1 s makes the copy lose');
  t.throws(() => chooseLayer({ routed: routed([1]), resident: () => false, cost, gpuStartUs: 0, cpuStartUs: 0, linkStartUs: 0, allowCopy: false, allowCpu: false }), { code: 'TDM_BAD_ARGUMENT' });
});

const MODEL: MoeShape = { id: 'm', label: 'test MoE', nLayer: 4, nEmbd: 64, nHead: 4, nHeadKv: 2, headDim: 16, nExpert: 8, nExpertUsed: 2, nFfExpert: 128, nFfShared: 0, nVocab: 100, bitsPerWeight: 8 };

t.test('placement: dense first, never over budget, cache slots from what is left', async (t) => {
  const slab = expertBytes(MODEL);
  const first = placeExperts(MODEL, 1e9);
  t.ok(first.allExpertsFit, 'a large budget holds every expert');
  t.equal(first.numCacheSlots, MODEL.nLayer * MODEL.nExpert);
  for (let extra = 0; extra <= 40 * slab; extra += Math.floor(slab / 3)) {
    const budget = first.denseBytes + 1000 + extra;
    const p = placeExperts(MODEL, budget, 1000);
    t.ok(p.usedBytes <= budget, `budget ${budget}: used ${p.usedBytes}`);
    if (!p.allExpertsFit) t.equal(p.numCacheSlots + p.numStagingSlots, Math.floor(extra / slab), 'every whole slab left is used');
  }
  t.throws(() => placeExperts(MODEL, first.denseBytes - 1), { code: 'TDM_OOM', message: /dense weights/ });
});

t.test('prefetch: best-scored non-resident experts of the target layer, as many as the idle link fits', async (t) => {
  const cost = fakeCost();
  const copy = cost.copyUs(cost.expertBytes);
  const cache = new ExpertCache({ nLayer: 2, nExpert: 4, numSlots: 3, scoring: ExpertScoring.DecayedProbability });
  cache.record(cache.key(1, 0), 0.2);
  cache.record(cache.key(1, 1), 0.9);
  cache.record(cache.key(1, 2), 0.5);
  cache.admit(cache.key(1, 1));
  t.equal(planPrefetch(cache, 1, copy - 1, cost, new Set()), undefined, 'no copy fits a window shorter than one copy');
  const d = planPrefetch(cache, 1, 2 * copy, cost, new Set())!;
  t.same(d.experts, [2, 0], 'the two best non-resident, best first');
  t.equal(d.bytes, 2 * cost.expertBytes);
  t.ok(cache.has(cache.key(1, 2)) && cache.has(cache.key(1, 0)), 'prefetched experts are cached');
  t.same(prefetchTarget(0, 4, 100, 10, 0, 50), { layer: 1, windowUs: 110 }, 'a short copy serves the next layer');
  t.same(prefetchTarget(3, 4, 100, 10, 50, 200), { layer: 2, windowUs: 310 }, 'a long copy serves a later layer, wrapping into the next step');
  t.equal(prefetchTarget(0, 2, 1, 0, 0, 100), undefined);
});

t.test('prefetch: the margin holds back weak candidates; pregate names go first and take the lowest slot', async (t) => {
  const cost = fakeCost();
  const copy = cost.copyUs(cost.expertBytes);
  const fresh = () => {
    const cache = new ExpertCache({ nLayer: 2, nExpert: 4, numSlots: 2, scoring: ExpertScoring.DecayedProbability });
    cache.record(cache.key(0, 0), 0.4);
    cache.record(cache.key(1, 1), 0.3);
    cache.record(cache.key(1, 2), 0.5);
    cache.admit(cache.key(0, 0));
    cache.admit(cache.key(1, 1));
    return cache;
  };
  // Candidate (1, 2) scores 0.5 against the victim (1, 1) at 0.3: past margin 1, short of margin 2.
  t.same(planPrefetch(fresh(), 1, 2 * copy, cost, new Set())!.experts, [2], 'margin 1: the better-scored candidate takes the slot');
  t.equal(planPrefetch(fresh(), 1, 2 * copy, cost, new Set(), 2), undefined, 'margin 2: it is held back');
  // The pregate names (1, 3), unscored, and (1, 1), resident: 3 goes first and takes the lowest
  // slot that is not (1, 1), which the layer will use.
  const cache = fresh();
  const d = planPrefetch(cache, 1, 2 * copy, cost, new Set(), 2, new Set([3, 1]))!;
  t.same(d.experts, [3], 'the named expert is prefetched, the margin held back the rest');
  t.ok(cache.has(cache.key(1, 1)) && cache.has(cache.key(1, 3)), 'the named resident expert stays');
  t.same(d.evicted, [cache.key(0, 0)], 'the victim is the other resident expert');
});

t.test('static baselines: cpu-moe, n-cpu-moe and the 32-token copy rule', async (t) => {
  const cost = fakeCost();
  const slab = expertBytes(MODEL);
  const dense = placeExperts(MODEL, 1e9).denseBytes;
  const placement = placeExperts(MODEL, dense + 2 * MODEL.nExpert * slab + slab / 2);
  const ctx = { model: MODEL, placement, cost, context: 16 };
  const routing = Array.from({ length: MODEL.nLayer }, () => routed([3, 0, 1, 0, 0, 2, 0, 0]).filter((r) => r.tokens > 0));
  const sites = (name: ExpertPolicyName, tokens: number) => makeExpertPolicy(name, ctx).planStep(routing, tokens).layers.map((l) => [...new Set(l.assignments.map((a) => a.site))].join());
  t.same(sites(ExpertPolicyName.CpuMoe, 6), ['cpu', 'cpu', 'cpu', 'cpu']);
  t.same(sites(ExpertPolicyName.NCpuMoe, 6), ['cpu', 'cpu', 'gpu-resident', 'gpu-resident'], 'the last two layers fit, the first two stay on the CPU');
  t.same(sites(ExpertPolicyName.Copy32, 31), ['cpu', 'cpu', 'cpu', 'cpu'], '31 rows: CPU');
  t.same(sites(ExpertPolicyName.Copy32, 32), ['copy-gpu', 'copy-gpu', 'copy-gpu', 'copy-gpu'], '32 rows: copy whatever n* says');
  t.throws(() => makeExpertPolicy('nope' as ExpertPolicyName, ctx), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('dynamic policy: cache changes are plain data and the cache never exceeds its slots', async (t) => {
  const cost = fakeCost({ gpuPerTokenUs: 0.1, dense: 5 });
  const slab = expertBytes(MODEL);
  const dense = placeExperts(MODEL, 1e9).denseBytes;
  const placement = placeExperts(MODEL, dense + 7 * slab);
  t.equal(placement.numCacheSlots, 5);
  const p = makeExpertPolicy(ExpertPolicyName.DynamicDecay, { model: MODEL, placement, cost, context: 16 });
  for (let s = 0; s < 20; s++) {
    const routing = Array.from({ length: MODEL.nLayer }, (_, l) => routed([20, 0, 0, 1 + ((s + l) % 3), 0, 0, 0, 6]).filter((r) => r.tokens > 0));
    const plan = p.planStep(routing, 14);
    t.ok(p.cache!.numResident <= placement.numCacheSlots, `step ${s}: ${p.cache!.numResident} resident`);
    const plain = JSON.parse(JSON.stringify(plan)) as unknown;
    t.same(plain, plan, 'the plan survives JSON (plain data)');
    for (const l of plan.layers) {
      for (const a of l.assignments) if (a.site === 'gpu-resident') t.ok(a.slot !== null && a.slot < placement.numCacheSlots, 'resident experts name their slot');
    }
  }
  const last = p.planStep(Array.from({ length: MODEL.nLayer }, () => routed([20])), 20);
  t.ok(last.layers.some((l) => l.assignments[0]!.site === 'gpu-resident'), 'the hottest expert ends up cached');
});
