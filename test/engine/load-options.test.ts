// The engine's options and reports through the public API on stories260K: the KV budget
// and its tiers, bad values, the bounded queue, per-request metrics and the stats.
import t from 'tap';
import { loadModel } from '../../src/api/index.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');

t.test('the KV budget sizes both tiers; bad values are TDM_BAD_ARGUMENT', async (t) => {
  const probe = await loadModel(STORIES, { threads: 1, contextSize: 64, maxSequences: 2 });
  const blockBytes = probe.info.kvBlockBytes;
  t.equal(blockBytes, probe.info.kvBytesPerToken * probe.info.kvBlockTokens, 'the native block size is what the budget assumes');
  t.same(probe.info.kvBlocks, { device: 0, host: 8 }, 'default: maxSequences full contexts, all in the host tier with no GPU');
  await probe.dispose();

  const split = await loadModel(STORIES, { threads: 1, contextSize: 64, kvCacheBytes: 40 * blockBytes + 7, kvDeviceFraction: 0.25 });
  t.same(split.info.kvBlocks, { device: 10, host: 30 });
  t.same(split.stats.kvTiers.device.numBlocks, 10);
  await split.dispose();

  await t.rejects(loadModel(STORIES, { contextSize: 64, kvCacheBytes: 3 * blockBytes }), { code: 'TDM_BAD_ARGUMENT', message: /3 KV blocks.*needs 4/ });
  await t.rejects(loadModel(STORIES, { kvCacheFraction: 0 }), { code: 'TDM_BAD_ARGUMENT', message: /kvCacheFraction/ });
  await t.rejects(loadModel(STORIES, { kvDeviceFraction: 2 }), { code: 'TDM_BAD_ARGUMENT', message: /kvDeviceFraction/ });
  await t.rejects(loadModel(STORIES, { preemption: 'evict' as 'swap' }), { code: 'TDM_BAD_ARGUMENT', message: /'swap', 'recompute'/ });
  await t.rejects(loadModel(STORIES, { prefixCaching: 1 as unknown as boolean }), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(loadModel(STORIES, { maxQueuedRequests: -1 }), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(loadModel(STORIES, { outputBufferTokens: 0 }), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('a full queue rejects with TDM_QUEUE_FULL; results carry TTFT/TPOT metrics; stats count', async (t) => {
  const model = await loadModel(STORIES, { threads: 1, contextSize: 128, maxSequences: 1, maxQueuedRequests: 2 });
  t.teardown(() => model.dispose());
  // Token ids reach the queue in the same turn (text would be tokenized on a worker first).
  const prompt = model.tokenize('Once upon a time');
  const a = model.generate(prompt, { temperature: 0, maxTokens: 6 });
  const b = model.generate(prompt, { temperature: 0, maxTokens: 6 });
  const c = model.generate(prompt, { temperature: 0, maxTokens: 6 });
  const settled = await Promise.allSettled([a.result, b.result, c.result]);
  const refused = settled.filter((s) => s.status === 'rejected');
  t.equal(refused.length, 1, 'two wait, the third is refused');
  t.match((refused[0] as PromiseRejectedResult).reason, { code: 'TDM_QUEUE_FULL', message: /maxQueuedRequests/ });
  const ok = settled.filter((s): s is PromiseFulfilledResult<Awaited<typeof a.result>> => s.status === 'fulfilled').map((s) => s.value);
  t.same(ok[1]!.tokens, ok[0]!.tokens);
  const m = ok[1]!.metrics!;
  t.ok(m.startMs <= m.queuedMs && m.queuedMs <= m.scheduledMs! && m.scheduledMs! <= m.firstTokenMs! &&
    m.firstTokenMs! <= m.lastTokenMs! && m.lastTokenMs! <= m.finishedMs, 'the times are in order');
  t.equal(m.ttftMs, m.firstTokenMs! - m.startMs);
  t.equal(m.tpotMs, (m.lastTokenMs! - m.firstTokenMs!) / 5);
  t.ok(m.cachedPromptTokens >= 0 && m.preemptions === 0 && m.moves === 0);
  const s = model.stats;
  t.equal(s.numRequests, 2);
  t.equal(s.numFinished, 2);
  t.equal(s.numRejected, 1);
  t.equal(s.numGeneratedTokens, 12);
  t.ok(s.stepUs > 0 && Object.keys(s.phaseUs).length > 0, 'measured step times are summed');
  t.equal(s.numFreeKvBlocks, s.numKvBlocks);
});
