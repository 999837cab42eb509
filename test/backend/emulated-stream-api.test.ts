// Streamed host KV through the whole public API on the emulated GPU: auto's choice, the
// scheduler's plan, the executor's gathers and the tokens. The emulated device's CPU attention
// is as cheap as its own, so a measured profile never makes auto stream; here the profile's
// CPU attention tables are rewritten 10^4 times slower (a host far slower than its device, as
// next to a T4), which is all auto sees of the machine.
import t from 'tap';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadModel, type LoadModelOptions } from '../../src/api/index.js';
import { emulatedLibDir, noCompiler } from './emulated-build.js';
import { modelPath } from '../helpers.js';

const built = noCompiler ? { dir: '', error: noCompiler } : await emulatedLibDir();
process.env.TANDEM_GPU_LIB_DIR = built.dir;
const skip = noCompiler || (built.error ? `the emulation did not build: ${built.error.slice(0, 200)}` : false);

t.test('auto streams host KV through the public API where its profile prices the CPU high, and the tokens stay the CPU path\'s', { skip }, async (t) => {
  const file = modelPath('stories260K.gguf');
  // Chunks of 16 keep the first use's profile (cut to what the model runs) short.
  const base = { threads: 1, contextSize: 128, maxSequences: 4, prefillChunkTokens: 16 };
  const plain = await loadModel(file, base);
  const prompts = ['Once upon a time', 'The little dog', 'Tom and Sue went to the'].map((p) => plain.tokenize(p));
  const greedy = { maxTokens: 16, temperature: 0, ignoreEos: true };
  const want = await Promise.all(prompts.map((p) => plain.generate(p, greedy).result));
  const blockBytes = plain.info.kvBlockBytes;
  plain.dispose();

  const cacheDir = mkdtempSync(path.join(tmpdir(), 'tandem-stream-api-'));
  // A device KV tier of two blocks: the three requests cannot all keep their KV on the device.
  const opts: LoadModelOptions = { ...base, device: 'gpu', policy: 'auto', kvDeviceBytes: 2 * blockBytes, profileCacheDir: cacheDir };
  const first = await loadModel(file, opts);
  const profileFile = first.info.profile?.file;
  t.equal(first.info.profile?.source, 'profiled');
  t.equal(first.info.kvStream, true);
  first.dispose();
  t.ok(profileFile, 'the profile was cached');
  const body = JSON.parse(readFileSync(profileFile!, 'utf8'));
  body.tables.cpuAttention.values = body.tables.cpuAttention.values.map((row: number[]) => row.map((v) => v * 1e4));
  body.tables.cpuPrefillAttention.ys = body.tables.cpuPrefillAttention.ys.map((v: number) => v * 1e4);
  writeFileSync(profileFile!, JSON.stringify(body));

  for (const kvStream of [true, false]) {
    const m = await loadModel(file, { ...opts, kvStream });
    t.equal(m.info.profile?.source, 'cache', 'the rewritten profile is the one read');
    let hostSteps = 0;
    const off = m.onStep((s) => (hostSteps += s.sequences.host > 0 ? 1 : 0));
    const got = await Promise.all(prompts.map((p) => m.generate(p, greedy).result));
    off();
    const { streamed } = m.stats.policy!;
    m.dispose();
    for (let i = 0; i < prompts.length; i++) t.same(got[i]!.tokens, want[i]!.tokens, `kvStream ${kvStream}: request ${i} gives the CPU path's greedy tokens`);
    t.ok(hostSteps > 0, `kvStream ${kvStream}: ${hostSteps} steps ran host-tier sequences`);
    if (kvStream) t.ok(streamed > 0, `auto streamed ${streamed} sequence-steps`);
    else t.equal(streamed, 0, 'kvStream false: nothing streamed');
  }
});
