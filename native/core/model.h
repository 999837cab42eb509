// A loaded model: hyperparameters, weights bound from the mapping and placed on a device
// under a memory budget, the backends it runs on (the CPU, and a GPU or a CPU stand-in for
// one), one paged KV pool per tier, and the executor that runs a StepPlan (executor.cpp)
// with one of the strategies of step.h. Timing entry points for the profiler: profile.cpp.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend_handle.h"
#include "core/cpu_worker.h"
#include "core/experts.h"
#include "core/hparams.h"
#include "core/kv_pool.h"
#include "core/model_weights.h"
#include "core/sampling.h"
#include "core/step.h"
#include "cpu/thread_pool.h"

namespace tdm {

struct ModelConfig {
  Hparams hp;
  int threads = 0;               // CPU threads incl. the caller; <= 0 picks the hardware count
  int32_t kv_block_tokens = 16;  // positions per KV block
  // K and V element type, both tiers: "f16" (llama.cpp's default) or "q8_0" (half the memory;
  // the CPU kernels only, so no GPU device; head sizes in whole blocks of 32).
  std::string kv_type = "f16";
  int32_t kv_blocks_device = 0;  // blocks in the device tier (host RAM when there is no device)
  int32_t kv_blocks_host = 0;    // blocks in the host tier
  // Sliding-window layers' KV in blocks of their own (a second block table per sequence),
  // so that the engine can free what falls behind the window; ignored without such layers.
  bool kv_split_sliding = false;
  // Map the host tier for the device (page-locked for its lifetime): swaps between the tiers
  // then copy from locked memory, and with a staging below device attention can read host KV a
  // layer at a time (Model::streams_host_kv). Also off with TANDEM_KV_STREAM=0.
  bool kv_stream = true;
  // Device memory for the streamed blocks' staging (two layers of them), allocated at load; it
  // bounds the host KV blocks one step may stream. Too small for one block: no streaming (the
  // host tier is still locked where kv_stream asks).
  size_t kv_stream_staging_bytes = size_t(128) << 20;
  std::string cpu_variant;       // "" for the best kernels; "ref", "avx2", "avxvnni" or "avx512" to force one
  // The device beside the CPU: "none" (the CPU alone), "auto" (the registry's GPU when one is
  // usable, else none), "gpu" (the registry's GPU, or TDM_BACKEND_UNAVAILABLE saying why not),
  // "cpu-standin" (a second CPU backend with its own threads posing as the device, so that the
  // hybrid strategies really overlap on a machine without a GPU; never a GPU measurement).
  std::string device = "none";
  int device_threads = 0;            // threads of the cpu-standin device (<= 0: 1)
  int64_t device_weight_bytes = -1;  // device memory for weights (bytes); < 0: all that fits
  ExpertConfig experts;              // MoE expert offload (used only with a device and a MoE model)
};

// Host memory for activations crossing between devices: page-locked through the device's
// host_alloc when it has one (fast async copies), else ordinary aligned memory.
class HostBuffer {
 public:
  HostBuffer() = default;
  ~HostBuffer() { reset(); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  // Makes the buffer at least `bytes` long (contents are not kept).
  void reserve(Backend* pinner, size_t bytes);
  void reset();
  void* data() const { return p_; }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  Backend* pinner_ = nullptr;  // the backend whose host_alloc made p_ (null: aligned_alloc)
  void* p_ = nullptr;
  size_t n_ = 0;
};

// Activation buffers of one (sub-)batch on the device, grown on demand, and the host
// staging of its CPU-attention rows.
struct BatchBuffers {
  int64_t cap_tokens = 0;
  int64_t cap_out = 0;   // out_rows, out_x
  int64_t cap_head = 0;  // logits, best
  int64_t cap_table = 0;
  DeviceBuffer x, xn, q, k, v, attn, o, gate, up, shared, router_logits, expert_ids, expert_weights, shared_gate;
  DeviceBuffer tokens, positions, tables, out_rows, out_x, logits;
  DeviceBuffer best;            // top_k_rows' output per row: TDM_TOP_K_MAX values, then as many ids, then a flag
  HostBuffer hq, hk, hv, hout;  // q/k/v in and attention out of the rows whose attention runs on the CPU
  HostBuffer h_logits;          // the logits copied from a device whose memory is not the host's
  HostBuffer h_hidden;          // final_hidden's rows copied from such a device
  HostBuffer h_best;            // `best` copied to the host
  // Expert offload, per routed row (token, choice): device-run rows' inputs, every row's
  // output (device rows first, then CPU rows), unit weights, and the uploaded index and
  // weight arrays (ex_meta, staged in h_up); on the host the routing, the hidden states, the
  // CPU rows' inputs and outputs.
  int64_t cap_slots = 0;
  DeviceBuffer ex_x, ex_z, ex_ones, ex_meta;
  HostBuffer h_ids, h_w, h_x, h_xc, h_yc, h_cids, h_ones, h_up;
  HostBuffer h_defer;  // routing of whole-resident layers, read after the step (n_layer regions of cap_slots)
  // The pregate (ExpertConfig::pregate): this layer's hidden state normed for the next layer,
  // the next router's logits on it, and those logits on the host.
  DeviceBuffer pregate_x, pregate_logits;
  HostBuffer h_pregate;
  // Streamed host KV (Model::streams_host_kv): this batch's region of the model's staging
  // buffer holds two layers' K and V of its streamed blocks (slot l % 2: layer l). Events: a
  // slot filled, and a slot's last reader queued.
  tdm_event* staged[2] = {nullptr, nullptr};
  tdm_event* staging_free[2] = {nullptr, nullptr};
};

// Measured time per phase (microseconds), summed over layers.
struct Phases {
  double copies = 0;        // KV block copies between and within tiers
  double embed = 0;
  double linear = 0;        // projections, norms, RoPE and FFNs on the device (driver thread)
  double host_linear = 0;   // matmuls of weights left in host RAM, on the CPU
  double transfer = 0;      // activations of host-resident weights moved between host and device
  double attn_transfer = 0; // q/k/v down to and attention output up from CPU attention
  double attention = 0;     // KV stores and attention on the device
  double cpu_attention = 0; // KV stores and attention on the CPU (worker thread, overlapped)
  double cpu_wait = 0;      // the driver waiting for CPU attention (what overlap did not hide)
  double experts = 0;        // routed experts on the device and the combination of all rows
  double expert_copies = 0;  // expert slabs copied into cache slots (driver thread)
  double cpu_experts = 0;    // routed experts on the CPU (worker thread beside a synchronous device; the driver
                             // thread, after queuing the device's work, beside an asynchronous one)
  double expert_wait = 0;    // the driver waiting for the worker's CPU experts (what overlap did not hide)
  double logits = 0;
  double hidden = 0;         // hidden states returned as embeddings (final_hidden): per token, not the head's
  double sampling = 0;
};

class Model {
 public:
  // Maps the file, binds weights, starts the backends, places weights and allocates the KV
  // pools. Calls progress(fraction in [0, 1]) as the weights are paged in. Throws tdm::Error.
  static std::shared_ptr<Model> load(const std::string& path, const ModelConfig& cfg,
                                     const std::function<void(double)>& progress);
  ~Model();

  // Runs one step: block copies, then every sequence's tokens through the layers under the
  // plan's strategy, logits where asked, sampling. Validates the whole plan before touching
  // any state; throws tdm::Error (TDM_BAD_ARGUMENT for a bad plan, TDM_UNSUPPORTED for
  // attention on a device that cannot read the sequence's KV tier). One step at a time.
  StepResult step(const StepPlan& plan);
  // Ends a decode burst in flight after the round under way (new work is waiting); any thread.
  // The flag is cleared by clear_burst_interrupt(), which the caller runs before each step.
  void interrupt_burst() { burst_interrupt_.store(true, std::memory_order_relaxed); }
  void clear_burst_interrupt() { burst_interrupt_.store(false, std::memory_order_relaxed); }

  // ---- timing entry points for the profiler (profile.cpp); not while a step runs.
  // Microseconds of the linear work of a whole step of n_tokens rows (embedding, every
  // layer's projections and FFN, the LM head on every row), median of `iters` runs.
  double time_linear(int64_t n_tokens, int64_t n_logits, int iters);
  double time_head(int64_t n_rows, int iters);
  // Microseconds of every layer's KV store and attention for n_seqs sequences of n_new new
  // tokens after `context` cached positions each, on the device (on_cpu false) or the CPU,
  // over a scratch pool; median of `iters`.
  double time_attention(bool on_cpu, int32_t n_seqs, int32_t context, int32_t n_new, int iters);
  // Microseconds to copy `bytes` host->device (to_device) or device->host through staging
  // memory, median of `iters`.
  double time_copy(bool to_device, size_t bytes, int iters);
  // Microseconds to stream n_blocks host KV blocks to the device (every layer's gather, as a
  // step of streamed sequences queues them beside its work); needs streams_host_kv().
  double time_stream(int32_t n_blocks, int iters);
  // Median µs of one routed expert's FFN over `rows` rows (one choice each), on the CPU with
  // the weights it reads in host RAM or on the device from cache slots; needs expert offload.
  double time_expert(bool on_cpu, int64_t rows, int iters, int32_t idle_us = 0);
  // Calibrated expert costs for the copy-or-CPU choice from the next step on (makespan rule).
  void set_expert_cost(const ExpertCost& c);

  const Hparams& hparams() const { return hp_; }
  size_t kv_block_bytes() const { return layout_.block_bytes; }
  int32_t kv_groups() const { return layout_.n_groups; }
  // Backends in use: "cpu" first, then the device's kind ("cuda", "hip", "cpu-standin").
  std::vector<std::string> backends() const;
  // Layer l's attention window for the attention op (0: none).
  int32_t window(int64_t l) const { return hp_.is_swa(l) ? int32_t(std::min<int64_t>(hp_.n_swa, INT32_MAX)) : 0; }
  uint64_t weight_bytes() const { return weights_.bytes; }
  const WeightPlacement& placement() const { return placement_; }
  // The device's name ("" with no device).
  std::string device_name() const;
  // The device attends host-tier KV by gathering each layer's blocks across the link beside its
  // work (SeqPlan tier host, attention gpu): host_register mapped the host pool and load took a staging.
  bool streams_host_kv() const { return host_kv_on_device_ != nullptr && stream_blocks_max_ > 0; }
  // The host KV tier is page-locked and mapped for the device (kv_stream), staging or not.
  bool host_kv_locked() const { return host_kv_on_device_ != nullptr; }
  // The most host KV blocks one step may stream, over all its sequences: the staging buffer,
  // allocated at load, holds two layers of that many (0 when not streaming).
  int32_t stream_blocks_max() const { return stream_blocks_max_; }
  // Milliseconds load spent locking and mapping the host KV tier for streaming (0 when not tried).
  double host_kv_lock_ms() const { return host_kv_lock_ms_; }
  // Expert offload state, or null when the model runs without it.
  const ExpertOffload* experts() const { return experts_.get(); }

 private:
  friend class StepRun;
  Model() = default;
  bool has_device() const { return device_ != cpu_.get(); }
  void validate(const StepPlan& plan) const;
  // One forward pass of a validated plan, timed from t_start; a burst (decode_steps > 1) is
  // `rounds` of them with each draw fed back.
  StepResult step_once(const StepPlan& plan, std::chrono::steady_clock::time_point t_start);
  StepResult step_burst(const StepPlan& plan, int32_t rounds, std::chrono::steady_clock::time_point t_start);
  void run_copies(const std::vector<BlockCopy>& copies);
  // A sequence's block tables (the full layers', then each sliding group's), each with the
  // first entry this step reads or writes.
  struct LiveBlocks {
    const int32_t* table;
    int64_t first;
  };
  std::vector<LiveBlocks> live_blocks(const SeqPlan& s) const;
  void ensure_batch(BatchBuffers& b, int64_t n_tokens, int64_t n_out, int64_t n_head, int64_t n_table, int64_t n_cpu_rows);
  const KvPool& pool(KvTier t) const { return pools_[int(t)]; }
  Backend* attention_backend(AttnDevice d) const { return d == AttnDevice::cpu ? cpu_.get() : device_; }

  // ---- layer pieces (executor.cpp), on the device with host fallbacks per weight placement
  void matmul(const tdm_weight& w, const float* x, int64_t n_tokens, float* y);
  // y_i = W_i x for up to 4 weights that read the same x (q/k/v, gate/up): one matmul_group call
  // where the device has the op and holds them all with one type and width, else matmul each.
  struct MatmulOut {
    const tdm_weight* w;
    float* y;
  };
  void matmuls(std::initializer_list<MatmulOut> outs, const float* x, int64_t n_tokens);
  void embed(BatchBuffers& b, const int32_t* host_tokens, int64_t n_tokens);
  void pre_attention(BatchBuffers& b, int64_t n_tokens, int64_t layer);
  void post_attention(BatchBuffers& b, int64_t n_tokens, int64_t layer);
  // Layer l's routed experts into O under expert offload, each active expert where the
  // policy says, with beside() (the shared expert) run on the device meanwhile; O gets the
  // same sum, in the same order, as moe_ffn over all experts on one device.
  void routed_experts(BatchBuffers& b, int64_t n_tokens, int64_t layer, float* O, const std::function<void()>& beside);
  void ensure_expert_buffers(BatchBuffers& b, int64_t n_slots, int64_t n_tokens);
  // Adds to (*predicted)[e] the rows of T whose top n_expert_used pregate logits include e.
  void predict_next(const float* logits, int64_t T, std::vector<int32_t>* predicted) const;
  // Counts, once the device has finished, the routing of layers that ran without stopping for it.
  void finish_expert_counts();
  // What the sampler reads of the n_out rows in b.out_rows, on the host: the logits (the
  // device buffer itself when the device's memory is host memory, else a page-locked copy in
  // b.h_logits), or, with best_k > 0 and no row the device flags, only each row's best_k best
  // logits (b.h_best), so that a device does not send whole rows over its link.
  struct HeadOut {
    const float* logits = nullptr;     // rows x n_vocab, or null
    const float* best_vals = nullptr;  // rows x best_k, best first (top_k_rows' order)
    const int32_t* best_ids = nullptr;
    int32_t best_k = 0;
  };
  HeadOut lm_head(BatchBuffers& b, int64_t n_tokens, int64_t n_out, int32_t best_k);
  // The output-normed hidden states of out_rows [first, first + n) (embeddings), host-readable.
  const float* final_hidden(BatchBuffers& b, int64_t n_tokens, int64_t first, int64_t n);
  // One sequence's token to draw: its plan, where the token goes, its row of logits, or its
  // row's best (best_k of them) when the head kept only those.
  struct Draw {
    const SeqPlan* seq;
    SeqResult* result;
    const float* logits;
    const float* best_vals = nullptr;
    const int32_t* best_ids = nullptr;
    int32_t best_k = 0;
  };
  // Draws every sequence's token, across sample_pool_ when there are several.
  void sample_all(const std::vector<Draw>& draws, int64_t n_vocab);
  // Device memory -> host memory, complete on return.
  void to_host(void* dst, const void* src, size_t bytes);
  // Host memory -> device memory, ordered before later device work.
  void to_device(void* dst, const void* src, size_t bytes);

  Hparams hp_;
  ModelWeights weights_;
  std::unique_ptr<Backend> cpu_;
  std::unique_ptr<Backend> device_owned_;  // the GPU or the CPU stand-in; null with no device
  Backend* device_ = nullptr;              // runs the linear layers; the CPU backend when there is no device
  std::string device_kind_;                // "cuda", "hip" or "cpu-standin" ("" with no device)
  bool device_async_ = false;              // the device has TDM_CAP_ASYNC (streams, events)
  // Sampled rows leave the device as their best logits when the sampler needs no more (a device
  // with top_k_rows whose memory is not the host's; TANDEM_DEVICE_TOP_K=0 copies whole rows).
  bool best_on_device_ = false;
  std::atomic<bool> burst_interrupt_{false};
  tdm_stream* copy_stream_ = nullptr;      // async devices: activations to the host beside compute
  tdm_event* compute_done_ = nullptr;      // recorded after a sub-batch's q/k/v are computed
  tdm_event* copy_done_ = nullptr;
  tdm_stream* expert_stream_ = nullptr;    // async devices with expert offload: admission copies beside compute
  tdm_event* expert_queued_ = nullptr;     // compute queued before an admission copy
  tdm_event* expert_copied_ = nullptr;     // the last admission copy
  std::chrono::steady_clock::time_point gap_from_{};  // when the experts of layer gap_from_layer_ ended (ExpertOffload::note_gap)
  int64_t gap_from_layer_ = -1;
  tdm_event* routing_copied_ = nullptr;    // a layer's routing (and hidden states) reached host memory
  void* host_kv_on_device_ = nullptr;      // the host KV pool's address for the device (host_register), or null
  tdm_stream* stream_stream_ = nullptr;    // streamed host KV: layer gathers beside compute
  DeviceBuffer stream_staging_;            // streamed host KV: two layers of stream_blocks_max_ blocks
  int32_t stream_blocks_max_ = 0;
  double host_kv_lock_ms_ = 0;
  WeightPlacement placement_;
  KvLayout layout_;
  KvPool pools_[2];                        // indexed by KvTier
  BatchBuffers batches_[2];                // one per pipeline sub-batch
  HostBuffer stage_x_, stage_y_, stage_ids_, stage_w_;  // activations of host-resident weights
  Phases ph_;                              // the running step's phase times (driver thread)
  int sample_threads_ = 1;                 // threads that draw the step's tokens (the CPU backend's count)
  std::unique_ptr<cpu::ThreadPool> sample_pool_;  // created at the first step that samples two sequences
  std::vector<SamplerScratch> samplers_;   // one per drawing thread (the first also for serial draws)
  std::mutex cpu_mu_;                      // one caller at a time on the CPU backend
  size_t expert_time_cursor_[2] = {0, 0};  // time_expert's next target, CPU and device (see there)
  std::unique_ptr<CpuWorker> worker_;      // CPU attention and CPU experts beside the device; null with no device
  std::unique_ptr<ExpertOffload> experts_; // null without expert offload
  ExpertStats ex_stats_;                   // the running step's expert counters
  std::vector<double> ex_cpu_calls_;       // the running step's CPU expert calls (see StepResult)
  struct DeferredCount {
    const int32_t* ids;  // host copy of the routing, valid once the device has finished
    int64_t n;           // routed rows (tokens x choices)
  };
  std::vector<DeferredCount> ex_deferred_;  // layers of this step whose counters wait for the device
};

}  // namespace tdm
