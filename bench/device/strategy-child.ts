// The device check's strategy timing, in its own process: loads a model with the device, fills
// the KV of every sequence at a fixed context (one prefill, then block copies to the others, so
// no time goes into prefilling each), and times decode steps of the three strategies on the same
// batch shape: gpu-only with the device-tier sequences alone (what fits when the device's KV is
// capped), then overlap and pipeline with the host-tier sequences added (their attention on the
// CPU), and, where the device streams host KV, gpu-only with the host-tier sequences' attention
// on the device over their KV gathered across the link. Writes a JSON report. Usage: node strategy-child.js <model.gguf> <out.json> <regimes JSON>
// [--device gpu|cpu-standin]
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { native, type NativeModel } from '../../src/native/binding.js';
import type { BlockCopy, KvTier, SequencePlan, StepPlan, Strategy } from '../../src/native/step-plan.js';
import { GgufFile } from '../../src/model/gguf.js';
import { describeModel } from '../../src/model/describe.js';

const BLOCK_TOKENS = 16;
const WARMUP_STEPS = 2;
const TIMED_STEPS = 6;

/** One memory regime: sequences whose KV fits on the device, sequences whose KV lives in host RAM, and their context. */
export interface Regime {
  context: number;
  deviceSeqs: number;
  hostSeqs: number;
}

export interface StrategyTiming {
  strategy: Strategy;
  sequences: number;
  /** Median wall time of a decode step, ms. */
  stepMs: number;
  /** Decode tokens per second over all the step's sequences. */
  tokensPerS: number;
  /** The host-tier sequences ran device attention over their KV streamed from host RAM. */
  streamed?: boolean;
  /** Mean phase times of the timed steps, µs. */
  phaseUs: Record<string, number>;
}

export interface StrategyReport {
  device: string;
  threads: number;
  regimes: { regime: Regime; timings: StrategyTiming[] }[];
  /** The host KV tier as loaded: bytes, the load's time locking and mapping it for streaming (0 when not tried), and the blocks a step may stream. */
  hostKv?: { bytes: number; lockMs: number; streamBlocksMax: number };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timeRegime(model: NativeModel, regime: Regime): Promise<StrategyTiming[]> {
  const nVocab = model.info.nVocab;
  const perSeq = Math.ceil((regime.context + WARMUP_STEPS + TIMED_STEPS + 1) / BLOCK_TOKENS);
  const n = regime.deviceSeqs + regime.hostSeqs;
  const tierOf = (i: number): KvTier => (i < regime.deviceSeqs ? 'device' : 'host');
  // Device-tier sequences take device blocks [i*perSeq, ...); host-tier ones host blocks likewise.
  const table = (i: number) => {
    const base = (tierOf(i) === 'device' ? i : i - regime.deviceSeqs) * perSeq;
    return Int32Array.from({ length: perSeq }, (_, j) => base + j);
  };
  const seq = (i: number, tokens: number[], startPos: number, sample: boolean, streamed = false): SequencePlan => ({
    seqId: i + 1, tokens: Int32Array.from(tokens), startPos, blockTable: table(i), kvTier: tierOf(i),
    attention: tierOf(i) === 'device' || streamed ? 'gpu' : 'cpu', sample,
  });
  // Prefill sequence 0 on the device, then copy its context's blocks to every other sequence.
  const prompt = Array.from({ length: regime.context }, (_, k) => 1 + ((k * 7919) % (nVocab - 1)));
  await model.step({ strategy: 'gpu-only', copies: [], sequences: [seq(0, prompt, 0, false)] });
  const used = Math.ceil(regime.context / BLOCK_TOKENS);
  const copies: BlockCopy[] = [];
  for (let i = 1; i < n; i++) {
    for (let b = 0; b < used; b++) copies.push({ fromTier: 'device', fromBlock: table(0)[b]!, toTier: tierOf(i), toBlock: table(i)[b]! });
  }
  await model.step({ strategy: 'overlap', copies, sequences: [] });

  const runs: [Strategy, number, boolean][] = [['gpu-only', regime.deviceSeqs, false], ['overlap', n, false], ['pipeline', n, false]];
  if (model.placement.streamsHostKv && regime.hostSeqs > 0) runs.push(['gpu-only', n, true]);
  const out: StrategyTiming[] = [];
  for (const [strategy, count, streamed] of runs) {
    if (count === 0) continue;
    const ms: number[] = [];
    const phaseUs: Record<string, number> = {};
    for (let step = 0; step < WARMUP_STEPS + TIMED_STEPS; step++) {
      // Every run rewrites positions context.. from the same cached prefix.
      const plan: StepPlan = { strategy, copies: [], sequences: Array.from({ length: count }, (_, i) => seq(i, [1 + ((i + step) % (nVocab - 1))], regime.context + step, true, streamed)) };
      const t0 = performance.now();
      const r = await model.step(plan);
      if (step < WARMUP_STEPS) continue;
      ms.push(performance.now() - t0);
      for (const [k, v] of Object.entries(r.phaseUs)) phaseUs[k] = (phaseUs[k] ?? 0) + v / TIMED_STEPS;
    }
    const stepMs = median(ms);
    out.push({ strategy, sequences: count, stepMs, tokensPerS: (count * 1000) / stepMs, phaseUs, ...(streamed ? { streamed } : {}) });
  }
  return out;
}

async function main(): Promise<void> {
  const [file, out, regimesJson] = process.argv.slice(2);
  const deviceArg = process.argv.indexOf('--device');
  const device = deviceArg > 0 && process.argv[deviceArg + 1] === 'cpu-standin' ? 'cpu-standin' : 'gpu';
  const regimes = JSON.parse(regimesJson!) as Regime[];
  const g = GgufFile.open(file!);
  const hparams = describeModel(g).hparams;
  g.close();
  const blocks = (pick: (r: Regime) => number) =>
    Math.max(...regimes.map((r) => pick(r) * Math.ceil((r.context + WARMUP_STEPS + TIMED_STEPS + 1) / BLOCK_TOKENS))) + 1;
  const threads = os.availableParallelism();
  // The streamed row streams every host sequence's table: staging (two layers of f16 K and V
  // a block) for all of them, where the default 128 MiB would refuse the larger regimes.
  const stagingBytes = blocks((r) => r.hostSeqs) * 2 * BLOCK_TOKENS * hparams.nHeadKv * (hparams.headDim + hparams.headDimV) * 2;
  const model = await native().loadModel(file!, {
    hparams, threads, device, kvBlockTokens: BLOCK_TOKENS,
    kvBlocks: { device: blocks((r) => r.deviceSeqs), host: blocks((r) => r.hostSeqs) },
    kvStreamStagingBytes: Math.max(stagingBytes, 128 * 2 ** 20),
  });
  const hostBytes = blocks((r) => r.hostSeqs) * model.info.kvBlockBytes;
  const hostKv = { bytes: hostBytes, lockMs: model.placement.hostKvLockMs, streamBlocksMax: model.placement.streamBlocksMax };
  const report: StrategyReport = { device: model.placement.deviceName, threads, regimes: [], hostKv };
  try {
    for (const regime of regimes) report.regimes.push({ regime, timings: await timeRegime(model, regime) });
  } finally {
    model.dispose();
  }
  writeFileSync(out!, JSON.stringify(report));
}

main().catch((err) => {
  console.error(`strategy-child: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
