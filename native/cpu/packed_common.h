// What the instruction sets' packed-weight kernels share (see kernels.h, PackedOps): the group
// layouts, the packed q8_K activation row and the tile dispatch. Each kernel file
// includes it and compiles its own copy with its own flags (internal linkage), so that no
// AVX-512 code reaches a processor through the AVX2 table.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/kernels.h"
#include "cpu/quants.h"

namespace tdm::cpu {
namespace {

constexpr int64_t G = kPackRows;

inline size_t round64(size_t n) { return (n + 63) & ~size_t(63); }
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// ---- prefetch of a decode tile's weights.

// Decode reads each packed group once, front to back: its quant plane, then its small planes
// (scales, fifth bits), then the next group. Before reading quant vector v (64 bytes of the
// quant plane), a one-token tile asks for the line `distance` bytes ahead of its position in
// that stream, v * kStep, where kStep is the layout's group bytes per quant vector
// (kStreamStep). Counted in the quant plane alone, the small planes' worth of each next
// group's first quants was never asked for (q4_K: 2 KB of an 18 KB group). Steps over 80
// bytes ask twice, half a step apart, or every third line or so would be skipped (q5_1:
// 96 bytes a vector, measured 6% slower with one request than with the quant-plane walk).
//
// Layouts whose small planes are an eighth of the group or more (kStep >= 72) also ask for
// the line kStreamFarBytes ahead into L2: the hardware prefetcher does not follow their
// streams, and 4 KB ahead does not cover a VM's memory latency (EPYC VM, one thread: q4_K
// +11-17%, q5_K +33%, q4_0 +23%, q5_0 +40%). q8_0 and mxfp4 (68) stream nearly as one
// plane; there the far requests measured 2-3% slower.
constexpr int64_t kStreamFarBytes = 24576;

// kFar overrides that rule for a layout measured the other way.
template <size_t kStep, bool kFar = (kStep >= 72)>
inline void prefetch_group_stream(const uint8_t* g, int64_t v, int64_t distance) {
  const uint8_t* p = g + distance + size_t(v) * kStep;
  __builtin_prefetch(p, 0, 3);
  if constexpr (kStep > 80) __builtin_prefetch(p + kStep / 2, 0, 3);
  if constexpr (kFar) {
    const uint8_t* far = g + kStreamFarBytes + size_t(v) * kStep;
    __builtin_prefetch(far, 0, 2);  // prefetcht1: into L2
    if constexpr (kStep > 80) __builtin_prefetch(far + kStep / 2, 0, 2);
  }
}

// A group's small planes (scales, mins, exponents, high bits) are not read after its quants
// but beside them, unit by unit (block or super-block): a second stream that starts again at
// every group, which the walk above reaches only as the group ends, too late for the next
// group's first units, and which is too short for the hardware to learn. So as a one-token
// tile (or the first tile of a few, kStream) starts unit u of its group, it asks (into L2) for the lines of unit u's share of the
// next group's small planes: its bytes from u * kSmallPerUnit to (u + 1) * kSmallPerUnit, from
// `next_small`, where they start. Every layout lays out its units' quants first and then its
// small planes (kSmallPerUnit bytes a unit in all, from small_at(n)), and groups lie end to
// end, so by the time a group ends the next one's small planes are on their way. Past a task's
// last group the requests are harmless hints.
//
// Not asked for (next_small_planes gives null):
// - where the layout's kernels measured slower with it, bound by decoding their bits, not by
//   the reads: Q2KLayout and Q3KLayout set kPrefetchSmall false (their AVX-512 kernels 3-7%
//   slower; q2_K's AVX2 kernel shares the layout and the setting, unmeasured);
// - where the small planes are over an eighth of the quants (those layouts walk far, kStep >=
//   72) and the group's quants end within the far walk's reach, less 4 KB for the memory's
//   latency: the far walk already has the next group's small planes on their way, and the
//   requests, one or more a block, only cost (AVX-512 at 2048 columns: q5_0, q4_1 7% slower).
template <typename L>
inline const uint8_t* next_small_planes(const uint8_t* g, int64_t n) {
  if constexpr (!L::kPrefetchSmall) return nullptr;
  const size_t quants = L::small_at(n), small = L::bytes(n) - quants;
  if (8 * small > quants && quants + 4096 <= size_t(kStreamFarBytes)) return nullptr;
  return g + L::bytes(n) + quants;
}
template <typename L>
inline void prefetch_next_small(const uint8_t* next_small, int64_t u) {
  if constexpr (L::kPrefetchSmall) {
    if (next_small == nullptr) return;
    const size_t lo = size_t(u) * L::kSmallPerUnit, hi = lo + L::kSmallPerUnit;
    for (size_t a = (lo + 63) & ~size_t(63); a < hi; a += 64) __builtin_prefetch(next_small + a, 0, 2);
  }
}

// ---- tile dispatch: a kernel's tile<T> for T = 1..MaxT tokens, chosen at run time.

// kStream: the tile is the first to read its group, from memory, in a gemm of few tokens
// (gemm_packed). Kernels whose larger tiles skip the prefetch (it slowed prefill, whose groups
// come from L2, by about 6%) declare kStreamTiles and prefetch in every tile<T, true>.
template <typename K, typename = void>
struct HasStreamTiles : std::false_type {};
template <typename K>
struct HasStreamTiles<K, std::void_t<decltype(K::kStreamTiles)>> : std::true_type {};

template <typename K, int T, bool kStream = false>
struct TileTable {
  static void run(int nt, const uint8_t* g, int64_t n, const uint8_t* act, size_t as, float* y, int64_t ys, int64_t valid) {
    if (nt == T) {
      if constexpr (kStream && HasStreamTiles<K>::value) K::template tile<T, true>(g, n, act, as, y, ys, valid);
      else K::template tile<T>(g, n, act, as, y, ys, valid);
    } else {
      TileTable<K, T - 1, kStream>::run(nt, g, n, act, as, y, ys, valid);
    }
  }
};
template <typename K, bool kStream>
struct TileTable<K, 0, kStream> {
  static void run(int, const uint8_t*, int64_t, const uint8_t*, size_t, float*, int64_t, int64_t) {}
};

// Up to this many tokens (a few sequences decoding together, a short chunk) a task is a long
// stretch of groups read from memory (plan_tasks). There groups go outside and token tiles
// inside: each group's first tile streams it from memory, prefetching ahead, and the later
// tiles find it in L1/L2. With token tiles outside, every tile would stream every group from
// memory, and the larger tiles, which do not prefetch, wait on it (tinyllama Q4_K_M, a step of
// 3 tokens took 1.7-2.1x the time of one before this).
constexpr int64_t kGroupOuterTokens = 16;

// (optional) K::group_tokens(g, n, act, as, n_tokens, y, ys, valid): one group against
// n_tokens > kMaxT tokens at once, for kernels whose tiles spend most of their time decoding
// the group (the IQ2/IQ3 grid types): it decodes the group once and runs every token tile over
// the decoded rows, with the bits its tiles give.
template <typename K, typename = void>
struct HasGroupTokens : std::false_type {};
template <typename K>
struct HasGroupTokens<K, std::void_t<decltype(&K::group_tokens)>> : std::true_type {};

// Past that, token tiles outside, groups inside: a tile's activations stay in L1 while the
// task's groups (a few tens of KB) stream from L2. Kernels with group_tokens take more than one
// tile's tokens a group at a time.
template <typename K>
void gemm_packed(const uint8_t* groups, size_t gb, int64_t n_groups, int64_t n_rows, int64_t n_cols, const uint8_t* act,
                 size_t as, int64_t n_tokens, float* y, int64_t ys) {
  if constexpr (HasGroupTokens<K>::value) {
    if (n_tokens > K::kMaxT) {
      for (int64_t g = 0; g < n_groups; ++g)
        K::group_tokens(groups + size_t(g) * gb, n_cols, act, as, n_tokens, y + g * G, ys, std::min<int64_t>(G, n_rows - g * G));
      return;
    }
  }
  if (n_tokens <= kGroupOuterTokens) {
    const int first = int(std::min<int64_t>(K::kMaxT, n_tokens));
    for (int64_t g = 0; g < n_groups; ++g) {
      const uint8_t* grp = groups + size_t(g) * gb;
      const int64_t valid = std::min<int64_t>(G, n_rows - g * G);
      TileTable<K, K::kMaxT, true>::run(first, grp, n_cols, act, as, y + g * G, ys, valid);
      for (int64_t t0 = first; t0 < n_tokens; t0 += K::kMaxT) {
        const int nt = int(std::min<int64_t>(K::kMaxT, n_tokens - t0));
        TileTable<K, K::kMaxT>::run(nt, grp, n_cols, act + size_t(t0) * as, as, y + t0 * ys + g * G, ys, valid);
      }
    }
    return;
  }
  for (int64_t t0 = 0; t0 < n_tokens; t0 += K::kMaxT) {
    const int nt = int(std::min<int64_t>(K::kMaxT, n_tokens - t0));
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t valid = std::min<int64_t>(G, n_rows - g * G);
      TileTable<K, K::kMaxT>::run(nt, groups + size_t(g) * gb, n_cols, act + size_t(t0) * as, as, y + t0 * ys + g * G, ys,
                                  valid);
    }
  }
}

// q8_K (weights q4_K, q5_K, q6_K): exactly quantize_row_q8_K_ref (llama.cpp's x86 build uses
// the reference), plus what the packed kernels read per super-block:
//   [qs: n int8][d: nbk float][msum: 4 nbk int32][gsum: 8 nbk int32]
// msum[p] packs the 32-element sums of sub-blocks 2p and 2p+1 as two int16 (for the q4_K and
// q5_K mins, through VPDPWSSD); gsum[k] packs the 16-element group sums 2k and 2k+1 the same
// way (q6_K's offset of 32, taken per lane as llama.cpp takes it).
struct ActQ8_K {
  static size_t off_d(int64_t n) { return round64(size_t(n)); }
  static size_t off_m(int64_t n) { return off_d(n) + round64(size_t(n / kQK_K) * 4); }
  static size_t off_g(int64_t n) { return off_m(n) + round64(size_t(n / kQK_K) * 16); }
  static size_t bytes(int64_t n) { return off_g(n) + round64(size_t(n / kQK_K) * 32); }
};

// ==== q4_K / q5_K: per super-block, quants [8 sub-blocks][4][64] (vector (j, i): elements
// 32j+4i.. in the low nibbles, 32j+16+4i.. in the high ones); fifth bits (q5_K) [8][8]
// uint64; d and dmin [32] fp16; the 12 packed scale bytes [12][16] (byte k of every row).
// Planes: quants for all super-blocks, then bits, then d/dmin, then scales.

// The unsigned 4-bit level of element e of a q4_K/q5_K super-block (without the fifth bit).
inline uint32_t k4_nibbles4(const uint8_t* qs, int e) {
  // Four consecutive elements e..e+3 (e % 4 == 0, inside one 32-element half) as four bytes.
  const uint32_t w = load_u32(qs + 32 * (e / 64) + (e % 32));
  return (e % 64) < 32 ? (w & 0x0F0F0F0Fu) : ((w >> 4) & 0x0F0F0F0Fu);
}

template <bool kHigh>
struct K4Layout {
  static constexpr size_t kBlockSrc = kHigh ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  static constexpr size_t kQsAt = kHigh ? 48 : 16;
  // Group bytes per 64-byte quant vector (prefetch_group_stream): a super-block's 32 vectors
  // with its fifth bits, d and dmin, and scales.
  static constexpr size_t kStreamStep = (2048 + (kHigh ? 512 : 0) + 64 + 192) / 32;
  static constexpr size_t kSmallPerUnit = (kHigh ? 512 : 0) + 64 + 192;  // per super-block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK_K) * 2048; }
  static size_t off_bits(int64_t nbk) { return size_t(nbk) * 2048; }
  static size_t off_d(int64_t nbk) { return off_bits(nbk) + (kHigh ? size_t(nbk) * 512 : 0); }
  static size_t off_sc(int64_t nbk) { return off_d(nbk) + size_t(nbk) * 64; }
  static size_t bytes(int64_t n) { return round64(off_sc(n / kQK_K) + size_t(n / kQK_K) * 192); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nbk = n / kQK_K;
    std::memset(dst, 0, bytes(n));
    uint64_t* bits = reinterpret_cast<uint64_t*>(dst + off_bits(nbk));
    for (int64_t r = 0; r < n_rows; ++r) {
      const uint8_t* row = src + size_t(r) * rb;
      for (int64_t s = 0; s < nbk; ++s) {
        const uint8_t* blk = row + s * kBlockSrc;
        std::memcpy(dst + off_d(nbk) + s * 64 + r * 2, blk, 2);
        std::memcpy(dst + off_d(nbk) + s * 64 + 32 + r * 2, blk + 2, 2);
        for (int k = 0; k < 12; ++k) dst[off_sc(nbk) + s * 192 + k * 16 + r] = blk[4 + k];
        const uint8_t* qs = blk + kQsAt;
        for (int j = 0; j < 8; ++j) {
          for (int i = 0; i < 4; ++i) {
            const uint32_t lo = k4_nibbles4(qs, 32 * j + 4 * i), hi = k4_nibbles4(qs, 32 * j + 16 + 4 * i);
            store_u32(dst + ((s * 8 + j) * 4 + i) * 64 + r * 4, lo | (hi << 4));
            if (kHigh) {
              const uint8_t* qh = blk + 16;
              uint64_t blo = 0, bhi = 0;
              for (int m = 0; m < 4; ++m) {
                blo |= uint64_t((qh[4 * i + m] >> j) & 1) << m;
                bhi |= uint64_t((qh[16 + 4 * i + m] >> j) & 1) << m;
              }
              bits[(s * 8 + j) * 8 + 2 * i] |= blo << (4 * r);
              bits[(s * 8 + j) * 8 + 2 * i + 1] |= bhi << (4 * r);
            }
          }
        }
      }
    }
  }
};

// ==== q5_K for the AVX2 kernels: the same levels (0..31), packed so that they come apart in
// fewer operations than K4Layout<true>'s nibbles and fifth-bit masks (see K6TripletLayout).
// Per super-block and sub-block j, five 64-byte vectors [8][5][64] hold its eight chunks of 4
// elements per row (bytes 4r..4r+3): W_c, c = 0..3, elements 32j+4c+m, and W_4+c, elements
// 32j+16+4c+m. Byte k < 5 holds W_k in bits 0..4 and three bits of W5..W7 in bits 5..7:
//   byte 0: W5 bits 0-2;  byte 1: W5 bits 3-4, W6 bit 0;  byte 2: W6 bits 1-3;
//   byte 3: W6 bit 4, W7 bits 0-1;  byte 4: W7 bits 2-4.
// 23 operations for the eight where K4Layout<true> takes about 36. d, dmin and scales as
// K4Layout's (in another order of planes).
struct K5QuintLayout {
  static constexpr size_t kStreamStep = (2560 + 64 + 192) / 40;  // a super-block's bytes per quant vector
  static constexpr size_t kSmallPerUnit = 64 + 192;  // per super-block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK_K) * 2560; }
  static size_t off_d(int64_t nbk) { return size_t(nbk) * 2560; }
  static size_t off_sc(int64_t nbk) { return off_d(nbk) + size_t(nbk) * 64; }
  static size_t bytes(int64_t n) { return round64(off_sc(n / kQK_K) + size_t(n / kQK_K) * 192); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nbk = n / kQK_K;
    std::memset(dst, 0, bytes(n));
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t s = 0; s < nbk; ++s) {
        const uint8_t* blk = src + size_t(r) * rb + s * sizeof(BlockQ5_K);
        std::memcpy(dst + off_d(nbk) + s * 64 + r * 2, blk, 2);
        std::memcpy(dst + off_d(nbk) + s * 64 + 32 + r * 2, blk + 2, 2);
        for (int k = 0; k < 12; ++k) dst[off_sc(nbk) + s * 192 + k * 16 + r] = blk[4 + k];
        const uint8_t* qh = blk + 16;
        const uint8_t* qs = blk + 48;
        uint8_t q[kQK_K];
        for (int e = 0; e < kQK_K; ++e)
          q[e] = uint8_t(((qs[32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 0x0F) | (((qh[e % 32] >> (e / 32)) & 1) << 4));
        for (int j = 0; j < 8; ++j) {
          for (int m = 0; m < 4; ++m) {
            uint8_t w[8];
            for (int c = 0; c < 4; ++c) {
              w[c] = q[32 * j + 4 * c + m];
              w[4 + c] = q[32 * j + 16 + 4 * c + m];
            }
            const uint8_t spare[5] = {uint8_t(w[5] & 7), uint8_t((w[5] >> 3) | (w[6] & 1) << 2), uint8_t((w[6] >> 1) & 7),
                                      uint8_t((w[6] >> 4) | (w[7] & 3) << 1), uint8_t(w[7] >> 2)};
            for (int k = 0; k < 5; ++k) dst[size_t((s * 8 + j) * 5 + k) * 64 + r * 4 + m] = uint8_t(w[k] | spare[k] << 5);
          }
        }
      }
    }
  }
};

// A q6_K block's 256 levels (0..63, the offset of 32 not taken), in element order.
inline void unpack_levels_q6_K(const uint8_t* blk, uint8_t (&q)[kQK_K]) {
  const uint8_t* ql = blk;
  const uint8_t* qh = blk + 128;
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      q[128 * h + l] = uint8_t((ql[64 * h + l] & 0x0F) | (((qh[32 * h + l] >> 0) & 3) << 4));
      q[128 * h + l + 32] = uint8_t((ql[64 * h + l + 32] & 0x0F) | (((qh[32 * h + l] >> 2) & 3) << 4));
      q[128 * h + l + 64] = uint8_t((ql[64 * h + l] >> 4) | (((qh[32 * h + l] >> 4) & 3) << 4));
      q[128 * h + l + 96] = uint8_t((ql[64 * h + l + 32] >> 4) | (((qh[32 * h + l] >> 6) & 3) << 4));
    }
  }
}

// What the q6_K layouts share: for each row r and super-block s of a group, the block's 16
// int8 scales into the scale plane sc ([16 groups][16 rows] per super-block) and its fp16 d
// into the plane d ([16 rows]), then f(r, s, levels) with the block's 256 levels.
template <typename F>
inline void pack_q6_K_blocks(const uint8_t* src, size_t rb, int64_t n_rows, int64_t nbk, uint8_t* sc, uint8_t* d, F&& f) {
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t s = 0; s < nbk; ++s) {
      const uint8_t* blk = src + size_t(r) * rb + s * sizeof(BlockQ6_K);
      for (int grp = 0; grp < 16; ++grp) sc[s * 256 + grp * 16 + r] = blk[192 + grp];
      std::memcpy(d + s * 32 + r * 2, blk + 208, 2);
      uint8_t q[kQK_K];
      unpack_levels_q6_K(blk, q);
      f(r, s, q);
    }
  }
}

// ==== q6_K: per super-block, low nibbles [8][4][64] as q4_K's; top two bits [8][2][64]:
// vector (j, 0) holds, at bits 2c..2c+1 of byte (row, m), element 32j+4c+m (c < 4), and
// vector (j, 1) element 32j+16+4c+m; scales [16 groups][16] int8; d [16] fp16.

struct K6Layout {
  static constexpr size_t kStreamStep = (2048 + 1024 + 256 + 32) / 32;  // quants, top bits, scales, d
  static constexpr size_t kSmallPerUnit = 1024 + 256 + 32;  // per super-block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK_K) * 2048; }
  static size_t off_hb(int64_t nbk) { return size_t(nbk) * 2048; }
  static size_t off_sc(int64_t nbk) { return off_hb(nbk) + size_t(nbk) * 1024; }
  static size_t off_d(int64_t nbk) { return off_sc(nbk) + size_t(nbk) * 256; }
  static size_t bytes(int64_t n) { return round64(off_d(n / kQK_K) + size_t(n / kQK_K) * 32); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nbk = n / kQK_K;
    std::memset(dst, 0, bytes(n));
    pack_q6_K_blocks(src, rb, n_rows, nbk, dst + off_sc(nbk), dst + off_d(nbk), [&](int64_t r, int64_t s, const uint8_t (&q)[kQK_K]) {
      for (int j = 0; j < 8; ++j) {
        for (int i = 0; i < 4; ++i) {
          uint8_t* o = dst + ((s * 8 + j) * 4 + i) * 64 + r * 4;
          for (int m = 0; m < 4; ++m) o[m] = uint8_t((q[32 * j + 4 * i + m] & 0x0F) | ((q[32 * j + 16 + 4 * i + m] & 0x0F) << 4));
        }
        for (int h = 0; h < 2; ++h) {
          uint8_t* o = dst + off_hb(nbk) + ((s * 8 + j) * 2 + h) * 64 + r * 4;
          for (int m = 0; m < 4; ++m) {
            uint8_t v = 0;
            for (int c = 0; c < 4; ++c) v = uint8_t(v | (((q[32 * j + 16 * h + 4 * c + m] >> 4) & 3) << (2 * c)));
            o[m] = v;
          }
        }
      }
    });
  }
};

// ==== q6_K for the AVX2 kernels: the same 6-bit levels, packed so that they come apart in
// fewer operations (AVX2 has no three-input logic). Per super-block and part j, six 64-byte
// vectors [8][6][64]: vectors 0..2 hold the low chunks (element 32j+4c+m of the row at bytes
// 4r..4r+3, c = 0..3) and vectors 3..5 the high ones (element 32j+16+4c+m). Byte k of a triplet
// holds chunk k's level in bits 0..5 and bits 2k..2k+1 of chunk 3's level in bits 6..7, so
// chunks 0..2 take one AND each and chunk 3 eight operations, where K6Layout's nibble and
// top-bit planes take about 8.5 a chunk (decode -20% or more). Scales and d as K6Layout.
struct K6TripletLayout {
  static constexpr size_t kStreamStep = (3072 + 256 + 32) / 48;  // a super-block's bytes per quant vector
  static constexpr size_t kSmallPerUnit = 256 + 32;  // per super-block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK_K) * 3072; }
  static size_t off_sc(int64_t nbk) { return size_t(nbk) * 3072; }
  static size_t off_d(int64_t nbk) { return off_sc(nbk) + size_t(nbk) * 256; }
  static size_t bytes(int64_t n) { return round64(off_d(n / kQK_K) + size_t(n / kQK_K) * 32); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nbk = n / kQK_K;
    std::memset(dst, 0, bytes(n));
    pack_q6_K_blocks(src, rb, n_rows, nbk, dst + off_sc(nbk), dst + off_d(nbk), [&](int64_t r, int64_t s, const uint8_t (&q)[kQK_K]) {
      for (int j = 0; j < 8; ++j) {
        for (int half = 0; half < 2; ++half) {
          for (int m = 0; m < 4; ++m) {
            const uint8_t* lv = q + 32 * j + 16 * half + m;  // chunk c's level at lv[4c]
            for (int k = 0; k < 3; ++k)
              dst[((s * 8 + j) * 6 + 3 * half + k) * 64 + r * 4 + m] = uint8_t(lv[4 * k] | (((lv[12] >> (2 * k)) & 3) << 6));
          }
        }
      }
    });
  }
};

// ==== q8_0: quants [nb][8][64] (sign bit flipped), d [nb][16] fp16.

inline size_t group_bytes_q8_0(int64_t n) { return round64(size_t(n / kQK) * (512 + 32)); }

inline void pack_group_q8_0(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
  const int64_t nb = n / kQK;
  std::memset(dst, 0, group_bytes_q8_0(n));
  uint8_t* sc = dst + nb * 512;
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = src + size_t(r) * rb;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row + b * sizeof(BlockQ8_0);
      std::memcpy(sc + (b * G + r) * 2, blk, 2);
      for (int c = 0; c < 8; ++c) store_u32(dst + (b * 8 + c) * 64 + r * 4, load_u32(blk + 2 + 4 * c) ^ 0x80808080u);
    }
  }
  // Rows past n_rows hold zero scales, so whatever their quants they add nothing.
}

struct Q8_0Layout {
  static constexpr size_t kStreamStep = (512 + 32) / 8;  // a block's 8 vectors and its scales
  static constexpr size_t kSmallPerUnit = 32;  // per block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK) * 512; }
  static size_t bytes(int64_t n) { return group_bytes_q8_0(n); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) { pack_group_q8_0(src, rb, n_rows, n, dst); }
};

// q8_0 family (weights q8_0, q4_0, q5_0): quants as llama.cpp's x86 quantize_row_q8_0 makes
// them (scale 127/amax, round half to even), d as the fp16 it stores, each block's sum, and
// for the lane kernels (q8_0, q5_0) per lane (4 quants, see lanes_sum) the sum times minus
// the weight type's offset; q4_0 leaves that plane out to keep a tile's activations in L1.
//   [qs: n int8][d: nb float][sum: nb int32]([lane: 8 nb int32])
struct ActQ8_0 {
  static size_t off_d(int64_t n) { return round64(size_t(n)); }
  static size_t off_s(int64_t n) { return off_d(n) + round64(size_t(n / kQK) * 4); }
  static size_t off_l(int64_t n) { return off_s(n) + round64(size_t(n / kQK) * 4); }
  static size_t bytes(int64_t n) { return off_l(n); }
  static size_t bytes_with_lanes(int64_t n) { return off_l(n) + round64(size_t(n / kQK) * 32); }
};

// ==== q4_0 / q5_0 / q4_1 / q5_1: quants [nb][4][64]: vector i holds elements 4i..4i+3 in
// the low nibbles and 16+4i..16+4i+3 in the high ones (the file's own nibble order, so the
// bytes are copied as they are); fifth bits [nb][8] uint64 (vector i low, then high); d
// [nb][16] fp16; min (q4_1, q5_1) [nb][16] fp16.

template <bool kHigh, bool kMin>
struct Q4Layout {
  static constexpr size_t kBlockSrc = kHigh ? (kMin ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0)) : (kMin ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0));
  static constexpr size_t kQsAt = 2 + (kMin ? 2 : 0) + (kHigh ? 4 : 0);
  // A block's 4 vectors with its fifth bits, d and min (prefetch_group_stream).
  static constexpr size_t kStreamStep = (256 + (kHigh ? 64 : 0) + 32 + (kMin ? 32 : 0)) / 4;
  static constexpr size_t kSmallPerUnit = (kHigh ? 64 : 0) + 32 + (kMin ? 32 : 0);  // per block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK) * 256; }
  static size_t off_bits(int64_t nb) { return size_t(nb) * 256; }
  static size_t off_d(int64_t nb) { return off_bits(nb) + (kHigh ? size_t(nb) * 64 : 0); }
  static size_t off_m(int64_t nb) { return off_d(nb) + size_t(nb) * 32; }
  static size_t bytes(int64_t n) {
    const int64_t nb = n / kQK;
    return round64(off_m(nb) + (kMin ? size_t(nb) * 32 : 0));
  }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nb = n / kQK;
    std::memset(dst, 0, bytes(n));
    uint64_t* bits = reinterpret_cast<uint64_t*>(dst + off_bits(nb));
    for (int64_t r = 0; r < n_rows; ++r) {
      const uint8_t* row = src + size_t(r) * rb;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * kBlockSrc;
        std::memcpy(dst + off_d(nb) + (b * G + r) * 2, blk, 2);
        if (kMin) std::memcpy(dst + off_m(nb) + (b * G + r) * 2, blk + 2, 2);
        for (int i = 0; i < 4; ++i) store_u32(dst + (b * 4 + i) * 64 + r * 4, load_u32(blk + kQsAt + 4 * i));
        if (kHigh) {
          const uint32_t qh = load_u32(blk + 2 + (kMin ? 2 : 0));
          for (int i = 0; i < 4; ++i) {
            bits[b * 8 + 2 * i] |= uint64_t((qh >> (4 * i)) & 0xF) << (4 * r);
            bits[b * 8 + 2 * i + 1] |= uint64_t((qh >> (16 + 4 * i)) & 0xF) << (4 * r);
          }
        }
      }
    }
  }
};

// ==== mxfp4: codes [nb][4][64] as Q4Layout's (the file's nibble order, bytes copied as they
// are), then the E8M0 exponents [nb][16]: the file's 17 bytes per block and row. Rows past
// n_rows hold code 0 (+0) under exponent 0 and add nothing.

struct Mxfp4Layout {
  static constexpr size_t kStreamStep = (256 + 16) / 4;  // a block's 4 vectors and its exponents
  static constexpr size_t kSmallPerUnit = 16;  // per block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK) * 256; }
  static size_t off_e(int64_t nb) { return size_t(nb) * 256; }
  static size_t bytes(int64_t n) { return round64(off_e(n / kQK) + size_t(n / kQK) * 16); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nb = n / kQK;
    std::memset(dst, 0, bytes(n));
    for (int64_t r = 0; r < n_rows; ++r) {
      const uint8_t* row = src + size_t(r) * rb;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * sizeof(BlockMXFP4);
        dst[off_e(nb) + b * G + r] = blk[0];
        for (int i = 0; i < 4; ++i) store_u32(dst + (b * 4 + i) * 64 + r * 4, load_u32(blk + 1 + 4 * i));
      }
    }
  }
};

// ==== q3_K and iq4_xs, for kernels that keep llama.cpp's eight vec_dot lanes (lane c < 4: the
// elements 32p + 4c + m, m < 4, of every 32-element part p; lane 4 + c: 32p + 16 + 4c + m).

// iq4_xs: codes [nbk][8 parts][4 chunks][64]: byte (row, m) of vector (p, c) is the file's
// qs[16p + 4c + m] (low nibble: lane c's element, high: lane 4 + c's), copied as it is; then
// the scale bytes scales_l [nbk][4][16] and scales_h [nbk][16] uint16, and d [nbk][16] fp16:
// the file's 136 bytes per super-block and row. Rows past n_rows hold d = 0 and add nothing.
struct IQ4XSLayout {
  static constexpr size_t kStreamStep = 2176 / 32;  // a super-block's 32 vectors and its scales and d
  static constexpr size_t kSmallPerUnit = 64 + 32 + 32;  // per super-block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK_K) * 2048; }
  static size_t off_sl(int64_t nbk) { return size_t(nbk) * 2048; }
  static size_t off_sh(int64_t nbk) { return off_sl(nbk) + size_t(nbk) * 64; }
  static size_t off_d(int64_t nbk) { return off_sh(nbk) + size_t(nbk) * 32; }
  static size_t bytes(int64_t n) { return round64(off_d(n / kQK_K) + size_t(n / kQK_K) * 32); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nbk = n / kQK_K;
    std::memset(dst, 0, bytes(n));
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t s = 0; s < nbk; ++s) {
        const uint8_t* blk = src + size_t(r) * rb + s * sizeof(BlockIQ4_XS);
        std::memcpy(dst + off_d(nbk) + (s * G + r) * 2, blk, 2);
        std::memcpy(dst + off_sh(nbk) + (s * G + r) * 2, blk + 2, 2);
        for (int k = 0; k < 4; ++k) dst[off_sl(nbk) + s * 64 + k * 16 + r] = blk[4 + k];
        for (int p = 0; p < 8; ++p)
          for (int c = 0; c < 4; ++c) store_u32(dst + ((s * 8 + p) * 4 + c) * 64 + r * 4, load_u32(blk + 8 + 16 * p + 4 * c));
      }
    }
  }
};

// The two low bits of a q2_K/q3_K super-block's elements (qs: element 128h + 32j + l at bits 2j
// of qs[32h + l]) for row r into its [8 parts][2][64] plane at dst: vector (p, half) holds at
// bits 2c..2c+1 of byte (r, m) those of element 32p + 16 half + 4c + m.
inline void pack_low2_plane(const uint8_t* qs, int64_t r, uint8_t* dst) {
  for (int p = 0; p < 8; ++p) {
    for (int half = 0; half < 2; ++half) {
      for (int m = 0; m < 4; ++m) {
        uint8_t v = 0;
        for (int c = 0; c < 4; ++c) {
          const int e = 32 * p + 16 * half + 4 * c + m;
          v = uint8_t(v | (((qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) << (2 * c)));
        }
        dst[(p * 2 + half) * 64 + r * 4 + m] = v;
      }
    }
  }
}

// q2_K: low-bit plane [nbk][8 parts][2][64] (pack_low2_plane); the file's scale bytes [nbk][16
// groups][16] (scale low nibble, min high); d [nbk][16] and dmin [nbk][16] fp16: the file's 84
// bytes per super-block and row. Rows past n_rows have d = dmin = 0.
struct Q2KLayout {
  static constexpr size_t kStreamStep = 1344 / 16;  // a super-block's 16 vectors, scales, d and dmin
  static constexpr size_t kSmallPerUnit = 256 + 32 + 32;  // per super-block
  static constexpr bool kPrefetchSmall = false;
  static size_t small_at(int64_t n) { return size_t(n / kQK_K) * 1024; }
  static size_t off_sc(int64_t nbk) { return size_t(nbk) * 1024; }
  static size_t off_d(int64_t nbk) { return off_sc(nbk) + size_t(nbk) * 256; }
  static size_t off_dmin(int64_t nbk) { return off_d(nbk) + size_t(nbk) * 32; }
  static size_t bytes(int64_t n) { return round64(off_dmin(n / kQK_K) + size_t(n / kQK_K) * 32); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nbk = n / kQK_K;
    std::memset(dst, 0, bytes(n));
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t s = 0; s < nbk; ++s) {
        const uint8_t* blk = src + size_t(r) * rb + s * sizeof(BlockQ2_K);
        pack_low2_plane(blk + 16, r, dst + s * 1024);
        for (int grp = 0; grp < 16; ++grp) dst[off_sc(nbk) + s * 256 + grp * 16 + r] = blk[grp];
        std::memcpy(dst + off_d(nbk) + (s * G + r) * 2, blk + 80, 2);
        std::memcpy(dst + off_dmin(nbk) + (s * G + r) * 2, blk + 82, 2);
      }
    }
  }
};

// q3_K: low-bit plane [nbk][8 parts][2][64] (pack_low2_plane); third bits [nbk][8 parts][64]:
// bit 4 half + c of byte (row, m) is element 32p + 16 half + 4c + m's; the 12 scale bytes
// [nbk][12][16]; d [nbk][16] fp16: the file's 110 bytes per super-block and row. Rows past
// n_rows have d = 0.
struct Q3KLayout {
  static constexpr size_t kStreamStep = 1760 / 16;  // a super-block's 16 low-bit vectors and the rest
  static constexpr size_t kSmallPerUnit = 512 + 192 + 32;  // per super-block
  static constexpr bool kPrefetchSmall = false;
  static size_t small_at(int64_t n) { return size_t(n / kQK_K) * 1024; }
  static size_t off_hb(int64_t nbk) { return size_t(nbk) * 1024; }
  static size_t off_sc(int64_t nbk) { return off_hb(nbk) + size_t(nbk) * 512; }
  static size_t off_d(int64_t nbk) { return off_sc(nbk) + size_t(nbk) * 192; }
  static size_t bytes(int64_t n) { return round64(off_d(n / kQK_K) + size_t(n / kQK_K) * 32); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nbk = n / kQK_K;
    std::memset(dst, 0, bytes(n));
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t s = 0; s < nbk; ++s) {
        const uint8_t* blk = src + size_t(r) * rb + s * sizeof(BlockQ3_K);
        pack_low2_plane(blk + 32, r, dst + s * 1024);
        const uint8_t* hmask = blk;
        for (int p = 0; p < 8; ++p) {
          for (int m = 0; m < 4; ++m) {
            uint8_t hb = 0;
            for (int half = 0; half < 2; ++half) {
              for (int c = 0; c < 4; ++c) {
                const int e = 32 * p + 16 * half + 4 * c + m;
                hb = uint8_t(hb | (((hmask[e % 32] >> (4 * (e / 128) + (e % 128) / 32)) & 1) << (4 * half + c)));
              }
            }
            dst[off_hb(nbk) + (s * 8 + p) * 64 + r * 4 + m] = hb;
          }
        }
        for (int k = 0; k < 12; ++k) dst[off_sc(nbk) + s * 192 + k * 16 + r] = blk[96 + k];
        std::memcpy(dst + off_d(nbk) + (s * G + r) * 2, blk + 108, 2);
      }
    }
  }
};

// ==== q3_K for the AVX2 kernels: the same levels, packed so that they come apart in fewer
// operations (see K6TripletLayout). A level plus 4 (0..7: the two low bits and the third bit
// times 4) is three bits; per super-block and part p, three 64-byte vectors [8][3][64] hold the
// part's eight chunks of 4 elements per row (bytes 4r..4r+3): W_c, c = 0..3, elements
// 32p+4c+m, and W_4+c, elements 32p+16+4c+m, as
//   byte 0 = W0 | W1 << 3 | (W6 & 3) << 6,  byte 1 = W2 | W3 << 3 | (W7 & 3) << 6,
//   byte 2 = W4 | W5 << 3 | (W6 >> 2) << 6 | (W7 >> 2) << 7,
// 19 operations for the eight where Q3KLayout's planes take about 37. Scales and d as Q3KLayout.
struct Q3KTripletLayout {
  static constexpr size_t kStreamStep = 1760 / 24;  // a super-block's 24 quant vectors and the rest
  static constexpr size_t kSmallPerUnit = 192 + 32;  // per super-block
  static constexpr bool kPrefetchSmall = true;
  static size_t small_at(int64_t n) { return size_t(n / kQK_K) * 1536; }
  static size_t off_sc(int64_t nbk) { return size_t(nbk) * 1536; }
  static size_t off_d(int64_t nbk) { return off_sc(nbk) + size_t(nbk) * 192; }
  static size_t bytes(int64_t n) { return round64(off_d(n / kQK_K) + size_t(n / kQK_K) * 32); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const int64_t nbk = n / kQK_K;
    std::memset(dst, 0, bytes(n));
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t s = 0; s < nbk; ++s) {
        const uint8_t* blk = src + size_t(r) * rb + s * sizeof(BlockQ3_K);
        const uint8_t* hmask = blk;
        const uint8_t* qs = blk + 32;
        uint8_t q[kQK_K];  // levels plus 4, element order
        for (int e = 0; e < kQK_K; ++e) {
          const int low2 = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
          const int bit = (hmask[e % 32] >> (e / 32)) & 1;
          q[e] = uint8_t(low2 | bit << 2);
        }
        for (int p = 0; p < 8; ++p) {
          for (int m = 0; m < 4; ++m) {
            uint8_t w[8];
            for (int c = 0; c < 4; ++c) {
              w[c] = q[32 * p + 4 * c + m];
              w[4 + c] = q[32 * p + 16 + 4 * c + m];
            }
            uint8_t* o = dst + size_t(s * 8 + p) * 192 + r * 4 + m;
            o[0] = uint8_t(w[0] | w[1] << 3 | (w[6] & 3) << 6);
            o[64] = uint8_t(w[2] | w[3] << 3 | (w[7] & 3) << 6);
            o[128] = uint8_t(w[4] | w[5] << 3 | (w[6] >> 2) << 6 | (w[7] >> 2) << 7);
          }
        }
        for (int k = 0; k < 12; ++k) dst[off_sc(nbk) + s * 192 + k * 16 + r] = blk[96 + k];
        std::memcpy(dst + off_d(nbk) + (s * G + r) * 2, blk + 108, 2);
      }
    }
  }
};

// ==== the IQ2/IQ3 grid types (iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s): the group's 16 rows as
// stored, end to end (a codebook entry spans 4 or 8 elements of one row, so interleaving rows
// would not spare a lookup). Their kernels decode each super-block once per tile of tokens,
// where the dot products decode it once per 4 tokens; the copy also moves the rows onto the
// packed weights' pages.
template <size_t kBlockBytes>
struct IqRowsLayout {
  static size_t row_bytes(int64_t n) { return size_t(n / kQK_K) * kBlockBytes; }
  static size_t bytes(int64_t n) { return round64(size_t(G) * row_bytes(n)); }
  static void pack(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n, uint8_t* dst) {
    const size_t r = row_bytes(n);
    for (int64_t i = 0; i < n_rows; ++i) std::memcpy(dst + size_t(i) * r, src + size_t(i) * rb, r);
    std::memset(dst + size_t(n_rows) * r, 0, bytes(n) - size_t(n_rows) * r);
  }
};

// The doubled E2M1 values plus 12, by code: unsigned levels (0..24) for the byte products of
// VPMADDUBSW and VPDPBUSD; the kernels take 12 * (block sum of the activations) back.
constexpr int kMxfp4Offset = 12;
alignas(16) constexpr uint8_t kMxfp4Levels[16] = {12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0};

// The iq4_nl grid plus 128 (kIq4nlValues), by code: unsigned levels 1..241 for VPDPBUSD.
constexpr int kIq4nlOffset = 128;
alignas(16) constexpr uint8_t kIq4nlLevels[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};

}  // namespace
}  // namespace tdm::cpu
