// The step executor: runs one StepPlan across the CPU and the device. Block copies first;
// then the sequences' tokens go through the layers in one batch (or, under 'pipeline', two
// sub-batches), the linear layers on the device (with a CPU fallback for each weight left in
// host RAM), attention per sequence where the plan says: on the device, or on the CPU over
// host-tier KV. Under 'overlap' (APEX) the CPU attention of a layer runs on the CPU worker
// while the device does its own attention, and the device waits for it only before o_proj;
// under 'pipeline' (NEO) the CPU attention of one sub-batch runs while the device does the
// linear layers of the other. Logits only for the rows asked for; sampling next to them.
// The five architectures differ only in what the hyperparameters and the bound weights say
// (RoPE style, QKV bias, QK norm per head or whole, dense or routed FFN, shared expert with
// its sigmoid gate), so one layer serves all, in llama.cpp's order of operations
// (src/models/*.cpp) so that results track it. Every op runs the same code wherever the
// batch is split, so all strategies give bit-identical logits when both sides are CPU
// backends with the same kernels.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/ggml_types.h"
#include "core/model.h"

namespace tdm {

namespace {

using Clock = std::chrono::steady_clock;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// Adds the wall time of f() to *acc.
template <typename F>
void timed(double* acc, F&& f) {
  const Clock::time_point t0 = Clock::now();
  f();
  *acc += us_since(t0);
}

[[noreturn]] void bad(const std::string& what) { throw Error(code::bad_argument, what); }

const char* tier_name(KvTier t) { return t == KvTier::device ? "device" : "host"; }

// The hyperparameters that become op arguments rather than optional weights.
struct Recipe {
  int32_t rope_mode;  // tdm_rope_mode
  int32_t gating;     // tdm_gating
};

Recipe recipe_for(const Hparams& hp) {
  Recipe r{};
  r.rope_mode = hp.rope_type == RopeType::neox ? TDM_ROPE_NEOX : TDM_ROPE_NORM;
  r.gating = hp.expert_gating == ExpertGating::sigmoid ? TDM_GATING_SIGMOID : TDM_GATING_SOFTMAX;
  return r;
}

// A matrix view over an activation buffer (rows of n_cols floats), for get_rows gathers.
tdm_weight f32_rows(const float* data, int64_t n_rows, int64_t n_cols) {
  tdm_weight w{};
  w.data = data;
  w.type = uint32_t(GgmlType::F32);
  w.n_cols = n_cols;
  w.n_rows = n_rows;
  w.n_mats = 1;
  w.row_bytes = size_t(n_cols) * sizeof(float);
  w.mat_bytes = w.row_bytes * size_t(n_rows);
  return w;
}

// Adds to *acc the wall time of f() less what it spent in host matmuls and transfers
// (those are counted in their own phases).
template <typename F>
void timed_linear(double* acc, const Phases& ph, F&& f) {
  const double other = ph.host_linear + ph.transfer;
  const Clock::time_point t0 = Clock::now();
  f();
  *acc += us_since(t0) - (ph.host_linear + ph.transfer - other);
}

}  // namespace

void Model::validate(const StepPlan& plan) const {
  const int32_t bt = layout_.block_tokens;
  for (size_t i = 0; i < plan.copies.size(); ++i) {
    const BlockCopy& c = plan.copies[i];
    const std::string at = "copies[" + std::to_string(i) + "]: ";
    if (c.from_block < 0 || c.from_block >= pool(c.from_tier).n_blocks())
      bad(at + "fromBlock " + std::to_string(c.from_block) + " is outside the " + tier_name(c.from_tier) + " tier's " +
          std::to_string(pool(c.from_tier).n_blocks()) + " blocks");
    if (c.to_block < 0 || c.to_block >= pool(c.to_tier).n_blocks())
      bad(at + "toBlock " + std::to_string(c.to_block) + " is outside the " + tier_name(c.to_tier) + " tier's " +
          std::to_string(pool(c.to_tier).n_blocks()) + " blocks");
  }
  std::unordered_set<int64_t> seen_ids;
  // (tier, block) -> the sequence that writes it this step. A block written by two sequences,
  // or written by one while another reads it, would corrupt or race: the engine copies
  // shared blocks before writing (copy on write), and the plan must show it did.
  std::unordered_map<int64_t, size_t> writer;
  auto key = [](KvTier t, int32_t block) { return int64_t(t) * (int64_t(1) << 32) + block; };
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqPlan& s = plan.seqs[i];
    const std::string at = "sequences[" + std::to_string(i) + "] (seqId " + std::to_string(s.seq_id) + "): ";
    if (!seen_ids.insert(s.seq_id).second) bad(at + "seqId appears twice in one plan");
    if (s.tokens.empty()) bad(at + "tokens is empty");
    for (int32_t t : s.tokens)
      if (t < 0 || t >= hp_.n_vocab) bad(at + "token id " + std::to_string(t) + " is outside [0, " + std::to_string(hp_.n_vocab) + ")");
    if (s.start_pos < 0) bad(at + "startPos must not be negative");
    const int64_t end = int64_t(s.start_pos) + int64_t(s.tokens.size());
    if (end > int64_t(INT32_MAX)) bad(at + "positions overflow");
    const int64_t needed = (end + bt - 1) / bt;
    if (int64_t(s.block_table.size()) < needed)
      bad(at + "blockTable has " + std::to_string(s.block_table.size()) + " blocks but positions [0, " + std::to_string(end) +
          ") need " + std::to_string(needed) + " of " + std::to_string(bt) + " tokens");
    const KvPool& p = pool(s.tier);
    for (int64_t b = 0; b < needed; ++b) {
      const int32_t id = s.block_table[size_t(b)];
      if (id < 0 || id >= p.n_blocks())
        bad(at + "block id " + std::to_string(id) + " is outside the " + tier_name(s.tier) + " tier's " + std::to_string(p.n_blocks()) +
            " blocks");
    }
    std::unordered_set<int32_t> own;
    for (int64_t b = 0; b < needed; ++b)
      if (!own.insert(s.block_table[size_t(b)]).second)
        bad(at + "blockTable lists block " + std::to_string(s.block_table[size_t(b)]) + " twice");
    for (int64_t b = s.start_pos / bt; b < needed; ++b) {
      if (!writer.emplace(key(s.tier, s.block_table[size_t(b)]), i).second)
        bad(at + "writes KV block " + std::to_string(s.block_table[size_t(b)]) + " (" + tier_name(s.tier) +
            " tier) that another sequence of this step also writes");
    }
    Backend* ab = attention_backend(s.attention);
    if (ab != p.backend() && !(ab->host_memory() && p.backend()->host_memory()))
      throw Error(code::unsupported, at + "attention on the " + (s.attention == AttnDevice::cpu ? "CPU" : device_kind_) +
                                         " cannot read KV blocks in the " + tier_name(s.tier) + " tier (" + p.backend()->kind() +
                                         " memory); move the blocks or run its attention where they live");
    if (plan.strategy == Strategy::gpu_only && s.attention != AttnDevice::gpu)
      bad(at + "strategy 'gpu-only' runs every attention on the device, but this sequence asks for the CPU");
    if (s.sub_batch < -1 || s.sub_batch > 1) bad(at + "subBatch must be 0 or 1");
    if (s.sample) validate_sampling_config(s.sampling, int32_t(hp_.n_vocab));
    for (int32_t t : s.recent)
      if (t < 0 || t >= hp_.n_vocab) bad(at + "recentTokens holds " + std::to_string(t) + ", outside [0, " + std::to_string(hp_.n_vocab) + ")");
  }
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqPlan& s = plan.seqs[i];
    const int64_t read_end = s.start_pos / bt;  // blocks before the first one this sequence writes
    for (int64_t b = 0; b < read_end; ++b) {
      auto it = writer.find(key(s.tier, s.block_table[size_t(b)]));
      if (it != writer.end() && it->second != i)
        bad("sequences[" + std::to_string(i) + "] (seqId " + std::to_string(s.seq_id) + "): reads KV block " +
            std::to_string(s.block_table[size_t(b)]) + " (" + tier_name(s.tier) + " tier) while sequences[" +
            std::to_string(it->second) + "] writes it");
    }
  }
}

void Model::run_copies(const std::vector<BlockCopy>& copies) {
  const size_t bb = layout_.block_bytes;
  bool crossed = false;
  for (const BlockCopy& c : copies) {
    const KvPool& src = pool(c.from_tier);
    const KvPool& dst = pool(c.to_tier);
    Backend* sb = src.backend();
    Backend* db = dst.backend();
    const int32_t from = c.from_block, to = c.to_block;
    if (sb == db) {
      sb->check(sb->fn().copy_blocks(sb->ctx(), dst.base(), src.base(), bb, &from, &to, 1, nullptr), "copy_blocks");
      continue;
    }
    crossed = true;
    void* d = static_cast<uint8_t*>(dst.base()) + size_t(to) * bb;
    const void* s = static_cast<const uint8_t*>(src.base()) + size_t(from) * bb;
    if (db->host_memory()) sb->check(sb->fn().copy_d2h(sb->ctx(), d, s, bb, nullptr), "copy_d2h");
    else db->check(db->fn().copy_h2d(db->ctx(), d, s, bb, nullptr), "copy_h2d");
  }
  // Blocks copied to the host are read by CPU attention, which does not follow the device's queue.
  if (crossed && device_async_) device_->check(device_->fn().stream_sync(device_->ctx(), nullptr), "stream_sync");
}

void Model::ensure_batch(BatchBuffers& w, int64_t n_tokens, int64_t n_out, int64_t n_table, int64_t n_cpu_rows) {
  Backend* b = device_;
  const size_t f = sizeof(float);
  const int64_t q_dim = hp_.n_head * hp_.head_dim, k_dim = hp_.n_head_kv * hp_.head_dim;
  const int64_t v_dim = hp_.n_head_kv * hp_.head_dim_v, o_dim = hp_.n_head * hp_.head_dim_v;
  if (n_tokens > w.cap_tokens) {
    const int64_t T = std::max(n_tokens, std::min<int64_t>(w.cap_tokens * 2, n_tokens + 512));
    const int64_t E = hp_.n_embd;
    const int64_t ff = std::max({hp_.n_ff, hp_.n_ff_shared, int64_t(1)});
    const int64_t k_used = std::max<int64_t>(hp_.n_expert_used, 1);
    w.x = DeviceBuffer(b, size_t(T * E) * f);
    w.xn = DeviceBuffer(b, size_t(T * E) * f);
    w.q = DeviceBuffer(b, size_t(T * q_dim) * f);
    w.k = DeviceBuffer(b, size_t(T * k_dim) * f);
    w.v = DeviceBuffer(b, size_t(T * v_dim) * f);
    w.attn = DeviceBuffer(b, size_t(T * o_dim) * f);
    w.o = DeviceBuffer(b, size_t(T * E) * f);
    w.gate = DeviceBuffer(b, size_t(T * ff) * f);
    w.up = DeviceBuffer(b, size_t(T * ff) * f);
    if (hp_.is_moe()) {
      w.shared = DeviceBuffer(b, size_t(T * E) * f);
      w.router_logits = DeviceBuffer(b, size_t(T * hp_.n_expert) * f);
      w.expert_ids = DeviceBuffer(b, size_t(T * k_used) * sizeof(int32_t));
      w.expert_weights = DeviceBuffer(b, size_t(T * k_used) * f);
      w.shared_gate = DeviceBuffer(b, size_t(T) * f);
    }
    w.tokens = DeviceBuffer(b, size_t(T) * sizeof(int32_t));
    w.positions = DeviceBuffer(b, size_t(T) * sizeof(int32_t));
    w.cap_tokens = T;
  }
  if (n_out > w.cap_out) {
    const int64_t N = std::max(n_out, std::min<int64_t>(w.cap_out * 2, n_out + 64));
    w.out_rows = DeviceBuffer(b, size_t(N) * sizeof(int32_t));
    w.out_x = DeviceBuffer(b, size_t(N * hp_.n_embd) * f);
    w.logits = DeviceBuffer(b, size_t(N * hp_.n_vocab) * f);
    w.cap_out = N;
  }
  if (n_table > w.cap_table) {
    const int64_t N = std::max(n_table, w.cap_table * 2);
    w.tables = DeviceBuffer(b, size_t(N) * sizeof(int32_t));
    w.cap_table = N;
  }
  if (n_cpu_rows > 0) {
    w.hq.reserve(device_, size_t(n_cpu_rows * q_dim) * f);
    w.hk.reserve(device_, size_t(n_cpu_rows * k_dim) * f);
    w.hv.reserve(device_, size_t(n_cpu_rows * v_dim) * f);
    w.hout.reserve(device_, size_t(n_cpu_rows * o_dim) * f);
  }
}

void Model::to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  device_->check(device_->fn().copy_d2h(device_->ctx(), dst, src, bytes, nullptr), "copy_d2h");
  if (device_async_) device_->check(device_->fn().stream_sync(device_->ctx(), nullptr), "stream_sync");
}

void Model::to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  device_->check(device_->fn().copy_h2d(device_->ctx(), dst, src, bytes, nullptr), "copy_h2d");
}

void Model::matmul(const tdm_weight& w, const float* x, int64_t n_tokens, float* y) {
  if (!has_device() || placement_.on_device(w)) {
    device_->check(device_->fn().matmul(device_->ctx(), &w, 0, x, n_tokens, y, nullptr), "matmul");
    return;
  }
  // A weight left in host RAM: move the activations, not the weight.
  const size_t xb = size_t(n_tokens * w.n_cols) * sizeof(float), yb = size_t(n_tokens * w.n_rows) * sizeof(float);
  stage_x_.reserve(device_, xb);
  stage_y_.reserve(device_, yb);
  timed(&ph_.transfer, [&] { to_host(stage_x_.as<float>(), x, xb); });
  timed(&ph_.host_linear, [&] {
    std::lock_guard<std::mutex> lock(cpu_mu_);
    cpu_->check(cpu_->fn().matmul(cpu_->ctx(), &w, 0, stage_x_.as<float>(), n_tokens, stage_y_.as<float>(), nullptr), "matmul");
  });
  timed(&ph_.transfer, [&] { to_device(y, stage_y_.as<float>(), yb); });
}

void Model::embed(BatchBuffers& b, const int32_t* host_tokens, int64_t n_tokens) {
  const tdm_weight& te = placement_.exec.tok_embd;
  float* X = b.x.as<float>();
  timed(&ph_.embed, [&] {
    if (!has_device() || placement_.on_device(te)) {
      device_->check(device_->fn().get_rows(device_->ctx(), &te, b.tokens.as<int32_t>(), n_tokens, X, nullptr), "get_rows");
      return;
    }
    const size_t bytes = size_t(n_tokens * hp_.n_embd) * sizeof(float);
    stage_y_.reserve(device_, bytes);
    {
      std::lock_guard<std::mutex> lock(cpu_mu_);
      cpu_->check(cpu_->fn().get_rows(cpu_->ctx(), &te, host_tokens, n_tokens, stage_y_.as<float>(), nullptr), "get_rows");
    }
    to_device(X, stage_y_.as<float>(), bytes);
  });
}

void Model::pre_attention(BatchBuffers& b, int64_t T, int64_t l) {
  const LayerWeights& lw = placement_.exec.layers[size_t(l)];
  const tdm_backend_iface& f = device_->fn();
  tdm_backend_ctx* c = device_->ctx();
  const Recipe rc = recipe_for(hp_);
  const int64_t E = hp_.n_embd;
  const int64_t q_dim = hp_.n_head * hp_.head_dim, k_dim = hp_.n_head_kv * hp_.head_dim;
  const int64_t v_dim = hp_.n_head_kv * hp_.head_dim_v;
  float* X = b.x.as<float>();
  float* Xn = b.xn.as<float>();
  float* Q = b.q.as<float>();
  float* K = b.k.as<float>();
  float* V = b.v.as<float>();
  const int32_t* pos = b.positions.as<int32_t>();
  auto norm = [&](const float* x, const VecF32& wt, float* y, int64_t rows, int64_t cols) {
    device_->check(f.rms_norm(c, x, wt.data, y, rows, cols, hp_.rms_eps, nullptr), "rms_norm");
  };
  auto add_bias = [&](float* y, const VecF32& bias, int64_t cols) {
    device_->check(f.add(c, y, bias.data, y, T, cols, 0, nullptr), "add");
  };
  timed_linear(&ph_.linear, ph_, [&] {
    norm(X, lw.attn_norm, Xn, T, E);
    matmul(lw.wq, Xn, T, Q);
    matmul(lw.wk, Xn, T, K);
    matmul(lw.wv, Xn, T, V);
    if (lw.bq) add_bias(Q, lw.bq, q_dim);
    if (lw.bk) add_bias(K, lw.bk, k_dim);
    if (lw.bv) add_bias(V, lw.bv, v_dim);
    if (lw.q_norm) {
      if (lw.qk_norm_per_head) {
        norm(Q, lw.q_norm, Q, T * hp_.n_head, hp_.head_dim);
        norm(K, lw.k_norm, K, T * hp_.n_head_kv, hp_.head_dim);
      } else {
        norm(Q, lw.q_norm, Q, T, q_dim);
        norm(K, lw.k_norm, K, T, k_dim);
      }
    }
    device_->check(f.rope(c, Q, pos, T, int32_t(hp_.n_head), int32_t(hp_.head_dim), int32_t(hp_.rope_dim), rc.rope_mode,
                          hp_.rope_freq_base, hp_.rope_freq_scale, nullptr), "rope");
    device_->check(f.rope(c, K, pos, T, int32_t(hp_.n_head_kv), int32_t(hp_.head_dim), int32_t(hp_.rope_dim), rc.rope_mode,
                          hp_.rope_freq_base, hp_.rope_freq_scale, nullptr), "rope");
  });
}

void Model::post_attention(BatchBuffers& b, int64_t T, int64_t l) {
  const LayerWeights& lw = placement_.exec.layers[size_t(l)];
  const tdm_backend_iface& f = device_->fn();
  tdm_backend_ctx* c = device_->ctx();
  const Recipe rc = recipe_for(hp_);
  const int64_t E = hp_.n_embd;
  float* X = b.x.as<float>();
  float* Xn = b.xn.as<float>();
  float* O = b.o.as<float>();
  float* G = b.gate.as<float>();
  float* U = b.up.as<float>();
  auto add_to = [&](float* y, const float* a, int64_t cols, int64_t stride) {
    device_->check(f.add(c, y, a, y, T, cols, stride, nullptr), "add");
  };
  auto ffn = [&](const tdm_weight& g, const tdm_weight& u, const tdm_weight& d, float* out) {
    matmul(g, Xn, T, G);
    matmul(u, Xn, T, U);
    device_->check(f.swiglu(c, G, U, G, T * g.n_rows, nullptr), "swiglu");
    matmul(d, G, T, out);
  };
  timed_linear(&ph_.linear, ph_, [&] {
    matmul(lw.wo, b.attn.as<float>(), T, O);
    if (lw.bo) add_to(O, lw.bo.data, E, 0);
    add_to(X, O, E, E);
    device_->check(f.rms_norm(c, X, lw.ffn_norm.data, Xn, T, E, hp_.rms_eps, nullptr), "rms_norm");
    if (!hp_.is_moe()) {
      ffn(lw.ffn_gate, lw.ffn_up, lw.ffn_down, O);
      add_to(X, O, E, E);
      return;
    }
    matmul(lw.gate_inp, Xn, T, b.router_logits.as<float>());
    device_->check(f.router(c, b.router_logits.as<float>(), T, int32_t(hp_.n_expert), int32_t(hp_.n_expert_used), rc.gating,
                            hp_.expert_weights_norm ? 1 : 0, 1.0f, b.expert_ids.as<int32_t>(), b.expert_weights.as<float>(), nullptr),
                   "router");
  });
  if (!hp_.is_moe()) return;
  const int32_t k_used = int32_t(hp_.n_expert_used);
  if (!has_device() || placement_.on_device(lw.gate_exps)) {
    timed(&ph_.experts, [&] {
      device_->check(f.moe_ffn(c, Xn, T, b.expert_ids.as<int32_t>(), b.expert_weights.as<float>(), k_used, &lw.gate_exps,
                               &lw.up_exps, &lw.down_exps, O, nullptr),
                     "moe_ffn");
    });
  } else {
    // Experts in host RAM: their tokens' activations and routing go down, outputs come back.
    const size_t xb = size_t(T * E) * sizeof(float), rb = size_t(T * k_used) * sizeof(float);
    stage_x_.reserve(device_, xb);
    stage_y_.reserve(device_, xb);
    stage_ids_.reserve(device_, rb);
    stage_w_.reserve(device_, rb);
    timed(&ph_.transfer, [&] {
      to_host(stage_x_.as<float>(), Xn, xb);
      to_host(stage_ids_.as<int32_t>(), b.expert_ids.data(), rb);
      to_host(stage_w_.as<float>(), b.expert_weights.data(), rb);
    });
    timed(&ph_.experts, [&] {
      std::lock_guard<std::mutex> lock(cpu_mu_);
      cpu_->check(cpu_->fn().moe_ffn(cpu_->ctx(), stage_x_.as<float>(), T, stage_ids_.as<int32_t>(), stage_w_.as<float>(), k_used,
                                     &lw.gate_exps, &lw.up_exps, &lw.down_exps, stage_y_.as<float>(), nullptr),
                  "moe_ffn");
    });
    timed(&ph_.transfer, [&] { to_device(O, stage_y_.as<float>(), xb); });
  }
  timed_linear(&ph_.linear, ph_, [&] {
    if (present(lw.gate_shexp)) {
      float* S = b.shared.as<float>();
      ffn(lw.gate_shexp, lw.up_shexp, lw.down_shexp, S);
      if (present(lw.gate_inp_shexp)) {
        matmul(lw.gate_inp_shexp, Xn, T, b.shared_gate.as<float>());
        device_->check(f.scale_rows(c, S, b.shared_gate.as<float>(), T, E, TDM_ROW_FN_SIGMOID, nullptr), "scale_rows");
      }
      add_to(O, S, E, E);
    }
    add_to(X, O, E, E);
  });
}

void Model::lm_head(BatchBuffers& b, int64_t T, int64_t n_out, float* host_logits) {
  const tdm_backend_iface& f = device_->fn();
  tdm_backend_ctx* c = device_->ctx();
  const int64_t E = hp_.n_embd;
  const tdm_weight xrows = f32_rows(b.x.as<float>(), T, E);
  float* XO = b.out_x.as<float>();
  const double other = ph_.host_linear + ph_.transfer;
  const Clock::time_point t0 = Clock::now();
  device_->check(f.get_rows(c, &xrows, b.out_rows.as<int32_t>(), n_out, XO, nullptr), "get_rows");
  device_->check(f.rms_norm(c, XO, placement_.exec.output_norm.data, XO, n_out, E, hp_.rms_eps, nullptr), "rms_norm");
  matmul(placement_.exec.output, XO, n_out, b.logits.as<float>());
  to_host(host_logits, b.logits.data(), size_t(n_out * hp_.n_vocab) * sizeof(float));
  ph_.logits += us_since(t0) - (ph_.host_linear + ph_.transfer - other);
}

// One step in flight: its sub-batches and the CPU attention jobs that run beside the device.
class StepRun {
 public:
  StepRun(Model& m, const StepPlan& plan) : m_(m), plan_(plan) {}

  // A failed step must not return while a worker job still reads its buffers.
  ~StepRun() {
    if (m_.worker_ && submitted_) m_.worker_->drain();
  }

  void run(StepResult* result);

 private:
  // One sub-batch: its sequences in row order (device-attention rows first, then the rows
  // whose attention runs on the CPU), the block tables each side reads, where logits land.
  struct Group {
    KvTier tier;
    std::vector<tdm_attn_seq> seqs;    // first_row relative to the side's first row
    std::vector<int64_t> table_off;    // each sequence's table in the side's table array
  };
  struct Batch {
    BatchBuffers* buf = nullptr;
    std::vector<size_t> seqs;          // plan indices in row order
    int64_t n_rows = 0;
    int64_t n_dev_rows = 0;            // rows [0, n_dev_rows) attend on the device
    std::vector<int32_t> tokens, positions, out_rows;
    std::vector<int32_t> dev_tables;   // copied to buf->tables
    std::vector<int32_t> cpu_tables;   // read by the CPU where they are
    std::vector<Group> dev_groups, cpu_groups;
    std::vector<int64_t> out_first;    // per entry of seqs: its first row in `logits`, or -1
    std::vector<float> logits;         // host, rows x n_vocab
    CpuWorker::Ticket pending = 0;     // the CPU attention job in flight
    double cpu_us = 0;                 // CPU attention time, written by its jobs
  };

  bool cpu_side(const SeqPlan& s) const { return m_.has_device() && s.attention == AttnDevice::cpu; }
  void split();
  void lay_out(Batch& b);
  void start_attention(Batch& b, int64_t l);
  void cpu_attention(Batch& b, int64_t l);
  void finish_attention(Batch& b);

  Model& m_;
  const StepPlan& plan_;
  std::vector<Batch> batches_;
  bool concurrent_ = false;  // CPU attention runs on the worker, beside the device
  bool submitted_ = false;
};

void StepRun::split() {
  const size_t n = plan_.seqs.size();
  const bool pipeline = plan_.strategy == Strategy::pipeline && m_.has_device();
  concurrent_ = m_.worker_ != nullptr && (plan_.strategy == Strategy::overlap || pipeline);
  std::vector<int> which(n, 0);
  if (pipeline) {
    // Default split (when the plan names none): device-attention sequences in sub-batch 0, the
    // CPU's in 1; with no device-attention sequence, the CPU's halved by tokens.
    size_t n_dev = 0;
    int64_t cpu_tokens = 0;
    for (const SeqPlan& s : plan_.seqs) {
      if (!cpu_side(s)) n_dev++;
      else cpu_tokens += int64_t(s.tokens.size());
    }
    int64_t seen = 0;
    for (size_t i = 0; i < n; ++i) {
      const SeqPlan& s = plan_.seqs[i];
      if (s.sub_batch >= 0) {
        which[i] = s.sub_batch;
      } else if (!cpu_side(s)) {
        which[i] = 0;
      } else {
        which[i] = n_dev > 0 || seen * 2 >= cpu_tokens ? 1 : 0;
        seen += int64_t(s.tokens.size());
      }
    }
  }
  batches_.resize(pipeline ? 2 : 1);
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < n; ++i)
      if (cpu_side(plan_.seqs[i]) == (side == 1)) batches_[size_t(which[i])].seqs.push_back(i);
  batches_.erase(std::remove_if(batches_.begin(), batches_.end(), [](const Batch& b) { return b.seqs.empty(); }), batches_.end());
  for (size_t k = 0; k < batches_.size(); ++k) batches_[k].buf = &m_.batches_[k];
}

void StepRun::lay_out(Batch& b) {
  const int32_t bt = m_.layout_.block_tokens;
  b.out_first.assign(b.seqs.size(), -1);
  for (size_t j = 0; j < b.seqs.size(); ++j) {
    const SeqPlan& s = plan_.seqs[b.seqs[j]];
    const int32_t n = int32_t(s.tokens.size());
    const bool cpu = cpu_side(s);
    if (!cpu) b.n_dev_rows = b.n_rows + n;
    const int32_t n_blocks = int32_t((int64_t(s.start_pos) + n + bt - 1) / bt);
    std::vector<int32_t>& tables = cpu ? b.cpu_tables : b.dev_tables;
    std::vector<Group>& groups = cpu ? b.cpu_groups : b.dev_groups;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.tier == s.tier; });
    if (g == groups.end()) {
      groups.push_back(Group{s.tier, {}, {}});
      g = groups.end() - 1;
    }
    const int32_t first_row = int32_t(cpu ? b.n_rows - b.n_dev_rows : b.n_rows);
    g->seqs.push_back(tdm_attn_seq{first_row, n, s.start_pos, n_blocks, nullptr});
    g->table_off.push_back(int64_t(tables.size()));
    tables.insert(tables.end(), s.block_table.begin(), s.block_table.begin() + n_blocks);
    if (s.return_all_logits || s.sample || s.return_logits) {
      b.out_first[j] = int64_t(b.out_rows.size());
      const int32_t first = s.return_all_logits ? 0 : n - 1;
      for (int32_t t = first; t < n; ++t) b.out_rows.push_back(int32_t(b.n_rows) + t);
    }
    for (int32_t t = 0; t < n; ++t) {
      b.tokens.push_back(s.tokens[size_t(t)]);
      b.positions.push_back(s.start_pos + t);
    }
    b.n_rows += n;
  }
  BatchBuffers& w = *b.buf;
  m_.ensure_batch(w, b.n_rows, int64_t(b.out_rows.size()), int64_t(b.dev_tables.size()), b.n_rows - b.n_dev_rows);
  auto up = [&](DeviceBuffer& dst, const std::vector<int32_t>& src) { m_.to_device(dst.data(), src.data(), src.size() * sizeof(int32_t)); };
  up(w.tokens, b.tokens);
  up(w.positions, b.positions);
  up(w.tables, b.dev_tables);
  up(w.out_rows, b.out_rows);
  for (Group& g : b.dev_groups)
    for (size_t i = 0; i < g.seqs.size(); ++i) g.seqs[i].block_table = w.tables.as<int32_t>() + g.table_off[i];
  for (Group& g : b.cpu_groups)
    for (size_t i = 0; i < g.seqs.size(); ++i) g.seqs[i].block_table = b.cpu_tables.data() + g.table_off[i];
}

void StepRun::cpu_attention(Batch& b, int64_t l) {
  Backend& cpu = *m_.cpu_;
  BatchBuffers& w = *b.buf;
  const float scale = 1.0f / std::sqrt(float(m_.hp_.head_dim));
  std::lock_guard<std::mutex> lock(m_.cpu_mu_);
  const Clock::time_point t0 = Clock::now();
  for (const Group& g : b.cpu_groups) {
    const tdm_kv_layer kv = m_.pool(g.tier).layer(int32_t(l));
    const int32_t ns = int32_t(g.seqs.size());
    cpu.check(cpu.fn().kv_store(cpu.ctx(), &kv, w.hk.as<float>(), w.hv.as<float>(), g.seqs.data(), ns, nullptr), "kv_store");
    cpu.check(cpu.fn().attention(cpu.ctx(), &kv, w.hq.as<float>(), g.seqs.data(), ns, int32_t(m_.hp_.n_head), scale,
                                 w.hout.as<float>(), nullptr),
              "attention");
  }
  b.cpu_us += us_since(t0);
}

void StepRun::start_attention(Batch& b, int64_t l) {
  Model& m = m_;
  BatchBuffers& w = *b.buf;
  Backend& dev = *m.device_;
  const int64_t n_cpu = b.n_rows - b.n_dev_rows;
  const int64_t q_dim = m.hp_.n_head * m.hp_.head_dim, k_dim = m.hp_.n_head_kv * m.hp_.head_dim;
  const int64_t v_dim = m.hp_.n_head_kv * m.hp_.head_dim_v;
  const size_t f = sizeof(float);
  const int64_t r0 = b.n_dev_rows;
  auto launch = [&] {
    if (concurrent_) {
      b.pending = m.worker_->submit([this, &b, l] { cpu_attention(b, l); });
      submitted_ = true;
    } else {
      cpu_attention(b, l);
    }
  };
  // q, k and v of the CPU's rows go down to host memory.
  if (n_cpu > 0) {
    timed(&m.ph_.attn_transfer, [&] {
      if (!m.device_async_) {
        m.to_host(w.hq.as<float>(), w.q.as<float>() + r0 * q_dim, size_t(n_cpu * q_dim) * f);
        m.to_host(w.hk.as<float>(), w.k.as<float>() + r0 * k_dim, size_t(n_cpu * k_dim) * f);
        m.to_host(w.hv.as<float>(), w.v.as<float>() + r0 * v_dim, size_t(n_cpu * v_dim) * f);
        return;
      }
      // On the copy stream, after the projections, so the device goes on with its own attention.
      const tdm_backend_iface& fn = dev.fn();
      dev.check(fn.event_record(dev.ctx(), m.compute_done_, nullptr), "event_record");
      dev.check(fn.stream_wait(dev.ctx(), m.copy_stream_, m.compute_done_), "stream_wait");
      dev.check(fn.copy_d2h(dev.ctx(), w.hq.data(), w.q.as<float>() + r0 * q_dim, size_t(n_cpu * q_dim) * f, m.copy_stream_), "copy_d2h");
      dev.check(fn.copy_d2h(dev.ctx(), w.hk.data(), w.k.as<float>() + r0 * k_dim, size_t(n_cpu * k_dim) * f, m.copy_stream_), "copy_d2h");
      dev.check(fn.copy_d2h(dev.ctx(), w.hv.data(), w.v.as<float>() + r0 * v_dim, size_t(n_cpu * v_dim) * f, m.copy_stream_), "copy_d2h");
      dev.check(fn.event_record(dev.ctx(), m.copy_done_, m.copy_stream_), "event_record");
    });
    // A synchronous device has its copies done: the CPU starts before the device's attention.
    if (!m.device_async_) launch();
  }
  timed(&m.ph_.attention, [&] {
    const float scale = 1.0f / std::sqrt(float(m.hp_.head_dim));
    for (const Group& g : b.dev_groups) {
      const tdm_kv_layer kv = m.pool(g.tier).layer(int32_t(l));
      const int32_t ns = int32_t(g.seqs.size());
      dev.check(dev.fn().kv_store(dev.ctx(), &kv, w.k.as<float>(), w.v.as<float>(), g.seqs.data(), ns, nullptr), "kv_store");
      dev.check(dev.fn().attention(dev.ctx(), &kv, w.q.as<float>(), g.seqs.data(), ns, int32_t(m.hp_.n_head), scale,
                                   w.attn.as<float>(), nullptr),
                "attention");
    }
  });
  if (n_cpu > 0 && m.device_async_) {
    timed(&m.ph_.attn_transfer, [&] { dev.check(dev.fn().event_sync(dev.ctx(), m.copy_done_), "event_sync"); });
    launch();
  }
}

void StepRun::finish_attention(Batch& b) {
  const int64_t n_cpu = b.n_rows - b.n_dev_rows;
  if (n_cpu == 0) return;
  if (b.pending != 0) {
    const CpuWorker::Ticket t = b.pending;
    b.pending = 0;
    timed(&m_.ph_.cpu_wait, [&] { m_.worker_->wait(t); });
  }
  // The CPU's attention output goes up, after the device's own rows.
  const int64_t o_dim = m_.hp_.n_head * m_.hp_.head_dim_v;
  timed(&m_.ph_.attn_transfer, [&] {
    m_.to_device(b.buf->attn.as<float>() + b.n_dev_rows * o_dim, b.buf->hout.as<float>(), size_t(n_cpu * o_dim) * sizeof(float));
  });
}

void StepRun::run(StepResult* result) {
  Model& m = m_;
  split();
  for (Batch& b : batches_) lay_out(b);
  for (Batch& b : batches_) m.embed(*b.buf, b.tokens.data(), b.n_rows);
  const int64_t n_layer = m.hp_.n_layer;
  // Layer l of each sub-batch in turn: finish the previous layer (waiting for its CPU
  // attention only now), then this layer's projections, then its attention started on both
  // sides. With two sub-batches the device's work on one covers the CPU's work on the other.
  for (int64_t l = 0; l < n_layer; ++l) {
    for (Batch& b : batches_) {
      if (l > 0) {
        finish_attention(b);
        m.post_attention(*b.buf, b.n_rows, l - 1);
      }
      m.pre_attention(*b.buf, b.n_rows, l);
      start_attention(b, l);
    }
  }
  for (Batch& b : batches_) {
    finish_attention(b);
    m.post_attention(*b.buf, b.n_rows, n_layer - 1);
  }
  for (Batch& b : batches_) m.ph_.cpu_attention += b.cpu_us;

  const int64_t V = m.hp_.n_vocab;
  for (Batch& b : batches_) {
    const int64_t n_out = int64_t(b.out_rows.size());
    if (n_out == 0) continue;
    b.logits.resize(size_t(n_out * V));
    m.lm_head(*b.buf, b.n_rows, n_out, b.logits.data());
  }

  timed(&m.ph_.sampling, [&] {
    result->seqs.resize(plan_.seqs.size());
    for (Batch& b : batches_) {
      for (size_t j = 0; j < b.seqs.size(); ++j) {
        const SeqPlan& s = plan_.seqs[b.seqs[j]];
        SeqResult& r = result->seqs[b.seqs[j]];
        r.seq_id = s.seq_id;
        if (b.out_first[j] < 0) continue;
        const int64_t n = int64_t(s.tokens.size());
        const int64_t rows = s.return_all_logits ? n : 1;
        const float* first = b.logits.data() + b.out_first[j] * V;
        const float* last = first + (rows - 1) * V;
        if (s.return_all_logits) {
          r.has_all_logits = true;
          r.all_logits.assign(first, first + rows * V);
        }
        if (s.return_logits) {
          r.has_logits = true;
          r.logits.assign(last, last + V);
        }
        if (s.sample) {
          const uint64_t position = uint64_t(s.start_pos) + uint64_t(n);
          r.token = sample_token(last, int32_t(V), s.sampling, s.recent.data(), int32_t(s.recent.size()), position, m.sampler_);
        }
      }
    }
  });
}

StepResult Model::step(const StepPlan& plan) {
  const Clock::time_point t_start = Clock::now();
  validate(plan);
  ph_ = Phases{};
  StepResult result;
  timed(&ph_.copies, [&] { run_copies(plan.copies); });
  if (!plan.seqs.empty()) {
    StepRun run(*this, plan);
    run.run(&result);
  }
  result.phase_us = {{"copies", ph_.copies},       {"embed", ph_.embed},
                     {"linear", ph_.linear},       {"hostLinear", ph_.host_linear},
                     {"transfer", ph_.transfer},   {"attentionTransfer", ph_.attn_transfer},
                     {"attention", ph_.attention},
                     {"cpuAttention", ph_.cpu_attention}, {"cpuWait", ph_.cpu_wait},
                     {"experts", ph_.experts},     {"logits", ph_.logits},
                     {"sampling", ph_.sampling}};
  result.total_us = us_since(t_start);
  return result;
}

}  // namespace tdm
