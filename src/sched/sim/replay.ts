// A replay of a measured serving run on the simulator: the cost tables a GPU run profiled (its
// profile cache file) are the virtual clock and the policies' starting tables, and the device
// check's closed batch (every request submitted at once) is the workload, with the KV tiers the
// run had. It asks whether a policy's decisions pay under the policy's own model of that
// machine, and so tells a policy fault from a prediction miss, without the GPU. Every number
// it produces is SIMULATED.
import fs from 'node:fs';
import { TandemError } from '../../native/errors.js';
import { TableCostModel, type CostTablesJson } from '../cost-model.js';
import { POLICY_NAMES, type PolicyName } from '../policy.js';
import { simulateRun, type SimRunResult } from './simulator.js';

export interface ReplayConfig {
  /** The measured tables (a profile cache file's `tables`). */
  tables: CostTablesJson;
  /** KV blocks of each tier the measured run had. */
  kvBlocks: { device: number; host: number };
  blockTokens: number;
  /** The closed batch: this many requests at once, each with this prompt and output. */
  requests: number;
  promptTokens: number;
  outputTokens: number;
  /** Prompt tokens of one sequence per step (the run's prefillChunkTokens). Default 256, loadModel's. */
  maxChunkTokens?: number;
  policies?: readonly PolicyName[];
  /** Relative noise on each step's time. Default 0.03. */
  noise?: number;
  seed?: number;
}

export interface ReplayResult {
  simulated: true;
  config: Omit<ReplayConfig, 'tables'>;
  runs: SimRunResult[];
}

/** Reads the tables of a profile cache file (src/sched/profiler.ts). Throws TDM_BAD_ARGUMENT for anything else. */
export function readProfileTables(file: string): CostTablesJson {
  let body: { schema?: string; tables?: CostTablesJson };
  try {
    body = JSON.parse(fs.readFileSync(file, 'utf8')) as typeof body;
  } catch (err) {
    throw new TandemError('TDM_BAD_ARGUMENT', `cannot read the profile ${file}: ${(err as Error).message}`);
  }
  if (body?.schema !== 'tandem-profile/1' || !body.tables) throw new TandemError('TDM_BAD_ARGUMENT', `${file} is not a tandem profile (schema tandem-profile/1)`);
  new TableCostModel(body.tables); // validates them
  return body.tables;
}

export function runReplay(cfg: ReplayConfig): ReplayResult {
  const positive = (name: string, x: number) => {
    if (!(Number.isSafeInteger(x) && x > 0)) throw new TandemError('TDM_BAD_ARGUMENT', `replay: ${name} must be a positive integer, got ${x}`);
  };
  positive('requests', cfg.requests);
  positive('promptTokens', cfg.promptTokens);
  positive('outputTokens', cfg.outputTokens);
  positive('blockTokens', cfg.blockTokens);
  positive('device KV blocks', cfg.kvBlocks.device);
  if (!(Number.isSafeInteger(cfg.kvBlocks.host) && cfg.kvBlocks.host >= 0)) throw new TandemError('TDM_BAD_ARGUMENT', `replay: host KV blocks must be a non-negative integer, got ${cfg.kvBlocks.host}`);
  const truth = new TableCostModel(cfg.tables);
  const runs = (cfg.policies ?? POLICY_NAMES).map((policy) =>
    simulateRun({
      kvBlocks: cfg.kvBlocks,
      policy,
      truth,
      // Each policy starts from the measured tables and refits its own copy.
      policyCost: new TableCostModel(cfg.tables),
      blockTokens: cfg.blockTokens,
      maxRunning: cfg.requests,
      maxChunkTokens: cfg.maxChunkTokens ?? 256,
      noise: cfg.noise ?? 0.03,
      workload: { requests: cfg.requests, ratePerSecond: Infinity, promptTokens: [cfg.promptTokens, cfg.promptTokens], outputTokens: [cfg.outputTokens, cfg.outputTokens], seed: cfg.seed ?? 1 },
    }),
  );
  const { tables: _tables, ...config } = cfg;
  return { simulated: true, config, runs };
}

/** The replay as markdown: each policy's throughput and latency, against gpu-only. */
export function formatReplay(r: ReplayResult, source: string): string {
  const c = r.config;
  const base = r.runs.find((x) => x.policy === 'gpu-only')?.throughput;
  const lines = [
    `## Replay of a measured run [SIMULATED]`,
    '',
    `SIMULATED: the virtual clock and the policies' starting tables are the cost tables profiled on the measured machine (${source}); the policies run for real on them. A miss of those tables on the machine does not show here.`,
    '',
    `${c.requests} requests at once, ${c.promptTokens}-token prompts, ${c.outputTokens} tokens each; KV ${c.kvBlocks.device} device and ${c.kvBlocks.host} host blocks of ${c.blockTokens} tokens.`,
    '',
    '| policy | tokens/s (SIMULATED) | vs gpu-only | makespan s | TTFT p50 ms | TPOT p50 / p90 ms | steps by strategy | moves (demotions) | preemptions | step prediction error |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const x of r.runs) {
    const strategies = Object.entries(x.strategies).map(([k, n]) => `${k} ${n}`).join(', ');
    lines.push(`| ${x.policy} | ${x.throughput.toFixed(1)} | ${base ? (x.throughput / base).toFixed(3) + 'x' : '-'} | ${(x.durationUs / 1e6).toFixed(2)} | ${(x.ttftUs.p50 / 1e3).toFixed(0)} | ${(x.tpotUs.p50 / 1e3).toFixed(1)} / ${(x.tpotUs.p90 / 1e3).toFixed(1)} | ${strategies} | ${x.moves} (${x.demotions}) | ${x.preemptions} | ${(100 * x.meanStepError).toFixed(1)}% |`);
  }
  return lines.join('\n') + '\n';
}
