// The report writers: the SVG plots are well-formed XML with escaped text, the markdown
// tables have as many cells as headers, and results.json round-trips (NaN as null).
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { barChart, escapeXml, lineChart, niceTicks } from '../../src/bench/svg.js';
import { markdownReport, markdownTable, plotReport, REPORT_SCHEMA, writeReports, type BenchReport } from '../../src/bench/report.js';
import type { MachineInfo } from '../../src/bench/machine.js';
import type { RunRecord } from '../../src/bench/runner.js';
import { summarize } from '../../src/bench/stats.js';

/**
 * A strict enough XML check for what the writer emits: every tag closes in order, every
 * attribute is quoted, no raw '<' or unescaped '&' in text, one root element.
 */
function checkXml(xml: string): string | undefined {
  const stack: string[] = [];
  let roots = 0;
  const re = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<!--[\s\S]*?-->|<\?[\s\S]*?\?>|([^<]+)|(<)/g;
  for (const m of xml.matchAll(re)) {
    const [, close, name, , selfClose, text, stray] = m;
    if (stray) return `stray '<' at ${m.index}`;
    if (text !== undefined) {
      if (/&(?!(amp|lt|gt|quot|apos|#\d+);)/.test(text)) return `unescaped '&' in text at ${m.index}`;
      if (stack.length === 0 && text.trim()) return `text outside the root at ${m.index}`;
      continue;
    }
    if (!name) continue;
    if (close) {
      if (stack.pop() !== name) return `</${name}> does not close the open element at ${m.index}`;
    } else {
      if (stack.length === 0) roots++;
      if (!selfClose) stack.push(name);
    }
  }
  if (stack.length > 0) return `unclosed <${stack.at(-1)}>`;
  if (roots !== 1) return `${roots} root elements`;
  const attrs = xml.match(/<[^>]+>/g) ?? [];
  for (const tag of attrs) {
    if (/=\s*[^"\s>]/.test(tag.replace(/="[^"]*"/g, ''))) return `unquoted attribute in ${tag}`;
  }
  return undefined;
}

t.test('the XML checker itself catches broken documents', async (t) => {
  t.equal(checkXml('<svg><g><rect x="1"/></g></svg>'), undefined);
  t.match(checkXml('<svg><g></svg>'), /does not close/);
  t.match(checkXml('<svg>a & b</svg>'), /unescaped/);
  t.match(checkXml('<svg><text>1 < 2</text></svg>'), /stray/);
  t.match(checkXml('<svg/><svg/>'), /2 root/);
});

t.test('line and bar charts are well-formed SVG with escaped labels', async (t) => {
  const line = lineChart({
    title: 'a <title> & "quotes"',
    xLabel: 'tok/s',
    yLabel: 'ms',
    series: [
      { name: 'tandem', points: [{ x: 1, y: 10, label: '1 req/s' }, { x: 2, y: 12 }, { x: 3, y: NaN }] },
      { name: "llama.cpp's", points: [{ x: 1.5, y: 20 }] },
    ],
  });
  t.equal(checkXml(line), undefined, 'line chart well-formed');
  t.match(line, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.match(line, /a &lt;title&gt; &amp; &quot;quotes&quot;/);
  t.match(line, /llama\.cpp&apos;s/);
  t.equal((line.match(/<polyline/g) ?? []).length, 1, 'a line only where a series has two finite points');
  t.equal((line.match(/<circle/g) ?? []).length, 3, 'a marker per finite point');

  const bars = barChart({
    title: 'tok/s',
    yLabel: 'tokens/s',
    groups: ['tg128 1t', 'tg128 2t'],
    series: [
      { name: 'tandem', values: [10, 20] },
      { name: 'llama.cpp', values: [8, undefined] },
    ],
    marks: { name: 'floor', values: [30, 40] },
  });
  t.equal(checkXml(bars), undefined, 'bar chart well-formed');
  t.equal((bars.match(/<rect [^>]*fill="#(?!ffffff)/g) ?? []).length, 3 + 2, 'three bars and two legend swatches');
  t.equal((bars.match(/stroke-dasharray/g) ?? []).length, 3, 'two floor marks and a legend line');
  t.equal(checkXml(barChart({ title: 'empty', yLabel: 'y', groups: [], series: [] })), undefined, 'no data still draws axes');
  t.equal(escapeXml(`<&>"'`), '&lt;&amp;&gt;&quot;&apos;');
});

t.test('ticks are round numbers that cover the data', async (t) => {
  t.same(niceTicks(0, 10), [0, 2, 4, 6, 8, 10]);
  t.same(niceTicks(0, 0.9), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  const odd = niceTicks(3, 47);
  t.ok(odd[0]! <= 3 && odd.at(-1)! >= 47);
  t.same(niceTicks(5, 5).length > 1, true, 'a single value still gets an axis');
});

const machine: MachineInfo = {
  hostname: 'h', os: 'Linux', node: 'v20', cpuModel: 'Test CPU | with pipe', logicalCpus: 2, physicalCores: 2, isa: ['avx2'],
  virtualized: true, llc: '32 MiB', memoryBytes: 8e9, gpus: [], bandwidth: [{ threads: 1, bytesPerSecond: 1e10, samples: [9e9, 1e10], bytes: 1 << 28, passes: 3 }],
};

function run(system: string, workload: string, kind: RunRecord['kind'], value: number, extra: Partial<RunRecord> = {}): RunRecord {
  const d = summarize([10, 20]);
  return {
    model: 'm', system, threads: 1, workload, kind, repeat: 0, order: 0, value,
    serving: { requests: 1, durationS: 1, outputTokPerS: value, totalTokPerS: value, requestsPerS: 1, ttftMs: d, tpotMs: d, e2eMs: d, sloAttainment: 1, goodputRps: 1 },
    peakRssBytes: 1e8, peakRssSinceStart: false,
    load: { wallS: 1, cpus: 2, ownCpuS: 1, otherCpuS: 0, otherCpus: 0, stealS: 0, loadAvg1: 0, measured: true },
    ...extra,
  };
}

function fakeReport(): BenchReport {
  const point = { rate: 1, outputTokPerS: 50, requestsPerS: 1, ttftMs: { p50: 1, p90: 2, p99: 3 }, tpotMs: { p50: 4, p90: 5, p99: 6 }, e2eMs: { p50: 7, p90: 8, p99: NaN }, sloAttainment: 1, goodputRps: 1 };
  return {
    schema: REPORT_SCHEMA, tandemVersion: '0.0.0', startedAt: '2026-01-02T03:04:05.000Z', finishedAt: '2026-01-02T03:05:05.000Z', durationS: 60,
    command: 'tandem bench --quick', systems: [{ name: 'tandem', about: 'x', baseline: false }, { name: 'llama.cpp', about: 'y', baseline: true }],
    threads: [1],
    plan: { pp: [8], tg: [8], tgPrompts: [4], parallel: [2], parallelPrompt: 4, parallelOutput: 4, online: undefined, repeats: 1, onlineRepeats: 1, batchTokens: 64, slo: { ttftMs: 100, tpotMs: 10 }, seed: 1 },
    machine,
    models: [{
      path: '/m.gguf', label: 'm', name: 'm', architecture: 'llama', parameterCount: 1e6, weightBytes: 2e6, types: 'q8_0 100%', nVocab: 10, nCtxTrain: 64, bosId: 1, synthetic: undefined,
      decode: { denseBytes: 1e6, expertBytes: 0, activeExpertBytes: 0, embeddingBytes: 100, tiedEmbeddings: false, bytesPerToken: 1e6 + 100, kvBytesPerContextToken: 64, nExpert: 0, nExpertUsed: 0 },
    }],
    workloads: { tg8: 'decode 8 tokens after 4' },
    loads: [{ model: 'm', system: 'tandem', threads: 1, config: { threads: 1, maxSequences: 1, contextSize: 64, batchTokens: 64 }, loadS: 0.1, rssDeltaBytes: 1e6, details: { backends: 'cpu' } }],
    runs: [run('tandem', 'tg8', 'tg', 20), run('llama.cpp', 'tg8', 'tg', 10, { warning: 'busy' }), run('tandem', 'pp8', 'pp', NaN, { error: 'boom' })],
    summary: [
      { model: 'm', threads: 1, workload: 'tg8', kind: 'tg', system: 'tandem', metric: 'decode tok/s', value: 20, min: 20, max: 20, runs: 1, ratio: 2, baseline: 'llama.cpp', floorTokPerS: 40, floorFraction: 0.5, ttftP50Ms: 1, tpotP50Ms: 2, e2eP90Ms: 3, peakRssBytes: 1e8, loadWarnings: 0, otherCpus: 0.01 },
      { model: 'm', threads: 1, workload: 'tg8', kind: 'tg', system: 'llama.cpp', metric: 'decode tok/s', value: 10, min: 10, max: 10, runs: 1, floorTokPerS: 40, floorFraction: 0.25, ttftP50Ms: 1, tpotP50Ms: NaN, e2eP90Ms: 3, peakRssBytes: 1e8, loadWarnings: 1, otherCpus: 0.5 },
    ],
    sweeps: [
      { model: 'm', threads: 1, lengths: 'chat', system: 'tandem', points: [point, { ...point, rate: 2, outputTokPerS: 80 }], maxRateAtSlo: 2 },
      { model: 'm', threads: 1, lengths: 'chat', system: 'llama.cpp', points: [point], maxRateAtSlo: 1 },
    ],
    warnings: ['1 of 3 runs shared the CPU'],
  };
}

t.test('markdown tables: one cell per header in every row, pipes escaped', async (t) => {
  const table = markdownTable(['a', 'b'], [['1', 'x|y'], ['2', '3']]);
  t.equal(table.split('\n').length, 4);
  t.match(table, /x\\\|y/);
  const md = markdownReport(fakeReport(), ['m-decode.svg']);
  // Each table's rows have the header's cell count.
  const tables = md.split('\n\n').filter((b) => b.startsWith('|'));
  t.ok(tables.length >= 5, 'machine, models, results, online, loads');
  for (const table of tables) {
    const counts = table.trim().split('\n').map((l) => l.replace(/\\\|/g, '').split('|').length);
    t.ok(counts.every((c) => c === counts[0]), `every row of a table has ${counts[0]! - 2} cells`);
  }
  t.match(md, /Test CPU \\\| with pipe/);
  t.match(md, /\| tg8 \| 1 \| tandem \| 20 decode tok\/s \| 20-20 \(1\) \| 2x \| 40 \| 50% \|/);
  t.match(md, /## Warnings\n\n- 1 of 3 runs shared the CPU/);
  t.match(md, /- \*\*tg8\*\*: decode 8 tokens after 4/);
  t.match(md, /!\[m-decode\.svg\]\(m-decode\.svg\)/);
  t.match(md, /highest rate with ≥90% within SLO/);
  const gpu = fakeReport();
  gpu.summary[0] = { ...gpu.summary[0]!, peakDeviceBytes: 3 * 2 ** 30 };
  t.match(markdownReport(gpu, []), /\| 95 MiB \+ 3072 MiB on the device \|/, 'device memory beside host RSS where a GPU ran');
});

t.test('writeReports writes parseable JSON, the markdown and well-formed plots', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-bench-report-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const report = fakeReport();
  const files = writeReports(report, dir);
  const names = files.map((f) => path.basename(f)).sort();
  t.same(names, ['m-1t-chat-tpot.svg', 'm-1t-chat-ttft.svg', 'm-decode.svg', 'machine.json', 'results.json', 'results.md'].sort());
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
  t.equal(json.schema, REPORT_SCHEMA);
  t.equal(json.runs.length, 3);
  t.equal(json.runs[2].value, null, 'NaN is written as null');
  t.equal(json.sweeps[0].points[0].e2eMs.p99, null);
  t.same(JSON.parse(fs.readFileSync(path.join(dir, 'machine.json'), 'utf8')), report.machine);
  for (const f of files.filter((f) => f.endsWith('.svg'))) t.equal(checkXml(fs.readFileSync(f, 'utf8')), undefined, `${path.basename(f)} is well-formed`);
  t.equal(plotReport(report).size, 3);
});
