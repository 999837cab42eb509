// A hand-made cost model for scheduler tests that run no native code: device work flat per
// step up to 64 tokens, CPU attention `cpuPerToken` µs per cached token (a fast or a slow CPU).
import type { CostModel } from '../../src/sched/cost-model.js';

export function flatDeviceCost(cpuPerToken: number, kvBlockBytes: number): CostModel {
  return {
    shape: { nLayer: 1, qkvBytesPerToken: 0, outBytesPerToken: 0, kvBlockBytes },
    linearUs: (n) => (n <= 0 ? 0 : 10_000 + Math.max(0, n - 64) * 50),
    deviceAttentionUs: (r, c) => (r > 0 ? r * (c + 1) * 0.1 : 0),
    prefillAttentionUs: (n, c) => n * (c + n / 2) * 0.001,
    cpuAttentionUs: (r, c) => (r > 0 ? r * (c + 1) * cpuPerToken : 0),
    cpuPrefillAttentionUs: (n, c) => n * (c + n / 2) * cpuPerToken * 0.01,
    copyUs: (b) => (b > 0 ? 10 + b / 1000 : 0),
  };
}
