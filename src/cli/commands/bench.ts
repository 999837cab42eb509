// `tandem bench`: measures tandem against llama.cpp (and tandem's policies against each
// other) on the same GGUF files, threads and sequences, and writes JSON, markdown and SVG
// reports. The bench itself lives in src/bench so that it ships with the CLI.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ParseArgsConfig } from 'node:util';
import { physicalCoreCount } from '../../api/threads.js';
import { describeMachine } from '../../bench/machine.js';
import { BENCH_MODELS } from '../../bench/models.js';
import { REPORT_SCHEMA, writeReports, fmt, type BenchReport } from '../../bench/report.js';
import { BenchRunner, type BenchPlan } from '../../bench/runner.js';
import { DEFAULT_SYSTEMS, SYSTEMS, systemRegistry, systemsByName, type TandemExtraOptions } from '../../bench/systems/index.js';
import type { DeviceOption } from '../../api/types.js';
import { ONLINE_LENGTHS, TG_PROMPT_TOKENS, WORKLOAD_KINDS, type WorkloadKind } from '../../bench/workloads.js';
import type { Command } from '../command.js';
import { createProgressBar, type ProgressBar } from '../progress.js';
import { parseFlags, usageError } from './generate.js';

const OPTIONS = {
  model: { type: 'string', short: 'm', multiple: true },
  systems: { type: 'string' },
  threads: { type: 'string', short: 't' },
  workloads: { type: 'string' },
  pp: { type: 'string' },
  tg: { type: 'string' },
  'tg-depth': { type: 'string' },
  'kv-type': { type: 'string' },
  parallel: { type: 'string' },
  'parallel-tokens': { type: 'string' },
  lengths: { type: 'string' },
  rates: { type: 'string' },
  requests: { type: 'string' },
  concurrency: { type: 'string' },
  repeats: { type: 'string' },
  'online-repeats': { type: 'string' },
  'slo-ttft': { type: 'string' },
  'slo-tpot': { type: 'string' },
  batch: { type: 'string' },
  seed: { type: 'string' },
  out: { type: 'string', short: 'o' },
  cache: { type: 'string' },
  device: { type: 'string' },
  'cpu-kernels': { type: 'string' },
  'sliding-kv': { type: 'string' },
  'device-threads': { type: 'string' },
  'device-weight-mib': { type: 'string' },
  'kv-device-mib': { type: 'string' },
  'kv-host-mib': { type: 'string' },
  'policy-tpot-ms': { type: 'string' },
  profile: { type: 'string' },
  'profile-dir': { type: 'string' },
  quick: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const HELP = `usage: tandem bench [options]
       tandem bench --simulate t4|a10|mi210|all [options of tandem simulate]

Runs tandem and the baselines on the same GGUF file, threads and sequences,
alternating systems run by run, and writes results.json, results.md, machine.json
and SVG plots to --out.

With --simulate it runs \`tandem simulate\` instead: the real scheduler and policies
against a virtual clock on a hardware profile (tandem simulate --help). SIMULATED.

  -m, --model LIST          GGUF files or bench models, comma-separated or repeated
                            (default tinyllama-q4_K_M; --quick: quick). Bench models,
                            written once to the cache with random weights:
${Object.entries(BENCH_MODELS).map(([k, v]) => `                              ${k.padEnd(18)}${v.about}`).join('\n')}
      --systems LIST        ${SYSTEMS.map((s) => s.name).join(', ')}
                            (default ${DEFAULT_SYSTEMS.join(',')}; tandem:POLICY needs --device;
                            ratios are against llama.cpp or tandem:gpu-only, the first listed)
  -t, --threads LIST        CPU thread counts, e.g. 1,2 (default: physical cores)
      --workloads LIST      ${WORKLOAD_KINDS.join(',')} (default all)
      --pp LIST             prompt lengths (default 512; --quick 128)
      --tg LIST             decode lengths (default 128; --quick 32)
      --tg-depth LIST       prompt tokens before each tg decode (default 16); a deep one,
                            e.g. 4096, times decode that reads a long KV cache
      --parallel LIST       sequences decoded together (default 4,8,16,32; --quick 4)
      --parallel-tokens I,O prompt and output tokens of each parallel sequence (default 32,64)
      --lengths LIST        online request lengths: ${Object.keys(ONLINE_LENGTHS).join(', ')} (default chat)
      --rates LIST          online request rates per second (default 0.5,0.8,1,1.2 times
                            the capacity this run measured)
      --requests N          online requests per rate (default 24)
      --concurrency N       online sequences served at once (default 8)
      --repeats N           measured runs per workload and system (default 3)
      --online-repeats N    measured runs per online rate and system (default 1)
      --slo-ttft MS         goodput SLO on time to first token (default 5000)
      --slo-tpot MS         goodput SLO on time per output token (default 250)
      --batch N             prompt tokens per step (default 512)
      --kv-type T           KV cache of every system: f16 (default) or q8_0 (tandem's kvType,
                            llama.cpp's -ctk q8_0 -ctv q8_0)
      --seed N              seed of the prompts and arrivals (default 1)
  -o, --out DIR             where the reports go (default bench-results/<date>-<host>)
      --cache DIR           synthetic model cache (default $TANDEM_CACHE/models or
                            ~/.cache/tandem/models)
      --quick               a small model and short workloads: under two minutes
  -h, --help                this help

      --cpu-kernels K       tandem's CPU kernels: auto (default), avx512, avxvnni, avx2 or ref
                            (llama.cpp keeps its own choice)
      --sliding-kv M        tandem's KV of sliding-window layers: window (default: only
                            what the window sees) or full (every position)

  tandem's device beside the CPU (applies to every tandem system):
      --device KIND         none, auto, gpu, cpu-standin (a CPU posing as the device:
                            tests only, never GPU numbers) (default none)
      --device-threads N    threads of the cpu-standin device (default 1)
      --device-weight-mib N device memory for weights (default: all that fits)
      --kv-device-mib N     KV cache in device memory: cap it to make memory pressure real
      --kv-host-mib N       KV cache in host RAM
      --policy-tpot-ms MS   TPOT target the auto policy keeps to when it can
      --profile MODE        cost-model timings: cached (default), refresh, quick
      --profile-dir DIR     profile cache (default $TANDEM_CACHE or ~/.cache/tandem)`;

function kvTypeFlag(value: string | undefined): { kvType?: 'f16' | 'q8_0' } {
  if (value === undefined) return {};
  if (value !== 'f16' && value !== 'q8_0') throw usageError(`--kv-type must be f16 or q8_0, got '${value}'`);
  return { kvType: value };
}

function list(flag: string, value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw usageError(`--${flag} expects a comma-separated list`);
  return items;
}

function numbers(flag: string, value: string | undefined, integer = true, min = 1): number[] | undefined {
  return list(flag, value)?.map((s) => {
    const n = Number(s);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      throw usageError(`--${flag}: '${s}' is not ${integer ? 'an integer' : 'a number'} ≥ ${min}`);
    }
    return n;
  });
}

function one(flag: string, value: string | undefined, integer = true, min = 1): number | undefined {
  const ns = numbers(flag, value, integer, min);
  if (ns && ns.length !== 1) throw usageError(`--${flag} expects one number`);
  return ns?.[0];
}

function packageVersion(): string {
  // src/cli/commands and dist/cli/commands are both three levels below the package root.
  const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'package.json');
  try {
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const MIB = 1024 * 1024;
const DEVICE_KINDS: readonly DeviceOption[] = ['none', 'auto', 'gpu', 'cpu-standin'];
const PROFILE_MODES = ['cached', 'refresh', 'quick'] as const;

/** tandem's load options from the device flags (each tandem system gets them). */
export function tandemOptionsFromFlags(values: Record<string, unknown>): TandemExtraOptions {
  const v = values as Partial<Record<keyof typeof OPTIONS, string>>;
  const out: TandemExtraOptions = {};
  const device = v.device as DeviceOption | undefined;
  if (device !== undefined && !DEVICE_KINDS.includes(device)) throw usageError(`--device: unknown '${device}' (known: ${DEVICE_KINDS.join(', ')})`);
  if (device !== undefined && device !== 'none') out.device = device;
  const needsDevice = ['device-threads', 'device-weight-mib', 'policy-tpot-ms', 'profile', 'profile-dir'] as const;
  for (const flag of needsDevice) if (v[flag] !== undefined && !out.device) throw usageError(`--${flag} needs --device (auto, gpu or cpu-standin)`);
  const threads = one('device-threads', v['device-threads']);
  if (threads !== undefined) {
    if (out.device !== 'cpu-standin') throw usageError('--device-threads is for --device cpu-standin only');
    out.deviceThreads = threads;
  }
  const mib = (flag: 'device-weight-mib' | 'kv-device-mib' | 'kv-host-mib') => {
    const n = one(flag, v[flag], false, 0);
    return n === undefined ? undefined : Math.floor(n * MIB);
  };
  const weights = mib('device-weight-mib');
  if (weights !== undefined) out.deviceWeightBytes = weights;
  const kvDevice = mib('kv-device-mib');
  if (kvDevice !== undefined) out.kvDeviceBytes = kvDevice;
  const kvHost = mib('kv-host-mib');
  if (kvHost !== undefined) out.kvHostBytes = kvHost;
  const slo = one('policy-tpot-ms', v['policy-tpot-ms'], false);
  if (slo !== undefined) out.tpotSloMs = slo;
  if (v.profile !== undefined) {
    if (!(PROFILE_MODES as readonly string[]).includes(v.profile)) throw usageError(`--profile: unknown '${v.profile}' (known: ${PROFILE_MODES.join(', ')})`);
    out.profile = v.profile as (typeof PROFILE_MODES)[number];
  }
  if (v['profile-dir'] !== undefined) out.profileCacheDir = v['profile-dir'];
  const kernels = v['cpu-kernels'];
  if (kernels !== undefined) {
    if (!['auto', 'avx512', 'avxvnni', 'avx2', 'ref'].includes(kernels)) throw usageError(`--cpu-kernels: unknown '${kernels}' (known: auto, avx512, avxvnni, avx2, ref)`);
    out.cpuKernels = kernels as TandemExtraOptions['cpuKernels'];
  }
  const sliding = v['sliding-kv'];
  if (sliding !== undefined) {
    if (sliding !== 'window' && sliding !== 'full') throw usageError(`--sliding-kv: unknown '${sliding}' (known: window, full)`);
    out.slidingKv = sliding;
  }
  return out;
}

/** The run's plan from the flags; --quick changes the defaults, explicit flags still win. */
export function planFromFlags(values: Record<string, unknown>): BenchPlan {
  const v = values as Partial<Record<keyof typeof OPTIONS, string>> & { quick?: boolean };
  const quick = v.quick === true;
  const kinds = (list('workloads', v.workloads) ?? [...WORKLOAD_KINDS]) as WorkloadKind[];
  for (const k of kinds) if (!WORKLOAD_KINDS.includes(k)) throw usageError(`--workloads: unknown workload '${k}' (known: ${WORKLOAD_KINDS.join(', ')})`);
  const [parallelPrompt, parallelOutput] = numbers('parallel-tokens', v['parallel-tokens']) ?? (quick ? [16, 16] : [32, 64]);
  if (parallelOutput === undefined) throw usageError('--parallel-tokens expects two numbers: prompt,output');
  const lengths = list('lengths', v.lengths) ?? [quick ? 'small' : 'chat'];
  for (const l of lengths) if (!ONLINE_LENGTHS[l]) throw usageError(`--lengths: unknown '${l}' (known: ${Object.keys(ONLINE_LENGTHS).join(', ')})`);
  return {
    pp: kinds.includes('pp') ? numbers('pp', v.pp) ?? [quick ? 128 : 512] : [],
    tg: kinds.includes('tg') ? numbers('tg', v.tg, true, 2) ?? [quick ? 32 : 128] : [],
    tgPrompts: numbers('tg-depth', v['tg-depth']) ?? [TG_PROMPT_TOKENS],
    parallel: kinds.includes('parallel') ? numbers('parallel', v.parallel) ?? (quick ? [4] : [4, 8, 16, 32]) : [],
    parallelPrompt: parallelPrompt!,
    parallelOutput,
    online: kinds.includes('online')
      ? {
          lengths,
          rates: numbers('rates', v.rates, false, Number.MIN_VALUE) ?? [],
          rateFractions: quick ? [0.5, 1] : [0.5, 0.8, 1, 1.2],
          requests: one('requests', v.requests) ?? (quick ? 12 : 24),
          concurrency: one('concurrency', v.concurrency) ?? (quick ? 4 : 8),
        }
      : undefined,
    repeats: one('repeats', v.repeats) ?? (quick ? 1 : 3),
    onlineRepeats: one('online-repeats', v['online-repeats']) ?? 1,
    batchTokens: one('batch', v.batch) ?? 512,
    ...kvTypeFlag(v['kv-type']),
    slo: { ttftMs: one('slo-ttft', v['slo-ttft'], false) ?? 5000, tpotMs: one('slo-tpot', v['slo-tpot'], false) ?? 250 },
    seed: one('seed', v.seed, true, 0) ?? 1,
  };
}

/** A bar for the whole bench whose label names the run in progress; log lines go above it. */
class BenchProgress {
  private bar: ProgressBar | undefined;
  private label = '';

  update(fraction: number, what: string): void {
    if (what !== this.label || !this.bar) {
      this.bar?.done();
      this.label = what;
      this.bar = createProgressBar({ label: what, delayMs: 0 });
    }
    this.bar.update(fraction);
  }

  log(line: string): void {
    this.bar?.done();
    this.bar = undefined;
    console.error(line);
  }

  done(): void {
    this.bar?.done();
  }
}

/** `bench --simulate HW ...` as `simulate HW ...`, or null without --simulate. */
export function simulateArgs(argv: readonly string[]): string[] | null {
  const i = argv.findIndex((a) => a === '--simulate' || a.startsWith('--simulate='));
  if (i < 0) return null;
  const inline = argv[i]!.startsWith('--simulate=');
  const hw = inline ? argv[i]!.slice('--simulate='.length) : argv[i + 1];
  if (hw === undefined || hw === '' || hw.startsWith('-')) throw usageError('bench: --simulate needs a hardware profile: t4, a10, mi210 or all');
  return [hw, ...argv.slice(0, i), ...argv.slice(i + (inline ? 1 : 2))];
}

export const command: Command = {
  summary: 'benchmark tandem against llama.cpp on the same model, threads and sequences',
  async run(argv) {
    const simulated = simulateArgs(argv);
    if (simulated) return (await import('../../sched/sim/command.js')).command.run(simulated);
    const { values } = parseFlags('bench', { args: argv, options: OPTIONS, allowPositionals: false, strict: true });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const plan = planFromFlags(values);
    const models = (values.model ?? []).flatMap((m) => list('model', m) ?? []);
    if (models.length === 0) models.push(values.quick ? 'quick' : 'tinyllama-q4_K_M');
    const tandemOptions = tandemOptionsFromFlags(values);
    const systems = systemsByName(list('systems', values.systems) ?? [...DEFAULT_SYSTEMS], systemRegistry(tandemOptions));
    const threads = numbers('threads', values.threads) ?? [physicalCoreCount()];
    const started = new Date();
    const out = values.out ?? path.join('bench-results', `${started.toISOString().slice(0, 10)}-${os.hostname()}`);

    const probed = [...new Set([1, ...threads])];
    console.error(`tandem bench: measuring the machine (read bandwidth at ${probed.join(', ')} thread${probed.length > 1 || probed[0] !== 1 ? 's' : ''})`);
    const machine = await describeMachine(threads);
    const progress = new BenchProgress();
    // Every run as it finishes, one JSON object a line: what a bench cut short still measured.
    fs.mkdirSync(out, { recursive: true });
    const partial = path.join(out, 'runs.jsonl');
    fs.writeFileSync(partial, '');
    let result;
    try {
      result = await new BenchRunner(
        { models, systems, threads, plan, machine, cacheDir: values.cache },
        {
          onProgress: (f, what) => progress.update(f, what),
          log: (line) => progress.log(line),
          onRun: (record) => fs.appendFileSync(partial, JSON.stringify(record) + '\n'),
        },
      ).run();
    } finally {
      progress.done();
    }
    // The full report below holds every run; the partial log is only for a bench that did not finish.
    fs.rmSync(partial, { force: true });
    const finished = new Date();
    const report: BenchReport = {
      schema: REPORT_SCHEMA,
      tandemVersion: packageVersion(),
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      durationS: (finished.getTime() - started.getTime()) / 1000,
      command: ['tandem', 'bench', ...argv].join(' '),
      systems: systems.map((s) => ({ name: s.name, about: s.about, baseline: s.baseline })),
      threads,
      plan,
      machine,
      ...result,
    };
    writeReports(report, out);

    for (const row of report.summary) {
      const ratio = row.ratio !== undefined ? `  ${fmt(row.ratio)}x ${row.baseline}` : '';
      const floor = row.floorFraction !== undefined ? `  ${(row.floorFraction * 100).toFixed(0)}% of floor` : '';
      console.log(`${row.model} ${row.threads}t ${row.workload.padEnd(16)} ${row.system.padEnd(16)} ${fmt(row.value).padStart(8)} ${row.metric}${ratio}${floor}`);
    }
    for (const w of report.warnings) console.error(`warning: ${w}`);
    console.error(`tandem bench: reports in ${out}`);
    return report.runs.some((r) => r.error) || report.loads.some((l) => l.error) ? 1 : 0;
  },
};
