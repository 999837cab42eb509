// auto: predicts, every step, the time and throughput of each way to run it (GPU-only with
// the host sequences waiting, APEX's overlap, NEO's pipelining with a load-aware split) with
// 0..all of the host sequences included (those waiting too long first, then the cheapest
// CPU attention), and takes the highest predicted throughput whose step meets the target,
// or the shortest step when none does. GPU-only is one of the candidates, so by prediction
// auto is never slower than it. New requests go to
// the device tier while it has room, then to host RAM only while that raises the predicted
// throughput within the target, by more over the tokens it has left than getting there costs
// the others: the copy of its prompt's table when it can be prefilled on the device (in the
// device's headroom) and then demoted, else its CPU prefill; host tables move back to the
// device as it frees up. Where the executor can stream host KV to the device (streamHostKv),
// the host sequences the CPU does not take may run with device attention over their KV,
// gathered across the link a layer at a time beside the pass: the link works through the whole
// step, not only behind the device's own attention as the CPU does, so more host sequences
// fit in a step the device alone would take (each choice priced as the others are).
import type { Strategy } from '../../native/step-plan.js';
import { addWork, emptyLoad, merge, predictLoads, predictStep, type StepTime } from '../step-time.js';
import {
  admitInOrder, asDecode, asHostDecode, candidate, committedPrompt, demoteCopyUs, DEFAULT_DEVICE_HEADROOM, DEFAULT_MAX_DEFER_STEPS, growth, naturalAttention, promoteReserve, stagedBlocks, work,
  type Candidate, type PolicyInput, type RequestView, type SeqDecision, type StepDecision, type StreamShape,
} from '../policy.js';
import { hybridMoves } from './overlap.js';
import { loadAwareLoads } from './pipeline.js';

/** Host subsets weighed: all sizes up to this many, then an even spread of sizes. */
const MAX_SUBSETS = 24;

function subsetSizes(n: number): number[] {
  if (n + 1 <= MAX_SUBSETS) return Array.from({ length: n + 1 }, (_, i) => i);
  const sizes = new Set<number>([0, n]);
  for (let i = 1; i < MAX_SUBSETS - 1; i++) sizes.add(Math.round((i * n) / (MAX_SUBSETS - 1)));
  return [...sizes].sort((a, b) => a - b);
}

export function autoPolicy(input: PolicyInput): StepDecision {
  const { running, waiting, kv, cost } = input;
  const slo = input.options?.tpotSloUs;
  const streams = input.options?.streamHostKv === true;
  const bt = cost.shape.kvBlockTokens ?? kv.blockTokens;
  // What one step may stream is bounded by the executor's staging.
  const streamCap = input.options?.streamBlocksMax ?? Infinity;
  const streamShape: StreamShape = { ...cost.shape, kvBlockTokens: bt };
  const blocksOf = (r: RequestView): number => stagedBlocks(r, bt);
  // How many of `seqs`, taken in order, fit in `room` streamed blocks.
  const fitting = (seqs: readonly RequestView[], room: number): number => {
    let n = 0;
    for (let used = 0; n < seqs.length && used + blocksOf(seqs[n]!) <= room; n++) used += blocksOf(seqs[n]!);
    return n;
  };
  const maxDefer = input.options?.maxDeferSteps ?? DEFAULT_MAX_DEFER_STEPS;
  const headroom = input.options?.deviceHeadroom ?? DEFAULT_DEVICE_HEADROOM;
  const { swapOut, swapIn } = hybridMoves(running, kv, headroom);
  const dropped = new Set(swapOut.filter((s) => s.to === 'recompute').map((s) => s.seqId));
  const live = running.filter((r) => !dropped.has(r.seqId));
  const byId = new Map(live.map((r) => [r.seqId, r]));
  const dev = live.filter((r) => naturalAttention(r) === 'gpu');
  const host = live.filter((r) => naturalAttention(r) === 'cpu');
  // Prefill chunks run now (their tables already cover the chunk). The rest join in order:
  // first those another step out would push past the target (a token gap of about one step
  // per step waited) or past maxDeferSteps, longest waiting first; then the cheapest CPU
  // attention first. Joining stays a choice: one that would make the step slower than the
  // device alone waits, as a swapped-out sequence does under gpu-only.
  const devLoad = emptyLoad();
  for (const r of dev) addWork(devLoad, work(r, 'gpu'), cost);
  const shortest = predictLoads('gpu-only', devLoad, undefined, cost).stepUs;
  const starving = (r: RequestView) => r.deferredSteps >= maxDefer || (slo !== undefined && r.deferredSteps >= 1 && (r.deferredSteps + 2) * shortest > slo);
  const hostPrefills = host.filter((r) => r.newTokens > 1);
  // A host prefill chunk on the device, its KV streamed (the chunk's rows are stored into its
  // host blocks as they are computed), where that step is shorter than the chunk on the CPU.
  const prefillStreams = (r: RequestView): boolean => {
    if (!streams) return false;
    const onCpu = predictLoads('overlap', addWork({ ...devLoad }, work(r, 'cpu'), cost), undefined, cost).stepUs;
    return predictLoads('gpu-only', addWork({ ...devLoad }, work(r, 'gpu', undefined, streamShape), cost), undefined, cost).stepUs < onCpu;
  };
  const streamedPrefills: RequestView[] = [];
  let prefillBlocks = 0;
  for (const r of hostPrefills) {
    if (!prefillStreams(r) || prefillBlocks + blocksOf(r) > streamCap) continue;
    streamedPrefills.push(r);
    prefillBlocks += blocksOf(r);
  }
  const prefillSet = new Set(streamedPrefills);
  const forced = hostPrefills.filter((r) => !prefillSet.has(r));
  const starved = new Map(host.map((r) => [r, starving(r)]));
  const optional = host
    .filter((r) => r.newTokens === 1)
    .sort((a, b) => Number(starved.get(b)) - Number(starved.get(a)) || (starved.get(a) ? b.deferredSteps - a.deferredSteps : 0) || a.context - b.context || a.arrival - b.arrival);
  // auto runs between every two steps, its time added to each: the loops below price up to
  // MAX_SUBSETS² candidates, so each sequence's work is made once and a candidate's
  // sequences are listed only for the one chosen.
  const optionalCpu = optional.map((r) => work(r, 'cpu'));
  const optionalStreamed = streams ? optional.map((r) => work(r, 'gpu', undefined, streamShape)) : [];
  // Streamed blocks of optional[0, i), and how many of optional[k..] fit in `room` of them.
  const blocksBefore = [0];
  for (const r of streams ? optional : []) blocksBefore.push(blocksBefore[blocksBefore.length - 1]! + blocksOf(r));
  const fittingFrom = (k: number, room: number): number => {
    let lo = 0;
    let hi = optional.length - k;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (blocksBefore[k + mid]! - blocksBefore[k]! <= room) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  const tokensOf = (seqs: readonly SeqDecision[]) => seqs.reduce((n, s) => n + byId.get(s.seqId)!.newTokens, 0);
  const candidates: Candidate[] = [];
  const plans: { c: Candidate; strategy: Strategy; seqs: () => SeqDecision[] }[] = [];
  const take = (strategy: Strategy, seqs: () => SeqDecision[], numHost: number, time: StepTime, tokens: number) => {
    const c = candidate(strategy, numHost, time, tokens, slo);
    candidates.push(c);
    plans.push({ c, strategy, seqs });
  };
  const devSeqs: SeqDecision[] = [...dev, ...streamedPrefills].map((r) => ({ seqId: r.seqId, attention: 'gpu' }));
  // The overlapped batch grows one host sequence at a time; sizes in `sizes` are priced.
  const load = emptyLoad();
  for (const r of dev) addWork(load, work(r, 'gpu'), cost);
  for (const r of streamedPrefills) addWork(load, work(r, 'gpu', undefined, streamShape), cost);
  for (const r of forced) addWork(load, work(r, 'cpu'), cost);
  const sizes = new Set(subsetSizes(optional.length));
  const devSide = [...dev, ...streamedPrefills];
  const onCpu = (seqs: readonly RequestView[]) => seqs.map((r): SeqDecision => ({ seqId: r.seqId, attention: 'cpu' }));
  const onGpu = (seqs: readonly RequestView[]) => seqs.map((r): SeqDecision => ({ seqId: r.seqId, attention: 'gpu' }));
  for (let k = 0; k <= optional.length; k++) {
    if (k > 0) addWork(load, optionalCpu[k - 1]!, cost);
    if (!sizes.has(k)) continue;
    const included = [...forced, ...optional.slice(0, k)];
    if (included.length === 0 && load.tokens > 0) take('gpu-only', () => devSeqs, 0, predictLoads('gpu-only', load, undefined, cost), load.tokens);
    if (included.length > 0) {
      take('overlap', () => [...devSeqs, ...onCpu(included)], included.length, predictLoads('overlap', load, undefined, cost), load.tokens);
      const split = loadAwareLoads(devSide, included, cost);
      take('pipeline', () => split.split, included.length, predictLoads('pipeline', split.b0, split.b1, cost), load.tokens);
    }
    // The host decodes the CPU does not take, streamed in the same order, `sizes` of them priced.
    if (!streams || k === optional.length) continue;
    const n = fittingFrom(k, streamCap - prefillBlocks);
    const streamSizes = new Set(subsetSizes(n));
    const streamed = { ...load };
    const strategy: Strategy = included.length > 0 ? 'overlap' : 'gpu-only';
    for (let j = 1; j <= n; j++) {
      addWork(streamed, optionalStreamed[k + j - 1]!, cost);
      if (!streamSizes.has(j)) continue;
      const end = k + j;
      take(strategy, () => [...devSeqs, ...onCpu(included), ...onGpu(optional.slice(k, end))], included.length + j, predictLoads(strategy, streamed, undefined, cost), streamed.tokens);
    }
  }
  const meeting = plans.filter((p) => p.c.meetsSlo);
  const pool = meeting.length > 0 ? meeting : plans;
  const best = pool.reduce<(typeof plans)[number] | undefined>((a, p) => {
    if (!a) return p;
    if (meeting.length > 0) return p.c.tokensPerSecond > a.c.tokensPerSecond ? p : a;
    return p.c.stepUs < a.c.stepUs ? p : a;
  }, undefined);

  const chosen = best?.seqs() ?? [];
  const picked = new Set(chosen.map((s) => s.seqId));
  const time = predictStep(best?.strategy ?? 'gpu-only', chosen.map((s) => work(byId.get(s.seqId)!, s.attention, s.subBatch, streamShape)), cost);
  // A new request goes to host RAM only if running it there raises the predicted throughput of a step with every
  // host sequence (the better of overlap and pipelining, or GPU-only when none) and that step meets the target.
  // That step is priced with every running prompt already in (each sequence decoding), as the new request's
  // decodes will be: a host decode joins a step of long prefill chunks almost for free, and on the H200
  // requests admitted on that ground then sat out the decode steps, their CPU prefills paid for nothing.
  const steadyDev = dev.map(asDecode);
  const steadyHost = host.map(asHostDecode);
  const steadyLoad = emptyLoad();
  for (const r of steadyDev) addWork(steadyLoad, work(r, 'gpu'), cost);
  const steadyShortest = predictLoads('gpu-only', steadyLoad, undefined, cost).stepUs;
  const stepWith = (hs: readonly RequestView[]): { stepUs: number; perUs: number } => {
    const n = steadyDev.length + hs.length;
    if (hs.length === 0) return { stepUs: steadyShortest, perUs: n / Math.max(steadyShortest, 1e-9) };
    const over = predictStep('overlap', [...steadyDev.map((x) => work(x, 'gpu')), ...hs.map((x) => work(x, 'cpu'))], cost).stepUs;
    const split = loadAwareLoads(steadyDev, hs, cost);
    const pipe = predictLoads('pipeline', split.b0, split.b1, cost).stepUs;
    let stepUs = Math.min(over, pipe);
    if (streams) {
      // The last j streamed and the rest on the CPU, `subsetSizes` of j priced (as many as the staging holds):
      // the first m - j on the CPU as a running load, the last j streamed as another, built from the end.
      const m = hs.length;
      const cpuBefore = [{ ...steadyLoad }];
      for (const x of hs) cpuBefore.push(addWork({ ...cpuBefore[cpuBefore.length - 1]! }, work(x, 'cpu'), cost));
      const streamedTail = emptyLoad();
      let tail = 0;
      for (const j of subsetSizes(fitting([...hs].reverse(), streamCap))) {
        if (j === 0) continue;
        for (; tail < j; tail++) addWork(streamedTail, work(hs[m - 1 - tail]!, 'gpu', undefined, streamShape), cost);
        stepUs = Math.min(stepUs, predictLoads(j < m ? 'overlap' : 'gpu-only', merge(cpuBefore[m - j]!, streamedTail), undefined, cost).stepUs);
      }
    }
    return { stepUs, perUs: n / stepUs };
  };
  // Its prompt is prefilled first, with attention on the CPU (or streamed): where that step outlasts the
  // same prefill on the device, the tokens the others lose meanwhile must be won back by the
  // faster steps over the tokens it has left to generate.
  const prefillLossTokens = (r: RequestView, before: { stepUs: number; perUs: number }): number => {
    const rest = [...dev.map((x) => work(x, 'gpu')), ...host.map((x) => work(x, 'cpu'))];
    const prompt = { tokens: r.newTokens, context: r.context };
    let onHost = predictStep('overlap', [...rest, { ...prompt, attention: 'cpu' }], cost).stepUs;
    // Or on the device with its KV streamed into host RAM, where the executor streams.
    if (streams && blocksOf(r) <= streamCap) onHost = Math.min(onHost, predictStep('overlap', [...rest, work({ ...r, tier: 'host' }, 'gpu', undefined, streamShape)], cost).stepUs);
    const onDevice = predictStep('overlap', [...rest, { ...prompt, attention: 'gpu' }], cost).stepUs;
    return before.perUs * Math.max(0, onHost - onDevice);
  };
  // Whether decoding `r` in host RAM pays for getting it there: `lossTokens` is what the batch loses meanwhile.
  type Rate = { stepUs: number; perUs: number };
  // While host decodes sit this step out, more of them would sit out too: their prefill (on the
  // CPU, or a copy out) would buy nothing. On the H200 with a busy host, auto paid for CPU
  // prefills of requests whose decodes then waited for the device.
  const hostSittingOut = optional.some((r) => !picked.has(r.seqId));
  const hostPays = (r: RequestView, toHost: readonly RequestView[], lossTokens: (before: Rate, after: Rate) => number): boolean => {
    if (hostSittingOut) return false;
    const hs = [...steadyHost, ...toHost.map(asHostDecode)];
    const before = stepWith(hs);
    const after = stepWith([...hs, asHostDecode(r)]);
    // Better than without it, and better than the device alone: else its steps would be deferred ones.
    if (!(after.perUs > before.perUs) || !(after.perUs > steadyDev.length / Math.max(steadyShortest, 1e-9)) || (slo !== undefined && after.stepUs > slo)) return false;
    if (r.remainingTokens === undefined) return true;
    return r.remainingTokens * after.stepUs * (after.perUs - before.perUs) > lossTokens(before, after);
  };
  const hostOk = (r: RequestView, toHost: readonly RequestView[]): boolean => hostPays(r, toHost, (before) => prefillLossTokens(r, before));
  // Prefilled on the device and then demoted: the step that copies its table out, its own
  // first decode among them, is longer by the copy.
  const stagedOk = (r: RequestView, toHost: readonly RequestView[]): boolean => hostPays(r, toHost, (_before, after) => after.perUs * demoteCopyUs(r, kv, cost));
  // While the host sequences' step misses the target (or, with none, does not hide the CPU), new requests leave the
  // device room that moving a host table back needs.
  const now = stepWith(steadyHost);
  const keepsUp = host.length === 0 || (slo !== undefined ? now.stepUs <= slo : now.stepUs <= steadyShortest);
  const reserve = growth(running, 'device', kv) + committedPrompt(running, 'device', kv) + (keepsUp ? 0 : promoteReserve(running, kv));
  // A staged prefill borrows only device room that new requests could have had.
  const staged = { allows: stagedOk, lendable: kv.device.numFree - reserve };
  const admit = admitInOrder(waiting, kv, reserve, headroom, hostOk, staged);
  const tokens = tokensOf(chosen);
  return {
    policy: 'auto',
    strategy: best?.strategy ?? 'gpu-only',
    sequences: chosen,
    deferred: running.filter((r) => !picked.has(r.seqId)).map((r) => r.seqId),
    admit,
    swapIn,
    swapOut,
    predicted: { stepUs: time.stepUs, tokens, tokensPerSecond: time.stepUs > 0 ? (tokens * 1e6) / time.stepUs : 0, time },
    candidates,
  };
}
