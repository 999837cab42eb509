// The fiber scheduler and runtime calls behind emu.h (see there). Launches are serialised by a
// mutex: the scheduler's state is global, and the emulation exists for tests, not speed. A fiber
// starts through ucontext once per block and then switches with _setjmp/_longjmp, which skip the
// signal-mask system calls that make swapcontext slow; jumping between stacks is what fortified
// longjmp refuses, hence the undef.
#undef _FORTIFY_SOURCE
#include "emu.h"

#include <setjmp.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace tdm::emu {

namespace {

constexpr size_t kStackBytes = 256 * 1024;

enum class State { runnable, at_block_barrier, at_warp_barrier, done };

struct Fiber {
  ucontext_t start;  // entry context, used once
  jmp_buf jb;        // where the fiber resumes after a yield
  bool started = false;
  dim3 tid;
  unsigned linear = 0;
  State state = State::runnable;
  unsigned shuffles = 0;  // shuffles done: its parity picks the exchange buffer
};

std::mutex g_launch_mu;
std::vector<Fiber> g_fibers;
std::vector<std::vector<char>> g_stacks;
std::vector<uint64_t> g_exchange[2];
std::vector<unsigned char> g_dynamic_shared;
jmp_buf g_scheduler;
Fiber* g_current = nullptr;
Kernel* g_kernel = nullptr;
dim3 g_block_idx, g_block_dim, g_grid_dim;
cudaError_t g_last_error = cudaSuccess;
std::string g_last_message;

[[noreturn]] void fiber_main() {
  g_kernel->run_thread();
  g_current->state = State::done;
  _longjmp(g_scheduler, 1);
}

void yield_with(State s) {
  g_current->state = s;
  if (_setjmp(g_current->jb) == 0) _longjmp(g_scheduler, 1);
}

// Runs fiber f until it yields or finishes.
void resume(Fiber& f) {
  g_current = &f;
  if (_setjmp(g_scheduler) != 0) return;
  if (!f.started) {
    f.started = true;
    setcontext(&f.start);
  }
  _longjmp(f.jb, 1);
}

// Runs one block to completion; false when live threads wait on barriers that cannot release.
bool run_block(size_t n_threads) {
  if (g_stacks.size() < n_threads) g_stacks.resize(n_threads);
  g_fibers.assign(n_threads, Fiber{});
  for (size_t i = 0; i < n_threads; ++i) {
    Fiber& f = g_fibers[i];
    f.linear = unsigned(i);
    f.tid = dim3(unsigned(i % g_block_dim.x), unsigned((i / g_block_dim.x) % g_block_dim.y), unsigned(i / (g_block_dim.x * g_block_dim.y)));
    if (g_stacks[i].empty()) g_stacks[i].resize(kStackBytes);
    getcontext(&f.start);
    f.start.uc_stack.ss_sp = g_stacks[i].data();
    f.start.uc_stack.ss_size = kStackBytes;
    f.start.uc_link = nullptr;
    makecontext(&f.start, fiber_main, 0);
  }
  for (auto& ex : g_exchange) ex.assign(n_threads, 0);
  const size_t n_warps = (n_threads + TDM_EMU_WARP - 1) / TDM_EMU_WARP;
  for (;;) {
    bool ran = false;
    for (Fiber& f : g_fibers) {
      if (f.state != State::runnable) continue;
      resume(f);
      ran = true;
    }
    size_t live = 0, at_block = 0;
    for (const Fiber& f : g_fibers) {
      if (f.state == State::done) continue;
      ++live;
      if (f.state == State::at_block_barrier) ++at_block;
    }
    if (live == 0) return true;
    bool released = false;
    if (at_block == live) {
      for (Fiber& f : g_fibers)
        if (f.state == State::at_block_barrier) f.state = State::runnable;
      released = true;
    }
    for (size_t w = 0; w < n_warps; ++w) {
      size_t lanes = 0, waiting = 0;
      for (size_t i = w * TDM_EMU_WARP; i < std::min(n_threads, (w + 1) * TDM_EMU_WARP); ++i) {
        if (g_fibers[i].state == State::done) continue;
        ++lanes;
        if (g_fibers[i].state == State::at_warp_barrier) ++waiting;
      }
      if (lanes > 0 && waiting == lanes) {
        for (size_t i = w * TDM_EMU_WARP; i < std::min(n_threads, (w + 1) * TDM_EMU_WARP); ++i)
          if (g_fibers[i].state == State::at_warp_barrier) g_fibers[i].state = State::runnable;
        released = true;
      }
    }
    if (!ran && !released) return false;
  }
}

}  // namespace

const dim3& thread_idx() { return g_current->tid; }
const dim3& block_idx() { return g_block_idx; }
const dim3& block_dim() { return g_block_dim; }
const dim3& grid_dim() { return g_grid_dim; }
void* dynamic_shared() { return g_dynamic_shared.data(); }

void sync_block() { yield_with(State::at_block_barrier); }

uint64_t shfl_xor_bits(uint64_t bits, int mask, int width) {
  Fiber& f = *g_current;
  std::vector<uint64_t>& ex = g_exchange[f.shuffles & 1u];
  ex[f.linear] = bits;
  yield_with(State::at_warp_barrier);
  const unsigned lane = f.linear % TDM_EMU_WARP, base = f.linear - lane;
  const unsigned w = unsigned(width);
  const unsigned partner = (lane & ~(w - 1)) | ((lane ^ unsigned(mask)) & (w - 1));
  ++f.shuffles;
  return base + partner < ex.size() ? ex[base + partner] : bits;
}

// TDM_EMU_NULL_KERNELS=1: launches are checked and counted but run nothing, so that a run
// times the host's side of a step alone (executor, engine, sampling); the count goes to stderr
// at exit. Outputs are then garbage: for timing only.
struct NullKernels {
  bool on = std::getenv("TDM_EMU_NULL_KERNELS") != nullptr;
  unsigned long long launches = 0;
  std::map<std::string, unsigned long long> by_name;
  ~NullKernels() {
    if (!on) return;
    std::fprintf(stderr, "tandem emu: %llu kernel launches (null kernels)\n", launches);
    for (const auto& [name, n] : by_name) std::fprintf(stderr, "  %8llu %s\n", n, name.c_str());
  }
} g_null;

bool launch(dim3 grid, dim3 block, size_t shared_bytes, const char* name, Kernel& k) {
  std::lock_guard<std::mutex> lock(g_launch_mu);
  const size_t n_threads = size_t(block.x) * block.y * block.z;
  if (n_threads == 0 || n_threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
    g_last_error = cudaErrorInvalidValue;
    g_last_message = std::string("invalid launch configuration for ") + name;
    return false;
  }
  if (g_null.on) {
    g_null.launches++;
    g_null.by_name[name]++;
    return true;
  }
  g_kernel = &k;
  g_grid_dim = grid;
  g_block_dim = block;
  g_dynamic_shared.assign(shared_bytes + 16, 0);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        g_block_idx = dim3(x, y, z);
        if (!run_block(n_threads)) {
          g_last_error = cudaErrorLaunchFailure;
          g_last_message = std::string(name) + ": threads of block (" + std::to_string(x) + "," + std::to_string(y) + "," +
                           std::to_string(z) + ") wait on a barrier that the others never reach";
          std::fprintf(stderr, "tandem emu: %s\n", g_last_message.c_str());
          return false;
        }
      }
  return true;
}

}  // namespace tdm::emu

using tdm::emu::g_last_error;

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaError";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  if (e == cudaErrorLaunchFailure || e == cudaErrorInvalidValue) return tdm::emu::g_last_message.c_str();
  return cudaGetErrorName(e);
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof p->name, "tandem GPU kernels emulated on the host (warp %d)", TDM_EMU_WARP);
  p->major = 0;
  p->minor = 0;
  p->multiProcessorCount = 4;
  p->totalGlobalMem = size_t(1) << 30;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  // Null kernels time the host side of a model that fits a large card (host RAM permitting).
  *free_bytes = *total_bytes = size_t(tdm::emu::g_null.on ? 80 : 1) << 30;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t n) {
  const size_t bytes = (n + 255) / 256 * 256;
  *p = std::aligned_alloc(256, bytes);
  // With null kernels nothing writes device memory: zeros keep the host's checks (the fault
  // word, sampled logits) quiet.
  if (*p != nullptr && tdm::emu::g_null.on) std::memset(*p, 0, bytes);
  return *p != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned) { return cudaMalloc(p, n); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaHostRegister(void* p, size_t, unsigned) { return p != nullptr ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaHostUnregister(void* p) { return p != nullptr ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaHostGetDevicePointer(void** device_ptr, void* p, unsigned) {
  if (device_ptr == nullptr || p == nullptr) return cudaErrorInvalidValue;
  *device_ptr = p;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetPCIBusId(char* out, int len, int device) {
  if (out == nullptr || len <= 0 || device != 0) return cudaErrorInvalidValue;
  std::snprintf(out, size_t(len), "%s", "ffff:ff:1f.7");
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  std::memset(p, v, n);
  return cudaSuccess;
}
// Work runs when it is queued, so streams and events only need to exist. A real driver may crash
// on a stream or event used after it was destroyed (it did, in SlabStream's drain on an H200),
// so the emulation tracks the live handles and aborts with a message on such a use.
namespace {
std::mutex g_handle_mu;
// Never destroyed: backends cached in the addon's statics destroy their streams at exit, after
// this library's own statics are gone.
std::set<const void*>& g_live_handles = *new std::set<const void*>;

void* new_handle() {
  void* h = new char(0);
  std::lock_guard<std::mutex> lock(g_handle_mu);
  g_live_handles.insert(h);
  return h;
}

// Aborts when h is not live; a null stream is the default stream and always valid.
void check_handle(const void* h, const char* what, bool null_ok) {
  if (h == nullptr && null_ok) return;
  std::lock_guard<std::mutex> lock(g_handle_mu);
  if (g_live_handles.count(h) != 0) return;
  std::fprintf(stderr, "tandem emu: %s on a %s handle %p\n", what, h == nullptr ? "null" : "destroyed or unknown", h);
  std::abort();
}

void delete_handle(void* h, const char* what) {
  check_handle(h, what, false);
  {
    std::lock_guard<std::mutex> lock(g_handle_mu);
    g_live_handles.erase(h);
  }
  delete static_cast<char*>(h);
}
}  // namespace

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  check_handle(s, "cudaMemcpyAsync", true);
  return cudaMemcpy(dst, src, n, kind);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = reinterpret_cast<cudaStream_t>(new_handle());
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete_handle(s, "cudaStreamDestroy");
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  check_handle(s, "cudaStreamSynchronize", true);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  check_handle(s, "cudaStreamWaitEvent (stream)", true);
  check_handle(e, "cudaStreamWaitEvent (event)", false);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = reinterpret_cast<cudaEvent_t>(new_handle());
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete_handle(e, "cudaEventDestroy");
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  check_handle(e, "cudaEventRecord (event)", false);
  check_handle(s, "cudaEventRecord (stream)", true);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  check_handle(e, "cudaEventSynchronize", false);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
