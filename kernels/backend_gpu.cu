// The GPU backend library's table (backend/backend.h) over the CUDA runtime, or HIP through
// compat.h: device queries, memory, async copies, streams and events, and the exported
// tdm_backend_create. The ops live in matmul.cu, elementwise.cu, attention.cu and moe.cu.
// With no GPU or no driver, creation returns TDM_STATUS_DEVICE and a reason; nothing aborts.
// Pinned host memory prefers the GPU's NUMA node where the OS allows (host_numa.h).
#include <stdio.h>
#include <string.h>

#include <memory>
#include <string>

#include "gpu_context.h"

namespace tdm::gpu {

// moe.cu (declared here rather than beside the other ops in gpu_context.h).
tdm_status op_moe_combine(tdm_backend_ctx*, const float*, int64_t, const int32_t*, const float*, int64_t, int32_t, int64_t,
                          float*, tdm_stream*);

namespace {

__global__ void probe_kernel(uint32_t* word) {
  if (threadIdx.x == 0 && blockIdx.x == 0) *word = 0;
}

// ---- device

const char* gpu_device_name(tdm_backend_ctx* c) { return cx(c).name.c_str(); }
uint32_t gpu_caps(tdm_backend_ctx*) { return TDM_CAP_ASYNC; }
const char* gpu_last_error(tdm_backend_ctx* c) { return cx(c).last_error.c_str(); }

tdm_status gpu_memory(tdm_backend_ctx* ctx, uint64_t* free_bytes, uint64_t* total_bytes) {
  return guard(ctx, [&](GpuContext&) {
    size_t f = 0, t = 0;
    check_cuda(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
  });
}

void gpu_destroy(tdm_backend_ctx* ctx) {
  GpuContext* c = &cx(ctx);
  (void)cudaSetDevice(c->device);
  (void)cudaDeviceSynchronize();
  free_scratch(c->main.scratch);
  if (c->main.stream) (void)cudaStreamDestroy(c->main.stream);
  if (c->faults) (void)cudaFree(c->faults);
  delete c;
}

// ---- memory

tdm_status gpu_alloc(tdm_backend_ctx* ctx, size_t bytes, void** out) {
  return guard(ctx, [&](GpuContext&) {
    if (out == nullptr) bad("buffer_alloc with a null out pointer");
    *out = nullptr;
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes > 0 ? bytes : 1);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation failure is not sticky; clear it so later calls run
      fail(e == cudaErrorMemoryAllocation ? TDM_STATUS_OOM : TDM_STATUS_DEVICE,
           "cannot allocate " + std::to_string(bytes) + " bytes of device memory: " + cudaGetErrorString(e));
    }
    *out = p;
  });
}

void gpu_free(tdm_backend_ctx* ctx, void* p) {
  if (p == nullptr) return;
  (void)cudaSetDevice(cx(ctx).device);
  (void)cudaFree(p);
}

// Pinned memory whose pages prefer the context's NUMA node (mapped there, then registered with
// the runtime), or null when no node is known or any step fails, so that cudaHostAlloc serves.
void* host_alloc_on_node(GpuContext& c, size_t bytes) {
  if (c.numa_node < 0) return nullptr;
  void* p = numa::map_on_node(bytes, c.numa_node);
  if (p == nullptr) return nullptr;
  if (cudaHostRegister(p, bytes, cudaHostRegisterPortable) != cudaSuccess) {
    (void)cudaGetLastError();
    numa::unmap_pages(p, bytes);
    return nullptr;
  }
  try {
    std::lock_guard<std::mutex> lock(c.host_mu);
    c.host_mapped.emplace(p, bytes);
  } catch (...) {
    (void)cudaHostUnregister(p);
    numa::unmap_pages(p, bytes);
    throw;
  }
  return p;
}

tdm_status gpu_host_alloc(tdm_backend_ctx* ctx, size_t bytes, void** out) {
  return guard(ctx, [&](GpuContext& c) {
    if (out == nullptr) bad("host_alloc with a null out pointer");
    *out = nullptr;
    void* p = host_alloc_on_node(c, bytes > 0 ? bytes : 1);
    if (p != nullptr) {
      *out = p;
      return;
    }
    const cudaError_t e = cudaHostAlloc(&p, bytes > 0 ? bytes : 1, cudaHostAllocPortable);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      fail(TDM_STATUS_OOM, "cannot allocate " + std::to_string(bytes) + " bytes of pinned host memory: " + cudaGetErrorString(e));
    }
    *out = p;
  });
}

void gpu_host_free(tdm_backend_ctx* ctx, void* p) {
  if (p == nullptr) return;
  GpuContext& c = cx(ctx);
  size_t mapped = 0;
  {
    std::lock_guard<std::mutex> lock(c.host_mu);
    const auto it = c.host_mapped.find(p);
    if (it != c.host_mapped.end()) {
      mapped = it->second;
      c.host_mapped.erase(it);
    }
  }
  (void)cudaSetDevice(c.device);
  if (mapped > 0) {
    (void)cudaHostUnregister(p);
    numa::unmap_pages(p, mapped);
  } else {
    (void)cudaFreeHost(p);
  }
}

// Host memory allocated elsewhere (the host tier's KV pool), locked and mapped so that device
// ops read it across the link at the address cudaHostGetDevicePointer gives.
tdm_status gpu_host_register(tdm_backend_ctx* ctx, void* p, size_t bytes, void** device_ptr) {
  return guard(ctx, [&](GpuContext& c) {
    if (p == nullptr || device_ptr == nullptr || bytes == 0) bad("host_register needs memory and an out pointer");
    *device_ptr = nullptr;
    const cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      fail(TDM_STATUS_OOM, "cannot page-lock " + std::to_string(bytes) + " bytes of host memory for the device: " + cudaGetErrorString(e));
    }
    void* d = nullptr;
    const cudaError_t m = cudaHostGetDevicePointer(&d, p, 0);
    if (m != cudaSuccess || d == nullptr) {
      (void)cudaGetLastError();
      (void)cudaHostUnregister(p);
      fail(TDM_STATUS_UNSUPPORTED, std::string("the device cannot map page-locked host memory: ") + cudaGetErrorString(m));
    }
    (void)c;
    *device_ptr = d;
  });
}

void gpu_host_unregister(tdm_backend_ctx* ctx, void* p) {
  if (p == nullptr) return;
  (void)cudaSetDevice(cx(ctx).device);
  (void)cudaHostUnregister(p);
}

// ---- copies

template <int kKind>
tdm_status gpu_copy(tdm_backend_ctx* ctx, void* dst, const void* src, size_t bytes, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (bytes == 0) return;
    if (dst == nullptr || src == nullptr) bad("copy with a null pointer");
    const auto kind = kKind == 0 ? cudaMemcpyHostToDevice : kKind == 1 ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
    check_cuda(cudaMemcpyAsync(dst, src, bytes, kind, stream_of(c, s).stream), "cudaMemcpyAsync");
  });
}

// ---- streams and events

// Reads and clears the device fault word after a synchronisation; a set bit fails the call.
void collect_faults(GpuContext& c) {
  uint32_t bits = 0;
  check_cuda(cudaMemcpy(&bits, c.faults, sizeof bits, cudaMemcpyDeviceToHost), "reading the fault word");
  if (bits == 0) return;
  check_cuda(cudaMemset(c.faults, 0, sizeof(uint32_t)), "clearing the fault word");
  std::string what;
  auto add = [&](const char* s) { what += (what.empty() ? "" : ", ") + std::string(s); };
  if (bits & kFaultKvBlock) add("a KV block id outside the pool");
  if (bits & kFaultRowId) add("a get_rows id or moe_combine position outside the rows");
  if (bits & kFaultExpertId) add("an expert id outside the expert count");
  bad("a kernel met bad device-side data (" + what + "); the outputs of the calls since the last synchronisation are undefined");
}

tdm_status gpu_stream_create(tdm_backend_ctx* ctx, tdm_stream** out) {
  return guard(ctx, [&](GpuContext&) {
    if (out == nullptr) bad("stream_create with a null out pointer");
    *out = nullptr;
    auto s = std::make_unique<GpuStream>();
    check_cuda(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    *out = reinterpret_cast<tdm_stream*>(s.release());
  });
}

void gpu_stream_destroy(tdm_backend_ctx* ctx, tdm_stream* s) {
  if (s == nullptr) return;
  GpuStream* gs = reinterpret_cast<GpuStream*>(s);
  (void)cudaSetDevice(cx(ctx).device);
  (void)cudaStreamSynchronize(gs->stream);
  free_scratch(gs->scratch);
  (void)cudaStreamDestroy(gs->stream);
  delete gs;
}

tdm_status gpu_stream_sync(tdm_backend_ctx* ctx, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    check_cuda(cudaStreamSynchronize(stream_of(c, s).stream), "cudaStreamSynchronize");
    collect_faults(c);
  });
}

tdm_status gpu_event_create(tdm_backend_ctx* ctx, tdm_event** out) {
  return guard(ctx, [&](GpuContext&) {
    if (out == nullptr) bad("event_create with a null out pointer");
    *out = nullptr;
    auto e = std::make_unique<GpuEvent>();
    check_cuda(cudaEventCreateWithFlags(&e->event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    *out = reinterpret_cast<tdm_event*>(e.release());
  });
}

void gpu_event_destroy(tdm_backend_ctx* ctx, tdm_event* e) {
  if (e == nullptr) return;
  GpuEvent* ge = reinterpret_cast<GpuEvent*>(e);
  (void)cudaSetDevice(cx(ctx).device);
  (void)cudaEventDestroy(ge->event);
  delete ge;
}

tdm_status gpu_event_record(tdm_backend_ctx* ctx, tdm_event* e, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (e == nullptr) bad("event_record with a null event");
    check_cuda(cudaEventRecord(reinterpret_cast<GpuEvent*>(e)->event, stream_of(c, s).stream), "cudaEventRecord");
  });
}

tdm_status gpu_stream_wait(tdm_backend_ctx* ctx, tdm_stream* s, tdm_event* e) {
  return guard(ctx, [&](GpuContext& c) {
    if (e == nullptr) bad("stream_wait with a null event");
    check_cuda(cudaStreamWaitEvent(stream_of(c, s).stream, reinterpret_cast<GpuEvent*>(e)->event, 0), "cudaStreamWaitEvent");
  });
}

tdm_status gpu_event_sync(tdm_backend_ctx* ctx, tdm_event* e) {
  return guard(ctx, [&](GpuContext& c) {
    if (e == nullptr) bad("event_sync with a null event");
    check_cuda(cudaEventSynchronize(reinterpret_cast<GpuEvent*>(e)->event), "cudaEventSynchronize");
    collect_faults(c);
  });
}

tdm_status gpu_synchronize(tdm_backend_ctx* ctx) {
  return guard(ctx, [&](GpuContext& c) {
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    collect_faults(c);
  });
}

const tdm_backend_iface kGpuIface = [] {
  tdm_backend_iface t{};
  t.abi_version = TDM_BACKEND_ABI_VERSION;
  t.struct_size = sizeof(tdm_backend_iface);
  t.kind = TDM_BACKEND_KIND;
  t.device_name = gpu_device_name;
  t.caps = gpu_caps;
  t.memory = gpu_memory;
  t.last_error = gpu_last_error;
  t.destroy = gpu_destroy;
  t.buffer_alloc = gpu_alloc;
  t.buffer_free = gpu_free;
  t.host_alloc = gpu_host_alloc;
  t.host_free = gpu_host_free;
  t.copy_h2d = gpu_copy<0>;
  t.copy_d2h = gpu_copy<1>;
  t.copy_d2d = gpu_copy<2>;
  t.stream_create = gpu_stream_create;
  t.stream_destroy = gpu_stream_destroy;
  t.stream_sync = gpu_stream_sync;
  t.event_create = gpu_event_create;
  t.event_destroy = gpu_event_destroy;
  t.event_record = gpu_event_record;
  t.stream_wait = gpu_stream_wait;
  t.event_sync = gpu_event_sync;
  t.synchronize = gpu_synchronize;
  t.matmul = op_matmul;
  t.get_rows = op_get_rows;
  t.rms_norm = op_rms_norm;
  t.rope = op_rope;
  t.add = op_add;
  t.mul = op_mul;
  t.swiglu = op_swiglu;
  t.scale_rows = op_scale_rows;
  t.geglu = op_geglu;
  t.scale = op_scale;
  t.softcap = op_softcap;
  t.kv_store = op_kv_store;
  t.attention = op_attention;
  t.router = op_router;
  t.moe_ffn = op_moe_ffn;
  t.moe_combine = op_moe_combine;
  t.matmul_group = op_matmul_group;
  t.copy_blocks = op_copy_blocks;
  t.top_k_rows = op_top_k_rows;
  t.host_register = gpu_host_register;
  t.host_unregister = gpu_host_unregister;
  t.copy_pieces = op_copy_pieces;
  return t;
}();

std::string describe_device(const cudaDeviceProp& p) {
#if defined(TDM_EMU)
  return p.name;
#elif defined(TDM_HIP)
  return std::string(p.name) + " (" + p.gcnArchName + ", HIP)";
#else
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", CUDA)";
#endif
}

}  // namespace

void* scratch(GpuStream& s, int slot, size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (s.scratch.bytes[slot] >= bytes) return s.scratch.ptr[slot];
  if (s.scratch.ptr[slot] != nullptr) {
    check_cuda(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize (growing scratch)");
    (void)cudaFree(s.scratch.ptr[slot]);
    s.scratch.ptr[slot] = nullptr;
    s.scratch.bytes[slot] = 0;
  }
  const size_t want = bytes + bytes / 2;  // headroom so a slowly growing batch does not reallocate every step
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, want);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    fail(TDM_STATUS_OOM, "cannot allocate " + std::to_string(want) + " bytes of device scratch: " + cudaGetErrorString(e));
  }
  s.scratch.ptr[slot] = p;
  s.scratch.bytes[slot] = want;
  return p;
}

void free_scratch(Scratch& sc) {
  for (int i = 0; i < Scratch::kSlots; ++i) {
    if (sc.ptr[i] != nullptr) (void)cudaFree(sc.ptr[i]);
    sc.ptr[i] = nullptr;
    sc.bytes[i] = 0;
  }
}

}  // namespace tdm::gpu

extern "C" __attribute__((visibility("default"))) tdm_status tdm_backend_create(const tdm_backend_params* params,
                                                                                  tdm_backend* out, char* err,
                                                                                  size_t err_len) {
  using namespace tdm::gpu;
  auto say = [&](tdm_status st, const std::string& msg) {
    if (err != nullptr && err_len > 0) snprintf(err, err_len, "%s", msg.c_str());
    return st;
  };
  if (params == nullptr || out == nullptr) return say(TDM_STATUS_BAD_ARGUMENT, "null argument");
  out->iface = nullptr;
  out->ctx = nullptr;
  if (params->abi_version != TDM_BACKEND_ABI_VERSION)
    return say(TDM_STATUS_UNSUPPORTED, "backend ABI version " + std::to_string(params->abi_version) + " requested, this " +
                                           TDM_RUNTIME_NAME + " library has " + std::to_string(TDM_BACKEND_ABI_VERSION));
  try {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
      const std::string why = e != cudaSuccess ? std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e)
                                               : std::string("the runtime found no devices");
      (void)cudaGetLastError();
      return say(TDM_STATUS_DEVICE, std::string("no ") + TDM_RUNTIME_NAME + " device (" + why + ")");
    }
    if (params->device < 0 || params->device >= n)
      return say(TDM_STATUS_BAD_ARGUMENT, "device index " + std::to_string(params->device) + " is outside [0, " +
                                              std::to_string(n) + ")");
    auto c = std::make_unique<GpuContext>();
    c->device = params->device;
    check_cuda(cudaSetDevice(c->device), "cudaSetDevice");
    char bus_id[64] = {};
    const bool have_bus_id = cudaDeviceGetPCIBusId(bus_id, int(sizeof bus_id), c->device) == cudaSuccess;
    if (!have_bus_id) (void)cudaGetLastError();
    c->numa_node = tdm::numa::pinned_host_node(have_bus_id ? bus_id : nullptr);
    if (const char* mmv = getenv("TANDEM_GPU_MMV_MAX_TOKENS"); mmv != nullptr && *mmv != '\0') {
      char* end = nullptr;
      const long v = strtol(mmv, &end, 10);
      if (*end == '\0' && v >= 1 && v <= 256) c->mmv_max_tokens = int(v);
    }
    // TANDEM_GPU_MMV_STAGE=0: the matrix-vector kernels read weights straight from global memory.
    if (const char* stage = getenv("TANDEM_GPU_MMV_STAGE"); stage != nullptr && strcmp(stage, "0") == 0) c->mmv_stage = false;
    // TANDEM_GPU_ATTN_WARP_ROWS=0: decode attention runs the prefill layout (every warp walks every position).
    if (const char* wr = getenv("TANDEM_GPU_ATTN_WARP_ROWS"); wr != nullptr && strcmp(wr, "0") == 0) c->attn_warp_rows = false;
    // TANDEM_GPU_MM_SPLIT=N (1-16): the tiled matmuls cut their k range into N parts (1: never), not as the grid needs.
    if (const char* sp = getenv("TANDEM_GPU_MM_SPLIT"); sp != nullptr && *sp != '\0') {
      char* end = nullptr;
      const long v = strtol(sp, &end, 10);
      if (*end == '\0' && v >= 1 && v <= 16) c->mm_split = int(v);
    }
    cudaDeviceProp prop;
    check_cuda(cudaGetDeviceProperties(&prop, c->device), "cudaGetDeviceProperties");
    c->name = describe_device(prop);
    c->n_sm = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    check_cuda(cudaStreamCreateWithFlags(&c->main.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    check_cuda(cudaMalloc(reinterpret_cast<void**>(&c->faults), sizeof(uint32_t)), "cudaMalloc (fault word)");
    // A first kernel proves this library carries code for the device's architecture.
    TDM_LAUNCH(probe_kernel, 1, 1, 0, c->main.stream)(c->faults);
    cudaError_t le = cudaGetLastError();
    if (le == cudaSuccess) le = cudaStreamSynchronize(c->main.stream);
    if (le != cudaSuccess) {
      const std::string msg = c->name + " cannot run this library's kernels (" + cudaGetErrorName(le) + ": " +
                              cudaGetErrorString(le) + "); rebuild it for this architecture with npm run build:gpu";
      (void)cudaStreamDestroy(c->main.stream);
      (void)cudaFree(c->faults);
      return say(TDM_STATUS_UNSUPPORTED, msg);
    }
    out->iface = &kGpuIface;
    out->ctx = reinterpret_cast<tdm_backend_ctx*>(c.release());
    return TDM_STATUS_OK;
  } catch (const GpuFailure& f) {
    return say(f.status, f.message);
  } catch (const std::exception& ex) {
    return say(TDM_STATUS_INTERNAL, ex.what());
  }
}
