// Reference kernels for the IQ2/IQ3 grid types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S; block
// layouts in quants.h). Each block is unpacked into one decoded form (grid indices, sign
// bytes, 4-bit scales) that the dequantizer and dot product share, and the quantizer writes
// that form back, so one packing function per type is all that differs between them.
//
// Dequantizers and dot products compute what llama.cpp's do, bit for bit (its
// dequantize_row_iq* and generic ggml_vec_dot_iq*_q8_K float order). The quantizer is
// tandem's own: llama.cpp's needs an importance matrix for IQ2_XXS and IQ2_XS and neighbour
// tables built from its own search; this one rounds each group of magnitudes onto the level
// lattice and picks, among the grid entries nearest that lattice point, the one closest to
// the data, over a few trial scales per scale group.
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "cpu/quants.h"

namespace tdm {

namespace {

// What differs between the five types, apart from the packing.
struct IqFormat {
  int entry_len;      // magnitudes per grid entry: 8 (IQ2) or 4 (IQ3)
  int n_entries;      // grid size
  int scale_group;    // elements per 4-bit scale: 16 or 32
  bool parity_signs;  // 7-bit sign codes whose eighth bit is implied (kSignsIq2 rule)
  float k;            // x = d * (2s + 1) * k * grid * sign
  int id;             // 0..4, this format's slot in lattice_of's cache
  uint8_t magnitude(int entry, int j) const {
    return entry_len == 8 ? uint8_t(grid64[entry] >> (8 * j)) : uint8_t(grid32[entry] >> (8 * j));
  }
  const uint64_t* grid64;
  const uint32_t* grid32;
};

constexpr IqFormat kIq2xxs{8, 256, 32, true, 0.125f, 0, kIq2xxsGrid, nullptr};
constexpr IqFormat kIq2xs{8, 512, 16, true, 0.125f, 1, kIq2xsGrid, nullptr};
constexpr IqFormat kIq2s{8, 1024, 16, false, 0.125f, 2, kIq2sGrid, nullptr};
constexpr IqFormat kIq3xxs{4, 256, 32, true, 0.25f, 3, nullptr, kIq3xxsGrid};
constexpr IqFormat kIq3s{4, 512, 32, false, 1.0f, 4, nullptr, kIq3sGrid};

// One super-block, unpacked: entry e covers elements entry_len*e.., sign byte g elements
// 8g..8g+7 (bit j negates element 8g + j), scale[c] the 4-bit scale of scale group c.
struct IqDecoded {
  uint16_t d;
  uint16_t entry[64];
  uint8_t sign[32];
  uint8_t scale[16];
};

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// ---- Packing: one unpack and one pack per type (layouts in quants.h).

void unpack_iq2_xxs(const uint8_t* p, IqDecoded* o) {
  BlockIQ2_XXS b;
  std::memcpy(&b, p, sizeof b);
  o->d = b.d;
  for (int s = 0; s < 8; s++) {
    const uint8_t* q = reinterpret_cast<const uint8_t*>(b.qs + 4 * s);
    const uint32_t a1 = load_u32(q + 4);
    for (int l = 0; l < 4; l++) {
      o->entry[4 * s + l] = q[l];
      o->sign[4 * s + l] = iq2_sign_byte((a1 >> (7 * l)) & 127);
    }
    o->scale[s] = uint8_t(a1 >> 28);
  }
}

void pack_iq2_xxs(const IqDecoded& o, uint8_t* p) {
  BlockIQ2_XXS b;
  b.d = o.d;
  for (int s = 0; s < 8; s++) {
    uint8_t* q = reinterpret_cast<uint8_t*>(b.qs + 4 * s);
    uint32_t a1 = uint32_t(o.scale[s]) << 28;
    for (int l = 0; l < 4; l++) {
      q[l] = uint8_t(o.entry[4 * s + l]);
      a1 |= uint32_t(o.sign[4 * s + l] & 127) << (7 * l);
    }
    store_u32(q + 4, a1);
  }
  std::memcpy(p, &b, sizeof b);
}

void unpack_iq2_xs(const uint8_t* p, IqDecoded* o) {
  BlockIQ2_XS b;
  std::memcpy(&b, p, sizeof b);
  o->d = b.d;
  for (int g = 0; g < 32; g++) {
    o->entry[g] = b.qs[g] & 511;
    o->sign[g] = iq2_sign_byte(b.qs[g] >> 9);
  }
  for (int s = 0; s < 8; s++) {
    o->scale[2 * s] = b.scales[s] & 0x0F;
    o->scale[2 * s + 1] = b.scales[s] >> 4;
  }
}

void pack_iq2_xs(const IqDecoded& o, uint8_t* p) {
  BlockIQ2_XS b;
  b.d = o.d;
  for (int g = 0; g < 32; g++) b.qs[g] = uint16_t(o.entry[g] | ((o.sign[g] & 127) << 9));
  for (int s = 0; s < 8; s++) b.scales[s] = uint8_t(o.scale[2 * s] | (o.scale[2 * s + 1] << 4));
  std::memcpy(p, &b, sizeof b);
}

void unpack_iq2_s(const uint8_t* p, IqDecoded* o) {
  BlockIQ2_S b;
  std::memcpy(&b, p, sizeof b);
  o->d = b.d;
  for (int g = 0; g < 32; g++) {
    o->entry[g] = uint16_t(b.qs[g] | (((b.qh[g / 4] >> (2 * (g % 4))) & 3) << 8));
    o->sign[g] = b.qs[32 + g];
  }
  for (int s = 0; s < 8; s++) {
    o->scale[2 * s] = b.scales[s] & 0x0F;
    o->scale[2 * s + 1] = b.scales[s] >> 4;
  }
}

void pack_iq2_s(const IqDecoded& o, uint8_t* p) {
  BlockIQ2_S b;
  std::memset(&b, 0, sizeof b);
  b.d = o.d;
  for (int g = 0; g < 32; g++) {
    b.qs[g] = uint8_t(o.entry[g]);
    b.qh[g / 4] |= uint8_t((o.entry[g] >> 8) << (2 * (g % 4)));
    b.qs[32 + g] = o.sign[g];
  }
  for (int s = 0; s < 8; s++) b.scales[s] = uint8_t(o.scale[2 * s] | (o.scale[2 * s + 1] << 4));
  std::memcpy(p, &b, sizeof b);
}

void unpack_iq3_xxs(const uint8_t* p, IqDecoded* o) {
  BlockIQ3_XXS b;
  std::memcpy(&b, p, sizeof b);
  o->d = b.d;
  for (int e = 0; e < 64; e++) o->entry[e] = b.qs[e];
  for (int s = 0; s < 8; s++) {
    const uint32_t w = load_u32(b.qs + 64 + 4 * s);
    for (int l = 0; l < 4; l++) o->sign[4 * s + l] = iq2_sign_byte((w >> (7 * l)) & 127);
    o->scale[s] = uint8_t(w >> 28);
  }
}

void pack_iq3_xxs(const IqDecoded& o, uint8_t* p) {
  BlockIQ3_XXS b;
  b.d = o.d;
  for (int e = 0; e < 64; e++) b.qs[e] = uint8_t(o.entry[e]);
  for (int s = 0; s < 8; s++) {
    uint32_t w = uint32_t(o.scale[s]) << 28;
    for (int l = 0; l < 4; l++) w |= uint32_t(o.sign[4 * s + l] & 127) << (7 * l);
    store_u32(b.qs + 64 + 4 * s, w);
  }
  std::memcpy(p, &b, sizeof b);
}

void unpack_iq3_s(const uint8_t* p, IqDecoded* o) {
  BlockIQ3_S b;
  std::memcpy(&b, p, sizeof b);
  o->d = b.d;
  for (int e = 0; e < 64; e++) o->entry[e] = uint16_t(b.qs[e] | (((b.qh[e / 8] >> (e % 8)) & 1) << 8));
  for (int g = 0; g < 32; g++) o->sign[g] = b.signs[g];
  for (int s = 0; s < 8; s++) o->scale[s] = (b.scales[s / 2] >> (4 * (s % 2))) & 0x0F;
}

void pack_iq3_s(const IqDecoded& o, uint8_t* p) {
  BlockIQ3_S b;
  std::memset(&b, 0, sizeof b);
  b.d = o.d;
  for (int e = 0; e < 64; e++) {
    b.qs[e] = uint8_t(o.entry[e]);
    b.qh[e / 8] |= uint8_t((o.entry[e] >> 8) << (e % 8));
  }
  for (int g = 0; g < 32; g++) b.signs[g] = o.sign[g];
  for (int s = 0; s < 8; s++) b.scales[s / 2] |= uint8_t(o.scale[s] << (4 * (s % 2)));
  std::memcpy(p, &b, sizeof b);
}

// ---- Dequantization and dot products, in llama.cpp's float order.

// The per-scale-group multiplier as llama.cpp's dequantizers compute it: d * (0.5 + s) * 0.25
// (IQ2), d * (0.5 + s) * 0.5 (IQ3_XXS), d * (1 + 2s) (IQ3_S).
float group_multiplier(const IqFormat& f, float d, int s) {
  if (f.k == 1.0f) return d * float(1 + 2 * s);
  return d * (0.5f + float(s)) * (2 * f.k);
}

template <void (*unpack)(const uint8_t*, IqDecoded*)>
void dequantize_iq(const IqFormat& f, const void* src, float* dst, int64_t n, size_t block_bytes) {
  const auto* in = static_cast<const uint8_t*>(src);
  IqDecoded o;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    unpack(in + i * block_bytes, &o);
    const float d = fp16_to_fp32(o.d);
    float* y = dst + i * kQK_K;
    for (int e = 0; e < kQK_K; e++) {
      const int entry = o.entry[e / f.entry_len];
      const float db = group_multiplier(f, d, o.scale[e / f.scale_group]);
      const float v = db * float(f.magnitude(entry, e % f.entry_len));
      y[e] = (o.sign[e / 8] >> (e % 8)) & 1 ? -v : v;
    }
  }
}

template <void (*unpack)(const uint8_t*, IqDecoded*)>
float vec_dot_iq(const IqFormat& f, const void* w, const void* a, int64_t n, size_t block_bytes) {
  const auto* in = static_cast<const uint8_t*>(w);
  IqDecoded o;
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    unpack(in + i * block_bytes, &o);
    BlockQ8_K y;
    std::memcpy(&y, static_cast<const uint8_t*>(a) + i * sizeof(BlockQ8_K), sizeof y);
    int32_t bsum = 0;
    for (int c = 0; c < kQK_K / f.scale_group; c++) {
      int32_t sumi = 0;
      for (int e = c * f.scale_group; e < (c + 1) * f.scale_group; e++) {
        const int m = f.magnitude(o.entry[e / f.entry_len], e % f.entry_len);
        sumi += ((o.sign[e / 8] >> (e % 8)) & 1 ? -m : m) * y.qs[e];
      }
      bsum += (2 * o.scale[c] + 1) * sumi;
    }
    sum += fp16_to_fp32(o.d) * y.d * float(bsum);
  }
  return f.k == 1.0f ? sum : f.k * sum;
}

// ---- Quantization

// For every point of the level lattice (each magnitude rounded to one of the grid's levels),
// the grid entries nearest to it; a group's best entry is almost always among them.
struct LatticeIndex {
  std::vector<uint8_t> levels;      // the distinct magnitudes, ascending
  std::vector<uint32_t> first;      // candidates of lattice point p: list[first[p]..first[p+1])
  std::vector<uint16_t> list;
};

LatticeIndex build_lattice(const IqFormat& f) {
  LatticeIndex ix;
  bool seen[256] = {};
  for (int e = 0; e < f.n_entries; e++)
    for (int j = 0; j < f.entry_len; j++) seen[f.magnitude(e, j)] = true;
  for (int v = 0; v < 256; v++)
    if (seen[v]) ix.levels.push_back(uint8_t(v));
  const int nl = int(ix.levels.size());
  int points = 1;
  for (int j = 0; j < f.entry_len; j++) points *= nl;
  ix.first.assign(size_t(points) + 1, 0);
  std::vector<int> dist(size_t(f.n_entries));
  for (int p = 0; p < points; p++) {
    int best = 1 << 30;
    for (int e = 0; e < f.n_entries; e++) {
      int dd = 0;
      for (int j = 0, q = p; j < f.entry_len; j++, q /= nl) {
        const int diff = int(ix.levels[size_t(q % nl)]) - f.magnitude(e, j);
        dd += diff * diff;
      }
      dist[size_t(e)] = dd;
      if (dd < best) best = dd;
    }
    for (int e = 0; e < f.n_entries; e++)
      if (dist[size_t(e)] == best) ix.list.push_back(uint16_t(e));
    ix.first[size_t(p) + 1] = uint32_t(ix.list.size());
  }
  return ix;
}

const LatticeIndex& lattice_of(const IqFormat& f) {
  static std::once_flag once[5];
  static LatticeIndex ix[5];
  std::call_once(once[f.id], [&] { ix[f.id] = build_lattice(f); });
  return ix[f.id];
}

// The grid entry closest to a[0..entry_len) / m (a may hold negative targets: an element whose
// sign cannot be stored). Adds its squared error to *err.
int nearest_entry(const IqFormat& f, const LatticeIndex& ix, const float* a, float m, float* err) {
  const int nl = int(ix.levels.size());
  int p = 0;
  for (int j = f.entry_len - 1; j >= 0; j--) {
    const float t = a[j] / m;
    int l = 0;
    while (l + 1 < nl && t > 0.5f * (ix.levels[size_t(l)] + ix.levels[size_t(l) + 1])) l++;
    p = p * nl + l;
  }
  int best = 0;
  float best_err = INFINITY;
  for (uint32_t c = ix.first[size_t(p)]; c < ix.first[size_t(p) + 1]; c++) {
    const int e = ix.list[c];
    float sq = 0;
    for (int j = 0; j < f.entry_len; j++) {
      const float diff = a[j] - m * f.magnitude(e, j);
      sq += diff * diff;
    }
    if (sq < best_err) {
      best_err = sq;
      best = e;
    }
  }
  *err += best_err;
  return best;
}

// Chooses the entries of one scale group (n elements of targets a) at multiplier m.
float fit_entries(const IqFormat& f, const LatticeIndex& ix, const float* a, int n, float m, uint16_t* entry) {
  float err = 0;
  for (int e = 0; e < n / f.entry_len; e++) entry[e] = uint16_t(nearest_entry(f, ix, a + e * f.entry_len, m, &err));
  return err;
}

template <void (*pack)(const IqDecoded&, uint8_t*)>
void quantize_iq(const IqFormat& f, const float* src, void* dst, int64_t n, size_t block_bytes) {
  const LatticeIndex& ix = lattice_of(f);
  const float max_level = ix.levels.back();
  constexpr int kTrials = 9;
  for (int64_t i = 0; i < n / kQK_K; i++) {
    const float* x = src + i * kQK_K;
    IqDecoded o;
    std::memset(&o, 0, sizeof o);
    // Targets: magnitudes, and signs. Where a sign code must hold an even number of negatives,
    // the smallest element of an odd group keeps the wrong sign (its target turns negative).
    float a[kQK_K];
    for (int g = 0; g < 32; g++) {
      uint8_t sign = 0;
      int smallest = 0;
      for (int j = 0; j < 8; j++) {
        const float v = x[8 * g + j];
        a[8 * g + j] = std::fabs(v);
        if (v < 0) sign |= uint8_t(1 << j);
        if (a[8 * g + j] < a[8 * g + smallest]) smallest = j;
      }
      if (f.parity_signs && (__builtin_popcount(sign) & 1)) {
        sign ^= uint8_t(1 << smallest);
        a[8 * g + smallest] = -a[8 * g + smallest];
      }
      o.sign[g] = sign;
    }
    // Each scale group's best multiplier over trial scales, refitted by least squares.
    const int groups = kQK_K / f.scale_group;
    float m_best[16];
    uint16_t trial[32];
    float max_m = 0;
    for (int c = 0; c < groups; c++) {
      const float* ac = a + c * f.scale_group;
      float amax = 0;
      for (int j = 0; j < f.scale_group; j++) amax = std::fmax(amax, ac[j]);
      m_best[c] = 0;
      if (amax == 0) continue;
      float best_err = INFINITY;
      for (int t = 0; t < kTrials; t++) {
        const float m = amax / max_level * (0.6f + 0.075f * t);
        fit_entries(f, ix, ac, f.scale_group, m, trial);
        float sum_ag = 0, sum_gg = 0, sum_aa = 0;
        for (int j = 0; j < f.scale_group; j++) {
          const float g = f.magnitude(trial[j / f.entry_len], j % f.entry_len);
          sum_ag += ac[j] * g;
          sum_gg += g * g;
          sum_aa += ac[j] * ac[j];
        }
        if (sum_ag <= 0) continue;
        const float err = sum_aa - sum_ag * sum_ag / sum_gg;
        if (err < best_err) {
          best_err = err;
          m_best[c] = sum_ag / sum_gg;
        }
      }
      max_m = std::fmax(max_m, m_best[c]);
    }
    // The super-block scale lets the largest multiplier take the top 4-bit scale (2s + 1 = 31).
    o.d = fp32_to_fp16(max_m / (31 * f.k));
    const float d = fp16_to_fp32(o.d);
    for (int c = 0; c < groups; c++) {
      int s = 0;
      if (d > 0) s = int(std::lround((m_best[c] / (d * f.k) - 1) / 2));
      o.scale[c] = uint8_t(s < 0 ? 0 : s > 15 ? 15 : s);
      const float m = group_multiplier(f, d, o.scale[c]);
      if (m > 0) fit_entries(f, ix, a + c * f.scale_group, f.scale_group, m, o.entry + c * f.scale_group / f.entry_len);
    }
    pack(o, static_cast<uint8_t*>(dst) + i * block_bytes);
  }
}

}  // namespace

#define TDM_IQ_TYPE(name, format, Block)                                                        \
  void quantize_row_##name##_ref(const float* src, void* dst, int64_t n) {                      \
    quantize_iq<pack_##name>(format, src, dst, n, sizeof(Block));                               \
  }                                                                                             \
  void dequantize_row_##name##_ref(const void* src, float* dst, int64_t n) {                    \
    dequantize_iq<unpack_##name>(format, src, dst, n, sizeof(Block));                           \
  }                                                                                             \
  float vec_dot_##name##_q8_K_ref(const void* w, const void* a, int64_t n) {                    \
    return vec_dot_iq<unpack_##name>(format, w, a, n, sizeof(Block));                           \
  }

TDM_IQ_TYPE(iq2_xxs, kIq2xxs, BlockIQ2_XXS)
TDM_IQ_TYPE(iq2_xs, kIq2xs, BlockIQ2_XS)
TDM_IQ_TYPE(iq2_s, kIq2s, BlockIQ2_S)
TDM_IQ_TYPE(iq3_xxs, kIq3xxs, BlockIQ3_XXS)
TDM_IQ_TYPE(iq3_s, kIq3s, BlockIQ3_S)

#undef TDM_IQ_TYPE

}  // namespace tdm
