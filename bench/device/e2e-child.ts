// One side of the device check's end-to-end comparison, run in its own process so that the
// backend registry sees its own environment (the CPU side runs with TANDEM_GPU=0): loads a
// GGUF through the executor, prefills a fixed prompt with every logit and hidden state (embeddings) returned, decodes fixed tokens,
// and, with --timing, times a long prefill and decode steps. Writes a JSON report.
// Modes: gpu (every weight, the KV and attention on the device), split (half the weight bytes on
// the device: the rest, routed experts first, computed on the CPU), host-kv (weights on the
// device, KV in host RAM and attention on the CPU, under 'overlap'), host-kv-stream (KV in host
// RAM, attention on the device over each layer's blocks gathered across the link, gpu-only),
// cpu (no device).
// A model with sliding-window layers keeps their KV in blocks of their own on the device side
// (kvSplitSliding, as the API does by default), with the entries behind the window set to -1.
// Usage: node e2e-child.js <model.gguf> <mode> <out.json> [--timing] [--standin]
import { statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { native, type NativeModel } from '../../src/native/binding.js';
import type { SamplingParams, SequencePlan, StepPlan } from '../../src/native/step-plan.js';
import { GgufFile } from '../../src/model/gguf.js';
import { describeModel } from '../../src/model/describe.js';

const BLOCK_TOKENS = 16;
const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 1 };

export type E2eMode = 'gpu' | 'split' | 'host-kv' | 'host-kv-stream' | 'cpu';
const MODES: readonly E2eMode[] = ['gpu', 'split', 'host-kv', 'host-kv-stream', 'cpu'];

export interface ChildReport {
  mode: E2eMode;
  backends: string[];
  /** Where the weights went (NativeModel.placement). */
  placement: NativeModel['placement'];
  nVocab: number;
  /** Logits of every prompt token, row after row. */
  promptLogits: number[];
  /** Hidden states after the output norm of every prompt token (returnEmbeddings), row after row. */
  promptEmbeddings: number[];
  /** The greedy token after the prompt and after each teacher-forced decode step, and each decode step's logits. */
  tokens: number[];
  decodeLogits: number[][];
  timing?: { prefillTokens: number; prefillMs: number; decodeSteps: number; decodeMsPerToken: number; phaseUs: Record<string, number> };
}

/** > 0: the loaded model keeps its sliding layers' KV apart, and they see this many positions. */
let slidingWindow = 0;
/** The sliding layers' groups (each with its table) when they are kept apart. */
let slidingGroups = 0;

function seq(mode: E2eMode, tokens: number[], startPos: number, blocks: number, extra: Partial<SequencePlan>): SequencePlan {
  const onDevice = mode === 'gpu' || mode === 'split';
  // Each sliding group's blocks follow the full ones (and the groups' before it) in the pool;
  // those wholly behind the window are not read.
  const behind = Math.floor(Math.max(0, startPos - slidingWindow + 1) / BLOCK_TOKENS);
  const table = (g: number) => Array.from({ length: blocks }, (_, i) => (i < behind ? -1 : (1 + g) * blocks + i));
  const sliding = slidingWindow > 0 ? { slidingBlockTable: Int32Array.from(Array.from({ length: slidingGroups }, (_, g) => table(g)).flat()) } : {};
  return {
    seqId: 1,
    tokens: Int32Array.from(tokens),
    startPos,
    blockTable: Int32Array.from({ length: blocks }, (_, i) => i),
    ...sliding,
    kvTier: onDevice ? 'device' : 'host',
    attention: onDevice || mode === 'host-kv-stream' ? 'gpu' : 'cpu',
    sample: true,
    sampling: GREEDY,
    ...extra,
  };
}

const STRATEGY: Record<E2eMode, StepPlan['strategy']> = { gpu: 'gpu-only', split: 'overlap', 'host-kv': 'overlap', 'host-kv-stream': 'gpu-only', cpu: 'cpu' };

function plan(mode: E2eMode, s: SequencePlan): StepPlan {
  return { strategy: STRATEGY[mode], copies: [], sequences: [s] };
}

/** A fixed pseudo-random prompt of n token ids in [1, nVocab). */
function prompt(n: number, nVocab: number): number[] {
  let s = 12345;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return 1 + (s % (nVocab - 1));
  });
}

async function main(): Promise<void> {
  const [file, modeArg, out] = process.argv.slice(2);
  const mode = MODES.find((m) => m === modeArg);
  if (!mode) throw new Error(`mode must be one of ${MODES.join(', ')}, got '${modeArg}'`);
  const timing = process.argv.includes('--timing');
  const device = mode === 'cpu' ? 'none' : process.argv.includes('--standin') ? 'cpu-standin' : 'gpu';
  const g = GgufFile.open(file);
  const hparams = describeModel(g).hparams;
  g.close();
  const maxTokens = timing ? 512 + 40 : 48 + 20;
  const blocks = Math.ceil(maxTokens / BLOCK_TOKENS) + 1;
  // Sliding layers in blocks of their own, as the API keeps them (streamed host KV gathers only the window's).
  const split = mode !== 'cpu' && hparams.slidingWindow > 0;
  // At most 8 sliding groups (native/core/kv_pool.cpp).
  const pool = split ? 9 * blocks : blocks;
  const model: NativeModel = await native().loadModel(file, {
    hparams, threads: os.availableParallelism(), kvBlockTokens: BLOCK_TOKENS, kvBlocks: { device: pool, host: pool }, device,
    ...(split ? { kvSplitSliding: true } : {}),
    ...(mode === 'split' ? { deviceWeightBytes: Math.floor(statSync(file).size / 2) } : {}),
  });
  if (split) {
    slidingWindow = hparams.slidingWindow;
    slidingGroups = model.info.kvGroups - 1;
  }
  if (mode === 'host-kv-stream' && device === 'gpu' && !model.placement.streamsHostKv) {
    model.dispose();
    throw new Error('the device does not stream host KV (placement.streamsHostKv is false: no host_register, or the OS would not lock the host tier)');
  }
  const nVocab = model.info.nVocab;
  const report: ChildReport = { mode, backends: model.info.backends, placement: model.placement, nVocab, promptLogits: [], promptEmbeddings: [], tokens: [], decodeLogits: [] };

  const p = prompt(48, nVocab);
  const first = await model.step(plan(mode, seq(mode, p, 0, blocks, { returnAllLogits: true, returnEmbeddings: true })));
  report.promptLogits = Array.from(first.sequences[0].allLogits ?? []);
  report.promptEmbeddings = Array.from(first.sequences[0].embeddings ?? []);
  // Decode steps fed fixed tokens (teacher forcing), so that both processes see the same
  // context at every step and each step's greedy token and logits can be compared.
  const forced = prompt(64, nVocab).slice(48);
  report.tokens.push(first.sequences[0].token);
  let pos = p.length;
  for (const tok of forced) {
    const r = await model.step(plan(mode, seq(mode, [tok], pos, blocks, { returnLogits: true })));
    report.decodeLogits.push(Array.from(r.sequences[0].logits ?? []));
    report.tokens.push(r.sequences[0].token);
    pos += 1;
  }

  if (timing) {
    const long = prompt(512, nVocab);
    const t0 = performance.now();
    const pre = await model.step(plan(mode, seq(mode, long, 0, blocks, {})));
    const prefillMs = performance.now() - t0;
    let t = pre.sequences[0].token;
    const steps = 32;
    const phaseUs: Record<string, number> = {};
    const t1 = performance.now();
    for (let i = 0; i < steps; i++) {
      const r = await model.step(plan(mode, seq(mode, [t], long.length + i, blocks, {})));
      for (const [k, v] of Object.entries(r.phaseUs)) phaseUs[k] = (phaseUs[k] ?? 0) + v / steps;
      t = r.sequences[0].token;
    }
    report.timing = { prefillTokens: long.length, prefillMs, decodeSteps: steps, decodeMsPerToken: (performance.now() - t1) / steps, phaseUs };
  }
  model.dispose();
  writeFileSync(out, JSON.stringify(report));
}

main().catch((err) => {
  console.error(`e2e-child: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
