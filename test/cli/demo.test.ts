// `tandem demo` on a fresh cache: writes the synthetic MoE model (saying its weights are
// random), generates from it with a speed summary, and reuses the cached file next time.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { command } from '../../src/cli/commands/demo.js';

/** Runs the command in this process, capturing what it writes to stdout and stderr. */
async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  process.stdout.write = ((chunk: string | Uint8Array) => ((stdout += chunk.toString()), true)) as typeof out;
  process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += chunk.toString()), true)) as typeof err;
  try {
    return { code: await command.run(argv), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-demo-cache-'));
const saved = process.env.TANDEM_CACHE;
process.env.TANDEM_CACHE = cache;
t.teardown(() => {
  if (saved === undefined) delete process.env.TANDEM_CACHE;
  else process.env.TANDEM_CACHE = saved;
  fs.rmSync(cache, { recursive: true, force: true });
});

t.test('writes the demo model once, says it is random, and reports the speed', async (t) => {
  const first = await run(['--size', 'tiny', '-n', '8', '-t', '1', '--seed', '1']);
  t.equal(first.code, 0);
  t.match(first.stderr, /writing a synthetic mixture-of-experts model/);
  t.match(first.stderr, /vocabulary: copied from .*ggml-vocab-llama-spm\.gguf/, 'the real vocabulary beside the package is used');
  t.match(first.stderr, /weights are RANDOM/);
  t.match(first.stderr, /8 tokens, [\d.]+ tok\/s decode/);
  t.ok(first.stdout.startsWith('Once upon a time'), 'the prompt, then the generated text');
  const files = fs.readdirSync(cache);
  t.equal(files.length, 1, 'one model file in the cache, no temporary left behind');
  t.match(files[0], /^demo-moe-tiny-q8_0-llama-spm-v\d+\.gguf$/);

  const second = await run(['--size', 'tiny', '-n', '8', '-t', '1', '--seed', '1']);
  t.match(second.stderr, /using the cached demo model/);
  t.equal(second.stdout, first.stdout, 'same model and seed, same text');
});

t.test('bad demo options are usage errors', async (t) => {
  await t.rejects(run(['--size', 'huge']), { code: 'TDM_BAD_ARGUMENT', message: /unknown --size 'huge'/ });
  await t.rejects(run(['--size', 'tiny', '--type', 'q3_X']), { code: 'TDM_BAD_ARGUMENT', message: /q3_X/ });
});
