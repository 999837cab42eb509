// The device check's matrix-vector sweep, in its own process (the GPU backend reads
// TANDEM_GPU_MMV_MAX_TOKENS when it opens the device, so each limit needs a process): the
// matmul, matmul_group and expert op cases against the CPU reference, then Llama-3-8B matrix
// shapes timed at 1 to 64 activation rows. gpu-check runs it at the default limit (tiled
// kernel above 8 rows) and at a raised one, and tabulates the two side by side.
// Usage: node mmv-child.js <out.json> [--device cpu-standin]
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/binding.js';
import { REFERENCE_ID, checkCase, opCases } from '../../test/backend/op-cases.js';

export interface MmvTiming {
  type: string;
  shape: string;
  tokens: number;
  us: number;
}

export interface MmvReport {
  limit: string;
  device: string;
  casesPassed: number;
  cases: number;
  failures: string[];
  timings: MmvTiming[];
}

export const MMV_TOKENS = [1, 8, 12, 16, 24, 32, 48, 64];
export const MMV_SHAPES: [string, number, number][] = [['q/o 4096x4096', 4096, 4096], ['gate/up 14336x4096', 14336, 4096], ['down 4096x14336', 4096, 14336]];

function main(): void {
  const out = process.argv[2]!;
  const standin = process.argv.includes('cpu-standin');
  const ops = native().backendOps;
  const id = standin ? ops.ids().filter((i) => i.startsWith('cpu:')).pop()! : native().backends(true).filter((b) => b.status === 'selected').map((b) => `${b.kind}:${b.device}`)[0]!;
  const cases = opCases().filter((c) => c.op === 'matmul' || c.op === 'matmul_group' || c.op === 'moe_ffn');
  const results = cases.map((c) => checkCase(ops, id, c, c.run(ops, REFERENCE_ID)));
  const report: MmvReport = {
    limit: process.env.TANDEM_GPU_MMV_MAX_TOKENS ?? 'default',
    device: id,
    casesPassed: results.filter((r) => r.pass).length,
    cases: results.length,
    failures: results.filter((r) => !r.pass).map((r) => `${r.name}: ${r.detail}`),
    timings: [],
  };
  for (const type of ['q8_0', 'q4_K', 'f16']) {
    for (const [shape, rows, cols] of standin ? [['256x256 (stand-in)', 256, 256] as [string, number, number]] : MMV_SHAPES) {
      for (const tokens of MMV_TOKENS) report.timings.push({ type, shape, tokens, us: ops.timeMatmul(id, type, rows, cols, tokens, standin ? 2 : 20) });
    }
  }
  writeFileSync(out, JSON.stringify(report));
}

// gpu-check imports the sizes from here: run only as a process of its own.
if (process.argv[1] === fileURLToPath(import.meta.url)) main();
