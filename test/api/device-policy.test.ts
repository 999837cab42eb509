// loadModel() with a device beside the CPU, through the public API: the CPU backend stands in
// for the device ('cpu-standin', a second CPU backend with its own thread; never GPU
// numbers). Every policy gives the plain CPU path's greedy tokens; a capped device KV budget
// sends sequences to the host tier (CPU attention) or swaps them; the per-step hook and the
// policy's stats report it; bad device options reject with typed errors.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, type LoadModelOptions, type Model, type StepInfo } from '../../src/api/index.js';
import { native } from '../../src/native/binding.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const PROMPTS = ['Once upon a time', 'The little dog', 'Tom and Sue went to the', 'One day, a bird'];
const N = 32;
const CONTEXT = 128;
/**
 * The stand-in device computes with its own copies of the weights, not repacked for the
 * packed matmul as the CPU's are (test/native/strategies.test.ts): the same products summed
 * in another order. Greedy paths may part only at a near tie: the two tokens' logits on the
 * plain path within this much.
 */
const NEAR_TIE_LOGITS = 1e-3;

const STANDIN: LoadModelOptions = { threads: 1, contextSize: CONTEXT, maxSequences: 4, device: 'cpu-standin', deviceThreads: 1, profile: 'quick' };

const plain = await loadModel(STORIES, { threads: 1, contextSize: CONTEXT, maxSequences: 4 });
t.teardown(() => plain.dispose());
const prompts = PROMPTS.map((p) => plain.tokenize(p));
const expected = await Promise.all(prompts.map(async (p) => (await plain.generate(p, { maxTokens: N, temperature: 0, ignoreEos: true }).result).tokens));

async function greedyAll(model: Model): Promise<number[][]> {
  return Promise.all(prompts.map(async (p) => (await model.generate(p, { maxTokens: N, temperature: 0, ignoreEos: true }).result).tokens));
}

/** Same tokens as the plain path, or a parting at a near tie of the plain path's logits. */
async function checkTokens(t: Test, got: number[][]): Promise<void> {
  for (let i = 0; i < prompts.length; i++) {
    const want = expected[i]!;
    const k = got[i]!.findIndex((tok, j) => tok !== want[j]);
    if (k < 0) {
      t.same(got[i], want, `prompt ${i}: the plain path's ${N} greedy tokens`);
      continue;
    }
    const rows = await plain.evaluate([...prompts[i]!, ...want.slice(0, k)]);
    const last = rows[rows.length - 1]!;
    const gap = Math.abs(last[want[k]!]! - last[got[i]![k]!]!);
    t.ok(gap <= NEAR_TIE_LOGITS, `prompt ${i}: parts at token ${k} where the plain path's logits differ by ${gap.toExponential(2)}`);
  }
}

function record(model: Model): { steps: StepInfo[]; stop: () => void } {
  const steps: StepInfo[] = [];
  return { steps, stop: model.onStep((s) => steps.push(s)) };
}

t.test('no device: the single-device CPU path, as before', async (t) => {
  t.equal(plain.info.device, null);
  t.equal(plain.info.policy, 'cpu');
  t.equal(plain.stats.policy, undefined);
  t.equal(plain.info.placement.deviceBytes, 0);
  const { steps, stop } = record(plain);
  await plain.generate(prompts[0]!, { maxTokens: 4, temperature: 0 }).result;
  stop();
  t.ok(steps.reduce((n, s) => n + s.rounds, 0) >= 4, 'a step report per step, with its decode rounds');
  // One sequence: the prompt step attends over the prompt, each later step over one more position.
  const n = prompts[0]!.length;
  t.same(steps.map((s) => s.contextTokens), steps.map((_, i) => n + i), `context tokens ${n}, ${n + 1}, ...`);
  t.ok(steps.every((s) => s.strategy === 'cpu' && s.policy === 'cpu' && s.predictedUs === undefined));
  t.ok(steps.every((s, i) => i === 0 || s.step === steps[i - 1]!.step + 1), 'step numbers count up');
  const seen = steps.length;
  await plain.generate(prompts[0]!, { maxTokens: 2, temperature: 0 }).result;
  t.equal(steps.length, seen, 'nothing is reported after unsubscribing');
});

for (const policy of ['gpu-only', 'pipeline', 'overlap', 'auto'] as const) {
  t.test(`policy ${policy}: the plain path's greedy tokens`, async (t) => {
    const model = await loadModel(STORIES, { ...STANDIN, policy });
    t.teardown(() => model.dispose());
    t.equal(model.info.device, 'cpu-standin');
    t.equal(model.info.policy, policy);
    t.equal(model.info.profile?.source, 'quick');
    t.ok(model.info.backends.length >= 2, `backends ${model.info.backends.join(', ')}`);
    const { steps, stop } = record(model);
    await checkTokens(t, await greedyAll(model));
    stop();
    const stats = model.stats.policy!;
    t.equal(stats.name, policy);
    t.equal(stats.steps, steps.length, 'every step was shaped by the policy');
    t.ok(steps.every((s) => s.predictedUs! > 0 && s.totalUs > 0), 'each step has a prediction and a measured time');
    if (policy === 'gpu-only') t.ok(steps.every((s) => s.strategy === 'gpu-only' && s.cpuAttention === 0));
    // Pipelining reads the weights twice a step; NEO's load-aware selection runs GPU-only steps when that does not pay.
    else if (policy === 'pipeline') t.ok(steps.every((s) => s.strategy === 'pipeline' || s.strategy === 'gpu-only'));
    else if (policy === 'overlap') t.ok(steps.every((s) => s.strategy === 'overlap'), 'every step ran overlap');
    t.comment(`${policy}: strategies ${JSON.stringify(stats.strategies)}, mean step error ${((stats.meanStepError ?? NaN) * 100).toFixed(0)}% (stand-in, not GPU numbers)`);
    // The allowed-token mask and the logits row go through every strategy's step.
    const schema = { type: 'object', properties: { ok: { type: 'boolean' }, n: { type: 'integer' } }, required: ['ok', 'n'], additionalProperties: false };
    const json = await model.generate(prompts[1]!, { maxTokens: 60, temperature: 0, responseFormat: { type: 'json_schema', schema }, logprobs: 1 }).result;
    t.equal(json.stopReason, 'eos', JSON.stringify(json.text));
    t.same(Object.keys(JSON.parse(json.text) as object), ['ok', 'n'], 'a JSON schema reply');
    t.equal(json.logprobs?.length, json.tokens.length, 'with logprobs');
  });
}

t.test('a capped device KV budget: host-tier sequences under overlap, swaps under gpu-only', async (t) => {
  const tokenBytes = plain.info.kvBytesPerToken;
  // One full context on the device; four sequences of ~40 tokens do not fit beside it.
  const kvDeviceBytes = CONTEXT * tokenBytes;
  const kvHostBytes = 4 * CONTEXT * tokenBytes;
  for (const policy of ['overlap', 'pipeline', 'auto', 'gpu-only'] as const) {
    const model = await loadModel(STORIES, { ...STANDIN, policy, kvDeviceBytes, kvHostBytes });
    t.equal(model.info.kvBlocks.device, CONTEXT / model.info.kvBlockTokens);
    const { steps, stop } = record(model);
    await checkTokens(t, await greedyAll(model));
    stop();
    const hostSteps = steps.filter((s) => s.sequences.host > 0);
    t.comment(`${policy}: strategies ${JSON.stringify(model.stats.policy!.strategies)}, ${hostSteps.length} of ${steps.length} steps with host-tier sequences`);
    t.ok(hostSteps.every((s) => s.cpuAttention === s.sequences.host), 'host-tier attention runs on the CPU');
    if (policy === 'overlap') {
      t.ok(hostSteps.length > 0, `${hostSteps.length} of ${steps.length} steps ran host-tier sequences`);
    } else if (policy === 'gpu-only') {
      t.equal(hostSteps.length, 0, 'gpu-only runs no sequence from the host tier');
      const s = model.stats;
      t.ok(s.numMoves + s.numPreemptions > 0, `device pressure swapped (${s.numMoves} moves) or recomputed (${s.numPreemptions})`);
    }
    t.equal(model.stats.numRunning + model.stats.numWaiting, 0);
    await model.dispose();
  }
});

t.test('profiles are cached per machine and model shape', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-policy-profile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const opts: LoadModelOptions = { ...STANDIN, profile: 'cached', profileCacheDir: dir, tpotSloMs: 50 };
  const first = await loadModel(STORIES, opts);
  t.equal(first.info.profile?.source, 'profiled');
  t.ok(first.info.profile!.file!.startsWith(dir));
  t.ok(first.info.profile!.errors.length > 0, 'held-out prediction errors reported');
  t.equal(first.info.tpotSloMs, 50);
  await first.dispose();
  const again = await loadModel(STORIES, opts);
  t.equal(again.info.profile?.source, 'cache');
  t.equal(again.info.policy, 'auto', 'auto is the default policy with a device');
  await again.dispose();
});

t.test("device 'auto' and 'gpu' on a machine without a usable GPU", async (t) => {
  const gpu = native().backends().find((b) => b.kind !== 'cpu' && b.status === 'selected');
  if (gpu) {
    t.comment(`a GPU is usable here (${gpu.kind}: ${gpu.deviceName}); covered by the device script`);
    return;
  }
  const model = await loadModel(STORIES, { threads: 1, contextSize: CONTEXT, device: 'auto', policy: 'overlap' });
  t.teardown(() => model.dispose());
  t.equal(model.info.device, null, "'auto' found no GPU: the single-device CPU path");
  t.equal(model.info.policy, 'cpu');
  t.same(await greedyAll(model), expected);
  await t.rejects(loadModel(STORIES, { threads: 1, device: 'gpu' }), { name: 'TandemError', code: 'TDM_BACKEND_UNAVAILABLE' });
});

t.test('bad device options reject with typed errors', async (t) => {
  const bad: [LoadModelOptions, RegExp][] = [
    [{ device: 'tpu' as never }, /device must be one of/],
    [{ policy: 'auto' }, /policy needs a device/],
    [{ tpotSloMs: 20 }, /tpotSloMs needs a device/],
    [{ deviceWeightBytes: 1000 }, /deviceWeightBytes needs a device/],
    [{ device: 'cpu-standin', policy: 'fastest' as never }, /policy must be one of/],
    [{ device: 'cpu-standin', tpotSloMs: 0 }, /tpotSloMs must be/],
    [{ device: 'cpu-standin', tpotSloMs: -5 }, /tpotSloMs must be/],
    [{ device: 'cpu-standin', deviceWeightBytes: -1 }, /deviceWeightBytes must be/],
    [{ device: 'cpu-standin', deviceWeightBytes: 1.5 }, /deviceWeightBytes must be/],
    [{ device: 'auto', deviceThreads: 2 }, /deviceThreads is for device 'cpu-standin'/],
    [{ device: 'cpu-standin', profile: 'never' as never }, /profile must be one of/],
    [{ device: 'cpu-standin', kvDeviceBytes: -1 }, /kvDeviceBytes must be/],
    [{ device: 'cpu-standin', kvDeviceBytes: 1 << 20, kvCacheBytes: 1 << 20 }, /kvDeviceBytes\/kvHostBytes or kvCacheBytes/],
    [{ device: 'cpu-standin', contextSize: CONTEXT, policy: 'gpu-only', kvDeviceBytes: 0, kvHostBytes: 1 << 24 }, /policy gpu-only runs sequences there only/],
    [{ device: 'cpu-standin', contextSize: CONTEXT, kvDeviceBytes: 0, kvHostBytes: 0 }, /needs 8 in one tier/],
  ];
  for (const [options, message] of bad) {
    await t.rejects(loadModel(STORIES, { threads: 1, ...options }), { name: 'TandemError', code: 'TDM_BAD_ARGUMENT', message }, JSON.stringify(options));
  }
  t.throws(() => plain.onStep('nope' as never), { code: 'TDM_BAD_ARGUMENT' });
});
