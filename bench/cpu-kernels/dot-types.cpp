// Times the dot-product kernels of one weight type in every kernel table (reference, AVX2,
// AVX-VNNI, AVX-512) and each table's packed gemm where it has one, on one thread: a matvec
// (one token) and a matmul of N tokens, alternated round by round so that a noisy machine's
// slow spells hit every variant alike; prints each one's median milliseconds. The packed
// gemms run in the tasks the CPU backend gives one thread; the dot products (and llama.cpp's)
// run token by token over all rows, so with many tokens they stream the weights once per
// token where llama.cpp's mul_mat would tile them. With
// GGML_CPU_LIB (a llama.cpp CPU backend library, e.g. node-llama-cpp's libggml-cpu-zen4.so) it
// also times llama.cpp's ggml_vec_dot for the type (its dot-product path, not its repacked
// gemv) and checks which tandem variants give its bits.
//
//   dot-types TYPE ROWS COLS TOKENS ROUNDS [TABLES]
// TYPE: q2_K, q3_K, iq4_nl, iq4_xs, q4_K, q6_K, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s (the IQ2/IQ3
// weights from tandem's own quantizer). TABLES (default ref,avx2,avxvnni,avx512): the tables to
// time, comma-separated; the AVX2 dot products always run (the bits' baseline).
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/ggml_types.h"
#include "cpu/kernels.h"
#include "cpu/quants.h"

using namespace tdm;
using namespace tdm::cpu;

namespace {

using GgmlVecDot = void (*)(int, float*, size_t, const void*, size_t, const void*, size_t, int);
using GgmlQuantize = void (*)(const float*, void*, int64_t);

struct TypeName {
  const char* name;
  GgmlType type;
  const char* ggml_dot;       // llama.cpp's vec_dot symbol
  const char* ggml_quantize;  // its activation quantizer
};
constexpr TypeName kTypes[] = {
    {"q2_K", GgmlType::Q2_K, "ggml_vec_dot_q2_K_q8_K", "quantize_row_q8_K"},
    {"q3_K", GgmlType::Q3_K, "ggml_vec_dot_q3_K_q8_K", "quantize_row_q8_K"},
    {"iq4_nl", GgmlType::IQ4_NL, "ggml_vec_dot_iq4_nl_q8_0", "quantize_row_q8_0"},
    {"iq4_xs", GgmlType::IQ4_XS, "ggml_vec_dot_iq4_xs_q8_K", "quantize_row_q8_K"},
    {"q4_K", GgmlType::Q4_K, "ggml_vec_dot_q4_K_q8_K", "quantize_row_q8_K"},
    {"q6_K", GgmlType::Q6_K, "ggml_vec_dot_q6_K_q8_K", "quantize_row_q8_K"},
    {"iq2_xxs", GgmlType::IQ2_XXS, "ggml_vec_dot_iq2_xxs_q8_K", "quantize_row_q8_K"},
    {"iq2_xs", GgmlType::IQ2_XS, "ggml_vec_dot_iq2_xs_q8_K", "quantize_row_q8_K"},
    {"iq2_s", GgmlType::IQ2_S, "ggml_vec_dot_iq2_s_q8_K", "quantize_row_q8_K"},
    {"iq3_xxs", GgmlType::IQ3_XXS, "ggml_vec_dot_iq3_xxs_q8_K", "quantize_row_q8_K"},
    {"iq3_s", GgmlType::IQ3_S, "ggml_vec_dot_iq3_s_q8_K", "quantize_row_q8_K"},
};

double now_ms() { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One way of running the matmul: fills y[t * rows + r] and is timed as a whole.
struct Variant {
  std::string name;
  std::vector<double> ms_one, ms_many;
  std::vector<float> y_one, y_many;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: dot-types TYPE ROWS COLS TOKENS ROUNDS\n");
    return 2;
  }
  const TypeName* tn = nullptr;
  for (const auto& t : kTypes)
    if (std::string(argv[1]) == t.name) tn = &t;
  if (tn == nullptr) {
    std::fprintf(stderr, "dot-types: unknown type %s\n", argv[1]);
    return 2;
  }
  const int64_t rows = std::atoll(argv[2]), cols = std::atoll(argv[3]), tokens = std::atoll(argv[4]);
  const int rounds = std::atoi(argv[5]);
  const GgmlType wt = tn->type, at = vec_dot_type(wt);
  const size_t wrb = row_bytes(*type_traits(uint32_t(wt)), uint64_t(cols));
  const size_t arb = row_bytes(*type_traits(uint32_t(at)), uint64_t(cols));

  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> wf(static_cast<size_t>(cols)), x(static_cast<size_t>(tokens * cols));
  std::vector<uint8_t> w(wrb * size_t(rows));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : wf) v = nd(rng) * 0.02f;
    quantize_row_ref(wt, wf.data(), w.data() + size_t(r) * wrb, cols);
  }
  for (auto& v : x) v = nd(rng);

  const std::string wanted = "," + std::string(argc > 6 ? argv[6] : "ref,avx2,avxvnni,avx512") + ",avx2,";
  std::vector<Variant> vs;
  std::vector<const Kernels*> tables;
  for (const char* isa : {"ref", "avx2", "avxvnni", "avx512"}) {
    const Kernels* k = kernels_for(isa);
    if (k == nullptr || wanted.find("," + std::string(isa) + ",") == std::string::npos) continue;
    tables.push_back(k);
    vs.push_back({isa, {}, {}, {}, {}});
  }
  // Each table's packed gemm (where it has one) on its own copy of the groups. The packed
  // kernels load whole aligned vectors: groups and activations on 64-byte lines.
  struct Packed {
    const PackedOps* po;
    std::vector<uint8_t> group_buf, act_buf;
    uint8_t* groups;
    uint8_t* act;
    size_t gb, ab;
  };
  std::vector<Packed> packs;
  auto align64 = [](std::vector<uint8_t>& b) { return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(b.data()) + 63) & ~uintptr_t(63)); };
  const int64_t n_groups = (rows + kPackRows - 1) / kPackRows;
  const size_t n_tables = tables.size();
  for (size_t i = 0; i < n_tables; ++i) {
    const PackedOps& po = tables[i]->packed[int(wt)];
    if (po.gemm == nullptr) continue;
    Packed p{&po, {}, {}, nullptr, nullptr, po.group_bytes(cols), po.act_bytes(cols)};
    p.group_buf.resize(p.gb * size_t(n_groups) + 64);
    p.groups = align64(p.group_buf);
    for (int64_t g = 0; g < n_groups; ++g)
      po.pack_group(w.data() + size_t(g * kPackRows) * wrb, wrb, std::min<int64_t>(kPackRows, rows - g * kPackRows), cols, p.groups + size_t(g) * p.gb);
    p.act_buf.resize(p.ab * size_t(tokens) + 64);
    p.act = align64(p.act_buf);
    packs.push_back(std::move(p));
    vs.push_back({vs[i].name + " packed", {}, {}, {}, {}});
  }

  GgmlVecDot ggml_dot = nullptr;
  GgmlQuantize ggml_quant = nullptr;
  if (const char* lib = std::getenv("GGML_CPU_LIB")) {
    void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) std::fprintf(stderr, "dot-types: %s\n", dlerror());
    else {
      ggml_dot = reinterpret_cast<GgmlVecDot>(dlsym(h, tn->ggml_dot));
      ggml_quant = reinterpret_cast<GgmlQuantize>(dlsym(h, tn->ggml_quantize));
      // ggml_cpu_init fills the fp16 table the dot products read their scales through.
      if (auto init = reinterpret_cast<void (*)()>(dlsym(h, "ggml_cpu_init"))) init();
      if (ggml_dot != nullptr && ggml_quant != nullptr) vs.push_back({"llama.cpp vec_dot", {}, {}, {}, {}});
    }
  }

  std::vector<uint8_t> act(arb * size_t(tokens));
  // Runs variant i on n tokens into y; the activations are quantized inside (as a matmul does).
  auto run = [&](size_t i, int64_t n, std::vector<float>& y) {
    y.assign(size_t(n * rows), 0.0f);
    if (i < tables.size()) {
      const Kernels& k = *tables[i];
      for (int64_t t = 0; t < n; ++t) k.from_float[int(at)](x.data() + t * cols, act.data() + size_t(t) * arb, cols);
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* wr = w.data() + size_t(r) * wrb;
        int64_t t = 0;
        if (k.vec_dot4[int(wt)] != nullptr) {
          float out[4];
          for (; t + 4 <= n; t += 4) {
            k.vec_dot4[int(wt)](wr, act.data() + size_t(t) * arb, arb, cols, out);
            for (int j = 0; j < 4; ++j) y[size_t((t + j) * rows + r)] = out[j];
          }
        }
        for (; t < n; ++t) y[size_t(t * rows + r)] = k.vec_dot[int(wt)](wr, act.data() + size_t(t) * arb, cols);
      }
    } else if (i < tables.size() + packs.size()) {
      const Packed& p = packs[i - tables.size()];
      for (int64_t t = 0; t < n; ++t) p.po->quantize_act(x.data() + t * cols, cols, p.act + size_t(t) * p.ab);
      // As the CPU backend plans one thread's tasks (cpu_backend.cpp, plan_tasks): up to 6
      // tokens one stretch of all groups, past that tasks of 4 groups, whose weights stay in
      // the caches across the token tiles.
      const int64_t step = n <= 6 ? n_groups : 4;
      for (int64_t g0 = 0; g0 < n_groups; g0 += step) {
        const int64_t ng = std::min(step, n_groups - g0);
        p.po->gemm(p.groups + size_t(g0) * p.gb, p.gb, ng, std::min(ng * kPackRows, rows - g0 * kPackRows), cols, p.act, p.ab, n,
                   y.data() + g0 * kPackRows, rows);
      }
    } else {
      for (int64_t t = 0; t < n; ++t) ggml_quant(x.data() + t * cols, act.data() + size_t(t) * arb, cols);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) ggml_dot(int(cols), &y[size_t(t * rows + r)], 0, w.data() + size_t(r) * wrb, 0, act.data() + size_t(t) * arb, 0, 1);
    }
  };
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < vs.size(); ++i) {
      const bool slow = vs[i].name == "ref" && round >= 3;  // the reference is only the baseline
      if (slow) continue;
      double t0 = now_ms();
      run(i, 1, vs[i].y_one);
      vs[i].ms_one.push_back(now_ms() - t0);
      t0 = now_ms();
      run(i, tokens, vs[i].y_many);
      vs[i].ms_many.push_back(now_ms() - t0);
    }
  }
  const double gb_w = double(wrb) * double(rows) / 1e9;
  std::printf("%s %lldx%lld (%.1f MB), %lld tokens, %d rounds, 1 thread\n", tn->name, (long long)rows, (long long)cols, gb_w * 1e3,
              (long long)tokens, rounds);
  const Variant& base = *std::find_if(vs.begin(), vs.end(), [](const Variant& v) { return v.name == "avx2"; });
  for (const auto& v : vs) {
    const double one = median(v.ms_one), many = median(v.ms_many);
    const bool same_one = v.y_one == base.y_one, same_many = v.y_many == base.y_many;
    std::printf("  %-18s 1 token %8.2f ms (%5.1f GB/s)   %lld tokens %9.2f ms   bits %s avx2\n", v.name.c_str(), one, gb_w / one * 1e3,
                (long long)tokens, many, same_one && same_many ? "=" : "!=");
  }
  return 0;
}
