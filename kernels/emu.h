// Host emulation of the CUDA subset tandem's kernels use, so that a plain C++ compiler builds
// the same kernel sources into libtandem_emu.so and the op-case tests check the kernels' logic
// on a machine with no GPU. Each thread block runs as cooperative fibers (ucontext), one per
// thread; __syncthreads and warp shuffles are scheduler barriers, and a barrier that some live
// thread can never reach fails the launch instead of hanging. The runtime API is malloc and
// memcpy. It says nothing about speed or about GPU memory ordering.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <tuple>

#ifndef TDM_EMU_WARP
#define TDM_EMU_WARP 32
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one after another, so function-level statics are per-block shared memory.
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct int4 {
  int x, y, z, w;
};
struct uint4 {
  unsigned x, y, z, w;
};
struct float4 {
  float x, y, z, w;
};

using std::max;
using std::min;

namespace tdm::emu {

// The running fiber's coordinates.
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void sync_block();
// Exchanges 8-byte values within the current warp (all its live lanes must call it together).
uint64_t shfl_xor_bits(uint64_t bits, int mask, int width);
void* dynamic_shared();

template <typename T>
T shfl_xor(T v, int mask, int width) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  bits = shfl_xor_bits(bits, mask, width);
  T out;
  memcpy(&out, &bits, sizeof(T));
  return out;
}

struct Kernel {
  virtual ~Kernel() = default;
  virtual void run_thread() = 0;
};

// Runs kernel body k for every block of grid (one at a time) and every thread of block;
// returns false, with a message for cudaGetLastError, when a block deadlocks.
bool launch(dim3 grid, dim3 block, size_t shared_bytes, const char* name, Kernel& k);

template <typename F, typename... Args>
struct BoundKernel final : Kernel {
  F f;
  std::tuple<Args...> args;
  BoundKernel(F fn, Args... a) : f(fn), args(a...) {}
  void run_thread() override { std::apply(f, args); }
};

// TDM_LAUNCH(kernel, grid, block, shmem, stream)(args...) in emulation.
template <typename F>
struct Launch {
  F f;
  dim3 grid, block;
  size_t shared_bytes;
  const char* name;
  template <typename... Args>
  void operator()(Args... args) const {
    BoundKernel<F, Args...> k(f, args...);
    launch(grid, block, shared_bytes, name, k);
  }
};
template <typename F>
Launch<F> make_launch(F f, dim3 grid, dim3 block, size_t shared_bytes, const char* name) {
  return Launch<F>{f, grid, block, shared_bytes, name};
}

}  // namespace tdm::emu

#define threadIdx (::tdm::emu::thread_idx())
#define blockIdx (::tdm::emu::block_idx())
#define blockDim (::tdm::emu::block_dim())
#define gridDim (::tdm::emu::grid_dim())
#define TDM_LAUNCH(kernel, grid, block, shmem, stream) \
  ((void)(stream), ::tdm::emu::make_launch(kernel, dim3(grid), dim3(block), size_t(shmem), #kernel))
#define TDM_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::tdm::emu::dynamic_shared())

inline void __syncthreads() { ::tdm::emu::sync_block(); }
// Fibers of one block never run at once, so plain read-modify-writes are atomic.
inline uint32_t atomicOr(uint32_t* p, uint32_t v) {
  const uint32_t old = *p;
  *p = old | v;
  return old;
}
inline int32_t atomicAdd(int32_t* p, int32_t v) {
  const int32_t old = *p;
  *p = old + v;
  return old;
}

// ---- runtime API

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidValue = 1,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
using cudaStream_t = struct EmuStream*;
using cudaEvent_t = struct EmuEvent*;
constexpr unsigned cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2, cudaHostAllocPortable = 1,
                   cudaHostRegisterPortable = 1, cudaHostRegisterMapped = 2;

struct cudaDeviceProp {
  char name[256];
  int major, minor, multiProcessorCount;
  size_t totalGlobalMem;
};

const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMalloc(void** p, size_t n);
cudaError_t cudaFree(void* p);
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned flags);
cudaError_t cudaFreeHost(void* p);
// Host memory is already host memory: registering it succeeds and changes nothing.
cudaError_t cudaHostRegister(void* p, size_t n, unsigned flags);
cudaError_t cudaHostUnregister(void* p);
// The emulated device reads host memory where it is.
cudaError_t cudaHostGetDevicePointer(void** device_ptr, void* p, unsigned flags);
// A fixed bus id in a PCI domain no machine uses, so the emulated device has no NUMA node of
// its own (TANDEM_PIN_NUMA_NODE can still give it one).
cudaError_t cudaDeviceGetPCIBusId(char* out, int len, int device);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemset(void* p, int v, size_t n);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaDeviceSynchronize();
