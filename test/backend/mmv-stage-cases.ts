// Matrix-vector products whose weight rows span several staging passes (kernels/matmul.cu:
// a pass is one chunk of 32 elements per lane), for emulated-mmv-stage.test.ts. Run as a
// process of its own (the GPU backend reads TANDEM_GPU_MMV_STAGE when it opens the device),
// it writes every case's outputs on both emulated devices to the JSON file it is given.
// Usage: node mmv-stage-cases.ts <out.json>   (with TANDEM_GPU_LIB_DIR at the emulated build)
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { NativeBackendOps } from '../../src/native/binding.js';
import { native } from '../../src/native/binding.js';
import { blockSize, rand } from './op-cases.js';

export const STAGE_DEVICES = ['cuda:0', 'hip:0'];

export interface StageCase {
  name: string;
  run(ops: NativeBackendOps, id: string): Float32Array[];
}

/**
 * Every quantized type at widths of 130 and 136 chunks: 5 passes of 32 lanes (3 of 64), the
 * last one partial; rows of q8_0, q6_K, q2_K, q3_K, q4_0, iq4_nl and the IQ2/IQ3 types are not
 * 16-byte aligned, so windows start mid-vector.
 * 9 activation rows take two passes over the weight row (8 + 1); matmul_group runs the list kernel.
 */
export function stageCases(): StageCase[] {
  const cases: StageCase[] = [];
  const types = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'mxfp4', 'iq4_nl', 'q2_K', 'q3_K', 'q4_K', 'q5_K', 'q6_K', 'iq4_xs',
    'iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s'];
  for (const type of types) {
    const nCols = blockSize(type) === 256 ? 136 * 32 : 130 * 32;
    for (const [nRows, nTokens] of [[5, 1], [3, 9]]) {
      const w = rand(nRows * nCols, 11 * nRows + nCols, 0.3);
      const x = rand(nTokens * nCols, 3 * nTokens + nCols, 2);
      cases.push({ name: `matmul ${type} ${nRows}x${nCols} x ${nTokens} tokens`, run: (ops, id) => [ops.matmul(id, type, w, nRows, nCols, x, nTokens)] });
    }
    const rows = [4, 2];
    const ws = rows.map((n, i) => rand(n * nCols, 5 * n + i + nCols, 0.3));
    const x = rand(2 * nCols, 7 + nCols, 2);
    cases.push({
      name: `matmul_group ${type} ${rows.join('+')}x${nCols} x 2 tokens`,
      run: (ops, id) => ops.matmulGroup(id, type, ws, rows, nCols, x, 2).ys ?? ws.map((w, i) => ops.matmul(id, type, w, rows[i]!, nCols, x, 2)),
    });
  }
  return cases;
}

function main(): void {
  const ops = native().backendOps;
  const out: Record<string, string[]> = {};
  for (const id of STAGE_DEVICES) {
    for (const c of stageCases()) out[`${id} ${c.name}`] = c.run(ops, id).map((y) => Buffer.from(y.buffer, y.byteOffset, y.byteLength).toString('base64'));
  }
  writeFileSync(process.argv[2]!, JSON.stringify(out));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
