// Model hyperparameters as the TypeScript side describes them (src/model/describe.ts,
// ModelHyperparams): native code receives them as plain data and never re-derives them
// from GGUF metadata, so one description drives every backend.
#pragma once
#include <cstdint>
#include <string>

namespace tdm {

enum class Arch { llama, qwen2, qwen2moe, qwen3moe, olmoe };
enum class RopeType { norm, neox };
enum class ExpertGating { softmax, sigmoid };

struct Hparams {
  Arch arch = Arch::llama;
  std::string arch_name;   // as given, for messages
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;    // K head size (elements)
  int64_t head_dim_v = 0;  // V head size (elements)
  int64_t n_ff = 0;        // dense FFN width
  int64_t n_expert = 0;    // 0 for a dense model
  int64_t n_expert_used = 0;
  int64_t n_ff_expert = 0;  // one expert's FFN width
  int64_t n_ff_shared = 0;  // shared expert's FFN width
  RopeType rope_type = RopeType::norm;
  int64_t rope_dim = 0;     // leading elements of each head that RoPE rotates
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  float rms_eps = 1e-5f;
  bool expert_weights_norm = false;  // renormalise the chosen experts' weights to sum to 1
  ExpertGating expert_gating = ExpertGating::softmax;
  bool has_qkv_bias = false;
  bool has_qk_norm = false;
  bool has_shared_expert = false;
  bool tied_embeddings = false;

  bool is_moe() const { return n_expert > 0; }
};

// Throws tdm::Error(TDM_BAD_ARGUMENT) naming the first inconsistent field.
void validate_hparams(const Hparams& hp);

}  // namespace tdm
