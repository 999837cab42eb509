// The device check's matrix-vector sweep, in its own process (the GPU backend reads
// TANDEM_GPU_MMV_MAX_TOKENS and TANDEM_GPU_MMV_STAGE when it opens the device, so each setting
// needs a process): the matmul, matmul_group and expert op cases against the CPU reference,
// then Llama-3-8B and gpt-oss matrix shapes timed at 1 to 64 activation rows. gpu-check runs it
// with the defaults and with each variant's environment, and tabulates them side by side.
// Usage: node mmv-child.js <out.json> <variant label> [--device cpu-standin]
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
  /** 'default', or what the variant's environment changes. */
  variant: string;
  device: string;
  casesPassed: number;
  cases: number;
  failures: string[];
  timings: MmvTiming[];
}

export const MMV_TOKENS = [1, 8, 12, 16, 24, 32, 48, 64];
export const MMV_SHAPES: [string, number, number][] = [['q/o 4096x4096', 4096, 4096], ['gate/up 14336x4096', 14336, 4096], ['down 4096x14336', 4096, 14336]];
/** gpt-oss-20b's: its q8_0 query projection (rows of 2880 elements, 3060 bytes: not 16-byte aligned) and one MXFP4 expert matrix. */
export const MMV_OSS_SHAPES: [string, string, number, number][] = [['q8_0', 'oss q 4096x2880', 4096, 2880], ['mxfp4', 'oss expert 2880x2880', 2880, 2880]];
/** Bytes of one weight row of `cols` elements, for the bandwidth column. */
export function mmvRowBytes(type: string, cols: number): number {
  const perBlock: Record<string, [number, number]> = { q8_0: [34, 32], q4_K: [144, 256], f16: [2, 1], mxfp4: [17, 32] };
  const [bytes, block] = perBlock[type] ?? [4, 1];
  return (cols / block) * bytes;
}

function main(): void {
  const out = process.argv[2]!;
  const standin = process.argv.includes('cpu-standin');
  const ops = native().backendOps;
  const id = standin ? ops.ids().filter((i) => i.startsWith('cpu:')).pop()! : native().backends(true).filter((b) => b.status === 'selected').map((b) => `${b.kind}:${b.device}`)[0]!;
  const cases = opCases().filter((c) => c.op === 'matmul' || c.op === 'matmul_group' || c.op === 'moe_ffn');
  const results = cases.map((c) => checkCase(ops, id, c, c.run(ops, REFERENCE_ID)));
  const report: MmvReport = {
    variant: process.argv[3] ?? 'default',
    device: id,
    casesPassed: results.filter((r) => r.pass).length,
    cases: results.length,
    failures: results.filter((r) => !r.pass).map((r) => `${r.name}: ${r.detail}`),
    timings: [],
  };
  const shapes: [string, string, number, number][] = standin
    ? [['q8_0', '256x256 (stand-in)', 256, 256]]
    : [...['q8_0', 'q4_K', 'f16'].flatMap((type) => MMV_SHAPES.map(([shape, rows, cols]) => [type, shape, rows, cols] as [string, string, number, number])), ...MMV_OSS_SHAPES];
  for (const [type, shape, rows, cols] of shapes) {
    for (const tokens of MMV_TOKENS) report.timings.push({ type, shape, tokens, us: ops.timeMatmul(id, type, rows, cols, tokens, standin ? 2 : 20) });
  }
  writeFileSync(out, JSON.stringify(report));
}

// gpu-check imports the sizes from here: run only as a process of its own.
if (process.argv[1] === fileURLToPath(import.meta.url)) main();
