// One-token packed matmuls of the CPU kernel tables, alternated in one process: each table is a
// kernel file compiled from some revision (ab.sh), so that two revisions' kernels run on the
// same machine state, on the same memory: one buffer in 2 MiB pages, as a model's file weights are.
//
//   packed-stream TYPE ROWS COLS ROUNDS [COPIES]
//
// THREADS (environment, default 1) runs each matmul on that many threads of tandem's pool,
// its groups handed out as the CPU backend hands them out for one token (guided: long
// contiguous stretches first, shrinking to one group; SHARE overrides the backend's 2 x THREADS
// divisor of the work left).
//
// TYPE is a ggml type name or id with packed kernels (q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K,
// q4_K, q5_K, q6_K, mxfp4, iq4_nl, iq4_xs). COPIES matrices are laid end to end and multiplied in turn, so that small matrices
// stream from memory as a model's layers do. Prints each table's median GB/s of packed bytes
// and fails when two tables' outputs differ in any bit.
#include <sys/mman.h>

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
#include "cpu/thread_pool.h"

using namespace tdm::cpu;

// ab.sh defines TABLES as TDM_TABLE(name) TDM_TABLE(name) ...: fill functions renamed per revision.
#define TDM_TABLE(name) namespace tdm::cpu { void fill_##name(Kernels&); }
TABLES
#undef TDM_TABLE

namespace {

struct Table {
  std::string name;
  Kernels k;
};

// Random quants with a small finite fp16 scale where each type keeps it: timing only needs
// finite values, and every table reads the same bytes.
std::vector<uint8_t> random_rows(int type, size_t row_bytes, size_t block_bytes, std::mt19937& rng) {
  std::vector<uint8_t> src(row_bytes * size_t(kPackRows));
  for (auto& b : src) b = uint8_t(rng());
  for (size_t at = 0; at < src.size(); at += block_bytes) {
    uint8_t* blk = src.data() + at;
    const uint16_t h = uint16_t(0x1c00 | (rng() & 0x3ff));
    if (type == 39) blk[0] = 120;  // E8M0 exponent 2^-7
    else if (type == 14) std::memcpy(blk + 208, &h, 2);
    else {
      std::memcpy(blk, &h, 2);
      if (type == 3 || type == 7 || type == 12 || type == 13) std::memcpy(blk + 2, &h, 2);
    }
  }
  return src;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: packed-stream TYPE ROWS COLS ROUNDS [COPIES]\n");
    return 2;
  }
  const int64_t by_name = tdm::type_id_by_name(argv[1]);
  const int type = int(by_name >= 0 ? by_name : std::atoi(argv[1]));
  const tdm::TypeTraits* tt = type >= 0 && type < kNumTypes ? tdm::type_traits(uint32_t(type)) : nullptr;
  const int64_t rows = std::atoll(argv[2]), cols = std::atoll(argv[3]);
  const int rounds = std::atoi(argv[4]);
  const int copies = argc > 5 ? std::atoi(argv[5]) : 1;
  const char* base = std::getenv("BASE_ISA") ? std::getenv("BASE_ISA") : "avx512";
  if (tt == nullptr || cols % int64_t(tt->block_size) != 0 || rows <= 0 || rounds <= 0 || copies <= 0) {
    std::fprintf(stderr, "packed-stream: bad type or sizes\n");
    return 2;
  }
  std::vector<Table> tables;
  const Kernels* k0 = kernels_for(base);
  if (k0 == nullptr) {
    std::fprintf(stderr, "packed-stream: this processor lacks %s\n", base);
    return 2;
  }
#define TDM_TABLE(name) { Table t{#name, *k0}; fill_##name(t.k); tables.push_back(t); }
  TABLES
#undef TDM_TABLE
  const PackedOps& ops0 = tables[0].k.packed[type];
  if (ops0.gemm == nullptr) {
    std::fprintf(stderr, "packed-stream: no packed kernel for type %d\n", type);
    return 2;
  }
  std::mt19937 rng(1);
  const size_t rb = tdm::row_bytes(*tt, uint64_t(cols));
  const std::vector<uint8_t> src = random_rows(type, rb, tt->type_size, rng);
  // Each table packs the matrix its own way (revisions may change a type's layout), but all of
  // them read one buffer: separate buffers got different physical pages (2 MiB or not, and
  // where), which on this VM moved a table's speed by up to 1.4x with the same code. A table
  // whose packed group differs from what the buffer holds refills it before its turn.
  const int64_t ng = (rows + kPackRows - 1) / kPackRows;
  std::vector<std::vector<uint8_t>> group(tables.size());
  size_t most = 0;
  for (size_t v = 0; v < tables.size(); ++v) {
    const PackedOps& ops = tables[v].k.packed[type];
    group[v].resize(ops.group_bytes(cols));
    ops.pack_group(src.data(), rb, kPackRows, cols, group[v].data());
    most = std::max(most, group[v].size() * size_t(ng) * size_t(copies));
  }
  const size_t total = (most + (size_t(2) << 20)) & ~((size_t(2) << 20) - 1);
  uint8_t* w = static_cast<uint8_t*>(std::aligned_alloc(size_t(2) << 20, total));
  madvise(w, total, MADV_HUGEPAGE);
  const std::vector<uint8_t>* held = nullptr;
  auto fill = [&](size_t v) {
    if (held != nullptr && *held == group[v]) return;
    for (int64_t g = 0; g < ng * copies; ++g) std::memcpy(w + size_t(g) * group[v].size(), group[v].data(), group[v].size());
    held = &group[v];
  };
  const size_t ab = ops0.act_bytes(cols);
  uint8_t* act = static_cast<uint8_t*>(std::aligned_alloc(64, ab));
  std::vector<float> x(static_cast<size_t>(cols));
  for (auto& v : x) v = float(int(rng() % 2001) - 1000) / 1000.0f;
  ops0.quantize_act(x.data(), cols, act);
  std::vector<float> y(static_cast<size_t>(rows)), y0;
  const int threads = std::getenv("THREADS") ? std::max(1, std::atoi(std::getenv("THREADS"))) : 1;
  ThreadPool pool(threads);
  // The backend's guided split of one token's groups (cpu_backend.cpp plan_tasks).
  std::vector<std::pair<int64_t, int64_t>> tasks;
  const int64_t share = std::getenv("SHARE") ? std::max(1, std::atoi(std::getenv("SHARE"))) : 2 * threads;
  for (int64_t g = 0, left = ng; g < ng;) {
    const int64_t size = std::min(std::max<int64_t>((left + share - 1) / share, 1), ng - g);
    tasks.push_back({g, g + size});
    g += size;
    left -= size;
  }
  std::vector<std::vector<double>> secs(tables.size());
  // Each round's best pass per table: a slow spell of the machine hits a round's tables alike,
  // so the median of the rounds' ratios holds still where the tables' own medians move.
  std::vector<std::vector<double>> round_best(tables.size());
  int status = 0;
  for (int r = 0; r < rounds; ++r) {
    // Each round starts at another table, so that no table always runs first or last.
    for (size_t i = 0; i < tables.size(); ++i) {
      const size_t v = (size_t(r) + i) % tables.size();
      const PackedOps& ops = tables[v].k.packed[type];
      const size_t gb = group[v].size(), mat = gb * size_t(ng);
      fill(v);
      for (int rep = 0; rep < 3; ++rep) {  // the first pass of each turn warms up
        const auto t0 = std::chrono::steady_clock::now();
        for (int c = 0; c < copies; ++c) {
          const uint8_t* wc = w + size_t(c) * mat;
          pool.run(int64_t(tasks.size()), [&](int64_t k, int) {
            const auto [g0, g1] = tasks[size_t(k)];
            const int64_t r0 = g0 * kPackRows, r1 = std::min(rows, g1 * kPackRows);
            ops.gemm(wc + size_t(g0) * gb, gb, g1 - g0, r1 - r0, cols, act, ab, 1, y.data() + r0, r1 - r0);
          }, 1e12);
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / copies;
        if (rep > 0) secs[v].push_back(s);
        if (rep == 1) round_best[v].push_back(s);
        else if (rep > 1) round_best[v].back() = std::min(round_best[v].back(), s);
      }
      if (r > 0) continue;
      if (v == 0) y0 = y;
      else if (std::memcmp(y.data(), y0.data(), y.size() * sizeof(float)) != 0) {
        std::printf("%s: outputs differ from %s\n", tables[v].name.c_str(), tables[0].name.c_str());
        status = 1;
      }
    }
  }
  for (size_t v = 0; v < tables.size(); ++v) {
    std::sort(secs[v].begin(), secs[v].end());
    const double med = secs[v][secs[v].size() / 2];
    std::printf("%-6s %6lld x %-6lld x%-3d  %-12s %8.3f ms  %5.1f GB/s", tt->name, static_cast<long long>(rows),
                static_cast<long long>(cols), copies, tables[v].name.c_str(), med * 1e3, double(group[v].size() * size_t(ng)) / med / 1e9);
    if (v > 0) {
      // Speed against the first table: median of the rounds' ratios, and their spread.
      std::vector<double> ratio;
      for (size_t r = 0; r < round_best[v].size(); ++r) ratio.push_back(round_best[0][r] / round_best[v][r]);
      std::sort(ratio.begin(), ratio.end());
      std::printf("  %.3fx of %s (rounds %.2f-%.2f)", ratio[ratio.size() / 2], tables[0].name.c_str(), ratio.front(), ratio.back());
    }
    std::printf("\n");
  }
  return status;
}
