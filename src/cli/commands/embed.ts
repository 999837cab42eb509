// `tandem embed -m FILE [options] "text" ["text" ...]`: one embedding per text, as a JSON array
// of numbers a line, in the order given (stdin's lines when no text is given).
import fs from 'node:fs';
import type { ParseArgsConfig } from 'node:util';
import type { EmbeddingPooling } from '../../api/index.js';
import type { Command } from '../command.js';
import { loadOptionsFrom, loadWithProgress, parseFlags, usageError } from './generate.js';

const OPTIONS = {
  model: { type: 'string', short: 'm' },
  threads: { type: 'string', short: 't' },
  'cpu-kernels': { type: 'string' },
  'ctx-size': { type: 'string', short: 'c' },
  device: { type: 'string' },
  pooling: { type: 'string' },
  'no-normalize': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const HELP = `usage: tandem embed -m FILE [options] "text" ["text" ...]

Prints one embedding per text, a JSON array of numbers a line, in order. With no text
argument, each line of stdin is a text. The texts are embedded together.

  -m, --model FILE          GGUF model file
  -t, --threads N           CPU threads (default: physical cores)
      --cpu-kernels K       auto (default), avx512, avxvnni, avx2 or ref
  -c, --ctx-size N          tokens of context per text (default: the model's, at most 4096)
      --device D            none (default), auto, gpu or cpu-standin
      --pooling P           mean, cls or last (default: the file's pooling type, else last)
      --no-normalize        print the raw vector instead of one of unit length
  -h, --help                this help`;

export const command: Command = {
  summary: 'embed texts (one JSON vector a line)',
  async run(argv) {
    const { values, positionals } = parseFlags('embed', { args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (!values.model) throw usageError('embed: -m FILE is required (see `tandem embed --help`)');
    const texts = positionals.length > 0 ? positionals : fs.readFileSync(0, 'utf8').split('\n').filter((l) => l.length > 0);
    if (texts.length === 0) throw usageError('embed: no text to embed (give texts as arguments or lines on stdin)');
    const model = await loadWithProgress(values.model, { ...loadOptionsFrom(values), maxSequences: Math.min(texts.length, 16) });
    try {
      const options = { ...(values.pooling !== undefined ? { pooling: values.pooling as EmbeddingPooling } : {}), normalize: !values['no-normalize'] };
      const vectors = await Promise.all(texts.map((text) => model.embed(text, options)));
      for (const v of vectors) process.stdout.write(`${JSON.stringify(Array.from(v))}\n`);
      return 0;
    } finally {
      await model.dispose();
    }
  },
};
