// Models in worker threads, as Node services and Electron apps run them: two workers load and
// generate at once, and a worker terminated in the middle of a step leaves the process running
// (before NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS, settling the step's promise while the
// worker's environment shut down threw out of node-addon-api and aborted the process).
import t from 'tap';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { loadModel } from '../../src/api/index.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const API = pathToFileURL(path.resolve('src/api/index.ts')).href;

/** A worker (with this process's loader flags, so it can import the TypeScript sources) that runs `body` with `loadModel` and `post` in scope. */
function worker(body: string): Worker {
  const code = `
    import { parentPort } from 'node:worker_threads';
    const { loadModel } = await import(${JSON.stringify(API)});
    const post = (m) => parentPort.postMessage(m);
    ${body}
  `;
  return new Worker(code, { eval: true, type: 'module' } as ConstructorParameters<typeof Worker>[1]);
}

function messages(w: Worker): { next: () => Promise<unknown> } {
  const queue: unknown[] = [];
  const waiting: ((m: unknown) => void)[] = [];
  w.on('message', (m) => (waiting.length > 0 ? waiting.shift()!(m) : queue.push(m)));
  return { next: () => (queue.length > 0 ? Promise.resolve(queue.shift()) : new Promise((r) => waiting.push(r))) };
}

t.test('two workers load and generate at once, as the main thread does', async (t) => {
  const body = `
    const m = await loadModel(${JSON.stringify(STORIES)}, { threads: 1, contextSize: 128 });
    const r = await m.generate('Once upon a time', { maxTokens: 16, temperature: 0 }).result;
    m.dispose();
    post(r.text);
  `;
  const ws = [worker(body), worker(body)];
  const texts = await Promise.all(ws.map((w) => messages(w).next()));
  const main = await loadModel(STORIES, { threads: 1, contextSize: 128 });
  const want = (await main.generate('Once upon a time', { maxTokens: 16, temperature: 0 }).result).text;
  main.dispose();
  t.same(texts, [want, want]);
  await Promise.all(ws.map((w) => w.terminate()));
});

t.test('terminating a worker in the middle of a step leaves the process running', async (t) => {
  for (let i = 0; i < 4; i++) {
    // Generates until terminated, so that a step is in flight (or just settling) when it is.
    const w = worker(`
      const m = await loadModel(${JSON.stringify(STORIES)}, { threads: 1, contextSize: 256 });
      post('loaded');
      for (let n = 0; ; n++) {
        for await (const _ of m.generate('Once upon a time', { maxTokens: 200, temperature: 0, ignoreEos: true })) {}
        if (n === 0) post('generating');
      }
    `);
    const inbox = messages(w);
    t.equal(await inbox.next(), 'loaded');
    t.equal(await inbox.next(), 'generating');
    await new Promise((r) => setTimeout(r, 5 + 7 * i));
    t.equal(await w.terminate(), 1, `worker ${i} terminated`);
  }
  const m = await loadModel(STORIES, { threads: 1, contextSize: 128 });
  const r = await m.generate('Once upon a time', { maxTokens: 8, temperature: 0 }).result;
  m.dispose();
  t.equal(r.tokens.length, 8, 'the process still generates');
});
