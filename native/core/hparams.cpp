// Consistency checks on the hyperparameters the TypeScript side hands over (see hparams.h).
#include "core/hparams.h"

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
  need(hp.rms_eps > 0, "rmsEps must be positive");
  if (hp.is_moe()) {
    need(hp.n_expert_used > 0 && hp.n_expert_used <= hp.n_expert, "nExpertUsed must be in [1, nExpert]");
    need(hp.n_ff_expert > 0, "nFfExpert must be positive for a mixture-of-experts model");
    need(!hp.has_shared_expert || hp.n_ff_shared > 0, "nFfShared must be positive when there is a shared expert");
  } else {
    need(hp.n_ff > 0, "nFf must be positive for a dense model");
    need(!hp.has_shared_expert, "a dense model cannot have a shared expert");
    need(hp.arch == Arch::llama || hp.arch == Arch::qwen2, hp.arch_name + " is a mixture-of-experts architecture but nExpert is 0");
  }
}

}  // namespace tdm
