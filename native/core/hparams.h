// Model hyperparameters as the TypeScript side describes them (src/model/describe.ts,
// ModelHyperparams): native code receives them as plain data and never re-derives them
// from GGUF metadata, so one description drives every backend.
#pragma once
#include <cstdint>
#include <string>

#include "backend/backend.h"

namespace tdm {

enum class Arch { llama, qwen2, qwen3, qwen2moe, qwen3moe, olmoe, gpt_oss, gemma, gemma2, gemma3 };
enum class RopeType { norm, neox };
enum class ExpertGating { softmax, sigmoid, softmax_weight };
enum class FfnAct { silu, gelu };  // the dense FFN's gate activation: SwiGLU or GeGLU

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
  float rope_attn_factor = 1.0f;  // rope.scaling.attn_factor: multiplies cos and sin
  float yarn_ext_factor = 0.0f;   // YaRN's mix weight (1 when rope.scaling.type is yarn); 0: no YaRN
  float yarn_beta_fast = 32.0f;   // YaRN ramp ends, in turns over yarn_orig_ctx
  float yarn_beta_slow = 1.0f;
  int64_t yarn_orig_ctx = 0;      // YaRN: context the frequencies were trained for (tokens)
  float rms_eps = 1e-5f;
  bool expert_weights_norm = false;  // renormalise the chosen experts' weights to sum to 1
  ExpertGating expert_gating = ExpertGating::softmax;
  bool has_qkv_bias = false;
  bool has_qk_norm = false;
  bool has_shared_expert = false;
  bool tied_embeddings = false;
  // gpt-oss: sliding-window attention on some layers, attention sinks, biased experts with
  // the clamped SwiGLU.
  int64_t n_swa = 0;         // sliding window (positions); 0: every layer attends to all
  int64_t swa_period = 0;    // layer l slides when l % swa_period < swa_period - 1
  float rope_freq_base_swa = 0.0f;  // RoPE base of sliding layers
  float rope_freq_scale_swa = 1.0f; // RoPE angle scale of sliding layers
  bool has_attn_sinks = false;
  bool has_expert_bias = false;     // router and expert biases
  bool swiglu_oai = false;          // experts' activation: gpt-oss's clamped SwiGLU
  // Its constants, as llama.cpp's build_moe_ffn has them for LLM_FFN_SWIGLU_OAI_MOE.
  float swiglu_oai_alpha = 1.702f;
  float swiglu_oai_limit = 7.0f;
  // Gemma: token embeddings scaled by sqrt(n_embd), RMSNorms after attention and after the
  // FFN (before each residual add), a GeGLU FFN, and its own attention scale.
  float embd_scale = 1.0f;   // multiplies each token's embedding row
  float attn_scale = 0.0f;   // softmax scale on q.k; the binding sets 1/sqrt(head_dim) unless told
  bool has_post_norms = false;
  FfnAct ffn_act = FfnAct::silu;
  // gemma2: attention scores soft-capped at attn_softcap, logits at final_softcap (0: none).
  float attn_softcap = 0.0f;
  float final_softcap = 0.0f;

  bool is_moe() const { return n_expert > 0; }
  bool is_swa(int64_t layer) const { return n_swa > 0 && swa_period > 0 && layer % swa_period < swa_period - 1; }
};

// Throws tdm::Error(TDM_BAD_ARGUMENT) naming the first inconsistent field.
void validate_hparams(const Hparams& hp);

// The rope op's settings for this model, with llama.cpp's YaRN attention factor (llama_context:
// get_mscale(factor) over ggml's own 1 + 0.1 ln(factor), times rope.scaling.attn_factor).
tdm_rope_params rope_params(const Hparams& hp);

}  // namespace tdm
