// Quant types (native/cpu/quants_ref.cpp through src/model/quant.ts): round-trip error
// per type, idempotence, dot products against float dots, many shapes, typed errors,
// hand-built blocks decoded by hand from the GGUF format, and byte-for-byte agreement
// with the llama.cpp that node-llama-cpp ships (where a C++ compiler is present).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  dequantize,
  quantize,
  quantizeAsync,
  quantizeInto,
  quantTypes,
  rowBytes,
  typeInfo,
  vecDot,
  vecDotF32,
  type QuantType,
} from '../../src/model/quant.js';
import { repoRoot } from '../helpers.js';

const ALL: QuantType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_K', 'q5_K', 'q6_K', 'q8_K', 'q8_1', 'mxfp4', 'q2_K', 'q3_K', 'iq4_nl', 'iq4_xs', 'iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s'];

// Normalised RMS error, sqrt(sum (x - y)^2 / sum x^2), bounds for standard normal data.
// Measured on this data: f16 2.1e-4, bf16 1.6e-3, q8_0 5.3e-3, q8_K 7.0e-3, q6_K 1.8e-2,
// q5_K 3.6e-2, q5_1 3.8e-2, q5_0 4.3e-2, q4_K 7.2e-2, q4_1 7.8e-2, q4_0 8.5e-2, mxfp4 1.15e-1
// (a power-of-two scale and FP4's uneven levels), iq4_nl 7.7e-2, iq4_xs 7.7e-2, q3_K 1.5e-1, q2_K
// 3.0e-1, iq3_s 1.4e-1, iq3_xxs 1.8e-1, iq2_s 2.5e-1, iq2_xs 3.0e-1, iq2_xxs 3.5e-1 (the grid
// types' values are codebook entries: 2-3 bits a weight with a sign each).
const NRMSE_BOUND: Record<QuantType, number> = {
  f32: 0,
  f16: 3e-4,
  bf16: 2.5e-3,
  q8_0: 7e-3,
  q8_1: 7e-3,
  q8_K: 9e-3,
  q6_K: 2.2e-2,
  q5_K: 4.5e-2,
  q5_1: 5e-2,
  q5_0: 5.5e-2,
  q4_K: 9e-2,
  q4_1: 1e-1,
  q4_0: 1.05e-1,
  mxfp4: 1.4e-1,
  iq4_xs: 9e-2,
  iq4_nl: 9e-2,
  q3_K: 1.8e-1,
  q2_K: 3.5e-1,
  iq3_s: 1.65e-1,
  iq3_xxs: 2.1e-1,
  iq2_s: 2.9e-1,
  iq2_xs: 3.5e-1,
  iq2_xxs: 4e-1,
};

// A small seeded generator for test inputs.
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
}

function gaussian(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = scale * Math.sqrt(-2 * Math.log(r())) * Math.cos(2 * Math.PI * r());
  return x;
}

function nrmse(x: Float32Array, y: Float32Array): number {
  let e = 0;
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    e += (x[i] - y[i]) ** 2;
    s += x[i] ** 2;
  }
  return s === 0 ? Math.sqrt(e) : Math.sqrt(e / s);
}

function sameFloats(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i]) && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return false;
  return true;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

// IEEE half to float, from the format (sign, 5-bit exponent bias 15, 10-bit fraction).
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return sign * f * 2 ** -24;
  if (e === 31) return f ? NaN : sign * Infinity;
  return sign * (1 + f / 1024) * 2 ** (e - 15);
}

const f32 = Math.fround;

t.test('type table: ids, block geometry, activation types', async (t) => {
  const expected: [QuantType, number, number, number, QuantType][] = [
    ['f32', 0, 1, 4, 'f32'],
    ['f16', 1, 1, 2, 'f16'],
    ['q4_0', 2, 32, 18, 'q8_0'],
    ['q4_1', 3, 32, 20, 'q8_1'],
    ['q5_0', 6, 32, 22, 'q8_0'],
    ['q5_1', 7, 32, 24, 'q8_1'],
    ['q8_0', 8, 32, 34, 'q8_0'],
    ['q8_1', 9, 32, 36, 'q8_1'],
    ['q4_K', 12, 256, 144, 'q8_K'],
    ['q5_K', 13, 256, 176, 'q8_K'],
    ['q6_K', 14, 256, 210, 'q8_K'],
    ['q8_K', 15, 256, 292, 'q8_K'],
    ['bf16', 30, 1, 2, 'bf16'],
    ['mxfp4', 39, 32, 17, 'q8_0'],
    ['q2_K', 10, 256, 84, 'q8_K'],
    ['q3_K', 11, 256, 110, 'q8_K'],
    ['iq4_nl', 20, 32, 18, 'q8_0'],
    ['iq4_xs', 23, 256, 136, 'q8_K'],
    ['iq2_xxs', 16, 256, 66, 'q8_K'],
    ['iq2_xs', 17, 256, 74, 'q8_K'],
    ['iq3_xxs', 18, 256, 98, 'q8_K'],
    ['iq3_s', 21, 256, 110, 'q8_K'],
    ['iq2_s', 22, 256, 82, 'q8_K'],
  ];
  for (const [name, id, blockSize, typeSize, vdt] of expected) {
    t.same(typeInfo(name), { id, name, blockSize, typeSize, computable: true, vecDotType: vdt }, name);
    t.equal(typeInfo(id).name, name, `id ${id}`);
  }
  t.same([...quantTypes()].sort(), [...ALL].sort(), 'quantTypes lists exactly the computable types');
  t.equal(typeInfo('Q4_K').name, 'q4_K', 'names are case-insensitive');
  t.same(typeInfo('iq1_s'), { id: 19, name: 'iq1_s', blockSize: 256, typeSize: 50, computable: false, vecDotType: null });
  t.equal(rowBytes('q4_K', 4096), 16 * 144);
  t.equal(rowBytes('q8_0', 64), 68);
});

t.test('fp16 and bf16 conversions round to nearest even', async (t) => {
  const f16 = (vals: number[]) => Array.from(new Uint16Array(quantize('f16', Float32Array.from(vals)).buffer));
  t.same(f16([1, -2, 0.5, 65504, 0, -0]), [0x3c00, 0xc000, 0x3800, 0x7bff, 0x0000, 0x8000]);
  // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: to even (1); 1 + 3*2^-11 goes up to 1 + 2^-9.
  t.same(f16([1 + 2 ** -11, 1 + 3 * 2 ** -11]), [0x3c00, 0x3c02]);
  // 65519 rounds down to 65504, 65520 (the tie) up to infinity.
  t.same(f16([65519, 65520, 1e6, -Infinity]), [0x7bff, 0x7c00, 0x7c00, 0xfc00]);
  // Subnormals: 2^-24 is the smallest; 2^-25 ties to 0; 1.5 * 2^-24 ties up to 2 * 2^-24.
  t.same(f16([2 ** -24, 2 ** -25, 1.5 * 2 ** -24, 2 ** -14 - 2 ** -24]), [0x0001, 0x0000, 0x0002, 0x03ff]);
  t.same(f16([NaN]), [0x7e00], 'NaN becomes a quiet NaN');

  const bf16 = (vals: number[]) => Array.from(new Uint16Array(quantize('bf16', Float32Array.from(vals)).buffer));
  t.same(bf16([1, -2, 3.140625]), [0x3f80, 0xc000, 0x4049]);
  // 1 + 2^-8 ties between 1 and 1 + 2^-7: to even; 1 + 3*2^-8 ties up.
  t.same(bf16([1 + 2 ** -8, 1 + 3 * 2 ** -8]), [0x3f80, 0x3f82]);
  // NaN keeps its top bits and is forced quiet (a signalling NaN 0x7f800001 -> 0x7fc0).
  const snan = new Float32Array(new Uint32Array([0x7f800001, 0xffc00000]).buffer);
  t.same(bf16(Array.from(snan)).map((h) => h & 0x7fc0), [0x7fc0, 0x7fc0]);
  t.same(bf16([3.4e38]), [0x7f80], 'rounds past the largest bf16 to infinity');

  const back = dequantize('f16', new Uint8Array(new Uint16Array([0x3c01, 0x0001, 0xfbff, 0x7c00]).buffer), 4);
  t.same(Array.from(back), [1 + 2 ** -10, 2 ** -24, -65504, Infinity]);
});

t.test('round trip error per type is within its stated bound', async (t) => {
  const x = gaussian(256 * 64, 7);
  for (const type of ALL) {
    const y = dequantize(type, quantize(type, x), x.length);
    const e = nrmse(x, y);
    t.ok(e <= NRMSE_BOUND[type], `${type}: nrmse ${e.toExponential(3)} <= ${NRMSE_BOUND[type]}`);
  }
});

t.test('many shapes and distributions', async (t) => {
  const distributions: Record<string, (n: number, seed: number) => Float32Array> = {
    normal: (n, s) => gaussian(n, s),
    // Values near 1e-2 keep block scales in fp16's normal range (below about 6e-5 a scale
    // goes subnormal and loses precision, in llama.cpp's format as in tandem's).
    'small scale': (n, s) => gaussian(n, s, 1e-2),
    'large scale': (n, s) => gaussian(n, s, 1e3),
    'positive offset': (n, s) => gaussian(n, s).map((v) => v + 4),
    'heavy tails': (n, s) => gaussian(n, s).map((v) => v * v * v),
    sparse: (n, s) => {
      const r = rng(s + 99);
      return gaussian(n, s).map((v) => (r() < 0.8 ? 0 : v));
    },
  };
  // Heavy tails and sparse rows stress block scales; bounds there are looser.
  const slack: Record<string, number> = { 'heavy tails': 2.5, sparse: 2 };
  for (const type of ALL) {
    const { blockSize } = typeInfo(type);
    for (const blocks of [1, 2, 3, 7, 33]) {
      const n = blocks * blockSize;
      for (const [name, make] of Object.entries(distributions)) {
        const x = make(n, blocks * 31 + n);
        const q = quantize(type, x);
        t.equal(q.length, rowBytes(type, n));
        const y = dequantize(type, q, n);
        const e = nrmse(x, y);
        const bound = Math.max(NRMSE_BOUND[type], 1e-6) * (slack[name] ?? 1.3);
        if (!(e <= bound)) t.fail(`${type} ${name} ${blocks} blocks: nrmse ${e} > ${bound}`);
      }
      const zeros = dequantize(type, quantize(type, new Float32Array(n)), n);
      if (!zeros.every((v) => v === 0)) t.fail(`${type}: zeros do not round-trip to zeros`);
    }
  }
  t.pass('all shapes within bounds');
});

t.test('quantizing a whole tensor equals quantizing its rows; async and into agree', async (t) => {
  for (const type of ALL) {
    const { blockSize } = typeInfo(type);
    const cols = blockSize * 3;
    const rows = 5;
    const x = gaussian(rows * cols, 3);
    const whole = quantize(type, x);
    const perRow = Buffer.concat(Array.from({ length: rows }, (_, r) => quantize(type, x.subarray(r * cols, (r + 1) * cols))));
    t.ok(sameBytes(whole, perRow), `${type}: whole tensor = concatenated rows`);
    const dst = new Uint8Array(whole.length);
    t.equal(quantizeInto(type, x, dst), whole.length);
    t.ok(sameBytes(dst, whole), `${type}: quantizeInto`);
  }
  // Large enough that the async path splits across threads; bytes must not depend on it.
  for (const type of ['q4_K', 'q8_0', 'q6_K', 'f16'] as QuantType[]) {
    const x = gaussian(256 * 700, 11);
    const sync = quantize(type, x);
    t.ok(sameBytes(await quantizeAsync(type, x, { threads: 3 }), sync), `${type}: quantizeAsync(3 threads) = quantize`);
    t.ok(sameBytes(await quantizeAsync(type, x), sync), `${type}: quantizeAsync(default threads) = quantize`);
  }
});

t.test('dequantize(quantize(x)) is a fixed point where the format guarantees it', async (t) => {
  const x = gaussian(256 * 16, 5);
  // Exact by construction: float types, and the symmetric types whose largest element maps
  // to the extreme level (its value fixes d exactly); q4_1/q5_1 for zero-mean data like this.
  // mxfp4: the largest value lands on code 8 or 12 of the same power-of-two scale.
  for (const type of ['f32', 'f16', 'bf16', 'q8_0', 'q8_1', 'q4_0', 'q5_0', 'q4_1', 'q5_1', 'mxfp4'] as QuantType[]) {
    const y = dequantize(type, quantize(type, x), x.length);
    const y2 = dequantize(type, quantize(type, y), x.length);
    t.ok(sameFloats(y, y2), `${type}: exact fixed point`);
  }
  // The K types re-run their scale search, which may move: the second pass stays close.
  for (const [type, bound] of [['q4_K', 1e-2], ['q5_K', 1e-2], ['q6_K', 1e-2], ['q8_K', 1e-6]] as [QuantType, number][]) {
    const y = dequantize(type, quantize(type, x), x.length);
    const y2 = dequantize(type, quantize(type, y), x.length);
    const e = nrmse(y, y2);
    t.ok(e <= bound, `${type}: second round trip moves values by nrmse ${e.toExponential(2)} <= ${bound}`);
  }
});

t.test('vecDot matches the float dot of the dequantized operands', async (t) => {
  for (const type of ALL) {
    const info = typeInfo(type);
    const act = info.vecDotType as QuantType;
    for (const blocks of [1, 3, 8, 17]) {
      const n = blocks * Math.max(info.blockSize, typeInfo(act).blockSize);
      const w = quantize(type, gaussian(n, blocks));
      const a = quantize(act, gaussian(n, blocks + 1000));
      const wf = dequantize(type, w, n);
      const af = dequantize(act, a, n);
      let dot = 0;
      let mag = 0;
      let minTerm = 0;
      for (let i = 0; i < n; i++) {
        dot += wf[i] * af[i];
        mag += Math.abs(wf[i] * af[i]);
      }
      // q4_1/q5_1 take sum(a) per block from Q8_1's fp16 field s, rounded to 11 bits.
      if (type === 'q4_1' || type === 'q5_1') {
        for (let b = 0; b < n / 32; b++) {
          const m = halfToFloat(w[b * info.typeSize + 2] | (w[b * info.typeSize + 3] << 8));
          for (let j = 0; j < 32; j++) minTerm += Math.abs(m * af[b * 32 + j]);
        }
      }
      const got = vecDot(type, w, a, n);
      const tol = 2e-6 * mag + 2 ** -10 * minTerm + 1e-30;
      if (!(Math.abs(got - dot) <= tol)) t.fail(`${type} n=${n}: vecDot ${got} vs float dot ${dot} (tol ${tol})`);
    }
    // vecDotF32 quantizes float activations itself; close to the true dot within the types' error.
    const n = 4 * Math.max(info.blockSize, 256);
    const x = gaussian(n, 77);
    const y = gaussian(n, 78);
    let exact = 0;
    for (let i = 0; i < n; i++) exact += x[i] * y[i];
    const approx = vecDotF32(type, quantize(type, x), y);
    const bound = 4 * (NRMSE_BOUND[type] + NRMSE_BOUND[act] + 1e-6) * n;
    if (!(Math.abs(approx - exact) <= bound)) t.fail(`${type}: vecDotF32 ${approx} vs ${exact}`);
  }
  t.pass('every type within tolerance');
});

t.test('bad arguments are typed errors', async (t) => {
  const bad = { code: 'TDM_BAD_ARGUMENT' };
  t.throws(() => quantize('q4_0', new Float32Array(31)), bad, 'length not a multiple of the block');
  t.throws(() => quantize('q4_K', new Float32Array(288)), bad);
  t.throws(() => quantize('nope', new Float32Array(32)), bad, 'unknown type name');
  t.throws(() => quantize(99, new Float32Array(32)), bad, 'unknown type id');
  t.throws(() => quantize('q8_0', new Float64Array(32) as unknown as Float32Array), bad, 'src must be a Float32Array');
  t.throws(() => quantize('q8_0', Float32Array.from({ length: 32 }, (_, i) => (i === 5 ? NaN : 1))), bad, 'NaN input');
  t.throws(() => quantize('q6_K', Float32Array.from({ length: 256 }, (_, i) => (i === 9 ? -Infinity : 1))), bad, 'infinite input');
  t.throws(() => quantize('iq1_s', new Float32Array(256)), { code: 'TDM_UNSUPPORTED' }, 'known but not computable');
  t.throws(() => typeInfo('q9_9'), bad);
  t.throws(() => rowBytes('q8_0', 33), bad);

  const q = quantize('q4_K', gaussian(512, 1));
  t.throws(() => dequantize('q4_K', q, 256), bad, 'bytes longer than n elements take');
  t.throws(() => dequantize('q4_K', q.subarray(1), 512), bad, 'bytes shorter');
  t.throws(() => dequantize('q4_K', q, 300), bad, 'n not a multiple of the block');
  t.throws(() => dequantize('q4_K', q, -256), bad, 'negative n');
  t.throws(() => dequantize('q4_K', q, 1.5), bad, 'fractional n');
  t.throws(() => dequantize('q4_K', [1, 2, 3] as unknown as Uint8Array, 256), bad, 'bytes not a typed array');
  const a = quantize('q8_K', gaussian(512, 2));
  t.throws(() => vecDot('q4_K', q, a.subarray(0, 292), 512), bad, 'activation too short');
  t.throws(() => vecDot('q4_K', q, quantize('q8_0', gaussian(512, 2)), 512), bad, 'activation in the wrong type');
  t.throws(() => vecDot('q4_K', q.subarray(0, 144), a, 512), bad, 'weights too short');
  t.throws(() => quantizeInto('q8_0', new Float32Array(64), new Uint8Array(67)), bad, 'dst of the wrong size');
  await t.rejects(quantizeAsync('q5_0', new Float32Array(33)), bad, 'async: bad length rejects');
  await t.rejects(quantizeAsync('q8_0', Float32Array.from({ length: 64 * 256 }, (_, i) => (i === 5000 ? NaN : 1)), { threads: 2 }), bad, 'async: NaN rejects');
  await t.rejects(quantizeAsync('q8_0', new Float32Array(32), { threads: 0 }), bad, 'async: bad thread count');

  t.same(Array.from(dequantize('q4_0', new Uint8Array(0), 0)), [], 'zero elements are fine');
  t.equal(vecDot('q6_K', new Uint8Array(0), new Uint8Array(0), 0), 0);
});

// ---- Hand-built blocks: bytes chosen by hand, values computed by hand from the format.

function bytesOf(size: number, set: Record<number, number>): Uint8Array {
  const b = new Uint8Array(size);
  for (const [k, v] of Object.entries(set)) b[Number(k)] = v;
  return b;
}

t.test('hand-built 32-element blocks decode as the format says', async (t) => {
  // Q4_0 {d: f16, qs[16]}: x_j = d*((qs[j]&15) - 8), x_{j+16} = d*((qs[j]>>4) - 8).
  const q40 = bytesOf(18, { 0: 0x00, 1: 0x38 }); // d = 0.5
  q40.fill(0x88, 2); // every nibble 8 -> 0
  q40[2] = 0x1f; // x0 = (15-8)*0.5 = 3.5, x16 = (1-8)*0.5 = -3.5
  const y40 = dequantize('q4_0', q40, 32);
  t.same([y40[0], y40[16], y40[1], y40[31]], [3.5, -3.5, 0, 0]);

  // Q4_1 {d, m: f16, qs[16]}: x = d*q + m.
  const q41 = bytesOf(20, { 0: 0x00, 1: 0x3c, 2: 0x00, 3: 0xc0, 7: 0xa5 }); // d = 1, m = -2, qs[3] = 0xa5
  const y41 = dequantize('q4_1', q41, 32);
  t.same([y41[3], y41[19], y41[0]], [5 - 2, 10 - 2, -2]);

  // Q5_0 {d, qh: u32 LE, qs[16]}: bit j of qh is bit 4 of element j; x = d*(q - 16).
  const q50 = bytesOf(22, { 0: 0x00, 1: 0x34, 2: 0x04, 4: 0x04, 8: 0x3c }); // d = 0.25, qh bits 2 and 18, qs[2] = 0x3c
  const y50 = dequantize('q5_0', q50, 32);
  t.same([y50[2], y50[18], y50[0], y50[31]], [(28 - 16) * 0.25, (19 - 16) * 0.25, -4, -4]);

  // Q5_1 {d, m, qh, qs}: x = d*q + m.
  const q51 = bytesOf(24, { 1: 0x3c, 3: 0x38, 7: 0x80, 23: 0xf0 }); // d = 1, m = 0.5, qh bit 31, qs[15] = 0xf0
  const y51 = dequantize('q5_1', q51, 32);
  t.same([y51[15], y51[31], y51[0]], [0.5, 31.5, 0.5]);

  // Q8_0 {d, qs: i8[32]}; Q8_1 {d, s, qs}: x = d*q (s is only read by dot products).
  const q80 = bytesOf(34, { 1: 0x3c, 2: 0x80, 33: 0x7f }); // d = 1, q0 = -128, q31 = 127
  const y80 = dequantize('q8_0', q80, 32);
  t.same([y80[0], y80[31], y80[5]], [-128, 127, 0]);
  const q81 = bytesOf(36, { 1: 0x38, 3: 0x7c, 9: 0xfd }); // d = 0.5, s = inf (ignored), q5 = -3
  t.equal(dequantize('q8_1', q81, 32)[5], -1.5);

  // MXFP4 {e: E8M0, qs[16]}: x = v[q] * 2^(e - 128), v = twice the FP4 E2M1 values, indexed
  // by code (bit 3 the sign); nibbles as Q4_0.
  const v = [0, 1, 2, 3, 4, 6, 8, 12, -0, -1, -2, -3, -4, -6, -8, -12];
  const mx = bytesOf(17, { 0: 130, 1: 0x7f, 2: 0x9a, 16: 0x08 }); // scale 4; codes (15, 7), (10, 9), (8, 0)
  const ymx = dequantize('mxfp4', mx, 32);
  t.same([ymx[0], ymx[16], ymx[1], ymx[17], ymx[15], ymx[31], ymx[2]], [v[15] * 4, v[7] * 4, v[10] * 4, v[9] * 4, 0, 0, 0]);
  t.ok(Object.is(ymx[15], 0) && Object.is(ymx[31], 0), 'codes 0 and 8 (-0) both give +0');
  // e = 0 and 1 are float subnormals (2^-128, 2^-127), e = 255 is 2^127 (not NaN).
  for (const [e, scale] of [[0, 2 ** -128], [1, 2 ** -127], [127, 0.5], [255, 2 ** 127]]) {
    t.equal(dequantize('mxfp4', bytesOf(17, { 0: e, 1: 0x01 }), 32)[0], f32(scale), `e = ${e}: scale ${scale}`);
  }
});

// Q4_K/Q5_K scales: 12 bytes holding eight 6-bit scales and mins. Sub-blocks 0..3: low 6
// bits of bytes j (scale) and j+4 (min). Sub-blocks 4..7: byte j+4 holds scale (low
// nibble) and min (high nibble) low bits; the top 2 bits of bytes j-4 and j are their bits 4-5.
const K4_SCALES = [0xc1, 10, 0, 0, 0x82, 0, 0, 0, 0x75, 0, 0, 0];
// sub-block 0: scale 1, min 2; sub-block 1: scale 10, min 0;
// sub-block 4: scale 0x5 | (0xc1>>6)<<4 = 53, min 0x7 | (0x82>>6)<<4 = 39; others 0.

t.test('hand-built Q4_K block', async (t) => {
  // {d: f16, dmin: f16, scales[12], qs[128]}; x = d*scale_j*q - dmin*min_j.
  const b = new Uint8Array(144);
  b.set([0x00, 0x3c, 0x00, 0x38], 0); // d = 1, dmin = 0.5
  b.set(K4_SCALES, 4);
  b[16 + 0] = 0x3f; // element 0 (sub-block 0, low nibble) q = 15; element 32 (sub-block 1, high nibble) q = 3
  b[16 + 64] = 0x02; // element 128 (sub-block 4, low nibble of qs[64]) q = 2
  const y = dequantize('q4_K', b, 256);
  t.equal(y[0], 1 * 1 * 15 - 0.5 * 2, 'element 0: 14');
  t.equal(y[1], -1, 'element 1: q = 0 -> -dmin*2');
  t.equal(y[32], 1 * 10 * 3, 'element 32: 30');
  t.equal(y[128], 1 * 53 * 2 - 0.5 * 39, 'element 128: 86.5');
  t.equal(y[129], -0.5 * 39, 'element 129: -19.5');
  t.equal(y[64] + 0, 0, 'sub-block 2 has scale and min 0');
  t.equal(y[160] + 0, 0, 'sub-block 5 has scale and min 0');
});

t.test('hand-built Q5_K block', async (t) => {
  // {d, dmin, scales[12], qh[32], qs[128]}: element 64c+l takes bit 2c of qh[l], element
  // 64c+32+l bit 2c+1, as bit 4 of its level.
  const b = new Uint8Array(176);
  b.set([0x00, 0x3c, 0x00, 0x38], 0);
  b.set(K4_SCALES, 4);
  b[16] = 0x12; // qh[0]: bit 1 (element 32) and bit 4 (element 128)
  b[48 + 0] = 0x3f;
  b[48 + 64] = 0x02;
  const y = dequantize('q5_K', b, 256);
  t.equal(y[0], 14, 'element 0: 1*1*15 - 0.5*2 (no fifth bit)');
  t.equal(y[32], 1 * 10 * (3 + 16), 'element 32: 190');
  t.equal(y[128], 1 * 53 * (2 + 16) - 0.5 * 39, 'element 128: 934.5');
  t.equal(y[160] + 0, 0, 'element 160: sub-block 5 is zero');
});

t.test('hand-built Q6_K block', async (t) => {
  // {ql[128], qh[64], scales: i8[16], d: f16}; x = d * scales[e/16] * (q - 32).
  const b = new Uint8Array(210);
  for (let g = 0; g < 16; g++) b[192 + g] = g + 1;
  b[192 + 0] = 0xfe; // scale 0 = -2
  b[192 + 2] = 3;
  b[192 + 4] = 1;
  b[192 + 6] = 1;
  b[192 + 8] = 4;
  b.set([0x00, 0x38], 208); // d = 0.5
  b[0] = 0x5a; // ql[0]: element 0 low 4 bits 0xa, element 64 low 4 bits 0x5
  b[32] = 0x0f; // ql[32]: element 32 low bits 0xf, element 96 low bits 0
  b[128] = 0xd9; // qh[0] = 0b11_01_10_01: top bits of elements 0 (1), 32 (2), 64 (1), 96 (3)
  b[64] = 0x01; // ql[64]: element 128 low bits 1
  b[128 + 32] = 0x03; // qh[32]: element 128 top bits 3
  const y = dequantize('q6_K', b, 256);
  t.equal(y[0], 0.5 * -2 * (0x1a - 32), 'element 0: q = 26 -> 6');
  t.equal(y[32], 0.5 * 3 * (0x2f - 32), 'element 32: q = 47 -> 22.5');
  t.equal(y[64], 0.5 * 1 * (0x15 - 32), 'element 64: q = 21 -> -5.5');
  t.equal(y[96], 0.5 * 1 * (0x30 - 32), 'element 96: q = 48 -> 8');
  t.equal(y[128], 0.5 * 4 * (0x31 - 32), 'element 128: q = 49 -> 34');
  t.equal(y[1], 0.5 * -2 * -32, 'element 1: q = 0 -> 32');
  t.equal(y[255], 0.5 * 16 * -32, 'element 255: scale 16, q = 0');
});

t.test('hand-built Q8_K block', async (t) => {
  // {d: f32, qs: i8[256], bsums: i16[16]}; x = d*q.
  const b = new Uint8Array(292);
  new DataView(b.buffer).setFloat32(0, 0.25, true);
  b[4] = 0xf9; // q0 = -7
  b[4 + 255] = 0x7f;
  const y = dequantize('q8_K', b, 256);
  t.same([y[0], y[255], y[1]], [-1.75, 31.75, 0]);
});

// Independent decoders written from the format, for whole blocks of random bytes.
function decodeK4(b: Uint8Array, fifthBit: boolean): number[] {
  const d = halfToFloat(b[0] | (b[1] << 8));
  const dmin = halfToFloat(b[2] | (b[3] << 8));
  const sc = b.subarray(4, 16);
  const qh = b.subarray(16, 48);
  const qs = b.subarray(fifthBit ? 48 : 16);
  const out: number[] = [];
  for (let e = 0; e < 256; e++) {
    const j = e >> 5; // sub-block
    const scale = j < 4 ? sc[j] & 63 : (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
    const min = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    const c = e >> 6;
    const high = (e & 63) >= 32;
    const byte = qs[32 * c + (e & 31)];
    let q = high ? byte >> 4 : byte & 15;
    if (fifthBit && (qh[e & 31] >> (2 * c + (high ? 1 : 0))) & 1) q += 16;
    out.push(f32(f32(f32(d * scale) * q) - f32(dmin * min)));
  }
  return out;
}

function decodeQ6K(b: Uint8Array): number[] {
  const d = halfToFloat(b[208] | (b[209] << 8));
  const out: number[] = [];
  for (let e = 0; e < 256; e++) {
    const h = e >> 7;
    const r = e & 127;
    const l = r & 31;
    const quarter = r >> 5; // 0: low nibble of ql[l]; 1: low of ql[l+32]; 2: high of ql[l]; 3: high of ql[l+32]
    const ql = b[64 * h + l + (quarter & 1 ? 32 : 0)];
    const low = quarter < 2 ? ql & 15 : ql >> 4;
    const top = (b[128 + 32 * h + l] >> (2 * quarter)) & 3;
    const scale = (b[192 + (e >> 4)] << 24) >> 24;
    out.push(f32(f32(d * scale) * ((low | (top << 4)) - 32)));
  }
  return out;
}

function randomBlock(size: number, halfAt: number[], r: () => number): Uint8Array {
  const b = Uint8Array.from({ length: size }, () => Math.floor(r() * 256));
  // Keep the half-precision scales finite (an all-ones exponent is inf/NaN).
  for (const at of halfAt) b[at + 1] = (b[at + 1] & 0x83) | (Math.floor(r() * 24) << 2);
  return b;
}

t.test('random K blocks decode as independent format decoders say', async (t) => {
  const r = rng(2024);
  for (let rep = 0; rep < 50; rep++) {
    const b4 = randomBlock(144, [0, 2], r);
    t.same(Array.from(dequantize('q4_K', b4, 256)), decodeK4(b4, false));
    const b5 = randomBlock(176, [0, 2], r);
    t.same(Array.from(dequantize('q5_K', b5, 256)), decodeK4(b5, true));
    const b6 = randomBlock(210, [208], r);
    t.same(Array.from(dequantize('q6_K', b6, 256)), decodeQ6K(b6));
  }
});

// ---- Byte-for-byte against llama.cpp: a small C++ harness links tandem's quantizers and
// calls the libggml-base that node-llama-cpp 3.21.1 ships (ggml_quantize_chunk, the
// type traits' to_float, ggml_fp32_to_fp16/bf16) on the same inputs.

const HARNESS = String.raw`
#include <dlfcn.h>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include "cpu/quants.h"
using namespace tdm;
typedef void (*to_float_fn)(const void*, float*, int64_t);
typedef void (*from_float_fn)(const float*, void*, int64_t);
struct GgmlTraits { const char* name; int64_t block; int64_t interleave; size_t size; bool quantized; to_float_fn to_float; from_float_fn from_ref; };
int main(int argc, char** argv) {
  void* lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) { printf("skip %s\n", dlerror()); return 0; }
  auto traits = (const GgmlTraits* (*)(int))dlsym(lib, "ggml_get_type_traits");
  auto chunk = (size_t (*)(int, const float*, void*, int64_t, int64_t, int64_t, const float*))dlsym(lib, "ggml_quantize_chunk");
  auto to_half = (uint16_t (*)(float))dlsym(lib, "ggml_fp32_to_fp16");
  auto to_bf16 = (uint16_t (*)(float))dlsym(lib, "ggml_fp32_to_bf16");
  auto q8_1 = (from_float_fn)dlsym(lib, "quantize_row_q8_1_ref");
  auto q8_K = (from_float_fn)dlsym(lib, "quantize_row_q8_K_ref");
  if (!traits || !chunk || !to_half || !to_bf16 || !q8_1 || !q8_K) { printf("skip missing symbols\n"); return 0; }
  long bad = 0;
  for (uint64_t u = 0; u < (1ull << 32); u += 65521) {
    float f; uint32_t b = uint32_t(u); memcpy(&f, &b, 4);
    if (fp32_to_fp16(f) != to_half(f) || fp32_to_bf16(f) != to_bf16(f)) bad++;
  }
  printf("conv fp16/bf16 %ld\n", bad);
  std::mt19937 gen(1234);
  std::normal_distribution<float> normal(0, 1);
  std::uniform_real_distribution<float> unit(0, 1);
  for (int type : {1, 30, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 20, 23, 39}) {
    const GgmlTraits* tr = traits(type);
    long q_bad = 0, d_bad = 0, blocks = 0;
    for (int rep = 0; rep < 140; rep++) {
      const int64_t n = 256 * (1 + rep % 3);
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; i++) {
        float v = normal(gen);
        switch (rep % 7) {
          case 1: v = unit(gen) * 3 + 0.5f; break;
          case 2: v *= std::pow(10.0f, float(int(i / 32) % 7 - 3)); break;
          case 3: v = unit(gen) < 0.9f ? 0.0f : v; break;
          case 4: v *= 1e-6f; break;
          case 5: v = (i / 32) % 2 ? 0.25f : -1.5f; break;
          case 6: v = v * v * v * 10; break;
        }
        x[i] = v;
      }
      const size_t bytes = size_t(n / tr->block) * tr->size;
      std::vector<uint8_t> ours(bytes), theirs(bytes);
      quantize_row_ref(GgmlType(type), x.data(), ours.data(), n);
      if (type == 9) q8_1(x.data(), theirs.data(), n);
      else if (type == 15) q8_K(x.data(), theirs.data(), n);
      else chunk(type, x.data(), theirs.data(), 0, 1, n, nullptr);
      // Q8_K: ggml leaves bsums of an all-zero block unset, so compare d and qs only.
      const size_t cmp = type == 15 ? 4 + 256 : tr->size;
      for (size_t b = 0; b < bytes / tr->size; b++, blocks++) q_bad += memcmp(&ours[b * tr->size], &theirs[b * tr->size], cmp) != 0;
      if (tr->to_float) {
        std::vector<uint8_t> raw(bytes);
        for (auto& v : raw) v = uint8_t(gen());
        for (const std::vector<uint8_t>* src : {&theirs, &raw}) {
          std::vector<float> a(n), b(n);
          dequantize_row_ref(GgmlType(type), src->data(), a.data(), n);
          tr->to_float(src->data(), b.data(), n);
          for (int64_t i = 0; i < n; i++) {
            uint32_t ua, ub; memcpy(&ua, &a[i], 4); memcpy(&ub, &b[i], 4);
            if (ua != ub && !(std::isnan(a[i]) && std::isnan(b[i]))) { d_bad++; break; }
          }
        }
      }
    }
    printf("type %s %ld %ld %ld\n", tr->name, blocks, q_bad, d_bad);
  }
  // The grid types: tandem's quantizer is its own, so its bytes are not compared; its error is,
  // against llama.cpp's quantizer given a uniform importance matrix (which IQ2_XXS/IQ2_XS need).
  // Dequantized values must be bit-identical for llama.cpp's bytes, tandem's and random bytes
  // (2048 random blocks reach every codebook entry).
  for (int type : {16, 17, 22, 18, 21}) {
    const GgmlTraits* tr = traits(type);
    const int64_t rows = 64, cols = 4096, n = rows * cols;
    std::vector<float> x(n), ones(cols, 1.0f);
    for (int64_t i = 0; i < n; i++) x[i] = (i / cols) % 4 == 3 ? normal(gen) * normal(gen) * normal(gen) : normal(gen);
    const size_t bytes = size_t(n / 256) * tr->size;
    std::vector<uint8_t> ours(bytes), theirs(bytes), raw(2048 * tr->size);
    quantize_row_ref(GgmlType(type), x.data(), ours.data(), n);
    chunk(type, x.data(), theirs.data(), 0, rows, cols, ones.data());
    for (auto& v : raw) v = uint8_t(gen());
    for (size_t b = 0; b < 2048; b++) raw[b * tr->size + 1] = (raw[b * tr->size + 1] & 0x83) | (uint8_t(gen() % 24) << 2);
    long d_bad = 0;
    double err_ours = 0, err_theirs = 0;
    for (const std::vector<uint8_t>* src : {&ours, &theirs, &raw}) {
      const int64_t m = int64_t(src->size() / tr->size) * 256;
      std::vector<float> a(m), b(m);
      dequantize_row_ref(GgmlType(type), src->data(), a.data(), m);
      tr->to_float(src->data(), b.data(), m);
      for (int64_t i = 0; i < m; i++) d_bad += memcmp(&a[i], &b[i], 4) != 0;
      if (src == &raw) continue;
      double& err = src == &ours ? err_ours : err_theirs;
      for (int64_t i = 0; i < m; i++) err += double(x[i] - a[i]) * (x[i] - a[i]);
    }
    printf("grid %s %ld %ld %.4f\n", tr->name, long(n / 256 * 2 + 2048), d_bad, std::sqrt(err_ours / err_theirs));
  }
  return 0;
}
`;

t.test('quantizer bytes and dequantized values match llama.cpp (node-llama-cpp 3.21.1)', async (t) => {
  const lib = path.join(repoRoot, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so');
  if (process.platform !== 'linux' || process.arch !== 'x64' || !fs.existsSync(lib)) {
    t.plan(0, `no llama.cpp CPU library for ${process.platform}-${process.arch} at ${lib}`);
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-quants-'));
  try {
    fs.writeFileSync(path.join(dir, 'harness.cpp'), HARNESS);
    const exe = path.join(dir, 'harness');
    const native = path.join(repoRoot, 'native');
    try {
      execFileSync(
        process.env.CXX ?? 'c++',
        ['-std=c++17', '-O1', `-I${native}`, path.join(dir, 'harness.cpp'), path.join(native, 'cpu/quants_ref.cpp'), path.join(native, 'cpu/quants_iq_ref.cpp'), path.join(native, 'core/ggml_types.cpp'), '-ldl', '-o', exe],
        { stdio: 'pipe', timeout: 180_000 },
      );
    } catch (err) {
      t.plan(0, `no C++ compiler to build the cross-check harness: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    const out = execFileSync(exe, [lib], { encoding: 'utf8', timeout: 180_000 });
    if (out.startsWith('skip')) {
      t.plan(0, out.trim());
      return;
    }
    const lines = out.trim().split('\n');
    t.equal(lines[0], 'conv fp16/bf16 0', 'fp32 -> fp16/bf16 conversions agree on 65k bit patterns (NaN included)');
    const seen = new Set<string>();
    const grid = new Set<string>();
    for (const line of lines.slice(1)) {
      if (line.startsWith('grid ')) {
        const [, name, blocks, dBad, ratio] = line.split(' ');
        grid.add(name);
        t.equal(dBad, '0', `${name}: dequantized values bit-identical to llama.cpp's (${blocks} blocks: its bytes, tandem's, random)`);
        // Measured 0.94-0.98 on this data (a quarter of the rows heavy-tailed).
        t.ok(Number(ratio) <= 1.05, `${name}: tandem's quantization error ${ratio}x llama.cpp's (<= 1.05)`);
        continue;
      }
      const [, name, blocks, qBad, dBad] = line.split(' ');
      seen.add(name);
      t.ok(Number(blocks) > 0, `${name}: ${blocks} blocks compared`);
      t.equal(qBad, '0', `${name}: quantized bytes identical to llama.cpp's`);
      t.equal(dBad, '0', `${name}: dequantized values bit-identical (its bytes and random bytes)`);
    }
    t.same([...seen].sort(), ['bf16', 'f16', 'iq4_nl', 'iq4_xs', 'mxfp4', 'q2_K', 'q3_K', 'q4_0', 'q4_1', 'q4_K', 'q5_0', 'q5_1', 'q5_K', 'q6_K', 'q8_0', 'q8_1', 'q8_K']);
    t.same([...grid].sort(), ['iq2_s', 'iq2_xs', 'iq2_xxs', 'iq3_s', 'iq3_xxs']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
