// Interpolated tables behind the cost model: NEO profiles each subtask on a grid and
// interpolates linearly (1-D) or bilinearly (2-D); here each table can also be nudged toward
// new measurements online, sharing the error between the knots by their interpolation weights.
import { TandemError } from '../native/errors.js';

function checkKnots(name: string, xs: readonly number[]): void {
  if (xs.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', `${name} needs at least one knot`);
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isFinite(xs[i]!)) throw new TandemError('TDM_BAD_ARGUMENT', `${name} knot ${i} is not finite`);
    if (i > 0 && !(xs[i]! > xs[i - 1]!)) throw new TandemError('TDM_BAD_ARGUMENT', `${name} knots must increase strictly`);
  }
}

/** The knot interval around x (two knots or more): i such that x sits between xs[i] and xs[i+1], the end intervals beyond them. */
function bracketIndex(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length - 1;
  if (x <= xs[0]!) hi = 1;
  else if (x >= xs[hi]!) lo = hi - 1;
  else {
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (xs[mid]! <= x) lo = mid;
      else hi = mid;
    }
  }
  return lo;
}

/** The weight of xs[i+1] at x in interval i, unclamped. */
function weightIn(xs: readonly number[], i: number, x: number): number {
  return (x - xs[i]!) / (xs[i + 1]! - xs[i]!);
}

/** The knot interval around x: index i (so x sits between xs[i] and xs[i+1]) and the weight t of xs[i+1], unclamped. */
function bracket(xs: readonly number[], x: number): { i: number; t: number } {
  if (xs.length === 1) return { i: 0, t: 0 };
  const i = bracketIndex(xs, x);
  return { i, t: weightIn(xs, i, x) };
}

const clamp01 = (t: number) => Math.min(1, Math.max(0, t));

export interface PiecewiseLinearJson {
  xs: number[];
  ys: number[];
}

/** A 1-D table: values at increasing knots, linear between them and along the end segments beyond them (never below 0). */
export class PiecewiseLinear {
  readonly xs: number[];
  readonly ys: number[];

  constructor(xs: readonly number[], ys: readonly number[]) {
    checkKnots('a piecewise-linear table', xs);
    if (ys.length !== xs.length || !ys.every(Number.isFinite)) {
      throw new TandemError('TDM_BAD_ARGUMENT', 'a piecewise-linear table needs one finite value per knot');
    }
    this.xs = [...xs];
    this.ys = [...ys];
  }

  /** Knots at the distinct xs of the samples, each the mean of its samples' ys. */
  static fit(samples: readonly { x: number; y: number }[]): PiecewiseLinear {
    const by = new Map<number, number[]>();
    for (const s of samples) by.set(s.x, [...(by.get(s.x) ?? []), s.y]);
    const xs = [...by.keys()].sort((a, b) => a - b);
    return new PiecewiseLinear(xs, xs.map((x) => mean(by.get(x)!)));
  }

  /**
   * fit for a quantity that cannot shrink as x grows (work by size): the knots' means pooled
   * where they decrease (pool-adjacent-violators, weighted by samples), so that one noisy
   * timing cannot bend the table, or its extension beyond the last knot, downward.
   */
  static fitNondecreasing(samples: readonly { x: number; y: number }[]): PiecewiseLinear {
    const by = new Map<number, number[]>();
    for (const s of samples) by.set(s.x, [...(by.get(s.x) ?? []), s.y]);
    const xs = [...by.keys()].sort((a, b) => a - b);
    const blocks: { sum: number; n: number; knots: number }[] = [];
    for (const x of xs) {
      const ys = by.get(x)!;
      blocks.push({ sum: ys.reduce((a, b) => a + b, 0), n: ys.length, knots: 1 });
      while (blocks.length > 1 && blocks[blocks.length - 2]!.sum / blocks[blocks.length - 2]!.n > blocks[blocks.length - 1]!.sum / blocks[blocks.length - 1]!.n) {
        const b = blocks.pop()!;
        const a = blocks[blocks.length - 1]!;
        a.sum += b.sum;
        a.n += b.n;
        a.knots += b.knots;
      }
    }
    return new PiecewiseLinear(xs, blocks.flatMap((b) => Array<number>(b.knots).fill(b.sum / b.n)));
  }

  static fromJSON(j: PiecewiseLinearJson): PiecewiseLinear {
    return new PiecewiseLinear(j.xs, j.ys);
  }

  at(x: number): number {
    if (this.xs.length === 1) return Math.max(0, this.ys[0]!);
    const i = bracketIndex(this.xs, x);
    const t = weightIn(this.xs, i, x);
    return Math.max(0, this.ys[i]! + t * (this.ys[i + 1]! - this.ys[i]!));
  }

  /** Moves the knots around x toward the measurement y by `rate` (0..1) of the error, in proportion to their weights. */
  observe(x: number, y: number, rate: number): void {
    const err = y - this.at(x);
    if (this.xs.length === 1) {
      this.ys[0]! += rate * err;
      return;
    }
    const { i, t } = bracket(this.xs, x);
    const w = clamp01(t);
    this.ys[i]! += rate * (1 - w) * err;
    this.ys[i + 1]! += rate * w * err;
  }

  toJSON(): PiecewiseLinearJson {
    return { xs: [...this.xs], ys: [...this.ys] };
  }
}

export interface BilinearJson {
  xs: number[];
  ys: number[];
  /** values[i][j] at (xs[i], ys[j]). */
  values: number[][];
}

/** A 2-D table on a grid: bilinear inside, extended linearly beyond the edges (never below 0). */
export class Bilinear {
  readonly xs: number[];
  readonly ys: number[];
  readonly values: number[][];

  constructor(xs: readonly number[], ys: readonly number[], values: readonly (readonly number[])[]) {
    checkKnots('a bilinear table (x)', xs);
    checkKnots('a bilinear table (y)', ys);
    if (values.length !== xs.length || values.some((row) => row.length !== ys.length || !row.every(Number.isFinite))) {
      throw new TandemError('TDM_BAD_ARGUMENT', `a bilinear table needs ${xs.length} x ${ys.length} finite values`);
    }
    this.xs = [...xs];
    this.ys = [...ys];
    this.values = values.map((r) => [...r]);
  }

  /** A grid over the distinct xs and ys of the samples; every grid point needs at least one sample (their mean). */
  static fit(samples: readonly { x: number; y: number; z: number }[]): Bilinear {
    const xs = [...new Set(samples.map((s) => s.x))].sort((a, b) => a - b);
    const ys = [...new Set(samples.map((s) => s.y))].sort((a, b) => a - b);
    const values = xs.map((x) =>
      ys.map((y) => {
        const zs = samples.filter((s) => s.x === x && s.y === y).map((s) => s.z);
        if (zs.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', `a bilinear fit has no sample at (${x}, ${y})`);
        return mean(zs);
      }),
    );
    return new Bilinear(xs, ys, values);
  }

  /**
   * fit for a quantity that cannot shrink as either size grows (attention by requests and
   * context): each grid point keeps the least of its own value and those of every point at
   * least as large in both sizes. A busy host's spell only adds time, so a point slower than
   * a larger one is the spell's; on the H200's host one CPU timing of 1 request over 64
   * tokens came out at 5.9 ms, above 1 request over 1024 (1.0 ms).
   */
  static fitNondecreasing(samples: readonly { x: number; y: number; z: number }[]): Bilinear {
    const t = Bilinear.fit(samples);
    const v = t.values;
    for (let i = v.length - 1; i >= 0; i--) {
      for (let j = v[i]!.length - 1; j >= 0; j--) {
        if (i + 1 < v.length) v[i]![j] = Math.min(v[i]![j]!, v[i + 1]![j]!);
        if (j + 1 < v[i]!.length) v[i]![j] = Math.min(v[i]![j]!, v[i]![j + 1]!);
      }
    }
    return t;
  }

  static fromJSON(j: BilinearJson): Bilinear {
    return new Bilinear(j.xs, j.ys, j.values);
  }

  // Policies price many placements a step: this allocates nothing (the sum in observe's order of knots).
  at(x: number, y: number): number {
    const twoX = this.xs.length > 1;
    const twoY = this.ys.length > 1;
    const i = twoX ? bracketIndex(this.xs, x) : 0;
    const j = twoY ? bracketIndex(this.ys, y) : 0;
    const tx = twoX ? weightIn(this.xs, i, x) : 0;
    const ty = twoY ? weightIn(this.ys, j, y) : 0;
    const wx0 = twoX ? 1 - tx : 1;
    const wy0 = twoY ? 1 - ty : 1;
    const row0 = this.values[i]!;
    let z = 0;
    z += wx0 * wy0 * row0[j]!;
    if (twoY) z += wx0 * ty * row0[j + 1]!;
    if (twoX) {
      const row1 = this.values[i + 1]!;
      z += tx * wy0 * row1[j]!;
      if (twoY) z += tx * ty * row1[j + 1]!;
    }
    return Math.max(0, z);
  }

  /** Moves the four grid points around (x, y) toward z by `rate` of the error, in proportion to their (clamped) weights. */
  observe(x: number, y: number, z: number, rate: number): void {
    const err = z - this.at(x, y);
    const a = this.axis(this.xs, x, true);
    const b = this.axis(this.ys, y, true);
    for (const [i, wi] of a) for (const [j, wj] of b) this.values[i]![j]! += rate * wi * wj * err;
  }

  toJSON(): BilinearJson {
    return { xs: [...this.xs], ys: [...this.ys], values: this.values.map((r) => [...r]) };
  }

  /** The knots along one axis with their weights (extrapolating unless `clamped`). */
  private axis(knots: readonly number[], v: number, clamped = false): [number, number][] {
    if (knots.length === 1) return [[0, 1]];
    const { i, t } = bracket(knots, v);
    const w = clamped ? clamp01(t) : t;
    return [[i, 1 - w], [i + 1, w]];
  }
}

export function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}
