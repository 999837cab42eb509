// Mixture-of-experts on the GPU: the router (softmax, sigmoid or gpt-oss's softmax over the
// chosen logits, then top-k in the exact order of the CPU reference's std::partial_sort plus
// ggml_top_k's swap of the first two, so expert weights are summed in llama.cpp's order) and
// the grouped expert FFN. The FFN groups token slots by expert on the device (no host round
// trip), then runs gate, up and down as grouped matmuls whose blocks for unused experts exit
// before reading a weight, with optional per-expert biases and gpt-oss's SwiGLU variant;
// moe_combine sums expert outputs computed elsewhere (a layer split between devices).
#include <math.h>

#include <string>

#include "gpu_context.h"
#include "quant_math.h"

namespace tdm::gpu {

namespace {

// A block of one warp per token; probabilities and the index list live in shared memory.
__global__ void router_kernel(const float* logits, int32_t n_experts, int32_t n_used, int32_t gating, int32_t norm,
                              float scale, int32_t* ids, float* weights) {
  TDM_DYNAMIC_SHARED(float, sh);
  float* p = sh;
  int32_t* idx = reinterpret_cast<int32_t*>(sh + n_experts);
  const int64_t t = blockIdx.x;
  const float* l = logits + t * n_experts;
  const int lane = threadIdx.x;
  if (gating == TDM_GATING_SOFTMAX) {
    // exp(x - max) in float, summed in double, scaled by float(1 / sum): ggml_soft_max's arithmetic.
    float mx = -INFINITY;
    for (int e = lane; e < n_experts; e += TDM_WARP) mx = fmaxf(mx, l[e]);
    for (int o = TDM_WARP / 2; o > 0; o >>= 1) mx = fmaxf(mx, tdm_shfl_xor(mx, o));
    double sum = 0.0;
    for (int e = lane; e < n_experts; e += TDM_WARP) {
      p[e] = expf(l[e] - mx);
      sum += double(p[e]);
    }
    for (int o = TDM_WARP / 2; o > 0; o >>= 1) sum += tdm_shfl_xor(sum, o);
    const float inv = float(1.0 / sum);
    for (int e = lane; e < n_experts; e += TDM_WARP) p[e] = mul_rn(p[e], inv);
  } else if (gating == TDM_GATING_SIGMOID) {
    for (int e = lane; e < n_experts; e += TDM_WARP) p[e] = 1.0f / (1.0f + expf(-l[e]));
  } else {
    for (int e = lane; e < n_experts; e += TDM_WARP) p[e] = l[e];  // chosen by raw logit
  }
  for (int e = lane; e < n_experts; e += TDM_WARP) idx[e] = e;
  __syncthreads();
  if (lane != 0) return;
  partial_sort_desc(idx, n_experts, n_used, p);
  if (n_used > 1) {
    const int32_t first = idx[0];
    idx[0] = idx[1];
    idx[1] = first;
  }
  int32_t* it = ids + t * n_used;
  float* wt = weights + t * n_used;
  for (int j = 0; j < n_used; ++j) {
    it[j] = idx[j];
    wt[j] = p[idx[j]];
  }
  if (gating == TDM_GATING_SOFTMAX_WEIGHT) {
    // ggml_soft_max over the chosen logits, with the arithmetic of the softmax gating above.
    float mx = -INFINITY;
    for (int j = 0; j < n_used; ++j) mx = fmaxf(mx, wt[j]);
    double s = 0.0;
    for (int j = 0; j < n_used; ++j) {
      wt[j] = expf(wt[j] - mx);
      s += double(wt[j]);
    }
    const float inv = float(1.0 / s);
    for (int j = 0; j < n_used; ++j) wt[j] = mul_rn(wt[j], inv);
  }
  double sum = 0.0;
  for (int j = 0; j < n_used; ++j) sum += double(wt[j]);
  if (norm) {
    // Clamped at the smallest normal fp16, as llama.cpp does, so a sum of zeros cannot divide to inf.
    const float sm = fmaxf(float(sum), 6.103515625e-5f);
    for (int j = 0; j < n_used; ++j) wt[j] = wt[j] / sm;
  }
  if (scale != 1.0f)
    for (int j = 0; j < n_used; ++j) wt[j] = mul_rn(wt[j], scale);
}

// One block: counts slots per expert, then lists slot ids grouped by expert (order inside an
// expert is free: every slot's result is independent of the others).
__global__ void moe_group_kernel(const int32_t* ids, int32_t n_slots, int32_t n_exp, int32_t* offsets, int32_t* list,
                                 int32_t* active, uint32_t* faults) {
  TDM_DYNAMIC_SHARED(int32_t, counts);
  int32_t* cursor = counts + n_exp;
  for (int e = threadIdx.x; e < n_exp; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int32_t i = threadIdx.x; i < n_slots; i += blockDim.x) {
    const int32_t e = ids[i];
    if (e < 0 || e >= n_exp) atomicOr(faults, uint32_t(kFaultExpertId));
    else atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t run = 0, n_active = 0;
    for (int32_t e = 0; e < n_exp; ++e) {
      offsets[e] = run;
      cursor[e] = run;
      run += counts[e];
      if (counts[e] > 0) active[1 + n_active++] = e;
    }
    offsets[n_exp] = run;
    active[0] = n_active;
  }
  __syncthreads();
  for (int32_t i = threadIdx.x; i < n_slots; i += blockDim.x) {
    const int32_t e = ids[i];
    if (e >= 0 && e < n_exp) list[atomicAdd(&cursor[e], 1)] = i;
  }
}

// A per-expert f32 bias stack (tdm_moe_opts): expert e's row at data + e*mat_bytes; data null for none.
struct MoeBias {
  const uint8_t* data;
  size_t mat_bytes;
};

__device__ __forceinline__ float bias_at(const MoeBias& b, int32_t e, int64_t c) {
  return reinterpret_cast<const float*>(b.data + size_t(e) * b.mat_bytes)[c];
}

// The FFN's activation, in place on g (n_rows x n_ff, rows by position in the expert-grouped
// list): the gate and up biases of the row's expert added first (each sum rounded, as ggml_add_id),
// then SwiGLU or gpt-oss's clamped variant (ggml_swiglu_oai).
struct GluParams {
  int32_t glu;
  float alpha, limit;
  MoeBias gate_bias, up_bias;
  const int32_t* offsets;  // the grouping's offsets; offsets[n_exp] rows of the list are real
  const int32_t* list;
  const int32_t* ids;
  int32_t n_exp;
};

__global__ void moe_glu_kernel(float* g, const float* u, int64_t n_ff, int64_t n, GluParams p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float gv = g[i], uv = u[i];
  if (p.gate_bias.data != nullptr || p.up_bias.data != nullptr) {
    const int64_t r = i / n_ff, c = i % n_ff;
    // Rows past the real ones (slots with a bad expert id, already a fault) have no expert.
    if (r < p.offsets[p.n_exp]) {
      const int32_t e = p.ids[p.list[r]];
      if (p.gate_bias.data != nullptr) gv = add_rn(gv, bias_at(p.gate_bias, e, c));
      if (p.up_bias.data != nullptr) uv = add_rn(uv, bias_at(p.up_bias, e, c));
    }
  }
  if (p.glu == TDM_GLU_SWIGLU_OAI) {
    const float x = fminf(gv, p.limit);
    const float v = fminf(fmaxf(uv, -p.limit), p.limit);
    g[i] = mul_rn(x / (1.0f + expf(p.alpha * -x)), add_rn(v, 1.0f));
  } else {
    g[i] = mul_rn(gv / (1.0f + expf(-gv)), uv);
  }
}

// y[t] = sum over choices j in order of weights[t][j] * (out[slot t*n_used + j] + the down bias
// of its expert); each sum and product is rounded on its own, as llama.cpp's ggml_add_id,
// ggml_mul, then a chain of ggml_add.
__global__ void moe_combine_kernel(const float* out, const float* weights, int32_t n_used, int64_t n_embd, const int32_t* ids,
                                   MoeBias down_bias, int32_t n_exp, float* y) {
  const int64_t t = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_embd) return;
  float acc = 0.0f;
  for (int32_t j = 0; j < n_used; ++j) {
    const int64_t slot = t * n_used + j;
    float o = out[slot * n_embd + i];
    if (down_bias.data != nullptr) {
      const int32_t e = ids[slot];
      if (e >= 0 && e < n_exp) o = add_rn(o, bias_at(down_bias, e, i));  // a bad id is already a fault
    }
    const float prod = mul_rn(o, weights[slot]);
    acc = j == 0 ? prod : add_rn(acc, prod);
  }
  y[t * n_embd + i] = acc;
}

// The CPU backend's rules for a bias stack, plus float alignment for device reads.
MoeBias bias_of(const tdm_weight& b, int64_t n_cols, int64_t n_exp, const char* what) {
  if (b.data == nullptr) return MoeBias{nullptr, 0};
  if (b.type != kF32 || b.n_cols != n_cols || b.n_mats < n_exp || b.mat_bytes < size_t(n_cols) * sizeof(float) ||
      b.mat_bytes % sizeof(float) != 0 || reinterpret_cast<uintptr_t>(b.data) % sizeof(float) != 0)
    bad(std::string("moe_ffn: the ") + what + " bias must be an f32 stack of " + std::to_string(n_exp) + " rows of " +
        std::to_string(n_cols));
  return MoeBias{static_cast<const uint8_t*>(b.data), b.mat_bytes};
}

// moe_combine: as moe_combine_kernel, but with rows found through choice-major positions (the
// device's gathered expert outputs of a split layer). A position outside the rows sets a fault bit.
__global__ void moe_combine_rows_kernel(const float* rows, int64_t n_rows, const int32_t* pos, const float* weights,
                                        int64_t n_tokens, int32_t n_used, int64_t n_cols, float* y, uint32_t* faults) {
  const int64_t t = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_cols) return;
  float acc = 0.0f;
  for (int32_t j = 0; j < n_used; ++j) {
    const int32_t p = pos[int64_t(j) * n_tokens + t];
    if (p < 0 || p >= n_rows) {
      if (i == 0) atomicOr(faults, uint32_t(kFaultRowId));
      return;
    }
    const float prod = mul_rn(rows[int64_t(p) * n_cols + i], weights[int64_t(j) * n_tokens + t]);
    acc = j == 0 ? prod : add_rn(acc, prod);
  }
  y[t * n_cols + i] = acc;
}

}  // namespace

tdm_status op_moe_combine(tdm_backend_ctx* ctx, const float* rows, int64_t n_rows, const int32_t* pos, const float* weights,
                          int64_t n_tokens, int32_t n_used, int64_t n_cols, float* y, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n_tokens <= 0 || n_cols <= 0) return;
    if (rows == nullptr || pos == nullptr || weights == nullptr || y == nullptr) bad("moe_combine with a null pointer");
    if (n_used <= 0) bad("moe_combine needs n_used > 0");
    if (n_tokens > 65535) unsupported("moe_combine with more than 65535 tokens in one call");
    const dim3 grid(unsigned((n_cols + 255) / 256), unsigned(n_tokens));
    TDM_LAUNCH(moe_combine_rows_kernel, grid, 256, 0, stream_of(c, s).stream)(rows, n_rows, pos, weights, n_tokens, n_used,
                                                                              n_cols, y, c.faults);
    check_launch("moe_combine_rows_kernel");
  });
}

tdm_status op_router(tdm_backend_ctx* ctx, const float* logits, int64_t n_tokens, int32_t n_experts, int32_t n_used,
                     int32_t gating, int32_t norm, float scale, int32_t* ids, float* weights, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n_tokens <= 0) return;
    if (logits == nullptr || ids == nullptr || weights == nullptr) bad("router with a null pointer");
    if (n_experts <= 0 || n_used <= 0 || n_used > n_experts) bad("router needs 0 < n_used <= n_experts");
    if (gating != TDM_GATING_SOFTMAX && gating != TDM_GATING_SIGMOID && gating != TDM_GATING_SOFTMAX_WEIGHT)
      unsupported("unknown gating function");
    if (n_tokens > INT32_MAX) bad("router with too many tokens");
    const size_t shmem = size_t(n_experts) * 8;
    if (shmem > 48 * 1024) unsupported("more than 6144 experts");
    TDM_LAUNCH(router_kernel, unsigned(n_tokens), TDM_WARP, shmem, stream_of(c, s).stream)(logits, n_experts, n_used, gating, norm,
                                                                                 scale, ids, weights);
    check_launch("router_kernel");
  });
}

tdm_status op_moe_ffn(tdm_backend_ctx* ctx, const float* x, int64_t n_tokens, const int32_t* ids, const float* weights,
                      int32_t n_used, const tdm_weight* gate, const tdm_weight* up, const tdm_weight* down,
                      const tdm_moe_opts* opts, float* y, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    check_weight(gate);
    check_weight(up);
    check_weight(down);
    const tdm_moe_opts o = opts != nullptr ? *opts : tdm_moe_opts{};
    if (o.glu != TDM_GLU_SWIGLU && o.glu != TDM_GLU_SWIGLU_OAI) unsupported("unknown moe_ffn activation");
    const MoeBias gate_bias = bias_of(o.gate_bias, gate->n_rows, gate->n_mats, "gate");
    const MoeBias up_bias = bias_of(o.up_bias, gate->n_rows, gate->n_mats, "up");
    const MoeBias down_bias = bias_of(o.down_bias, down->n_rows, gate->n_mats, "down");
    if (n_tokens <= 0) return;
    if (x == nullptr || ids == nullptr || weights == nullptr || y == nullptr) bad("moe_ffn with a null pointer");
    const int64_t n_embd = gate->n_cols, n_ff = gate->n_rows, n_exp = gate->n_mats;
    if (up->n_cols != n_embd || up->n_rows != n_ff || up->n_mats != n_exp || down->n_cols != n_ff ||
        down->n_rows != n_embd || down->n_mats != n_exp)
      bad("expert gate/up/down shapes do not match");
    if (n_used <= 0) bad("moe_ffn needs n_used > 0");
    const int64_t n_slots = n_tokens * n_used;
    if (n_slots > INT32_MAX) bad("moe_ffn with too many token slots");
    if (n_exp > 6144) unsupported("more than 6144 experts");
    if (n_tokens > 65535) unsupported("moe_ffn with more than 65535 tokens in one call");
    GpuStream& st = stream_of(c, s);

    // At most min(n_exp, n_slots) experts have slots: the matrix-vector kernels launch that many groups.
    const int32_t max_active = int32_t(std::min<int64_t>(n_exp, n_slots));
    int32_t* idx = scratch_as<int32_t>(st, kSlotMoeIdx, size_t(n_exp + 1 + n_slots + 1 + max_active));
    int32_t* offsets = idx;
    int32_t* list = idx + n_exp + 1;
    int32_t* active = list + n_slots;
    TDM_LAUNCH(moe_group_kernel, 1, 1024, size_t(n_exp) * 2 * sizeof(int32_t), st.stream)(ids, int32_t(n_slots), int32_t(n_exp),
                                                                                  offsets, list, active, c.faults);
    check_launch("moe_group_kernel");

    // Gate and up read activations by token; their outputs, the activation and the down
    // projection's input are by position in the expert-grouped list; down writes by slot.
    const ActView xg = convert_activations(c, st, gate->type, x, n_tokens, n_embd, kSlotActQ);
    const ActView xu = act_type_of(up->type) == xg.act ? xg : convert_activations(c, st, up->type, x, n_tokens, n_embd, kSlotActQ2);
    float* hg = scratch_as<float>(st, kSlotMoeGate, size_t(n_slots * n_ff));
    float* hu = scratch_as<float>(st, kSlotMoeUp, size_t(n_slots * n_ff));
    const GroupMap by_token{offsets, list, 0, n_used, true, false, active, max_active};
    grouped_matmul(c, st, *gate, static_cast<const uint8_t*>(gate->data), n_exp, xg, by_token, n_tokens, hg, n_ff);
    grouped_matmul(c, st, *up, static_cast<const uint8_t*>(up->data), n_exp, xu, by_token, n_tokens, hu, n_ff);
    const int64_t n_h = n_slots * n_ff;
    const GluParams glu{o.glu, o.alpha, o.limit, gate_bias, up_bias, offsets, list, ids, int32_t(n_exp)};
    TDM_LAUNCH(moe_glu_kernel, unsigned((n_h + 255) / 256), 256, 0, st.stream)(hg, hu, n_ff, n_h, glu);
    check_launch("moe_glu_kernel");

    const ActView hd = convert_activations(c, st, down->type, hg, n_slots, n_ff, kSlotActQ2);
    float* ho = scratch_as<float>(st, kSlotMoeOut, size_t(n_slots * n_embd));
    const GroupMap to_slot{offsets, list, 0, 1, false, true, active, max_active};
    grouped_matmul(c, st, *down, static_cast<const uint8_t*>(down->data), n_exp, hd, to_slot, n_tokens, ho, n_embd);

    const dim3 grid(unsigned((n_embd + 255) / 256), unsigned(n_tokens));
    TDM_LAUNCH(moe_combine_kernel, grid, 256, 0, st.stream)(ho, weights, n_used, n_embd, ids, down_bias, int32_t(n_exp), y);
    check_launch("moe_combine_kernel");
  });
}

}  // namespace tdm::gpu
