// The GPU expert cache: slot indices, eviction order under each scoring, admission, and hit
// rates under skewed and uniform routing; the two scorings compared where they must differ.
import t from 'tap';
import { ExpertCache, ExpertScoring } from '../../src/sched/experts/cache.js';
import { fillByScore } from '../../src/sched/experts/plan.js';
import { MOE_MODELS, routingTrace } from '../../src/sched/experts/sim.js';

t.test('the cache stores distinct slot indices within its pool', async (t) => {
  const c = new ExpertCache({ nLayer: 3, nExpert: 4, numSlots: 5, scoring: ExpertScoring.FrequencyLru });
  for (let k = 0; k < 12; k++) {
    c.tick();
    c.record(k, 1);
    c.admit(k, new Set(), true);
  }
  const slots = Array.from({ length: 12 }, (_, k) => c.slot(k)).filter((s): s is number => s !== undefined);
  t.equal(slots.length, 5, 'full, never over');
  t.same([...slots].sort((a, b) => a - b), [0, 1, 2, 3, 4], 'each slot once');
  t.same([7, 8, 9, 10, 11].map((k) => c.has(k)), [true, true, true, true, true], 'the most recent five remain');
  t.same(c.residentOf(2), [0, 1, 2, 3]);
  t.throws(() => new ExpertCache({ nLayer: 1, nExpert: 1, numSlots: -1, scoring: ExpertScoring.FrequencyLru }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => new ExpertCache({ nLayer: 1, nExpert: 1, numSlots: 1, scoring: ExpertScoring.DecayedProbability, decay: 0 }), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('eviction order under decayed router probability', async (t) => {
  const c = new ExpertCache({ nLayer: 1, nExpert: 4, numSlots: 3, scoring: ExpertScoring.DecayedProbability, decay: 0.5 });
  c.record(0, 2.0);
  c.record(1, 0.3);
  c.record(2, 1.0);
  for (const k of [0, 1, 2]) c.admit(k);
  t.equal(c.victim(), 1, 'the least probability mass goes first');
  t.equal(c.victim(new Set([1])), 2, 'protected experts are skipped');
  c.tick();
  c.tick();
  t.equal(c.score(0), 0.5, 'mass decays by 0.5 per step');
  c.record(3, 0.05);
  t.same(c.admit(3), { slot: undefined, evicted: undefined }, 'a newcomer scoring below the victim (0.05 < 0.075) is not cached');
  c.record(3, 0.05);
  const a = c.admit(3);
  t.same(a, { slot: 1, evicted: 1 }, 'once it outscores the victim it takes its slot');
});

t.test('eviction order under frequency-weighted LRU', async (t) => {
  const c = new ExpertCache({ nLayer: 1, nExpert: 4, numSlots: 2, scoring: ExpertScoring.FrequencyLru });
  for (let s = 0; s < 4; s++) {
    c.record(0, 0.1);
    c.tick();
  }
  c.record(1, 0.9);
  c.admit(0);
  c.admit(1);
  t.equal(c.score(0), 4 / 2, '4 uses, last one step ago');
  t.equal(c.score(1), 1, 'one use now');
  t.equal(c.victim(), 1, 'the rarely used expert goes first though it is the most recent');
  for (let s = 0; s < 10; s++) c.tick();
  t.ok(c.score(0) < 1 && c.score(0) > c.score(1), 'both age; frequency still orders them');
});

t.test('the two scorings differ where they should: router probability versus count', async (t) => {
  const make = (scoring: ExpertScoring) => {
    const c = new ExpertCache({ nLayer: 1, nExpert: 3, numSlots: 1, scoring, decay: 0.9 });
    for (let s = 0; s < 6; s++) {
      c.tick();
      if (s % 2 === 1) c.record(0, 0.95);
      c.record(1, 0.05);
    }
    fillByScore(c);
    return c;
  };
  t.ok(make(ExpertScoring.DecayedProbability).has(0), 'decay keeps the expert the router weights most, though it is routed to half as often');
  t.ok(make(ExpertScoring.FrequencyLru).has(1), 'frequency-weighted LRU keeps the expert routed to most often, however lightly');
  const burst = (scoring: ExpertScoring) => {
    const c = new ExpertCache({ nLayer: 1, nExpert: 2, numSlots: 1, scoring, decay: 0.5 });
    for (let s = 0; s < 20; s++) {
      c.tick();
      c.record(0, 1);
    }
    for (let s = 0; s < 3; s++) c.tick();
    c.record(1, 1);
    fillByScore(c);
    return c;
  };
  t.ok(burst(ExpertScoring.DecayedProbability).has(1), 'decay forgets a long-idle expert within a few steps');
  t.ok(burst(ExpertScoring.FrequencyLru).has(0), 'frequency-weighted LRU keeps a long history');
});

/** Hit rate of a cache holding `share` of one layer's experts, admitting every routed expert. */
function hitRate(scoring: ExpertScoring, kind: 'zipf' | 'uniform', share: number): number {
  const m = MOE_MODELS['olmoe-1b-7b']!;
  const model = { ...m, nLayer: 2 };
  const trace = routingTrace(model, { kind, seed: 7 }, 300, 1);
  const c = new ExpertCache({ nLayer: 2, nExpert: model.nExpert, numSlots: Math.round(share * 2 * model.nExpert), scoring });
  let hits = 0;
  let total = 0;
  trace.forEach((step, i) => {
    c.tick();
    step.forEach((routed, layer) => {
      for (const r of routed) {
        const k = c.key(layer, r.expert);
        if (i >= 50) {
          total++;
          if (c.has(k)) hits++;
        }
        c.record(k, r.probability);
        c.admit(k);
      }
    });
  });
  return hits / total;
}

t.test('hit rates: skewed routing caches well, uniform routing near the cached share', async (t) => {
  for (const scoring of [ExpertScoring.DecayedProbability, ExpertScoring.FrequencyLru]) {
    const zipf = hitRate(scoring, 'zipf', 0.25);
    const uniform = hitRate(scoring, 'uniform', 0.25);
    t.ok(zipf > 0.5, `${scoring}: Zipf hit rate ${zipf.toFixed(3)} with a quarter of the experts cached`);
    t.ok(uniform > 0.1 && uniform < 0.4, `${scoring}: uniform hit rate ${uniform.toFixed(3)} near 0.25`);
    t.ok(zipf > uniform + 0.2, `${scoring}: skew helps`);
  }
});

t.test('routing traces route every row to nExpertUsed distinct experts', async (t) => {
  const model = { ...MOE_MODELS['moe-8x-top2']!, nLayer: 3 };
  const trace = routingTrace(model, { kind: 'zipf', seed: 3 }, 5, 4);
  for (const step of trace) {
    for (const routed of step) {
      t.equal(routed.reduce((n, r) => n + r.tokens, 0), 4 * model.nExpertUsed);
      t.ok(Math.abs(routed.reduce((p, r) => p + r.probability, 0) - 4) < 1e-9, 'each row\'s probabilities sum to 1');
      t.equal(new Set(routed.map((r) => r.expert)).size, routed.length);
    }
  }
});
