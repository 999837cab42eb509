// Thread pool for the CPU backend (see thread_pool.h).
#include "cpu/thread_pool.h"

#include <chrono>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TDM_CPU_RELAX() _mm_pause()
#else
#define TDM_CPU_RELAX() std::this_thread::yield()
#endif

namespace tdm::cpu {

namespace {
// About 50-100 µs of spinning before a worker sleeps: long enough to catch the next op of a
// forward pass, short enough not to steal a shared core from other processes for long.
constexpr int kSpinIterations = 20000;
}  // namespace

ThreadPool::ThreadPool(int n_threads, bool spin)
    : n_threads_(n_threads < 1 ? 1 : n_threads), spin_iterations_(spin ? kSpinIterations : 0) {
  workers_.reserve(size_t(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(int thread, uint32_t job) {
  for (;;) {
    uint64_t c = claim_.load(std::memory_order_acquire);
    if (uint32_t(c >> 32) != job) return;  // that job has ended; another may be under way
    const int64_t task = int64_t(c & 0xffffffffu);
    // Read before the claim. Acquire: if this reads a later job's count, the later job's
    // run() closed this job's claim word first (see run), and the claim below fails.
    if (task >= n_tasks_.load(std::memory_order_acquire)) return;
    if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // The job cannot end before this task is counted done: fn_ stays valid until then.
    if (!failed_.load(std::memory_order_relaxed)) {
      try {
        (*fn_.load(std::memory_order_relaxed))(task, thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!failed_.exchange(true)) error_ = std::current_exception();
      }
    }
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::worker_main(int thread) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < spin_iterations_; ++spin) {
      TDM_CPU_RELAX();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_.fetch_add(1);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      sleeping_.fetch_sub(1);
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load()) return;
    work(thread, uint32_t(gen));
  }
}

void ThreadPool::run(int64_t n_tasks, const TaskFn& fn, double cost) {
  if (n_tasks <= 0) return;
  if (n_threads_ == 1 || n_tasks == 1 || cost < kMinParallelWork) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  if (n_tasks > int64_t(0xffffffffu)) throw std::length_error("ThreadPool::run: more than 2^32 - 1 tasks");
  // Close the last job's claim word (its task index set past any count) before this job's
  // count and function are published. A worker still looping in the last job, its tasks all
  // claimed, could otherwise read this job's larger count, claim the index one past the last
  // job's tasks, and run it with this job's function and done count: a task twice, a run that
  // returns before its tasks finish, or a done count that passes n and never ends.
  claim_.store(claim_.load(std::memory_order_relaxed) | 0xffffffffu, std::memory_order_relaxed);
  failed_.store(false, std::memory_order_relaxed);
  error_ = nullptr;
  done_.store(0, std::memory_order_relaxed);
  fn_.store(&fn, std::memory_order_relaxed);
  n_tasks_.store(n_tasks, std::memory_order_release);  // after the claim word's closing (see work)
  uint32_t job;
  {
    // Bumping under the lock pairs with the sleepers' predicate check, so no wake-up is lost.
    std::lock_guard<std::mutex> lock(mu_);
    job = uint32_t(generation_.load(std::memory_order_relaxed) + 1);
    claim_.store(uint64_t(job) << 32, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  if (sleeping_.load() > 0) wake_.notify_all();
  work(0, job);
  for (int spin = 0; done_.load(std::memory_order_acquire) != n_tasks; ++spin) {
    // A worker may have lost its core to another process: stop burning ours after a while.
    if (spin < kSpinIterations) TDM_CPU_RELAX(); else std::this_thread::yield();
  }
  if (failed_.load()) std::rethrow_exception(error_);
}

}  // namespace tdm::cpu
