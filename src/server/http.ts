// An OpenAI-compatible HTTP server over one loaded model: /v1/completions and
// /v1/chat/completions (whole responses or server-sent events), /v1/embeddings, /v1/models
// and /health.
// Concurrent requests share the model's decode steps like concurrent generate() calls; a
// client that disconnects aborts its generations, which frees their KV at the next step.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { TandemError, type GenerateOptions, type Generation, type GenerationResult, type Model } from '../api/index.js';
import { checkNumber, resolveGenerateOptions } from '../api/options.js';
import { embeddingResponse, parseChatRequest, parseCompletionRequest, parseEmbeddingRequest, RequestError, ResponseShape, type SamplingRequest } from './openai.js';

export interface ServerOptions {
  /** Interface to listen on. Default '127.0.0.1' (this machine only). */
  host?: string;
  /** Port; 0 picks a free one. Default 8080. */
  port?: number;
  /** The model id /v1/models lists and responses carry. Default 'tandem'. */
  modelName?: string;
  /** Largest request body, bytes. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Sampling options a request's fields override (e.g. the CLI's --temp). */
  defaults?: GenerateOptions;
  /**
   * Web origin allowed to call the server from a browser (CORS), e.g. 'http://localhost:3000',
   * or '*' for any. Default none: a page on another origin cannot read the answers.
   */
  corsOrigin?: string;
}

export interface TandemServer {
  /** http://host:port */
  readonly url: string;
  readonly port: number;
  /** Stops accepting, aborts the generations in flight and closes every connection (the model stays loaded). */
  close(): Promise<void>;
}

const JSON_HEADERS = { 'content-type': 'application/json' };

/** The HTTP status and OpenAI error of anything a handler threw. */
function asRequestError(err: unknown): RequestError {
  if (err instanceof RequestError) return err;
  if (err instanceof TandemError) {
    switch (err.code) {
      case 'TDM_BAD_ARGUMENT':
      case 'TDM_UNSUPPORTED':
        return new RequestError(400, err.message, null, err.code);
      case 'TDM_CONTEXT_FULL':
        return new RequestError(400, err.message, null, 'context_length_exceeded');
      case 'TDM_QUEUE_FULL':
        return new RequestError(503, err.message, null, 'server_busy');
      case 'TDM_DISPOSED':
        return new RequestError(503, err.message, null, 'model_unloaded');
      default:
        return new RequestError(500, err.message, null, err.code);
    }
  }
  return new RequestError(500, err instanceof Error ? err.message : String(err));
}

function errorBody(e: RequestError) {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { ...JSON_HEADERS, ...headers });
  res.end(JSON.stringify(body));
}

function sendError(res: http.ServerResponse, err: unknown): void {
  const e = asRequestError(err);
  sendJson(res, e.status, errorBody(e), e.status === 503 ? { 'retry-after': '1' } : {});
}

/** The request body as JSON; a body over `limit` bytes is refused with 413 (and no more of it kept). */
function readJson(req: http.IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return Promise.reject(new RequestError(413, `request body of ${declared} bytes is over the limit of ${limit}`, null, 'body_too_large'));
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const onData = (part: Buffer) => {
      size += part.length;
      if (size > limit) {
        req.off('data', onData);
        req.pause();
        reject(new RequestError(413, `request body is over the limit of ${limit} bytes`, null, 'body_too_large'));
        return;
      }
      parts.push(part);
    };
    req.on('data', onData);
    req.once('error', reject);
    req.once('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(parts).toString('utf8'));
      } catch (err) {
        reject(new RequestError(400, `the body is not JSON: ${(err as Error).message}`, null, 'invalid_json'));
        return;
      }
      if (typeof body !== 'object' || body === null || Array.isArray(body)) reject(new RequestError(400, 'the body must be a JSON object', null, 'invalid_json'));
      else resolve(body as Record<string, unknown>);
    });
  });
}

/** Writes one server-sent event; waits while the socket's buffer is full (or until it closes). */
async function sendEvent(res: http.ServerResponse, data: unknown): Promise<void> {
  if (res.destroyed || res.writableEnded) return;
  if (res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * Starts listening; resolves once the port is bound. Bad options reject with
 * TDM_BAD_ARGUMENT, a port that cannot be bound with TDM_IO.
 */
export async function startServer(model: Model, options: ServerOptions = {}): Promise<TandemServer> {
  const where = 'startServer()';
  const port = checkNumber(where, 'port', options.port, 8080, { min: 0, max: 65535, integer: true });
  const maxBody = checkNumber(where, 'maxBodyBytes', options.maxBodyBytes, 2 ** 20, { min: 1, integer: true });
  const host = options.host ?? '127.0.0.1';
  const modelName = options.modelName ?? 'tandem';
  for (const [name, v] of Object.entries({ host, modelName, corsOrigin: options.corsOrigin ?? '*' })) {
    if (typeof v !== 'string' || v.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', `${where}: ${name} must be a non-empty string`);
  }
  const defaults = options.defaults ?? {};
  // The defaults are checked once here, so that a bad one fails the start, not every request.
  resolveGenerateOptions(`${where} defaults`, defaults, model.info.nVocab, new Set(model.eogTokens));
  const inFlight = new Set<AbortController>();
  const created = Math.floor(Date.now() / 1000);

  /**
   * Runs the n choices of each of nPrompts prompts (choice i is prompt floor(i / n)); streams
   * them as events or answers with the whole response.
   */
  async function generateAll(
    res: http.ServerResponse,
    shape: ResponseShape,
    req: SamplingRequest,
    nPrompts: number,
    start: (options: GenerateOptions, choice: number) => Generation,
  ) {
    const controller = new AbortController();
    inFlight.add(controller);
    // A client that goes away before its answer is complete aborts its generations.
    const onClose = () => {
      if (!res.writableFinished) controller.abort();
    };
    res.on('close', onClose);
    const gens: Generation[] = [];
    try {
      for (let i = 0; i < nPrompts * req.n; i++) {
        // n choices of one prompt differ: each gets its own seed when a seed is given.
        const seed = req.options.seed === undefined ? undefined : req.options.seed + (i % req.n);
        gens.push(start({ ...req.options, ...(seed === undefined ? {} : { seed }), signal: controller.signal }, i));
      }
      // Prompt tokens count once per prompt, not once per choice.
      const promptTokens = (results: GenerationResult[]) => results.filter((_, i) => i % req.n === 0).reduce((a, r) => a + r.usage.promptTokens, 0);
      if (!req.stream) {
        const results = await Promise.all(gens.map((g) => g.result));
        if (!controller.signal.aborted) sendJson(res, 200, shape.response(results, promptTokens(results)));
        return;
      }
      // The stream starts only once every prompt is accepted, so that a bad one is an HTTP error.
      const results = await Promise.all(
        gens.map(async (g, i) => {
          const it = g[Symbol.asyncIterator]();
          const first = await it.next();
          return { g, i, it, first };
        }),
      );
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      const finished = await Promise.all(
        results.map(async ({ g, i, it, first }) => {
          if (shape.endpoint === 'chat') await sendEvent(res, shape.chunk(i, { role: true, text: '' }));
          for (let step = first; !step.done; step = await it.next()) {
            const { text, reasoning, logprobs } = step.value;
            if (text || reasoning || logprobs) await sendEvent(res, shape.chunk(i, { text, ...(reasoning ? { reasoning } : {}), ...(logprobs ? { logprobs } : {}) }));
          }
          const result = await g.result;
          await sendEvent(res, shape.chunk(i, { finish: result }));
          return result;
        }),
      );
      if (req.includeUsage) {
        await sendEvent(res, shape.usageChunk(promptTokens(finished), finished.reduce((a, r) => a + r.usage.completionTokens, 0)));
      }
      await sendEvent(res, '[DONE]');
      res.end();
    } catch (err) {
      for (const g of gens) g.abort();
      if (!res.headersSent) sendError(res, err);
      else if (!res.destroyed) {
        // Already streaming: the error goes out as one last event.
        await sendEvent(res, errorBody(asRequestError(err)));
        res.end();
      }
    } finally {
      res.off('close', onClose);
      inFlight.delete(controller);
    }
  }

  /** Every input's unit vector (model.embed, sharing steps with the generations), in input order. */
  async function embedAll(res: http.ServerResponse, body: Record<string, unknown>) {
    const r = parseEmbeddingRequest(body, model.info.nEmbd);
    const controller = new AbortController();
    inFlight.add(controller);
    const onClose = () => {
      if (!res.writableFinished) controller.abort();
    };
    res.on('close', onClose);
    try {
      // Tokenized here as embed() tokenizes text, so that usage counts what ran.
      const ids = r.inputs.map((x) => (typeof x === 'string' ? model.tokenize(x) : x));
      const vectors = await Promise.all(ids.map((t) => model.embed(t, { signal: controller.signal })));
      if (!controller.signal.aborted) sendJson(res, 200, embeddingResponse(modelName, vectors, ids.reduce((a, t) => a + t.length, 0), r));
    } catch (err) {
      controller.abort();
      throw err;
    } finally {
      res.off('close', onClose);
      inFlight.delete(controller);
    }
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    const routes: Record<string, string> = {
      '/health': 'GET',
      '/v1/models': 'GET',
      '/v1/completions': 'POST',
      '/v1/chat/completions': 'POST',
      '/v1/embeddings': 'POST',
    };
    const method = routes[path];
    if (method === undefined) throw new RequestError(404, `no route ${req.method} ${path}`, null, 'not_found');
    if (req.method !== method) {
      res.setHeader('allow', method);
      throw new RequestError(405, `${path} takes ${method}, not ${req.method}`, null, 'method_not_allowed');
    }
    if (path === '/health') {
      const s = model.stats;
      sendJson(res, 200, { status: 'ok', model: modelName, running: s.numRunning, waiting: s.numWaiting, free_kv_blocks: s.numFreeKvBlocks });
      return;
    }
    if (path === '/v1/models') {
      sendJson(res, 200, { object: 'list', data: [{ id: modelName, object: 'model', created, owned_by: 'tandem' }] });
      return;
    }
    const body = await readJson(req, maxBody);
    if (path === '/v1/embeddings') {
      await embedAll(res, body);
    } else if (path === '/v1/completions') {
      const r = parseCompletionRequest(body, defaults);
      await generateAll(res, new ResponseShape('completion', modelName), r, r.prompts.length, (o, i) => model.generate(r.prompts[Math.floor(i / r.n)]!, o));
    } else {
      const r = parseChatRequest(body, defaults, model.info.replyFormat.toolCalls !== null);
      const chatOptions = { ...(r.templateVariables ? { templateVariables: r.templateVariables } : {}), ...(r.reasoning ? { reasoning: r.reasoning } : {}) };
      await generateAll(res, new ResponseShape('chat', modelName), r, 1, (o) => model.chat(r.messages, { ...o, ...chatOptions }));
    }
  }

  const cors = options.corsOrigin;
  const server = http.createServer((req, res) => {
    if (cors !== undefined) {
      res.setHeader('access-control-allow-origin', cors);
      if (cors !== '*') res.setHeader('vary', 'origin');
      if (req.method === 'OPTIONS') {
        // A browser's preflight before a JSON POST.
        res.writeHead(204, {
          'access-control-allow-methods': 'GET, POST, OPTIONS',
          'access-control-allow-headers': req.headers['access-control-request-headers'] ?? 'content-type, authorization',
          'access-control-max-age': '600',
        });
        res.end();
        return;
      }
    }
    // A refused body may still be arriving: once the answer is sent, Node discards the rest.
    handle(req, res).catch((err: unknown) => sendError(res, err));
  });
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => reject(new TandemError('TDM_IO', `${where}: cannot listen on ${host}:${port}: ${err.message}`, { cause: err }));
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const bound = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${bound}:${address.port}`,
    port: address.port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of inFlight) c.abort();
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
