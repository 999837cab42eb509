// Fuzz test of the GGUF reader and describeModel: thousands of seeded mutations of
// valid files (bit flips, corrupted length fields, truncations, splices), each opened
// in a child process; every outcome must be success or a TandemError with a TDM_ code,
// with no crash and no memory growth. Reproduce a failure with TANDEM_FUZZ_SEED and
// TANDEM_FUZZ_CASE (the index printed with it); TANDEM_FUZZ_SCALE multiplies the case counts.
import { fork } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { modelPath } from '../helpers.js';
import type { FuzzConfig, FuzzMessage } from './gguf-fuzz-worker.js';
import { removeTemp, tempDir } from './gguf-test-writer.js';

t.teardown(removeTemp);

const worker = path.join(path.dirname(fileURLToPath(import.meta.url)), 'gguf-fuzz-worker.ts');
const seed = Number(process.env.TANDEM_FUZZ_SEED ?? 0x5eed1e55);
const only = process.env.TANDEM_FUZZ_CASE === undefined ? undefined : Number(process.env.TANDEM_FUZZ_CASE);
const scale = Number(process.env.TANDEM_FUZZ_SCALE ?? 1);
// The vocabulary file costs ~10x more per case (32,000 token strings become JS values).
const sources = [
  { file: modelPath('stories260K.gguf'), cases: Math.round(2000 * scale) },
  { file: modelPath('vocab/ggml-vocab-llama-spm.gguf'), cases: Math.round(400 * scale) },
];
const totalCases = sources.reduce((a, s) => a + s.cases, 0);
// A native leak would grow with the case count; the JS heap settles well below this.
const RSS_GROWTH_LIMIT = 128 * 1024 * 1024;
const CHILD_TIMEOUT_MS = 120_000;

t.test(only === undefined ? `${totalCases} mutated GGUF files (seed ${seed})` : `mutated GGUF case ${only} (seed ${seed})`, async (t) => {
  const dir = tempDir();
  const cfg: FuzzConfig = {
    sources,
    seed,
    dir,
    only,
    progressFile: path.join(dir, 'progress.json'),
  };
  const messages: FuzzMessage[] = [];
  const child = fork(worker, [JSON.stringify(cfg)], {
    execArgv: [...process.execArgv, '--expose-gc'],
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.on('message', (m) => messages.push(m as FuzzMessage));
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  clearTimeout(timer);

  const last = existsSync(cfg.progressFile) ? readFileSync(cfg.progressFile, 'utf8') : '(none)';
  const done = messages.find((m): m is Extract<FuzzMessage, { kind: 'done' }> => m.kind === 'done');
  if (!done || code !== 0) {
    t.fail(`the fuzz worker died (exit ${code}, signal ${signal}) during case ${last} with seed ${seed}; stderr:\n${stderr.slice(-4000)}`);
    return;
  }
  const bad = messages.filter((m): m is Extract<FuzzMessage, { kind: 'bad' }> => m.kind === 'bad');
  t.equal(bad.length, 0, 'every outcome is success or a TandemError with a TDM_ code');
  for (const b of bad.slice(0, 5)) t.comment(`case ${b.index} (${b.source}: ${b.what}) threw ${b.error}`);

  const total = Object.values(done.outcomes).reduce((a, b) => a + b, 0);
  t.equal(total, only === undefined ? totalCases : 1, 'every case ran');
  t.comment(`outcomes: ${JSON.stringify(done.outcomes)}`);
  if (only === undefined) {
    // The mutations must reach the checks, not just bounce off the magic: most cases
    // are refused as bad files, and some still open (flips inside values, say).
    t.ok((done.outcomes.TDM_BAD_GGUF ?? 0) > total * 0.3, 'many mutations are caught as TDM_BAD_GGUF');
    t.ok((done.outcomes.ok ?? 0) + (done.outcomes.TDM_UNSUPPORTED ?? 0) > 0, 'some mutated files still open');
  }
  const mib = (n: number) => (n / 1048576).toFixed(1);
  t.comment(`RSS after warm-up ${mib(done.rssStartBytes)} MiB, max ${mib(done.rssMaxBytes)} MiB, end ${mib(done.rssEndBytes)} MiB`);
  t.ok(done.rssMaxBytes - done.rssStartBytes < RSS_GROWTH_LIMIT, `RSS grows less than ${mib(RSS_GROWTH_LIMIT)} MiB`);
});
