// Paged KV pools (see kv_pool.h).
#include "core/kv_pool.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ggml_types.h"

namespace tdm {

KvLayout KvLayout::make(const Hparams& hp, int32_t block_tokens, uint32_t type, bool split_sliding) {
  if (block_tokens <= 0 || block_tokens > 4096) throw Error(code::bad_argument, "kvBlockTokens must be in [1, 4096]");
  KvLayout l;
  l.type = type;
  int32_t n_sliding = 0;
  for (int64_t i = 0; i < hp.n_layer; ++i) n_sliding += hp.is_swa(i) ? 1 : 0;
  const int32_t n_full = int32_t(hp.n_layer) - n_sliding;
  const bool split = split_sliding && n_sliding > 0;
  // Slots per block: every layer, or with the sliding layers apart one per full layer, the
  // sliding layers then filling groups of that size (at most kMaxSlidingGroups of them); with
  // fewer sliding layers than full ones (or none full) one sliding group.
  constexpr int32_t kMaxSlidingGroups = 8;
  l.n_layer = !split                                  ? int32_t(hp.n_layer)
              : n_full > 0 && n_full < n_sliding ? std::max(n_full, (n_sliding + kMaxSlidingGroups - 1) / kMaxSlidingGroups)
                                                  : std::max(n_full, n_sliding);
  const int32_t per_group = l.n_layer;
  l.n_groups = split ? 1 + (n_sliding + per_group - 1) / per_group : 1;
  int32_t full_slot = 0, sliding_index = 0;
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    if (split && hp.is_swa(i)) {
      l.group_of.push_back(1 + sliding_index / per_group);
      l.slot_of.push_back(sliding_index % per_group);
      ++sliding_index;
    } else {
      l.group_of.push_back(0);
      l.slot_of.push_back(full_slot++);
    }
  }
  l.block_tokens = block_tokens;
  l.n_kv_heads = int32_t(hp.n_head_kv);
  l.head_dim_k = int32_t(hp.head_dim);
  l.head_dim_v = int32_t(hp.head_dim_v);
  l.layer_k_bytes = size_t(l.n_kv_heads) * size_t(block_tokens) * kv_row_bytes(type, l.head_dim_k);
  l.layer_v_bytes = size_t(l.n_kv_heads) * size_t(block_tokens) * kv_row_bytes(type, l.head_dim_v);
  l.block_bytes = size_t(l.n_layer) * (l.layer_k_bytes + l.layer_v_bytes);
  return l;
}

KvPool::KvPool(Backend* backend, const KvLayout& layout, int32_t n_blocks)
    : backend_(backend), layout_(layout), n_blocks_(n_blocks) {
  if (n_blocks < 0) throw Error(code::bad_argument, "KV block count must not be negative");
  if (double(layout.block_bytes) * double(n_blocks) > double(SIZE_MAX / 2))
    throw Error(code::oom, std::to_string(n_blocks) + " KV blocks of " + std::to_string(layout.block_bytes) + " bytes do not fit in memory");
  const size_t bytes = layout.block_bytes * size_t(n_blocks);
  buf_ = DeviceBuffer(backend, bytes);
  // Zeroed (as llama.cpp clears its cache) so that a position read before it is written holds 0,
  // never a NaN from old memory.
  if (bytes == 0) return;
  if (backend->host_memory()) {
    std::memset(buf_.data(), 0, bytes);
    return;
  }
  const std::vector<uint8_t> zeros(std::min<size_t>(bytes, size_t(1) << 22), 0);
  for (size_t off = 0; off < bytes; off += zeros.size()) {
    const size_t n = std::min(zeros.size(), bytes - off);
    backend->check(backend->fn().copy_h2d(backend->ctx(), buf_.as<uint8_t>() + off, zeros.data(), n, nullptr), "copy_h2d");
  }
}

tdm_kv_layer KvPool::layer(int32_t l) const {
  tdm_kv_layer v{};
  const size_t slot = size_t(layout_.slot_of[size_t(l)]);
  uint8_t* base = static_cast<uint8_t*>(buf_.data()) + slot * (layout_.layer_k_bytes + layout_.layer_v_bytes);
  v.k = base;
  v.v = base + layout_.layer_k_bytes;
  v.type = layout_.type;
  v.block_bytes = layout_.block_bytes;
  v.n_blocks = n_blocks_;
  v.block_tokens = layout_.block_tokens;
  v.n_kv_heads = layout_.n_kv_heads;
  v.head_dim_k = layout_.head_dim_k;
  v.head_dim_v = layout_.head_dim_v;
  return v;
}

}  // namespace tdm
