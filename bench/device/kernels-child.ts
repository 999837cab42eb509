// The device check's kernel-variant run, in its own process (the GPU backend reads its kernel
// switches, TANDEM_GPU_MMV_MAX_TOKENS, TANDEM_GPU_MMV_STAGE and TANDEM_GPU_ATTN_WARP_ROWS, when
// it opens the device, so each setting needs a process): the matmul, matmul_group, expert and
// attention op cases against the CPU reference, then Llama-3-8B and gpt-oss matrix shapes timed
// at 1 to 64 activation rows and decode attention at 1 to 32 sequences. gpu-check runs it with
// the defaults and with each variant's environment, and tabulates them side by side.
// Usage: node kernels-child.js <out.json> <variant label> [--device cpu-standin] [--quick]
// (--quick, and the stand-in: one small shape each, for dry runs on emulated or CPU kernels)
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/binding.js';
import { REFERENCE_ID, checkCase, opCases } from '../../test/backend/op-cases.js';

export interface MatmulTiming {
  type: string;
  shape: string;
  /** The weight matrix: rows x cols. */
  rows: number;
  cols: number;
  tokens: number;
  us: number;
}

export interface AttentionTiming {
  /** e.g. '32/8 heads d128, 16 seqs x 4096' */
  shape: string;
  /** K and V bytes one call reads. */
  kvBytes: number;
  us: number;
}

export interface KernelReport {
  /** 'default', or what the variant's environment changes. */
  variant: string;
  device: string;
  casesPassed: number;
  cases: number;
  failures: string[];
  timings: MatmulTiming[];
  attention: AttentionTiming[];
}

export const MATMUL_TOKENS = [1, 8, 12, 16, 24, 32, 48, 64];
export const MATMUL_SHAPES: [string, number, number][] = [['q/o 4096x4096', 4096, 4096], ['gate/up 14336x4096', 14336, 4096], ['down 4096x14336', 4096, 14336]];
/** gpt-oss-20b's: its q8_0 query projection (rows of 2880 elements, 3060 bytes: not 16-byte aligned) and one MXFP4 expert matrix. */
export const MATMUL_OSS_SHAPES: [string, string, number, number][] = [['q8_0', 'oss q 4096x2880', 4096, 2880], ['mxfp4', 'oss expert 2880x2880', 2880, 2880]];
/** Decode attention: [query heads, KV heads, head size, sequences, cached positions] (Llama-3-8B's and gpt-oss's heads). */
export const ATTENTION_SHAPES: [number, number, number, number, number][] = [
  [32, 8, 128, 1, 1024], [32, 8, 128, 1, 4096], [32, 8, 128, 16, 1024], [32, 8, 128, 32, 4096], [64, 8, 64, 16, 2048],
];

function main(): void {
  const out = process.argv[2]!;
  const standin = process.argv.includes('cpu-standin');
  const small = standin || process.argv.includes('--quick');
  const ops = native().backendOps;
  const id = standin ? ops.ids().filter((i) => i.startsWith('cpu:')).pop()! : native().backends(true).filter((b) => b.status === 'selected').map((b) => `${b.kind}:${b.device}`)[0]!;
  const cases = opCases().filter((c) => ['matmul', 'matmul_group', 'moe_ffn', 'attention'].includes(c.op));
  const results = cases.map((c) => checkCase(ops, id, c, c.run(ops, REFERENCE_ID)));
  const report: KernelReport = {
    variant: process.argv[3] ?? 'default',
    device: id,
    casesPassed: results.filter((r) => r.pass).length,
    cases: results.length,
    failures: results.filter((r) => !r.pass).map((r) => `${r.name}: ${r.detail}`),
    timings: [],
    attention: [],
  };
  const shapes: [string, string, number, number][] = small
    ? [['q8_0', '256x256 (dry run)', 256, 256]]
    : [...['q8_0', 'q4_K', 'f16'].flatMap((type) => MATMUL_SHAPES.map(([shape, rows, cols]) => [type, shape, rows, cols] as [string, string, number, number])), ...MATMUL_OSS_SHAPES];
  for (const [type, shape, rows, cols] of shapes) {
    for (const tokens of small ? [1, 16] : MATMUL_TOKENS) report.timings.push({ type, shape, rows, cols, tokens, us: ops.timeMatmul(id, type, rows, cols, tokens, small ? 2 : 20) });
  }
  for (const [nHeads, nKvHeads, headDim, nSeqs, ctx] of small ? [[8, 2, 64, 2, 256]] : ATTENTION_SHAPES) {
    const opts = { kvType: 'f16' as const, blockTokens: 16, nKvHeads, nHeads, headDim, nSeqs, contextLen: ctx, nTokens: 1 };
    report.attention.push({
      shape: `${nHeads}/${nKvHeads} heads d${headDim}, ${nSeqs} seq x ${ctx}`,
      kvBytes: 2 * nSeqs * (ctx + 1) * nKvHeads * headDim * 2,
      us: ops.timeAttention(id, opts, small ? 2 : 20),
    });
  }
  writeFileSync(out, JSON.stringify(report));
}

// gpu-check imports the sizes from here: run only as a process of its own.
if (process.argv[1] === fileURLToPath(import.meta.url)) main();
