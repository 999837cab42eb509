// The IQ2/IQ3 grid types' super-blocks (iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s; layouts in
// quants.h) unpacked with AVX2 for the x86 kernel files. Each of them (avx2/, avxvnni/, avx512/)
// includes this and compiles its own copy with its own flags (internal linkage), so that no
// AVX-512 code reaches a processor through the AVX2 table.
//
// An unpacked super-block (Iq*Shared) gives, for each 32-element sub-block j: its magnitudes
// (mag(j): four 8-byte or eight 4-byte codebook entries, llama.cpp's grids); its 32 sign bits,
// bit i of byte l negating element 8l + i (signs4(j): the four bytes in every dword; signs8(p):
// sub-blocks 2p and 2p + 1 as one 64-bit word); and 2s + 1 of each 16-element group g (int16
// lane g of scales16; scale_halves(j): groups 2j and 2j + 1 in the low and high 128 bits). What
// the sub-blocks share (sign codes, scales, the top bits of 9- and 10-bit indices) is unpacked
// for the whole super-block with vector operations; the codebook loads are left to mag(j).
#pragma once
#if defined(__AVX2__)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/quants.h"

namespace tdm::cpu {
namespace {

inline uint64_t iq_load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t iq_load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline __m256i iq_load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// The four 8-byte codebook entries g[0..3], g[0] lowest.
template <typename Index>
inline __m256i iq_entries8(const uint64_t* grid, const Index* g) {
  return _mm256_set_epi64x(static_cast<long long>(grid[g[3]]), static_cast<long long>(grid[g[2]]), static_cast<long long>(grid[g[1]]),
                           static_cast<long long>(grid[g[0]]));
}
// The eight 4-byte entries g[0..7], paired in 64-bit registers first (half the vector inserts).
template <typename Index>
inline __m256i iq_entries4(const uint32_t* grid, const Index* g) {
  auto pair = [&](int i) { return static_cast<long long>(uint64_t(grid[g[i + 1]]) << 32 | grid[g[i]]); };
  return _mm256_set_epi64x(pair(6), pair(4), pair(2), pair(0));
}

// Bytes holding 7-bit sign codes (top bit clear) with their eighth sign: bit 7 set where the
// code has an odd number of ones, so that every sign byte has an even number (iq2_sign_byte).
inline __m256i iq_with_parity(__m256i codes) {
  // 0x80 for the nibbles 0..15 of odd parity; a byte's parity is that of its two nibbles' xor.
  const __m256i odd = _mm256_setr_epi8(0, -128, -128, 0, -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0,
                                       0, -128, -128, 0, -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0);
  const __m256i fold = _mm256_and_si256(_mm256_xor_si256(codes, _mm256_srli_epi16(codes, 4)), _mm256_set1_epi8(0x0F));
  return _mm256_or_si256(codes, _mm256_shuffle_epi8(odd, fold));
}
// Eight words of four 7-bit sign codes each (bits 7l..7l+6, l < 4) as their four sign bytes.
inline __m256i iq_sign_bytes_of_codes(__m256i w) {
  __m256i s = _mm256_and_si256(w, _mm256_set1_epi32(0x7F));
  s = _mm256_or_si256(s, _mm256_and_si256(_mm256_slli_epi32(w, 1), _mm256_set1_epi32(0x7F00)));
  s = _mm256_or_si256(s, _mm256_and_si256(_mm256_slli_epi32(w, 2), _mm256_set1_epi32(0x7F0000)));
  s = _mm256_or_si256(s, _mm256_and_si256(_mm256_slli_epi32(w, 3), _mm256_set1_epi32(0x7F000000)));
  return iq_with_parity(s);
}
// One 4-bit scale s per dword as 2s + 1 in both of its int16 lanes (the two groups of a
// 32-element sub-block share it).
inline __m256i iq_odd_scales(__m256i s) {
  const __m256i t = _mm256_or_si256(_mm256_slli_epi32(s, 1), _mm256_set1_epi32(1));
  return _mm256_or_si256(t, _mm256_slli_epi32(t, 16));
}
// Sixteen 4-bit scales, the nibbles of 8 bytes (low first), as 2s + 1 in int16 lanes.
inline __m256i iq_odd_scales16(const uint8_t* scales) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales));
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m128i s = _mm_unpacklo_epi8(_mm_and_si128(b, m4), _mm_and_si128(_mm_srli_epi16(b, 4), m4));
  return _mm256_cvtepu8_epi16(_mm_or_si128(_mm_add_epi8(s, s), _mm_set1_epi8(1)));
}
// Groups 2j and 2j + 1 of sixteen int16 scales, in every int16 lane of the low and the high 128 bits.
inline __m256i iq_group_pair(__m256i scales16, int j) {
  const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
  return _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(scales16, _mm256_set1_epi32(j)), spread);
}
inline __m256i iq_dword_at(__m256i v, int j) { return _mm256_permutevar8x32_epi32(v, _mm256_set1_epi32(j)); }
inline uint64_t iq_qword_at(__m256i v, int p) {
  const __m128i half = p < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
  return uint64_t(p % 2 == 0 ? _mm_cvtsi128_si64(half) : _mm_extract_epi64(half, 1));
}

// Two vectors of four sub-blocks' dwords each, merged through SHUFPS or PACKUSWB (sub-blocks 0,
// 1, 4, 5 in the low lane, 2, 3, 6, 7 in the high), back in sub-block order.
inline __m256i iq_lanes_in_order(__m256i v) { return _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0)); }

// Where one row's q8_K activations lie, for T tokens: token t's super-block b has its 256
// quants at q8(t, b) and its float scale at d(t, b). The dot products take BlockQ8_K rows, the
// packed gemms ActQ8_K rows (quants, then the scales), through the same kernels.
struct IqActs {
  const uint8_t* base;
  size_t stride;          // bytes between tokens
  size_t q8_at, q8_step;  // super-block b's quants: q8_at + b * q8_step
  size_t d_at, d_step;    // its scale: d_at + b * d_step
  const uint8_t* q8(int t, int64_t b) const { return base + size_t(t) * stride + q8_at + size_t(b) * q8_step; }
  float d(int t, int64_t b) const {
    float v;
    std::memcpy(&v, base + size_t(t) * stride + d_at + size_t(b) * d_step, 4);
    return v;
  }
  static IqActs blocks(const void* a, size_t stride) { return {static_cast<const uint8_t*>(a), stride, 4, sizeof(BlockQ8_K), 0, sizeof(BlockQ8_K)}; }
};

// IQ2_XXS: sub-block j is the words a0 (four 8-bit indices) and a1 (four sign codes, the scale
// in its top 4 bits) at qs + 8j.
struct Iq2xxsShared {
  static constexpr size_t kBytes = sizeof(BlockIQ2_XXS);
  static constexpr float kScale = 0.125f;  // x = d * (2s + 1) / 8 * grid * sign
  const uint8_t* x;
  __m256i sign_bytes, scales16;  // sub-block j's four sign bytes in dword j
  explicit Iq2xxsShared(const uint8_t* block) : x(block) {
    const __m256 v0 = _mm256_castsi256_ps(iq_load256(x + 2)), v1 = _mm256_castsi256_ps(iq_load256(x + 34));
    const __m256i a1 = iq_lanes_in_order(_mm256_castps_si256(_mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1))));
    sign_bytes = iq_sign_bytes_of_codes(a1);
    scales16 = iq_odd_scales(_mm256_srli_epi32(a1, 28));
  }
  __m256i mag(int j) const { return iq_entries8(kIq2xxsGrid, x + 2 + 8 * j); }
  __m256i signs4(int j) const { return iq_dword_at(sign_bytes, j); }
  uint64_t signs8(int p) const { return iq_qword_at(sign_bytes, p); }
  __m256i scale_halves(int j) const { return iq_dword_at(scales16, j); }
};

// IQ2_XS: qs[4j + l] a 9-bit index and a sign code; a scale nibble per 16 elements.
struct Iq2xsShared {
  static constexpr size_t kBytes = sizeof(BlockIQ2_XS);
  static constexpr float kScale = 0.125f;
  __m256i sign_bytes, scales16;
  alignas(32) uint16_t index[32];
  explicit Iq2xsShared(const uint8_t* x) {
    const __m256i v0 = iq_load256(x + 2), v1 = iq_load256(x + 34);
    const __m256i codes = _mm256_packus_epi16(_mm256_srli_epi16(v0, 9), _mm256_srli_epi16(v1, 9));
    sign_bytes = iq_lanes_in_order(iq_with_parity(codes));
    const __m256i m9 = _mm256_set1_epi16(511);
    _mm256_store_si256(reinterpret_cast<__m256i*>(index), _mm256_and_si256(v0, m9));
    _mm256_store_si256(reinterpret_cast<__m256i*>(index + 16), _mm256_and_si256(v1, m9));
    scales16 = iq_odd_scales16(x + offsetof(BlockIQ2_XS, scales));
  }
  __m256i mag(int j) const { return iq_entries8(kIq2xsGrid, index + 4 * j); }
  __m256i signs4(int j) const { return iq_dword_at(sign_bytes, j); }
  uint64_t signs8(int p) const { return iq_qword_at(sign_bytes, p); }
  __m256i scale_halves(int j) const { return iq_group_pair(scales16, j); }
};

// IQ2_S: 10-bit indices (low bytes in qs, bits 2l..2l+1 of qh[j] on top of index 4j + l), full
// sign bytes after them, scales as IQ2_XS.
struct Iq2sShared {
  static constexpr size_t kBytes = sizeof(BlockIQ2_S);
  static constexpr float kScale = 0.125f;
  const uint8_t* signs;
  __m256i scales16;
  alignas(32) uint16_t index[32];
  explicit Iq2sShared(const uint8_t* x) : signs(x + 2 + 32) {
    const __m256i qh = _mm256_set1_epi64x(static_cast<long long>(iq_load_u64(x + offsetof(BlockIQ2_S, qh))));
    // Index 4j + l: qh[j] in its int16 lane, times 2^(8 - 2l), masked to bits 8..9.
    const __m256i mul = _mm256_setr_epi16(256, 64, 16, 4, 256, 64, 16, 4, 256, 64, 16, 4, 256, 64, 16, 4);
    for (int h = 0; h < 2; ++h) {
      const __m256i low = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 + 16 * h)));
      const int8_t b = int8_t(4 * h);
      const __m256i spread = _mm256_setr_epi8(b, -1, b, -1, b, -1, b, -1, b + 1, -1, b + 1, -1, b + 1, -1, b + 1, -1, b + 2, -1, b + 2, -1, b + 2,
                                              -1, b + 2, -1, b + 3, -1, b + 3, -1, b + 3, -1, b + 3, -1);
      const __m256i high = _mm256_and_si256(_mm256_mullo_epi16(_mm256_shuffle_epi8(qh, spread), mul), _mm256_set1_epi16(0x300));
      _mm256_store_si256(reinterpret_cast<__m256i*>(index + 16 * h), _mm256_or_si256(low, high));
    }
    scales16 = iq_odd_scales16(x + offsetof(BlockIQ2_S, scales));
  }
  __m256i mag(int j) const { return iq_entries8(kIq2sGrid, index + 4 * j); }
  __m256i signs4(int j) const { return _mm256_set1_epi32(int32_t(iq_load_u32(signs + 4 * j))); }
  uint64_t signs8(int p) const { return iq_load_u64(signs + 8 * p); }
  __m256i scale_halves(int j) const { return iq_group_pair(scales16, j); }
};

// IQ3_XXS: eight 8-bit indices per sub-block, then per sub-block a word of four sign codes with
// the scale in its top 4 bits.
struct Iq3xxsShared {
  static constexpr size_t kBytes = sizeof(BlockIQ3_XXS);
  static constexpr float kScale = 0.25f;  // x = d * (2s + 1) / 4 * grid * sign
  const uint8_t* x;
  __m256i sign_bytes, scales16;
  explicit Iq3xxsShared(const uint8_t* block) : x(block) {
    const __m256i w = iq_load256(x + 2 + 64);
    sign_bytes = iq_sign_bytes_of_codes(w);
    scales16 = iq_odd_scales(_mm256_srli_epi32(w, 28));
  }
  __m256i mag(int j) const { return iq_entries4(kIq3xxsGrid, x + 2 + 8 * j); }
  __m256i signs4(int j) const { return iq_dword_at(sign_bytes, j); }
  uint64_t signs8(int p) const { return iq_qword_at(sign_bytes, p); }
  __m256i scale_halves(int j) const { return iq_dword_at(scales16, j); }
};

// IQ3_S: 9-bit indices (low bytes in qs, bit i of qh[j] on top of index 8j + i), full sign
// bytes, a scale nibble per sub-block.
struct Iq3sShared {
  static constexpr size_t kBytes = sizeof(BlockIQ3_S);
  static constexpr float kScale = 1.0f;  // x = d * (2s + 1) * grid * sign
  const uint8_t* signs;
  __m256i scales16;
  alignas(32) uint16_t index[64];
  explicit Iq3sShared(const uint8_t* x) : signs(x + offsetof(BlockIQ3_S, signs)) {
    const __m256i qh = _mm256_set1_epi64x(static_cast<long long>(iq_load_u64(x + offsetof(BlockIQ3_S, qh))));
    const __m256i bit = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    for (int h = 0; h < 4; ++h) {
      const __m256i low = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 + 16 * h)));
      const int8_t b = int8_t(2 * h);
      const __m256i spread = _mm256_setr_epi8(b, -1, b, -1, b, -1, b, -1, b, -1, b, -1, b, -1, b, -1, b + 1, -1, b + 1, -1, b + 1, -1, b + 1, -1,
                                              b + 1, -1, b + 1, -1, b + 1, -1, b + 1, -1);
      const __m256i set = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_shuffle_epi8(qh, spread), bit), bit);
      _mm256_store_si256(reinterpret_cast<__m256i*>(index + 16 * h), _mm256_or_si256(low, _mm256_and_si256(set, _mm256_set1_epi16(256))));
    }
    const __m256i packed = _mm256_set1_epi32(int32_t(iq_load_u32(x + offsetof(BlockIQ3_S, scales))));
    scales16 = iq_odd_scales(_mm256_and_si256(_mm256_srlv_epi32(packed, _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)), _mm256_set1_epi32(15)));
  }
  __m256i mag(int j) const { return iq_entries4(kIq3sGrid, index + 8 * j); }
  __m256i signs4(int j) const { return _mm256_set1_epi32(int32_t(iq_load_u32(signs + 4 * j))); }
  uint64_t signs8(int p) const { return iq_load_u64(signs + 8 * p); }
  __m256i scale_halves(int j) const { return iq_dword_at(scales16, j); }
};

}  // namespace
}  // namespace tdm::cpu

#endif  // __AVX2__
