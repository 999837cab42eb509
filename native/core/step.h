// One step of work in native form: the C++ mirror of StepPlan / StepResult in
// src/native/step-plan.ts (the seam between the TypeScript scheduler and the executor).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/sampling.h"

namespace tdm {

// cpu: every op in order on the calling thread (the single-device path, and the reference);
// gpu_only: the same, with every attention on the device; overlap: one batch, CPU attention
// on the CPU worker while the device works, joined before o_proj (APEX); pipeline: two
// sub-batches, the device's linear layers of one beside the CPU attention of the other (NEO).
enum class Strategy { cpu, gpu_only, pipeline, overlap };
enum class KvTier { device = 0, host = 1 };
enum class AttnDevice { cpu, gpu };

// The most rounds of a decode burst (SeqPlan::decode_steps).
constexpr int32_t kMaxDecodeSteps = 64;

struct SeqPlan {
  int64_t seq_id = 0;
  std::vector<int32_t> tokens;       // token ids to process this step
  int32_t start_pos = 0;             // position of tokens[0]
  std::vector<int32_t> block_table;  // block ids covering [0, start_pos + tokens.size())
  // With the sliding layers kept apart (KvLayout::n_groups above 1): each sliding group's blocks
  // covering the same positions, one table after another (all of one length); entries wholly
  // behind the window of tokens[0] are not read and may be -1.
  std::vector<int32_t> sliding_block_table;
  KvTier tier = KvTier::host;
  AttnDevice attention = AttnDevice::cpu;
  bool sample = false;
  SamplingConfig sampling;           // defaults: greedy
  std::vector<int32_t> recent;       // tokens the penalties look at
  bool return_all_logits = false;
  bool return_logits = false;
  // The hidden state of every processed token after the output norm (what the head would
  // read), tokens x n_embd: embeddings, pooled by the caller.
  bool return_embeddings = false;
  int32_t sub_batch = -1;            // pipeline only: 0 or 1, or -1 to let the executor split
  // Speculative decoding: the last n_draft tokens are guesses to verify. The rows of the token
  // before them and of each guess are drawn in order, each as the step that had taken the
  // guesses before it would have drawn it (same position, same penalty window), while the draws
  // equal the guesses; SeqResult::tokens holds the accepted guesses and the draw after them.
  int32_t n_draft = 0;
  int32_t penalty_window = 0;        // with drafts: the window `recent` was cut to (a draft row's penalties see its last this many)
  // A decode burst: draw this many tokens in a row, each fed back as the next round's token at
  // the next position, without a return to the scheduler in between (the host's time between
  // steps is paid once a burst). SeqResult::tokens holds the draws in order; an interrupted
  // burst draws fewer. With penalties, `recent` gains each draw (kept to penalty_window).
  int32_t decode_steps = 1;
  std::vector<int32_t> stop_tokens;  // with decode_steps: a draw of one of these ends the sequence's burst
};

struct BlockCopy {
  KvTier from_tier = KvTier::host;
  int32_t from_block = 0;
  KvTier to_tier = KvTier::host;
  int32_t to_block = 0;
};

struct StepPlan {
  Strategy strategy = Strategy::cpu;
  std::vector<BlockCopy> copies;
  std::vector<SeqPlan> seqs;
};

struct SeqResult {
  int64_t seq_id = 0;
  int32_t token = -1;              // -1 when the plan did not ask to sample
  bool has_logits = false;
  std::vector<float> logits;       // n_vocab, when asked for; with a burst, a row per draw
  bool has_all_logits = false;
  std::vector<float> all_logits;   // tokens x n_vocab, when asked for
  bool has_embeddings = false;
  std::vector<float> embeddings;   // tokens x n_embd, when asked for (return_embeddings)
  std::vector<int32_t> tokens;     // with drafts: the accepted drafts, then the token drawn after them; with a burst: its draws (token is the last)
};

// Expert offload counters of one step (issue 9; native/core/experts.h).
struct ExpertStats {
  int64_t hits = 0;              // active (layer, expert) pairs found resident on the device
  int64_t hit_rows = 0;          // routed rows (token, choice) of those pairs
  int64_t misses = 0;            // active pairs not resident
  int64_t copies = 0;            // misses copied to a cache slot and run on the device
  int64_t admissions = 0;        // CPU-run misses copied into the cache afterwards (their score won)
  int64_t prefetches = 0;        // the next layer's missing experts copied ahead (by score, or by the pregate first)
  int64_t prefetch_hits = 0;     // prefetched experts routed to before they were evicted
  int64_t evictions = 0;         // resident experts replaced
  int64_t device_experts = 0;    // active pairs run on the device (hits + copies)
  int64_t cpu_experts = 0;       // active pairs run on the CPU
  int64_t device_rows = 0;       // routed rows (token, choice) run on the device
  int64_t cpu_rows = 0;          // routed rows run on the CPU
  int64_t cpu_calls = 0;         // layers that ran experts on the CPU (one CPU call each)
  int64_t copy_bytes = 0;        // expert slabs moved host -> device
  int64_t activation_bytes = 0;  // hidden states down and expert outputs up for CPU experts
  int64_t prefill_copies = 0;      // copies of steps of several tokens, streamed through the double buffer
  int64_t prefill_copy_bytes = 0;  // their slab bytes (also in copy_bytes)
  int64_t overlapped_copies = 0;   // streamed copies queued ahead of device compute that ran before their use

  ExpertStats& operator+=(const ExpertStats& o) {
    hits += o.hits;
    hit_rows += o.hit_rows;
    misses += o.misses;
    copies += o.copies;
    admissions += o.admissions;
    prefetches += o.prefetches;
    prefetch_hits += o.prefetch_hits;
    evictions += o.evictions;
    device_experts += o.device_experts;
    cpu_experts += o.cpu_experts;
    device_rows += o.device_rows;
    cpu_rows += o.cpu_rows;
    cpu_calls += o.cpu_calls;
    copy_bytes += o.copy_bytes;
    activation_bytes += o.activation_bytes;
    prefill_copies += o.prefill_copies;
    prefill_copy_bytes += o.prefill_copy_bytes;
    overlapped_copies += o.overlapped_copies;
    return *this;
  }
};

struct StepResult {
  std::vector<SeqResult> seqs;
  bool has_experts = false;  // the model runs with expert offload: `experts` is filled
  ExpertStats experts;
  // Each layer's CPU expert call: (experts, routed rows, measured µs), flattened; what the
  // expert costs are refitted from online (src/sched/experts/refit.ts).
  std::vector<double> cpu_expert_calls;
  std::vector<std::pair<std::string, double>> phase_us;  // microseconds per phase, in run order
  double total_us = 0;
  int32_t rounds = 1;  // forward passes run: a burst's, fewer than planned when interrupted
};

}  // namespace tdm
