// The per-element arithmetic of tandem's GPU kernels, written once for host and device so
// that a host test (test/backend/kernel-math.test.ts) holds it against the CPU reference
// (native/cpu/quants_ref.cpp): fp16/bf16 conversion, GGUF block decoding into 32-element
// chunks of int8 levels, activation quantization (q8_0, q8_1, q8_K) and the libstdc++
// partial_sort order that the MoE router must reproduce. Block layouts: ggml-common.h.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/iq_grids.h"

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TDM_HD __host__ __device__ __forceinline__
#else
#define TDM_HD inline
#endif

namespace tdm::gpu {

// ggml type ids the GPU kernels compute with (core/ggml_types.h).
enum WeightType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kBF16 = 30,
  kMXFP4 = 39,
};

// Activation (dot) types, as llama.cpp's vec_dot_type picks them for each weight type.
enum ActType : int { kActF32 = 0, kActF16 = 1, kActBF16 = 2, kActQ8_0 = 3, kActQ8_1 = 4, kActQ8_K = 5 };

TDM_HD uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
TDM_HD float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// IEEE fp16 -> float, exact (subnormals, infinities and NaN payloads kept).
TDM_HD float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return bits_float(float_bits(float(m) * 5.9604644775390625e-08f) | sign);  // m * 2^-24
  if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

// float -> IEEE fp16, round to nearest even; overflow gives infinity, NaN a quiet NaN.
TDM_HD uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u);
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // 65520 and up round past the largest half
  if (ax >= 0x38800000u) {                                  // a normal half
    const uint32_t r = ax - (112u << 23);
    const uint32_t keep = r >> 13, drop = r & 0x1fffu;
    return uint16_t(sign | (keep + ((drop > 0x1000u || (drop == 0x1000u && (keep & 1u))) ? 1u : 0u)));
  }
  if (ax <= 0x33000000u) return sign;  // at most 2^-25: zero
  const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
  const int shift = 126 - int(ax >> 23);
  const uint32_t keep = mant >> shift, drop = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
  return uint16_t(sign | (keep + ((drop > half || (drop == half && (keep & 1u))) ? 1u : 0u)));
}

TDM_HD float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

// float -> bf16, round to nearest even; NaN stays NaN (forced quiet), as ggml does.
TDM_HD uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// The value a float becomes once stored as the activation type (f16/bf16 round trips).
TDM_HD float round_to_act(float x, int act) {
  if (act == kActF16) return half_to_float(float_to_half(x));
  if (act == kActBF16) return bf16_to_float(float_to_bf16(x));
  return x;
}

// Loads from 2-byte aligned block fields (GGUF blocks sit at any even offset).
TDM_HD uint16_t ld16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
TDM_HD uint32_t ld32(const uint8_t* p) { return uint32_t(ld16(p)) | (uint32_t(ld16(p + 2)) << 16); }
// A byte at a time, for MXFP4's 17-byte blocks (any offset).
TDM_HD uint32_t ld32_u8(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

// MXFP4: 2^(e - 128), E8M0 exponent e halved, as ggml builds it (e < 2: float subnormals).
TDM_HD float e8m0_half(uint8_t e) { return bits_float(e < 2 ? (0x00200000u << e) : (uint32_t(e - 1) << 23)); }

// Four MXFP4 codes (one per byte, 0..15) to their int8 levels, twice the FP4 E2M1 values, in
// byte-parallel integer steps (no table in device memory, no carries between bytes): bits 0-2
// give the magnitude m -> 0 1 2 3 4 6 8 12, that is m + max(m - 4, 0) + 2 * max(m - 6, 0);
// bit 3 the sign.
TDM_HD int32_t mxfp4_levels4(uint32_t codes) {
  constexpr uint32_t kOnes = 0x01010101u, kHigh = 0x80808080u;
  const uint32_t m = codes & 0x07070707u;
  const uint32_t ge4 = ((m >> 2) & kOnes) * 0xFFu;             // 0xFF in bytes with m >= 4
  const uint32_t ge6 = ((m >> 2) & (m >> 1) & kOnes) * 0xFFu;  // m >= 6
  const uint32_t mag = m + (m & 0x03030303u & ge4) + ((m & kOnes & ge6) << 1);
  const uint32_t neg = ((codes >> 3) & kOnes) * 0xFFu;
  return int32_t((mag & ~neg) | (((kHigh - mag) ^ kHigh) & neg));  // 0x80 - mag never borrows
}

// Four int8 lanes: byte-wise x - 4, x - 8, x - 16, x - 32 for bytes known to be below 8, 16, 32, 64.
TDM_HD int32_t minus4(uint32_t x) { return int32_t((x + 0x7c7c7c7cu) ^ 0x80808080u); }
TDM_HD int32_t minus8(uint32_t x) { return int32_t((x + 0x78787878u) ^ 0x80808080u); }
TDM_HD int32_t minus16(uint32_t x) { return int32_t((x + 0x70707070u) ^ 0x80808080u); }
TDM_HD int32_t minus32(uint32_t x) { return int32_t((x + 0x60606060u) ^ 0x80808080u); }

// Byte k of the result is byte sel_k (0..7, byte k of sel) of the 8 bytes hi:lo.
TDM_HD uint32_t select_bytes(uint32_t lo, uint32_t hi, uint32_t sel) {
#if defined(__CUDA_ARCH__)
  const uint32_t pairs = sel | (sel >> 4);  // __byte_perm takes the selectors as nibbles
  return __byte_perm(lo, hi, (pairs & 0xFFu) | ((pairs >> 8) & 0xFF00u));
#elif defined(__HIP_DEVICE_COMPILE__)
  return __builtin_amdgcn_perm(hi, lo, sel);
#else
  uint32_t out = 0;
  for (int k = 0; k < 4; ++k) {
    const uint32_t s = (sel >> (8 * k)) & 7u;
    out |= (((s < 4 ? lo : hi) >> (8 * (s & 3u))) & 0xFFu) << (8 * k);
  }
  return out;
#endif
}

// Four IQ4_NL/IQ4_XS codes (one per byte, 0..15) to their int8 levels, the grid of ggml's
// kvalues_iq4nl, looked up in registers: codes 0..7 in one byte selection, 8..15 in another.
TDM_HD int32_t iq4nl_levels4(uint32_t codes) {
  constexpr uint32_t kGrid[4] = {0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u};  // -127 -104 ... 113, low byte first
  const uint32_t sel = codes & 0x07070707u;
  const uint32_t neg = select_bytes(kGrid[0], kGrid[1], sel), pos = select_bytes(kGrid[2], kGrid[3], sel);
  const uint32_t high = ((codes >> 3) & 0x01010101u) * 0xFFu;  // 0xFF in bytes with code >= 8
  return int32_t((neg & ~high) | (pos & high));
}

// The IQ2/IQ3 codebooks (core/iq_grids.h): each entry packs 8 (IQ2) or 4 (IQ3) magnitudes, one
// per byte, all in 1..62. In device memory on the GPU (each lane gathers its own entries, so
// constant memory would serialise them); plain arrays in the host builds (emulation, checks).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define TDM_GRID_TABLE static __device__ const
#else
#define TDM_GRID_TABLE static const
#endif
TDM_GRID_TABLE uint64_t kIq2xxsGrid[256] = {TDM_IQ2XXS_GRID};
TDM_GRID_TABLE uint64_t kIq2xsGrid[512] = {TDM_IQ2XS_GRID};
TDM_GRID_TABLE uint64_t kIq2sGrid[1024] = {TDM_IQ2S_GRID};
TDM_GRID_TABLE uint32_t kIq3xxsGrid[256] = {TDM_IQ3XXS_GRID};
TDM_GRID_TABLE uint32_t kIq3sGrid[512] = {TDM_IQ3S_GRID};
#undef TDM_GRID_TABLE

// A 7-bit sign code (IQ2_XXS, IQ2_XS, IQ3_XXS) as its 8 sign bits: the eighth makes the number
// of negatives even (ggml's ksigns_iq2xs).
TDM_HD uint32_t iq_sign_byte(uint32_t code7) {
  code7 &= 127u;
  uint32_t parity = code7 ^ (code7 >> 4);
  parity ^= parity >> 2;
  parity ^= parity >> 1;
  return code7 | ((parity & 1u) << 7);
}

// Four grid magnitudes (one per byte, 1..128) as int8 levels, byte k negated where bit k of
// signs (0..15) is set: 0xFF bytes where negated (the bits spread by a carry-free multiply),
// then -m = (m ^ 0xFF) + 1, which stays inside the byte for m >= 1.
TDM_HD int32_t apply_signs4(uint32_t mag, uint32_t signs) {
  const uint32_t neg = ((signs * 0x00204081u) & 0x01010101u) * 0xFFu;
  return int32_t((mag ^ neg) + (neg & 0x01010101u));
}

// Bits 0..3 of b moved to bit 4 of bytes 0..3.
TDM_HD uint32_t bits_to_bit4(uint32_t b) {
  return ((b & 1u) << 4) | ((b & 2u) << 11) | ((b & 4u) << 18) | ((b & 8u) << 25);
}

// c + the dot product of four signed int8 lanes of a and b.
TDM_HD int32_t dot4(int32_t a, int32_t b, int32_t c) {
#if defined(__CUDA_ARCH__)
  return __dp4a(a, b, c);
#elif defined(__HIP_DEVICE_COMPILE__) && (defined(__gfx908__) || defined(__gfx90a__) || defined(__gfx940__) || \
                                          defined(__gfx941__) || defined(__gfx942__))
  return __builtin_amdgcn_sdot4(a, b, c, false);
#else
  for (int k = 0; k < 4; ++k) c += int32_t(int8_t(uint32_t(a) >> (8 * k))) * int32_t(int8_t(uint32_t(b) >> (8 * k)));
  return c;
#endif
}

// Sub-block j's 6-bit scale and min from a Q4_K/Q5_K scales array (12 bytes).
TDM_HD void scale_min_k4(int j, const uint8_t* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q3_K group g's (0..15) signed 6-bit scale from the block's 12 scale bytes: low 4 bits from
// nibble g / 8 of byte g % 8, top 2 bits from bits 2 (g / 4) of byte 8 + g % 4.
TDM_HD int scale_q3_k(int g, const uint8_t* s) {
  return (((s[g & 7] >> (4 * (g >> 3))) & 0x0F) | (((s[8 + (g & 3)] >> (2 * (g >> 2))) & 3) << 4)) - 32;
}

// 32 consecutive weights of a row as int8 levels q (byte e of q[e/4] is element e), with the
// affine map that gives their values: element e = d * sc(e) * q_e + m, sc(e) = sc0 for e < 16,
// sc1 above. Symmetric types have m = 0, the 32-element types sc0 = sc1 = 1. Q2_K alone
// (kMinPer16) has a min per 16 elements: element e = d * sc(e) * q_e + m * mn(e), with m = -dmin
// and mn(e) = mn0 for e < 16, mn1 above (4-bit min levels); other types leave mn0 = mn1 = 0.
// The IQ2/IQ3 grid types keep signed grid magnitudes in q, the odd scale 2s + 1 in sc and
// their constant (1/8, 1/4 or 1) in d, so that d * sc is exactly the CPU's group multiplier.
struct WChunk {
  int32_t q[8];
  int32_t sc0, sc1;
  float d, m;
  int32_t mn0, mn1;
};

template <uint32_t T>
struct BlockInfo;
template <>
struct BlockInfo<kQ4_0> { static constexpr int kBytes = 18, kChunks = 1, kAct = kActQ8_0; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kQ4_1> { static constexpr int kBytes = 20, kChunks = 1, kAct = kActQ8_1; static constexpr bool kMin = true; };
template <>
struct BlockInfo<kQ5_0> { static constexpr int kBytes = 22, kChunks = 1, kAct = kActQ8_0; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kQ5_1> { static constexpr int kBytes = 24, kChunks = 1, kAct = kActQ8_1; static constexpr bool kMin = true; };
template <>
struct BlockInfo<kQ8_0> { static constexpr int kBytes = 34, kChunks = 1, kAct = kActQ8_0; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kQ4_K> { static constexpr int kBytes = 144, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = true; };
template <>
struct BlockInfo<kQ5_K> { static constexpr int kBytes = 176, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = true; };
template <>
struct BlockInfo<kQ6_K> { static constexpr int kBytes = 210, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kMXFP4> { static constexpr int kBytes = 17, kChunks = 1, kAct = kActQ8_0; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kQ2_K> { static constexpr int kBytes = 84, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = true; };
template <>
struct BlockInfo<kQ3_K> { static constexpr int kBytes = 110, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kIQ4_NL> { static constexpr int kBytes = 18, kChunks = 1, kAct = kActQ8_0; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kIQ4_XS> { static constexpr int kBytes = 136, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kIQ2_XXS> { static constexpr int kBytes = 66, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kIQ2_XS> { static constexpr int kBytes = 74, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kIQ2_S> { static constexpr int kBytes = 82, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kIQ3_XXS> { static constexpr int kBytes = 98, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = false; };
template <>
struct BlockInfo<kIQ3_S> { static constexpr int kBytes = 110, kChunks = 8, kAct = kActQ8_K; static constexpr bool kMin = false; };

// Types whose min is per 16 elements (WChunk's mn0, mn1) rather than one m per chunk.
template <uint32_t T>
constexpr bool kMinPer16 = T == kQ2_K;

// Grid entry i of type T's codebook: 8 magnitudes (IQ2 types) or 4 (IQ3 types), low byte first.
template <uint32_t T>
TDM_HD uint64_t iq_grid_entry(uint32_t i) {
  if constexpr (T == kIQ2_XXS) return kIq2xxsGrid[i];
  if constexpr (T == kIQ2_XS) return kIq2xsGrid[i];
  if constexpr (T == kIQ2_S) return kIq2sGrid[i];
  if constexpr (T == kIQ3_XXS) return kIq3xxsGrid[i];
  if constexpr (T == kIQ3_S) return kIq3sGrid[i];
  return 0;
}

// Decodes chunk c (elements 32c..32c+31) of a row of type T.
template <uint32_t T>
TDM_HD WChunk decode_chunk(const uint8_t* row, int64_t c) {
  WChunk w;
  w.sc0 = w.sc1 = 1;
  w.m = 0.0f;
  w.mn0 = w.mn1 = 0;
  if constexpr (T == kQ4_0 || T == kQ4_1) {
    const uint8_t* b = row + c * BlockInfo<T>::kBytes;
    const uint8_t* qs = b + (T == kQ4_0 ? 2 : 4);
    w.d = half_to_float(ld16(b));
    if (T == kQ4_1) w.m = half_to_float(ld16(b + 2));
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = ld32(qs + 4 * i);
      const uint32_t lo = v & 0x0F0F0F0Fu, hi = (v >> 4) & 0x0F0F0F0Fu;
      w.q[i] = T == kQ4_0 ? minus8(lo) : int32_t(lo);
      w.q[4 + i] = T == kQ4_0 ? minus8(hi) : int32_t(hi);
    }
  } else if constexpr (T == kQ5_0 || T == kQ5_1) {
    const uint8_t* b = row + c * BlockInfo<T>::kBytes;
    const int off = T == kQ5_0 ? 2 : 4;
    w.d = half_to_float(ld16(b));
    if (T == kQ5_1) w.m = half_to_float(ld16(b + 2));
    const uint32_t qh = ld32(b + off);
    const uint8_t* qs = b + off + 4;
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = ld32(qs + 4 * i);
      const uint32_t lo = (v & 0x0F0F0F0Fu) | bits_to_bit4((qh >> (4 * i)) & 0xFu);
      const uint32_t hi = ((v >> 4) & 0x0F0F0F0Fu) | bits_to_bit4((qh >> (16 + 4 * i)) & 0xFu);
      w.q[i] = T == kQ5_0 ? minus16(lo) : int32_t(lo);
      w.q[4 + i] = T == kQ5_0 ? minus16(hi) : int32_t(hi);
    }
  } else if constexpr (T == kQ8_0) {
    const uint8_t* b = row + c * BlockInfo<T>::kBytes;
    w.d = half_to_float(ld16(b));
    for (int i = 0; i < 8; ++i) w.q[i] = int32_t(ld32(b + 2 + 4 * i));
  } else if constexpr (T == kQ4_K || T == kQ5_K) {
    const uint8_t* b = row + (c >> 3) * BlockInfo<T>::kBytes;
    const int j = int(c & 7);
    int sc, mn;
    scale_min_k4(j, b + 4, &sc, &mn);
    w.d = half_to_float(ld16(b));
    w.m = -(half_to_float(ld16(b + 2)) * float(mn));
    w.sc0 = w.sc1 = sc;
    const uint8_t* qs = b + (T == kQ4_K ? 16 : 48) + 32 * (j >> 1);
    const int shift = 4 * (j & 1);
    for (int i = 0; i < 8; ++i) {
      uint32_t v = (ld32(qs + 4 * i) >> shift) & 0x0F0F0F0Fu;
      if (T == kQ5_K) v |= ((ld32(b + 16 + 4 * i) >> j) & 0x01010101u) << 4;
      w.q[i] = int32_t(v);
    }
  } else if constexpr (T == kQ6_K) {
    const uint8_t* b = row + (c >> 3) * BlockInfo<T>::kBytes;
    const int j = int(c & 7), h = j >> 2, quarter = j & 3;
    const uint8_t* ql = b + 64 * h + 32 * (quarter & 1);
    const uint8_t* qh = b + 128 + 32 * h;
    const int nshift = 4 * (quarter >> 1), hshift = 2 * quarter;
    for (int i = 0; i < 8; ++i) {
      const uint32_t lo = (ld32(ql + 4 * i) >> nshift) & 0x0F0F0F0Fu;
      const uint32_t hi = ((ld32(qh + 4 * i) >> hshift) & 0x03030303u) << 4;
      w.q[i] = minus32(lo | hi);
    }
    const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
    w.sc0 = scales[8 * h + 2 * quarter];
    w.sc1 = scales[8 * h + 2 * quarter + 1];
    w.d = half_to_float(ld16(b + 208));
  } else if constexpr (T == kMXFP4) {
    const uint8_t* b = row + c * BlockInfo<T>::kBytes;
    w.d = e8m0_half(b[0]);
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = ld32_u8(b + 1 + 4 * i);
      w.q[i] = mxfp4_levels4(v & 0x0F0F0F0Fu);
      w.q[4 + i] = mxfp4_levels4((v >> 4) & 0x0F0F0F0Fu);
    }
  } else if constexpr (T == kQ2_K || T == kQ3_K) {
    // Chunk j (elements 32j..32j+31) of a super-block: bits 2(j % 4).. of qs[32(j / 4) + l];
    // Q3_K's third bit is bit j of hmask[l], set meaning no -4 offset.
    const uint8_t* b = row + (c >> 3) * BlockInfo<T>::kBytes;
    const int j = int(c & 7);
    const uint8_t* qs = b + (T == kQ2_K ? 16 : 32) + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
    for (int i = 0; i < 8; ++i) {
      const uint32_t v = (ld32(qs + 4 * i) >> shift) & 0x03030303u;
      if constexpr (T == kQ2_K) {
        w.q[i] = int32_t(v);
      } else {
        w.q[i] = minus4(v | (((ld32(b + 4 * i) >> j) & 0x01010101u) << 2));
      }
    }
    if constexpr (T == kQ2_K) {
      w.sc0 = b[2 * j] & 0x0F;
      w.sc1 = b[2 * j + 1] & 0x0F;
      w.mn0 = b[2 * j] >> 4;
      w.mn1 = b[2 * j + 1] >> 4;
      w.d = half_to_float(ld16(b + 80));
      w.m = -half_to_float(ld16(b + 82));
    } else {
      w.sc0 = scale_q3_k(2 * j, b + 96);
      w.sc1 = scale_q3_k(2 * j + 1, b + 96);
      w.d = half_to_float(ld16(b + 108));
    }
  } else if constexpr (T == kIQ4_NL) {
    const uint8_t* b = row + c * BlockInfo<T>::kBytes;
    w.d = half_to_float(ld16(b));
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = ld32(b + 2 + 4 * i);
      w.q[i] = iq4nl_levels4(v & 0x0F0F0F0Fu);
      w.q[4 + i] = iq4nl_levels4((v >> 4) & 0x0F0F0F0Fu);
    }
  } else if constexpr (T == kIQ4_XS) {
    // Sub-block j's 6-bit scale: nibble j % 2 of scales_l[j / 2] (byte 4 on), bits 2j of scales_h.
    const uint8_t* b = row + (c >> 3) * BlockInfo<T>::kBytes;
    const int j = int(c & 7);
    w.d = half_to_float(ld16(b));
    w.sc0 = w.sc1 = (((b[4 + (j >> 1)] >> (4 * (j & 1))) & 0x0F) | (((ld16(b + 2) >> (2 * j)) & 3) << 4)) - 32;
    const uint8_t* qs = b + 8 + 16 * j;
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = ld32(qs + 4 * i);
      w.q[i] = iq4nl_levels4(v & 0x0F0F0F0Fu);
      w.q[4 + i] = iq4nl_levels4((v >> 4) & 0x0F0F0F0Fu);
    }
  } else if constexpr (T == kIQ2_XXS || T == kIQ2_XS || T == kIQ2_S) {
    // Chunk j of a super-block is sub-block j: four groups l of 8 elements, each one grid entry
    // (words 2l, 2l + 1 of q) and a sign byte; a 4-bit scale s per 32 (IQ2_XXS) or per 16
    // elements. Values are d * (0.5 + s) / 4 * level = (d / 8) * (2s + 1) * level.
    const uint8_t* b = row + (c >> 3) * BlockInfo<T>::kBytes;
    const int j = int(c & 7);
    uint32_t idx[4], sign[4], scales;
    if constexpr (T == kIQ2_XXS) {
      // qs[4j..4j+3] as two words: the four 8-bit indices, then four 7-bit sign codes and s.
      const uint32_t a0 = ld32(b + 2 + 8 * j), a1 = ld32(b + 6 + 8 * j);
      for (int l = 0; l < 4; ++l) {
        idx[l] = (a0 >> (8 * l)) & 0xFFu;
        sign[l] = iq_sign_byte(a1 >> (7 * l));
      }
      scales = (a1 >> 28) * 0x11u;  // one scale for both halves
    } else if constexpr (T == kIQ2_XS) {
      // qs[4j + l]: a 9-bit index and a 7-bit sign code; scales[j] (byte 66 on): a nibble per 16.
      for (int l = 0; l < 4; ++l) {
        const uint32_t v = ld16(b + 2 + 8 * j + 2 * l);
        idx[l] = v & 511u;
        sign[l] = iq_sign_byte(v >> 9);
      }
      scales = b[66 + j];
    } else {
      // qs[4j + l]: the low 8 bits of a 10-bit index, bits 2l of qh[j] (byte 66 on) the top two;
      // qs[32 + 4j + l]: the sign byte; scales[j] (byte 74 on): a nibble per 16.
      const uint32_t lo = ld32(b + 2 + 4 * j), signs = ld32(b + 34 + 4 * j), qh = b[66 + j];
      for (int l = 0; l < 4; ++l) {
        idx[l] = ((lo >> (8 * l)) & 0xFFu) | (((qh >> (2 * l)) & 3u) << 8);
        sign[l] = (signs >> (8 * l)) & 0xFFu;
      }
      scales = b[74 + j];
    }
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = iq_grid_entry<T>(idx[l]);
      w.q[2 * l] = apply_signs4(uint32_t(g), sign[l] & 15u);
      w.q[2 * l + 1] = apply_signs4(uint32_t(g >> 32), sign[l] >> 4);
    }
    w.sc0 = 2 * int(scales & 15u) + 1;
    w.sc1 = 2 * int(scales >> 4) + 1;
    w.d = half_to_float(ld16(b)) * 0.125f;  // a power of two: exact
  } else if constexpr (T == kIQ3_XXS || T == kIQ3_S) {
    // Chunk j of a super-block is sub-block j: eight grid entries k of 4 magnitudes (word k of
    // q), indices in qs[8j + k], a sign byte per 8 elements and one 4-bit scale s. Values are
    // d * (0.5 + s) / 2 * level = (d / 4) * (2s + 1) * level (IQ3_XXS), d * (2s + 1) * level (IQ3_S).
    const uint8_t* b = row + (c >> 3) * BlockInfo<T>::kBytes;
    const int j = int(c & 7);
    const uint32_t q_lo = ld32(b + 2 + 8 * j), q_hi = ld32(b + 6 + 8 * j);
    uint32_t signs, qh = 0, s;
    if constexpr (T == kIQ3_XXS) {
      // The word at byte 66 + 4j: four 7-bit sign codes and s.
      const uint32_t aux = ld32(b + 66 + 4 * j);
      signs = 0;
      for (int l = 0; l < 4; ++l) signs |= iq_sign_byte(aux >> (7 * l)) << (8 * l);
      s = aux >> 28;
      w.d = half_to_float(ld16(b)) * 0.25f;  // a power of two: exact
    } else {
      // Bit k of qh[j] (byte 66 on) is index k's ninth bit; signs from byte 74, scales from 106.
      qh = b[66 + j];
      signs = ld32(b + 74 + 4 * j);
      s = (b[106 + (j >> 1)] >> (4 * (j & 1))) & 15u;
      w.d = half_to_float(ld16(b));
    }
    for (int k = 0; k < 8; ++k) {
      const uint32_t i = (((k < 4 ? q_lo : q_hi) >> (8 * (k & 3))) & 0xFFu) | (((qh >> k) & 1u) << 8);
      w.q[k] = apply_signs4(uint32_t(iq_grid_entry<T>(i)), (signs >> (4 * k)) & 15u);
    }
    w.sc0 = w.sc1 = 2 * int(s) + 1;
  }
  return w;
}

TDM_HD int level(const WChunk& w, int e) { return int(int8_t(uint32_t(w.q[e >> 2]) >> (8 * (e & 3)))); }

// Element e of a decoded chunk with the CPU reference's exact float arithmetic
// (dequantize_row_*_ref): (d * sc) * q, then the min added in its own rounding step.
// Products and sums rounded one at a time (never fused into an FMA), as the CPU computes them.
TDM_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
TDM_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

template <uint32_t T>
TDM_HD float dequant_elem(const WChunk& w, int e) {
  const float scaled = BlockInfo<T>::kChunks == 1 ? mul_rn(float(level(w, e)), w.d)
                                                   : mul_rn(mul_rn(w.d, float(e < 16 ? w.sc0 : w.sc1)), float(level(w, e)));
  if constexpr (kMinPer16<T>) return add_rn(scaled, mul_rn(w.m, float(e < 16 ? w.mn0 : w.mn1)));
  if constexpr (BlockInfo<T>::kMin) return add_rn(scaled, w.m);
  return scaled;
}

// One chunk of a quantized activation row: 32 int8 values (8 words), the chunk's scale d and
// s (q8_1: the block's stored d * sum; q8_K: d * the chunk's sum of levels; q8_0: unused).
// A per-16 min (kMinPer16) is summed from the levels instead: mn(e) * a_e, dp4a against the
// min level repeated in each byte, as the CPU sums mins times the q8_K group sums.
template <uint32_t T>
TDM_HD float chunk_dot(const WChunk& w, const int32_t* a, float da, float sa) {
  int32_t lo = 0, hi = 0;
  for (int i = 0; i < 4; ++i) lo = dot4(w.q[i], a[i], lo);
  for (int i = 4; i < 8; ++i) hi = dot4(w.q[i], a[i], hi);
  if constexpr (kMinPer16<T>) {
    const int32_t m0 = w.mn0 * 0x01010101, m1 = w.mn1 * 0x01010101;
    int32_t mins = 0;
    for (int i = 0; i < 4; ++i) mins = dot4(m0, a[i], mins);
    for (int i = 4; i < 8; ++i) mins = dot4(m1, a[i], mins);
    return (w.d * da) * float(w.sc0 * lo + w.sc1 * hi) + (w.m * da) * float(mins);
  }
  return (w.d * da) * float(w.sc0 * lo + w.sc1 * hi) + w.m * sa;
}

// q8_0/q8_1 level of x for inverse scale id: x * id clamped to int8, rounded half away from zero.
TDM_HD int q8_level(float x, float id) {
  float v = x * id;
  v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
  return int(roundf(v));
}

// q8_K level of x for inverse scale iscale: round half to even, clamped above at 127.
TDM_HD int q8k_level(float x, float iscale) {
  const int q = int(rintf(iscale * x));
  return q < 127 ? q : 127;
}

// Quantizes 32 floats as one q8_0/q8_1 block: levels into q, the fp16-rounded scale into *d,
// and (q8_1) the fp16-rounded d * sum(levels) into *s. The device kernel does the same per lane.
TDM_HD void quantize_q8_32(const float* x, int8_t* q, float* d, float* s) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(x[j]));
  const float dd = amax / 127;
  const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    q[j] = int8_t(q8_level(x[j], id));
    sum += q[j];
  }
  *d = half_to_float(float_to_half(dd));
  *s = half_to_float(float_to_half(float(sum) * dd));
}

// Quantizes 256 floats as one q8_K block: levels into q, the scale into *d (0 for all zeros).
TDM_HD void quantize_q8k_256(const float* x, int8_t* q, float* d) {
  int best = 0;
  float amax = 0.0f;
  for (int j = 0; j < 256; ++j) {
    if (fabsf(x[j]) > amax) {
      amax = fabsf(x[j]);
      best = j;
    }
  }
  const float mx = x[best];
  if (mx == 0.0f) {
    for (int j = 0; j < 256; ++j) q[j] = 0;
    *d = 0.0f;
    return;
  }
  const float iscale = -127.0f / mx;
  for (int j = 0; j < 256; ++j) q[j] = int8_t(q8k_level(x[j], iscale));
  *d = 1.0f / iscale;
}

// The order std::partial_sort(idx, idx + k, idx + n, p[a] > p[b]) leaves in idx[0..k) under
// libstdc++ (a max-heap of the first k by the comparator, each later element that beats the
// top replacing it, then a heap sort), ties included: the CPU router uses that call, and ggml's
// top-k order is what the expert weights are summed in. k in [1, n].
struct HeapByP {
  const float* p;
  int32_t* a;
  TDM_HD bool before(int32_t x, int32_t y) const { return p[x] > p[y]; }

  // Fills the hole at `hole` of a heap of len entries with `value` (libstdc++'s adjust step:
  // walk the hole down along the preferred children, then move value up from there).
  TDM_HD void adjust(int hole, int len, int32_t value) const {
    const int top = hole;
    int child = hole;
    while (child < (len - 1) / 2) {
      child = 2 * (child + 1);
      if (before(a[child], a[child - 1])) --child;
      a[hole] = a[child];
      hole = child;
    }
    if ((len & 1) == 0 && child == (len - 2) / 2) {
      child = 2 * (child + 1);
      a[hole] = a[child - 1];
      hole = child - 1;
    }
    int parent = (hole - 1) / 2;
    while (hole > top && before(a[parent], value)) {
      a[hole] = a[parent];
      hole = parent;
      parent = (hole - 1) / 2;
    }
    a[hole] = value;
  }
};

TDM_HD void partial_sort_desc(int32_t* idx, int n, int k, const float* p) {
  const HeapByP h{p, idx};
  if (k >= 2) {
    for (int parent = (k - 2) / 2;; --parent) {
      h.adjust(parent, k, idx[parent]);
      if (parent == 0) break;
    }
  }
  for (int i = k; i < n; ++i) {
    if (h.before(idx[i], idx[0])) {
      const int32_t v = idx[i];
      idx[i] = idx[0];
      h.adjust(0, k, v);
    }
  }
  for (int end = k; end > 1;) {
    --end;
    const int32_t v = idx[end];
    idx[end] = idx[0];
    h.adjust(0, end, v);
  }
}

}  // namespace tdm::gpu
