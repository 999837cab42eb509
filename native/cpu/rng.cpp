// Philox4x32-10 and Box-Muller normals (see rng.h). One Philox call yields four 32-bit
// words, which become two uniform pairs and so four normals: element i of a stream is
// lane i % 4 of counter i / 4, whatever slice of the stream a call asks for.
#include "cpu/rng.h"

#include <cmath>
#include <string>

#include "core/error.h"

namespace tdm {

namespace {

struct Block {
  uint32_t w[4];
};

inline void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = uint64_t(a) * b;
  *hi = uint32_t(p >> 32);
  *lo = uint32_t(p);
}

// Philox4x32 with 10 rounds, the constants of the paper.
Block philox4x32_10(Block c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int r = 0; r < 10; r++) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c.w[0], &hi0, &lo0);
    mulhilo(kMul1, c.w[2], &hi1, &lo1);
    c = Block{{hi1 ^ c.w[1] ^ k0, lo1, hi0 ^ c.w[3] ^ k1, lo0}};
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return c;
}

// A 32-bit word as a uniform in (0, 1): never 0, so the logarithm below is finite.
inline double open_unit(uint32_t x) { return (double(x) + 0.5) * (1.0 / 4294967296.0); }

// Four standard normals from counter `index` of the stream.
void normals4(uint64_t seed, uint64_t stream, uint64_t index, double out[4]) {
  Block c{{uint32_t(index), uint32_t(index >> 32), uint32_t(stream), uint32_t(stream >> 32)}};
  Block r = philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int p = 0; p < 2; p++) {
    double radius = std::sqrt(-2.0 * std::log(open_unit(r.w[2 * p])));
    double angle = kTwoPi * open_unit(r.w[2 * p + 1]);
    out[2 * p] = radius * std::cos(angle);
    out[2 * p + 1] = radius * std::sin(angle);
  }
}

}  // namespace

void fill_normal(float* out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float std) {
  if (seed > kRngMaxIndex) throw Error(code::bad_argument, "random seed " + std::to_string(seed) + " exceeds 2^53");
  if (stream > kRngMaxIndex) throw Error(code::bad_argument, "random stream id " + std::to_string(stream) + " exceeds 2^53");
  if (offset > kRngMaxIndex || n > kRngMaxIndex - offset)
    throw Error(code::bad_argument, "random stream range ends past element 2^53");
  if (!(std >= 0.0f) || !std::isfinite(std) || !std::isfinite(mean))
    throw Error(code::bad_argument, "normal distribution needs a finite mean and a finite, non-negative std");
  double z[4];
  size_t k = 0;
  uint64_t i = offset;
  while (k < n) {
    normals4(seed, stream, i >> 2, z);
    for (unsigned lane = unsigned(i & 3); lane < 4 && k < n; lane++, k++, i++) {
      out[k] = float(double(mean) + double(std) * z[lane]);
    }
  }
}

}  // namespace tdm
