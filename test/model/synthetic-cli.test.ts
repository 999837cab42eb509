// `tandem make-model`: options become a spec, the file is written and summarised, and
// every bad option is a TDM_BAD_ARGUMENT with a message that says what to fix.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { command, parseMakeModelArgs } from '../../src/cli/commands/make-model.js';
import { GgufFile } from '../../src/model/gguf.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tandem-make-model-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the command with console.log captured. */
async function run(argv: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(' '));
  try {
    return { code: await command.run(argv), out: lines.join('\n') };
  } finally {
    console.log = log;
  }
}

t.test('options become a spec', async (t) => {
  const { spec, output } = parseMakeModelArgs([
    '--arch', 'qwen3moe', '--preset', 'tiny', '--type', 'Q4_K_M', '--seed', '9', '-o', 'x.gguf',
    '--n-embd', '512', '--n-head', '8', '--head-dim', '128', '--n-expert', '8', '--n-expert-used', '2',
    '--n-ff-expert', '256', '--rope-freq-base', '1e6', '--rms-eps', '1e-6',
  ]);
  t.equal(output, 'x.gguf');
  t.same(spec, {
    architecture: 'qwen3moe', preset: 'tiny', type: 'q4_K_M', seed: 9, nEmbd: 512, nHead: 8, headDim: 128,
    nExpert: 8, nExpertUsed: 2, nFfExpert: 256, ropeFreqBase: 1e6, rmsEps: 1e-6,
  });
});

t.test('gpt-oss options: sliding window and rope scaling', async (t) => {
  const { spec } = parseMakeModelArgs(['--arch', 'gpt-oss', '--sliding-window', '64', '--rope-scaling', 'yarn:32:4096', '-o', 'x.gguf']);
  t.same(spec, { architecture: 'gpt-oss', slidingWindow: 64, ropeScaling: { type: 'yarn', factor: 32, originalContext: 4096 } });
  t.same(parseMakeModelArgs(['--rope-scaling', 'linear:2', '-o', 'x']).spec, { ropeScaling: { type: 'linear', factor: 2 } });
  t.same(parseMakeModelArgs(['--arch', 'gemma3', '--preset', 'gemma3-1b', '--tied-embeddings', '-o', 'x']).spec, { architecture: 'gemma3', preset: 'gemma3-1b', tiedEmbeddings: true });
  t.same(parseMakeModelArgs(['--rope-scaling', 'yarn:4', '-o', 'x']).spec, { ropeScaling: { type: 'yarn', factor: 4 } });
  t.same(parseMakeModelArgs(['--arch', 'gemma2', '--softcaps', '20:0', '-o', 'x']).spec, { architecture: 'gemma2', softcaps: { attention: 20, final: 0 } });
  for (const bad of ['20', '20:', 'a:1', '1:2:3']) {
    t.throws(() => parseMakeModelArgs(['--softcaps', bad, '-o', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /--softcaps/ }, bad);
  }
  for (const bad of ['yarn', 'linear:2:64', 'ntk:2', 'yarn:x', 'yarn:4:1.5']) {
    t.throws(() => parseMakeModelArgs(['--rope-scaling', bad, '-o', 'x']), { code: 'TDM_BAD_ARGUMENT' }, bad);
  }
});

t.test('writes the model and a summary', async (t) => {
  const file = path.join(dir, 'moe.gguf');
  const r = await run(['--arch', 'llama', '--n-expert', '4', '--type', 'q8_0', '--seed', '3', '-o', file]);
  t.equal(r.code, 0);
  t.match(r.out, /wrote .*moe\.gguf/);
  t.match(r.out, /llama, preset tiny, q8_0, seed 3/);
  t.match(r.out, /4 experts top-2/);
  const f = GgufFile.open(file);
  t.equal(f.getNumber('llama.expert_count'), 4);
  t.equal(f.tensor('blk.0.ffn_up_exps.weight')?.type, 'q8_0');
  f.close();
  const json = await run(['--type', 'f32', '--n-layer', '1', '--json', '--force', '-o', file]);
  const report = JSON.parse(json.out);
  t.equal(report.spec.type, 'f32');
  t.equal(report.nTensors, 12);
  t.equal(report.parameterCount, 256 * 512 * 2 + 256 * 2 + 256 * 256 * 2 + 256 * 128 * 2 + 256 * 512 * 3 + 256);
});

t.test('bad options are usage errors', async (t) => {
  const existing = path.join(dir, 'exists.gguf');
  writeFileSync(existing, 'x');
  const cases: [string[], RegExp][] = [
    [['--arch', 'gpt2', '-o', 'x'], /unknown --arch 'gpt2'/],
    [['--preset', 'giant', '-o', 'x'], /unknown --preset 'giant'/],
    [['--type', 'iq1_s', '-o', 'x'], /unknown --type 'iq1_s'/],
    [['--seed', 'abc', '-o', 'x'], /--seed expects a non-negative integer/],
    [['--n-layer=-2', '-o', 'x'], /--n-layer expects a non-negative integer/],
    [['--rms-eps', 'tiny', '-o', 'x'], /--rms-eps expects a number/],
    [['--bogus', '-o', 'x'], /unknown option '--bogus'/],
    [['stray', '-o', 'x'], /unexpected argument 'stray'/],
    [[], /-o FILE is required/],
    [['-o', existing], /exists; pass --force/],
    [['-o', dir], /is a directory/],
    [['--n-head', '3', '-o', path.join(dir, 'y.gguf')], /headDim must be an even integer/],
  ];
  for (const [argv, message] of cases) {
    await t.rejects(run(argv), { code: 'TDM_BAD_ARGUMENT', message }, argv.join(' ') || '(no options)');
  }
  await t.rejects(run(['--vocab', path.join(dir, 'none.gguf'), '-o', path.join(dir, 'z.gguf')]), { code: 'TDM_NOT_FOUND' });
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.out, /usage: tandem make-model/);
});
