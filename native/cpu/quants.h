// Quant types on the CPU: scalar reference quantizers, dequantizers and dot products
// for every type tandem computes with. Block layouts are GGUF's (ggml-common.h), byte
// for byte, so tandem reads and writes the files llama.cpp does.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/ggml_types.h"
#include "core/iq_grids.h"

namespace tdm {

// ---- Block layouts (ggml-common.h). Half-precision fields are raw IEEE fp16 bits, all
// multi-byte fields little-endian. Blocks inside a row are packed with no padding, so a
// block may sit at any 2-byte (4-byte for Q8_K) offset: the reference kernels copy each
// block into a local struct and never dereference a block pointer in place.

constexpr int kQK = 32;     // elements per block of the 32-element types
constexpr int kQK_K = 256;  // elements per super-block of the K types

// Q4_0: x = d * (q - 8), q in 0..15; element j in the low nibble of qs[j], j+16 in the high.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// Q4_1: x = d * q + m, q in 0..15; nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
// Q5_0: x = d * (q - 16), q in 0..31; low 4 bits as Q4_0, bit 4 of element j is bit j of
// the little-endian u32 qh.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// Q5_1: x = d * q + m, q in 0..31; bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// Q8_0: x = d * q, q in -128..127 (quantizers use -127..127).
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
// Q8_1: as Q8_0 plus s = d * sum(q) (fp16), the activation type of Q4_1/Q5_1.
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK];
};
// Q4_K: 8 sub-blocks of 32; sub-block j has a 6-bit scale sc_j and 6-bit min m_j packed
// into `scales` (see unpack_scale_min_k4); x = d*sc_j*q - dmin*m_j, q in 0..15. Elements
// 64c..64c+31 are the low nibbles of qs[32c..32c+31], 64c+32..64c+63 the high nibbles.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
// Q5_K: as Q4_K with a fifth bit: element 64c+l (l < 32) takes bit 2c of qh[l], element
// 64c+32+l bit 2c+1; q in 0..31.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; x = d * scales[e/16] * (q - 32),
// q in 0..63. For half h (128 elements) and l < 32: ql[64h+l] holds the low 4 bits of
// elements 128h+l (low nibble) and 128h+64+l (high nibble), ql[64h+32+l] those of
// 128h+32+l and 128h+96+l; qh[32h+l] holds the top 2 bits of elements 128h+l, +32,
// +64 and +96 at bit shifts 0, 2, 4 and 6.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
// Q8_K: activations for the K types; x = d * q with d a float; bsums[g] = sum of the 16
// quants of group g (the K dot products read it for the min terms).
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
// MXFP4 (OCP microscaling, FP4 E2M1 elements with an E8M0 block scale): x = kMxfp4Values[q]
// * e8m0_half(e), q a 4-bit code; nibbles as Q4_0. The table holds twice the E2M1 values, so
// the scale is half the E8M0 one (ggml's kvalues_mxfp4 and GGML_E8M0_TO_FP32_HALF).
struct BlockMXFP4 {
  uint8_t e;
  uint8_t qs[kQK / 2];
};

// Q2_K: 16 groups of 16, x = d * (sc_g & 15) * q - dmin * (sc_g >> 4), q in 0..3. Element
// 128h + 32j + l (h < 2, j < 4, l < 32) is bits 2j..2j+1 of qs[32h + l]; its group is e / 16.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
// Q3_K: 16 groups of 16 with signed 6-bit scales (unpack_scale_q3_K), x = d * s_g * (q - 4),
// q in 0..7. The low two bits sit as Q2_K's; the third is bit 4h + j of hmask[l].
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
// IQ4_NL: x = d * kIq4nlValues[q], q a 4-bit code; nibbles as Q4_0.
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// IQ4_XS: 8 sub-blocks of 32, x = d * (ls_j - 32) * kIq4nlValues[q]; ls_j's low 4 bits are
// nibble j % 2 of scales_l[j / 2], its top 2 bits bits 2j..2j+1 of scales_h. Sub-block j's
// codes are qs[16j..16j+15], nibbles as Q4_0.
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQK_K / 64];
  uint8_t qs[kQK_K / 2];
};

// The IQ2/IQ3 grid types: every 8 weights (IQ2) or 4 (IQ3) are one entry of a codebook
// (core/iq_grids.h) times a sign each and a per-16 or per-32 scale. Element 32b + 8l + j
// (sub-block b < 8, group l < 4, j < 8) is byte j of group l's entry (IQ3: of entry 2l for
// j < 4, 2l + 1 for j >= 4), negated where bit j of the group's sign byte is set.
//
// IQ2_XXS: per sub-block b, qs[4b..4b+3] hold (as two little-endian words a0, a1) the four
// 8-bit grid indices in a0's bytes, four 7-bit sign codes in bits 7l.. of a1 (kSignsIq2), and
// the 4-bit scale s in a1's top bits: x = d * (0.5 + s) / 4 * grid * sign.
struct BlockIQ2_XXS {
  uint16_t d;
  uint16_t qs[kQK_K / 8];
};
// IQ2_XS: qs[4b + l] = 9-bit grid index | 7-bit sign code << 9; scales[b]'s low nibble scales
// groups 0-1, the high nibble groups 2-3: x = d * (0.5 + s) / 4 * grid * sign.
struct BlockIQ2_XS {
  uint16_t d;
  uint16_t qs[kQK_K / 8];
  uint8_t scales[kQK_K / 32];
};
// IQ2_S: qs[4b + l] is the low 8 bits of a 10-bit grid index, bits 2l..2l+1 of qh[b] the top
// two; qs[32 + 4b + l] is group l's full sign byte; scales as IQ2_XS.
struct BlockIQ2_S {
  uint16_t d;
  uint8_t qs[kQK_K / 4];
  uint8_t qh[kQK_K / 32];
  uint8_t scales[kQK_K / 32];
};
// IQ3_XXS: qs[8b + 2l], qs[8b + 2l + 1] are group l's two 8-bit grid indices; qs[64 + 4b..]
// is a little-endian word with IQ2_XXS's sign codes and scale: x = d * (0.5 + s) / 2 * grid * sign.
struct BlockIQ3_XXS {
  uint16_t d;
  uint8_t qs[3 * kQK_K / 8];
};
// IQ3_S: qs[8b + 2l + h] is the low 8 bits of a 9-bit grid index, bit 2l + h of qh[b] the top
// one; signs[4b + l] is group l's sign byte; nibble b % 2 of scales[b / 2] is s:
// x = d * (1 + 2s) * grid * sign.
struct BlockIQ3_S {
  uint16_t d;
  uint8_t qs[kQK_K / 4];
  uint8_t qh[kQK_K / 32];
  uint8_t signs[kQK_K / 8];
  uint8_t scales[kQK_K / 64];
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20, "q4 block size");
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "q5 block size");
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36, "q8 block size");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176, "q4_K/q5_K block size");
static_assert(sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292, "q6_K/q8_K block size");
static_assert(sizeof(BlockMXFP4) == 17, "mxfp4 block size");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110, "q2_K/q3_K block size");
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136, "iq4 block size");
static_assert(sizeof(BlockIQ2_XXS) == 66 && sizeof(BlockIQ2_XS) == 74 && sizeof(BlockIQ2_S) == 82, "iq2 block size");
static_assert(sizeof(BlockIQ3_XXS) == 98 && sizeof(BlockIQ3_S) == 110, "iq3 block size");

// IQ4_NL/IQ4_XS levels: a non-uniform 4-bit grid (ggml's kvalues_iq4nl).
constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Q3_K group g's (0..15) scale, as stored plus 32: low 4 bits from nibble g / 8 of byte g % 8,
// top 2 bits from bits 2(g / 4) of byte 8 + g % 4.
inline int unpack_scale_q3_K(int g, const uint8_t* scales) {
  const int low = (scales[g % 8] >> (4 * (g / 8))) & 0x0F;
  const int high = (scales[8 + g % 4] >> (2 * (g / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// IQ4_XS sub-block j's (0..7) scale, as stored plus 32.
inline int unpack_scale_iq4_xs(int j, const uint8_t* scales_l, uint16_t scales_h) {
  return (((scales_l[j / 2] >> (4 * (j % 2))) & 0x0F) | (((scales_h >> (2 * j)) & 3) << 4)) - 32;
}

// The IQ2/IQ3 codebooks (core/iq_grids.h).
alignas(64) inline constexpr uint64_t kIq2xxsGrid[256] = {TDM_IQ2XXS_GRID};
alignas(64) inline constexpr uint64_t kIq2xsGrid[512] = {TDM_IQ2XS_GRID};
alignas(64) inline constexpr uint64_t kIq2sGrid[1024] = {TDM_IQ2S_GRID};
alignas(64) inline constexpr uint32_t kIq3xxsGrid[256] = {TDM_IQ3XXS_GRID};
alignas(64) inline constexpr uint32_t kIq3sGrid[512] = {TDM_IQ3S_GRID};

// A 7-bit sign code (IQ2_XXS, IQ2_XS, IQ3_XXS) as its 8 sign bits: the eighth makes the
// number of negatives even (ggml's ksigns_iq2xs).
constexpr uint8_t iq2_sign_byte(uint32_t code7) {
  uint32_t parity = code7 ^ (code7 >> 4);
  parity ^= parity >> 2;
  parity ^= parity >> 1;
  return uint8_t((code7 & 127) | ((parity & 1) << 7));
}

constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// 2^(e - 128), the value of E8M0 exponent e halved, exactly as ggml builds it (e < 2 gives the
// float subnormals 2^-128 and 2^-127; e = 255 is 2^127, not NaN).
inline float e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? (0x00200000u << e) : (uint32_t(e - 1) << 23);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Sub-block j's (0..7) 6-bit scale and min from a Q4_K/Q5_K `scales` array: for j < 4 the
// low 6 bits of bytes j and j+4; for j >= 4 the nibbles of byte j+4 plus the top 2 bits
// of bytes j-4 (scale) and j (min).
inline void unpack_scale_min_k4(int j, const uint8_t* scales, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = uint8_t((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4));
    *m = uint8_t((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// ---- Type-generic entry points.

// The activation type a weight type's dot product takes (llama.cpp's vec_dot_type):
// F32->F32, F16->F16, BF16->BF16, Q4_0/Q5_0/Q8_0/MXFP4/IQ4_NL->Q8_0, Q4_1/Q5_1->Q8_1, K types and
// IQ4_XS and the IQ2/IQ3 types->Q8_K, Q8_1->Q8_1, Q8_K->Q8_K. Throws tdm::Error(TDM_UNSUPPORTED) for a type tandem cannot compute with.
GgmlType vec_dot_type(GgmlType weight_type);

// Converts n floats (n a multiple of the type's block size) to the type's blocks.
// Throws tdm::Error(TDM_UNSUPPORTED) for a type tandem cannot quantize, and
// tdm::Error(TDM_BAD_ARGUMENT) for a bad n or, for block types, a NaN or infinite input.
// Same algorithms as llama.cpp's quantize_row_*_ref (no importance matrix), so the same
// input gives the same bytes, except for the IQ2/IQ3 grid types: llama.cpp quantizes some of
// them only with an importance matrix, so tandem's own search writes them (valid blocks that
// llama.cpp reads alike, not its bytes). `src` needs float alignment; `dst` any alignment.
void quantize_row_ref(GgmlType type, const float* src, void* dst, int64_t n);

// Converts n elements of the type's blocks back to floats (exactly as llama.cpp's
// dequantize_row_* computes them). `src` may have any alignment.
void dequantize_row_ref(GgmlType type, const void* src, float* dst, int64_t n);

// Dot product of n elements: `w` in `type`, `a` in vec_dot_type(type). Integer sums per
// block, float accumulation across blocks (f32/f16/bf16: float products, double sum).
float vec_dot_ref(GgmlType type, const void* w, const void* a, int64_t n);

// ---- Per-type reference kernels (<op>_<dtype>_ref); n is a multiple of the block size
// and is not checked here: the type-generic entry points above check it.

void quantize_row_q4_0_ref(const float* src, void* dst, int64_t n);
void quantize_row_q4_1_ref(const float* src, void* dst, int64_t n);
void quantize_row_q5_0_ref(const float* src, void* dst, int64_t n);
void quantize_row_q5_1_ref(const float* src, void* dst, int64_t n);
void quantize_row_q8_0_ref(const float* src, void* dst, int64_t n);
void quantize_row_q8_1_ref(const float* src, void* dst, int64_t n);
void quantize_row_q2_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_q3_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_q4_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_q5_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_q6_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_q8_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_mxfp4_ref(const float* src, void* dst, int64_t n);
void quantize_row_iq4_nl_ref(const float* src, void* dst, int64_t n);
void quantize_row_iq4_xs_ref(const float* src, void* dst, int64_t n);
void quantize_row_iq2_xxs_ref(const float* src, void* dst, int64_t n);
void quantize_row_iq2_xs_ref(const float* src, void* dst, int64_t n);
void quantize_row_iq2_s_ref(const float* src, void* dst, int64_t n);
void quantize_row_iq3_xxs_ref(const float* src, void* dst, int64_t n);
void quantize_row_iq3_s_ref(const float* src, void* dst, int64_t n);

void dequantize_row_q4_0_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q4_1_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q5_0_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q5_1_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q8_0_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q8_1_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q2_K_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q3_K_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q4_K_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q5_K_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q6_K_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q8_K_ref(const void* src, float* dst, int64_t n);
void dequantize_row_mxfp4_ref(const void* src, float* dst, int64_t n);
void dequantize_row_iq4_nl_ref(const void* src, float* dst, int64_t n);
void dequantize_row_iq4_xs_ref(const void* src, float* dst, int64_t n);
void dequantize_row_iq2_xxs_ref(const void* src, float* dst, int64_t n);
void dequantize_row_iq2_xs_ref(const void* src, float* dst, int64_t n);
void dequantize_row_iq2_s_ref(const void* src, float* dst, int64_t n);
void dequantize_row_iq3_xxs_ref(const void* src, float* dst, int64_t n);
void dequantize_row_iq3_s_ref(const void* src, float* dst, int64_t n);

float vec_dot_f32_ref(const void* w, const void* a, int64_t n);
float vec_dot_f16_ref(const void* w, const void* a, int64_t n);
float vec_dot_bf16_ref(const void* w, const void* a, int64_t n);
float vec_dot_q4_0_q8_0_ref(const void* w, const void* a, int64_t n);
float vec_dot_q4_1_q8_1_ref(const void* w, const void* a, int64_t n);
float vec_dot_q5_0_q8_0_ref(const void* w, const void* a, int64_t n);
float vec_dot_q5_1_q8_1_ref(const void* w, const void* a, int64_t n);
float vec_dot_q8_0_q8_0_ref(const void* w, const void* a, int64_t n);
float vec_dot_q8_1_q8_1_ref(const void* w, const void* a, int64_t n);
float vec_dot_q2_K_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_q3_K_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_q4_K_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_q5_K_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_q6_K_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_q8_K_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_mxfp4_q8_0_ref(const void* w, const void* a, int64_t n);
float vec_dot_iq4_nl_q8_0_ref(const void* w, const void* a, int64_t n);
float vec_dot_iq4_xs_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_iq2_xxs_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_iq2_xs_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_iq2_s_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_iq3_xxs_q8_K_ref(const void* w, const void* a, int64_t n);
float vec_dot_iq3_s_q8_K_ref(const void* w, const void* a, int64_t n);

// fp16 / bf16 scalar conversions (round to nearest even, as ggml does). fp16: values
// that round past 65504 become infinity; NaN becomes a quiet NaN of the same sign.
// bf16: NaN keeps its top bits and is forced quiet (ggml's rule); no flush of subnormals.
uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);
float bf16_to_fp32(uint16_t h);

}  // namespace tdm
