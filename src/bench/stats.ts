// The bench's arithmetic: percentiles, medians, a seeded RNG, Poisson arrivals and the
// request-length distributions of the online workload. Pure functions, tested alone.

/** p-th percentile (0..100) of `values` by linear interpolation between closest ranks (numpy's default); NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile: p must be in [0, 100], got ${p}`);
  const xs = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  const rank = (p / 100) * (xs.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return xs[lo]! + (xs[hi]! - xs[lo]!) * (rank - lo);
}

export const median = (values: readonly number[]): number => percentile(values, 50);

export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** The latency summary every report shows. */
export interface Distribution {
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  /** Values summarised. */
  count: number;
}

export function summarize(values: readonly number[]): Distribution {
  return { p50: percentile(values, 50), p90: percentile(values, 90), p99: percentile(values, 99), mean: mean(values), count: values.length };
}

/**
 * A small seeded generator (mulberry32): the same seed gives the same request trace on
 * every machine, so that every system in a run serves exactly the same requests.
 */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [lo, hi] (both included). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** Exponential with the given rate (mean 1/rate). */
  exponential(rate: number): number {
    // 1 - next() lies in (0, 1], so the log is finite.
    return -Math.log(1 - this.next()) / rate;
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

/**
 * Arrival times (seconds from 0) of `count` requests of a Poisson process with `ratePerS`
 * requests per second: independent exponential gaps of mean 1/rate.
 */
export function poissonArrivals(count: number, ratePerS: number, rng: Rng): number[] {
  if (!(ratePerS > 0) || !Number.isFinite(ratePerS)) throw new RangeError(`poissonArrivals: rate must be a positive number, got ${ratePerS}`);
  const out: number[] = [];
  let t = 0;
  for (let i = 0; i < count; i++) {
    t += rng.exponential(ratePerS);
    out.push(t);
  }
  return out;
}

/**
 * How long the prompts and outputs of online requests are (tokens):
 * - fixed: always `value`;
 * - uniform: integers in [min, max];
 * - lognormal: exp(N(ln median, sigma)) rounded and clipped to [min, max], the long tail of
 *   chat traffic (ShareGPT-like lengths are roughly lognormal).
 */
export type LengthDistribution =
  | { kind: 'fixed'; value: number }
  | { kind: 'uniform'; min: number; max: number }
  | { kind: 'lognormal'; median: number; sigma: number; min: number; max: number };

export function sampleLength(d: LengthDistribution, rng: Rng): number {
  switch (d.kind) {
    case 'fixed':
      return d.value;
    case 'uniform':
      return rng.int(d.min, d.max);
    case 'lognormal': {
      const v = Math.round(Math.exp(Math.log(d.median) + d.sigma * rng.normal()));
      return Math.min(d.max, Math.max(d.min, v));
    }
  }
}

/** Longest length the distribution can give (sizes contexts). */
export function maxLength(d: LengthDistribution): number {
  return d.kind === 'fixed' ? d.value : d.max;
}

/** One line for reports, e.g. 'uniform 32-256'. */
export function describeLength(d: LengthDistribution): string {
  switch (d.kind) {
    case 'fixed':
      return `${d.value}`;
    case 'uniform':
      return `uniform ${d.min}-${d.max}`;
    case 'lognormal':
      return `lognormal median ${d.median} σ ${d.sigma} [${d.min}, ${d.max}]`;
  }
}
