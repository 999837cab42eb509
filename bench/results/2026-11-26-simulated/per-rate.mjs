// Per-rate table of a `tandem simulate --json` file (SIMULATED): each policy's whole-run tokens/s, * where it
// misses the p90 TPOT or TTFT target, and auto over the best fixed policy. usage: node per-rate.mjs after.json
import fs from 'node:fs';
const j = JSON.parse(fs.readFileSync(process.argv[2]));
for (const s of j.scenarios) {
  if (s.skipped) continue;
  console.log(`# ${s.hardware.id} ${s.model.id} slo ${(s.tpotSloUs/1000).toFixed(1)}`);
  for (const rate of s.rates) {
    const rs = s.runs.filter((r) => r.ratePerSecond === rate);
    const by = Object.fromEntries(rs.map((r) => [r.policy, r]));
    const ok = (r) => r.tpotUs.p90 <= s.tpotSloUs && r.ttftUs.p90 <= s.ttftSloUs ? '' : '*';
    const fixed = ['gpu-only', 'pipeline', 'overlap'].filter((p) => by[p]);
    const best = Math.max(...fixed.map((p) => by[p].throughput));
    const a = by.auto;
    console.log(rate, fixed.map((p) => `${p} ${by[p].throughput.toFixed(1)}${ok(by[p])}`).join(' | '), `| auto ${a.throughput.toFixed(1)}${ok(a)} | auto/bestfixed ${(a.throughput / best).toFixed(3)} auto/gpu ${(a.throughput / by['gpu-only'].throughput).toFixed(3)}`);
  }
}
