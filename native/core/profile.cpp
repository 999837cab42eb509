// Timing entry points for the profiler (src/sched/profiler.ts): each times one subtask of a
// step on this machine's backends with the model's own weights and placement, so that the
// cost model predicts from what this machine does (NEO's profiled tables), not from constants.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/experts.h"
#include "core/model.h"

namespace tdm {

namespace {

using Clock = std::chrono::steady_clock;

// Median microseconds of `iters` runs of f after one warm-up run, `before` untimed ahead of each.
template <typename F, typename G>
double median_us_after(int iters, F&& f, G&& before) {
  if (iters < 1 || iters > 1000) throw Error(code::bad_argument, "iters must be in [1, 1000]");
  f();
  std::vector<double> us;
  for (int i = 0; i < iters; ++i) {
    before();
    const Clock::time_point t0 = Clock::now();
    f();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

template <typename F>
double median_us(int iters, F&& f) {
  return median_us_after(iters, std::forward<F>(f), [] {});
}

void sync(Backend* b) {
  if ((b->fn().caps(b->ctx()) & TDM_CAP_ASYNC) != 0 && b->fn().synchronize != nullptr)
    b->check(b->fn().synchronize(b->ctx()), "synchronize");
}

void upload(Backend* b, void* dst, const void* src, size_t bytes) {
  b->check(b->fn().copy_h2d(b->ctx(), dst, src, bytes, nullptr), "copy_h2d");
}

// The head is timed as the default sampling runs it: each row cut to its 40 best on a device
// that can (llama.cpp's default top-k, which generate() takes over).
constexpr int32_t kProfiledBestK = 40;

}  // namespace

// The step's work around attention for n_tokens rows, of which n_logits (0..n_tokens) go
// through the LM head: a step computes logits only for the rows it samples (decodes, a
// prompt's last token), so a prefill chunk's rows skip the head (time_head times it alone).
double Model::time_linear(int64_t n_tokens, int64_t n_logits, int iters) {
  if (n_tokens < 1 || n_tokens > 65536) throw Error(code::bad_argument, "tokens must be in [1, 65536]");
  if (n_logits < 0 || n_logits > n_tokens) throw Error(code::bad_argument, "logits rows must be in [0, tokens]");
  BatchBuffers& b = batches_[0];
  ensure_batch(b, n_tokens, n_tokens, n_tokens, 0, 0);
  std::vector<int32_t> tokens(static_cast<size_t>(n_tokens)), positions(static_cast<size_t>(n_tokens));
  for (int64_t i = 0; i < n_tokens; ++i) {
    tokens[size_t(i)] = int32_t((i * 7919 + 1) % hp_.n_vocab);
    positions[size_t(i)] = int32_t(i);
  }
  to_device(b.tokens.data(), tokens.data(), tokens.size() * sizeof(int32_t));
  to_device(b.positions.data(), positions.data(), positions.size() * sizeof(int32_t));
  to_device(b.out_rows.data(), positions.data(), positions.size() * sizeof(int32_t));
  // Attention output stands at zero: this times everything around attention, not attention.
  const std::vector<float> zeros(size_t(n_tokens * hp_.n_head * hp_.head_dim_v), 0.0f);
  ph_ = Phases{};
  return median_us(iters, [&] {
    embed(b, tokens.data(), n_tokens);
    for (int64_t l = 0; l < hp_.n_layer; ++l) {
      pre_attention(b, n_tokens, l);
      to_device(b.attn.data(), zeros.data(), zeros.size() * sizeof(float));
      post_attention(b, n_tokens, l);
    }
    if (n_logits > 0) lm_head(b, n_tokens, n_logits, best_on_device_ ? std::min<int32_t>(kProfiledBestK, int32_t(hp_.n_vocab)) : 0);
    else sync(device_);  // the head's copy of the logits would have waited for the device
  });
}

// The LM head alone for n_rows rows: final norm, output matmul and what the sampler reads of
// the logits (each row's best, where the device cuts them, else the rows) on the host.
double Model::time_head(int64_t n_rows, int iters) {
  if (n_rows < 1 || n_rows > 65536) throw Error(code::bad_argument, "rows must be in [1, 65536]");
  BatchBuffers& b = batches_[0];
  ensure_batch(b, n_rows, n_rows, n_rows, 0, 0);
  std::vector<int32_t> rows(static_cast<size_t>(n_rows));
  for (int64_t i = 0; i < n_rows; ++i) rows[size_t(i)] = int32_t(i);
  to_device(b.out_rows.data(), rows.data(), rows.size() * sizeof(int32_t));
  const std::vector<float> x(size_t(n_rows * hp_.n_embd), 0.01f);
  to_device(b.x.data(), x.data(), x.size() * sizeof(float));
  ph_ = Phases{};
  return median_us(iters, [&] { lm_head(b, n_rows, n_rows, best_on_device_ ? std::min<int32_t>(kProfiledBestK, int32_t(hp_.n_vocab)) : 0); });
}

double Model::time_attention(bool on_cpu, int32_t n_seqs, int32_t context, int32_t n_new, int iters) {
  if (n_seqs < 1 || n_seqs > 4096) throw Error(code::bad_argument, "requests must be in [1, 4096]");
  if (context < 0 || n_new < 1 || int64_t(context) + n_new > (int64_t(1) << 24)) throw Error(code::bad_argument, "context + tokens must be in [1, 2^24]");
  Backend* be = on_cpu ? cpu_.get() : device_;
  // One layer's pool (every layer is the same shape), timed and scaled by the layer count.
  Hparams one = hp_;
  one.n_layer = 1;
  const KvLayout layout = KvLayout::make(one, layout_.block_tokens, layout_.type);
  const int64_t per_seq = (int64_t(context) + n_new + layout.block_tokens - 1) / layout.block_tokens;
  if (per_seq * n_seqs > INT32_MAX) throw Error(code::bad_argument, "the scratch KV pool would need too many blocks");
  KvPool pool(be, layout, int32_t(per_seq * n_seqs));
  std::vector<int32_t> tables(size_t(per_seq * n_seqs));
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = int32_t(i);
  DeviceBuffer dtables(be, tables.size() * sizeof(int32_t));
  upload(be, dtables.data(), tables.data(), tables.size() * sizeof(int32_t));
  const int64_t rows = int64_t(n_seqs) * n_new;
  const int64_t q_dim = hp_.n_head * hp_.head_dim, k_dim = hp_.n_head_kv * hp_.head_dim;
  const int64_t v_dim = hp_.n_head_kv * hp_.head_dim_v, o_dim = hp_.n_head * hp_.head_dim_v;
  std::vector<float> fill(size_t(rows * std::max({q_dim, k_dim, v_dim})));
  for (size_t i = 0; i < fill.size(); ++i) fill[i] = float(int(i % 13) - 6) * 0.05f;
  DeviceBuffer q(be, size_t(rows * q_dim) * sizeof(float)), k(be, size_t(rows * k_dim) * sizeof(float));
  DeviceBuffer v(be, size_t(rows * v_dim) * sizeof(float)), out(be, size_t(rows * o_dim) * sizeof(float));
  upload(be, q.data(), fill.data(), q.size());
  upload(be, k.data(), fill.data(), k.size());
  upload(be, v.data(), fill.data(), v.size());
  std::vector<tdm_attn_seq> seqs(static_cast<size_t>(n_seqs));
  for (int32_t i = 0; i < n_seqs; ++i)
    seqs[size_t(i)] = tdm_attn_seq{i * n_new, n_new, context, int32_t(per_seq), dtables.as<int32_t>() + int64_t(i) * per_seq};
  const tdm_kv_layer kv = pool.layer(0);
  const float scale = hp_.attn_scale;
  std::unique_lock<std::mutex> lock(cpu_mu_, std::defer_lock);
  if (on_cpu) lock.lock();
  auto layer_us = [&](int32_t window) {
    return median_us(iters, [&] {
      be->check(be->fn().kv_store(be->ctx(), &kv, k.as<float>(), v.as<float>(), seqs.data(), n_seqs, nullptr), "kv_store");
      be->check(be->fn().attention(be->ctx(), &kv, q.as<float>(), seqs.data(), n_seqs, int32_t(hp_.n_head), scale, hp_.attn_softcap, nullptr, window,
                                   out.as<float>(), nullptr),
                "attention");
      sync(be);
    });
  };
  // Sliding layers (gpt-oss) read at most their window: timed apart from the full ones.
  int64_t n_sliding = 0;
  for (int64_t l = 0; l < hp_.n_layer; ++l) n_sliding += hp_.is_swa(l) ? 1 : 0;
  const double full = n_sliding < hp_.n_layer ? layer_us(0) * double(hp_.n_layer - n_sliding) : 0.0;
  return full + (n_sliding > 0 ? layer_us(int32_t(std::min<int64_t>(hp_.n_swa, INT32_MAX))) * double(n_sliding) : 0.0);
}

double Model::time_copy(bool to_dev, size_t bytes, int iters) {
  if (bytes < 1 || bytes > (size_t(1) << 34)) throw Error(code::bad_argument, "bytes must be in [1, 2^34]");
  HostBuffer host;
  host.reserve(device_, bytes);
  DeviceBuffer dev(device_, bytes);
  std::fill_n(host.as<uint8_t>(), bytes, uint8_t(1));
  return median_us(iters, [&] {
    if (to_dev) {
      to_device(dev.data(), host.as<void>(), bytes);
      sync(device_);
    } else {
      to_host(host.as<void>(), dev.data(), bytes);
    }
  });
}

double Model::time_stream(int32_t n_blocks, int iters) {
  if (!streams_host_kv()) throw Error(code::unsupported, "this device does not stream host KV (no mapped host tier)");
  if (n_blocks < 1 || n_blocks > (1 << 20)) throw Error(code::bad_argument, "blocks must be in [1, 2^20]");
  const KvLayout& kl = layout_;
  const KvPool& host = pool(KvTier::host);
  // Distinct host blocks (a block read twice might come from the device's cache) into the
  // staging; beyond what it holds the time is scaled by blocks.
  const int32_t n = std::min(n_blocks, stream_blocks_max_);
  const size_t piece = kl.layer_k_bytes + kl.layer_v_bytes;
  void* staging = stream_staging_.data();
  std::vector<int32_t> src(static_cast<size_t>(n)), dst(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) src[size_t(i)] = dst[size_t(i)] = i;
  const tdm_backend_iface& f = device_->fn();
  const double us = median_us(iters, [&] {
    // Every layer's gather, back to back on the stream stream, as a step queues them.
    for (int64_t l = 0; l < hp_.n_layer; ++l) {
      const size_t at = size_t(static_cast<const uint8_t*>(host.layer(int32_t(l)).k) - static_cast<const uint8_t*>(host.base()));
      device_->check(f.copy_pieces(device_->ctx(), staging, piece, static_cast<const uint8_t*>(host_kv_on_device_) + at,
                                   kl.block_bytes, piece, src.data(), dst.data(), n, stream_stream_),
                     "copy_pieces");
    }
    device_->check(f.stream_sync(device_->ctx(), stream_stream_), "stream_sync");
  });
  return us * double(n_blocks) / double(n);
}

double Model::time_expert(bool on_cpu, int64_t rows, int iters, int32_t idle_us) {
  if (!experts_) throw Error(code::bad_argument, "expert timing needs a MoE model loaded with expert offload");
  if (rows < 1 || rows > 65535) throw Error(code::bad_argument, "rows must be in [1, 65535]");
  const ExpertOffload& xo = *experts_;
  Backend* be = on_cpu ? cpu_.get() : device_;
  const int64_t E = hp_.n_embd;
  // Each run reads another expert's weights, as a decode step does, so that no cache holds them:
  // every expert in turn on the CPU; on the device, the cache slots in turn (up to kSlots of them).
  constexpr size_t kSlots = 16;
  struct Target {
    ExpertViews views;
    int32_t id;
  };
  std::vector<Target> targets;
  for (int64_t l = 0; l < hp_.n_layer; ++l)
    for (int64_t e = 0; e < hp_.n_expert; ++e) {
      if (on_cpu) {
        targets.push_back(Target{xo.host_views(l), int32_t(e)});
      } else if (targets.size() < kSlots && xo.slot_of(l, e) >= 0) {
        targets.push_back(Target{xo.device_views(l), xo.slot_of(l, e)});
      }
    }
  if (targets.empty()) throw Error(code::unsupported, "no expert is in a device cache slot to time");
  const size_t n_ids = on_cpu ? size_t(hp_.n_expert) : targets.size();
  std::vector<int32_t> ids(n_ids * size_t(rows));
  for (size_t j = 0; j < n_ids; ++j) std::fill_n(ids.begin() + std::ptrdiff_t(j * size_t(rows)), rows, on_cpu ? int32_t(j) : targets[j].id);
  std::vector<float> x(size_t(rows * E)), ones(size_t(rows), 1.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 17) - 8) * 0.03f;
  DeviceBuffer dx(be, x.size() * sizeof(float)), dy(be, x.size() * sizeof(float));
  DeviceBuffer dids(be, ids.size() * sizeof(int32_t)), dw(be, ones.size() * sizeof(float));
  upload(be, dx.data(), x.data(), dx.size());
  upload(be, dids.data(), ids.data(), dids.size());
  upload(be, dw.data(), ones.data(), dw.size());
  std::unique_lock<std::mutex> lock(cpu_mu_, std::defer_lock);
  if (on_cpu) lock.lock();
  // The turn goes on from where the last timing left it: restarting at the first expert, a
  // calibration's dozens of timings read the same few slabs, and a last-level cache as large
  // as theirs (tens of MiB on a server) times them warm, several times faster than a step.
  size_t& next = on_cpu ? expert_time_cursor_[0] : expert_time_cursor_[1];
  // With idle_us the workers have gone to sleep before each run, as between the layers of a
  // step whose device work outlasts their spin: the run then pays their wake-up.
  const auto idle = [idle_us] {
    if (idle_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(idle_us));
  };
  return median_us_after(iters, [&] {
    const size_t i = next++ % targets.size();
    const Target& t = targets[i];
    const int32_t* run_ids = dids.as<int32_t>() + (on_cpu ? size_t(t.id) : i) * size_t(rows);
    be->check(be->fn().moe_ffn(be->ctx(), dx.as<float>(), rows, run_ids, dw.as<float>(), 1, &t.views.gate, &t.views.up, &t.views.down,
                               &t.views.opts, dy.as<float>(), nullptr),
              "moe_ffn");
    sync(be);
  }, idle);
}

void Model::set_expert_cost(const ExpertCost& c) {
  if (!experts_) throw Error(code::bad_argument, "expert costs need a MoE model loaded with expert offload");
  experts_->set_cost(c);
}

}  // namespace tdm
