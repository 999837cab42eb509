// A thread that runs host-side attention jobs while the thread that drives the device goes
// on (APEX's asynchronous CPU attention, NEO's pipelined sub-batches): jobs run one at a
// time in submission order; the driver waits for each before the op that reads its output.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace tdm {

class CpuWorker {
 public:
  using Job = std::function<void()>;
  using Ticket = uint64_t;

  CpuWorker();
  // Waits for the queued jobs, then joins the thread.
  ~CpuWorker();
  CpuWorker(const CpuWorker&) = delete;
  CpuWorker& operator=(const CpuWorker&) = delete;

  // Queues a job; the returned ticket names it for wait().
  Ticket submit(Job job);
  // Blocks until job `t` has run; rethrows what it threw. Each ticket is waited at most once.
  void wait(Ticket t);
  // Blocks until every queued job has run, discarding their errors (cleanup after a failed step).
  void drain();

 private:
  void main();

  std::mutex mu_;
  std::condition_variable work_, done_;
  std::deque<std::pair<Ticket, Job>> queue_;
  Ticket next_ = 1;      // ticket of the next submitted job
  Ticket finished_ = 0;  // every ticket <= finished_ has run
  std::deque<std::pair<Ticket, std::exception_ptr>> errors_;
  bool stop_ = false;
  std::thread thread_;   // last: started once the state above exists
};

}  // namespace tdm
