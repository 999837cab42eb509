// Paged KV cache: a pool of fixed-size blocks in one tier (device or host memory). A block
// holds block_tokens positions of every layer, K and V, contiguously, so a swap between
// tiers moves one block with one copy. Sequences own blocks through their block tables,
// which the TypeScript engine keeps; the pool only stores data (SGLang-style indices).
#pragma once
#include <cstdint>

#include "backend/backend.h"
#include "backend/backend_handle.h"
#include "core/hparams.h"

namespace tdm {

// Byte layout of one block: for each layer, K [n_kv_heads][block_tokens][head_dim_k] then
// V [n_kv_heads][block_tokens][head_dim_v], elements of `type` (f16 like llama.cpp's default).
struct KvLayout {
  uint32_t type = 1;  // ggml F16
  int32_t n_layer = 0;
  int32_t block_tokens = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim_k = 0;
  int32_t head_dim_v = 0;
  size_t layer_k_bytes = 0;  // K of one layer in one block
  size_t layer_v_bytes = 0;
  size_t block_bytes = 0;    // all layers, K and V

  static KvLayout make(const Hparams& hp, int32_t block_tokens, uint32_t type);
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
  // The view of one layer that the attention and kv_store ops take.
  tdm_kv_layer layer(int32_t l) const;

 private:
  Backend* backend_ = nullptr;
  KvLayout layout_;
  int32_t n_blocks_ = 0;
  DeviceBuffer buf_;
};

}  // namespace tdm
