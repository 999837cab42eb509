// What token sampling needs on the GPU: each row's k best logits, best first by (larger value,
// then lower column), so that the host draws from k candidates instead of copying the whole
// row (0.5 MB a row at a 128k vocabulary) over the link.
#include <math.h>
#include <stdint.h>

#include <string>

#include "gpu_context.h"

namespace tdm::gpu {

namespace {

constexpr int kTopKThreads = 256;
constexpr int kGroups = kTopKThreads / 32;  // reduced 32 lanes at a time on warps of 32 and 64

__device__ __forceinline__ bool better(float av, int32_t ai, float bv, int32_t bi) { return av > bv || (av == bv && ai < bi); }

// A block per row. Each thread keeps the k best of its columns (tid, tid + 256, ...), best
// first; then k rounds pick the best head among the threads, whose owner moves on. K is the
// list's capacity (k <= K), so that k = 1 keeps its one candidate in registers.
template <int K>
__global__ void __launch_bounds__(kTopKThreads) top_k_rows_kernel(const float* x, int64_t n_cols, int32_t k, float* vals,
                                                                  int32_t* ids, int32_t* flags) {
  __shared__ float s_v[kGroups];
  __shared__ int32_t s_i[kGroups];
  __shared__ int32_t s_owner[kGroups];
  __shared__ int32_t s_winner;
  __shared__ int32_t s_odd;
  const int64_t r = blockIdx.x;
  const float* row = x + r * n_cols;
  if (threadIdx.x == 0) s_odd = 0;
  __syncthreads();

  float lv[K];
  int32_t li[K];
  int n = 0;
  bool odd = false;
  for (int64_t i = threadIdx.x; i < n_cols; i += kTopKThreads) {
    const float v = row[i];
    if (v != v || v == INFINITY) {  // NaN or +Infinity: the caller reads the row itself
      odd = true;
      continue;
    }
    if (n == k && !(v > lv[k - 1])) continue;  // this thread's later columns lose ties
    int p = n < k ? n++ : k - 1;
    while (p > 0 && v > lv[p - 1]) {
      lv[p] = lv[p - 1];
      li[p] = li[p - 1];
      --p;
    }
    lv[p] = v;
    li[p] = int32_t(i);
  }
  if (odd) s_odd = 1;

  const int lane = int(threadIdx.x) % 32, group = int(threadIdx.x) / 32;
  int head = 0;
  for (int32_t round = 0; round < k; ++round) {
    // An exhausted list offers (-Infinity, INT32_MAX), which any real candidate beats.
    float v = head < n ? lv[head] : -INFINITY;
    int32_t id = head < n ? li[head] : INT32_MAX;
    int32_t owner = int32_t(threadIdx.x);
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = tdm_shfl_xor(v, o, 32);
      const int32_t oi = tdm_shfl_xor(id, o, 32);
      const int32_t ot = tdm_shfl_xor(owner, o, 32);
      if (better(ov, oi, v, id)) {
        v = ov;
        id = oi;
        owner = ot;
      }
    }
    if (lane == 0) {
      s_v[group] = v;
      s_i[group] = id;
      s_owner[group] = owner;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int best = 0;
      for (int g = 1; g < kGroups; ++g)
        if (better(s_v[g], s_i[g], s_v[best], s_i[best])) best = g;
      vals[r * k + round] = s_v[best];
      ids[r * k + round] = s_i[best];
      s_winner = s_owner[best];
    }
    __syncthreads();
    if (int32_t(threadIdx.x) == s_winner) ++head;
  }
  if (threadIdx.x == 0) flags[r] = s_odd != 0 || vals[r * k] == -INFINITY ? 1 : 0;
}

}  // namespace

tdm_status op_top_k_rows(tdm_backend_ctx* ctx, const float* x, int64_t n_rows, int64_t n_cols, int32_t k, float* vals,
                         int32_t* ids, int32_t* flags, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n_rows <= 0) return;
    if (x == nullptr || vals == nullptr || ids == nullptr || flags == nullptr) bad("top_k_rows with a null pointer");
    if (k < 1 || k > TDM_TOP_K_MAX || int64_t(k) > n_cols)
      bad("top_k_rows needs 1 <= k <= " + std::to_string(TDM_TOP_K_MAX) + " and k <= n_cols, got k " + std::to_string(k));
    if (n_rows > INT32_MAX) bad("top_k_rows with too many rows");
    auto kernel = k == 1 ? top_k_rows_kernel<1> : k <= 16 ? top_k_rows_kernel<16> : top_k_rows_kernel<TDM_TOP_K_MAX>;
    TDM_LAUNCH(kernel, unsigned(n_rows), kTopKThreads, 0, stream_of(c, s).stream)(x, n_cols, k, vals, ids, flags);
    check_launch("top_k_rows_kernel");
  });
}

}  // namespace tdm::gpu
