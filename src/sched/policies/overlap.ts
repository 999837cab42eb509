// APEX's asynchronous overlap: one device batch runs the linear layers of every sequence;
// the CPU computes the attention of host-tier sequences at the same time as the device's
// own attention, and the device waits for it just before o_proj. No batch splitting: every
// sequence runs every step. New requests go to the device tier while it has room (less,
// while host sequences cost more than they bring, what moving a host table back needs),
// then to host RAM while each raises the predicted throughput: prefilled on the device and
// demoted when the copy is quicker than its CPU prefill, else prefilled on the CPU. When the
// device is short, the newest device tables move to the host; a host table moves back when
// the device has room, the longest first (it frees the most CPU work).
import type { CostModel } from '../cost-model.js';
import { addWork, emptyLoad, predictLoads, type Load } from '../step-time.js';
import {
  admitInOrder, asHostDecode, candidate, tableBlocks, committedPrompt, decisionTokens, demoteCopyUs, DEFAULT_DEVICE_HEADROOM, growth, makeDeviceRoom,
  naturalAttention, predictFor, promoteReserve, work, type KvView, type PolicyInput, type RequestView, type SeqDecision, type StepDecision,
} from '../policy.js';

/**
 * Moves for a policy that runs both tiers: tables out when the device is short, one table
 * back when it has room. They take effect through the plan's copies, so the step itself
 * runs every sequence in the tier it is in now.
 */
export function hybridMoves(running: readonly RequestView[], kv: KvView, headroom: number): { swapOut: StepDecision['swapOut']; swapIn: number[] } {
  const swapOut = makeDeviceRoom(running, kv, true);
  const swapIn: number[] = [];
  if (swapOut.length === 0) {
    const free = kv.device.numFree - growth(running, 'device', kv) - committedPrompt(running, 'device', kv) - Math.floor(headroom * kv.device.numBlocks);
    const back = running
      .filter((r) => r.tier === 'host' && Math.max(r.numBlocks, tableBlocks(kv, r.context, r.context + r.newTokens)) <= free)
      .sort((a, b) => b.context - a.context || a.arrival - b.arrival)[0];
    if (back) swapIn.push(back.seqId);
  }
  return { swapOut, swapIn };
}

/** Generated tokens per µs of an overlapped step of `load` (one per sequence). */
export function overlapRate(load: Load, sequences: number, cost: CostModel): number {
  const t = predictLoads(load.cpuRows > 0 ? 'overlap' : 'gpu-only', load, undefined, cost).stepUs;
  return t > 0 ? sequences / t : 0;
}

export function overlapPolicy(input: PolicyInput): StepDecision {
  const { running, waiting, kv, cost } = input;
  const headroom = input.options?.deviceHeadroom ?? DEFAULT_DEVICE_HEADROOM;
  const { swapOut, swapIn } = hybridMoves(running, kv, headroom);
  const dropped = new Set(swapOut.filter((s) => s.to === 'recompute').map((s) => s.seqId));
  const live = running.filter((r) => !dropped.has(r.seqId));
  const sequences: SeqDecision[] = [];
  const load = emptyLoad();
  const devLoad = emptyLoad();
  for (const r of live) {
    const attention = naturalAttention(r);
    addWork(load, work(r, attention), cost);
    if (attention === 'gpu') addWork(devLoad, work(r, attention), cost);
    sequences.push({ seqId: r.seqId, attention });
  }
  const nDev = sequences.filter((s) => s.attention === 'gpu').length;
  const keepsUp = nDev === live.length || overlapRate(load, live.length, cost) >= overlapRate(devLoad, nDev, cost);
  const reserve = growth(running, 'device', kv) + committedPrompt(running, 'device', kv) + (keepsUp ? 0 : promoteReserve(running, kv));
  const raisesRate = (r: RequestView, toHost: readonly RequestView[]): boolean => {
    const before = { ...load };
    for (const x of toHost) addWork(before, work(asHostDecode(x), 'cpu'), cost);
    const after = addWork({ ...before }, work(asHostDecode(r), 'cpu'), cost);
    const n = live.length + toHost.length;
    return overlapRate(after, n + 1, cost) > overlapRate(before, n, cost);
  };
  // Prefilled on the device and then demoted, when copying its prompt's table out is quicker than its CPU prefill.
  const staged = (r: RequestView, toHost: readonly RequestView[]): boolean => {
    if (!raisesRate(r, toHost)) return false;
    const prompt = { tokens: r.newTokens, context: r.context };
    const onCpu = predictLoads('overlap', addWork({ ...load }, { ...prompt, attention: 'cpu' }, cost), undefined, cost).stepUs;
    const onDevice = predictLoads('overlap', addWork({ ...load }, { ...prompt, attention: 'gpu' }, cost), undefined, cost).stepUs;
    return demoteCopyUs(r, kv, cost) < onCpu - onDevice;
  };
  const admit = admitInOrder(waiting, kv, reserve, headroom, raisesRate, { allows: staged, lendable: kv.device.numFree - reserve });
  const byId = new Map(running.map((r) => [r.seqId, r]));
  const time = predictFor('overlap', sequences, byId, cost);
  const tokens = decisionTokens(sequences, byId);
  const c = candidate('overlap', live.length - nDev, time, tokens, input.options?.tpotSloUs);
  return {
    policy: 'overlap',
    strategy: 'overlap',
    sequences,
    deferred: [...dropped],
    admit,
    swapIn,
    swapOut,
    predicted: { stepUs: time.stepUs, tokens, tokensPerSecond: c.tokensPerSecond, time },
    candidates: [c],
  };
}
