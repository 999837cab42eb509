// Text and JSON reports of simulated settings. Every table says SIMULATED: these numbers come
// from a virtual clock driven by datasheet rooflines, never from a GPU.
import type { ScenarioResult } from './scenario.js';

const ms = (us: number) => (Number.isFinite(us) ? (us / 1000).toFixed(1) : '-');

export const SIMULATED_BANNER =
  'SIMULATED: the real tandem scheduler and policies on a virtual clock; step times from datasheet rooflines ' +
  '(src/sched/hardware.ts), CPU attention scaled from this machine. No GPU was used.';

export function formatScenario(s: ScenarioResult): string {
  const lines: string[] = [];
  lines.push(`## ${s.hardware.id}: ${s.hardware.label}, ${s.model.label} [SIMULATED]`);
  lines.push('');
  if (s.skipped) {
    lines.push(`not run: ${s.skipped}`);
    return lines.join('\n');
  }
  const w = s.workload;
  lines.push(`workload: decode-heavy, prompt ${w.promptTokens[0]}-${w.promptTokens[1]} and output ${w.outputTokens[0]}-${w.outputTokens[1]} tokens, Poisson arrivals, ${w.requests} requests per run, seed ${w.seed}`);
  lines.push(`KV: ${s.kvBlocks.device} device blocks and ${s.kvBlocks.host} host blocks of ${s.blockTokens} tokens; CPU attention at ${(100 * s.cpuAttentionEfficiency).toFixed(0)}% of the host's ${(s.hardware.host.bandwidth / 1e9).toFixed(0)} GB/s; ${s.streamHostKv === false ? 'no host KV streamed to the device' : `auto may stream host KV to the device, ${s.streamBlocksMax} blocks a step at most (the executor's staging)`}`);
  lines.push(`equal latency: each policy at the highest rate it serves with p90 TPOT <= ${ms(s.tpotSloUs)} ms and p90 TTFT <= ${ms(s.ttftSloUs)} ms (auto is given the TPOT target)`);
  lines.push('');
  lines.push('| policy | rate (req/s) | throughput (tok/s, SIMULATED) | vs gpu-only |');
  lines.push('|---|---|---|---|');
  for (const e of s.equalLatency) {
    lines.push(`| ${e.policy} | ${e.ratePerSecond ?? 'none met the target'} | ${e.throughput.toFixed(1)} | ${Number.isFinite(e.vsGpuOnly) ? `${e.vsGpuOnly.toFixed(2)}x` : '-'} |`);
  }
  lines.push('');
  lines.push('| policy | rate | tok/s (SIMULATED): offered / while arriving / whole run | p50 / p90 TPOT ms | p90 TTFT ms | steps by strategy | sequence-steps streamed | deferrals | moves (demotions) | preemptions | step prediction error |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of s.runs) {
    const strategies = Object.entries(r.strategies).map(([k, n]) => `${k} ${n}`).join(', ');
    lines.push(
      `| ${r.policy} | ${r.ratePerSecond} | ${r.offeredThroughput.toFixed(1)} / ${r.windowThroughput.toFixed(1)} / ${r.throughput.toFixed(1)} | ${ms(r.tpotUs.p50)} / ${ms(r.tpotUs.p90)} | ${ms(r.ttftUs.p90)} | ${strategies} | ${r.streamed ?? 0} | ${r.deferrals} | ${r.moves} (${r.demotions}) | ${r.preemptions} | ${(100 * r.meanStepError).toFixed(1)}% |`,
    );
  }
  return lines.join('\n');
}

export function formatReport(scenarios: readonly ScenarioResult[], notes: readonly string[]): string {
  return [`# tandem simulate [SIMULATED]`, '', SIMULATED_BANNER, '', ...notes.map((n) => `- ${n}`), '', ...scenarios.map(formatScenario).flatMap((t) => [t, ''])].join('\n');
}
