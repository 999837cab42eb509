// What one run measured, from per-request token timestamps: prompt and decode tokens/s,
// TTFT / TPOT / end-to-end latency, and goodput at a latency SLO (DistServe's definition:
// requests that meet both the TTFT and the TPOT bound, per second).
import { summarize, type Distribution } from './stats.js';

/** One request as a run saw it; times in ms on one clock (performance.now()). */
export interface RequestTrace {
  /** When the request arrived (its scheduled arrival, so queueing counts as latency). */
  arrivalMs: number;
  promptTokens: number;
  /** When each generated token reached the caller. */
  tokenTimesMs: number[];
}

/** Time to first token (ms); NaN when no token came. */
export const ttftMs = (r: RequestTrace): number => (r.tokenTimesMs.length > 0 ? r.tokenTimesMs[0]! - r.arrivalMs : NaN);

/** Mean time per output token after the first (ms); NaN with fewer than two tokens. */
export function tpotMs(r: RequestTrace): number {
  const n = r.tokenTimesMs.length;
  return n > 1 ? (r.tokenTimesMs[n - 1]! - r.tokenTimesMs[0]!) / (n - 1) : NaN;
}

/** Arrival to last token (ms); NaN when no token came. */
export const e2eMs = (r: RequestTrace): number => (r.tokenTimesMs.length > 0 ? r.tokenTimesMs.at(-1)! - r.arrivalMs : NaN);

export interface LatencySlo {
  /** Time to first token at most (ms). */
  ttftMs: number;
  /** Time per output token at most (ms). */
  tpotMs: number;
}

/** Whether a request met the SLO; a request of one token has no TPOT and is judged on TTFT alone. */
export function meetsSlo(r: RequestTrace, slo: LatencySlo): boolean {
  const tpot = tpotMs(r);
  return ttftMs(r) <= slo.ttftMs && (Number.isNaN(tpot) || tpot <= slo.tpotMs);
}

/** Prompt processing rate (tokens/s): prompt tokens over the time to first token (one sampled token included). */
export function promptTokPerS(r: RequestTrace): number {
  return (r.promptTokens / ttftMs(r)) * 1000;
}

/** Decode rate of one sequence (tokens/s): tokens after the first over the time they took. */
export function decodeTokPerS(r: RequestTrace): number {
  return 1000 / tpotMs(r);
}

/**
 * Aggregate decode rate of sequences decoded together (tokens/s): tokens produced while
 * every sequence was decoding (after the last first token, up to the first sequence to
 * finish) over that window, so that staggered prompts and tails do not count. Falls back
 * to all tokens over the whole span when the window is empty.
 */
export function steadyDecodeTokPerS(traces: readonly RequestTrace[]): number {
  const withTokens = traces.filter((r) => r.tokenTimesMs.length > 0);
  if (withTokens.length === 0) return NaN;
  const start = Math.max(...withTokens.map((r) => r.tokenTimesMs[0]!));
  const end = Math.min(...withTokens.map((r) => r.tokenTimesMs.at(-1)!));
  if (end > start) {
    let tokens = 0;
    for (const r of withTokens) for (const t of r.tokenTimesMs) if (t > start && t <= end) tokens++;
    if (tokens > 0) return (tokens / (end - start)) * 1000;
  }
  const first = Math.min(...withTokens.map((r) => r.arrivalMs));
  const last = Math.max(...withTokens.map((r) => r.tokenTimesMs.at(-1)!));
  const total = withTokens.reduce((a, r) => a + r.tokenTimesMs.length, 0);
  return (total / (last - first)) * 1000;
}

/** The serving view of a set of requests. */
export interface ServingMetrics {
  requests: number;
  /** First arrival to last token (s). */
  durationS: number;
  /** Generated tokens over the duration. */
  outputTokPerS: number;
  /** Prompt and generated tokens over the duration. */
  totalTokPerS: number;
  /** Completed requests over the duration. */
  requestsPerS: number;
  ttftMs: Distribution;
  tpotMs: Distribution;
  e2eMs: Distribution;
  /** Share of requests that met the SLO, 0 to 1. */
  sloAttainment: number;
  /** Requests that met the SLO, per second of the duration. */
  goodputRps: number;
}

export function servingMetrics(traces: readonly RequestTrace[], slo: LatencySlo): ServingMetrics {
  const n = traces.length;
  const first = Math.min(...traces.map((r) => r.arrivalMs));
  const last = Math.max(...traces.map((r) => r.tokenTimesMs.at(-1) ?? r.arrivalMs));
  const durationS = n > 0 ? (last - first) / 1000 : NaN;
  const outputTokens = traces.reduce((a, r) => a + r.tokenTimesMs.length, 0);
  const promptTokens = traces.reduce((a, r) => a + r.promptTokens, 0);
  const good = traces.filter((r) => meetsSlo(r, slo)).length;
  return {
    requests: n,
    durationS,
    outputTokPerS: outputTokens / durationS,
    totalTokPerS: (outputTokens + promptTokens) / durationS,
    requestsPerS: n / durationS,
    ttftMs: summarize(traces.map(ttftMs)),
    tpotMs: summarize(traces.map(tpotMs).filter((v) => !Number.isNaN(v))),
    e2eMs: summarize(traces.map(e2eMs)),
    sloAttainment: n > 0 ? good / n : NaN,
    goodputRps: good / durationS,
  };
}

/**
 * Goodput over a rate sweep (DistServe): the highest offered rate at which at least
 * `attainment` of requests met the SLO; 0 when no rate did.
 */
export function maxRateAtSlo(points: readonly { rate: number; sloAttainment: number }[], attainment = 0.9): number {
  let best = 0;
  for (const p of points) if (p.sloAttainment >= attainment && p.rate > best) best = p.rate;
  return best;
}
