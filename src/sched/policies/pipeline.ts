// NEO's asymmetric pipelining: two sub-batches; the device runs the linear layers (and
// device attention) of one while the CPU runs the attention of the other's host-tier
// sequences. Sub-batch 0 holds every device-attention sequence and prefill; host decodes
// are placed one by one, longest first, where the predicted step is shorter (load-aware);
// new requests go to host RAM while that beats GPU-only and each sub-batch's CPU attention
// stays hidden.
// With no host sequence, or when pipelining is predicted slower than running the device
// sequences alone, the step runs GPU-only and the host sequences wait (NEO's mode choice),
// for a few steps at most.
import type { CostModel } from '../cost-model.js';
import { addWork, emptyLoad, pipelinePassUs, predictLoads, predictStep, shiftCpuDecode, type Load } from '../step-time.js';
import {
  admitInOrder, asHostDecode, candidate, committedPrompt, DEFAULT_DEVICE_HEADROOM, DEFAULT_MAX_DEFER_STEPS, growth, naturalAttention, promoteReserve, work,
  type Candidate, type PolicyInput, type RequestView, type SeqDecision, type StepDecision,
} from '../policy.js';
import { hybridMoves } from './overlap.js';

/** Load-aware split of `host` sequences beside the device-side sequences `dev`: host prefills in 0, each host decode (longest first) in the sub-batch that predicts the shorter step. */
export function loadAwareSplit(dev: readonly RequestView[], host: readonly RequestView[], cost: CostModel): SeqDecision[] {
  return loadAwareLoads(dev, host, cost).split;
}

/** loadAwareSplit with its sub-batches' loads, which predictLoads prices as predictStep would the split. */
export function loadAwareLoads(dev: readonly RequestView[], host: readonly RequestView[], cost: CostModel): { split: SeqDecision[]; b0: Load; b1: Load } {
  const out: SeqDecision[] = dev.map((r) => ({ seqId: r.seqId, attention: 'gpu', subBatch: 0 }));
  const b0 = emptyLoad();
  const b1 = emptyLoad();
  for (const r of dev) addWork(b0, work(r, 'gpu'), cost);
  for (const r of host.filter((x) => x.newTokens > 1)) {
    addWork(b0, work(r, 'cpu'), cost);
    out.push({ seqId: r.seqId, attention: 'cpu', subBatch: 0 });
  }
  const decodes = host.filter((r) => r.newTokens === 1).sort((a, b) => b.context - a.context || a.arrival - b.arrival);
  // auto prices many host subsets a step: the comparison runs on pass times, in place.
  for (const r of decodes) {
    shiftCpuDecode(b0, r.context, 1);
    const t0 = pipelinePassUs(b0, b1, cost);
    shiftCpuDecode(b0, r.context, -1);
    shiftCpuDecode(b1, r.context, 1);
    const t1 = pipelinePassUs(b0, b1, cost);
    shiftCpuDecode(b1, r.context, -1);
    const sub: 0 | 1 = t1 <= t0 ? 1 : 0;
    shiftCpuDecode(sub === 0 ? b0 : b1, r.context, 1);
    out.push({ seqId: r.seqId, attention: 'cpu', subBatch: sub });
  }
  return { split: out, b0, b1 };
}

export function pipelinePolicy(input: PolicyInput): StepDecision {
  const { running, waiting, kv, cost } = input;
  const slo = input.options?.tpotSloUs;
  const headroom = input.options?.deviceHeadroom ?? DEFAULT_DEVICE_HEADROOM;
  const { swapOut, swapIn } = hybridMoves(running, kv, headroom);
  const dropped = new Set(swapOut.filter((s) => s.to === 'recompute').map((s) => s.seqId));
  const live = running.filter((r) => !dropped.has(r.seqId));
  const dev = live.filter((r) => naturalAttention(r) === 'gpu');
  const host = live.filter((r) => naturalAttention(r) === 'cpu');
  const byId = new Map(live.map((r) => [r.seqId, r]));
  const tokensOf = (seqs: readonly SeqDecision[]) => seqs.reduce((n, s) => n + byId.get(s.seqId)!.newTokens, 0);

  const gpuOnly: SeqDecision[] = dev.map((r) => ({ seqId: r.seqId, attention: 'gpu' }));
  const gpuTime = predictStep('gpu-only', gpuOnly.map((s) => work(byId.get(s.seqId)!, s.attention)), cost);
  const candidates: Candidate[] = [candidate('gpu-only', 0, gpuTime, tokensOf(gpuOnly), slo)];
  let strategy: StepDecision['strategy'] = 'gpu-only';
  let sequences = gpuOnly;
  let time = gpuTime;
  if (host.length > 0) {
    const split = loadAwareSplit(dev, host, cost);
    const pipeTime = predictStep('pipeline', split.map((s) => work(byId.get(s.seqId)!, s.attention, s.subBatch)), cost);
    const c = candidate('pipeline', host.length, pipeTime, tokensOf(split), slo);
    candidates.push(c);
    // Host sequences cannot wait forever, nor can the step be empty: pipelining wins ties.
    // Prefill chunks never wait: their tables already cover the chunk.
    const starving = host.some((r) => r.newTokens > 1 || r.deferredSteps >= (input.options?.maxDeferSteps ?? DEFAULT_MAX_DEFER_STEPS));
    if (gpuOnly.length === 0 || starving || c.tokensPerSecond >= candidates[0]!.tokensPerSecond) {
      strategy = 'pipeline';
      sequences = split;
      time = pipeTime;
    }
  }
  const chosen = new Set(sequences.map((s) => s.seqId));
  // To host RAM while pipelining with it beats GPU-only and each sub-batch's CPU attention stays hidden by the other's device work.
  const gpuRate = gpuOnly.length / Math.max(gpuTime.stepUs, 1e-9);
  const keepsUp = host.length === 0 || predictStep('pipeline', loadAwareSplit(dev, host, cost).map((s) => work(byId.get(s.seqId)!, s.attention, s.subBatch)), cost).exposedCpuUs <= 0;
  const reserve = growth(running, 'device', kv) + committedPrompt(running, 'device', kv) + (keepsUp ? 0 : promoteReserve(running, kv));
  const admit = admitInOrder(waiting, kv, reserve, headroom, (r, toHost) => {
    const withThem = [...host, ...[...toHost, r].map(asHostDecode)];
    const split = loadAwareSplit(dev, withThem, cost);
    const all = new Map([...live, ...withThem].map((x) => [x.seqId, x]));
    const t = predictStep('pipeline', split.map((s) => work(all.get(s.seqId)!, s.attention, s.subBatch)), cost);
    return t.exposedCpuUs <= 0 && split.length / t.stepUs > gpuRate;
  });
  const tokens = tokensOf(sequences);
  return {
    policy: 'pipeline',
    strategy,
    sequences,
    deferred: running.filter((r) => !chosen.has(r.seqId)).map((r) => r.seqId),
    admit,
    swapIn,
    swapOut,
    predicted: { stepUs: time.stepUs, tokens, tokensPerSecond: time.stepUs > 0 ? (tokens * 1e6) / time.stepUs : 0, time },
    candidates,
  };
}
