// Calibrates the expert cost model on the machine at hand (issue 9 item 2): times one routed
// expert's FFN on the CPU and on the device at a few routed-row counts and host->device copies
// of a slab, fits the linear costs the native makespan rule reads, and reports the fit's error
// at row counts it was not fitted on. Cached per machine and model like the profiler's tables.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { NativeExpertCost, NativeModel } from '../../native/binding.js';
import { TandemError } from '../../native/errors.js';
import { defaultCacheDir, type ProfileKey } from '../profiler.js';

/** Routed-row counts to time, and those between them that measure the error. */
export interface ExpertGrid {
  rows: number[];
  heldOutRows: number[];
  /** Copy sizes as fractions of one slab (the link's latency and bandwidth from two sizes or more). */
  copySlabFractions: number[];
  iters: number;
  /**
   * Passes over the row counts, each point's time the median over the passes (default 1). A
   * busy host slows the CPU for seconds at a time; spread over passes, such a spell spoils one
   * pass of a point rather than every timing of one (on the H200's host, single passes gave
   * CPU fits whose held-out errors reached 180%).
   */
  rounds?: number;
  /**
   * With a value above 0: a 1-row CPU expert is also timed after the CPU sat idle this long
   * (µs), as between the layers of a step whose device work outlasts the thread pool's spin;
   * what it takes beyond the warm line is the call cost (cpuCallUs), paid once per layer with
   * CPU experts. Default 0: not measured.
   */
  callIdleUs?: number;
}

export const EXPERT_GRID: ExpertGrid = { rows: [1, 2, 8, 32], heldOutRows: [4, 16], copySlabFractions: [1 / 16, 1], iters: 5, rounds: 3, callIdleUs: 2000 };
/** A few timings, one run each: tests and profile 'quick'. */
export const QUICK_EXPERT_GRID: ExpertGrid = { rows: [1, 8], heldOutRows: [4], copySlabFractions: [1 / 16, 1], iters: 1, callIdleUs: 2000 };

export interface ExpertPoint {
  /** 'cpu-idle': a CPU expert timed after the CPU sat idle (ExpertGrid.callIdleUs). */
  side: 'cpu' | 'cpu-idle' | 'gpu' | 'link';
  /** Routed rows (cpu, cpu-idle, gpu) or bytes (link). */
  x: number;
  us: number;
}

export interface ExpertCalibrationError {
  side: 'cpu' | 'gpu';
  rows: number;
  measuredUs: number;
  predictedUs: number;
  /** |predicted - measured| / measured. */
  relError: number;
}

export interface ExpertCalibration {
  cost: NativeExpertCost;
  points: ExpertPoint[];
  errors: ExpertCalibrationError[];
  /** Why the device side was not timed (no expert in a device slot): copying is then priced as never paying. */
  deviceNote?: string;
}

/**
 * Line us = a + b·x through the points by least squares on relative error (weights 1/us²):
 * a slow outlier (a thread pool waking on a busy host) pulls the line less than a plain fit,
 * and small and large row counts are fitted alike. Both parts clamped at zero.
 */
export function fitLine(points: readonly { x: number; us: number }[]): { fixed: number; perUnit: number } {
  if (points.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', 'a line needs at least one point');
  const w = points.map((p) => 1 / Math.max(p.us, 1e-9) ** 2);
  const sw = w.reduce((s, x) => s + x, 0);
  const mx = points.reduce((s, p, i) => s + w[i]! * p.x, 0) / sw;
  const my = points.reduce((s, p, i) => s + w[i]! * p.us, 0) / sw;
  const sxx = points.reduce((s, p, i) => s + w[i]! * (p.x - mx) ** 2, 0);
  const sxy = points.reduce((s, p, i) => s + w[i]! * (p.x - mx) * (p.us - my), 0);
  const slope = sxx > 0 ? Math.max(0, sxy / sxx) : 0;
  return { fixed: Math.max(0, my - slope * mx), perUnit: slope };
}

/** Times the grid on `model` (loaded with expert offload) and fits the costs. Rejects TDM_BAD_ARGUMENT without expert offload. */
export async function calibrateExperts(model: Pick<NativeModel, 'profile' | 'placement'>, grid: ExpertGrid = EXPERT_GRID, onProgress?: (fraction: number) => void): Promise<ExpertCalibration> {
  const ex = model.placement.experts;
  if (!ex) throw new TandemError('TDM_BAD_ARGUMENT', 'expert calibration needs a MoE model loaded with expert offload');
  const rounds = Math.max(1, Math.floor(grid.rounds ?? 1));
  const idleUs = Math.max(0, Math.floor(grid.callIdleUs ?? 0));
  const perSide = rounds * (grid.rows.length + grid.heldOutRows.length);
  const idleTimings = idleUs > 0 ? rounds : 0;
  const total = 2 * perSide + idleTimings + grid.copySlabFractions.length;
  let done = 0;
  const tick = () => onProgress?.(++done / total);
  const time = async (side: 'cpu' | 'gpu', rows: number, idle: boolean) => {
    const us = await model.profile({ kind: 'expert', device: side, tokens: rows, iters: grid.iters, ...(idle ? { idleUs } : {}) });
    tick();
    return us;
  };
  // Every row count once per pass (on the CPU, the idle timing too); each point the median of its passes.
  const side = async (s: 'cpu' | 'gpu'): Promise<{ fit: ExpertPoint[]; held: ExpertPoint[]; idle: ExpertPoint[] }> => {
    const all = [...grid.rows, ...grid.heldOutRows].map((rows) => ({ rows, idle: false }));
    if (s === 'cpu' && idleUs > 0) all.push({ rows: 1, idle: true });
    const times = all.map(() => [] as number[]);
    for (let r = 0; r < rounds; r++) for (const [i, p] of all.entries()) times[i]!.push(await time(s, p.rows, p.idle));
    const pts = all.map((p, i): ExpertPoint => ({ side: p.idle ? 'cpu-idle' : s, x: p.rows, us: median(times[i]!) }));
    const n = grid.rows.length;
    return { fit: pts.slice(0, n), held: pts.slice(n, n + grid.heldOutRows.length), idle: pts.slice(n + grid.heldOutRows.length) };
  };
  const points: ExpertPoint[] = [];
  const heldOut: ExpertPoint[] = [];
  const cpuSide = await side('cpu');
  points.push(...cpuSide.fit, ...cpuSide.idle);
  heldOut.push(...cpuSide.held);
  let deviceNote: string | undefined;
  try {
    const gpuSide = await side('gpu');
    points.push(...gpuSide.fit);
    heldOut.push(...gpuSide.held);
  } catch (err) {
    if ((err as { code?: string }).code !== 'TDM_UNSUPPORTED') throw err;
    deviceNote = (err as Error).message;
    done = 2 * perSide + idleTimings;
  }
  for (const f of grid.copySlabFractions) {
    const bytes = Math.max(1, Math.round(f * ex.slotBytes));
    points.push({ side: 'link', x: bytes, us: await model.profile({ kind: 'copy', direction: 'h2d', bytes, iters: grid.iters }) });
    tick();
  }
  const cpu = fitLine(points.filter((p) => p.side === 'cpu'));
  const gpuPoints = points.filter((p) => p.side === 'gpu');
  // With no device timing a copied expert would never pay: an infinite-looking device cost.
  const gpu = gpuPoints.length > 0 ? fitLine(gpuPoints) : { fixed: 1e12, perUnit: 0 };
  const link = fitLine(points.filter((p) => p.side === 'link'));
  // The call cost: how much longer a CPU expert takes after the CPU sat idle than the warm line says.
  const idle = points.find((p) => p.side === 'cpu-idle');
  const cpuCallUs = idle ? Math.max(0, idle.us - (cpu.fixed + cpu.perUnit * idle.x)) : 0;
  const cost: NativeExpertCost = {
    cpuFixedUs: cpu.fixed, cpuUsPerToken: cpu.perUnit, cpuCallUs, gpuFixedUs: gpu.fixed, gpuUsPerToken: gpu.perUnit,
    linkLatencyUs: link.fixed, linkBytesPerUs: link.perUnit > 0 ? 1 / link.perUnit : Number.MAX_VALUE,
  };
  const errors = heldOut.map((p): ExpertCalibrationError => {
    const side = p.side as 'cpu' | 'gpu';
    const predictedUs = side === 'cpu' ? cost.cpuFixedUs + cost.cpuUsPerToken * p.x : cost.gpuFixedUs + cost.gpuUsPerToken * p.x;
    return { side, rows: p.x, measuredUs: p.us, predictedUs, relError: Math.abs(predictedUs - p.us) / p.us };
  });
  return { cost, points, errors, ...(deviceNote === undefined ? {} : { deviceNote }) };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The file an expert calibration with this key is cached in. */
export function calibrationFile(cacheDir: string, key: ProfileKey): string {
  const h = createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 16);
  return path.join(cacheDir, 'profiles', `experts-${h}.json`);
}

/** Schema 2: timings that read cold weights, and the call cost; files of schema 1 timed a few warm slabs and are measured again. */
interface CalibrationFileJson {
  schema: 'tandem-expert-calibration/2';
  key: ProfileKey;
  createdAt: string;
  calibration: ExpertCalibration;
}

function validCost(c: unknown): c is NativeExpertCost {
  if (c === null || typeof c !== 'object') return false;
  const o = c as Record<string, unknown>;
  const keys = ['cpuFixedUs', 'cpuUsPerToken', 'cpuCallUs', 'gpuFixedUs', 'gpuUsPerToken', 'linkLatencyUs', 'linkBytesPerUs'];
  return keys.every((k) => typeof o[k] === 'number' && Number.isFinite(o[k]) && (o[k] as number) >= 0) && (o.linkBytesPerUs as number) > 0;
}

/** The calibration of `key`: from the cache, or measured now and cached. */
export async function loadOrCalibrateExperts(
  model: Pick<NativeModel, 'profile' | 'placement'>,
  key: ProfileKey,
  options: { cacheDir?: string; refresh?: boolean; grid?: ExpertGrid; onProgress?: (fraction: number) => void } = {},
): Promise<ExpertCalibration & { file: string; fromCache: boolean }> {
  const file = calibrationFile(options.cacheDir ?? defaultCacheDir(), key);
  if (!options.refresh) {
    try {
      const body = JSON.parse(fs.readFileSync(file, 'utf8')) as CalibrationFileJson;
      if (body?.schema === 'tandem-expert-calibration/2' && body.key?.machine === key.machine && body.key?.model === key.model && validCost(body.calibration?.cost)) {
        return { ...body.calibration, file, fromCache: true };
      }
    } catch {
      // No cache or a broken one: calibrate.
    }
  }
  const calibration = await calibrateExperts(model, options.grid, options.onProgress);
  const body: CalibrationFileJson = { schema: 'tandem-expert-calibration/2', key, createdAt: new Date().toISOString(), calibration };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(body, null, 1));
  fs.renameSync(tmp, file);
  return { ...calibration, file, fromCache: false };
}
