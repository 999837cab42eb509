// Paged KV cache: a pool of fixed-size blocks in one tier (device or host memory). A block
// holds block_tokens positions of one layer group, K and V, contiguously, so a swap between
// tiers moves one block with one copy. Sequences own blocks through their block tables,
// which the TypeScript engine keeps; the pool only stores data (SGLang-style indices).
//
// One group holds every layer, unless the model has sliding-window layers and the engine
// asks for them apart (vLLM's hybrid allocator): then group 0 holds the full-attention
// layers and groups 1.. the sliding ones, each sequence has a table per group, and the engine
// frees the sliding groups' blocks once they fall behind the window. Every group's blocks
// have the same size and come from the same pool: a block has a slot per full layer, and
// the sliding layers fill as many groups of that many slots as they need (gemma3-1b: 4 full
// layers and 22 sliding ones in 6 groups), so neither kind keeps slots it does not use.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_handle.h"
#include "core/hparams.h"

namespace tdm {

// Byte layout of one block: for each layer slot, K [n_kv_heads][block_tokens][head_dim_k]
// then V [n_kv_heads][block_tokens][head_dim_v], elements of `type` (f16 like llama.cpp's default).
struct KvLayout {
  uint32_t type = 1;  // ggml F16
  int32_t n_layer = 0;       // layer slots in a block (the largest group's layer count)
  int32_t n_groups = 1;      // 1 + the sliding-window layers' groups when they are kept apart
  std::vector<int32_t> group_of;  // per model layer: 0, or 1.. for a sliding layer kept apart
  std::vector<int32_t> slot_of;   // per model layer: its slot in its group's blocks
  int32_t block_tokens = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim_k = 0;
  int32_t head_dim_v = 0;
  size_t layer_k_bytes = 0;  // K of one layer in one block
  size_t layer_v_bytes = 0;
  size_t block_bytes = 0;    // all layer slots, K and V

  // Sliding groups (0 when the sliding layers share group 0's tables).
  int32_t sliding_groups() const { return n_groups - 1; }

  // split_sliding: the sliding-window layers (hp.is_swa) in groups of their own; ignored
  // when the model has none. src/api/model.ts (kvGroups) sizes blocks by the same rule.
  static KvLayout make(const Hparams& hp, int32_t block_tokens, uint32_t type, bool split_sliding = false);
};

class KvPool {
 public:
  KvPool() = default;
  // Allocates n_blocks zeroed blocks on `backend` (n_blocks may be 0: an empty tier).
  KvPool(Backend* backend, const KvLayout& layout, int32_t n_blocks);

  Backend* backend() const { return backend_; }
  int32_t n_blocks() const { return n_blocks_; }
  const KvLayout& layout() const { return layout_; }
  void* base() const { return buf_.data(); }
  // The view of model layer l (in its group's blocks) that the attention and kv_store ops take.
  tdm_kv_layer layer(int32_t l) const;

 private:
  Backend* backend_ = nullptr;
  KvLayout layout_;
  int32_t n_blocks_ = 0;
  DeviceBuffer buf_;
};

}  // namespace tdm
