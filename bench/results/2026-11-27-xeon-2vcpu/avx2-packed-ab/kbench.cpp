// Build: g++ -std=c++17 -O3 -mavx2 -mfma -mf16c -I native with native/cpu/{kernels_ref,quants_ref}.cpp,
// native/core/ggml_types.cpp and both kernel files (AVX-512 with its binding.gyp flags).
// Run: ./kb <avx2|avx512> <q4_0|q4_K|q5_K|q6_K|q8_0> <rows> <cols> <matrices> <iters> [tokens]
// (the matvec table of the README ran before the tasks of 8 groups below were added; one
// token streams every group once either way)
// Packed matvec (one token) over matrices larger than the LLC: GB/s of packed weights read.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#include <immintrin.h>
#include <sys/mman.h>
#include "cpu/kernels.h"
#include "cpu/quants.h"
#include "core/ggml_types.h"
using namespace tdm;
using namespace tdm::cpu;
int main(int argc, char** argv) {
  std::string isa = argv[1], ty = argv[2];
  int64_t R = atol(argv[3]), C = atol(argv[4]), M = atol(argv[5]), iters = atol(argv[6]), NT = argc > 7 ? atol(argv[7]) : 1;
  Kernels k = kernels_ref();
  if (isa == "avx2") fill_kernels_avx2(k); else fill_kernels_avx512(k);
  GgmlType t = ty == "q4_K" ? GgmlType::Q4_K : ty == "q5_K" ? GgmlType::Q5_K : ty == "q4_0" ? GgmlType::Q4_0 : ty == "q6_K" ? GgmlType::Q6_K : GgmlType::Q8_0;
  const PackedOps& po = k.packed[int(t)];
  const TypeTraits* tt = type_traits(uint32_t(t));
  const size_t rb = row_bytes(*tt, uint64_t(C));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> w(64 * C);
  for (auto& v : w) v = nd(rng) * 0.1f;
  std::vector<uint8_t> rows(64 * rb);
  for (int r = 0; r < 64; ++r) quantize_row_ref(t, w.data() + r * C, rows.data() + r * rb, C);
  const int64_t ng = (R + 15) / 16;
  const size_t gb = po.group_bytes(C);
  std::vector<uint8_t*> mats(M);
  for (auto& m : mats) {
    const size_t sz = (gb * ng + (2u << 20) - 1) / (2u << 20) * (2u << 20);
    m = static_cast<uint8_t*>(aligned_alloc(2u << 20, sz));
    if (getenv("HUGE")) madvise(m, sz, MADV_HUGEPAGE);
    for (int64_t g = 0; g < ng; ++g) po.pack_group(rows.data() + (g % 4) * 16 * rb, rb, 16, C, m + g * gb);
  }
  std::vector<float> x(C);
  uint8_t* act = static_cast<uint8_t*>(aligned_alloc(64, po.act_bytes(C) * NT));
  for (int64_t t = 0; t < NT; ++t) {
    for (auto& v : x) v = nd(rng);
    po.quantize_act(x.data(), C, act + t * po.act_bytes(C));
  }
  std::vector<float> y(R * NT);
  std::vector<double> rates;
  for (int64_t it = 0; it < iters; ++it) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t m = 0; m < M; ++m) {
      // Tasks of 8 groups, as the backend hands out row blocks: a task's groups stay in L2
      // while its token tiles pass over them.
      for (int64_t g0 = 0; g0 < ng; g0 += 8) {
        const int64_t n_g = std::min<int64_t>(8, ng - g0);
        po.gemm(mats[m] + g0 * gb, gb, n_g, std::min<int64_t>(n_g * 16, R - g0 * 16), C, act, po.act_bytes(C), NT, y.data() + g0 * 16, R);
      }
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(NT > 1 ? double(2 * R * C * NT * M) / s / 1e9 : double(gb * ng * M) / s / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  // read bandwidth of the same bytes
  std::vector<double> bw;
  for (int it = 0; it < 3; ++it) {
    auto t0 = std::chrono::steady_clock::now();
    __m256i acc = _mm256_setzero_si256();
    for (int64_t m = 0; m < M; ++m) for (size_t o = 0; o < gb * ng; o += 64) acc = _mm256_xor_si256(acc, _mm256_load_si256((const __m256i*)(mats[m] + o)));
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    volatile int sink = _mm256_extract_epi32(acc, 0); (void)sink;
    bw.push_back(double(gb * ng * M) / s / 1e9);
  }
  std::sort(bw.begin(), bw.end());
  double ysum = 0; for (float v : y) ysum += v;
  printf("%s %s %ldx%ld x%ld: median %.2f GB/s or GFLOP/s (best %.2f), read bw %.2f GB/s, ysum %.9g\n", isa.c_str(), ty.c_str(), R, C, NT, rates[rates.size() / 2], rates.back(), bw.back(), ysum);
}
