// `tandem serve` as a user runs it: a child process that serves stories260K, answers an
// OpenAI request with the server defaults the flags set, and stops cleanly on SIGINT; and
// its usage errors.
import { spawn } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { command } from '../../src/cli/commands/serve.js';
import { modelPath, repoRoot } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');

t.test('tandem serve answers requests and stops on SIGINT', async (t) => {
  const child = spawn(
    process.execPath,
    [...process.execArgv, path.join(repoRoot, 'src', 'cli', 'main.ts'), 'serve', '-m', STORIES, '-t', '1', '--port', '0', '--temp', '0', '-n', '12', '--parallel', '2'],
    { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      const m = /serving stories260K at (http:\/\/\S+)\/v1/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    closed.then(() => reject(new Error(`serve exited: ${stderr}`)));
  });
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'Once upon a time' }) });
  const json = await res.json();
  t.equal(res.status, 200);
  t.equal(json.model, 'stories260K', 'the model id is the file name');
  t.equal(json.choices[0].text, ', there was a little girl named Lily. She', '--temp 0 and -n 12 are the defaults');
  t.equal(json.usage.completion_tokens, 12);
  child.kill('SIGINT');
  t.equal(await closed, 0, stderr);
  t.match(stderr, /stopping/);
});

t.test('usage errors', async (t) => {
  await t.rejects(command.run([]), { code: 'TDM_BAD_ARGUMENT', message: /-m FILE is required/ });
  await t.rejects(command.run(['-m', STORIES, '--port', '70000']), { code: 'TDM_BAD_ARGUMENT', message: /--port expects an integer from 0 to 65535/ });
  await t.rejects(command.run(['-m', STORIES, '--parallel', '0']), { code: 'TDM_BAD_ARGUMENT', message: /--parallel/ });
  await t.rejects(command.run(['-m', STORIES, 'extra']), { code: 'TDM_BAD_ARGUMENT', message: /unexpected argument 'extra'/ });
  await t.rejects(command.run(['-m', STORIES, '--bogus']), { code: 'TDM_BAD_ARGUMENT', message: /Unknown option/ });
  await t.rejects(command.run(['-m', '/no/such.gguf', '--temp=-2']), { code: 'TDM_BAD_ARGUMENT', message: /temperature/ }, 'sampling flags are checked before the model loads');
});
