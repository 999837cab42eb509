// Packed weights shared across CPU contexts (see packed_weights.h).
#include "cpu/packed_weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "core/error.h"
#include "cpu/huge_pages.h"

namespace tdm::cpu {

namespace {

size_t total_bytes(const tdm_weight& w) {
  return size_t(w.n_mats - 1) * w.mat_bytes + size_t(w.n_rows) * w.row_bytes;
}

int64_t n_groups(const tdm_weight& w) { return (w.n_rows + kPackRows - 1) / kPackRows; }

// Weights are keyed by address and geometry; the packed copy also checks the first bytes.
using Key = std::tuple<const void*, uint32_t, int64_t, int64_t, int64_t, size_t, size_t, const PackedOps*>;

Key key_of(const tdm_weight& w, const PackedOps& ops) {
  return Key{w.data, w.type, w.n_cols, w.n_rows, w.n_mats, w.row_bytes, w.mat_bytes, &ops};
}

struct Registry {
  std::mutex mu;
  std::map<Key, std::weak_ptr<const PackedWeight>> entries;
  uint64_t made = 0;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: contexts may outlive static teardown order
  return *r;
}

}  // namespace

size_t packed_matrix_bytes(const tdm_weight& w, const PackedOps& ops) {
  return size_t(n_groups(w)) * ops.group_bytes(w.n_cols);
}

void pack_matrix(const tdm_weight& w, int64_t m, const PackedOps& ops, uint8_t* dst, ThreadPool& pool) {
  const size_t gb = ops.group_bytes(w.n_cols);
  const uint8_t* src = static_cast<const uint8_t*>(w.data) + size_t(m) * w.mat_bytes;
  pool.run(n_groups(w), [&](int64_t g, int) {
    const int64_t r0 = g * kPackRows, rows = std::min<int64_t>(kPackRows, w.n_rows - r0);
    ops.pack_group(src + size_t(r0) * w.row_bytes, w.row_bytes, rows, w.n_cols, dst + size_t(g) * gb);
  }, double(w.n_cols) * double(w.n_rows) * 8);
}

PackedWeight::PackedWeight(const tdm_weight& w, const PackedOps& ops) : w_(w), ops_(&ops) {
  head_len_ = std::min(sizeof head_, total_bytes(w));
  std::memcpy(head_, w.data, head_len_);
  group_bytes_ = ops.group_bytes(w.n_cols);
  mat_bytes_ = packed_matrix_bytes(w, ops);
  const size_t bytes = std::max<size_t>(mat_bytes_ * size_t(w.n_mats), 64);
  // Streamed end to end once per decoded token: on 2 MiB pages where the kernel grants them.
  data_ = map_huge(bytes, &mapped_bytes_);
}

PackedWeight::~PackedWeight() { unmap_huge(data_, mapped_bytes_); }

void PackedWeight::pack_from(const tdm_weight& w, ThreadPool& pool) {
  for (int64_t m = 0; m < w.n_mats; ++m) pack_matrix(w, m, *ops_, data_ + size_t(m) * mat_bytes_, pool);
  // The packed copy replaces the mapped pages: drop them from this process (they stay in
  // the page cache and come back on a later read). The first page stays, for matches().
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(w.data);
  const uintptr_t first = (begin + head_len_ + page - 1) / page * page;
  const uintptr_t last = (begin + total_bytes(w)) / page * page;
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

bool PackedWeight::matches(const tdm_weight& w, const PackedOps& ops) const {
  return key_of(w, ops) == key_of(w_, *ops_) && std::memcmp(w.data, head_, head_len_) == 0;
}

bool in_read_only_file_mapping(const tdm_weight& w) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(w.data), end = begin + total_bytes(w);
  FILE* f = std::fopen("/proc/self/maps", "r");
  if (f == nullptr) return false;
  bool ok = false;
  char line[4096];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    uintptr_t lo = 0, hi = 0;
    char perms[8] = {0};
    unsigned long long offset = 0, inode = 0;
    char dev[32] = {0};
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s %llx %31s %llu", &lo, &hi, perms, &offset, dev, &inode) != 6) continue;
    if (begin < lo || begin >= hi) continue;
    ok = end <= hi && perms[1] != 'w' && inode != 0;
    break;
  }
  std::fclose(f);
  return ok;
}

std::shared_ptr<const PackedWeight> shared_packed_weight(const tdm_weight& w, const PackedOps& ops, ThreadPool& pool) {
  Registry& r = registry();
  const Key k = key_of(w, ops);
  {
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.entries.find(k);
    if (it != r.entries.end()) {
      std::shared_ptr<const PackedWeight> p = it->second.lock();
      if (p && p->matches(w, ops)) return p;
      r.entries.erase(it);
    }
  }
  if (!in_read_only_file_mapping(w)) return nullptr;
  auto p = std::make_shared<PackedWeight>(w, ops);
  p->pack_from(w, pool);
  std::lock_guard<std::mutex> lock(r.mu);
  r.entries[k] = p;
  ++r.made;
  return p;
}

PackedWeightStats packed_weight_stats() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  PackedWeightStats st;
  st.made = r.made;
  for (const auto& [k, p] : r.entries) st.live += p.expired() ? 0 : 1;
  return st;
}

}  // namespace tdm::cpu
