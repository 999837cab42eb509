// `tandem experts`: measures MoE decode and prefill with routed experts offloaded, on the real
// engine, under each expert policy at one device memory budget (issue 9's bench item): tokens/s,
// expert cache hit rate and bytes moved per token, the dynamic choice against llama.cpp's static
// strategies run as tandem policies on the same file and budget.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { Command } from '../../cli/command.js';
import { TandemError } from '../../native/errors.js';
import { physicalCoreCount } from '../../api/threads.js';
import { ExpertScoring, EXPERT_SCORINGS } from './cache.js';
import { crossoverFormula } from './cost.js';
import { measureExpertOffload, type ExpertMeasurement, type NativeExpertPolicy } from './native.js';

const HELP = `usage: tandem experts MODEL.gguf [options]

Loads a MoE model once per policy with routed experts in host RAM and a device expert cache
in the budget left after the dense weights, prefills --batch prompts, decodes greedily, and
reports decode and prefill tokens/s, cache hit rate (of active experts, and of routed rows)
and bytes moved per token, and the
prefill's expert copies: slab MiB streamed through the double buffer, and how many of them
were queued ahead of device compute (overlap: overlapped/streamed), and the decode's
prefetches that were used before eviction (pf used: used/prefetched).

      --device D            gpu (default) or cpu-standin (the CPU posing as the device; not GPU numbers)
      --budget-mib N        device memory for weights, MiB (default: all that fits)
      --policies LIST       dynamic, cpu-all, cpu-first-layers:N, stacks (default dynamic,cpu-all)
      --n-star N            copy a missing expert from N routed rows (default: the makespan rule with
                            expert costs calibrated on the loaded model; --link-gbs/--cpu-gflops give n* instead)
      --cost A,B,C,D,E,F    makespan rule instead of n*: cpuFixedUs,cpuUsPerToken,gpuFixedUs,gpuUsPerToken,linkLatencyUs,linkBytesPerUs
      --link-gbs G          host->device bandwidth, GB/s, for n* = (bits/8)·F_cpu/(2·B_link)
      --cpu-gflops G        CPU expert FLOP/s, GFLOP/s, for n*
      --bits B              bits per expert weight for n* (default 4.5)
      --scoring S           ${EXPERT_SCORINGS.join(' or ')} (default decayed-probability)
      --admit N             CPU-run experts per layer and step that may displace a lower-scored one (default 1)
      --prefetch N|idle     next-layer experts copied ahead per layer by score: N a layer, or 'idle':
                            as many as the calibrated costs say copy while the link would idle
                            (default: idle with calibrated costs, else 0)
      --admit-margin F      ...only when its score exceeds the resident one's times F (default 2)
      --pregate             order the prefetch by the next layer's router on this layer's hidden
                            state first (loadModel's expertPrefetch: 'router')
      --max-slots N         at most N expert cache slots (default: all the budget holds)
      --cpu-weights W       CPU experts read the repacked file 'mapping' (default) or the pinned 'slabs' (half the host RAM)
      --threads N           CPU threads (default: physical cores)
      --batch N             sequences decoded together (default 1)
      --prompt N            prompt tokens per sequence (default 128)
      --steps N             measured decode steps (default 32)
      --warmup N            decode steps before measuring (default 4)
      --json FILE           also write the results as JSON
  -h, --help`;

const OPTIONS = {
  device: { type: 'string' },
  'budget-mib': { type: 'string' },
  policies: { type: 'string' },
  'n-star': { type: 'string' },
  cost: { type: 'string' },
  'link-gbs': { type: 'string' },
  'cpu-gflops': { type: 'string' },
  bits: { type: 'string' },
  scoring: { type: 'string' },
  admit: { type: 'string' },
  'admit-margin': { type: 'string' },
  prefetch: { type: 'string' },
  pregate: { type: 'boolean' },
  'max-slots': { type: 'string' },
  'cpu-weights': { type: 'string' },
  threads: { type: 'string' },
  batch: { type: 'string' },
  prompt: { type: 'string' },
  steps: { type: 'string' },
  warmup: { type: 'string' },
  json: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function bad(msg: string): never {
  throw new TandemError('TDM_BAD_ARGUMENT', `tandem experts: ${msg}`);
}

function int(name: string, v: string | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) bad(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

function pos(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!(n > 0) || !Number.isFinite(n)) bad(`--${name} must be a positive number, got '${v}'`);
  return n;
}

function row(r: ExpertMeasurement): string {
  const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);
  const kib = (b: number) => (b / 1024).toFixed(1);
  return [
    r.policy.padEnd(20), String(r.slots).padStart(6), (r.deviceBytes / 2 ** 20).toFixed(0).padStart(9),
    r.decodeTokensPerS.toFixed(2).padStart(10), r.prefillTokensPerS.toFixed(1).padStart(11), pct(r.hitRate).padStart(7), pct(r.rowHitRate).padStart(9),
    pct(r.cpuExpertShare).padStart(8), kib(r.copyBytesPerToken).padStart(10), kib(r.activationBytesPerToken).padStart(10),
    (r.prefill ? (r.prefill.prefillCopyBytes / 2 ** 20).toFixed(1) : '-').padStart(11),
    (r.prefill ? `${r.prefill.overlappedCopies}/${r.prefill.prefillCopies}` : '-').padStart(9),
    (r.decode ? `${r.decode.prefetchHits}/${r.decode.prefetches}` : '-').padStart(9),
  ].join(' ');
}

export const command: Command = {
  summary: 'measure MoE decode with experts offloaded under each expert policy',
  async run(argv) {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const model = positionals[0];
    if (!model || positionals.length > 1) bad('give one model file');
    const device = values.device ?? 'gpu';
    if (device !== 'gpu' && device !== 'cpu-standin') bad(`--device must be gpu or cpu-standin, got '${device}'`);
    const budget = pos('budget-mib', values['budget-mib']);
    const policies = (values.policies ?? 'dynamic,cpu-all').split(',') as NativeExpertPolicy[];
    const cpuWeights = values['cpu-weights'] ?? 'mapping';
    if (cpuWeights !== 'slabs' && cpuWeights !== 'mapping') bad(`--cpu-weights must be slabs or mapping, got '${cpuWeights}'`);
    const scoring = (values.scoring ?? ExpertScoring.DecayedProbability) as ExpertScoring;
    if (!EXPERT_SCORINGS.includes(scoring)) bad(`--scoring must be ${EXPERT_SCORINGS.join(' or ')}`);
    let nStar: number | undefined;
    if (values['n-star'] !== undefined) nStar = values['n-star'] === 'Infinity' ? Infinity : int('n-star', values['n-star'], 1, 0);
    const link = pos('link-gbs', values['link-gbs']);
    const cpu = pos('cpu-gflops', values['cpu-gflops']);
    if (nStar === undefined && link !== undefined && cpu !== undefined) {
      nStar = Math.max(1, Math.ceil(crossoverFormula(pos('bits', values.bits) ?? 4.5, cpu * 1e9, link * 1e9)));
    }
    let linearCost: { cpuFixedUs: number; cpuUsPerToken: number; gpuFixedUs: number; gpuUsPerToken: number; linkLatencyUs: number; linkBytesPerUs: number } | undefined;
    if (values.cost !== undefined) {
      const c = values.cost.split(',').map(Number);
      if (c.length !== 6 || c.some((x) => !Number.isFinite(x) || x < 0) || !(c[5]! > 0)) bad(`--cost needs six non-negative numbers (the last positive), got '${values.cost}'`);
      linearCost = { cpuFixedUs: c[0]!, cpuUsPerToken: c[1]!, gpuFixedUs: c[2]!, gpuUsPerToken: c[3]!, linkLatencyUs: c[4]!, linkBytesPerUs: c[5]! };
    }
    const base = {
      device: device as 'gpu' | 'cpu-standin',
      threads: int('threads', values.threads, physicalCoreCount()),
      batch: int('batch', values.batch, 1),
      promptTokens: int('prompt', values.prompt, 128),
      decodeSteps: int('steps', values.steps, 32),
      warmupSteps: int('warmup', values.warmup, 4, 0),
      scoring,
      admitPerLayer: int('admit', values.admit, 1, 0),
      prefetchPerLayer: values.prefetch === 'idle' ? 0 : int('prefetch', values.prefetch, 0, 0),
      prefetchWhenIdle: values.prefetch === 'idle' || (values.prefetch === undefined && nStar === undefined && linearCost === undefined),
      cpuWeights: cpuWeights as 'slabs' | 'mapping',
      ...(values.pregate ? { pregate: true } : {}),
      ...(values['admit-margin'] === undefined ? {} : { admitMargin: pos('admit-margin', values['admit-margin']) }),
      ...(values['max-slots'] === undefined ? {} : { maxSlots: int('max-slots', values['max-slots'], 0, 0) }),
      ...(budget === undefined ? {} : { deviceWeightBytes: Math.floor(budget * 2 ** 20) }),
      ...(nStar === undefined ? {} : { nStar }),
      ...(linearCost === undefined ? {} : { linearCost }),
      calibrate: nStar === undefined && linearCost === undefined,
    };
    const results: ExpertMeasurement[] = [];
    console.log(`${'policy'.padEnd(20)} ${'slots'.padStart(6)} ${'dev MiB'.padStart(9)} ${'decode t/s'.padStart(10)} ${'prefill t/s'.padStart(11)} ${'hits'.padStart(7)} ${'row hits'.padStart(9)} ${'cpu exp'.padStart(8)} ${'copy KiB/t'.padStart(10)} ${'act KiB/t'.padStart(10)} ${'pf copy MiB'.padStart(11)} ${'overlap'.padStart(9)} ${'pf used'.padStart(9)}`);
    for (const policy of policies) {
      const r = await measureExpertOffload(model, { ...base, policy });
      results.push(r);
      console.log(row(r));
    }
    if (results[0]) console.log(`device: ${results[0].device} ${results[0].deviceName}; n* = ${results[0].nStar === null ? 'none (the makespan rule)' : String(results[0].nStar)}${device === 'cpu-standin' ? ' (stand-in: CPU numbers, not GPU; its copies are memcpys, not PCIe)' : ''}`);
    for (const r of results) {
      if (!r.calibration) continue;
      const c = r.calibration.cost;
      const err = r.calibration.errors.map((e) => `${e.side}@${e.rows} ${(100 * e.relError).toFixed(0)}%`).join(', ');
      console.log(`${r.policy}: calibrated expert costs: CPU ${c.cpuFixedUs.toFixed(1)} + ${c.cpuUsPerToken.toFixed(2)}/row µs, call ${(c.cpuCallUs ?? 0).toFixed(1)} µs, ${r.calibration.deviceNote ? 'device not timed' : `device ${c.gpuFixedUs.toFixed(1)} + ${c.gpuUsPerToken.toFixed(2)}/row µs`}, link ${c.linkLatencyUs.toFixed(1)} µs + ${(c.linkBytesPerUs / 1e3).toFixed(2)} GB/s; held-out error ${err}${r.calibration.deviceNote ? ` (${r.calibration.deviceNote})` : ''}`);
    }
    for (const r of results) {
      const k = r.decodeCpuCalls;
      if (k) console.log(`${r.policy}: ${k.calls} CPU expert calls in the measured decode steps, ${k.expertsPerCall.toFixed(2)} experts and ${k.rowsPerCall.toFixed(1)} rows each, ${k.meanUs.toFixed(0)} µs each`);
      if (r.refit) console.log(`${r.policy}: online refit of the CPU costs: call ${r.refit.callUs.toFixed(1)} µs, scale ${r.refit.scale.toFixed(2)} of the calibrated line (${r.refit.calls} calls, ${r.refit.updates} updates)`);
    }
    if (values.json) fs.writeFileSync(values.json, JSON.stringify({ model, options: base, results }, null, 2));
    return 0;
  },
};
