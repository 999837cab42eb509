// The GPU device check that bench/device/run.sh runs on the lent machine (../shared/device/README.md):
// the card, driver and date; every op case (test/backend/op-cases.ts) plus larger shapes on the
// GPU against the CPU reference; end-to-end logits of synthetic models (makeModel) with the
// executor with weights, KV and attention on each device against a CPU-only process; decode and
// prefill timings, GPU against CPU; and the strategies (gpu-only, overlap, pipeline) on a
// Llama-3-8B-shaped model under a capped device KV, all on the same machine in the same run.
// Writes results.json and results.md to --out. With no GPU it says why, writes that, and exits 0 (the dry run here).
// --simulate-gpu <backend id> --quick runs every section with a CPU backend standing in for the
// GPU and small shapes, to exercise this script where there is no GPU.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, type NativeBackendInfo, type NativeBackendOps } from '../../src/native/binding.js';
import { makeModel, type ModelSpec } from '../../src/model/synthetic.js';
import { REFERENCE_ID, WEIGHT_TYPES, checkCase, nmse, opCases, rand, type CaseResult, type OpCase } from '../../test/backend/op-cases.js';
import type { ChildReport, E2eMode } from './e2e-child.js';
import type { Regime, StrategyReport } from './strategy-child.js';
import { MATMUL_TOKENS, type KernelReport } from './kernels-child.js';
import { rowBytes } from '../../src/model/quant.js';
import type { PolicyRun, PolicyWorkload } from './policy-child.js';
import { EXPERT_RUN_POLICIES, type ExpertRun } from './experts-child.js';
import { crossoverFormula, EXPERT_ROOFLINE } from '../../src/sched/experts/cost.js';
import { readProfileTables, runReplay } from '../../src/sched/sim/replay.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const started = performance.now();
const elapsedS = () => (performance.now() - started) / 1000;
/** Sections after the op cases are skipped once the run has used this much time (device time is scarce). */
const BUDGET_S = Number(process.env.TANDEM_DEVICE_BUDGET_S ?? 420);
/** Layers of the Llama-3-8B-shaped model the strategies are timed on (of 32: the file must be written on the device in seconds). */
const BIG_LAYERS = 8;
/** The sections to run (TANDEM_DEVICE_SECTIONS, comma-separated; default all), so that a second device run can repeat only what needs it. */
const SECTIONS = ['ops', 'e2e', 'timing', 'kernels', 'strategies', 'policies', 'experts'] as const;
/** A raised matrix-vector row limit for the kernels section to try too (TANDEM_DEVICE_MMV_ALT; empty, the default: none). */
const MMV_ALT = process.env.TANDEM_DEVICE_MMV_ALT ?? '';
/** What the kernels section runs beside the defaults, a process each; each also reruns gpu-only on the first policy workload. */
interface KernelVariant { label: string; env: Record<string, string> }
const KERNEL_VARIANTS: KernelVariant[] = ([
  { label: 'direct weight reads (TANDEM_GPU_MMV_STAGE=0)', env: { TANDEM_GPU_MMV_STAGE: '0' } },
  { label: 'decode attention in the prefill layout (TANDEM_GPU_ATTN_WARP_ROWS=0)', env: { TANDEM_GPU_ATTN_WARP_ROWS: '0' } },
  { label: 'tiled matmuls with their k range whole (TANDEM_GPU_MM_SPLIT=1)', env: { TANDEM_GPU_MM_SPLIT: '1' } },
  { label: 'tiled matmuls in four k parts whatever the grid (TANDEM_GPU_MM_SPLIT=4)', env: { TANDEM_GPU_MM_SPLIT: '4' } },
  { label: 'whole rows of logits to the host for sampling (TANDEM_DEVICE_TOP_K=0)', env: { TANDEM_DEVICE_TOP_K: '0' } },
  { label: 'a plan every step, no decode bursts (TANDEM_DECODE_BURST=1)', env: { TANDEM_DECODE_BURST: '1' } },
  ...(MMV_ALT ? [{ label: `matrix-vector kernels up to ${MMV_ALT} rows (TANDEM_GPU_MMV_MAX_TOKENS=${MMV_ALT})`, env: { TANDEM_GPU_MMV_MAX_TOKENS: MMV_ALT } }] : []),
] as KernelVariant[]).filter((v) => {
  // TANDEM_DEVICE_KERNEL_VARIANTS: which variants run, as text of their labels (comma-separated,
  // e.g. TANDEM_GPU_MM_SPLIT=1); default all.
  const only = process.env.TANDEM_DEVICE_KERNEL_VARIANTS;
  return only === undefined || only.split(',').some((x) => x.trim() !== '' && v.label.includes(x.trim()));
});
/** The MoE files' device weight budgets as shares of the file (TANDEM_DEVICE_EXPERT_BUDGET, comma-separated; default 0.4): each file runs its policies at each. */
const EXPERT_BUDGET_SHARES = (process.env.TANDEM_DEVICE_EXPERT_BUDGET ?? '0.4').split(',').map((x) => Number(x.trim()));
if (!EXPERT_BUDGET_SHARES.every((x) => x > 0 && x <= 1)) throw new Error(`TANDEM_DEVICE_EXPERT_BUDGET: shares of the file in (0, 1], not '${process.env.TANDEM_DEVICE_EXPERT_BUDGET}'`);
/**
 * The expert policies each MoE file runs (TANDEM_DEVICE_EXPERT_POLICIES, separated by ';' since
 * names hold commas; 'all': every one experts-child knows). The default leaves out the variants
 * runs 5-8 of 2026-11-27 settled ('dynamic, no refit', 'stacks', 'dynamic n*', 'dynamic, no
 * prefetch', 'dynamic, cudaHostAlloc'), and 'dynamic, pregate' (0.95-1.05x of 'dynamic' in run 1 of
 * 2026-11-28, no prefetch at batch 1): its early form runs in its place, so that both MoE shapes fit one run.
 */
const expertPolicyList = process.env.TANDEM_DEVICE_EXPERT_POLICIES ?? 'cpu-all;dynamic;dynamic, pregate, early;all on device;cpu-first-layers:8';
const EXPERT_POLICIES: string[] = expertPolicyList === 'all' ? [...EXPERT_RUN_POLICIES] : expertPolicyList.split(';').map((x) => x.trim());
const chosen = (process.env.TANDEM_DEVICE_SECTIONS ?? SECTIONS.join(',')).split(',').map((x) => x.trim());
for (const c of chosen) if (!(SECTIONS as readonly string[]).includes(c)) throw new Error(`TANDEM_DEVICE_SECTIONS: unknown section '${c}' (${SECTIONS.join(', ')})`);
const want = (section: (typeof SECTIONS)[number]) => chosen.includes(section);

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function log(msg: string): void {
  console.log(`[${elapsedS().toFixed(0).padStart(4)}s] ${msg}`);
}

interface Machine {
  date: string;
  card: string | null;
  driver: string | null;
  gpuMemory: string | null;
  cpu: string;
  cpuCores: number;
  node: string;
  backends: NativeBackendInfo[];
}

function machine(): Machine {
  const smi = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], { encoding: 'utf8' });
  const [card, driver, mem] = smi.status === 0 ? smi.stdout.split('\n')[0].split(',').map((s) => s.trim()) : [null, null, null];
  return {
    date: new Date().toISOString(),
    card,
    driver,
    gpuMemory: mem,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cpuCores: os.availableParallelism(),
    node: process.version,
    backends: native().backends(),
  };
}

/** Larger shapes than the test list: full-size decode rows, prefill tiles, long contexts. */
function largeCases(): OpCase[] {
  const cases: OpCase[] = [];
  // The IQ2/IQ3 grid types skip the 4096x4096 shape: their reference quantizer takes 3-5x
  // q4_K's time, and the device budget is minutes.
  const gridTypes = new Set(['iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s']);
  for (const type of WEIGHT_TYPES) {
    const shapes = [[4096, 4096, 1], [1000, 2048, 5], [1030, 1024, 300]].filter(([nRows]) => !gridTypes.has(type) || nRows !== 4096);
    for (const [nRows, nCols, nTokens] of shapes) {
      const w = rand(nRows * nCols, nRows + nCols, 0.05);
      const x = rand(nTokens * nCols, nTokens + 7, 1);
      cases.push({
        op: 'matmul',
        name: `matmul ${type} ${nRows}x${nCols} x ${nTokens} tokens (large)`,
        run: (ops, id) => ({ y: ops.matmul(id, type, w, nRows, nCols, x, nTokens) }),
        tolerance: () => 1e-9,
      });
    }
  }
  const attn = (label: string, nSeqs: number, start: number, nTokens: number, headDim: number, nHeads: number, nKv: number): OpCase => {
    const bt = 16;
    const per = Math.ceil((start + nTokens) / bt);
    const seqs = Array.from({ length: nSeqs }, (_, i) => ({
      startPos: start + i * 3,
      nTokens,
      blockTable: Int32Array.from({ length: Math.ceil((start + i * 3 + nTokens) / bt) }, (_, j) => i * (per + 1) + j),
      k: rand((start + i * 3 + nTokens) * nKv * headDim, 40 + i),
      v: rand((start + i * 3 + nTokens) * nKv * headDim, 50 + i),
      q: rand(nTokens * nHeads * headDim, 60 + i),
    }));
    const opts = { kvType: 'f16' as const, blockTokens: bt, nBlocks: nSeqs * (per + 1) + 1, nKvHeads: nKv, nHeads, headDim, headDimV: headDim, scale: 1 / Math.sqrt(headDim), seqs };
    return { op: 'attention', name: `attention ${label} (large)`, run: (ops, id) => ({ out: ops.attention(id, opts) }), tolerance: () => 1e-9 };
  };
  cases.push(attn('decode 16 seqs x 2000 positions, GQA 4, d128', 16, 2000, 1, 128, 32, 8));
  cases.push(attn('prefill 512 tokens, GQA 8, d64', 1, 0, 512, 64, 32, 4));
  cases.push(attn('chunked prefill 100 tokens after 3000, d256', 2, 3000, 100, 256, 8, 2));
  return cases;
}

function runCases(ops: NativeBackendOps, id: string, cases: OpCase[]): CaseResult[] {
  return cases.map((c) => {
    const ref = c.run(ops, REFERENCE_ID);
    const r = checkCase(ops, id, c, ref);
    if (!r.pass) log(`FAIL ${r.name}: ${r.detail}`);
    return r;
  });
}

interface E2eResult {
  model: string;
  /** Where the device-side run put weights, KV and attention (E2eMode). */
  mode: E2eMode;
  status: 'agree' | 'disagree' | 'skipped' | 'error';
  detail: string;
  promptLogitsNmse?: number;
  /** Prompt positions whose top-1 token equals the CPU run's, of all prompt positions. */
  promptTop1Agree?: number;
  decodeLogitsNmse?: number;
  promptEmbeddingsNmse?: number;
  tokensEqual?: number;
}

/** Largest normalised squared error of teacher-forced prompt logits a device run may show against the CPU run. */
const E2E_NMSE_TOLERANCE = 5e-4;

function runChild(model: string, mode: E2eMode, out: string, timing: boolean, simulate: boolean): ChildReport | string {
  const env = { ...process.env };
  if (mode === 'cpu') env.TANDEM_GPU = '0';
  const args = [path.join(here, 'e2e-child.js'), model, mode, out, ...(timing ? ['--timing'] : []), ...(simulate ? ['--standin'] : [])];
  const r = spawnSync(process.execPath, args, { env, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) {
    const why = `child (${mode}) failed (status ${r.status}, signal ${r.signal}): ${(r.stderr || r.error?.message || '').slice(-800)}`;
    if (mode === 'cpu' || simulate) return why;
    // Once more under compute-sanitizer, for the first bad access (it is on the lent machine).
    const s = spawnSync('compute-sanitizer', ['--print-limit', '3', process.execPath, ...args], { env, encoding: 'utf8', timeout: 300_000 });
    return `${why}\ncompute-sanitizer: ${((s.stdout ?? '') + (s.stderr ?? '') || s.error?.message || '').slice(-1500)}`;
  }
  return JSON.parse(readFileSync(out, 'utf8')) as ChildReport;
}

/** Runs one of this folder's scripts in the background; resolves to null, or to why it failed. */
function startChild(script: string, args: string[], timeoutS = 240, env: NodeJS.ProcessEnv = process.env): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(here, script), ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000);
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (err) => resolve(`${script}: ${err.message}`));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code === 0 ? null : `${script} exited with ${code ?? signal}${signal === 'SIGKILL' ? ` (killed after ${timeoutS} s)` : ''}: ${stderr.slice(-4000)}`);
    });
  });
}

const isGpu = (backends: string[]) => backends.some((b) => b !== 'cpu');

function top1(logits: number[], nVocab: number, row: number): number {
  let best = 0;
  for (let i = 1; i < nVocab; i++) if (logits[row * nVocab + i]! > logits[row * nVocab + best]!) best = i;
  return best;
}

function compareE2e(name: string, dev: ChildReport, cpu: ChildReport): E2eResult {
  const promptNmse = nmse(dev.promptLogits, cpu.promptLogits);
  const decodeNmse = nmse(dev.decodeLogits.flat(), cpu.decodeLogits.flat());
  // The hidden states the head reads (embeddings), copied from the device by their own path.
  const embedNmse = dev.promptEmbeddings.length === cpu.promptEmbeddings.length && cpu.promptEmbeddings.length > 0 ? nmse(dev.promptEmbeddings, cpu.promptEmbeddings) : Infinity;
  const rows = cpu.promptLogits.length / cpu.nVocab;
  let agree = 0;
  for (let r = 0; r < rows; r++) if (top1(dev.promptLogits, dev.nVocab, r) === top1(cpu.promptLogits, cpu.nVocab, r)) agree++;
  const same = dev.tokens.filter((t, i) => t === cpu.tokens[i]).length;
  // Both sides are teacher-forced, so greedy tokens may part only at near-ties.
  const ok = promptNmse <= E2E_NMSE_TOLERANCE && decodeNmse <= E2E_NMSE_TOLERANCE && embedNmse <= E2E_NMSE_TOLERANCE;
  const p = dev.placement;
  return {
    model: name,
    mode: dev.mode,
    status: ok ? 'agree' : 'disagree',
    detail: `${p.deviceTensors} matrices on ${p.device ?? 'no device'}, ${p.hostTensors} in host RAM; prompt logits nmse ${promptNmse.toExponential(2)}, ` +
      `top-1 ${agree}/${rows}; prompt embeddings nmse ${embedNmse.toExponential(2)}; teacher-forced decode logits nmse ${decodeNmse.toExponential(2)}, ${same}/${dev.tokens.length} greedy tokens equal`,
    promptLogitsNmse: promptNmse,
    promptTop1Agree: agree / rows,
    decodeLogitsNmse: decodeNmse,
    promptEmbeddingsNmse: embedNmse,
    tokensEqual: same,
  };
}

interface TimingRow {
  what: string;
  type: string;
  tokens: number;
  gpuUs: number;
  cpuUs: number;
}

/** Linear layers of one transformer block plus the output head, for the per-token estimates. */
const QUICK = process.argv.includes('--quick');
const SHAPES: Record<string, { nEmbd: number; nFf: number; nKvDim: number; nLayer: number; nVocab: number }> = QUICK
  ? { tiny: { nEmbd: 256, nFf: 512, nKvDim: 128, nLayer: 2, nVocab: 512 } }
  : {
      'tinyllama-1.1b': { nEmbd: 2048, nFf: 5632, nKvDim: 256, nLayer: 22, nVocab: 32000 },
      'llama2-7b': { nEmbd: 4096, nFf: 11008, nKvDim: 4096, nLayer: 32, nVocab: 32000 },
    };

function layerMatrices(s: (typeof SHAPES)[string]): [string, number, number][] {
  return [
    ['q/o', s.nEmbd, s.nEmbd],
    ['k/v', s.nKvDim, s.nEmbd],
    ['gate/up', s.nFf, s.nEmbd],
    ['down', s.nEmbd, s.nFf],
  ];
}

function timeMatmuls(ops: NativeBackendOps, gpuId: string, cpuId: string, rows: TimingRow[], estimates: Record<string, unknown>[]): void {
  for (const [model, s] of Object.entries(SHAPES)) {
    for (const type of ['f16', 'q8_0', 'q4_K']) {
      for (const tokens of QUICK ? [1, 64] : [1, 512]) {
        if (elapsedS() > BUDGET_S) return;
        let gpuTotal = 0;
        let cpuTotal = 0;
        for (const [what, nRows, nCols] of layerMatrices(s)) {
          const count = what === 'down' ? 1 : 2;
          const iters = tokens === 1 ? 20 : 3;
          const g = ops.timeMatmul(gpuId, type, nRows, nCols, tokens, iters * 5);
          const c = ops.timeMatmul(cpuId, type, nRows, nCols, tokens, iters);
          rows.push({ what: `${model} ${what} ${nRows}x${nCols}`, type, tokens, gpuUs: g, cpuUs: c });
          gpuTotal += count * g;
          cpuTotal += count * c;
        }
        if (tokens === 1) {
          // Decode also runs the output head once per token.
          const gh = ops.timeMatmul(gpuId, type, s.nVocab, s.nEmbd, 1, 10);
          const ch = ops.timeMatmul(cpuId, type, s.nVocab, s.nEmbd, 1, 3);
          estimates.push({ model, type, tokens, what: 'decode: linear layers + head, ms/token', gpu: (gpuTotal * s.nLayer + gh) / 1000, cpu: (cpuTotal * s.nLayer + ch) / 1000 });
        } else {
          estimates.push({ model, type, tokens, what: 'prefill: linear layers, tokens/s', gpu: (tokens * 1e6) / (gpuTotal * s.nLayer), cpu: (tokens * 1e6) / (cpuTotal * s.nLayer) });
        }
        log(`timed ${model} ${type} x${tokens}`);
      }
    }
  }
}

function timeAttention(ops: NativeBackendOps, gpuId: string, cpuId: string, rows: TimingRow[]): void {
  const shapes = QUICK ? [[1, 256, 1], [1, 0, 64]] : [[1, 1024, 1], [1, 4096, 1], [16, 1024, 1], [32, 4096, 1], [1, 0, 512]];
  for (const [nSeqs, ctx, nTokens] of shapes) {
    if (elapsedS() > BUDGET_S) return;
    const opts = { kvType: 'f16' as const, blockTokens: 16, nKvHeads: 8, nHeads: 32, headDim: 128, nSeqs, contextLen: ctx, nTokens };
    rows.push({
      what: `attention 32/8 heads d128: ${nSeqs} seq x ${ctx} cached + ${nTokens} new`,
      type: 'f16 KV',
      tokens: nSeqs * nTokens,
      gpuUs: ops.timeAttention(gpuId, opts, 20),
      cpuUs: ops.timeAttention(cpuId, opts, 3),
    });
  }
}

function strategyTable(model: string, report: StrategyReport | string): string[] {
  const lines = [`## Strategies under a capped device KV (${model})`, ''];
  if (typeof report === 'string') return [...lines, report, ''];
  lines.push(`Decode steps of one batch; gpu-only runs the sequences whose KV fits on the device, overlap and pipeline add the host-KV sequences with attention on the CPU (${report.threads} threads); 'gpu-only, host KV streamed' adds them with attention on the device over their KV gathered from host RAM a layer at a time. Device: ${report.device}.`, '',
    '| context | device-KV seqs | host-KV seqs | strategy | seqs in step | step ms | tokens/s | vs gpu-only |', '|---|---|---|---|---|---|---|---|');
  const hk = report.hostKv;
  if (hk) {
    lines.splice(lines.length - 2, 0, hk.lockMs > 0
      ? `Host KV tier: ${(hk.bytes / 2 ** 20).toFixed(1)} MiB, locked and mapped at load in ${hk.lockMs.toFixed(0)} ms${hk.streamBlocksMax > 0 ? `; a step may stream ${hk.streamBlocksMax} blocks` : ' (no staging on the device: no streaming)'}.`
      : `Host KV tier: ${(hk.bytes / 2 ** 20).toFixed(1)} MiB, not locked (this device does not stream host KV).`, '');
  }
  for (const { regime, timings } of report.regimes) {
    const base = timings.find((t) => t.strategy === 'gpu-only' && !t.streamed)?.tokensPerS;
    for (const t of timings) {
      lines.push(`| ${regime.context} | ${regime.deviceSeqs} | ${regime.hostSeqs} | ${t.strategy}${t.streamed ? ', host KV streamed' : ''} | ${t.sequences} | ${t.stepMs.toFixed(2)} | ${t.tokensPerS.toFixed(1)} | ${base ? (t.tokensPerS / base).toFixed(2) + 'x' : '-'} |`);
    }
  }
  return [...lines, ''];
}

interface PolicyReport {
  workload: PolicyWorkload;
  /** What differs from the default configuration, if anything. */
  label?: string;
  runs: (PolicyRun | { policy: string; error: string })[];
  error?: string;
  /** The same batch replayed on the tables gpu-only's run profiled (SIMULATED): tokens/s by policy, or why not. */
  replay?: Record<string, number> | string;
}

/** Replays a policy report's workload on the tables its gpu-only run profiled: how far the tables are from the measured run. SIMULATED. */
function replayOf(report: PolicyReport): PolicyReport['replay'] {
  const gpu = report.runs.find((r): r is PolicyRun => r.policy === 'gpu-only' && !('error' in r));
  if (!gpu?.profileFile) return 'no gpu-only run with a profile file';
  try {
    const w = report.workload;
    const r = runReplay({ tables: readProfileTables(gpu.profileFile), kvBlocks: gpu.kvBlocks, blockTokens: gpu.kvBlockTokens, requests: w.requests, promptTokens: w.promptTokens, outputTokens: w.maxTokens, policies: w.policies });
    return Object.fromEntries(r.runs.map((x) => [x.policy, x.throughput]));
  } catch (err) {
    return (err as Error).message;
  }
}

/** Least squares of time = a + b * sequences + c * context tokens; undefined when singular. */
function fitDecodeSteps(xs: [number, number, number][]): [number, number, number] | undefined {
  // Normal equations, 3 x 3, by Cramer's rule.
  const m = [[0, 0, 0], [0, 0, 0], [0, 0, 0]], v = [0, 0, 0];
  for (const [n, ctx, us] of xs) {
    const row = [1, n, ctx];
    for (let i = 0; i < 3; i++) {
      v[i]! += row[i]! * us;
      for (let j = 0; j < 3; j++) m[i]![j]! += row[i]! * row[j]!;
    }
  }
  const det = (a: number[][]) => a[0]![0]! * (a[1]![1]! * a[2]![2]! - a[1]![2]! * a[2]![1]!) - a[0]![1]! * (a[1]![0]! * a[2]![2]! - a[1]![2]! * a[2]![0]!) + a[0]![2]! * (a[1]![0]! * a[2]![1]! - a[1]![1]! * a[2]![0]!);
  const d = det(m);
  if (!(Math.abs(d) > 1e-9)) return undefined;
  const col = (k: number) => det(m.map((r, i) => r.map((x, j) => (j === k ? v[i]! : x))));
  return [col(0) / d, col(1) / d, col(2) / d];
}

/**
 * Issue 8: is a policy's gpu-only decode step slower than gpu-only's own at the same batch and
 * context? Each policy's single-round decode steps run as gpu-only are fitted linearly in
 * sequences and context tokens, and each fit is read at gpu-only's steps. (Predicted against
 * measured does not tell: the online refit moves each run's predictions to its own times.)
 */
function decodeStepComparison(runs: PolicyReport['runs']): string | undefined {
  const decodeSteps = (r: PolicyRun) => r.stepTrace.filter((s) => s[0] === 'gpu-only' && s[4] === s[1] + s[2] && s[7] !== undefined).map((s): [number, number, number] => [s[1] + s[2], s[7], s[5]]);
  const ok = runs.filter((r): r is PolicyRun => !('error' in r));
  const base = ok.find((r) => r.policy === 'gpu-only');
  if (!base) return undefined;
  const at = decodeSteps(base);
  const fb = fitDecodeSteps(at);
  if (!fb || at.length < 10) return undefined;
  const cells: string[] = [];
  for (const r of ok) {
    if (r === base) continue;
    const xs = decodeSteps(r);
    const fr = xs.length >= 10 ? fitDecodeSteps(xs) : undefined;
    if (!fr) continue;
    const ratio = at.reduce((a, [n, ctx]) => a + (fr[0] + fr[1] * n + fr[2] * ctx) / (fb[0] + fb[1] * n + fb[2] * ctx), 0) / at.length;
    cells.push(`${r.policy} ${ratio.toFixed(3)}x (${xs.length} steps)`);
  }
  return cells.length === 0 ? undefined : `Decode steps run as gpu-only, each policy's time fitted in sequences and context tokens and read at gpu-only's ${at.length}, as a multiple of gpu-only's: ${cells.join('; ')}.`;
}

function policyTable(model: string, report: PolicyReport | string): string[] {
  const lines = [`## Policies serving concurrent requests, device KV capped (${model})`, ''];
  if (typeof report === 'string') return [...lines, report, ''];
  const w = report.workload;
  lines.push(`${report.label ? `With ${report.label}: ` : ''}${w.requests} requests at once, ${w.promptTokens}-token prompts, ${w.maxTokens} tokens each (greedy, EOS ignored); device KV ${(w.kvDeviceBytes / 2 ** 20).toFixed(1)} MiB, host KV ${(w.kvHostBytes / 2 ** 20).toFixed(1)} MiB.${report.error ? ` Error: ${report.error}` : ''}`, '',
    '| policy | tokens/s | vs gpu-only | makespan s | TTFT p50 ms | TPOT p50 / p90 ms | steps by strategy | mean round / host between, per round µs | moves | preemptions | step prediction error | replayed on its tables (SIMULATED) |', '|---|---|---|---|---|---|---|---|---|---|---|---|');
  const base = report.runs.find((r): r is PolicyRun => r.policy === 'gpu-only' && !('error' in r))?.tokensPerS;
  for (const r of report.runs) {
    if ('error' in r) {
      lines.push(`| ${r.policy} | error: ${r.error} | | | | | | | | | | |`);
      continue;
    }
    // Decode bursts run several rounds a step.
    const strat = Object.entries(r.strategies).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ') + (r.rounds > r.steps ? `; ${r.rounds} rounds` : '') + (r.streamed ? `; ${r.streamed} sequence-steps streamed` : '');
    const err = r.meanStepError === undefined || Number.isNaN(r.meanStepError) ? '-' : `${(r.meanStepError * 100).toFixed(0)}%`;
    const replayed = typeof report.replay === 'object' ? report.replay[r.policy] : undefined;
    lines.push(`| ${r.policy} | ${r.tokensPerS.toFixed(1)} | ${base ? (r.tokensPerS / base).toFixed(2) + 'x' : '-'} | ${(r.makespanMs / 1000).toFixed(2)} | ${r.ttftMsP50.toFixed(0)} | ${r.tpotMsP50.toFixed(1)} / ${r.tpotMsP90.toFixed(1)} | ${strat} | ${r.stepUsMean.toFixed(0)} / ${r.hostUsMean === undefined ? '-' : r.hostUsMean.toFixed(0)} | ${r.moves} | ${r.preemptions} | ${err} | ${replayed === undefined ? '-' : replayed.toFixed(1)} |`);
  }
  const sameSteps = decodeStepComparison(report.runs);
  if (sameSteps) lines.push('', sameSteps);
  if (typeof report.replay === 'string') lines.push('', `Replay: ${report.replay}`);
  else if (report.replay) lines.push('', 'The last column replays the same batch on the cost tables gpu-only\'s run profiled (tandem simulate --replay; SIMULATED): where it parts from the measured column, the tables miss the machine.');
  return [...lines, ''];
}

interface ExpertsReport {
  budgetBytes: number;
  nStar: number;
  runs: ExpertRun[];
  error?: string;
}

function expertsTable(model: string, report: ExpertsReport | string): string[] {
  const lines = [`## MoE expert offload (${model})`, ''];
  if (typeof report === 'string') return [...lines, report, ''];
  lines.push(`Device weight budget ${(report.budgetBytes / 2 ** 20).toFixed(0)} MiB for every policy but 'all on device'. 'dynamic' copies or runs on the CPU each missing expert by the makespan rule with expert costs calibrated on the loaded model (below), and prefetches the next layer's experts while the link would idle; 'dynamic n*' copies from n* = ${report.nStar} routed rows (DESIGN.md's formula with assumed rates). Random synthetic routers route nearly uniformly, so their hit rates sit near the cached share of experts; the skewed file routes as a trained MoE does, more to some experts than others. 'dynamic, no refit' is 'dynamic' on its calibration alone, its CPU costs not refitted online from the steps; 'dynamic, no prefetch' is 'dynamic' without the prefetch; 'dynamic, pregate' orders its prefetch by the next layer's router on this layer's hidden state (the 'prefetch hits' column counts prefetched experts routed to); 'dynamic, pregate, early' issues that prefetch as soon as the layer's routing is known, beside its experts and behind its own copies, sized by the measured time until the next layer's routing (one-sequence steps; several sequences stream their copies and keep the later prefetch); 'dynamic, cudaHostAlloc' is 'dynamic' with its pinned slabs from cudaHostAlloc rather than mapped on the GPU's NUMA node. Each policy runs in its own process.`, '',
    '| batch | policy | slots | device MiB | decode tok/s | vs cpu-all | prefill tok/s | hit rate | row hit rate | CPU expert share | copied KiB/token | activations KiB/token | prefetch hits |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const batch of [...new Set(report.runs.map((r) => r.batch))]) {
    const base = report.runs.find((r) => r.batch === batch && r.policy === 'cpu-all')?.result?.decodeTokensPerS;
    for (const r of report.runs.filter((x) => x.batch === batch)) {
      const x = r.result;
      if (!x) {
        lines.push(`| ${batch} | ${r.policy} | error: ${r.error ?? '?'} | | | | | | | | | | |`);
        continue;
      }
      const pct = (v: number | null) => (v === null ? '-' : `${(v * 100).toFixed(0)}%`);
      lines.push(`| ${batch} | ${r.policy} | ${x.slots} | ${(x.deviceBytes / 2 ** 20).toFixed(0)} | ${x.decodeTokensPerS.toFixed(1)} | ${base ? (x.decodeTokensPerS / base).toFixed(2) + 'x' : '-'} | ${x.prefillTokensPerS.toFixed(0)} | ${pct(x.hitRate)} | ${pct(x.rowHitRate ?? null)} | ${pct(x.cpuExpertShare)} | ${(x.copyBytesPerToken / 1024).toFixed(0)} | ${(x.activationBytesPerToken / 1024).toFixed(1)} | ${x.decode ? `${x.decode.prefetchHits} of ${x.decode.prefetches}` : '-'} |`);
    }
  }
  const cal = report.runs.filter((r) => r.result?.calibration);
  if (cal.length > 0) lines.push('', 'Calibrated expert costs (one expert FFN by routed rows, plus a call cost once per layer with CPU experts; the host->device link), what the CPU calls took in the measured decode steps against the calibrated prediction, and where the online refit ended:', '');
  for (const r of cal) {
    const x = r.result!;
    const cal = x.calibration!;
    const c = cal.cost;
    const err = cal.errors.map((e) => `${e.side} at ${e.rows} rows ${(100 * e.relError).toFixed(0)}%`).join(', ');
    const dev = cal.deviceNote ? `device not timed (${cal.deviceNote})` : `device ${c.gpuFixedUs.toFixed(1)} µs + ${c.gpuUsPerToken.toFixed(2)} µs/row`;
    const k = x.decodeCpuCalls;
    const predicted = k ? (c.cpuCallUs ?? 0) + c.cpuFixedUs * k.expertsPerCall + c.cpuUsPerToken * k.rowsPerCall : 0;
    const steps = k ? `; in steps ${k.calls} CPU calls of ${k.expertsPerCall.toFixed(2)} experts, ${k.rowsPerCall.toFixed(1)} rows: ${k.meanUs.toFixed(0)} µs each, calibrated ${predicted.toFixed(0)}` : '; no CPU call in the measured steps';
    const refit = x.refit ? `; refit: call ${x.refit.callUs.toFixed(0)} µs, scale ${x.refit.scale.toFixed(2)} (${x.refit.calls} calls, ${x.refit.updates} updates)` : '; no online refit';
    lines.push(`- ${r.policy}, batch ${r.batch}: CPU ${c.cpuFixedUs.toFixed(1)} µs + ${c.cpuUsPerToken.toFixed(2)} µs/row, call ${(c.cpuCallUs ?? 0).toFixed(1)} µs; ${dev}; link ${c.linkLatencyUs.toFixed(1)} µs + ${(c.linkBytesPerUs / 1e3).toFixed(1)} GB/s; held-out error: ${err}${steps}${refit}`);
  }
  if (report.error) lines.push('', 'Processes that failed (stderr tail):', '', '```', report.error, '```');
  return [...lines, ''];
}

function kernelTable(reports: KernelReport[]): string[] {
  if (reports.length === 0) return [];
  const [base, ...alts] = reports;
  const lines = ['## Kernel variants: the defaults against each', '',
    ...reports.map((r) => `- ${r.variant}: ${r.casesPassed}/${r.cases} matmul, matmul_group, expert and attention op cases pass on ${r.device}${r.failures.length ? ` (failed: ${r.failures.join('; ')})` : ''}`), ''];
  for (const alt of alts) {
    lines.push(`### default / ${alt.variant}`, '', `| type | matrix | 1 row GB/s | ${MATMUL_TOKENS.map((n) => `${n} rows`).join(' | ')} |`,
      `|---|---|---|${MATMUL_TOKENS.map(() => '---').join('|')}|`);
    for (const t of base!.timings.filter((x) => x.tokens === MATMUL_TOKENS[0])) {
      const us = (r: KernelReport, n: number) => r.timings.find((x) => x.type === t.type && x.shape === t.shape && x.tokens === n)?.us;
      const cell = (n: number) => {
        const b = us(base!, n), a = us(alt, n);
        return b && a ? `${fmtUs(b)} / ${fmtUs(a)}` : '-';
      };
      const bytes = t.rows * rowBytes(t.type, t.cols);  // read at one activation row
      const gbs = (r: KernelReport) => (us(r, 1) ? (bytes / us(r, 1)! / 1e3).toFixed(0) : '-');
      lines.push(`| ${t.type} | ${t.shape} | ${gbs(base!)} / ${gbs(alt)} | ${MATMUL_TOKENS.map(cell).join(' | ')} |`);
    }
    lines.push('', 'Each cell: default / variant (µs per matmul, activation conversion included; equal where both run the same kernel).', '',
      '| decode attention (f16 KV) | default | variant | default GB/s | variant GB/s |', '|---|---|---|---|---|');
    for (const a of base!.attention) {
      const b = alt.attention.find((x) => x.shape === a.shape);
      const gbs = (us: number | undefined) => (us ? (a.kvBytes / us / 1e3).toFixed(0) : '-');
      lines.push(`| ${a.shape} | ${fmtUs(a.us)} | ${b ? fmtUs(b.us) : '-'} | ${gbs(a.us)} | ${gbs(b?.us)} |`);
    }
    lines.push('');
  }
  return lines;
}

/** What a run has so far, in case the device's time runs out before results.json is written. */
function savePartial(outDir: string, parts: Record<string, unknown>): void {
  writeFileSync(path.join(outDir, 'results.partial.json'), JSON.stringify(parts));
}

function fmtUs(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`;
}

async function main(): Promise<void> {
  const outDir = arg('--out', path.resolve('.device', 'out'));
  mkdirSync(outDir, { recursive: true });
  const m = machine();
  log(`machine: ${m.card ?? 'no NVIDIA card'} driver ${m.driver ?? '-'}; ${m.cpuCores} x ${m.cpu}; ${m.date}`);
  const simulate = arg('--simulate-gpu', '');
  const gpu = simulate
    ? { ...m.backends[0], kind: simulate.split(':')[0], device: 0, deviceName: `${simulate} standing in for a GPU` }
    : m.backends.find((b) => b.status === 'selected');
  // The host's read bandwidth on all its cores: what CPU experts and CPU attention stream at,
  // and what the simulators' host profiles assume for the machines we do not have.
  const hostBw = await native().measureReadBandwidth(512 * 2 ** 20, m.cpuCores, 3);
  const results: Record<string, unknown> = { machine: { ...m, hostReadBytesPerSecond: hostBw.bytesPerSecond } };
  const md: string[] = [`# tandem GPU device check`, '', `- date: ${m.date}`, `- card: ${m.card ?? '-'} (driver ${m.driver ?? '-'}, ${m.gpuMemory ?? '-'})`,
    `- CPU: ${m.cpuCores} x ${m.cpu}; host read bandwidth ${(hostBw.bytesPerSecond / 1e9).toFixed(1)} GB/s on ${m.cpuCores} threads; node ${m.node}`, ''];

  if (!gpu) {
    const why = m.backends.filter((b) => b.kind !== 'cpu').map((b) => `${b.kind}: ${b.reason}${b.detail ? ` (${b.detail})` : ''}`);
    log(`no GPU backend can run here: ${why.join('; ')}`);
    results.gpu = null;
    results.reasons = why;
    md.push('No GPU backend could run:', '', ...why.map((w) => `- ${w}`), '');
    writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 2));
    writeFileSync(path.join(outDir, 'results.md'), md.join('\n'));
    return;
  }
  const gpuId = simulate || `${gpu.kind}:${gpu.device}`;
  const ops = native().backendOps;
  // The best CPU kernels (ids list the reference first) on every core.
  const cpuId = `${ops.ids().filter((i) => i.startsWith('cpu:')).pop() ?? REFERENCE_ID}@${m.cpuCores}`;
  results.gpu = { id: gpuId, name: gpu.deviceName, totalBytes: gpu.totalBytes, cpuId };
  md.push(`- backend: ${gpuId} = ${gpu.deviceName}; CPU comparison: ${cpuId}`, '');

  const work = path.join(os.tmpdir(), 'tandem-device');
  mkdirSync(work, { recursive: true });
  // The strategy section's model is written in the background while the op cases run.
  const bigSpec: ModelSpec = QUICK ? { preset: 'tiny', type: 'q8_0', seed: 8 } : { preset: 'llama3-8b', nLayer: BIG_LAYERS, type: 'q8_0', seed: 8 };
  const bigFile = path.join(work, 'big.gguf');
  const bigReady = want('timing') || want('strategies') || want('policies') ? startChild('make-child.js', [JSON.stringify(bigSpec), bigFile]) : Promise.resolve(null);
  // The expert section's models: random routers (nearly uniform routing), and the same shape
  // with routing skewed as trained routers are (routerSkew 1.1, the simulator's Zipf exponent).
  // Two shapes: small experts (moe-8x-top2: 6.4 MiB each, where launches and syncs dominate) and
  // gpt-oss-20b's (13 MiB MXFP4 experts, 32 of them, top-4; 4 of 24 layers and a 32000-token
  // vocabulary so that the file writes in seconds and the experts are most of it).
  const moeShapes: { key: string; label: string; nLayer: number; spec: ModelSpec }[] = QUICK
    ? [{ key: 'moe', label: 'tiny qwen2moe q8_0', nLayer: 2, spec: { preset: 'tiny', architecture: 'qwen2moe', type: 'q8_0', seed: 9 } }]
    : [
        { key: 'moe', label: 'moe-8x-top2 (Mixtral-style, 8 experts, top-2) q8_0', nLayer: 16, spec: { preset: 'moe-8x-top2', type: 'q8_0', seed: 9 } },
        { key: 'oss', label: 'gpt-oss-20b shapes, 4 of 24 layers, 32000 tokens, mxfp4 experts', nLayer: 4, spec: { preset: 'gpt-oss-20b', nLayer: 4, nVocab: 32000, type: 'mxfp4_moe', seed: 11 } },
        // Not run by default (TANDEM_DEVICE_MOE=oss24): every one of gpt-oss-20b's 24 layers, so
        // that the per-token work outside the layers (head, sampling, launches) weighs what it
        // does in the real model; the 4-layer file gives it six times its share. Two files of
        // 11 GB: about 70 s of 16 cores for both.
        { key: 'oss24', label: 'gpt-oss-20b shapes, all 24 layers, 32000 tokens, mxfp4 experts', nLayer: 24, spec: { preset: 'gpt-oss-20b', nVocab: 32000, type: 'mxfp4_moe', seed: 11 } },
      ];
  const moeChosen = (process.env.TANDEM_DEVICE_MOE ?? 'moe,oss').split(',').map((x) => x.trim());
  for (const k of moeChosen) if (!QUICK && !moeShapes.some((x) => x.key === k)) throw new Error(`TANDEM_DEVICE_MOE: unknown shape '${k}' (${moeShapes.map((x) => x.key).join(', ')})`);
  const moeModels = moeShapes.filter((x) => moeChosen.includes(x.key)).flatMap((x) => [
    { name: `${x.label}, random routers`, nLayer: x.nLayer, spec: x.spec, file: path.join(work, `${x.key}.gguf`) },
    { name: `${x.label}, routing skewed (routerSkew 1.1)`, nLayer: x.nLayer, spec: { ...x.spec, routerSkew: 1.1 }, file: path.join(work, `${x.key}-skewed.gguf`) },
  ]).filter(() => want('experts')).map((x) => ({ ...x, ready: startChild('make-child.js', [JSON.stringify(x.spec), x.file], x.nLayer >= 24 ? 600 : 240) }));

  // 1. Every op case, then larger shapes.
  const small = want('ops') ? runCases(ops, gpuId, opCases()) : [];
  log(`op cases: ${small.filter((r) => r.pass).length}/${small.length} pass`);
  const large = QUICK || !want('ops') ? [] : runCases(ops, gpuId, largeCases());
  log(`large op cases: ${large.filter((r) => r.pass).length}/${large.length} pass`);
  results.opCases = small;
  results.largeOpCases = large;
  const failed = [...small, ...large].filter((r) => !r.pass);
  md.push(`## Op cases against ${REFERENCE_ID}`, '', `${small.filter((r) => r.pass).length}/${small.length} standard and ${large.filter((r) => r.pass).length}/${large.length} large cases pass.`, '');
  if (failed.length > 0) md.push('| failed case | detail |', '|---|---|', ...failed.map((r) => `| ${r.name} | ${r.detail} |`), '');

  // 2. End to end through the executor: device processes against a TANDEM_GPU=0 process.
  const e2e: E2eResult[] = [];
  const specs: [string, ModelSpec][] = [
    ['tiny llama f16', { preset: 'tiny', type: 'f16', seed: 3 }],
    ['tiny llama q4_K_M', { preset: 'tiny', type: 'q4_K_M', seed: 4 }],
    ['tiny qwen2moe q8_0', { preset: 'tiny', architecture: 'qwen2moe', type: 'q8_0', seed: 5 }],
    ['tiny mixtral-style llama MoE q4_0', { preset: 'tiny', architecture: 'llama', nExpert: 4, nExpertUsed: 2, nFfExpert: 256, type: 'q4_0', seed: 7 }],
    // Sliding window, sinks, YaRN, biased MXFP4 experts with the clamped SwiGLU: every gpt-oss op on the device.
    ['tiny gpt-oss mxfp4_moe', { preset: 'tiny', architecture: 'gpt-oss', slidingWindow: 8, nHead: 8, nHeadKv: 2, headDim: 64, type: 'mxfp4_moe', seed: 10, ropeScaling: { type: 'yarn', factor: 32, originalContext: 16 } }],
    // The low-bit K and IQ4 types: q2_K, q3_K, q4_K, q6_K (Q2_K mix) and iq4_xs, q5_K (IQ4_XS mix).
    ['tiny llama q2_K_mix', { preset: 'tiny', type: 'q2_K_mix', seed: 11 }],
    ['tiny mixtral-style llama MoE iq4_xs_mix', { preset: 'tiny', architecture: 'llama', nExpert: 4, nExpertUsed: 2, nFfExpert: 256, type: 'iq4_xs_mix', seed: 12 }],
    // The IQ2/IQ3 grid types: iq2_xxs, q2_K (IQ2_XXS mix); iq3_xxs, iq3_s, iq2_s, q3_K (IQ3_XXS mix).
    ['tiny llama iq2_xxs_mix', { preset: 'tiny', type: 'iq2_xxs_mix', seed: 13 }],
    ['tiny mixtral-style llama MoE iq3_xxs_mix', { preset: 'tiny', architecture: 'llama', nExpert: 4, nExpertUsed: 2, nFfExpert: 256, type: 'iq3_xxs_mix', seed: 14 }],
    // gemma3: heads of 256, scaled embeddings (scale), post norms, GeGLU (geglu), five sliding layers in six, a tied output.
    ['tiny gemma3 q4_K_M', { preset: 'tiny', architecture: 'gemma3', nLayer: 6, nHead: 2, nHeadKv: 1, headDim: 256, slidingWindow: 8, tiedEmbeddings: true, type: 'q4_K_M', seed: 15 }],
    // gemma2: soft-capped scores (attention) and logits (softcap), caps about the random scores' size so that tanh bends them, every other layer sliding.
    ['tiny gemma2 f16', { preset: 'tiny', architecture: 'gemma2', nLayer: 4, nHead: 2, nHeadKv: 1, headDim: 256, slidingWindow: 8, tiedEmbeddings: true, softcaps: { attention: 2, final: 5 }, type: 'f16', seed: 16 }],
  ];
  let executorOnGpu = false;
  // Without the e2e section, one model in one mode still shows that the executor reaches the GPU.
  if (!want('e2e')) specs.splice(1);
  for (const [name, spec] of specs) {
    if (elapsedS() > BUDGET_S) break;
    const file = path.join(work, `${name.replace(/\s+/g, '-')}.gguf`);
    try {
      await makeModel(spec, file);
      const c = runChild(file, 'cpu', path.join(work, 'cpu.json'), false, false);
      for (const mode of want('e2e') ? (['gpu', 'split', 'host-kv', 'host-kv-stream'] as const) : (['gpu'] as const)) {
        const g = runChild(file, mode, path.join(work, `${mode}.json`), false, Boolean(simulate));
        if (typeof g === 'string' || typeof c === 'string') {
          e2e.push({ model: name, mode, status: 'error', detail: typeof g === 'string' ? g : (c as string) });
        } else if (!isGpu(g.backends)) {
          e2e.push({ model: name, mode, status: 'skipped', detail: `the executor put no work on the GPU (model backends: ${g.backends.join(', ')})` });
        } else {
          executorOnGpu = true;
          e2e.push(compareE2e(name, g, c));
        }
        const last = e2e[e2e.length - 1]!;
        log(`e2e ${name} [${mode}]: ${last.status}: ${last.detail}`);
      }
    } catch (err) {
      e2e.push({ model: name, mode: 'gpu', status: 'error', detail: (err as Error).message });
      log(`e2e ${name}: error: ${(err as Error).message}`);
    }
  }
  results.endToEnd = e2e;
  md.push(`## End to end (executor), device against CPU (tolerance: prompt logits, prompt embeddings and teacher-forced decode logits nmse <= ${E2E_NMSE_TOLERANCE})`, '',
    'Modes: gpu = every weight, KV and attention on the device; split = half the weight bytes on the device, the rest (routed experts first) computed on the CPU; host-kv = weights on the device, KV in host RAM and attention on the CPU (overlap); host-kv-stream = weights on the device, KV in host RAM, attention on the device over each layer\'s blocks gathered across the link (gpu-only).', '',
    '| model | mode | result | detail |', '|---|---|---|---|', ...e2e.map((r) => `| ${r.model} | ${r.mode} | ${r.status} | ${r.detail} |`), '');
  if (e2e.some((r) => r.status !== 'agree' && r.status !== 'skipped')) process.exitCode = 1;

  // The model files are written in the background while the op cases run. Every later section
  // times the host CPU too, so it starts only once no writer shares the CPU with it (run 6 of
  // 2026-11-27 timed CPU experts beside two writers, at a third of their speed).
  const waitFrom = elapsedS();
  await Promise.all([bigReady, ...moeModels.map((x) => x.ready)]);
  log(`model files written (waited ${(elapsedS() - waitFrom).toFixed(0)} s)`);

  // 3. Timings, GPU against CPU on this machine in this run.
  const rows: TimingRow[] = [];
  const estimates: Record<string, unknown>[] = [];
  if (want('timing')) {
    timeMatmuls(ops, gpuId, cpuId, rows, estimates);
    timeAttention(ops, gpuId, cpuId, rows);
  }
  // Matrix-vector products and decode attention with the defaults and with each kernel variant: a process each.
  const kernels: KernelReport[] = [];
  if (want('kernels') && elapsedS() < BUDGET_S) {
    for (const [i, v] of [{ label: 'default', env: {} }, ...KERNEL_VARIANTS].entries()) {
      const outFile = path.join(work, `kernels-${i}.json`);
      const err = await startChild('kernels-child.js', [outFile, v.label, ...(simulate ? ['--device', 'cpu-standin'] : []), ...(QUICK ? ['--quick'] : [])], 120, { ...process.env, ...v.env });
      if (existsSync(outFile)) kernels.push(JSON.parse(readFileSync(outFile, 'utf8')) as KernelReport);
      log(`kernels (${v.label}): ${err ?? 'done'}`);
    }
  }
  results.kernels = kernels;
  const notRun = (section: (typeof SECTIONS)[number]) => (want(section) ? 'not run (out of time)' : 'not chosen (TANDEM_DEVICE_SECTIONS)');
  let e2eTiming: Record<string, unknown> | string = notRun('timing');
  let strategies: StrategyReport | string = notRun('strategies');
  let policies: PolicyReport[] | string = notRun('policies');
  const bigName = QUICK ? 'tiny llama q8_0' : `Llama-3-8B shapes, ${BIG_LAYERS} of 32 layers, q8_0`;
  const bigError = await bigReady;
  if (bigError) {
    e2eTiming = strategies = `model not written: ${bigError}`;
  } else if (executorOnGpu && elapsedS() < BUDGET_S) {
    // Whole model on the device against the CPU alone: a long prefill and decode steps.
    if (want('timing')) {
      const g = runChild(bigFile, 'gpu', path.join(work, 'gpu-t.json'), true, Boolean(simulate));
      const c = runChild(bigFile, 'cpu', path.join(work, 'cpu-t.json'), true, false);
      e2eTiming = { model: bigName, gpu: typeof g === 'string' ? g : g.timing, cpu: typeof c === 'string' ? c : c.timing };
      log(`e2e timing done`);
    }
    // The strategies under a capped device KV: the device holds deviceSeqs' KV, the host the rest.
    const regimes: Regime[] = QUICK
      ? [{ context: 64, deviceSeqs: 2, hostSeqs: 2 }]
      : [{ context: 1024, deviceSeqs: 16, hostSeqs: 16 }, { context: 2048, deviceSeqs: 8, hostSeqs: 24 }, { context: 512, deviceSeqs: 32, hostSeqs: 8 }];
    const outFile = path.join(work, 'strategies.json');
    if (want('strategies')) {
      const err = await startChild('strategy-child.js', [bigFile, outFile, JSON.stringify(regimes), ...(simulate ? ['--device', 'cpu-standin'] : [])], 120);
      strategies = err ?? (JSON.parse(readFileSync(outFile, 'utf8')) as StrategyReport);
      log(`strategies: ${typeof strategies === 'string' ? strategies : 'done'}`);
    }
    // The policies serving one batch of requests through the public API, device KV capped to a
    // third of them: decode-heavy (APEX's regime), then long prompts where CPU attention is dear.
    const kvPerToken = QUICK ? 2 * 2 * 64 * 4 : BIG_LAYERS * 8 * 128 * 4;
    const workloads: PolicyWorkload[] = QUICK
      ? [{ policies: ['gpu-only', 'overlap', 'auto'], requests: 6, promptTokens: 32, maxTokens: 16, kvDeviceBytes: 0, kvHostBytes: 0 }]
      : [
          { policies: ['gpu-only', 'pipeline', 'overlap', 'auto'], requests: 48, promptTokens: 512, maxTokens: 128, kvDeviceBytes: 0, kvHostBytes: 0 },
          { policies: ['gpu-only', 'overlap', 'auto'], requests: 32, promptTokens: 1536, maxTokens: 64, kvDeviceBytes: 0, kvHostBytes: 0 },
        ];
    if (want('policies')) policies = [];
    for (const [i, w] of want('policies') ? workloads.entries() : []) {
      if (elapsedS() > BUDGET_S) break;
      const perRequest = (w.promptTokens + w.maxTokens + 32) * kvPerToken;
      w.kvDeviceBytes = Math.ceil(w.requests / 3) * perRequest;
      w.kvHostBytes = w.requests * perRequest;
      // One process per policy, in the workload's order: on 2026-11-28 auto, run last in a
      // process after overlap, took 1-2% longer per step than gpu-only on the same strategy.
      const report: PolicyReport = { workload: w, runs: [] };
      const errors: string[] = [];
      for (const policy of w.policies) {
        const policyFile = path.join(work, `policies-${i}-${policy}.json`);
        const err = await startChild('policy-child.js', [bigFile, policyFile, JSON.stringify({ ...w, policies: [policy] }), ...(simulate ? ['--device', 'cpu-standin'] : [])], 150);
        const got = existsSync(policyFile) ? (JSON.parse(readFileSync(policyFile, 'utf8')) as PolicyReport).runs : [];
        report.runs.push(...(got.length > 0 ? got : [{ policy, error: err ?? 'no report' }]));
        if (err) errors.push(`${policy}: ${err}`);
      }
      // auto again without streamed host KV (TANDEM_KV_STREAM=0): what streaming gives it here.
      if (i === 0 && w.policies.includes('auto') && elapsedS() < BUDGET_S) {
        const noStreamFile = path.join(work, `policies-${i}-auto-no-stream.json`);
        const nsErr = await startChild('policy-child.js', [bigFile, noStreamFile, JSON.stringify({ ...w, policies: ['auto'] }), ...(simulate ? ['--device', 'cpu-standin'] : [])], 150,
          { ...process.env, TANDEM_KV_STREAM: '0' });
        const got = existsSync(noStreamFile) ? (JSON.parse(readFileSync(noStreamFile, 'utf8')) as PolicyReport).runs : [];
        const label = 'auto, no streamed KV (TANDEM_KV_STREAM=0)';
        report.runs.push(...(got.length > 0 ? got.map((r) => ({ ...r, policy: label })) : [{ policy: label, error: nsErr ?? 'no report' }]));
        if (nsErr) errors.push(`${label}: ${nsErr}`);
      }
      const err = errors.length > 0 ? errors.join('\n') : undefined;
      if (err) report.error = err;
      report.replay = replayOf(report);
      (policies as PolicyReport[]).push(report);
      savePartial(outDir, { policies });
      log(`policies (workload ${i + 1}): ${err ?? 'done'}`);
      // The decode-heavy workload's gpu-only again under each kernel variant.
      for (const [vi, variant] of (i === 0 && want('kernels') ? KERNEL_VARIANTS : []).entries()) {
        if (elapsedS() > BUDGET_S) break;
        const altFile = path.join(work, `policies-alt-${vi}.json`);
        const altWorkload: PolicyWorkload = { ...w, policies: ['gpu-only'] };
        const altErr = await startChild('policy-child.js', [bigFile, altFile, JSON.stringify(altWorkload), ...(simulate ? ['--device', 'cpu-standin'] : [])], 150,
          { ...process.env, ...variant.env });
        const alt: PolicyReport = existsSync(altFile) ? (JSON.parse(readFileSync(altFile, 'utf8')) as PolicyReport) : { workload: altWorkload, runs: [], error: altErr ?? 'no report' };
        if (altErr) alt.error = altErr;
        alt.label = variant.label;
        (policies as PolicyReport[]).push(alt);
        log(`policies (workload 1, gpu-only, ${variant.label}): ${altErr ?? 'done'}`);
      }
    }
  }
  // MoE expert offload: each file under each expert policy at the same device budget.
  const experts: { name: string; report: ExpertsReport | string }[] = [];
  for (const [i, moe] of moeModels.entries()) for (const share of EXPERT_BUDGET_SHARES) {
    const name = EXPERT_BUDGET_SHARES.length > 1 ? `${moe.name}, ${Math.round(share * 100)}% of the file on the device` : moe.name;
    let report: ExpertsReport | string = 'not run (out of time, or the executor put no work on the GPU)';
    const moeError = await moe.ready;
    if (moeError) report = `model not written: ${moeError}`;
    else if (executorOnGpu && elapsedS() < BUDGET_S) {
      // By default dense weights plus about a third of the experts fit the budget (40% of the
      // file); n* from DESIGN.md's formula with a PCIe-class link (25 GB/s) and the CPU's expert
      // rate (50 GFLOP/s a core).
      const budget = Math.floor(statSync(moe.file).size * share);
      const nStar = Math.max(1, Math.ceil(crossoverFormula(8.5, EXPERT_ROOFLINE.cpuFlopsPerCore * m.cpuCores, 25e9)));
      // One process per policy: a crash costs that policy's numbers, and its stderr says where.
      const runs: ExpertRun[] = [];
      const errors: string[] = [];
      // llama.cpp's first-N-layers split with half of this file's layers on the CPU.
      const moePolicies = EXPERT_POLICIES.map((p) => (p.startsWith('cpu-first-layers:') ? `cpu-first-layers:${Math.floor(moe.nLayer / 2)}` : p));
      for (const policy of moePolicies) {
        if (elapsedS() > BUDGET_S) break;
        const outFile = path.join(work, `experts-${i}.json`);
        rmSync(outFile, { force: true });
        // A whole gpt-oss stack loads and decodes about six times as long as 4 of its layers.
        const err = await startChild('experts-child.js', [moe.file, outFile, String(budget), String(nStar), policy, ...(simulate ? ['--device', 'cpu-standin'] : [])], moe.nLayer >= 24 ? 300 : 90);
        const got: ExpertRun[] = existsSync(outFile) ? (JSON.parse(readFileSync(outFile, 'utf8')) as ExpertRun[]) : [];
        runs.push(...got);
        for (const batch of [1, 16]) {
          if (err && !got.some((r) => r.batch === batch)) runs.push({ policy, batch, budgetBytes: budget, error: err.split('\n')[0]!.slice(0, 120) });
        }
        if (err) errors.push(`${policy}: ${err}`);
        log(`experts (${name}) ${policy}: ${err ?? 'done'}`);
      }
      report = { budgetBytes: budget, nStar, runs, ...(errors.length > 0 ? { error: errors.join('\n') } : {}) };
    }
    experts.push({ name, report });
    savePartial(outDir, { policies, experts });
  }
  results.experts = experts;

  // The profiles the policies were fitted on, for the cost model's later study.
  if (existsSync(path.join(work, 'profiles'))) cpSync(path.join(work, 'profiles'), path.join(outDir, 'profiles'), { recursive: true });
  rmSync(work, { recursive: true, force: true });
  results.timings = { matmulAndAttention: rows, estimates, endToEnd: e2eTiming };
  results.strategies = strategies;
  results.policies = policies;
  md.push(`## Timings (${gpu.deviceName} vs ${cpuId}, same machine, same run)`, '', '| op | type | rows | GPU | CPU | GPU speed-up |', '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.what} | ${r.type} | ${r.tokens} | ${fmtUs(r.gpuUs)} | ${fmtUs(r.cpuUs)} | ${(r.cpuUs / r.gpuUs).toFixed(1)}x |`), '',
    '| model | type | estimate (sum of op timings) | GPU | CPU |', '|---|---|---|---|---|',
    ...estimates.map((e) => `| ${e.model} | ${e.type} | ${e.what} | ${(e.gpu as number).toFixed(1)} | ${(e.cpu as number).toFixed(1)} |`), '');
  md.push(...kernelTable(kernels));
  md.push('End-to-end timing (executor):', '', '```', JSON.stringify(e2eTiming, null, 1), '```', '');
  md.push(...strategyTable(bigName, strategies), ...(typeof policies === 'string' ? policyTable(bigName, policies) : policies.flatMap((p) => policyTable(bigName, p))), ...experts.flatMap((x) => expertsTable(x.name, x.report)));

  writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 2));
  writeFileSync(path.join(outDir, 'results.md'), md.join('\n'));
  console.log(md.join('\n'));
  if (failed.length > 0) process.exitCode = 1;
}

main().catch((err) => {
  console.error(`gpu-check: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
