// The profiler: times every subtask of a step on this machine through the model's native
// timing entry points (NativeModel.profile) on a grid of sizes, fits the cost model's tables
// to them, and reports its prediction error on sizes between the grid points that it was
// not fitted on. Quick at first use (a small grid, a progress bar), then cached as JSON per
// machine and model shape; the tables are refreshed online from each step's phase times
// (TableCostModel.observeStep) and can be written back.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TandemError } from '../native/errors.js';
import { addonFile, native, type NativeModel } from '../native/binding.js';
import type { ModelHyperparams } from '../model/describe.js';
import { createProgressBar } from '../cli/progress.js';
import { fitTables, predict, predictionErrors, TableCostModel, type CostModel, type CostShape, type CostTablesJson, type Measurement, type PredictionError } from './cost-model.js';

/** A configuration to time: a Measurement without its time. */
export type Probe = Measurement extends infer M ? (M extends Measurement ? Omit<M, 'us'> : never) : never;

/** Sizes to time, and the held-out sizes between them that measure the prediction error. */
export interface ProfileGrid {
  linearTokens: number[];
  /**
   * Sampled rows to time the LM head at, apart from the linear work (which then leaves it
   * out: a step computes logits for the rows it samples, not for a prefill chunk's every
   * token). Absent: the linear timings include the head for every row.
   */
  headRows?: number[];
  /** Requests per decode attention call. */
  attentionRequests: number[];
  /** Cached tokens per request. */
  attentionContexts: number[];
  prefillTokens: number[];
  copyBytes: number[];
  /** Host KV blocks to time streaming to the device at, where the device streams host KV (ProfileOptions.streamsHostKv). */
  streamBlocks?: number[];
  heldOut: Probe[];
}

/** The first-use grid for a real model: a few dozen timings. */
export const DEFAULT_GRID: ProfileGrid = {
  // Up to 512: a step holds a prefill chunk (256 by default) beside the decodes.
  linearTokens: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
  // Up to a decode batch of 256; an H200 step of 256 prefill rows and 40 decodes took 36 ms
  // where a head over all 296 rows priced it at 42-50 (2026-11-28).
  headRows: [1, 8, 32, 128, 256],
  attentionRequests: [1, 4, 16, 64],
  attentionContexts: [64, 256, 1024],
  // Up to 1024: a long prompt's later chunks reach hundreds of thousands of products.
  prefillTokens: [16, 64, 256, 1024],
  copyBytes: [4096, 262144, 16777216],
  streamBlocks: [1, 16, 256],
  heldOut: [
    { kind: 'linear', tokens: 3 },
    { kind: 'linear', tokens: 12 },
    { kind: 'linear', tokens: 48 },
    { kind: 'linear', tokens: 288 },
    { kind: 'head', rows: 16 },
    { kind: 'deviceAttention', requests: 2, context: 128 },
    { kind: 'deviceAttention', requests: 8, context: 512 },
    { kind: 'prefillAttention', tokens: 128 },
    { kind: 'cpuPrefillAttention', tokens: 128 },
    { kind: 'cpuAttention', requests: 2, context: 128 },
    { kind: 'cpuAttention', requests: 8, context: 512 },
    { kind: 'copy', bytes: 1048576 },
    { kind: 'stream', blocks: 64 },
  ],
};

/** A grid of a dozen-odd timings for tests and quick runs: coarse tables, fitted in a moment on a small model. */
export const QUICK_GRID: ProfileGrid = {
  linearTokens: [1, 4, 16],
  headRows: [1, 16],
  attentionRequests: [1, 4],
  attentionContexts: [16, 128],
  prefillTokens: [16, 64],
  copyBytes: [4096, 262144],
  streamBlocks: [1, 16],
  heldOut: [
    { kind: 'linear', tokens: 8 },
    { kind: 'cpuAttention', requests: 2, context: 64 },
  ],
};

/** The grid the simulator profiles its virtual machines on (wider: big batches, long contexts). */
export const SIM_GRID: ProfileGrid = {
  linearTokens: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
  attentionRequests: [1, 2, 4, 8, 16, 32, 64, 128, 256],
  attentionContexts: [16, 64, 256, 1024, 2048, 4096],
  prefillTokens: [16, 64, 256, 1024, 2048],
  headRows: [1, 8, 32, 128, 256],
  copyBytes: [4096, 65536, 1048576, 16777216, 268435456],
  heldOut: [
    { kind: 'linear', tokens: 24 },
    { kind: 'linear', tokens: 200 },
    { kind: 'deviceAttention', requests: 12, context: 700 },
    { kind: 'deviceAttention', requests: 100, context: 1500 },
    { kind: 'prefillAttention', tokens: 700 },
    { kind: 'cpuPrefillAttention', tokens: 700 },
    { kind: 'cpuAttention', requests: 12, context: 700 },
    { kind: 'cpuAttention', requests: 100, context: 1500 },
    { kind: 'copy', bytes: 8388608 },
  ],
};

/** What a loaded model can ask of its tables: sequences at once, tokens a sequence holds, rows a step runs. */
export interface GridLimits {
  requests: number;
  context: number;
  stepTokens: number;
}

/**
 * The grid cut to what a model loaded with these limits can run: each axis up to its first
 * point at or past the limit, so that every size it meets is interpolated, never extrapolated;
 * the held-out sizes within the cut. A model of 4 sequences is not timed attending 64 at once:
 * the first use's profile is shorter by what it would never use.
 */
export function gridWithin(grid: ProfileGrid, limits: GridLimits): ProfileGrid {
  const upTo = (points: number[], limit: number): number[] => {
    const end = points.findIndex((x) => x >= limit);
    return end < 0 ? [...points] : points.slice(0, end + 1);
  };
  const cut: ProfileGrid = {
    ...grid,
    linearTokens: upTo(grid.linearTokens, limits.stepTokens),
    attentionRequests: upTo(grid.attentionRequests, limits.requests),
    attentionContexts: upTo(grid.attentionContexts, limits.context),
    prefillTokens: upTo(grid.prefillTokens, limits.context),
  };
  if (grid.headRows) cut.headRows = upTo(grid.headRows, limits.stepTokens);
  const max = (xs: number[]) => Math.max(...xs);
  cut.heldOut = grid.heldOut.filter((p) => {
    switch (p.kind) {
      case 'linear': return p.tokens <= max(cut.linearTokens);
      case 'head': return p.rows <= max(cut.headRows ?? [p.rows]);
      case 'deviceAttention':
      case 'cpuAttention': return p.requests <= max(cut.attentionRequests) && p.context <= max(cut.attentionContexts);
      case 'prefillAttention':
      case 'cpuPrefillAttention': return p.tokens <= max(cut.prefillTokens);
      default: return true;
    }
  });
  return cut;
}

/** Whether tables timed on `have` reach every size `need` would time (no axis of it goes further). */
export function gridCovers(have: ProfileGrid, need: ProfileGrid): boolean {
  const max = (xs: number[] | undefined) => (xs && xs.length > 0 ? Math.max(...xs) : 0);
  return (
    max(have.linearTokens) >= max(need.linearTokens) &&
    max(have.headRows) >= max(need.headRows) &&
    max(have.attentionRequests) >= max(need.attentionRequests) &&
    max(have.attentionContexts) >= max(need.attentionContexts) &&
    max(have.prefillTokens) >= max(need.prefillTokens) &&
    max(have.copyBytes) >= max(need.copyBytes) &&
    max(have.streamBlocks) >= max(need.streamBlocks)
  );
}

/** Both grids' sizes on every axis (and both held-out lists). */
export function gridUnion(a: ProfileGrid, b: ProfileGrid): ProfileGrid {
  const both = (x: number[] = [], y: number[] = []) => [...new Set([...x, ...y])].sort((p, q) => p - q);
  const heldOut = new Map([...a.heldOut, ...b.heldOut].map((p) => [JSON.stringify(p), p]));
  const out: ProfileGrid = {
    linearTokens: both(a.linearTokens, b.linearTokens),
    attentionRequests: both(a.attentionRequests, b.attentionRequests),
    attentionContexts: both(a.attentionContexts, b.attentionContexts),
    prefillTokens: both(a.prefillTokens, b.prefillTokens),
    copyBytes: both(a.copyBytes, b.copyBytes),
    heldOut: [...heldOut.values()],
  };
  if (a.headRows || b.headRows) out.headRows = both(a.headRows, b.headRows);
  if (a.streamBlocks || b.streamBlocks) out.streamBlocks = both(a.streamBlocks, b.streamBlocks);
  return out;
}

/** Every configuration a grid times, in order; streamed host KV only with `stream`. */
export function gridProbes(grid: ProfileGrid, stream = false): Probe[] {
  const out: Probe[] = grid.linearTokens.map((tokens) => ({ kind: 'linear' as const, tokens }));
  for (const rows of grid.headRows ?? []) out.push({ kind: 'head', rows });
  for (const kind of ['deviceAttention', 'cpuAttention'] as const) {
    for (const requests of grid.attentionRequests) for (const context of grid.attentionContexts) out.push({ kind, requests, context });
  }
  for (const tokens of grid.prefillTokens) out.push({ kind: 'prefillAttention', tokens }, { kind: 'cpuPrefillAttention', tokens });
  for (const bytes of grid.copyBytes) out.push({ kind: 'copy', bytes });
  if (stream) for (const blocks of grid.streamBlocks ?? []) out.push({ kind: 'stream', blocks });
  return out;
}

export interface ProfileResult {
  model: TableCostModel;
  /** The grid timings the tables were fitted to. */
  measurements: Measurement[];
  /** Prediction error on the held-out timings. */
  errors: PredictionError[];
}

/** Fits the tables to grid timings and scores them on held-out ones. */
export function fitProfile(shape: CostShape, measurements: Measurement[], heldOut: Measurement[]): ProfileResult {
  const model = fitTables(shape, measurements);
  return { model, measurements, errors: predictionErrors(model, heldOut) };
}

/** Profiles a model given by its cost model (the simulator's virtual machines): `measure` turns the true time into a measured one (noise). */
export function measureGrid(grid: ProfileGrid, measure: (m: Measurement) => number, truth: CostModel): ProfileResult {
  const time = (p: Probe): Measurement => {
    const m = { ...p, us: predict(truth, { ...p, us: 0 } as Measurement) } as Measurement;
    return { ...m, us: measure(m) } as Measurement;
  };
  return fitProfile(truth.shape, gridProbes(grid).map(time), grid.heldOut.filter((p) => p.kind !== 'stream').map(time));
}

/** What the profiler needs of a loaded model: its timing entry points. */
export type ProfileTarget = Pick<NativeModel, 'profile'>;

/** The native op that times a probe; `headApart`: linear work without the LM head (the grid times it alone). */
export function nativeOp(p: Probe, iters: number, headApart = false): Parameters<NativeModel['profile']>[0] {
  switch (p.kind) {
    case 'linear': return headApart ? { kind: 'linear', tokens: p.tokens, logitsRows: 0, iters } : { kind: 'linear', tokens: p.tokens, iters };
    case 'head': return { kind: 'head', rows: p.rows, iters };
    case 'deviceAttention': return { kind: 'attention', device: 'gpu', requests: p.requests, context: p.context, tokens: 1, iters };
    case 'cpuAttention': return { kind: 'attention', device: 'cpu', requests: p.requests, context: p.context, tokens: 1, iters };
    case 'prefillAttention': return { kind: 'attention', device: 'gpu', requests: 1, context: 0, tokens: p.tokens, iters };
    case 'cpuPrefillAttention': return { kind: 'attention', device: 'cpu', requests: 1, context: 0, tokens: p.tokens, iters };
    case 'copy': return { kind: 'copy', direction: 'h2d', bytes: p.bytes, iters };
    case 'stream': return { kind: 'stream', blocks: p.blocks, iters };
  }
}

export interface ProfileOptions {
  grid?: ProfileGrid;
  /** Timed runs per configuration (median taken). Default 3. */
  iters?: number;
  /** Called after each timing with the fraction done (0..1). */
  onProgress?: (fraction: number) => void;
  /** The device streams host KV (NativeModel placement.streamsHostKv): time it too. */
  streamsHostKv?: boolean;
}

/** Times the grid and the held-out sizes on a loaded model, one native call at a time. */
export async function profileModel(target: ProfileTarget, shape: CostShape, options: ProfileOptions = {}): Promise<ProfileResult> {
  const grid = options.grid ?? DEFAULT_GRID;
  const iters = options.iters ?? 3;
  const stream = options.streamsHostKv === true;
  const probes = gridProbes(grid, stream);
  const heldOutProbes = grid.heldOut.filter((p) => stream || p.kind !== 'stream');
  const total = probes.length + heldOutProbes.length;
  let done = 0;
  const time = async (p: Probe): Promise<Measurement> => {
    const us = await target.profile(nativeOp(p, iters, (grid.headRows ?? []).length > 0));
    options.onProgress?.(++done / total);
    return { ...p, us } as Measurement;
  };
  const measurements: Measurement[] = [];
  for (const p of probes) measurements.push(await time(p));
  const heldOut: Measurement[] = [];
  for (const p of heldOutProbes) heldOut.push(await time(p));
  return fitProfile(shape, measurements, heldOut);
}

let buildId: string | undefined;

/**
 * A short content hash of the native code whose speed profiles record: the addon (CPU kernels)
 * and the GPU library in use. A rebuilt tandem (new kernels) then profiles again instead of
 * trusting tables timed on the old code.
 */
export function nativeBuildId(): string {
  if (buildId !== undefined) return buildId;
  const h = createHash('sha256');
  const gpu = native()
    .backends()
    .filter((b) => b.status === 'selected' && b.library !== null)
    .map((b) => b.library!);
  for (const file of [addonFile(), ...gpu]) {
    try {
      h.update(fs.readFileSync(file));
    } catch {
      h.update(file);
    }
  }
  buildId = h.digest('hex').slice(0, 12);
  return buildId;
}

/** What a cached profile is valid for: this machine (CPU, threads, device), this build of the native code, and this model shape and placement. */
export interface ProfileKey {
  machine: string;
  model: string;
}

export function profileKey(
  hp: ModelHyperparams,
  info: { threads: number; cpuKernels?: string; placement: NativeModel['placement']; kvBlockTokens: number; kvType?: 'f16' | 'q8_0'; deviceThreads?: number },
): ProfileKey {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const threads = info.deviceThreads === undefined ? '' : ` x${info.deviceThreads} threads`;
  const device = info.placement.device ? `${info.placement.device}: ${info.placement.deviceName}${threads}` : 'no device';
  const kernels = info.cpuKernels === undefined ? '' : ` ${info.cpuKernels}`;
  return {
    machine: `${cpu} x${info.threads} threads${kernels} | ${device} | build ${nativeBuildId()}`,
    model:
      `${hp.architecture} L${hp.nLayer} E${hp.nEmbd} H${hp.nHead}/${hp.nHeadKv} d${hp.headDim}/${hp.headDimV} ff${hp.nFf} ` +
      `x${hp.nExpert}/${hp.nExpertUsed} V${hp.nVocab} | weights ${info.placement.deviceBytes} on device, ${info.placement.hostBytes} in host RAM | block ${info.kvBlockTokens} kv ${info.kvType ?? 'f16'}`,
  };
}

/** The cache folder: $TANDEM_CACHE, else ~/.cache/tandem (as the CLI's). */
export function defaultCacheDir(): string {
  return process.env.TANDEM_CACHE || path.join(os.homedir(), '.cache', 'tandem');
}

/** The file a profile with this key is cached in. */
export function profileFile(cacheDir: string, key: ProfileKey): string {
  const h = createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 16);
  return path.join(cacheDir, 'profiles', `${h}.json`);
}

interface ProfileFileJson {
  schema: 'tandem-profile/1';
  key: ProfileKey;
  createdAt: string;
  tables: CostTablesJson;
  errors: PredictionError[];
  /** The sizes the tables were timed at (absent in files written before: the default grid). */
  grid?: ProfileGrid;
}

/** Writes tables (a fresh profile, or ones refitted online) to the cache file of `key`; `grid`: the sizes they were timed at. */
export function saveProfile(file: string, key: ProfileKey, model: TableCostModel, errors: PredictionError[], grid?: ProfileGrid): void {
  const body: ProfileFileJson = { schema: 'tandem-profile/1', key, createdAt: new Date().toISOString(), tables: model.toJSON(), errors, ...(grid ? { grid } : {}) };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(body, null, 1));
  fs.renameSync(tmp, file);
}

/** The cached profile of `key` and the grid it was timed on, or undefined when there is none or it does not fit (another key, schema or a broken file). */
export function loadProfile(file: string, key: ProfileKey): { model: TableCostModel; errors: PredictionError[]; grid: ProfileGrid } | undefined {
  let body: ProfileFileJson;
  try {
    body = JSON.parse(fs.readFileSync(file, 'utf8')) as ProfileFileJson;
  } catch {
    return undefined;
  }
  if (body?.schema !== 'tandem-profile/1' || body.key?.machine !== key.machine || body.key?.model !== key.model) return undefined;
  try {
    return { model: new TableCostModel(body.tables), errors: body.errors ?? [], grid: body.grid ?? DEFAULT_GRID };
  } catch {
    return undefined;
  }
}

export interface LoadOrProfileOptions extends ProfileOptions {
  /** Default defaultCacheDir(). */
  cacheDir?: string;
  /** Profile again even when a cached profile fits. */
  refresh?: boolean;
  /** Draw a progress bar on stderr while profiling (a TTY only). Default true. */
  progressBar?: boolean;
}

/**
 * The cost model of this machine and model: from the cache where its tables reach every size
 * of `options.grid` (default DEFAULT_GRID), else profiled now (with a progress bar) and cached.
 * A profile taken over a cached one times both grids' sizes, so that the file serves every load
 * it served before.
 */
export async function loadOrProfile(
  target: ProfileTarget,
  shape: CostShape,
  key: ProfileKey,
  options: LoadOrProfileOptions = {},
): Promise<{ model: TableCostModel; errors: PredictionError[]; file: string; fromCache: boolean }> {
  const file = profileFile(options.cacheDir ?? defaultCacheDir(), key);
  let grid = options.grid ?? DEFAULT_GRID;
  if (!options.refresh) {
    const cached = loadProfile(file, key);
    if (cached && gridCovers(cached.grid, grid)) return { model: cached.model, errors: cached.errors, file, fromCache: true };
    if (cached) grid = gridUnion(cached.grid, grid);
  }
  const bar = options.progressBar === false ? undefined : createProgressBar({ label: 'profiling this machine' });
  try {
    const r = await profileModel(target, shape, {
      ...options,
      grid,
      onProgress: (f) => {
        bar?.update(f);
        options.onProgress?.(f);
      },
    });
    if (r.model.shape.nLayer !== shape.nLayer) throw new TandemError('TDM_INTERNAL', 'profiled tables for another model shape');
    saveProfile(file, key, r.model, r.errors, grid);
    return { model: r.model, errors: r.errors, file, fromCache: false };
  } finally {
    bar?.done();
  }
}
