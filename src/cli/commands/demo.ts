// `tandem demo`: runs the main job on a fresh machine. With no model at hand it writes a
// small synthetic mixture-of-experts model (Mixtral-style llama, random weights, a real
// vocabulary when one is found next to the package) to a cache folder, then generates
// from it and reports the speed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ParseArgsConfig } from 'node:util';
import { makeModel, type ModelSpec } from '../../model/synthetic.js';
import type { Command } from '../command.js';
import { createProgressBar } from '../progress.js';
import {
  generateOptionsFrom,
  loadOptionsFrom,
  loadWithProgress,
  parseFlags,
  SHARED_HELP,
  SHARED_OPTIONS,
  streamTo,
  summary,
  usageError,
} from './generate.js';

/** Demo model shapes: 'small' is the default, 'tiny' writes in a moment (tests, slow disks). */
const SIZES: Record<string, ModelSpec> = {
  small: {
    architecture: 'llama',
    nEmbd: 512, nLayer: 4, nHead: 8, nHeadKv: 4, nFf: 1024, nExpert: 8, nExpertUsed: 2, nCtx: 2048,
  },
  tiny: {
    architecture: 'llama',
    nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 512, nExpert: 4, nExpertUsed: 2, nCtx: 512,
  },
};

/** Bumped whenever the demo spec changes, so an old cached file is not reused. */
const DEMO_VERSION = 1;

const OPTIONS = {
  ...SHARED_OPTIONS,
  size: { type: 'string' },
  type: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

const HELP = `usage: tandem demo [options] ["prompt"]

Generates text to show tandem working. Without -m it uses a synthetic
mixture-of-experts model with RANDOM weights, written once to the cache folder
($TANDEM_CACHE, else ~/.cache/tandem): its output is noise, but the speed is real.

      --size NAME           demo model size: small (default, 8 experts top-2, about
                            90M parameters) or tiny
      --type TYPE           weight type of the demo model (default q8_0)
${SHARED_HELP}`;

/** The cache folder: $TANDEM_CACHE, else ~/.cache/tandem. */
export function cacheDir(): string {
  return process.env.TANDEM_CACHE || path.join(os.homedir(), '.cache', 'tandem');
}

/** A real vocabulary shipped beside the package (../shared/models/vocab), if there is one. */
function findVocab(): string | undefined {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // src/cli/commands and dist/cli/commands are both three levels below the package root.
  const packageRoot = path.resolve(here, '..', '..', '..');
  const candidate = path.resolve(packageRoot, '..', 'shared', 'models', 'vocab', 'ggml-vocab-llama-spm.gguf');
  return fs.existsSync(candidate) ? candidate : undefined;
}

/** Writes the demo model into the cache unless it is there already; returns its path. */
async function demoModel(size: string, type: string): Promise<string> {
  const spec = SIZES[size];
  if (!spec) throw usageError(`demo: unknown --size '${size}' (known: ${Object.keys(SIZES).join(', ')})`);
  const vocab = findVocab();
  const dir = cacheDir();
  const file = path.join(dir, `demo-moe-${size}-${type}-${vocab ? 'llama-spm' : 'synthetic-vocab'}-v${DEMO_VERSION}.gguf`);
  if (fs.existsSync(file)) {
    console.error(`tandem demo: using the cached demo model ${file}`);
    return file;
  }
  fs.mkdirSync(dir, { recursive: true });
  console.error(`tandem demo: writing a synthetic mixture-of-experts model to ${file}`);
  console.error(`  vocabulary: ${vocab ? `copied from ${vocab}` : 'synthetic (no real vocabulary found next to the package)'}`);
  const bar = createProgressBar({ label: 'writing demo model', delayMs: 0 });
  try {
    const made = await makeModel(
      { ...spec, type: type as ModelSpec['type'], seed: 1, vocab, name: `tandem demo MoE (${size}, random weights)` },
      file,
      { onProgress: (p) => bar.update(p.bytesWritten / p.bytesTotal) },
    );
    bar.done();
    console.error(`  ${(made.parameterCount / 1e6).toFixed(1)}M parameters, ${(made.fileBytes / 2 ** 20).toFixed(1)} MiB, ${made.nVocab} tokens`);
  } finally {
    bar.done();
  }
  return file;
}

export const command: Command = {
  summary: 'generate from a small synthetic MoE model (no download needed) and show the speed',
  async run(argv) {
    const { values, positionals } = parseFlags('demo', { args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const prompt = positionals.join(' ') || 'Once upon a time';
    const options = generateOptionsFrom(values, 64);
    let file = values.model;
    if (!file) {
      file = await demoModel(values.size ?? 'small', values.type ?? 'q8_0');
      console.error('tandem demo: this model\'s weights are RANDOM, so the text below is noise; the speed is real.');
    }
    const model = await loadWithProgress(file, loadOptionsFrom(values));
    try {
      const { info } = model;
      console.error(`tandem demo: ${info.architecture}, ${info.threads} thread${info.threads === 1 ? '' : 's'}, backends ${info.backends.join(', ')}`);
      process.stdout.write(prompt);
      const stats = await streamTo(model.generate(prompt, options), process.stdout);
      process.stdout.write('\n');
      console.error(summary(stats));
    } finally {
      await model.dispose();
    }
    return 0;
  },
};
