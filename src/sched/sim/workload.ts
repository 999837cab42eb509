// Seeded workloads for the simulator: Poisson arrivals (exponential gaps at a given rate)
// with prompt and output lengths drawn uniformly from ranges, all from one seed, so that a
// run repeats exactly.

/** A small, fast, seeded generator (mulberry32): uniform floats in [0, 1). */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = (Math.floor(seed) >>> 0) ^ 0x9e3779b9;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** Exponential with the given mean. */
  exponential(mean: number): number {
    return -mean * Math.log(1 - this.next());
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

export interface WorkloadSpec {
  /** Requests in the run. */
  requests: number;
  /** Mean arrivals per second (Poisson). */
  ratePerSecond: number;
  /** Prompt tokens, uniform in [min, max]. */
  promptTokens: [number, number];
  /** Tokens to generate, uniform in [min, max]. */
  outputTokens: [number, number];
  seed: number;
}

export interface SimRequest {
  /** Arrival time on the virtual clock (µs). */
  arrivalUs: number;
  prompt: number[];
  maxTokens: number;
}

/** Decode-heavy, as in APEX's evaluation: short prompts, long outputs. */
export const DECODE_HEAVY: Pick<WorkloadSpec, 'promptTokens' | 'outputTokens'> = { promptTokens: [64, 512], outputTokens: [256, 1024] };

export function makeWorkload(spec: WorkloadSpec, vocab = 32000): SimRequest[] {
  const rng = new Rng(spec.seed);
  const out: SimRequest[] = [];
  let t = 0;
  for (let i = 0; i < spec.requests; i++) {
    t += rng.exponential(1e6 / spec.ratePerSecond);
    const n = rng.int(spec.promptTokens[0], spec.promptTokens[1]);
    // Random ids from 3 up: no two prompts share a prefix block.
    const prompt = Array.from({ length: n }, () => rng.int(3, vocab - 1));
    out.push({ arrivalUs: t, prompt, maxTokens: rng.int(spec.outputTokens[0], spec.outputTokens[1]) });
  }
  return out;
}
