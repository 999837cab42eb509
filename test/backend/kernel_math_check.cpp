// Host check of the GPU kernels' shared arithmetic (kernels/quant_math.h) against the CPU
// reference (native/cpu/quants_ref.cpp, quants_iq_ref.cpp), built and run by kernel-math.test.ts: it proves on a
// machine with no GPU that block decoding, dequantization and activation quantization are
// bit-exact, chunk dot products agree, and the router's top-k order equals std::partial_sort's.
// Prints one line per check: "ok <name>" or "FAIL <name>: <detail>".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cpu/quants.h"
#include "quant_math.h"

namespace g = tdm::gpu;

namespace {

int failures = 0;

void report(bool ok, const std::string& name, const std::string& detail = "") {
  if (ok) {
    std::printf("ok %s\n", name.c_str());
  } else {
    ++failures;
    std::printf("FAIL %s: %s\n", name.c_str(), detail.c_str());
  }
}

bool same_bits(float a, float b) { return g::float_bits(a) == g::float_bits(b); }

std::vector<float> random_floats(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

void check_halves() {
  std::mt19937 rng(7);
  std::vector<float> vals = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.0f, 65520.0f, 1e-8f, 5.9604645e-08f, 2.9802322e-08f,
                             6.1035156e-05f, 6.0975552e-05f, INFINITY, -INFINITY, 3.1415927f, 1e30f, -1e-30f};
  for (int i = 0; i < 200000; ++i) vals.push_back(std::ldexp(float(rng()) / 4294967296.0f - 0.5f, int(rng() % 60) - 30));
  bool ok16 = true, ok_bf = true;
  std::string detail;
  for (float v : vals) {
    if (g::float_to_half(v) != tdm::fp32_to_fp16(v)) {
      ok16 = false;
      detail = "float_to_half(" + std::to_string(v) + ")";
    }
    if (g::float_to_bf16(v) != tdm::fp32_to_bf16(v)) ok_bf = false;
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = g::half_to_float(uint16_t(h)), b = tdm::fp16_to_fp32(uint16_t(h));
    if (!same_bits(a, b) && !(std::isnan(a) && std::isnan(b))) {
      ok16 = false;
      detail = "half_to_float(" + std::to_string(h) + ")";
    }
    if (!same_bits(g::bf16_to_float(uint16_t(h)), tdm::bf16_to_fp32(uint16_t(h)))) ok_bf = false;
  }
  report(ok16, "fp16 conversions match the CPU reference", detail);
  report(ok_bf, "bf16 conversions match the CPU reference");
}

// The first element whose value through decode_chunk differs from the reference's bits, as
// text; empty when every element of the n = ref.size() matches.
template <uint32_t T>
std::string first_inexact_chunk(const std::vector<uint8_t>& wq, const std::vector<float>& ref) {
  for (int64_t c = 0; c < int64_t(ref.size()) / 32; ++c) {
    const g::WChunk ch = g::decode_chunk<T>(wq.data(), c);
    for (int e = 0; e < 32; ++e) {
      const float got = g::dequant_elem<T>(ch, e);
      if (!same_bits(got, ref[size_t(c * 32 + e)])) {
        return "element " + std::to_string(c * 32 + e) + ": " + std::to_string(got) + " vs " + std::to_string(ref[size_t(c * 32 + e)]);
      }
    }
  }
  return "";
}

template <uint32_t T>
void check_type(const char* name, tdm::GgmlType type) {
  constexpr int kBlockElems = g::BlockInfo<T>::kChunks * 32;
  const int64_t n = kBlockElems * 6;
  const std::vector<float> w = random_floats(size_t(n), 100 + T, 0.7f);
  std::vector<uint8_t> wq(size_t(n / kBlockElems) * g::BlockInfo<T>::kBytes);
  tdm::quantize_row_ref(type, w.data(), wq.data(), n);

  // Dequantization through decoded chunks equals the reference bit for bit.
  std::vector<float> ref(static_cast<size_t>(n));
  tdm::dequantize_row_ref(type, wq.data(), ref.data(), n);
  std::string detail = first_inexact_chunk<T>(wq, ref);
  const bool exact = detail.empty();
  report(exact, std::string(name) + ": decoded chunks dequantize exactly", detail);

  // Row dot products from chunk_dot agree with the reference dot product.
  const std::vector<float> x = random_floats(size_t(n), 200 + T, 1.3f);
  const tdm::GgmlType act_type = tdm::vec_dot_type(type);
  const tdm::TypeTraits* at = tdm::type_traits(uint32_t(act_type));
  std::vector<uint8_t> xq(size_t(n / at->block_size) * at->type_size);
  tdm::quantize_row_ref(act_type, x.data(), xq.data(), n);
  const float want = tdm::vec_dot_ref(type, wq.data(), xq.data(), n);

  // The GPU's activation layout: levels, then per-chunk d and s.
  std::vector<int8_t> q(static_cast<size_t>(n));
  std::vector<float> d(size_t(n / 32)), s(size_t(n / 32));
  if (g::BlockInfo<T>::kAct == g::kActQ8_K) {
    for (int64_t b = 0; b < n / 256; ++b) {
      float db;
      g::quantize_q8k_256(x.data() + b * 256, q.data() + b * 256, &db);
      for (int c = 0; c < 8; ++c) {
        int sum = 0;
        for (int e = 0; e < 32; ++e) sum += q[size_t(b * 256 + c * 32 + e)];
        d[size_t(b * 8 + c)] = db;
        s[size_t(b * 8 + c)] = db * float(sum);
      }
    }
  } else {
    for (int64_t c = 0; c < n / 32; ++c) g::quantize_q8_32(x.data() + c * 32, q.data() + c * 32, &d[size_t(c)], &s[size_t(c)]);
  }
  double got = 0.0;
  for (int64_t c = 0; c < n / 32; ++c) {
    const g::WChunk ch = g::decode_chunk<T>(wq.data(), c);
    int32_t a[8];
    std::memcpy(a, q.data() + c * 32, 32);
    got += g::chunk_dot<T>(ch, a, d[size_t(c)], s[size_t(c)]);
  }
  const double err = std::fabs(got - double(want)) / std::max(1e-6, std::fabs(double(want)));
  report(err < 1e-5, std::string(name) + ": chunk dot products match vec_dot_ref",
         "got " + std::to_string(got) + " want " + std::to_string(want));
}

void check_q8_activations() {
  const int64_t n = 32 * 64;
  std::vector<float> x = random_floats(size_t(n), 5, 2.0f);
  for (int j = 0; j < 32; ++j) x[size_t(32 + j)] = 0.0f;               // an all-zero block
  for (int j = 0; j < 32; ++j) x[size_t(64 + j)] = float(j - 16) * 0.5f;  // exact halves: rounding ties
  std::vector<tdm::BlockQ8_0> r0(size_t(n / 32));
  std::vector<tdm::BlockQ8_1> r1(size_t(n / 32));
  tdm::quantize_row_q8_0_ref(x.data(), r0.data(), n);
  tdm::quantize_row_q8_1_ref(x.data(), r1.data(), n);
  bool ok = true;
  for (int64_t c = 0; c < n / 32; ++c) {
    int8_t q[32];
    float d, s;
    g::quantize_q8_32(x.data() + c * 32, q, &d, &s);
    if (std::memcmp(q, r0[size_t(c)].qs, 32) != 0 || !same_bits(d, tdm::fp16_to_fp32(r0[size_t(c)].d)) ||
        !same_bits(s, tdm::fp16_to_fp32(r1[size_t(c)].s)))
      ok = false;
  }
  report(ok, "q8_0/q8_1 activation quantization is bit-exact");

  const int64_t nk = 256 * 6;
  std::vector<float> y = random_floats(size_t(nk), 9, 3.0f);
  for (int j = 0; j < 256; ++j) y[size_t(256 + j)] = 0.0f;
  y[600] = 9.0f;
  y[700] = -9.0f;  // equal magnitudes: the first one sets the scale's sign
  std::vector<tdm::BlockQ8_K> rk(size_t(nk / 256));
  tdm::quantize_row_q8_K_ref(y.data(), rk.data(), nk);
  bool okk = true;
  for (int64_t b = 0; b < nk / 256; ++b) {
    int8_t q[256];
    float d;
    g::quantize_q8k_256(y.data() + b * 256, q, &d);
    if (std::memcmp(q, rk[size_t(b)].qs, 256) != 0 || !same_bits(d, rk[size_t(b)].d)) okk = false;
  }
  report(okk, "q8_K activation quantization is bit-exact");
}

void check_top_k() {
  std::mt19937 rng(11);
  bool ok = true;
  std::string detail;
  for (int iter = 0; iter < 3000 && ok; ++iter) {
    const int n = 1 + int(rng() % 70);
    const int k = 1 + int(rng() % uint32_t(n));
    std::vector<float> p(static_cast<size_t>(n));
    // Few distinct values so that ties are common.
    const int levels = 1 + int(rng() % 6);
    for (auto& v : p) v = float(rng() % uint32_t(levels)) * 0.25f;
    std::vector<int32_t> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
    std::iota(want.begin(), want.end(), 0);
    std::iota(got.begin(), got.end(), 0);
    const float* pd = p.data();
    std::partial_sort(want.begin(), want.begin() + k, want.end(), [pd](int32_t a, int32_t b) { return pd[a] > pd[b]; });
    g::partial_sort_desc(got.data(), n, k, pd);
    if (!std::equal(want.begin(), want.begin() + k, got.begin())) {
      ok = false;
      detail = "n=" + std::to_string(n) + " k=" + std::to_string(k);
    }
  }
  report(ok, "router top-k order equals std::partial_sort (ties included)", detail);
}

// MXFP4's code table and E8M0 scales, every value: the GPU computes them without tables.
void check_mxfp4_values() {
  bool ok = true;
  std::string detail;
  for (uint32_t c = 0; c < 16; ++c) {
    const int8_t got = int8_t(uint32_t(g::mxfp4_levels4(c << 16)) >> 16);
    if (got != tdm::kMxfp4Values[c] || g::mxfp4_levels4(c) != int32_t(uint8_t(tdm::kMxfp4Values[c]))) {
      ok = false;
      detail = "code " + std::to_string(c);
    }
  }
  // Every code in every byte, beside random neighbours (the lookup works on whole words).
  std::mt19937 rng(39);
  for (int i = 0; i < 100000; ++i) {
    const uint32_t codes = rng() & 0x0F0F0F0Fu;
    const uint32_t got = uint32_t(g::mxfp4_levels4(codes));
    for (int k = 0; k < 4; ++k) {
      if (int8_t(got >> (8 * k)) != tdm::kMxfp4Values[(codes >> (8 * k)) & 0xFu]) {
        ok = false;
        detail = "codes " + std::to_string(codes) + " byte " + std::to_string(k);
      }
    }
  }
  for (uint32_t e = 0; e < 256; ++e) {
    if (!same_bits(g::e8m0_half(uint8_t(e)), tdm::e8m0_half(uint8_t(e)))) {
      ok = false;
      detail = "e8m0 " + std::to_string(e);
    }
  }
  report(ok, "mxfp4 code levels and E8M0 scales match the CPU tables", detail);
}

// IQ4_NL's grid through the byte-selection lookup, every code in every byte.
void check_iq4nl_values() {
  bool ok = true;
  std::string detail;
  std::mt19937 rng(20);
  for (int i = 0; i < 100000 + 16; ++i) {
    const uint32_t codes = i < 16 ? uint32_t(i) * 0x01010101u : rng() & 0x0F0F0F0Fu;
    const uint32_t got = uint32_t(g::iq4nl_levels4(codes));
    for (int k = 0; k < 4; ++k) {
      if (int8_t(got >> (8 * k)) != tdm::kIq4nlValues[(codes >> (8 * k)) & 0xFu]) {
        ok = false;
        detail = "codes " + std::to_string(codes) + " byte " + std::to_string(k);
      }
    }
  }
  report(ok, "iq4_nl code levels match the CPU table", detail);
}

// Q3_K's packed 6-bit scales, every group of random scale bytes.
void check_q3k_scales() {
  bool ok = true;
  std::mt19937 rng(11);
  for (int i = 0; i < 2000; ++i) {
    uint8_t s[12];
    for (auto& b : s) b = uint8_t(rng());
    for (int grp = 0; grp < 16; ++grp) ok = ok && g::scale_q3_k(grp, s) == tdm::unpack_scale_q3_K(grp, s);
  }
  report(ok, "q3_K scales match unpack_scale_q3_K");
}

// The IQ2/IQ3 codebooks and sign codes: every entry of every grid through apply_signs4, with
// every sign nibble, against the CPU's arrays; every 7-bit sign code against iq2_sign_byte.
void check_iq_grids() {
  bool ok = true;
  std::string detail;
  auto check_word = [&](uint32_t mags, const char* grid, int entry) {
    for (uint32_t signs = 0; signs < 16; ++signs) {
      const uint32_t got = uint32_t(g::apply_signs4(mags, signs));
      for (int k = 0; k < 4; ++k) {
        const int m = int((mags >> (8 * k)) & 0xFFu);
        if (int8_t(got >> (8 * k)) != ((signs >> k) & 1u ? -m : m)) {
          ok = false;
          detail = std::string(grid) + " entry " + std::to_string(entry) + " signs " + std::to_string(signs);
        }
      }
    }
  };
  for (int i = 0; i < 256; ++i) {
    ok = ok && g::kIq2xxsGrid[i] == tdm::kIq2xxsGrid[i] && g::kIq3xxsGrid[i] == tdm::kIq3xxsGrid[i];
    check_word(uint32_t(g::kIq2xxsGrid[i]), "iq2_xxs", i);
    check_word(uint32_t(g::kIq2xxsGrid[i] >> 32), "iq2_xxs", i);
    check_word(g::kIq3xxsGrid[i], "iq3_xxs", i);
  }
  for (int i = 0; i < 512; ++i) {
    ok = ok && g::kIq2xsGrid[i] == tdm::kIq2xsGrid[i] && g::kIq3sGrid[i] == tdm::kIq3sGrid[i];
    check_word(uint32_t(g::kIq2xsGrid[i]), "iq2_xs", i);
    check_word(uint32_t(g::kIq2xsGrid[i] >> 32), "iq2_xs", i);
    check_word(g::kIq3sGrid[i], "iq3_s", i);
  }
  for (int i = 0; i < 1024; ++i) {
    ok = ok && g::kIq2sGrid[i] == tdm::kIq2sGrid[i];
    check_word(uint32_t(g::kIq2sGrid[i]), "iq2_s", i);
    check_word(uint32_t(g::kIq2sGrid[i] >> 32), "iq2_s", i);
  }
  for (uint32_t code = 0; code < 128; ++code) {
    // Bits above the code are ignored, as the packed fields hold their neighbours there.
    if (g::iq_sign_byte(code | 0xABCD00u) != tdm::iq2_sign_byte(code)) {
      ok = false;
      detail = "sign code " + std::to_string(code);
    }
  }
  report(ok, "iq2/iq3 grids and sign codes match the CPU tables", detail);
}

// The IQ2/IQ3 types from random block bytes (every index, sign and scale bit pattern, not only
// those tandem's quantizer writes), with a random finite fp16 d: dequantization is bit-exact and
// chunk dot products agree with vec_dot_ref.
template <uint32_t T>
void check_raw_blocks(const char* name, tdm::GgmlType type) {
  constexpr int kBytes = g::BlockInfo<T>::kBytes;
  const int64_t n_blocks = 64, n = n_blocks * 256;
  std::mt19937 rng(300 + T);
  std::vector<uint8_t> wq(size_t(n_blocks * kBytes));
  for (auto& b : wq) b = uint8_t(rng());
  for (int64_t i = 0; i < n_blocks; ++i) {
    const float d = std::ldexp(float(rng() % 1000 + 1) / 1000.0f, -int(rng() % 12)) * (rng() % 8 == 0 ? -1.0f : 1.0f);
    const uint16_t h = tdm::fp32_to_fp16(d);
    std::memcpy(wq.data() + i * kBytes, &h, 2);
  }
  std::vector<float> ref(static_cast<size_t>(n));
  tdm::dequantize_row_ref(type, wq.data(), ref.data(), n);
  std::string detail = first_inexact_chunk<T>(wq, ref);
  const bool exact = detail.empty();
  const std::vector<float> x = random_floats(size_t(n), 400 + T, 1.3f);
  std::vector<tdm::BlockQ8_K> xq(size_t(n / 256));
  tdm::quantize_row_q8_K_ref(x.data(), xq.data(), n);
  const float want = tdm::vec_dot_ref(type, wq.data(), xq.data(), n);
  double got = 0.0;
  for (int64_t c = 0; c < n / 32; ++c) {
    const g::WChunk ch = g::decode_chunk<T>(wq.data(), c);
    int32_t a[8];
    std::memcpy(a, xq[size_t(c / 8)].qs + (c % 8) * 32, 32);
    got += g::chunk_dot<T>(ch, a, xq[size_t(c / 8)].d, 0.0f);
  }
  // Signed terms cancel here, so the error is measured against the sum of magnitudes.
  double scale = 0.0;
  for (int64_t e = 0; e < n; ++e) scale += std::fabs(double(ref[size_t(e)]) * double(xq[size_t(e / 256)].qs[e % 256]) * xq[size_t(e / 256)].d);
  const double err = std::fabs(got - double(want)) / std::max(1e-6, scale);
  if (exact && err >= 1e-5) detail = "dot got " + std::to_string(got) + " want " + std::to_string(want);
  report(exact && err < 1e-5, std::string(name) + ": random blocks dequantize exactly and dot products match", detail);
}

}  // namespace

int main() {
  check_halves();
  check_type<g::kQ4_0>("q4_0", tdm::GgmlType::Q4_0);
  check_type<g::kQ4_1>("q4_1", tdm::GgmlType::Q4_1);
  check_type<g::kQ5_0>("q5_0", tdm::GgmlType::Q5_0);
  check_type<g::kQ5_1>("q5_1", tdm::GgmlType::Q5_1);
  check_type<g::kQ8_0>("q8_0", tdm::GgmlType::Q8_0);
  check_type<g::kQ4_K>("q4_K", tdm::GgmlType::Q4_K);
  check_type<g::kQ5_K>("q5_K", tdm::GgmlType::Q5_K);
  check_type<g::kQ6_K>("q6_K", tdm::GgmlType::Q6_K);
  check_type<g::kMXFP4>("mxfp4", tdm::GgmlType::MXFP4);
  check_type<g::kQ2_K>("q2_K", tdm::GgmlType::Q2_K);
  check_type<g::kQ3_K>("q3_K", tdm::GgmlType::Q3_K);
  check_type<g::kIQ4_NL>("iq4_nl", tdm::GgmlType::IQ4_NL);
  check_type<g::kIQ4_XS>("iq4_xs", tdm::GgmlType::IQ4_XS);
  check_type<g::kIQ2_XXS>("iq2_xxs", tdm::GgmlType::IQ2_XXS);
  check_type<g::kIQ2_XS>("iq2_xs", tdm::GgmlType::IQ2_XS);
  check_type<g::kIQ2_S>("iq2_s", tdm::GgmlType::IQ2_S);
  check_type<g::kIQ3_XXS>("iq3_xxs", tdm::GgmlType::IQ3_XXS);
  check_type<g::kIQ3_S>("iq3_s", tdm::GgmlType::IQ3_S);
  check_raw_blocks<g::kIQ2_XXS>("iq2_xxs", tdm::GgmlType::IQ2_XXS);
  check_raw_blocks<g::kIQ2_XS>("iq2_xs", tdm::GgmlType::IQ2_XS);
  check_raw_blocks<g::kIQ2_S>("iq2_s", tdm::GgmlType::IQ2_S);
  check_raw_blocks<g::kIQ3_XXS>("iq3_xxs", tdm::GgmlType::IQ3_XXS);
  check_raw_blocks<g::kIQ3_S>("iq3_s", tdm::GgmlType::IQ3_S);
  check_iq_grids();
  check_mxfp4_values();
  check_iq4nl_values();
  check_q3k_scales();
  check_q8_activations();
  check_top_k();
  return failures == 0 ? 0 : 1;
}
