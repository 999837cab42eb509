// AVX2 + FMA + F16C kernels for the CPU kernel table (kernels.h). Compiled on their own
// with -mavx2 -mfma -mf16c (binding.gyp target tandem_cpu_avx2) and installed only after
// the processor reports those features. Each matches its *_ref twin up to float rounding;
// the q8_0 and q8_1 activation quantizers follow llama.cpp's x86 ones (scale 127/max, round
// half to even), where the references round half away from zero. The quantized dot
// products sum in llama.cpp's x86 float order for each type (eight lanes, whole q4_0 and
// mxfp4 blocks, q4_K sub-block pairs; see the AVX-512 file), the same bits as the packed
// AVX-512 kernels. q2_K and iq4_nl sum as llama.cpp's repacked kernels do (whole
// super-blocks, whole blocks), q3_K, iq4_xs and the IQ2/IQ3 grid types in its vec_dot lanes.
// On other architectures the file compiles to nothing and the table keeps its references.
// avxvnni/kernels_avxvnni.cpp compiles this file again with TDM_AVX_VNNI and -mavxvnni: the
// integer dot products then take VPDPBUSD (dot_u8i8_add, DotAcc), the same integers in
// fewer instructions, for processors with AVX-VNNI but no AVX-512 (Alder Lake and later).
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && (!defined(TDM_AVX_VNNI) || defined(__AVXVNNI__))
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/ggml_types.h"
#include "cpu/iq_grids_x86.h"
#include "cpu/kernels.h"
#include "cpu/packed_common.h"
#include "cpu/quants.h"

namespace tdm::cpu {

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float f32_at(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// acc + the sum of the four u8 x s8 products in each 32-bit lane of u and s. With AVX-VNNI it
// is one VPDPBUSD; without, VPMADDUBSW's int16 pairs, which these kernels' operands never
// saturate, widened by VPMADDWD: the same integers either way.
inline __m256i dot_u8i8_add(__m256i acc, __m256i u, __m256i s) {
#if defined(TDM_AVX_VNNI)
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// Per-lane sums of u8 x s8 products over a few vectors (a sub-block or a block). Without VNNI
// they gather as VPMADDUBSW's int16 pairs, widened once at the end, which the callers keep
// within int16; with VNNI, VPDPBUSD sums them in int32 lanes directly.
struct DotAcc {
  __m256i v = _mm256_setzero_si256();
  void add(__m256i u, __m256i s) {
#if defined(TDM_AVX_VNNI)
    v = _mm256_dpbusd_avx_epi32(v, u, s);
#else
    v = _mm256_add_epi16(v, _mm256_maddubs_epi16(u, s));
#endif
  }
  // The int32 lane sums.
  __m256i sums() const {
#if defined(TDM_AVX_VNNI)
    return v;
#else
    return _mm256_madd_epi16(v, _mm256_set1_epi16(1));
#endif
  }
  // The lane sums times a scale given in both int16 halves of each lane (sc | sc << 16).
  __m256i scaled(__m256i sc_pair) const {
#if defined(TDM_AVX_VNNI)
    return _mm256_mullo_epi32(v, _mm256_and_si256(sc_pair, _mm256_set1_epi32(0xFFFF)));
#else
    return _mm256_madd_epi16(v, sc_pair);
#endif
  }
};

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// sum_g coef[g] * bsums[g] over a q8_K block's 16 group sums, coef as 16 int16 lanes.
inline int32_t bsum_dot(const uint8_t* q8k, __m256i coef) {
  return hsum_i32(_mm256_madd_epi16(load256(q8k + 4 + kQK_K), coef));
}

// q6_K's offset of 32 per lane, as llama.cpp's vec_dot takes it: lane k starts at
// -32 * (scale[2k] * sum[2k] + scale[2k+1] * sum[2k+1]) over the q8_K group sums.
inline __m256i q6k_offset_lanes(const uint8_t* x, const uint8_t* q8k) {
  const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 192)));
  return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(load256(q8k + 4 + kQK_K), sc16), 5));
}

// A Q4_K block's 8 sub-block mins, each repeated for the two 16-element groups it spans.
inline __m256i q4k_mins16(const uint8_t* mn) {
  alignas(32) int16_t m[16];
  for (int j = 0; j < 8; ++j) m[2 * j] = m[2 * j + 1] = int16_t(mn[j]);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
}

// A Q4_K block's 8 sub-block scales (sm[0..7]) and mins (sm[8..15]) from its 12 packed bytes,
// all at once with 32-bit masks (as llama.cpp's vec_dot unpacks them): the same values as
// unpack_scale_min_k4, in a dozen integer operations instead of a few per sub-block.
inline void q4k_scales_mins(const uint8_t* packed, uint8_t sm[16]) {
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  u[3] = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
  const uint32_t mins_lo = u[1] & kLow6;
  u[1] = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
  u[2] = mins_lo;
  u[0] &= kLow6;
  std::memcpy(sm, u, 16);
}

// Lane i: the sum of v_i's 8 int32 lanes (integer sums: exact in any order).
inline __m128i hsum4_i32(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
  return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

// q4_K sub-block pairs c = 0..3 of a block against one q8_K block, as floats in lanes c: the
// scaled pair sums, and the mins of sub-blocks 2c and 2c+1 against their activation sums (q8_K
// group sums 4c..4c+3), one term per pair as llama.cpp's repacked q4_K gemm takes them.
struct Q4KPairs {
  __m128 sums, mins;
};
inline Q4KPairs q4k_pairs(const __m256i (&q)[8], const __m256i (&s)[8], const uint8_t* q8k, __m256i mins16) {
  const uint8_t* q8 = q8k + 4;
  __m256i sumi[4];
  for (int c = 0; c < 4; ++c)
    sumi[c] = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q[2 * c], load256(q8 + 64 * c)), s[2 * c]),
                               _mm256_madd_epi16(_mm256_maddubs_epi16(q[2 * c + 1], load256(q8 + 64 * c + 32)), s[2 * c + 1]));
  // Lane j of m: min j times its two group sums; adjacent lanes add to the pair's term.
  const __m256i m = _mm256_madd_epi16(load256(q8k + 4 + kQK_K), mins16);
  const __m256i pm = _mm256_hadd_epi32(m, m);  // pairs 0, 1 in the low half, 2, 3 in the high
  const __m128i pairs_min = _mm_unpacklo_epi64(_mm256_castsi256_si128(pm), _mm256_extracti128_si256(pm, 1));
  return {_mm_cvtepi32_ps(hsum4_i32(sumi[0], sumi[1], sumi[2], sumi[3])), _mm_cvtepi32_ps(pairs_min)};
}

// The block's unpacked levels (low and high nibbles per 32-byte chunk) and scale vectors.
struct Q4KBlock {
  __m256i q[8], s[8];
  __m256i mins16;
};
inline void q4k_block(const uint8_t* x, Q4KBlock* b) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  alignas(16) uint8_t sm[16];
  q4k_scales_mins(x + 4, sm);
  for (int c = 0; c < 4; ++c) {
    const __m256i q4 = load256(x + 16 + 32 * c);
    b->q[2 * c] = _mm256_and_si256(q4, low4);
    b->q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low4);
    b->s[2 * c] = _mm256_set1_epi16(sm[2 * c]);
    b->s[2 * c + 1] = _mm256_set1_epi16(sm[2 * c + 1]);
  }
  const __m128i mins8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sm + 8));
  b->mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins8, mins8));
}

// acc = fma(pair c, d, acc) for c = 0..3 in order, one rounding each (llama.cpp's order).
inline float fma_lanes_in_order(__m128 v, float d, float acc) {
  alignas(16) float f[4];
  _mm_store_ps(f, v);
  for (int c = 0; c < 4; ++c) acc = std::fma(f[c], d, acc);
  return acc;
}

// 32 signed int8 products summed in pairs of pairs: 8 int32 lanes (dot_i8: as floats).
inline __m256i dot_i8_lanes(__m256i x, __m256i y) {
  const __m256i ax = _mm256_sign_epi8(x, x);
  const __m256i sy = _mm256_sign_epi8(y, x);
  return dot_u8i8_add(_mm256_setzero_si256(), ax, sy);
}
inline __m256 dot_i8(__m256i x, __m256i y) { return _mm256_cvtepi32_ps(dot_i8_lanes(x, y)); }

// The float dot products keep two 8-lane accumulators (even and odd groups of 8) and a
// scalar tail, exactly as their 4-row versions below do, so a row's result does not depend
// on how the batch is split.
float vec_dot_f32_avx2(const void* w, const void* a, int64_t n) {
  const float* x = static_cast<const float*>(w);
  const float* y = static_cast<const float*>(a);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
  }
  if (i + 8 <= n) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
    i += 8;
  }
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

inline __m256 load_f16x8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// bf16 is the top half of an f32: widen and shift.
inline __m256 load_bf16x8(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline float bf16_scalar(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct HalfF16 {
  static __m256 load8(const uint16_t* p) { return load_f16x8(p); }
  static float one(uint16_t h) { return _cvtsh_ss(h); }
};
struct HalfBF16 {
  static __m256 load8(const uint16_t* p) { return load_bf16x8(p); }
  static float one(uint16_t h) { return bf16_scalar(h); }
};

template <typename H>
float vec_dot_half_avx2(const void* w, const void* a, int64_t n) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const uint16_t* y = static_cast<const uint16_t*>(a);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(H::load8(x + i), H::load8(y + i), acc0);
    acc1 = _mm256_fmadd_ps(H::load8(x + i + 8), H::load8(y + i + 8), acc1);
  }
  if (i + 8 <= n) {
    acc0 = _mm256_fmadd_ps(H::load8(x + i), H::load8(y + i), acc0);
    i += 8;
  }
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += H::one(x[i]) * H::one(y[i]);
  return s;
}

float vec_dot_q8_0_q8_0_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ8_0), y += sizeof(BlockQ8_0)) {
    const __m256 d = _mm256_set1_ps(f16_at(x) * f16_at(y));
    acc = _mm256_fmadd_ps(d, dot_i8(load256(x + 2), load256(y + 2)), acc);
  }
  return hsum(acc);
}

float vec_dot_q4_0_q8_0_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK;
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m256i eight = _mm256_set1_epi8(8);
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ4_0), y += sizeof(BlockQ8_0)) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2));
    // Element j is the low nibble of byte j, element j+16 the high nibble.
    const __m128i lo = _mm_and_si128(packed, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
    const __m256i q = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), eight);
    acc = std::fma(float(hsum_i32(dot_i8_lanes(q, load256(y + 2)))), f16_at(x) * f16_at(y), acc);
  }
  return acc;
}

float vec_dot_q4_K_q8_K_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  float acc = 0.0f, acc_min = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ4_K), y += sizeof(BlockQ8_K)) {
    const float dy = f32_at(y);
    const float d = f16_at(x) * dy;
    const float dmin = f16_at(x + 2) * dy;
    Q4KBlock blk;
    q4k_block(x, &blk);
    const Q4KPairs p = q4k_pairs(blk.q, blk.s, y, blk.mins16);
    acc = fma_lanes_in_order(p.sums, d, acc);
    acc_min = fma_lanes_in_order(p.mins, dmin, acc_min);
  }
  return acc - acc_min;
}

float vec_dot_q6_K_q8_K_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i two = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ6_K), y += sizeof(BlockQ8_K)) {
    const float d = f16_at(x + 208) * f32_at(y);
    int8_t sc[16];
    std::memcpy(sc, x + 192, sizeof sc);
    __m256i sumi = q6k_offset_lanes(x, y);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x + 64 * h;
      const __m256i qh = load256(x + 128 + 32 * h);
      const __m256i ql0 = load256(ql);
      const __m256i ql1 = load256(ql + 32);
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, two), 4));
      q[1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4));
      const uint8_t* q8 = y + 4 + 128 * h;
      for (int k = 0; k < 4; ++k) {
        const int g = 8 * h + 2 * k;  // the 16-element groups of these 32 elements
        const __m256i p = _mm256_maddubs_epi16(q[k], load256(q8 + 32 * k));
        const __m256i scales = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scales));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// ---- one weight row against four activation rows (prefill): each weight block is loaded
// and unpacked once, then dotted with the four rows' blocks.

void vec_dot4_f32_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const float* x = static_cast<const float*>(w);
  const float* y[4];
  for (int j = 0; j < 4; ++j) y[j] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(a) + j * stride);
  __m256 acc0[4], acc1[4];
  for (int j = 0; j < 4; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
    for (int j = 0; j < 4; ++j) {
      acc0[j] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(y[j] + i), acc0[j]);
      acc1[j] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(y[j] + i + 8), acc1[j]);
    }
  }
  if (i + 8 <= n) {
    const __m256 x0 = _mm256_loadu_ps(x + i);
    for (int j = 0; j < 4; ++j) acc0[j] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(y[j] + i), acc0[j]);
    i += 8;
  }
  for (int j = 0; j < 4; ++j) {
    float s = hsum(_mm256_add_ps(acc0[j], acc1[j]));
    for (int64_t k = i; k < n; ++k) s += x[k] * y[j][k];
    out[j] = s;
  }
}

template <typename H>
void vec_dot4_half_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const uint16_t* y[4];
  for (int j = 0; j < 4; ++j) y[j] = reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(a) + j * stride);
  __m256 acc0[4], acc1[4];
  for (int j = 0; j < 4; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = H::load8(x + i), x1 = H::load8(x + i + 8);
    for (int j = 0; j < 4; ++j) {
      acc0[j] = _mm256_fmadd_ps(x0, H::load8(y[j] + i), acc0[j]);
      acc1[j] = _mm256_fmadd_ps(x1, H::load8(y[j] + i + 8), acc1[j]);
    }
  }
  if (i + 8 <= n) {
    const __m256 x0 = H::load8(x + i);
    for (int j = 0; j < 4; ++j) acc0[j] = _mm256_fmadd_ps(x0, H::load8(y[j] + i), acc0[j]);
    i += 8;
  }
  for (int j = 0; j < 4; ++j) {
    float s = hsum(_mm256_add_ps(acc0[j], acc1[j]));
    for (int64_t k = i; k < n; ++k) s += H::one(x[k]) * H::one(y[j][k]);
    out[j] = s;
  }
}

// The fp16 scale at the start of a block (q8_0, q4_0, q5_0).
struct F16Scale {
  float operator()(const uint8_t* x) const { return f16_at(x); }
};

// q8_0, q4_0, q5_0 and mxfp4 share the tail: a block of 32 signed weights against four q8_0
// blocks, in eight lanes (q8_0, q5_0) or with each block summed whole (q4_0, mxfp4), as the
// scalar versions.
template <bool kWholeBlocks, typename Unpack, typename Scale = F16Scale>
void dot4_q8_0_act(const uint8_t* x, size_t x_block, const uint8_t* a, size_t stride, int64_t n, float* out, Unpack unpack,
                   Scale scale = Scale()) {
  const int64_t nb = n / kQK;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  float acc_blocks[4] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nb; ++b, x += x_block) {
    const float dx = scale(x);
    const __m256i q = unpack(x);
    const __m256i aq = _mm256_sign_epi8(q, q);
    for (int j = 0; j < 4; ++j) {
      const uint8_t* yb = a + j * stride + size_t(b) * sizeof(BlockQ8_0);
      const __m256i sy = _mm256_sign_epi8(load256(yb + 2), q);
      const __m256i p = dot_u8i8_add(_mm256_setzero_si256(), aq, sy);
      if (kWholeBlocks) acc_blocks[j] = std::fma(float(hsum_i32(p)), dx * f16_at(yb), acc_blocks[j]);
      else acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * f16_at(yb)), _mm256_cvtepi32_ps(p), acc[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = kWholeBlocks ? acc_blocks[j] : hsum(acc[j]);
}

void vec_dot4_q8_0_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  dot4_q8_0_act<false>(static_cast<const uint8_t*>(w), sizeof(BlockQ8_0), static_cast<const uint8_t*>(a), stride, n, out,
                [](const uint8_t* x) { return load256(x + 2); });
}

void vec_dot4_q4_0_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m256i eight = _mm256_set1_epi8(8);
  dot4_q8_0_act<true>(static_cast<const uint8_t*>(w), sizeof(BlockQ4_0), static_cast<const uint8_t*>(a), stride, n, out,
                [&](const uint8_t* x) {
                  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2));
                  const __m128i lo = _mm_and_si128(packed, low4);
                  const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
                  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), eight);
                });
}

void vec_dot4_q4_K_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* ab = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  float acc[4] = {0, 0, 0, 0}, acc_min[4] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ4_K)) {
    const float d = f16_at(x), dmin = f16_at(x + 2);
    Q4KBlock blk;
    q4k_block(x, &blk);
    for (int j = 0; j < 4; ++j) {
      const uint8_t* y = ab + j * stride + size_t(b) * sizeof(BlockQ8_K);
      const float dy = f32_at(y);
      const Q4KPairs p = q4k_pairs(blk.q, blk.s, y, blk.mins16);
      acc[j] = fma_lanes_in_order(p.sums, d * dy, acc[j]);
      acc_min[j] = fma_lanes_in_order(p.mins, dmin * dy, acc_min[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = acc[j] - acc_min[j];
}

void vec_dot4_q6_K_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* ab = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i two = _mm256_set1_epi8(3);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ6_K)) {
    const float d = f16_at(x + 208);
    int8_t sc[16];
    std::memcpy(sc, x + 192, sizeof sc);
    __m256i q[8], s[8];
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x + 64 * h;
      const __m256i qh = load256(x + 128 + 32 * h);
      const __m256i ql0 = load256(ql);
      const __m256i ql1 = load256(ql + 32);
      q[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, two), 4));
      q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4));
      q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4));
      q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4));
      for (int k = 0; k < 4; ++k) {
        const int g = 8 * h + 2 * k;
        s[4 * h + k] = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
      }
    }
    for (int j = 0; j < 4; ++j) {
      const uint8_t* y = ab + j * stride + size_t(b) * sizeof(BlockQ8_K);
      const float dd = d * f32_at(y);
      __m256i sumi = q6k_offset_lanes(x, y);
      for (int k = 0; k < 8; ++k)
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], load256(y + 4 + 32 * k)), s[k]));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(sumi), acc[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]);
}

// ---- q5_0, q4_1, q5_1, q5_K: the fifth bit of element j of a 32-element block is bit j of a
// little-endian u32; spread to one 0x00/0xFF byte per element.
inline __m256i mask_to_bytes(uint32_t bits) {
  // Byte i takes byte i/8 of the word (every 128-bit lane holds all four), then keeps bit i%8.
  const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  const __m256i spread = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(int32_t(bits)), pick), bit);
  return _mm256_cmpeq_epi8(spread, bit);
}

inline __m256i bits_to_bytes(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  return mask_to_bytes(bits);
}

// ---- fifth bits of the packed 5-bit types, sliced for AVX2. The group layouts hold them as
// the AVX-512 kernels mask with them: per unit (a q5_0/q5_1 block; q5_K has K5QuintLayout), eight
// 64-bit masks k = 2i (vector i's low nibbles) and 2i + 1 (its high ones), bit 4r + m for byte
// m of row r. AVX2 has no masked byte add, and spreading a mask to bytes takes a broadcast, a
// shuffle, a compare and two logic operations per vector. The AVX2 packs therefore rewrite each
// unit's 64 bytes as two 32-byte slices, one per 8-row half: byte p of slice h holds in bit k
// the bit of byte p of mask k's half h. Vector k's bits are then one shift and one AND away.
inline void slice_fifth_bits(uint8_t* plane, int64_t units) {
  for (int64_t u = 0; u < units; ++u) {
    uint8_t* unit = plane + u * 64;
    uint64_t masks[8];
    std::memcpy(masks, unit, sizeof masks);
    for (int h = 0; h < 2; ++h)
      for (int p = 0; p < 32; ++p) {
        uint8_t b = 0;
        for (int k = 0; k < 8; ++k) b = uint8_t(b | (((masks[k] >> (32 * h + p)) & 1u) << k));
        unit[32 * h + p] = b;
      }
  }
}

// 0x10 in the bytes of vector k whose fifth bit is set, from its unit's slice.
inline __m256i fifth_bits(__m256i slice, int k) {
  const __m256i b5 = _mm256_set1_epi8(0x10);
  switch (k) {
    case 0: return _mm256_and_si256(_mm256_slli_epi16(slice, 4), b5);
    case 1: return _mm256_and_si256(_mm256_slli_epi16(slice, 3), b5);
    case 2: return _mm256_and_si256(_mm256_slli_epi16(slice, 2), b5);
    case 3: return _mm256_and_si256(_mm256_slli_epi16(slice, 1), b5);
    case 4: return _mm256_and_si256(slice, b5);
    case 5: return _mm256_and_si256(_mm256_srli_epi16(slice, 1), b5);
    case 6: return _mm256_and_si256(_mm256_srli_epi16(slice, 2), b5);
    default: return _mm256_and_si256(_mm256_srli_epi16(slice, 3), b5);
  }
}

// The 32 nibbles of a block in element order: byte j's low nibble, then the high ones.
inline __m256i nibbles32(const uint8_t* qs) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i low4 = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low4), _mm_and_si128(packed, low4));
}

// Unsigned 5-bit levels: nibble plus 16 where the fifth bit is set.
inline __m256i levels5(const uint8_t* qh, const uint8_t* qs) {
  return _mm256_or_si256(nibbles32(qs), _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10)));
}

float vec_dot_q5_0_q8_0_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK;
  const __m256i sixteen = _mm256_set1_epi8(16);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ5_0), y += sizeof(BlockQ8_0)) {
    const __m256 d = _mm256_set1_ps(f16_at(x) * f16_at(y));
    const __m256i q = _mm256_sub_epi8(levels5(x + 2, x + 6), sixteen);
    acc = _mm256_fmadd_ps(d, dot_i8(q, load256(y + 2)), acc);
  }
  return hsum(acc);
}

void vec_dot4_q5_0_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const __m256i sixteen = _mm256_set1_epi8(16);
  dot4_q8_0_act<false>(static_cast<const uint8_t*>(w), sizeof(BlockQ5_0), static_cast<const uint8_t*>(a), stride, n, out,
                [&](const uint8_t* x) { return _mm256_sub_epi8(levels5(x + 2, x + 6), sixteen); });
}

// ---- mxfp4: the codes through a byte table to their signed levels (twice the E2M1 values),
// then q4_0's arithmetic with the block scale e8m0_half(e): each block's integer dot whole and
// one fma, the order of llama.cpp's repacked mxfp4 (gemv/gemm_q4_b32_8x8_q8_0_lut_avx).
inline __m256i mxfp4_levels(const uint8_t* qs) {
  const __m256i values = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values)));
  return _mm256_shuffle_epi8(values, nibbles32(qs));
}

struct E8M0Scale {
  float operator()(const uint8_t* x) const { return e8m0_half(x[0]); }
};

float vec_dot_mxfp4_q8_0_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK;
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockMXFP4), y += sizeof(BlockQ8_0))
    acc = std::fma(float(hsum_i32(dot_i8_lanes(mxfp4_levels(x + 1), load256(y + 2)))), e8m0_half(x[0]) * f16_at(y), acc);
  return acc;
}

void vec_dot4_mxfp4_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  dot4_q8_0_act<true>(static_cast<const uint8_t*>(w), sizeof(BlockMXFP4), static_cast<const uint8_t*>(a), stride, n, out,
                      [](const uint8_t* x) { return mxfp4_levels(x + 1); }, E8M0Scale());
}

// ---- iq4_nl: mxfp4's arithmetic with the iq4 grid and an fp16 block scale. llama.cpp's x86
// build repacks iq4_nl (gemv/gemm_q4_b32_8x8_q8_0_lut_avx, as mxfp4), so each block's integer
// dot is taken whole with one fma.
inline __m256i iq4_levels(const uint8_t* qs) {
  const __m256i values = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
  return _mm256_shuffle_epi8(values, nibbles32(qs));
}

float vec_dot_iq4_nl_q8_0_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK;
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockIQ4_NL), y += sizeof(BlockQ8_0))
    acc = std::fma(float(hsum_i32(dot_i8_lanes(iq4_levels(x + 2), load256(y + 2)))), f16_at(x) * f16_at(y), acc);
  return acc;
}

void vec_dot4_iq4_nl_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  dot4_q8_0_act<true>(static_cast<const uint8_t*>(w), sizeof(BlockIQ4_NL), static_cast<const uint8_t*>(a), stride, n, out,
                      [](const uint8_t* x) { return iq4_levels(x + 2); });
}

// ---- q3_K and iq4_xs: llama.cpp's x86 vec_dot order, as q6_K's: eight int32 lanes per
// super-block (lane k takes bytes 4k..4k+3 of every 32-byte part), one fma of the lanes by
// d_x d_y, the eight lanes added at the end (hsum). Each part is signed levels times int8
// activations (VPMADDUBSW through the sign trick: |levels| <= 127, activations within
// +-127, so no pair saturates) scaled per 16 (q3_K) or 32 (iq4_xs) elements by VPMADDWD.

// Eight parts of 32 signed levels and their scale pairs (the scale of each 16-byte half of a
// part in all int16 lanes of that half), as the unpackers below leave them.
struct LanesBlock {
  __m256i q[8], s[8];
};

// The int32 lanes of a LanesBlock against one q8_K block's quants.
inline __m256i lanes_dot(const LanesBlock& b, const uint8_t* q8) {
  __m256i sumi = _mm256_setzero_si256();
  for (int k = 0; k < 8; ++k) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(b.q[k], b.q[k]), _mm256_sign_epi8(load256(q8 + 32 * k), b.q[k]));
    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, b.s[k]));
  }
  return sumi;
}

inline __m256i scale_pair(int lo, int hi) { return _mm256_set_m128i(_mm_set1_epi16(int16_t(hi)), _mm_set1_epi16(int16_t(lo))); }

// Q3_K's 16 group scales (minus 32, as unpack_scale_q3_K gives them) from its 12 bytes, as
// int16: low nibbles of bytes 0..7 (groups 0..7), then their high nibbles (8..15); top bits
// from bytes 8..11, bits 2(g / 4) for group g. In registers throughout (a round trip through
// memory stalled store forwarding and took longer than the dot product).
inline __m256i q3k_scales16(const uint8_t* packed) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m128i b07 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed));
  const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(b07, low4), _mm_and_si128(_mm_srli_epi16(b07, 4), low4));
  const __m128i top = _mm_srlv_epi32(_mm_set1_epi32(int32_t(load_u32(packed + 8))), _mm_setr_epi32(0, 2, 4, 6));
  const __m128i high = _mm_slli_epi16(_mm_and_si128(top, _mm_set1_epi8(3)), 4);
  return _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_or_si128(low, high), _mm_set1_epi8(32)));
}

// Groups 2k and 2k + 1 of 16 int16 scales, in every int16 lane of the low and the high half.
inline __m256i scale_pair_of(__m256i scales16, int k) {
  const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
  return _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(scales16, _mm256_set1_epi32(k)), spread);
}

// Part 4h + j holds elements 128h + 32j + l (l < 32): two low bits from bits 2j of qs[32h + l],
// the third from bit 4h + j of hmask[l]; level = bits - 4.
inline void q3k_block(const uint8_t* x, LanesBlock* b) {
  const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
  const __m256i hmask = load256(x);
  const __m256i sc16 = q3k_scales16(x + 96);
  for (int h = 0; h < 2; ++h) {
    const __m256i bits = load256(x + 32 + 32 * h);
    for (int j = 0; j < 4; ++j) {
      const __m256i bit = _mm256_set1_epi8(int8_t(1 << (4 * h + j)));
      const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hmask, bit), bit), four);
      const __m256i low = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
      b->q[4 * h + j] = _mm256_sub_epi8(_mm256_or_si256(low, high), four);
      b->s[4 * h + j] = scale_pair_of(sc16, 4 * h + j);
    }
  }
}

// Part j is sub-block j: elements 32j..32j+15 from the low nibbles of qs[16j..], the rest from
// the high ones, through the grid; one scale for the whole part.
inline void iq4xs_block(const uint8_t* x, LanesBlock* b) {
  uint16_t scales_h;
  std::memcpy(&scales_h, x + 2, 2);
  for (int j = 0; j < 8; ++j) {
    b->q[j] = iq4_levels(x + 8 + 16 * j);
    const int ls = unpack_scale_iq4_xs(j, x + 4, scales_h);
    b->s[j] = scale_pair(ls, ls);
  }
}

template <size_t kBlockBytes, size_t kDAt, void (*Unpack)(const uint8_t*, LanesBlock*)>
float vec_dot_lanes_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, x += kBlockBytes, y += sizeof(BlockQ8_K)) {
    LanesBlock blk;
    Unpack(x, &blk);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x + kDAt) * f32_at(y)), _mm256_cvtepi32_ps(lanes_dot(blk, y + 4)), acc);
  }
  return hsum(acc);
}

template <size_t kBlockBytes, size_t kDAt, void (*Unpack)(const uint8_t*, LanesBlock*)>
void vec_dot4_lanes_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* ab = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; ++b, x += kBlockBytes) {
    LanesBlock blk;
    Unpack(x, &blk);
    const float dx = f16_at(x + kDAt);
    for (int j = 0; j < 4; ++j) {
      const uint8_t* y = ab + j * stride + size_t(b) * sizeof(BlockQ8_K);
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * f32_at(y)), _mm256_cvtepi32_ps(lanes_dot(blk, y + 4)), acc[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]);
}

constexpr size_t kQ3KDAt = offsetof(BlockQ3_K, d), kIq4xsDAt = offsetof(BlockIQ4_XS, d);

// acc + VPMADDWD(p, sc): with AVX-VNNI one VPDPWSSD, whose int32 adds wrap as VPADDD's do.
inline __m256i madd16_add(__m256i acc, __m256i p, __m256i sc) {
#if defined(TDM_AVX_VNNI)
  return _mm256_dpwssd_avx_epi32(acc, p, sc);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc));
#endif
}

// acc + the scaled products of signed levels q (|q| = abs_q) and four activation bytes a.
inline __m256i signed_dot_add(__m256i acc, __m256i abs_q, __m256i q, __m256i a, __m256i sc) {
  return madd16_add(acc, _mm256_maddubs_epi16(abs_q, _mm256_sign_epi8(a, q)), sc);
}

// ---- the IQ2/IQ3 grid types (iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s; super-blocks unpacked by
// iq_grids_x86.h): llama.cpp's AVX2 vec_dot order, as q3_K's: eight int32 lanes per super-block
// (lane k takes elements 4k..4k+3 of every 32-element sub-block, each 16-element group times its
// 2s + 1), one fma of the lanes by d_x d_y, the eight lanes added at the end (hsum), then the
// type's constant (0.125 for IQ2, 0.25 for iq3_xxs, none for iq3_s). The signs go onto the
// activations (VPSIGNB), so VPMADDUBSW takes the unsigned magnitudes as they are (at most 62,
// against activations within +-127: no int16 pair saturates).

// Sub-block j: 32 magnitudes, 32 signs (+1 or -1 bytes, VPSIGNB's operand), and the 2s + 1 of
// each 16-element half in all the int16 lanes of that half.
struct IqPart {
  __m256i mag, sgn, sc;
};

// Four sign bytes (byte l for elements 8l..8l+7), in every dword of `dw`, as 32 bytes of +1 / -1.
inline __m256i spread_signs(__m256i dw) {
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
  const __m256i set = _mm256_and_si256(_mm256_shuffle_epi8(dw, spread), bit);
  return _mm256_or_si256(_mm256_cmpeq_epi8(set, bit), _mm256_set1_epi8(1));
}

template <typename S>
inline IqPart iq_part(const S& s, int j) {
  return {s.mag(j), spread_signs(s.signs4(j)), s.scale_halves(j)};
}

// A sub-block against its 32 q8_K quants: eight int32 lanes.
inline __m256i iq_part_dot(const IqPart& p, const uint8_t* q8) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(p.mag, _mm256_sign_epi8(load256(q8), p.sgn)), p.sc);
}

// One row (its nb super-blocks at x) against T tokens' activations: out[t * out_stride]. Each
// super-block is decoded once for the T tokens; the sums follow one order whatever T (one fma
// per super-block and token), so a token's result does not depend on its tile. Out of line: inlined
// into the tile dispatch, the decoder's indices spilled to vector registers.
template <typename S, int T>
__attribute__((noinline)) void iq_dot_tokens_avx2(const uint8_t* x, int64_t nb, const IqActs& a, float* out, int64_t out_stride) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, x += S::kBytes) {
    const float dx = f16_at(x);
    if constexpr (T == 1) {  // each sub-block decoded as it is used: none held in memory
      const S s(x);
      __m256i sumi = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) sumi = _mm256_add_epi32(sumi, iq_part_dot(iq_part(s, j), a.q8(0, b) + 32 * j));
      acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(dx * a.d(0, b)), _mm256_cvtepi32_ps(sumi), acc[0]);
    } else {
      IqPart parts[8];
      {
        const S s(x);
        for (int j = 0; j < 8; ++j) parts[j] = iq_part(s, j);
      }
      for (int t = 0; t < T; ++t) {
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) sumi = _mm256_add_epi32(sumi, iq_part_dot(parts[j], a.q8(t, b) + 32 * j));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * a.d(t, b)), _mm256_cvtepi32_ps(sumi), acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t * out_stride] = S::kScale * hsum(acc[t]);
}

template <typename S>
float vec_dot_iq_avx2(const void* w, const void* a, int64_t n) {
  float out;
  iq_dot_tokens_avx2<S, 1>(static_cast<const uint8_t*>(w), n / kQK_K, IqActs::blocks(a, 0), &out, 0);
  return out;
}

template <typename S>
void vec_dot4_iq_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  iq_dot_tokens_avx2<S, 4>(static_cast<const uint8_t*>(w), n / kQK_K, IqActs::blocks(a, stride), out, 1);
}

// ---- many tokens (KIqAvx2::group_tokens): the group's rows decoded once, then every tile of up
// to 16 tokens run over them. The integers and the float order are iq_dot_tokens_avx2's, so a
// token's result does not depend on how many tokens came with it.

// Sub-block j of a decoded super-block: its 32 weights with their signs on (magnitudes at most 62,
// so VPABSB gives the magnitudes back, and VPSIGNB by a weight negates or keeps an activation as
// VPSIGNB by its +1 / -1 sign byte does, -128 wrapping alike; a zero weight zeroes the
// activation, whose product is 0 either way), and the 2s + 1 of each 16-element half in all the
// int16 lanes of that half. 512 bytes per super-block where the IqParts take 768.
struct IqSignedPart {
  __m256i w, sc;
};

// Thread-local scratch of group_tokens.
struct IqScratchAvx2 {
  std::vector<IqSignedPart> parts;  // row r's super-block b: its eight sub-blocks at (r * nb + b) * 8
  std::vector<float> dx;            // its fp16 d as a float, at r * nb + b
  std::vector<float> held;          // row r's sums of token t between passes, 8 lanes at (r * 16 + t) * 8
};
inline IqScratchAvx2& iq_scratch_avx2() {
  static thread_local IqScratchAvx2 s;
  return s;
}

template <typename S>
void iq_decode_rows_avx2(const uint8_t* g, int64_t nb, int64_t valid, IqSignedPart* out, float* dx) {
  for (int64_t i = 0; i < valid * nb; ++i, g += S::kBytes) {
    const S s(g);
    for (int j = 0; j < 8; ++j) {
      const IqPart p = iq_part(s, j);
      out[i * 8 + j] = {_mm256_sign_epi8(p.mag, p.sgn), p.sc};
    }
    dx[i] = f16_at(g);
  }
}

// Super-blocks of the decoded rows per pass over a tile's rows: the tokens' activations of one
// pass (16 KB) stay in L1 across the rows; each row's float sums wait in memory between passes.
constexpr int64_t kIqPassBlocksAvx2 = 4;

// U tokens (t0..t0 + U - 1) against one decoded row's super-blocks b0..b1 - 1 (w, dx: the row's):
// acc[u] += d_x d_y times each super-block's lanes, in order. Each part is loaded once for the U
// tokens; the sums stay in registers across the pass.
template <int U>
__attribute__((always_inline)) inline void iq_decoded_tokens_avx2(const IqSignedPart* w, const float* dx, int64_t b0, int64_t b1,
                                                                  const IqActs& a, int t0, __m256* acc) {
  for (int64_t b = b0; b < b1; ++b) {
    const IqSignedPart* p = w + b * 8;
    __m256i sumi[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) sumi[u] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m256i wj = _mm256_load_si256(&p[j].w), sc = _mm256_load_si256(&p[j].sc), mag = _mm256_abs_epi8(wj);
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        sumi[u] = signed_dot_add(sumi[u], mag, wj, load256(a.q8(t0 + u, b) + 32 * j), sc);
        // Held in a register as it is: left alone, GCC reassociates the 32 VPADDDs of the
        // block, spilling each product to the stack and adding them after (5% slower).
        __asm__("" : "+x"(sumi[u]));
      }
    }
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) acc[u] = _mm256_fmadd_ps(_mm256_set1_ps(dx[b] * a.d(t0 + u, b)), _mm256_cvtepi32_ps(sumi[u]), acc[u]);
  }
}

// Tokens T0..T - 1 of a tile, four at a time, against one decoded row over one pass (b0..b1 - 1):
// the sums come from held (row r's, held_r) and go back there, or after the last pass to y
// (row r's, y_r).
template <typename S, int T, int T0>
__attribute__((always_inline)) inline void iq_decoded_row_avx2(const IqSignedPart* w, const float* dx, int64_t nb, int64_t b0, int64_t b1,
                                                               const IqActs& a, float* y_r, int64_t ys, float* held_r) {
  constexpr int U = T - T0 < 4 ? T - T0 : 4;
  __m256 acc[U];
  for (int u = 0; u < U; ++u) acc[u] = b0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(held_r + (T0 + u) * 8);
  iq_decoded_tokens_avx2<U>(w, dx, b0, b1, a, T0, acc);
  if (b1 < nb) {
    for (int u = 0; u < U; ++u) _mm256_storeu_ps(held_r + (T0 + u) * 8, acc[u]);
  } else {
    for (int u = 0; u < U; ++u) y_r[(T0 + u) * ys] = S::kScale * hsum(acc[u]);
  }
  if constexpr (T0 + U < T) iq_decoded_row_avx2<S, T, T0 + U>(w, dx, nb, b0, b1, a, y_r, ys, held_r);
}

// T tokens against the decoded rows (group_tokens' scratch).
template <typename S, int T>
__attribute__((noinline)) void iq_decoded_tile_avx2(const IqSignedPart* w, const float* dx, int64_t nb, int64_t valid, const IqActs& a,
                                                    float* y, int64_t ys, float* held) {
  for (int64_t b0 = 0; b0 < nb; b0 += kIqPassBlocksAvx2) {
    const int64_t b1 = std::min(nb, b0 + kIqPassBlocksAvx2);
    for (int64_t r = 0; r < valid; ++r)
      iq_decoded_row_avx2<S, T, 0>(w + r * nb * 8, dx + r * nb, nb, b0, b1, a, y + r, ys, held + r * 16 * 8);
  }
}

template <typename S, int T>
void iq_decoded_tiles_avx2(int nt, const IqSignedPart* w, const float* dx, int64_t nb, int64_t valid, const IqActs& a, float* y,
                           int64_t ys, float* held) {
  if (nt == T) iq_decoded_tile_avx2<S, T>(w, dx, nb, valid, a, y, ys, held);
  else if constexpr (T > 1) iq_decoded_tiles_avx2<S, T - 1>(nt, w, dx, nb, valid, a, y, ys, held);
}

// Packed (IqRowsLayout): a group's rows one at a time, each against the tile's T tokens; past
// one tile of tokens, group_tokens.
template <typename S>
struct KIqAvx2 {
  static constexpr int kMaxT = 16;
  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const size_t rb = IqRowsLayout<S::kBytes>::row_bytes(n);
    const IqActs a{act, as, 0, kQK_K, ActQ8_K::off_d(n), 4};
    for (int64_t r = 0; r < valid; ++r) iq_dot_tokens_avx2<S, T>(g + size_t(r) * rb, n / kQK_K, a, y + r, ys);
  }

  static void group_tokens(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, int64_t n_tokens, float* y, int64_t ys,
                           int64_t valid) {
    const int64_t nb = n / kQK_K;
    IqScratchAvx2& s = iq_scratch_avx2();
    if (s.parts.size() < size_t(G * nb * 8)) s.parts.resize(size_t(G * nb * 8));
    if (s.dx.size() < size_t(G * nb)) s.dx.resize(size_t(G * nb));
    if (s.held.size() < size_t(G * 16 * 8)) s.held.resize(size_t(G * 16 * 8));
    iq_decode_rows_avx2<S>(g, nb, valid, s.parts.data(), s.dx.data());
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxT) {
      const IqActs a{act + size_t(t0) * as, as, 0, kQK_K, ActQ8_K::off_d(n), 4};
      iq_decoded_tiles_avx2<S, kMaxT>(int(std::min<int64_t>(kMaxT, n_tokens - t0)), s.parts.data(), s.dx.data(), nb, valid, a, y + t0 * ys,
                                      ys, s.held.data());
    }
  }
};

// ---- q2_K: llama.cpp's repacked q2_K order (gemv/gemm_q2_K_8x8_q8_K, which its AVX-512
// builds take; see the AVX-512 file): per super-block the whole scaled integer dot and the
// whole min term, each with one fma into its own accumulator, their difference at the end.
// Part 4h + j holds elements 128h + 32j + l, bits 2j of qs[32h + l]; levels 0..3 are unsigned,
// so VPMADDUBSW takes them as they are.
struct Q2KBlock {
  __m256i q[8], s[8];
  __m256i mins16;  // the 16 group mins as int16, against the q8_K group sums
};
inline void q2k_block(const uint8_t* x, Q2KBlock* b) {
  const __m256i m3 = _mm256_set1_epi8(3);
  for (int h = 0; h < 2; ++h) {
    const __m256i bits = load256(x + 16 + 32 * h);
    for (int j = 0; j < 4; ++j) {
      const int g = 8 * h + 2 * j;
      b->q[4 * h + j] = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
      b->s[4 * h + j] = scale_pair(x[g] & 0x0F, x[g + 1] & 0x0F);
    }
  }
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
  b->mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0F)));
}

// The block's scaled integer dot against one q8_K block (exact: below 2^24 in magnitude).
inline int32_t q2k_dot(const Q2KBlock& b, const uint8_t* q8k) {
  __m256i sumi = _mm256_setzero_si256();
  for (int k = 0; k < 8; ++k)
    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(b.q[k], load256(q8k + 4 + 32 * k)), b.s[k]));
  return hsum_i32(sumi);
}

float vec_dot_q2_K_q8_K_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  float acc = 0.0f, acc_min = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ2_K), y += sizeof(BlockQ8_K)) {
    Q2KBlock blk;
    q2k_block(x, &blk);
    const float dy = f32_at(y);
    acc = std::fma(float(q2k_dot(blk, y)), f16_at(x + offsetof(BlockQ2_K, d)) * dy, acc);
    acc_min = std::fma(float(bsum_dot(y, blk.mins16)), f16_at(x + offsetof(BlockQ2_K, dmin)) * dy, acc_min);
  }
  return acc - acc_min;
}

void vec_dot4_q2_K_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* ab = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  float acc[4] = {0, 0, 0, 0}, acc_min[4] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ2_K)) {
    Q2KBlock blk;
    q2k_block(x, &blk);
    const float d = f16_at(x + offsetof(BlockQ2_K, d)), dmin = f16_at(x + offsetof(BlockQ2_K, dmin));
    for (int j = 0; j < 4; ++j) {
      const uint8_t* y = ab + j * stride + size_t(b) * sizeof(BlockQ8_K);
      const float dy = f32_at(y);
      acc[j] = std::fma(float(q2k_dot(blk, y)), d * dy, acc[j]);
      acc_min[j] = std::fma(float(bsum_dot(y, blk.mins16)), dmin * dy, acc_min[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = acc[j] - acc_min[j];
}

// Unsigned levels with a min (q4_1, q5_1) against q8_1: d_x d_y sum(q p) + m_x s_y per block.
inline __m256 dot_u8(__m256i q, __m256i p) {
  return _mm256_cvtepi32_ps(dot_u8i8_add(_mm256_setzero_si256(), q, p));
}

template <typename Unpack>
float dot_min_q8_1(const uint8_t* x, size_t x_block, const uint8_t* y, int64_t n, Unpack unpack) {
  const int64_t nb = n / kQK;
  __m256 acc = _mm256_setzero_ps();
  float acc_m = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += x_block, y += sizeof(BlockQ8_1)) {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x) * f16_at(y)), dot_u8(unpack(x), load256(y + 4)), acc);
    acc_m += f16_at(x + 2) * f16_at(y + 2);
  }
  return hsum(acc) + acc_m;
}

template <typename Unpack>
void dot4_min_q8_1(const uint8_t* x, size_t x_block, const uint8_t* a, size_t stride, int64_t n, float* out, Unpack unpack) {
  const int64_t nb = n / kQK;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  float acc_m[4] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nb; ++b, x += x_block) {
    const float dx = f16_at(x), mx = f16_at(x + 2);
    const __m256i q = unpack(x);
    for (int j = 0; j < 4; ++j) {
      const uint8_t* yb = a + j * stride + size_t(b) * sizeof(BlockQ8_1);
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * f16_at(yb)), dot_u8(q, load256(yb + 4)), acc[j]);
      acc_m[j] += mx * f16_at(yb + 2);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]) + acc_m[j];
}

float vec_dot_q4_1_q8_1_avx2(const void* w, const void* a, int64_t n) {
  return dot_min_q8_1(static_cast<const uint8_t*>(w), sizeof(BlockQ4_1), static_cast<const uint8_t*>(a), n,
                      [](const uint8_t* x) { return nibbles32(x + 4); });
}
void vec_dot4_q4_1_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  dot4_min_q8_1(static_cast<const uint8_t*>(w), sizeof(BlockQ4_1), static_cast<const uint8_t*>(a), stride, n, out,
                [](const uint8_t* x) { return nibbles32(x + 4); });
}
float vec_dot_q5_1_q8_1_avx2(const void* w, const void* a, int64_t n) {
  return dot_min_q8_1(static_cast<const uint8_t*>(w), sizeof(BlockQ5_1), static_cast<const uint8_t*>(a), n,
                      [](const uint8_t* x) { return levels5(x + 4, x + 8); });
}
void vec_dot4_q5_1_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  dot4_min_q8_1(static_cast<const uint8_t*>(w), sizeof(BlockQ5_1), static_cast<const uint8_t*>(a), stride, n, out,
                [](const uint8_t* x) { return levels5(x + 4, x + 8); });
}

// q5_K: q4_K's nibbles plus bit 2c (low half) or 2c+1 (high half) of qh[l] for chunk c.
struct Q5KLevels {
  __m256i q[8];  // 32 unsigned levels each, elements 32k..32k+31
  __m256i s[8];  // the sub-block scale in every int16 lane
};

inline void q5k_levels(const uint8_t* x, const uint8_t* sc, Q5KLevels* out) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  const __m256i qh = load256(x + 16);
  for (int c = 0; c < 4; ++c) {
    const __m256i q4 = load256(x + 48 + 32 * c);
    const __m256i b_lo = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
    const __m256i b_hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
    out->q[2 * c] = _mm256_or_si256(_mm256_and_si256(q4, low4), b_lo);
    out->q[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4, 4), low4), b_hi);
    out->s[2 * c] = _mm256_set1_epi16(sc[2 * c]);
    out->s[2 * c + 1] = _mm256_set1_epi16(sc[2 * c + 1]);
  }
}

float vec_dot_q5_K_q8_K_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  __m256 acc = _mm256_setzero_ps();
  float acc_min = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ5_K), y += sizeof(BlockQ8_K)) {
    const float dy = f32_at(y);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) unpack_scale_min_k4(j, x + 4, &sc[j], &mn[j]);
    acc_min += f16_at(x + 2) * dy * float(bsum_dot(y, q4k_mins16(mn)));
    Q5KLevels lv;
    q5k_levels(x, sc, &lv);
    __m256i sumi = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k)
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(lv.q[k], load256(y + 4 + 32 * k)), lv.s[k]));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x) * dy), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc) - acc_min;
}

void vec_dot4_q5_K_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* ab = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  float acc_min[4] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ5_K)) {
    const float d = f16_at(x), dmin = f16_at(x + 2);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) unpack_scale_min_k4(j, x + 4, &sc[j], &mn[j]);
    const __m256i mins = q4k_mins16(mn);
    Q5KLevels lv;
    q5k_levels(x, sc, &lv);
    for (int j = 0; j < 4; ++j) {
      const uint8_t* y = ab + j * stride + size_t(b) * sizeof(BlockQ8_K);
      const float dy = f32_at(y);
      acc_min[j] += dmin * dy * float(bsum_dot(y, mins));
      __m256i sumi = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k)
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(lv.q[k], load256(y + 4 + 32 * k)), lv.s[k]));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sumi), acc[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]) - acc_min[j];
}

// llama.cpp's x86 quantize_row_q8_1: as q8_0 below, plus s = fp16(d * sum of the quants).
void quantize_row_q8_1_avx2(const float* src, void* dst, int64_t n) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / kQK;
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < nb; ++b, src += kQK, out += sizeof(BlockQ8_1)) {
    const __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8);
    const __m256 v2 = _mm256_loadu_ps(src + 16), v3 = _mm256_loadu_ps(src + 24);
    const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign_bit, v0), _mm256_andnot_ps(sign_bit, v1)),
                                   _mm256_max_ps(_mm256_andnot_ps(sign_bit, v2), _mm256_andnot_ps(sign_bit, v3)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const uint16_t dh = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    std::memcpy(out, &dh, 2);
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const int r = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), r));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), r));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), r));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), r));
    const int32_t sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    const uint16_t sh = _cvtss_sh(d * float(sum), _MM_FROUND_TO_NEAREST_INT);
    std::memcpy(out + 2, &sh, 2);
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i0, i2), perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4), i0);
  }
}

void quantize_row_q8_0_avx2(const float* src, void* dst, int64_t n) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / kQK;
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < nb; ++b, src += kQK, out += sizeof(BlockQ8_0)) {
    __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8);
    __m256 v2 = _mm256_loadu_ps(src + 16), v3 = _mm256_loadu_ps(src + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign_bit, v0), _mm256_andnot_ps(sign_bit, v1)),
                             _mm256_max_ps(_mm256_andnot_ps(sign_bit, v2), _mm256_andnot_ps(sign_bit, v3)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const uint16_t dh = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    std::memcpy(out, &dh, 2);
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const int r = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), r));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), r));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), r));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), r));
    // Packing works per 128-bit lane; the final permute puts the 32 bytes back in order.
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    i0 = _mm256_permutevar8x32_epi32(i0, perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2), i0);
  }
}

void from_float_f16_avx2(const float* src, void* dst, int64_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) d[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

void to_float_f16_avx2(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16x8(s + i));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(s[i]);
}


// ---- packed q4_K (kernels.h PackedOps; the group layout in packed_common.h): the AVX-512
// kernel's arithmetic (KK4 in that file) on each 8-row half of a group's 64-byte vectors.
// VPDPBUSD becomes VPMADDUBSW into int16 (a sub-block's 32 products of 4-bit levels and int8
// activations stay within 8 * 2 * 15 * 128 = 30720) and one VPMADDWD by the sub-block scale;
// the integers are the same, and so are the float operations, so both kernels give the same
// bits as llama.cpp's repacked q4_K gemm order.

// q8_K activations in the packed format (ActQ8_K): the reference quants, then the sums.
void quantize_act_q8_K_avx2(const float* x, int64_t n, uint8_t* act) {
  const int64_t nbk = n / kQK_K;
  float* d = reinterpret_cast<float*>(act + ActQ8_K::off_d(n));
  int32_t* msum = reinterpret_cast<int32_t*>(act + ActQ8_K::off_m(n));
  int32_t* gsum = reinterpret_cast<int32_t*>(act + ActQ8_K::off_g(n));
  for (int64_t b = 0; b < nbk; ++b) {
    BlockQ8_K q;
    quantize_row_q8_K_ref(x + b * kQK_K, &q, kQK_K);
    std::memcpy(act + b * kQK_K, q.qs, kQK_K);
    d[b] = q.d;
    const int16_t* bs = q.bsums;
    for (int p = 0; p < 4; ++p) {
      const int32_t s0 = bs[4 * p] + bs[4 * p + 1], s1 = bs[4 * p + 2] + bs[4 * p + 3];
      msum[4 * b + p] = int32_t((uint32_t(s0) & 0xFFFFu) | (uint32_t(s1) << 16));
    }
    for (int k = 0; k < 8; ++k) gsum[8 * b + k] = int32_t((uint32_t(int32_t(bs[2 * k])) & 0xFFFFu) | (uint32_t(int32_t(bs[2 * k + 1])) << 16));
  }
}

// How far ahead of its place in a group's stream a one-token tile prefetches (as the AVX-512
// kernels do; prefetch_group_stream).
constexpr int64_t kPackedPrefetchBytes = 4096;

// Eight float lanes of 8 rows' outputs added in the fixed order of lanes_sum in the AVX-512
// file (llama.cpp's hsum_float_8 order).
inline __m256 lanes_sum(const __m256 (&l)[8]) {
  return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(l[0], l[4]), _mm256_add_ps(l[2], l[6])),
                       _mm256_add_ps(_mm256_add_ps(l[1], l[5]), _mm256_add_ps(l[3], l[7])));
}

// Stores half h (rows 8h..8h+7) of a group's outputs for one token; only the group's valid rows.
inline void store_half(float* y, int h, __m256 v, int64_t valid) {
  alignas(32) float out[8];
  _mm256_store_ps(out, v);
  std::memcpy(y + 8 * h, out, size_t(std::min<int64_t>(8, valid - 8 * h)) * sizeof(float));
}

// The order in which a tile runs its units (super-blocks or blocks) over the two 8-row halves
// of a group: step(u, h) runs unit u for half h (the second half only when the group has more
// than 8 valid rows). Interleaved, both halves run each unit in turn, so that each line is used
// by both while it is in L1 and the prefetches (issued by half 0) keep an even pace; a pass per
// half left memory idle through the second pass. Kernels whose several-token tiles spill with
// both halves' accumulators live run those as a pass per half instead. With kSmall (one-token
// tiles: several tokens' tiles are mostly prompts, whose groups come from L2), half 0 of unit
// u also asks for unit u's share of the next group's small planes (prefetch_next_small; L is
// group g's layout, n its columns).
template <typename L, bool kInterleave, bool kSmall, typename Step>
__attribute__((always_inline)) inline void run_halves(const uint8_t* g, int64_t n, int64_t units, int64_t valid, Step&& step) {
  const uint8_t* next_small = kSmall ? next_small_planes<L>(g, n) : nullptr;
  if (kInterleave && valid > 8) {
    for (int64_t u = 0; u < units; ++u) {
      prefetch_next_small<L>(next_small, u);
      step(u, 0);
      step(u, 1);
    }
    return;
  }
  for (int64_t u = 0; u < units; ++u) {
    prefetch_next_small<L>(next_small, u);
    step(u, 0);
  }
  if (valid > 8)
    for (int64_t u = 0; u < units; ++u) step(u, 1);
}

// A tile of a q8_0-activation block kernel K (K::block<T>(g, nb, b, h, act, as, od, os, acc)
// adds block b of half h into acc): one token runs both halves interleaved, several a pass
// per half (see run_halves).
template <typename K, int T>
__attribute__((always_inline)) inline void block_tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y,
                                                      int64_t ys, int64_t valid) {
  const int64_t nb = n / kQK;
  const size_t od = ActQ8_0::off_d(n), os = ActQ8_0::off_s(n);
  __m256 acc0[T], acc1[T];
  for (int t = 0; t < T; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
  run_halves<typename K::L, T == 1, T == 1>(g, n, nb, valid, [&](int64_t b, int h) __attribute__((always_inline)) {
    if (h == 0) K::template block<T>(g, nb, b, 0, act, as, od, os, acc0);
    else K::template block<T>(g, nb, b, 1, act, as, od, os, acc1);
  });
  for (int t = 0; t < T; ++t) {
    store_half(y + t * ys, 0, acc0[t], valid);
    if (valid > 8) store_half(y + t * ys, 1, acc1[t], valid);
  }
}

// kHigh: q5_K, in K5QuintLayout (5-bit levels), which sums in llama.cpp's q5_K vec_dot order
// (eight int lanes per super-block, as tile_lanes in the AVX-512 file), where q4_K takes
// sub-block pairs.
template <bool kHigh>
struct KK4Avx2 {
  using L = std::conditional_t<kHigh, K5QuintLayout, K4Layout<false>>;
  // Four tokens a tile amortize the unpacking and the scales over more products than two
  // (prompts: q4_K +7%, q5_K +20% in tasks of 8 groups); the accumulators then spill, once
  // per sub-block pair, which costs less.
  static constexpr int kMaxT = 4;

  // Packed scale byte plane k (of 12) of super-block s, for the 8 rows of half h.
  static __m128i scale_bytes(const uint8_t* g, int64_t nbk, int64_t s, int k, int h) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(g + L::off_sc(nbk) + s * 192 + 16 * k + 8 * h));
  }
  // Sub-block j's 6-bit scale in both int16 halves of each row's int32 lane.
  static __m256i sub_scale16(const uint8_t* g, int64_t nbk, int64_t s, int j, int h) {
    const __m128i m6 = _mm_set1_epi8(63), m4x = _mm_set1_epi8(0x0F), m30 = _mm_set1_epi8(0x30);
    auto B = [&](int k) { return scale_bytes(g, nbk, s, k, h); };
    const __m128i sc8 = j < 4 ? _mm_and_si128(B(j), m6) : _mm_or_si128(_mm_and_si128(B(j + 4), m4x), _mm_and_si128(_mm_srli_epi16(B(j - 4), 2), m30));
    const __m256i sc = _mm256_cvtepu8_epi32(sc8);
    return _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
  }
  // Mins of sub-blocks 2p and 2p+1 as int16 pairs, against the activation's msum[p].
  static __m256i min_pair(const uint8_t* g, int64_t nbk, int64_t s, int p, int h) {
    const __m128i m6 = _mm_set1_epi8(63), m4x = _mm_set1_epi8(0x0F), m30 = _mm_set1_epi8(0x30);
    auto B = [&](int k) { return scale_bytes(g, nbk, s, k, h); };
    auto mins = [&](int j) {
      return j < 4 ? _mm_and_si128(B(j + 4), m6) : _mm_or_si128(_mm_and_si128(_mm_srli_epi16(B(j + 4), 4), m4x), _mm_and_si128(_mm_srli_epi16(B(j), 2), m30));
    };
    return _mm256_or_si256(_mm256_cvtepu8_epi32(mins(2 * p)), _mm256_slli_epi32(_mm256_cvtepu8_epi32(mins(2 * p + 1)), 16));
  }

  // Super-block s of half h (rows 8h..8h+7) added into acc (scaled sums) and accm (mins).
  template <int T>
  __attribute__((always_inline)) static inline void superblock(const uint8_t* g, int64_t nbk, int64_t s, int h, const uint8_t* act, size_t as,
                                                                size_t od, size_t om, __m256 (&acc)[T], __m256 (&accm)[T]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 64 + 16 * h)));
    const __m256 dmv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 64 + 32 + 16 * h)));
    __m256 dd[T], dm[T];
    for (int t = 0; t < T; ++t) {
      const __m256 da = _mm256_set1_ps(f32_at(act + t * as + od + 4 * s));
      dd[t] = _mm256_mul_ps(dv, da);
      dm[t] = _mm256_mul_ps(dmv, da);
    }
    for (int p = 0; p < 4; ++p) {
      __m256i isb[T];
      for (int t = 0; t < T; ++t) isb[t] = _mm256_setzero_si256();
      for (int j = 2 * p; j < 2 * p + 2; ++j) {
        DotAcc sum[T];
        for (int i = 0; i < 4; ++i) {
          // Each line is read from memory once, by half 0: it asks for the lines ahead.
          if (h == 0) prefetch_group_stream<L::kStreamStep>(g, (s * 8 + j) * 4 + i, kPackedPrefetchBytes);
          const __m256i v = load256(g + ((s * 8 + j) * 4 + i) * 64 + 32 * h);
          const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
          for (int t = 0; t < T; ++t) {
            const uint8_t* a = act + t * as + s * kQK_K + 32 * j;
            int32_t a_lo, a_hi;
            std::memcpy(&a_lo, a + 4 * i, 4);
            std::memcpy(&a_hi, a + 16 + 4 * i, 4);
            sum[t].add(lo, _mm256_set1_epi32(a_lo));
            sum[t].add(hi, _mm256_set1_epi32(a_hi));
          }
        }
        const __m256i scv = sub_scale16(g, nbk, s, j, h);
        for (int t = 0; t < T; ++t) isb[t] = _mm256_add_epi32(isb[t], sum[t].scaled(scv));
      }
      const __m256i mp = min_pair(g, nbk, s, p, h);
      for (int t = 0; t < T; ++t) {
        int32_t ms;
        std::memcpy(&ms, act + t * as + om + 16 * s + 4 * p, 4);
        const __m256i im = _mm256_madd_epi16(mp, _mm256_set1_epi32(ms));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isb[t]), dd[t], acc[t]);
        accm[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im), dm[t], accm[t]);
      }
    }
  }

  // Both halves' byte k of the packed scales (rows 0..15).
  static __m128i scale_bytes16(const uint8_t* g, int64_t nbk, int64_t s, int k) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_sc(nbk) + s * 192 + 16 * k));
  }
  // Sub-block j's 6-bit scale (kMin: min) of rows 0..15, one byte each.
  template <bool kMin>
  static __m128i sub_bytes16(const uint8_t* g, int64_t nbk, int64_t s, int j) {
    const __m128i m6 = _mm_set1_epi8(63), m4x = _mm_set1_epi8(0x0F), m30 = _mm_set1_epi8(0x30);
    auto B = [&](int k) { return scale_bytes16(g, nbk, s, k); };
    if constexpr (!kMin) return j < 4 ? _mm_and_si128(B(j), m6) : _mm_or_si128(_mm_and_si128(B(j + 4), m4x), _mm_and_si128(_mm_srli_epi16(B(j - 4), 2), m30));
    else return j < 4 ? _mm_and_si128(B(j + 4), m6) : _mm_or_si128(_mm_and_si128(_mm_srli_epi16(B(j + 4), 4), m4x), _mm_and_si128(_mm_srli_epi16(B(j), 2), m30));
  }
  // Bytes lo (and hi) of rows 8h..8h+7 as the int16 halves of each row's int32 lane.
  static __m256i pair16(__m128i lo, __m128i hi, int h) {
    if (h == 1) {
      lo = _mm_srli_si128(lo, 8);
      hi = _mm_srli_si128(hi, 8);
    }
    return _mm256_or_si256(_mm256_cvtepu8_epi32(lo), _mm256_slli_epi32(_mm256_cvtepu8_epi32(hi), 16));
  }

  // One token (decode) over all 16 rows of a super-block: each 64-byte line is loaded once as
  // its two halves, the activation broadcasts and the scale bytes serve both, and the lanes get
  // the same integers and float operations as superblock's.
  __attribute__((always_inline)) static inline void superblock_both(const uint8_t* g, int64_t nbk, int64_t s, const uint8_t* act, size_t od,
                                                                     size_t om, __m256 (&acc)[2], __m256 (&accm)[2]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256 da = _mm256_set1_ps(f32_at(act + od + 4 * s));
    __m256 dd[2], dm[2];
    for (int h = 0; h < 2; ++h) {
      dd[h] = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 64 + 16 * h))), da);
      dm[h] = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 64 + 32 + 16 * h))), da);
    }
    for (int p = 0; p < 4; ++p) {
      __m256i isb[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      for (int j = 2 * p; j < 2 * p + 2; ++j) {
        DotAcc sum[2];
        const uint8_t* a = act + s * kQK_K + 32 * j;
        for (int i = 0; i < 4; ++i) {
          const uint8_t* line = g + ((s * 8 + j) * 4 + i) * 64;
          prefetch_group_stream<L::kStreamStep>(g, (s * 8 + j) * 4 + i, kPackedPrefetchBytes);
          int32_t a_lo, a_hi;
          std::memcpy(&a_lo, a + 4 * i, 4);
          std::memcpy(&a_hi, a + 16 + 4 * i, 4);
          const __m256i b_lo = _mm256_set1_epi32(a_lo), b_hi = _mm256_set1_epi32(a_hi);
          for (int h = 0; h < 2; ++h) {
            const __m256i v = load256(line + 32 * h);
            sum[h].add(_mm256_and_si256(v, m4), b_lo);
            sum[h].add(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), b_hi);
          }
        }
        const __m128i sc = sub_bytes16<false>(g, nbk, s, j);
        for (int h = 0; h < 2; ++h) isb[h] = _mm256_add_epi32(isb[h], sum[h].scaled(pair16(sc, sc, h)));
      }
      const __m128i mn0 = sub_bytes16<true>(g, nbk, s, 2 * p), mn1 = sub_bytes16<true>(g, nbk, s, 2 * p + 1);
      int32_t ms;
      std::memcpy(&ms, act + om + 16 * s + 4 * p, 4);
      const __m256i msv = _mm256_set1_epi32(ms);
      for (int h = 0; h < 2; ++h) {
        const __m256i im = _mm256_madd_epi16(pair16(mn0, mn1, h), msv);
        acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isb[h]), dd[h], acc[h]);
        accm[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im), dm[h], accm[h]);
      }
    }
  }

  // A sub-block's eight chunks of 5-bit levels from its five vectors b (see K5QuintLayout). The
  // masked bits shift within their bytes, so the 16-bit shifts bring nothing in from the next one.
  template <int kMask, int kShift>
  __attribute__((always_inline)) static inline __m256i spare_bits(__m256i v) {
    return _mm256_srli_epi16(_mm256_and_si256(v, _mm256_set1_epi8(char(kMask))), kShift);
  }
  __attribute__((always_inline)) static inline void quint_levels(const __m256i (&b)[5], __m256i (&w)[8]) {
    const __m256i low5 = _mm256_set1_epi8(0x1F);
    for (int k = 0; k < 5; ++k) w[k] = _mm256_and_si256(b[k], low5);
    w[5] = _mm256_or_si256(spare_bits<0xE0, 5>(b[0]), spare_bits<0x60, 2>(b[1]));
    w[6] = _mm256_or_si256(_mm256_or_si256(spare_bits<0x80, 7>(b[1]), spare_bits<0xE0, 4>(b[2])), spare_bits<0x20, 1>(b[3]));
    w[7] = _mm256_or_si256(spare_bits<0xC0, 6>(b[3]), spare_bits<0xE0, 3>(b[4]));
  }

  // q5_K: super-block s of half h into the eight lane accumulators acc and the mins' accm.
  template <int T>
  __attribute__((always_inline)) static inline void superblock_lanes(const uint8_t* g, int64_t nbk, int64_t s, int h, const uint8_t* act,
                                                                      size_t as, size_t od, size_t om, __m256 (&acc)[T][8], __m256 (&accm)[T]) {
    __m256i lane[T][8];
    for (int t = 0; t < T; ++t)
      for (int k = 0; k < 8; ++k) lane[t][k] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      const __m256i sc16 = sub_scale16(g, nbk, s, j, h);
      __m256i b[5];
      for (int k = 0; k < 5; ++k) {
        // Each line is read from memory once, by half 0: it asks for the lines ahead, the far
        // ones too (as K4Layout<true>'s step asked them; a layer-sized matrix read 8% slower without).
        if (h == 0) prefetch_group_stream<L::kStreamStep, true>(g, (s * 8 + j) * 5 + k, kPackedPrefetchBytes);
        b[k] = load256(g + ((s * 8 + j) * 5 + k) * 64 + 32 * h);
      }
      __m256i w[8];
      quint_levels(b, w);
      for (int i = 0; i < 4; ++i) {
        const __m256i lo = w[i], hi = w[4 + i];
        for (int t = 0; t < T; ++t) {
          const uint8_t* a = act + t * as + s * kQK_K + 32 * j;
          int32_t a_lo, a_hi;
          std::memcpy(&a_lo, a + 4 * i, 4);
          std::memcpy(&a_hi, a + 16 + 4 * i, 4);
          lane[t][i] = _mm256_add_epi32(lane[t][i], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(a_lo)), sc16));
          lane[t][4 + i] = _mm256_add_epi32(lane[t][4 + i], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_set1_epi32(a_hi)), sc16));
        }
      }
    }
    __m256i im[T];
    for (int t = 0; t < T; ++t) im[t] = _mm256_setzero_si256();
    for (int p = 0; p < 4; ++p) {
      const __m256i mp = min_pair(g, nbk, s, p, h);
      for (int t = 0; t < T; ++t) {
        int32_t ms;
        std::memcpy(&ms, act + t * as + om + 16 * s + 4 * p, 4);
        im[t] = _mm256_add_epi32(im[t], _mm256_madd_epi16(mp, _mm256_set1_epi32(ms)));
      }
    }
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 64 + 16 * h)));
    const __m256 dmv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 64 + 32 + 16 * h)));
    for (int t = 0; t < T; ++t) {
      const __m256 da = _mm256_set1_ps(f32_at(act + t * as + od + 4 * s));
      const __m256 d = _mm256_mul_ps(dv, da);
      for (int k = 0; k < 8; ++k) acc[t][k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lane[t][k]), acc[t][k]);
      accm[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmv, da), _mm256_cvtepi32_ps(im[t]), accm[t]);
    }
  }

  template <int T>
  static void tile_lanes(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n), om = ActQ8_K::off_m(n);
    __m256 acc0[T][8], acc1[T][8], accm0[T], accm1[T];
    for (int t = 0; t < T; ++t) {
      accm0[t] = accm1[t] = _mm256_setzero_ps();
      for (int k = 0; k < 8; ++k) acc0[t][k] = acc1[t][k] = _mm256_setzero_ps();
    }
    run_halves<L, T == 1, T == 1>(g, n, nbk, valid, [&](int64_t s, int h) __attribute__((always_inline)) {
      if (h == 0) superblock_lanes<T>(g, nbk, s, 0, act, as, od, om, acc0, accm0);
      else superblock_lanes<T>(g, nbk, s, 1, act, as, od, om, acc1, accm1);
    });
    for (int t = 0; t < T; ++t) {
      store_half(y + t * ys, 0, _mm256_add_ps(lanes_sum(acc0[t]), accm0[t]), valid);
      if (valid > 8) store_half(y + t * ys, 1, _mm256_add_ps(lanes_sum(acc1[t]), accm1[t]), valid);
    }
  }

  // One token: superblock_both; several: a pass per half (see run_halves).
  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    if constexpr (kHigh) {
      tile_lanes<T>(g, n, act, as, y, ys, valid);
    } else {
      const int64_t nbk = n / kQK_K;
      const size_t od = ActQ8_K::off_d(n), om = ActQ8_K::off_m(n);
      __m256 acc0[T], accm0[T], acc1[T], accm1[T];
      for (int t = 0; t < T; ++t) acc0[t] = accm0[t] = acc1[t] = accm1[t] = _mm256_setzero_ps();
      if constexpr (T == 1) {
        if (valid > 8) {
          __m256 acc[2] = {acc0[0], acc1[0]}, accm[2] = {accm0[0], accm1[0]};
          const uint8_t* next_small = next_small_planes<L>(g, n);
          for (int64_t s = 0; s < nbk; ++s) {
            prefetch_next_small<L>(next_small, s);
            superblock_both(g, nbk, s, act, od, om, acc, accm);
          }
          store_half(y, 0, _mm256_sub_ps(acc[0], accm[0]), valid);
          store_half(y, 1, _mm256_sub_ps(acc[1], accm[1]), valid);
          return;
        }
      }
      // Several tokens, or one half: a pass per half (both halves' accumulators at once spill).
      run_halves<L, false, T == 1>(g, n, nbk, valid, [&](int64_t s, int h) __attribute__((always_inline)) {
        if (h == 0) superblock<T>(g, nbk, s, 0, act, as, od, om, acc0, accm0);
        else superblock<T>(g, nbk, s, 1, act, as, od, om, acc1, accm1);
      });
      for (int t = 0; t < T; ++t) {
        store_half(y + t * ys, 0, _mm256_sub_ps(acc0[t], accm0[t]), valid);
        if (valid > 8) store_half(y + t * ys, 1, _mm256_sub_ps(acc1[t], accm1[t]), valid);
      }
    }
  }
};

// Calls f(std::integral_constant<int, C>) for the four chunks C of a part in order, so that
// each chunk's shifts are immediates.
template <typename F>
__attribute__((always_inline)) inline void for_chunks(F&& f) {
  f(std::integral_constant<int, 0>{});
  f(std::integral_constant<int, 1>{});
  f(std::integral_constant<int, 2>{});
  f(std::integral_constant<int, 3>{});
}

// ---- packed q6_K (layout K6TripletLayout): the AVX-512 kernel's arithmetic (KQ6_K there,
// llama.cpp's q6_K vec_dot order: eight int lanes per super-block, each scaled by its
// 16-element group, the offset of 32 taken per lane) on 8-row halves. The loops over several
// tokens run chunk by chunk (c outer, the eight 32-element parts inside), so that only the two
// int lanes of chunk c live in registers; the order of the integer sums does not matter and
// the float operations are unchanged.
struct KQ6Avx2 {
  using L = K6TripletLayout;
  static constexpr int kMaxT = 4;

  // Group grp's int8 scales of the half's 8 rows.
  static __m128i group_scales(const uint8_t* g, int64_t nbk, int64_t s, int grp, int h) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(g + L::off_sc(nbk) + s * 256 + 16 * grp + 8 * h));
  }
  // Scales a and b of each row as an int16 pair in its int32 lane.
  static __m256i scale_pairs(__m128i a, __m128i b) { return _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b)); }
  // Part j's triplet of half h: its low chunks, or with `high` its high ones.
  static const uint8_t* triplet(const uint8_t* g, int64_t s, int j, int h, bool high) { return g + ((s * 8 + j) * 6 + 3 * high) * 64 + 32 * h; }
  // Chunk C's levels (0..63) from a triplet's three vectors b (see K6TripletLayout). The masked
  // top bits shift within their bytes, so the 16-bit shifts bring nothing in from the next one.
  template <int C>
  __attribute__((always_inline)) static inline __m256i levels(const __m256i (&b)[3]) {
    if constexpr (C < 3) {
      return _mm256_and_si256(b[C], _mm256_set1_epi8(0x3F));
    } else {
      const __m256i top = _mm256_set1_epi8(char(0xC0));
      __m256i v = _mm256_srli_epi16(_mm256_and_si256(b[0], top), 2);
      v = _mm256_srli_epi16(_mm256_or_si256(v, _mm256_and_si256(b[1], top)), 2);
      return _mm256_srli_epi16(_mm256_or_si256(v, _mm256_and_si256(b[2], top)), 2);
    }
  }
  static void load_triplet(const uint8_t* p, __m256i (&b)[3]) {
    for (int k = 0; k < 3; ++k) b[k] = load256(p + 64 * k);
  }
  // One token (kFar) asks for the far lines too, though the layout streams nearly as one plane:
  // a layer-sized matrix (5632 x 2048, 40 in turn, one thread) read 7% and 21% faster with them
  // than without in two runs, where prompts (groups from L2) lost the 10% the layout gives them.
  template <bool kFar>
  __attribute__((always_inline)) static inline void prefetch_part(const uint8_t* g, int64_t s, int j) {
    for (int k = 0; k < 6; ++k) prefetch_group_stream<L::kStreamStep, kFar>(g, (s * 8 + j) * 6 + k, kPackedPrefetchBytes);
  }

  // Super-block s of half h (rows 8h..8h+7) added into the eight lane accumulators acc.
  template <int T>
  __attribute__((always_inline)) static inline void superblock(const uint8_t* g, int64_t nbk, int64_t s, int h, const uint8_t* act, size_t as,
                                                                size_t od, size_t og, __m256 (&acc)[T][8]) {
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 32 + 16 * h)));
    __m256 d[T];
    for (int t = 0; t < T; ++t) d[t] = _mm256_mul_ps(dv, _mm256_set1_ps(f32_at(act + t * as + od + 4 * s)));
    for_chunks([&](auto cc) __attribute__((always_inline)) {
      constexpr int c = decltype(cc)::value;
      __m256i lane_lo[T], lane_hi[T];
      for (int t = 0; t < T; ++t) lane_lo[t] = lane_hi[t] = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        // Each line is read from memory once, by half 0: it asks for the lines ahead.
        if (h == 0 && c == 0) prefetch_part<false>(g, s, j);
        __m256i lo[3], hi[3];
        load_triplet(triplet(g, s, j, h, false), lo);
        load_triplet(triplet(g, s, j, h, true), hi);
        const __m256i wl = levels<c>(lo), wh = levels<c>(hi);
        const __m128i s_lo = group_scales(g, nbk, s, 2 * j, h), s_hi = group_scales(g, nbk, s, 2 * j + 1, h);
        const __m256i sc_lo = scale_pairs(s_lo, s_lo), sc_hi = scale_pairs(s_hi, s_hi);
        for (int t = 0; t < T; ++t) {
          const uint8_t* a = act + t * as + s * kQK_K + 32 * j;
          lane_lo[t] = _mm256_add_epi32(lane_lo[t], _mm256_madd_epi16(_mm256_maddubs_epi16(wl, _mm256_set1_epi32(int32_t(load_u32(a + 4 * c)))), sc_lo));
          lane_hi[t] = _mm256_add_epi32(lane_hi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(wh, _mm256_set1_epi32(int32_t(load_u32(a + 16 + 4 * c)))), sc_hi));
        }
      }
      offset_and_fma(g, nbk, s, h, act, as, og, c, d, lane_lo, lane_hi, acc);
    });
  }

  // The offset of 32 of lanes c and 4 + c of T tokens, then their floats fma'd into acc.
  template <int T>
  __attribute__((always_inline)) static inline void offset_and_fma(const uint8_t* g, int64_t nbk, int64_t s, int h, const uint8_t* act, size_t as,
                                                                    size_t og, int c, const __m256 (&d)[T], const __m256i (&lane_lo)[T],
                                                                    const __m256i (&lane_hi)[T], __m256 (&acc)[T][8]) {
    const __m256i sp_lo = scale_pairs(group_scales(g, nbk, s, 2 * c, h), group_scales(g, nbk, s, 2 * c + 1, h));
    const __m256i sp_hi = scale_pairs(group_scales(g, nbk, s, 2 * (4 + c), h), group_scales(g, nbk, s, 2 * (4 + c) + 1, h));
    for (int t = 0; t < T; ++t) {
      const uint8_t* gs = act + t * as + og + 32 * s;
      const __m256i il = _mm256_sub_epi32(lane_lo[t], _mm256_slli_epi32(_mm256_madd_epi16(sp_lo, _mm256_set1_epi32(int32_t(load_u32(gs + 4 * c)))), 5));
      const __m256i ih = _mm256_sub_epi32(lane_hi[t], _mm256_slli_epi32(_mm256_madd_epi16(sp_hi, _mm256_set1_epi32(int32_t(load_u32(gs + 4 * (4 + c))))), 5));
      acc[t][c] = _mm256_fmadd_ps(d[t], _mm256_cvtepi32_ps(il), acc[t][c]);
      acc[t][4 + c] = _mm256_fmadd_ps(d[t], _mm256_cvtepi32_ps(ih), acc[t][4 + c]);
    }
  }

  // One token (decode): part j outside and its four chunks inside, so that a part's triplets
  // and scales are loaded and widened once, not once per chunk; the lanes' integers are the
  // same sums as superblock's, added in another order (exact).
  __attribute__((always_inline)) static inline void superblock_one(const uint8_t* g, int64_t nbk, int64_t s, int h, const uint8_t* act,
                                                                    size_t od, size_t og, __m256 (&acc)[1][8]) {
    const __m256 d[1] = {_mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 32 + 16 * h))),
                                       _mm256_set1_ps(f32_at(act + od + 4 * s)))};
    __m256i lane_lo[4][1], lane_hi[4][1];
    for (int c = 0; c < 4; ++c) lane_lo[c][0] = lane_hi[c][0] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      if (h == 0) prefetch_part<true>(g, s, j);
      __m256i lo[3], hi[3];
      load_triplet(triplet(g, s, j, h, false), lo);
      load_triplet(triplet(g, s, j, h, true), hi);
      const __m128i s_lo = group_scales(g, nbk, s, 2 * j, h), s_hi = group_scales(g, nbk, s, 2 * j + 1, h);
      const __m256i sc_lo = scale_pairs(s_lo, s_lo), sc_hi = scale_pairs(s_hi, s_hi);
      const uint8_t* a = act + s * kQK_K + 32 * j;
      for_chunks([&](auto cc) __attribute__((always_inline)) {
        constexpr int c = decltype(cc)::value;
        lane_lo[c][0] = _mm256_add_epi32(lane_lo[c][0], _mm256_madd_epi16(_mm256_maddubs_epi16(levels<c>(lo), _mm256_set1_epi32(int32_t(load_u32(a + 4 * c)))), sc_lo));
        lane_hi[c][0] = _mm256_add_epi32(lane_hi[c][0], _mm256_madd_epi16(_mm256_maddubs_epi16(levels<c>(hi), _mm256_set1_epi32(int32_t(load_u32(a + 16 + 4 * c)))), sc_hi));
      });
    }
    for (int c = 0; c < 4; ++c) offset_and_fma<1>(g, nbk, s, h, act, 0, og, c, d, lane_lo[c], lane_hi[c], acc);
  }

  // Both halves interleaved for any number of tokens (see run_halves).
  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n), og = ActQ8_K::off_g(n);
    __m256 acc0[T][8], acc1[T][8];
    for (int t = 0; t < T; ++t)
      for (int k = 0; k < 8; ++k) acc0[t][k] = acc1[t][k] = _mm256_setzero_ps();
    run_halves<L, true, T == 1>(g, n, nbk, valid, [&](int64_t s, int h) __attribute__((always_inline)) {
      if constexpr (T == 1) {
        if (h == 0) superblock_one(g, nbk, s, 0, act, od, og, acc0);
        else superblock_one(g, nbk, s, 1, act, od, og, acc1);
      } else {
        if (h == 0) superblock<T>(g, nbk, s, 0, act, as, od, og, acc0);
        else superblock<T>(g, nbk, s, 1, act, as, od, og, acc1);
      }
    });
    for (int t = 0; t < T; ++t) {
      store_half(y + t * ys, 0, lanes_sum(acc0[t]), valid);
      if (valid > 8) store_half(y + t * ys, 1, lanes_sum(acc1[t]), valid);
    }
  }
};

// ---- packed q4_0 (layout Q4Layout<false, false>): the AVX-512 kernel's arithmetic (KQ4's
// tile_blocks there, llama.cpp's repacked q4_0 order: a block's integer dot whole, offset
// included, then one fma). The activations (ActQ8_0 without lanes) hold this file's q8_0
// quants, their fp16 d as a float and each block's sum.
void quantize_act_q8_0_sums_avx2(const float* x, int64_t n, uint8_t* act) {
  const int64_t nb = n / kQK;
  float* d = reinterpret_cast<float*>(act + ActQ8_0::off_d(n));
  int32_t* sum = reinterpret_cast<int32_t*>(act + ActQ8_0::off_s(n));
  for (int64_t b = 0; b < nb; ++b) {
    BlockQ8_0 q;
    quantize_row_q8_0_avx2(x + b * kQK, &q, kQK);
    std::memcpy(act + b * kQK, q.qs, kQK);
    d[b] = _cvtsh_ss(q.d);
    sum[b] = hsum_i32(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), load256(q.qs)), _mm256_set1_epi16(1)));
  }
}

struct KQ4_0Avx2 {
  using L = Q4Layout<false, false>;
  static constexpr int kMaxT = 4;

  // Block b of half h (rows 8h..8h+7) added into acc.
  template <int T>
  __attribute__((always_inline)) static inline void block(const uint8_t* g, int64_t nb, int64_t b, int h, const uint8_t* act, size_t as,
                                                           size_t od, size_t os, __m256 (&acc)[T]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    // Four vectors' products of 4-bit levels and int8 quants fit int16: 8 * 2 * 15 * 127 < 2^15.
    DotAcc sum[T];
    for (int i = 0; i < 4; ++i) {
      const uint8_t* line = g + (b * 4 + i) * 64;
      if (h == 0) prefetch_group_stream<L::kStreamStep>(g, b * 4 + i, kPackedPrefetchBytes);
      const __m256i v = load256(line + 32 * h);
      const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      for (int t = 0; t < T; ++t) {
        const uint8_t* a = act + t * as + b * kQK;
        int32_t a_lo, a_hi;
        std::memcpy(&a_lo, a + 4 * i, 4);
        std::memcpy(&a_hi, a + 16 + 4 * i, 4);
        sum[t].add(lo, _mm256_set1_epi32(a_lo));
        sum[t].add(hi, _mm256_set1_epi32(a_hi));
      }
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nb) + b * 32 + 16 * h)));
    for (int t = 0; t < T; ++t) {
      const uint8_t* at = act + t * as;
      const __m256i ia = _mm256_add_epi32(sum[t].sums(), _mm256_set1_epi32(-8 * reinterpret_cast<const int32_t*>(at + os)[b]));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(dw, _mm256_set1_ps(reinterpret_cast<const float*>(at + od)[b])), acc[t]);
    }
  }

  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    block_tile<KQ4_0Avx2, T>(g, n, act, as, y, ys, valid);
  }
};

// ---- packed mxfp4 (Mxfp4Layout): KQ4_0Avx2's arithmetic with levels from kMxfp4Levels (the
// AVX-512 kernel's KMxfp4). Levels reach 24, so a block's sixteen products per int16 lane could
// overflow (16 * 24 * 127 > 2^15): each half of the block (two vectors) is widened on its own.
struct KMxfp4Avx2 {
  using L = Mxfp4Layout;
  static constexpr int kMaxT = 4;

  // Eight exponents (rows 8h..8h+7 of block b) as the floats e8m0_half gives; the subnormal
  // scales of e < 2 (weights below 2^-124) take a branch that is almost never taken.
  __attribute__((always_inline)) static inline __m256 scales(const uint8_t* e) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(e)));
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(v, _mm256_set1_epi32(1)), 23);
    const __m256i tiny = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), v);
    if (__builtin_expect(_mm256_movemask_epi8(tiny) == 0, 1)) return _mm256_castsi256_ps(normal);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), v), tiny));
  }

  template <int T>
  __attribute__((always_inline)) static inline void block(const uint8_t* g, int64_t nb, int64_t b, int h, const uint8_t* act, size_t as,
                                                           size_t od, size_t os, __m256 (&acc)[T]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kMxfp4Levels)));
    __m256i sum32[T];
    for (int t = 0; t < T; ++t) sum32[t] = _mm256_set1_epi32(-kMxfp4Offset * reinterpret_cast<const int32_t*>(act + t * as + os)[b]);
    for (int pair = 0; pair < 2; ++pair) {
      DotAcc sum[T];
      for (int i = 2 * pair; i < 2 * pair + 2; ++i) {
        const uint8_t* line = g + (b * 4 + i) * 64;
        if (h == 0) prefetch_group_stream<L::kStreamStep>(g, b * 4 + i, kPackedPrefetchBytes);
        const __m256i v = load256(line + 32 * h);
        const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, m4));
        const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
        for (int t = 0; t < T; ++t) {
          const uint8_t* a = act + t * as + b * kQK;
          int32_t a_lo, a_hi;
          std::memcpy(&a_lo, a + 4 * i, 4);
          std::memcpy(&a_hi, a + 16 + 4 * i, 4);
          sum[t].add(lo, _mm256_set1_epi32(a_lo));
          sum[t].add(hi, _mm256_set1_epi32(a_hi));
        }
      }
      for (int t = 0; t < T; ++t) sum32[t] = _mm256_add_epi32(sum32[t], sum[t].sums());
    }
    const __m256 dw = scales(g + L::off_e(nb) + b * G + 8 * h);
    for (int t = 0; t < T; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum32[t]), _mm256_mul_ps(dw, _mm256_set1_ps(reinterpret_cast<const float*>(act + t * as + od)[b])), acc[t]);
  }

  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    block_tile<KMxfp4Avx2, T>(g, n, act, as, y, ys, valid);
  }
};

// ---- packed q5_0, q4_1, q5_1 (layouts Q4Layout<kHigh, kMin>): the AVX-512 kernel's
// arithmetic (KQ4's tile_lanes there, llama.cpp's eight lanes per row: vector i's low nibbles
// are lane i, its high ones lane 4 + i). q5_0 takes its offset of 16 from the activation's
// lane plane; q4_1 and q5_1 add m * s per block in a separate accumulator.

// q5_0's activations: as quantize_act_q8_0_sums_avx2, plus each lane's sum times -16.
void quantize_act_q8_0_lanes_avx2(const float* x, int64_t n, uint8_t* act) {
  quantize_act_q8_0_sums_avx2(x, n, act);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const __m256i lane = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), load256(act + b * kQK)), _mm256_set1_epi16(1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(act + ActQ8_0::off_l(n) + 32 * b), _mm256_mullo_epi32(lane, _mm256_set1_epi32(-16)));
  }
}

// q4_1's and q5_1's (ActQ8_1 = ActQ8_0's layout): llama.cpp's q8_1 quants, d and s as floats.
void quantize_act_q8_1_packed_avx2(const float* x, int64_t n, uint8_t* act) {
  float* d = reinterpret_cast<float*>(act + ActQ8_0::off_d(n));
  float* sum = reinterpret_cast<float*>(act + ActQ8_0::off_s(n));
  for (int64_t b = 0; b < n / kQK; ++b) {
    BlockQ8_1 q;
    quantize_row_q8_1_avx2(x + b * kQK, &q, kQK);
    std::memcpy(act + b * kQK, q.qs, kQK);
    d[b] = _cvtsh_ss(q.d);
    sum[b] = _cvtsh_ss(q.s);
  }
}

// Q4Layout<kHigh, kMin>'s pack, with q5_0's and q5_1's fifth bits sliced for AVX2.
template <bool kHigh, bool kMin>
void pack_q4_avx2(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
  Q4Layout<kHigh, kMin>::pack(src, rb, n_rows, n, dst);
  if (kHigh) slice_fifth_bits(dst + Q4Layout<kHigh, kMin>::off_bits(n / kQK), n / kQK);
}

template <bool kHigh, bool kMin>
struct KQ4LanesAvx2 {
  using L = Q4Layout<kHigh, kMin>;
  static constexpr int kMaxT = 2;

  // Block b of half h (rows 8h..8h+7) added into the eight lane accumulators acc (and accm).
  template <int T>
  __attribute__((always_inline)) static inline void block(const uint8_t* g, int64_t nb, int64_t b, int h, const uint8_t* act, size_t as,
                                                           int64_t n, __m256 (&acc)[T][8], __m256 (&accm)[T]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i slice = kHigh ? load256(g + L::off_bits(nb) + b * 64 + 32 * h) : _mm256_setzero_si256();
    const size_t od = ActQ8_0::off_d(n), os = ActQ8_0::off_s(n), ol = ActQ8_0::off_l(n);
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nb) + b * 32 + 16 * h)));
    __m256 d[T];
    for (int t = 0; t < T; ++t) d[t] = _mm256_mul_ps(dw, _mm256_set1_ps(reinterpret_cast<const float*>(act + t * as + od)[b]));
    for (int i = 0; i < 4; ++i) {
      const uint8_t* line = g + (b * 4 + i) * 64;
      if (h == 0) prefetch_group_stream<L::kStreamStep>(g, b * 4 + i, kPackedPrefetchBytes);
      const __m256i v = load256(line + 32 * h);
      __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      if constexpr (kHigh) {
        lo = _mm256_or_si256(lo, fifth_bits(slice, 2 * i));
        hi = _mm256_or_si256(hi, fifth_bits(slice, 2 * i + 1));
      }
      for (int t = 0; t < T; ++t) {
        const uint8_t* at = act + t * as;
        int32_t a_lo, a_hi;
        std::memcpy(&a_lo, at + b * kQK + 4 * i, 4);
        std::memcpy(&a_hi, at + b * kQK + 16 + 4 * i, 4);
        // q5_0's lane offsets start the sums (q4_1, q5_1: zero).
        const int32_t* lanes = reinterpret_cast<const int32_t*>(at + ol + 32 * b);
        const __m256i dl = dot_u8i8_add(kMin ? _mm256_setzero_si256() : _mm256_set1_epi32(lanes[i]), lo, _mm256_set1_epi32(a_lo));
        const __m256i dh = dot_u8i8_add(kMin ? _mm256_setzero_si256() : _mm256_set1_epi32(lanes[4 + i]), hi, _mm256_set1_epi32(a_hi));
        acc[t][i] = _mm256_fmadd_ps(d[t], _mm256_cvtepi32_ps(dl), acc[t][i]);
        acc[t][4 + i] = _mm256_fmadd_ps(d[t], _mm256_cvtepi32_ps(dh), acc[t][4 + i]);
      }
    }
    if constexpr (kMin) {
      const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_m(nb) + b * 32 + 16 * h)));
      for (int t = 0; t < T; ++t) accm[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(reinterpret_cast<const float*>(act + t * as + os)[b]), accm[t]);
    }
  }

  // One token: both halves interleaved; several: a pass per half (see run_halves).
  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nb = n / kQK;
    __m256 acc0[T][8], acc1[T][8], accm0[T], accm1[T];
    for (int t = 0; t < T; ++t) {
      accm0[t] = accm1[t] = _mm256_setzero_ps();
      for (int k = 0; k < 8; ++k) acc0[t][k] = acc1[t][k] = _mm256_setzero_ps();
    }
    run_halves<L, T == 1, T == 1>(g, n, nb, valid, [&](int64_t b, int h) __attribute__((always_inline)) {
      if (h == 0) block<T>(g, nb, b, 0, act, as, n, acc0, accm0);
      else block<T>(g, nb, b, 1, act, as, n, acc1, accm1);
    });
    for (int t = 0; t < T; ++t) {
      store_half(y + t * ys, 0, kMin ? _mm256_add_ps(lanes_sum(acc0[t]), accm0[t]) : lanes_sum(acc0[t]), valid);
      if (valid > 8) store_half(y + t * ys, 1, kMin ? _mm256_add_ps(lanes_sum(acc1[t]), accm1[t]) : lanes_sum(acc1[t]), valid);
    }
  }
};

// ---- packed q8_0 (layout Q8_0Layout: sign bits flipped, 16 rows per 64-byte vector): the
// AVX-512 kernel's arithmetic (KQ8_0 there, llama.cpp's eight lanes per row) on 8-row halves.
// The activations stay in llama.cpp's q8_0 blocks (this file's quantize_row_q8_0_avx2), and
// the weights get their sign back so that VPMADDUBSW can take |q| against a with q's sign
// (both within +-127: no saturation), the integer dot the AVX-512 kernel gets with an offset.
size_t act_bytes_q8_0_avx2(int64_t n) { return round64(size_t(n / kQK) * sizeof(BlockQ8_0)); }
void quantize_act_q8_0_avx2(const float* x, int64_t n, uint8_t* act) { quantize_row_q8_0_avx2(x, act, n); }

struct KQ8_0Avx2 {
  static constexpr int kMaxT = 2;

  // Block b of half h (rows 8h..8h+7) added into the eight lane accumulators acc.
  template <int T>
  __attribute__((always_inline)) static inline void block(const uint8_t* g, const uint8_t* sc, int64_t b, int h, const uint8_t* act, size_t as,
                                                           __m256 (&acc)[T][8]) {
    const __m256i flip = _mm256_set1_epi8(char(0x80));
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + b * 32 + 16 * h)));
    __m256 d[T];
    for (int t = 0; t < T; ++t) d[t] = _mm256_mul_ps(dw, _mm256_set1_ps(f16_at(act + t * as + b * sizeof(BlockQ8_0))));
    const uint8_t* wq = g + b * 512;
    for (int c = 0; c < 8; ++c) {
      if (h == 0) prefetch_group_stream<Q8_0Layout::kStreamStep>(g, b * 8 + c, kPackedPrefetchBytes);
      const __m256i q = _mm256_xor_si256(load256(wq + 64 * c + 32 * h), flip);
      const __m256i aq = _mm256_sign_epi8(q, q);
      for (int t = 0; t < T; ++t) {
        int32_t a4;
        std::memcpy(&a4, act + t * as + b * sizeof(BlockQ8_0) + 2 + 4 * c, 4);
        const __m256i dot = dot_u8i8_add(_mm256_setzero_si256(), aq, _mm256_sign_epi8(_mm256_set1_epi32(a4), q));
        acc[t][c] = _mm256_fmadd_ps(d[t], _mm256_cvtepi32_ps(dot), acc[t][c]);
      }
    }
  }

  // Both halves interleaved for any number of tokens (see run_halves).
  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nb = n / kQK;
    const uint8_t* sc = g + nb * 512;
    __m256 acc0[T][8], acc1[T][8];
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < 8; ++c) acc0[t][c] = acc1[t][c] = _mm256_setzero_ps();
    run_halves<Q8_0Layout, true, T == 1>(g, n, nb, valid, [&](int64_t b, int h) __attribute__((always_inline)) {
      if (h == 0) block<T>(g, sc, b, 0, act, as, acc0);
      else block<T>(g, sc, b, 1, act, as, acc1);
    });
    for (int t = 0; t < T; ++t) {
      store_half(y + t * ys, 0, lanes_sum(acc0[t]), valid);
      if (valid > 8) store_half(y + t * ys, 1, lanes_sum(acc1[t]), valid);
    }
  }
};

// ---- packed q3_K and iq4_xs (layouts Q3KTripletLayout, IQ4XSLayout): the AVX-512 kernel's
// arithmetic (KLanes there, llama.cpp's vec_dot order for both: eight int lanes per
// super-block, lane c < 4 the low chunk c of every 32-element part and lane 4 + c the high
// one, each times its part's or 16-element group's scale; one fma of each lane by d per
// super-block, lanes_sum at the end) on 8-row halves. The integers are the per-row vec_dot's
// (lanes_dot): iq4_xs takes VPMADDUBSW of |level| against the activations with the level's
// sign (|levels| <= 127, activations within +-127, so no int16 pair saturates), then VPMADDWD
// by the scale pairs, and so does q3_K for several tokens. For one token, q3_K's levels plus 4
// (0..7) go to VPMADDUBSW as they are, and each int16 pair gets 4 times its two activations'
// sum back off before the scale (offset_pairs): the same pairs, one operation fewer per
// vector (decode -6%; with more tokens the offsets' loads and subtractions cost more than the
// shared operation saves). A Levels policy gives the scale pairs and a chunk's levels (signed,
// or with kPlus4 and where the type has kOffset, plus 4).

// Eight int8 values per row (one 16-byte half of a 16-row plane, rh = 0 or 1) as (v, v) int16
// pairs in each row's int32 lane.
inline __m256i row_pairs_i8(__m128i v16, int rh) {
  return _mm256_cvtepi8_epi16(rh == 0 ? _mm_unpacklo_epi8(v16, v16) : _mm_unpackhi_epi8(v16, v16));
}

// q3_K from Q3KTripletLayout (the AVX-512 kernel's Q3KLayout took twice the operations to
// decode; one token's 5632 x 2048 matvec 4-5% faster, the bits unchanged).
struct Q3KLevelsAvx2 {
  using L = Q3KTripletLayout;
  static constexpr int kVectorsPerPart = 3;  // quant vectors (prefetch_group_stream's walk)
  static constexpr bool kOffset = true;
  static constexpr int kMaxT = 4;
  static constexpr bool kLaneAtATime = false;

  // sp[rh][grp]: group grp's scale minus 32 of rows 8rh..8rh+7, as (s, s) pairs. Groups 2k and
  // 2k + 1 take their low nibbles from planes 2k % 8 and 2k % 8 + 1 (nibble k / 4), their top
  // bits from planes 8 + 2k % 4 and 9 + 2k % 4 (bits 2(k / 2)): one 32-byte load each.
  __attribute__((always_inline)) static inline void scale_pairs(const uint8_t* g, int64_t nbk, int64_t s, __m256i (&sp)[2][16]) {
    const uint8_t* sc = g + L::off_sc(nbk) + s * 192;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30), k32 = _mm256_set1_epi8(32);
    const __m256i top[2] = {load256(sc + 128), load256(sc + 160)};
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      const __m256i lv = load256(sc + 16 * (2 * k % 8));
      const __m256i low = _mm256_and_si256(k < 4 ? lv : _mm256_srli_epi16(lv, 4), m4);
      const __m256i tv = top[k % 2];
      __m256i high;
      switch (k / 2) {
        case 0: high = _mm256_slli_epi16(tv, 4); break;
        case 1: high = _mm256_slli_epi16(tv, 2); break;
        case 2: high = tv; break;
        default: high = _mm256_srli_epi16(tv, 2); break;
      }
      const __m256i s8 = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_and_si256(high, m30)), k32);
      const __m128i s_lo = _mm256_castsi256_si128(s8), s_hi = _mm256_extracti128_si256(s8, 1);
      for (int rh = 0; rh < 2; ++rh) {
        sp[rh][2 * k] = row_pairs_i8(s_lo, rh);
        sp[rh][2 * k + 1] = row_pairs_i8(s_hi, rh);
      }
    }
  }

  struct Part {
    __m256i b0, b1, b2;
  };
  __attribute__((always_inline)) static inline Part part(const uint8_t* g, int64_t, int64_t s, int p, int rh) {
    const uint8_t* v = g + (s * 8 + p) * 192 + 32 * rh;
    return {load256(v), load256(v + 64), load256(v + 128)};
  }
  // Chunk C's levels plus 4 (W_C low, W_4+C high; see the layout), minus 4 unless kPlus4. The
  // 16-bit shifts bring the next byte's bits in only above the mask.
  template <int C, bool kPlus4>
  __attribute__((always_inline)) static inline void chunk(const Part& pt, __m256i* w_lo, __m256i* w_hi) {
    const __m256i m7 = _mm256_set1_epi8(7), m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    const __m256i& lo_src = C < 2 ? pt.b0 : pt.b1;
    __m256i lo, hi;
    if constexpr (C % 2 == 0) lo = _mm256_and_si256(lo_src, m7);
    else lo = _mm256_and_si256(_mm256_srli_epi16(lo_src, 3), m7);
    if constexpr (C == 0) hi = _mm256_and_si256(pt.b2, m7);
    else if constexpr (C == 1) hi = _mm256_and_si256(_mm256_srli_epi16(pt.b2, 3), m7);
    else
      hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(C == 2 ? pt.b0 : pt.b1, 6), m3), _mm256_and_si256(_mm256_srli_epi16(pt.b2, C == 2 ? 4 : 5), four));
    if constexpr (kPlus4) {
      *w_lo = lo;
      *w_hi = hi;
    } else {
      *w_lo = _mm256_sub_epi8(lo, four);
      *w_hi = _mm256_sub_epi8(hi, four);
    }
  }
};

struct IQ4XSLevelsAvx2 {
  using L = IQ4XSLayout;
  static constexpr int kVectorsPerPart = 4;
  static constexpr bool kOffset = false;
  // Tiles of up to 8 tokens, one lane of each token in registers at a time (a chunk's low or
  // high nibbles through the grid: two operations more per vector, shared by the tile's tokens).
  static constexpr int kMaxT = 8;
  static constexpr bool kLaneAtATime = true;

  // sp[rh][2p] = sp[rh][2p + 1]: part p's scale minus 32 of rows 8rh..8rh+7, as (s, s) pairs.
  __attribute__((always_inline)) static inline void scale_pairs(const uint8_t* g, int64_t nbk, int64_t s, __m256i (&sp)[2][16]) {
    const __m256i sh = load256(g + L::off_sh(nbk) + s * 32);  // 16 rows' scales_h
    const __m256i m3 = _mm256_set1_epi16(3), k32 = _mm256_set1_epi16(32);
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      const __m128i sl = _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_sl(nbk) + s * 64 + 16 * (p / 2)));
      const __m128i low = _mm_and_si128(p % 2 == 0 ? sl : _mm_srli_epi16(sl, 4), _mm_set1_epi8(0x0F));
      const __m256i high = _mm256_and_si256(_mm256_srli_epi16(sh, 2 * p), m3);
      const __m256i s16 = _mm256_sub_epi16(_mm256_or_si256(_mm256_cvtepu8_epi16(low), _mm256_slli_epi16(high, 4)), k32);
      for (int rh = 0; rh < 2; ++rh) {
        const __m128i x = rh == 0 ? _mm256_castsi256_si128(s16) : _mm256_extracti128_si256(s16, 1);
        sp[rh][2 * p] = sp[rh][2 * p + 1] = _mm256_set_m128i(_mm_unpackhi_epi16(x, x), _mm_unpacklo_epi16(x, x));
      }
    }
  }

  struct Part {
    const uint8_t* v;  // chunk 0's vector, this half
  };
  __attribute__((always_inline)) static inline Part part(const uint8_t* g, int64_t, int64_t s, int p, int rh) {
    return {g + (s * 8 + p) * 256 + 32 * rh};
  }
  // Chunk C's codes through the grid (kIq4nlValues), low nibbles (kHigh false) or high.
  template <int C, bool kHigh>
  __attribute__((always_inline)) static inline __m256i chunk_half(const Part& pt) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
    const __m256i v = load256(pt.v + 64 * C);
    return _mm256_shuffle_epi8(grid, _mm256_and_si256(kHigh ? _mm256_srli_epi16(v, 4) : v, m4));
  }
  // Chunk C's codes through the grid (kIq4nlValues): low nibbles, then high.
  template <int C, bool>
  __attribute__((always_inline)) static inline void chunk(const Part& pt, __m256i* q_lo, __m256i* q_hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
    const __m256i v = load256(pt.v + 64 * C);
    *q_lo = _mm256_shuffle_epi8(grid, _mm256_and_si256(v, m4));
    *q_hi = _mm256_shuffle_epi8(grid, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
  }
};

// 4 (a_2j + a_2j+1) for the 128 pairs of a super-block's activations, as int16 in element
// order: the pairs of the four bytes at offset o of the activations are the four bytes at o.
__attribute__((always_inline)) inline void offset_pairs(const uint8_t* a, uint8_t (&out)[kQK_K]) {
  for (int k = 0; k < 8; ++k)
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + 32 * k), _mm256_maddubs_epi16(_mm256_set1_epi8(4), load256(a + 32 * k)));
}

template <typename Lv>
struct KLanesAvx2 {
  using L = typename Lv::L;
  static constexpr int kMaxT = Lv::kMaxT;

  // One token takes q3_K's levels plus 4 (see above).
  static constexpr bool kPlus4One = Lv::kOffset;

  // lane + the scaled pairs of chunk levels w against the activations at a (kPlus4: w plus 4,
  // the offset pairs at o); abs_w = |w| (signed levels only).
  template <bool kPlus4>
  __attribute__((always_inline)) static inline __m256i chunk_add(__m256i lane, __m256i abs_w, __m256i w, const uint8_t* a, const uint8_t* o,
                                                                  __m256i sc) {
    const __m256i av = _mm256_set1_epi32(int32_t(load_u32(a)));
    if constexpr (kPlus4) return madd16_add(lane, _mm256_sub_epi16(_mm256_maddubs_epi16(w, av), _mm256_set1_epi32(int32_t(load_u32(o)))), sc);
    else return signed_dot_add(lane, abs_w, w, av, sc);
  }
  template <bool kPlus4>
  static __m256i abs_levels(__m256i w) { return kPlus4 ? w : _mm256_sign_epi8(w, w); }

  __attribute__((always_inline)) static inline void prefetch_part(const uint8_t* g, int64_t s, int p) {
    for (int i = 0; i < Lv::kVectorsPerPart; ++i)
      prefetch_group_stream<L::kStreamStep>(g, (s * 8 + p) * Lv::kVectorsPerPart + i, kPackedPrefetchBytes);
  }
  static __m256 half_d(const uint8_t* g, int64_t nbk, int64_t s, int rh) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 32 + 16 * rh)));
  }

  // One token: part p outside, its four chunks inside, the eight int lanes in registers.
  __attribute__((always_inline)) static inline void superblock_one(const uint8_t* g, int64_t nbk, int64_t s, int rh, const uint8_t* act, size_t od,
                                                                    const uint8_t* off, const __m256i (&sp)[16], __m256 (&acc)[8]) {
    __m256i lane[8];
    for (int k = 0; k < 8; ++k) lane[k] = _mm256_setzero_si256();
    for (int p = 0; p < 8; ++p) {
      // Each line is read from memory once, by half 0: it asks for the lines ahead.
      if (rh == 0) prefetch_part(g, s, p);
      const typename Lv::Part pt = Lv::part(g, nbk, s, p, rh);
      const uint8_t* a = act + s * kQK_K + 32 * p;
      const uint8_t* o = off + 32 * p;
      for_chunks([&](auto cc) __attribute__((always_inline)) {
        constexpr int C = decltype(cc)::value;
        __m256i w_lo, w_hi;
        Lv::template chunk<C, kPlus4One>(pt, &w_lo, &w_hi);
        lane[C] = chunk_add<kPlus4One>(lane[C], abs_levels<kPlus4One>(w_lo), w_lo, a + 4 * C, o + 4 * C, sp[2 * p]);
        lane[4 + C] = chunk_add<kPlus4One>(lane[4 + C], abs_levels<kPlus4One>(w_hi), w_hi, a + 16 + 4 * C, o + 16 + 4 * C, sp[2 * p + 1]);
      });
    }
    const __m256 d = _mm256_mul_ps(half_d(g, nbk, s, rh), _mm256_set1_ps(f32_at(act + od + 4 * s)));
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lane[k]), acc[k]);
  }

  // Lane C + 4 kHigh of T tokens over the super-block's eight parts, fma'd into acc. Unrolled,
  // GCC kept the 8 T products of the parts on the stack to sum them as a tree (1.8x slower).
  template <int T, int C, bool kHigh>
  __attribute__((always_inline)) static inline void lane_at_a_time(const uint8_t* g, int64_t nbk, int64_t s, int rh, const uint8_t* act,
                                                                    size_t as, const __m256i (&sp)[16], const __m256 (&d)[T],
                                                                    __m256 (&acc)[T][8]) {
    constexpr int k = C + 4 * kHigh;
    __m256i lane[T];
    for (int t = 0; t < T; ++t) lane[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
    for (int p = 0; p < 8; ++p) {
      if (rh == 0 && k == 0) prefetch_part(g, s, p);
      const __m256i w = Lv::template chunk_half<C, kHigh>(Lv::part(g, nbk, s, p, rh));
      const __m256i abs_w = _mm256_sign_epi8(w, w);
      const uint8_t* a = act + s * kQK_K + 32 * p + 16 * kHigh + 4 * C;
      for (int t = 0; t < T; ++t)
        lane[t] = signed_dot_add(lane[t], abs_w, w, _mm256_set1_epi32(int32_t(load_u32(a + t * as))), sp[2 * p + kHigh]);
    }
    for (int t = 0; t < T; ++t) acc[t][k] = _mm256_fmadd_ps(d[t], _mm256_cvtepi32_ps(lane[t]), acc[t][k]);
  }

  // Several tokens: chunk C outside and the parts inside, so that only lanes C and 4 + C of
  // each token live in registers (the integers are superblock_one's, summed in another order).
  template <int T>
  __attribute__((always_inline)) static inline void superblock(const uint8_t* g, int64_t nbk, int64_t s, int rh, const uint8_t* act, size_t as,
                                                                size_t od, const __m256i (&sp)[16], __m256 (&acc)[T][8]) {
    const __m256 dv = half_d(g, nbk, s, rh);
    __m256 d[T];
    for (int t = 0; t < T; ++t) d[t] = _mm256_mul_ps(dv, _mm256_set1_ps(f32_at(act + t * as + od + 4 * s)));
    if constexpr (Lv::kLaneAtATime) {
      // Lane k = C (low nibbles) or 4 + C (high) of every token in registers: T lanes, not 2 T,
      // so 8 tokens fit. Each chunk vector is read twice, once per nibble.
      for_chunks([&](auto cc) __attribute__((always_inline)) {
        constexpr int C = decltype(cc)::value;
        lane_at_a_time<T, C, false>(g, nbk, s, rh, act, as, sp, d, acc);
        lane_at_a_time<T, C, true>(g, nbk, s, rh, act, as, sp, d, acc);
      });
    } else {
      for_chunks([&](auto cc) __attribute__((always_inline)) {
        constexpr int C = decltype(cc)::value;
        __m256i lane_lo[T], lane_hi[T];
        for (int t = 0; t < T; ++t) lane_lo[t] = lane_hi[t] = _mm256_setzero_si256();
        for (int p = 0; p < 8; ++p) {
          if (rh == 0 && C == 0) prefetch_part(g, s, p);
          __m256i w_lo, w_hi;
          Lv::template chunk<C, false>(Lv::part(g, nbk, s, p, rh), &w_lo, &w_hi);
          const __m256i abs_lo = _mm256_sign_epi8(w_lo, w_lo), abs_hi = _mm256_sign_epi8(w_hi, w_hi);
          for (int t = 0; t < T; ++t) {
            const uint8_t* a = act + t * as + s * kQK_K + 32 * p;
            lane_lo[t] = signed_dot_add(lane_lo[t], abs_lo, w_lo, _mm256_set1_epi32(int32_t(load_u32(a + 4 * C))), sp[2 * p]);
            lane_hi[t] = signed_dot_add(lane_hi[t], abs_hi, w_hi, _mm256_set1_epi32(int32_t(load_u32(a + 16 + 4 * C))), sp[2 * p + 1]);
          }
        }
        for (int t = 0; t < T; ++t) {
          acc[t][C] = _mm256_fmadd_ps(d[t], _mm256_cvtepi32_ps(lane_lo[t]), acc[t][C]);
          acc[t][4 + C] = _mm256_fmadd_ps(d[t], _mm256_cvtepi32_ps(lane_hi[t]), acc[t][4 + C]);
        }
      });
    }
  }

  // Both halves of each super-block in turn (see run_halves), its scales unpacked once for both.
  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n);
    __m256 acc0[T][8], acc1[T][8];
    for (int t = 0; t < T; ++t)
      for (int k = 0; k < 8; ++k) acc0[t][k] = acc1[t][k] = _mm256_setzero_ps();
    const uint8_t* next_small = T == 1 ? next_small_planes<L>(g, n) : nullptr;
    for (int64_t s = 0; s < nbk; ++s) {
      prefetch_next_small<L>(next_small, s);
      __m256i sp[2][16];
      Lv::scale_pairs(g, nbk, s, sp);
      if constexpr (T == 1) {
        alignas(32) uint8_t off[kQK_K];
        if constexpr (kPlus4One) offset_pairs(act + s * kQK_K, off);
        superblock_one(g, nbk, s, 0, act, od, off, sp[0], acc0[0]);
        if (valid > 8) superblock_one(g, nbk, s, 1, act, od, off, sp[1], acc1[0]);
      } else {
        superblock<T>(g, nbk, s, 0, act, as, od, sp[0], acc0);
        if (valid > 8) superblock<T>(g, nbk, s, 1, act, as, od, sp[1], acc1);
      }
    }
    for (int t = 0; t < T; ++t) {
      store_half(y + t * ys, 0, lanes_sum(acc0[t]), valid);
      if (valid > 8) store_half(y + t * ys, 1, lanes_sum(acc1[t]), valid);
    }
  }
};

// ---- packed q2_K (layout Q2KLayout): the AVX-512 kernel's arithmetic (KQ2_K there, llama.cpp's
// repacked q2_K order, as the per-row vec_dot: per super-block the whole scaled integer dot
// with one fma by d and the whole min term with one fma by dmin into a second accumulator,
// subtracted at the end) on 8-row halves. Levels 0..3 are unsigned: a part's four chunks of
// products gather in int16 (4 * 2 * 3 * 127 < 2^15) before its group scales.

// Products of unsigned levels and int8 activations gathered as VPMADDUBSW's int16 pairs, then
// scaled by VPMADDWD (VPDPWSSD with AVX-VNNI). One token's VPDPBUSD chains (DotAcc) would wait
// on their latency; its int16 adds do not.
struct Sum16 {
  __m256i v = _mm256_setzero_si256();
  void add(__m256i u, __m256i s) { v = _mm256_add_epi16(v, _mm256_maddubs_epi16(u, s)); }
  __m256i scaled_add(__m256i acc, __m256i sc_pair) const { return madd16_add(acc, v, sc_pair); }
};
// DotAcc with Sum16's interface (several tokens: VPDPBUSD's chains are independent).
struct DotAccScaled : DotAcc {
  __m256i scaled_add(__m256i acc, __m256i sc_pair) const { return _mm256_add_epi32(acc, scaled(sc_pair)); }
};

struct KQ2KAvx2 {
  using L = Q2KLayout;
  static constexpr int kMaxT = 4;

  // A super-block's scales for both halves: sc[rh][grp] as (s, s) pairs, mn[rh][k] the mins of
  // groups 2k and 2k + 1 as a pair (against the activation's gsum[k]).
  struct Scales {
    __m256i sc[2][16], mn[2][8];
  };
  __attribute__((always_inline)) static inline void scales(const uint8_t* g, int64_t nbk, int64_t s, Scales* out) {
    const uint8_t* scp = g + L::off_sc(nbk) + s * 256;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      const __m256i y = load256(scp + 32 * k);  // groups 2k and 2k + 1, rows 0..15 each
      const __m256i sc = _mm256_and_si256(y, m4), mn = _mm256_and_si256(_mm256_srli_epi16(y, 4), m4);
      const __m128i s0 = _mm256_castsi256_si128(sc), s1 = _mm256_extracti128_si256(sc, 1);
      const __m128i m0 = _mm256_castsi256_si128(mn), m1 = _mm256_extracti128_si256(mn, 1);
      for (int rh = 0; rh < 2; ++rh) {
        out->sc[rh][2 * k] = row_pairs_i8(s0, rh);
        out->sc[rh][2 * k + 1] = row_pairs_i8(s1, rh);
        out->mn[rh][k] = _mm256_cvtepu8_epi16(rh == 0 ? _mm_unpacklo_epi8(m0, m1) : _mm_unpackhi_epi8(m0, m1));
      }
    }
  }

  template <int T>
  __attribute__((always_inline)) static inline void superblock(const uint8_t* g, int64_t nbk, int64_t s, int rh, const uint8_t* act, size_t as,
                                                                size_t od, size_t og, const Scales& sc, __m256 (&acc)[T], __m256 (&accm)[T]) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i isum[T], imin[T];
    for (int t = 0; t < T; ++t) isum[t] = imin[t] = _mm256_setzero_si256();
    for (int p = 0; p < 8; ++p) {
      if (rh == 0) {
        prefetch_group_stream<L::kStreamStep>(g, (s * 8 + p) * 2, kPackedPrefetchBytes);
        prefetch_group_stream<L::kStreamStep>(g, (s * 8 + p) * 2 + 1, kPackedPrefetchBytes);
      }
      const uint8_t* lowp = g + (s * 8 + p) * 128 + 32 * rh;
      const __m256i v0 = load256(lowp), v1 = load256(lowp + 64);
      std::conditional_t<T == 1, Sum16, DotAccScaled> lo[T], hi[T];
      for_chunks([&](auto cc) __attribute__((always_inline)) {
        constexpr int C = decltype(cc)::value;
        const __m256i wl = _mm256_and_si256(C == 0 ? v0 : _mm256_srli_epi16(v0, 2 * C), m3);
        const __m256i wh = _mm256_and_si256(C == 0 ? v1 : _mm256_srli_epi16(v1, 2 * C), m3);
        for (int t = 0; t < T; ++t) {
          const uint8_t* a = act + t * as + s * kQK_K + 32 * p;
          lo[t].add(wl, _mm256_set1_epi32(int32_t(load_u32(a + 4 * C))));
          hi[t].add(wh, _mm256_set1_epi32(int32_t(load_u32(a + 16 + 4 * C))));
        }
      });
      for (int t = 0; t < T; ++t)
        isum[t] = hi[t].scaled_add(lo[t].scaled_add(isum[t], sc.sc[rh][2 * p]), sc.sc[rh][2 * p + 1]);
    }
    for (int k = 0; k < 8; ++k)
      for (int t = 0; t < T; ++t)
        imin[t] = madd16_add(imin[t], sc.mn[rh][k], _mm256_set1_epi32(int32_t(load_u32(act + t * as + og + 32 * s + 4 * k))));
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nbk) + s * 32 + 16 * rh)));
    const __m256 dminv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_dmin(nbk) + s * 32 + 16 * rh)));
    for (int t = 0; t < T; ++t) {
      const __m256 dy = _mm256_set1_ps(f32_at(act + t * as + od + 4 * s));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, dy), acc[t]);
      accm[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin[t]), _mm256_mul_ps(dminv, dy), accm[t]);
    }
  }

  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n), og = ActQ8_K::off_g(n);
    __m256 acc0[T], accm0[T], acc1[T], accm1[T];
    for (int t = 0; t < T; ++t) acc0[t] = accm0[t] = acc1[t] = accm1[t] = _mm256_setzero_ps();
    const uint8_t* next_small = T == 1 ? next_small_planes<L>(g, n) : nullptr;
    for (int64_t s = 0; s < nbk; ++s) {
      prefetch_next_small<L>(next_small, s);
      Scales sc;
      scales(g, nbk, s, &sc);
      superblock<T>(g, nbk, s, 0, act, as, od, og, sc, acc0, accm0);
      if (valid > 8) superblock<T>(g, nbk, s, 1, act, as, od, og, sc, acc1, accm1);
    }
    for (int t = 0; t < T; ++t) {
      store_half(y + t * ys, 0, _mm256_sub_ps(acc0[t], accm0[t]), valid);
      if (valid > 8) store_half(y + t * ys, 1, _mm256_sub_ps(acc1[t], accm1[t]), valid);
    }
  }
};

// ---- packed iq4_nl (layout Q4Layout<false, false>, as the AVX-512 kernel's KLut4<Iq4nlGrid>):
// llama.cpp's repacked order, as the per-row vec_dot (each block's integer dot whole, one fma
// by d). Without VNNI the codes go through the grid to signed levels and the products through
// the sign trick (VPMADDUBSW pairs of |levels| <= 127 fit int16; each is widened at once, as
// two would not); with AVX-VNNI the levels plus 128 (kIq4nlLevels) go to VPDPBUSD, which sums
// in int32, and 128 times the block sum comes back off: the same integers.
struct KIq4nlAvx2 {
  using L = Q4Layout<false, false>;
  static constexpr int kMaxT = 4;

  template <int T>
  __attribute__((always_inline)) static inline void block(const uint8_t* g, int64_t nb, int64_t b, int h, const uint8_t* act, size_t as,
                                                           size_t od, size_t os, __m256 (&acc)[T]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    // Low and high nibbles' sums apart (exact), two dependency chains per token.
    __m256i sum[T], sum_hi[T];
#if defined(TDM_AVX_VNNI)
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kIq4nlLevels)));
    for (int t = 0; t < T; ++t) sum[t] = _mm256_set1_epi32(-kIq4nlOffset * reinterpret_cast<const int32_t*>(act + t * as + os)[b]);
#else
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
    for (int t = 0; t < T; ++t) sum[t] = _mm256_setzero_si256();
#endif
    for (int t = 0; t < T; ++t) sum_hi[t] = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) {
      if (h == 0) prefetch_group_stream<L::kStreamStep>(g, b * 4 + i, kPackedPrefetchBytes);
      const __m256i v = load256(g + (b * 4 + i) * 64 + 32 * h);
      const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, m4));
      const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
#if !defined(TDM_AVX_VNNI)
      const __m256i abs_lo = _mm256_sign_epi8(lo, lo), abs_hi = _mm256_sign_epi8(hi, hi);
#endif
      for (int t = 0; t < T; ++t) {
        const uint8_t* a = act + t * as + b * kQK;
        const __m256i a_lo = _mm256_set1_epi32(int32_t(load_u32(a + 4 * i))), a_hi = _mm256_set1_epi32(int32_t(load_u32(a + 16 + 4 * i)));
#if defined(TDM_AVX_VNNI)
        sum[t] = _mm256_dpbusd_avx_epi32(sum[t], lo, a_lo);
        sum_hi[t] = _mm256_dpbusd_avx_epi32(sum_hi[t], hi, a_hi);
#else
        sum[t] = dot_u8i8_add(sum[t], abs_lo, _mm256_sign_epi8(a_lo, lo));
        sum_hi[t] = dot_u8i8_add(sum_hi[t], abs_hi, _mm256_sign_epi8(a_hi, hi));
#endif
      }
    }
    for (int t = 0; t < T; ++t) sum[t] = _mm256_add_epi32(sum[t], sum_hi[t]);
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_d(nb) + b * 32 + 16 * h)));
    for (int t = 0; t < T; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), _mm256_mul_ps(dw, _mm256_set1_ps(reinterpret_cast<const float*>(act + t * as + od)[b])), acc[t]);
  }

  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    block_tile<KIq4nlAvx2, T>(g, n, act, as, y, ys, valid);
  }
};

// ---- attention (kernels.h, AttnTask): 8 query rows per vector, as the AVX-512 version does
// with 16: Q transposed once per task, scores and the online softmax down the positions,
// then V added row by row.

// e^x: x = n ln2 + r, e^r by its Taylor series to r^7, 2^n built in the exponent bits.
inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440054690583e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // 2^n for n in [-126, 127]: (n + 127) << 23; below that the clamp already gives ~0.
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 two_n = _mm256_castsi256_ps(_mm256_max_epi32(e, _mm256_setzero_si256()));
  return _mm256_mul_ps(p, two_n);
}

// tanh(x) as tanh512 (kernels_avx512.cpp) computes it, 8 lanes at a time.
inline __m256 tanh256(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 a = _mm256_andnot_ps(sign, x);
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-1382.0f / 155925);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(62.0f / 2835));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-17.0f / 315));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.0f / 15));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.0f / 3));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, x2), x, x);
  const __m256 e = exp256(_mm256_add_ps(a, a));
  const __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
  const __m256 signed_big = _mm256_or_ps(big, _mm256_and_ps(x, sign));
  const __m256 y = _mm256_blendv_ps(signed_big, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.25f), _CMP_LT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

void scaled_tanh_avx2(const float* x, float* y, int64_t n, float in, float out) {
  const __m256 vin = _mm256_set1_ps(in), vout = _mm256_set1_ps(out);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(tanh256(_mm256_mul_ps(_mm256_loadu_ps(x + i), vin)), vout));
  if (i < n) {
    // The tail through the same lanes, so that an element's bits do not depend on where it sits.
    alignas(32) float t[8] = {};
    std::copy(x + i, x + n, t);
    _mm256_store_ps(t, _mm256_mul_ps(tanh256(_mm256_mul_ps(_mm256_load_ps(t), vin)), vout));
    std::copy(t, t + (n - i), y + i);
  }
}

// 8 q8_0 elements from e0 (a multiple of 8) of a row: float(q) * d.
inline __m256 load_q8_8(const uint8_t* row, int64_t e0) {
  const uint8_t* b = row + (e0 / kKvQ8Block) * kKvQ8BlockBytes;
  uint16_t h;
  std::memcpy(&h, b, 2);
  const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + e0 % kKvQ8Block));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(_cvtsh_ss(h)));
}

inline void widen_row_avx2(const void* src, AttnKv kv, int32_t d, float* dst) {
  int32_t e = 0;
  if (kv == AttnKv::q8_0) {
    for (; e < d; e += 8) _mm256_store_ps(dst + e, load_q8_8(static_cast<const uint8_t*>(src), e));
  } else if (kv == AttnKv::f16) {
    const uint16_t* h = static_cast<const uint16_t*>(src);
    for (; e + 8 <= d; e += 8) _mm256_store_ps(dst + e, load_f16x8(h + e));
    for (; e < d; ++e) dst[e] = _cvtsh_ss(h[e]);
  } else {
    const float* f = static_cast<const float*>(src);
    for (; e + 8 <= d; e += 8) _mm256_store_ps(dst + e, _mm256_loadu_ps(f + e));
    for (; e < d; ++e) dst[e] = f[e];
  }
  for (int32_t z = d; z % 8 != 0; ++z) dst[z] = 0.0f;
}

// The vertical kernel's pieces (as attention_avx512's, 8 rows a block): queries and scores
// stored block by block, block i's query element e at qt[i * 8 * dkp + e * 8 + lane] and its
// score for position j at st[i * 8 * kAttnTile + j * 8 + lane]. Scores of NB blocks against J
// positions at once: NB * J chains (at most 8 of the 16 registers).
template <int NB, int J>
inline void scores_blocks_avx2(const float* qt, const float* kf, int64_t dkp, int32_t dk, float scale, float* st) {
  __m256 acc[NB][J];
  for (int i = 0; i < NB; ++i)
    for (int j = 0; j < J; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int32_t e = 0; e < dk; ++e) {
    __m256 qv[NB];
    for (int i = 0; i < NB; ++i) qv[i] = _mm256_load_ps(qt + i * 8 * dkp + e * 8);
    for (int j = 0; j < J; ++j) {
      const __m256 kv = _mm256_broadcast_ss(kf + j * dkp + e);
      for (int i = 0; i < NB; ++i) acc[i][j] = _mm256_fmadd_ps(kv, qv[i], acc[i][j]);
    }
  }
  const __m256 sv = _mm256_set1_ps(scale);
  for (int i = 0; i < NB; ++i)
    for (int j = 0; j < J; ++j) _mm256_store_ps(st + i * 8 * kAttnTile + j * 8, _mm256_mul_ps(acc[i][j], sv));
}

template <int NB>
inline void scores_tile_avx2(const float* qt, const float* kf, int64_t nk, int64_t dkp, int32_t dk, float scale, float* st) {
  constexpr int J = 8 / NB;
  int64_t j = 0;
  for (; j + J <= nk; j += J) scores_blocks_avx2<NB, J>(qt, kf + j * dkp, dkp, dk, scale, st + j * 8);
  for (; j < nk; ++j) scores_blocks_avx2<NB, 1>(qt, kf + j * dkp, dkp, dk, scale, st + j * 8);
}

// acc rows r0..r0+RR-1 of a block (dvp floats apart), NC 8-float chunks from acc and vf (dvp
// floats apart) += sum_j p[j * 8 + r] * vf[j]: RR * NC chains (at most 8 registers).
template <int RR, int NC>
inline void values_chunks_avx2(const float* p, int64_t r0, int64_t nk, const float* vf, int64_t dvp, float* acc) {
  __m256 a[RR][NC];
  for (int r = 0; r < RR; ++r)
    for (int c = 0; c < NC; ++c) a[r][c] = _mm256_load_ps(acc + (r0 + r) * dvp + 8 * c);
  for (int64_t j = 0; j < nk; ++j) {
    __m256 v[NC];
    for (int c = 0; c < NC; ++c) v[c] = _mm256_load_ps(vf + j * dvp + 8 * c);
    for (int r = 0; r < RR; ++r) {
      const __m256 pr = _mm256_broadcast_ss(p + j * 8 + r0 + r);
      for (int c = 0; c < NC; ++c) a[r][c] = _mm256_fmadd_ps(pr, v[c], a[r][c]);
    }
  }
  for (int r = 0; r < RR; ++r)
    for (int c = 0; c < NC; ++c) _mm256_store_ps(acc + (r0 + r) * dvp + 8 * c, a[r][c]);
}

// acc rows r0..r0+RR-1 of a block (RR <= 2) += sum_j p[j * 8 + r] * vf[j], four chunks at a time.
template <int RR>
inline void values_rows_avx2(const float* p, int64_t r0, int64_t nk, const float* vf, int64_t dvp, float* acc) {
  constexpr int NC = 4;
  int64_t c0 = 0;
  for (; c0 + 8 * NC <= dvp; c0 += 8 * NC) values_chunks_avx2<RR, NC>(p, r0, nk, vf + c0, dvp, acc + c0);
  for (; c0 < dvp; c0 += 8) values_chunks_avx2<RR, 1>(p, r0, nk, vf + c0, dvp, acc + c0);
}

// ---- attention for a few query rows (decode, short chunks), one position per lane: the AVX2
// form of attention_few_rows_avx512 (see there), 8 positions per vector. A row gets the same
// bits here as from the vertical kernel below.
constexpr int64_t kFewRows = 8;

// r[i] (8 floats) becomes column i of the 8 x 8 matrix whose rows were r[0..7].
inline void transpose8(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  __m256 u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // u[4g + k] holds, in 128-bit lane L, column 4L + k of rows 4g..4g+3.
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
    r[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
  }
}

// 8 elements from e0 of a stored row as f32; e0 + 8 <= the row's length.
template <AttnKv KV>
inline __m256 load_kv8(const uint8_t* row, int64_t e0) {
  if constexpr (KV == AttnKv::q8_0) return load_q8_8(row, e0);
  else if constexpr (KV == AttnKv::f16) return load_f16x8(reinterpret_cast<const uint16_t*>(row) + e0);
  else return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + e0);
}

// The same for the last, partial 8 of a row of d elements (zeros past d; q8_0 rows have none).
template <AttnKv KV>
__attribute__((noinline)) __m256 load_kv8_tail(const uint8_t* row, int64_t e0, int32_t d) {
  alignas(32) float tail[8] = {};
  for (int64_t e = e0; e < d; ++e) {
    if constexpr (KV == AttnKv::f16) tail[e - e0] = _cvtsh_ss(reinterpret_cast<const uint16_t*>(row)[e]);
    else tail[e - e0] = reinterpret_cast<const float*>(row)[e];
  }
  return _mm256_load_ps(tail);
}

template <AttnKv KV>
inline __m256 load_kv8(const uint8_t* row, int64_t e0, int32_t d) {
  return e0 + 8 <= d ? load_kv8<KV>(row, e0) : e0 < d ? load_kv8_tail<KV>(row, e0, d) : _mm256_setzero_ps();
}

// The few-rows kernel transposes and scores a tile's positions kFewSub at a time: their K
// columns (16 KiB for 128-wide heads) then stay in L1 beside the scores, the accumulators and
// the queries, where a whole tile's (32 KiB) spilled to L2 between the transpose and the scores.
constexpr int64_t kFewSub = 32;

// kt[e * kFewSub + j] = K[j0 + sub + j][e] for j < ns; prefetches this tile's V rows and the next
// tile's K rows into L2 a few at a time as it goes (as transpose_k_tile in the AVX-512 file does).
template <AttnKv KV>
void transpose_k_sub_avx2(const AttnTask& a, const uint8_t* const* k_rows, const uint8_t* const* v_rows, int64_t nk,
                          const uint8_t* const* next_k_rows, int64_t n_next, int64_t sub, int64_t ns, int64_t dkp, float* kt) {
  // The block's 8 rows spread over its chunks: per_chunk rows each, from the first chunk on.
  const int64_t n_chunks = dkp / 8, per_chunk = (8 + n_chunks - 1) / n_chunks;
  for (int64_t s = sub; s < sub + ns; s += 8) {
    const int64_t nb = std::min<int64_t>(8, sub + ns - s);
    for (int64_t e0 = 0; e0 < dkp; e0 += 8) {
      const int64_t pf = s + e0 / 8 * per_chunk, pf_end = std::min(pf + per_chunk, s + 8);
      attn_prefetch_rows(v_rows, nk, pf, pf_end, a.v_row_bytes);
      attn_prefetch_rows(next_k_rows, n_next, pf, pf_end, a.k_row_bytes);
      __m256 r[8];
      if (nb == 8 && e0 + 8 <= a.dk) {
        for (int i = 0; i < 8; ++i) r[i] = load_kv8<KV>(k_rows[s + i], e0);
      } else {
        for (int i = 0; i < 8; ++i) r[i] = i < nb ? load_kv8<KV>(k_rows[s + i], e0, a.dk) : _mm256_setzero_ps();
      }
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_store_ps(kt + (e0 + i) * kFewSub + (s - sub), r[i]);
    }
  }
}

// p[r * kAttnTile + sub + j] = scale * q_r . K[j0 + sub + j] for RR rows from r0 and NS
// 8-position blocks from block s0 of the sub-tile, one FMA chain per lane down the head.
template <int RR, int NS>
inline void scores_few_avx2(const AttnTask& a, int64_t r0, int64_t sub, int64_t s0, const float* kt, float* p) {
  const float* q[RR];
  for (int r = 0; r < RR; ++r) q[r] = a.q + ((r0 + r) / a.group) * a.q_stride + ((r0 + r) % a.group) * a.dk;
  __m256 acc[RR][NS];
  for (int r = 0; r < RR; ++r)
    for (int s = 0; s < NS; ++s) acc[r][s] = _mm256_setzero_ps();
  for (int32_t e = 0; e < a.dk; ++e) {
    __m256 k[NS];
    for (int s = 0; s < NS; ++s) k[s] = _mm256_load_ps(kt + e * kFewSub + (s0 + s) * 8);
    for (int r = 0; r < RR; ++r) {
      const __m256 qv = _mm256_broadcast_ss(q[r] + e);
      for (int s = 0; s < NS; ++s) acc[r][s] = _mm256_fmadd_ps(k[s], qv, acc[r][s]);
    }
  }
  const __m256 sv = _mm256_set1_ps(a.scale);
  for (int r = 0; r < RR; ++r)
    for (int s = 0; s < NS; ++s) _mm256_store_ps(p + (r0 + r) * kAttnTile + sub + (s0 + s) * 8, _mm256_mul_ps(acc[r][s], sv));
}

// The scores of RR rows for a sub-tile's n_blocks 8-position blocks, in as many chains as the
// registers hold (RR * NS <= 8).
template <int RR>
void scores_few_rows_avx2(const AttnTask& a, int64_t r0, int64_t sub, int64_t n_blocks, const float* kt, float* p) {
  constexpr int NS = RR <= 2 ? 4 : 2;
  int64_t s0 = 0;
  for (; s0 + NS <= n_blocks; s0 += NS) scores_few_avx2<RR, NS>(a, r0, sub, s0, kt, p);
  for (; s0 < n_blocks; ++s0) scores_few_avx2<RR, 1>(a, r0, sub, s0, kt, p);
}

// acc rows r0..r0+RR-1 (dvp floats each) += sum_j p[r][j] * V[j0 + j], 16 floats at a time,
// V widened on the fly.
template <AttnKv KV, bool FULL, int RR>
inline void values_few_chunk_avx2(const AttnTask& a, int64_t r0, int64_t c0, const uint8_t* const* v_rows, int64_t nk, const float* p,
                                  int64_t dvp, float* acc) {
  __m256 acc_v[RR][2];
  for (int r = 0; r < RR; ++r)
    for (int c = 0; c < 2; ++c) acc_v[r][c] = _mm256_load_ps(acc + (r0 + r) * dvp + c0 + 8 * c);
  for (int64_t j = 0; j < nk; ++j) {
    __m256 v[2];
    for (int c = 0; c < 2; ++c) v[c] = FULL ? load_kv8<KV>(v_rows[j], c0 + 8 * c) : load_kv8<KV>(v_rows[j], c0 + 8 * c, a.dv);
    for (int r = 0; r < RR; ++r) {
      const __m256 pv = _mm256_broadcast_ss(p + (r0 + r) * kAttnTile + j);
      for (int c = 0; c < 2; ++c) acc_v[r][c] = _mm256_fmadd_ps(pv, v[c], acc_v[r][c]);
    }
  }
  for (int r = 0; r < RR; ++r)
    for (int c = 0; c < 2; ++c) _mm256_store_ps(acc + (r0 + r) * dvp + c0 + 8 * c, acc_v[r][c]);
}

template <AttnKv KV, int RR>
void values_few_avx2(const AttnTask& a, int64_t r0, const uint8_t* const* v_rows, int64_t nk, const float* p, int64_t dvp, float* acc) {
  for (int64_t c0 = 0; c0 < dvp; c0 += 16) {
    if (c0 + 16 <= a.dv) values_few_chunk_avx2<KV, true, RR>(a, r0, c0, v_rows, nk, p, dvp, acc);
    else values_few_chunk_avx2<KV, false, RR>(a, r0, c0, v_rows, nk, p, dvp, acc);
  }
}

template <AttnKv KV>
void attention_few_rows_avx2(const AttnTask& a) {
  const int64_t n_rows = int64_t(a.n_tok) * a.group;
  const int64_t dkp = (a.dk + 15) / 16 * 16, dvp = (a.dv + 15) / 16 * 16;
  float* kt = a.scratch;                  // dkp x kFewSub
  float* p = kt + dkp * kAttnTile;        // kFewRows x kAttnTile
  float* acc = p + kFewRows * kAttnTile;  // kFewRows x dvp
  float mrow[kFewRows], srow[kFewRows];
  for (int64_t r = 0; r < kFewRows; ++r) {
    mrow[r] = -std::numeric_limits<float>::infinity();
    srow[r] = 0.0f;
  }
  // Rows past n_rows are summed with the others (attn_add_rows_in_order) and must read zeros.
  std::fill(p + n_rows * kAttnTile, p + kFewRows * kAttnTile, 0.0f);
  std::fill(acc, acc + n_rows * dvp, 0.0f);

  const int64_t n_ctx = std::min(a.first_pos + a.n_tok, a.pos_end);
  const uint8_t* row_ptrs[2][kAttnTile];
  const uint8_t** k_rows = row_ptrs[0];
  const uint8_t** next_k_rows = row_ptrs[1];
  attn_tile_rows(a.k_blocks, a.block_tokens, a.k_row_bytes, a.pos_begin, std::clamp<int64_t>(n_ctx - a.pos_begin, 0, kAttnTile), k_rows);
  for (int64_t j0 = a.pos_begin; j0 < n_ctx; j0 += kAttnTile) {
    const int64_t nk = std::min(kAttnTile, n_ctx - j0);
    const int64_t n_next = std::clamp<int64_t>(n_ctx - j0 - kAttnTile, 0, kAttnTile);
    const uint8_t* v_rows[kAttnTile];
    attn_tile_rows(a.v_blocks, a.block_tokens, a.v_row_bytes, j0, nk, v_rows);
    attn_tile_rows(a.k_blocks, a.block_tokens, a.k_row_bytes, j0 + kAttnTile, n_next, next_k_rows);
    int64_t r0 = 0;
    for (int64_t sub = 0; sub < nk; sub += kFewSub) {
      const int64_t ns = std::min(kFewSub, nk - sub), n_blocks = (ns + 7) / 8;
      transpose_k_sub_avx2<KV>(a, k_rows, v_rows, nk, next_k_rows, n_next, sub, ns, dkp, kt);
      for (r0 = 0; r0 + 4 <= n_rows; r0 += 4) scores_few_rows_avx2<4>(a, r0, sub, n_blocks, kt, p);
      switch (n_rows - r0) {
        case 3: scores_few_rows_avx2<3>(a, r0, sub, n_blocks, kt, p); break;
        case 2: scores_few_rows_avx2<2>(a, r0, sub, n_blocks, kt, p); break;
        case 1: scores_few_rows_avx2<1>(a, r0, sub, n_blocks, kt, p); break;
        default: break;
      }
    }
    std::swap(k_rows, next_k_rows);
    for (int64_t r = 0; r < n_rows; ++r) {
      float* pr = p + r * kAttnTile;
      // Positions past last are not visible to this row (causal); their weight is zero.
      const int64_t last = std::min<int64_t>(nk - 1, a.first_pos + r / a.group - j0);
      if (last < 0) {
        std::fill(pr, pr + nk, 0.0f);
        continue;
      }
      if (a.softcap > 0.0f) scaled_tanh_avx2(pr, pr, last + 1, 1.0f, a.softcap);
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      __m256 tmax_v = ninf;
      for (int64_t j = 0; j <= last; j += 8) {
        const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(last + 1 - j)), lane));
        tmax_v = _mm256_max_ps(tmax_v, _mm256_blendv_ps(ninf, _mm256_load_ps(pr + j), valid));
      }
      alignas(32) float tmax_l[8];
      _mm256_store_ps(tmax_l, tmax_v);
      float tmax = tmax_l[0];
      for (int l = 1; l < 8; ++l) tmax = std::max(tmax, tmax_l[l]);
      const float mold = mrow[r], mnew = std::max(mold, tmax);
      if (mnew > mold) {
        alignas(32) float msv[8];
        _mm256_store_ps(msv, exp256(_mm256_sub_ps(_mm256_set1_ps(mold), _mm256_set1_ps(mnew))));
        srow[r] *= msv[0];
        float* ar = acc + r * dvp;
        const __m256 f = _mm256_set1_ps(msv[0]);
        for (int64_t e = 0; e < dvp; e += 8) _mm256_store_ps(ar + e, _mm256_mul_ps(_mm256_load_ps(ar + e), f));
        mrow[r] = mnew;
      }
      const __m256 mv = _mm256_set1_ps(mnew);
      for (int64_t j = 0; j < nk; j += 8) {
        const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(last + 1 - j)), lane));
        _mm256_store_ps(pr + j, _mm256_and_ps(valid, exp256(_mm256_sub_ps(_mm256_load_ps(pr + j), mv))));
      }
    }
    if (n_rows <= 4) attn_add_rows_in_order<4>(p, nk, srow);
    else attn_add_rows_in_order<kFewRows>(p, nk, srow);
    for (r0 = 0; r0 + 4 <= n_rows; r0 += 4) values_few_avx2<KV, 4>(a, r0, v_rows, nk, p, dvp, acc);
    switch (n_rows - r0) {
      case 3: values_few_avx2<KV, 3>(a, r0, v_rows, nk, p, dvp, acc); break;
      case 2: values_few_avx2<KV, 2>(a, r0, v_rows, nk, p, dvp, acc); break;
      case 1: values_few_avx2<KV, 1>(a, r0, v_rows, nk, p, dvp, acc); break;
      default: break;
    }
  }

  for (int64_t r = 0; r < n_rows; ++r) {
    float* out = a.out + (r / a.group) * a.out_stride + (r % a.group) * a.dv;
    std::copy(acc + r * dvp, acc + r * dvp + a.dv, out);
    a.row_max[r] = mrow[r];
    a.row_sum[r] = srow[r];
  }
}

void attention_avx2(const AttnTask& a) {
  if (int64_t(a.n_tok) * a.group <= kFewRows) {
    switch (a.kv) {
      case AttnKv::f32: return attention_few_rows_avx2<AttnKv::f32>(a);
      case AttnKv::f16: return attention_few_rows_avx2<AttnKv::f16>(a);
      case AttnKv::q8_0: return attention_few_rows_avx2<AttnKv::q8_0>(a);
    }
  }
  const int64_t n_rows = int64_t(a.n_tok) * a.group;
  const int64_t nb = (n_rows + 7) / 8, R = (nb * 8 + 15) / 16 * 16;
  const int64_t dkp = (a.dk + 15) / 16 * 16, dvp = (a.dv + 15) / 16 * 16;
  float* qt = a.scratch;
  float* st = qt + R * dkp;
  float* kf = st + kAttnTile * R;
  float* vf = kf + kAttnTile * dkp;
  float* acc = vf + kAttnTile * dvp;
  float* mrow = acc + R * dvp;
  float* srow = mrow + R;

  for (int64_t r = 0; r < R; ++r) {
    const float* q = r < n_rows ? a.q + (r / a.group) * a.q_stride + (r % a.group) * a.dk : nullptr;
    float* qb = qt + (r / 8) * 8 * dkp + r % 8;
    for (int32_t e = 0; e < a.dk; ++e) qb[e * 8] = q != nullptr ? q[e] : 0.0f;
    mrow[r] = -std::numeric_limits<float>::infinity();
    srow[r] = 0.0f;
  }
  std::fill(acc, acc + R * dvp, 0.0f);

  const int64_t n_ctx = std::min(a.first_pos + a.n_tok, a.pos_end);
  for (int64_t j0 = a.pos_begin; j0 < n_ctx; j0 += kAttnTile) {
    const int64_t nk = std::min(kAttnTile, n_ctx - j0);
    const uint8_t* k_rows[kAttnTile];
    const uint8_t* v_rows[kAttnTile];
    attn_tile_rows(a.k_blocks, a.block_tokens, a.k_row_bytes, j0, nk, k_rows);
    attn_tile_rows(a.v_blocks, a.block_tokens, a.v_row_bytes, j0, nk, v_rows);
    for (int64_t j = 0; j < nk; ++j) {
      widen_row_avx2(k_rows[j], a.kv, a.dk, kf + j * dkp);
      widen_row_avx2(v_rows[j], a.kv, a.dv, vf + j * dvp);
    }
    const int64_t b_first = std::max<int64_t>(0, (j0 - a.first_pos) * a.group) / 8;
    for (int64_t b = b_first; b < nb; ++b) {
      float* sb = st + b * 8 * kAttnTile;
      // Scores for this block and the next together (the next one's softmax follows on its turn).
      if ((b - b_first) % 2 == 0) {
        if (b + 1 < nb) scores_tile_avx2<2>(qt + b * 8 * dkp, kf, nk, dkp, a.dk, a.scale, sb);
        else scores_tile_avx2<1>(qt + b * 8 * dkp, kf, nk, dkp, a.dk, a.scale, sb);
      }
      if (a.softcap > 0.0f) scaled_tanh_avx2(sb, sb, nk * 8, 1.0f, a.softcap);
      alignas(32) int32_t lim_l[8];
      for (int l = 0; l < 8; ++l) {
        const int64_t r = b * 8 + l;
        lim_l[l] = r < n_rows ? int32_t(a.first_pos + r / a.group - j0) : -1;
      }
      const __m256i lim = _mm256_load_si256(reinterpret_cast<const __m256i*>(lim_l));
      const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      __m256 tmax = ninf;
      for (int64_t jj = 0; jj < nk; ++jj) {
        const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lim, _mm256_set1_epi32(int32_t(jj) - 1)));
        tmax = _mm256_max_ps(tmax, _mm256_blendv_ps(ninf, _mm256_load_ps(sb + jj * 8), valid));
      }
      const __m256 mold = _mm256_load_ps(mrow + b * 8);
      const __m256 mnew = _mm256_max_ps(mold, tmax);
      const int grew = _mm256_movemask_ps(_mm256_cmp_ps(mnew, mold, _CMP_GT_OQ));
      if (grew != 0) {
        alignas(32) float msv[8];
        _mm256_store_ps(msv, exp256(_mm256_sub_ps(mold, mnew)));
        for (int l = 0; l < 8; ++l) {
          if (((grew >> l) & 1) == 0) continue;
          srow[b * 8 + l] *= msv[l];
          float* ar = acc + (b * 8 + l) * dvp;
          const __m256 f = _mm256_set1_ps(msv[l]);
          for (int64_t e = 0; e < dvp; e += 8) _mm256_store_ps(ar + e, _mm256_mul_ps(_mm256_load_ps(ar + e), f));
        }
        _mm256_store_ps(mrow + b * 8, mnew);
      }
      __m256 tsum = _mm256_setzero_ps();
      for (int64_t jj = 0; jj < nk; ++jj) {
        const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lim, _mm256_set1_epi32(int32_t(jj) - 1)));
        const __m256 p = _mm256_and_ps(valid, exp256(_mm256_sub_ps(_mm256_load_ps(sb + jj * 8), mnew)));
        _mm256_store_ps(sb + jj * 8, p);
        tsum = _mm256_add_ps(tsum, p);
      }
      _mm256_store_ps(srow + b * 8, _mm256_add_ps(_mm256_load_ps(srow + b * 8), tsum));
      const int64_t r_end = std::min<int64_t>(8, n_rows - b * 8);
      int64_t r = 0;
      for (; r + 2 <= r_end; r += 2) values_rows_avx2<2>(sb, r, nk, vf, dvp, acc + b * 8 * dvp);
      for (; r < r_end; ++r) values_rows_avx2<1>(sb, r, nk, vf, dvp, acc + b * 8 * dvp);
    }
  }

  for (int64_t r = 0; r < n_rows; ++r) {
    float* out = a.out + (r / a.group) * a.out_stride + (r % a.group) * a.dv;
    std::copy(acc + r * dvp, acc + r * dvp + a.dv, out);
    a.row_max[r] = mrow[r];
    a.row_sum[r] = srow[r];
  }
}

// GeGLU as geglu_f32_ref: the gate rounded to f16 by VCVTPS2PH (to nearest even, as the
// reference's conversion), gelu gathered from the widened table, the clamps by blend.
void geglu_avx2(const float* g, const float* u, float* y, int64_t n) {
  const float* table = gelu_f32_table();
  const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256i idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    __m256 act = _mm256_i32gather_ps(table, idx, 4);
    act = _mm256_blendv_ps(act, x, _mm256_cmp_ps(x, hi, _CMP_GE_OQ));
    const __m256 out = _mm256_mul_ps(act, _mm256_loadu_ps(u + i));
    _mm256_storeu_ps(y + i, _mm256_blendv_ps(out, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LE_OQ)));
  }
  if (i < n) geglu_f32_ref(g + i, u + i, y + i, n - i);
}

// silu(g) * u = g / (1 + e^-g) * u, with exp256.
void swiglu_avx2(const float* g, const float* u, float* y, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace

#if defined(TDM_AVX_VNNI)
void fill_kernels_avxvnni(Kernels& k) {
#else
void fill_kernels_avx2(Kernels& k) {
#endif
  k.vec_dot[int(GgmlType::F32)] = vec_dot_f32_avx2;
  k.vec_dot[int(GgmlType::F16)] = vec_dot_half_avx2<HalfF16>;
  k.vec_dot[int(GgmlType::BF16)] = vec_dot_half_avx2<HalfBF16>;
  k.vec_dot[int(GgmlType::Q8_0)] = vec_dot_q8_0_q8_0_avx2;
  k.vec_dot[int(GgmlType::Q4_0)] = vec_dot_q4_0_q8_0_avx2;
  k.vec_dot[int(GgmlType::Q5_0)] = vec_dot_q5_0_q8_0_avx2;
  k.vec_dot[int(GgmlType::Q4_1)] = vec_dot_q4_1_q8_1_avx2;
  k.vec_dot[int(GgmlType::Q5_1)] = vec_dot_q5_1_q8_1_avx2;
  k.vec_dot[int(GgmlType::Q4_K)] = vec_dot_q4_K_q8_K_avx2;
  k.vec_dot[int(GgmlType::Q5_K)] = vec_dot_q5_K_q8_K_avx2;
  k.vec_dot[int(GgmlType::Q6_K)] = vec_dot_q6_K_q8_K_avx2;
  k.vec_dot[int(GgmlType::MXFP4)] = vec_dot_mxfp4_q8_0_avx2;
  k.vec_dot[int(GgmlType::Q2_K)] = vec_dot_q2_K_q8_K_avx2;
  k.vec_dot[int(GgmlType::Q3_K)] = vec_dot_lanes_avx2<sizeof(BlockQ3_K), kQ3KDAt, q3k_block>;
  k.vec_dot[int(GgmlType::IQ4_NL)] = vec_dot_iq4_nl_q8_0_avx2;
  k.vec_dot[int(GgmlType::IQ4_XS)] = vec_dot_lanes_avx2<sizeof(BlockIQ4_XS), kIq4xsDAt, iq4xs_block>;
  k.vec_dot[int(GgmlType::IQ2_XXS)] = vec_dot_iq_avx2<Iq2xxsShared>;
  k.vec_dot[int(GgmlType::IQ2_XS)] = vec_dot_iq_avx2<Iq2xsShared>;
  k.vec_dot[int(GgmlType::IQ2_S)] = vec_dot_iq_avx2<Iq2sShared>;
  k.vec_dot[int(GgmlType::IQ3_XXS)] = vec_dot_iq_avx2<Iq3xxsShared>;
  k.vec_dot[int(GgmlType::IQ3_S)] = vec_dot_iq_avx2<Iq3sShared>;
  k.vec_dot4[int(GgmlType::F32)] = vec_dot4_f32_avx2;
  k.vec_dot4[int(GgmlType::F16)] = vec_dot4_half_avx2<HalfF16>;
  k.vec_dot4[int(GgmlType::BF16)] = vec_dot4_half_avx2<HalfBF16>;
  k.vec_dot4[int(GgmlType::Q8_0)] = vec_dot4_q8_0_avx2;
  k.vec_dot4[int(GgmlType::Q4_0)] = vec_dot4_q4_0_avx2;
  k.vec_dot4[int(GgmlType::Q5_0)] = vec_dot4_q5_0_avx2;
  k.vec_dot4[int(GgmlType::Q4_1)] = vec_dot4_q4_1_avx2;
  k.vec_dot4[int(GgmlType::Q5_1)] = vec_dot4_q5_1_avx2;
  k.vec_dot4[int(GgmlType::Q4_K)] = vec_dot4_q4_K_avx2;
  k.vec_dot4[int(GgmlType::Q5_K)] = vec_dot4_q5_K_avx2;
  k.vec_dot4[int(GgmlType::Q6_K)] = vec_dot4_q6_K_avx2;
  k.vec_dot4[int(GgmlType::MXFP4)] = vec_dot4_mxfp4_avx2;
  k.vec_dot4[int(GgmlType::Q2_K)] = vec_dot4_q2_K_avx2;
  k.vec_dot4[int(GgmlType::Q3_K)] = vec_dot4_lanes_avx2<sizeof(BlockQ3_K), kQ3KDAt, q3k_block>;
  k.vec_dot4[int(GgmlType::IQ4_NL)] = vec_dot4_iq4_nl_avx2;
  k.vec_dot4[int(GgmlType::IQ4_XS)] = vec_dot4_lanes_avx2<sizeof(BlockIQ4_XS), kIq4xsDAt, iq4xs_block>;
  k.vec_dot4[int(GgmlType::IQ2_XXS)] = vec_dot4_iq_avx2<Iq2xxsShared>;
  k.vec_dot4[int(GgmlType::IQ2_XS)] = vec_dot4_iq_avx2<Iq2xsShared>;
  k.vec_dot4[int(GgmlType::IQ2_S)] = vec_dot4_iq_avx2<Iq2sShared>;
  k.vec_dot4[int(GgmlType::IQ3_XXS)] = vec_dot4_iq_avx2<Iq3xxsShared>;
  k.vec_dot4[int(GgmlType::IQ3_S)] = vec_dot4_iq_avx2<Iq3sShared>;
  k.from_float[int(GgmlType::Q8_0)] = quantize_row_q8_0_avx2;
  k.from_float[int(GgmlType::Q8_1)] = quantize_row_q8_1_avx2;
  k.from_float[int(GgmlType::F16)] = from_float_f16_avx2;
  k.to_float[int(GgmlType::F16)] = to_float_f16_avx2;
  k.attention = attention_avx2;
  k.packed[int(GgmlType::Q4_K)] = PackedOps{K4Layout<false>::bytes, K4Layout<false>::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KK4Avx2<false>>};
  k.packed[int(GgmlType::Q4_0)] = PackedOps{Q4Layout<false, false>::bytes, Q4Layout<false, false>::pack, ActQ8_0::bytes, quantize_act_q8_0_sums_avx2, gemm_packed<KQ4_0Avx2>};
  k.packed[int(GgmlType::Q5_0)] = PackedOps{Q4Layout<true, false>::bytes, pack_q4_avx2<true, false>, ActQ8_0::bytes_with_lanes, quantize_act_q8_0_lanes_avx2, gemm_packed<KQ4LanesAvx2<true, false>>};
  k.packed[int(GgmlType::Q4_1)] = PackedOps{Q4Layout<false, true>::bytes, Q4Layout<false, true>::pack, ActQ8_0::bytes, quantize_act_q8_1_packed_avx2, gemm_packed<KQ4LanesAvx2<false, true>>};
  k.packed[int(GgmlType::Q5_1)] = PackedOps{Q4Layout<true, true>::bytes, pack_q4_avx2<true, true>, ActQ8_0::bytes, quantize_act_q8_1_packed_avx2, gemm_packed<KQ4LanesAvx2<true, true>>};
  k.packed[int(GgmlType::Q5_K)] = PackedOps{K5QuintLayout::bytes, K5QuintLayout::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KK4Avx2<true>>};
  k.packed[int(GgmlType::Q6_K)] = PackedOps{K6TripletLayout::bytes, K6TripletLayout::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KQ6Avx2>};
  k.packed[int(GgmlType::Q8_0)] = PackedOps{Q8_0Layout::bytes, Q8_0Layout::pack, act_bytes_q8_0_avx2, quantize_act_q8_0_avx2, gemm_packed<KQ8_0Avx2>};
  k.packed[int(GgmlType::MXFP4)] = PackedOps{Mxfp4Layout::bytes, Mxfp4Layout::pack, ActQ8_0::bytes, quantize_act_q8_0_sums_avx2, gemm_packed<KMxfp4Avx2>};
  k.packed[int(GgmlType::Q3_K)] = PackedOps{Q3KTripletLayout::bytes, Q3KTripletLayout::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KLanesAvx2<Q3KLevelsAvx2>>};
  k.packed[int(GgmlType::IQ4_XS)] = PackedOps{IQ4XSLayout::bytes, IQ4XSLayout::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KLanesAvx2<IQ4XSLevelsAvx2>>};
  k.packed[int(GgmlType::Q2_K)] = PackedOps{Q2KLayout::bytes, Q2KLayout::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KQ2KAvx2>};
  k.packed[int(GgmlType::IQ4_NL)] = PackedOps{Q4Layout<false, false>::bytes, Q4Layout<false, false>::pack, ActQ8_0::bytes, quantize_act_q8_0_sums_avx2, gemm_packed<KIq4nlAvx2>};
  k.packed[int(GgmlType::IQ2_XXS)] = PackedOps{IqRowsLayout<Iq2xxsShared::kBytes>::bytes, IqRowsLayout<Iq2xxsShared::kBytes>::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KIqAvx2<Iq2xxsShared>>};
  k.packed[int(GgmlType::IQ2_XS)] = PackedOps{IqRowsLayout<Iq2xsShared::kBytes>::bytes, IqRowsLayout<Iq2xsShared::kBytes>::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KIqAvx2<Iq2xsShared>>};
  k.packed[int(GgmlType::IQ2_S)] = PackedOps{IqRowsLayout<Iq2sShared::kBytes>::bytes, IqRowsLayout<Iq2sShared::kBytes>::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KIqAvx2<Iq2sShared>>};
  k.packed[int(GgmlType::IQ3_XXS)] = PackedOps{IqRowsLayout<Iq3xxsShared::kBytes>::bytes, IqRowsLayout<Iq3xxsShared::kBytes>::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KIqAvx2<Iq3xxsShared>>};
  k.packed[int(GgmlType::IQ3_S)] = PackedOps{IqRowsLayout<Iq3sShared::kBytes>::bytes, IqRowsLayout<Iq3sShared::kBytes>::pack, ActQ8_K::bytes, quantize_act_q8_K_avx2, gemm_packed<KIqAvx2<Iq3sShared>>};
  k.swiglu_f32 = swiglu_avx2;
  k.geglu_f32 = geglu_avx2;
  k.scaled_tanh_f32 = scaled_tanh_avx2;
}

}  // namespace tdm::cpu

#endif  // __AVX2__ && __FMA__ && __F16C__
