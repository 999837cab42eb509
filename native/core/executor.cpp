// The step executor: runs one StepPlan through the backends. Block copies first; then all
// sequences' tokens go through the linear layers as one batch while attention runs per
// sequence over its own KV blocks; logits only for the rows asked for; sampling next to
// them. The five architectures differ only in what the hyperparameters and the bound weights
// say (RoPE style, QKV bias, QK norm per head or whole, dense or routed FFN, shared expert
// with its sigmoid gate), so one layer serves all, in llama.cpp's order of operations
// (src/models/*.cpp) so that results track it.
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

// Measured time per phase, accumulated over the layers.
struct Phases {
  double copies = 0, embed = 0, linear = 0, attention = 0, experts = 0, logits = 0, sampling = 0;
};

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
      throw Error(code::unsupported, at + "attention on " + ab->kind() + " cannot read KV blocks in the " + tier_name(s.tier) + " tier");
    if (ab != linear_)
      throw Error(code::unsupported, at + "attention on a backend other than the one running the linear layers needs a GPU build");
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
    void* d = static_cast<uint8_t*>(dst.base()) + size_t(to) * bb;
    const void* s = static_cast<const uint8_t*>(src.base()) + size_t(from) * bb;
    if (db->host_memory()) sb->check(sb->fn().copy_d2h(sb->ctx(), d, s, bb, nullptr), "copy_d2h");
    else db->check(db->fn().copy_h2d(db->ctx(), d, s, bb, nullptr), "copy_h2d");
  }
}

void Model::ensure_workspace(int64_t n_tokens, int64_t n_out, int64_t n_table) {
  Workspace& w = ws_;
  Backend* b = linear_;
  if (n_tokens > w.cap_tokens) {
    const int64_t T = std::max(n_tokens, std::min<int64_t>(w.cap_tokens * 2, n_tokens + 512));
    const size_t f = sizeof(float);
    const int64_t E = hp_.n_embd;
    const int64_t ff = std::max({hp_.n_ff, hp_.n_ff_shared, int64_t(1)});
    const int64_t k_used = std::max<int64_t>(hp_.n_expert_used, 1);
    w.x = DeviceBuffer(b, size_t(T * E) * f);
    w.xn = DeviceBuffer(b, size_t(T * E) * f);
    w.q = DeviceBuffer(b, size_t(T * hp_.n_head * hp_.head_dim) * f);
    w.k = DeviceBuffer(b, size_t(T * hp_.n_head_kv * hp_.head_dim) * f);
    w.v = DeviceBuffer(b, size_t(T * hp_.n_head_kv * hp_.head_dim_v) * f);
    w.attn = DeviceBuffer(b, size_t(T * hp_.n_head * hp_.head_dim_v) * f);
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
    w.out_x = DeviceBuffer(b, size_t(N * hp_.n_embd) * sizeof(float));
    w.logits = DeviceBuffer(b, size_t(N * hp_.n_vocab) * sizeof(float));
    w.cap_out = N;
  }
  if (n_table > w.cap_table) {
    const int64_t N = std::max(n_table, w.cap_table * 2);
    w.tables = DeviceBuffer(b, size_t(N) * sizeof(int32_t));
    w.cap_table = N;
  }
}

StepResult Model::step(const StepPlan& plan) {
  const Clock::time_point t_start = Clock::now();
  validate(plan);
  Phases ph;
  StepResult result;
  timed(&ph.copies, [&] { run_copies(plan.copies); });

  const int64_t n_seqs = int64_t(plan.seqs.size());
  if (n_seqs > 0) {
    Backend& L = *linear_;
    const tdm_backend_iface& f = L.fn();
    tdm_backend_ctx* c = L.ctx();
    const Recipe rc = recipe_for(hp_);
    const int64_t E = hp_.n_embd, V = hp_.n_vocab;
    const int32_t bt = layout_.block_tokens;

    // Batch layout: sequences' tokens back to back, in plan order.
    std::vector<int32_t> tokens, positions, table_data, out_rows;
    std::vector<tdm_attn_seq> aseq(static_cast<size_t>(n_seqs));
    std::vector<int64_t> table_off(static_cast<size_t>(n_seqs));
    std::vector<int64_t> out_first(size_t(n_seqs), -1);  // first row of this sequence in the logits
    for (int64_t i = 0; i < n_seqs; ++i) {
      const SeqPlan& s = plan.seqs[size_t(i)];
      const int32_t n = int32_t(s.tokens.size());
      const int64_t end = int64_t(s.start_pos) + n;
      const int32_t n_blocks = int32_t((end + bt - 1) / bt);
      aseq[size_t(i)] = tdm_attn_seq{int32_t(tokens.size()), n, s.start_pos, n_blocks, nullptr};
      table_off[size_t(i)] = int64_t(table_data.size());
      table_data.insert(table_data.end(), s.block_table.begin(), s.block_table.begin() + n_blocks);
      if (s.return_all_logits || s.sample || s.return_logits) {
        out_first[size_t(i)] = int64_t(out_rows.size());
        const int32_t first = s.return_all_logits ? 0 : n - 1;
        for (int32_t j = first; j < n; ++j) out_rows.push_back(int32_t(tokens.size()) + j);
      }
      for (int32_t j = 0; j < n; ++j) {
        tokens.push_back(s.tokens[size_t(j)]);
        positions.push_back(s.start_pos + j);
      }
    }
    const int64_t T = int64_t(tokens.size());
    const int64_t n_out = int64_t(out_rows.size());
    ensure_workspace(T, n_out, int64_t(table_data.size()));
    Workspace& w = ws_;
    auto up = [&](DeviceBuffer& dst, const std::vector<int32_t>& src) {
      if (!src.empty()) L.check(f.copy_h2d(c, dst.data(), src.data(), src.size() * sizeof(int32_t), nullptr), "copy_h2d");
    };
    up(w.tokens, tokens);
    up(w.positions, positions);
    up(w.tables, table_data);
    up(w.out_rows, out_rows);
    for (int64_t i = 0; i < n_seqs; ++i) aseq[size_t(i)].block_table = w.tables.as<int32_t>() + table_off[size_t(i)];

    // Attention groups: sequences sharing a KV tier and an attention device go in one call.
    struct Group {
      KvTier tier;
      AttnDevice device;
      std::vector<tdm_attn_seq> seqs;
    };
    std::vector<Group> groups;
    for (int64_t i = 0; i < n_seqs; ++i) {
      const SeqPlan& s = plan.seqs[size_t(i)];
      auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.tier == s.tier && g.device == s.attention; });
      if (it == groups.end()) {
        groups.push_back(Group{s.tier, s.attention, {}});
        it = groups.end() - 1;
      }
      it->seqs.push_back(aseq[size_t(i)]);
    }

    float* X = w.x.as<float>();
    float* Xn = w.xn.as<float>();
    float* Q = w.q.as<float>();
    float* K = w.k.as<float>();
    float* Vv = w.v.as<float>();
    float* A = w.attn.as<float>();
    float* O = w.o.as<float>();
    float* G = w.gate.as<float>();
    float* U = w.up.as<float>();
    const int32_t* pos = w.positions.as<int32_t>();
    const int64_t q_dim = hp_.n_head * hp_.head_dim, k_dim = hp_.n_head_kv * hp_.head_dim;
    const int64_t v_dim = hp_.n_head_kv * hp_.head_dim_v;
    const float eps = hp_.rms_eps;
    const float kq_scale = 1.0f / std::sqrt(float(hp_.head_dim));

    auto mm = [&](const tdm_weight& wt, const float* x, float* y) { L.check(f.matmul(c, &wt, 0, x, T, y, nullptr), "matmul"); };
    auto norm = [&](const float* x, const VecF32& wt, float* y, int64_t rows, int64_t cols) {
      L.check(f.rms_norm(c, x, wt.data, y, rows, cols, eps, nullptr), "rms_norm");
    };
    auto add_to = [&](float* y, const float* b, int64_t cols, int64_t b_stride) {
      L.check(f.add(c, y, b, y, T, cols, b_stride, nullptr), "add");
    };
    auto ffn = [&](const tdm_weight& g, const tdm_weight& u, const tdm_weight& d, float* out) {
      mm(g, Xn, G);
      mm(u, Xn, U);
      L.check(f.swiglu(c, G, U, G, T * g.n_rows, nullptr), "swiglu");
      mm(d, G, out);
    };

    timed(&ph.embed, [&] { L.check(f.get_rows(c, &weights_.tok_embd, w.tokens.as<int32_t>(), T, X, nullptr), "get_rows"); });

    for (int64_t l = 0; l < hp_.n_layer; ++l) {
      const LayerWeights& lw = weights_.layers[size_t(l)];
      timed(&ph.linear, [&] {
        norm(X, lw.attn_norm, Xn, T, E);
        mm(lw.wq, Xn, Q);
        mm(lw.wk, Xn, K);
        mm(lw.wv, Xn, Vv);
        if (lw.bq) add_to(Q, lw.bq.data, q_dim, 0);
        if (lw.bk) add_to(K, lw.bk.data, k_dim, 0);
        if (lw.bv) add_to(Vv, lw.bv.data, v_dim, 0);
        if (lw.q_norm) {
          if (lw.qk_norm_per_head) {
            norm(Q, lw.q_norm, Q, T * hp_.n_head, hp_.head_dim);
            norm(K, lw.k_norm, K, T * hp_.n_head_kv, hp_.head_dim);
          } else {
            norm(Q, lw.q_norm, Q, T, q_dim);
            norm(K, lw.k_norm, K, T, k_dim);
          }
        }
        L.check(f.rope(c, Q, pos, T, int32_t(hp_.n_head), int32_t(hp_.head_dim), int32_t(hp_.rope_dim), rc.rope_mode,
                       hp_.rope_freq_base, hp_.rope_freq_scale, nullptr), "rope");
        L.check(f.rope(c, K, pos, T, int32_t(hp_.n_head_kv), int32_t(hp_.head_dim), int32_t(hp_.rope_dim), rc.rope_mode,
                       hp_.rope_freq_base, hp_.rope_freq_scale, nullptr), "rope");
      });
      timed(&ph.attention, [&] {
        for (const Group& g : groups) {
          Backend& ab = *attention_backend(g.device);
          const tdm_kv_layer kv = pool(g.tier).layer(int32_t(l));
          const int32_t ns = int32_t(g.seqs.size());
          ab.check(ab.fn().kv_store(ab.ctx(), &kv, K, Vv, g.seqs.data(), ns, nullptr), "kv_store");
          ab.check(ab.fn().attention(ab.ctx(), &kv, Q, g.seqs.data(), ns, int32_t(hp_.n_head), kq_scale, A, nullptr), "attention");
        }
      });
      timed(&ph.linear, [&] {
        mm(lw.wo, A, O);
        if (lw.bo) add_to(O, lw.bo.data, E, 0);
        add_to(X, O, E, E);
        norm(X, lw.ffn_norm, Xn, T, E);
        if (!hp_.is_moe()) {
          ffn(lw.ffn_gate, lw.ffn_up, lw.ffn_down, O);
          add_to(X, O, E, E);
          return;
        }
        mm(lw.gate_inp, Xn, w.router_logits.as<float>());
        L.check(f.router(c, w.router_logits.as<float>(), T, int32_t(hp_.n_expert), int32_t(hp_.n_expert_used), rc.gating,
                         hp_.expert_weights_norm ? 1 : 0, 1.0f, w.expert_ids.as<int32_t>(), w.expert_weights.as<float>(), nullptr),
                "router");
      });
      if (!hp_.is_moe()) continue;
      timed(&ph.experts, [&] {
        L.check(f.moe_ffn(c, Xn, T, w.expert_ids.as<int32_t>(), w.expert_weights.as<float>(), int32_t(hp_.n_expert_used),
                          &lw.gate_exps, &lw.up_exps, &lw.down_exps, O, nullptr),
                "moe_ffn");
      });
      timed(&ph.linear, [&] {
        if (present(lw.gate_shexp)) {
          float* S = w.shared.as<float>();
          ffn(lw.gate_shexp, lw.up_shexp, lw.down_shexp, S);
          if (present(lw.gate_inp_shexp)) {
            mm(lw.gate_inp_shexp, Xn, w.shared_gate.as<float>());
            L.check(f.scale_rows(c, S, w.shared_gate.as<float>(), T, E, TDM_ROW_FN_SIGMOID, nullptr), "scale_rows");
          }
          add_to(O, S, E, E);
        }
        add_to(X, O, E, E);
      });
    }

    std::vector<float> logits(size_t(n_out * V));
    if (n_out > 0) {
      timed(&ph.logits, [&] {
        const tdm_weight xrows = f32_rows(X, T, E);
        float* XO = w.out_x.as<float>();
        L.check(f.get_rows(c, &xrows, w.out_rows.as<int32_t>(), n_out, XO, nullptr), "get_rows");
        L.check(f.rms_norm(c, XO, weights_.output_norm.data, XO, n_out, E, eps, nullptr), "rms_norm");
        L.check(f.matmul(c, &weights_.output, 0, XO, n_out, w.logits.as<float>(), nullptr), "matmul");
        L.check(f.copy_d2h(c, logits.data(), w.logits.data(), logits.size() * sizeof(float), nullptr), "copy_d2h");
      });
    }

    timed(&ph.sampling, [&] {
      result.seqs.resize(size_t(n_seqs));
      for (int64_t i = 0; i < n_seqs; ++i) {
        const SeqPlan& s = plan.seqs[size_t(i)];
        SeqResult& r = result.seqs[size_t(i)];
        r.seq_id = s.seq_id;
        if (out_first[size_t(i)] < 0) continue;
        const int64_t n = int64_t(s.tokens.size());
        const int64_t rows = s.return_all_logits ? n : 1;
        const float* first = logits.data() + out_first[size_t(i)] * V;
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
          r.token = sample_token(last, int32_t(V), s.sampling, s.recent.data(), int32_t(s.recent.size()), position, sampler_);
        }
      }
    });
  }

  result.phase_us = {{"copies", ph.copies},     {"embed", ph.embed},     {"linear", ph.linear},
                     {"attention", ph.attention}, {"experts", ph.experts}, {"logits", ph.logits},
                     {"sampling", ph.sampling}};
  result.total_us = us_since(t_start);
  return result;
}

}  // namespace tdm
