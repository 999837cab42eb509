// `tandem embed`: one JSON vector a line, as model.embed() computes them, and usage errors.
import t from 'tap';
import { loadModel } from '../../src/api/index.js';
import { command } from '../../src/cli/commands/embed.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');

async function run(argv: string[]): Promise<{ code: number; stdout: string }> {
  let stdout = '';
  const out = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array) => ((stdout += chunk.toString()), true)) as typeof out;
  try {
    return { code: await command.run(argv), stdout };
  } finally {
    process.stdout.write = out;
  }
}

t.test('a vector a text, in order, as embed() gives them', async (t) => {
  const texts = ['Once upon a time', 'The cat sat'];
  const { code, stdout } = await run(['-m', STORIES, '-t', '1', '--pooling', 'mean', ...texts]);
  t.equal(code, 0);
  const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as number[]);
  t.equal(lines.length, 2);
  const model = await loadModel(STORIES, { threads: 1 });
  t.teardown(() => model.dispose());
  for (const [i, text] of texts.entries()) {
    const want = await model.embed(text, { pooling: 'mean' });
    t.ok(lines[i]!.every((x, k) => Math.abs(x - want[k]!) < 1e-6), `text ${i}`);
  }
  const raw = JSON.parse((await run(['-m', STORIES, '-t', '1', '--no-normalize', texts[0]!])).stdout) as number[];
  const rawWant = await model.embed(texts[0]!, { normalize: false });
  t.ok(raw.every((x, k) => Math.abs(x - rawWant[k]!) < 1e-5), '--no-normalize: the raw vector');
});

t.test('usage errors', async (t) => {
  await t.rejects(run([STORIES]), { code: 'TDM_BAD_ARGUMENT', message: /-m FILE is required/ });
  await t.rejects(run(['-m', STORIES, '--pool', 'mean', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /embed:/ });
  await t.rejects(run(['-m', STORIES, '--pooling', 'max', 'x']), { code: 'TDM_BAD_ARGUMENT', message: /pooling must be/ });
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /usage: tandem embed/);
});
