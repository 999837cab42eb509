// Model loading (see model.h): map, bind, page in with progress, start the backends, place
// the weights, allocate KV; and the host staging buffers.
#include <algorithm>
#include <cstdlib>
#include <thread>
#include <unordered_set>

#include "backend/registry.h"
#include "core/error.h"
#include "core/ggml_types.h"
#include "core/model.h"

namespace tdm {

namespace {

// Reads one byte per page of every tensor so the first step does not stall on page faults,
// reporting the fraction of weight bytes touched. Tensors whose data is in `skip` are left
// out: the CPU backend copies them (packed or onto huge pages), which reads them anyway.
void page_in(const GgufFile& f, const std::unordered_set<const void*>& skip, const std::function<void(double)>& progress) {
  uint64_t total = 0;
  for (const GgufTensor& t : f.tensors())
    if (skip.count(f.tensor_data(t)) == 0) total += t.n_bytes;
  if (total == 0) {
    if (progress) progress(1.0);
    return;
  }
  uint64_t done = 0;
  double reported = -1.0;
  volatile uint8_t sink = 0;
  for (const GgufTensor& t : f.tensors()) {
    const uint8_t* p = f.tensor_data(t);
    if (skip.count(p) != 0) continue;
    for (uint64_t off = 0; off < t.n_bytes; off += 4096) {
      sink ^= p[off];
      if (((off >> 12) & 1023) == 1023 && progress) {
        const double frac = double(done + off) / double(total);
        if (frac - reported >= 0.01) {
          progress(frac);
          reported = frac;
        }
      }
    }
    done += t.n_bytes;
  }
  (void)sink;
  if (progress) progress(1.0);
}

// Readies every matrix the CPU will multiply (backend prepare_weight: the CPU backend repacks
// them for its kernels) so that the first request does not wait for it, reporting the
// fraction of those bytes done. Routed experts run from their own host slabs when expert
// offload is on, so their stacks are left alone then.
// The matrices the CPU multiplies: those not on the device, and the routed experts' stacks
// unless they run from their own host slabs.
std::vector<const tdm_weight*> host_matrices(const ModelWeights& exec, const WeightPlacement* placement, bool expert_slabs) {
  std::vector<const tdm_weight*> ws;
  auto add = [&](const tdm_weight& w) {
    if (present(w) && (placement == nullptr || !placement->on_device(w))) ws.push_back(&w);
  };
  for (const LayerWeights& l : exec.layers) {
    for (const tdm_weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down, &l.gate_inp,
                                &l.gate_inp_shexp, &l.gate_shexp, &l.up_shexp, &l.down_shexp})
      add(*w);
    if (!expert_slabs)
      for (const tdm_weight* w : {&l.gate_exps, &l.up_exps, &l.down_exps}) add(*w);
  }
  add(exec.output);
  return ws;
}

void prepare_host_weights(Backend& cpu, const ModelWeights& exec, const WeightPlacement* placement, bool expert_slabs,
                          const std::function<void(double)>& progress) {
  const auto prepare = cpu.fn().prepare_weight;
  if (prepare == nullptr) return;
  const std::vector<const tdm_weight*> ws = host_matrices(exec, placement, expert_slabs);
  uint64_t total = 0, done = 0;
  for (const tdm_weight* w : ws) total += uint64_t(w->row_bytes) * uint64_t(w->n_rows) * uint64_t(w->n_mats);
  for (const tdm_weight* w : ws) {
    cpu.check(prepare(cpu.ctx(), w), "prepare_weight");
    done += uint64_t(w->row_bytes) * uint64_t(w->n_rows) * uint64_t(w->n_mats);
    if (progress && total > 0) progress(double(done) / double(total));
  }
}

// Load progress: paging the file in, then readying the weights (slower, so most of the bar).
constexpr double kPageInShare = 0.25;

}  // namespace

void HostBuffer::reserve(Backend* pinner, size_t bytes) {
  if (bytes <= n_ && p_ != nullptr) return;
  reset();
  const size_t rounded = (std::max<size_t>(bytes, 64) + 63) / 64 * 64;
  if (pinner != nullptr && pinner->fn().host_alloc != nullptr) {
    pinner->check(pinner->fn().host_alloc(pinner->ctx(), rounded, &p_), "host_alloc");
    pinner_ = pinner;
  } else {
    p_ = std::aligned_alloc(64, rounded);
    if (p_ == nullptr) throw Error(code::oom, "cannot allocate " + std::to_string(bytes) + " bytes of host staging memory");
  }
  n_ = rounded;
}

void HostBuffer::reset() {
  if (p_ != nullptr) {
    if (pinner_ != nullptr) pinner_->fn().host_free(pinner_->ctx(), p_);
    else std::free(p_);
  }
  p_ = nullptr;
  pinner_ = nullptr;
  n_ = 0;
}

std::shared_ptr<Model> Model::load(const std::string& path, const ModelConfig& cfg,
                                   const std::function<void(double)>& progress) {
  validate_hparams(cfg.hp);
  if (cfg.kv_blocks_device < 0 || cfg.kv_blocks_host < 0) throw Error(code::bad_argument, "kvBlocks counts must not be negative");
  if (cfg.kv_blocks_device + int64_t(cfg.kv_blocks_host) == 0) throw Error(code::bad_argument, "kvBlocks must give at least one block");
  if (cfg.device != "none" && cfg.device != "auto" && cfg.device != "gpu" && cfg.device != "cpu-standin")
    throw Error(code::bad_argument, "device must be 'none', 'auto', 'gpu' or 'cpu-standin', got '" + cfg.device + "'");
  std::shared_ptr<Model> m(new Model());
  m->hp_ = cfg.hp;
  std::shared_ptr<GgufFile> file = GgufFile::open(path);
  m->weights_ = bind_weights(file, m->hp_);
  const auto page_in_progress = [&](double f) {
    if (progress) progress(kPageInShare * f);
  };
  const auto prepare_progress = [&](double f) {
    if (progress) progress(kPageInShare + (1.0 - kPageInShare) * f);
  };

  const char* variant = cfg.cpu_variant.empty() ? nullptr : cfg.cpu_variant.c_str();
  m->cpu_ = Backend::create_cpu(cfg.threads, variant);
  m->sample_threads_ = cfg.threads > 0 ? cfg.threads : std::max(1, int(std::thread::hardware_concurrency()));
  if (cfg.device == "cpu-standin") {
    // The same kernels as the host side, so that results are bit-identical wherever an op runs.
    m->device_owned_ = Backend::create_cpu(cfg.device_threads > 0 ? cfg.device_threads : 1, variant);
    m->device_kind_ = "cpu-standin";
  } else if (cfg.device == "gpu" || cfg.device == "auto") {
    BackendRegistry& reg = BackendRegistry::instance();
    bool usable = cfg.device == "gpu";
    for (const BackendCandidate& c : reg.candidates()) usable = usable || c.status == "selected";
    if (usable) {
      m->device_owned_ = reg.open();
      m->device_kind_ = m->device_owned_->kind();
    }
  }
  m->device_ = m->device_owned_ ? m->device_owned_.get() : m->cpu_.get();

  // f16 K and V by default, as llama.cpp's default cache type, so attention tracks llama.cpp.
  if (cfg.kv_type == "q8_0" && m->device_owned_ && m->device_kind_ != "cpu-standin")
    throw Error(code::unsupported, "a q8_0 KV cache runs on the CPU kernels only; the " + m->device_kind_ +
                                       " kernels read f16 K and V (use kvType 'f16' with a GPU)");
  const uint32_t kv_type = cfg.kv_type == "q8_0" ? uint32_t(GgmlType::Q8_0) : uint32_t(GgmlType::F16);
  m->layout_ = KvLayout::make(m->hp_, cfg.kv_block_tokens, kv_type, cfg.kv_split_sliding);
  m->pools_[int(KvTier::device)] = KvPool(m->device_, m->layout_, cfg.kv_blocks_device);
  m->pools_[int(KvTier::host)] = KvPool(m->cpu_.get(), m->layout_, cfg.kv_blocks_host);

  if (!m->has_device()) {
    // The matrices are read once, by their copy; the rest (norms, embeddings) are paged in.
    std::unordered_set<const void*> copied;
    if (m->cpu_->fn().prepare_weight != nullptr)
      for (const tdm_weight* w : host_matrices(m->weights_, nullptr, false)) copied.insert(w->data);
    page_in(*file, copied, page_in_progress);
    m->placement_.exec = m->weights_;
    m->placement_.device_bytes = m->weights_.bytes;
    prepare_host_weights(*m->cpu_, m->placement_.exec, nullptr, false, prepare_progress);
    return m;
  }
  page_in(*file, {}, page_in_progress);
  Backend* dev = m->device_;
  m->device_async_ = (dev->fn().caps(dev->ctx()) & TDM_CAP_ASYNC) != 0;
  const char* top_k_env = std::getenv("TANDEM_DEVICE_TOP_K");
  m->best_on_device_ = !dev->host_memory() && dev->fn().top_k_rows != nullptr && !(top_k_env && std::string(top_k_env) == "0");
  // The host tier mapped for the device, so that device attention can read host KV a layer at
  // a time beside its other work (streamed). Off without the ops, with TANDEM_KV_STREAM=0, or
  // where the OS will not lock the pool (then nothing else changes).
  const tdm_backend_iface& df = dev->fn();
  const KvPool& host_pool = m->pools_[int(KvTier::host)];
  const char* stream_env = std::getenv("TANDEM_KV_STREAM");
  const bool want_stream = cfg.kv_stream && m->device_async_ && !dev->host_memory() && df.host_register != nullptr &&
                           df.host_unregister != nullptr && df.copy_pieces != nullptr && host_pool.n_blocks() > 0 &&
                           !(stream_env != nullptr && std::string(stream_env) == "0");
  const size_t stream_piece = 2 * (m->layout_.layer_k_bytes + m->layout_.layer_v_bytes);  // a block's two staging slots
  // A step gains from streaming only what the link carries beside its pass: the default 128 MiB
  // holds two layers of 1024 blocks, 2 GiB of Llama-3.1-8B KV a step, some 90 ms of a PCIe 4 link.
  const int32_t stream_blocks =
      want_stream ? int32_t(std::min<size_t>(size_t(host_pool.n_blocks()), cfg.kv_stream_staging_bytes / stream_piece)) : 0;
  int64_t budget = cfg.device_weight_bytes;
  if (budget < 0 && !dev->host_memory()) {
    // All that fits beside the KV pool and the streaming staging, keeping room for activations and the runtime.
    uint64_t free_bytes = 0, total_bytes = 0;
    dev->check(dev->fn().memory(dev->ctx(), &free_bytes, &total_bytes), "memory");
    const int64_t reserve = std::max<int64_t>(int64_t(256) << 20, int64_t(free_bytes / 16));
    budget = std::max<int64_t>(0, int64_t(free_bytes) - reserve - int64_t(size_t(stream_blocks) * stream_piece));
  }
  if (cfg.experts.enabled && m->hp_.is_moe()) {
    // Routed experts at their turn in the placement order: host slabs and a slot cache in what is left.
    Model* mp = m.get();
    m->placement_ = place_weights(m->weights_, dev, budget, [&](int64_t left) {
      mp->experts_ = std::make_unique<ExpertOffload>(cfg.experts, mp->hp_, mp->weights_, dev, left);
      return uint64_t(mp->experts_->n_slots()) * uint64_t(mp->experts_->slot_bytes());
    });
  } else {
    m->placement_ = place_weights(m->weights_, dev, budget);
  }
  if (m->device_async_) {
    const tdm_backend_iface& f = dev->fn();
    if (f.stream_create == nullptr || f.event_create == nullptr || f.event_record == nullptr || f.stream_wait == nullptr ||
        f.event_sync == nullptr || f.stream_sync == nullptr)
      throw Error(code::unsupported, std::string("the ") + dev->kind() + " backend reports async ops but lacks streams or events");
    dev->check(f.stream_create(dev->ctx(), &m->copy_stream_), "stream_create");
    dev->check(f.event_create(dev->ctx(), &m->compute_done_), "event_create");
    dev->check(f.event_create(dev->ctx(), &m->copy_done_), "event_create");
    if (m->experts_) {
      dev->check(f.stream_create(dev->ctx(), &m->expert_stream_), "stream_create");
      dev->check(f.event_create(dev->ctx(), &m->expert_queued_), "event_create");
      dev->check(f.event_create(dev->ctx(), &m->expert_copied_), "event_create");
      dev->check(f.event_create(dev->ctx(), &m->routing_copied_), "event_create");
    }
  }
  if (want_stream) {
    // The staging first, in the room kept for it: a step may then stream up to stream_blocks
    // without allocating (where even that fails, the model runs without streaming). With no
    // staging the tier is still locked: swaps between the tiers then copy from locked memory.
    bool staged = stream_blocks > 0;
    if (staged) {
      try {
        m->stream_staging_ = DeviceBuffer(dev, size_t(stream_blocks) * stream_piece);
      } catch (const Error&) {
        staged = false;
      }
    }
    void* mapped = nullptr;
    const size_t bytes = m->layout_.block_bytes * size_t(host_pool.n_blocks());
    const auto t_lock = std::chrono::steady_clock::now();
    const tdm_status locked = df.host_register(dev->ctx(), host_pool.base(), bytes, &mapped);
    m->host_kv_lock_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_lock).count();
    // Locked without a device address: no use to the device, so the lock is given back.
    if (locked == TDM_STATUS_OK && mapped == nullptr) (void)df.host_unregister(dev->ctx(), host_pool.base());
    if (locked != TDM_STATUS_OK || mapped == nullptr) {
      m->stream_staging_.reset();
    } else {
      m->host_kv_on_device_ = mapped;
      if (staged) {
        m->stream_blocks_max_ = stream_blocks;
        dev->check(df.stream_create(dev->ctx(), &m->stream_stream_), "stream_create");
        for (BatchBuffers& b : m->batches_)
          for (int slot = 0; slot < 2; ++slot) {
            dev->check(df.event_create(dev->ctx(), &b.staged[slot]), "event_create");
            dev->check(df.event_create(dev->ctx(), &b.staging_free[slot]), "event_create");
          }
      }
    }
  }
  prepare_host_weights(*m->cpu_, m->placement_.exec, &m->placement_, m->experts_ != nullptr, prepare_progress);
  m->worker_ = std::make_unique<CpuWorker>();
  return m;
}

Model::~Model() {
  worker_.reset();
  if (device_owned_) {
    const tdm_backend_iface& f = device_owned_->fn();
    tdm_backend_ctx* c = device_owned_->ctx();
    if (f.synchronize != nullptr) (void)f.synchronize(c);
    // The expert offload goes once the queues have drained (copies read its host slabs until
    // then) and before the streams and events below: its slab stream drains on expert_stream_.
    experts_.reset();
    if (compute_done_ != nullptr) f.event_destroy(c, compute_done_);
    if (copy_done_ != nullptr) f.event_destroy(c, copy_done_);
    if (copy_stream_ != nullptr) f.stream_destroy(c, copy_stream_);
    if (expert_queued_ != nullptr) f.event_destroy(c, expert_queued_);
    if (expert_copied_ != nullptr) f.event_destroy(c, expert_copied_);
    if (routing_copied_ != nullptr) f.event_destroy(c, routing_copied_);
    if (expert_stream_ != nullptr) f.stream_destroy(c, expert_stream_);
    for (BatchBuffers& b : batches_)
      for (int slot = 0; slot < 2; ++slot) {
        if (b.staged[slot] != nullptr) f.event_destroy(c, b.staged[slot]);
        if (b.staging_free[slot] != nullptr) f.event_destroy(c, b.staging_free[slot]);
      }
    if (stream_stream_ != nullptr) f.stream_destroy(c, stream_stream_);
    if (host_kv_on_device_ != nullptr) f.host_unregister(c, pools_[int(KvTier::host)].base());
  }
  experts_.reset();  // with no device (nothing above ran)
  // Staging memory may belong to the device's allocator: free it while the device lives.
  for (BatchBuffers& b : batches_)
    for (HostBuffer* h : {&b.hq, &b.hk, &b.hv, &b.hout, &b.h_ids, &b.h_w, &b.h_x, &b.h_xc, &b.h_yc, &b.h_cids, &b.h_ones, &b.h_up, &b.h_defer}) h->reset();
  for (HostBuffer* h : {&stage_x_, &stage_y_, &stage_ids_, &stage_w_}) h->reset();
}

std::vector<std::string> Model::backends() const {
  std::vector<std::string> out{cpu_->kind()};
  if (has_device()) out.push_back(device_kind_);
  return out;
}

std::string Model::device_name() const {
  if (!has_device()) return "";
  const std::string name = device_->device_name();
  return device_kind_ == "cpu-standin" ? "CPU stand-in for a GPU: " + name : name;
}

}  // namespace tdm
