// Weights repacked into a kernel table's row-interleaved layout (kernels.h, PackedOps) once,
// when a matmul first meets them, and shared by every CPU context of the process. Only
// weights that lie wholly in a read-only file mapping (a GGUF file's tensors) are kept:
// they cannot change while mapped, and the mapped pages are released after packing (the
// packed copy has the same size), so memory does not double. Anything else (weights built
// in memory, device copies of a stand-in backend) runs on the stored layout instead.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "backend/backend.h"
#include "cpu/kernels.h"
#include "cpu/thread_pool.h"

namespace tdm::cpu {

// A packed stack of matrices: matrix m's group g at data + m * mat_bytes + g * group_bytes.
struct PackedView {
  const uint8_t* data = nullptr;
  size_t mat_bytes = 0;
  size_t group_bytes = 0;
};

class PackedWeight {
 public:
  PackedWeight(const tdm_weight& w, const PackedOps& ops);
  ~PackedWeight();
  PackedWeight(const PackedWeight&) = delete;
  PackedWeight& operator=(const PackedWeight&) = delete;

  // Packs every group of every matrix of `w` (the weight it was made for) on the pool.
  void pack_from(const tdm_weight& w, ThreadPool& pool);
  // True when `w` is the weight this copy was made from: same address, geometry and type,
  // and the same first bytes (a different file mapped later at the same address differs).
  bool matches(const tdm_weight& w, const PackedOps& ops) const;
  PackedView view() const { return PackedView{data_, mat_bytes_, group_bytes_}; }

 private:
  tdm_weight w_;
  const PackedOps* ops_;
  uint8_t head_[64];
  size_t head_len_ = 0;
  size_t group_bytes_ = 0;
  size_t mat_bytes_ = 0;
  uint8_t* data_ = nullptr;  // an anonymous mapping of mapped_bytes_ (2 MiB aligned)
  size_t mapped_bytes_ = 0;
};

// True when all bytes of `w` lie in one read-only, file-backed mapping of this process.
bool in_read_only_file_mapping(const tdm_weight& w);

// The process-wide packed copy of `w` for `ops`, packing it on `pool` the first time; null
// when `w` is not in a read-only file mapping. Throws tdm::Error(TDM_OOM) when the copy
// cannot be allocated.
std::shared_ptr<const PackedWeight> shared_packed_weight(const tdm_weight& w, const PackedOps& ops, ThreadPool& pool);

// Packed copies made in this process so far, and those still held by some context.
struct PackedWeightStats {
  uint64_t made = 0;
  uint64_t live = 0;
};
PackedWeightStats packed_weight_stats();

// Bytes of one packed matrix of `w` for `ops`.
size_t packed_matrix_bytes(const tdm_weight& w, const PackedOps& ops);

// Packs matrix m of `w` into dst (packed_matrix_bytes(w, ops) bytes) on the pool.
void pack_matrix(const tdm_weight& w, int64_t m, const PackedOps& ops, uint8_t* dst, ThreadPool& pool);

}  // namespace tdm::cpu
