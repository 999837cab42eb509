// Counter-based random numbers for synthetic weights: Philox4x32-10 (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC'11). Value i of a stream depends
// only on (seed, stream, i), so any slice of a tensor can be generated on its own.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tdm {

// Largest seed, stream id or element index accepted: 2^53, what a JS number holds exactly.
constexpr uint64_t kRngMaxIndex = uint64_t(1) << 53;

// Writes n normal(mean, std) floats: element k of `out` is element (offset + k) of the
// stream named by (seed, stream). Throws tdm::Error(TDM_BAD_ARGUMENT) when seed, stream
// or offset + n exceed kRngMaxIndex, or std is negative or not finite.
void fill_normal(float* out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float std);

}  // namespace tdm
