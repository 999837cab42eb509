// The profiler: grid timings through the native entry points (a fake target, then the real
// model with the CPU standing in for the device), tables and held-out error, the per-machine
// and per-shape cache, and writing back tables refitted online.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../src/native/binding.js';
import { GgufFile } from '../../src/model/gguf.js';
import { describeModel } from '../../src/model/describe.js';
import { costShapeOf, planWork, TableCostModel } from '../../src/sched/cost-model.js';
import { predictStep } from '../../src/sched/step-time.js';
import type { SequencePlan, StepPlan, Strategy } from '../../src/native/step-plan.js';
import { DEFAULT_GRID, gridCovers, gridProbes, gridUnion, gridWithin, loadOrProfile, loadProfile, nativeBuildId, profileFile, profileKey, profileModel, saveProfile, type ProfileGrid, type ProfileTarget } from '../../src/sched/profiler.js';
import { modelPath } from '../helpers.js';

const SMALL: ProfileGrid = {
  linearTokens: [1, 4, 16],
  attentionRequests: [1, 4],
  attentionContexts: [16, 64],
  prefillTokens: [8, 32],
  copyBytes: [1024, 65536],
  heldOut: [
    { kind: 'linear', tokens: 8 },
    { kind: 'deviceAttention', requests: 2, context: 32 },
    { kind: 'cpuAttention', requests: 2, context: 32 },
    { kind: 'prefillAttention', tokens: 16 },
    { kind: 'copy', bytes: 8192 },
  ],
};

const SHAPE = { nLayer: 4, qkvBytesPerToken: 1024, outBytesPerToken: 512, kvBlockBytes: 4096 };

/** A target whose timings follow simple laws, recording each op it was asked for. */
function fakeTarget(): ProfileTarget & { ops: Parameters<ProfileTarget['profile']>[0][] } {
  const ops: Parameters<ProfileTarget['profile']>[0][] = [];
  return {
    ops,
    async profile(op) {
      ops.push(op);
      // The LM head costs 2 µs a row, inside the linear work unless logitsRows says fewer.
      if (op.kind === 'linear') return 100 + 3 * op.tokens + 2 * (op.logitsRows ?? op.tokens);
      if (op.kind === 'head') return 5 + 2 * op.rows;
      if (op.kind === 'copy') return 5 + op.bytes / 1000;
      if (op.kind === 'expert') throw new Error('the profiler times no experts');
      if (op.kind === 'stream') return 20 + 30 * op.blocks;
      const rate = op.device === 'cpu' ? 0.5 : 0.05;
      return 10 + rate * op.requests * (op.context + op.tokens) * op.tokens;
    },
  };
}

t.test('profileModel times every grid point and held-out size, with progress', async (t) => {
  const target = fakeTarget();
  const seen: number[] = [];
  const r = await profileModel(target, SHAPE, { grid: SMALL, iters: 2, onProgress: (f) => seen.push(f) });
  t.equal(target.ops.length, gridProbes(SMALL).length + SMALL.heldOut.length);
  t.ok(target.ops.every((o) => o.iters === 2), 'iters reach the native call');
  t.ok(target.ops.some((o) => o.kind === 'attention' && o.device === 'cpu' && o.tokens > 1), 'CPU prefill attention is timed');
  t.equal(seen[seen.length - 1], 1);
  t.ok(seen.every((f, i) => i === 0 || f > seen[i - 1]!), 'progress rises');
  t.equal(r.model.linearUs(8), 140, 'linear laws are exact between grid points');
  t.ok(r.errors.find((e) => e.kind === 'linear')!.meanAbsRelError < 1e-9);
  t.equal(r.model.shape.nLayer, 4);
  t.equal(r.model.head, undefined, 'a grid without head rows prices the head inside the linear work');
  t.equal(r.model.headUs(4), 0);
});

t.test('a grid with head rows times the LM head apart, and a step prices it for its sampled rows only', async (t) => {
  const target = fakeTarget();
  const grid: ProfileGrid = { ...SMALL, linearTokens: [1, 16, 512], headRows: [1, 8, 32], heldOut: [...SMALL.heldOut, { kind: 'head', rows: 4 }] };
  const r = await profileModel(target, SHAPE, { grid, iters: 1 });
  const linearOps = target.ops.filter((o) => o.kind === 'linear');
  t.ok(linearOps.length > 0 && linearOps.every((o) => o.kind === 'linear' && o.logitsRows === 0), 'linear work is timed without the head');
  t.equal(target.ops.filter((o) => o.kind === 'head').length, 4, 'the head at each grid row count and the held-out one');
  t.equal(r.model.linearUs(136), 100 + 3 * 136, 'linear work leaves the head out');
  t.equal(r.model.headUs(20), 5 + 2 * 20, 'the head between grid points');
  t.ok(r.errors.find((e) => e.kind === 'head')!.meanAbsRelError < 1e-9, 'held-out error for the head');
  // A prefill chunk of 256 tokens beside 4 decodes samples 5 rows: the head for 5, not for 260.
  const seqs = [{ tokens: 256, context: 256, attention: 'gpu' as const }, ...Array.from({ length: 4 }, () => ({ tokens: 1, context: 300, attention: 'gpu' as const }))];
  const step = predictStep('gpu-only', seqs, r.model);
  t.equal(step.linearUs, 100 + 3 * 260 + 5 + 2 * 5, 'linear work of 260 rows plus the head of 5');
  const reloaded = new TableCostModel(r.model.toJSON());
  t.equal(reloaded.headUs(20), r.model.headUs(20), 'the head table round-trips through JSON');
});

t.test('loadOrProfile caches per machine and model shape', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-profile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const key = { machine: 'test CPU x2 | no device', model: 'llama L4 ...' };
  const a = fakeTarget();
  const first = await loadOrProfile(a, SHAPE, key, { cacheDir: dir, grid: SMALL, progressBar: false });
  t.notOk(first.fromCache);
  t.ok(fs.existsSync(first.file) && first.file.startsWith(dir), 'written to the cache folder');
  const b = fakeTarget();
  const second = await loadOrProfile(b, SHAPE, key, { cacheDir: dir, grid: SMALL, progressBar: false });
  t.ok(second.fromCache && b.ops.length === 0, 'the second load reads the cache and times nothing');
  t.equal(second.model.linearUs(9), first.model.linearUs(9));
  const other = fakeTarget();
  t.notOk((await loadOrProfile(other, SHAPE, { ...key, model: 'qwen2 L28 ...' }, { cacheDir: dir, grid: SMALL, progressBar: false })).fromCache, 'another shape profiles again');
  t.ok(other.ops.length > 0);
  t.notOk((await loadOrProfile(fakeTarget(), SHAPE, key, { cacheDir: dir, grid: SMALL, progressBar: false, refresh: true })).fromCache, 'refresh profiles again');
  fs.writeFileSync(first.file, '{ not json');
  t.notOk((await loadOrProfile(fakeTarget(), SHAPE, key, { cacheDir: dir, grid: SMALL, progressBar: false })).fromCache, 'a broken cache file is replaced');

  // Tables refitted online can be written back and are what the next load reads.
  const m = second.model;
  for (let i = 0; i < 50; i++) m.linear.observe(4, 500, 0.5);
  saveProfile(first.file, key, m, second.errors);
  t.ok(Math.abs(loadProfile(first.file, key)!.model.linearUs(4) - m.linearUs(4)) < 1e-9, 'written-back tables reload');
  t.equal(loadProfile(first.file, { ...key, machine: 'elsewhere' }), undefined, 'never read for another machine');
  t.equal(profileFile(dir, key), first.file);
});

t.test('the real model: the CPU standing in for the device, profiled, cached and keyed by placement', async (t) => {
  const file = modelPath('stories260K.gguf');
  const f = GgufFile.open(file);
  const hp = describeModel(f).hparams;
  f.close();
  const m = await native().loadModel(file, { hparams: hp, threads: 1, kvBlockTokens: 16, kvBlocks: { device: 8, host: 8 }, device: 'cpu-standin' });
  t.teardown(() => m.dispose());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-profile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const key = profileKey(hp, { threads: 1, placement: m.placement, kvBlockTokens: 16 });
  t.match(key.machine, /cpu-standin: CPU stand-in for a GPU/);
  t.match(key.machine, new RegExp(`\\| build ${nativeBuildId()}$`), 'the key names the build of the native code, so that new kernels profile again');
  t.match(nativeBuildId(), /^[0-9a-f]{12}$/);
  const r = await loadOrProfile(m, costShapeOf(hp, m.info.kvBlockBytes), key, { cacheDir: dir, grid: SMALL, iters: 1, progressBar: false });
  t.ok(r.model.linearUs(2) > 0 && r.model.cpuAttentionUs(2, 40) > 0 && r.model.copyUs(4096) > 0, 'every table holds positive times');
  t.equal(r.errors.length, 5, 'held-out error for each timed subtask');
  t.ok((await loadOrProfile(m, costShapeOf(hp, m.info.kvBlockBytes), key, { cacheDir: dir, grid: SMALL, progressBar: false })).fromCache);
  // The head apart: the native ops behind DEFAULT_GRID's headRows.
  t.ok((await m.profile({ kind: 'head', rows: 4, iters: 1 })) > 0, 'the LM head alone is timed');
  t.ok((await m.profile({ kind: 'linear', tokens: 16, logitsRows: 0, iters: 1 })) > 0, 'linear work without the head is timed');
  await t.rejects(m.profile({ kind: 'linear', tokens: 4, logitsRows: 5 }), { code: 'TDM_BAD_ARGUMENT' }, 'more logits rows than tokens is refused');
  await t.rejects(m.profile({ kind: 'head', rows: 0 }), { code: 'TDM_BAD_ARGUMENT' }, 'a head of no rows is refused');
  const half = await native().loadModel(file, { hparams: hp, threads: 1, kvBlockTokens: 16, kvBlocks: { device: 8, host: 8 }, device: 'cpu-standin', deviceWeightBytes: 1000 });
  t.not(profileKey(hp, { threads: 1, placement: half.placement, kvBlockTokens: 16 }).model, key.model, 'another weight placement is another profile');
  half.dispose();
});

t.test('the real model: real steps refit sampling and each strategy\'s factor, as on an asynchronous device', async (t) => {
  const file = modelPath('stories260K.gguf');
  const f = GgufFile.open(file);
  const hp = describeModel(f).hparams;
  f.close();
  const m = await native().loadModel(file, { hparams: hp, threads: 1, kvBlockTokens: 16, kvBlocks: { device: 8, host: 8 }, device: 'cpu-standin' });
  t.teardown(() => m.dispose());
  const { model } = await profileModel(m, costShapeOf(hp, m.info.kvBlockBytes), { grid: SMALL, iters: 1 });
  const lin = model.linearUs(4);
  t.equal(model.samplingUs(4), 0, 'a fresh profile knows no sampling time');
  t.equal(model.strategyFactor('overlap'), 1, 'nor any factor');
  const seq = (id: number, block: number, tier: 'device' | 'host', startPos: number, n: number): SequencePlan => ({
    seqId: id, tokens: Int32Array.from({ length: n }, (_, k) => 1 + ((id * 13 + k) % 200)), startPos, blockTable: Int32Array.of(block),
    kvTier: tier, attention: tier === 'device' ? 'gpu' : 'cpu', sample: true,
    sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 0 },
  });
  const prompt: StepPlan = { strategy: 'overlap', copies: [], sequences: [seq(1, 0, 'device', 0, 8), seq(2, 1, 'device', 0, 8), seq(3, 0, 'host', 0, 8)] };
  await m.step(prompt);
  const seen = new Set<Strategy>();
  for (let i = 0; i < 6; i++) {
    const strategy: Strategy = i % 2 === 0 ? 'overlap' : 'gpu-only';
    // The host sequence runs under overlap only (it sits gpu-only steps out), so its position advances every other step.
    const seqs = [seq(1, 0, 'device', 8 + i, 1), seq(2, 1, 'device', 8 + i, 1)];
    if (strategy === 'overlap') seqs.push(seq(3, 0, 'host', 8 + i / 2, 1));
    const plan: StepPlan = { strategy, copies: [], sequences: seqs };
    const result = await m.step(plan);
    const obs = model.observeStep(plan, result, { deviceSynchronous: false });
    t.ok(obs.sampling && obs.sampling.seqs === plan.sequences.length, `${strategy}: sampling of ${plan.sequences.length} sequences observed`);
    t.ok(obs.pass && obs.pass.us > 0 && obs.pass.us < result.totalUs, `${strategy}: the pass is the step less its sampling`);
    t.ok(predictStep(strategy, planWork(plan, model.shape), model).passUs > 0, 'the tables price the plan');
    seen.add(strategy);
  }
  t.equal(model.linearUs(4), lin, 'an asynchronous device\'s linear table is left alone');
  t.ok(model.samplingUs(4) > 0, 'sampling time learned from the real phase');
  for (const s of seen) {
    const x = model.strategyFactor(s);
    t.ok(Number.isFinite(x) && x >= 0.25 && x <= 4, `${s} factor ${x.toFixed(2)}, in range`);
  }
});

t.test('where the device streams host KV, the profiler times it and a step prices streamed blocks from that table', async (t) => {
  const grid: ProfileGrid = { ...SMALL, streamBlocks: [1, 16, 256], heldOut: [...SMALL.heldOut, { kind: 'stream', blocks: 64 }] };
  const plain = fakeTarget();
  const without = await profileModel(plain, SHAPE, { grid, iters: 1 });
  t.notOk(plain.ops.some((o) => o.kind === 'stream'), 'not asked: nothing streamed is timed (the held-out size neither)');
  t.equal(without.model.stream, undefined);
  t.equal(without.model.streamUs(10), without.model.copyUs(10 * SHAPE.kvBlockBytes), 'with no table a streamed block costs a copy of its bytes');
  const target = fakeTarget();
  const r = await profileModel(target, SHAPE, { grid, iters: 1, streamsHostKv: true });
  t.same(target.ops.filter((o) => o.kind === 'stream').map((o) => (o.kind === 'stream' ? o.blocks : 0)), [1, 16, 256, 64], 'each grid size, then the held-out one');
  t.equal(r.model.streamUs(64), 20 + 30 * 64, 'a straight law is exact between grid points');
  t.ok(r.errors.find((e) => e.kind === 'stream')!.meanAbsRelError < 1e-9, 'and the held-out error says so');
  const again = new TableCostModel(r.model.toJSON());
  t.equal(again.streamUs(100), r.model.streamUs(100), 'the table survives the cache');
  const step = predictStep('gpu-only', [{ tokens: 1, context: 100, attention: 'gpu', streamedBlocks: 7 }], r.model);
  t.equal(step.streamUs, 20 + 30 * 7, 'predictStep takes the streamed blocks from it');
  const seq = (kvTier: 'device' | 'host', attention: 'cpu' | 'gpu'): SequencePlan => ({ seqId: 1, tokens: Int32Array.from([5]), startPos: 40, blockTable: Int32Array.from([0, 1, 2]), kvTier, attention, sample: true });
  const plan = (s: SequencePlan): StepPlan => ({ strategy: 'gpu-only', copies: [], sequences: [s] });
  t.equal(planWork(plan(seq('host', 'gpu')), { nLayer: 4, kvBlockTokens: 16 })[0]!.streamedBlocks, 3, 'the refit prices a plan\'s streamed sequence by the blocks of its positions');
  t.equal(planWork(plan(seq('device', 'gpu')), { nLayer: 4, kvBlockTokens: 16 })[0]!.streamedBlocks, undefined);
  t.equal(planWork(plan(seq('host', 'cpu')), { nLayer: 4, kvBlockTokens: 16 })[0]!.streamedBlocks, undefined);
});

t.test('the first-use grid is cut to what the loaded model can run, each axis up to its first point past the limit', async (t) => {
  // maxSequences 4, contextSize 2048, a 256-token chunk beside 4 decodes.
  const g = gridWithin(DEFAULT_GRID, { requests: 4, context: 2048, stepTokens: 260 });
  t.same(g.attentionRequests, [1, 4], 'no attention of 16 or 64 sequences at once');
  t.same(g.attentionContexts, [64, 256, 1024], 'contexts past the grid keep every point');
  t.same(g.linearTokens, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512], '260 rows lie between 256 and 512');
  t.same(g.headRows, [1, 8, 32, 128, 256]);
  t.same(g.prefillTokens, DEFAULT_GRID.prefillTokens);
  t.notOk(g.heldOut.some((p) => (p.kind === 'cpuAttention' || p.kind === 'deviceAttention') && p.requests > 4), 'held-out sizes within the cut');
  t.ok(g.heldOut.some((p) => p.kind === 'cpuAttention' && p.requests === 2), 'and those within it kept');
  t.ok(gridProbes(g).length < gridProbes(DEFAULT_GRID).length - 10, `${gridProbes(g).length} timings where the whole grid takes ${gridProbes(DEFAULT_GRID).length}`);
  const small = gridWithin(DEFAULT_GRID, { requests: 1, context: 128, stepTokens: 40 });
  t.same(small.attentionRequests, [1]);
  t.same(small.attentionContexts, [64, 256]);
  t.same(small.prefillTokens, [16, 64, 256]);
  t.same(small.linearTokens, [1, 2, 4, 8, 16, 32, 64]);
  t.same(gridWithin(DEFAULT_GRID, { requests: 1e6, context: 1e6, stepTokens: 1e6 }), DEFAULT_GRID, 'limits past every axis: the whole grid');
  t.ok(gridCovers(g, small) && !gridCovers(small, g), 'the larger cut reaches every size of the smaller');
  t.ok(gridCovers(DEFAULT_GRID, g));
  t.same(gridUnion(small, g).attentionRequests, [1, 4]);
  const sorted = (x: ProfileGrid) => ({ ...x, heldOut: x.heldOut.map((p) => JSON.stringify(p)).sort() });
  t.same(sorted(gridUnion(small, g)), sorted(gridUnion(g, small)), 'a union is the same either way');
  // Every size a model with these limits meets lies within its tables.
  for (let i = 0; i < 200; i++) {
    const lim = { requests: 1 + Math.floor(Math.random() * 100), context: 2 + Math.floor(Math.random() * 5000), stepTokens: 1 + Math.floor(Math.random() * 600) };
    const c = gridWithin(DEFAULT_GRID, lim);
    const covers = (xs: number[], full: number[], limit: number) => Math.max(...xs) >= Math.min(limit, Math.max(...full));
    if (!covers(c.attentionRequests, DEFAULT_GRID.attentionRequests, lim.requests) || !covers(c.attentionContexts, DEFAULT_GRID.attentionContexts, lim.context) ||
      !covers(c.linearTokens, DEFAULT_GRID.linearTokens, lim.stepTokens) || !covers(c.prefillTokens, DEFAULT_GRID.prefillTokens, lim.context)) {
      t.fail(`limits ${JSON.stringify(lim)} are not covered`);
      return;
    }
  }
  t.pass('200 random limits covered by their cut grid');
});

t.test('loadOrProfile: a cached profile serves every load it reaches; one that needs more times both grids', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-profile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const key = { machine: 'test CPU x2 | no device', model: 'llama L4 ...' };
  const narrow: ProfileGrid = { ...SMALL, attentionRequests: [1], attentionContexts: [16] };
  const a = fakeTarget();
  t.notOk((await loadOrProfile(a, SHAPE, key, { cacheDir: dir, grid: narrow, progressBar: false })).fromCache);
  const b = fakeTarget();
  const wide = await loadOrProfile(b, SHAPE, key, { cacheDir: dir, grid: SMALL, progressBar: false });
  t.notOk(wide.fromCache, 'a load reaching further profiles again');
  const attended = b.ops.filter((o) => o.kind === 'attention' && o.tokens === 1);
  t.ok(attended.some((o) => o.kind === 'attention' && o.requests === 4), 'at the sizes it needs');
  t.same(loadProfile(wide.file, key)!.grid.attentionRequests, [1, 4], 'the file records the union');
  const c = fakeTarget();
  t.ok((await loadOrProfile(c, SHAPE, key, { cacheDir: dir, grid: narrow, progressBar: false })).fromCache, 'and then serves the narrow load too');
  t.equal(c.ops.length, 0);
  // A file from before grids were recorded was timed on the whole default grid.
  const body = JSON.parse(fs.readFileSync(wide.file, 'utf8'));
  delete body.grid;
  fs.writeFileSync(wide.file, JSON.stringify(body));
  t.same(loadProfile(wide.file, key)!.grid, DEFAULT_GRID);
});
