// `tandem simulate`: runs the real scheduler and policies against a virtual clock in APEX's
// setting on machines tandem has not run on (T4, A10, MI210 profiles), and reports each
// policy's throughput at equal latency. Every number it prints is labelled SIMULATED. The
// bench can call runSimulate() for `tandem bench --simulate`.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { Command } from '../../cli/command.js';
import { createProgressBar } from '../../cli/progress.js';
import { native } from '../../native/binding.js';
import { TandemError } from '../../native/errors.js';
import { physicalCoreCount } from '../../api/threads.js';
import { DEFAULT_CPU_ATTENTION_EFFICIENCY, HARDWARE, SIM_MODELS } from '../hardware.js';
import { POLICY_NAMES, type PolicyName } from '../policy.js';
import { formatReport } from './report.js';
import { runScenario, type ScenarioResult } from './scenario.js';
import { formatExpertSuite, MOE_MODELS, ROUTING_KINDS, runExpertSuite, type RoutingKind } from '../experts/sim.js';
import { formatReplay, readProfileTables, runReplay } from './replay.js';

const HELP = `usage: tandem simulate [t4|a10|mi210|all] [options]
       tandem simulate --moe [t4|a10|mi210|all] [options]
       tandem simulate --replay PROFILE.json --closed N:PROMPT:OUTPUT --kv-blocks DEVICE:HOST [options]

Runs tandem's scheduler and policies (gpu-only, pipeline, overlap, auto) against a
virtual clock on a hardware profile, with Llama-2-7B and Llama-3.1-8B shapes and a
decode-heavy workload with Poisson arrivals, and reports throughput at equal latency.
Every number is SIMULATED (datasheet rooflines; CPU attention scaled from this machine).

With --moe it runs the MoE expert policies instead (tandem's dynamic cache and per-expert
choice against llama.cpp's --cpu-moe, --n-cpu-moe N and 32-token copy rule) on seeded
routing traces, decode tokens/s per policy at the device's memory (and, for a model that
fits, a budget capped to a quarter of its experts). SIMULATED too.

      --model LIST          ${Object.keys(SIM_MODELS).join(',')} (default both)
      --policies LIST       ${POLICY_NAMES.join(',')} (default all)
      --requests N          requests per run (default 120; --quick 40)
      --rates LIST          arrival rates in requests/s (default: multiples of gpu-only's capacity)
      --slo-tpot MS         p90 TPOT target (default 3x a lone request's step)
      --seed N              workload seed (default 1)
      --cpu-efficiency F    fraction of host bandwidth CPU attention reaches (default: measured here)
      --no-kv-stream        auto does not stream host KV to the device (APEX's and NEO's choices only)
      --json FILE           also write the results as JSON
      --quick               fewer requests per run (--moe: fewer steps)
  --replay only: a measured run replayed on its profiled tables (a profile cache file, as
  the device check saves under profiles/): the closed batch of N requests at once with
  PROMPT-token prompts and OUTPUT tokens each, the KV blocks of each tier the run had.
      --closed N:PROMPT:OUTPUT
      --kv-blocks DEVICE:HOST
      --block-tokens N      (default 16)
      --prefill-chunk N     prompt tokens per step of one sequence (default 256, loadModel's)
  --moe only:
      --moe-model LIST      ${Object.keys(MOE_MODELS).join(',')} (default all)
      --batch LIST          sequences decoded together (default 1,16)
      --routing LIST        ${ROUTING_KINDS.join(',')} (default all)
      --steps N             measured decode steps per run (default 64; --quick 16)
      --prefetch-margin F   a score-ordered prefetch evicts only experts scoring under its
                            score / F (default 1; the engine's admitMargin is 2)
  -h, --help`;

const OPTIONS = {
  model: { type: 'string' },
  policies: { type: 'string' },
  requests: { type: 'string' },
  rates: { type: 'string' },
  'slo-tpot': { type: 'string' },
  seed: { type: 'string' },
  'cpu-efficiency': { type: 'string' },
  'no-kv-stream': { type: 'boolean' },
  json: { type: 'string' },
  quick: { type: 'boolean' },
  moe: { type: 'boolean' },
  'moe-model': { type: 'string' },
  batch: { type: 'string' },
  routing: { type: 'string' },
  'gpu-gb': { type: 'string' },
  steps: { type: 'string' },
  'prefetch-margin': { type: 'string' },
  replay: { type: 'string' },
  closed: { type: 'string' },
  'kv-blocks': { type: 'string' },
  'block-tokens': { type: 'string' },
  'prefill-chunk': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function bad(msg: string): never {
  throw new TandemError('TDM_BAD_ARGUMENT', `tandem simulate: ${msg}`);
}

function numberList(name: string, v: string | undefined): number[] | undefined {
  if (v === undefined) return undefined;
  const xs = v.split(',').map(Number);
  if (xs.some((x) => !(x > 0) || !Number.isFinite(x))) bad(`--${name} must be a list of positive numbers, got '${v}'`);
  return xs;
}

/**
 * How fast CPU attention reads KV here, as a fraction of this machine's read bandwidth (same
 * threads), with the kernels of one instruction set: decode attention over 8 sequences of 1024
 * f16 positions, Llama-3-8B's head layout. The median of `samples` paired measurements, since a
 * shared machine's bandwidth moves between them. Where this processor lacks `simd`, the best
 * kernels it has stand in, and the note says so.
 */
export async function measureCpuAttentionEfficiency(
  threads = physicalCoreCount(),
  simd?: 'avx2' | 'avx512',
  samples = 3,
): Promise<{ efficiency: number; note: string }> {
  const addon = native();
  const ids = addon.backendOps.ids().filter((id) => id.startsWith('cpu:'));
  const isa = simd !== undefined && ids.includes(`cpu:${simd}`) ? `cpu:${simd}` : ids[ids.length - 1]!;
  const id = `${isa}@${threads}`;
  const opts = { kvType: 'f16' as const, blockTokens: 16, nKvHeads: 8, nHeads: 32, headDim: 128, nSeqs: 8, contextLen: 1024, nTokens: 1 };
  const bytes = opts.nSeqs * (opts.contextLen + 1) * opts.nKvHeads * opts.headDim * 2 * 2;
  const rates: number[] = [];
  const bandwidths: number[] = [];
  for (let i = 0; i < samples; i++) {
    rates.push(bytes / (addon.backendOps.timeAttention(id, opts, 5) / 1e6));
    bandwidths.push((await addon.measureReadBandwidth(256 * 2 ** 20, threads, 3)).bytesPerSecond);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const efficiency = Math.min(1, median(rates.map((r, i) => r / bandwidths[i]!)));
  const stand = simd !== undefined && isa !== `cpu:${simd}` ? ` (this processor has no ${simd}: ${isa} stands in)` : '';
  return {
    efficiency,
    note: `CPU attention measured here (${id}${stand}): ${(median(rates) / 1e9).toFixed(1)} GB/s of KV against ${(median(bandwidths) / 1e9).toFixed(1)} GB/s read bandwidth on ${threads} threads = ${(100 * efficiency).toFixed(0)}% (median of ${samples}), applied to the host bandwidth of each profile whose cores run ${simd ?? 'these kernels'}`,
  };
}

export interface SimulateOptions {
  hardware: string[];
  models: string[];
  policies: PolicyName[];
  requests: number;
  rates?: number[];
  tpotSloUs?: number;
  seed: number;
  cpuEfficiency?: number;
  /** Default true: auto may stream host KV to the device. */
  streamHostKv?: boolean;
  progress?: boolean;
}

/** Runs the settings and returns the results with the report text. */
export async function runSimulate(o: SimulateOptions): Promise<{ scenarios: ScenarioResult[]; notes: string[]; text: string }> {
  const notes: string[] = [];
  // One efficiency per instruction set the profiles' hosts have, measured once.
  const effBySimd = new Map<string, number>();
  if (o.cpuEfficiency !== undefined) {
    notes.push(`CPU attention efficiency given: ${o.cpuEfficiency}`);
  } else {
    for (const simd of new Set(o.hardware.map((h) => HARDWARE[h]!.host.simd))) {
      try {
        const m = await measureCpuAttentionEfficiency(physicalCoreCount(), simd);
        effBySimd.set(simd, m.efficiency);
        notes.push(m.note);
      } catch (err) {
        effBySimd.set(simd, DEFAULT_CPU_ATTENTION_EFFICIENCY);
        notes.push(`CPU attention efficiency (${simd}) could not be measured here (${(err as Error).message}); assumed ${DEFAULT_CPU_ATTENTION_EFFICIENCY}`);
      }
    }
  }
  for (const h of o.hardware) notes.push(`${h}: ${HARDWARE[h]!.note}`);
  const scenarios: ScenarioResult[] = [];
  const settings = o.hardware.flatMap((h) => o.models.map((m) => [h, m] as const));
  for (const [h, m] of settings) {
    const bar = o.progress === false ? undefined : createProgressBar({ label: `simulating ${h} ${m}` });
    try {
      scenarios.push(
        runScenario({
          hardware: HARDWARE[h]!,
          model: SIM_MODELS[m]!,
          cpuAttentionEfficiency: o.cpuEfficiency ?? effBySimd.get(HARDWARE[h]!.host.simd)!,
          requests: o.requests,
          seed: o.seed,
          rates: o.rates,
          policies: o.policies,
          tpotSloUs: o.tpotSloUs,
          streamHostKv: o.streamHostKv,
          onRun: (done, total) => bar?.update(done / total),
        }),
      );
    } finally {
      bar?.done();
    }
  }
  return { scenarios, notes, text: formatReport(scenarios, notes) };
}

/** `tandem simulate --moe`: every expert policy on every setting, one markdown table. SIMULATED. */
function runMoe(hardware: string[], values: { 'moe-model'?: string; batch?: string; routing?: string; steps?: string; 'gpu-gb'?: string; 'prefetch-margin'?: string; quick?: boolean; json?: string; model?: string; policies?: string }, seed: number): number {
  if (values.model !== undefined || values.policies !== undefined) bad('with --moe, name models with --moe-model; every expert policy runs');
  if (!Number.isInteger(seed) || seed < 0) bad(`--seed must be a non-negative integer`);
  const models = values['moe-model'] ? values['moe-model'].split(',') : Object.keys(MOE_MODELS);
  for (const m of models) if (!MOE_MODELS[m]) bad(`unknown MoE model '${m}' (known: ${Object.keys(MOE_MODELS).join(', ')})`);
  const routings = (values.routing ? values.routing.split(',') : [...ROUTING_KINDS]) as RoutingKind[];
  for (const r of routings) if (!ROUTING_KINDS.includes(r)) bad(`unknown routing '${r}' (known: ${ROUTING_KINDS.join(', ')})`);
  const batches = numberList('batch', values.batch) ?? [1, 16];
  if (batches.some((b) => !Number.isInteger(b))) bad(`--batch must be a list of positive integers, got '${values.batch}'`);
  const steps = values.steps !== undefined ? Number(values.steps) : values.quick ? 16 : 64;
  if (!Number.isInteger(steps) || steps < 1) bad(`--steps must be a positive integer, got '${values.steps}'`);
  const gpuGb = numberList('gpu-gb', values['gpu-gb']) ?? [];
  const margin = values['prefetch-margin'] !== undefined ? Number(values['prefetch-margin']) : 1;
  if (!(margin >= 1)) bad(`--prefetch-margin must be a number >= 1, got '${values['prefetch-margin']}'`);
  const settings = runExpertSuite({ hardware, models, routings, batches, steps, seed, budgetBytes: gpuGb.map((g) => g * 1e9), prefetchMargin: margin });
  console.log(formatExpertSuite(settings));
  if (values.json) fs.writeFileSync(values.json, JSON.stringify({ simulated: true, seed, steps, prefetchMargin: margin, settings }, null, 1));
  return 0;
}

/** `tandem simulate --replay`: the policies on a measured run's tables. SIMULATED. */
function runReplayCommand(values: { replay?: string; closed?: string; 'kv-blocks'?: string; 'block-tokens'?: string; 'prefill-chunk'?: string; policies?: string; seed?: string; json?: string }): number {
  const ints = (name: string, v: string | undefined, parts: number): number[] => {
    const xs = (v ?? '').split(':').map(Number);
    if (v === undefined || xs.length !== parts || xs.some((x) => !Number.isSafeInteger(x) || x < 0)) bad(`--${name} needs ${parts} non-negative integers separated by ':', got '${v ?? ''}'`);
    return xs;
  };
  const [requests, promptTokens, outputTokens] = ints('closed', values.closed, 3) as [number, number, number];
  const [device, host] = ints('kv-blocks', values['kv-blocks'], 2) as [number, number];
  const blockTokens = values['block-tokens'] !== undefined ? ints('block-tokens', values['block-tokens'], 1)[0]! : 16;
  const chunk = values['prefill-chunk'] !== undefined ? ints('prefill-chunk', values['prefill-chunk'], 1)[0]! : 256;
  const policies = (values.policies ? values.policies.split(',') : [...POLICY_NAMES]) as PolicyName[];
  for (const p of policies) if (!POLICY_NAMES.includes(p)) bad(`unknown policy '${p}' (known: ${POLICY_NAMES.join(', ')})`);
  const seed = values.seed !== undefined ? Number(values.seed) : 1;
  if (!Number.isInteger(seed) || seed < 0) bad(`--seed must be a non-negative integer, got '${values.seed}'`);
  const r = runReplay({ tables: readProfileTables(values.replay!), kvBlocks: { device, host }, blockTokens, requests, promptTokens, outputTokens, maxChunkTokens: chunk, policies, seed });
  console.log(formatReplay(r, values.replay!));
  if (values.json) fs.writeFileSync(values.json, JSON.stringify({ ...r, profile: values.replay }, null, 1));
  return 0;
}

export const command: Command = {
  summary: 'simulate the scheduler on T4, A10 and MI210 profiles (SIMULATED throughput at equal latency)',
  async run(argv) {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (values.replay !== undefined) {
      if (positionals.length > 0 || values.moe) bad('--replay runs on the profile it is given: no hardware name, no --moe');
      return runReplayCommand(values);
    }
    for (const flag of ['closed', 'kv-blocks', 'block-tokens', 'prefill-chunk'] as const) if (values[flag] !== undefined) bad(`--${flag} is for --replay`);
    const which = positionals.length === 0 || positionals.includes('all') ? Object.keys(HARDWARE) : positionals;
    for (const h of which) if (!HARDWARE[h]) bad(`unknown hardware '${h}' (known: ${Object.keys(HARDWARE).join(', ')}, all)`);
    const seedValue = values.seed !== undefined ? Number(values.seed) : 1;
    if (values.moe) return runMoe(which, values, seedValue);
    for (const flag of ['moe-model', 'batch', 'routing', 'steps', 'gpu-gb', 'prefetch-margin'] as const) if (values[flag] !== undefined) bad(`--${flag} is for --moe`);
    const models = values.model ? values.model.split(',') : Object.keys(SIM_MODELS);
    for (const m of models) if (!SIM_MODELS[m]) bad(`unknown model '${m}' (known: ${Object.keys(SIM_MODELS).join(', ')})`);
    const policies = (values.policies ? values.policies.split(',') : [...POLICY_NAMES]) as PolicyName[];
    for (const p of policies) if (!POLICY_NAMES.includes(p)) bad(`unknown policy '${p}' (known: ${POLICY_NAMES.join(', ')})`);
    const requests = values.requests !== undefined ? Number(values.requests) : values.quick ? 40 : 120;
    if (!Number.isInteger(requests) || requests < 1) bad(`--requests must be a positive integer, got '${values.requests}'`);
    const seed = values.seed !== undefined ? Number(values.seed) : 1;
    if (!Number.isInteger(seed) || seed < 0) bad(`--seed must be a non-negative integer, got '${values.seed}'`);
    const slo = numberList('slo-tpot', values['slo-tpot']);
    const eff = numberList('cpu-efficiency', values['cpu-efficiency']);
    if (eff && !(eff[0]! <= 1)) bad('--cpu-efficiency must be in (0, 1]');
    const r = await runSimulate({
      hardware: which,
      models,
      policies,
      requests,
      seed,
      rates: numberList('rates', values.rates),
      tpotSloUs: slo ? slo[0]! * 1000 : undefined,
      cpuEfficiency: eff?.[0],
      streamHostKv: values['no-kv-stream'] !== true,
    });
    console.log(r.text);
    if (values.json) fs.writeFileSync(values.json, JSON.stringify({ simulated: true, notes: r.notes, scenarios: r.scenarios }, null, 1));
    return 0;
  },
};
