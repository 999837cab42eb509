// Consistency checks on the hyperparameters the TypeScript side hands over (see hparams.h),
// and the rope settings they imply.
#include "core/hparams.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tdm {

namespace {
void need(bool ok, const std::string& what) {
  if (!ok) throw Error(code::bad_argument, "model hyperparameters: " + what);
}
}  // namespace

void validate_hparams(const Hparams& hp) {
  need(hp.n_vocab > 0 && hp.n_vocab < (int64_t(1) << 31), "nVocab must be a positive 32-bit count");
  need(hp.n_embd > 0, "nEmbd must be positive");
  need(hp.n_layer > 0, "nLayer must be positive");
  need(hp.n_head > 0 && hp.n_head_kv > 0, "nHead and nHeadKv must be positive");
  need(hp.n_head % hp.n_head_kv == 0, "nHead must be a multiple of nHeadKv");
  need(hp.head_dim > 0 && hp.head_dim_v > 0, "headDim and headDimV must be positive");
  need(hp.rope_dim > 0 && hp.rope_dim <= hp.head_dim && hp.rope_dim % 2 == 0, "ropeDim must be even and at most headDim");
  need(hp.rope_freq_base > 0 && hp.rope_freq_scale > 0, "ropeFreqBase and ropeFreqScale must be positive");
  need(hp.rope_attn_factor > 0, "ropeAttnFactor must be positive");
  need(hp.yarn_ext_factor >= 0 && hp.yarn_ext_factor <= 1, "yarnExtFactor must be in [0, 1]");
  if (hp.yarn_ext_factor != 0) {
    need(hp.rope_freq_scale <= 1, "YaRN needs ropeFreqScale at most 1 (a scaling factor of at least 1)");
    need(hp.yarn_orig_ctx > 0 && hp.yarn_orig_ctx <= INT32_MAX, "yarnOrigCtx must be a positive 32-bit count");
    need(hp.yarn_beta_fast > 0 && hp.yarn_beta_slow > 0, "yarnBetaFast and yarnBetaSlow must be positive");
  }
  need(hp.rms_eps > 0, "rmsEps must be positive");
  need(hp.n_swa >= 0 && hp.swa_period >= 0, "slidingWindow and slidingWindowPeriod must not be negative");
  need(hp.rope_freq_base_swa > 0 && hp.rope_freq_scale_swa > 0, "ropeFreqBaseSwa and ropeFreqScaleSwa must be positive");
  need(std::isfinite(hp.embd_scale) && hp.embd_scale > 0, "embeddingScale must be a positive number");
  need(std::isfinite(hp.attn_scale) && hp.attn_scale > 0, "attentionScale must be a positive number");
  need(std::isfinite(hp.attn_softcap) && hp.attn_softcap >= 0, "attnLogitSoftcap must be 0 or a positive number");
  need(std::isfinite(hp.final_softcap) && hp.final_softcap >= 0, "finalLogitSoftcap must be 0 or a positive number");
  need(hp.is_moe() || (!hp.has_expert_bias && !hp.swiglu_oai && hp.expert_gating != ExpertGating::softmax_weight),
       "expert biases, the clamped SwiGLU and softmax_weight gating need experts");
  if (hp.is_moe()) {
    need(hp.n_expert_used > 0 && hp.n_expert_used <= hp.n_expert, "nExpertUsed must be in [1, nExpert]");
    need(hp.n_ff_expert > 0, "nFfExpert must be positive for a mixture-of-experts model");
    need(!hp.has_shared_expert || hp.n_ff_shared > 0, "nFfShared must be positive when there is a shared expert");
  } else {
    need(hp.n_ff > 0, "nFf must be positive for a dense model");
    need(!hp.has_shared_expert, "a dense model cannot have a shared expert");
    need(hp.arch == Arch::llama || hp.arch == Arch::qwen2 || hp.arch == Arch::qwen3 || hp.arch == Arch::gemma || hp.arch == Arch::gemma2 ||
             hp.arch == Arch::gemma3,
         hp.arch_name + " is a mixture-of-experts architecture but nExpert is 0");
  }
  need(!hp.is_moe() || hp.ffn_act == FfnAct::silu, "a GeGLU FFN is supported in dense models only");
}

tdm_rope_params rope_params(const Hparams& hp) {
  tdm_rope_params p{};
  p.mode = hp.rope_type == RopeType::neox ? TDM_ROPE_NEOX : TDM_ROPE_NORM;
  p.n_ctx_orig = int32_t(std::min<int64_t>(hp.yarn_orig_ctx, INT32_MAX));  // read only with YaRN, checked then
  p.freq_base = hp.rope_freq_base;
  p.freq_scale = hp.rope_freq_scale;
  p.ext_factor = hp.yarn_ext_factor;
  p.beta_fast = hp.yarn_beta_fast;
  p.beta_slow = hp.yarn_beta_slow;
  // As llama_context's constructor, in its float steps: YaRN's magnitude 1 + 0.1 ln(factor)
  // (get_mscale with no yarn_log_multiplier, which llama.cpp reads for none of these
  // architectures), divided by the same term that the op multiplies in itself.
  float attn = 1.0f;
  if (p.ext_factor != 0.0f) {
    const float factor = 1.0f / p.freq_scale;
    attn = factor <= 1.0f ? 1.0f : 0.1f * logf(factor) + 1.0f;
    attn *= 1.0f / (1.0f + 0.1f * logf(factor));
  }
  p.attn_factor = attn * hp.rope_attn_factor;
  return p;
}

}  // namespace tdm
