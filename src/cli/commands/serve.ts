// `tandem serve -m FILE`: the OpenAI-compatible HTTP server over one model, until Ctrl-C
// or SIGTERM. The sampling flags set the defaults a request's fields override.
import path from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { resolveGenerateOptions } from '../../api/options.js';
import { startServer } from '../../server/index.js';
import type { Command } from '../command.js';
import { generateOptionsFrom, loadOptionsFrom, loadWithProgress, parseFlags, SHARED_HELP, SHARED_OPTIONS, usageError } from './generate.js';

const OPTIONS = {
  ...SHARED_OPTIONS,
  host: { type: 'string' },
  port: { type: 'string' },
  name: { type: 'string' },
  parallel: { type: 'string' },
  cors: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

const HELP = `usage: tandem serve -m FILE [options]

Serves the model over HTTP with OpenAI's API: POST /v1/completions and
/v1/chat/completions (with "stream": true for server-sent events), GET /v1/models
and /health. Concurrent requests are batched into the same decode steps; a client
that disconnects stops its generation. The sampling flags below set the defaults
that a request's own fields (temperature, top_p, max_tokens, ...) override; with
no max_tokens a reply runs to its end or the context's. Ctrl-C stops the server.

      --host H              interface to listen on (default 127.0.0.1; 0.0.0.0 for every one)
      --port N              port (default 8080; 0 picks a free one)
      --name ID             model id in /v1/models and responses (default: the file's name)
      --parallel N          sequences decoded together at most (default 4)
      --cors ORIGIN         let web pages from ORIGIN (or * for any) call the server; default none
${SHARED_HELP}`;

function integerFlag(flag: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw usageError(`serve: --${flag} expects an integer from ${min} to ${max}, got '${value}'`);
  return n;
}

export const command: Command = {
  summary: 'serve a model over HTTP with the OpenAI API',
  async run(argv) {
    const { values, positionals } = parseFlags('serve', { args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (!values.model) throw usageError('serve: -m FILE is required (see `tandem serve --help`)');
    if (positionals.length > 0) throw usageError(`serve: unexpected argument '${positionals[0]}'`);
    const port = integerFlag('port', values.port, 0, 65535) ?? 8080;
    const parallel = integerFlag('parallel', values.parallel, 1, 1024);
    const defaults = generateOptionsFrom(values, 0);
    // Checked before the load, which can take a while (no flag sets token ids, so any vocabulary will do).
    resolveGenerateOptions('serve', defaults, Number.MAX_SAFE_INTEGER, new Set());
    const model = await loadWithProgress(values.model, { ...loadOptionsFrom(values), ...(parallel ? { maxSequences: parallel } : {}) });
    const name = values.name ?? path.basename(values.model).replace(/\.gguf$/i, '');
    let server;
    try {
      server = await startServer(model, { host: values.host ?? '127.0.0.1', port, modelName: name, defaults, ...(values.cors ? { corsOrigin: values.cors } : {}) });
    } catch (err) {
      await model.dispose();
      throw err;
    }
    console.error(`tandem: serving ${name} at ${server.url}/v1 (${model.info.backends.join('+')}, ${model.info.threads} threads); Ctrl-C stops`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    console.error('tandem: stopping');
    await server.close();
    await model.dispose();
    return 0;
  },
};
