// Expert offload state (see experts.h): host slabs, the device slot cache, scores mirroring
// src/sched/experts/cache.ts, the copy threshold n* from calibrated costs (cost.ts), and the
// slab streamer that fills slots beside the device's compute in steps of several tokens.
#include "core/experts.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace tdm {

namespace {

constexpr size_t kSlabAlign = 256;  // offsets inside a slab: aligned for every kernel's vector loads

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// The GPU grouped expert FFN takes at most this many matrices in one stack (kernels/moe.cu).
constexpr int64_t kMaxDeviceSlots = 6144;

// Drops the mapping's resident pages of [p, p + n) (the file stays; a later read faults them back in).
void release_pages(const void* p, size_t n) {
  const long page = sysconf(_SC_PAGESIZE);
  if (page <= 0 || n == 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lo = (a + uintptr_t(page) - 1) / uintptr_t(page) * uintptr_t(page);
  const uintptr_t hi = (a + n) / uintptr_t(page) * uintptr_t(page);
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

// The smallest routed-row count at which copying a slab of `slab` bytes and running it on
// the device finishes before running it on the CPU with its activations moved both ways
// (cost.ts crossoverTokens, solved in closed form for linear costs).
double crossover(const ExpertCost& c, double slab, double act_bytes_per_row) {
  const double bw = c.link_bytes_per_us;
  const double r = slab / bw + c.gpu_fixed_us - c.cpu_fixed_us - c.cpu_call_us - c.link_latency_us;
  const double d = c.cpu_us_per_token + 2.0 * act_bytes_per_row / bw - c.gpu_us_per_token;
  if (r < 0) return 1;
  if (d <= 0) return std::numeric_limits<double>::infinity();
  return std::floor(r / d) + 1;
}

// `what` names the costs in the message: experts.cost at load, the expert cost later.
void validate_cost(const ExpertCost& c, const char* what) {
  if (!(c.link_bytes_per_us > 0) || !std::isfinite(c.link_bytes_per_us))
    throw Error(code::bad_argument, std::string(what) + ": linkBytesPerUs must be a finite positive number");
  for (double x : {c.cpu_fixed_us, c.cpu_us_per_token, c.cpu_call_us, c.gpu_fixed_us, c.gpu_us_per_token, c.link_latency_us})
    if (!(x >= 0) || !std::isfinite(x)) throw Error(code::bad_argument, std::string(what) + ": every time must be a finite non-negative number");
}

}  // namespace

ExpertOffload::ExpertOffload(const ExpertConfig& cfg, const Hparams& hp, const ModelWeights& w, Backend* device,
                             int64_t budget_bytes)
    : cfg_(cfg), n_layer_(hp.n_layer), n_expert_(hp.n_expert), device_(device) {
  if (!(cfg.decay > 0 && cfg.decay <= 1)) throw Error(code::bad_argument, "experts.decay must be in (0, 1]");
  if (!(cfg.admit_margin >= 1)) throw Error(code::bad_argument, "experts.admitMargin must be at least 1");
  if (cfg.cpu_layers < 0) throw Error(code::bad_argument, "experts.cpuLayers must not be negative");
  if (cfg.has_cost) validate_cost(cfg.cost, "experts.cost");
  act_.glu = hp.swiglu_oai ? TDM_GLU_SWIGLU_OAI : TDM_GLU_SWIGLU;
  act_.alpha = hp.swiglu_oai_alpha;
  act_.limit = hp.swiglu_oai_limit;
  const int64_t n_keys = n_layer_ * n_expert_;
  if (!cfg.initial_scores.empty() && int64_t(cfg.initial_scores.size()) != n_keys)
    throw Error(code::bad_argument, "experts.initialScores must hold nLayer * nExpert = " + std::to_string(n_keys) + " scores");

  // A failure after some slabs exist frees them (the destructor does not run for a failed constructor).
  try {
    // Host slabs: gate, up and down of one expert back to back, so a copy is one transfer. Only
    // the dynamic policy copies after loading; static policies whose CPU experts read the mapping
    // fill their slots from it and keep no slabs (as much host RAM as llama.cpp's strategies).
    slabs_ = cfg.policy == ExpertPolicy::dynamic || !cfg.cpu_reads_mapping;
    const bool can_pin = device->fn().host_alloc != nullptr && device->fn().host_free != nullptr;
    layers_.resize(size_t(n_layer_));
    for (int64_t l = 0; l < n_layer_; ++l) {
      const LayerWeights& L = w.layers[size_t(l)];
      Layer& y = layers_[size_t(l)];
      y.part[kGate] = L.gate_exps;
      y.part[kUp] = L.up_exps;
      y.part[kDown] = L.down_exps;
      y.part[kGateBias] = bias_stack(L.gate_exps_b, hp.n_ff_expert);
      y.part[kUpBias] = bias_stack(L.up_exps_b, hp.n_ff_expert);
      y.part[kDownBias] = bias_stack(L.down_exps_b, hp.n_embd);
      for (int i = 0; i < kParts; ++i) {
        y.off[i] = y.slab;
        if (present(y.part[i])) y.slab += round_up(y.part[i].mat_bytes, kSlabAlign);
      }
      slot_bytes_ = std::max(slot_bytes_, y.slab);
      if (!slabs_) continue;
      const size_t total = y.slab * size_t(n_expert_);
      void* p = nullptr;
      // Page-locked where the device allows it (fast copies); ordinary memory when the OS refuses.
      if (can_pin && device->fn().host_alloc(device->ctx(), total, &p) == TDM_STATUS_OK && p != nullptr) {
        y.pinned = true;
      } else {
        p = std::aligned_alloc(kSlabAlign, total);
        if (p == nullptr) throw Error(code::oom, "cannot allocate " + std::to_string(total) + " bytes of host memory for expert slabs");
      }
      y.host = static_cast<uint8_t*>(p);
      for (int64_t e = 0; e < n_expert_; ++e)
        for (int i = 0; i < kParts; ++i)
          if (present(y.part[i]))
            std::memcpy(y.host + size_t(e) * y.slab + y.off[i], static_cast<const uint8_t*>(y.part[i].data) + size_t(e) * y.part[i].mat_bytes,
                        y.part[i].mat_bytes);
      if (!cfg.cpu_reads_mapping)
        for (int i = kGate; i <= kDown; ++i) release_pages(y.part[i].data, y.part[i].mat_bytes * size_t(y.part[i].n_mats));
      host_bytes_ += total;
    }

    // Copy thresholds (under the makespan rule, only reported).
    act_bytes_per_row_ = 4.0 * double(hp.n_embd);
    n_star_.assign(size_t(n_layer_), std::numeric_limits<double>::infinity());
    for (int64_t l = 0; l < n_layer_; ++l) {
      if (cfg.n_star >= 0) n_star_[size_t(l)] = cfg.n_star;
      else if (cfg.has_cost) n_star_[size_t(l)] = crossover(cfg.cost, double(layers_[size_t(l)].slab), 4.0 * double(hp.n_embd));
    }

    // Slots: as many as the budget holds, no more than the experts that may live there.
    int64_t eligible = 0;
    if (cfg.policy == ExpertPolicy::dynamic) eligible = n_keys;
    else if (cfg.policy == ExpertPolicy::cpu_first_layers) eligible = std::max<int64_t>(0, n_layer_ - cfg.cpu_layers) * n_expert_;
    int64_t n = eligible;
    if (budget_bytes >= 0 && slot_bytes_ > 0) n = std::min<int64_t>(n, budget_bytes / int64_t(slot_bytes_));
    if (cfg.max_slots >= 0) n = std::min(n, cfg.max_slots);
    if (!device->host_memory()) n = std::min(n, kMaxDeviceSlots);
    n_slots_ = std::max<int64_t>(n, 0);
    if (n_slots_ > 0) cache_ = DeviceBuffer(device, size_t(n_slots_) * slot_bytes_);
    key_of_slot_.assign(size_t(n_slots_), -1);
    slot_of_.assign(size_t(n_keys), -1);
    per_layer_.assign(size_t(n_layer_), 0);
    guard_.assign(size_t(n_slots_), 0);
    pending_.assign(size_t(n_slots_), 0);
    prefetched_.assign(size_t(n_slots_), 0);
    mass_.assign(size_t(n_keys), 0);
    uses_.assign(size_t(n_keys), 0);
    mass_step_.assign(size_t(n_keys), 0);
    last_use_.assign(size_t(n_keys), -1);
    if (!cfg.initial_scores.empty())
      for (int64_t k = 0; k < n_keys; ++k) mass_[size_t(k)] = cfg.initial_scores[size_t(k)];
    fill();
  } catch (...) {
    free_slabs();
    throw;
  }
}

ExpertOffload::~ExpertOffload() {
  stream_.reset();
  free_slabs();
}

void ExpertOffload::free_slabs() {
  for (Layer& y : layers_) {
    if (y.host == nullptr) continue;
    if (y.pinned) device_->fn().host_free(device_->ctx(), y.host);
    else std::free(y.host);
    y.host = nullptr;
  }
}

const char* ExpertOffload::policy_name() const {
  switch (cfg_.policy) {
    case ExpertPolicy::dynamic: return "dynamic";
    case ExpertPolicy::cpu_all: return "cpu-all";
    case ExpertPolicy::cpu_first_layers: return "cpu-first-layers";
  }
  return "dynamic";
}

void ExpertOffload::fill() {
  std::vector<int64_t> order;
  if (cfg_.policy == ExpertPolicy::cpu_first_layers) {
    for (int64_t l = cfg_.cpu_layers; l < n_layer_; ++l)
      for (int64_t e = 0; e < n_expert_; ++e) order.push_back(l * n_expert_ + e);
  } else if (cfg_.policy == ExpertPolicy::dynamic) {
    if (!cfg_.initial_scores.empty()) {
      order.resize(size_t(n_layer_ * n_expert_));
      std::iota(order.begin(), order.end(), int64_t(0));
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return mass_[size_t(a)] > mass_[size_t(b)]; });
    } else if (n_slots_ >= n_layer_ * n_expert_) {
      // Everything fits: each layer's experts in consecutive slots, so a layer runs with no detour.
      for (int64_t k = 0; k < n_layer_ * n_expert_; ++k) order.push_back(k);
    } else {
      // No history: an even share of every layer.
      for (int64_t e = 0; e < n_expert_; ++e)
        for (int64_t l = 0; l < n_layer_; ++l) order.push_back(l * n_expert_ + e);
    }
  }
  const int64_t n = std::min<int64_t>(n_slots_, int64_t(order.size()));
  for (int64_t s = 0; s < n; ++s) {
    const int64_t key = order[size_t(s)];
    assign(int32_t(s), key);
    const int64_t l = key / n_expert_, e = key % n_expert_;
    uint8_t* slot = cache_.as<uint8_t>() + size_t(s) * slot_bytes_;
    if (slabs_) {
      device_->check(device_->fn().copy_h2d(device_->ctx(), slot, host_slab(l, e), layers_[size_t(l)].slab, nullptr), "copy_h2d");
      continue;
    }
    // No slabs: each part from its stack in the mapping, to its place in the slot.
    const Layer& y = layers_[size_t(l)];
    for (int i = 0; i < kParts; ++i) {
      const tdm_weight& m = y.part[i];
      if (!present(m)) continue;
      device_->check(device_->fn().copy_h2d(device_->ctx(), slot + y.off[i], static_cast<const uint8_t*>(m.data) + size_t(e) * m.mat_bytes,
                                            m.mat_bytes, nullptr),
                     "copy_h2d");
    }
  }
  if (device_->fn().synchronize != nullptr) device_->check(device_->fn().synchronize(device_->ctx()), "synchronize");
}

void ExpertOffload::assign(int32_t slot, int64_t key) {
  const int64_t old = key_of_slot_[size_t(slot)];
  if (old >= 0) {
    slot_of_[size_t(old)] = -1;
    per_layer_[size_t(old / n_expert_)]--;
  }
  key_of_slot_[size_t(slot)] = key;
  slot_of_[size_t(key)] = slot;
  prefetched_[size_t(slot)] = 0;
  per_layer_[size_t(key / n_expert_)]++;
}

int64_t ExpertOffload::resident() const {
  int64_t n = 0;
  for (int64_t k : key_of_slot_) n += k >= 0 ? 1 : 0;
  return n;
}

ExpertViews ExpertOffload::views(const Layer& y, const uint8_t* base, size_t stride, int64_t n_mats) const {
  ExpertViews v{};
  v.opts = act_;
  tdm_weight* dst[kParts] = {&v.gate, &v.up, &v.down, &v.opts.gate_bias, &v.opts.up_bias, &v.opts.down_bias};
  for (int i = 0; i < kParts; ++i) {
    if (!present(y.part[i])) continue;
    *dst[i] = y.part[i];
    dst[i]->data = base + y.off[i];
    dst[i]->mat_bytes = stride;
    dst[i]->n_mats = n_mats;
  }
  return v;
}

ExpertViews ExpertOffload::device_views(int64_t l) const {
  return views(layers_[size_t(l)], cache_.as<uint8_t>(), slot_bytes_, n_slots_);
}

ExpertViews ExpertOffload::device_views(int64_t l, int32_t base, int64_t n) const {
  return views(layers_[size_t(l)], cache_.as<uint8_t>() + size_t(base) * slot_bytes_, slot_bytes_, n);
}

int32_t ExpertOffload::contiguous_base(int64_t l) const {
  const int32_t base = slot_of(l, 0);
  if (base < 0) return -1;
  for (int64_t e = 1; e < n_expert_; ++e)
    if (slot_of(l, e) != base + int32_t(e)) return -1;
  return base;
}

ExpertViews ExpertOffload::host_views(int64_t l) const {
  const Layer& y = layers_[size_t(l)];
  if (!cfg_.cpu_reads_mapping) return views(y, y.host, y.slab, n_expert_);
  // The mapping's stacks as they are.
  return ExpertViews{y.part[kGate], y.part[kUp], y.part[kDown],
                     tdm_moe_opts{act_.glu, act_.alpha, act_.limit, y.part[kGateBias], y.part[kUpBias], y.part[kDownBias]}};
}

ExpertViews ExpertOffload::views_at(int64_t l, const void* slab) const {
  const Layer& y = layers_[size_t(l)];
  return views(y, static_cast<const uint8_t*>(slab), y.slab, 1);
}

int32_t ExpertOffload::prefetch_fit(int64_t next_layer, double window) const {
  const int32_t cap = cfg_.prefetch_per_layer;
  if (!cfg_.prefetch_when_idle || !cfg_.has_cost) return cap;
  const double fit = std::floor(std::max(0.0, window) / copy_us(next_layer));
  const int32_t n = fit >= double(n_expert_) ? int32_t(n_expert_) : int32_t(std::max(0.0, fit));
  return cap > 0 ? std::min(cap, n) : n;
}

void ExpertOffload::set_cost(const ExpertCost& c) {
  validate_cost(c, "expert cost");
  cfg_.cost = c;
  cfg_.has_cost = true;
  cfg_.n_star = -1;
  for (int64_t l = 0; l < n_layer_; ++l) n_star_[size_t(l)] = crossover(c, double(layers_[size_t(l)].slab), act_bytes_per_row_);
}

const void* ExpertOffload::host_slab(int64_t l, int64_t e) const {
  const Layer& y = layers_[size_t(l)];
  return y.host + size_t(e) * y.slab;
}

void ExpertOffload::record(int64_t l, const std::vector<int32_t>& rows, const std::vector<double>& prob) {
  for (int64_t e = 0; e < n_expert_; ++e) {
    if (rows[size_t(e)] == 0) continue;
    const size_t k = size_t(l * n_expert_ + e);
    mass_[k] = mass_[k] * std::pow(cfg_.decay, double(step_ - mass_step_[k])) + prob[size_t(e)];
    mass_step_[k] = step_;
    uses_[k] += rows[size_t(e)];
    last_use_[k] = step_;
  }
}

double ExpertOffload::score(int64_t l, int64_t e) const {
  const size_t k = size_t(l * n_expert_ + e);
  if (cfg_.scoring == ExpertScoring::decayed_probability) return mass_[k] * std::pow(cfg_.decay, double(step_ - mass_step_[k]));
  return last_use_[k] < 0 ? 0.0 : uses_[k] / double(1 + step_ - last_use_[k]);
}

std::vector<uint8_t> ExpertOffload::copy_choice(int64_t l, const std::vector<int32_t>& missing, const std::vector<int32_t>& rows,
                                               double device_us) const {
  std::vector<uint8_t> copy(missing.size(), 0);
  if (!may_copy()) return copy;
  if (!makespan()) {
    for (size_t i = 0; i < missing.size(); ++i) copy[i] = double(rows[size_t(missing[i])]) >= n_star_[size_t(l)] ? 1 : 0;
    return copy;
  }
  const ExpertCost& c = cfg_.cost;
  const double slab_us = c.link_latency_us + double(layers_[size_t(l)].slab) / c.link_bytes_per_us;
  double link = 0, dev = device_us, cpu = 0;
  bool cpu_called = false;  // the layer's CPU call is paid once, by its first CPU expert
  for (size_t i = 0; i < missing.size(); ++i) {
    const double n = double(rows[size_t(missing[i])]);
    const double dev_done = std::max(link + slab_us, dev) + c.gpu_fixed_us + c.gpu_us_per_token * n;
    const double cpu_done = cpu + (cpu_called ? 0.0 : c.cpu_call_us) + c.cpu_fixed_us + c.cpu_us_per_token * n +
                            2.0 * (c.link_latency_us + n * act_bytes_per_row_ / c.link_bytes_per_us);
    if (dev_done < cpu_done) {
      copy[i] = 1;
      link += slab_us;
      dev = dev_done;
    } else {
      cpu = cpu_done;
      cpu_called = true;
    }
  }
  return copy;
}

double ExpertOffload::rank(int64_t key) const {
  const size_t k = size_t(key);
  if (cfg_.scoring == ExpertScoring::decayed_probability) {
    // log(score) less step * log(decay): ordered as the scores are at any one step, with no pow().
    if (mass_[k] <= 0) return -std::numeric_limits<double>::infinity();
    return std::log(mass_[k]) - double(mass_step_[k]) * std::log(cfg_.decay);
  }
  return last_use_[k] < 0 ? 0.0 : uses_[k] / double(1 + step_ - last_use_[k]);
}

int32_t ExpertOffload::take_slot(int64_t l, int64_t e, double margin, ExpertStats* st) {
  const int64_t key = l * n_expert_ + e;
  if (slot_of_[size_t(key)] >= 0) return slot_of_[size_t(key)];
  int32_t best = -1;
  double best_rank = std::numeric_limits<double>::infinity();
  for (int64_t s = 0; s < n_slots_; ++s) {
    const int64_t k = key_of_slot_[size_t(s)];
    if (k < 0) {
      assign(int32_t(s), key);
      return int32_t(s);
    }
    if (guard_[size_t(s)] == stamp_) continue;
    const double r = rank(k);
    if (r < best_rank) {
      best = int32_t(s);
      best_rank = r;
    }
  }
  if (best < 0) return -1;
  if (margin > 0) {
    const double victim = score(key_of_slot_[size_t(best)] / n_expert_, key_of_slot_[size_t(best)] % n_expert_);
    if (!(score(l, e) > margin * victim)) return -1;
  }
  assign(best, key);
  st->evictions++;
  return best;
}

SlabStream::SlabStream(Backend* device, tdm_stream* lane) : device_(device), lane_(lane) {
  const tdm_backend_iface& f = device->fn();
  async_ = (f.caps(device->ctx()) & TDM_CAP_ASYNC) != 0;
  if (async_) {
    if (lane == nullptr || f.event_create == nullptr || f.event_record == nullptr || f.stream_wait == nullptr || f.stream_sync == nullptr)
      throw Error(code::unsupported, std::string("the ") + device->kind() + " backend lacks the streams or events expert streaming needs");
    try {
      device->check(f.event_create(device->ctx(), &queued_), "event_create");
      for (int b = 0; b < kBuffers; ++b) {
        device->check(f.event_create(device->ctx(), &filled_[b]), "event_create");
        device->check(f.event_create(device->ctx(), &read_[b]), "event_create");
      }
    } catch (...) {
      for (tdm_event* e : {queued_, filled_[0], filled_[1], read_[0], read_[1]})
        if (e != nullptr) f.event_destroy(device->ctx(), e);
      throw;
    }
  } else if (device->host_memory()) {
    copier_ = std::make_unique<HostCopier>(kBuffers);
  }
}

SlabStream::~SlabStream() {
  drain();
  copier_.reset();
  if (!async_) return;
  const tdm_backend_iface& f = device_->fn();
  for (tdm_event* e : {queued_, filled_[0], filled_[1], read_[0], read_[1]})
    if (e != nullptr) f.event_destroy(device_->ctx(), e);
}

void SlabStream::begin() {
  std::fill(std::begin(released_), std::end(released_), false);
  if (!async_) return;
  const tdm_backend_iface& f = device_->fn();
  device_->check(f.event_record(device_->ctx(), queued_, nullptr), "event_record");
  device_->check(f.stream_wait(device_->ctx(), lane_, queued_), "stream_wait");
}

void SlabStream::issue(int b, void* dst, const void* src, size_t bytes) {
  issued_at_[b] = computes_;
  const tdm_backend_iface& f = device_->fn();
  tdm_backend_ctx* c = device_->ctx();
  if (async_) {
    if (released_[b]) device_->check(f.stream_wait(c, lane_, read_[b]), "stream_wait");
    device_->check(f.copy_h2d(c, dst, src, bytes, lane_), "copy_h2d");
    device_->check(f.event_record(c, filled_[b], lane_), "event_record");
  } else if (copier_) {
    // Host memory on both sides: a plain memcpy on the copier thread, beside the driver's compute.
    copier_->fill(b, dst, src, bytes);
  } else {
    device_->check(f.copy_h2d(c, dst, src, bytes, nullptr), "copy_h2d");
  }
}

bool SlabStream::acquire(int b) {
  if (async_) device_->check(device_->fn().stream_wait(device_->ctx(), nullptr, filled_[b]), "stream_wait");
  else if (copier_) copier_->wait(b);
  return computes_ > issued_at_[b];
}

void SlabStream::release(int b) {
  if (!async_) return;
  device_->check(device_->fn().event_record(device_->ctx(), read_[b], nullptr), "event_record");
  released_[b] = true;
}

void SlabStream::drain() noexcept {
  if (async_) {
    (void)device_->fn().stream_sync(device_->ctx(), lane_);
  } else if (copier_) {
    try {
      copier_->finish();
    } catch (...) {
      // Only a failing mutex could throw here; the step has failed already.
    }
  }
}

HostCopier::HostCopier(int n_buffers) : jobs_(size_t(n_buffers)), thread_([this] { main(); }) {}

HostCopier::~HostCopier() {
  finish();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();
}

void HostCopier::fill(int b, void* dst, const void* src, size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Job& j = jobs_[size_t(b)];
    j.dst = dst;
    j.src = src;
    j.bytes = bytes;
    j.state = State::queued;
    j.order = next_order_++;
  }
  work_.notify_one();
}

void HostCopier::wait(int b) {
  std::unique_lock<std::mutex> lock(mu_);
  Job& j = jobs_[size_t(b)];
  if (j.state == State::queued) {
    j.state = State::running;
    lock.unlock();
    std::memcpy(j.dst, j.src, j.bytes);
    lock.lock();
    j.state = State::idle;
    done_.notify_all();
    return;
  }
  done_.wait(lock, [&] { return j.state == State::idle; });
}

void HostCopier::finish() {
  for (int b = 0; b < int(jobs_.size()); ++b) wait(b);
}

void HostCopier::main() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    Job* next = nullptr;
    work_.wait(lock, [&] {
      next = nullptr;
      for (Job& j : jobs_)
        if (j.state == State::queued && (next == nullptr || j.order < next->order)) next = &j;
      return stop_ || next != nullptr;
    });
    if (next == nullptr) return;  // stop_ with nothing queued
    next->state = State::running;
    lock.unlock();
    std::memcpy(next->dst, next->src, next->bytes);
    lock.lock();
    next->state = State::idle;
    done_.notify_all();
  }
}

}  // namespace tdm
