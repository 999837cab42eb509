// The bench's reports: results.json (everything, for tools), results.md (the tables a
// person reads), machine.json, and SVG plots (tokens/s per system against the bandwidth
// floor; throughput against latency for the online sweeps), all in one folder.
import fs from 'node:fs';
import path from 'node:path';
import type { MachineInfo } from './machine.js';
import type { BenchPlan, BenchResult, OnlineSweep, SummaryRow } from './runner.js';
import { barChart, lineChart } from './svg.js';

export const REPORT_SCHEMA = 'tandem-bench/1';

export interface BenchReport extends BenchResult {
  schema: typeof REPORT_SCHEMA;
  tandemVersion: string;
  /** ISO times. */
  startedAt: string;
  finishedAt: string;
  durationS: number;
  /** The command line that produced it. */
  command: string;
  systems: { name: string; about: string; baseline: boolean }[];
  threads: number[];
  plan: BenchPlan;
  machine: MachineInfo;
}

const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** A number for a table: '-' for missing, 3 significant digits otherwise (integers kept whole). */
export function fmt(v: number | undefined, digits = 3): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  if (Math.abs(v) >= 10 ** digits) return v.toFixed(0);
  return String(Number(v.toPrecision(digits)));
}

const pct = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '-' : `${(v * 100).toFixed(0)}%`);

/** A markdown table; cells are escaped for pipes. */
export function markdownTable(header: string[], rows: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  return [
    `| ${header.map(esc).join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

/** A file name from any label. */
export function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '') || 'x';
}

function machineSection(m: MachineInfo): string {
  const rows = [
    ['CPU', `${m.cpuModel}${m.virtualized ? ' (virtual machine)' : ''}`],
    ['cores', `${m.physicalCores} physical, ${m.logicalCpus} logical`],
    ['ISA', m.isa.join(' ') || '-'],
    ['last-level cache', m.llc ?? '-'],
    ['memory', gb(m.memoryBytes)],
    ['read bandwidth (best of the measurements)', m.bandwidth.map((b) => `${(b.bytesPerSecond / 1e9).toFixed(1)} GB/s at ${b.threads} thread${b.threads > 1 ? 's' : ''} (${b.samples.map((v) => (v / 1e9).toFixed(1)).join(', ')})`).join('; ')],
    ['GPU', m.gpus.length > 0 ? m.gpus.map((g) => `${g.name}, driver ${g.driver}, ${gb(g.memoryBytes)}`).join('; ') : 'none'],
    ['OS / Node', `${m.os} / ${m.node}`],
  ];
  return markdownTable(['', ''], rows);
}

function resultRows(rows: SummaryRow[]): string[][] {
  return rows.map((r) => [
    r.workload,
    String(r.threads),
    r.system,
    `${fmt(r.value)} ${r.metric}`,
    `${fmt(r.min)}-${fmt(r.max)} (${r.runs})`,
    r.ratio !== undefined ? `${fmt(r.ratio)}x` : '-',
    fmt(r.floorTokPerS),
    pct(r.floorFraction),
    fmt(r.ttftP50Ms),
    fmt(r.tpotP50Ms),
    r.peakDeviceBytes !== undefined ? `${mib(r.peakRssBytes)} + ${mib(r.peakDeviceBytes)} on the device` : mib(r.peakRssBytes),
    `${r.loadWarnings}/${r.runs} (${r.otherCpus.toFixed(2)} CPUs)`,
  ]);
}

function sweepRows(sweeps: OnlineSweep[]): string[][] {
  const rows: string[][] = [];
  for (const s of sweeps) {
    for (const p of s.points) {
      rows.push([
        s.model,
        String(s.threads),
        s.lengths,
        s.system,
        fmt(p.rate),
        fmt(p.outputTokPerS),
        `${fmt(p.ttftMs.p50)} / ${fmt(p.ttftMs.p90)} / ${fmt(p.ttftMs.p99)}`,
        `${fmt(p.tpotMs.p50)} / ${fmt(p.tpotMs.p90)} / ${fmt(p.tpotMs.p99)}`,
        `${fmt(p.e2eMs.p50)} / ${fmt(p.e2eMs.p90)} / ${fmt(p.e2eMs.p99)}`,
        pct(p.sloAttainment),
        fmt(p.goodputRps),
      ]);
    }
  }
  return rows;
}

/** The markdown report; `plots` are the SVG files written beside it. */
export function markdownReport(r: BenchReport, plots: string[] = []): string {
  const out: string[] = [];
  const baseline = r.systems.find((s) => s.baseline)?.name;
  out.push(`# tandem bench, ${r.startedAt.slice(0, 10)}`, '');
  out.push(`\`${r.command}\` (tandem ${r.tandemVersion}, ${fmt(r.durationS / 60)} min)`, '');
  out.push(`Systems: ${r.systems.map((s) => `**${s.name}** (${s.about})`).join('; ')}.`, '');
  out.push('## Machine', '', machineSection(r.machine), '');
  if (r.warnings.length > 0) {
    out.push('## Warnings', '', ...r.warnings.map((w) => `- ${w}`), '');
  }
  out.push('## Models', '');
  out.push(
    markdownTable(
      ['model', 'architecture', 'parameters', 'types (by bytes)', 'weights', 'read per decode token', 'floor at 1 thread'],
      r.models.map((m) => {
        const bw1 = r.machine.bandwidth.find((b) => b.threads === 1);
        return [
          m.label,
          m.architecture,
          `${fmt(m.parameterCount / 1e6)}M`,
          m.types,
          mib(m.weightBytes),
          mib(m.decode.bytesPerToken) + (m.decode.nExpert > 0 ? ` (${m.decode.nExpertUsed} of ${m.decode.nExpert} experts)` : ''),
          bw1 ? `${fmt(bw1.bytesPerSecond / m.decode.bytesPerToken)} tok/s` : '-',
        ];
      }),
    ),
    '',
  );
  // Reports from before workload descriptions were recorded have none.
  const workloads = Object.entries(r.workloads ?? {});
  if (workloads.length > 0) {
    out.push('## Workloads', '', ...workloads.map(([key, about]) => `- **${key}**: ${about}`), '');
  }
  out.push('## Results', '');
  out.push(
    `Medians over repeats; the ratio is the median over repeats of this system's value over ${baseline ?? 'the baseline'}'s in the same repeat (above 1: faster). ` +
      'pp: prompt tokens over the time to the first token (one sampled token included). tg: tokens after the first over the time they took. ' +
      'parallel: tokens of all sequences while every one of them was decoding, over that window. ' +
      'The floor is the decode rate the measured read bandwidth allows for the bytes a step reads (weights, active experts only, KV cache at the mean context); ' +
      'for parallel runs it assumes one pass over the weights per step. Peak RSS counts every system loaded in the process; with a GPU, the device memory in use is added. ' +
      "'Runs under load' counts runs during which other processes used more than 10% of the machine, with the mean CPUs they kept busy.",
    '',
  );
  for (const model of r.models) {
    const rows = r.summary.filter((s) => s.model === model.label);
    if (rows.length === 0) continue;
    out.push(`### ${model.label}`, '');
    out.push(
      markdownTable(
        ['workload', 'threads', 'system', 'median', 'min-max (runs)', `vs ${baseline ?? 'baseline'}`, 'floor tok/s', 'of floor', 'TTFT p50 ms', 'TPOT p50 ms', 'peak RSS', 'runs under load (others\' mean CPUs)'],
        resultRows(rows),
      ),
      '',
    );
  }
  if (r.sweeps.length > 0) {
    out.push('## Online serving', '');
    out.push(`SLO: TTFT ≤ ${r.plan.slo.ttftMs} ms and TPOT ≤ ${r.plan.slo.tpotMs} ms. Latencies in ms as p50 / p90 / p99.`, '');
    out.push(
      markdownTable(
        ['model', 'threads', 'lengths', 'system', 'offered req/s', 'output tok/s', 'TTFT', 'TPOT', 'end to end', 'within SLO', 'goodput req/s'],
        sweepRows(r.sweeps),
      ),
      '',
    );
    out.push(
      markdownTable(
        ['model', 'threads', 'lengths', 'system', 'highest rate with ≥90% within SLO'],
        r.sweeps.map((s) => [s.model, String(s.threads), s.lengths, s.system, `${fmt(s.maxRateAtSlo)} req/s`]),
      ),
      '',
    );
  }
  if (plots.length > 0) {
    out.push('## Plots', '', ...plots.map((p) => `![${p}](${p})`), '');
  }
  out.push('## Loads', '');
  out.push(
    markdownTable(
      ['model', 'system', 'threads', 'sequences', 'context', 'load s', 'RSS added', 'details'],
      r.loads.map((l) => [
        l.model,
        l.system,
        String(l.threads),
        String(l.config.maxSequences),
        String(l.config.contextSize),
        l.error ? 'failed' : fmt(l.loadS),
        l.error ? '-' : mib(l.rssDeltaBytes),
        l.error ?? Object.entries(l.details).map(([k, v]) => `${k}=${v}`).join(' '),
      ]),
    ),
    '',
  );
  return out.join('\n');
}

/** SVG plots of a report, by file name. */
export function plotReport(r: BenchReport): Map<string, string> {
  const files = new Map<string, string>();
  const systems = r.systems.map((s) => s.name);
  for (const model of r.models) {
    const rows = r.summary.filter((s) => s.model === model.label);
    for (const [suffix, kinds, label] of [
      ['prompt', ['pp'], 'prompt tokens/s'],
      ['decode', ['tg', 'parallel'], 'decode tokens/s (all sequences)'],
    ] as const) {
      const mine = rows.filter((s) => (kinds as readonly string[]).includes(s.kind));
      if (mine.length === 0) continue;
      const groups = [...new Set(mine.map((s) => `${s.workload} ${s.threads}t`))];
      const at = (g: string, sys: string) => mine.find((s) => `${s.workload} ${s.threads}t` === g && s.system === sys);
      const floors = groups.map((g) => mine.find((s) => `${s.workload} ${s.threads}t` === g)?.floorTokPerS);
      files.set(
        `${slug(model.label)}-${suffix}.svg`,
        barChart({
          title: `${model.label}: ${label}`,
          yLabel: 'tokens/s',
          groups,
          series: systems.map((name) => ({ name, values: groups.map((g) => at(g, name)?.value) })),
          marks: floors.some((f) => f !== undefined) ? { name: 'bandwidth floor', values: floors } : undefined,
        }),
      );
    }
  }
  const sweepKeys = [...new Set(r.sweeps.map((s) => `${s.model}|${s.threads}|${s.lengths}`))];
  for (const key of sweepKeys) {
    const [model, threads, lengths] = key.split('|');
    const mine = r.sweeps.filter((s) => `${s.model}|${s.threads}|${s.lengths}` === key);
    for (const [suffix, label, pick] of [
      ['tpot', 'TPOT p50 (ms)', (p: OnlineSweep['points'][number]) => p.tpotMs.p50],
      ['ttft', 'TTFT p90 (ms)', (p: OnlineSweep['points'][number]) => p.ttftMs.p90],
    ] as const) {
      files.set(
        `${slug(`${model}-${threads}t-${lengths}`)}-${suffix}.svg`,
        lineChart({
          title: `${model}, ${threads} thread${threads === '1' ? '' : 's'}, ${lengths} lengths: throughput vs latency`,
          xLabel: 'output tokens/s',
          yLabel: label,
          series: mine.map((s) => ({
            name: s.system,
            points: s.points.map((p) => ({ x: p.outputTokPerS, y: pick(p), label: `${p.rate} req/s offered` })),
          })),
        }),
      );
    }
  }
  return files;
}

/** Writes results.json, machine.json, results.md and the plots into `dir`; returns the files written. */
export function writeReports(r: BenchReport, dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  const write = (name: string, text: string) => {
    fs.writeFileSync(path.join(dir, name), text);
    written.push(path.join(dir, name));
  };
  // NaN (a metric with no data) becomes null in JSON.
  write('results.json', JSON.stringify(r, null, 2) + '\n');
  write('machine.json', JSON.stringify(r.machine, null, 2) + '\n');
  const plots = plotReport(r);
  for (const [name, svg] of plots) write(name, svg);
  write('results.md', markdownReport(r, [...plots.keys()]));
  return written;
}
