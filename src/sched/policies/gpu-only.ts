// GPU-only (vLLM): every running sequence's KV on the device and its attention there. When
// the device tier cannot hold the step's growth, the newest tables are swapped out to host
// RAM (or dropped for recompute); swapped-out sequences wait, and come back oldest first
// before any new request is admitted.
import { admitInOrder, committedPrompt, tableBlocks, DEFAULT_DEVICE_HEADROOM, growth, makeDeviceRoom, predictFor, decisionTokens, candidate, type PolicyInput, type SeqDecision, type StepDecision } from '../policy.js';

export function gpuOnlyPolicy(input: PolicyInput): StepDecision {
  const { running, waiting, kv, cost } = input;
  const headroom = input.options?.deviceHeadroom ?? DEFAULT_DEVICE_HEADROOM;
  const swapOut = makeDeviceRoom(running, kv, true);
  const out = new Set(swapOut.map((s) => s.seqId));
  const onDevice = running.filter((r) => r.tier === 'device' && !out.has(r.seqId));
  const sequences: SeqDecision[] = onDevice.map((r) => ({ seqId: r.seqId, attention: 'gpu' }));
  const deferred = running.filter((r) => r.tier !== 'device' || out.has(r.seqId)).map((r) => r.seqId);

  // Swapped-out sequences return oldest first while the device has room; until all are back, no admission.
  const swapIn: number[] = [];
  let admit: StepDecision['admit'] = [];
  if (swapOut.length === 0) {
    let free = kv.device.numFree - growth(onDevice, 'device', kv) - committedPrompt(onDevice, 'device', kv) - Math.floor(headroom * kv.device.numBlocks);
    const swapped = running.filter((r) => r.tier === 'host').sort((a, b) => a.arrival - b.arrival);
    for (const r of swapped) {
      const need = Math.max(r.numBlocks, tableBlocks(kv, r.context, r.context + 1));
      if (need > free) break;
      swapIn.push(r.seqId);
      free -= need;
    }
    if (swapIn.length === swapped.length) {
      const reserved = growth(onDevice, 'device', kv) + committedPrompt(onDevice, 'device', kv) + swapped.reduce((n, r) => n + r.numBlocks, 0);
      admit = admitInOrder(waiting, kv, reserved, headroom, () => false);
    }
  }
  const byId = new Map(running.map((r) => [r.seqId, r]));
  const time = predictFor('gpu-only', sequences, byId, cost);
  const tokens = decisionTokens(sequences, byId);
  const c = candidate('gpu-only', 0, time, tokens, input.options?.tpotSloUs);
  return {
    policy: 'gpu-only',
    strategy: 'gpu-only',
    sequences,
    deferred,
    admit,
    swapIn,
    swapOut,
    predicted: { stepUs: time.stepUs, tokens, tokensPerSecond: c.tokensPerSecond, time },
    candidates: [c],
  };
}
