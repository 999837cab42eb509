// Random and malformed requests to the HTTP server on stories260K (fixed seed): bodies of every
// shape, fields of every type, wrong methods and paths, clients that drop mid-reply or send
// half a request, six at a time. Every request gets an answer (a JSON error object for a bad
// one, never a 5xx), and the server serves afterwards.
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { loadModel, type Model } from '../../src/api/index.js';
import { startServer, type TandemServer } from '../../src/server/index.js';
import { modelPath } from '../helpers.js';

const model: Model = await loadModel(modelPath('stories260K.gguf'), { threads: 1, contextSize: 256, maxSequences: 3 });
const server: TandemServer = await startServer(model, { port: 0, modelName: 'stories', maxBodyBytes: 65536 });
t.teardown(async () => {
  await server.close();
  await model.dispose();
});
const { port } = new URL(server.url);

let state = 7;
const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32;
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
const odd = (): unknown => pick([null, -1, 0, 1, 2.5, 1e9, 'x', '', [], {}, [1, 2], { a: 1 }, true, 'Once', ['a', 5], [[1]], -1e308]);
const GOOD: Record<string, unknown[]> = {
  temperature: [0, 0.7, 1.5], top_p: [0.5, 1], top_k: [1, 40], stop: ['.', ['a', 'the'], '\n'], stream: [true, true, false], n: [1, 2], seed: [1, 42],
  logprobs: [true, 2], top_logprobs: [0, 3], presence_penalty: [0, 0.5], frequency_penalty: [0.3], logit_bias: [{ 5: 2 }, { 10: -100 }],
  response_format: [{ type: 'json_object' }, { type: 'text' }], echo: [false], stream_options: [{ include_usage: true }], min_p: [0.05],
  repeat_penalty: [1.1], max_tokens: [1, 4, 8, 24],
};

interface Answer {
  status: number;
  body: string;
}

/** One request; `dropAfter`: the client hangs up once that many bytes of the reply came. */
function send(method: string, path: string, body: string | undefined, dropAfter?: number): Promise<Answer> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { 'content-type': pick(['application/json', 'text/plain']) } }, (res) => {
      let data = '';
      res.on('data', (d) => {
        data += d;
        if (dropAfter !== undefined && data.length > dropAfter) req.destroy();
      });
      res.on('close', () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on('error', () => resolve({ status: -1, body: '' }));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function request(): { method: string; path: string; body: string | undefined; dropAfter: number | undefined } {
  const path = pick(['/v1/completions', '/v1/chat/completions', '/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/models', '/nope']);
  const method = path === '/v1/models' ? 'GET' : pick(['POST', 'POST', 'POST', 'POST', 'PUT']);
  let body: string;
  if (next() < 0.05) {
    body = pick(['{', 'null', '[]', '"x"', '{"prompt":', '\u0000', 'x'.repeat(100000), '{"messages": "hi"}', '5']);
  } else {
    const o: Record<string, unknown> = {};
    if (path.includes('embeddings')) {
      o.input = next() < 0.8 ? pick(['Once upon a time', '', [1, 2, 3], ['a', 'b'], [[1, 2]], [-1], [99999], new Array(300).fill(5)]) : odd();
      if (next() < 0.3) o.encoding_format = next() < 0.7 ? pick(['float', 'base64']) : odd();
      if (next() < 0.3) o.dimensions = next() < 0.7 ? pick([1, 16, 64]) : odd();
    } else if (path.includes('chat')) {
      o.messages = next() < 0.8 ? [{ role: pick(['user', 'system', 'assistant', 'tool', 'bogus']), content: pick(['hi', 'Once upon a time', '', odd()]) }] : odd();
    } else {
      o.prompt = next() < 0.8 ? pick(['Once upon a time', '', [1, 2, 3], ['a', 'b'], [[1, 2]], [-1], [99999]]) : odd();
    }
    for (const k of Object.keys(GOOD)) if (next() < 0.3) o[k] = next() < 0.25 ? odd() : pick(GOOD[k]!);
    if (o.max_tokens === undefined) o.max_tokens = 8;
    body = JSON.stringify(o);
  }
  return { method, path, body: method === 'GET' ? undefined : body, dropAfter: next() < 0.15 ? Math.floor(next() * 200) : undefined };
}

t.test('every request answered, bad ones with a JSON error, none with a 5xx; the server serves after', async (t) => {
  const statuses: Record<number, number> = {};
  const problems: string[] = [];
  for (let round = 0; round < 60; round++) {
    await Promise.all(Array.from({ length: 6 }, async () => {
      const q = request();
      if (next() < 0.03) {
        // Half a request, then gone.
        const c = net.connect(Number(port), '127.0.0.1');
        c.on('error', () => {});
        c.write('POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"pro');
        setTimeout(() => c.destroy(), 10);
      }
      const a = await send(q.method, q.path, q.body, q.dropAfter);
      statuses[a.status] = (statuses[a.status] ?? 0) + 1;
      const what = `${q.method} ${q.path} ${q.body?.slice(0, 120)} -> ${a.status} ${a.body.slice(0, 160)}`;
      if (a.status >= 500) problems.push(what);
      if (a.status >= 400 && a.status < 500) {
        try {
          if (!(JSON.parse(a.body) as { error?: unknown }).error) problems.push(`no error object: ${what}`);
        } catch {
          problems.push(`not JSON: ${what}`);
        }
      }
    }));
  }
  t.same(problems, [], `answers by status: ${JSON.stringify(statuses)}`);
  t.ok((statuses[200] ?? 0) > 20 && (statuses[400] ?? 0) > 20, 'both replies and refusals drawn');
  const health = (await (await fetch(server.url + '/health')).json()) as { status: string; running: number };
  t.equal(health.status, 'ok');
  const reply = (await (await fetch(server.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 8, temperature: 0 }) })).json()) as { choices: { text: string }[] };
  t.match(reply.choices[0]!.text, /^, there was a little girl/, 'and a greedy completion is what it was');
});
