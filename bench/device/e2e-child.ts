// One side of the device check's end-to-end comparison, run in its own process so that the
// backend registry sees its own environment (the CPU side runs with TANDEM_GPU=0): loads a
// GGUF through the executor, prefills a fixed prompt with every logit returned, decodes greedily,
// and, with --timing, times a long prefill and decode steps. Writes a JSON report.
// Usage: node e2e-child.js <model.gguf> <gpu|cpu> <out.json> [--timing]
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { native, type NativeModel } from '../../src/native/binding.js';
import type { SamplingParams, SequencePlan, StepPlan } from '../../src/native/step-plan.js';
import { GgufFile } from '../../src/model/gguf.js';
import { describeModel } from '../../src/model/describe.js';

const BLOCK_TOKENS = 16;
const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 1 };

export interface ChildReport {
  mode: 'gpu' | 'cpu';
  backends: string[];
  nVocab: number;
  /** Logits of every prompt token, row after row. */
  promptLogits: number[];
  /** Greedy continuation and the logits each decode step returned. */
  tokens: number[];
  decodeLogits: number[][];
  timing?: { prefillTokens: number; prefillMs: number; decodeSteps: number; decodeMsPerToken: number; phaseUs: Record<string, number> };
}

function seq(mode: 'gpu' | 'cpu', tokens: number[], startPos: number, blocks: number, extra: Partial<SequencePlan>): SequencePlan {
  return {
    seqId: 1,
    tokens: Int32Array.from(tokens),
    startPos,
    blockTable: Int32Array.from({ length: blocks }, (_, i) => i),
    kvTier: mode === 'gpu' ? 'device' : 'host',
    attention: mode,
    sample: true,
    sampling: GREEDY,
    ...extra,
  };
}

function plan(mode: 'gpu' | 'cpu', s: SequencePlan): StepPlan {
  return { strategy: mode === 'gpu' ? 'gpu-only' : 'cpu', copies: [], sequences: [s] };
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
  const mode = modeArg === 'gpu' ? 'gpu' : 'cpu';
  const timing = process.argv.includes('--timing');
  const g = GgufFile.open(file);
  const hparams = describeModel(g).hparams;
  g.close();
  const maxTokens = timing ? 512 + 40 : 48 + 20;
  const blocks = Math.ceil(maxTokens / BLOCK_TOKENS) + 1;
  const model: NativeModel = await native().loadModel(file, {
    hparams, threads: os.availableParallelism(), kvBlockTokens: BLOCK_TOKENS, kvBlocks: { device: blocks, host: blocks },
  });
  const nVocab = model.info.nVocab;
  const report: ChildReport = { mode, backends: model.info.backends, nVocab, promptLogits: [], tokens: [], decodeLogits: [] };

  const p = prompt(48, nVocab);
  const first = await model.step(plan(mode, seq(mode, p, 0, blocks, { returnAllLogits: true })));
  report.promptLogits = Array.from(first.sequences[0].allLogits ?? []);
  let tok = first.sequences[0].token;
  let pos = p.length;
  for (let i = 0; i < 16; i++) {
    report.tokens.push(tok);
    const r = await model.step(plan(mode, seq(mode, [tok], pos, blocks, { returnLogits: true })));
    report.decodeLogits.push(Array.from(r.sequences[0].logits ?? []));
    tok = r.sequences[0].token;
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
