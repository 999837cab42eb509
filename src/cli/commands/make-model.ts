// `tandem make-model`: writes a seeded random-weight GGUF of any supported architecture,
// shape and type (llama.cpp loads it too), for tests, benchmarks and simulations.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  makeModel, MODEL_FILE_TYPES, parseFileType, PRESETS, SYNTHETIC_ARCHITECTURES,
  type MakeModelResult, type ModelShape, type ModelSpec, type PresetName, type SyntheticArchitecture,
} from '../../model/synthetic.js';
import { TandemError } from '../../native/errors.js';
import type { Command } from '../command.js';
import { createProgressBar } from '../progress.js';

/** Shape flags and the spec field each sets; `int` marks integer-valued ones. */
const SHAPE_FLAGS: { flag: string; field: keyof ModelShape; int: boolean; about: string }[] = [
  { flag: 'n-embd', field: 'nEmbd', int: true, about: 'width of the residual stream' },
  { flag: 'n-layer', field: 'nLayer', int: true, about: 'blocks' },
  { flag: 'n-head', field: 'nHead', int: true, about: 'query heads' },
  { flag: 'n-head-kv', field: 'nHeadKv', int: true, about: 'key/value heads' },
  { flag: 'head-dim', field: 'headDim', int: true, about: 'elements per head (default n-embd / n-head)' },
  { flag: 'n-ff', field: 'nFf', int: true, about: 'FFN hidden width' },
  { flag: 'n-expert', field: 'nExpert', int: true, about: 'routed experts per layer (0 = dense)' },
  { flag: 'n-expert-used', field: 'nExpertUsed', int: true, about: 'experts per token' },
  { flag: 'n-ff-expert', field: 'nFfExpert', int: true, about: 'hidden width of one expert' },
  { flag: 'n-ff-shared', field: 'nFfShared', int: true, about: "hidden width of qwen2moe's shared expert" },
  { flag: 'n-ctx', field: 'nCtx', int: true, about: 'training context length (tokens)' },
  { flag: 'n-vocab', field: 'nVocab', int: true, about: 'tokens of the synthetic vocabulary' },
  { flag: 'rope-freq-base', field: 'ropeFreqBase', int: false, about: 'RoPE theta' },
  { flag: 'rms-eps', field: 'rmsEps', int: false, about: 'RMSNorm epsilon' },
  { flag: 'sliding-window', field: 'slidingWindow', int: true, about: "gpt-oss, gemma2, gemma3: positions its sliding layers see (gemma3: 0 for none)" },
];

const HELP = `usage: tandem make-model -o FILE [options]

Writes a GGUF model with seeded random weights. The same options and seed always
give the same bytes; llama.cpp loads the file as it loads a real model.

  -o, --output FILE     where to write (required)
  --arch NAME           ${SYNTHETIC_ARCHITECTURES.join(' | ')}
                        (llama with --n-expert > 0 is Mixtral-style)
  --preset NAME         shape to start from (default tiny):
${Object.entries(PRESETS).map(([name, p]) => `                          ${name.padEnd(15)} ${p.about}`).join('\n')}
  --type TYPE           ${MODEL_FILE_TYPES.join(' ')} (default f16);
                        q4_K_M, q5_K_M, q3_K_M, iq2_m, iq3_xs, iq3_m, mxfp4_moe and the
                        *_mix types are llama.cpp's mixes (q2_K_mix, iq4_xs_mix,
                        iq2_xxs_mix, ... are llama-quantize's Q2_K, IQ4_XS,
                        IQ2_XXS, ... without an importance matrix); any other
                        type is used for every quantizable tensor
                        (llama-quantize --pure)
  --seed N              random seed, 0 to 2^53 (default 1)
  --vocab FILE          copy the tokenizer from this GGUF (a vocab-only file will
                        do); default: a synthetic SentencePiece vocabulary
  --name TEXT           general.name
  --rope-scaling S      linear:FACTOR or yarn:FACTOR[:ORIGINAL_CONTEXT] (YaRN's original
                        context defaults to --n-ctx), e.g. yarn:32:4096 as gpt-oss-20b
  --tied-embeddings     no output.weight: the output projection reads token_embd
                        (typed as llama-quantize types an output matrix)
  --softcaps A:F        gemma2's attention and final logit soft caps (default 50:30;
                        0 turns one off); gemma3 takes 0:F, a final cap
  --force               overwrite FILE if it exists
  --json                print the summary as one JSON object

shape (each overrides the preset):
${SHAPE_FLAGS.map((s) => `  --${`${s.flag} ${s.int ? 'N' : 'X'}`.padEnd(20)}${s.about}`).join('\n')}

example:
  tandem make-model --preset tinyllama-1.1b --type q4_K_M --seed 1 \\
      --vocab ggml-vocab-llama-spm.gguf -o tinyllama-q4km.gguf`;

function usageError(message: string): TandemError {
  return new TandemError('TDM_BAD_ARGUMENT', `make-model: ${message} (see \`tandem make-model --help\`)`);
}

function parseNumber(flag: string, text: string, int: boolean): number {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || (int && !/^\d+$/.test(text.trim()))) {
    throw usageError(`--${flag} expects ${int ? 'a non-negative integer' : 'a number'}, got '${text}'`);
  }
  return v;
}

/** Options to a ModelSpec and output path; throws TDM_BAD_ARGUMENT on anything wrong. */
export function parseMakeModelArgs(argv: string[]): { spec: ModelSpec; output: string; force: boolean; json: boolean; help: boolean } {
  const options = {
    output: { type: 'string', short: 'o' },
    arch: { type: 'string' },
    preset: { type: 'string' },
    type: { type: 'string' },
    seed: { type: 'string' },
    vocab: { type: 'string' },
    name: { type: 'string' },
    'rope-scaling': { type: 'string' },
    'tied-embeddings': { type: 'boolean' },
    softcaps: { type: 'string' },
    force: { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
    ...Object.fromEntries(SHAPE_FLAGS.map((s) => [s.flag, { type: 'string' }])),
  } as const;
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: true }));
  } catch (err) {
    const unknown = /Unknown option '([^']+)'/.exec((err as Error).message);
    throw usageError(unknown ? `unknown option '${unknown[1]}'` : (err as Error).message);
  }
  const help = values.help === true;
  if (positionals.length > 0) throw usageError(`unexpected argument '${positionals[0]}'`);
  const str = (k: string) => values[k] as string | undefined;

  const spec: ModelSpec = {};
  const arch = str('arch');
  if (arch !== undefined) {
    if (!SYNTHETIC_ARCHITECTURES.includes(arch as SyntheticArchitecture)) {
      throw usageError(`unknown --arch '${arch}' (one of ${SYNTHETIC_ARCHITECTURES.join(', ')})`);
    }
    spec.architecture = arch as SyntheticArchitecture;
  }
  const preset = str('preset');
  if (preset !== undefined) {
    if (!Object.prototype.hasOwnProperty.call(PRESETS, preset)) throw usageError(`unknown --preset '${preset}' (one of ${Object.keys(PRESETS).join(', ')})`);
    spec.preset = preset as PresetName;
  }
  const type = str('type');
  if (type !== undefined) {
    const t = parseFileType(type);
    if (!t) throw usageError(`unknown --type '${type}' (one of ${MODEL_FILE_TYPES.join(', ')})`);
    spec.type = t;
  }
  const seed = str('seed');
  if (seed !== undefined) spec.seed = parseNumber('seed', seed, true);
  const vocab = str('vocab');
  if (vocab !== undefined) {
    if (!existsSync(vocab)) throw new TandemError('TDM_NOT_FOUND', `make-model: --vocab ${vocab}: no such file`);
    spec.vocab = vocab;
  }
  if (str('name') !== undefined) spec.name = str('name');
  if (values['tied-embeddings'] === true) spec.tiedEmbeddings = true;
  const caps = str('softcaps');
  if (caps !== undefined) {
    const m = /^([^:]+):([^:]+)$/.exec(caps);
    if (!m) throw usageError(`--softcaps expects ATTENTION:FINAL, e.g. 50:30, got '${caps}'`);
    spec.softcaps = { attention: parseNumber('softcaps', m[1], false), final: parseNumber('softcaps', m[2], false) };
  }
  const scaling = str('rope-scaling');
  if (scaling !== undefined) {
    const m = /^(linear|yarn):([^:]+)(?::([^:]+))?$/.exec(scaling);
    if (!m || (m[1] === 'linear' && m[3] !== undefined)) throw usageError(`--rope-scaling expects linear:FACTOR or yarn:FACTOR[:ORIGINAL_CONTEXT], got '${scaling}'`);
    spec.ropeScaling = {
      type: m[1] as 'linear' | 'yarn',
      factor: parseNumber('rope-scaling', m[2]!, false),
      ...(m[3] !== undefined ? { originalContext: parseNumber('rope-scaling', m[3], true) } : {}),
    };
  }
  for (const s of SHAPE_FLAGS) {
    const v = str(s.flag);
    if (v !== undefined) spec[s.field] = parseNumber(s.flag, v, s.int);
  }
  const output = str('output');
  if (!help && !output) throw usageError('-o FILE is required');
  return { spec, output: output ?? '', force: values.force === true, json: values.json === true, help };
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  return `${n}`;
}

function summary(r: MakeModelResult, seconds: number): string {
  const s = r.spec;
  const moe = s.nExpert > 0
    ? `, ${s.nExpert} experts top-${s.nExpertUsed} × FFN ${s.nFfExpert}${s.nFfShared ? ` + shared ${s.nFfShared}` : ''}`
    : `, FFN ${s.nFf}`;
  const vocab = r.vocabSource === 'synthetic' ? 'synthetic SPM' : path.basename(r.vocabSource);
  return [
    `wrote ${r.path} (${mib(r.fileBytes)}) in ${seconds.toFixed(1)} s`,
    `  ${s.architecture}, preset ${s.preset}, ${s.type}, seed ${s.seed}`,
    `  ${formatCount(r.parameterCount)} parameters in ${r.nTensors} tensors; vocabulary ${r.nVocab} tokens (${vocab})`,
    `  ${s.nEmbd} wide, ${s.nLayer} layers, ${s.nHead} heads / ${s.nHeadKv} KV heads × ${s.headDim}${moe}, context ${s.nCtx}`,
    `  types: ${r.typesUsed.map((u) => `${u.type} ${u.tensors} tensors ${mib(u.bytes)}`).join(', ')}`,
  ].join('\n');
}

export const command: Command = {
  summary: 'write a seeded random-weight GGUF model of any architecture, shape and type',
  async run(argv) {
    const args = parseMakeModelArgs(argv);
    if (args.help) {
      console.log(HELP);
      return 0;
    }
    if (existsSync(args.output)) {
      if (statSync(args.output).isDirectory()) throw usageError(`${args.output} is a directory`);
      if (!args.force) throw usageError(`${args.output} exists; pass --force to overwrite it`);
    }
    const started = Date.now();
    const bar = createProgressBar({ label: `writing ${path.basename(args.output)}` });
    let result: MakeModelResult;
    try {
      result = await makeModel(args.spec, args.output, { onProgress: (p) => bar.update(p.bytesWritten / p.bytesTotal) });
    } finally {
      bar.done();
    }
    const seconds = (Date.now() - started) / 1000;
    if (args.json) {
      const { tensorData: _data, ...spec } = result.spec;
      console.log(JSON.stringify({ ...result, spec, seconds }, null, 2));
    } else {
      console.log(summary(result, seconds));
    }
    return 0;
  },
};
