// The one header that lets HIP build tandem's CUDA sources: under hipcc (TDM_HIP) it maps
// the CUDA runtime names the kernels use onto HIP's, and hides the two real differences
// (warp width and the warp intrinsics' spelling) behind tdm_* helpers. Under TDM_EMU a plain
// C++ compiler builds the same sources against emu.h, a host emulation used by the tests.
#pragma once

#if defined(TDM_EMU)
#include "emu.h"

#define TDM_WARP TDM_EMU_WARP
#define TDM_BACKEND_KIND "emu"
#define TDM_RUNTIME_NAME "emulated"

template <typename T>
inline T tdm_shfl_xor(T v, int mask, int width = TDM_WARP) {
  return ::tdm::emu::shfl_xor(v, mask, width);
}
// A barrier for the lanes of one warp (the emulation's shuffles are warp barriers).
inline void tdm_syncwarp() { (void)::tdm::emu::shfl_xor_bits(0, 0, TDM_WARP); }

#elif defined(TDM_HIP)
#include <hip/hip_runtime.h>

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaErrorMemoryAllocation hipErrorOutOfMemory
#define cudaErrorNoDevice hipErrorNoDevice
#define cudaErrorInsufficientDriver hipErrorInsufficientDriver
#define cudaGetErrorString hipGetErrorString
#define cudaGetErrorName hipGetErrorName
#define cudaGetLastError hipGetLastError
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaSetDevice hipSetDevice
#define cudaDeviceProp hipDeviceProp_t
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaMemGetInfo hipMemGetInfo
#define cudaDriverGetVersion hipDriverGetVersion
#define cudaRuntimeGetVersion hipRuntimeGetVersion
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaHostAlloc hipHostMalloc
#define cudaHostAllocPortable hipHostMallocPortable
#define cudaFreeHost hipHostFree
#define cudaHostRegister hipHostRegister
#define cudaHostUnregister hipHostUnregister
#define cudaHostRegisterPortable hipHostRegisterPortable
#define cudaHostRegisterMapped hipHostRegisterMapped
#define cudaHostGetDevicePointer hipHostGetDevicePointer
#define cudaDeviceGetPCIBusId hipDeviceGetPCIBusId
#define cudaMemcpy hipMemcpy
#define cudaMemset hipMemset
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaStream_t hipStream_t
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaStreamDestroy hipStreamDestroy
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamWaitEvent hipStreamWaitEvent
#define cudaEvent_t hipEvent_t
#define cudaEventCreateWithFlags hipEventCreateWithFlags
#define cudaEventDisableTiming hipEventDisableTiming
#define cudaEventRecord hipEventRecord
#define cudaEventSynchronize hipEventSynchronize
#define cudaEventDestroy hipEventDestroy
#define cudaDeviceSynchronize hipDeviceSynchronize

// CDNA (gfx908, gfx90a, gfx940) runs 64-wide wavefronts.
#define TDM_WARP 64
#define TDM_BACKEND_KIND "hip"
#define TDM_RUNTIME_NAME "HIP"

template <typename T>
__device__ inline T tdm_shfl_xor(T v, int mask, int width = TDM_WARP) {
  return __shfl_xor(v, mask, width);
}
// A wavefront runs in lockstep and its LDS operations in order: the fences stop the compiler
// moving shared-memory accesses across the barrier.
__device__ inline void tdm_syncwarp() {
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
  __builtin_amdgcn_wave_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
}

#else
#include <cuda_runtime.h>

#define TDM_WARP 32
#define TDM_BACKEND_KIND "cuda"
#define TDM_RUNTIME_NAME "CUDA"

template <typename T>
__device__ inline T tdm_shfl_xor(T v, int mask, int width = TDM_WARP) {
  return __shfl_xor_sync(0xffffffffu, v, mask, width);
}
__device__ inline void tdm_syncwarp() { __syncwarp(); }

#endif

#if !defined(TDM_EMU)
// kernel<<<grid, block, shared bytes, stream>>>(args...), spelled so the emulation can take it.
#define TDM_LAUNCH(kernel, grid, block, shmem, stream) kernel<<<(grid), (block), (shmem), (stream)>>>
// A kernel's dynamically sized shared memory.
#define TDM_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
