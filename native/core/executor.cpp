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
// backends with the same kernels. Under expert offload (experts.h) each active routed expert
// of a layer runs resident, copied or on the CPU, and the rows are combined in one order
// whichever side ran them (routed_experts).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
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

// Regions of BatchBuffers::h_up: index and weight arrays one layer uploads.
constexpr int kExpertUploads = 5;

const char* tier_name(KvTier t) { return t == KvTier::device ? "device" : "host"; }

// The hyperparameters that become op arguments rather than optional weights.
struct Recipe {
  tdm_rope_params rope;  // sliding layers swap in their own base
  int32_t gating;     // tdm_gating
};

Recipe recipe_for(const Hparams& hp) {
  Recipe r{};
  r.rope = rope_params(hp);
  r.gating = hp.expert_gating == ExpertGating::sigmoid          ? TDM_GATING_SIGMOID
             : hp.expert_gating == ExpertGating::softmax_weight ? TDM_GATING_SOFTMAX_WEIGHT
                                                                : TDM_GATING_SOFTMAX;
  return r;
}

// moe_ffn's options for layer weights `lw` (the device's copies or the host's).
tdm_moe_opts moe_opts(const Hparams& hp, const LayerWeights& lw) {
  tdm_moe_opts o{};
  o.glu = hp.swiglu_oai ? TDM_GLU_SWIGLU_OAI : TDM_GLU_SWIGLU;
  o.alpha = hp.swiglu_oai_alpha;
  o.limit = hp.swiglu_oai_limit;
  o.gate_bias = bias_stack(lw.gate_exps_b, hp.n_ff_expert);
  o.up_bias = bias_stack(lw.up_exps_b, hp.n_ff_expert);
  o.down_bias = bias_stack(lw.down_exps_b, hp.n_embd);
  return o;
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
  int64_t streamed_blocks = 0;  // host blocks that device attention reads through the staging
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqPlan& s = plan.seqs[i];
    const std::string at = "sequences[" + std::to_string(i) + "] (seqId " + std::to_string(s.seq_id) + "): ";
    if (!seen_ids.insert(s.seq_id).second) bad(at + "seqId appears twice in one plan");
    if (s.tokens.empty()) bad(at + "tokens is empty");
    for (int32_t t : s.tokens)
      if (t < 0 || t >= hp_.n_vocab) bad(at + "token id " + std::to_string(t) + " is outside [0, " + std::to_string(hp_.n_vocab) + ")");
    if (s.start_pos < 0) bad(at + "startPos must not be negative");
    if (s.decode_steps < 1 || s.decode_steps > kMaxDecodeSteps)
      bad(at + "decodeSteps must be in [1, " + std::to_string(kMaxDecodeSteps) + "]");
    // A burst writes the KV of each draw but the last, in the rounds after the first.
    const int64_t end = int64_t(s.start_pos) + int64_t(s.tokens.size()) + (s.decode_steps - 1);
    if (end > int64_t(INT32_MAX)) bad(at + "positions overflow");
    const int64_t needed = (end + bt - 1) / bt;
    if (int64_t(s.block_table.size()) < needed)
      bad(at + "blockTable has " + std::to_string(s.block_table.size()) + " blocks but positions [0, " + std::to_string(end) +
          ") need " + std::to_string(needed) + " of " + std::to_string(bt) + " tokens");
    const KvPool& p = pool(s.tier);
    const int32_t n_sliding = layout_.sliding_groups();
    if (n_sliding == 0 && !s.sliding_block_table.empty())
      bad(at + "slidingBlockTable is given, but this model keeps every layer in the blockTable's blocks");
    if (n_sliding > 0 && s.sliding_block_table.size() % size_t(n_sliding) != 0)
      bad(at + "slidingBlockTable has " + std::to_string(s.sliding_block_table.size()) + " entries, not one table of equal length for each of the " +
          std::to_string(n_sliding) + " sliding-layer groups");
    if (n_sliding > 0 && int64_t(s.sliding_block_table.size()) / n_sliding < needed)
      bad(at + "slidingBlockTable has " + std::to_string(s.sliding_block_table.size() / size_t(n_sliding)) + " blocks per group but positions [0, " +
          std::to_string(end) + ") need " + std::to_string(needed) + " of " + std::to_string(bt) + " tokens");
    std::unordered_set<int32_t> own;
    for (const LiveBlocks& t : live_blocks(s)) {
      for (int64_t b = t.first; b < needed; ++b) {
        const int32_t id = t.table[b];
        if (id < 0 || id >= p.n_blocks())
          bad(at + "block id " + std::to_string(id) + " is outside the " + tier_name(s.tier) + " tier's " + std::to_string(p.n_blocks()) +
              " blocks");
        if (!own.insert(id).second) bad(at + "lists KV block " + std::to_string(id) + " twice");
      }
      for (int64_t b = std::max<int64_t>(t.first, s.start_pos / bt); b < needed; ++b) {
        if (!writer.emplace(key(s.tier, t.table[b]), i).second)
          bad(at + "writes KV block " + std::to_string(t.table[b]) + " (" + tier_name(s.tier) +
              " tier) that another sequence of this step also writes");
      }
    }
    Backend* ab = attention_backend(s.attention);
    const bool streamed = s.tier == KvTier::host && s.attention == AttnDevice::gpu && streams_host_kv();
    if (streamed) streamed_blocks += needed;
    if (ab != p.backend() && !(ab->host_memory() && p.backend()->host_memory()) && !streamed)
      throw Error(code::unsupported, at + "attention on the " + (s.attention == AttnDevice::cpu ? "CPU" : device_kind_) +
                                         " cannot read KV blocks in the " + tier_name(s.tier) + " tier (" + p.backend()->kind() +
                                         " memory); move the blocks or run its attention where they live");
    if (plan.strategy == Strategy::gpu_only && s.attention != AttnDevice::gpu)
      bad(at + "strategy 'gpu-only' runs every attention on the device, but this sequence asks for the CPU");
    if (s.sub_batch < -1 || s.sub_batch > 1) bad(at + "subBatch must be 0 or 1");
    if (s.sample) validate_sampling_config(s.sampling, int32_t(hp_.n_vocab));
    if (s.n_draft < 0 || s.n_draft >= int64_t(s.tokens.size()))
      bad(at + "numDraft must be in [0, " + std::to_string(s.tokens.size()) + "): the tokens hold the drafts and the one before them");
    if (s.n_draft > 0) {
      if (!s.sample) bad(at + "drafts are verified by sampling, so numDraft needs sample");
      if (s.return_all_logits || s.return_logits || s.return_embeddings) bad(at + "numDraft cannot be combined with returned logits or embeddings");
      if (!s.sampling.allowed.empty()) bad(at + "numDraft cannot be combined with an allowed-token mask (it holds for one draw only)");
      if (s.penalty_window < int64_t(s.recent.size())) bad(at + "penaltyWindow must cover the recentTokens given with drafts");
    }
    if (s.decode_steps > 1) {
      if (!s.sample || s.tokens.size() != 1) bad(at + "decodeSteps above 1 needs a decode: one token, and sample");
      if (s.n_draft > 0 || s.return_all_logits)
        bad(at + "decodeSteps above 1 cannot be combined with drafts or returnAllLogits");
      if (s.return_embeddings) bad(at + "decodeSteps above 1 cannot be combined with returnEmbeddings (a burst's rounds are decodes)");
      // The mask belongs to one draw; the penalty window moves on with each draw.
      if (!s.sampling.allowed.empty()) bad(at + "decodeSteps above 1 cannot be combined with an allowed-token mask");
      if (s.penalty_window < int64_t(s.recent.size())) bad(at + "penaltyWindow must cover the recentTokens given with decodeSteps");
    }
    for (int32_t t : s.recent)
      if (t < 0 || t >= hp_.n_vocab) bad(at + "recentTokens holds " + std::to_string(t) + ", outside [0, " + std::to_string(hp_.n_vocab) + ")");
  }
  if (streamed_blocks > stream_blocks_max_)
    bad("the plan streams " + std::to_string(streamed_blocks) + " host KV blocks to the device (kvTier 'host' with attention 'gpu'), more than the " +
        std::to_string(stream_blocks_max_) + " its staging holds (placement.streamBlocksMax)");
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqPlan& s = plan.seqs[i];
    const int64_t read_end = s.start_pos / bt;  // blocks before the first one this sequence writes
    for (const LiveBlocks& t : live_blocks(s)) {
      for (int64_t b = t.first; b < read_end; ++b) {
        auto it = writer.find(key(s.tier, t.table[b]));
        if (it != writer.end() && it->second != i)
          bad("sequences[" + std::to_string(i) + "] (seqId " + std::to_string(s.seq_id) + "): reads KV block " +
              std::to_string(t.table[b]) + " (" + tier_name(s.tier) + " tier) while sequences[" +
              std::to_string(it->second) + "] writes it");
      }
    }
  }
}

std::vector<Model::LiveBlocks> Model::live_blocks(const SeqPlan& s) const {
  std::vector<LiveBlocks> out{{s.block_table.data(), 0}};
  const int32_t n_sliding = layout_.sliding_groups();
  if (n_sliding > 0) {
    // The first position tokens[0] sees: blocks wholly before it are never read again.
    const int64_t first_pos = std::max<int64_t>(0, int64_t(s.start_pos) - hp_.n_swa + 1);
    const size_t per = s.sliding_block_table.size() / size_t(n_sliding);
    for (int32_t g = 0; g < n_sliding; ++g) out.push_back({s.sliding_block_table.data() + size_t(g) * per, first_pos / layout_.block_tokens});
  }
  return out;
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

void Model::ensure_batch(BatchBuffers& w, int64_t n_tokens, int64_t n_out, int64_t n_head, int64_t n_table, int64_t n_cpu_rows) {
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
      if (experts_ && experts_->config().pregate) {
        w.pregate_x = DeviceBuffer(b, size_t(T * E) * f);
        w.pregate_logits = DeviceBuffer(b, size_t(T * hp_.n_expert) * f);
      }
    }
    w.tokens = DeviceBuffer(b, size_t(T) * sizeof(int32_t));
    w.positions = DeviceBuffer(b, size_t(T) * sizeof(int32_t));
    w.cap_tokens = T;
  }
  if (n_out > w.cap_out) {
    const int64_t N = std::max(n_out, std::min<int64_t>(w.cap_out * 2, n_out + 64));
    w.out_rows = DeviceBuffer(b, size_t(N) * sizeof(int32_t));
    w.out_x = DeviceBuffer(b, size_t(N * hp_.n_embd) * f);
    w.cap_out = N;
  }
  // The head's rows only: rows read for their hidden states alone need no logits.
  if (n_head > w.cap_head) {
    const int64_t N = std::max(n_head, std::min<int64_t>(w.cap_head * 2, n_head + 64));
    w.logits = DeviceBuffer(b, size_t(N * hp_.n_vocab) * f);
    if (best_on_device_) w.best = DeviceBuffer(b, size_t(N * (2 * TDM_TOP_K_MAX + 1)) * sizeof(int32_t));
    w.cap_head = N;
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

void Model::matmuls(std::initializer_list<MatmulOut> outs, const float* x, int64_t n_tokens) {
  const tdm_backend_iface& f = device_->fn();
  const tdm_weight* w[4];
  float* y[4];
  int32_t n = 0;
  const tdm_weight& first = *outs.begin()->w;
  bool grouped = f.matmul_group != nullptr && outs.size() <= 4;
  for (const MatmulOut& o : outs) {
    grouped = grouped && (!has_device() || placement_.on_device(*o.w)) && o.w->type == first.type && o.w->n_cols == first.n_cols;
    if (n < 4) {
      w[n] = o.w;
      y[n++] = o.y;
    }
  }
  if (!grouped) {
    for (const MatmulOut& o : outs) matmul(*o.w, x, n_tokens, o.y);
    return;
  }
  device_->check(f.matmul_group(device_->ctx(), w, n, x, n_tokens, y, nullptr), "matmul_group");
}

void Model::embed(BatchBuffers& b, const int32_t* host_tokens, int64_t n_tokens) {
  const tdm_weight& te = placement_.exec.tok_embd;
  float* X = b.x.as<float>();
  timed(&ph_.embed, [&] {
    if (!has_device() || placement_.on_device(te)) {
      device_->check(device_->fn().get_rows(device_->ctx(), &te, b.tokens.as<int32_t>(), n_tokens, X, nullptr), "get_rows");
    } else {
      const size_t bytes = size_t(n_tokens * hp_.n_embd) * sizeof(float);
      stage_y_.reserve(device_, bytes);
      {
        std::lock_guard<std::mutex> lock(cpu_mu_);
        cpu_->check(cpu_->fn().get_rows(cpu_->ctx(), &te, host_tokens, n_tokens, stage_y_.as<float>(), nullptr), "get_rows");
      }
      to_device(X, stage_y_.as<float>(), bytes);
    }
    if (hp_.embd_scale != 1.0f)
      device_->check(device_->fn().scale(device_->ctx(), X, X, n_tokens * hp_.n_embd, hp_.embd_scale, nullptr), "scale");
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
  const float rope_base = hp_.is_swa(l) ? hp_.rope_freq_base_swa : hp_.rope_freq_base;
  const float rope_scale = hp_.is_swa(l) ? hp_.rope_freq_scale_swa : hp_.rope_freq_scale;
  auto norm = [&](const float* x, const VecF32& wt, float* y, int64_t rows, int64_t cols) {
    device_->check(f.rms_norm(c, x, wt.data, y, rows, cols, hp_.rms_eps, nullptr), "rms_norm");
  };
  auto add_bias = [&](float* y, const VecF32& bias, int64_t cols) {
    device_->check(f.add(c, y, bias.data, y, T, cols, 0, nullptr), "add");
  };
  timed_linear(&ph_.linear, ph_, [&] {
    norm(X, lw.attn_norm, Xn, T, E);
    matmuls({{&lw.wq, Q}, {&lw.wk, K}, {&lw.wv, V}}, Xn, T);
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
    tdm_rope_params rope = rc.rope;
    rope.freq_base = rope_base;
    rope.freq_scale = rope_scale;
    device_->check(f.rope(c, Q, pos, T, int32_t(hp_.n_head), int32_t(hp_.head_dim), int32_t(hp_.rope_dim), &rope, nullptr), "rope");
    device_->check(f.rope(c, K, pos, T, int32_t(hp_.n_head_kv), int32_t(hp_.head_dim), int32_t(hp_.rope_dim), &rope, nullptr),
                   "rope");
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
    matmuls({{&g, G}, {&u, U}}, Xn, T);
    if (hp_.ffn_act == FfnAct::gelu) device_->check(f.geglu(c, G, U, G, T * g.n_rows, nullptr), "geglu");
    else device_->check(f.swiglu(c, G, U, G, T * g.n_rows, nullptr), "swiglu");
    matmul(d, G, T, out);
  };
  // gemma3 norms each block's output before it joins the residual stream.
  auto post_norm = [&](const VecF32& wt, float* y) {
    if (wt) device_->check(f.rms_norm(c, y, wt.data, y, T, E, hp_.rms_eps, nullptr), "rms_norm");
  };
  timed_linear(&ph_.linear, ph_, [&] {
    matmul(lw.wo, b.attn.as<float>(), T, O);
    if (lw.bo) add_to(O, lw.bo.data, E, 0);
    post_norm(lw.attn_post_norm, O);
    add_to(X, O, E, E);
    device_->check(f.rms_norm(c, X, lw.ffn_norm.data, Xn, T, E, hp_.rms_eps, nullptr), "rms_norm");
    if (!hp_.is_moe()) {
      ffn(lw.ffn_gate, lw.ffn_up, lw.ffn_down, O);
      post_norm(lw.ffn_post_norm, O);
      add_to(X, O, E, E);
      return;
    }
    matmul(lw.gate_inp, Xn, T, b.router_logits.as<float>());
    if (lw.gate_inp_b) add_to(b.router_logits.as<float>(), lw.gate_inp_b.data, hp_.n_expert, 0);
    device_->check(f.router(c, b.router_logits.as<float>(), T, int32_t(hp_.n_expert), int32_t(hp_.n_expert_used), rc.gating,
                            hp_.expert_weights_norm ? 1 : 0, 1.0f, b.expert_ids.as<int32_t>(), b.expert_weights.as<float>(), nullptr),
                   "router");
    // The next layer's router on this hidden state, normed as the next layer will norm its own:
    // its likely experts, read with this layer's routing (routed_experts) to order the prefetch.
    if (experts_ && experts_->pregates(l, T)) {
      const LayerWeights& nx = placement_.exec.layers[size_t(l + 1)];
      float* PX = b.pregate_x.as<float>();
      device_->check(f.rms_norm(c, X, nx.ffn_norm.data, PX, T, E, hp_.rms_eps, nullptr), "rms_norm");
      matmul(nx.gate_inp, PX, T, b.pregate_logits.as<float>());
      if (nx.gate_inp_b) add_to(b.pregate_logits.as<float>(), nx.gate_inp_b.data, hp_.n_expert, 0);
    }
  });
  if (!hp_.is_moe()) return;
  const int32_t k_used = int32_t(hp_.n_expert_used);
  auto shared_expert = [&] {
    if (!present(lw.gate_shexp)) return;
    timed_linear(&ph_.linear, ph_, [&] {
      float* S = b.shared.as<float>();
      ffn(lw.gate_shexp, lw.up_shexp, lw.down_shexp, S);
      if (present(lw.gate_inp_shexp)) {
        matmul(lw.gate_inp_shexp, Xn, T, b.shared_gate.as<float>());
        device_->check(f.scale_rows(c, S, b.shared_gate.as<float>(), T, E, TDM_ROW_FN_SIGMOID, nullptr), "scale_rows");
      }
    });
  };
  if (experts_) {
    routed_experts(b, T, l, O, shared_expert);
  } else if (!has_device() || placement_.on_device(lw.gate_exps)) {
    timed(&ph_.experts, [&] {
      const tdm_moe_opts mo = moe_opts(hp_, lw);
      device_->check(f.moe_ffn(c, Xn, T, b.expert_ids.as<int32_t>(), b.expert_weights.as<float>(), k_used, &lw.gate_exps,
                               &lw.up_exps, &lw.down_exps, &mo, O, nullptr),
                     "moe_ffn");
    });
    shared_expert();
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
      // The biases the host reads are the file's (lw's are the device's copies).
      const tdm_moe_opts mo = moe_opts(hp_, weights_.layers[size_t(l)]);
      cpu_->check(cpu_->fn().moe_ffn(cpu_->ctx(), stage_x_.as<float>(), T, stage_ids_.as<int32_t>(), stage_w_.as<float>(), k_used,
                                     &lw.gate_exps, &lw.up_exps, &lw.down_exps, &mo, stage_y_.as<float>(), nullptr),
                  "moe_ffn");
    });
    timed(&ph_.transfer, [&] { to_device(O, stage_y_.as<float>(), xb); });
    shared_expert();
  }
  timed_linear(&ph_.linear, ph_, [&] {
    if (present(lw.gate_shexp)) add_to(O, b.shared.as<float>(), E, E);
    add_to(X, O, E, E);
  });
}

void Model::ensure_expert_buffers(BatchBuffers& w, int64_t n_slots, int64_t n_tokens) {
  const size_t f = sizeof(float);
  const int64_t E = hp_.n_embd;
  if (n_slots > w.cap_slots) {
    const int64_t S = std::max(n_slots, std::min<int64_t>(w.cap_slots * 2, n_slots + 512));
    Backend* d = device_;
    // Earlier copies from the staging being replaced may still be queued.
    if (device_async_) d->check(d->fn().stream_sync(d->ctx(), nullptr), "stream_sync");
    for (DeviceBuffer* x : {&w.ex_x, &w.ex_z}) *x = DeviceBuffer(d, size_t(S * E) * f);
    w.ex_ones = DeviceBuffer(d, size_t(S) * 4);
    w.ex_meta = DeviceBuffer(d, size_t(S) * 4 * kExpertUploads);
    for (HostBuffer* x : {&w.h_xc, &w.h_yc}) x->reserve(d, size_t(S * E) * f);
    for (HostBuffer* x : {&w.h_ids, &w.h_w, &w.h_cids, &w.h_ones}) x->reserve(d, size_t(S) * 4);
    w.h_up.reserve(d, size_t(S) * 4 * kExpertUploads);
    w.h_defer.reserve(d, size_t(S) * 4 * size_t(hp_.n_layer));
    std::fill(w.h_ones.as<float>(), w.h_ones.as<float>() + S, 1.0f);
    to_device(w.ex_ones.data(), w.h_ones.data(), size_t(S) * f);
    w.cap_slots = S;
  }
  w.h_x.reserve(device_, size_t(std::max<int64_t>(n_tokens, 1) * E) * f);
  if (experts_->config().pregate) w.h_pregate.reserve(device_, size_t(std::max<int64_t>(n_tokens, 1) * hp_.n_expert) * f);
}

void Model::finish_expert_counts() {
  if (ex_deferred_.empty()) return;
  if (device_async_) device_->check(device_->fn().stream_sync(device_->ctx(), nullptr), "stream_sync");
  std::vector<uint8_t> seen(size_t(hp_.n_expert));
  for (const DeferredCount& d : ex_deferred_) {
    std::fill(seen.begin(), seen.end(), uint8_t(0));
    int64_t active = 0;
    for (int64_t i = 0; i < d.n; ++i) {
      const int32_t e = d.ids[i];
      if (e < 0 || e >= hp_.n_expert || seen[size_t(e)]) continue;
      seen[size_t(e)] = 1;
      active++;
    }
    ex_stats_.hits += active;
    ex_stats_.hit_rows += d.n;
    ex_stats_.device_experts += active;
    ex_stats_.device_rows += d.n;
  }
  ex_deferred_.clear();
}

void Model::routed_experts(BatchBuffers& b, int64_t T, int64_t l, float* O, const std::function<void()>& beside) {
  ExpertOffload& xo = *experts_;
  ExpertStats& st = ex_stats_;
  const tdm_backend_iface& f = device_->fn();
  tdm_backend_ctx* c = device_->ctx();
  const int32_t k = int32_t(hp_.n_expert_used);
  const int64_t E = hp_.n_embd, n_exp = hp_.n_expert, S = T * k;
  const size_t row = size_t(E) * sizeof(float);
  float* Xn = b.xn.as<float>();
  ensure_expert_buffers(b, S, T);

  // A whole layer resident in consecutive slots, with no scores to keep: the device runs it on
  // its own routing without the host stopping for it; the counters read the routing after the step.
  const int32_t base = xo.contiguous_base(l);
  if (base >= 0 && !xo.needs_scores()) {
    timed(&ph_.experts, [&] {
      int32_t* ids_copy = b.h_defer.as<int32_t>() + size_t(l) * size_t(b.cap_slots);
      device_->check(f.copy_d2h(c, ids_copy, b.expert_ids.data(), size_t(S) * 4, nullptr), "copy_d2h");
      ex_deferred_.push_back(DeferredCount{ids_copy, S});
      const ExpertViews dv = xo.device_views(l, base, n_exp);
      device_->check(f.moe_ffn(c, Xn, T, b.expert_ids.as<int32_t>(), b.expert_weights.as<float>(), k, &dv.gate, &dv.up, &dv.down, &dv.opts, O, nullptr),
                     "moe_ffn");
    });
    beside();
    return;
  }
  // The small index and weight arrays this layer uploads: regions of S entries, staged in
  // pinned memory and sent in one copy (the last region stays on the host).
  auto up_region = [&](int i) { return b.h_up.as<int32_t>() + size_t(i) * size_t(S); };
  auto dev_region = [&](int i) { return b.ex_meta.as<int32_t>() + size_t(i) * size_t(S); };

  // The routing comes down, and unless the whole layer is resident the hidden states with it
  // (a CPU expert may need any row), under one synchronisation. On an async device the shared
  // expert (it reads only the hidden states) is queued behind the copies, so that the device
  // computes it while the host waits for the routing and plans the layer.
  const bool need_x = !xo.layer_resident(l);
  const bool pregate = xo.pregates(l, T);
  timed(&ph_.transfer, [&] {
    device_->check(f.copy_d2h(c, b.h_ids.data(), b.expert_ids.data(), size_t(S) * 4, nullptr), "copy_d2h");
    device_->check(f.copy_d2h(c, b.h_w.data(), b.expert_weights.data(), size_t(S) * 4, nullptr), "copy_d2h");
    if (need_x) device_->check(f.copy_d2h(c, b.h_x.data(), Xn, size_t(T) * row, nullptr), "copy_d2h");
    if (pregate)
      device_->check(f.copy_d2h(c, b.h_pregate.data(), b.pregate_logits.data(), size_t(T * n_exp) * sizeof(float), nullptr), "copy_d2h");
    if (device_async_) device_->check(f.event_record(c, routing_copied_, nullptr), "event_record");
  });
  bool beside_queued = false;
  if (device_async_) {
    beside();
    beside_queued = true;
    timed(&ph_.transfer, [&] { device_->check(f.event_sync(c, routing_copied_), "event_sync"); });
  }
  auto run_beside = [&] {
    if (!beside_queued) beside();
  };
  // The routing is here: the host waited this long since the previous layer's experts.
  if (l > 0 && gap_from_layer_ == l - 1) xo.note_gap(us_since(gap_from_));
  gap_from_layer_ = -1;
  if (need_x) st.activation_bytes += T * int64_t(row);
  const int32_t* ids = b.h_ids.as<int32_t>();
  const float* wts = b.h_w.as<float>();
  std::vector<int32_t> rows(size_t(n_exp), 0);
  std::vector<double> prob(size_t(n_exp), 0.0);
  for (int64_t i = 0; i < S; ++i) {
    if (ids[i] < 0 || ids[i] >= n_exp) throw Error("TDM_INTERNAL", "the router chose expert " + std::to_string(ids[i]));
    rows[size_t(ids[i])]++;
    prob[size_t(ids[i])] += double(wts[i]);
  }
  xo.next_layer();
  xo.record(l, rows, prob);

  // Where each active expert runs: its cache slot (>= 0) or the CPU (-1).
  std::vector<int32_t> site(size_t(n_exp), -1);
  std::vector<int32_t> missing;
  bool wait_admitted = false;
  for (int64_t e = 0; e < n_exp; ++e) {
    if (rows[size_t(e)] == 0) continue;
    const int32_t s = xo.slot_of(l, e);
    if (s >= 0) {
      site[size_t(e)] = s;
      xo.protect(s);
      wait_admitted = wait_admitted || xo.pending(s);
      if (xo.take_prefetched(s)) st.prefetch_hits++;
      st.hits++;
      st.hit_rows += rows[size_t(e)];
    } else {
      st.misses++;
      missing.push_back(int32_t(e));
    }
  }
  // Which missing experts are copied (n* threshold or makespan); the heaviest claim slots first.
  std::stable_sort(missing.begin(), missing.end(), [&](int32_t x, int32_t y) { return rows[size_t(x)] > rows[size_t(y)]; });
  double resident_us = 0;
  for (int64_t e = 0; e < n_exp; ++e)
    if (site[size_t(e)] >= 0) resident_us += xo.device_us(rows[size_t(e)]);
  const std::vector<uint8_t> copy = xo.copy_choice(l, missing, rows, resident_us);
  const bool will_copy = std::find(copy.begin(), copy.end(), uint8_t(1)) != copy.end();
  // A slot an admission copy (expert stream) fills is read, or refilled, only after that copy.
  if (xo.any_pending() && (wait_admitted || will_copy)) {
    device_->check(f.stream_wait(c, nullptr, expert_copied_), "stream_wait");
    xo.clear_pending();
  }
  // Steps of several tokens (prefill) stream their copies through two of the cache's slots
  // (SlabStream): the next expert's slab moves while the device runs the one before, each
  // expert waits only for its own slab, and a small cache does not cap how many experts reach
  // the device. Lightest first, so that the heaviest stay cached. One-token steps copy in place.
  std::vector<int32_t> streamed;                // copied experts in compute order
  std::vector<int32_t> sq(size_t(n_exp), -1);   // each expert's index in `streamed`
  int32_t ring[SlabStream::kBuffers] = {};
  size_t n_ring = 0;
  int64_t copied_now = 0;  // one-token copies made in place
  if (will_copy && T > 1) {
    for (size_t i = missing.size(); i-- > 0;)
      if (copy[i]) streamed.push_back(missing[i]);
    for (int32_t e : streamed) {
      if (n_ring == size_t(SlabStream::kBuffers)) break;
      const int32_t s = xo.take_slot(l, e, 0.0, &st);  // forced: the copy is needed now
      if (s < 0) break;
      xo.protect(s);
      ring[n_ring++] = s;
    }
    if (n_ring == 0) streamed.clear();
    for (size_t q = 0; q < streamed.size(); ++q) {
      const int32_t e = streamed[q];
      const int32_t s = ring[q % n_ring];
      if (q >= n_ring) xo.retake(s, l, e, &st);
      site[size_t(e)] = s;
      sq[size_t(e)] = int32_t(q);
      st.copies++;
      st.prefill_copies++;
      st.copy_bytes += int64_t(xo.slab_bytes(l));
      st.prefill_copy_bytes += int64_t(xo.slab_bytes(l));
    }
  } else {
    for (size_t i = 0; i < missing.size() && will_copy; ++i) {
      if (!copy[i]) continue;
      const int32_t e = missing[i];
      const int32_t s = xo.take_slot(l, e, 0.0, &st);  // forced: the copy is needed now
      if (s < 0) break;
      timed(&ph_.expert_copies, [&] { to_device(xo.slot_data(s), xo.host_slab(l, e), xo.slab_bytes(l)); });
      xo.protect(s);
      site[size_t(e)] = s;
      copied_now++;
      st.copies++;
      st.copy_bytes += int64_t(xo.slab_bytes(l));
    }
  }
  int64_t n_dev = 0, n_cpu = 0, e_cpu = 0;
  double cpu_pred_us = 0;  // the CPU experts' predicted time (0 without costs)
  for (int64_t e = 0; e < n_exp; ++e) {
    if (rows[size_t(e)] == 0) continue;
    if (site[size_t(e)] >= 0) {
      st.device_experts++;
      n_dev += rows[size_t(e)];
    } else {
      st.cpu_experts++;
      e_cpu++;
      n_cpu += rows[size_t(e)];
      cpu_pred_us += xo.cpu_us(rows[size_t(e)]);
    }
  }
  st.device_rows += n_dev;
  st.cpu_rows += n_cpu;
  if (n_cpu > 0) {
    st.cpu_calls++;
    cpu_pred_us += xo.cpu_call_us();
  }

  const ExpertConfig& cfg = xo.config();
  // Copies for later use run beside the compute: on an async device on the expert stream, after
  // the work queued so far (which may still read the slot), marked pending until waited for.
  auto background_copy = [&](int64_t layer, int32_t e, int32_t s) {
    timed(&ph_.expert_copies, [&] {
      if (!device_async_) {
        to_device(xo.slot_data(s), xo.host_slab(layer, e), xo.slab_bytes(layer));
        return;
      }
      device_->check(f.event_record(c, expert_queued_, nullptr), "event_record");
      device_->check(f.stream_wait(c, expert_stream_, expert_queued_), "stream_wait");
      device_->check(f.copy_h2d(c, xo.slot_data(s), xo.host_slab(layer, e), xo.slab_bytes(layer), expert_stream_), "copy_h2d");
      device_->check(f.event_record(c, expert_copied_, expert_stream_), "event_record");
      xo.set_pending(s);
    });
    xo.protect(s);
    st.copy_bytes += int64_t(xo.slab_bytes(layer));
  };
  // Prefetch of n of the next layer's missing experts. With the pregate, the ones its router
  // picks on this layer's hidden state go first, taking the lowest-scored slot whatever its
  // score (they are wanted now), then the highest-scored by the admission margin.
  auto prefetch_next = [&](int32_t n_prefetch) {
    if (n_prefetch <= 0) return;
    std::vector<int32_t> predicted(size_t(n_exp), 0);  // the pregate's top-k picks per expert, over the rows
    if (pregate) predict_next(b.h_pregate.as<float>(), T, &predicted);
    std::vector<int32_t> cand;
    for (int64_t e = 0; e < n_exp; ++e) {
      const int32_t s = xo.slot_of(l + 1, e);
      if (s >= 0 && predicted[size_t(e)] > 0) xo.protect(s);  // wanted by the next layer: no victim
      if (s < 0 && (predicted[size_t(e)] > 0 || xo.score(l + 1, e) > 0)) cand.push_back(int32_t(e));
    }
    std::stable_sort(cand.begin(), cand.end(), [&](int32_t x, int32_t y) {
      if (predicted[size_t(x)] != predicted[size_t(y)]) return predicted[size_t(x)] > predicted[size_t(y)];
      return xo.score(l + 1, x) > xo.score(l + 1, y);
    });
    int32_t fetched = 0;
    for (int32_t e : cand) {
      if (fetched >= n_prefetch) break;
      const bool wanted = predicted[size_t(e)] > 0;
      const int32_t s = xo.take_slot(l + 1, e, wanted ? 0.0 : cfg.admit_margin, &st);
      if (s < 0) break;
      background_copy(l + 1, e, s);
      xo.mark_prefetched(s);
      st.prefetches++;
      fetched++;
    }
  };
  // The early prefetch (ExpertConfig::prefetch_early) starts now, queued behind this layer's own
  // copies, and fills the link until the next layer's routing: this layer's expert time and the
  // measured gap, less what its copies take. The slots it takes are none this layer reads (they
  // are protected), and on an async device the copies wait for the work queued before them.
  const bool early = cfg.prefetch_early && l + 1 < hp_.n_layer && streamed.empty() && xo.may_copy();
  if (early) {
    // Without costs a copy's time is +inf and prefetch_fit ignores the window.
    const double committed = copied_now > 0 ? double(copied_now) * xo.copy_us(l) : 0.0;
    const double busy = std::max(cpu_pred_us, committed + resident_us);
    prefetch_next(xo.prefetch_fit(l + 1, busy - committed + xo.gap_us()));
  }

  // The first fills start now, beside the host's bookkeeping and the resident experts' compute.
  SlabStream* ss = streamed.empty() ? nullptr : &xo.slab_stream(expert_stream_);
  auto fill = [&](size_t q) {
    ss->issue(int(q % n_ring), xo.slot_data(ring[q % n_ring]), xo.host_slab(l, streamed[q]), xo.slab_bytes(l));
  };
  // Fills in flight read the slabs and write the slots: a failed layer waits for them.
  struct DrainOnThrow {
    SlabStream* s;
    ~DrainOnThrow() {
      if (s != nullptr) s->drain();
    }
  } drain_on_throw{ss};
  if (ss != nullptr) {
    timed(&ph_.expert_copies, [&] {
      ss->begin();
      for (size_t q = 0; q < n_ring; ++q) fill(q);
    });
  }

  if (n_cpu == 0 && streamed.empty()) {
    // Every active expert on the device: one grouped FFN over the slot ids, combining as it goes.
    timed(&ph_.experts, [&] {
      int32_t* slot_ids = up_region(0);
      for (int64_t i = 0; i < S; ++i) slot_ids[i] = site[size_t(ids[i])];
      to_device(dev_region(0), slot_ids, size_t(S) * 4);
      const ExpertViews dv = xo.device_views(l);
      device_->check(f.moe_ffn(c, Xn, T, dev_region(0), b.expert_weights.as<float>(), k, &dv.gate, &dv.up, &dv.down, &dv.opts, O, nullptr),
                     "moe_ffn");
    });
    run_beside();
  } else {
    // Row lists: output rows of device-run choices first, then the CPU's, each in (token, choice) order.
    std::vector<int32_t> pos(static_cast<size_t>(S));
    int32_t* dev_rows = up_region(0);
    int32_t* dev_ids = up_region(1);
    int32_t* cpu_rows = up_region(kExpertUploads - 1);
    int32_t* cids = b.h_cids.as<int32_t>();
    int64_t nd = 0, nc = 0;
    // Device rows: the resident experts' first, then each streamed expert's, in stream order
    // (rows first[q] to first[q + 1] run once its slab is in).
    std::vector<int64_t> first(streamed.size() + 1, 0);
    for (int64_t i = 0; i < S; ++i) {
      const int32_t s = site[size_t(ids[i])];
      if (s < 0) continue;
      if (sq[size_t(ids[i])] >= 0) {
        first[size_t(sq[size_t(ids[i])]) + 1]++;
        continue;
      }
      pos[size_t(i)] = int32_t(nd);
      dev_rows[nd] = int32_t(i / k);
      dev_ids[nd++] = s;
    }
    const int64_t n_res = nd;
    first[0] = n_res;
    for (size_t q = 0; q < streamed.size(); ++q) first[q + 1] += first[q];
    std::vector<int64_t> next(first.begin(), first.end() - 1);
    for (int64_t i = 0; i < S && !streamed.empty(); ++i) {
      const int32_t q = sq[size_t(ids[i])];
      if (q < 0) continue;
      const int64_t p = next[size_t(q)]++;
      pos[size_t(i)] = int32_t(p);
      dev_rows[p] = int32_t(i / k);
      dev_ids[p] = site[size_t(ids[i])];
    }
    nd = first.back();
    for (int64_t i = 0; i < S; ++i) {
      if (site[size_t(ids[i])] >= 0) continue;
      pos[size_t(i)] = int32_t(nd + nc);
      cids[nc] = ids[i];
      cpu_rows[nc++] = int32_t(i / k);
    }
    const tdm_weight xrows = f32_rows(Xn, T, E);
    // With no device expert the CPU combines too (moe_ffn over the tokens with their weights).
    const bool cpu_only = n_dev == 0;
    const float* hx = b.h_x.as<float>();
    float* hxc = b.h_xc.as<float>();
    if (!cpu_only) {
      for (int64_t r = 0; r < n_cpu; ++r) std::memcpy(hxc + r * E, hx + int64_t(cpu_rows[r]) * E, row);
      // Choice-major output rows and weights for the combination: row pos[t][j] of the outputs for choice j of token t.
      int32_t* pos_t = up_region(2);
      float* w_t = reinterpret_cast<float*>(up_region(3));
      for (int64_t t = 0; t < T; ++t)
        for (int32_t j = 0; j < k; ++j) {
          pos_t[j * T + t] = pos[size_t(t * k + j)];
          w_t[j * T + t] = wts[t * k + j];
        }
    }
    double cpu_us = 0;
    const ExpertViews hv = xo.host_views(l);
    auto cpu_experts = [this, hv, hx, hxc, n_cpu, cpu_only, T, k, &b, &cpu_us] {
      if (n_cpu == 0) return;
      std::lock_guard<std::mutex> lock(cpu_mu_);
      const Clock::time_point t0 = Clock::now();
      if (cpu_only)
        cpu_->check(cpu_->fn().moe_ffn(cpu_->ctx(), hx, T, b.h_ids.as<int32_t>(), b.h_w.as<float>(), k, &hv.gate, &hv.up, &hv.down,
                                       &hv.opts, b.h_yc.as<float>(), nullptr),
                    "moe_ffn");
      else
        cpu_->check(cpu_->fn().moe_ffn(cpu_->ctx(), hxc, n_cpu, b.h_cids.as<int32_t>(), b.h_ones.as<float>(), 1, &hv.gate, &hv.up,
                                       &hv.down, &hv.opts, b.h_yc.as<float>(), nullptr),
                    "moe_ffn");
      cpu_us = us_since(t0);
    };
    auto device_experts = [&] {
      if (cpu_only) return;
      double copy_us = 0;  // waiting for fills and queuing refills, counted as copies
      timed(&ph_.experts, [&] {
        const ExpertViews dv = xo.device_views(l);
        to_device(dev_region(0), up_region(0), size_t(S) * 4 * (kExpertUploads - 1));
        device_->check(f.get_rows(c, &xrows, dev_region(0), n_dev, b.ex_x.as<float>(), nullptr), "get_rows");
        // Gathered rows [r0, r0 + n), one choice each, through the slots their ids name.
        auto run_rows = [&](int64_t r0, int64_t n) {
          if (n == 0) return;
          device_->check(f.moe_ffn(c, b.ex_x.as<float>() + r0 * E, n, dev_region(1) + r0, b.ex_ones.as<float>(), 1, &dv.gate,
                                   &dv.up, &dv.down, &dv.opts, b.ex_z.as<float>() + r0 * E, nullptr),
                         "moe_ffn");
          if (ss != nullptr) ss->computed();
        };
        run_rows(0, n_res);
        for (size_t q = 0; q < streamed.size(); ++q) {
          const int buf = int(q % n_ring);
          Clock::time_point t0 = Clock::now();
          if (ss->acquire(buf)) st.overlapped_copies++;
          copy_us += us_since(t0);
          run_rows(first[q], first[q + 1] - first[q]);
          ss->release(buf);
          if (q + n_ring < streamed.size()) {
            t0 = Clock::now();
            fill(q + n_ring);
            copy_us += us_since(t0);
          }
        }
      });
      ph_.experts -= copy_us;
      ph_.expert_copies += copy_us;
    };
    if (device_async_ || !worker_) {
      // The device's work is queued first and runs while this thread does the CPU experts.
      device_experts();
      run_beside();
      cpu_experts();
    } else {
      // A synchronous device blocks this thread: the CPU experts go to the worker beside it.
      const CpuWorker::Ticket ticket = worker_->submit(cpu_experts);
      try {
        device_experts();
        run_beside();
      } catch (...) {
        worker_->drain();
        throw;
      }
      timed(&ph_.expert_wait, [&] { worker_->wait(ticket); });
    }
    ph_.cpu_experts += cpu_us;
    if (n_cpu > 0) ex_cpu_calls_.insert(ex_cpu_calls_.end(), {double(e_cpu), double(n_cpu), cpu_us});
    const int64_t up_rows = cpu_only ? T : n_cpu;
    timed(&ph_.transfer, [&] { to_device(cpu_only ? O : b.ex_z.as<float>() + n_dev * E, b.h_yc.data(), size_t(up_rows) * row); });
    st.activation_bytes += up_rows * int64_t(row);

    // O = sum over choices j, in j order, of weight * output row: each product rounded, then
    // added, as moe_ffn combines, so the result does not depend on where a row ran.
    if (!cpu_only) {
      timed(&ph_.experts, [&] {
        const int32_t* pos_d = dev_region(2);
        const float* w_d = reinterpret_cast<const float*>(dev_region(3));
        device_->check(f.moe_combine(c, b.ex_z.as<float>(), S, pos_d, w_d, T, k, E, O, nullptr), "moe_combine");
      });
    }
  }
  drain_on_throw.s = nullptr;  // every fill was waited for before its expert ran

  gap_from_ = Clock::now();
  gap_from_layer_ = l;
  if (!xo.may_copy()) return;
  // CPU-run experts that now outscore a resident one (by the margin) take its slot for later steps.
  if (cfg.admit_per_layer > 0) {
    std::vector<int32_t> cand;
    for (int32_t e : missing)
      if (site[size_t(e)] < 0) cand.push_back(e);
    std::stable_sort(cand.begin(), cand.end(), [&](int32_t x, int32_t y) { return xo.score(l, x) > xo.score(l, y); });
    int32_t admitted = 0;
    for (int32_t e : cand) {
      if (admitted >= cfg.admit_per_layer) break;
      const int32_t s = xo.take_slot(l, e, cfg.admit_margin, &st);
      if (s < 0) break;
      background_copy(l, e, s);
      st.admissions++;
      admitted++;
    }
  }
  // Without the early prefetch, the prefetch follows this layer's experts when the layer copied
  // nothing for its own compute (the link would otherwise idle while the device works).
  if (!early) prefetch_next(l + 1 < hp_.n_layer && !will_copy ? xo.prefetch_count(l + 1, resident_us, cpu_pred_us) : 0);
}

void Model::predict_next(const float* logits, int64_t T, std::vector<int32_t>* predicted) const {
  const int64_t n_exp = hp_.n_expert, k = hp_.n_expert_used;
  std::vector<int32_t> order(static_cast<size_t>(n_exp));
  for (int64_t t = 0; t < T; ++t) {
    const float* r = logits + t * n_exp;
    std::iota(order.begin(), order.end(), 0);
    // Gating functions are monotone, so the top-k logits are the top-k choices.
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [r](int32_t x, int32_t y) { return r[x] > r[y]; });
    for (int64_t j = 0; j < k; ++j) (*predicted)[size_t(order[size_t(j)])]++;
  }
}

Model::HeadOut Model::lm_head(BatchBuffers& b, int64_t T, int64_t n_out, int32_t best_k) {
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
  if (hp_.final_softcap > 0.0f)
    device_->check(f.softcap(c, b.logits.as<float>(), b.logits.as<float>(), n_out * hp_.n_vocab, hp_.final_softcap, nullptr), "softcap");
  HeadOut out;
  out.logits = b.logits.as<float>();
  if (device_->host_memory()) {
    // Read where they were written: copying 16 rows of a 128k vocabulary costs a millisecond.
    if (device_async_) device_->check(device_->fn().stream_sync(device_->ctx(), nullptr), "stream_sync");
  } else {
    bool whole_rows = best_k <= 0;
    if (!whole_rows) {
      // Each row's best and a flag (8 bytes a candidate, 4 a row) instead of the row.
      float* vals = b.best.as<float>();
      int32_t* ids = reinterpret_cast<int32_t*>(vals + n_out * best_k);
      int32_t* flags = ids + n_out * best_k;
      device_->check(f.top_k_rows(c, b.logits.as<float>(), n_out, hp_.n_vocab, best_k, vals, ids, flags, nullptr), "top_k_rows");
      const size_t bytes = size_t(n_out * (2 * best_k + 1)) * sizeof(int32_t);
      b.h_best.reserve(device_, bytes);
      to_host(b.h_best.data(), vals, bytes);
      out.best_vals = b.h_best.as<float>();
      out.best_ids = reinterpret_cast<const int32_t*>(out.best_vals + n_out * best_k);
      out.best_k = best_k;
      out.logits = nullptr;
      const int32_t* h_flags = out.best_ids + n_out * best_k;
      // A NaN, +Infinity or an all -Infinity row: the sampler reads the rows and says which.
      whole_rows = std::any_of(h_flags, h_flags + n_out, [](int32_t x) { return x != 0; });
    }
    if (whole_rows) {
      // Page-locked, so that the copy runs at the link's speed rather than through staging.
      const size_t bytes = size_t(n_out * hp_.n_vocab) * sizeof(float);
      b.h_logits.reserve(device_, bytes);
      to_host(b.h_logits.data(), b.logits.data(), bytes);
      out = HeadOut{};
      out.logits = b.h_logits.as<float>();
    }
  }
  ph_.logits += us_since(t0) - (ph_.host_linear + ph_.transfer - other);
  return out;
}

const float* Model::final_hidden(BatchBuffers& b, int64_t T, int64_t first, int64_t n) {
  const tdm_backend_iface& f = device_->fn();
  tdm_backend_ctx* c = device_->ctx();
  const int64_t E = hp_.n_embd;
  const tdm_weight xrows = f32_rows(b.x.as<float>(), T, E);
  // Rows [first, first + n) of out_x: lm_head writes the rows before them.
  float* XH = b.out_x.as<float>() + first * E;
  const Clock::time_point t0 = Clock::now();
  device_->check(f.get_rows(c, &xrows, b.out_rows.as<int32_t>() + first, n, XH, nullptr), "get_rows");
  device_->check(f.rms_norm(c, XH, placement_.exec.output_norm.data, XH, n, E, hp_.rms_eps, nullptr), "rms_norm");
  const float* out = XH;
  if (device_->host_memory()) {
    if (device_async_) device_->check(device_->fn().stream_sync(device_->ctx(), nullptr), "stream_sync");
  } else {
    const size_t bytes = size_t(n * E) * sizeof(float);
    b.h_hidden.reserve(device_, bytes);
    to_host(b.h_hidden.data(), XH, bytes);
    out = b.h_hidden.as<float>();
  }
  ph_.hidden += us_since(t0);
  return out;
}

void Model::sample_all(const std::vector<Draw>& draws, int64_t n_vocab) {
  auto draw = [&](const Draw& d, SamplerScratch& scratch) {
    const SeqPlan& s = *d.seq;
    const uint64_t position = uint64_t(s.start_pos) + uint64_t(s.tokens.size());
    if (d.best_k > 0) {
      std::vector<Candidate>& best = scratch.best;
      best.resize(size_t(d.best_k));
      for (int32_t j = 0; j < d.best_k; ++j) best[size_t(j)] = Candidate{d.best_vals[j], d.best_ids[j]};
      d.result->token = sample_from_best(best.data(), d.best_k, s.sampling, position, scratch);
      return;
    }
    if (s.n_draft == 0) {
      d.result->token = sample_token(d.logits, int32_t(n_vocab), s.sampling, s.recent.data(), int32_t(s.recent.size()), position, scratch);
      return;
    }
    // Row j draws the token at position - n_draft + j, with the penalties over the window that
    // ends at guess j - 1; a draw that differs from its guess ends the run.
    const size_t guesses = s.tokens.size() - size_t(s.n_draft);
    std::vector<int32_t> window(s.recent);
    for (int32_t j = 0; j <= s.n_draft; ++j) {
      const size_t cut = window.size() > size_t(s.penalty_window) ? window.size() - size_t(s.penalty_window) : 0;
      const int32_t tok = sample_token(d.logits + int64_t(j) * n_vocab, int32_t(n_vocab), s.sampling, window.data() + cut,
                                       int32_t(window.size() - cut), position - uint64_t(s.n_draft) + uint64_t(j), scratch);
      d.result->tokens.push_back(tok);
      if (j == s.n_draft || tok != s.tokens[guesses + size_t(j)]) break;
      if (s.penalty_window > 0) window.push_back(tok);
    }
    d.result->token = d.result->tokens.back();
  };
  // One sequence, or one thread: no hand-off. Otherwise the sequences are spread over a pool
  // that sleeps between steps (each draw is a pure function of its row, seed and position, so
  // the tokens do not depend on which thread draws them).
  if (samplers_.empty()) samplers_.resize(1);
  if (draws.size() < 2 || sample_threads_ < 2) {
    for (const Draw& d : draws) draw(d, samplers_[0]);
    return;
  }
  if (!sample_pool_) {
    sample_pool_ = std::make_unique<cpu::ThreadPool>(sample_threads_, /*spin=*/false);
    samplers_.resize(size_t(sample_pool_->size()));
  }
  // A few passes over the row (or its best) each: about 8 units of the pool's work measure per logit.
  double work = 0;
  for (const Draw& d : draws) work += 8.0 * double(d.best_k > 0 ? d.best_k : n_vocab);
  sample_pool_->run(int64_t(draws.size()), [&](int64_t i, int th) { draw(draws[size_t(i)], samplers_[size_t(th)]); }, work);
}

// One step in flight: its sub-batches and the CPU attention jobs that run beside the device.
class StepRun {
 public:
  StepRun(Model& m, const StepPlan& plan) : m_(m), plan_(plan) {}

  // A failed step must not return while a worker job still reads its buffers, or a gather
  // still writes the staging buffer that the next step reuses.
  ~StepRun() {
    if (m_.worker_ && submitted_) m_.worker_->drain();
    if (gathered_) (void)m_.device_->fn().stream_sync(m_.device_->ctx(), m_.stream_stream_);
  }

  void run(StepResult* result);

 private:
  // One sub-batch: its sequences in row order (device-attention rows first, then the rows
  // whose attention runs on the CPU), the block tables each side reads, where logits land.
  struct Group {
    KvTier tier;
    std::vector<tdm_attn_seq> seqs;    // first_row relative to the side's first row
    std::vector<int64_t> table_off;    // each sequence's table in the side's table array
    // The same sequences with each sliding group's tables (KvLayout::sliding_groups()).
    std::vector<std::vector<tdm_attn_seq>> sliding;
    std::vector<std::vector<int64_t>> sliding_off;
    // Streamed host KV (a host-tier group on the device's side): `seqs` (and `sliding`) read
    // the staging buffer's blocks, and these, the same sequences with their host blocks, store
    // the new rows.
    bool streamed = false;
    std::vector<tdm_attn_seq> stored;
    std::vector<int64_t> stored_off;
    std::vector<std::vector<tdm_attn_seq>> stored_sliding;
    std::vector<std::vector<int64_t>> stored_sliding_off;
    // The sequences as layer l's KV group sees them.
    const std::vector<tdm_attn_seq>& for_layer(const KvLayout& kl, int64_t l) const {
      const int32_t g = kl.group_of[size_t(l)];
      return g == 0 ? seqs : sliding[size_t(g - 1)];
    }
    const std::vector<tdm_attn_seq>& stored_for_layer(const KvLayout& kl, int64_t l) const {
      const int32_t g = kl.group_of[size_t(l)];
      return g == 0 ? stored : stored_sliding[size_t(g - 1)];
    }
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
    // out_rows holds the rows the head reads, then those whose hidden states are returned
    // (return_embeddings) from n_head_rows on; hidden_first: per entry of seqs, its first of those, or -1.
    int64_t n_head_rows = 0;
    std::vector<int64_t> hidden_first;
    const float* hidden = nullptr;     // final_hidden's rows (valid for the step)
    std::vector<int32_t> stream_src;   // streamed sequences' host blocks, in staging order
    std::vector<int32_t> stream_dst;   // 0, 1, ...: their staging blocks
    // The same for each sliding group's blocks (KvLayout::sliding_groups()): only those in the
    // window, so never more than stream_src's (a slot holds stream_src.size() blocks).
    std::vector<std::vector<int32_t>> sliding_src, sliding_dst;
    int64_t staging_first = 0;         // streamed blocks of the batches before: its region's start
    Model::HeadOut head;               // lm_head's: host-readable logits or rows' best (valid for the step)
    CpuWorker::Ticket pending = 0;     // the CPU attention job in flight
    double cpu_us = 0;                 // CPU attention time, written by its jobs
  };

  bool cpu_side(const SeqPlan& s) const { return m_.has_device() && s.attention == AttnDevice::cpu; }
  // How many of each output row's best logits the batch's sampling needs, when the device can
  // cut its rows to them and every row is one sampled row that needs no more; else 0.
  int32_t best_needed(const Batch& b) const;
  void split();
  void lay_out(Batch& b);
  void start_attention(Batch& b, int64_t l);
  void cpu_attention(Batch& b, int64_t l);
  void finish_attention(Batch& b);
  bool streamed(const SeqPlan& s) const { return s.tier == KvTier::host && !cpu_side(s) && m_.streams_host_kv(); }
  // Layer l's K and V of the streamed blocks (of l's KV group) into staging slot l % 2, on the stream stream.
  void gather(Batch& b, int64_t l);
  // The staging slot that holds layer l, as a pool view of the streamed blocks.
  tdm_kv_layer staging_view(const Batch& b, int64_t l) const;

  Model& m_;
  const StepPlan& plan_;
  std::vector<Batch> batches_;
  bool concurrent_ = false;  // CPU attention runs on the worker, beside the device
  bool submitted_ = false;
  bool gathered_ = false;    // gathers were queued on the stream stream
};

int32_t StepRun::best_needed(const Batch& b) const {
  if (!m_.best_on_device_) return 0;
  int32_t k = 0;
  for (size_t j = 0; j < b.seqs.size(); ++j) {
    if (b.out_first[j] < 0) continue;
    const SeqPlan& s = plan_.seqs[b.seqs[j]];
    if (!s.sample || s.return_all_logits || s.return_logits || s.n_draft > 0) return 0;
    const int32_t need = best_logits_needed(s.sampling, int32_t(s.recent.size()), int32_t(m_.hp_.n_vocab), TDM_TOP_K_MAX);
    if (need == 0) return 0;
    k = std::max(k, need);
  }
  return k;
}

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
  b.hidden_first.assign(b.seqs.size(), -1);
  std::vector<int32_t> hidden_rows;
  b.sliding_src.resize(size_t(m_.layout_.sliding_groups()));
  b.sliding_dst.resize(size_t(m_.layout_.sliding_groups()));
  for (size_t j = 0; j < b.seqs.size(); ++j) {
    const SeqPlan& s = plan_.seqs[b.seqs[j]];
    const int32_t n = int32_t(s.tokens.size());
    const bool cpu = cpu_side(s);
    if (!cpu) b.n_dev_rows = b.n_rows + n;
    const int32_t n_blocks = int32_t((int64_t(s.start_pos) + n + bt - 1) / bt);
    std::vector<int32_t>& tables = cpu ? b.cpu_tables : b.dev_tables;
    std::vector<Group>& groups = cpu ? b.cpu_groups : b.dev_groups;
    const size_t n_sliding = size_t(m_.layout_.sliding_groups());
    auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.tier == s.tier; });
    if (g == groups.end()) {
      Group fresh;
      fresh.tier = s.tier;
      fresh.streamed = streamed(s);
      fresh.sliding.resize(n_sliding);
      fresh.sliding_off.resize(n_sliding);
      fresh.stored_sliding.resize(n_sliding);
      fresh.stored_sliding_off.resize(n_sliding);
      groups.push_back(std::move(fresh));
      g = groups.end() - 1;
    }
    const int32_t first_row = int32_t(cpu ? b.n_rows - b.n_dev_rows : b.n_rows);
    g->seqs.push_back(tdm_attn_seq{first_row, n, s.start_pos, n_blocks, nullptr});
    g->table_off.push_back(int64_t(tables.size()));
    if (g->streamed) {
      // Attention reads staging blocks; the new rows are also stored in the host blocks.
      for (int32_t k = 0; k < n_blocks; ++k) {
        tables.push_back(int32_t(b.stream_src.size()));
        b.stream_dst.push_back(int32_t(b.stream_src.size()));
        b.stream_src.push_back(s.block_table[size_t(k)]);
      }
      g->stored.push_back(g->seqs.back());
      g->stored_off.push_back(int64_t(tables.size()));
    }
    tables.insert(tables.end(), s.block_table.begin(), s.block_table.begin() + n_blocks);
    const std::vector<Model::LiveBlocks> live = n_sliding > 0 ? m_.live_blocks(s) : std::vector<Model::LiveBlocks>{};
    for (size_t sg = 0; sg < n_sliding; ++sg) {
      const Model::LiveBlocks& own = live[1 + sg];
      if (g->streamed) {
        // Only the window's blocks cross: those before the first one tokens[0] sees are never
        // read (nor written), so their entries point at any staged block.
        std::vector<int32_t>& src = b.sliding_src[sg];
        g->sliding[sg].push_back(g->seqs.back());
        g->sliding_off[sg].push_back(int64_t(tables.size()));
        for (int32_t k = 0; k < n_blocks; ++k) {
          if (k < own.first) {
            tables.push_back(0);
            continue;
          }
          tables.push_back(int32_t(src.size()));
          b.sliding_dst[sg].push_back(int32_t(src.size()));
          src.push_back(own.table[k]);
        }
        g->stored_sliding[sg].push_back(g->seqs.back());
        g->stored_sliding_off[sg].push_back(int64_t(tables.size()));
      } else {
        g->sliding[sg].push_back(g->seqs.back());
        g->sliding_off[sg].push_back(int64_t(tables.size()));
      }
      tables.insert(tables.end(), own.table, own.table + n_blocks);
    }
    if (s.return_all_logits || s.sample || s.return_logits) {
      b.out_first[j] = int64_t(b.out_rows.size());
      const int32_t first = s.return_all_logits ? 0 : n - 1 - s.n_draft;
      for (int32_t t = first; t < n; ++t) b.out_rows.push_back(int32_t(b.n_rows) + t);
    }
    if (s.return_embeddings) {
      b.hidden_first[j] = int64_t(hidden_rows.size());
      for (int32_t t = 0; t < n; ++t) hidden_rows.push_back(int32_t(b.n_rows) + t);
    }
    for (int32_t t = 0; t < n; ++t) {
      b.tokens.push_back(s.tokens[size_t(t)]);
      b.positions.push_back(s.start_pos + t);
    }
    b.n_rows += n;
  }
  b.n_head_rows = int64_t(b.out_rows.size());
  b.out_rows.insert(b.out_rows.end(), hidden_rows.begin(), hidden_rows.end());
  BatchBuffers& w = *b.buf;
  m_.ensure_batch(w, b.n_rows, int64_t(b.out_rows.size()), b.n_head_rows, int64_t(b.dev_tables.size()), b.n_rows - b.n_dev_rows);
  auto up = [&](DeviceBuffer& dst, const std::vector<int32_t>& src) { m_.to_device(dst.data(), src.data(), src.size() * sizeof(int32_t)); };
  up(w.tokens, b.tokens);
  up(w.positions, b.positions);
  up(w.tables, b.dev_tables);
  up(w.out_rows, b.out_rows);
  auto point = [](Group& g, const int32_t* tables) {
    for (size_t i = 0; i < g.seqs.size(); ++i) g.seqs[i].block_table = tables + g.table_off[i];
    for (size_t i = 0; i < g.stored.size(); ++i) g.stored[i].block_table = tables + g.stored_off[i];
    for (size_t sg = 0; sg < g.sliding.size(); ++sg) {
      for (size_t i = 0; i < g.sliding[sg].size(); ++i) g.sliding[sg][i].block_table = tables + g.sliding_off[sg][i];
      for (size_t i = 0; i < g.stored_sliding[sg].size(); ++i) g.stored_sliding[sg][i].block_table = tables + g.stored_sliding_off[sg][i];
    }
  };
  for (Group& g : b.dev_groups) point(g, w.tables.as<int32_t>());
  for (Group& g : b.cpu_groups) point(g, b.cpu_tables.data());
}

void StepRun::cpu_attention(Batch& b, int64_t l) {
  Backend& cpu = *m_.cpu_;
  BatchBuffers& w = *b.buf;
  const float scale = m_.hp_.attn_scale;
  std::lock_guard<std::mutex> lock(m_.cpu_mu_);
  const Clock::time_point t0 = Clock::now();
  for (const Group& g : b.cpu_groups) {
    const tdm_kv_layer kv = m_.pool(g.tier).layer(int32_t(l));
    const std::vector<tdm_attn_seq>& seqs = g.for_layer(m_.layout_, l);
    const int32_t ns = int32_t(seqs.size());
    cpu.check(cpu.fn().kv_store(cpu.ctx(), &kv, w.hk.as<float>(), w.hv.as<float>(), seqs.data(), ns, nullptr), "kv_store");
    // The host reads the file's sinks (the placement's may be device copies).
    cpu.check(cpu.fn().attention(cpu.ctx(), &kv, w.hq.as<float>(), seqs.data(), ns, int32_t(m_.hp_.n_head), scale,
                                 m_.hp_.attn_softcap, m_.weights_.layers[size_t(l)].attn_sinks.data, m_.window(l), w.hout.as<float>(), nullptr),
              "attention");
  }
  b.cpu_us += us_since(t0);
}

tdm_kv_layer StepRun::staging_view(const Batch& b, int64_t l) const {
  const KvLayout& kl = m_.layout_;
  const size_t piece = kl.layer_k_bytes + kl.layer_v_bytes;
  const int64_t n = int64_t(b.stream_src.size());
  tdm_kv_layer kv = m_.pool(KvTier::host).layer(int32_t(l));
  kv.k = m_.stream_staging_.as<uint8_t>() + (size_t(b.staging_first) * 2 + size_t(l % 2) * size_t(n)) * piece;
  kv.v = static_cast<uint8_t*>(kv.k) + kl.layer_k_bytes;
  kv.block_bytes = piece;
  kv.n_blocks = int32_t(n);
  return kv;
}

void StepRun::gather(Batch& b, int64_t l) {
  Backend& dev = *m_.device_;
  const KvLayout& kl = m_.layout_;
  const KvPool& host = m_.pool(KvTier::host);
  // Layer l's K and V, as the device addresses the mapped host pool.
  const size_t at = size_t(static_cast<const uint8_t*>(host.layer(int32_t(l)).k) - static_cast<const uint8_t*>(host.base()));
  const tdm_kv_layer dst = staging_view(b, l);
  const int32_t group = kl.group_of[size_t(l)];
  const std::vector<int32_t>& src = group > 0 ? b.sliding_src[size_t(group - 1)] : b.stream_src;
  const std::vector<int32_t>& to = group > 0 ? b.sliding_dst[size_t(group - 1)] : b.stream_dst;
  if (!src.empty())
    dev.check(dev.fn().copy_pieces(dev.ctx(), dst.k, dst.block_bytes, static_cast<const uint8_t*>(m_.host_kv_on_device_) + at,
                                   kl.block_bytes, kl.layer_k_bytes + kl.layer_v_bytes, src.data(), to.data(), int32_t(src.size()),
                                   m_.stream_stream_),
              "copy_pieces");
  dev.check(dev.fn().event_record(dev.ctx(), b.buf->staged[l % 2], m_.stream_stream_), "event_record");
  gathered_ = true;
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
    const float scale = m.hp_.attn_scale;
    for (const Group& g : b.dev_groups) {
      const std::vector<tdm_attn_seq>& seqs = g.for_layer(m.layout_, l);
      const int32_t ns = int32_t(seqs.size());
      const tdm_kv_layer kv = g.streamed ? staging_view(b, l) : m.pool(g.tier).layer(int32_t(l));
      if (g.streamed) {
        // The staged layer has arrived; the new rows go into it and into the host blocks.
        BatchBuffers& bb = *b.buf;
        dev.check(dev.fn().stream_wait(dev.ctx(), nullptr, bb.staged[l % 2]), "stream_wait");
        tdm_kv_layer host = m.pool(KvTier::host).layer(int32_t(l));
        const ptrdiff_t shift = static_cast<uint8_t*>(m.host_kv_on_device_) - static_cast<uint8_t*>(m.pool(KvTier::host).base());
        host.k = static_cast<uint8_t*>(host.k) + shift;
        host.v = static_cast<uint8_t*>(host.v) + shift;
        dev.check(dev.fn().kv_store(dev.ctx(), &host, w.k.as<float>(), w.v.as<float>(), g.stored_for_layer(m.layout_, l).data(), ns, nullptr),
                  "kv_store");
      }
      dev.check(dev.fn().kv_store(dev.ctx(), &kv, w.k.as<float>(), w.v.as<float>(), seqs.data(), ns, nullptr), "kv_store");
      dev.check(dev.fn().attention(dev.ctx(), &kv, w.q.as<float>(), seqs.data(), ns, int32_t(m.hp_.n_head), scale,
                                   m.hp_.attn_softcap, m.placement_.exec.layers[size_t(l)].attn_sinks.data, m.window(l), w.attn.as<float>(), nullptr),
                "attention");
      if (g.streamed) {
        // The slot is free once this attention has read it: it takes layer l + 2 next.
        BatchBuffers& bb = *b.buf;
        dev.check(dev.fn().event_record(dev.ctx(), bb.staging_free[l % 2], nullptr), "event_record");
        if (l + 2 < m.hp_.n_layer) {
          dev.check(dev.fn().stream_wait(dev.ctx(), m.stream_stream_, bb.staging_free[l % 2]), "stream_wait");
          gather(b, l + 2);
        }
      }
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
  int64_t streamed_blocks = 0;
  for (Batch& b : batches_) {
    lay_out(b);
    b.staging_first = streamed_blocks;
    streamed_blocks += int64_t(b.stream_src.size());
  }
  // Streamed host KV: the first two layers' gathers start now, beside the embedding and layer 0.
  for (Batch& b : batches_)
    if (!b.stream_src.empty())
      for (int64_t l = 0; l < std::min<int64_t>(2, m.hp_.n_layer); ++l) gather(b, l);
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
    const int64_t n_hidden = int64_t(b.out_rows.size()) - b.n_head_rows;
    if (n_hidden > 0) b.hidden = m.final_hidden(*b.buf, b.n_rows, b.n_head_rows, n_hidden);
    if (b.n_head_rows > 0) b.head = m.lm_head(*b.buf, b.n_rows, b.n_head_rows, best_needed(b));
  }
  const int64_t E = m.hp_.n_embd;

  timed(&m.ph_.sampling, [&] {
    result->seqs.resize(plan_.seqs.size());
    std::vector<Model::Draw> draws;
    for (Batch& b : batches_) {
      for (size_t j = 0; j < b.seqs.size(); ++j) {
        const SeqPlan& s = plan_.seqs[b.seqs[j]];
        SeqResult& r = result->seqs[b.seqs[j]];
        r.seq_id = s.seq_id;
        if (b.hidden_first[j] >= 0) {
          const float* first = b.hidden + b.hidden_first[j] * E;
          r.has_embeddings = true;
          r.embeddings.assign(first, first + int64_t(s.tokens.size()) * E);
        }
        if (b.out_first[j] < 0) continue;
        if (b.head.best_k > 0) {  // every row of the batch is one sampled row (best_needed)
          const int64_t at = b.out_first[j] * b.head.best_k;
          draws.push_back(Model::Draw{&s, &r, nullptr, b.head.best_vals + at, b.head.best_ids + at, b.head.best_k});
          continue;
        }
        const int64_t n = int64_t(s.tokens.size());
        const int64_t rows = s.return_all_logits ? n : 1 + s.n_draft;
        const float* first = b.head.logits + b.out_first[j] * V;
        const float* last = first + (rows - 1) * V;
        if (s.return_all_logits) {
          r.has_all_logits = true;
          r.all_logits.assign(first, first + rows * V);
        }
        if (s.return_logits) {
          r.has_logits = true;
          r.logits.assign(last, last + V);
        }
        if (s.sample) draws.push_back(Model::Draw{&s, &r, s.n_draft > 0 ? first : last});
      }
    }
    m.sample_all(draws, V);
  });
}

StepResult Model::step(const StepPlan& plan) {
  const Clock::time_point t_start = Clock::now();
  validate(plan);
  int32_t rounds = 1;
  for (const SeqPlan& s : plan.seqs) rounds = std::max(rounds, s.decode_steps);
  if (rounds == 1) return step_once(plan, t_start);
  return step_burst(plan, rounds, t_start);
}

StepResult Model::step_burst(const StepPlan& plan, int32_t rounds, Clock::time_point t_start) {
  // Round r runs the sequences with more than r draws, each on the token it drew in round r-1.
  // A draw depends on (seed, position) only, so a burst draws what as many steps would.
  StepResult out;
  out.seqs.resize(plan.seqs.size());
  std::vector<size_t> slot;  // round plan's row -> out.seqs index
  StepPlan round{plan.strategy, plan.copies, plan.seqs};
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    out.seqs[i].seq_id = plan.seqs[i].seq_id;
    slot.push_back(i);
  }
  int32_t r = 0;
  for (; r < rounds && !round.seqs.empty(); ++r) {
    // A round already drawn is a whole result: new work waiting is planned in after it.
    if (r > 0 && burst_interrupt_.load(std::memory_order_relaxed)) break;
    StepResult one = step_once(round, Clock::now());
    for (const auto& [phase, us] : one.phase_us) {
      auto it = std::find_if(out.phase_us.begin(), out.phase_us.end(), [&](const auto& kv) { return kv.first == phase; });
      if (it == out.phase_us.end()) out.phase_us.emplace_back(phase, us);
      else it->second += us;
    }
    if (one.has_experts) {
      out.has_experts = true;
      out.experts += one.experts;
      out.cpu_expert_calls.insert(out.cpu_expert_calls.end(), one.cpu_expert_calls.begin(), one.cpu_expert_calls.end());
    }
    StepPlan next{round.strategy, {}, {}};
    std::vector<size_t> next_slot;
    for (size_t k = 0; k < round.seqs.size(); ++k) {
      SeqResult& res = out.seqs[slot[k]];
      res.token = one.seqs[k].token;
      res.tokens.push_back(res.token);
      if (one.seqs[k].has_logits) {
        res.has_logits = true;
        res.logits.insert(res.logits.end(), one.seqs[k].logits.begin(), one.seqs[k].logits.end());
      }
      SeqPlan& s = round.seqs[k];
      if (s.decode_steps <= r + 1) continue;
      if (std::find(s.stop_tokens.begin(), s.stop_tokens.end(), res.token) != s.stop_tokens.end()) continue;
      s.start_pos += int32_t(s.tokens.size());
      s.tokens.assign(1, res.token);
      if (!s.recent.empty() || s.penalty_window > 0) {
        s.recent.push_back(res.token);
        if (int64_t(s.recent.size()) > s.penalty_window) s.recent.erase(s.recent.begin());
      }
      next.seqs.push_back(std::move(s));
      next_slot.push_back(slot[k]);
    }
    round = std::move(next);
    slot = std::move(next_slot);
  }
  out.rounds = r;
  out.total_us = us_since(t_start);
  return out;
}

StepResult Model::step_once(const StepPlan& plan, Clock::time_point t_start) {
  ph_ = Phases{};
  ex_stats_ = ExpertStats{};
  ex_cpu_calls_.clear();
  ex_deferred_.clear();
  if (experts_ && !plan.seqs.empty()) experts_->tick();
  StepResult result;
  timed(&ph_.copies, [&] { run_copies(plan.copies); });
  if (!plan.seqs.empty()) {
    StepRun run(*this, plan);
    run.run(&result);
  }
  if (experts_) finish_expert_counts();
  result.phase_us = {{"copies", ph_.copies},       {"embed", ph_.embed},
                     {"linear", ph_.linear},       {"hostLinear", ph_.host_linear},
                     {"transfer", ph_.transfer},   {"attentionTransfer", ph_.attn_transfer},
                     {"attention", ph_.attention},
                     {"cpuAttention", ph_.cpu_attention}, {"cpuWait", ph_.cpu_wait},
                     {"experts", ph_.experts},     {"logits", ph_.logits},
                     {"hidden", ph_.hidden},       {"sampling", ph_.sampling}};
  if (experts_) {
    result.phase_us.insert(result.phase_us.end(), {{"expertCopies", ph_.expert_copies},
                                                   {"cpuExperts", ph_.cpu_experts},
                                                   {"expertWait", ph_.expert_wait}});
    result.has_experts = true;
    result.experts = ex_stats_;
    result.cpu_expert_calls = ex_cpu_calls_;
  }
  result.total_us = us_since(t_start);
  return result;
}

}  // namespace tdm
