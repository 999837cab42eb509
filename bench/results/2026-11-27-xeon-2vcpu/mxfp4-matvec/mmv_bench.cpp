// One-token matvec, 1 thread, through the CPU kernel tables: q4_0 against mxfp4 on the stored
// layout (each table's vec_dot per row, activations converted once) and on packed groups of 16
// rows (what file-mapped weights run on), activation quantization included. Weights are copies
// of one matrix cycled so that the working set is `MiB` (default 384: far beyond the 35.8 MiB
// L3; 1 keeps two copies of a small matrix in L3). GB/s of weight bytes read, per run and median.
// Build from the repository root after node-gyp:
//   g++ -std=c++17 -O2 -I native mmv_bench.cpp build/Release/tandem_core.a \
//     build/Release/tandem_cpu_avx512.a build/Release/tandem_cpu_avx2.a -lpthread -ldl -o mmv_bench
// Run: ./mmv_bench [runs=7] [MiB=384]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/ggml_types.h"
#include "cpu/kernels.h"
#include "cpu/membw.h"
#include "cpu/quants.h"

using namespace tdm;
using namespace tdm::cpu;

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

static uint8_t* alloc(size_t n) {
  const size_t r = (n + 63) / 64 * 64;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, r));
  std::memset(p, 1, r);
  return p;
}

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 7;
  const size_t set_bytes = size_t(argc > 2 ? std::atoi(argv[2]) : 384) << 20;
  const ReadBandwidth bw = measure_read_bandwidth(size_t(384) << 20, 1, 5);
  std::printf("read bandwidth, 1 thread: %.2f GB/s\n", bw.bytes_per_second / 1e9);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{2880, 2880}, {14336, 4096}};
  std::mt19937 gen(1);
  std::normal_distribution<float> nd(0.f, 0.05f);
  for (const auto& shape : shapes) {
    const int64_t rows = shape.first, cols = shape.second;
    std::vector<float> x(static_cast<size_t>(cols));
    for (auto& v : x) v = nd(gen) * 20;
    for (GgmlType type : {GgmlType::Q4_0, GgmlType::MXFP4}) {
      const TypeTraits& tt = *type_traits(uint32_t(type));
      const size_t rb = row_bytes(tt, uint64_t(cols));
      const size_t mb = rb * size_t(rows);
      // A 64-row random pattern repeated: the same bytes move as with a full random matrix.
      std::vector<float> w(static_cast<size_t>(64 * cols));
      for (auto& v : w) v = nd(gen);
      std::vector<uint8_t> pat(rb * 64);
      quantize_row_ref(type, w.data(), pat.data(), 64 * cols);
      const int copies = int(std::max<size_t>(2, set_bytes / mb));
      uint8_t* stored = alloc(mb * size_t(copies));
      for (int c = 0; c < copies; ++c)
        for (int64_t r = 0; r < rows; ++r) std::memcpy(stored + size_t(c) * mb + size_t(r) * rb, pat.data() + size_t(r % 64) * rb, rb);
      std::vector<float> y(static_cast<size_t>(rows)), y_rows(static_cast<size_t>(rows));
      auto bench = [&](const std::string& name, size_t bytes_per_call, auto&& call) {
        for (int c = 0; c < 2; ++c) call(c % copies);
        std::vector<double> gbs;
        for (int r = 0; r < runs; ++r) {
          const int calls = std::max(copies, int(5e8 / double(bytes_per_call)));
          const double t0 = now();
          for (int k = 0; k < calls; ++k) call(k % copies);
          gbs.push_back(double(bytes_per_call) * calls / (now() - t0) / 1e9);
        }
        std::vector<double> s = gbs;
        std::sort(s.begin(), s.end());
        std::printf("%-5s %5lldx%-5lld %-14s median %6.2f GB/s  runs:", tt.name, (long long)rows, (long long)cols, name.c_str(), s[s.size() / 2]);
        for (double g : gbs) std::printf(" %.2f", g);
        std::printf("\n");
        std::fflush(stdout);
      };
      for (const char* isa : {"avx2", "avx512"}) {
        const Kernels* k = kernels_for(isa);
        if (k == nullptr) continue;
        const GgmlType at = vec_dot_type(type);
        std::vector<uint8_t> act(row_bytes(*type_traits(uint32_t(at)), uint64_t(cols)));
        bench(std::string(isa) + " rows", mb, [&](int c) {
          k->from_float[int(at)](x.data(), act.data(), cols);
          const uint8_t* m = stored + size_t(c) * mb;
          for (int64_t r = 0; r < rows; ++r) y[size_t(r)] = k->vec_dot[int(type)](m + size_t(r) * rb, act.data(), cols);
        });
        y_rows = y;
      }
      for (const char* isa : {"avx2", "avx512"}) {
        const Kernels* k = kernels_for(isa);
        if (k == nullptr || k->packed[int(type)].gemm == nullptr) continue;
        const PackedOps& po = k->packed[int(type)];
        const size_t gb = po.group_bytes(cols);
        const int64_t ng = (rows + kPackRows - 1) / kPackRows;
        const size_t pmb = gb * size_t(ng);
        uint8_t* packed = alloc(pmb * size_t(copies));
        for (int c = 0; c < copies; ++c)
          for (int64_t g = 0; g < ng; ++g)
            po.pack_group(stored + size_t(c) * mb + size_t(g * kPackRows) * rb, rb, std::min<int64_t>(kPackRows, rows - g * kPackRows), cols,
                          packed + size_t(c) * pmb + size_t(g) * gb);
        uint8_t* act = alloc(po.act_bytes(cols));
        bench(std::string(isa) + " packed", pmb, [&](int c) {
          po.quantize_act(x.data(), cols, act);
          po.gemm(packed + size_t(c) * pmb, gb, ng, rows, cols, act, po.act_bytes(cols), 1, y.data(), rows);
        });
        if (std::memcmp(y.data(), y_rows.data(), y.size() * sizeof(float)) != 0) std::printf("  %s packed: not the rows' bits\n", isa);
        std::free(act);
        std::free(packed);
      }
      std::free(stored);
    }
  }
  return 0;
}
