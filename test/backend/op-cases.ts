// The one list of op cases that every loaded backend runs against the CPU reference
// ('cpu:ref'), ggml's test-backend-ops idea: every op of the backend table, every weight type,
// odd sizes, decode (matrix-vector) and prefill (tiled) shapes. Each case builds its inputs
// from a seed, runs through the generic op runner (native().backendOps) on a backend id, and
// states per output how close it must be to the reference as normalised squared error (0:
// identical bits). ops-all-backends.test.ts and bench/device/gpu-check.ts both use it.
import type { NativeBackendOps } from '../../src/native/binding.js';

export const REFERENCE_ID = 'cpu:ref';

export const WEIGHT_TYPES = [
  'f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_K', 'q3_K', 'q4_K', 'q5_K', 'q6_K', 'mxfp4', 'iq4_nl', 'iq4_xs',
  'iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s',
] as const;
export type WeightTypeName = (typeof WEIGHT_TYPES)[number];

type Outputs = Record<string, Float32Array | Int32Array | Uint8Array>;

export interface OpCase {
  /** Backend table member the case exercises. */
  op: string;
  /** Unique, readable: op, type and shape. */
  name: string;
  /** Runs the case on backend `id`; the same inputs every call. */
  run(ops: NativeBackendOps, id: string): Outputs;
  /** Largest normalised squared error allowed per output on backend `id` (0: bit-identical). */
  tolerance(id: string, output: string): number;
}

export interface CaseResult {
  op: string;
  name: string;
  id: string;
  pass: boolean;
  /** Worst output's error and its allowance. */
  nmse: number;
  tolerance: number;
  detail: string;
}

/** Seeded uniform values in [-scale, scale) (an LCG: reproducible, not good, noise). */
export function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 31 - 1) * scale;
  }
  return out;
}

/** sum (a - b)^2 / sum b^2; Infinity for a length mismatch, NaN anywhere gives NaN (a failure). */
export function nmse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return num / Math.max(den, 1e-30);
}

/** Element by element the same numbers (NaN equals NaN, 0 and -0 differ). */
export function identical(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

const isCpuSimd = (id: string) => id.startsWith('cpu:') && id !== REFERENCE_ID;

/** Elements per block: 256 for the K types, IQ4_XS and the IQ2/IQ3 types (super-blocks), 32 for the rest. */
export function blockSize(type: string): number {
  if (type === 'f32' || type === 'f16' || type === 'bf16') return 1;
  return type.endsWith('_K') || (type.startsWith('iq') && type !== 'iq4_nl') ? 256 : 32;
}

/** Row lengths for a type: an exact block and an odd number of blocks (SIMD tails, partial tiles). */
function colsFor(type: string): [number, number] {
  const bs = blockSize(type);
  if (bs === 1) return [33, 257];
  if (bs === 32) return [96, 544];
  return [256, 768];
}

/**
 * Matmul allowance: with activations quantized the same way the only difference is summation
 * order. x86 SIMD CPU kernels quantize q8_0 activations with ties to even where the reference
 * (and the GPU kernels) round half away from zero, which can move a level by one.
 */
function matmulTolerance(type: string, id: string): number {
  const q8_0Family = type === 'q8_0' || type === 'q4_0' || type === 'q5_0' || type === 'mxfp4' || type === 'iq4_nl';
  return isCpuSimd(id) && q8_0Family ? 1e-4 : 1e-9;
}

function matmulCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const type of WEIGHT_TYPES) {
    const [c0, c1] = colsFor(type);
    // Up to 24 rows run the matrix-vector kernel by default (in passes of 8); 70 rows the tiled
    // one. 40x1024 x 37 is one tile over long rows: a GPU with SMs to spare cuts its k range
    // into parts (matmul.cu's split-K), the emulated device's four SMs too.
    for (const [nRows, nCols, nTokens] of [[17, c0, 1], [33, c1, 3], [130, c0, 9], [67, c1, 70], [40, 1024, 37]]) {
      const w = rand(nRows * nCols, nRows * 7 + nCols, 0.3);
      const x = rand(nTokens * nCols, nTokens * 13 + nCols, 2);
      cases.push({
        op: 'matmul',
        name: `matmul ${type} ${nRows}x${nCols} x ${nTokens} tokens`,
        run: (ops, id) => ({ y: ops.matmul(id, type, w, nRows, nCols, x, nTokens) }),
        tolerance: (id) => matmulTolerance(type, id),
      });
    }
  }
  return cases;
}

/**
 * matmul_group: q/k/v-like (three matrices, the last two smaller) and gate/up-like (two) products
 * of one input. Where a backend has the op, its outputs must equal its own separate matmuls bit
 * for bit; where it has none, the case runs the matmuls (the executor's fallback).
 */
function matmulGroupCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const type of ['f16', 'q8_0', 'q4_K', 'q6_K'] as const) {
    const nCols = colsFor(type)[1];
    for (const [rows, nTokens] of [[[48, 17, 17], 1], [[33, 33], 3], [[48, 17, 17], 8], [[40, 9], 11]] as [number[], number][]) {
      const ws = rows.map((n, i) => rand(n * nCols, 31 * n + i + nCols, 0.3));
      const x = rand(nTokens * nCols, nTokens * 17 + nCols, 2);
      cases.push({
        op: 'matmul_group',
        name: `matmul_group ${type} ${rows.join('+')}x${nCols} x ${nTokens} tokens`,
        run: (ops, id) => {
          const separate = ws.map((w, i) => ops.matmul(id, type, w, rows[i]!, nCols, x, nTokens));
          const g = ops.matmulGroup(id, type, ws, rows, nCols, x, nTokens);
          const ys = g.ys ?? separate;
          ys.forEach((y, i) => {
            if (!identical(y, separate[i]!)) throw new Error(`matmul_group output ${i} on ${id} differs from its own matmul`);
          });
          return Object.fromEntries(ys.map((y, i) => [`y${i}`, y]));
        },
        tolerance: (id) => matmulTolerance(type, id),
      });
    }
  }
  return cases;
}

function getRowsCases(): OpCase[] {
  return WEIGHT_TYPES.map((type) => {
    const nCols = colsFor(type)[1];
    const nRows = 9;
    const w = rand(nRows * nCols, 5 + nCols);
    const ids = Int32Array.from([8, 0, 3, 3, 7]);
    return {
      op: 'get_rows',
      name: `get_rows ${type} ${nRows}x${nCols}`,
      run: (ops, id) => ({ rows: ops.getRows(id, type, w, nRows, nCols, ids) }),
      tolerance: () => 0,
    };
  });
}

function rowOpCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const [nRows, nCols] of [[1, 1], [3, 7], [65, 257], [4, 4096]]) {
    const x = rand(nRows * nCols, nRows + nCols, 3);
    const w = rand(nCols, 99 + nCols);
    cases.push({
      op: 'rms_norm',
      name: `rms_norm ${nRows}x${nCols}`,
      run: (ops, id) => ({ y: ops.rmsNorm(id, x, w, nRows, nCols, 1e-5), plain: ops.rmsNorm(id, x, null, nRows, nCols, 1e-6) }),
      tolerance: () => 1e-12,
    });
    const bias = rand(nCols, 3);
    const full = rand(nRows * nCols, 4);
    cases.push({
      op: 'add/mul',
      name: `add and mul ${nRows}x${nCols}, broadcast and full`,
      run: (ops, id) => ({
        addBroadcast: ops.add(id, x, bias, nRows, nCols, 0),
        addFull: ops.add(id, x, full, nRows, nCols, nCols),
        mulBroadcast: ops.mul(id, x, bias, nRows, nCols, 0),
        mulFull: ops.mul(id, x, full, nRows, nCols, nCols),
      }),
      tolerance: () => 0,
    });
    const g = rand(nRows * nCols, 6, 6);
    const s = rand(nRows, 8, 4);
    cases.push({
      op: 'swiglu/scale_rows',
      name: `swiglu and scale_rows ${nRows}x${nCols}`,
      run: (ops, id) => ({
        swiglu: ops.swiglu(id, g, x),
        scaled: ops.scaleRows(id, x, s, nRows, nCols, 'identity'),
        gated: ops.scaleRows(id, x, s, nRows, nCols, 'sigmoid'),
      }),
      tolerance: (_id, out) => (out === 'scaled' ? 0 : 1e-12),
    });
    // GeGLU's gate over (-12, 12): both clamps and the f16 rounding in between (a GPU computes
    // gelu with its own tanhf, which may round one f16 value the other way).
    const gg = rand(nRows * nCols, 7, 12);
    cases.push({
      op: 'geglu/scale',
      name: `geglu, scale and softcap ${nRows}x${nCols}`,
      run: (ops, id) => ({
        geglu: ops.geglu(id, gg, x),
        scale: ops.scale(id, x, 33.941125),
        // gemma2's final logits: a GPU's tanhf may differ from the host's by an ulp.
        softcap: ops.softcap(id, gg, 2.5),
      }),
      tolerance: (_id, out) => (out === 'scale' ? 0 : out === 'softcap' ? 1e-12 : 1e-9),
    });
  }
  for (const mode of ['norm', 'neox'] as const) {
    for (const [nTokens, nHeads, headDim, ropeDim, maxPos] of [[5, 3, 64, 64, 40], [7, 2, 80, 32, 5000], [2, 4, 128, 128, 32767]]) {
      const x = rand(nTokens * nHeads * headDim, nTokens * 31 + headDim, 2);
      const pos = Int32Array.from({ length: nTokens }, (_, i) => Math.floor((maxPos * (i + 1)) / nTokens));
      cases.push({
        op: 'rope',
        name: `rope ${mode} ${nTokens} tokens x ${nHeads} heads x ${headDim} (rope ${ropeDim}, positions to ${maxPos})`,
        run: (ops, id) => ({ y: ops.rope(id, x, pos, nHeads, headDim, ropeDim, mode, 10000, 1) }),
        // Angles up to 3e4 radians: one ulp of cos/sin differs between libm and the device.
        tolerance: () => 1e-10,
      });
    }
    // YaRN: gpt-oss's settings (factor 32 from 4096, theta 150000), then partial dims with half
    // extrapolation and an attention factor.
    const yarnCases = [
      { nTokens: 6, nHeads: 3, headDim: 64, ropeDim: 64, maxPos: 20000, base: 150000, scale: 1 / 32, yarn: { extFactor: 1, attnFactor: 1, betaFast: 32, betaSlow: 1, nCtxOrig: 4096 } },
      { nTokens: 5, nHeads: 2, headDim: 80, ropeDim: 32, maxPos: 300, base: 10000, scale: 0.25, yarn: { extFactor: 0.5, attnFactor: 0.8, betaFast: 16, betaSlow: 2, nCtxOrig: 48 } },
    ];
    for (const c of yarnCases) {
      const x = rand(c.nTokens * c.nHeads * c.headDim, c.nTokens * 37 + c.headDim, 2);
      const pos = Int32Array.from({ length: c.nTokens }, (_, i) => Math.floor((c.maxPos * (i + 1)) / c.nTokens));
      cases.push({
        op: 'rope',
        name: `rope ${mode} YaRN ${c.nTokens} tokens x ${c.nHeads} heads x ${c.headDim} (rope ${c.ropeDim}, factor ${1 / c.scale} from ${c.yarn.nCtxOrig}, ext ${c.yarn.extFactor})`,
        run: (ops, id) => ({ y: ops.rope(id, x, pos, c.nHeads, c.headDim, c.ropeDim, mode, c.base, c.scale, c.yarn) }),
        tolerance: () => 1e-10,
      });
    }
  }
  return cases;
}

interface AttnSpec {
  label: string;
  kvType: 'f16' | 'f32';
  blockTokens: number;
  nKvHeads: number;
  nHeads: number;
  headDim: number;
  headDimV: number;
  seqs: [number, number][]; // [startPos, nTokens]
  sinks?: boolean; // a sink logit per head (gpt-oss)
  window?: number; // sliding window, in positions
  softcap?: number; // gemma2's score cap
}

function attentionCases(): OpCase[] {
  const specs: AttnSpec[] = [
    { label: 'decode, GQA 4, three sequences', kvType: 'f16', blockTokens: 16, nKvHeads: 2, nHeads: 8, headDim: 64, headDimV: 64, seqs: [[37, 1], [0, 1], [100, 1]] },
    { label: 'prefill, odd blocks', kvType: 'f16', blockTokens: 5, nKvHeads: 2, nHeads: 4, headDim: 128, headDimV: 128, seqs: [[0, 20], [13, 7]] },
    { label: 'f32 cache, 256-wide heads', kvType: 'f32', blockTokens: 8, nKvHeads: 2, nHeads: 2, headDim: 256, headDimV: 256, seqs: [[40, 3]] },
    { label: 'MQA, K 96 wide and V 64', kvType: 'f16', blockTokens: 7, nKvHeads: 1, nHeads: 6, headDim: 96, headDimV: 64, seqs: [[9, 2], [30, 1]] },
    { label: 'long decode (position splits on a GPU)', kvType: 'f16', blockTokens: 32, nKvHeads: 2, nHeads: 4, headDim: 64, headDimV: 64, seqs: [[1500, 1]] },
    { label: 'prefill, 70 tokens, GQA 8', kvType: 'f16', blockTokens: 16, nKvHeads: 1, nHeads: 8, headDim: 64, headDimV: 64, seqs: [[3, 70]] },
    // gpt-oss: sinks, sliding windows shorter than the context (rows of one GPU block then start
    // at different positions), and both, in decode, prefill and mixed batches.
    { label: 'decode with sinks, GQA 4, three sequences', kvType: 'f16', blockTokens: 16, nKvHeads: 2, nHeads: 8, headDim: 64, headDimV: 64, seqs: [[37, 1], [0, 1], [100, 1]], sinks: true },
    { label: 'decode, window 24, three sequences', kvType: 'f16', blockTokens: 16, nKvHeads: 2, nHeads: 8, headDim: 64, headDimV: 64, seqs: [[37, 1], [5, 1], [100, 1]], window: 24 },
    { label: 'long decode, window 128 (position splits on a GPU)', kvType: 'f16', blockTokens: 32, nKvHeads: 2, nHeads: 4, headDim: 64, headDimV: 64, seqs: [[1500, 1]], window: 128 },
    { label: 'long decode, window 700, sinks (position splits on a GPU)', kvType: 'f16', blockTokens: 32, nKvHeads: 2, nHeads: 4, headDim: 64, headDimV: 64, seqs: [[1500, 1]], window: 700, sinks: true },
    { label: 'prefill, odd blocks, window 6', kvType: 'f16', blockTokens: 5, nKvHeads: 2, nHeads: 4, headDim: 128, headDimV: 128, seqs: [[0, 20], [13, 7]], window: 6 },
    { label: 'prefill, 70 tokens, GQA 8, window 16, sinks', kvType: 'f16', blockTokens: 16, nKvHeads: 1, nHeads: 8, headDim: 64, headDimV: 64, seqs: [[3, 70]], window: 16, sinks: true },
    { label: 'mixed batch, window 9, sinks', kvType: 'f32', blockTokens: 8, nKvHeads: 2, nHeads: 4, headDim: 256, headDimV: 256, seqs: [[40, 3], [0, 12], [6, 1], [2, 30]], window: 9, sinks: true },
    { label: 'MQA, K 96 wide and V 64, window 4, sinks', kvType: 'f16', blockTokens: 7, nKvHeads: 1, nHeads: 6, headDim: 96, headDimV: 64, seqs: [[9, 2], [30, 1], [0, 5]], window: 4, sinks: true },
    // Decode whose rows fit one warp (the GPU's warps then split the positions), per head-size class.
    { label: 'decode, 128-wide heads, GQA 4, two sequences', kvType: 'f16', blockTokens: 16, nKvHeads: 2, nHeads: 8, headDim: 128, headDimV: 128, seqs: [[200, 1], [33, 1]] },
    { label: 'decode, GQA 8, window 24, sinks (gpt-oss)', kvType: 'f16', blockTokens: 16, nKvHeads: 1, nHeads: 8, headDim: 64, headDimV: 64, seqs: [[90, 1], [3, 1]], window: 24, sinks: true },
    { label: 'decode, MQA, K 96 wide and V 64', kvType: 'f16', blockTokens: 7, nKvHeads: 1, nHeads: 6, headDim: 96, headDimV: 64, seqs: [[50, 1], [0, 1]] },
    { label: 'decode, f32 cache, 256-wide heads, two tokens', kvType: 'f32', blockTokens: 8, nKvHeads: 2, nHeads: 4, headDim: 256, headDimV: 256, seqs: [[61, 2]] },
    // gemma2: scores soft-capped (a cap near the scores' size bends them), 256-wide heads,
    // every other layer windowed; decode, prefill and a long decode split over positions.
    { label: 'decode, soft cap 1, 256-wide heads (gemma2)', kvType: 'f16', blockTokens: 16, nKvHeads: 4, nHeads: 8, headDim: 256, headDimV: 256, seqs: [[70, 1], [5, 1]], softcap: 1 },
    { label: 'prefill, soft cap 0.5, window 16 (gemma2)', kvType: 'f16', blockTokens: 16, nKvHeads: 2, nHeads: 4, headDim: 256, headDimV: 256, seqs: [[0, 40], [9, 3]], window: 16, softcap: 0.5 },
    { label: 'long decode, soft cap 2 (position splits on a GPU)', kvType: 'f16', blockTokens: 32, nKvHeads: 2, nHeads: 4, headDim: 64, headDimV: 64, seqs: [[1500, 1]], softcap: 2 },
  ];
  return specs.map((s, si) => {
    let next = 0;
    const perSeq = s.seqs.map(([start, n]) => Math.ceil((start + n) / s.blockTokens));
    const nBlocks = perSeq.reduce((a, b) => a + b, 0) + 3;
    // Block ids handed out in a scrambled order, as a long-running pool would. The stride must
    // be coprime with nBlocks: otherwise sequences share blocks and their writes race on a GPU.
    const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
    const stride = [7, 11, 13, 17].find((k) => gcd(k, nBlocks) === 1)!;
    const order = Array.from({ length: nBlocks }, (_, i) => (i * stride + 3) % nBlocks);
    const seqs = s.seqs.map(([startPos, nTokens], i) => {
      const blockTable = Int32Array.from({ length: perSeq[i] }, () => order[next++]);
      const len = startPos + nTokens;
      return {
        startPos, nTokens, blockTable,
        k: rand(len * s.nKvHeads * s.headDim, 1000 * si + 10 * i + 1),
        v: rand(len * s.nKvHeads * s.headDimV, 1000 * si + 10 * i + 2),
        q: rand(nTokens * s.nHeads * s.headDim, 1000 * si + 10 * i + 3),
      };
    });
    // Sinks of either sign and larger than most scores, so that they move the result.
    const sinks = s.sinks ? rand(s.nHeads, 500 + si, 3) : undefined;
    const opts = { ...s, nBlocks, scale: 1 / Math.sqrt(s.headDim), seqs, sinks, window: s.window, softcap: s.softcap };
    return {
      op: 'attention',
      name: `kv_store + attention: ${s.label} (${s.kvType}, ${s.nHeads}/${s.nKvHeads} heads)`,
      run: (ops: NativeBackendOps, id: string) => ({ out: ops.attention(id, opts) }),
      tolerance: () => 1e-9,
    };
  });
}

function routerCases(): OpCase[] {
  const cases: OpCase[] = [];
  const specs: [number, number, number, 'softmax' | 'sigmoid' | 'softmax_weight', boolean, number][] = [
    [5, 8, 2, 'softmax', true, 1],
    [3, 60, 4, 'softmax', false, 2.5],
    [4, 128, 8, 'sigmoid', true, 1],
    [9, 64, 6, 'softmax', true, 1],
    [7, 32, 4, 'softmax_weight', false, 1],
    [3, 128, 4, 'softmax_weight', true, 2.5],
    [4, 5, 1, 'softmax_weight', false, 1],
  ];
  specs.forEach(([nTokens, nExperts, nUsed, gating, norm, scale], i) => {
    const logits = rand(nTokens * nExperts, 77 + i, 3);
    // Ties: equal logits must come out in the reference's order.
    for (let t = 0; t < nTokens; t++) logits[t * nExperts + 1] = logits[t * nExperts + 2] = logits[t * nExperts] = 2.75;
    cases.push({
      op: 'router',
      name: `router ${gating}${norm ? ' normalised' : ''} ${nTokens} tokens, top-${nUsed} of ${nExperts}`,
      run: (ops, id) => {
        const r = ops.router(id, logits, nTokens, nExperts, nUsed, gating, norm, scale);
        return { ids: r.ids, weights: r.weights };
      },
      tolerance: (_id, out) => (out === 'ids' ? 0 : 1e-10),
    });
  });
  return cases;
}

function moeCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const type of ['f16', 'q8_0', 'q4_1', 'q4_K', 'q6_K', 'mxfp4'] as const) {
    const k = type.endsWith('_K');
    const nExp = 4;
    const nEmbd = k ? 256 : 96;
    const nFf = k ? 256 : 160;
    for (const nTokens of [1, 11]) {
      const nUsed = 2;
      const gate = rand(nExp * nFf * nEmbd, 11, 0.2);
      const up = rand(nExp * nFf * nEmbd, 12, 0.2);
      const down = rand(nExp * nEmbd * nFf, 13, 0.2);
      const x = rand(nTokens * nEmbd, 14 + nTokens);
      // Expert 3 is never used; expert 0 by most tokens.
      const ids = Int32Array.from({ length: nTokens * nUsed }, (_, i) => (i % 2 === 0 ? 0 : 1 + (i % 3 === 0 ? 1 : 0)));
      const weights = rand(nTokens * nUsed, 15).map((v) => 0.5 + Math.abs(v) / 2);
      cases.push({
        op: 'moe_ffn',
        name: `moe_ffn ${type} ${nExp} experts ${nEmbd}->${nFf}, ${nTokens} tokens top-${nUsed}`,
        run: (ops, id) => ({ y: ops.moeFfn(id, type, gate, up, down, nExp, nEmbd, nFf, x, nTokens, ids, weights, nUsed) }),
        // The SwiGLU output is quantized again for the down projection: a last-bit difference
        // upstream can move one level of one element (floats: only summation order differs).
        tolerance: () => (type === 'f16' ? 1e-9 : 1e-5),
      });
    }
  }
  // gpt-oss's expert FFN: per-expert biases on gate, up and down and the clamped SwiGLU, with a
  // limit low enough here that both clamps bite. Expert 3 has no tokens.
  for (const type of ['f32', 'q8_0', 'q4_K'] as const) {
    const k = type.endsWith('_K');
    const nExp = 4;
    const nEmbd = k ? 256 : 96;
    const nFf = k ? 256 : 64;
    for (const nTokens of [1, 11]) {
      const nUsed = 2;
      const gate = rand(nExp * nFf * nEmbd, 21, 0.3);
      const up = rand(nExp * nFf * nEmbd, 22, 0.3);
      const down = rand(nExp * nEmbd * nFf, 23, 0.2);
      const x = rand(nTokens * nEmbd, 24 + nTokens);
      const ids = Int32Array.from({ length: nTokens * nUsed }, (_, i) => (i % 2 === 0 ? 2 : i % 3));
      const weights = rand(nTokens * nUsed, 25).map((v) => 0.5 + Math.abs(v) / 2);
      const opts = {
        glu: 'swiglu_oai' as const, alpha: 1.702, limit: 1.5,
        gateBias: rand(nExp * nFf, 26, 0.5), upBias: rand(nExp * nFf, 27, 0.5), downBias: rand(nExp * nEmbd, 28, 0.5),
      };
      cases.push({
        op: 'moe_ffn',
        name: `moe_ffn swiglu_oai with biases ${type} ${nExp} experts ${nEmbd}->${nFf}, ${nTokens} tokens top-${nUsed}`,
        run: (ops, id) => ({
          y: ops.moeFfn(id, type, gate, up, down, nExp, nEmbd, nFf, x, nTokens, ids, weights, nUsed, opts),
          // Biases alone, with the plain SwiGLU.
          plain: ops.moeFfn(id, type, gate, up, down, nExp, nEmbd, nFf, x, nTokens, ids, weights, nUsed, { ...opts, glu: 'swiglu' }),
        }),
        tolerance: () => (type === 'f32' ? 1e-9 : 1e-5),
      });
    }
  }
  return cases;
}

/**
 * moe_combine: shapes [nTokens, nUsed, nCols, nRows]; positions repeat (rows shared between
 * tokens and choices) wherever nRows < nTokens * nUsed. On every backend the result must also be
 * bit for bit the chain the executor ran before the op existed (get_rows, scale_rows, add per choice).
 */
function combineCases(): OpCase[] {
  const specs: [number, number, number, number][] = [
    [1, 1, 33, 1],
    [3, 2, 257, 6],
    [5, 8, 96, 13],
    [17, 8, 1001, 40],
    [2, 3, 7, 2],
  ];
  return specs.map(([nTokens, nUsed, nCols, nRows], i) => {
    const rows = rand(nRows * nCols, 91 + i, 4);
    const pos = Int32Array.from({ length: nTokens * nUsed }, (_, s) => (s * 7 + (s % 3)) % nRows);
    const weights = rand(nTokens * nUsed, 97 + i, 1.5);
    return {
      op: 'moe_combine',
      name: `moe_combine ${nTokens} tokens x top-${nUsed}, ${nCols} columns from ${nRows} rows`,
      run: (ops, id) => {
        const y = ops.moeCombine(id, rows, nRows, pos, weights, nTokens, nUsed, nCols);
        let chain: Float32Array = new Float32Array(0);
        for (let j = 0; j < nUsed; j++) {
          const sel = pos.subarray(j * nTokens, (j + 1) * nTokens);
          const part = ops.scaleRows(id, ops.getRows(id, 'f32', rows, nRows, nCols, sel), weights.subarray(j * nTokens, (j + 1) * nTokens), nTokens, nCols, 'identity');
          chain = j === 0 ? part : ops.add(id, chain, part, nTokens, nCols, nCols);
        }
        if (!identical(y, chain)) throw new Error(`moe_combine on ${id} differs from get_rows + scale_rows + add`);
        return { y };
      },
      tolerance: () => 0,
    };
  });
}

/** The k best of each row by (larger value, lower column), as sampling orders its candidates. */
function topKReference(x: Float32Array, nRows: number, nCols: number, k: number): { vals: Float32Array; ids: Int32Array; flags: Int32Array } {
  const vals = new Float32Array(nRows * k), ids = new Int32Array(nRows * k), flags = new Int32Array(nRows);
  for (let r = 0; r < nRows; r++) {
    const row = x.subarray(r * nCols, (r + 1) * nCols);
    if (row.some((v) => Number.isNaN(v) || v === Infinity)) {
      flags[r] = 1;
      continue;
    }
    const order = Array.from({ length: nCols }, (_, i) => i).sort((a, b) => row[b]! - row[a]! || a - b);
    for (let j = 0; j < k; j++) {
      vals[r * k + j] = row[order[j]!]!;
      ids[r * k + j] = order[j]!;
    }
    if (vals[r * k] === -Infinity) {
      flags[r] = 1;
      vals.fill(0, r * k, (r + 1) * k);
      ids.fill(0, r * k, (r + 1) * k);
    }
  }
  return { vals, ids, flags };
}

/**
 * top_k_rows: vocabulary-sized rows with ties (values on a coarse grid), k from 1 (greedy) to
 * the limit, and rows the caller must read itself (NaN, +Infinity, all -Infinity), whose vals
 * and ids are unspecified and zeroed here before comparing.
 */
function topKCases(): OpCase[] {
  const specs: [number, number, number][] = [[1, 1000, 1], [3, 1000, 40], [4, 4097, 13], [2, 7, 7], [5, 32000, 64], [2, 128256, 64], [3, 50, 1]];
  return specs.map(([nRows, nCols, k], i) => {
    const x = rand(nRows * nCols, 131 + i, 8).map((v) => Math.round(v * 4) / 4);
    if (nRows >= 3) {
      x[nCols + 5] = NaN;  // row 1
      x.fill(-Infinity, 2 * nCols, 3 * nCols);  // row 2
    }
    if (nRows >= 4) x[3 * nCols + nCols - 1] = Infinity;  // row 3
    if (nRows >= 5) x.fill(-Infinity, 4 * nCols, 4 * nCols + Math.floor(nCols / 2));  // row 4: half -Infinity, not flagged
    return {
      op: 'top_k_rows',
      name: `top_k_rows ${nRows} rows of ${nCols}, k ${k}`,
      run: (ops, id) => {
        const r = ops.topKRows(id, x, nRows, nCols, k);
        for (let row = 0; row < nRows; row++) {
          if (r.flags[row] === 0) continue;
          r.vals.fill(0, row * k, (row + 1) * k);
          r.ids.fill(0, row * k, (row + 1) * k);
        }
        const want = topKReference(x, nRows, nCols, k);
        if (!identical(r.vals, want.vals) || !identical(r.ids, want.ids) || !identical(r.flags, want.flags)) {
          throw new Error(`top_k_rows on ${id} differs from a sort of each row`);
        }
        return r;
      },
      tolerance: () => 0,
    };
  });
}

function copyCases(): OpCase[] {
  return [48, 37].map((blockBytes) => {
    const pool = Uint8Array.from({ length: blockBytes * 6 }, (_, i) => (i * 31 + 7) & 255);
    const src = Int32Array.from([0, 5, 2]);
    const dst = Int32Array.from([3, 1, 4]);
    return {
      op: 'copy_blocks',
      name: `copy_blocks ${blockBytes}-byte blocks`,
      run: (ops, id) => ({ pool: ops.copyBlocks(id, pool, blockBytes, src, dst) }),
      tolerance: () => 0,
    };
  });
}

/**
 * copy_pieces as streamed host KV uses it: one layer's piece of scattered blocks (a stride
 * larger than the piece) gathered into consecutive ones, with the source in mapped host memory
 * where the backend maps it. Pieces of an odd size, of more than one 64 KiB part, and more
 * pieces than one launch carries (256).
 */
function copyPiecesCases(): OpCase[] {
  const shapes: { piece: number; stride: number; n: number }[] = [
    { piece: 48, stride: 160, n: 5 },
    { piece: 37, stride: 100, n: 4 },
    { piece: 70_000, stride: 70_016, n: 3 },
    { piece: 64, stride: 192, n: 300 },
  ];
  return shapes.flatMap(({ piece, stride, n }) => [false, true].map((mapped): OpCase => {
    const blocks = n + 3;
    const src = Uint8Array.from({ length: blocks * stride }, (_, i) => (i * 131 + 17) & 255);
    const srcIds = Int32Array.from({ length: n }, (_, i) => (i * 7 + 2) % blocks);
    const dstIds = Int32Array.from({ length: n }, (_, i) => n - 1 - i);
    return {
      op: 'copy_pieces',
      name: `copy_pieces ${n} pieces of ${piece} bytes, stride ${stride}${mapped ? ', mapped host source' : ''}`,
      run: (ops, id) => ({ out: ops.copyPieces(id, src, stride, piece, srcIds, dstIds, n * piece, piece, mapped) }),
      tolerance: () => 0,
    };
  }));
}

/** Every case, in a stable order. */
export function opCases(): OpCase[] {
  return [...matmulCases(), ...matmulGroupCases(), ...getRowsCases(), ...rowOpCases(), ...attentionCases(), ...routerCases(), ...moeCases(), ...combineCases(), ...topKCases(), ...copyCases(), ...copyPiecesCases()];
}

/** Runs one case on `id` and compares it with `reference` (the same case on cpu:ref). */
export function checkCase(ops: NativeBackendOps, id: string, c: OpCase, reference: Outputs): CaseResult {
  let got: Outputs;
  try {
    got = c.run(ops, id);
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return { op: c.op, name: c.name, id, pass: false, nmse: Infinity, tolerance: 0, detail: `threw ${e.code ?? ''} ${e.message ?? String(err)}` };
  }
  let worst = { nmse: 0, tolerance: 0, pass: true, detail: '' };
  for (const [key, want] of Object.entries(reference)) {
    const have = got[key];
    const tol = c.tolerance(id, key);
    const err = have === undefined ? Infinity : nmse(have, want);
    const pass = have !== undefined && (tol === 0 ? identical(have, want) : err <= tol);
    if (!pass || (worst.pass && err > worst.nmse)) {
      worst = { nmse: err, tolerance: tol, pass, detail: `${key}: nmse ${err.toExponential(2)} (allowed ${tol === 0 ? 'identical bits' : tol.toExponential(0)})` };
      if (!pass) break;
    }
  }
  return { op: c.op, name: c.name, id, pass: worst.pass, nmse: worst.nmse, tolerance: worst.tolerance, detail: worst.detail };
}

/**
 * Bad data that only the device sees (ids and block tables live in backend memory): each call
 * must fail with TDM_BAD_ARGUMENT, and the backend must run a good call right after.
 */
export function badDataChecks(ops: NativeBackendOps, id: string): { name: string; pass: boolean; detail: string }[] {
  const expectBad = (name: string, call: () => unknown) => {
    try {
      call();
      return { name, pass: false, detail: 'did not throw' };
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const recovered = ops.add(id, Float32Array.of(1, 2), Float32Array.of(3, 4), 1, 2, 2);
      const ok = e.code === 'TDM_BAD_ARGUMENT' && recovered[0] === 4 && recovered[1] === 6;
      return { name, pass: ok, detail: `${e.code}: ${e.message}; next call ${ok ? 'ran' : 'failed'}` };
    }
  };
  const kv = {
    kvType: 'f16' as const, blockTokens: 4, nBlocks: 2, nKvHeads: 1, nHeads: 2, headDim: 32, headDimV: 32, scale: 0.2,
    seqs: [{ startPos: 4, nTokens: 1, blockTable: Int32Array.of(0, 7), k: rand(5 * 32, 1), v: rand(5 * 32, 2), q: rand(2 * 32, 3) }],
  };
  return [
    expectBad(`${id}: get_rows id past the matrix`, () => ops.getRows(id, 'q8_0', rand(3 * 32, 1), 3, 32, Int32Array.of(1, 3))),
    expectBad(`${id}: KV block id past the pool`, () => ops.attention(id, kv)),
    expectBad(`${id}: expert id past the expert count`, () =>
      ops.moeFfn(id, 'f32', rand(2 * 4 * 8, 1), rand(2 * 4 * 8, 2), rand(2 * 8 * 4, 3), 2, 8, 4, rand(8, 4), 1, Int32Array.of(0, 5), Float32Array.of(0.5, 0.5), 2)),
    expectBad(`${id}: moe_combine position past the rows`, () =>
      ops.moeCombine(id, rand(3 * 5, 1), 3, Int32Array.of(0, 2, 1, 3), Float32Array.of(1, 2, 3, 4), 2, 2, 5)),
    expectBad(`${id}: negative moe_combine position`, () =>
      ops.moeCombine(id, rand(3 * 5, 1), 3, Int32Array.of(0, -1), Float32Array.of(1, 2), 1, 2, 5)),
    expectBad(`${id}: top_k_rows k past the limit`, () => ops.topKRows(id, rand(2 * 100, 1), 2, 100, 65)),
    expectBad(`${id}: top_k_rows k past the row`, () => ops.topKRows(id, rand(2 * 5, 1), 2, 5, 6)),
  ];
}
