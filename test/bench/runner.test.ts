// The bench runner with hand-made systems (no model is run): every workload on every
// system, systems alternating run by run, ratios paired by repeat, a failing run or load
// recorded without stopping the rest, and each run reported as it finishes.
import t from 'tap';
import { BenchRunner, type BenchPlan, type RunRecord } from '../../src/bench/runner.js';
import type { MachineInfo } from '../../src/bench/machine.js';
import type { BenchSystem, LoadedSystem } from '../../src/bench/systems/system.js';
import { modelPath } from '../helpers.js';

/** A system that emits each token on the next turn of the event loop; `fail` names workload kinds it rejects. */
function fakeSystem(name: string, opts: { baseline?: boolean; failLoad?: boolean; failPrompt?: number } = {}): BenchSystem & { loads: number[] } {
  const loads: number[] = [];
  return {
    name,
    about: 'fake',
    baseline: opts.baseline ?? false,
    loads,
    async load(_path, config): Promise<LoadedSystem> {
      if (opts.failLoad) throw new Error('cannot load');
      loads.push(config.maxSequences);
      let steps = 0;
      return {
        details: { fake: true },
        backends: ['cpu'],
        async generate(req, onToken) {
          if (req.prompt.length === opts.failPrompt) throw new Error('boom');
          for (let i = 0; i < req.maxTokens; i++) {
            await new Promise((resolve) => setImmediate(resolve));
            steps++;
            onToken(performance.now());
          }
        },
        counters: () => ({ steps }),
        dispose: async () => undefined,
      };
    },
  };
}

const machine: MachineInfo = {
  hostname: 'h', os: 'x', node: 'v', cpuModel: 'c', logicalCpus: 1, physicalCores: 1, isa: [], virtualized: false, llc: undefined,
  memoryBytes: 1e9, gpus: [], bandwidth: [{ threads: 1, bytesPerSecond: 1e9, samples: [1e9], bytes: 2 ** 20, passes: 1 }],
};

const plan: BenchPlan = {
  pp: [12], tg: [5], tgPrompts: [4], parallel: [3], parallelPrompt: 4, parallelOutput: 4,
  online: { lengths: ['small'], rates: [200], rateFractions: [], requests: 5, concurrency: 2 },
  repeats: 2, onlineRepeats: 1, batchTokens: 64, slo: { ttftMs: 1e6, tpotMs: 1e6 }, seed: 5,
};

t.test('every workload runs on every system, alternating which goes first', async (t) => {
  const a = fakeSystem('a');
  const b = fakeSystem('b', { baseline: true });
  const seen: RunRecord[] = [];
  const fractions: number[] = [];
  const result = await new BenchRunner(
    { models: [modelPath('stories260K.gguf')], systems: [a, b], threads: [1], plan, machine },
    { onRun: (r) => seen.push(r), onProgress: (f) => fractions.push(f) },
  ).run();
  t.equal(seen.length, result.runs.length, 'onRun saw every run as it finished');
  t.same(result.runs.filter((r) => r.error), []);
  const keys = (s: string) => result.runs.filter((r) => r.system === s).map((r) => `${r.workload}#${r.repeat}`);
  const expected = ['pp12#0', 'tg5@d4#0', 'pp12#1', 'tg5@d4#1', 'parallel3#0', 'parallel3#1', 'online-small@200#0'];
  t.same(keys('a'), expected);
  t.same(keys('b'), expected);
  const firsts = result.runs.filter((r) => r.order === 0).map((r) => r.system);
  t.same(firsts, ['a', 'b', 'b', 'a', 'a', 'b', 'a'], 'the first system alternates run by run');
  t.same(a.loads, [1, 3, 2], 'loaded once per group, with the group\'s sequences');
  const tg = result.runs.find((r) => r.system === 'a' && r.workload === 'tg5@d4')!;
  t.equal(tg.counters?.steps, 5, 'counters are the change over the run');
  t.equal(result.runs.find((r) => r.workload === 'parallel3')!.serving.requests, 3);
  t.equal(result.runs.find((r) => r.workload.startsWith('online'))!.serving.requests, 5);
  const row = result.summary.find((r) => r.system === 'a' && r.workload === 'tg5@d4')!;
  t.equal(row.runs, 2);
  t.equal(row.baseline, 'b');
  t.ok(row.ratio! > 0);
  t.ok(row.floorTokPerS! > 0, 'decode rows carry the floor');
  t.equal(result.summary.find((r) => r.system === 'b' && r.workload === 'tg5@d4')!.ratio, undefined, 'no ratio for the baseline itself');
  t.same(result.summary.map((r) => r.system).slice(0, 2), ['a', 'b'], 'rows in the order the systems were given');
  t.equal(result.sweeps.length, 2);
  t.ok(fractions.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f >= fractions[i - 1]! - 1e-9)), 'progress only moves forward');
  t.equal(fractions.at(-1), 1);
});

t.test('a failing run and a failing load are recorded; the rest of the bench goes on', async (t) => {
  const a = fakeSystem('a', { failPrompt: 12 });
  const broken = fakeSystem('broken', { failLoad: true });
  const result = await new BenchRunner(
    { models: [modelPath('stories260K.gguf')], systems: [a, broken], threads: [1], plan: { ...plan, online: undefined, parallel: [], repeats: 1 }, machine },
  ).run();
  t.same(result.runs.map((r) => [r.workload, r.error !== undefined]), [['pp12', true], ['tg5@d4', false]]);
  t.match(result.runs[0]!.error, /boom/);
  t.ok(result.loads.some((l) => l.system === 'broken' && /cannot load/.test(l.error ?? '')));
  t.ok(result.warnings.some((w) => /broken did not load/.test(w)));
  t.ok(result.warnings.some((w) => /a failed pp12/.test(w)));
  t.same(result.summary.map((r) => r.workload), ['tg5@d4'], 'a workload with no successful run has no summary row');
});
