// The bench's workloads and the requests each one sends: prompt processing (pp N), decode
// (tg N), N sequences decoded together, and online serving with Poisson arrivals and
// fixed, uniform or chat-like long-tailed lengths. Requests are drawn from a seeded RNG,
// so every system of a run serves the very same token ids at the very same times.
import { describeLength, maxLength, poissonArrivals, Rng, sampleLength, type LengthDistribution } from './stats.js';
import { TandemError } from '../native/errors.js';

export type WorkloadKind = 'pp' | 'tg' | 'parallel' | 'online';
export const WORKLOAD_KINDS: readonly WorkloadKind[] = ['pp', 'tg', 'parallel', 'online'];

export type Workload =
  /** One prompt of promptTokens tokens, one token generated: prompt tokens/s. */
  | { kind: 'pp'; promptTokens: number }
  /** A short prompt, then outputTokens decoded: decode tokens/s of one sequence. */
  | { kind: 'tg'; promptTokens: number; outputTokens: number }
  /** `sequences` requests at once, each promptTokens in and outputTokens out: aggregate decode tokens/s. */
  | { kind: 'parallel'; sequences: number; promptTokens: number; outputTokens: number }
  /** `requests` requests arriving as a Poisson process at `rate` per second, at most `concurrency` served together. */
  | { kind: 'online'; lengths: string; rate: number; requests: number; concurrency: number; input: LengthDistribution; output: LengthDistribution };

/** Input and output lengths of the online workload by name. */
export const ONLINE_LENGTHS: Record<string, { input: LengthDistribution; output: LengthDistribution; about: string }> = {
  fixed: { input: { kind: 'fixed', value: 128 }, output: { kind: 'fixed', value: 64 }, about: '128 in, 64 out' },
  uniform: { input: { kind: 'uniform', min: 16, max: 256 }, output: { kind: 'uniform', min: 16, max: 128 }, about: 'in uniform 16-256, out uniform 16-128' },
  chat: {
    input: { kind: 'lognormal', median: 96, sigma: 1.0, min: 8, max: 1024 },
    output: { kind: 'lognormal', median: 48, sigma: 0.8, min: 4, max: 384 },
    about: 'chat-like long tails: in lognormal median 96 (8-1024), out lognormal median 48 (4-384)',
  },
  // Small enough for --quick and the tests.
  small: { input: { kind: 'uniform', min: 8, max: 48 }, output: { kind: 'uniform', min: 4, max: 24 }, about: 'in uniform 8-48, out uniform 4-24' },
};

/** The short prompt before a plain tg decode (tokens, BOS included). */
export const TG_PROMPT_TOKENS = 16;

/** Short stable name, e.g. 'pp512', 'tg128', 'tg128@d4096' (after a 4096-token prompt), 'parallel8', 'online-chat@0.5'. */
export function workloadKey(w: Workload): string {
  switch (w.kind) {
    case 'pp':
      return `pp${w.promptTokens}`;
    case 'tg':
      return w.promptTokens === TG_PROMPT_TOKENS ? `tg${w.outputTokens}` : `tg${w.outputTokens}@d${w.promptTokens}`;
    case 'parallel':
      return `parallel${w.sequences}`;
    case 'online':
      return `online-${w.lengths}@${formatRate(w.rate)}`;
  }
}

/** The lengths of a tg workload from its key ('tg128', 'tg128@d4096'). */
export function parseTgKey(key: string): { outputTokens: number; promptTokens: number } {
  const m = /^tg(\d+)(?:@d(\d+))?$/.exec(key);
  if (!m) throw new TandemError('TDM_INTERNAL', `not a tg workload key: '${key}'`);
  return { outputTokens: Number(m[1]), promptTokens: m[2] === undefined ? TG_PROMPT_TOKENS : Number(m[2]) };
}

/** A rate with three significant digits, e.g. 0.125, 1.5, 12. */
export function formatRate(rate: number): string {
  return String(Number(rate.toPrecision(3)));
}

/** One line for reports. */
export function describeWorkload(w: Workload): string {
  switch (w.kind) {
    case 'pp':
      return `prompt of ${w.promptTokens} tokens`;
    case 'tg':
      return `decode ${w.outputTokens} tokens after ${w.promptTokens}`;
    case 'parallel':
      return `${w.sequences} sequences at once, ${w.promptTokens} in, ${w.outputTokens} out each`;
    case 'online':
      return `${w.requests} requests, Poisson ${formatRate(w.rate)}/s, ≤${w.concurrency} at once, in ${describeLength(w.input)}, out ${describeLength(w.output)}`;
  }
}

/** Longest prompt plus output one sequence of the workload holds (tokens). */
export function workloadContext(w: Workload): number {
  switch (w.kind) {
    case 'pp':
      return w.promptTokens + 1;
    case 'tg':
    case 'parallel':
      return w.promptTokens + w.outputTokens;
    case 'online':
      return maxLength(w.input) + maxLength(w.output);
  }
}

/** A request of a workload: when it arrives (ms after the run starts) and what it asks. */
export interface PlannedRequest {
  arrivalMs: number;
  prompt: number[];
  maxTokens: number;
}

/** Where prompts come from: ordinary token ids of the model, and BOS to start with (-1: none). */
export interface PromptSource {
  normalTokens: Int32Array;
  bosId: number;
}

/** A prompt of exactly `length` tokens: BOS (where the model adds one), then random ordinary tokens. */
export function makePrompt(source: PromptSource, length: number, rng: Rng): number[] {
  const out: number[] = [];
  if (source.bosId >= 0 && length > 0) out.push(source.bosId);
  while (out.length < length) out.push(source.normalTokens[Math.floor(rng.next() * source.normalTokens.length)]!);
  return out;
}

/** The requests of a workload, drawn from `seed` (the same seed gives the same requests). */
export function planRequests(w: Workload, source: PromptSource, seed: number): PlannedRequest[] {
  const rng = new Rng(seed);
  switch (w.kind) {
    case 'pp':
      return [{ arrivalMs: 0, prompt: makePrompt(source, w.promptTokens, rng), maxTokens: 1 }];
    case 'tg':
      return [{ arrivalMs: 0, prompt: makePrompt(source, w.promptTokens, rng), maxTokens: w.outputTokens }];
    case 'parallel':
      return Array.from({ length: w.sequences }, () => ({ arrivalMs: 0, prompt: makePrompt(source, w.promptTokens, rng), maxTokens: w.outputTokens }));
    case 'online': {
      const arrivals = poissonArrivals(w.requests, w.rate, rng);
      return arrivals.map((t) => ({
        arrivalMs: t * 1000,
        prompt: makePrompt(source, sampleLength(w.input, rng), rng),
        maxTokens: sampleLength(w.output, rng),
      }));
    }
  }
}
