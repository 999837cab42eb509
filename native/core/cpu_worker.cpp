// The host attention worker (see cpu_worker.h).
#include "core/cpu_worker.h"

namespace tdm {

CpuWorker::CpuWorker() : thread_([this] { main(); }) {}

CpuWorker::~CpuWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();
}

CpuWorker::Ticket CpuWorker::submit(Job job) {
  Ticket t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    t = next_++;
    queue_.emplace_back(t, std::move(job));
  }
  work_.notify_one();
  return t;
}

void CpuWorker::wait(Ticket t) {
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return finished_ >= t; });
  for (auto it = errors_.begin(); it != errors_.end(); ++it) {
    if (it->first != t) continue;
    std::exception_ptr e = it->second;
    errors_.erase(it);
    std::rethrow_exception(e);
  }
}

void CpuWorker::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  const Ticket last = next_ - 1;
  done_.wait(lock, [&] { return finished_ >= last; });
  errors_.clear();
}

void CpuWorker::main() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ with nothing left to run
    auto [ticket, job] = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    std::exception_ptr error;
    try {
      job();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) errors_.emplace_back(ticket, error);
    finished_ = ticket;
    done_.notify_all();
  }
}

}  // namespace tdm
