// AVX-512 (F, BW, VL, VNNI) kernels for the CPU kernel table (kernels.h): packed-row matmuls
// on int8 activations with VPDPBUSD for the quantized types, and register-tiled float
// matmuls for f32/f16/bf16, and for the IQ2/IQ3 grid types, whose codebook entries span
// several elements of one row, dot products of rows as stored (two sub-blocks per vector) and
// gemms that decode each row's super-blocks once per tile of tokens. Compiled on their own
// (binding.gyp target tandem_cpu_avx512) and installed only after the processor check; types
// without a kernel here keep AVX2's.
//
// Packed layout (kPackRows = 16 rows per group): every 64-byte vector holds 4 consecutive
// weight bytes of each of the 16 rows, so VPDPBUSD against 4 activation bytes broadcast to
// all lanes gives 16 rows' partial dots at once, one row per lane, with no horizontal sums.
// 4-bit types hold two such 4-element chunks per byte (low and high nibble); fifth bits are
// 64-bit masks, one bit per byte of a vector; q6_K's top two bits are a plane of 2-bit
// fields. Scales and mins are stored per block for the 16 rows side by side. Each part of
// a group (quants, bits, scales) is its own contiguous plane, so every load is aligned and
// a group takes exactly the bytes its 16 rows take in the file.
//
// VPDPBUSD multiplies unsigned by signed bytes, so weights are kept unsigned (q8_0 with its
// sign bit flipped, the others as their stored levels) and the offset comes back through
// the activation's block or lane sums: sum((q - o) * a) = sum(q * a) - o * sum(a). Each
// output follows one fixed sequence of float operations whatever the number of tokens in a
// tile, so a token's result does not depend on its batch, and that sequence is the one
// llama.cpp's x86 build uses for the type (lanes_sum and the kernels' notes), so both round
// alike and agree token for token.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/ggml_types.h"
#include "cpu/iq_grids_x86.h"
#include "cpu/kernels.h"
#include "cpu/packed_common.h"
#include "cpu/quants.h"

namespace tdm::cpu {

namespace {

// The kernels' small helpers must inline: a call would pass vectors through memory.
#define TDM_INLINE __attribute__((always_inline)) inline

// How far ahead of its place in a group's stream a one-token tile prefetches
// (prefetch_group_stream): decode streams every weight once, so it pays to have the next
// lines on the way while this block computes.
constexpr int64_t kPrefetchBytes = 4096;


inline int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Four activation bytes broadcast to every lane (a pure load on these cores).
inline __m512i bcast4(const uint8_t* p) { return _mm512_set1_epi32(load_i32(p)); }

// Horizontal reductions in one fixed order (halves, then quarters, then within 128 bits).
inline __m128 fold128(__m512 v, __m512 (*op)(__m512, __m512)) {
  const __m512 a = op(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512 b = op(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_castps512_ps128(b);
}
inline __m512 add_ps(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
inline __m512 max_ps(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
inline float hsum512(__m512 v) {
  __m128 c = fold128(v, add_ps);
  c = _mm_add_ps(c, _mm_movehl_ps(c, c));
  c = _mm_add_ss(c, _mm_movehdup_ps(c));
  return _mm_cvtss_f32(c);
}
inline float hmax512(__m512 v) {
  __m128 c = fold128(v, max_ps);
  c = _mm_max_ps(c, _mm_movehl_ps(c, c));
  c = _mm_max_ss(c, _mm_movehdup_ps(c));
  return _mm_cvtss_f32(c);
}
inline int32_t hsum512_i32(__m512i v) {
  const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline __m512i load512(const uint8_t* p) { return _mm512_load_si512(reinterpret_cast<const void*>(p)); }
inline __m512 load_f16x16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p))); }

// Stores a group's 16 lanes for one token; a partial last group stores only its rows.
inline void store_rows(float* y, __m512 v, int64_t valid) {
  if (valid >= G) _mm512_storeu_ps(y, v);
  else _mm512_mask_storeu_ps(y, __mmask16((1u << valid) - 1), v);
}

// llama.cpp's x86 dot products for the types it does not repack (vec_dot and llamafile's
// tinyBLAS alike) keep eight float lanes per output: lane k takes the integer dot of elements
// 4k..4k+3 of every 32-element block, times the block's scale, one fma per block; the result
// is its hsum_float_8, ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). The lane kernels
// below keep those eight lanes for 16 rows at once, so they round exactly as llama.cpp does.
inline __m512 lanes_sum(const __m512 (&l)[8]) {
  return _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(l[0], l[4]), _mm512_add_ps(l[2], l[6])),
                       _mm512_add_ps(_mm512_add_ps(l[1], l[5]), _mm512_add_ps(l[3], l[7])));
}

template <int T>
inline void zero_lanes(__m512 (&acc)[T][8]) {
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) acc[t][k] = _mm512_setzero_ps();
}

// Independent integer accumulators per token: a tile of few tokens has few independent
// VPDPBUSD chains, so each token's sum is split over P partials (exact: integers add the same
// in any order) to keep the units busy.
template <int T>
constexpr int partials() {
  return T <= 2 ? 4 : (T <= 4 ? 2 : 1);
}

template <int T, int P>
inline void sum_partials(__m512i (&ia)[T][P]) {
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    if constexpr (P == 4) {
      ia[t][0] = _mm512_add_epi32(_mm512_add_epi32(ia[t][0], ia[t][1]), _mm512_add_epi32(ia[t][2], ia[t][3]));
    } else if constexpr (P == 2) {
      ia[t][0] = _mm512_add_epi32(ia[t][0], ia[t][1]);
    }
  }
}

template <int T, int P>
inline void zero_partials(__m512i (&ia)[T][P]) {
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) ia[t][p] = _mm512_setzero_si512();
}

// ==== activations


// One 32-element block the x86 way: the quants in 32 bytes, d (amax / 127, unrounded), d
// rounded through fp16, and the sum of the quants.
struct BlockQ8x86 {
  __m256i qs;
  float d;
  float d16;
  int32_t sum;
};

inline BlockQ8x86 quant_block_x86(const float* x) {
  const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
  const float amax = hmax512(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  BlockQ8x86 b;
  b.d = amax / 127.0f;
  b.d16 = _cvtsh_ss(_cvtss_sh(b.d, _MM_FROUND_TO_NEAREST_INT));
  const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
  const __m512i i0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512i i1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  b.sum = hsum512_i32(_mm512_add_epi32(i0, i1));
  b.qs = _mm256_set_m128i(_mm512_cvtsepi32_epi8(i1), _mm512_cvtsepi32_epi8(i0));
  return b;
}

// kLaneOffset: the stored level offset of the weight type whose kernel reads the lane plane
// (128 for q8_0's flipped sign bit, 16 for q5_0); 0 leaves the plane unwritten.
template <int kLaneOffset>
void quantize_act_q8_0(const float* x, int64_t n, uint8_t* act) {
  const int64_t nb = n / kQK;
  float* d = reinterpret_cast<float*>(act + ActQ8_0::off_d(n));
  int32_t* s = reinterpret_cast<int32_t*>(act + ActQ8_0::off_s(n));
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ8x86 q = quant_block_x86(x + b * kQK);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(act + b * kQK), q.qs);
    d[b] = q.d16;
    s[b] = q.sum;
    if (kLaneOffset != 0) {
      const __m256i lane = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), q.qs);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(act + ActQ8_0::off_l(n) + 32 * b),
                          _mm256_mullo_epi32(lane, _mm256_set1_epi32(-kLaneOffset)));
    }
  }
}

// q8_1 family (weights q4_1, q5_1): x86 quantize_row_q8_1, s = fp16(d * sum) with d unrounded.
//   [qs: n int8][d: nb float][s: nb float]
using ActQ8_1 = ActQ8_0;

void quantize_act_q8_1(const float* x, int64_t n, uint8_t* act) {
  const int64_t nb = n / kQK;
  float* d = reinterpret_cast<float*>(act + ActQ8_1::off_d(n));
  float* s = reinterpret_cast<float*>(act + ActQ8_1::off_s(n));
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ8x86 q = quant_block_x86(x + b * kQK);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(act + b * kQK), q.qs);
    d[b] = q.d16;
    s[b] = _cvtsh_ss(_cvtss_sh(q.d * float(q.sum), _MM_FROUND_TO_NEAREST_INT));
  }
}


// One super-block as the reference quantizes it; writes 256 quants, returns d, and fills the
// 16 group sums.
inline float quant_superblock_q8_K(const float* x, int8_t* qs, int32_t* bsum) {
  __m512 amax_v = _mm512_setzero_ps();
  for (int c = 0; c < 16; ++c) amax_v = _mm512_max_ps(amax_v, _mm512_abs_ps(_mm512_loadu_ps(x + 16 * c)));
  const float amax = hmax512(amax_v);
  if (!(amax > 0.0f)) {
    std::memset(qs, 0, kQK_K);
    for (int g = 0; g < 16; ++g) bsum[g] = 0;
    return 0.0f;
  }
  // The first element of largest magnitude gives the sign, as the reference's argmax does.
  float max = 0.0f;
  for (int c = 0; c < 16; ++c) {
    const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * c)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
    if (m != 0) {
      max = x[16 * c + __builtin_ctz(m)];
      break;
    }
  }
  const float iscale = -127.0f / max;
  const __m512 is = _mm512_set1_ps(iscale);
  const __m512i hi = _mm512_set1_epi32(127);
  for (int g = 0; g < 16; ++g) {
    __m512i q = _mm512_cvt_roundps_epi32(_mm512_mul_ps(is, _mm512_loadu_ps(x + 16 * g)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_min_epi32(q, hi);
    bsum[g] = hsum512_i32(q);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 16 * g), _mm512_cvtsepi32_epi8(q));
  }
  return 1.0f / iscale;
}

void quantize_act_q8_K(const float* x, int64_t n, uint8_t* act) {
  const int64_t nbk = n / kQK_K;
  float* d = reinterpret_cast<float*>(act + ActQ8_K::off_d(n));
  int32_t* msum = reinterpret_cast<int32_t*>(act + ActQ8_K::off_m(n));
  int32_t* gsum = reinterpret_cast<int32_t*>(act + ActQ8_K::off_g(n));
  for (int64_t b = 0; b < nbk; ++b) {
    int32_t bsum[16];
    d[b] = quant_superblock_q8_K(x + b * kQK_K, reinterpret_cast<int8_t*>(act + b * kQK_K), bsum);
    for (int p = 0; p < 4; ++p) {
      const int32_t s0 = bsum[4 * p] + bsum[4 * p + 1], s1 = bsum[4 * p + 2] + bsum[4 * p + 3];
      msum[4 * b + p] = int32_t((uint32_t(s0) & 0xFFFFu) | (uint32_t(s1) << 16));
    }
    for (int k = 0; k < 8; ++k) gsum[8 * b + k] = int32_t((uint32_t(bsum[2 * k]) & 0xFFFFu) | (uint32_t(bsum[2 * k + 1]) << 16));
  }
}

// The GGUF-layout q8_K converter for the dot products, same arithmetic as above.
void quantize_row_q8_K_avx512(const float* src, void* dst, int64_t n) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kQK_K; ++b, out += sizeof(BlockQ8_K)) {
    int32_t bsum[16];
    alignas(64) int8_t qs[kQK_K];
    const float d = quant_superblock_q8_K(src + b * kQK_K, qs, bsum);
    std::memcpy(out, &d, 4);
    std::memcpy(out + 4, qs, kQK_K);
    for (int g = 0; g < 16; ++g) {
      const int16_t s = int16_t(bsum[g]);
      std::memcpy(out + 4 + kQK_K + 2 * g, &s, 2);
    }
  }
}


// In llama.cpp's lane order (lanes_sum): vector c of a block is lane c, its offset comes from
// the activation's lane plane.
struct KQ8_0 {
  static constexpr int kMaxT = 3;
  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nb = n / kQK;
    const uint8_t* sc = g + nb * 512;
    const size_t od = ActQ8_0::off_d(n), ol = ActQ8_0::off_l(n);
    __m512 acc[T][8];
    zero_lanes(acc);
    const uint8_t* next_small = next_small_planes<Q8_0Layout>(g, n);
    for (int64_t b = 0; b < nb; ++b) {
      if (T == 1) prefetch_next_small<Q8_0Layout>(next_small, b);
      const __m512 dw = load_f16x16(sc + b * 32);
      __m512 d[T];
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) d[t] = _mm512_mul_ps(dw, _mm512_set1_ps(load_f32(act + t * as + od + 4 * b)));
      const uint8_t* wq = g + b * 512;
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        prefetch_group_stream<Q8_0Layout::kStreamStep>(g, b * 8 + c, kPrefetchBytes);
        const __m512i w = load512(wq + 64 * c);
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) {
          const uint8_t* at = act + t * as;
          const __m512i dot = _mm512_dpbusd_epi32(bcast4(at + ol + 32 * b + 4 * c), w, bcast4(at + b * kQK + 4 * c));
          acc[t][c] = _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(dot), acc[t][c]);
        }
      }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, lanes_sum(acc[t]), valid);
  }
};


// q4_0 sums each block whole, one fma per block, as llama.cpp's repacked q4_0 (x86) does;
// q5_0, q4_1 and q5_1, which llama.cpp does not repack, keep its eight lanes (lanes_sum):
// vector i's low nibbles are lane i, its high ones lane 4 + i. The min types add m * s per
// block in a separate accumulator, as its scalar summs.
template <bool kHigh, bool kMin>
struct KQ4 {
  using L = Q4Layout<kHigh, kMin>;
  static constexpr bool kLanes = kHigh || kMin;
  static constexpr int kMaxT = kLanes ? 2 : 8;
  static constexpr bool kStreamTiles = true;  // tile<T, true> prefetches at any T (gemm_packed)
  static constexpr int kOffset = kMin ? 0 : (kHigh ? 16 : 8);

  // The unsigned levels of vector i of block b: low and high nibbles, with the fifth bits.
  TDM_INLINE static void levels(const uint8_t* g, const uint64_t* bits, int64_t b, int i, __m512i* lo, __m512i* hi) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), b5 = _mm512_set1_epi8(0x10);
    const __m512i v = load512(g + (b * 4 + i) * 64);
    *lo = _mm512_and_si512(v, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    if (kHigh) {
      // Levels are below 16 here, so adding 16 sets the fifth bit.
      *lo = _mm512_mask_add_epi8(*lo, bits[b * 8 + 2 * i], *lo, b5);
      *hi = _mm512_mask_add_epi8(*hi, bits[b * 8 + 2 * i + 1], *hi, b5);
    }
  }

  template <int T, bool kStream = false>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    if constexpr (kLanes) tile_lanes<T>(g, n, act, as, y, ys, valid);
    else tile_blocks<T, kStream>(g, n, act, as, y, ys, valid);
  }

  template <int T, bool kStream>
  static void tile_blocks(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nb = n / kQK;
    const size_t od = ActQ8_0::off_d(n), os = ActQ8_0::off_s(n);
    const uint64_t* bits = reinterpret_cast<const uint64_t*>(g + L::off_bits(nb));
    __m512 acc[T];
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    constexpr int P = partials<T>();
    const uint8_t* next_small = next_small_planes<L>(g, n);
    for (int64_t b = 0; b < nb; ++b) {
      if (T == 1 || kStream) prefetch_next_small<L>(next_small, b);
      __m512i ia[T][P];
      zero_partials(ia);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) ia[t][0] = _mm512_set1_epi32(-kOffset * load_i32(act + t * as + os + 4 * b));
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        if (T <= 2 || kStream) prefetch_group_stream<L::kStreamStep>(g, b * 4 + i, kPrefetchBytes);
        __m512i lo, hi;
        levels(g, bits, b, i, &lo, &hi);
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) {
          ia[t][(2 * i) % P] = _mm512_dpbusd_epi32(ia[t][(2 * i) % P], lo, bcast4(act + t * as + b * kQK + 4 * i));
          ia[t][(2 * i + 1) % P] = _mm512_dpbusd_epi32(ia[t][(2 * i + 1) % P], hi, bcast4(act + t * as + b * kQK + 16 + 4 * i));
        }
      }
      sum_partials(ia);
      const __m512 dw = load_f16x16(g + L::off_d(nb) + b * 32);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t][0]), _mm512_mul_ps(dw, _mm512_set1_ps(load_f32(act + t * as + od + 4 * b))),
                                 acc[t]);
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, acc[t], valid);
  }

  template <int T>
  static void tile_lanes(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nb = n / kQK;
    const size_t od = ActQ8_0::off_d(n), os = ActQ8_0::off_s(n), ol = ActQ8_0::off_l(n);
    const uint64_t* bits = reinterpret_cast<const uint64_t*>(g + L::off_bits(nb));
    __m512 acc[T][8], accm[T];
    zero_lanes(acc);
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) accm[t] = _mm512_setzero_ps();
    const uint8_t* next_small = next_small_planes<L>(g, n);
    for (int64_t b = 0; b < nb; ++b) {
      if (T == 1) prefetch_next_small<L>(next_small, b);
      const __m512 dw = load_f16x16(g + L::off_d(nb) + b * 32);
      __m512 d[T];
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) d[t] = _mm512_mul_ps(dw, _mm512_set1_ps(load_f32(act + t * as + od + 4 * b)));
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        prefetch_group_stream<L::kStreamStep>(g, b * 4 + i, kPrefetchBytes);
        __m512i lo, hi;
        levels(g, bits, b, i, &lo, &hi);
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) {
          const uint8_t* at = act + t * as;
          const __m512i z_lo = kMin ? _mm512_setzero_si512() : bcast4(at + ol + 32 * b + 4 * i);
          const __m512i z_hi = kMin ? _mm512_setzero_si512() : bcast4(at + ol + 32 * b + 16 + 4 * i);
          const __m512i dl = _mm512_dpbusd_epi32(z_lo, lo, bcast4(at + b * kQK + 4 * i));
          const __m512i dh = _mm512_dpbusd_epi32(z_hi, hi, bcast4(at + b * kQK + 16 + 4 * i));
          acc[t][i] = _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(dl), acc[t][i]);
          acc[t][4 + i] = _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(dh), acc[t][4 + i]);
        }
      }
      if (kMin) {
        const __m512 mw = load_f16x16(g + L::off_m(nb) + b * 32);
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) accm[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(load_f32(act + t * as + os + 4 * b)), accm[t]);
      }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, kMin ? _mm512_add_ps(lanes_sum(acc[t]), accm[t]) : lanes_sum(acc[t]), valid);
  }
};

// mxfp4 and iq4_nl in llama.cpp's repacked order (gemv/gemm_q4_b32_8x8_q8_0_lut_avx, as its
// q4_0): each block's integer dot whole, then one fma by the block scale times d. VPDPBUSD
// takes unsigned weights, so codes map through a grid's levels plus an offset (kMxfp4Levels:
// 12, kIq4nlLevels: 128; VPDPBUSD sums in int32, so levels up to 241 do not saturate) and
// the offset times the activation's block sum comes back off, as q4_0's offset of 8 does.
struct Mxfp4Grid {
  using L = Mxfp4Layout;
  static constexpr const uint8_t* kLevels = kMxfp4Levels;
  static constexpr int kOffset = kMxfp4Offset;
  // The 16 rows' exponents of block b as the floats e8m0_half gives.
  TDM_INLINE static __m512 scales(const uint8_t* g, int64_t nb, int64_t b) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::off_e(nb) + b * G)));
    const __m512i normal = _mm512_slli_epi32(_mm512_sub_epi32(v, _mm512_set1_epi32(1)), 23);
    const __m512i tiny = _mm512_sllv_epi32(_mm512_set1_epi32(0x00200000), v);
    return _mm512_castsi512_ps(_mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(v, _mm512_set1_epi32(2)), normal, tiny));
  }
};

struct Iq4nlGrid {
  using L = Q4Layout<false, false>;  // iq4_nl blocks are laid out as q4_0's
  static constexpr const uint8_t* kLevels = kIq4nlLevels;
  static constexpr int kOffset = kIq4nlOffset;
  TDM_INLINE static __m512 scales(const uint8_t* g, int64_t nb, int64_t b) { return load_f16x16(g + L::off_d(nb) + b * 32); }
};

template <typename Grid>
struct KLut4 {
  using L = typename Grid::L;
  static constexpr int kMaxT = 8;
  static constexpr bool kStreamTiles = true;  // tile<T, true> prefetches at any T (gemm_packed)

  template <int T, bool kStream = false>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nb = n / kQK;
    const size_t od = ActQ8_0::off_d(n), os = ActQ8_0::off_s(n);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i lut = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(Grid::kLevels)));
    __m512 acc[T];
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    constexpr int P = partials<T>();
    const uint8_t* next_small = next_small_planes<L>(g, n);
    for (int64_t b = 0; b < nb; ++b) {
      if (T == 1 || kStream) prefetch_next_small<L>(next_small, b);
      __m512i ia[T][P];
      zero_partials(ia);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) ia[t][0] = _mm512_set1_epi32(-Grid::kOffset * load_i32(act + t * as + os + 4 * b));
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        if (T <= 2 || kStream) prefetch_group_stream<L::kStreamStep>(g, b * 4 + i, kPrefetchBytes);
        const __m512i v = load512(g + (b * 4 + i) * 64);
        const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, m4));
        const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) {
          ia[t][(2 * i) % P] = _mm512_dpbusd_epi32(ia[t][(2 * i) % P], lo, bcast4(act + t * as + b * kQK + 4 * i));
          ia[t][(2 * i + 1) % P] = _mm512_dpbusd_epi32(ia[t][(2 * i + 1) % P], hi, bcast4(act + t * as + b * kQK + 16 + 4 * i));
        }
      }
      sum_partials(ia);
      const __m512 dw = Grid::scales(g, nb, b);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t][0]), _mm512_mul_ps(dw, _mm512_set1_ps(load_f32(act + t * as + od + 4 * b))),
                                 acc[t]);
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, acc[t], valid);
  }
};

// q4_K in the order of llama.cpp's repacked q4_K gemm (x86): per pair of sub-blocks one fma
// of the scaled integer dot and one of the mins, into two accumulators subtracted at the end.
// q5_K, which llama.cpp does not repack, in its vec_dot order: eight lanes (lanes_sum) per
// super-block, lane i the low nibbles of vector (j, i) over the sub-blocks j, lane 4 + i the
// high ones, and the mins of the super-block in a separate accumulator.
template <bool kHigh>
struct KK4 {
  using L = K4Layout<kHigh>;
  // q4_K's second accumulator (the mins) takes registers that a tile of 8 tokens would spill.
  static constexpr int kMaxT = kHigh ? 2 : 4;
  static constexpr bool kStreamTiles = true;  // tile<T, true> prefetches at any T (gemm_packed)

  // Packed scale byte plane k (of 12) of super-block s, for the 16 rows.
  TDM_INLINE static __m128i scale_bytes(const uint8_t* g, int64_t nbk, int64_t s, int k) {
    return _mm_load_si128(reinterpret_cast<const __m128i*>(g + L::off_sc(nbk) + s * 192 + 16 * k));
  }
  // Sub-block j's 6-bit scale for the 16 rows, one per int32 lane (see unpack_scale_min_k4).
  TDM_INLINE static __m512i sub_scale(const uint8_t* g, int64_t nbk, int64_t s, int j) {
    const __m128i m6 = _mm_set1_epi8(63), m4x = _mm_set1_epi8(0x0F), m30 = _mm_set1_epi8(0x30);
    auto B = [&](int k) { return scale_bytes(g, nbk, s, k); };
    const __m128i sc8 = j < 4 ? _mm_and_si128(B(j), m6) : _mm_or_si128(_mm_and_si128(B(j + 4), m4x), _mm_and_si128(_mm_srli_epi16(B(j - 4), 2), m30));
    return _mm512_cvtepu8_epi32(sc8);
  }
  // Mins of sub-blocks 2p and 2p+1 as int16 pairs, against the activation's msum[p].
  TDM_INLINE static __m512i min_pair(const uint8_t* g, int64_t nbk, int64_t s, int p) {
    const __m128i m6 = _mm_set1_epi8(63), m4x = _mm_set1_epi8(0x0F), m30 = _mm_set1_epi8(0x30);
    auto B = [&](int k) { return scale_bytes(g, nbk, s, k); };
    auto mins = [&](int j) {
      return j < 4 ? _mm_and_si128(B(j + 4), m6) : _mm_or_si128(_mm_and_si128(_mm_srli_epi16(B(j + 4), 4), m4x), _mm_and_si128(_mm_srli_epi16(B(j), 2), m30));
    };
    return _mm512_or_si512(_mm512_cvtepu8_epi32(mins(2 * p)), _mm512_slli_epi32(_mm512_cvtepu8_epi32(mins(2 * p + 1)), 16));
  }
  // The unsigned levels of vector (j, i) of super-block s: low and high nibbles, fifth bits.
  TDM_INLINE static void levels(const uint8_t* g, const uint64_t* bits, int64_t s, int j, int i, __m512i* lo, __m512i* hi) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), b5 = _mm512_set1_epi8(0x10);
    const __m512i v = load512(g + ((s * 8 + j) * 4 + i) * 64);
    *lo = _mm512_and_si512(v, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    if (kHigh) {
      *lo = _mm512_mask_add_epi8(*lo, bits[(s * 8 + j) * 8 + 2 * i], *lo, b5);
      *hi = _mm512_mask_add_epi8(*hi, bits[(s * 8 + j) * 8 + 2 * i + 1], *hi, b5);
    }
  }

  template <int T, bool kStream = false>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    if constexpr (kHigh) tile_lanes<T>(g, n, act, as, y, ys, valid);
    else tile_pairs<T, kStream>(g, n, act, as, y, ys, valid);
  }

  template <int T, bool kStream>
  static void tile_pairs(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n), om = ActQ8_K::off_m(n);
    const uint64_t* bits = reinterpret_cast<const uint64_t*>(g + L::off_bits(nbk));
    __m512 acc[T], accm[T];
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[t] = accm[t] = _mm512_setzero_ps();
    const uint8_t* next_small = next_small_planes<L>(g, n);
    for (int64_t s = 0; s < nbk; ++s) {
      if (T == 1 || kStream) prefetch_next_small<L>(next_small, s);
      const __m512 dv = load_f16x16(g + L::off_d(nbk) + s * 64);
      const __m512 dmv = load_f16x16(g + L::off_d(nbk) + s * 64 + 32);
      __m512 dd[T], dm[T];
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m512 da = _mm512_set1_ps(load_f32(act + t * as + od + 4 * s));
        dd[t] = _mm512_mul_ps(dv, da);
        dm[t] = _mm512_mul_ps(dmv, da);
      }
#pragma GCC unroll 1
      for (int p = 0; p < 4; ++p) {
        __m512i isb[T];
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) isb[t] = _mm512_setzero_si512();
#pragma GCC unroll 1
        for (int j = 2 * p; j < 2 * p + 2; ++j) {
          const __m512i scv = sub_scale(g, nbk, s, j);
          constexpr int P = partials<T>();
          __m512i ia[T][P];
          zero_partials(ia);
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) {
            if (T <= 2 || kStream) prefetch_group_stream<L::kStreamStep>(g, (s * 8 + j) * 4 + i, kPrefetchBytes);
            __m512i lo, hi;
            levels(g, bits, s, j, i, &lo, &hi);
#pragma GCC unroll 16
            for (int t = 0; t < T; ++t) {
              const uint8_t* a = act + t * as + s * kQK_K + 32 * j;
              ia[t][(2 * i) % P] = _mm512_dpbusd_epi32(ia[t][(2 * i) % P], lo, bcast4(a + 4 * i));
              ia[t][(2 * i + 1) % P] = _mm512_dpbusd_epi32(ia[t][(2 * i + 1) % P], hi, bcast4(a + 16 + 4 * i));
            }
          }
          sum_partials(ia);
#pragma GCC unroll 16
          for (int t = 0; t < T; ++t) isb[t] = _mm512_add_epi32(isb[t], _mm512_mullo_epi32(ia[t][0], scv));
        }
        const __m512i mp = min_pair(g, nbk, s, p);
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) {
          const __m512i im = _mm512_dpwssd_epi32(_mm512_setzero_si512(), mp, _mm512_set1_epi32(load_i32(act + t * as + om + 16 * s + 4 * p)));
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isb[t]), dd[t], acc[t]);
          accm[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(im), dm[t], accm[t]);
        }
      }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, _mm512_sub_ps(acc[t], accm[t]), valid);
  }

  template <int T>
  static void tile_lanes(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n), om = ActQ8_K::off_m(n);
    const uint64_t* bits = reinterpret_cast<const uint64_t*>(g + L::off_bits(nbk));
    __m512 acc[T][8], accm[T];
    zero_lanes(acc);
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) accm[t] = _mm512_setzero_ps();
    const uint8_t* next_small = next_small_planes<L>(g, n);
    for (int64_t s = 0; s < nbk; ++s) {
      if (T == 1) prefetch_next_small<L>(next_small, s);
      __m512i lane[T][8];
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) lane[t][k] = _mm512_setzero_si512();
#pragma GCC unroll 1
      for (int j = 0; j < 8; ++j) {
        // The scale in both int16 halves of each row's lane, for VPDPWSSD after VPMADDUBSW.
        const __m512i scv = sub_scale(g, nbk, s, j);
        const __m512i sc16 = _mm512_or_si512(scv, _mm512_slli_epi32(scv, 16));
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          prefetch_group_stream<L::kStreamStep>(g, (s * 8 + j) * 4 + i, kPrefetchBytes);
          __m512i lo, hi;
          levels(g, bits, s, j, i, &lo, &hi);
#pragma GCC unroll 16
          for (int t = 0; t < T; ++t) {
            const uint8_t* a = act + t * as + s * kQK_K + 32 * j;
            lane[t][i] = _mm512_dpwssd_epi32(lane[t][i], _mm512_maddubs_epi16(lo, bcast4(a + 4 * i)), sc16);
            lane[t][4 + i] = _mm512_dpwssd_epi32(lane[t][4 + i], _mm512_maddubs_epi16(hi, bcast4(a + 16 + 4 * i)), sc16);
          }
        }
      }
      __m512i im[T];
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) im[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m512i mp = min_pair(g, nbk, s, p);
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) im[t] = _mm512_dpwssd_epi32(im[t], mp, _mm512_set1_epi32(load_i32(act + t * as + om + 16 * s + 4 * p)));
      }
      const __m512 dv = load_f16x16(g + L::off_d(nbk) + s * 64);
      const __m512 dmv = load_f16x16(g + L::off_d(nbk) + s * 64 + 32);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m512 da = _mm512_set1_ps(load_f32(act + t * as + od + 4 * s));
        const __m512 d = _mm512_mul_ps(dv, da);
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) acc[t][k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lane[t][k]), acc[t][k]);
        accm[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dmv, da), _mm512_cvtepi32_ps(im[t]), accm[t]);
      }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, _mm512_add_ps(lanes_sum(acc[t]), accm[t]), valid);
  }
};

// Top two bits of chunk c (of 4) moved to bits 4..5 of every byte.
template <int C>
inline __m512i q6_top(__m512i hb) {
  const __m512i m30 = _mm512_set1_epi8(0x30);
  if constexpr (C == 0) return _mm512_and_si512(_mm512_slli_epi16(hb, 4), m30);
  else if constexpr (C == 1) return _mm512_and_si512(_mm512_slli_epi16(hb, 2), m30);
  else if constexpr (C == 2) return _mm512_and_si512(hb, m30);
  else return _mm512_and_si512(_mm512_srli_epi16(hb, 2), m30);
}

// In llama.cpp's q6_K vec_dot order (q6_K is not repacked on x86): eight lanes per
// super-block (lanes_sum), lane c the low-nibble chunk c of each 32-element part j, lane 4 + c
// the high one, each scaled by its 16-element group; the offset of 32 comes off lane k as
// 32 * (scale[2k] * sum[2k] + scale[2k+1] * sum[2k+1]) over the activation's group sums.
struct KQ6_K {
  using L = K6Layout;
  static constexpr int kMaxT = 2;

  // Group scales of the 16 rows, sign-extended to int16 pairs: (a, a) per row, or (a, b).
  TDM_INLINE static __m512i scale_pairs(__m128i a, __m128i b) {
    return _mm512_cvtepi8_epi16(_mm256_set_m128i(_mm_unpackhi_epi8(a, b), _mm_unpacklo_epi8(a, b)));
  }

  // Group scales 2j and 2j + 1 of the 16 rows, each in both int16 halves of its row's lane:
  // one broadcast load and one byte shuffle duplicate each scale byte, then the sign extension.
  TDM_INLINE static void part_scales(const uint8_t* scp, int j, __m512i* sc_lo, __m512i* sc_hi) {
    const __m256i dup = _mm256_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    auto pairs = [&](int grp) {
      const __m256i b = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(scp + 16 * grp)));
      return _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(b, dup));
    };
    *sc_lo = pairs(2 * j);
    *sc_hi = pairs(2 * j + 1);
  }

  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n), og = ActQ8_K::off_g(n);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[T][8];
    zero_lanes(acc);
    const uint8_t* next_small = next_small_planes<L>(g, n);
    for (int64_t s = 0; s < nbk; ++s) {
      if (T == 1) prefetch_next_small<L>(next_small, s);
      const uint8_t* scp = g + L::off_sc(nbk) + s * 256;
      auto group_scales = [&](int grp) { return _mm_load_si128(reinterpret_cast<const __m128i*>(scp + 16 * grp)); };
      __m512i lane[T][8];
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) lane[t][k] = _mm512_setzero_si512();
#pragma GCC unroll 1
      for (int j = 0; j < 8; ++j) {
        const uint8_t* q = g + (s * 8 + j) * 256;
        const uint8_t* hbp = g + L::off_hb(nbk) + (s * 8 + j) * 128;
        const __m512i hb0 = load512(hbp), hb1 = load512(hbp + 64);
        __m512i sc_lo, sc_hi;
        part_scales(scp, j, &sc_lo, &sc_hi);
        auto chunk = [&](auto cc) {
          constexpr int C = decltype(cc)::value;
          prefetch_group_stream<L::kStreamStep>(g, (s * 8 + j) * 4 + C, kPrefetchBytes);
          const __m512i v = load512(q + 64 * C);
          // (nibble & 0x0F) | top bits
          const __m512i wl = _mm512_ternarylogic_epi32(v, q6_top<C>(hb0), m4, 0xEC);
          const __m512i wh = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 4), q6_top<C>(hb1), m4, 0xEC);
#pragma GCC unroll 16
          for (int t = 0; t < T; ++t) {
            const uint8_t* a = act + t * as + s * kQK_K + 32 * j;
            lane[t][C] = _mm512_dpwssd_epi32(lane[t][C], _mm512_maddubs_epi16(wl, bcast4(a + 4 * C)), sc_lo);
            lane[t][4 + C] = _mm512_dpwssd_epi32(lane[t][4 + C], _mm512_maddubs_epi16(wh, bcast4(a + 16 + 4 * C)), sc_hi);
          }
        };
        chunk(std::integral_constant<int, 0>{});
        chunk(std::integral_constant<int, 1>{});
        chunk(std::integral_constant<int, 2>{});
        chunk(std::integral_constant<int, 3>{});
      }
      const __m512 dv = load_f16x16(g + L::off_d(nbk) + s * 32);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m512i sp = scale_pairs(group_scales(2 * k), group_scales(2 * k + 1));
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) {
          const __m512i off = _mm512_dpwssd_epi32(_mm512_setzero_si512(), sp, _mm512_set1_epi32(load_i32(act + t * as + og + 32 * s + 4 * k)));
          lane[t][k] = _mm512_sub_epi32(lane[t][k], _mm512_slli_epi32(off, 5));
        }
      }
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m512 d = _mm512_mul_ps(dv, _mm512_set1_ps(load_f32(act + t * as + od + 4 * s)));
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) acc[t][k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lane[t][k]), acc[t][k]);
      }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, lanes_sum(acc[t]), valid);
  }
};

// ==== q3_K and iq4_xs (IQ4XSLayout, Q3KLayout): llama.cpp's vec_dot order for them (neither
// is repacked on x86), the eight lanes of KQ6_K: lane c < 4 takes the low-nibble chunk c of
// each 32-element part p, lane 4 + c the high one, each times its part's (iq4_xs) or 16-element
// group's (q3_K) scale, one fma per super-block, lanes_sum at the end. The levels are signed
// (iq4_xs -127..113, q3_K -4..3), so each chunk goes through VPMADDUBSW as |level| against the
// activations negated where the level is negative (pairs of |products| <= 2 * 127 * 127 fit
// int16), then VPDPWSSD by the scale pairs; the same integers as the AVX2 vec_dot's sign trick.
// A Levels policy gives a chunk's |levels| and negative mask and a part's scale pairs.

// Sixteen int8 scales (one per row) as (s, s) int16 pairs in each row's lane.
TDM_INLINE __m512i row_scale_pairs(__m128i s8) {
  const __m256i dup = _mm256_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  return _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(_mm256_broadcastsi128_si256(s8), dup));
}

struct IQ4XSLevels {
  using L = IQ4XSLayout;
  // The grid's magnitudes by code; codes 0..7 are the negative levels.
  alignas(16) static constexpr uint8_t kAbs[16] = {127, 104, 83, 65, 49, 35, 22, 10, 1, 13, 25, 38, 53, 69, 89, 113};

  TDM_INLINE static void part_scales(const uint8_t* g, int64_t nbk, int64_t s, int p, __m512i* sc_lo, __m512i* sc_hi) {
    const __m128i sl = _mm_load_si128(reinterpret_cast<const __m128i*>(g + L::off_sl(nbk) + s * 64 + 16 * (p / 2)));
    const __m128i low = _mm_and_si128(_mm_srli_epi16(sl, 4 * (p % 2)), _mm_set1_epi8(0x0F));
    const __m256i sh = _mm256_load_si256(reinterpret_cast<const __m256i*>(g + L::off_sh(nbk) + s * 32));
    const __m128i high = _mm256_cvtepi16_epi8(_mm256_and_si256(_mm256_srli_epi16(sh, 2 * p), _mm256_set1_epi16(3)));
    *sc_lo = *sc_hi = row_scale_pairs(_mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(high, 4)), _mm_set1_epi8(32)));
  }

  // Chunk c of part p: |levels| and negative masks, low-nibble elements (lo) and high (hi).
  // The codes lead the group, so their place does not depend on the group's length.
  template <int C>
  TDM_INLINE static void chunk(const uint8_t* g, int64_t /*nbk*/, int64_t s, int p, __m512i* abs_lo, __mmask64* neg_lo, __m512i* abs_hi,
                               __mmask64* neg_hi) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    const __m512i lut = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kAbs)));
    const __m512i v = load512(g + ((s * 8 + p) * 4 + C) * 64);
    const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    *abs_lo = _mm512_shuffle_epi8(lut, lo);
    *abs_hi = _mm512_shuffle_epi8(lut, hi);
    *neg_lo = _mm512_testn_epi8_mask(lo, eight);
    *neg_hi = _mm512_testn_epi8_mask(hi, eight);
  }
  // Index of chunk c of part p in the stream of 64-byte vectors (prefetch_group_stream).
  static int64_t vector_index(int64_t s, int p, int c) { return (s * 8 + p) * 4 + c; }
};

struct Q3KLevels {
  using L = Q3KLayout;

  // Group grp's (0..15) scales of the 16 rows, minus 32, as int8.
  TDM_INLINE static __m128i group_scales(const uint8_t* sc, int grp) {
    const __m128i lb = _mm_load_si128(reinterpret_cast<const __m128i*>(sc + 16 * (grp % 8)));
    const __m128i hb = _mm_load_si128(reinterpret_cast<const __m128i*>(sc + 16 * (8 + grp % 4)));
    const __m128i low = _mm_and_si128(_mm_srli_epi16(lb, 4 * (grp / 8)), _mm_set1_epi8(0x0F));
    const __m128i high = _mm_and_si128(_mm_srli_epi16(hb, 2 * (grp / 4)), _mm_set1_epi8(3));
    return _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(high, 4)), _mm_set1_epi8(32));
  }
  TDM_INLINE static void part_scales(const uint8_t* g, int64_t nbk, int64_t s, int p, __m512i* sc_lo, __m512i* sc_hi) {
    const uint8_t* sc = g + L::off_sc(nbk) + s * 192;
    *sc_lo = row_scale_pairs(group_scales(sc, 2 * p));
    *sc_hi = row_scale_pairs(group_scales(sc, 2 * p + 1));
  }

  // A level is low2 + 4 * bit - 4: negative exactly where the third bit is clear, with
  // magnitude 4 - low2 there.
  template <int C>
  TDM_INLINE static void chunk(const uint8_t* g, int64_t nbk, int64_t s, int p, __m512i* abs_lo, __mmask64* neg_lo, __m512i* abs_hi,
                               __mmask64* neg_hi) {
    const __m512i m3 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
    const uint8_t* lowp = g + (s * 8 + p) * 128;
    const __m512i hb = load512(g + L::off_hb(nbk) + (s * 8 + p) * 64);
    const __m512i l0 = _mm512_and_si512(_mm512_srli_epi16(load512(lowp), 2 * C), m3);
    const __m512i l1 = _mm512_and_si512(_mm512_srli_epi16(load512(lowp + 64), 2 * C), m3);
    *neg_lo = _mm512_testn_epi8_mask(hb, _mm512_set1_epi8(int8_t(1 << C)));
    *neg_hi = _mm512_testn_epi8_mask(hb, _mm512_set1_epi8(int8_t(1 << (4 + C))));
    *abs_lo = _mm512_mask_sub_epi8(l0, *neg_lo, four, l0);
    *abs_hi = _mm512_mask_sub_epi8(l1, *neg_hi, four, l1);
  }
  // Two low-bit vectors per part: chunk c's request walks them at half a vector per chunk.
  static int64_t vector_index(int64_t s, int p, int c) { return (s * 8 + p) * 2 + c / 2; }
};

template <typename Lv>
struct KLanes {
  using L = typename Lv::L;
  static constexpr int kMaxT = 2;

  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n);
    const __m512i zero = _mm512_setzero_si512();
    __m512 acc[T][8];
    zero_lanes(acc);
    const uint8_t* next_small = next_small_planes<L>(g, n);
    for (int64_t s = 0; s < nbk; ++s) {
      if (T == 1) prefetch_next_small<L>(next_small, s);
      __m512i lane[T][8];
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) lane[t][k] = _mm512_setzero_si512();
#pragma GCC unroll 1
      for (int p = 0; p < 8; ++p) {
        __m512i sc_lo, sc_hi;
        Lv::part_scales(g, nbk, s, p, &sc_lo, &sc_hi);
        auto chunk = [&](auto cc) {
          constexpr int C = decltype(cc)::value;
          if (C % 2 == 0 || Lv::vector_index(s, p, C) != Lv::vector_index(s, p, C - 1))
            prefetch_group_stream<L::kStreamStep>(g, Lv::vector_index(s, p, C), kPrefetchBytes);
          __m512i abs_lo, abs_hi;
          __mmask64 neg_lo, neg_hi;
          Lv::template chunk<C>(g, nbk, s, p, &abs_lo, &neg_lo, &abs_hi, &neg_hi);
#pragma GCC unroll 16
          for (int t = 0; t < T; ++t) {
            const uint8_t* a = act + t * as + s * kQK_K + 32 * p;
            const __m512i a_lo = bcast4(a + 4 * C), a_hi = bcast4(a + 16 + 4 * C);
            lane[t][C] = _mm512_dpwssd_epi32(lane[t][C], _mm512_maddubs_epi16(abs_lo, _mm512_mask_sub_epi8(a_lo, neg_lo, zero, a_lo)), sc_lo);
            lane[t][4 + C] = _mm512_dpwssd_epi32(lane[t][4 + C], _mm512_maddubs_epi16(abs_hi, _mm512_mask_sub_epi8(a_hi, neg_hi, zero, a_hi)), sc_hi);
          }
        };
        chunk(std::integral_constant<int, 0>{});
        chunk(std::integral_constant<int, 1>{});
        chunk(std::integral_constant<int, 2>{});
        chunk(std::integral_constant<int, 3>{});
      }
      const __m512 dv = load_f16x16(g + L::off_d(nbk) + s * 32);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m512 d = _mm512_mul_ps(dv, _mm512_set1_ps(load_f32(act + t * as + od + 4 * s)));
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) acc[t][k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lane[t][k]), acc[t][k]);
      }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, lanes_sum(acc[t]), valid);
  }
};

// q2_K (Q2KLayout) in llama.cpp's repacked q2_K order (gemv/gemm_q2_K_8x8_q8_K, which its AVX-512
// builds take): per super-block the whole scaled integer dot with one fma by d, and the whole
// min term (mins against the activation's group sums) with one fma by dmin into a second
// accumulator, subtracted at the end. Levels 0..3 are unsigned: VPMADDUBSW, then VPDPWSSD by
// the 16-element group's scale.
struct KQ2_K {
  using L = Q2KLayout;
  static constexpr int kMaxT = 4;

  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const int64_t nbk = n / kQK_K;
    const size_t od = ActQ8_K::off_d(n), og = ActQ8_K::off_g(n);
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512 acc[T], acc_min[T];
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[t] = acc_min[t] = _mm512_setzero_ps();
    const uint8_t* next_small = next_small_planes<L>(g, n);
    for (int64_t s = 0; s < nbk; ++s) {
      if (T == 1) prefetch_next_small<L>(next_small, s);
      const uint8_t* scp = g + L::off_sc(nbk) + s * 256;
      auto group_bytes = [&](int grp) { return _mm_load_si128(reinterpret_cast<const __m128i*>(scp + 16 * grp)); };
      __m512i isum[T], imin[T];
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) isum[t] = imin[t] = _mm512_setzero_si512();
#pragma GCC unroll 1
      for (int p = 0; p < 8; ++p) {
        const __m512i sc_lo = row_scale_pairs(_mm_and_si128(group_bytes(2 * p), _mm_set1_epi8(0x0F)));
        const __m512i sc_hi = row_scale_pairs(_mm_and_si128(group_bytes(2 * p + 1), _mm_set1_epi8(0x0F)));
        const uint8_t* lowp = g + (s * 8 + p) * 128;
        prefetch_group_stream<L::kStreamStep>(g, (s * 8 + p) * 2, kPrefetchBytes);
        prefetch_group_stream<L::kStreamStep>(g, (s * 8 + p) * 2 + 1, kPrefetchBytes);
        const __m512i v0 = load512(lowp), v1 = load512(lowp + 64);
        auto chunk = [&](auto cc) {
          constexpr int C = decltype(cc)::value;
          const __m512i wl = _mm512_and_si512(_mm512_srli_epi16(v0, 2 * C), m3);
          const __m512i wh = _mm512_and_si512(_mm512_srli_epi16(v1, 2 * C), m3);
#pragma GCC unroll 16
          for (int t = 0; t < T; ++t) {
            const uint8_t* a = act + t * as + s * kQK_K + 32 * p;
            isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(wl, bcast4(a + 4 * C)), sc_lo);
            isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(wh, bcast4(a + 16 + 4 * C)), sc_hi);
          }
        };
        chunk(std::integral_constant<int, 0>{});
        chunk(std::integral_constant<int, 1>{});
        chunk(std::integral_constant<int, 2>{});
        chunk(std::integral_constant<int, 3>{});
      }
      // Mins of groups 2k and 2k + 1 as an int16 pair per row, against the pair of group sums.
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m128i m0 = _mm_and_si128(_mm_srli_epi16(group_bytes(2 * k), 4), _mm_set1_epi8(0x0F));
        const __m128i m1 = _mm_and_si128(_mm_srli_epi16(group_bytes(2 * k + 1), 4), _mm_set1_epi8(0x0F));
        const __m512i mp = _mm512_cvtepu8_epi16(_mm256_set_m128i(_mm_unpackhi_epi8(m0, m1), _mm_unpacklo_epi8(m0, m1)));
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) imin[t] = _mm512_dpwssd_epi32(imin[t], mp, _mm512_set1_epi32(load_i32(act + t * as + og + 32 * s + 4 * k)));
      }
      const __m512 dv = load_f16x16(g + L::off_d(nbk) + s * 32), dminv = load_f16x16(g + L::off_dmin(nbk) + s * 32);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m512 dy = _mm512_set1_ps(load_f32(act + t * as + od + 4 * s));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dv, dy), acc[t]);
        acc_min[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[t]), _mm512_mul_ps(dminv, dy), acc_min[t]);
      }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) store_rows(y + t * ys, _mm512_sub_ps(acc[t], acc_min[t]), valid);
  }
};

// ==== float weights: register tiles of R rows x T tokens, one accumulator per output over
// 16-element chunks (the last one masked), then a fixed horizontal sum.

struct LoadF32 {
  static constexpr int64_t kBytes = 4;  // per element
  static __m512 load(const uint8_t* p, int64_t k) { return _mm512_loadu_ps(reinterpret_cast<const float*>(p) + k); }
  static __m512 load_mask(const uint8_t* p, int64_t k, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(p) + k);
  }
};
struct LoadF16 {
  static constexpr int64_t kBytes = 2;
  static __m512 load(const uint8_t* p, int64_t k) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * k)));
  }
  static __m512 load_mask(const uint8_t* p, int64_t k, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + 2 * k));
  }
};
struct LoadBF16 {
  static constexpr int64_t kBytes = 2;
  static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 load(const uint8_t* p, int64_t k) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * k))); }
  static __m512 load_mask(const uint8_t* p, int64_t k, __mmask16 m) { return widen(_mm256_maskz_loadu_epi16(m, p + 2 * k)); }
};

// One token reads each float weight once. A row tile reads its R rows side by side, so the
// stream goes on both further along each row and in the next tile's rows: each row asks for
// its line kPrefetchBytes ahead (into L1) and for the same column R rows on, the next tile's
// row (into L2). Rows of kPrefetchBytes or less (f16 with 2048 columns) put the near request
// in a row this tile is reading already; there the far one keeps the stream fed.
template <int R>
TDM_INLINE void prefetch_row(const uint8_t* row, size_t rb, size_t at) {
  _mm_prefetch(reinterpret_cast<const char*>(row + at) + kPrefetchBytes, _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(row + size_t(R) * rb + at), _MM_HINT_T1);
}

template <typename L, int R, int T, bool kStream = false>
void rows_tile(const uint8_t* w, size_t rb, int64_t n, const float* x, int64_t xs, float* y, int64_t ys) {
  __m512 acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    __m512 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (T == 1 || kStream) prefetch_row<R>(w + size_t(r) * rb, rb, size_t(L::kBytes * k));
      wv[r] = L::load(w + size_t(r) * rb, k);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_loadu_ps(x + t * xs + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (k < n) {
    const __mmask16 m = __mmask16((1u << (n - k)) - 1);
    __m512 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = L::load_mask(w + size_t(r) * rb, k, m);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * xs + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) y[t * ys + r] = hsum512(acc[r][t]);
}

// A tile of `nt` tokens (1..T) with R rows of tile kernel K (K::tile<R, T>). kStream: the
// tile streams its rows from memory (one token tile for all the tokens), so it prefetches
// along them as a one-token tile does.
template <typename K, int R, int T, bool kStream = false>
void tile_upto(int nt, const uint8_t* w, size_t rb, int64_t n, const float* x, int64_t xs, float* y, int64_t ys) {
  if constexpr (T > 0) {
    if (nt == T) K::template tile<R, T, kStream>(w, rb, n, x, xs, y, ys);
    else tile_upto<K, R, T - 1, kStream>(nt, w, rb, n, x, xs, y, ys);
  }
}

// Rows [r0, r1) by n_tokens in K's register tiles. One token: 8 rows per tile, so that enough
// independent sums are in flight. More: tiles of 4 rows by K::kTokens tokens (as many
// accumulators as fit in registers). Token tiles go outside and rows inside, so that a tile's
// activations stay in L2 while the task's rows pass, instead of every row tile streaming
// all tokens from L3.
template <typename K>
void run_row_tiles(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t n, const float* x, int64_t xs, int64_t n_tokens,
                   float* y, int64_t ys) {
  if (n_tokens == 1) {
    int64_t r = r0;
    for (; r + 8 <= r1; r += 8) K::template tile<8, 1, false>(w + size_t(r) * rb, rb, n, x, xs, y + r, ys);
    for (; r < r1; ++r) K::template tile<1, 1, false>(w + size_t(r) * rb, rb, n, x, xs, y + r, ys);
    return;
  }
  constexpr int kT = K::kTokens;
  if (n_tokens <= kT) {
    // One token tile: each row is read once, from memory, so the tiles prefetch (a step of 2
    // to 6 tokens of tinyllama f16 took 1.3-1.7x one of 1 without).
    const int nt = int(n_tokens);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) tile_upto<K, 4, kT, true>(nt, w + size_t(r) * rb, rb, n, x, xs, y + r, ys);
    for (; r < r1; ++r) tile_upto<K, 1, kT, true>(nt, w + size_t(r) * rb, rb, n, x, xs, y + r, ys);
    return;
  }
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kT) {
    const int nt = int(std::min<int64_t>(kT, n_tokens - t0));
    const float* xt = x + t0 * xs;
    float* yt = y + t0 * ys;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) tile_upto<K, 4, kT>(nt, w + size_t(r) * rb, rb, n, xt, xs, yt + r, ys);
    for (; r < r1; ++r) tile_upto<K, 1, kT>(nt, w + size_t(r) * rb, rb, n, xt, xs, yt + r, ys);
  }
}

// Float rows with FMA: tiles of 4 rows by 6 tokens (24 accumulators; larger tiles spill
// registers with this compiler).
template <typename L>
struct FloatRowTiles {
  static constexpr int kTokens = 6;
  template <int R, int T, bool kStream>
  static void tile(const uint8_t* w, size_t rb, int64_t n, const float* x, int64_t xs, float* y, int64_t ys) {
    rows_tile<L, R, T, kStream>(w, rb, n, x, xs, y, ys);
  }
};

template <typename L>
void rows_float(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t n, const float* x, int64_t xs, int64_t n_tokens,
                float* y, int64_t ys) {
  run_row_tiles<FloatRowTiles<L>>(w, rb, r0, r1, n, x, xs, n_tokens, y, ys);
}

// ==== bf16 weights on processors with AVX512_BF16: VDPBF16PS over chunks of 32 elements,
// one accumulator per output (lane j adds elements 2j+1 then 2j of each chunk, with the
// instruction's own rounding), then the same horizontal sum. That is the order llama.cpp's
// tinyBLAS sums bf16 in on such processors, so both agree there; it also does twice the
// multiply-adds per instruction. Rows whose length is not a multiple of 32 keep the FMA path
// (tinyBLAS declines them too). The activations already hold bf16 values, so packing them
// to bf16 is exact.

inline __m512bh load_bf16x32(const uint8_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
inline __m512bh pack_bf16x32(const float* x) { return _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x)); }

template <int R, int T, bool kStream>
void rows_tile_bf16dp(const uint8_t* w, size_t rb, int64_t n, const float* x, int64_t xs, float* y, int64_t ys) {
  __m512 acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; k += 32) {
    __m512bh wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (T == 1 || kStream) prefetch_row<R>(w + size_t(r) * rb, rb, 2 * size_t(k));
      wv[r] = load_bf16x32(w + size_t(r) * rb + 2 * size_t(k));
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512bh xv = pack_bf16x32(x + t * xs + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) y[t * ys + r] = hsum512(acc[r][t]);
}

struct Bf16DpRowTiles {
  static constexpr int kTokens = 6;
  template <int R, int T, bool kStream>
  static void tile(const uint8_t* w, size_t rb, int64_t n, const float* x, int64_t xs, float* y, int64_t ys) {
    rows_tile_bf16dp<R, T, kStream>(w, rb, n, x, xs, y, ys);
  }
};

void rows_bf16_dp(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t n, const float* x, int64_t xs, int64_t n_tokens,
                  float* y, int64_t ys) {
  if (n % 32 != 0) return rows_float<LoadBF16>(w, rb, r0, r1, n, x, xs, n_tokens, y, ys);
  run_row_tiles<Bf16DpRowTiles>(w, rb, r0, r1, n, x, xs, n_tokens, y, ys);
}

// bf16 expert rows with AVX512_BF16, in the order of llama.cpp's ggml_vec_dot_bf16 (what its
// mul_mat_id runs): two accumulators over the halves of each 64-element chunk, each folded
// and added in double, then the elements past the last chunk one by one in double.
template <int R, int T, bool kStream>
void expert_tile_bf16dp(const uint8_t* w, size_t rb, int64_t n, const float* x, int64_t xs, float* y, int64_t ys) {
  __m512 acc[R][T][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t][0] = acc[r][t][1] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 64 <= n; k += 64) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512bh wv[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const uint8_t* p = w + size_t(r) * rb + 2 * size_t(k + 32 * h);
        if (T == 1 || kStream) prefetch_row<R>(w + size_t(r) * rb, rb, 2 * size_t(k + 32 * h));
        wv[r] = load_bf16x32(p);
      }
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512bh xv = pack_bf16x32(x + t * xs + k + 32 * h);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r][t][h] = _mm512_dpbf16_ps(acc[r][t][h], wv[r], xv);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const uint16_t* wr = reinterpret_cast<const uint16_t*>(w + size_t(r) * rb);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      double sum = double(hsum512(acc[r][t][0]));
      sum += double(hsum512(acc[r][t][1]));
      const float* xt = x + t * xs;
      for (int64_t i = k; i < n; ++i) {
        float wf;
        const uint32_t bits = uint32_t(wr[i]) << 16;
        std::memcpy(&wf, &bits, sizeof wf);
        sum += double(wf * xt[i]);
      }
      y[t * ys + r] = float(sum);
    }
  }
}

// Two accumulators per output: 4 rows by 3 tokens keep them in registers.
struct Bf16DpExpertTiles {
  static constexpr int kTokens = 3;
  template <int R, int T, bool kStream>
  static void tile(const uint8_t* w, size_t rb, int64_t n, const float* x, int64_t xs, float* y, int64_t ys) {
    expert_tile_bf16dp<R, T, kStream>(w, rb, n, x, xs, y, ys);
  }
};

void expert_rows_bf16_dp(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t n, const float* x, int64_t xs,
                         int64_t n_tokens, float* y, int64_t ys) {
  run_row_tiles<Bf16DpExpertTiles>(w, rb, r0, r1, n, x, xs, n_tokens, y, ys);
}

bool has_avx512_bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
}

void round_f16_avx512(const float* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT)));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(_cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT));
}

// Round to nearest even on the top 16 bits; NaN stays NaN, made quiet (ggml's rule).
void round_bf16_avx512(const float* src, float* dst, int64_t n) {
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7FFF), quiet = _mm512_set1_epi32(0x00400000);
  const __m512i top = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  int64_t i = 0;
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, src + i);
    const __m512i u = _mm512_castps_si512(v);
    const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    const __m512i out = _mm512_mask_or_epi32(_mm512_and_si512(r, top), nan, _mm512_and_si512(u, top), quiet);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(out));
  }
}

// ==== attention (kernels.h, AttnTask): "vertical" tiles with one query row per lane. Q is
// transposed once per task so that a score vector covers 16 rows against one position; the
// softmax then runs down the positions, lane by lane, and V is added row by row. The
// transposed queries and the scores are stored block by block (16 rows' lanes contiguous):
// with rows as the inner dimension, a power-of-two row count put every element of a block's
// column at the same L1 set.

// e^x: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^7, scaled by 2^n.
inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440054690583e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// tanh(x): below |x| = 0.25 its odd Taylor series to x^11 (the next term is under 1e-9 of
// the result), above it 1 - 2 / (e^2|x| + 1) with the sign put back (exp512's error, a few
// ulp); NaN stays NaN. Lane by lane, so an element's bits do not depend on its neighbours.
inline __m512 tanh512(__m512 x) {
  const __m512 a = _mm512_abs_ps(x);
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-1382.0f / 155925);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(62.0f / 2835));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-17.0f / 315));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.0f / 15));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.0f / 3));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, x2), x, x);
  const __m512 e = exp512(_mm512_add_ps(a, a));
  const __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(int32_t(0x80000000u)));
  const __m512 signed_big = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(big), sign));
  __m512 y = _mm512_mask_mov_ps(signed_big, _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.25f), _CMP_LT_OQ), small);
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

void scaled_tanh_avx512(const float* x, float* y, int64_t n, float in, float out) {
  const __m512 vin = _mm512_set1_ps(in), vout = _mm512_set1_ps(out);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(tanh512(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vin)), vout));
  }
}

// 16 q8_0 elements from e0 (a multiple of 16) of a row: float(q) * d.
TDM_INLINE __m512 load_q8_16(const uint8_t* row, int64_t e0) {
  const uint8_t* b = row + (e0 / kKvQ8Block) * kKvQ8BlockBytes;
  uint16_t h;
  std::memcpy(&h, b, 2);
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 + e0 % kKvQ8Block));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(_cvtsh_ss(h)));
}

// One K or V row to f32 (d elements, the tail of the last 16 zeroed; q8_0 rows have no tail).
inline void widen_row(const void* src, AttnKv kv, int32_t d, float* dst) {
  for (int32_t e = 0; e < d; e += 16) {
    const __mmask16 m = d - e >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (d - e)) - 1);
    const __m512 v = kv == AttnKv::q8_0 ? load_q8_16(static_cast<const uint8_t*>(src), e)
                     : kv == AttnKv::f16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(src) + e))
                                         : _mm512_maskz_loadu_ps(m, static_cast<const float*>(src) + e);
    _mm512_store_ps(dst + e, v);
  }
}

// Scores of NB consecutive blocks of 16 rows (block i's queries at qt + i * 16 * dkp, element e
// at [e * 16 + lane]) against J consecutive positions: block i's at st + i * 16 * kAttnTile,
// position j at [j * 16 + lane]. Two blocks share each broadcast K element, so the loop issues
// fewer loads than FMAs and has 16 chains to cover the FMA latency.
template <int NB, int J>
inline void scores_blocks(const float* qt, const float* kf, int64_t dkp, int32_t dk, float scale, float* st) {
  __m512 acc[NB][J];
#pragma GCC unroll 2
  for (int i = 0; i < NB; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int32_t e = 0; e < dk; ++e) {
    __m512 qv[NB];
#pragma GCC unroll 2
    for (int i = 0; i < NB; ++i) qv[i] = _mm512_load_ps(qt + i * 16 * dkp + e * 16);
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) {
      const __m512 kv = _mm512_set1_ps(kf[j * dkp + e]);
#pragma GCC unroll 2
      for (int i = 0; i < NB; ++i) acc[i][j] = _mm512_fmadd_ps(kv, qv[i], acc[i][j]);
    }
  }
  const __m512 sv = _mm512_set1_ps(scale);
#pragma GCC unroll 2
  for (int i = 0; i < NB; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) _mm512_store_ps(st + i * 16 * kAttnTile + j * 16, _mm512_mul_ps(acc[i][j], sv));
}

// A tile's scores for NB blocks from qt (as scores_blocks), eight positions at a time.
template <int NB>
inline void scores_tile(const float* qt, const float* kf, int64_t nk, int64_t dkp, int32_t dk, float scale, float* st) {
  int64_t j = 0;
  for (; j + 8 <= nk; j += 8) scores_blocks<NB, 8>(qt, kf + j * dkp, dkp, dk, scale, st + j * 16);
  for (; j < nk; ++j) scores_blocks<NB, 1>(qt, kf + j * dkp, dkp, dk, scale, st + j * 16);
}

// acc rows r0..r0+RR-1 of a block (dvp floats apart), NC 16-float chunks from acc and vf
// (dvp floats apart) += sum_j p[j * 16 + r] * vf[j].
template <int RR, int NC>
inline void values_chunks(const float* p, int64_t r0, int64_t nk, const float* vf, int64_t dvp, float* acc) {
  __m512 a[RR][NC];
#pragma GCC unroll 4
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) a[r][c] = _mm512_load_ps(acc + (r0 + r) * dvp + 16 * c);
  for (int64_t j = 0; j < nk; ++j) {
    __m512 v[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) v[c] = _mm512_load_ps(vf + j * dvp + 16 * c);
#pragma GCC unroll 4
    for (int r = 0; r < RR; ++r) {
      const __m512 pr = _mm512_set1_ps(p[j * 16 + r0 + r]);
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c) a[r][c] = _mm512_fmadd_ps(pr, v[c], a[r][c]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) _mm512_store_ps(acc + (r0 + r) * dvp + 16 * c, a[r][c]);
}

// acc rows r0..r0+RR-1 of a block += sum_j p[j * 16 + r] * vf[j], four 16-float chunks at a time.
template <int RR>
inline void values_rows(const float* p, int64_t r0, int64_t nk, const float* vf, int64_t dvp, float* acc) {
  int64_t c0 = 0;
  for (; c0 + 64 <= dvp; c0 += 64) values_chunks<RR, 4>(p, r0, nk, vf + c0, dvp, acc + c0);
  switch ((dvp - c0) / 16) {
    case 3: return values_chunks<RR, 3>(p, r0, nk, vf + c0, dvp, acc + c0);
    case 2: return values_chunks<RR, 2>(p, r0, nk, vf + c0, dvp, acc + c0);
    case 1: return values_chunks<RR, 1>(p, r0, nk, vf + c0, dvp, acc + c0);
    default: return;
  }
}

// ---- attention for a few query rows (decode: one token, or a short chunk, times the GQA
// group). The vertical tiles above would leave most lanes empty, so here a lane holds one
// position instead: each 16-position block of K is widened and transposed in registers, and a
// row's scores against 16 positions are one chain of FMAs down the head. Every lane still
// computes fma(k[e], q[e], acc) for e = 0, 1, ... and every softmax and V step runs in the same
// order as the vertical kernel, so a row gets the same bits from either kernel (decode and
// prefill of one token agree exactly).
constexpr int64_t kFewRows = 8;

// r[i] (16 floats) becomes column i of the 16 x 16 matrix whose rows were r[0..15].
TDM_INLINE void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[4g + k] now holds, in 128-bit lane L, column 4L + k of rows 4g..4g+3; two rounds of
  // 128-bit shuffles gather the four row groups of each column into one vector.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], _MM_SHUFFLE(2, 0, 2, 0));
    t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], _MM_SHUFFLE(3, 1, 3, 1));
    t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], _MM_SHUFFLE(2, 0, 2, 0));
    t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], _MM_SHUFFLE(3, 1, 3, 1));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], _MM_SHUFFLE(2, 0, 2, 0));
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], _MM_SHUFFLE(3, 1, 3, 1));
    r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], _MM_SHUFFLE(2, 0, 2, 0));
    r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// 16 K or V elements from e0 of a stored row as f32; lanes off m read as zero (q8_0 rows,
// whole blocks, need no mask).
template <AttnKv KV>
TDM_INLINE __m512 load_kv16(const uint8_t* row, int64_t e0, __mmask16 m) {
  if constexpr (KV == AttnKv::q8_0) return load_q8_16(row, e0);
  else if constexpr (KV == AttnKv::f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + e0));
  else return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + e0);
}

TDM_INLINE __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// Columns e0..e0+15 of the 16-position block from s, one vector per column (k[i] holds
// K[s + j][e0 + i] in lane j; positions past ns and elements past dk read as zero), prefetching
// a few of this tile's V rows and the next tile's K rows on the way (see transpose_k_tile).
template <AttnKv KV>
TDM_INLINE void k_columns16(const AttnTask& a, const uint8_t* const* k_rows, int64_t s, int64_t ns, int64_t e0,
                            const uint8_t* const* v_rows, int64_t nk, const uint8_t* const* next_k_rows, int64_t n_next,
                            int64_t per_chunk, __m512 k[16]) {
  const int64_t pf = s + e0 / 16 * per_chunk;
  attn_prefetch_rows(v_rows, nk, pf, pf + per_chunk, a.v_row_bytes);
  attn_prefetch_rows(next_k_rows, n_next, pf, pf + per_chunk, a.k_row_bytes);
  const __mmask16 m = first_lanes(a.dk - e0);
  if (ns == 16) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) k[i] = load_kv16<KV>(k_rows[s + i], e0, m);
  } else {
    for (int i = 0; i < 16; ++i) k[i] = i < ns ? load_kv16<KV>(k_rows[s + i], e0, m) : _mm512_setzero_ps();
  }
  transpose16(k);
}

// kt[e * kAttnTile + j] = K[j0 + j][e] for the tile's nk positions (zero past nk and past dk).
// While it reads K, it prefetches the rows the next steps read from memory: this tile's V rows
// (read after the scores) and the next tile's K rows (n_next of them), a few rows per 16
// columns so that the requests spread over the work instead of queueing at once.
template <AttnKv KV>
void transpose_k_tile(const AttnTask& a, const uint8_t* const* k_rows, const uint8_t* const* v_rows, int64_t nk,
                      const uint8_t* const* next_k_rows, int64_t n_next, int64_t dkp, float* kt) {
  const int64_t n_chunks = dkp / 16, per_chunk = (16 + n_chunks - 1) / n_chunks;
  for (int64_t s = 0; s < nk; s += 16) {
    const int64_t ns = std::min<int64_t>(16, nk - s);
    for (int64_t e0 = 0; e0 < dkp; e0 += 16) {
      __m512 r[16];
      k_columns16<KV>(a, k_rows, s, ns, e0, v_rows, nk, next_k_rows, n_next, per_chunk, r);
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) _mm512_store_ps(kt + (e0 + i) * kAttnTile + s, r[i]);
    }
  }
}

// For up to 4 rows (one row group) the transposed K is used as it comes out of the registers
// instead of going through kt: scores of rows 0..RR-1 against NB (1 or 2) 16-position blocks
// from s, each lane's FMA chain down the head in the same order as scores_few. Prefetches as
// transpose_k_tile does.
template <AttnKv KV, int RR, int NB>
TDM_INLINE void scores_fused(const AttnTask& a, const uint8_t* const* k_rows, const uint8_t* const* v_rows, int64_t nk,
                             const uint8_t* const* next_k_rows, int64_t n_next, int64_t s, int64_t dkp, float* p) {
  const int64_t n_chunks = dkp / 16, per_chunk = (16 + n_chunks - 1) / n_chunks;
  const float* q[RR];
#pragma GCC unroll 4
  for (int r = 0; r < RR; ++r) q[r] = a.q + (r / a.group) * a.q_stride + (r % a.group) * a.dk;
  __m512 acc[NB][RR];
#pragma GCC unroll 2
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 4
    for (int r = 0; r < RR; ++r) acc[b][r] = _mm512_setzero_ps();
  for (int64_t e0 = 0; e0 < dkp; e0 += 16) {
    const int n_e = int(std::min<int64_t>(16, a.dk - e0));
#pragma GCC unroll 2
    for (int b = 0; b < NB; ++b) {
      const int64_t sb = s + 16 * b;
      __m512 k[16];
      k_columns16<KV>(a, k_rows, sb, std::min<int64_t>(16, nk - sb), e0, v_rows, nk, next_k_rows, n_next, per_chunk, k);
      if (n_e == 16) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i)
#pragma GCC unroll 4
          for (int r = 0; r < RR; ++r) acc[b][r] = _mm512_fmadd_ps(k[i], _mm512_set1_ps(q[r][e0 + i]), acc[b][r]);
      } else {
        for (int i = 0; i < n_e; ++i)
#pragma GCC unroll 4
          for (int r = 0; r < RR; ++r) acc[b][r] = _mm512_fmadd_ps(k[i], _mm512_set1_ps(q[r][e0 + i]), acc[b][r]);
      }
    }
  }
  const __m512 sv = _mm512_set1_ps(a.scale);
#pragma GCC unroll 2
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 4
    for (int r = 0; r < RR; ++r) _mm512_store_ps(p + r * kAttnTile + s + 16 * b, _mm512_mul_ps(acc[b][r], sv));
}

template <AttnKv KV, int RR>
void scores_fused_tile(const AttnTask& a, const uint8_t* const* k_rows, const uint8_t* const* v_rows, int64_t nk,
                       const uint8_t* const* next_k_rows, int64_t n_next, int64_t dkp, float* p) {
  int64_t s = 0;
  for (; s + 32 <= (nk + 15) / 16 * 16; s += 32) scores_fused<KV, RR, 2>(a, k_rows, v_rows, nk, next_k_rows, n_next, s, dkp, p);
  if (s < nk) scores_fused<KV, RR, 1>(a, k_rows, v_rows, nk, next_k_rows, n_next, s, dkp, p);
}

// p[r * kAttnTile + j] = scale * q_r . K[j0 + j] for RR rows from r0 and NS 16-position blocks
// from s0: RR * NS independent FMA chains down the head.
template <int RR, int NS>
TDM_INLINE void scores_few(const AttnTask& a, int64_t r0, int64_t s0, const float* kt, float* p) {
  const float* q[RR];
#pragma GCC unroll 4
  for (int r = 0; r < RR; ++r) q[r] = a.q + ((r0 + r) / a.group) * a.q_stride + ((r0 + r) % a.group) * a.dk;
  __m512 acc[RR][NS];
#pragma GCC unroll 4
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int s = 0; s < NS; ++s) acc[r][s] = _mm512_setzero_ps();
  for (int32_t e = 0; e < a.dk; ++e) {
    __m512 k[NS];
#pragma GCC unroll 4
    for (int s = 0; s < NS; ++s) k[s] = _mm512_load_ps(kt + e * kAttnTile + (s0 + s) * 16);
#pragma GCC unroll 4
    for (int r = 0; r < RR; ++r) {
      const __m512 qv = _mm512_set1_ps(q[r][e]);
#pragma GCC unroll 4
      for (int s = 0; s < NS; ++s) acc[r][s] = _mm512_fmadd_ps(k[s], qv, acc[r][s]);
    }
  }
  const __m512 sv = _mm512_set1_ps(a.scale);
#pragma GCC unroll 4
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int s = 0; s < NS; ++s) _mm512_store_ps(p + (r0 + r) * kAttnTile + (s0 + s) * 16, _mm512_mul_ps(acc[r][s], sv));
}

template <int RR>
void scores_few_rows(const AttnTask& a, int64_t r0, int64_t n_blocks, const float* kt, float* p) {
  int64_t s0 = 0;
  for (; s0 + 2 <= n_blocks; s0 += 2) scores_few<RR, 2>(a, r0, s0, kt, p);
  if (s0 < n_blocks) scores_few<RR, 1>(a, r0, s0, kt, p);
}

// acc rows r0..r0+RR-1 (dvp floats each) += sum_j p[r][j] * V[j0 + j], V widened on the fly,
// NC 16-float chunks from c0.
template <AttnKv KV, int RR, int NC>
TDM_INLINE void values_few_chunks(const AttnTask& a, int64_t r0, int64_t c0, const uint8_t* const* v_rows, int64_t nk, const float* p,
                                  int64_t dvp, float* acc) {
  __mmask16 m[NC];
#pragma GCC unroll 4
  for (int c = 0; c < NC; ++c) m[c] = first_lanes(a.dv - (c0 + 16 * c));
  __m512 acc_v[RR][NC];
#pragma GCC unroll 4
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) acc_v[r][c] = _mm512_load_ps(acc + (r0 + r) * dvp + c0 + 16 * c);
  for (int64_t j = 0; j < nk; ++j) {
    __m512 v[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) v[c] = load_kv16<KV>(v_rows[j], c0 + 16 * c, m[c]);
#pragma GCC unroll 4
    for (int r = 0; r < RR; ++r) {
      const __m512 pv = _mm512_set1_ps(p[(r0 + r) * kAttnTile + j]);
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c) acc_v[r][c] = _mm512_fmadd_ps(pv, v[c], acc_v[r][c]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) _mm512_store_ps(acc + (r0 + r) * dvp + c0 + 16 * c, acc_v[r][c]);
}

template <AttnKv KV, int RR>
void values_few(const AttnTask& a, int64_t r0, const uint8_t* const* v_rows, int64_t nk, const float* p, int64_t dvp, float* acc) {
  int64_t c0 = 0;
  for (; c0 + 64 <= dvp; c0 += 64) values_few_chunks<KV, RR, 4>(a, r0, c0, v_rows, nk, p, dvp, acc);
  for (; c0 < dvp; c0 += 16) values_few_chunks<KV, RR, 1>(a, r0, c0, v_rows, nk, p, dvp, acc);
}

template <AttnKv KV>
void attention_few_rows_avx512(const AttnTask& a) {
    const int64_t n_rows = int64_t(a.n_tok) * a.group;
  const int64_t dkp = (a.dk + 15) / 16 * 16, dvp = (a.dv + 15) / 16 * 16;
  float* kt = a.scratch;             // dkp x kAttnTile
  float* p = kt + dkp * kAttnTile;   // kFewRows x kAttnTile
  float* acc = p + kFewRows * kAttnTile;  // kFewRows x dvp
  float mrow[kFewRows], srow[kFewRows];
  for (int64_t r = 0; r < kFewRows; ++r) {
    mrow[r] = -INFINITY;
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
    if (n_rows <= 4) {
      // One row group: K goes from the transposes straight into the FMAs.
      switch (n_rows) {
        case 4: scores_fused_tile<KV, 4>(a, k_rows, v_rows, nk, next_k_rows, n_next, dkp, p); break;
        case 3: scores_fused_tile<KV, 3>(a, k_rows, v_rows, nk, next_k_rows, n_next, dkp, p); break;
        case 2: scores_fused_tile<KV, 2>(a, k_rows, v_rows, nk, next_k_rows, n_next, dkp, p); break;
        default: scores_fused_tile<KV, 1>(a, k_rows, v_rows, nk, next_k_rows, n_next, dkp, p); break;
      }
      std::swap(k_rows, next_k_rows);
    } else {
      // Two row groups read each transposed K block: it is stored once in kt.
      transpose_k_tile<KV>(a, k_rows, v_rows, nk, next_k_rows, n_next, dkp, kt);
      std::swap(k_rows, next_k_rows);
      const int64_t n_blocks = (nk + 15) / 16;
      for (; r0 + 4 <= n_rows; r0 += 4) scores_few_rows<4>(a, r0, n_blocks, kt, p);
      switch (n_rows - r0) {
        case 3: scores_few_rows<3>(a, r0, n_blocks, kt, p); break;
        case 2: scores_few_rows<2>(a, r0, n_blocks, kt, p); break;
        case 1: scores_few_rows<1>(a, r0, n_blocks, kt, p); break;
        default: break;
      }
    }
    for (int64_t r = 0; r < n_rows; ++r) {
      float* pr = p + r * kAttnTile;
      // Positions past last are not visible to this row (causal); their weight is zero.
      const int64_t last = std::min<int64_t>(nk - 1, a.first_pos + r / a.group - j0);
      if (last < 0) {
        std::fill(pr, pr + nk, 0.0f);
        continue;
      }
      if (a.softcap > 0.0f) scaled_tanh_avx512(pr, pr, last + 1, 1.0f, a.softcap);
      __m512 tmax_v = _mm512_set1_ps(-INFINITY);
      for (int64_t j = 0; j <= last; j += 16) tmax_v = _mm512_mask_max_ps(tmax_v, first_lanes(last + 1 - j), tmax_v, _mm512_load_ps(pr + j));
      const float tmax = _mm512_reduce_max_ps(tmax_v);
      const float mold = mrow[r], mnew = std::max(mold, tmax);
      if (mnew > mold) {
        alignas(64) float msv[16];
        _mm512_store_ps(msv, exp512(_mm512_sub_ps(_mm512_set1_ps(mold), _mm512_set1_ps(mnew))));
        srow[r] *= msv[0];
        float* ar = acc + r * dvp;
        const __m512 f = _mm512_set1_ps(msv[0]);
        for (int64_t e = 0; e < dvp; e += 16) _mm512_store_ps(ar + e, _mm512_mul_ps(_mm512_load_ps(ar + e), f));
        mrow[r] = mnew;
      }
      const __m512 mv = _mm512_set1_ps(mnew);
      for (int64_t j = 0; j < nk; j += 16)
        _mm512_store_ps(pr + j, _mm512_maskz_mov_ps(first_lanes(last + 1 - j), exp512(_mm512_sub_ps(_mm512_load_ps(pr + j), mv))));
    }
    // Each row's weights summed in position order (zeros past its last position add nothing);
    // the rows' chains interleave so that they overlap.
    if (n_rows <= 4) attn_add_rows_in_order<4>(p, nk, srow);
    else attn_add_rows_in_order<kFewRows>(p, nk, srow);
    for (r0 = 0; r0 + 4 <= n_rows; r0 += 4) values_few<KV, 4>(a, r0, v_rows, nk, p, dvp, acc);
    switch (n_rows - r0) {
      case 3: values_few<KV, 3>(a, r0, v_rows, nk, p, dvp, acc); break;
      case 2: values_few<KV, 2>(a, r0, v_rows, nk, p, dvp, acc); break;
      case 1: values_few<KV, 1>(a, r0, v_rows, nk, p, dvp, acc); break;
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

void attention_avx512(const AttnTask& a) {
  const int64_t n_rows = int64_t(a.n_tok) * a.group;
  if (n_rows <= kFewRows) {
    switch (a.kv) {
      case AttnKv::f32: return attention_few_rows_avx512<AttnKv::f32>(a);
      case AttnKv::f16: return attention_few_rows_avx512<AttnKv::f16>(a);
      case AttnKv::q8_0: return attention_few_rows_avx512<AttnKv::q8_0>(a);
    }
  }
  const int64_t nb = (n_rows + 15) / 16, R = nb * 16;
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
    float* qb = qt + (r / 16) * 16 * dkp + r % 16;
    for (int32_t e = 0; e < a.dk; ++e) qb[e * 16] = q != nullptr ? q[e] : 0.0f;
    mrow[r] = -INFINITY;
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
      widen_row(k_rows[j], a.kv, a.dk, kf + j * dkp);
      widen_row(v_rows[j], a.kv, a.dv, vf + j * dvp);
    }
    // Rows before b_first end before this tile.
    const int64_t b_first = std::max<int64_t>(0, (j0 - a.first_pos) * a.group) / 16;
    for (int64_t b = b_first; b < nb; ++b) {
      float* sb = st + b * 16 * kAttnTile;
      // Scores for this block and the next together (the next one's softmax follows on its turn).
      if ((b - b_first) % 2 == 0) {
        if (b + 1 < nb) scores_tile<2>(qt + b * 16 * dkp, kf, nk, dkp, a.dk, a.scale, sb);
        else scores_tile<1>(qt + b * 16 * dkp, kf, nk, dkp, a.dk, a.scale, sb);
      }
      if (a.softcap > 0.0f) scaled_tanh_avx512(sb, sb, nk * 16, 1.0f, a.softcap);
      // Last visible position of each lane, relative to j0 (-1 for padding rows).
      alignas(64) int32_t lim_l[16];
      for (int l = 0; l < 16; ++l) {
        const int64_t r = b * 16 + l;
        lim_l[l] = r < n_rows ? int32_t(a.first_pos + r / a.group - j0) : -1;
      }
      const __m512i lim = _mm512_load_si512(lim_l);
      __m512 tmax = _mm512_set1_ps(-INFINITY);
      for (int64_t jj = 0; jj < nk; ++jj) {
        const __mmask16 valid = _mm512_cmple_epi32_mask(_mm512_set1_epi32(int32_t(jj)), lim);
        tmax = _mm512_mask_max_ps(tmax, valid, tmax, _mm512_load_ps(sb + jj * 16));
      }
      const __m512 mold = _mm512_load_ps(mrow + b * 16);
      const __m512 mnew = _mm512_max_ps(mold, tmax);
      const __mmask16 grew = _mm512_cmp_ps_mask(mnew, mold, _CMP_GT_OQ);
      if (grew != 0) {
        const __m512 ms = exp512(_mm512_sub_ps(mold, mnew));
        _mm512_store_ps(srow + b * 16, _mm512_mask_mul_ps(_mm512_load_ps(srow + b * 16), grew, _mm512_load_ps(srow + b * 16), ms));
        alignas(64) float msv[16];
        _mm512_store_ps(msv, ms);
        for (int l = 0; l < 16; ++l) {
          if (((grew >> l) & 1) == 0) continue;
          float* ar = acc + (b * 16 + l) * dvp;
          const __m512 f = _mm512_set1_ps(msv[l]);
          for (int64_t e = 0; e < dvp; e += 16) _mm512_store_ps(ar + e, _mm512_mul_ps(_mm512_load_ps(ar + e), f));
        }
        _mm512_store_ps(mrow + b * 16, mnew);
      }
      __m512 tsum = _mm512_setzero_ps();
      for (int64_t jj = 0; jj < nk; ++jj) {
        const __mmask16 valid = _mm512_cmple_epi32_mask(_mm512_set1_epi32(int32_t(jj)), lim);
        const __m512 p = _mm512_maskz_mov_ps(valid, exp512(_mm512_sub_ps(_mm512_load_ps(sb + jj * 16), mnew)));
        _mm512_store_ps(sb + jj * 16, p);
        tsum = _mm512_add_ps(tsum, p);
      }
      _mm512_store_ps(srow + b * 16, _mm512_add_ps(_mm512_load_ps(srow + b * 16), tsum));
      const int64_t r_end = std::min<int64_t>(16, n_rows - b * 16);
      int64_t r = 0;
      for (; r + 4 <= r_end; r += 4) values_rows<4>(sb, r, nk, vf, dvp, acc + b * 16 * dvp);
      for (; r < r_end; ++r) values_rows<1>(sb, r, nk, vf, dvp, acc + b * 16 * dvp);
    }
  }

  for (int64_t r = 0; r < n_rows; ++r) {
    float* out = a.out + (r / a.group) * a.out_stride + (r % a.group) * a.dv;
    std::copy(acc + r * dvp, acc + r * dvp + a.dv, out);
    a.row_max[r] = mrow[r];
    a.row_sum[r] = srow[r];
  }
}

// silu(g) * u = g / (1 + e^-g) * u, with exp512.
// GeGLU as geglu_f32_ref: the gate rounded to f16 by VCVTPS2PH (to nearest even, as the
// reference's conversion), gelu gathered from the widened table, the clamps by mask.
void geglu_avx512(const float* g, const float* u, float* y, int64_t n) {
  const float* table = gelu_f32_table();
  const __m512 lo = _mm512_set1_ps(-10.0f), hi = _mm512_set1_ps(10.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(g + i);
    const __m512i idx = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m512 act = _mm512_i32gather_ps(idx, table, 4);
    act = _mm512_mask_mov_ps(act, _mm512_cmp_ps_mask(x, hi, _CMP_GE_OQ), x);
    const __m512 out = _mm512_mul_ps(act, _mm512_loadu_ps(u + i));
    _mm512_storeu_ps(y + i, _mm512_mask_mov_ps(out, _mm512_cmp_ps_mask(x, lo, _CMP_LE_OQ), _mm512_setzero_ps()));
  }
  if (i < n) geglu_f32_ref(g + i, u + i, y + i, n - i);
}

void swiglu_avx512(const float* g, const float* u, float* y, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

// ---- the IQ2/IQ3 grid types (iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s; super-blocks unpacked by
// iq_grids_x86.h), two 32-element sub-blocks per vector. The integers are the AVX2 kernels'
// (llama.cpp's AVX2 vec_dot lanes: lane k takes elements 4k..4k+3 of every sub-block, each
// 16-element group times its 2s + 1), and so is the float order: one fma of the eight lanes by
// d_x d_y per super-block, hsum_float_8 at the end, then the type's constant. The sign bits
// negate activation bytes through a mask (AVX-512 has no VPSIGNB), and VPDPWSSD adds the
// scaled int16 pairs in one instruction.

// Sub-blocks 2p and 2p + 1: their magnitudes, 2s + 1 of each 16-element group in the int16
// lanes of its quarter, and the 64 sign bits (bit i negates element i).
struct IqPair {
  __m512i mag, sc;
  __mmask64 neg;
};

// Pair p's 2s + 1 per int16 lane: lane l takes group 4p + l / 8 of scales16.
TDM_INLINE __m512i iq_pair_scales(__m256i scales16, int p) {
  const __m512i quarter = _mm512_cvtepu8_epi16(_mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m512i groups = _mm512_add_epi16(quarter, _mm512_set1_epi16(int16_t(4 * p)));
  return _mm512_permutexvar_epi16(groups, _mm512_castsi256_si512(scales16));
}

template <typename S>
TDM_INLINE __m512i iq_pair_mag(const S& s, int p) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(s.mag(2 * p)), s.mag(2 * p + 1), 1);
}

template <typename S>
TDM_INLINE IqPair iq_pair(const S& s, int p) {
  return {iq_pair_mag(s, p), iq_pair_scales(s.scales16, p), _cvtu64_mask64(s.signs8(p))};
}

// acc + the scaled lanes of a pair against its 64 q8_K quants.
TDM_INLINE __m512i iq_pair_dot(__m512i acc, const IqPair& p, const uint8_t* q8) {
  const __m512i a = _mm512_loadu_si512(q8);
  const __m512i signed_a = _mm512_mask_sub_epi8(a, p.neg, _mm512_setzero_si512(), a);
  return _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(p.mag, signed_a), p.sc);
}

// The eight lanes of a super-block: each pair's two sub-blocks' lanes added.
TDM_INLINE __m256 iq_lanes(__m512i sumi) {
  return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm512_castsi512_si256(sumi), _mm512_extracti64x4_epi64(sumi, 1)));
}

// hsum_float_8's order, as the AVX2 kernels' hsum.
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float f16_at(const uint8_t* p) { return _cvtsh_ss(load_u16(p)); }

// One row (its nb super-blocks at x) against T tokens' activations: out[t * out_stride]. Each
// super-block is decoded once for the T tokens; the sums follow one order whatever T (one fma
// per super-block and token), so a token's result does not depend on its tile. Out of line: inlined
// into the tile dispatch, the decoder's indices spilled to vector registers (a third slower).
template <typename S, int T>
__attribute__((noinline)) void iq_dot_tokens_avx512(const uint8_t* x, int64_t nb, const IqActs& a, float* out, int64_t out_stride) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, x += S::kBytes) {
    const float dx = f16_at(x);
    if constexpr (T == 1) {  // each pair decoded as it is used: none held in memory
      const S s(x);
      __m512i sumi = _mm512_setzero_si512();
      for (int p = 0; p < 4; ++p) sumi = iq_pair_dot(sumi, iq_pair(s, p), a.q8(0, b) + 64 * p);
      acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(dx * a.d(0, b)), iq_lanes(sumi), acc[0]);
    } else {
      IqPair pairs[4];
      {
        const S s(x);
        for (int p = 0; p < 4; ++p) pairs[p] = iq_pair(s, p);
      }
      for (int t = 0; t < T; ++t) {
        __m512i sumi = _mm512_setzero_si512();
        for (int p = 0; p < 4; ++p) sumi = iq_pair_dot(sumi, pairs[p], a.q8(t, b) + 64 * p);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * a.d(t, b)), iq_lanes(sumi), acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t * out_stride] = S::kScale * hsum8(acc[t]);
}

template <typename S>
float vec_dot_iq_avx512(const void* w, const void* a, int64_t n) {
  float out;
  iq_dot_tokens_avx512<S, 1>(static_cast<const uint8_t*>(w), n / kQK_K, IqActs::blocks(a, 0), &out, 0);
  return out;
}

template <typename S>
void vec_dot4_iq_avx512(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  iq_dot_tokens_avx512<S, 4>(static_cast<const uint8_t*>(w), n / kQK_K, IqActs::blocks(a, stride), out, 1);
}

// ---- many tokens (KIq::group_tokens): the group's rows decoded once into IqDecoded blocks,
// then every tile of 16 tokens run over them. The integers and the float order are
// iq_dot_tokens_avx512's, so a token's result does not depend on how many tokens came with it.

// One row's super-block as iq_pair gives it, the scales still packed: 320 bytes, 40 KB for a
// group of 2048-element rows (the tiles read it from L2).
struct alignas(64) IqDecoded {
  __m512i mag[4];   // pair p's magnitudes
  uint64_t neg[4];  // pair p's sign bits
  __m256i scales16;
};

// Sixteen floats: a token pair's d_y (eight lanes each), or a row's float sums for one pair.
struct alignas(64) IqF32x16 {
  float v[16];
};

// Thread-local scratch of group_tokens: the decoded group and a tile's scales d_y.
struct IqScratch {
  std::vector<IqDecoded> blocks;  // row r's super-block b at r * nb + b
  std::vector<float> dx;          // its fp16 d as a float, likewise
  std::vector<IqF32x16> dy;       // tile: super-block b, token pair i at b * 8 + i
  std::vector<IqF32x16> held;     // row r's sums of pair i between passes, at r * 8 + i
};
inline IqScratch& iq_scratch() {
  static thread_local IqScratch s;
  return s;
}

template <typename S>
void iq_decode_rows(const uint8_t* g, int64_t nb, int64_t valid, IqDecoded* out, float* dx) {
  for (int64_t i = 0; i < valid * nb; ++i, g += S::kBytes) {
    const S s(g);
    for (int p = 0; p < 4; ++p) {
      out[i].mag[p] = iq_pair_mag(s, p);
      out[i].neg[p] = s.signs8(p);
    }
    out[i].scales16 = s.scales16;
    dx[i] = f16_at(g);
  }
}

// Super-blocks of the decoded rows per pass over a tile's rows: the 16 tokens' activations of
// one pass (16 KB) stay in L1 across the rows; each row's float sums wait in memory between
// passes.
constexpr int64_t kIqPassBlocks = 4;

// NP pairs of tokens (2i, 2i + 1 in the low and high halves of acc[i]) against the decoded rows;
// tokens past nt read token nt - 1 and are not written. dy: iq_scratch's tile scales.
template <typename S, int NP>
__attribute__((noinline)) void iq_decoded_tile_avx512(const IqDecoded* w, const float* dx, int64_t nb, int64_t valid, const uint8_t* act,
                                                      size_t as, const IqF32x16* dy, int nt, float* y, int64_t ys, IqF32x16* held) {
  const uint8_t* q8[2 * NP];
  for (int t = 0; t < 2 * NP; ++t) q8[t] = act + size_t(std::min(t, nt - 1)) * as;
  for (int64_t b0 = 0; b0 < nb; b0 += kIqPassBlocks) {
    const int64_t b1 = std::min(nb, b0 + kIqPassBlocks);
    for (int64_t r = 0; r < valid; ++r) {
      __m512 acc[NP];
      for (int i = 0; i < NP; ++i) acc[i] = b0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(held[r * 8 + i].v);
      for (int64_t b = b0; b < b1; ++b) {
        const IqDecoded& d = w[r * nb + b];
        IqPair pairs[4];
        for (int p = 0; p < 4; ++p) pairs[p] = {d.mag[p], iq_pair_scales(d.scales16, p), _cvtu64_mask64(d.neg[p])};
        const __m512 dxv = _mm512_set1_ps(dx[r * nb + b]);
        for (int i = 0; i < NP; ++i) {
          __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
          for (int p = 0; p < 4; ++p) {
            s0 = iq_pair_dot(s0, pairs[p], q8[2 * i] + b * kQK_K + 64 * p);
            s1 = iq_pair_dot(s1, pairs[p], q8[2 * i + 1] + b * kQK_K + 64 * p);
          }
          // iq_lanes of both tokens: low halves plus high halves.
          const __m512i lanes = _mm512_add_epi32(_mm512_shuffle_i64x2(s0, s1, _MM_SHUFFLE(1, 0, 1, 0)),
                                                 _mm512_shuffle_i64x2(s0, s1, _MM_SHUFFLE(3, 2, 3, 2)));
          acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(dxv, _mm512_load_ps(dy[b * 8 + i].v)), _mm512_cvtepi32_ps(lanes), acc[i]);
        }
      }
      if (b1 < nb) {
        for (int i = 0; i < NP; ++i) _mm512_store_ps(held[r * 8 + i].v, acc[i]);
        continue;
      }
      for (int t = 0; t < nt; ++t) {
        const __m512 v = acc[t / 2];
        y[t * ys + r] = S::kScale * hsum8(t % 2 == 0 ? _mm512_castps512_ps256(v) : _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
      }
    }
  }
}

// Packed (IqRowsLayout): a group's rows one at a time, each against the tile's T tokens; past
// one tile of tokens, group_tokens.
template <typename S>
struct KIq {
  static constexpr int kMaxT = 16;
  template <int T>
  static void tile(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    const size_t rb = IqRowsLayout<S::kBytes>::row_bytes(n);
    const IqActs a{act, as, 0, kQK_K, ActQ8_K::off_d(n), 4};
    for (int64_t r = 0; r < valid; ++r) iq_dot_tokens_avx512<S, T>(g + size_t(r) * rb, n / kQK_K, a, y + r, ys);
  }

  static void group_tokens(const uint8_t* g, int64_t n, const uint8_t* act, size_t as, int64_t n_tokens, float* y, int64_t ys,
                           int64_t valid) {
    const int64_t nb = n / kQK_K;
    IqScratch& s = iq_scratch();
    if (s.blocks.size() < size_t(G * nb)) s.blocks.resize(size_t(G * nb));
    if (s.dx.size() < size_t(G * nb)) s.dx.resize(size_t(G * nb));
    if (s.dy.size() < size_t(8 * nb)) s.dy.resize(size_t(8 * nb));
    if (s.held.size() < size_t(G * 8)) s.held.resize(size_t(G * 8));
    iq_decode_rows<S>(g, nb, valid, s.blocks.data(), s.dx.data());
    const size_t off_d = ActQ8_K::off_d(n);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxT) {
      const int nt = int(std::min<int64_t>(kMaxT, n_tokens - t0));
      const uint8_t* a = act + size_t(t0) * as;
      const int np = (nt + 1) / 2;
      for (int64_t b = 0; b < nb; ++b)
        for (int i = 0; i < np; ++i) {
          float d0, d1;
          std::memcpy(&d0, a + size_t(2 * i) * as + off_d + 4 * b, 4);
          std::memcpy(&d1, a + size_t(std::min(2 * i + 1, nt - 1)) * as + off_d + 4 * b, 4);
          _mm512_store_ps(s.dy[size_t(b * 8 + i)].v, _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(d0)), _mm256_castps_pd(_mm256_set1_ps(d1)), 1)));
        }
      float* yt = y + t0 * ys;
      switch (np) {
        case 1: iq_decoded_tile_avx512<S, 1>(s.blocks.data(), s.dx.data(), nb, valid, a, as, s.dy.data(), nt, yt, ys, s.held.data()); break;
        case 2: iq_decoded_tile_avx512<S, 2>(s.blocks.data(), s.dx.data(), nb, valid, a, as, s.dy.data(), nt, yt, ys, s.held.data()); break;
        case 3: iq_decoded_tile_avx512<S, 3>(s.blocks.data(), s.dx.data(), nb, valid, a, as, s.dy.data(), nt, yt, ys, s.held.data()); break;
        case 4: iq_decoded_tile_avx512<S, 4>(s.blocks.data(), s.dx.data(), nb, valid, a, as, s.dy.data(), nt, yt, ys, s.held.data()); break;
        case 5: iq_decoded_tile_avx512<S, 5>(s.blocks.data(), s.dx.data(), nb, valid, a, as, s.dy.data(), nt, yt, ys, s.held.data()); break;
        case 6: iq_decoded_tile_avx512<S, 6>(s.blocks.data(), s.dx.data(), nb, valid, a, as, s.dy.data(), nt, yt, ys, s.held.data()); break;
        case 7: iq_decoded_tile_avx512<S, 7>(s.blocks.data(), s.dx.data(), nb, valid, a, as, s.dy.data(), nt, yt, ys, s.held.data()); break;
        default: iq_decoded_tile_avx512<S, 8>(s.blocks.data(), s.dx.data(), nb, valid, a, as, s.dy.data(), nt, yt, ys, s.held.data()); break;
      }
    }
  }
};

template <typename K, typename Layout>
PackedOps packed_ops(size_t (*act_bytes)(int64_t), void (*quantize)(const float*, int64_t, uint8_t*)) {
  PackedOps p{};
  p.group_bytes = Layout::bytes;
  p.pack_group = Layout::pack;
  p.act_bytes = act_bytes;
  p.quantize_act = quantize;
  p.gemm = gemm_packed<K>;
  return p;
}


}  // namespace

void fill_kernels_avx512(Kernels& k) {
  k.rows[int(GgmlType::F32)] = rows_float<LoadF32>;
  k.rows[int(GgmlType::F16)] = rows_float<LoadF16>;
  if (has_avx512_bf16()) {
    k.rows[int(GgmlType::BF16)] = rows_bf16_dp;
    k.expert_rows[int(GgmlType::BF16)] = expert_rows_bf16_dp;
  } else {
    k.rows[int(GgmlType::BF16)] = rows_float<LoadBF16>;
  }
  k.round[int(GgmlType::F16)] = round_f16_avx512;
  k.round[int(GgmlType::BF16)] = round_bf16_avx512;
  k.from_float[int(GgmlType::Q8_K)] = quantize_row_q8_K_avx512;
  k.vec_dot[int(GgmlType::IQ2_XXS)] = vec_dot_iq_avx512<Iq2xxsShared>;
  k.vec_dot4[int(GgmlType::IQ2_XXS)] = vec_dot4_iq_avx512<Iq2xxsShared>;
  k.vec_dot[int(GgmlType::IQ2_XS)] = vec_dot_iq_avx512<Iq2xsShared>;
  k.vec_dot4[int(GgmlType::IQ2_XS)] = vec_dot4_iq_avx512<Iq2xsShared>;
  k.vec_dot[int(GgmlType::IQ2_S)] = vec_dot_iq_avx512<Iq2sShared>;
  k.vec_dot4[int(GgmlType::IQ2_S)] = vec_dot4_iq_avx512<Iq2sShared>;
  k.vec_dot[int(GgmlType::IQ3_XXS)] = vec_dot_iq_avx512<Iq3xxsShared>;
  k.vec_dot4[int(GgmlType::IQ3_XXS)] = vec_dot4_iq_avx512<Iq3xxsShared>;
  k.vec_dot[int(GgmlType::IQ3_S)] = vec_dot_iq_avx512<Iq3sShared>;
  k.vec_dot4[int(GgmlType::IQ3_S)] = vec_dot4_iq_avx512<Iq3sShared>;

  k.packed[int(GgmlType::Q8_0)] = packed_ops<KQ8_0, Q8_0Layout>(ActQ8_0::bytes_with_lanes, quantize_act_q8_0<128>);
  k.packed[int(GgmlType::Q4_0)] = packed_ops<KQ4<false, false>, Q4Layout<false, false>>(ActQ8_0::bytes, quantize_act_q8_0<0>);
  k.packed[int(GgmlType::Q5_0)] = packed_ops<KQ4<true, false>, Q4Layout<true, false>>(ActQ8_0::bytes_with_lanes, quantize_act_q8_0<16>);
  k.packed[int(GgmlType::Q4_1)] = packed_ops<KQ4<false, true>, Q4Layout<false, true>>(ActQ8_1::bytes, quantize_act_q8_1);
  k.packed[int(GgmlType::Q5_1)] = packed_ops<KQ4<true, true>, Q4Layout<true, true>>(ActQ8_1::bytes, quantize_act_q8_1);
  k.packed[int(GgmlType::Q4_K)] = packed_ops<KK4<false>, K4Layout<false>>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::Q5_K)] = packed_ops<KK4<true>, K4Layout<true>>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::Q6_K)] = packed_ops<KQ6_K, K6Layout>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::MXFP4)] = packed_ops<KLut4<Mxfp4Grid>, Mxfp4Layout>(ActQ8_0::bytes, quantize_act_q8_0<0>);
  k.packed[int(GgmlType::IQ4_NL)] = packed_ops<KLut4<Iq4nlGrid>, Q4Layout<false, false>>(ActQ8_0::bytes, quantize_act_q8_0<0>);
  k.packed[int(GgmlType::Q2_K)] = packed_ops<KQ2_K, Q2KLayout>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::Q3_K)] = packed_ops<KLanes<Q3KLevels>, Q3KLayout>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::IQ4_XS)] = packed_ops<KLanes<IQ4XSLevels>, IQ4XSLayout>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::IQ2_XXS)] = packed_ops<KIq<Iq2xxsShared>, IqRowsLayout<Iq2xxsShared::kBytes>>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::IQ2_XS)] = packed_ops<KIq<Iq2xsShared>, IqRowsLayout<Iq2xsShared::kBytes>>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::IQ2_S)] = packed_ops<KIq<Iq2sShared>, IqRowsLayout<Iq2sShared::kBytes>>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::IQ3_XXS)] = packed_ops<KIq<Iq3xxsShared>, IqRowsLayout<Iq3xxsShared::kBytes>>(ActQ8_K::bytes, quantize_act_q8_K);
  k.packed[int(GgmlType::IQ3_S)] = packed_ops<KIq<Iq3sShared>, IqRowsLayout<Iq3sShared::kBytes>>(ActQ8_K::bytes, quantize_act_q8_K);

  k.attention = attention_avx512;
  k.swiglu_f32 = swiglu_avx512;
  k.geglu_f32 = geglu_avx512;
  k.scaled_tanh_f32 = scaled_tanh_avx512;
}

}  // namespace tdm::cpu

#endif  // AVX-512 F, BW, VL, VNNI
