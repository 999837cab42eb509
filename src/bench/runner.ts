// Runs a bench: for each model and thread count, loads every system with the same config,
// warms each up, then runs every workload `repeats` times, alternating which system goes
// first run by run so that drift in the machine falls on all systems alike. Each run
// records per-request token times, the CPU used by other processes and the peak memory.
import { TandemError, asTandemError } from '../native/errors.js';
import { decodeFloorTokPerS } from './floor.js';
import { CpuLoadMonitor, DeviceMemorySampler, loadWarning, OTHER_LOAD_WARN_SHARE, PeakMemory, rssBytes, type CpuLoad } from './load.js';
import { bandwidthAt, remeasureBandwidth, type MachineInfo } from './machine.js';
import {
  decodeTokPerS,
  maxRateAtSlo,
  promptTokPerS,
  servingMetrics,
  steadyDecodeTokPerS,
  type LatencySlo,
  type RequestTrace,
  type ServingMetrics,
} from './metrics.js';
import { inspectModel, resolveModel, type BenchModelInfo } from './models.js';
import { mean, median, Rng } from './stats.js';
import type { BenchSystem, LoadedSystem, SystemConfig } from './systems/system.js';
import {
  ONLINE_LENGTHS,
  describeWorkload,
  planRequests,
  parseTgKey,
  workloadContext,
  workloadKey,
  type PlannedRequest,
  type Workload,
} from './workloads.js';

/** What to run, besides the models, systems and threads. */
export interface BenchPlan {
  /** Prompt lengths of the pp workloads (tokens). */
  pp: number[];
  /** Decode lengths of the tg workloads (tokens). */
  tg: number[];
  /** Prompts before a tg decode (tokens, BOS included): each tg length runs after each. A long
   * one measures decode deep in a context, where attention reads the whole KV cache (llama-bench -d). */
  tgPrompts: number[];
  /** Sequence counts of the parallel workloads. */
  parallel: number[];
  parallelPrompt: number;
  parallelOutput: number;
  /** Online serving, or undefined to skip it. */
  online:
    | {
        /** Names in ONLINE_LENGTHS. */
        lengths: string[];
        /** Request rates (per second); empty: fractions of the capacity measured by the tg/pp/parallel runs. */
        rates: number[];
        rateFractions: number[];
        requests: number;
        concurrency: number;
      }
    | undefined;
  /** Measured runs of each pp/tg/parallel workload per system. */
  repeats: number;
  /** Measured runs of each online rate per system. */
  onlineRepeats: number;
  /** Prompt tokens per step / batch. */
  batchTokens: number;
  /** K and V cache type of every system (default f16). */
  kvType?: 'f16' | 'q8_0';
  slo: LatencySlo;
  seed: number;
}

export interface BenchHooks {
  /** Overall fraction done (0..1) and what runs now. */
  onProgress?: (fraction: number, what: string) => void;
  /** One line per finished run, load and notice. */
  log?: (line: string) => void;
  /** Each run as it finishes (the CLI appends it to a file, so that a bench cut short keeps what it measured). */
  onRun?: (record: RunRecord) => void;
}

export interface BenchInput {
  /** BENCH_MODELS names or GGUF paths. */
  models: string[];
  systems: BenchSystem[];
  threads: number[];
  plan: BenchPlan;
  machine: MachineInfo;
  cacheDir?: string;
}

/** One measured run of one workload on one system. */
export interface RunRecord {
  model: string;
  system: string;
  threads: number;
  workload: string;
  kind: Workload['kind'];
  /** Offered rate of an online run (requests/s). */
  rate?: number;
  lengths?: string;
  repeat: number;
  /** Position of this system in its repeat's order (0 ran first). */
  order: number;
  /** The headline number of the run's kind (tokens/s; see headlineMetric). */
  value: number;
  serving: ServingMetrics;
  /** Peak resident memory of the process during the run (bytes; every loaded system included). */
  peakRssBytes: number;
  /** True where the kernel refused to reset the peak, so it is the peak since the process started. */
  peakRssSinceStart: boolean;
  /** Peak GPU memory of this process (bytes) where a GPU backend is loaded and nvidia-smi runs. */
  peakDeviceBytes?: number;
  load: CpuLoad;
  /** Change of the system's own counters over the run (tandem: engine steps). */
  counters?: Record<string, number>;
  warning?: string;
  error?: string;
}

/** How a system loaded for a group of runs. */
export interface LoadRecord {
  model: string;
  system: string;
  threads: number;
  config: SystemConfig;
  loadS: number;
  /** Resident memory the load added (bytes). */
  rssDeltaBytes: number;
  details: Record<string, string | number | boolean>;
  error?: string;
}

export interface SummaryRow {
  model: string;
  threads: number;
  workload: string;
  kind: Workload['kind'];
  system: string;
  metric: string;
  /** Median of the runs' values. */
  value: number;
  min: number;
  max: number;
  runs: number;
  /** Median over repeats of value / the baseline's value in the same repeat; undefined for the baseline itself. */
  ratio?: number;
  baseline?: string;
  /** Decode bandwidth floor (tokens/s) at the measured bandwidth for these threads. */
  floorTokPerS?: number;
  /** value / floorTokPerS. */
  floorFraction?: number;
  ttftP50Ms: number;
  tpotP50Ms: number;
  e2eP90Ms: number;
  peakRssBytes: number;
  /** Peak device memory in use over the runs, bytes, where a GPU backend ran. */
  peakDeviceBytes?: number;
  /** Runs flagged for CPU used by other processes. */
  loadWarnings: number;
  /** Mean over the runs of the CPUs other processes kept busy (0 on a quiet machine). */
  otherCpus: number;
}

export interface SweepPoint {
  rate: number;
  outputTokPerS: number;
  requestsPerS: number;
  ttftMs: { p50: number; p90: number; p99: number };
  tpotMs: { p50: number; p90: number; p99: number };
  e2eMs: { p50: number; p90: number; p99: number };
  sloAttainment: number;
  goodputRps: number;
}

export interface OnlineSweep {
  model: string;
  threads: number;
  lengths: string;
  system: string;
  points: SweepPoint[];
  /** Highest offered rate with at least 90% of requests within the SLO (requests/s). */
  maxRateAtSlo: number;
}

export interface BenchResult {
  models: Omit<BenchModelInfo, 'normalTokens'>[];
  /** What each workload key means, e.g. parallel8: '8 sequences at once, 16 in, 24 out each'. */
  workloads: Record<string, string>;
  loads: LoadRecord[];
  runs: RunRecord[];
  summary: SummaryRow[];
  sweeps: OnlineSweep[];
  warnings: string[];
}

/** What a run's value means, per kind. */
export const HEADLINE_METRIC: Record<Workload['kind'], string> = {
  pp: 'prompt tok/s',
  tg: 'decode tok/s',
  parallel: 'aggregate decode tok/s',
  online: 'output tok/s',
};

const roundUp = (v: number, m: number) => Math.ceil(v / m) * m;

/** A seed per (plan seed, workload, repeat), so that each repeat sends fresh prompts and every system the same ones. */
function runSeed(seed: number, key: string, repeat: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const ch of `${key}#${repeat}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

/** Sends `requests` at their arrival times and records every token's time; rejects with the first failure after all settle. */
async function execute(system: LoadedSystem, requests: readonly PlannedRequest[], onToken: () => void): Promise<RequestTrace[]> {
  const t0 = performance.now();
  const settled = await Promise.allSettled(
    requests.map(async (req) => {
      const arrivalMs = t0 + req.arrivalMs;
      const wait = arrivalMs - performance.now();
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
      const trace: RequestTrace = { arrivalMs, promptTokens: req.prompt.length, tokenTimesMs: [] };
      await system.generate({ prompt: req.prompt, maxTokens: req.maxTokens }, (now) => {
        trace.tokenTimesMs.push(now);
        onToken();
      });
      if (trace.tokenTimesMs.length !== req.maxTokens) {
        throw new TandemError('TDM_INTERNAL', `asked for ${req.maxTokens} tokens, got ${trace.tokenTimesMs.length}`);
      }
      return trace;
    }),
  );
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<RequestTrace>).value);
}

function headline(w: Workload, traces: RequestTrace[], serving: ServingMetrics): number {
  switch (w.kind) {
    case 'pp':
      return promptTokPerS(traces[0]!);
    case 'tg':
      return decodeTokPerS(traces[0]!);
    case 'parallel':
      return steadyDecodeTokPerS(traces);
    case 'online':
      return serving.outputTokPerS;
  }
}

interface Group {
  sequences: number;
  workloads: Workload[];
}

/** Rotates `xs` left by k: the order of systems in repeat k. */
function rotate<T>(xs: readonly T[], k: number): T[] {
  const s = xs.length === 0 ? 0 : k % xs.length;
  return [...xs.slice(s), ...xs.slice(0, s)];
}

export class BenchRunner {
  private readonly input: BenchInput;
  private readonly hooks: BenchHooks;
  private readonly result: BenchResult = { models: [], workloads: {}, loads: [], runs: [], summary: [], sweeps: [], warnings: [] };
  private unitsDone = 0;
  private unitsTotal = 1;
  private what = '';

  constructor(input: BenchInput, hooks: BenchHooks = {}) {
    this.input = input;
    this.hooks = hooks;
  }

  async run(): Promise<BenchResult> {
    const { input } = this;
    if (input.systems.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', 'no systems to bench');
    const models: BenchModelInfo[] = [];
    for (const name of input.models) {
      const resolved = await resolveModel(name, {
        cacheDir: input.cacheDir,
        onWrite: (file) => this.log(`writing synthetic model ${name} to ${file} (once; later runs reuse it)`),
        onProgress: (f) => this.hooks.onProgress?.(0, `writing ${name} ${Math.floor(f * 100)}%`),
      });
      models.push(inspectModel(resolved.path, resolved.label, resolved.synthetic));
    }
    this.result.models = models.map(({ normalTokens: _tokens, ...rest }) => rest);
    this.unitsTotal = Math.max(1, models.length * input.threads.length * this.unitsPerCombination());
    for (const model of models) {
      for (const threads of input.threads) await this.runCombination(model, threads);
    }
    // A second bandwidth sample after the runs: on a busy machine one sample can fall low.
    this.what = 'measuring read bandwidth again';
    this.progress();
    await remeasureBandwidth(input.machine);
    this.summarize(models);
    this.hooks.onProgress?.(1, 'done');
    return this.result;
  }

  private log(line: string): void {
    this.hooks.log?.(line);
  }

  private progress(partial = 0): void {
    this.hooks.onProgress?.(Math.min(1, (this.unitsDone + partial) / this.unitsTotal), this.what);
  }

  /** Runs per (model, threads), counting one unit per measured run and one per system load. */
  private unitsPerCombination(): number {
    const p = this.input.plan;
    const systems = this.input.systems.length;
    const groups = (p.pp.length + p.tg.length * p.tgPrompts.length > 0 ? 1 : 0) + p.parallel.length + (p.online ? p.online.lengths.length : 0);
    const runs = (p.pp.length + p.tg.length * p.tgPrompts.length + p.parallel.length) * p.repeats;
    const rates = p.online ? (p.online.rates.length || p.online.rateFractions.length) * p.online.lengths.length * p.onlineRepeats : 0;
    return systems * (groups + runs + rates);
  }

  private async runCombination(model: BenchModelInfo, threads: number): Promise<void> {
    const p = this.input.plan;
    const groups: Group[] = [];
    const single: Workload[] = [
      ...p.pp.map((n): Workload => ({ kind: 'pp', promptTokens: n })),
      ...p.tgPrompts.flatMap((prompt) => p.tg.map((n): Workload => ({ kind: 'tg', promptTokens: prompt, outputTokens: n }))),
    ];
    if (single.length > 0) groups.push({ sequences: 1, workloads: single });
    for (const n of p.parallel) {
      groups.push({ sequences: n, workloads: [{ kind: 'parallel', sequences: n, promptTokens: p.parallelPrompt, outputTokens: p.parallelOutput }] });
    }
    for (const g of groups) await this.runGroup(model, threads, g, p.repeats);
    if (p.online) {
      for (const lengths of p.online.lengths) {
        const dist = ONLINE_LENGTHS[lengths];
        if (!dist) throw new TandemError('TDM_BAD_ARGUMENT', `unknown online lengths '${lengths}' (known: ${Object.keys(ONLINE_LENGTHS).join(', ')})`);
        const base: Workload = { kind: 'online', lengths, rate: 1, requests: p.online.requests, concurrency: p.online.concurrency, input: dist.input, output: dist.output };
        const rates = p.online.rates.length > 0 ? p.online.rates : this.autoRates(model, threads, base, p.online.rateFractions);
        const workloads = rates.map((rate): Workload => ({ ...base, rate }));
        await this.runGroup(model, threads, { sequences: p.online.concurrency, workloads }, p.onlineRepeats);
      }
    }
  }

  /**
   * Offered rates as fractions of what the systems can serve, judged from this run's
   * measurements: a request costs its prompt at the best pp rate plus its output at the
   * best aggregate decode rate with at most `concurrency` sequences.
   */
  private autoRates(model: BenchModelInfo, threads: number, w: Extract<Workload, { kind: 'online' }>, fractions: number[]): number[] {
    const runs = this.result.runs.filter((r) => r.model === model.label && r.threads === threads && !r.error);
    const best = (pred: (r: RunRecord) => boolean) => Math.max(0, ...runs.filter(pred).map((r) => r.value));
    const parallelSeqs = this.input.plan.parallel.filter((n) => n <= w.concurrency);
    const decode = parallelSeqs.length > 0 ? best((r) => r.kind === 'parallel' && r.workload === `parallel${Math.max(...parallelSeqs)}`) : best((r) => r.kind === 'tg');
    if (!(decode > 0)) {
      throw new TandemError('TDM_BAD_ARGUMENT', 'online rates are chosen from the tg or parallel runs of the same bench: run those too, or give --rates');
    }
    // Without a pp run, prompt tokens are taken to cost a fifth of a decode token each, as batched prefill roughly does.
    const prompt = best((r) => r.kind === 'pp') || decode * 5;
    const sample = planRequests(w, model, this.input.plan.seed);
    const meanIn = mean(sample.map((r) => r.prompt.length));
    const meanOut = mean(sample.map((r) => r.maxTokens));
    const capacity = 1 / (meanIn / prompt + meanOut / decode);
    return fractions.map((f) => Number((f * capacity).toPrecision(3)));
  }

  private async runGroup(model: BenchModelInfo, threads: number, group: Group, repeats: number): Promise<void> {
    const p = this.input.plan;
    const contextSize = roundUp(Math.max(...group.workloads.map(workloadContext)) + 16, 256);
    const config: SystemConfig = { threads, maxSequences: group.sequences, contextSize, batchTokens: p.batchTokens, ...(p.kvType ? { kvType: p.kvType } : {}) };
    const loaded: { system: BenchSystem; instance: LoadedSystem }[] = [];
    try {
      for (const system of this.input.systems) {
        this.what = `${model.label} ${threads}t: loading ${system.name} (${group.sequences} seq)`;
        this.progress();
        const instance = await this.load(model, threads, system, config);
        this.unitsDone++;
        if (instance) loaded.push({ system, instance });
      }
      for (let r = 0; r < repeats; r++) {
        for (const [wi, w] of group.workloads.entries()) {
          const order = rotate(loaded, r + wi);
          for (const [oi, { system, instance }] of order.entries()) {
            this.what = `${model.label} ${threads}t ${workloadKey(w)} ${system.name} (${r + 1}/${repeats})`;
            this.progress();
            const record = await this.measure(model, threads, system.name, instance, w, r, oi);
            this.result.runs.push(record);
            this.hooks.onRun?.(record);
            this.unitsDone++;
            this.log(formatRun(record));
          }
        }
      }
      // Systems that failed to load still count their runs as done.
      this.unitsDone += (this.input.systems.length - loaded.length) * group.workloads.length * repeats;
    } finally {
      for (const { instance } of loaded) await instance.dispose();
    }
  }

  private async load(model: BenchModelInfo, threads: number, system: BenchSystem, config: SystemConfig): Promise<LoadedSystem | undefined> {
    const rss0 = rssBytes();
    const t0 = performance.now();
    const record: LoadRecord = { model: model.label, system: system.name, threads, config, loadS: 0, rssDeltaBytes: 0, details: {} };
    this.result.loads.push(record);
    let instance: LoadedSystem;
    try {
      instance = await system.load(model.path, config);
    } catch (err) {
      record.error = asTandemError(err).message;
      this.result.warnings.push(`${system.name} did not load ${model.label} (${threads} threads, ${config.maxSequences} sequences): ${record.error}`);
      this.log(`! ${system.name} failed to load: ${record.error}`);
      return undefined;
    }
    record.loadS = (performance.now() - t0) / 1000;
    record.rssDeltaBytes = rssBytes() - rss0;
    record.details = instance.details;
    try {
      await this.warmUp(model, instance, config);
    } catch (err) {
      record.error = `warm-up failed: ${asTandemError(err).message}`;
      this.result.warnings.push(`${system.name} on ${model.label}: ${record.error}`);
      await instance.dispose();
      return undefined;
    }
    return instance;
  }

  /** Pages the weights in and lets each system set up its buffers before anything is timed. */
  private async warmUp(model: BenchModelInfo, instance: LoadedSystem, config: SystemConfig): Promise<void> {
    const seed = new Rng(this.input.plan.seed ^ 0x5eed).int(0, 2 ** 31);
    const prompt = Math.min(32, config.contextSize - 8);
    await execute(instance, planRequests({ kind: 'tg', promptTokens: prompt, outputTokens: 4 }, model, seed), () => undefined);
    if (config.maxSequences > 1) {
      const w: Workload = { kind: 'parallel', sequences: config.maxSequences, promptTokens: Math.min(8, prompt), outputTokens: 4 };
      await execute(instance, planRequests(w, model, seed + 1), () => undefined);
    }
  }

  private async measure(
    model: BenchModelInfo,
    threads: number,
    system: string,
    instance: LoadedSystem,
    w: Workload,
    repeat: number,
    order: number,
  ): Promise<RunRecord> {
    const key = workloadKey(w);
    this.result.workloads[key] = describeWorkload(w);
    const requests = planRequests(w, model, runSeed(this.input.plan.seed, key, repeat));
    const expected = requests.reduce((a, r) => a + r.maxTokens, 0);
    let tokens = 0;
    let lastDraw = 0;
    const memory = new PeakMemory();
    const monitor = new CpuLoadMonitor();
    // A GPU backend makes the bench sample device memory; the CPU stand-in for a device has none.
    const device = instance.backends.some((b) => b !== 'cpu' && b !== 'cpu-standin') ? new DeviceMemorySampler() : undefined;
    const counters0 = instance.counters?.();
    memory.reset();
    device?.start();
    monitor.start();
    let traces: RequestTrace[] = [];
    let error: string | undefined;
    try {
      traces = await execute(instance, requests, () => {
        tokens++;
        const now = performance.now();
        if (now - lastDraw > 200) {
          lastDraw = now;
          this.progress(tokens / expected);
        }
      });
    } catch (err) {
      error = asTandemError(err).message;
    }
    const load = monitor.stop();
    const peakDeviceBytes = device?.stop();
    const counters1 = instance.counters?.();
    const serving = servingMetrics(traces, this.input.plan.slo);
    const record: RunRecord = {
      model: model.label,
      system,
      threads,
      workload: key,
      kind: w.kind,
      ...(w.kind === 'online' ? { rate: w.rate, lengths: w.lengths } : {}),
      repeat,
      order,
      value: error ? NaN : headline(w, traces, serving),
      serving,
      peakRssBytes: memory.peakBytes(),
      peakRssSinceStart: memory.sinceStart,
      ...(peakDeviceBytes !== undefined ? { peakDeviceBytes } : {}),
      load,
    };
    if (counters0 && counters1) {
      record.counters = Object.fromEntries(Object.entries(counters1).map(([k, v]) => [k, v - (counters0[k] ?? 0)]));
    }
    const warning = loadWarning(load);
    if (warning) record.warning = warning;
    if (error) {
      record.error = error;
      this.result.warnings.push(`${system} failed ${key} on ${model.label} (${threads} threads, repeat ${repeat + 1}): ${error}`);
    }
    return record;
  }

  private summarize(models: BenchModelInfo[]): void {
    const runs = this.result.runs;
    const baseline = this.input.systems.find((s) => s.baseline)?.name;
    // One row per (model, threads, workload, system): workloads in the order they ran, systems in the order given.
    const keys = new Map<string, RunRecord>();
    const rank = (name: string) => this.input.systems.findIndex((s) => s.name === name);
    const ordered = runs.map((r, i) => ({ r, i, w: runs.findIndex((x) => x.model === r.model && x.threads === r.threads && x.workload === r.workload) }));
    ordered.sort((a, b) => a.w - b.w || rank(a.r.system) - rank(b.r.system) || a.i - b.i);
    for (const { r } of ordered) if (!keys.has(`${r.model}|${r.threads}|${r.workload}|${r.system}`)) keys.set(`${r.model}|${r.threads}|${r.workload}|${r.system}`, r);
    for (const first of keys.values()) {
      const mine = runs.filter((r) => r.model === first.model && r.threads === first.threads && r.workload === first.workload && r.system === first.system && !r.error);
      if (mine.length === 0) continue;
      const values = mine.map((r) => r.value);
      const row: SummaryRow = {
        model: first.model,
        threads: first.threads,
        workload: first.workload,
        kind: first.kind,
        system: first.system,
        metric: HEADLINE_METRIC[first.kind],
        value: median(values),
        min: Math.min(...values),
        max: Math.max(...values),
        runs: mine.length,
        ttftP50Ms: median(mine.map((r) => r.serving.ttftMs.p50)),
        tpotP50Ms: median(mine.map((r) => r.serving.tpotMs.p50)),
        e2eP90Ms: median(mine.map((r) => r.serving.e2eMs.p90)),
        peakRssBytes: Math.max(...mine.map((r) => r.peakRssBytes)),
        ...(mine.some((r) => r.peakDeviceBytes !== undefined) ? { peakDeviceBytes: Math.max(...mine.map((r) => r.peakDeviceBytes ?? 0)) } : {}),
        loadWarnings: mine.filter((r) => r.warning).length,
        otherCpus: mean(mine.map((r) => r.load.otherCpus)),
      };
      if (baseline && first.system !== baseline) {
        const ratios: number[] = [];
        for (const r of mine) {
          const b = runs.find((x) => x.system === baseline && x.model === r.model && x.threads === r.threads && x.workload === r.workload && x.repeat === r.repeat && !x.error);
          if (b && b.value > 0) ratios.push(r.value / b.value);
        }
        if (ratios.length > 0) {
          row.ratio = median(ratios);
          row.baseline = baseline;
        }
      }
      const model = models.find((m) => m.label === first.model)!;
      const bw = bandwidthAt(this.input.machine, first.threads);
      if (bw && (first.kind === 'tg' || first.kind === 'parallel')) {
        const p = this.input.plan;
        const tg = first.kind === 'tg' ? parseTgKey(first.workload) : undefined;
        const seqs = tg ? 1 : Number(first.workload.slice('parallel'.length));
        const out = tg ? tg.outputTokens : p.parallelOutput;
        const prompt = tg ? tg.promptTokens : p.parallelPrompt;
        row.floorTokPerS = decodeFloorTokPerS(model.decode, bw.bytesPerSecond, seqs, prompt + out / 2);
        row.floorFraction = row.value / row.floorTokPerS;
      }
      this.result.summary.push(row);
    }
    this.sweeps();
    const flagged = runs.filter((r) => r.warning).length;
    if (flagged > 0) {
      this.result.warnings.push(
        `${flagged} of ${runs.length} runs shared the CPU with other processes (more than ${Math.round(100 * OTHER_LOAD_WARN_SHARE)}% of the machine): their numbers are lower and noisier than on a quiet machine`,
      );
    }
  }

  private sweeps(): void {
    const online = this.result.runs.filter((r) => r.kind === 'online' && !r.error);
    const groups = new Map<string, RunRecord[]>();
    for (const r of online) {
      const k = `${r.model}|${r.threads}|${r.lengths}|${r.system}`;
      groups.set(k, [...(groups.get(k) ?? []), r]);
    }
    for (const rs of groups.values()) {
      const byRate = new Map<number, RunRecord[]>();
      for (const r of rs) byRate.set(r.rate!, [...(byRate.get(r.rate!) ?? []), r]);
      const pick = (xs: RunRecord[], f: (s: ServingMetrics) => number) => median(xs.map((x) => f(x.serving)));
      const points: SweepPoint[] = [...byRate.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([rate, xs]) => ({
          rate,
          outputTokPerS: pick(xs, (s) => s.outputTokPerS),
          requestsPerS: pick(xs, (s) => s.requestsPerS),
          ttftMs: { p50: pick(xs, (s) => s.ttftMs.p50), p90: pick(xs, (s) => s.ttftMs.p90), p99: pick(xs, (s) => s.ttftMs.p99) },
          tpotMs: { p50: pick(xs, (s) => s.tpotMs.p50), p90: pick(xs, (s) => s.tpotMs.p90), p99: pick(xs, (s) => s.tpotMs.p99) },
          e2eMs: { p50: pick(xs, (s) => s.e2eMs.p50), p90: pick(xs, (s) => s.e2eMs.p90), p99: pick(xs, (s) => s.e2eMs.p99) },
          sloAttainment: pick(xs, (s) => s.sloAttainment),
          goodputRps: pick(xs, (s) => s.goodputRps),
        }));
      const r0 = rs[0]!;
      this.result.sweeps.push({ model: r0.model, threads: r0.threads, lengths: r0.lengths!, system: r0.system, points, maxRateAtSlo: maxRateAtSlo(points) });
    }
  }
}

/** One line per run for the log. */
export function formatRun(r: RunRecord): string {
  const head = `${r.model} ${r.threads}t ${r.workload} ${r.system} #${r.repeat + 1}`;
  if (r.error) return `${head}: FAILED ${r.error}`;
  const unit = HEADLINE_METRIC[r.kind];
  const latency = r.kind === 'online' ? `, TTFT p50 ${r.serving.ttftMs.p50.toFixed(0)} ms, TPOT p50 ${r.serving.tpotMs.p50.toFixed(1)} ms, SLO ${(r.serving.sloAttainment * 100).toFixed(0)}%` : '';
  return `${head}: ${r.value.toFixed(2)} ${unit}${latency}${r.warning ? `  [load: ${r.warning}]` : ''}`;
}
