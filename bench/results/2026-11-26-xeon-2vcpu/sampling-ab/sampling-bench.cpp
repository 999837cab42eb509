// Time per draw of native/core/sampling.cpp, alone (no Node, one thread, scratch kept as the
// executor keeps it): g++ -O3 -std=c++17 -I<checkout>/native sampling-bench.cpp
// <checkout>/native/core/sampling.cpp; run: ./a.out <vocab> peaked|flat. run-ab.sh builds it
// against two commits. The checksum (sum of the drawn ids) says whether both drew the same.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <cmath>
#include "core/sampling.h"
using namespace tdm;
// Logits: "flat", uniform in [-10, 10]; "peaked", Gaussian (sd 2) with one token in 2000
// raised by 12, closer to a language model's.
int main(int argc, char** argv) {
  const int V = atoi(argv[1]); const char* shape = argv[2];
  std::vector<float> x(V);
  uint64_t s = 1; auto u = [&] { s = s * 6364136223846793005ull + 1442695040888963407ull; return double(s >> 11) / 9007199254740992.0; };
  for (int i = 0; i < V; i++) {
    if (shape[0] == 'f') x[i] = float(u() * 20 - 10);
    else { double g = std::sqrt(-2 * std::log(u() + 1e-300)) * std::cos(6.283185307 * u()); x[i] = float(2.0 * g + (u() < 0.0005 ? 12 : 0)); }
  }
  struct C { const char* name; SamplingConfig c; };
  std::vector<C> cs(5);
  cs[0].name = "greedy";
  cs[1].name = "defaults t0.8 k40 p0.95 minp0.05"; cs[1].c.temperature = 0.8f; cs[1].c.top_k = 40; cs[1].c.top_p = 0.95f; cs[1].c.min_p = 0.05f;
  cs[2].name = "t0.8 p0.95 minp0.05 (no top-k)"; cs[2].c.temperature = 0.8f; cs[2].c.top_p = 0.95f; cs[2].c.min_p = 0.05f;
  cs[3].name = "t0.8 p0.95 (no top-k, min-p)"; cs[3].c.temperature = 0.8f; cs[3].c.top_p = 0.95f;
  cs[4].name = "t0.8 only"; cs[4].c.temperature = 0.8f;
  SamplerScratch sc;
  for (size_t ci = 0; ci < cs.size(); ci++) { auto& c = cs[ci]; if (argc > 3 && int(ci) != atoi(argv[3])) continue;
    c.c.seed = 7;
    std::vector<double> us;
    long chk = 0;
    for (int rep = 0; rep < 9; rep++) {
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 50; i++) chk += sample_token(x.data(), V, c.c, nullptr, 0, uint64_t(rep * 50 + i), sc);
      us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 50);
    }
    std::sort(us.begin(), us.end());
    printf("%-34s %8.1f us  (chk %ld)\n", c.name, us[4], chk);
  }
}
