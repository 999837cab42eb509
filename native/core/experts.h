// MoE expert offload (issue 9): routed experts kept as one contiguous slab per expert
// (gate, up, down) in host RAM, a device expert cache of N slab-sized slots filled by score,
// and the per-step choice for every active expert of where it runs: resident on the device,
// copied to a cache slot and run there, or run on the CPU (its activations move, not its
// weights). Steps of several tokens stream their copies through two slots beside the device's
// compute (SlabStream). This file holds the state and the decisions; the execution is the
// executor's Model::routed_experts (executor.cpp).
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend_handle.h"
#include "core/hparams.h"
#include "core/model_weights.h"
#include "core/step.h"

namespace tdm {

// How experts are placed and chosen. dynamic: the cache (filled by score) plus the per-expert
// copy-or-CPU choice; cpu_all: every routed expert on the CPU (llama.cpp --cpu-moe);
// cpu_first_layers: the first cpu_layers layers' experts on the CPU, the others resident
// while the budget lasts, never copied (llama.cpp --n-cpu-moe N).
enum class ExpertPolicy { dynamic, cpu_all, cpu_first_layers };
enum class ExpertScoring { decayed_probability, frequency_lru };

// Calibrated costs of one expert (the TypeScript ExpertCostModel as linear fits).
struct ExpertCost {
  double cpu_fixed_us = 0;       // CPU expert FFN: fixed part (weight streaming), µs
  double cpu_us_per_token = 0;   // CPU expert FFN: per routed row, µs
  // Once per layer that runs any expert on the CPU, µs: what a step pays beyond the experts'
  // own times (waking the thread pool after it slept through the device's work, the call).
  double cpu_call_us = 0;
  double gpu_fixed_us = 0;       // device expert FFN, weights resident: fixed part, µs
  double gpu_us_per_token = 0;   // device expert FFN: per routed row, µs
  double link_latency_us = 0;    // one host<->device copy: latency, µs
  double link_bytes_per_us = 0;  // one host<->device copy: bandwidth, bytes/µs
};

struct ExpertConfig {
  bool enabled = false;  // false: routed experts are placed as whole stacks like other weights
  ExpertPolicy policy = ExpertPolicy::dynamic;
  int32_t cpu_layers = 0;        // cpu_first_layers: layers [0, cpu_layers) on the CPU
  double n_star = -1;            // copy a missing expert when it has >= n_star routed rows; < 0: from cost
  bool has_cost = false;
  ExpertCost cost;
  ExpertScoring scoring = ExpertScoring::decayed_probability;
  double decay = 0.9;            // per-step decay of decayed_probability, in (0, 1]
  int64_t max_slots = -1;        // cap on cache slots (< 0: all the budget holds)
  int32_t admit_per_layer = 1;   // dynamic: CPU-run experts per layer and step that may replace a lower-scored resident one
  int32_t prefetch_per_layer = 0;  // dynamic: the next layer's highest-scored missing experts copied per layer and step
  // dynamic with costs: prefetch while the link would idle, as many slabs as copy in the
  // predicted time of the layer's own experts (at most prefetch_per_layer when that is > 0).
  bool prefetch_when_idle = false;
  // dynamic with prefetch: rank the next layer's candidates by its router applied to this
  // layer's hidden state (after attention, normed with the next layer's FFN norm) before their
  // scores, so that the experts the next layer is likely to route to this step move first.
  bool pregate = false;
  // dynamic with prefetch: issue the next layer's prefetch as soon as this layer's routing is
  // known, beside this layer's experts (CPU and device) and after its own copies, rather than
  // after its experts and only when it copied nothing. The window it fills is the time until the
  // next layer's routing (measured) plus this layer's expert time, less the link time its own
  // copies take. Not in steps that stream their copies (prefill).
  bool prefetch_early = false;
  double admit_margin = 2.0;     // ... when their score exceeds the resident one's times this (2 halved the copies of
                                 // 1 for about the same hit rate on the synthetic test MoEs)
  std::vector<double> initial_scores;  // n_layer * n_expert scores for the first fill (empty: round-robin over layers)
  // Where CPU-run experts read their weights: the file mapping (true: the CPU backend repacks
  // it once, on first use, for its packed kernels; about 1.8x faster per decode layer than the
  // slabs on the H200 host, and fair to the llama.cpp baselines, which repack too; under the
  // dynamic policy host RAM then holds both), or the slabs (false: half the host RAM).
  bool cpu_reads_mapping = true;
};

// Where one layer's experts are, as op-ready matrix stacks: expert (or slot) m of the stack
// is at data + m * mat_bytes, gate, up and down of one slab mat_bytes apart from the next.
struct ExpertViews {
  tdm_weight gate{}, up{}, down{};
  tdm_moe_opts opts{};  // the activation, and the biases viewed like the matrices
};

// Host-to-host fills for a synchronous device whose memory is host memory (the CPU stand-in):
// a thread copies while the driver computes, one fill per buffer at a time, in issue order. A
// fill the thread has not started when the driver needs it is copied by the driver itself, so
// that waiting for a thread that has no core (a busy host) never costs more than the copy.
class HostCopier {
 public:
  explicit HostCopier(int n_buffers);
  // Finishes the fills queued, then joins the thread.
  ~HostCopier();
  HostCopier(const HostCopier&) = delete;
  HostCopier& operator=(const HostCopier&) = delete;

  // Queues a copy of `bytes` from src to dst as buffer b's fill (b must have none in flight).
  void fill(int b, void* dst, const void* src, size_t bytes);
  // Returns once buffer b's fill (if any) is done, copying it here if the thread has not begun it.
  void wait(int b);
  // Every fill in flight done.
  void finish();

 private:
  enum class State { idle, queued, running };
  struct Job {
    void* dst = nullptr;
    const void* src = nullptr;
    size_t bytes = 0;
    State state = State::idle;
    uint64_t order = 0;  // issue order among queued fills
  };
  void main();

  std::mutex mu_;
  std::condition_variable work_, done_;
  std::vector<Job> jobs_;  // per buffer
  uint64_t next_order_ = 0;
  bool stop_ = false;
  std::thread thread_;     // last: started once the state above exists
};

// Streams expert slabs into cache slots beside the device's compute, through kBuffers
// buffers (double buffering, issue 9 item 5): fill b, run the expert that reads it, release b,
// refill it. On an async device the fills go on a copy stream and the compute stream waits on
// an event per buffer only before the expert that reads it; on a synchronous device whose
// memory is host memory (the CPU stand-in) a HostCopier fills while the driver computes;
// on any other device each fill is a plain copy.
class SlabStream {
 public:
  static constexpr int kBuffers = 2;
  // lane: the async device's copy stream (unused otherwise). Throws tdm::Error.
  SlabStream(Backend* device, tdm_stream* lane);
  // Waits for the fills in flight, then frees the events and the copier thread.
  ~SlabStream();
  SlabStream(const SlabStream&) = delete;
  SlabStream& operator=(const SlabStream&) = delete;

  // Starts a layer's fills: they wait for the device work queued so far (it may read the slots they fill).
  void begin();
  // Queues `bytes` from host `src` into device `dst` as buffer b's next fill, after b's last reader.
  void issue(int b, void* dst, const void* src, size_t bytes);
  // Device work queued after this reads buffer b's fill (async: the compute stream waits for it;
  // otherwise this returns once the fill is done). Returns whether device compute was queued
  // between the fill's issue and now, so that the fill could run beside it.
  bool acquire(int b);
  // Buffer b's reader is queued: its next fill waits for that reader.
  void release(int b);
  // Counts one piece of device compute queued (for acquire's answer).
  void computed() { computes_++; }
  // Waits for every fill in flight, ignoring errors (cleanup after a failed step).
  void drain() noexcept;

 private:
  Backend* device_;
  tdm_stream* lane_;
  bool async_ = false;
  std::unique_ptr<HostCopier> copier_;  // synchronous host-memory devices
  tdm_event* queued_ = nullptr;        // async: compute queued before a layer's fills
  tdm_event* filled_[kBuffers] = {};   // async: each buffer's last fill
  tdm_event* read_[kBuffers] = {};     // async: each buffer's last reader
  bool released_[kBuffers] = {};       // read_[b] was recorded since begin()
  uint64_t issued_at_[kBuffers] = {};  // computes_ when each buffer's last fill was issued
  uint64_t computes_ = 0;
};

class ExpertOffload {
 public:
  // Copies every routed expert into host slabs (pinned through `device` when it can; not for a
  // static policy whose CPU reads the mapping) and, unless the CPU reads the mapping, releases
  // the mapping's pages of the stacks; allocates up to `budget_bytes` of slots on
  // the device (< 0: room for every expert) and fills them. Throws tdm::Error.
  ExpertOffload(const ExpertConfig& cfg, const Hparams& hp, const ModelWeights& w, Backend* device, int64_t budget_bytes);
  ~ExpertOffload();
  ExpertOffload(const ExpertOffload&) = delete;
  ExpertOffload& operator=(const ExpertOffload&) = delete;

  const ExpertConfig& config() const { return cfg_; }
  int64_t n_slots() const { return n_slots_; }
  size_t slot_bytes() const { return slot_bytes_; }
  uint64_t host_bytes() const { return host_bytes_; }
  int64_t resident() const;
  // True when every expert of layer l is resident (no expert of it can run on the CPU).
  bool layer_resident(int64_t l) const { return per_layer_[size_t(l)] == n_expert_; }
  // Copy threshold of layer l in routed rows (+inf: never copy).
  double n_star(int64_t l) const { return n_star_[size_t(l)]; }
  const char* policy_name() const;

  ExpertViews device_views(int64_t l) const;
  // Layer l's views over the n slots from `base` (its experts in order when contiguous_base(l) gave base).
  ExpertViews device_views(int64_t l, int32_t base, int64_t n) const;
  // The first of n_expert consecutive slots holding layer l's experts in order, or -1.
  int32_t contiguous_base(int64_t l) const;
  // Whether routing must be recorded as it happens: the dynamic policy with fewer slots than experts.
  bool needs_scores() const { return cfg_.policy == ExpertPolicy::dynamic && n_slots_ < n_layer_ * n_expert_; }
  ExpertViews host_views(int64_t l) const;
  // Layer l's views over the one slab at `slab` (device memory holding layer l's slab layout).
  ExpertViews views_at(int64_t l, const void* slab) const;
  // New calibrated costs: copies follow the makespan rule from the next step on, and n_star
  // reports their crossover. Not while a step runs. Throws tdm::Error for a bad link bandwidth.
  void set_cost(const ExpertCost& c);
  // Device memory of cache slot s.
  void* slot_data(int32_t s) const { return cache_.as<uint8_t>() + size_t(s) * slot_bytes_; }
  // Host slab of expert e of layer l, and its size (slabs exist under the dynamic policy, or when
  // the CPU reads the slabs).
  const void* host_slab(int64_t l, int64_t e) const;
  size_t slab_bytes(int64_t l) const { return layers_[size_t(l)].slab; }

  // ---- per step
  void tick() { step_++; }
  // Records this step's routing of layer l: rows[e] rows with router probabilities summing to prob[e].
  void record(int64_t l, const std::vector<int32_t>& rows, const std::vector<double>& prob);
  double score(int64_t l, int64_t e) const;
  // The slot holding (l, e), or -1.
  int32_t slot_of(int64_t l, int64_t e) const { return slot_of_[size_t(l * n_expert_ + e)]; }
  // Marks a slot as read by the layer being run: it is not evicted until the next layer.
  void protect(int32_t slot) { guard_[size_t(slot)] = stamp_; }
  // Starts a new layer: earlier protections lapse.
  void next_layer() { stamp_++; }
  // A slot for (l, e), freeing the lowest-scored unprotected resident one when all are taken:
  // -1 when none can be had, or when margin > 0 and (l, e) does not score above margin times
  // the victim's score. Updates the maps (the caller copies the slab) and counts an eviction in *st.
  int32_t take_slot(int64_t l, int64_t e, double margin, ExpertStats* st);
  // Hands slot s (held by layer l's expert just run from it) to (l, e), counting an eviction.
  void retake(int32_t s, int64_t l, int64_t e, ExpertStats* st) {
    assign(s, l * n_expert_ + e);
    protect(s);
    st->evictions++;
  }
  // The slab streamer of this device (created on first use; lane: the async device's copy stream).
  SlabStream& slab_stream(tdm_stream* lane) {
    if (!stream_) stream_ = std::make_unique<SlabStream>(device_, lane);
    return *stream_;
  }
  // Slots whose fill is still in flight on the expert stream (async devices).
  void set_pending(int32_t s) { pending_[size_t(s)] = 1; n_pending_++; }
  // Slot s was filled by a prefetch; take_prefetched says whether it was, once (its first use).
  void mark_prefetched(int32_t s) { prefetched_[size_t(s)] = 1; }
  bool take_prefetched(int32_t s) {
    const bool was = prefetched_[size_t(s)] != 0;
    prefetched_[size_t(s)] = 0;
    return was;
  }
  // Whether layer l + 1's experts are predicted from layer l's hidden state for T rows.
  bool pregates(int64_t l, int64_t T) const {
    return cfg_.pregate && cfg_.policy == ExpertPolicy::dynamic && (cfg_.prefetch_when_idle || cfg_.prefetch_per_layer > 0) &&
           l + 1 < n_layer_ && T <= kPregateMaxRows && needs_scores() && !layer_resident(l + 1);
  }
  static constexpr int64_t kPregateMaxRows = 256;  // decode batches; prefill streams its copies instead
  bool pending(int32_t s) const { return pending_[size_t(s)] != 0; }
  bool any_pending() const { return n_pending_ > 0; }
  void clear_pending() {
    std::fill(pending_.begin(), pending_.end(), uint8_t(0));
    n_pending_ = 0;
  }
  bool may_copy() const { return cfg_.policy == ExpertPolicy::dynamic; }
  // Which of layer l's missing experts (`missing`, heaviest first; rows[e] routed rows each)
  // to copy and run on the device: from n* rows on under a threshold; under the makespan rule
  // (calibrated costs and no n* given) each, heaviest first, to the side that finishes it
  // first, the device already busy for device_us (resident experts) and the CPU free.
  std::vector<uint8_t> copy_choice(int64_t l, const std::vector<int32_t>& missing, const std::vector<int32_t>& rows,
                                   double device_us) const;
  // Predicted device time of a resident expert with `rows` routed rows (0 without costs).
  double device_us(int64_t rows) const {
    return cfg_.has_cost ? cfg_.cost.gpu_fixed_us + cfg_.cost.gpu_us_per_token * double(rows) : 0.0;
  }
  // Predicted CPU compute time of an expert with `rows` routed rows (0 without costs); its
  // activations' trips use the link, so they are not link idle time.
  double cpu_us(int64_t rows) const {
    return cfg_.has_cost ? cfg_.cost.cpu_fixed_us + cfg_.cost.cpu_us_per_token * double(rows) : 0.0;
  }
  // Predicted cost of a layer's CPU experts beyond their own times (0 without costs).
  double cpu_call_us() const {
    return cfg_.has_cost ? cfg_.cost.cpu_call_us : 0.0;
  }
  // Predicted time of one slab copy of layer l (+inf without costs).
  double copy_us(int64_t l) const {
    return cfg_.has_cost ? cfg_.cost.link_latency_us + double(layers_[size_t(l)].slab) / cfg_.cost.link_bytes_per_us
                         : std::numeric_limits<double>::infinity();
  }
  // How many of the next layer's experts to prefetch after a layer whose experts are predicted
  // to keep the device busy for device_us and the CPU for cpu_us, the link idle meanwhile.
  int32_t prefetch_count(int64_t next_layer, double device_us, double cpu_us) const {
    return prefetch_fit(next_layer, std::max(device_us, cpu_us));
  }
  // How many slabs of next_layer copy in window_us of idle link (prefetch_per_layer when it is
  // > 0 and smaller; just that cap without costs or without prefetch_when_idle).
  int32_t prefetch_fit(int64_t next_layer, double window_us) const;
  // The host's wait from the end of one layer's experts to the next layer's routing (attention
  // and router on the device, and the rest of the layer's device work before them): a moving
  // average of the measured gaps, 0 before the first.
  void note_gap(double us) { gap_us_ = gap_n_ == 0 ? us : 0.8 * gap_us_ + 0.2 * us; gap_n_++; }
  double gap_us() const { return gap_us_; }
  // True when copies follow the makespan rule rather than the n* threshold.
  bool makespan() const { return cfg_.has_cost && cfg_.n_star < 0; }

 private:
  void fill();
  void free_slabs();
  void assign(int32_t slot, int64_t key);
  // A number ordered as the keys' scores are now, cheaper to compute (victim searches).
  double rank(int64_t key) const;

  // A slab's parts, in slab order: the three matrices, then the biases (gpt-oss; absent parts
  // take no room).
  enum Part { kGate, kUp, kDown, kGateBias, kUpBias, kDownBias, kParts };
  struct Layer {
    tdm_weight part[kParts]{};  // the bound stacks (types and shapes; biases as f32 stacks)
    size_t off[kParts]{};       // offsets inside a slab
    size_t slab = 0;            // bytes of one slab (the host stride)
    uint8_t* host = nullptr;    // n_expert slabs
    bool pinned = false;        // host came from the device's host_alloc
  };
  // The views of layer l's parts whose expert (or slot) m starts at base + m * stride.
  ExpertViews views(const Layer& y, const uint8_t* base, size_t stride, int64_t n_mats) const;

  ExpertConfig cfg_;
  int64_t n_layer_ = 0, n_expert_ = 0;
  Backend* device_ = nullptr;
  std::vector<Layer> layers_;
  tdm_moe_opts act_{};               // every view's activation (its biases are set per view)
  bool slabs_ = false;               // host slabs were made
  uint64_t host_bytes_ = 0;
  size_t slot_bytes_ = 0;
  int64_t n_slots_ = 0;
  DeviceBuffer cache_;
  std::vector<int64_t> key_of_slot_;  // layer * n_expert + expert, or -1
  std::vector<int32_t> slot_of_;      // per key: slot or -1
  std::vector<int64_t> per_layer_;    // resident experts per layer
  std::vector<uint64_t> guard_;       // per slot: stamp of the layer that reads it
  std::vector<uint8_t> pending_;      // per slot: filled by a copy still in flight
  std::vector<uint8_t> prefetched_;   // per slot: filled by a prefetch and not used since
  int64_t n_pending_ = 0;
  uint64_t stamp_ = 1;
  std::vector<double> n_star_;
  double gap_us_ = 0;                // note_gap's average
  int64_t gap_n_ = 0;
  double act_bytes_per_row_ = 0;     // hidden state of one row (f32), each way for a CPU expert
  // Scores, per key.
  int64_t step_ = 0;
  std::vector<double> mass_, uses_;
  std::vector<int64_t> mass_step_, last_use_;
  std::unique_ptr<SlabStream> stream_;  // destroyed first (~ExpertOffload): its fills read the slabs, write the slots
};

}  // namespace tdm
