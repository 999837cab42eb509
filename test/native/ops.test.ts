// Every CPU backend op, through the backend-ops binding: the scalar reference against an
// independent JS computation, and every SIMD variant this machine runs against the scalar
// reference, over many shapes with odd sizes, tolerances per op and type as normalised
// squared error (ggml's test-backend-ops).
import t from 'tap';
import { native, type NativeBackendOps } from '../../src/native/binding.js';
import { dequantize, quantize, typeInfo, vecDotF32 } from '../../src/model/quant.js';
import { identical, nmse, rand } from '../backend/op-cases.js';

/** The backend ops with a CPU kernel variant ('ref', 'avx2', ...) in place of the backend id. */
type CpuOps = { [K in Exclude<keyof NativeBackendOps, 'ids' | 'packedWeightStats' | 'timeMatmul' | 'timeAttention'>]: NativeBackendOps[K] } & { variants(): string[] };

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

const WEIGHT_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_K', 'q5_K', 'q6_K', 'mxfp4', 'q2_K', 'q3_K', 'iq4_nl', 'iq4_xs',
  'iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s'];

/** Row lengths per block size: odd multiples of the block so SIMD tails and block loops both run. */
function colsFor(type: string): number[] {
  const bs = typeInfo(type).blockSize;
  if (bs === 1) return [1, 7, 33, 64, 257];
  if (bs === 32) return [32, 96, 544];
  return [256, 768];
}

// SIMD vs reference, by weight type: float types only reorder sums; the q8_0 and q8_1 families
// (mxfp4 and iq4_nl take q8_0) also quantize activations as llama.cpp's x86 code does (scale
// 127/max, round half to even), which can move a quant by one step where the reference rounds
// half away from zero. The K types, iq4_xs and the IQ2/IQ3 grid types use the reference q8_K
// quantizer (llama.cpp's x86 build does too), so only the float order differs (measured below
// 1e-14).
const SIMD_MATMUL_NMSE: Record<string, number> = {
  f32: 1e-11, f16: 1e-11, bf16: 1e-11, q8_0: 1e-4, q4_0: 1e-4, q4_1: 1e-4, q5_0: 1e-4, q5_1: 1e-4, q4_K: 1e-11, q5_K: 1e-11, q6_K: 1e-11,
  mxfp4: 1e-4, q2_K: 1e-11, q3_K: 1e-11, iq4_nl: 1e-4, iq4_xs: 1e-11,
  iq2_xxs: 1e-11, iq2_xs: 1e-11, iq2_s: 1e-11, iq3_xxs: 1e-11, iq3_s: 1e-11,
};

/** Row counts around the packed kernels' 16-row groups and token counts around their tiles
 * (2 to 16 tokens, by kernel set and type: each kernel's kMaxT) and
 * around the 16 tokens up to which packed kernels take a group's tiles together (gemm_packed),
 * and one decode-sized matmul of many groups, which the pool splits into shrinking tasks. */
const SIMD_SHAPES: [number, number][] = [[1, 1], [17, 1], [16, 2], [33, 3], [15, 5], [31, 7], [130, 13], [47, 16], [47, 17], [48, 25], [257, 37], [257, 1]];

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
// row for the types it dot-products as stored (q8_0, q5_0, q4_1, q5_1, q5_K, q6_K, q3_K,
// iq4_xs, the IQ2/IQ3 grid types), whole blocks for its repacked q4_0, mxfp4 and iq4_nl, whole super-blocks for its
// repacked q2_K (AVX-512 builds), and pairs of sub-blocks for its repacked q4_K. Both SIMD
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
  // 14 tokens: one tile of a group at a time; 37 over longer rows: past one tile, where some
  // kernels take a group's tiles together (gemm_packed's group_tokens), with a short last tile.
  const cases = [{ nTokens: 14, colsScale: 1, tokens: [0, 5, 11, 13] }, { nTokens: 37, colsScale: 9, tokens: [0, 5, 17, 36] }];
  for (const v of ['ref', ...SIMD]) {
    for (const type of WEIGHT_TYPES) {
      for (const { nTokens, colsScale, tokens } of cases) {
        const nCols = colsFor(type)[1] * colsScale;
        const nRows = 35;
        const w = rand(nRows * nCols, 3 + nCols, 0.4);
        const x = rand(nTokens * nCols, 5 + nCols, 1.5);
        const batch = ops().matmul(v, type, w, nRows, nCols, x, nTokens);
        let same = true;
        for (const tk of tokens) {
          const alone = ops().matmul(v, type, w, nRows, nCols, x.subarray(tk * nCols, (tk + 1) * nCols), 1);
          if (!identical(alone, batch.subarray(tk * nRows, (tk + 1) * nRows))) same = false;
        }
        t.ok(same, `${v} ${type} x ${nCols}: rows of tokens ${tokens.join(', ')} alone = in a batch of ${nTokens}`);
      }
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

t.test('mxfp4: subnormal block scales (E8M0 exponents 0 and 1) in every variant, packed or not', { skip: SIMD.length === 0 && 'no SIMD kernel variant on this machine' }, async (t) => {
  // Rows of largest magnitude in [2^-125, 2^-123) quantize to exponents 0 and 1, whose scales
  // 2^-128 and 2^-127 are float subnormals; the other rows are ordinary.
  const nCols = 96;
  const nRows = 37;
  const w = rand(nRows * nCols, 77, 1);
  for (let r = 0; r < nRows; r++) {
    const scale = r % 3 === 0 ? 1.5 * 2 ** -125 : r % 3 === 1 ? 1.5 * 2 ** -124 : 0.3;
    for (let k = 0; k < nCols; k++) w[r * nCols + k] = Math.fround(w[r * nCols + k] * scale);
  }
  const q = quantize('mxfp4', w);
  t.same([q[0], q[17 * 3], q[17 * 3 * 2]].map((e) => (e ?? -1) < 2), [true, true, false], 'exponents 0 and 1 in the tiny rows');
  for (const nTokens of [1, 5]) {
    const x = rand(nTokens * nCols, 78 + nTokens, 2);
    const ref = ops().matmul('ref', 'mxfp4', w, nRows, nCols, x, nTokens);
    const a = ops().matmul('avx2', 'mxfp4', w, nRows, nCols, x, nTokens);
    // The tiny rows' outputs, scaled up for nmse (which floors its denominator at 1e-30).
    const tiny = (y: Float32Array) => Array.from(y.filter((_, i) => (i % nRows) % 3 !== 2), (v) => v * 2 ** 120);
    t.ok(tiny(a).every((v) => v !== 0 && Math.abs(v) < 2 ** 10), `${nTokens} tokens: the tiny rows give tiny non-zero outputs`);
    const e = nmse(tiny(a), tiny(ref));
    t.ok(e <= SIMD_MATMUL_NMSE.mxfp4, `${nTokens} tokens: avx2 vs reference on the tiny rows, nmse ${e.toExponential(2)}`);
    for (const v of SIMD.filter((id) => id !== 'avx2')) t.ok(identical(ops().matmul(v, 'mxfp4', w, nRows, nCols, x, nTokens), a), `${nTokens} tokens: ${v} = avx2`);
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

/** x rounded to the nearest f16 (ties to even), as a number; finite inputs inside f16's range. */
function toF16(x: number): number {
  const a = Math.abs(x);
  if (a === 0) return x;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** Math.max(e - 10, -24);
  const q = a / ulp;
  let r = Math.round(q);
  if (Math.abs(q - Math.trunc(q) - 0.5) < 1e-12 && r % 2 !== 0) r -= 1;
  return Math.sign(x) * r * ulp;
}

t.test('rms_norm, add, mul, swiglu, geglu, scale, softcap and scale_rows against JS', async (t) => {
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

      // GeGLU as ggml's CPU build looks gelu up: the gate rounded to f16, gelu's value rounded to f16.
      const gg = rand(nRows * nCols, 7, 12);
      const gl = ops().geglu(v, gg, x);
      const gelu = (a: number) => 0.5 * a * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * a * (1 + 0.044715 * a * a)));
      const expectedGl = gg.map((a, i) => (a <= -10 ? 0 : a >= 10 ? a * x[i]! : toF16(gelu(toF16(a))) * x[i]!));
      t.ok(nmse(gl, expectedGl) < 1e-9, `${v} geglu n=${gg.length} (nmse ${nmse(gl, expectedGl).toExponential(2)})`);
      t.ok(identical(ops().scale(v, x, 0.3), x.map((a) => Math.fround(a * Math.fround(0.3)))), `${v} scale`);
      // tanh(x * (1/cap)) * cap, each step rounded to float as llama.cpp's scale, tanh, scale.
      const sc = ops().softcap(v, gg, 2.5);
      const expectedSc = gg.map((a) => Math.fround(Math.fround(Math.tanh(Math.fround(a * Math.fround(1 / 2.5)))) * 2.5));
      t.ok(nmse(sc, expectedSc) < 1e-12 && sc.every((y) => Math.abs(y) <= 2.5), `${v} softcap (nmse ${nmse(sc, expectedSc).toExponential(2)})`);
      if (v !== 'ref') t.ok(identical(gl, ops().geglu('ref', gg, x)), `${v} geglu: the reference's bits`);

      const s = rand(nRows, 8, 4);
      const sig = ops().scaleRows(v, x, s, nRows, nCols, 'sigmoid');
      t.ok(nmse(sig, x.map((a, i) => a / (1 + Math.exp(-s[Math.floor(i / nCols)])))) < 1e-12, `${v} scale_rows sigmoid`);
      t.ok(identical(ops().scaleRows(v, x, s, nRows, nCols, 'identity'), x.map((a, i) => Math.fround(a * s[Math.floor(i / nCols)]))), `${v} scale_rows`);
    }
  }
});

t.test("the SIMD GeGLUs give the reference's bits at its edges", async (t) => {
  // The clamps (exactly -10 and 10, just inside), f16 ties and subnormals, zero, large values, NaN.
  const edges = [-10, 10, -9.999999, 9.999999, -10.000001, 10.000001, 0, -0, 1e-8, -1e-8, 6.1e-5, 1.0009765625, 1.00048828125, 65504, -65504, 1e30, -1e30, NaN, 3.14159, -0.5];
  const g = Float32Array.from({ length: 53 }, (_, i) => edges[i % edges.length]!);
  const u = Float32Array.from({ length: 53 }, (_, i) => (i % 7) - 3 + 0.25);
  const want = ops().geglu('ref', g, u);
  for (const v of SIMD) t.ok(identical(ops().geglu(v, g, u), want), `${v}: ${g.length} elements, a tail beyond the vector width`);
});

t.test('the SIMD tanh of the soft caps: within a few ulp of the reference, the same bits wherever an element sits', async (t) => {
  // Both sides of the series/exponential switch at 0.25, tiny and huge values, zeros, infinities, NaN.
  const edges = [0, -0, 1e-30, -1e-8, 0.01, 0.2499999, 0.25, -0.25, 0.2500001, 0.5, -0.75, 1, 2.5, -4, 9, 9.5, 20, -88, 1e6, Infinity, -Infinity, NaN];
  const x = Float32Array.from({ length: 1000 }, (_, i) => (i < edges.length ? edges[i]! : Math.sinh((i - 500) / 60)));
  const want = ops().softcap('ref', x, 1);
  for (const v of SIMD) {
    const got = ops().softcap(v, x, 1);
    let worst = 0;
    for (let i = 0; i < x.length; i++) {
      if (Number.isNaN(want[i]!)) {
        t.ok(Number.isNaN(got[i]!), `${v}: NaN stays NaN`);
        continue;
      }
      // Relative to the float spacing at the value (ulps), floored at the smallest normal's.
      const ulp = Math.max(Math.abs(want[i]!) * 2 ** -23, 2 ** -149);
      worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / ulp);
    }
    t.ok(worst <= 8, `${v}: at most ${worst.toFixed(1)} ulp from std::tanh`);
    t.same([got[0], got[1], got[19], got[20]], [0, -0, 1, -1], `${v}: signed zeros and the limits exact`);
    // An element computes alike at any offset and in any tail.
    const shifted = ops().softcap(v, x.subarray(3, 3 + 37), 1);
    t.ok(identical(shifted, got.subarray(3, 40)), `${v}: the same bits at another offset and in a tail`);
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

type Yarn = { extFactor: number; attnFactor: number; betaFast: number; betaSlow: number; nCtxOrig: number };

/** ggml_rope_yarn_corr_dim: the pair index whose angle turns nRot times over nCtxOrig positions. */
const yarnCorrDim = (ropeDim: number, nCtxOrig: number, nRot: number, base: number) => (ropeDim * Math.log(nCtxOrig / (nRot * 2 * Math.PI))) / (2 * Math.log(base));

/** ggml_rope_ext in float64: rope_yarn's ramp between the corrected dims and its magnitude factor. */
function ropeYarnJs(x: Float32Array, pos: Int32Array, nHeads: number, headDim: number, ropeDim: number, mode: 'norm' | 'neox', base: number, scale: number, y: Yarn): Float64Array {
  const low = Math.max(0, Math.floor(yarnCorrDim(ropeDim, y.nCtxOrig, y.betaFast, base)));
  const high = Math.min(ropeDim - 1, Math.ceil(yarnCorrDim(ropeDim, y.nCtxOrig, y.betaSlow, base)));
  const mscale = y.attnFactor * (y.extFactor !== 0 ? 1 + 0.1 * Math.log(1 / scale) : 1);
  const out = Float64Array.from(x);
  for (let tk = 0; tk < pos.length; tk++) {
    for (let h = 0; h < nHeads; h++) {
      const o = (tk * nHeads + h) * headDim;
      for (let i = 0; i < ropeDim / 2; i++) {
        const thetaExtrap = pos[tk]! * base ** ((-2 * i) / ropeDim);
        const ramp = 1 - Math.min(1, Math.max(0, (i - low) / Math.max(0.001, high - low)));
        const mix = ramp * y.extFactor;
        const theta = scale * thetaExtrap * (1 - mix) + thetaExtrap * mix;
        const [a, b] = mode === 'norm' ? [o + 2 * i, o + 2 * i + 1] : [o + i, o + i + ropeDim / 2];
        out[a] = (x[a]! * Math.cos(theta) - x[b]! * Math.sin(theta)) * mscale;
        out[b] = (x[a]! * Math.sin(theta) + x[b]! * Math.cos(theta)) * mscale;
      }
    }
  }
  return out;
}

t.test('rope with YaRN (ramp, magnitude, attention factor) against JS', async (t) => {
  const cases = [
    // gpt-oss: factor 32 from 4096 positions, theta 150000 (ramp over pairs 8 to 18).
    { nHeads: 2, headDim: 64, ropeDim: 64, base: 150000, scale: 1 / 32, yarn: { extFactor: 1, attnFactor: 1, betaFast: 32, betaSlow: 1, nCtxOrig: 4096 } },
    // The agreement test's model: factor 4 from 64 positions (ramp over pairs 0 to 9).
    { nHeads: 3, headDim: 64, ropeDim: 64, base: 10000, scale: 1 / 4, yarn: { extFactor: 1, attnFactor: 1, betaFast: 32, betaSlow: 1, nCtxOrig: 64 } },
    // Partial rotary dims, half extrapolation, other betas and an attention factor.
    { nHeads: 4, headDim: 80, ropeDim: 32, base: 10000, scale: 0.25, yarn: { extFactor: 0.5, attnFactor: 0.8, betaFast: 16, betaSlow: 2, nCtxOrig: 300 } },
    // No YaRN, only rope.scaling.attn_factor.
    { nHeads: 1, headDim: 8, ropeDim: 8, base: 10000, scale: 1, yarn: { extFactor: 0, attnFactor: 1.25, betaFast: 32, betaSlow: 1, nCtxOrig: 0 } },
  ];
  for (const c of cases) {
    for (const nRot of [c.yarn.betaFast, c.yarn.betaSlow]) {
      if (c.yarn.extFactor === 0) continue;
      const d = yarnCorrDim(c.ropeDim, c.yarn.nCtxOrig, nRot, c.base);
      t.ok(Math.abs(d - Math.round(d)) > 1e-3, `corrected dim ${d.toFixed(4)} is not at an integer, so float and double round it alike`);
    }
  }
  for (const v of ['ref', ...SIMD]) {
    for (const mode of ['norm', 'neox'] as const) {
      for (const c of cases) {
        const pos = Int32Array.from([0, 1, 5, 63, 64, 130, 1000, 4097]);
        const x = rand(pos.length * c.nHeads * c.headDim, c.headDim + c.nHeads);
        const got = ops().rope(v, x, pos, c.nHeads, c.headDim, c.ropeDim, mode, c.base, c.scale, c.yarn);
        const e = nmse(got, ropeYarnJs(x, pos, c.nHeads, c.headDim, c.ropeDim, mode, c.base, c.scale, c.yarn));
        const what = `${v} ${mode} dim ${c.headDim} rope ${c.ropeDim} ext ${c.yarn.extFactor} attn ${c.yarn.attnFactor} from ${c.yarn.nCtxOrig}`;
        t.ok(e < 1e-9, `${what}: nmse ${e.toExponential(2)}`);
        t.ok(identical(got, ops().rope('ref', x, pos, c.nHeads, c.headDim, c.ropeDim, mode, c.base, c.scale, c.yarn)), `${what}: equals the reference`);
      }
    }
  }
});

t.test('rope: YaRN off (ext 0, attn 1) is plain rope to the bit; YaRN needs its original context', async (t) => {
  const pos = Int32Array.from([0, 3, 700, 4097]);
  const x = rand(pos.length * 2 * 64, 17);
  for (const v of ['ref', ...SIMD]) {
    for (const mode of ['norm', 'neox'] as const) {
      const off = { extFactor: 0, attnFactor: 1, betaFast: 32, betaSlow: 1, nCtxOrig: 64 };
      t.ok(identical(ops().rope(v, x, pos, 2, 64, 64, mode, 10000, 0.25, off), ops().rope(v, x, pos, 2, 64, 64, mode, 10000, 0.25)), `${v} ${mode}`);
    }
  }
  const noCtx = { extFactor: 1, attnFactor: 1, betaFast: 32, betaSlow: 1, nCtxOrig: 0 };
  t.throws(() => ops().rope('ref', x, pos, 2, 64, 64, 'norm', 10000, 0.25, noCtx), { code: 'TDM_BAD_ARGUMENT', message: /n_ctx_orig/ });
  t.throws(() => ops().rope('ref', x, pos, 2, 64, 64, 'norm', 10000, 0.25, { ...noCtx, nCtxOrig: 1.5 }), { code: 'TDM_BAD_ARGUMENT', message: /nCtxOrig/ });
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
 * default); queries stay f32, as llama.cpp's tiled CPU flash attention keeps them. A window
 * keeps the last `window` positions; a head's sink logit joins the max and the sum only; a
 * soft cap bends each scaled score to cap * tanh(score / cap). */
function attentionJs(c: AttnCase, data: { k: Float32Array; v: Float32Array; q: Float32Array }[], scale: number, round = f16,
  extra: { window?: number; sinks?: Float32Array; softcap?: number } = {}): Float32Array {
  const out: number[] = [];
  const group = c.nHeads / c.nKvHeads;
  c.seqs.forEach((s, si) => {
    const k = round(data[si].k);
    const v = round(data[si].v);
    const q = data[si].q;
    for (let i = 0; i < s.nTokens; i++) {
      const n = s.startPos + i + 1;
      const lo = extra.window ? Math.max(0, n - extra.window) : 0;
      for (let h = 0; h < c.nHeads; h++) {
        const kvh = Math.floor(h / group);
        const scores = new Float64Array(n);
        for (let j = lo; j < n; j++) {
          let d = 0;
          for (let e = 0; e < c.headDim; e++) d += q[(i * c.nHeads + h) * c.headDim + e] * k[(j * c.nKvHeads + kvh) * c.headDim + e];
          scores[j] = extra.softcap ? extra.softcap * Math.tanh((d * scale) / extra.softcap) : d * scale;
        }
        const sink = extra.sinks ? extra.sinks[h] : -Infinity;
        let mx = sink;
        for (let j = lo; j < n; j++) mx = Math.max(mx, scores[j]);
        let sum = Math.exp(sink - mx);
        for (let j = 0; j < n; j++) sum += scores[j] = j < lo ? 0 : Math.exp(scores[j] - mx);
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
    // gemma2's soft cap, applied in both layouts to the same scores.
    { kvType: 'f16' as const, nHeads: 8, nKvHeads: 4, headDim: 256, headDimV: 256, blockTokens: 16, n: 150, probes: [0, 63, 64, 89, 149], softcap: 0.5 },
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

t.test('paged attention with sliding windows and sinks (gpt-oss) against JS', async (t) => {
  const cases: (AttnCase & { window: number; sinks: boolean })[] = [
    { nHeads: 4, nKvHeads: 2, headDim: 32, headDimV: 32, blockTokens: 16, seqs: [{ startPos: 0, nTokens: 1 }], window: 0, sinks: true },
    { nHeads: 8, nKvHeads: 4, headDim: 8, headDimV: 8, blockTokens: 16, seqs: [{ startPos: 0, nTokens: 20 }, { startPos: 37, nTokens: 1 }], window: 5, sinks: false },
    { nHeads: 4, nKvHeads: 1, headDim: 64, headDimV: 64, blockTokens: 5, seqs: [{ startPos: 3, nTokens: 9 }, { startPos: 0, nTokens: 2 }, { startPos: 11, nTokens: 1 }], window: 4, sinks: true },
    { nHeads: 6, nKvHeads: 2, headDim: 80, headDimV: 48, blockTokens: 7, seqs: [{ startPos: 30, nTokens: 4 }], window: 100, sinks: true },
    { nHeads: 16, nKvHeads: 2, headDim: 64, headDimV: 64, blockTokens: 16, seqs: [{ startPos: 0, nTokens: 70 }, { startPos: 150, nTokens: 1 }], window: 33, sinks: true },
    // Windows past one segment (1024 positions): segments start at the window, not at 0.
    { nHeads: 4, nKvHeads: 2, headDim: 32, headDimV: 32, blockTokens: 16, seqs: [{ startPos: 2100, nTokens: 1 }, { startPos: 1000, nTokens: 40 }], window: 1100, sinks: true },
    { nHeads: 4, nKvHeads: 2, headDim: 32, headDimV: 32, blockTokens: 16, seqs: [{ startPos: 2100, nTokens: 3 }], window: 128, sinks: false },
  ];
  cases.forEach((c, ci) => {
    const scale = 1 / Math.sqrt(c.headDim);
    const nBlocks = c.seqs.reduce((a, s) => a + Math.ceil((s.startPos + s.nTokens) / c.blockTokens), 0) + 1;
    let next = 0;
    const data = c.seqs.map((s, si) => {
      const n = s.startPos + s.nTokens;
      const table = Int32Array.from({ length: Math.ceil(n / c.blockTokens) }, () => (next++ * 5 + 1) % nBlocks);
      return { ...s, blockTable: table, k: rand(n * c.nKvHeads * c.headDim, 400 * ci + si, 2), v: rand(n * c.nKvHeads * c.headDimV, 500 * ci + si), q: rand(s.nTokens * c.nHeads * c.headDim, 600 * ci + si, 2) };
    });
    // Sinks around the scores' size, so that they take a real share of the softmax.
    const sinks = c.sinks ? rand(c.nHeads, 700 + ci, 3) : undefined;
    const extra = { window: c.window, sinks };
    const opts = { kvType: 'f16' as const, blockTokens: c.blockTokens, nBlocks, nKvHeads: c.nKvHeads, nHeads: c.nHeads, headDim: c.headDim, headDimV: c.headDimV, scale, seqs: data, ...extra };
    const ref = ops().attention('ref', opts);
    const e = nmse(ref, attentionJs(c, data, scale, f16, extra));
    t.ok(e < 1e-10, `case ${ci} window ${c.window} sinks ${c.sinks}: reference vs JS nmse ${e.toExponential(2)}`);
    const plain = attentionJs(c, data, scale);
    t.ok(nmse(ref, plain) > 1e-6, `case ${ci}: the window or sinks change the result`);
    for (const v of SIMD) {
      const es = nmse(ops().attention(v, opts), ref);
      t.ok(es < 1e-11, `case ${ci}: ${v} vs reference nmse ${es.toExponential(2)}`);
    }
  });
  const base = { kvType: 'f16' as const, blockTokens: 4, nBlocks: 1, nKvHeads: 1, nHeads: 2, headDim: 4, headDimV: 4, scale: 1,
    seqs: [{ startPos: 0, nTokens: 1, blockTable: Int32Array.of(0), k: rand(4, 1), v: rand(4, 2), q: rand(8, 3) }] };
  t.throws(() => ops().attention('ref', { ...base, window: -1 }), { code: 'TDM_BAD_ARGUMENT' }, 'negative window');
  t.throws(() => ops().attention('ref', { ...base, sinks: Float32Array.of(1) }), { code: 'TDM_BAD_ARGUMENT' }, 'sinks not nHeads long');
});

t.test('paged attention with soft caps (gemma2) against JS', async (t) => {
  // Decode (few rows) and prefill (many rows) layouts, a window, q8_0 K and V, and heads of 256 as Gemma 2's.
  const cases: (AttnCase & { window: number; softcap: number; kvType: 'f16' | 'q8_0' })[] = [
    { nHeads: 8, nKvHeads: 4, headDim: 256, headDimV: 256, blockTokens: 16, seqs: [{ startPos: 40, nTokens: 1 }], window: 0, softcap: 1, kvType: 'f16' },
    { nHeads: 8, nKvHeads: 4, headDim: 256, headDimV: 256, blockTokens: 16, seqs: [{ startPos: 0, nTokens: 70 }, { startPos: 150, nTokens: 1 }], window: 0, softcap: 0.5, kvType: 'f16' },
    { nHeads: 4, nKvHeads: 2, headDim: 64, headDimV: 64, blockTokens: 7, seqs: [{ startPos: 30, nTokens: 20 }], window: 9, softcap: 2, kvType: 'q8_0' },
    // A cap of Gemma 2's size over scores of the same size.
    { nHeads: 4, nKvHeads: 2, headDim: 32, headDimV: 32, blockTokens: 16, seqs: [{ startPos: 1000, nTokens: 40 }], window: 0, softcap: 50, kvType: 'f16' },
  ];
  cases.forEach((c, ci) => {
    // Gemma 2's 1/sqrt(headDim), folded with the cap into one float as the backend folds it.
    const scale = c.softcap === 50 ? 8 : 1 / Math.sqrt(c.headDim);
    const nBlocks = c.seqs.reduce((a, s) => a + Math.ceil((s.startPos + s.nTokens) / c.blockTokens), 0) + 1;
    let next = 0;
    const data = c.seqs.map((s, si) => {
      const n = s.startPos + s.nTokens;
      const table = Int32Array.from({ length: Math.ceil(n / c.blockTokens) }, () => (next++ * 5 + 1) % nBlocks);
      return { ...s, blockTable: table, k: rand(n * c.nKvHeads * c.headDim, 800 * ci + si, 2), v: rand(n * c.nKvHeads * c.headDimV, 900 * ci + si), q: rand(s.nTokens * c.nHeads * c.headDim, 1000 * ci + si, 2) };
    });
    const extra = { window: c.window, softcap: c.softcap };
    const opts = { kvType: c.kvType, blockTokens: c.blockTokens, nBlocks, nKvHeads: c.nKvHeads, nHeads: c.nHeads, headDim: c.headDim, headDimV: c.headDimV, scale, seqs: data, ...extra };
    const ref = ops().attention('ref', opts);
    const e = nmse(ref, attentionJs(c, data, scale, c.kvType === 'q8_0' ? q8 : f16, extra));
    t.ok(e < 1e-9, `case ${ci} cap ${c.softcap}: reference vs JS nmse ${e.toExponential(2)}`);
    t.ok(nmse(ref, attentionJs(c, data, scale, c.kvType === 'q8_0' ? q8 : f16, { window: c.window })) > 1e-6, `case ${ci}: the cap changes the result`);
    for (const v of SIMD) {
      const es = nmse(ops().attention(v, opts), ref);
      t.ok(es < (c.kvType === 'q8_0' ? 1e-8 : 1e-11), `case ${ci}: ${v} vs reference nmse ${es.toExponential(2)}`);
    }
  });
  const base = { kvType: 'f16' as const, blockTokens: 4, nBlocks: 1, nKvHeads: 1, nHeads: 1, headDim: 4, headDimV: 4, scale: 1,
    seqs: [{ startPos: 0, nTokens: 1, blockTable: Int32Array.of(0), k: rand(4, 1), v: rand(4, 2), q: rand(4, 3) }] };
  for (const cap of [-1, Infinity, NaN]) t.throws(() => ops().attention('ref', { ...base, softcap: cap }), { code: 'TDM_BAD_ARGUMENT', message: /softcap/ }, `softcap ${cap}`);
  for (const cap of [0, -2, Infinity]) t.throws(() => ops().softcap('ref', rand(4, 1), cap), { code: 'TDM_BAD_ARGUMENT', message: /cap/ }, `softcap op cap ${cap}`);
});

t.test("router: softmax_weight (gpt-oss) picks by raw logit and softmaxes the chosen ones", async (t) => {
  for (const v of ['ref', ...SIMD]) {
    for (const [nExperts, nUsed] of [[4, 1], [4, 2], [32, 4], [128, 8]]) {
      for (const norm of [false, true]) {
        const nTokens = 3;
        const logits = rand(nTokens * nExperts, nExperts * 5 + nUsed, 4);
        const r = ops().router(v, logits, nTokens, nExperts, nUsed, 'softmax_weight', norm, 1.5);
        for (let tk = 0; tk < nTokens; tk++) {
          const l = Array.from(logits.subarray(tk * nExperts, (tk + 1) * nExperts));
          const order = l.map((_, i) => i).sort((a, b) => l[b] - l[a]).slice(0, nUsed);
          if (nUsed > 1) [order[0], order[1]] = [order[1], order[0]];
          const mx = Math.max(...order.map((i) => l[i]));
          const e = order.map((i) => Math.exp(l[i] - mx));
          const sum = e.reduce((a, b) => a + b, 0);
          // Softmax weights already sum to 1: norm changes only rounding.
          const expectW = e.map((x) => (x / sum) * 1.5);
          t.same(Array.from(r.ids.subarray(tk * nUsed, (tk + 1) * nUsed)), order, `${v} ${nExperts}/${nUsed} norm=${norm} token ${tk}: ids`);
          t.ok(nmse(r.weights.subarray(tk * nUsed, (tk + 1) * nUsed), expectW) < 1e-12, `${v} ${nExperts}/${nUsed} norm=${norm} token ${tk}: weights`);
        }
      }
    }
  }
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

interface MoeOpts {
  glu: 'swiglu' | 'swiglu_oai';
  alpha: number;
  limit: number;
  gateBias?: Float32Array;
  upBias?: Float32Array;
  downBias?: Float32Array;
}

/** Mixture-of-experts FFN in float64 on (already dequantized) weights and unquantized activations;
 * o: per-expert biases and gpt-oss's clamped SwiGLU (ggml_swiglu_oai). */
function moeJs(gd: Float32Array, ud: Float32Array, dd: Float32Array, nEmbd: number, nFf: number,
  x: Float32Array, nTokens: number, ids: Int32Array, wts: Float32Array, nUsed: number, o?: MoeOpts): Float32Array {
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
        if (o?.gateBias) a += o.gateBias[e * nFf + r];
        if (o?.upBias) b += o.upBias[e * nFf + r];
        if (o?.glu === 'swiglu_oai') {
          const gc = Math.min(a, o.limit);
          const uc = Math.min(Math.max(b, -o.limit), o.limit);
          h[r] = (gc / (1 + Math.exp(-o.alpha * gc))) * (uc + 1);
        } else {
          h[r] = (a / (1 + Math.exp(-a))) * b;
        }
      }
      for (let r = 0; r < nEmbd; r++) {
        let s = o?.downBias ? o.downBias[e * nEmbd + r] : 0;
        for (let k = 0; k < nFf; k++) s += dd[(e * nEmbd + r) * nFf + k] * h[k];
        y[tk * nEmbd + r] += wts[tk * nUsed + j] * s;
      }
    }
  }
  return y;
}

t.test('expert FFN against JS, reading only the chosen experts', async (t) => {
  for (const type of WEIGHT_TYPES) {
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

t.test('expert FFN with per-expert biases and the clamped SwiGLU (gpt-oss) against JS', async (t) => {
  for (const type of ['f32', 'f16', 'q8_0', 'q4_K']) {
    const bs = typeInfo(type).blockSize;
    const nEmbd = bs === 256 ? 256 : 64;
    const nFf = bs === 256 ? 256 : 96;
    const nExp = 6;
    const g = rand(nExp * nFf * nEmbd, 31, 0.3);
    const u = rand(nExp * nFf * nEmbd, 32, 0.3);
    const d = rand(nExp * nEmbd * nFf, 33, 0.1);
    const [gd, ud, dd] = [g, u, d].map((w) => dequantize(type, quantize(type, w), w.length));
    const biases = { gateBias: rand(nExp * nFf, 34, 0.5), upBias: rand(nExp * nFf, 35, 0.5), downBias: rand(nExp * nEmbd, 36, 0.5) };
    // A limit low enough that both clamps bite, and gpt-oss's own constants.
    const variants: MoeOpts[] = [
      { glu: 'swiglu_oai', alpha: 1.702, limit: 1.5, ...biases },
      { glu: 'swiglu_oai', alpha: 1.702, limit: 7 },
      { glu: 'swiglu', alpha: 0, limit: 0, ...biases },
      { glu: 'swiglu', alpha: 0, limit: 0, downBias: biases.downBias },
    ];
    for (const [nTokens, nUsed] of [[1, 2], [7, 3]]) {
      const x = rand(nTokens * nEmbd, 37 + nTokens);
      const ids = Int32Array.from({ length: nTokens * nUsed }, (_, i) => (i * 5 + 1) % (nExp - 1));
      const wts = rand(nTokens * nUsed, 38).map((w) => 0.5 + Math.abs(w) / 2);
      for (const o of variants) {
        const label = `${type} ${nTokens} tokens ${o.glu} limit ${o.limit} biases ${['gateBias', 'upBias', 'downBias'].filter((b) => b in o).join('+') || 'none'}`;
        const ref = ops().moeFfn('ref', type, g, u, d, nExp, nEmbd, nFf, x, nTokens, ids, wts, nUsed, o);
        const tol = type === 'f32' ? 1e-12 : type === 'f16' ? 1e-6 : 2e-3;
        const e = nmse(ref, moeJs(gd, ud, dd, nEmbd, nFf, x, nTokens, ids, wts, nUsed, o));
        t.ok(e < tol, `${label}: reference vs JS nmse ${e.toExponential(2)}`);
        for (const v of SIMD) {
          const es = nmse(ops().moeFfn(v, type, g, u, d, nExp, nEmbd, nFf, x, nTokens, ids, wts, nUsed, o), ref);
          t.ok(es <= (SIMD_MATMUL_NMSE[type] ?? 1e-11) * 10, `${label}: ${v} vs reference nmse ${es.toExponential(2)}`);
        }
      }
    }
  }
  const args = [rand(2 * 4 * 8, 1), rand(2 * 4 * 8, 2), rand(2 * 8 * 4, 3), 2, 8, 4, rand(8, 4), 1, Int32Array.of(0, 1), Float32Array.of(0.5, 0.5), 2] as const;
  t.throws(() => ops().moeFfn('ref', 'f32', ...args, { glu: 'swiglu', gateBias: rand(3, 5) }), { code: 'TDM_BAD_ARGUMENT' }, 'bias of the wrong length');
  t.throws(() => ops().moeFfn('ref', 'f32', ...args, { glu: 'geglu' as 'swiglu' }), { code: 'TDM_BAD_ARGUMENT' }, 'unknown activation');
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
