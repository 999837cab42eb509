// A model's weights bound in place from the GGUF mapping (no copies): for each layer the
// matrices and vectors its architecture's forward pass reads, checked against the
// hyperparameters' shapes when the model loads, so a step never meets a bad tensor; and
// their placement on a device under a memory budget.
#pragma once
#include <functional>
#include <memory>
#include <unordered_set>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_handle.h"
#include "core/gguf.h"
#include "core/hparams.h"

namespace tdm {

// An f32 vector (norm weight or bias) in the mapping; data is null when the tensor is absent.
struct VecF32 {
  const float* data = nullptr;
  int64_t n = 0;
  explicit operator bool() const { return data != nullptr; }
};

// A weight is absent when its data is null.
inline bool present(const tdm_weight& w) { return w.data != nullptr; }

struct LayerWeights {
  VecF32 attn_norm;
  tdm_weight wq{}, wk{}, wv{}, wo{};
  VecF32 bq, bk, bv, bo;
  VecF32 q_norm, k_norm;       // QK RMSNorm weights (qwen3moe: per head; olmoe: whole projection)
  bool qk_norm_per_head = false;
  VecF32 ffn_norm;
  tdm_weight ffn_gate{}, ffn_up{}, ffn_down{};          // dense FFN
  tdm_weight gate_inp{};                                // router: n_expert x n_embd
  tdm_weight gate_exps{}, up_exps{}, down_exps{};       // stacked experts
  tdm_weight gate_inp_shexp{};                          // shared expert gate: 1 x n_embd
  tdm_weight gate_shexp{}, up_shexp{}, down_shexp{};    // shared expert FFN
  VecF32 attn_post_norm, ffn_post_norm;                 // gemma3: norms of the attention and FFN outputs
  VecF32 attn_sinks;                                    // gpt-oss: one sink logit per head
  VecF32 gate_inp_b;                                    // router bias (n_expert)
  VecF32 gate_exps_b, up_exps_b, down_exps_b;           // expert biases: n_expert rows of n_ff (down: n_embd)
};

struct ModelWeights {
  std::shared_ptr<GgufFile> file;  // keeps the mapping alive
  tdm_weight tok_embd{};
  VecF32 output_norm;
  tdm_weight output{};             // token_embd when embeddings are tied
  std::vector<LayerWeights> layers;
  uint64_t bytes = 0;              // total bytes of the bound tensors
};

// An f32 vector of rows of n_cols floats (per-expert biases) as a moe_ffn bias stack
// (tdm_moe_opts); absent when v is.
tdm_weight bias_stack(const VecF32& v, int64_t n_cols);

// Binds every tensor the architecture needs; throws tdm::Error (TDM_BAD_GGUF for a missing
// or misshapen tensor, TDM_UNSUPPORTED for a type tandem cannot compute with) naming it.
ModelWeights bind_weights(std::shared_ptr<GgufFile> file, const Hparams& hp);

// ---- placement of weights on a device under a memory budget (the GPU backends issue, item 3)

// Where each bound tensor lives for the executor. `exec` mirrors the bound weights with the
// pointers the executor passes to ops: a copy in device memory for a placed tensor, the
// mapping for one left in host RAM. Norm weights and biases always go to the device (they
// are tiny and every layer reads them on the device that runs the linear layers).
struct WeightPlacement {
  ModelWeights exec;
  std::vector<DeviceBuffer> buffers;  // the device copies
  // Device-memory addresses of placed matrices (exec's data pointers); host ones are absent.
  std::unordered_set<const void*> resident;
  uint64_t device_bytes = 0;  // bytes of the tensors placed on the device
  uint64_t host_bytes = 0;    // bytes of the matrices left in host RAM
  int32_t device_tensors = 0;
  int32_t host_tensors = 0;

  // True when the matrix `w` (an exec weight) is in device memory.
  bool on_device(const tdm_weight& w) const { return resident.count(w.data) != 0; }
};

// Copies tensors to `device` in priority order while they fit in `budget_bytes` (first
// fit): norms and biases, then each layer's attention projections, then dense FFNs and MoE
// routers and shared experts, then the output projection, then routed experts (one
// layer's three stacks together), then the token embeddings. budget_bytes < 0 places
// everything. With `routed_experts`, the routed experts are not placed as stacks: it is
// called at their turn with the budget left (bytes, -1 unlimited) and returns the device
// bytes it took for them (the expert cache, experts.h). Throws tdm::Error(TDM_OOM) when a
// device allocation fails.
WeightPlacement place_weights(const ModelWeights& w, Backend* device, int64_t budget_bytes,
                              const std::function<uint64_t(int64_t)>& routed_experts = nullptr);

}  // namespace tdm
