// AVX2 + FMA + F16C kernels for the CPU kernel table (kernels.h). Compiled on their own
// with -mavx2 -mfma -mf16c (binding.gyp target tandem_cpu_avx2) and installed only after
// the processor reports those features. Each matches its *_ref twin up to float rounding;
// the activation quantizer follows llama.cpp's x86 one (scale 127/max, round to even).
// On other architectures the file compiles to nothing and the table keeps its references.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cstring>

#include "core/ggml_types.h"
#include "cpu/kernels.h"
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

// A Q4_K block's 8 sub-block mins, each repeated for the two 16-element groups it spans.
inline __m256i q4k_mins16(const uint8_t* mn) {
  alignas(32) int16_t m[16];
  for (int j = 0; j < 8; ++j) m[2 * j] = m[2 * j + 1] = int16_t(mn[j]);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
}

// 32 signed int8 products summed in pairs of pairs: 8 int32 lanes, as floats.
inline __m256 dot_i8(__m256i x, __m256i y) {
  const __m256i ax = _mm256_sign_epi8(x, x);
  const __m256i sy = _mm256_sign_epi8(y, x);
  const __m256i p16 = _mm256_maddubs_epi16(ax, sy);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

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

float vec_dot_f16_avx2(const void* w, const void* a, int64_t n) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const uint16_t* y = static_cast<const uint16_t*>(a);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), acc0);
    acc1 = _mm256_fmadd_ps(load_f16x8(x + i + 8), load_f16x8(y + i + 8), acc1);
  }
  if (i + 8 <= n) {
    acc0 = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), acc0);
    i += 8;
  }
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += _cvtsh_ss(x[i]) * _cvtsh_ss(y[i]);
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
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ4_0), y += sizeof(BlockQ8_0)) {
    const __m256 d = _mm256_set1_ps(f16_at(x) * f16_at(y));
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2));
    // Element j is the low nibble of byte j, element j+16 the high nibble.
    const __m128i lo = _mm_and_si128(packed, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
    const __m256i q = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), eight);
    acc = _mm256_fmadd_ps(d, dot_i8(q, load256(y + 2)), acc);
  }
  return hsum(acc);
}

float vec_dot_q4_K_q8_K_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  float acc_min = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ4_K), y += sizeof(BlockQ8_K)) {
    const float dy = f32_at(y);
    const float d = f16_at(x) * dy;
    const float dmin = f16_at(x + 2) * dy;
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) unpack_scale_min_k4(j, x + 4, &sc[j], &mn[j]);
    acc_min += dmin * float(bsum_dot(y, q4k_mins16(mn)));

    const uint8_t* qs = x + 16;
    const uint8_t* q8 = y + 4;
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q4 = load256(qs + 32 * c);
      const __m256i lo = _mm256_and_si256(q4, low4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low4);
      const __m256i p_lo = _mm256_maddubs_epi16(lo, load256(q8 + 64 * c));
      const __m256i p_hi = _mm256_maddubs_epi16(hi, load256(q8 + 64 * c + 32));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p_lo, _mm256_set1_epi16(sc[2 * c])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p_hi, _mm256_set1_epi16(sc[2 * c + 1])));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc) - acc_min;
}

float vec_dot_q6_K_q8_K_avx2(const void* w, const void* a, int64_t n) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* y = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i two = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  float acc_off = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ6_K), y += sizeof(BlockQ8_K)) {
    const float d = f16_at(x + 208) * f32_at(y);
    int8_t sc[16];
    std::memcpy(sc, x + 192, sizeof sc);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 192)));
    acc_off += d * 32.0f * float(bsum_dot(y, sc16));  // the -32 offset of every quant, through the group sums

    __m256i sumi = _mm256_setzero_si256();
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
  return hsum(acc) - acc_off;
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

void vec_dot4_f16_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const uint16_t* y[4];
  for (int j = 0; j < 4; ++j) y[j] = reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(a) + j * stride);
  __m256 acc0[4], acc1[4];
  for (int j = 0; j < 4; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = load_f16x8(x + i), x1 = load_f16x8(x + i + 8);
    for (int j = 0; j < 4; ++j) {
      acc0[j] = _mm256_fmadd_ps(x0, load_f16x8(y[j] + i), acc0[j]);
      acc1[j] = _mm256_fmadd_ps(x1, load_f16x8(y[j] + i + 8), acc1[j]);
    }
  }
  if (i + 8 <= n) {
    const __m256 x0 = load_f16x8(x + i);
    for (int j = 0; j < 4; ++j) acc0[j] = _mm256_fmadd_ps(x0, load_f16x8(y[j] + i), acc0[j]);
    i += 8;
  }
  for (int j = 0; j < 4; ++j) {
    float s = hsum(_mm256_add_ps(acc0[j], acc1[j]));
    for (int64_t k = i; k < n; ++k) s += _cvtsh_ss(x[k]) * _cvtsh_ss(y[j][k]);
    out[j] = s;
  }
}

// q8_0 and q4_0 share the tail: a block of 32 signed weights against four q8_0 blocks.
template <typename Unpack>
void dot4_q8_0_act(const uint8_t* x, size_t x_block, const uint8_t* a, size_t stride, int64_t n, float* out, Unpack unpack) {
  const int64_t nb = n / kQK;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b, x += x_block) {
    const float dx = f16_at(x);
    const __m256i q = unpack(x);
    const __m256i aq = _mm256_sign_epi8(q, q);
    for (int j = 0; j < 4; ++j) {
      const uint8_t* yb = a + j * stride + size_t(b) * sizeof(BlockQ8_0);
      const __m256i sy = _mm256_sign_epi8(load256(yb + 2), q);
      const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(aq, sy), ones));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * f16_at(yb)), p, acc[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]);
}

void vec_dot4_q8_0_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  dot4_q8_0_act(static_cast<const uint8_t*>(w), sizeof(BlockQ8_0), static_cast<const uint8_t*>(a), stride, n, out,
                [](const uint8_t* x) { return load256(x + 2); });
}

void vec_dot4_q4_0_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m256i eight = _mm256_set1_epi8(8);
  dot4_q8_0_act(static_cast<const uint8_t*>(w), sizeof(BlockQ4_0), static_cast<const uint8_t*>(a), stride, n, out,
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
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  float acc_min[4] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ4_K)) {
    const float d = f16_at(x), dmin = f16_at(x + 2);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) unpack_scale_min_k4(j, x + 4, &sc[j], &mn[j]);
    const __m256i mins = q4k_mins16(mn);
    __m256i q[8], s[8];
    for (int c = 0; c < 4; ++c) {
      const __m256i q4 = load256(x + 16 + 32 * c);
      q[2 * c] = _mm256_and_si256(q4, low4);
      q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low4);
      s[2 * c] = _mm256_set1_epi16(sc[2 * c]);
      s[2 * c + 1] = _mm256_set1_epi16(sc[2 * c + 1]);
    }
    for (int j = 0; j < 4; ++j) {
      const uint8_t* y = ab + j * stride + size_t(b) * sizeof(BlockQ8_K);
      const float dy = f32_at(y);
      acc_min[j] += dmin * dy * float(bsum_dot(y, mins));
      __m256i sumi = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k)
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], load256(y + 4 + 32 * k)), s[k]));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sumi), acc[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]) - acc_min[j];
}

void vec_dot4_q6_K_avx2(const void* w, const void* a, size_t stride, int64_t n, float* out) {
  const uint8_t* x = static_cast<const uint8_t*>(w);
  const uint8_t* ab = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i two = _mm256_set1_epi8(3);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  float acc_off[4] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nb; ++b, x += sizeof(BlockQ6_K)) {
    const float d = f16_at(x + 208);
    int8_t sc[16];
    std::memcpy(sc, x + 192, sizeof sc);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 192)));
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
      acc_off[j] += dd * 32.0f * float(bsum_dot(y, sc16));
      __m256i sumi = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k)
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], load256(y + 4 + 32 * k)), s[k]));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(sumi), acc[j]);
    }
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum(acc[j]) - acc_off[j];
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

void axpy_f16_avx2(float* y, const uint16_t* x, float a, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load_f16x8(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * _cvtsh_ss(x[i]);
}

void axpy_f32_avx2(float* y, const float* x, float a, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

void fill_kernels_avx2(Kernels& k) {
  k.vec_dot[int(GgmlType::F32)] = vec_dot_f32_avx2;
  k.vec_dot[int(GgmlType::F16)] = vec_dot_f16_avx2;
  k.vec_dot[int(GgmlType::Q8_0)] = vec_dot_q8_0_q8_0_avx2;
  k.vec_dot[int(GgmlType::Q4_0)] = vec_dot_q4_0_q8_0_avx2;
  k.vec_dot[int(GgmlType::Q4_K)] = vec_dot_q4_K_q8_K_avx2;
  k.vec_dot[int(GgmlType::Q6_K)] = vec_dot_q6_K_q8_K_avx2;
  k.vec_dot4[int(GgmlType::F32)] = vec_dot4_f32_avx2;
  k.vec_dot4[int(GgmlType::F16)] = vec_dot4_f16_avx2;
  k.vec_dot4[int(GgmlType::Q8_0)] = vec_dot4_q8_0_avx2;
  k.vec_dot4[int(GgmlType::Q4_0)] = vec_dot4_q4_0_avx2;
  k.vec_dot4[int(GgmlType::Q4_K)] = vec_dot4_q4_K_avx2;
  k.vec_dot4[int(GgmlType::Q6_K)] = vec_dot4_q6_K_avx2;
  k.from_float[int(GgmlType::Q8_0)] = quantize_row_q8_0_avx2;
  k.from_float[int(GgmlType::F16)] = from_float_f16_avx2;
  k.to_float[int(GgmlType::F16)] = to_float_f16_avx2;
  k.axpy_f16 = axpy_f16_avx2;
  k.axpy_f32 = axpy_f32_avx2;
}

}  // namespace tdm::cpu

#endif  // __AVX2__ && __FMA__ && __F16C__
