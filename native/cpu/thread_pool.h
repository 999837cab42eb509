// A fixed pool of worker threads for the CPU kernels: the caller and n-1 workers split a
// task range (matmul row blocks, attention heads) through one atomic counter. Workers spin
// briefly after each job, since the next op follows within microseconds, then sleep. A run
// ends when its tasks are done, not when every worker has checked in: after the pool slept
// through a device's work (a hybrid step's layer), the caller and the workers that woke in
// time finish a small job without waiting for the slowest wake-up.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tdm::cpu {

class ThreadPool {
 public:
  // Task body: (task index in [0, n_tasks), thread index in [0, size())).
  using TaskFn = std::function<void(int64_t task, int thread)>;

  // n_threads >= 1 counts the calling thread; n_threads - 1 workers are started. Workers that
  // do not spin sleep as soon as a job ends: for jobs that come once per step (sampling), so
  // that they never compete with the kernels' pool for the cores.
  explicit ThreadPool(int n_threads, bool spin = true);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Below this much work (about one multiply-add per unit) waking the workers costs more
  // than it saves, so run() does the tasks on the calling thread.
  static constexpr double kMinParallelWork = 32768;

  // Runs fn for every task in [0, n_tasks) across the pool and the caller, and returns when
  // all are done; `cost` estimates the total cost in multiply-adds. One run at a time (the
  // backend serialises its ops). If a task throws, the remaining tasks are skipped and the
  // first exception is rethrown here.
  void run(int64_t n_tasks, const TaskFn& fn, double cost = kMinParallelWork);

 private:
  void worker_main(int thread);

  void work(int thread, uint32_t job);

  int n_threads_;
  int spin_iterations_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};  // bumped once per run; workers wait for a change
  std::atomic<bool> stop_{false};
  std::atomic<int> sleeping_{0};

  // The current job. A task is claimed by a compare-and-swap on claim_, which holds the job's
  // number (the low 32 bits of its generation) above the next task index: a worker that wakes
  // after its job ended finds another number there and claims nothing, so it never reads a
  // job that is gone. fn_ and n_tasks_ are written before claim_ is published.
  std::atomic<const TaskFn*> fn_{nullptr};
  std::atomic<int64_t> n_tasks_{0};
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};      // tasks of the current job finished (or skipped after a failure)
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;          // first exception, guarded by mu_
};

}  // namespace tdm::cpu
