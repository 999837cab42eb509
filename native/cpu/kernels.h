// The CPU kernel table: one set of function pointers per instruction set (scalar reference,
// AVX2), filled at start-up and chosen at run time from what the processor reports.
// The CPU backend's ops are written once against this table, so the same op runs with the
// reference kernels or the SIMD ones, and the tests compare the two.
#pragma once
#include <cstdint>

namespace tdm::cpu {

constexpr int kNumTypes = 40;  // ggml type ids are below this

// Dot product of n elements: w in a weight type, a in that type's activation (vec_dot) type.
using VecDotFn = float (*)(const void* w, const void* a, int64_t n);
// out[j] = dot(w, a + j * a_stride bytes) for j < 4: one weight row against four activation
// rows, so a batch decodes each weight block once instead of once per token.
using VecDot4Fn = void (*)(const void* w, const void* a, size_t a_stride, int64_t n, float* out);
// Converts n floats to a type's blocks (n a multiple of the block size).
using FromFloatFn = void (*)(const float* src, void* dst, int64_t n);
// Converts n elements of a type back to floats.
using ToFloatFn = void (*)(const void* src, float* dst, int64_t n);

struct Kernels {
  const char* isa;                  // "ref", "avx2"
  VecDotFn vec_dot[kNumTypes];      // by weight type; null where the type is not computable
  VecDot4Fn vec_dot4[kNumTypes];    // (optional) by weight type; null falls back to vec_dot
  FromFloatFn from_float[kNumTypes];  // by activation type (q8_0, q8_1, q8_K, f16, bf16)
  ToFloatFn to_float[kNumTypes];    // by stored type
  // y[i] += a * x[i] for n elements of fp16 x (attention's V accumulation).
  void (*axpy_f16)(float* y, const uint16_t* x, float a, int64_t n);
  // y[i] += a * x[i] for n floats.
  void (*axpy_f32)(float* y, const float* x, float a, int64_t n);
  // y[i] = silu(g[i]) * u[i] for n floats.
  void (*swiglu_f32)(const float* g, const float* u, float* y, int64_t n);
};

// The scalar reference table (always available).
const Kernels& kernels_ref();
// The table for a variant name ("ref", "avx2"), or nullptr when this build or this processor
// lacks it. A null or empty name picks the best one the processor supports.
const Kernels* kernels_for(const char* variant);
// Variant names usable on this machine, best last (e.g. {"ref", "avx2"}).
const char* const* kernel_variants(int* count);

// Fills the SIMD entries of a table; defined in the ISA library (avx2/), which is compiled
// with its own flags, so it is called only after the processor check.
void fill_kernels_avx2(Kernels& k);

// Scalar reference kernels for the entries above (<op>_<dtype>_ref).
void axpy_f16_ref(float* y, const uint16_t* x, float a, int64_t n);
void axpy_f32_ref(float* y, const float* x, float a, int64_t n);
void swiglu_f32_ref(const float* g, const float* u, float* y, int64_t n);

}  // namespace tdm::cpu
