// Scalar reference quantizers, dequantizers and dot products for GGUF's block types.
// Layouts: ggml-common.h. Quantizers follow the algorithms of ggml-quants.c's
// quantize_row_*_ref (no importance matrix), with the same float operation order, so
// that the bytes match llama.cpp's; dequantizers match its arithmetic exactly.
#include "cpu/quants.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"

#if defined(_MSC_VER)
#define TDM_NOINLINE __declspec(noinline)
#else
#define TDM_NOINLINE __attribute__((noinline))
#endif

namespace tdm {

namespace {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest, ties to even, the way ggml's K quantizers do it: adding 1.5 * 2^23
// leaves the rounded integer in the low mantissa bits (exact for |x| < 2^22; outside that
// range the result is defined but meaningless, as it is in ggml).
inline int nearest_int(float x) {
  const float biased = x + 12582912.0f;
  return int(float_bits(biased) & 0x007fffff) - 0x00400000;
}

// Truncation toward zero, clamped into [lo, hi]; defined for every float (NaN gives lo).
inline int trunc_clamped(float x, int lo, int hi) {
  if (!(x > float(lo))) return lo;
  if (x >= float(hi)) return hi;
  return int(x);
}

template <typename Block>
inline Block load_block(const void* base, int64_t i) {
  Block b;
  std::memcpy(&b, static_cast<const uint8_t*>(base) + i * int64_t(sizeof(Block)), sizeof(Block));
  return b;
}

template <typename Block>
inline void store_block(void* base, int64_t i, const Block& b) {
  std::memcpy(static_cast<uint8_t*>(base) + i * int64_t(sizeof(Block)), &b, sizeof(Block));
}

inline uint32_t load_u32_le(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

inline void store_u32_le(uint8_t* p, uint32_t v) {
  for (int k = 0; k < 4; k++) p[k] = uint8_t(v >> (8 * k));
}

// Index (within the block) of the first element of largest magnitude.
inline int argmax_abs(const float* x, int n) {
  int best = 0;
  float amax = 0.0f;
  for (int i = 0; i < n; i++) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      best = i;
    }
  }
  return best;
}

// ---- Scale searches for the K types (no importance matrix).

// Both scale searches below keep llama.cpp's float operation order exactly (so the bytes
// match) while giving the compiler loops it can vectorize: Q6_K's candidates are
// independent, so its inner loop runs across candidates; Q4_K/Q5_K's are not (a winning
// candidate moves the min the next ones start from), so theirs runs across the 8
// independent sub-blocks of a super-block, each lane following its own sequence.
constexpr int kMaxTrials = 24;

// nearest_int(v) clamped to [lo, hi], as a float (exactly the integer). Same bit trick
// as nearest_int, so it agrees with ggml even where v is out of range, infinite or NaN
// (possible when a fitted min lands next to max); written so that it vectorizes.
inline float clamped_level(float v, int lo, int hi) {
  int l = int(float_bits(v + 12582912.0f) & 0x007fffff) - 0x00400000;
  l = l < lo ? lo : l;
  l = l > hi ? hi : l;
  return float(l);
}

// Weighted sums of every candidate for fit_symmetric_scale, one lane per candidate. Kept
// out of line: inlined with constant bounds, GCC no longer vectorizes the clamp.
TDM_NOINLINE void accumulate_symmetric_trials(int n, const float* x, const float* __restrict iscale, int lo, int hi,
                                              float* __restrict sumlx, float* __restrict suml2) {
  for (int i = 0; i < n; i++) {
    const float xi = x[i];
    const float w = xi * xi;
    for (int k = 0; k < kMaxTrials; k++) {
      const float l = clamped_level(iscale[k] * xi, lo, hi);
      sumlx[k] += w * xi * l;
      suml2[k] += w * l * l;
    }
  }
}

// Fits x ~ scale * (L - nmax) with L in 0..2*nmax-1 for a symmetric type (Q6_K's
// sub-blocks, n <= 32): start from the scale that maps the largest-magnitude element to
// -nmax, then try 18 nearby scales and keep the best weighted least-squares fit (weights
// x^2). Writes L and returns the scale (0 for an all-zero group).
float fit_symmetric_scale(int n, int nmax, const float* x, int8_t* L) {
  const float max = x[argmax_abs(x, n)];
  if (std::fabs(max) < 1e-15f) {
    for (int i = 0; i < n; i++) L[i] = 0;
    return 0.0f;
  }
  // Candidate 0 is the plain scale -nmax/max; candidates 1..18 are -(nmax + 0.1*step)/max
  // for step -9..9 without 0.
  constexpr int kTrials = 19;
  float iscale[kMaxTrials] = {};
  float sumlx[kMaxTrials] = {};
  float suml2[kMaxTrials] = {};
  iscale[0] = -nmax / max;
  for (int k = 1, step = -9; step <= 9; step++) {
    if (step != 0) iscale[k++] = -(nmax + 0.1f * step) / max;
  }
  const int lo = -nmax;
  const int hi = nmax - 1;
  accumulate_symmetric_trials(n, x, iscale, lo, hi, sumlx, suml2);
  int chosen = 0;
  float scale = suml2[0] != 0.0f ? sumlx[0] / suml2[0] : 0.0f;
  float best = scale * sumlx[0];
  for (int k = 1; k < kTrials; k++) {
    if (suml2[k] > 0.0f && sumlx[k] * sumlx[k] > best * suml2[k]) {
      chosen = k;
      scale = sumlx[k] / suml2[k];
      best = scale * sumlx[k];
    }
  }
  for (int i = 0; i < n; i++) L[i] = int8_t(int(clamped_level(iscale[chosen] * x[i], lo, hi)) + nmax);
  return scale;
}

// For each of the 8 sub-blocks j of a super-block (lane j; xt[i][j] = element 32j+i),
// fits x ~ scale * L - min_out with L in 0..nmax and min_out >= 0, minimising
// sum w * (scale*L - min_out - x)^2: quantize with the range-derived scale, then for
// nstep+1 trial inverse scales (nmax + rmin + rdelta*step) / (max - min), min being the
// best fit so far, solve the weighted 2-parameter least squares for those levels and keep
// it if its error is lower. Writes Lt[i][j], min_out[j], scale_out[j].
void fit_scales_and_mins_k4(int nmax, const float (*xt)[8], const float (*wt)[8], uint8_t (*Lt)[8], float* scale_out,
                            float* min_out, float rmin, float rdelta, int nstep) {
  constexpr int kLanes = 8;
  float min[kLanes], max[kLanes], sum_w[kLanes], sum_x[kLanes];
  for (int j = 0; j < kLanes; j++) {
    min[j] = xt[0][j];
    max[j] = xt[0][j];
    sum_w[j] = wt[0][j];
    sum_x[j] = sum_w[j] * xt[0][j];
  }
  for (int i = 1; i < kQK; i++) {
    for (int j = 0; j < kLanes; j++) {
      min[j] = xt[i][j] < min[j] ? xt[i][j] : min[j];
      max[j] = xt[i][j] > max[j] ? xt[i][j] : max[j];
      sum_w[j] += wt[i][j];
      sum_x[j] += wt[i][j] * xt[i][j];
    }
  }
  bool active[kLanes];
  float scale[kLanes], best_error[kLanes], range[kLanes];
  for (int j = 0; j < kLanes; j++) {
    if (min[j] > 0.0f) min[j] = 0.0f;
    active[j] = max[j] != min[j];  // a constant group (or all zero) fits with scale 0
    range[j] = active[j] ? max[j] - min[j] : 1.0f;
    scale[j] = active[j] ? 1.0f / (nmax / range[j]) : 0.0f;
    best_error[j] = 0.0f;
  }
  for (int i = 0; i < kQK; i++) {
    for (int j = 0; j < kLanes; j++) {
      const float l = active[j] ? clamped_level(nmax / range[j] * (xt[i][j] - min[j]), 0, nmax) : 0.0f;
      Lt[i][j] = uint8_t(l);
      const float diff = scale[j] * l + min[j] - xt[i][j];
      best_error[j] += wt[i][j] * (diff * diff);
    }
  }
  float trial[kQK][kLanes];
  for (int step = 0; step <= nstep; step++) {
    float iscale[kLanes], sum_l[kLanes] = {}, sum_l2[kLanes] = {}, sum_xl[kLanes] = {};
    for (int j = 0; j < kLanes; j++) iscale[j] = (rmin + rdelta * step + nmax) / range[j];
    for (int i = 0; i < kQK; i++) {
      for (int j = 0; j < kLanes; j++) {
        const float l = clamped_level(iscale[j] * (xt[i][j] - min[j]), 0, nmax);
        trial[i][j] = l;
        const float w = wt[i][j];
        sum_l[j] += w * l;
        sum_l2[j] += w * l * l;
        sum_xl[j] += w * l * xt[i][j];
      }
    }
    float this_scale[kLanes], this_min[kLanes], error[kLanes] = {};
    bool candidate[kLanes];
    for (int j = 0; j < kLanes; j++) {
      const float det = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j];
      candidate[j] = active[j] && det > 0.0f;
      const float safe_det = candidate[j] ? det : 1.0f;
      this_scale[j] = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / safe_det;
      this_min[j] = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / safe_det;
      if (this_min[j] > 0.0f) {
        this_min[j] = 0.0f;
        this_scale[j] = sum_l2[j] > 0.0f ? sum_xl[j] / sum_l2[j] : 0.0f;
      }
    }
    for (int i = 0; i < kQK; i++) {
      for (int j = 0; j < kLanes; j++) {
        const float diff = this_scale[j] * trial[i][j] + this_min[j] - xt[i][j];
        error[j] += wt[i][j] * (diff * diff);
      }
    }
    for (int j = 0; j < kLanes; j++) {
      if (!candidate[j] || !(error[j] < best_error[j])) continue;
      for (int i = 0; i < kQK; i++) Lt[i][j] = uint8_t(trial[i][j]);
      best_error[j] = error[j];
      scale[j] = this_scale[j];
      min[j] = this_min[j];
      range[j] = max[j] - min[j];
    }
  }
  for (int j = 0; j < kLanes; j++) {
    scale_out[j] = scale[j];
    min_out[j] = -min[j];
  }
}

// Packs Q4_K/Q5_K's eight 6-bit scales and mins into 12 bytes (inverse of
// unpack_scale_min_k4).
void pack_scales_mins_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* out) {
  for (int j = 0; j < 4; j++) {
    out[j] = ls[j];
    out[j + 4] = lm[j];
  }
  for (int j = 4; j < 8; j++) {
    out[j + 4] = uint8_t((ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4));
    out[j - 4] |= uint8_t((ls[j] >> 4) << 6);
    out[j] |= uint8_t((lm[j] >> 4) << 6);
  }
}

// The shared first half of the Q4_K and Q5_K quantizers: per 32-element sub-block a
// scale/min fit (weights rms + |x|), the super-block's fp16 d/dmin and 6-bit codes, then
// every element re-quantized against the stored (rounded) scales. Writes d, dmin, scales
// and L (levels 0..nmax).
void quantize_superblock_k4(const float* x, int nmax, float rmin, float rdelta, int nstep, uint16_t* d_out,
                            uint16_t* dmin_out, uint8_t* scales_out, uint8_t* L) {
  float xt[kQK][8];
  float wt[kQK][8];
  uint8_t Lt[kQK][8];
  for (int j = 0; j < 8; j++) {
    const float* xs = x + kQK * j;
    float sum_x2 = 0.0f;
    for (int l = 0; l < kQK; l++) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / kQK);
    for (int l = 0; l < kQK; l++) {
      xt[l][j] = xs[l];
      wt[l][j] = av_x + std::fabs(xs[l]);
    }
  }
  float scales[8];
  float mins[8];
  fit_scales_and_mins_k4(nmax, xt, wt, Lt, scales, mins, rmin, rdelta, nstep);
  float max_scale = 0.0f;
  float max_min = 0.0f;
  for (int j = 0; j < 8; j++) {
    for (int l = 0; l < kQK; l++) L[kQK * j + l] = Lt[l][j];
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
  uint8_t ls[8];
  uint8_t lm[8];
  for (int j = 0; j < 8; j++) {
    // The 8-bit wrap before the clamp is ggml's (it only matters for a negative scale).
    const uint8_t s = uint8_t(nearest_int(inv_scale * scales[j]));
    const uint8_t m = uint8_t(nearest_int(inv_min * mins[j]));
    ls[j] = s < 63 ? s : 63;
    lm[j] = m < 63 ? m : 63;
  }
  pack_scales_mins_k4(ls, lm, scales_out);
  *d_out = fp32_to_fp16(max_scale / 63.0f);
  *dmin_out = fp32_to_fp16(max_min / 63.0f);
  const float d_all = fp16_to_fp32(*d_out);
  const float dmin_all = fp16_to_fp32(*dmin_out);
  for (int j = 0; j < 8; j++) {
    uint8_t sc, m;
    unpack_scale_min_k4(j, scales_out, &sc, &m);
    const float d = d_all * sc;
    if (d == 0.0f) continue;
    const float dm = dmin_all * m;
    for (int l = 0; l < kQK; l++) {
      const int q = nearest_int((x[kQK * j + l] + dm) / d);
      L[kQK * j + l] = uint8_t(q < 0 ? 0 : (q > nmax ? nmax : q));
    }
  }
}

void check_n(GgmlType type, const TypeTraits& t, int64_t n) {
  if (n < 0 || n % t.block_size != 0) {
    throw Error(code::bad_argument, std::string(t.name) + ": element count " + std::to_string(n) +
                                        " is not a non-negative multiple of the block size " +
                                        std::to_string(t.block_size));
  }
}

const TypeTraits& traits_of(GgmlType type) {
  const TypeTraits* t = type_traits(uint32_t(type));
  if (!t) throw Error(code::unsupported, "unknown ggml type id " + std::to_string(uint32_t(type)));
  return *t;
}

[[noreturn]] void unsupported(const TypeTraits& t, const char* what) {
  throw Error(code::unsupported, std::string(t.name) + ": " + what + " is not supported by tandem");
}

}  // namespace

// ---- fp16 / bf16

uint16_t fp32_to_fp16(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffff;
  if (ax > 0x7f800000) return sign | 0x7e00;        // NaN
  if (ax >= 0x477ff000) return sign | 0x7c00;       // rounds to 65536 or more: infinity
  if (ax >= 0x38800000) {                           // normal half (>= 2^-14)
    const uint32_t r = ax - (uint32_t(127 - 15) << 23);  // rebias the exponent
    uint32_t h = r >> 13;
    const uint32_t rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;  // a carry correctly bumps the exponent
    return uint16_t(sign | h);
  }
  if (ax <= 0x33000000) return sign;                // at most 2^-25: rounds to zero
  // Subnormal half: the value in units of 2^-24, rounded to nearest even.
  const uint32_t mant = (ax & 0x7fffff) | 0x800000;
  const int shift = 126 - int(ax >> 23);            // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1))) h++;
  return uint16_t(sign | h);
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    const float v = float(mant) * 5.9604644775390625e-08f;  // mant * 2^-24, exact
    return bits_float(float_bits(v) | sign);
  }
  if (exp == 31) return bits_float(sign | 0x7f800000 | (mant << 13));
  return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t fp32_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffff) > 0x7f800000) return uint16_t((x >> 16) | 0x40);  // NaN: keep it, force quiet
  return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float bf16_to_fp32(uint16_t h) { return bits_float(uint32_t(h) << 16); }

// ---- Quantizers

void quantize_row_q4_0_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const float* x = src + i * kQK;
    const float max = x[argmax_abs(x, kQK)];
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_0 b;
    b.d = fp32_to_fp16(d);
    for (int j = 0; j < kQK / 2; j++) {
      const int lo = trunc_clamped(x[j] * id + 8.5f, 0, 15);
      const int hi = trunc_clamped(x[j + kQK / 2] * id + 8.5f, 0, 15);
      b.qs[j] = uint8_t(lo | (hi << 4));
    }
    store_block(dst, i, b);
  }
}

void quantize_row_q4_1_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const float* x = src + i * kQK;
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < kQK; j++) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 15;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_1 b;
    b.d = fp32_to_fp16(d);
    b.m = fp32_to_fp16(min);
    for (int j = 0; j < kQK / 2; j++) {
      const int lo = trunc_clamped((x[j] - min) * id + 0.5f, 0, 15);
      const int hi = trunc_clamped((x[j + kQK / 2] - min) * id + 0.5f, 0, 15);
      b.qs[j] = uint8_t(lo | (hi << 4));
    }
    store_block(dst, i, b);
  }
}

void quantize_row_q5_0_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const float* x = src + i * kQK;
    const float max = x[argmax_abs(x, kQK)];
    const float d = max / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ5_0 b;
    b.d = fp32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; j++) {
      const int lo = trunc_clamped(x[j] * id + 16.5f, 0, 31);
      const int hi = trunc_clamped(x[j + kQK / 2] * id + 16.5f, 0, 31);
      b.qs[j] = uint8_t((lo & 0x0F) | ((hi & 0x0F) << 4));
      qh |= uint32_t(lo >> 4) << j;
      qh |= uint32_t(hi >> 4) << (j + kQK / 2);
    }
    store_u32_le(b.qh, qh);
    store_block(dst, i, b);
  }
}

void quantize_row_q5_1_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const float* x = src + i * kQK;
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < kQK; j++) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 31;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ5_1 b;
    b.d = fp32_to_fp16(d);
    b.m = fp32_to_fp16(min);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; j++) {
      const int lo = trunc_clamped((x[j] - min) * id + 0.5f, 0, 31);
      const int hi = trunc_clamped((x[j + kQK / 2] - min) * id + 0.5f, 0, 31);
      b.qs[j] = uint8_t((lo & 0x0F) | ((hi & 0x0F) << 4));
      qh |= uint32_t(lo >> 4) << j;
      qh |= uint32_t(hi >> 4) << (j + kQK / 2);
    }
    store_u32_le(b.qh, qh);
    store_block(dst, i, b);
  }
}

namespace {
// Q8_0/Q8_1 share this: d = amax / 127, q = round-half-away(x / d). Returns sum(q).
int quantize_block_q8(const float* x, float* d_out, int8_t* qs) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; j++) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int sum = 0;
  for (int j = 0; j < kQK; j++) {
    // roundf (half away from zero) of v clamped to the int8 range, without a libm call:
    // truncate, then step away from zero when the exact remainder reaches one half.
    float v = x[j] * id;
    v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
    int q = int(v);
    const float rem = v - float(q);
    q += rem >= 0.5f ? 1 : (rem <= -0.5f ? -1 : 0);
    qs[j] = int8_t(q);
    sum += q;
  }
  *d_out = d;
  return sum;
}
}  // namespace

void quantize_row_q8_0_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    BlockQ8_0 b;
    float d;
    quantize_block_q8(src + i * kQK, &d, b.qs);
    b.d = fp32_to_fp16(d);
    store_block(dst, i, b);
  }
}

void quantize_row_q8_1_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    BlockQ8_1 b;
    float d;
    const int sum = quantize_block_q8(src + i * kQK, &d, b.qs);
    b.d = fp32_to_fp16(d);
    b.s = fp32_to_fp16(sum * d);
    store_block(dst, i, b);
  }
}

void quantize_row_q4_K_ref(const float* src, void* dst, int64_t n) {
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const float* x = src + i * kQK_K;
    BlockQ4_K b;
    std::memset(&b, 0, sizeof b);
    quantize_superblock_k4(x, 15, -1.0f, 0.1f, 20, &b.d, &b.dmin, b.scales, L);
    for (int c = 0; c < 4; c++) {
      for (int l = 0; l < 32; l++) b.qs[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
    store_block(dst, i, b);
  }
}

void quantize_row_q5_K_ref(const float* src, void* dst, int64_t n) {
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const float* x = src + i * kQK_K;
    BlockQ5_K b;
    std::memset(&b, 0, sizeof b);
    quantize_superblock_k4(x, 31, -0.5f, 0.1f, 15, &b.d, &b.dmin, b.scales, L);
    for (int c = 0; c < 4; c++) {
      for (int l = 0; l < 32; l++) {
        const int lo = L[64 * c + l];
        const int hi = L[64 * c + 32 + l];
        b.qs[32 * c + l] = uint8_t((lo & 0x0F) | ((hi & 0x0F) << 4));
        b.qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
    store_block(dst, i, b);
  }
}

void quantize_row_q6_K_ref(const float* src, void* dst, int64_t n) {
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const float* x = src + i * kQK_K;
    BlockQ6_K b;
    std::memset(&b, 0, sizeof b);
    float max_scale = 0.0f;
    float max_abs_scale = 0.0f;
    for (int g = 0; g < kQK_K / 16; g++) {
      scales[g] = fit_symmetric_scale(16, 32, x + 16 * g, L + 16 * g);
      const float a = std::fabs(scales[g]);
      if (a > max_abs_scale) {
        max_abs_scale = a;
        max_scale = scales[g];
      }
    }
    if (max_abs_scale < 1e-15f) {  // all zero: an all-zero block (d = +0)
      store_block(dst, i, b);
      continue;
    }
    const float iscale = -128.0f / max_scale;
    b.d = fp32_to_fp16(1.0f / iscale);
    for (int g = 0; g < kQK_K / 16; g++) {
      const int s = nearest_int(iscale * scales[g]);
      b.scales[g] = int8_t(s < 127 ? s : 127);
    }
    const float d_all = fp16_to_fp32(b.d);
    for (int g = 0; g < kQK_K / 16; g++) {
      const float d = d_all * b.scales[g];
      if (d == 0.0f) continue;
      for (int l = 0; l < 16; l++) {
        const int q = nearest_int(x[16 * g + l] / d);
        L[16 * g + l] = int8_t((q < -32 ? -32 : (q > 31 ? 31 : q)) + 32);
      }
    }
    for (int h = 0; h < 2; h++) {
      const int8_t* Lh = L + 128 * h;
      for (int l = 0; l < 32; l++) {
        b.ql[64 * h + l] = uint8_t((Lh[l] & 0x0F) | ((Lh[l + 64] & 0x0F) << 4));
        b.ql[64 * h + 32 + l] = uint8_t((Lh[l + 32] & 0x0F) | ((Lh[l + 96] & 0x0F) << 4));
        b.qh[32 * h + l] =
            uint8_t((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
      }
    }
    store_block(dst, i, b);
  }
}

void quantize_row_q8_K_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const float* x = src + i * kQK_K;
    BlockQ8_K b;
    std::memset(&b, 0, sizeof b);
    const float max = x[argmax_abs(x, kQK_K)];
    if (max != 0.0f) {
      const float iscale = -127.0f / max;
      for (int j = 0; j < kQK_K; j++) {
        const int q = nearest_int(iscale * x[j]);
        b.qs[j] = int8_t(q < 127 ? q : 127);
      }
      for (int g = 0; g < kQK_K / 16; g++) {
        int sum = 0;
        for (int l = 0; l < 16; l++) sum += b.qs[16 * g + l];
        b.bsums[g] = int16_t(sum);
      }
      b.d = 1.0f / iscale;
    }
    store_block(dst, i, b);
  }
}

namespace {
// The code whose value (kMxfp4Values[q] * d) is nearest to x, the first of equals (so +0
// wins over -0), with ggml's float arithmetic.
inline uint8_t nearest_mxfp4(float x, float d) {
  uint8_t best = 0;
  float best_err = std::fabs(kMxfp4Values[0] * d - x);
  for (uint8_t q = 1; q < 16; q++) {
    const float err = std::fabs(kMxfp4Values[q] * d - x);
    if (err < best_err) {
      best = q;
      best_err = err;
    }
  }
  return best;
}
}  // namespace

void quantize_row_mxfp4_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const float* x = src + i * kQK;
    float amax = 0.0f;
    for (int j = 0; j < kQK; j++) amax = std::fabs(x[j]) > amax ? std::fabs(x[j]) : amax;
    // The largest element's binade minus 2: it lands on level 8 or 12 (E2M1's 4 or 6) of the
    // halved scale. Through int32 to uint8 as x86 converts it: below 2^-125 the exponent
    // wraps, as it does in ggml.
    const uint8_t e = amax > 0.0f ? uint8_t(int32_t(std::floor(std::log2(amax)) - 2 + 127)) : 0;
    const float d = e8m0_half(e);
    BlockMXFP4 b;
    b.e = e;
    for (int j = 0; j < kQK / 2; j++) b.qs[j] = uint8_t(nearest_mxfp4(x[j], d) | (nearest_mxfp4(x[j + kQK / 2], d) << 4));
    store_block(dst, i, b);
  }
}

// ---- Dequantizers (same arithmetic, in the same order, as ggml's dequantize_row_*)

void dequantize_row_q4_0_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto b = load_block<BlockQ4_0>(src, i);
    const float d = fp16_to_fp32(b.d);
    float* y = dst + i * kQK;
    for (int j = 0; j < kQK / 2; j++) {
      y[j] = ((b.qs[j] & 0x0F) - 8) * d;
      y[j + kQK / 2] = ((b.qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_row_q4_1_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto b = load_block<BlockQ4_1>(src, i);
    const float d = fp16_to_fp32(b.d);
    const float m = fp16_to_fp32(b.m);
    float* y = dst + i * kQK;
    for (int j = 0; j < kQK / 2; j++) {
      y[j] = (b.qs[j] & 0x0F) * d + m;
      y[j + kQK / 2] = (b.qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_row_q5_0_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto b = load_block<BlockQ5_0>(src, i);
    const float d = fp16_to_fp32(b.d);
    const uint32_t qh = load_u32_le(b.qh);
    float* y = dst + i * kQK;
    for (int j = 0; j < kQK / 2; j++) {
      const int lo = (b.qs[j] & 0x0F) | int(((qh >> j) & 1) << 4);
      const int hi = (b.qs[j] >> 4) | int(((qh >> (j + kQK / 2)) & 1) << 4);
      y[j] = (lo - 16) * d;
      y[j + kQK / 2] = (hi - 16) * d;
    }
  }
}

void dequantize_row_q5_1_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto b = load_block<BlockQ5_1>(src, i);
    const float d = fp16_to_fp32(b.d);
    const float m = fp16_to_fp32(b.m);
    const uint32_t qh = load_u32_le(b.qh);
    float* y = dst + i * kQK;
    for (int j = 0; j < kQK / 2; j++) {
      const int lo = (b.qs[j] & 0x0F) | int(((qh >> j) & 1) << 4);
      const int hi = (b.qs[j] >> 4) | int(((qh >> (j + kQK / 2)) & 1) << 4);
      y[j] = lo * d + m;
      y[j + kQK / 2] = hi * d + m;
    }
  }
}

void dequantize_row_q8_0_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto b = load_block<BlockQ8_0>(src, i);
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < kQK; j++) dst[i * kQK + j] = b.qs[j] * d;
  }
}

void dequantize_row_q8_1_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto b = load_block<BlockQ8_1>(src, i);
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < kQK; j++) dst[i * kQK + j] = b.qs[j] * d;
  }
}

void dequantize_row_q4_K_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto b = load_block<BlockQ4_K>(src, i);
    const float d = fp16_to_fp32(b.d);
    const float dmin = fp16_to_fp32(b.dmin);
    float* y = dst + i * kQK_K;
    for (int c = 0; c < 4; c++) {
      uint8_t sc, m;
      unpack_scale_min_k4(2 * c, b.scales, &sc, &m);
      const float d_lo = d * sc, m_lo = dmin * m;
      unpack_scale_min_k4(2 * c + 1, b.scales, &sc, &m);
      const float d_hi = d * sc, m_hi = dmin * m;
      const uint8_t* q = b.qs + 32 * c;
      for (int l = 0; l < 32; l++) y[64 * c + l] = d_lo * (q[l] & 0x0F) - m_lo;
      for (int l = 0; l < 32; l++) y[64 * c + 32 + l] = d_hi * (q[l] >> 4) - m_hi;
    }
  }
}

void dequantize_row_q5_K_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto b = load_block<BlockQ5_K>(src, i);
    const float d = fp16_to_fp32(b.d);
    const float dmin = fp16_to_fp32(b.dmin);
    float* y = dst + i * kQK_K;
    for (int c = 0; c < 4; c++) {
      uint8_t sc, m;
      unpack_scale_min_k4(2 * c, b.scales, &sc, &m);
      const float d_lo = d * sc, m_lo = dmin * m;
      unpack_scale_min_k4(2 * c + 1, b.scales, &sc, &m);
      const float d_hi = d * sc, m_hi = dmin * m;
      const uint8_t* q = b.qs + 32 * c;
      const uint8_t bit_lo = uint8_t(1u << (2 * c));
      const uint8_t bit_hi = uint8_t(2u << (2 * c));
      for (int l = 0; l < 32; l++) y[64 * c + l] = d_lo * ((q[l] & 0x0F) + ((b.qh[l] & bit_lo) ? 16 : 0)) - m_lo;
      for (int l = 0; l < 32; l++) y[64 * c + 32 + l] = d_hi * ((q[l] >> 4) + ((b.qh[l] & bit_hi) ? 16 : 0)) - m_hi;
    }
  }
}

void dequantize_row_q6_K_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto b = load_block<BlockQ6_K>(src, i);
    const float d = fp16_to_fp32(b.d);
    for (int h = 0; h < 2; h++) {
      const uint8_t* ql = b.ql + 64 * h;
      const uint8_t* qh = b.qh + 32 * h;
      const int8_t* sc = b.scales + 8 * h;
      float* y = dst + i * kQK_K + 128 * h;
      for (int l = 0; l < 32; l++) {
        const int g = l / 16;
        const int q0 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[g] * q0;
        y[l + 32] = d * sc[g + 2] * q1;
        y[l + 64] = d * sc[g + 4] * q2;
        y[l + 96] = d * sc[g + 6] * q3;
      }
    }
  }
}

void dequantize_row_q8_K_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto b = load_block<BlockQ8_K>(src, i);
    for (int j = 0; j < kQK_K; j++) dst[i * kQK_K + j] = b.d * b.qs[j];
  }
}

void dequantize_row_mxfp4_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto b = load_block<BlockMXFP4>(src, i);
    const float d = e8m0_half(b.e);
    float* y = dst + i * kQK;
    for (int j = 0; j < kQK / 2; j++) {
      y[j] = kMxfp4Values[b.qs[j] & 0x0F] * d;
      y[j + kQK / 2] = kMxfp4Values[b.qs[j] >> 4] * d;
    }
  }
}

// ---- Dot products

float vec_dot_f32_ref(const void* w, const void* a, int64_t n) {
  const auto* pw = static_cast<const uint8_t*>(w);
  const auto* pa = static_cast<const uint8_t*>(a);
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) {
    float x, y;
    std::memcpy(&x, pw + 4 * i, 4);
    std::memcpy(&y, pa + 4 * i, 4);
    sum += double(x * y);
  }
  return float(sum);
}

namespace {
template <float (*to_f32)(uint16_t)>
float vec_dot_half_ref(const void* w, const void* a, int64_t n) {
  const auto* pw = static_cast<const uint8_t*>(w);
  const auto* pa = static_cast<const uint8_t*>(a);
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) {
    uint16_t x, y;
    std::memcpy(&x, pw + 2 * i, 2);
    std::memcpy(&y, pa + 2 * i, 2);
    sum += double(to_f32(x) * to_f32(y));
  }
  return float(sum);
}
}  // namespace

float vec_dot_f16_ref(const void* w, const void* a, int64_t n) { return vec_dot_half_ref<fp16_to_fp32>(w, a, n); }
float vec_dot_bf16_ref(const void* w, const void* a, int64_t n) { return vec_dot_half_ref<bf16_to_fp32>(w, a, n); }

float vec_dot_q4_0_q8_0_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto x = load_block<BlockQ4_0>(w, i);
    const auto y = load_block<BlockQ8_0>(a, i);
    int isum = 0;
    for (int j = 0; j < kQK / 2; j++) {
      isum += ((x.qs[j] & 0x0F) - 8) * y.qs[j];
      isum += ((x.qs[j] >> 4) - 8) * y.qs[j + kQK / 2];
    }
    sum += isum * (fp16_to_fp32(x.d) * fp16_to_fp32(y.d));
  }
  return sum;
}

float vec_dot_q4_1_q8_1_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto x = load_block<BlockQ4_1>(w, i);
    const auto y = load_block<BlockQ8_1>(a, i);
    int isum = 0;
    for (int j = 0; j < kQK / 2; j++) {
      isum += (x.qs[j] & 0x0F) * y.qs[j];
      isum += (x.qs[j] >> 4) * y.qs[j + kQK / 2];
    }
    // sum_j (d_x q_j + m_x) * d_y p_j = d_x d_y sum q p + m_x * (d_y sum p), and s = d_y sum p.
    sum += (fp16_to_fp32(x.d) * fp16_to_fp32(y.d)) * isum + fp16_to_fp32(x.m) * fp16_to_fp32(y.s);
  }
  return sum;
}

float vec_dot_q5_0_q8_0_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto x = load_block<BlockQ5_0>(w, i);
    const auto y = load_block<BlockQ8_0>(a, i);
    const uint32_t qh = load_u32_le(x.qh);
    int isum = 0;
    for (int j = 0; j < kQK / 2; j++) {
      const int lo = ((x.qs[j] & 0x0F) | int(((qh >> j) & 1) << 4)) - 16;
      const int hi = ((x.qs[j] >> 4) | int(((qh >> (j + kQK / 2)) & 1) << 4)) - 16;
      isum += lo * y.qs[j] + hi * y.qs[j + kQK / 2];
    }
    sum += isum * (fp16_to_fp32(x.d) * fp16_to_fp32(y.d));
  }
  return sum;
}

float vec_dot_q5_1_q8_1_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto x = load_block<BlockQ5_1>(w, i);
    const auto y = load_block<BlockQ8_1>(a, i);
    const uint32_t qh = load_u32_le(x.qh);
    int isum = 0;
    for (int j = 0; j < kQK / 2; j++) {
      const int lo = (x.qs[j] & 0x0F) | int(((qh >> j) & 1) << 4);
      const int hi = (x.qs[j] >> 4) | int(((qh >> (j + kQK / 2)) & 1) << 4);
      isum += lo * y.qs[j] + hi * y.qs[j + kQK / 2];
    }
    sum += (fp16_to_fp32(x.d) * fp16_to_fp32(y.d)) * isum + fp16_to_fp32(x.m) * fp16_to_fp32(y.s);
  }
  return sum;
}

float vec_dot_q8_0_q8_0_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto x = load_block<BlockQ8_0>(w, i);
    const auto y = load_block<BlockQ8_0>(a, i);
    int isum = 0;
    for (int j = 0; j < kQK; j++) isum += x.qs[j] * y.qs[j];
    sum += isum * (fp16_to_fp32(x.d) * fp16_to_fp32(y.d));
  }
  return sum;
}

float vec_dot_q8_1_q8_1_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto x = load_block<BlockQ8_1>(w, i);
    const auto y = load_block<BlockQ8_1>(a, i);
    int isum = 0;
    for (int j = 0; j < kQK; j++) isum += x.qs[j] * y.qs[j];
    sum += isum * (fp16_to_fp32(x.d) * fp16_to_fp32(y.d));
  }
  return sum;
}

namespace {
// Q4_K/Q5_K against Q8_K: sum_j d*sc_j * sum(q*p) - dmin*m_j * sum(p), with sum(p) of each
// 32-element sub-block read from the activation's bsums. `level(e)` gives weight level e.
template <typename Level>
float dot_k4_superblock(uint16_t d16, uint16_t dmin16, const uint8_t* scales, const BlockQ8_K& y, Level level) {
  int scaled = 0;
  int mins = 0;
  for (int j = 0; j < 8; j++) {
    uint8_t sc, m;
    unpack_scale_min_k4(j, scales, &sc, &m);
    int isum = 0;
    for (int l = 0; l < 32; l++) isum += level(32 * j + l) * y.qs[32 * j + l];
    scaled += sc * isum;
    mins += m * (y.bsums[2 * j] + y.bsums[2 * j + 1]);
  }
  return fp16_to_fp32(d16) * y.d * scaled - fp16_to_fp32(dmin16) * y.d * mins;
}
}  // namespace

float vec_dot_q4_K_q8_K_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto x = load_block<BlockQ4_K>(w, i);
    const auto y = load_block<BlockQ8_K>(a, i);
    sum += dot_k4_superblock(x.d, x.dmin, x.scales, y, [&x](int e) {
      const uint8_t byte = x.qs[32 * (e / 64) + (e % 32)];
      return (e % 64) < 32 ? (byte & 0x0F) : (byte >> 4);
    });
  }
  return sum;
}

float vec_dot_q5_K_q8_K_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto x = load_block<BlockQ5_K>(w, i);
    const auto y = load_block<BlockQ8_K>(a, i);
    sum += dot_k4_superblock(x.d, x.dmin, x.scales, y, [&x](int e) {
      const int c = e / 64;
      const int l = e % 32;
      const bool high = (e % 64) >= 32;
      const uint8_t byte = x.qs[32 * c + l];
      const int low4 = high ? (byte >> 4) : (byte & 0x0F);
      const int bit5 = (x.qh[l] >> (2 * c + (high ? 1 : 0))) & 1;
      return low4 | (bit5 << 4);
    });
  }
  return sum;
}

float vec_dot_q6_K_q8_K_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto x = load_block<BlockQ6_K>(w, i);
    const auto y = load_block<BlockQ8_K>(a, i);
    int q[kQK_K];
    for (int h = 0; h < 2; h++) {
      const uint8_t* ql = x.ql + 64 * h;
      const uint8_t* qh = x.qh + 32 * h;
      int* qq = q + 128 * h;
      for (int l = 0; l < 32; l++) {
        qq[l] = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        qq[l + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        qq[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        qq[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      }
    }
    int scaled = 0;
    for (int g = 0; g < kQK_K / 16; g++) {
      int isum = 0;
      for (int l = 0; l < 16; l++) isum += q[16 * g + l] * y.qs[16 * g + l];
      scaled += x.scales[g] * isum;
    }
    sum += fp16_to_fp32(x.d) * y.d * scaled;
  }
  return sum;
}

float vec_dot_q8_K_q8_K_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto x = load_block<BlockQ8_K>(w, i);
    const auto y = load_block<BlockQ8_K>(a, i);
    int isum = 0;
    for (int j = 0; j < kQK_K; j++) isum += x.qs[j] * y.qs[j];
    sum += x.d * y.d * isum;
  }
  return sum;
}

float vec_dot_mxfp4_q8_0_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto x = load_block<BlockMXFP4>(w, i);
    const auto y = load_block<BlockQ8_0>(a, i);
    int isum = 0;
    for (int j = 0; j < kQK / 2; j++) {
      isum += kMxfp4Values[x.qs[j] & 0x0F] * y.qs[j];
      isum += kMxfp4Values[x.qs[j] >> 4] * y.qs[j + kQK / 2];
    }
    sum += isum * (fp16_to_fp32(y.d) * e8m0_half(x.e));
  }
  return sum;
}

// ---- Q2_K, Q3_K, IQ4_NL, IQ4_XS (llama.cpp's Q2_K/Q3_K_* and IQ4_* files)

namespace {

// Fits x ~ scale * L - min_out (L in 0..nmax, min_out >= 0) for one Q2_K group, minimising the
// weighted absolute error: ggml's make_qkx2_quants with use_mad, in its float order.
float fit_scale_min_mad(int n, int nmax, const float* x, const float* w, uint8_t* L, float* min_out, float rmin,
                        float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; i++) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; i++) L[i] = 0;
    *min_out = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; i++) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = uint8_t(std::max(0, std::min(nmax, l)));
    best_error += w[i] * std::fabs(scale * L[i] + min - x[i]);
  }
  uint8_t trial[32];
  for (int step = 0; step <= nstep; step++) {
    iscale = (rmin + rdelta * step + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; i++) {
      const int l = std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min))));
      trial[i] = uint8_t(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (!(D > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float err = 0;
    for (int i = 0; i < n; i++) err += w[i] * std::fabs(this_scale * trial[i] + this_min - x[i]);
    if (err < best_error) {
      std::memcpy(L, trial, size_t(n));
      best_error = err;
      scale = this_scale;
      min = this_min;
    }
  }
  *min_out = -min;
  return scale;
}

// Fits x ~ scale * l (l in -nmax..nmax-1) for one Q3_K group with weights x^2: start from the
// scale that maps the largest-magnitude element to -nmax, then move single levels while the
// fit improves (ggml's make_q3_quants with do_rmse). Writes L = l + nmax (0 for an all-zero group).
float fit_scale_q3(int n, int nmax, const float* x, int8_t* L) {
  const int at = argmax_abs(x, n);
  const float max = x[at];
  if (std::fabs(max) < 1e-15f) {
    for (int i = 0; i < n; i++) L[i] = 0;
    return 0.0f;
  }
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; i++) {
    const int l = std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i])));
    L[i] = int8_t(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int round = 0; round < 5; round++) {
    int changed = 0;
    for (int i = 0; i < n; i++) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (!(slx > 0)) continue;
      float sl2 = suml2 - w * L[i] * L[i];
      const int l = std::max(-nmax, std::min(nmax - 1, nearest_int(x[i] * sl2 / slx)));
      if (l == L[i]) continue;
      slx += w * x[i] * l;
      sl2 += w * l * l;
      if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = int8_t(l);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; i++) L[i] = int8_t(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Q2_K and Q3_K store 2-bit planes alike: element 128h + 32j + l in bits 2j of qs[32h + l].
void pack_2bit_planes(const uint8_t* L, uint8_t* qs) {
  for (int h = 0; h < 2; h++)
    for (int l = 0; l < 32; l++) {
      const uint8_t* Lh = L + 128 * h + l;
      qs[32 * h + l] = uint8_t(Lh[0] | (Lh[32] << 2) | (Lh[64] << 4) | (Lh[96] << 6));
    }
}
inline int level_2bit(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }
inline bool q3_high_bit(const uint8_t* hmask, int e) { return (hmask[e % 32] >> (e / 32)) & 1; }

// Index of the IQ4_NL level nearest x (the lower of two equally near), as ggml's best_index_int8
// finds it by bisection: hi is the first level above x, counted here without branches (the
// quantizers call this 16 times per element, and bisection's branches mispredict).
int nearest_iq4nl(float x) {
  const int8_t* v = kIq4nlValues;
  if (x <= v[0]) return 0;
  if (x >= v[15]) return 15;
  int hi = 1;
  for (int k = 1; k < 15; k++) hi += x >= float(v[k]);
  return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
}

// One 32-element IQ4 block's scale, with weights x^2: the scale mapping the largest-magnitude
// element to the grid's end, then 15 nearby inverse scales, keeping the best weighted
// least-squares fit (ggml's quantize_row_iq4_nl_impl without an importance matrix, ntry 7, as
// its quantize_iq4_nl/iq4_xs and llama-quantize run it). Writes L; 0 for an all-zero block.
float fit_scale_iq4(const float* x, uint8_t* L) {
  constexpr int kTries = 7;
  const int at = argmax_abs(x, 32);
  const float max = x[at];
  if (std::fabs(max) < 1e-15f) return 0.0f;
  float d = -max / kIq4nlValues[0];
  float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 32; j++) {
    const int l = nearest_iq4nl(id * x[j]);
    L[j] = uint8_t(l);
    const float q = kIq4nlValues[l], w = x[j] * x[j];
    sumqx += w * q * x[j];
    sumq2 += w * q * q;
  }
  d = sumq2 > 0 ? sumqx / sumq2 : 0.0f;
  float best = d * sumqx;
  for (int t = -kTries; t <= kTries; t++) {
    id = (t + kIq4nlValues[0]) / max;
    sumqx = sumq2 = 0;
    for (int j = 0; j < 32; j++) {
      const float q = kIq4nlValues[nearest_iq4nl(id * x[j])], w = x[j] * x[j];
      sumqx += w * q * x[j];
      sumq2 += w * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

void pack_iq4_nibbles(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < 16; j++) qs[j] = uint8_t(L[j] | (L[16 + j] << 4));
}

}  // namespace

void quantize_row_q2_K_ref(const float* src, void* dst, int64_t n) {
  uint8_t L[kQK_K];
  float w[16], mins[16], scales[16];
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const float* x = src + i * kQK_K;
    BlockQ2_K b;
    std::memset(&b, 0, sizeof b);
    float max_scale = 0, max_min = 0;
    for (int g = 0; g < 16; g++) {
      for (int l = 0; l < 16; l++) w[l] = std::fabs(x[16 * g + l]);
      scales[g] = fit_scale_min_mad(16, 3, x + 16 * g, w, L + 16 * g, &mins[g], -0.5f, 0.1f, 15);
      max_scale = std::max(max_scale, scales[g]);
      max_min = std::max(max_min, mins[g]);
    }
    if (max_scale > 0) {
      const float iscale = 15.0f / max_scale;
      for (int g = 0; g < 16; g++) b.scales[g] = uint8_t(nearest_int(iscale * scales[g]));
      b.d = fp32_to_fp16(max_scale / 15.0f);
    }
    if (max_min > 0) {
      const float iscale = 15.0f / max_min;
      for (int g = 0; g < 16; g++) b.scales[g] = uint8_t(b.scales[g] | (nearest_int(iscale * mins[g]) << 4));
      b.dmin = fp32_to_fp16(max_min / 15.0f);
    }
    // Levels again against the stored scales and mins.
    for (int g = 0; g < 16; g++) {
      const float d = fp16_to_fp32(b.d) * (b.scales[g] & 0x0F);
      if (d == 0.0f) continue;
      const float dm = fp16_to_fp32(b.dmin) * (b.scales[g] >> 4);
      for (int l = 0; l < 16; l++) L[16 * g + l] = uint8_t(std::max(0, std::min(3, nearest_int((x[16 * g + l] + dm) / d))));
    }
    pack_2bit_planes(L, b.qs);
    store_block(dst, i, b);
  }
}

void quantize_row_q3_K_ref(const float* src, void* dst, int64_t n) {
  int8_t L[kQK_K];
  float scales[16];
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const float* x = src + i * kQK_K;
    BlockQ3_K b;
    std::memset(&b, 0, sizeof b);
    float max_scale = 0, amax = 0;
    for (int g = 0; g < 16; g++) {
      scales[g] = fit_scale_q3(16, 4, x + 16 * g, L + 16 * g);
      if (std::fabs(scales[g]) > amax) {
        amax = std::fabs(scales[g]);
        max_scale = scales[g];
      }
    }
    if (max_scale != 0.0f) {
      const float iscale = -32.0f / max_scale;
      for (int g = 0; g < 16; g++) {
        const int l = std::max(-32, std::min(31, int(int8_t(nearest_int(iscale * scales[g]))))) + 32;
        b.scales[g % 8] = uint8_t(b.scales[g % 8] | ((l & 0x0F) << (4 * (g / 8))));
        b.scales[8 + g % 4] = uint8_t(b.scales[8 + g % 4] | ((l >> 4) << (2 * (g / 4))));
      }
      b.d = fp32_to_fp16(1 / iscale);
    }
    for (int g = 0; g < 16; g++) {
      const float d = fp16_to_fp32(b.d) * unpack_scale_q3_K(g, b.scales);
      if (d == 0.0f) continue;
      for (int l = 0; l < 16; l++) L[16 * g + l] = int8_t(std::max(-4, std::min(3, nearest_int(x[16 * g + l] / d))) + 4);
    }
    uint8_t low[kQK_K];
    for (int e = 0; e < kQK_K; e++) {
      if (L[e] > 3) b.hmask[e % 32] = uint8_t(b.hmask[e % 32] | (1 << (e / 32)));
      low[e] = uint8_t(L[e] & 3);
    }
    pack_2bit_planes(low, b.qs);
    store_block(dst, i, b);
  }
}

void quantize_row_iq4_nl_ref(const float* src, void* dst, int64_t n) {
  uint8_t L[kQK];
  for (int64_t i = 0; i < n / kQK; i++) {
    const float* x = src + i * kQK;
    BlockIQ4_NL b;
    const float d = fit_scale_iq4(x, L);
    b.d = fp32_to_fp16(d);
    const float id = d != 0.0f ? 1 / d : 0.0f;
    for (int j = 0; j < kQK; j++) L[j] = uint8_t(nearest_iq4nl(id * x[j]));
    pack_iq4_nibbles(L, b.qs);
    store_block(dst, i, b);
  }
}

void quantize_row_iq4_xs_ref(const float* src, void* dst, int64_t n) {
  uint8_t L[32];
  float scales[8];
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const float* x = src + i * kQK_K;
    BlockIQ4_XS b;
    std::memset(&b, 0, sizeof b);
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 8; j++) {
      scales[j] = fit_scale_iq4(x + 32 * j, L);
      if (std::fabs(scales[j]) > amax) {
        amax = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    // The super-block scale before its fp16 rounding sets the sub-block scales, as in ggml.
    const float d = -max_scale / 32;
    b.d = fp32_to_fp16(d);
    const float id = d != 0.0f ? 1 / d : 0.0f;
    for (int j = 0; j < 8; j++) {
      const int l = std::max(-32, std::min(31, nearest_int(id * scales[j])));
      const float dl = d * l;
      const float idl = dl != 0.0f ? 1 / dl : 0.0f;
      for (int e = 0; e < 32; e++) L[e] = uint8_t(nearest_iq4nl(idl * x[32 * j + e]));
      pack_iq4_nibbles(L, b.qs + 16 * j);
      b.scales_l[j / 2] = uint8_t(b.scales_l[j / 2] | (((l + 32) & 0x0F) << (4 * (j % 2))));
      b.scales_h = uint16_t(b.scales_h | (((l + 32) >> 4) << (2 * j)));
    }
    store_block(dst, i, b);
  }
}

void dequantize_row_q2_K_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto b = load_block<BlockQ2_K>(src, i);
    const float d = fp16_to_fp32(b.d), dmin = fp16_to_fp32(b.dmin);
    for (int e = 0; e < kQK_K; e++) {
      const uint8_t sc = b.scales[e / 16];
      const float dl = d * (sc & 0x0F), ml = dmin * (sc >> 4);
      dst[i * kQK_K + e] = dl * level_2bit(b.qs, e) - ml;
    }
  }
}

void dequantize_row_q3_K_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto b = load_block<BlockQ3_K>(src, i);
    const float d = fp16_to_fp32(b.d);
    for (int e = 0; e < kQK_K; e++) {
      const float dl = d * unpack_scale_q3_K(e / 16, b.scales);
      dst[i * kQK_K + e] = dl * (level_2bit(b.qs, e) - (q3_high_bit(b.hmask, e) ? 0 : 4));
    }
  }
}

void dequantize_row_iq4_nl_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto b = load_block<BlockIQ4_NL>(src, i);
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < kQK / 2; j++) {
      dst[i * kQK + j] = d * kIq4nlValues[b.qs[j] & 0x0F];
      dst[i * kQK + j + kQK / 2] = d * kIq4nlValues[b.qs[j] >> 4];
    }
  }
}

void dequantize_row_iq4_xs_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto b = load_block<BlockIQ4_XS>(src, i);
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < 8; j++) {
      const float dl = d * unpack_scale_iq4_xs(j, b.scales_l, b.scales_h);
      float* y = dst + i * kQK_K + 32 * j;
      for (int l = 0; l < 16; l++) {
        y[l] = dl * kIq4nlValues[b.qs[16 * j + l] & 0x0F];
        y[l + 16] = dl * kIq4nlValues[b.qs[16 * j + l] >> 4];
      }
    }
  }
}

float vec_dot_q2_K_q8_K_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto x = load_block<BlockQ2_K>(w, i);
    const auto y = load_block<BlockQ8_K>(a, i);
    int scaled = 0, mins = 0;
    for (int g = 0; g < 16; g++) {
      int isum = 0;
      for (int l = 0; l < 16; l++) isum += level_2bit(x.qs, 16 * g + l) * y.qs[16 * g + l];
      scaled += (x.scales[g] & 0x0F) * isum;
      mins += (x.scales[g] >> 4) * y.bsums[g];
    }
    sum += y.d * fp16_to_fp32(x.d) * scaled - y.d * fp16_to_fp32(x.dmin) * mins;
  }
  return sum;
}

float vec_dot_q3_K_q8_K_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto x = load_block<BlockQ3_K>(w, i);
    const auto y = load_block<BlockQ8_K>(a, i);
    int scaled = 0;
    for (int g = 0; g < 16; g++) {
      int isum = 0;
      for (int l = 0; l < 16; l++) {
        const int e = 16 * g + l;
        isum += (level_2bit(x.qs, e) - (q3_high_bit(x.hmask, e) ? 0 : 4)) * y.qs[e];
      }
      scaled += unpack_scale_q3_K(g, x.scales) * isum;
    }
    sum += fp16_to_fp32(x.d) * y.d * scaled;
  }
  return sum;
}

float vec_dot_iq4_nl_q8_0_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; i++) {
    const auto x = load_block<BlockIQ4_NL>(w, i);
    const auto y = load_block<BlockQ8_0>(a, i);
    int isum = 0;
    for (int j = 0; j < kQK / 2; j++) {
      isum += kIq4nlValues[x.qs[j] & 0x0F] * y.qs[j];
      isum += kIq4nlValues[x.qs[j] >> 4] * y.qs[j + kQK / 2];
    }
    sum += fp16_to_fp32(x.d) * fp16_to_fp32(y.d) * isum;
  }
  return sum;
}

float vec_dot_iq4_xs_q8_K_ref(const void* w, const void* a, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const auto x = load_block<BlockIQ4_XS>(w, i);
    const auto y = load_block<BlockQ8_K>(a, i);
    int scaled = 0;
    for (int j = 0; j < 8; j++) {
      int isum = 0;
      for (int l = 0; l < 16; l++) {
        isum += kIq4nlValues[x.qs[16 * j + l] & 0x0F] * y.qs[32 * j + l];
        isum += kIq4nlValues[x.qs[16 * j + l] >> 4] * y.qs[32 * j + l + 16];
      }
      scaled += unpack_scale_iq4_xs(j, x.scales_l, x.scales_h) * isum;
    }
    sum += fp16_to_fp32(x.d) * y.d * scaled;
  }
  return sum;
}

// ---- Type-generic entry points

GgmlType vec_dot_type(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_1:
    case GgmlType::Q8_K:
      return weight_type;
    case GgmlType::Q4_0:
    case GgmlType::Q5_0:
    case GgmlType::Q8_0:
    case GgmlType::MXFP4:
    case GgmlType::IQ4_NL:
      return GgmlType::Q8_0;
    case GgmlType::Q4_1:
    case GgmlType::Q5_1:
      return GgmlType::Q8_1;
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::IQ4_XS:
    case GgmlType::IQ2_XXS:
    case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S:
    case GgmlType::IQ3_XXS:
    case GgmlType::IQ3_S:
      return GgmlType::Q8_K;
    default:
      unsupported(traits_of(weight_type), "dot product");
  }
}

void quantize_row_ref(GgmlType type, const float* src, void* dst, int64_t n) {
  const TypeTraits& t = traits_of(type);
  check_n(type, t, n);
  auto* out = static_cast<uint8_t*>(dst);
  switch (type) {
    case GgmlType::F32:
      std::memcpy(out, src, size_t(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; i++) {
        const uint16_t h = fp32_to_fp16(src[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; i++) {
        const uint16_t h = fp32_to_bf16(src[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    default:
      break;
  }
  void (*kernel)(const float*, void*, int64_t) = nullptr;
  switch (type) {
    case GgmlType::Q4_0: kernel = quantize_row_q4_0_ref; break;
    case GgmlType::Q4_1: kernel = quantize_row_q4_1_ref; break;
    case GgmlType::Q5_0: kernel = quantize_row_q5_0_ref; break;
    case GgmlType::Q5_1: kernel = quantize_row_q5_1_ref; break;
    case GgmlType::Q8_0: kernel = quantize_row_q8_0_ref; break;
    case GgmlType::Q8_1: kernel = quantize_row_q8_1_ref; break;
    case GgmlType::Q4_K: kernel = quantize_row_q4_K_ref; break;
    case GgmlType::Q5_K: kernel = quantize_row_q5_K_ref; break;
    case GgmlType::Q6_K: kernel = quantize_row_q6_K_ref; break;
    case GgmlType::Q8_K: kernel = quantize_row_q8_K_ref; break;
    case GgmlType::MXFP4: kernel = quantize_row_mxfp4_ref; break;
    case GgmlType::Q2_K: kernel = quantize_row_q2_K_ref; break;
    case GgmlType::Q3_K: kernel = quantize_row_q3_K_ref; break;
    case GgmlType::IQ4_NL: kernel = quantize_row_iq4_nl_ref; break;
    case GgmlType::IQ4_XS: kernel = quantize_row_iq4_xs_ref; break;
    case GgmlType::IQ2_XXS: kernel = quantize_row_iq2_xxs_ref; break;
    case GgmlType::IQ2_XS: kernel = quantize_row_iq2_xs_ref; break;
    case GgmlType::IQ2_S: kernel = quantize_row_iq2_s_ref; break;
    case GgmlType::IQ3_XXS: kernel = quantize_row_iq3_xxs_ref; break;
    case GgmlType::IQ3_S: kernel = quantize_row_iq3_s_ref; break;
    default: unsupported(t, "quantization");
  }
  // Block scales are computed from the data: a NaN or infinity would silently poison a
  // whole block, so it is refused up front.
  for (int64_t i = 0; i < n; i++) {
    if (!std::isfinite(src[i])) {
      throw Error(code::bad_argument, std::string(t.name) + ": input element " + std::to_string(i) +
                                          " is not finite (" + std::to_string(src[i]) + ")");
    }
  }
  kernel(src, dst, n);
}

void dequantize_row_ref(GgmlType type, const void* src, float* dst, int64_t n) {
  const TypeTraits& t = traits_of(type);
  check_n(type, t, n);
  const auto* in = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, in, size_t(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        dst[i] = fp16_to_fp32(h);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        dst[i] = bf16_to_fp32(h);
      }
      return;
    case GgmlType::Q4_0: dequantize_row_q4_0_ref(src, dst, n); return;
    case GgmlType::Q4_1: dequantize_row_q4_1_ref(src, dst, n); return;
    case GgmlType::Q5_0: dequantize_row_q5_0_ref(src, dst, n); return;
    case GgmlType::Q5_1: dequantize_row_q5_1_ref(src, dst, n); return;
    case GgmlType::Q8_0: dequantize_row_q8_0_ref(src, dst, n); return;
    case GgmlType::Q8_1: dequantize_row_q8_1_ref(src, dst, n); return;
    case GgmlType::Q4_K: dequantize_row_q4_K_ref(src, dst, n); return;
    case GgmlType::Q5_K: dequantize_row_q5_K_ref(src, dst, n); return;
    case GgmlType::Q6_K: dequantize_row_q6_K_ref(src, dst, n); return;
    case GgmlType::Q8_K: dequantize_row_q8_K_ref(src, dst, n); return;
    case GgmlType::MXFP4: dequantize_row_mxfp4_ref(src, dst, n); return;
    case GgmlType::Q2_K: dequantize_row_q2_K_ref(src, dst, n); return;
    case GgmlType::Q3_K: dequantize_row_q3_K_ref(src, dst, n); return;
    case GgmlType::IQ4_NL: dequantize_row_iq4_nl_ref(src, dst, n); return;
    case GgmlType::IQ4_XS: dequantize_row_iq4_xs_ref(src, dst, n); return;
    case GgmlType::IQ2_XXS: dequantize_row_iq2_xxs_ref(src, dst, n); return;
    case GgmlType::IQ2_XS: dequantize_row_iq2_xs_ref(src, dst, n); return;
    case GgmlType::IQ2_S: dequantize_row_iq2_s_ref(src, dst, n); return;
    case GgmlType::IQ3_XXS: dequantize_row_iq3_xxs_ref(src, dst, n); return;
    case GgmlType::IQ3_S: dequantize_row_iq3_s_ref(src, dst, n); return;
    default: unsupported(t, "dequantization");
  }
}

float vec_dot_ref(GgmlType type, const void* w, const void* a, int64_t n) {
  const TypeTraits& t = traits_of(type);
  check_n(type, t, n);
  switch (type) {
    case GgmlType::F32: return vec_dot_f32_ref(w, a, n);
    case GgmlType::F16: return vec_dot_f16_ref(w, a, n);
    case GgmlType::BF16: return vec_dot_bf16_ref(w, a, n);
    case GgmlType::Q4_0: return vec_dot_q4_0_q8_0_ref(w, a, n);
    case GgmlType::Q4_1: return vec_dot_q4_1_q8_1_ref(w, a, n);
    case GgmlType::Q5_0: return vec_dot_q5_0_q8_0_ref(w, a, n);
    case GgmlType::Q5_1: return vec_dot_q5_1_q8_1_ref(w, a, n);
    case GgmlType::Q8_0: return vec_dot_q8_0_q8_0_ref(w, a, n);
    case GgmlType::Q8_1: return vec_dot_q8_1_q8_1_ref(w, a, n);
    case GgmlType::Q4_K: return vec_dot_q4_K_q8_K_ref(w, a, n);
    case GgmlType::Q5_K: return vec_dot_q5_K_q8_K_ref(w, a, n);
    case GgmlType::Q6_K: return vec_dot_q6_K_q8_K_ref(w, a, n);
    case GgmlType::Q8_K: return vec_dot_q8_K_q8_K_ref(w, a, n);
    case GgmlType::MXFP4: return vec_dot_mxfp4_q8_0_ref(w, a, n);
    case GgmlType::Q2_K: return vec_dot_q2_K_q8_K_ref(w, a, n);
    case GgmlType::Q3_K: return vec_dot_q3_K_q8_K_ref(w, a, n);
    case GgmlType::IQ4_NL: return vec_dot_iq4_nl_q8_0_ref(w, a, n);
    case GgmlType::IQ4_XS: return vec_dot_iq4_xs_q8_K_ref(w, a, n);
    case GgmlType::IQ2_XXS: return vec_dot_iq2_xxs_q8_K_ref(w, a, n);
    case GgmlType::IQ2_XS: return vec_dot_iq2_xs_q8_K_ref(w, a, n);
    case GgmlType::IQ2_S: return vec_dot_iq2_s_q8_K_ref(w, a, n);
    case GgmlType::IQ3_XXS: return vec_dot_iq3_xxs_q8_K_ref(w, a, n);
    case GgmlType::IQ3_S: return vec_dot_iq3_s_q8_K_ref(w, a, n);
    default: unsupported(t, "dot product");
  }
}

}  // namespace tdm
