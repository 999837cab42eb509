// A memory read-bandwidth probe for the bench: the decode floor of a model is its bytes
// read per token over this number, measured on the spot with the threads the run uses.
#pragma once
#include <cstddef>

namespace tdm::cpu {

struct ReadBandwidth {
  double bytes_per_second;  // best pass: buffer bytes / wall time of the slowest thread
  double best_seconds;      // wall time of that pass
  size_t bytes;             // buffer size actually read per pass (a whole number of lines per thread)
  int threads;
  int passes;
};

// Reads a `bytes` buffer (first touched by the thread that reads each slice) `passes`
// times with `threads` threads, each streaming its own contiguous slice, and reports the
// best pass. Throws tdm::Error (TDM_BAD_ARGUMENT) for bytes < 1 MiB, threads outside
// 1..1024 or passes outside 1..1000; TDM_OOM when the buffer cannot be allocated.
ReadBandwidth measure_read_bandwidth(size_t bytes, int threads, int passes);

}  // namespace tdm::cpu
