// Every CPU backend op, through the backend-ops binding: the scalar reference against an
// independent JS computation, and every SIMD variant this machine runs against the scalar
// reference, over many shapes with odd sizes, tolerances per op and type as normalised
// squared error (ggml's test-backend-ops).
import t from 'tap';
import { native, type NativeBackendOps } from '../../src/native/binding.js';
import { dequantize, quantize, typeInfo, vecDotF32 } from '../../src/model/quant.js';
import { identical, nmse, rand } from '../backend/op-cases.js';

/** The backend ops with a CPU kernel variant ('ref', 'avx2', ...) in place of the backend id. */
type CpuOps = { [K in Exclude<keyof NativeBackendOps, 'ids' | 'timeMatmul' | 'timeAttention'>]: NativeBackendOps[K] } & { variants(): string[] };

/** The CPU backend's variants through the generic backend-ops binding, on 2 threads so that the ops' task splits run. */
function cpuOps(): CpuOps {
  const b = native().backendOps;
  const variants = () => b.ids().filter((id) => id.startsWith('cpu:')).map((id) => id.slice('cpu:'.length));
  return new Proxy({ variants } as CpuOps, {
    get: (target, op: string) =>
      op === 'variants' ? target.variants : (variant: string, ...rest: unknown[]) => Reflect.apply(b[op as keyof NativeBackendOps], b, [`cpu:${variant}@2`, ...rest]),
  });
}

const ops = cpuOps;
const SIMD = ops().variants().filter((v) => v !== 'ref');

/** Seeded uniform generator in [-1, 1) (LCG; the tests need reproducible, not good, noise). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

/** Values as stored in f16 (to mirror what the KV cache keeps). */
const f16 = (x: Float32Array) => dequantize('f16', quantize('f16', x), x.length);
const q8 = (x: Float32Array) => dequantize('q8_0', quantize('q8_0', x), x.length);

const WEIGHT_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_K', 'q5_K', 'q6_K'];

/** Row lengths per block size: odd multiples of the block so SIMD tails and block loops both run. */
function colsFor(type: string): number[] {
  const bs = typeInfo(type).blockSize;
  if (bs === 1) return [1, 7, 33, 64, 257];
  if (bs === 32) return [32, 96, 544];
  return [256, 768];
}

// SIMD vs reference, by weight type: float types only reorder sums; the q8_0 and q8_1 families
// also quantize activations as llama.cpp's x86 code does (scale 127/max, round half to even),
// which can move a quant by one step where the reference rounds half away from zero. The K
// types use the reference q8_K quantizer (llama.cpp's x86 build does too).
const SIMD_MATMUL_NMSE: Record<string, number> = {
  f32: 1e-11, f16: 1e-11, bf16: 1e-11, q8_0: 1e-4, q4_0: 1e-4, q4_1: 1e-4, q5_0: 1e-4, q5_1: 1e-4, q4_K: 1e-11, q5_K: 1e-11, q6_K: 1e-11,
};

/** Row counts around the packed kernels' 16-row groups and token counts around their tiles
 * (8 tokens for the 32-element types, q4_K and q5_K, 6 for q6_K and the float kernels), and
 * one decode-sized matmul of many groups, which the pool splits into shrinking tasks. */
const SIMD_SHAPES: [number, number][] = [[1, 1], [17, 1], [16, 2], [33, 3], [15, 5], [31, 7], [130, 13], [48, 25], [257, 37], [257, 1]];

t.test('matmul: reference equals the per-row reference dot product with quantized activations', async (t) => {
  for (const type of WEIGHT_TYPES) {
    for (const nCols of colsFor(type)) {
      const nRows = 5;
      const nTokens = 3;
      const w = rand(nRows * nCols, 11 + nCols, 0.5);
      const x = rand(nTokens * nCols, 23 + nCols);
      const y = ops().matmul('ref', type, w, nRows, nCols, x, nTokens);
      const wq = quantize(type, w);
      const rb = wq.length / nRows;
      const expected = new Float32Array(nTokens * nRows);
      for (let tk = 0; tk < nTokens; tk++) {
        for (let r = 0; r < nRows; r++) expected[tk * nRows + r] = vecDotF32(type, wq.subarray(r * rb, (r + 1) * rb), x.subarray(tk * nCols, (tk + 1) * nCols));
      }
      t.ok(identical(y, expected), `${type} ${nRows}x${nCols} x ${nTokens} tokens`);
      // And close to plain float math on the dequantized weights (activation quantization error only).
      const wd = dequantize(type, wq, w.length);
      const plain = new Float64Array(nTokens * nRows);
      for (let tk = 0; tk < nTokens; tk++) {
        for (let r = 0; r < nRows; r++) {
          let s = 0;
          for (let k = 0; k < nCols; k++) s += wd[r * nCols + k] * x[tk * nCols + k];
          plain[tk * nRows + r] = s;
        }
      }
      const tol = type === 'f32' ? 1e-12 : type === 'f16' ? 1e-6 : type === 'bf16' ? 1e-4 : 1e-3;
      t.ok(nmse(y, plain) < tol, `${type} ${nCols}: close to float math (nmse ${nmse(y, plain).toExponential(2)} < ${tol})`);
    }
  }
});

t.test('matmul: SIMD variants against the reference', { skip: SIMD.length === 0 && 'no SIMD kernel variant on this machine' }, async (t) => {
  for (const v of SIMD) {
    for (const type of WEIGHT_TYPES) {
      for (const nCols of colsFor(type)) {
        for (const [nRows, nTokens] of SIMD_SHAPES) {
          const w = rand(nRows * nCols, nRows * 7 + nCols, 0.3);
          const x = rand(nTokens * nCols, nTokens * 13 + nCols, 2);
          const ref = ops().matmul('ref', type, w, nRows, nCols, x, nTokens);
          const got = ops().matmul(v, type, w, nRows, nCols, x, nTokens);
          const e = nmse(got, ref);
          t.ok(e <= SIMD_MATMUL_NMSE[type], `${v} ${type} ${nRows}x${nCols} x ${nTokens}: nmse ${e.toExponential(2)}`);
        }
      }
    }
  }
});

// llama.cpp's x86 CPU build sums each weight type in one fixed float order: eight fma lanes per
// row for the types it dot-products as stored (q8_0, q5_0, q4_1, q5_1, q5_K, q6_K), whole
// blocks for its repacked q4_0, and pairs of sub-blocks for its repacked q4_K. Both SIMD
// variants follow that order, packed or not, so they agree to the last bit (the scalar
// reference sums in plain order and is checked by tolerance above).
t.test('matmul: every SIMD variant, packed or not, gives the AVX2 bits for every quantized type', {
  skip: !(SIMD.includes('avx2') && SIMD.length > 1) && 'needs the avx2 variant and another one',
}, async (t) => {
  for (const v of SIMD.filter((id) => id !== 'avx2')) {
    for (const type of WEIGHT_TYPES.filter((ty) => typeInfo(ty).blockSize > 1)) {
      for (const nCols of colsFor(type)) {
        for (const [nRows, nTokens] of [[17, 1], [33, 3], [130, 13]] as const) {
          const w = rand(nRows * nCols, nRows * 5 + nCols, 0.3);
          const x = rand(nTokens * nCols, nTokens * 11 + nCols, 2);
          const a = ops().matmul('avx2', type, w, nRows, nCols, x, nTokens);
          const b = ops().matmul(v, type, w, nRows, nCols, x, nTokens);
          t.ok(identical(a, b), `${type} ${nRows}x${nCols} x ${nTokens}: avx2 = ${v} (nmse ${nmse(a, b).toExponential(2)})`);
        }
      }
    }
  }
});

t.test('matmul: a token computes the same bits alone as inside any batch, in every variant', { skip: SIMD.length === 0 && 'no SIMD kernel variant on this machine' }, async (t) => {
  for (const v of ['ref', ...SIMD]) {
    for (const type of WEIGHT_TYPES) {
      const nCols = colsFor(type)[1];
      const nRows = 35;
      const nTokens = 14;
      const w = rand(nRows * nCols, 3 + nCols, 0.4);
      const x = rand(nTokens * nCols, 5 + nCols, 1.5);
      const batch = ops().matmul(v, type, w, nRows, nCols, x, nTokens);
      let same = true;
      for (const tk of [0, 5, 11, 13]) {
        const alone = ops().matmul(v, type, w, nRows, nCols, x.subarray(tk * nCols, (tk + 1) * nCols), 1);
        if (!identical(alone, batch.subarray(tk * nRows, (tk + 1) * nRows))) same = false;
      }
      t.ok(same, `${v} ${type}: rows of tokens 0, 5, 11, 13 alone = in a batch of ${nTokens}`);
    }
  }
});

t.test("SIMD q8_0 and q8_1 activations round half to even, as llama.cpp's x86 quantizer does", { skip: SIMD.length === 0 && 'no SIMD kernel variant on this machine' }, async (t) => {
  // Weights pick one activation each (row r is 1 at column r), so y shows the activation
  // quants: with amax 127 the scale is 1 and x = 2.5, -3.5, 0.5 are exact ties.
  const nCols = 32;
  const w = new Float32Array(nCols * nCols);
  for (let r = 0; r < nCols; r++) w[r * nCols + r] = 1;
  const x = new Float32Array(nCols);
  x.set([127, 2.5, -3.5, 0.5, -0.5, 1.5, 6.25]);
  for (const type of ['q8_0', 'q4_1']) {
    const level = (y: Float32Array) => Array.from(y.subarray(1, 6), (v) => Math.round(v / y[0] * 127));
    t.same(level(ops().matmul('ref', type, w, nCols, nCols, x, 1)), [3, -4, 1, -1, 2], `ref ${type}: half away from zero`);
    for (const v of SIMD) t.same(level(ops().matmul(v, type, w, nCols, nCols, x, 1)), [2, -4, 0, 0, 2], `${v} ${type}: half to even`);
  }
});

t.test('get_rows dequantizes exactly, in every variant', async (t) => {
  for (const type of WEIGHT_TYPES) {
    const nCols = colsFor(type)[1];
    const nRows = 9;
    const w = rand(nRows * nCols, 5 + nCols);
    const ids = Int32Array.from([8, 0, 3, 3, 7]);
    const all = dequantize(type, quantize(type, w), w.length);
    const expected = Float32Array.from(Array.from(ids).flatMap((id) => Array.from(all.subarray(id * nCols, (id + 1) * nCols))));
    for (const v of ['ref', ...SIMD]) t.ok(identical(ops().getRows(v, type, w, nRows, nCols, ids), expected), `${v} ${type}`);
  }
  t.throws(() => ops().getRows('ref', 'f32', rand(8, 1), 2, 4, Int32Array.of(2)), { code: 'TDM_BAD_ARGUMENT', message: /row id 2/ });
});

t.test('rms_norm, add, mul, swiglu and scale_rows against JS', async (t) => {
  for (const v of ['ref', ...SIMD]) {
    for (const [nRows, nCols] of [[1, 1], [3, 7], [4, 64], [65, 257]]) {
      const x = rand(nRows * nCols, nRows + nCols, 3);
      const w = rand(nCols, 99 + nCols);
      const eps = 1e-5;
      const expected = new Float32Array(nRows * nCols);
      for (let r = 0; r < nRows; r++) {
        let s = 0;
        for (let i = 0; i < nCols; i++) s += x[r * nCols + i] ** 2;
        const scale = 1 / Math.sqrt(s / nCols + eps);
        for (let i = 0; i < nCols; i++) expected[r * nCols + i] = x[r * nCols + i] * scale * w[i];
      }
      t.ok(nmse(ops().rmsNorm(v, x, w, nRows, nCols, eps), expected) < 1e-12, `${v} rms_norm ${nRows}x${nCols}`);
      t.ok(nmse(ops().rmsNorm(v, x, null, nRows, nCols, eps), expected.map((e, i) => e / w[i % nCols])) < 1e-10, `${v} rms_norm without weight`);

      const bias = rand(nCols, 3);
      const full = rand(nRows * nCols, 4);
      t.ok(identical(ops().add(v, x, bias, nRows, nCols, 0), x.map((a, i) => Math.fround(a + bias[i % nCols]))), `${v} add broadcast ${nRows}x${nCols}`);
      t.ok(identical(ops().add(v, x, full, nRows, nCols, nCols), x.map((a, i) => Math.fround(a + full[i]))), `${v} add ${nRows}x${nCols}`);
      t.ok(identical(ops().mul(v, x, bias, nRows, nCols, 0), x.map((a, i) => Math.fround(a * bias[i % nCols]))), `${v} mul broadcast`);

      const g = rand(nRows * nCols, 6, 6);
      const sw = ops().swiglu(v, g, x);
      t.ok(nmse(sw, g.map((gi, i) => (gi / (1 + Math.exp(-gi))) * x[i])) < 1e-12, `${v} swiglu n=${g.length}`);

      const s = rand(nRows, 8, 4);
      const sig = ops().scaleRows(v, x, s, nRows, nCols, 'sigmoid');
      t.ok(nmse(sig, x.map((a, i) => a / (1 + Math.exp(-s[Math.floor(i / nCols)])))) < 1e-12, `${v} scale_rows sigmoid`);
      t.ok(identical(ops().scaleRows(v, x, s, nRows, nCols, 'identity'), x.map((a, i) => Math.fround(a * s[Math.floor(i / nCols)]))), `${v} scale_rows`);
    }
  }
});

t.test('rope (norm and neox, partial rotary dims) against JS', async (t) => {
  const cases = [
    { nHeads: 1, headDim: 2, ropeDim: 2 },
    { nHeads: 3, headDim: 8, ropeDim: 8 },
    { nHeads: 4, headDim: 64, ropeDim: 32 },
    { nHeads: 2, headDim: 80, ropeDim: 80 },
  ];
  for (const v of ['ref', ...SIMD]) {
    for (const mode of ['norm', 'neox'] as const) {
      for (const c of cases) {
        const pos = Int32Array.from([0, 1, 5, 1000, 4097]);
        const x = rand(pos.length * c.nHeads * c.headDim, c.headDim + c.nHeads);
        const base = 10000;
        const scale = 0.5;
        const got = ops().rope(v, x, pos, c.nHeads, c.headDim, c.ropeDim, mode, base, scale);
        const expected = Float64Array.from(x);
        for (let tk = 0; tk < pos.length; tk++) {
          for (let h = 0; h < c.nHeads; h++) {
            const o = (tk * c.nHeads + h) * c.headDim;
            for (let i = 0; i < c.ropeDim / 2; i++) {
              const theta = pos[tk] * scale * base ** ((-2 * i) / c.ropeDim);
              const [a, b] = mode === 'norm' ? [o + 2 * i, o + 2 * i + 1] : [o + i, o + i + c.ropeDim / 2];
              expected[a] = x[a] * Math.cos(theta) - x[b] * Math.sin(theta);
              expected[b] = x[a] * Math.sin(theta) + x[b] * Math.cos(theta);
            }
          }
        }
        // The angle is built by repeated float multiplication as in ggml, so large positions drift slightly.
        const e = nmse(got, expected);
        t.ok(e < 1e-9, `${v} ${mode} heads ${c.nHeads} dim ${c.headDim} rope ${c.ropeDim}: nmse ${e.toExponential(2)}`);
        t.ok(identical(got, ops().rope('ref', x, pos, c.nHeads, c.headDim, c.ropeDim, mode, base, scale)), `${v} ${mode} equals the reference`);
      }
    }
  }
});

interface AttnCase {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  headDimV: number;
  blockTokens: number;
  seqs: { startPos: number; nTokens: number }[];
}

/** Paged causal attention in float64 over K and V rounded as the cache stores them (f16 by
 * default); queries stay f32, as llama.cpp's tiled CPU flash attention keeps them. */
function attentionJs(c: AttnCase, data: { k: Float32Array; v: Float32Array; q: Float32Array }[], scale: number, round = f16): Float32Array {
  const out: number[] = [];
  const group = c.nHeads / c.nKvHeads;
  c.seqs.forEach((s, si) => {
    const k = round(data[si].k);
    const v = round(data[si].v);
    const q = data[si].q;
    for (let i = 0; i < s.nTokens; i++) {
      const n = s.startPos + i + 1;
      for (let h = 0; h < c.nHeads; h++) {
        const kvh = Math.floor(h / group);
        const scores = new Float64Array(n);
        for (let j = 0; j < n; j++) {
          let d = 0;
          for (let e = 0; e < c.headDim; e++) d += q[(i * c.nHeads + h) * c.headDim + e] * k[(j * c.nKvHeads + kvh) * c.headDim + e];
          scores[j] = d * scale;
        }
        const mx = Math.max(...scores);
        let sum = 0;
        for (let j = 0; j < n; j++) sum += scores[j] = Math.exp(scores[j] - mx);
        for (let e = 0; e < c.headDimV; e++) {
          let acc = 0;
          for (let j = 0; j < n; j++) acc += scores[j] * v[(j * c.nKvHeads + kvh) * c.headDimV + e];
          out.push(acc / sum);
        }
      }
    }
  });
  return Float32Array.from(out);
}

t.test('paged attention (GQA, causal prefill and decode, scattered blocks) against JS', async (t) => {
  const cases: AttnCase[] = [
    { nHeads: 1, nKvHeads: 1, headDim: 8, headDimV: 8, blockTokens: 16, seqs: [{ startPos: 0, nTokens: 1 }] },
    { nHeads: 8, nKvHeads: 4, headDim: 8, headDimV: 8, blockTokens: 16, seqs: [{ startPos: 0, nTokens: 20 }, { startPos: 37, nTokens: 1 }] },
    { nHeads: 4, nKvHeads: 1, headDim: 64, headDimV: 64, blockTokens: 5, seqs: [{ startPos: 3, nTokens: 9 }, { startPos: 0, nTokens: 2 }, { startPos: 11, nTokens: 1 }] },
    { nHeads: 6, nKvHeads: 2, headDim: 80, headDimV: 48, blockTokens: 7, seqs: [{ startPos: 30, nTokens: 4 }] },
    { nHeads: 2, nKvHeads: 2, headDim: 7, headDimV: 9, blockTokens: 3, seqs: [{ startPos: 1, nTokens: 6 }] },
    // Past one 64-position tile: a long prefill with 8 heads per KV head, decode deep in the context.
    { nHeads: 16, nKvHeads: 2, headDim: 64, headDimV: 64, blockTokens: 16, seqs: [{ startPos: 0, nTokens: 70 }, { startPos: 150, nTokens: 1 }] },
    { nHeads: 3, nKvHeads: 1, headDim: 128, headDimV: 40, blockTokens: 32, seqs: [{ startPos: 60, nTokens: 9 }, { startPos: 127, nTokens: 2 }] },
    // Past one segment (1024 positions): decode over three, and a chunk whose rows straddle the edge.
    { nHeads: 4, nKvHeads: 2, headDim: 32, headDimV: 32, blockTokens: 16, seqs: [{ startPos: 2100, nTokens: 1 }, { startPos: 1000, nTokens: 40 }] },
  ];
  cases.forEach((c, ci) => {
    const scale = 1 / Math.sqrt(c.headDim);
    const nBlocks = c.seqs.reduce((a, s) => a + Math.ceil((s.startPos + s.nTokens) / c.blockTokens), 0) + 3;
    // Block ids shuffled across sequences so that every table is scattered.
    const ids = Array.from({ length: nBlocks }, (_, i) => i).sort((a, b) => ((a * 7919 + ci) % 13) - ((b * 7919 + ci) % 13));
    let next = 0;
    const data = c.seqs.map((s, si) => {
      const n = s.startPos + s.nTokens;
      const table = Int32Array.from({ length: Math.ceil(n / c.blockTokens) }, () => ids[next++]);
      return {
        ...s,
        blockTable: table,
        k: rand(n * c.nKvHeads * c.headDim, 100 * ci + si, 2),
        v: rand(n * c.nKvHeads * c.headDimV, 200 * ci + si),
        q: rand(s.nTokens * c.nHeads * c.headDim, 300 * ci + si, 2),
      };
    });
    const expected = attentionJs(c, data, scale);
    // q8_0 needs head sizes that are whole blocks of 32.
    const q8ok = c.headDim % 32 === 0 && c.headDimV % 32 === 0;
    const expectedQ8 = q8ok ? attentionJs(c, data, scale, q8) : undefined;
    for (const kvType of q8ok ? (['f16', 'f32', 'q8_0'] as const) : (['f16', 'f32'] as const)) {
      const opts = { kvType, blockTokens: c.blockTokens, nBlocks, nKvHeads: c.nKvHeads, nHeads: c.nHeads, headDim: c.headDim, headDimV: c.headDimV, scale, seqs: data };
      const ref = ops().attention('ref', opts);
      // With f32 K/V the JS reference (f16-rounded) differs by the f16 rounding itself.
      const tol = kvType === 'f16' ? 1e-10 : kvType === 'q8_0' ? 1e-9 : 1e-5;
      const want = kvType === 'q8_0' ? expectedQ8! : expected;
      t.ok(nmse(ref, want) < tol, `case ${ci} ${kvType}: reference vs JS nmse ${nmse(ref, want).toExponential(2)}`);
      for (const v of SIMD) {
        const e = nmse(ops().attention(v, opts), ref);
        // SIMD q8_0 quantization rounds ties to even where the reference rounds them away from zero.
        t.ok(e < (kvType === 'q8_0' ? 1e-8 : 1e-11), `case ${ci} ${kvType}: ${v} vs reference nmse ${e.toExponential(2)}`);
      }
    }
  });
  // A query row gives the same bits whether its token is decoded alone, in a short chunk or
  // inside a prefill: the SIMD kernels switch between a few-rows layout (decode, chunks up to 8
  // rows) and a many-rows one, and both must add in the same order.
  // The last layout passes one segment (1024 positions): its rows fold several segments' states.
  const layouts = [
    { kvType: 'f16' as const, nHeads: 8, nKvHeads: 2, headDim: 64, headDimV: 64, blockTokens: 16, n: 150, probes: [0, 63, 64, 89, 149] },
    { kvType: 'f32' as const, nHeads: 6, nKvHeads: 2, headDim: 80, headDimV: 48, blockTokens: 7, n: 150, probes: [0, 63, 64, 89, 149] },
    { kvType: 'f16' as const, nHeads: 2, nKvHeads: 2, headDim: 7, headDimV: 9, blockTokens: 3, n: 150, probes: [0, 63, 64, 89, 149] },
    { kvType: 'f16' as const, nHeads: 8, nKvHeads: 1, headDim: 128, headDimV: 128, blockTokens: 32, n: 150, probes: [0, 63, 64, 89, 149] },
    { kvType: 'f16' as const, nHeads: 2, nKvHeads: 1, headDim: 16, headDimV: 16, blockTokens: 16, n: 1100, probes: [0, 1023, 1024, 1099] },
    { kvType: 'q8_0' as const, nHeads: 8, nKvHeads: 2, headDim: 64, headDimV: 64, blockTokens: 16, n: 150, probes: [0, 63, 64, 89, 149] },
    { kvType: 'q8_0' as const, nHeads: 4, nKvHeads: 1, headDim: 32, headDimV: 32, blockTokens: 16, n: 1100, probes: [0, 1023, 1024, 1099] },
  ];
  for (const [li, { n, probes, ...c }] of layouts.entries()) {
    const k = rand(n * c.nKvHeads * c.headDim, 7 + li, 2);
    const vv = rand(n * c.nKvHeads * c.headDimV, 8 + li);
    const q = rand(n * c.nHeads * c.headDim, 9 + li, 2);
    const table = Int32Array.from({ length: Math.ceil(n / c.blockTokens) }, (_, i) => i);
    const base = { ...c, nBlocks: table.length, scale: 0.125 };
    const row = c.nHeads * c.headDimV;
    const part = (from: number, count: number) => ({
      startPos: from, nTokens: count, blockTable: table,
      k: k.subarray(0, (from + count) * c.nKvHeads * c.headDim),
      v: vv.subarray(0, (from + count) * c.nKvHeads * c.headDimV),
      q: q.subarray(from * c.nHeads * c.headDim, (from + count) * c.nHeads * c.headDim),
    });
    for (const v of ['ref', ...SIMD]) {
      const all = ops().attention(v, { ...base, seqs: [part(0, n)] });
      const differ: string[] = [];
      for (const i of probes) {
        if (!identical(ops().attention(v, { ...base, seqs: [part(i, 1)] }), all.subarray(i * row, (i + 1) * row))) differ.push(`token ${i}`);
      }
      // A chunk of as many tokens as stay within 8 query rows, across the tile edge at 64.
      const chunk = Math.max(1, Math.floor(8 / (c.nHeads / c.nKvHeads)));
      const from = (n > 1024 ? 1024 : 64) - Math.floor(chunk / 2);
      if (!identical(ops().attention(v, { ...base, seqs: [part(from, chunk)] }), all.subarray(from * row, (from + chunk) * row))) {
        differ.push(`chunk of ${chunk} from ${from}`);
      }
      t.same(differ, [], `${v}, ${c.kvType}, ${c.nHeads}/${c.nKvHeads} heads of ${c.headDim}/${c.headDimV}: rows decoded alone and in chunks = in a ${n}-token prefill`);
    }
  }
  const bad = { kvType: 'f16' as const, blockTokens: 4, nBlocks: 2, nKvHeads: 1, nHeads: 1, headDim: 4, headDimV: 4, scale: 1,
    seqs: [{ startPos: 0, nTokens: 1, blockTable: Int32Array.of(2), k: rand(4, 1), v: rand(4, 2), q: rand(4, 3) }] };
  t.throws(() => ops().attention('ref', bad), { code: 'TDM_BAD_ARGUMENT', message: /block id 2/ });
  t.throws(() => ops().attention('ref', { ...bad, seqs: [{ ...bad.seqs[0], startPos: 4, k: rand(20, 1), v: rand(20, 2) }] }), { code: 'TDM_BAD_ARGUMENT', message: /does not cover/ });
});

t.test('router: softmax or sigmoid, top-k in ggml_top_k order, optional renormalisation and scale', async (t) => {
  for (const v of ['ref', ...SIMD]) {
    for (const [nExperts, nUsed] of [[4, 1], [4, 2], [8, 2], [60, 4], [128, 8]]) {
      for (const gating of ['softmax', 'sigmoid'] as const) {
        for (const norm of [false, true]) {
          const nTokens = 3;
          const logits = rand(nTokens * nExperts, nExperts * 3 + nUsed, 4);
          const r = ops().router(v, logits, nTokens, nExperts, nUsed, gating, norm, 1.5);
          for (let tk = 0; tk < nTokens; tk++) {
            const l = Array.from(logits.subarray(tk * nExperts, (tk + 1) * nExperts));
            const mx = Math.max(...l);
            const e = l.map((x) => Math.exp(x - mx));
            const sum = e.reduce((a, b) => a + b, 0);
            const p = gating === 'softmax' ? e.map((x) => x / sum) : l.map((x) => 1 / (1 + Math.exp(-x)));
            const order = p.map((_, i) => i).sort((a, b) => p[b] - p[a]).slice(0, nUsed);
            if (nUsed > 1) [order[0], order[1]] = [order[1], order[0]];
            const w = order.map((i) => p[i]);
            const ws = w.reduce((a, b) => a + b, 0);
            const expectW = w.map((x) => (norm ? x / ws : x) * 1.5);
            const ids = Array.from(r.ids.subarray(tk * nUsed, (tk + 1) * nUsed));
            t.same(ids, order, `${v} ${gating} norm=${norm} ${nExperts}/${nUsed} token ${tk}: ids`);
            t.ok(nmse(r.weights.subarray(tk * nUsed, (tk + 1) * nUsed), expectW) < 1e-12, `${v} ${gating} norm=${norm}: weights`);
          }
        }
      }
    }
  }
});

/** Mixture-of-experts FFN in float64 on (already dequantized) weights and unquantized activations. */
function moeJs(gd: Float32Array, ud: Float32Array, dd: Float32Array, nEmbd: number, nFf: number,
  x: Float32Array, nTokens: number, ids: Int32Array, wts: Float32Array, nUsed: number): Float32Array {
  const y = new Float32Array(nTokens * nEmbd);
  for (let tk = 0; tk < nTokens; tk++) {
    for (let j = 0; j < nUsed; j++) {
      const e = ids[tk * nUsed + j];
      const h = new Float64Array(nFf);
      for (let r = 0; r < nFf; r++) {
        let a = 0;
        let b = 0;
        for (let k = 0; k < nEmbd; k++) {
          a += gd[(e * nFf + r) * nEmbd + k] * x[tk * nEmbd + k];
          b += ud[(e * nFf + r) * nEmbd + k] * x[tk * nEmbd + k];
        }
        h[r] = (a / (1 + Math.exp(-a))) * b;
      }
      for (let r = 0; r < nEmbd; r++) {
        let s = 0;
        for (let k = 0; k < nFf; k++) s += dd[(e * nEmbd + r) * nFf + k] * h[k];
        y[tk * nEmbd + r] += wts[tk * nUsed + j] * s;
      }
    }
  }
  return y;
}

t.test('expert FFN against JS, reading only the chosen experts', async (t) => {
  for (const type of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_K', 'q5_K', 'q6_K']) {
    const bs = typeInfo(type).blockSize;
    const nEmbd = bs === 256 ? 256 : 64;
    const nFf = bs === 256 ? 256 : 96;
    const nExp = 6;
    const g = rand(nExp * nFf * nEmbd, 1, 0.2);
    const u = rand(nExp * nFf * nEmbd, 2, 0.2);
    const d = rand(nExp * nEmbd * nFf, 3, 0.1);
    const [gd, ud, dd] = [g, u, d].map((w) => dequantize(type, quantize(type, w), w.length));
    for (const [nTokens, nUsed] of [[1, 2], [5, 2], [7, 3], [19, 2]]) {
      const x = rand(nTokens * nEmbd, 4 + nTokens);
      const r = rng(5 + nTokens);
      const ids = new Int32Array(nTokens * nUsed);
      for (let tk = 0; tk < nTokens; tk++) {
        const pick = [0, 1, 2, 3, 4].sort(() => r()).slice(0, nUsed);
        pick.forEach((e, j) => (ids[tk * nUsed + j] = e));
      }
      const wts = Float32Array.from({ length: nTokens * nUsed }, () => 0.5 + 0.5 * r());
      const ref = ops().moeFfn('ref', type, g, u, d, nExp, nEmbd, nFf, x, nTokens, ids, wts, nUsed);
      const tol = type === 'f32' ? 1e-12 : type === 'f16' ? 1e-6 : 2e-3;
      const e = nmse(ref, moeJs(gd, ud, dd, nEmbd, nFf, x, nTokens, ids, wts, nUsed));
      t.ok(e < tol, `${type} ${nTokens} tokens top-${nUsed}: reference vs JS nmse ${e.toExponential(2)}`);
      for (const v of SIMD) {
        const es = nmse(ops().moeFfn(v, type, g, u, d, nExp, nEmbd, nFf, x, nTokens, ids, wts, nUsed), ref);
        t.ok(es <= (SIMD_MATMUL_NMSE[type] ?? 1e-11) * 10, `${type} ${nTokens} tokens: ${v} vs reference nmse ${es.toExponential(2)}`);
      }
    }
  }
  // Expert 5 is never chosen; NaN in its weights must not reach the output.
  const nEmbd = 8;
  const nFf = 4;
  const g = rand(6 * nFf * nEmbd, 1);
  const u = rand(6 * nFf * nEmbd, 2);
  const d = rand(6 * nEmbd * nFf, 3);
  g.fill(NaN, 5 * nFf * nEmbd);
  u.fill(NaN, 5 * nFf * nEmbd);
  d.fill(NaN, 5 * nEmbd * nFf);
  const y = ops().moeFfn('ref', 'f32', g, u, d, 6, nEmbd, nFf, rand(2 * nEmbd, 4), 2, Int32Array.of(0, 4, 2, 1), Float32Array.of(0.5, 0.5, 0.3, 0.7), 2);
  t.ok(y.every(Number.isFinite), 'unchosen experts are not read');
  t.throws(() => ops().moeFfn('ref', 'f32', g, u, d, 6, nEmbd, nFf, rand(nEmbd, 4), 1, Int32Array.of(0, 6), Float32Array.of(1, 1), 2), { code: 'TDM_BAD_ARGUMENT', message: /expert id 6/ });
});

t.test('copy_blocks moves whole blocks', async (t) => {
  const pool = Uint8Array.from({ length: 5 * 12 }, (_, i) => i);
  for (const v of ['ref', ...SIMD]) {
    const out = ops().copyBlocks(v, pool, 12, Int32Array.of(0, 4), Int32Array.of(3, 1));
    const expected = Uint8Array.from(pool);
    expected.set(pool.subarray(0, 12), 36);
    expected.set(pool.subarray(48, 60), 12);
    t.same(Array.from(out), Array.from(expected), v);
  }
});

t.test('an unknown kernel variant is a typed error', async (t) => {
  t.throws(() => ops().matmul('sse9', 'f32', rand(4, 1), 1, 4, rand(4, 2), 1), { code: 'TDM_UNSUPPORTED', message: /sse9/ });
  t.throws(() => ops().matmul('ref', 'q4_0', rand(40, 1), 1, 40, rand(40, 2), 1), { code: 'TDM_BAD_ARGUMENT' });
});
