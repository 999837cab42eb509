// The read-bandwidth probe behind the bench's decode floor (see membw.h). Plain C++ with
// eight independent accumulators, so that -O3 vectorises the loop at the baseline ISA and
// the loads, not the adds, set the pace; each thread reads a slice it first touched.
#include "cpu/membw.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"

namespace tdm::cpu {

namespace {

constexpr size_t kLine = 64;
// Keeps the sums alive so that the compiler cannot drop the reads.
std::atomic<uint64_t> g_sink{0};

uint64_t read_slice(const uint64_t* p, size_t n_words) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
  for (size_t i = 0; i + 8 <= n_words; i += 8) {
    a0 += p[i + 0];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
    a4 += p[i + 4];
    a5 += p[i + 5];
    a6 += p[i + 6];
    a7 += p[i + 7];
  }
  return a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
}

struct AlignedBuffer {
  void* p = nullptr;
  explicit AlignedBuffer(size_t bytes) {
    if (posix_memalign(&p, 4096, bytes) != 0) p = nullptr;
  }
  ~AlignedBuffer() { std::free(p); }
};

}  // namespace

ReadBandwidth measure_read_bandwidth(size_t bytes, int threads, int passes) {
  if (bytes < (size_t(1) << 20)) throw Error(code::bad_argument, "bandwidth probe: bytes must be at least 1 MiB, got " + std::to_string(bytes));
  if (threads < 1 || threads > 1024) throw Error(code::bad_argument, "bandwidth probe: threads must be 1 to 1024, got " + std::to_string(threads));
  if (passes < 1 || passes > 1000) throw Error(code::bad_argument, "bandwidth probe: passes must be 1 to 1000, got " + std::to_string(passes));

  // Whole cache lines per thread, so that every slice starts on a line.
  const size_t slice = (bytes / size_t(threads)) / kLine * kLine;
  const size_t total = slice * size_t(threads);
  AlignedBuffer buf(total);
  if (!buf.p) throw Error(code::oom, "bandwidth probe: cannot allocate " + std::to_string(total) + " bytes");
  auto* base = static_cast<uint8_t*>(buf.p);

  using clock = std::chrono::steady_clock;
  const size_t n_words = slice / sizeof(uint64_t);
  auto slice_of = [&](int t) { return reinterpret_cast<uint64_t*>(base + size_t(t) * slice); };
  // Every thread fills its own slice first, so that first touch places its pages.
  auto fill = [&](int t) {
    uint64_t* words = slice_of(t);
    for (size_t i = 0; i < n_words; i++) words[i] = i * 0x9E3779B97F4A7C15ull + uint64_t(t);
  };

  std::vector<double> end_s(size_t(threads), 0.0);
  std::atomic<int> ready{1};  // the calling thread is thread 0
  std::atomic<int> go{-1};    // the pass the workers may start
  std::atomic<int> done{0};   // worker passes finished, over all passes
  clock::time_point start;

  // Workers 1..threads-1 run each pass when the caller releases it and record when they
  // finished; the caller reads slice 0 itself, so exactly `threads` threads read.
  auto worker = [&](int t) {
    fill(t);
    ready.fetch_add(1, std::memory_order_acq_rel);
    uint64_t acc = 0;
    for (int pass = 0; pass < passes; pass++) {
      while (go.load(std::memory_order_acquire) < pass) std::this_thread::yield();
      acc += read_slice(slice_of(t), n_words);
      end_s[size_t(t)] = std::chrono::duration<double>(clock::now() - start).count();
      done.fetch_add(1, std::memory_order_acq_rel);
    }
    g_sink.fetch_xor(acc, std::memory_order_relaxed);
  };

  std::vector<std::thread> pool;
  pool.reserve(size_t(threads - 1));
  try {
    for (int t = 1; t < threads; t++) pool.emplace_back(worker, t);
  } catch (...) {
    // A thread failed to start: let the started ones run through every pass, then report.
    go.store(passes, std::memory_order_release);
    for (auto& th : pool) th.join();
    throw;
  }
  fill(0);
  while (ready.load(std::memory_order_acquire) < threads) std::this_thread::yield();
  double best = 0;
  uint64_t acc = 0;
  for (int pass = 0; pass < passes; pass++) {
    start = clock::now();
    go.store(pass, std::memory_order_release);
    acc += read_slice(slice_of(0), n_words);
    end_s[0] = std::chrono::duration<double>(clock::now() - start).count();
    while (done.load(std::memory_order_acquire) < (pass + 1) * (threads - 1)) std::this_thread::yield();
    const double wall = *std::max_element(end_s.begin(), end_s.end());
    if (best == 0 || wall < best) best = wall;
  }
  for (auto& th : pool) th.join();
  g_sink.fetch_xor(acc, std::memory_order_relaxed);
  return ReadBandwidth{double(total) / best, best, total, threads, passes};
}

}  // namespace tdm::cpu
