// `tandem generate` as a user runs it: a continuation of stories260K streamed to stdout,
// a summary on stderr, stop strings, and usage errors that say what is wrong.
import { spawn } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { command, loadOptionsFrom } from '../../src/cli/commands/generate.js';
import { modelPath, repoRoot } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const CONTINUATION = ', there was a little girl named Lily. She loved to play outside in the park.';

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

t.test('the tandem binary streams a continuation (a child process, through main.ts)', async (t) => {
  const child = spawn(
    process.execPath,
    [...process.execArgv, path.join(repoRoot, 'src', 'cli', 'main.ts'), 'generate', '-m', STORIES, '-t', '1', '-n', '16', '--temp', '0', 'Once upon a time'],
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const code = await new Promise((resolve) => child.on('close', resolve));
  t.equal(code, 0, stderr);
  t.ok(CONTINUATION.startsWith(stdout.trimEnd()) && stdout.length > 30, `stdout: ${JSON.stringify(stdout)}`);
  t.match(stderr, /16 tokens, [\d.]+ tok\/s decode, prompt 5 tokens.*stopped: maxTokens/);
});

t.test('sampling flags and --stop', async (t) => {
  const r = await run(['-m', STORIES, '-t', '1', '--temp', '0', '--stop', 'Lily', 'Once upon a time']);
  t.equal(r.code, 0);
  t.equal(r.stdout, ', there was a little girl named \n');
  t.match(r.stderr, /stopped: stop/);
  const a = await run(['-m', STORIES, '-t', '1', '-n', '12', '--temp', '1', '--top-k', '0', '--seed', '5', 'The dog']);
  const b = await run(['-m', STORIES, '-t', '1', '-n', '12', '--temp', '1', '--top-k', '0', '--seed', '5', 'The dog']);
  t.equal(a.stdout, b.stdout, '--seed makes sampling repeatable');
  const p = await run(['-m', STORIES, '-t', '1', '-n', '12', '--temp', '0', '-p', 'Once upon a time']);
  t.equal(p.stdout, ', there was a little girl named Lily. She\n', '-p gives the prompt, as llama.cpp takes it');
});

t.test('usage errors say what is wrong', async (t) => {
  await t.rejects(run(['hello']), { code: 'TDM_BAD_ARGUMENT', message: /-m FILE is required/ });
  await t.rejects(run(['-m', STORIES, '--bogus', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /Unknown option '--bogus'/ });
  await t.rejects(run(['-m', STORIES, '--temp', 'hot', 'x']), { message: /--temp expects a number, got 'hot'/ });
  await t.rejects(run(['-m', STORIES, '-t', '1', '--temp=-2', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /temperature must be a number >= 0/ });
  await t.rejects(run(['-m', '/no/such.gguf', 'x']), { code: 'TDM_NOT_FOUND' });
  await t.rejects(run(['-m', STORIES, '-p', 'x', 'y']), { code: 'TDM_BAD_ARGUMENT', message: /either with -p or as the argument/ });
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /usage: tandem generate -m FILE/);
});

t.test('--device and --policy reach loadModel (the CPU stand-in plays the device)', async (t) => {
  const r = await run(['-m', STORIES, '-t', '1', '-n', '16', '--temp', '0', '--device', 'cpu-standin', '--policy', 'overlap', 'Once upon a time']);
  t.equal(r.code, 0, r.stderr);
  t.ok(CONTINUATION.startsWith(r.stdout.trimEnd()) && r.stdout.length > 30, `the stand-in gives the CPU path's greedy text: ${JSON.stringify(r.stdout)}`);
  await t.rejects(run(['-m', STORIES, '--device', 'tpu', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /device/ });
  await t.rejects(run(['-m', STORIES, '--device', 'cpu-standin', '--policy', 'fastest', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /policy/ });
  await t.rejects(run(['-m', STORIES, '--device-weight-mib', 'lots', 'x']), { message: /--device-weight-mib expects a number/ });
  await t.rejects(run(['-m', STORIES, '--device', 'cpu-standin', '--experts', 'dynamic', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /needs a MoE model/ }, '--experts reaches loadModel');
  // stories260K's heads of 8 are not whole q8_0 blocks: the refusal shows that the flag arrives.
  await t.rejects(run(['-m', STORIES, '--kv-type', 'q8_0', 'x']), { code: 'TDM_UNSUPPORTED', message: /q8_0/ }, '--kv-type reaches loadModel');
  await t.rejects(run(['-m', STORIES, '--kv-type', 'q4', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /kvType/ });
  const ref = await run(['-m', STORIES, '-t', '1', '-n', '16', '--temp', '0', '--cpu-kernels', 'ref', 'Once upon a time']);
  t.ok(CONTINUATION.startsWith(ref.stdout.trimEnd()) && ref.stdout.length > 30, `--cpu-kernels ref gives the same text: ${JSON.stringify(ref.stdout)}`);
  await t.rejects(run(['-m', STORIES, '--cpu-kernels', 'neon', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /cpuKernels/ }, '--cpu-kernels reaches loadModel');
  const drafted = await run(['-m', STORIES, '-t', '1', '-n', '16', '--temp', '0', '--draft', '3', 'Once upon a time']);
  t.equal(drafted.stdout, ref.stdout, '--draft: the same text');
  await t.rejects(run(['-m', STORIES, '--draft', '99', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /draftTokens/ }, '--draft reaches loadModel');
  const single = await run(['-m', STORIES, '-t', '1', '-n', '16', '--temp', '0', '--decode-burst', '1', 'Once upon a time']);
  t.equal(single.stdout, ref.stdout, '--decode-burst 1: the same text');
  await t.rejects(run(['-m', STORIES, '--decode-burst', '0', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /decodeBurst/ }, '--decode-burst reaches loadModel');
});

t.test('--no-kv-stream keeps the host KV tier pageable (loadModel kvStream: false)', async (t) => {
  t.equal(loadOptionsFrom({ 'no-kv-stream': true }).kvStream, false);
  t.equal(loadOptionsFrom({}).kvStream, undefined, 'by default loadModel decides');
  const r = await run(['-m', STORIES, '-t', '1', '-n', '4', '--temp', '0', '--no-kv-stream', 'Once upon a time']);
  t.equal(r.code, 0, 'the CPU path ignores it');
});
