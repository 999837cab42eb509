// A loaded model: hyperparameters, weights bound from the mapping, the backends it runs on,
// one paged KV pool per tier, and the executor that runs a StepPlan (executor.cpp).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend_handle.h"
#include "core/hparams.h"
#include "core/kv_pool.h"
#include "core/model_weights.h"
#include "core/sampling.h"
#include "core/step.h"

namespace tdm {

struct ModelConfig {
  Hparams hp;
  int threads = 0;               // CPU threads incl. the caller; <= 0 picks the hardware count
  int32_t kv_block_tokens = 16;  // positions per KV block
  int32_t kv_blocks_device = 0;  // blocks in the device tier (host RAM when no GPU backend is loaded)
  int32_t kv_blocks_host = 0;    // blocks in the host tier
  std::string cpu_variant;       // "" for the best kernels; "ref" or "avx2" to force one
};

// Activation buffers of one step on the backend that runs the linear layers, grown on demand.
struct Workspace {
  int64_t cap_tokens = 0;
  int64_t cap_out = 0;
  int64_t cap_table = 0;
  DeviceBuffer x, xn, q, k, v, attn, o, gate, up, shared, router_logits, expert_ids, expert_weights, shared_gate;
  DeviceBuffer tokens, positions, tables, out_rows, out_x, logits;
};

class Model {
 public:
  // Maps the file, binds weights, starts the CPU backend and allocates the KV pools. Calls
  // progress(fraction in [0, 1]) as the weights are paged in. Throws tdm::Error.
  static std::shared_ptr<Model> load(const std::string& path, const ModelConfig& cfg,
                                     const std::function<void(double)>& progress);

  // Runs one step: block copies, then every sequence's tokens through the layers, logits
  // where asked, sampling. Validates the whole plan before touching any state; throws
  // tdm::Error (TDM_BAD_ARGUMENT for a bad plan). One step at a time per model.
  StepResult step(const StepPlan& plan);

  const Hparams& hparams() const { return hp_; }
  size_t kv_block_bytes() const { return layout_.block_bytes; }
  // Backends in use, by kind ("cpu" first).
  std::vector<std::string> backends() const;
  uint64_t weight_bytes() const { return weights_.bytes; }

 private:
  Model() = default;
  void validate(const StepPlan& plan) const;
  void run_copies(const std::vector<BlockCopy>& copies);
  void ensure_workspace(int64_t n_tokens, int64_t n_out, int64_t n_table);
  const KvPool& pool(KvTier t) const { return pools_[int(t)]; }
  Backend* attention_backend(AttnDevice d) const { return d == AttnDevice::cpu ? cpu_.get() : device_; }

  Hparams hp_;
  ModelWeights weights_;
  std::unique_ptr<Backend> cpu_;
  Backend* device_ = nullptr;  // the accelerator; the CPU backend stands in when none is loaded
  Backend* linear_ = nullptr;  // runs embeddings, projections and FFNs
  KvLayout layout_;
  KvPool pools_[2];            // indexed by KvTier
  Workspace ws_;
  SamplerScratch sampler_;
};

}  // namespace tdm
