// Online refit of the CPU side of the expert costs (issue 9 item 2) from the CPU expert calls
// every StepResult carries, as the hybrid scheduler's tables are refitted from its phases.
// The calibration times one expert at a time on a quiet machine; in steps, the CPU experts of a
// layer run after the thread pool slept through the device's work, beside the device's driver,
// on a host that may be busy. On the H200's host they took 224-311 µs each where the
// calibration said 61, and the copy-or-CPU choice followed the calibration.
//
// Each call (one layer's CPU experts) gives (experts e, routed rows r, measured µs m). With the
// calibrated line p = cpuFixedUs·e + cpuUsPerToken·r, the refit fits m ≈ a + s·p: a call cost
// a (cpuCallUs) and a scale s on the line, by least squares on relative error, old calls
// weighing less (exponential forgetting). A weak prior holds a at its calibrated value, so that
// when the calls do not tell a and s apart (every call the same size) the scale takes the
// difference: a CPU slower than calibrated, the cautious reading, since it prices every CPU
// expert and not only a layer's first. Another weak prior, a pseudo-call the calibration
// prices, holds s near 1 when the calls fade: steps without CPU calls (every missing expert
// copied, say) age the calls too, so that costs refitted up drift back to the calibration and
// the CPU is tried again; a host that has become faster is then seen. The device side is not
// refitted: on a GPU the driver-side phase times are queueing, not work.
import type { NativeExpertCost } from '../../native/binding.js';
import type { StepPlan, StepResult } from '../../native/step-plan.js';
import { TandemError } from '../../native/errors.js';

export interface ExpertRefitOptions {
  /** Calls over which an old call's weight halves. Default 128 (8 decode steps of a 16-layer model with a CPU call in each layer). */
  halfLifeCalls?: number;
  /** Calls seen before the first refitted costs are given. Default 16. */
  minCalls?: number;
  /** Relative change of a typical call's predicted time that gives new costs. Default 0.1. */
  tolerance?: number;
  /** Weight of the calibrated call cost as a prior, in calls. Default 2. */
  priorCalls?: number;
  /** Weight of the calibrated line as a prior on the scale, in calls: small, so that it biases a fit of a few hundred calls by about 1%, and decides only once they fade. Default 0.25. */
  scalePriorCalls?: number;
  /** Steps without a CPU call over which the calls' weight halves (they drift back to the calibration). Default 64. */
  halfLifeIdleSteps?: number;
}

/** The refit's state: the fitted call cost and scale, and how many calls and updates it took. */
export interface ExpertRefitState {
  /** Fitted cost of a layer's CPU call beyond its experts' line (µs). */
  callUs: number;
  /** Fitted multiple of the calibrated per-expert line. */
  scale: number;
  /** CPU calls observed. */
  calls: number;
  /** Times new costs were given. */
  updates: number;
  /** The costs in force: the calibration until the first update. */
  cost: NativeExpertCost;
}

/** The smallest scale the fit gives: a CPU expert never costs nothing. */
const MIN_SCALE = 0.05;

export class ExpertCostRefit {
  private readonly calibrated: NativeExpertCost;
  private readonly decay: number;
  private readonly minCalls: number;
  private readonly tolerance: number;
  private readonly prior: number;
  private readonly scalePrior: number;
  private readonly idleDecay: number;
  // Weighted sums of 1, p, p², m, p·m over the calls, weights 1/m² (relative error).
  private sw = 0;
  private sp = 0;
  private spp = 0;
  private sm = 0;
  private spm = 0;
  // Decayed plain sums: the typical call's experts, rows, calibrated line and measured time.
  private se = 0;
  private sr = 0;
  private sLine = 0;
  private sMeasured = 0;
  private sn = 0;
  private calls = 0;
  private updates = 0;
  private current: NativeExpertCost;
  private fitted: { callUs: number; scale: number };

  constructor(calibrated: NativeExpertCost, options: ExpertRefitOptions = {}) {
    const halfLife = options.halfLifeCalls ?? 128;
    const idleHalfLife = options.halfLifeIdleSteps ?? 64;
    const ok = (x: number | undefined) => x === undefined || (Number.isFinite(x) && x >= 0);
    if (!(halfLife > 0) || !Number.isFinite(halfLife)) throw new TandemError('TDM_BAD_ARGUMENT', `halfLifeCalls must be a positive number, got ${halfLife}`);
    if (!(idleHalfLife > 0)) throw new TandemError('TDM_BAD_ARGUMENT', `halfLifeIdleSteps must be a positive number, got ${idleHalfLife}`);
    if (!ok(options.minCalls) || !ok(options.tolerance) || !ok(options.priorCalls) || !ok(options.scalePriorCalls)) {
      throw new TandemError('TDM_BAD_ARGUMENT', 'minCalls, tolerance, priorCalls and scalePriorCalls must be non-negative numbers');
    }
    this.calibrated = { ...calibrated, cpuCallUs: calibrated.cpuCallUs ?? 0 };
    this.decay = 2 ** (-1 / halfLife);
    this.idleDecay = 2 ** (-1 / idleHalfLife);
    this.minCalls = options.minCalls ?? 16;
    this.tolerance = options.tolerance ?? 0.1;
    this.prior = options.priorCalls ?? 2;
    this.scalePrior = options.scalePriorCalls ?? 0.25;
    this.current = { ...this.calibrated };
    this.fitted = { callUs: this.calibrated.cpuCallUs!, scale: 1 };
  }

  /** Where the refit stands. */
  get state(): ExpertRefitState {
    return { callUs: this.fitted.callUs, scale: this.fitted.scale, calls: this.calls, updates: this.updates, cost: { ...this.current } };
  }

  /**
   * Takes the CPU calls of one step (StepResult.cpuExpertCalls: experts, rows, µs per call) and
   * returns new costs to give the model (NativeModel.setExpertCost) when the fit moved a
   * typical call's predicted time by more than the tolerance; undefined otherwise.
   */
  observe(calls: Float64Array | readonly number[] | undefined): NativeExpertCost | undefined {
    const c = this.calibrated;
    if (!calls || calls.length < 3) {
      // A step without CPU calls ages the ones seen; the fit then leans toward the calibration.
      if (this.calls < this.minCalls) return undefined;
      this.age(this.idleDecay);
      return this.refit();
    }
    for (let i = 0; i + 2 < calls.length; i += 3) {
      const e = calls[i]!;
      const r = calls[i + 1]!;
      const m = calls[i + 2]!;
      if (!(e > 0 && r > 0 && m > 0) || !Number.isFinite(m)) continue;
      const p = c.cpuFixedUs * e + c.cpuUsPerToken * r;
      const w = 1 / (m * m);
      this.age(this.decay);
      this.sw += w;
      this.sp += w * p;
      this.spp += w * p * p;
      this.sm += w * m;
      this.spm += w * p * m;
      this.se += e;
      this.sr += r;
      this.sLine += p;
      this.sMeasured += m;
      this.sn += 1;
      this.calls++;
    }
    if (this.calls < this.minCalls) return undefined;
    return this.refit();
  }

  /** Multiplies the weight of every call seen by d. */
  private age(d: number): void {
    this.sw *= d;
    this.sp *= d;
    this.spp *= d;
    this.sm *= d;
    this.spm *= d;
    this.se *= d;
    this.sr *= d;
    this.sLine *= d;
    this.sMeasured *= d;
    this.sn *= d;
  }

  /** Fits, and gives the costs when a typical call's prediction moved by more than the tolerance. */
  private refit(): NativeExpertCost | undefined {
    const c = this.calibrated;
    this.fitted = this.solve();
    const next: NativeExpertCost = {
      ...c,
      cpuFixedUs: this.fitted.scale * c.cpuFixedUs,
      cpuUsPerToken: this.fitted.scale * c.cpuUsPerToken,
      cpuCallUs: this.fitted.callUs,
    };
    // A typical call: the weighted mean experts and rows of the calls seen.
    const typical = (x: NativeExpertCost) => x.cpuCallUs! + (x.cpuFixedUs * this.se + x.cpuUsPerToken * this.sr) / this.sn;
    const before = typical(this.current);
    if (this.updates > 0 && Math.abs(typical(next) - before) <= this.tolerance * before) return undefined;
    this.current = next;
    this.updates++;
    return { ...next };
  }

  /** Least squares for (a, s) with the priors, a >= 0 and s >= MIN_SCALE. */
  private solve(): { callUs: number; scale: number } {
    // The priors are relative to the measured typical call, as the calls' errors are: one
    // holds a at a0; the other is a pseudo-call of the typical line p, priced a0 + p.
    const a0 = this.calibrated.cpuCallUs!;
    const measured = this.sMeasured / this.sn;
    const line = this.sLine / this.sn;
    const w = this.prior / (measured * measured);
    const v = this.scalePrior / (measured * measured);
    const A11 = this.sw + w + v;
    const A12 = this.sp + v * line;
    const A22 = this.spp + v * line * line;
    const b1 = this.sm + w * a0 + v * (a0 + line);
    const b2 = this.spm + v * line * (a0 + line);
    const det = A11 * A22 - A12 * A12;
    // No line to scale (a calibration of zeros): the call cost takes it all.
    if (!(A22 > 0) || !(det > 1e-12 * A11 * A22)) return { callUs: Math.max(0, (b1 - A12) / A11), scale: 1 };
    let a = (b1 * A22 - A12 * b2) / det;
    let s = (A11 * b2 - A12 * b1) / det;
    if (a < 0) {
      a = 0;
      s = b2 / A22;
    }
    if (s < MIN_SCALE) {
      s = MIN_SCALE;
      a = Math.max(0, (b1 - s * A12) / A11);
    }
    return { callUs: a, scale: s };
  }
}

/** The model a refitting executor steps and gives costs to. */
export interface RefitTarget {
  step(plan: StepPlan): Promise<StepResult>;
  interruptBurst?(): void;
  setExpertCost(cost: NativeExpertCost): void;
}

/** An executor that steps `model` and gives it the refitted expert costs after each step (the engine's StepExecutor). */
export function refittingExecutor(model: RefitTarget, refit: ExpertCostRefit): { step(plan: StepPlan): Promise<StepResult>; interruptBurst(): void } {
  return {
    interruptBurst: () => model.interruptBurst?.(),
    async step(plan: StepPlan): Promise<StepResult> {
      const result = await model.step(plan);
      const cost = refit.observe(result.cpuExpertCalls);
      if (cost) model.setExpertCost(cost);
      return result;
    },
  };
}
