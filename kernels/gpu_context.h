// Host-side state shared by the GPU backend's source files: the context behind a
// tdm_backend_ctx, streams with their own scratch memory, the guard that turns every CUDA/HIP
// status and argument check into a tdm_status plus last_error text, and the op entry points
// each .cu file defines. Nothing here aborts: failures travel as GpuFailure to the guard.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

#include "backend/backend.h"
#include "host_numa.h"
#include "compat.h"

namespace tdm::gpu {

// Raised inside an entry point; guard() turns it into the returned status and last_error.
struct GpuFailure {
  tdm_status status;
  std::string message;
};

[[noreturn]] inline void fail(tdm_status st, const std::string& msg) { throw GpuFailure{st, msg}; }
[[noreturn]] inline void bad(const std::string& msg) { fail(TDM_STATUS_BAD_ARGUMENT, msg); }
[[noreturn]] inline void unsupported(const std::string& msg) { fail(TDM_STATUS_UNSUPPORTED, msg); }

// Throws unless e is cudaSuccess: out of memory becomes TDM_STATUS_OOM, the rest TDM_STATUS_DEVICE.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  const std::string msg = std::string(what) + ": " + TDM_RUNTIME_NAME + " error " + cudaGetErrorName(e) + " (" +
                          cudaGetErrorString(e) + ")";
  fail(e == cudaErrorMemoryAllocation ? TDM_STATUS_OOM : TDM_STATUS_DEVICE, msg);
}

// Checks the launch that just happened (bad configuration, missing kernel image...).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

// Bits kernels set in the context's error word when device-side data breaks a contract; read
// and cleared at the next synchronisation, which then fails with TDM_STATUS_BAD_ARGUMENT.
enum DeviceFault : uint32_t {
  kFaultKvBlock = 1u << 0,  // a block table entry outside [0, n_blocks)
  kFaultRowId = 1u << 1,    // a get_rows id outside [0, n_rows)
  kFaultExpertId = 1u << 2, // an expert id outside [0, n_experts)
};

// Device scratch owned by one stream, grown on demand; slots are independent buffers.
struct Scratch {
  static constexpr int kSlots = 12;
  void* ptr[kSlots] = {};
  size_t bytes[kSlots] = {};
};

struct GpuStream {
  cudaStream_t stream = nullptr;
  Scratch scratch;
};

struct GpuEvent {
  cudaEvent_t event = nullptr;
};

// Above this many activation rows a matmul runs the tiled kernel, else the matrix-vector ones
// (a warp per weight row, 8 rows a pass). On an H200 (2026-11-27) the matrix-vector kernels
// beat the tiled one up to 24-32 rows on Llama-3-8B matrices (16 rows: 0.36-0.64x its time),
// so decode batches of 9-24 no longer take the tiled kernel. TANDEM_GPU_MMV_MAX_TOKENS (1-256)
// overrides it, so that the device check can time both sides of the switch.
constexpr int kDefaultMmvMaxTokens = 24;

struct GpuContext {
  int device = 0;
  std::string name;
  std::string last_error;
  int n_sm = 1;
  GpuStream main;                 // the queue a NULL tdm_stream means
  uint32_t* faults = nullptr;     // device word of DeviceFault bits
  int numa_node = -1;             // node host_alloc's pages prefer (host_numa.h); -1: no placement
  int mmv_max_tokens = kDefaultMmvMaxTokens;  // activation rows up to which matmuls run the matrix-vector kernels
  bool mmv_stage = true;          // quantized matrix-vector kernels stage weights in shared memory (matmul.cu)
  bool attn_warp_rows = true;     // decode attention splits positions over the warps (attention.cu)
  int mm_split = 0;               // tiled matmuls' k split (matmul.cu, SplitK): 0 as the grid needs, N: N parts
  std::mutex host_mu;             // guards host_mapped (host_alloc may run on any thread)
  std::unordered_map<void*, size_t> host_mapped;  // host_alloc pointers from map_on_node, to their bytes
};

inline GpuContext& cx(tdm_backend_ctx* c) { return *reinterpret_cast<GpuContext*>(c); }
inline GpuStream& stream_of(GpuContext& c, tdm_stream* s) {
  return s == nullptr ? c.main : *reinterpret_cast<GpuStream*>(s);
}

// Makes the context's device current on this thread (entry points may run on any thread).
inline void use_device(GpuContext& c) { check_cuda(cudaSetDevice(c.device), "cudaSetDevice"); }

// Runs an entry point's body: sets the device, turns failures into a status and last_error.
template <typename F>
tdm_status guard(tdm_backend_ctx* ctx, F&& body) {
  GpuContext& c = cx(ctx);
  try {
    use_device(c);
    body(c);
    return TDM_STATUS_OK;
  } catch (const GpuFailure& f) {
    c.last_error = f.message;
    return f.status;
  } catch (const std::bad_alloc&) {
    c.last_error = "out of host memory";
    return TDM_STATUS_OOM;
  } catch (const std::exception& e) {
    c.last_error = e.what();
    return TDM_STATUS_INTERNAL;
  }
}

// A slot of the stream's scratch with at least `bytes` bytes (contents undefined). Growing
// waits for the stream first, since queued kernels may still read the old buffer.
void* scratch(GpuStream& s, int slot, size_t bytes);
template <typename T>
T* scratch_as(GpuStream& s, int slot, size_t count) {
  return static_cast<T*>(scratch(s, slot, count * sizeof(T)));
}
void free_scratch(Scratch& sc);

// Scratch slots: each op uses its own, so the MoE FFN can run matmul pieces safely. An
// activation conversion into slot q takes q (levels or rounded floats), q + 1 (chunk d) and
// q + 2 (chunk s).
enum ScratchSlot : int {
  kSlotActQ = 0,     // converted activations (slots 0, 1, 2)
  kSlotSplit = 3,    // tiled matmul split-K partial sums
  kSlotAttn = 4,     // attention split partials
  kSlotMoeIdx = 5,   // MoE: expert offsets and slots by expert
  kSlotMoeGate = 6,  // MoE: gate projections, then the SwiGLU product
  kSlotMoeUp = 7,    // MoE: up projections
  kSlotMoeOut = 8,   // MoE: per-slot expert outputs
  kSlotActQ2 = 9,    // MoE: a second activation conversion (slots 9, 10, 11)
};

// Op entry points (backend.h has each contract).
tdm_status op_matmul(tdm_backend_ctx*, const tdm_weight*, int64_t, const float*, int64_t, float*, tdm_stream*);
tdm_status op_matmul_group(tdm_backend_ctx*, const tdm_weight* const*, int32_t, const float*, int64_t, float* const*, tdm_stream*);
tdm_status op_get_rows(tdm_backend_ctx*, const tdm_weight*, const int32_t*, int64_t, float*, tdm_stream*);
tdm_status op_rms_norm(tdm_backend_ctx*, const float*, const float*, float*, int64_t, int64_t, float, tdm_stream*);
tdm_status op_rope(tdm_backend_ctx*, float*, const int32_t*, int64_t, int32_t, int32_t, int32_t, const tdm_rope_params*,
                   tdm_stream*);
tdm_status op_add(tdm_backend_ctx*, const float*, const float*, float*, int64_t, int64_t, int64_t, tdm_stream*);
tdm_status op_mul(tdm_backend_ctx*, const float*, const float*, float*, int64_t, int64_t, int64_t, tdm_stream*);
tdm_status op_swiglu(tdm_backend_ctx*, const float*, const float*, float*, int64_t, tdm_stream*);
tdm_status op_geglu(tdm_backend_ctx*, const float*, const float*, float*, int64_t, tdm_stream*);
tdm_status op_scale(tdm_backend_ctx*, const float*, float*, int64_t, float, tdm_stream*);
tdm_status op_softcap(tdm_backend_ctx*, const float*, float*, int64_t, float, tdm_stream*);
tdm_status op_scale_rows(tdm_backend_ctx*, float*, const float*, int64_t, int64_t, int32_t, tdm_stream*);
tdm_status op_kv_store(tdm_backend_ctx*, const tdm_kv_layer*, const float*, const float*, const tdm_attn_seq*, int32_t,
                       tdm_stream*);
tdm_status op_attention(tdm_backend_ctx*, const tdm_kv_layer*, const float*, const tdm_attn_seq*, int32_t, int32_t, float,
                        float, const float*, int32_t, float*, tdm_stream*);
tdm_status op_router(tdm_backend_ctx*, const float*, int64_t, int32_t, int32_t, int32_t, int32_t, float, int32_t*, float*,
                     tdm_stream*);
tdm_status op_moe_ffn(tdm_backend_ctx*, const float*, int64_t, const int32_t*, const float*, int32_t, const tdm_weight*,
                      const tdm_weight*, const tdm_weight*, const tdm_moe_opts*, float*, tdm_stream*);
tdm_status op_copy_blocks(tdm_backend_ctx*, void*, const void*, size_t, const int32_t*, const int32_t*, int32_t,
                          tdm_stream*);
tdm_status op_copy_pieces(tdm_backend_ctx*, void*, size_t, const void*, size_t, size_t, const int32_t*, const int32_t*, int32_t,
                          tdm_stream*);
tdm_status op_top_k_rows(tdm_backend_ctx*, const float*, int64_t, int64_t, int32_t, float*, int32_t*, int32_t*, tdm_stream*);

// ---- Matmul pieces shared with the MoE FFN (matmul.cu).

// Which rows of the activations feed which rows of the output, per group (expert). A dense
// matmul is one group of n rows with both maps the identity.
struct GroupMap {
  const int32_t* offsets;  // device, n_groups + 1 entries: group g owns list entries [offsets[g], offsets[g+1]); null: one group
  const int32_t* list;     // device: slot ids by group (null for the dense identity)
  int32_t n_dense;         // rows of the dense case (offsets null)
  int32_t in_div;          // list mode: input row = in_list ? list[i] / in_div : i
  bool in_list;
  bool out_list;           // output row = out_list ? list[i] : i
  // Device, optional: active[0] groups have entries, listed in active[1..]; the matrix-vector
  // kernels then launch max_active blocks of groups rather than one per group, so that the
  // unrouted experts of a decode step cost no blocks.
  const int32_t* active = nullptr;
  int32_t max_active = 0;
};

// Activations converted for a weight type's dot product (see convert_activations).
struct ActView {
  int act;                 // ActType
  const int8_t* q;         // quantized: n_rows x n_cols levels
  const float* d;          // quantized: n_rows x (n_cols / 32) chunk scales
  const float* s;          // quantized: n_rows x (n_cols / 32) chunk sums (q8_1, q8_K)
  const float* f;          // float types: n_rows x n_cols floats (rounded to the dot type)
  int64_t n_cols;
};

// The activation type a weight type's matmul takes; throws TDM_STATUS_UNSUPPORTED otherwise.
int act_type_of(uint32_t weight_type);
// Converts n_rows rows of x (n_cols floats each) for weight type `type` into scratch slots
// q_slot (levels, or rounded floats), q_slot + 1 and q_slot + 2 (chunk d and s) on stream s.
ActView convert_activations(GpuContext& c, GpuStream& s, uint32_t type, const float* x, int64_t n_rows, int64_t n_cols,
                            int q_slot);
// y[out_row][r] = W_g[r] . act[in_row] for every group g and list entry (grouped matmul): picks
// the matrix-vector kernel for up to `max_rows_per_group` <= 8 rows per group, the tiled one above.
void grouped_matmul(GpuContext& c, GpuStream& s, const tdm_weight& w, const uint8_t* base, int64_t n_groups,
                    const ActView& act, const GroupMap& map, int64_t max_rows_per_group, float* y, int64_t y_stride);
// Argument checks shared by matmul, get_rows and moe_ffn (the CPU backend's rules).
void check_weight(const tdm_weight* w);

}  // namespace tdm::gpu
