// One-token packed matmuls of the CPU kernel tables, alternated in one process: each table is a
// kernel file compiled from some revision (ab.sh), so that two revisions' kernels run on the
// same machine state. The matrix is packed once into 2 MiB pages, as a model's file weights are.
//
//   packed-stream TYPE ROWS COLS ROUNDS [COPIES]
//
// TYPE is a ggml type id (2 q4_0, 3 q4_1, 6 q5_0, 7 q5_1, 8 q8_0, 12 q4_K, 13 q5_K, 14 q6_K,
// 39 mxfp4). COPIES matrices are laid end to end and multiplied in turn, so that small matrices
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

#include "cpu/kernels.h"

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

// Bytes and elements of one stored block, for the types with packed kernels.
bool block_of(int type, size_t* bytes, size_t* elems) {
  switch (type) {
    case 2: *bytes = 18, *elems = 32; return true;
    case 3: *bytes = 20, *elems = 32; return true;
    case 6: *bytes = 22, *elems = 32; return true;
    case 7: *bytes = 24, *elems = 32; return true;
    case 8: *bytes = 34, *elems = 32; return true;
    case 12: *bytes = 144, *elems = 256; return true;
    case 13: *bytes = 176, *elems = 256; return true;
    case 14: *bytes = 210, *elems = 256; return true;
    case 39: *bytes = 17, *elems = 32; return true;
    default: return false;
  }
}

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
  const int type = std::atoi(argv[1]);
  const int64_t rows = std::atoll(argv[2]), cols = std::atoll(argv[3]);
  const int rounds = std::atoi(argv[4]);
  const int copies = argc > 5 ? std::atoi(argv[5]) : 1;
  const char* base = std::getenv("BASE_ISA") ? std::getenv("BASE_ISA") : "avx512";
  size_t bb = 0, be = 0;
  if (!block_of(type, &bb, &be) || cols % int64_t(be) != 0 || rows <= 0 || rounds <= 0 || copies <= 0) {
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
  const size_t rb = size_t(cols) / be * bb;
  const std::vector<uint8_t> src = random_rows(type, rb, bb, rng);
  const size_t gb = ops0.group_bytes(cols);
  const int64_t ng = (rows + kPackRows - 1) / kPackRows;
  const size_t mat = gb * size_t(ng);
  const size_t total = (mat * size_t(copies) + (size_t(2) << 20)) & ~((size_t(2) << 20) - 1);
  uint8_t* w = static_cast<uint8_t*>(std::aligned_alloc(size_t(2) << 20, total));
  madvise(w, total, MADV_HUGEPAGE);
  std::vector<uint8_t> g0(gb);
  ops0.pack_group(src.data(), rb, kPackRows, cols, g0.data());
  for (int64_t g = 0; g < ng * copies; ++g) std::memcpy(w + size_t(g) * gb, g0.data(), gb);
  const size_t ab = ops0.act_bytes(cols);
  uint8_t* act = static_cast<uint8_t*>(std::aligned_alloc(64, ab));
  std::vector<float> x(static_cast<size_t>(cols));
  for (auto& v : x) v = float(int(rng() % 2001) - 1000) / 1000.0f;
  ops0.quantize_act(x.data(), cols, act);
  std::vector<float> y(static_cast<size_t>(rows)), y0;
  std::vector<std::vector<double>> secs(tables.size());
  int status = 0;
  for (int r = 0; r < rounds; ++r) {
    for (size_t v = 0; v < tables.size(); ++v) {
      const PackedOps& ops = tables[v].k.packed[type];
      for (int rep = 0; rep < 3; ++rep) {  // the first pass of each turn warms up
        const auto t0 = std::chrono::steady_clock::now();
        for (int c = 0; c < copies; ++c) ops.gemm(w + size_t(c) * mat, gb, ng, rows, cols, act, ab, 1, y.data(), rows);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / copies;
        if (rep > 0) secs[v].push_back(s);
      }
      if (y0.empty()) y0 = y;
      else if (r == 0 && std::memcmp(y.data(), y0.data(), y.size() * sizeof(float)) != 0) {
        std::printf("%s: outputs differ from %s\n", tables[v].name.c_str(), tables[0].name.c_str());
        status = 1;
      }
    }
  }
  for (size_t v = 0; v < tables.size(); ++v) {
    std::sort(secs[v].begin(), secs[v].end());
    const double med = secs[v][secs[v].size() / 2];
    std::printf("type %2d  %6lld x %-6lld x%-3d  %-12s %8.3f ms  %5.1f GB/s\n", type, static_cast<long long>(rows),
                static_cast<long long>(cols), copies, tables[v].name.c_str(), med * 1e3, double(mat) / med / 1e9);
  }
  return status;
}
