// Scalar reference kernels and the run-time choice of kernel table (see kernels.h). The
// quant dot products and converters come from quants_ref.cpp; this file adds the float
// row converters, the attention and FFN helpers, and the processor check.
#include <cmath>
#include <cstring>

#include "core/ggml_types.h"
#include "cpu/kernels.h"
#include "cpu/quants.h"

namespace tdm::cpu {

namespace {

void from_float_f32(const float* src, void* dst, int64_t n) { std::memcpy(dst, src, size_t(n) * sizeof(float)); }
void to_float_f32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, size_t(n) * sizeof(float)); }

void from_float_f16(const float* src, void* dst, int64_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
}
void to_float_f16(const void* src, float* dst, int64_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, s + 2 * i, 2);
    dst[i] = fp16_to_fp32(h);
  }
}
void from_float_bf16(const float* src, void* dst, int64_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_bf16(src[i]);
}
void to_float_bf16(const void* src, float* dst, int64_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, s + 2 * i, 2);
    dst[i] = bf16_to_fp32(h);
  }
}

Kernels make_ref() {
  Kernels k{};
  k.isa = "ref";
  auto set = [&](GgmlType t, VecDotFn dot, FromFloatFn from, ToFloatFn to) {
    k.vec_dot[int(t)] = dot;
    k.from_float[int(t)] = from;
    k.to_float[int(t)] = to;
  };
  set(GgmlType::F32, vec_dot_f32_ref, from_float_f32, to_float_f32);
  set(GgmlType::F16, vec_dot_f16_ref, from_float_f16, to_float_f16);
  set(GgmlType::BF16, vec_dot_bf16_ref, from_float_bf16, to_float_bf16);
  set(GgmlType::Q4_0, vec_dot_q4_0_q8_0_ref, quantize_row_q4_0_ref, dequantize_row_q4_0_ref);
  set(GgmlType::Q4_1, vec_dot_q4_1_q8_1_ref, quantize_row_q4_1_ref, dequantize_row_q4_1_ref);
  set(GgmlType::Q5_0, vec_dot_q5_0_q8_0_ref, quantize_row_q5_0_ref, dequantize_row_q5_0_ref);
  set(GgmlType::Q5_1, vec_dot_q5_1_q8_1_ref, quantize_row_q5_1_ref, dequantize_row_q5_1_ref);
  set(GgmlType::Q8_0, vec_dot_q8_0_q8_0_ref, quantize_row_q8_0_ref, dequantize_row_q8_0_ref);
  set(GgmlType::Q8_1, vec_dot_q8_1_q8_1_ref, quantize_row_q8_1_ref, dequantize_row_q8_1_ref);
  set(GgmlType::Q4_K, vec_dot_q4_K_q8_K_ref, quantize_row_q4_K_ref, dequantize_row_q4_K_ref);
  set(GgmlType::Q5_K, vec_dot_q5_K_q8_K_ref, quantize_row_q5_K_ref, dequantize_row_q5_K_ref);
  set(GgmlType::Q6_K, vec_dot_q6_K_q8_K_ref, quantize_row_q6_K_ref, dequantize_row_q6_K_ref);
  set(GgmlType::Q8_K, vec_dot_q8_K_q8_K_ref, quantize_row_q8_K_ref, dequantize_row_q8_K_ref);
  k.axpy_f16 = axpy_f16_ref;
  k.axpy_f32 = axpy_f32_ref;
  k.swiglu_f32 = swiglu_f32_ref;
  return k;
}

bool has_avx2() {
#if defined(__x86_64__) && defined(TDM_HAVE_AVX2)
  __builtin_cpu_init();  // harmless if already done; needed if this runs before libgcc's constructor
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

struct Tables {
  Kernels ref;
  Kernels avx2;
  bool avx2_ok;
  const char* names[2];
  int n_names;

  Tables() : ref(make_ref()), avx2(ref), avx2_ok(has_avx2()) {
    n_names = 0;
    names[n_names++] = "ref";
#if defined(TDM_HAVE_AVX2)
    if (avx2_ok) {
      avx2.isa = "avx2";
      fill_kernels_avx2(avx2);
      names[n_names++] = "avx2";
    }
#endif
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

void axpy_f16_ref(float* y, const uint16_t* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * fp16_to_fp32(x[i]);
}

void axpy_f32_ref(float* y, const float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void swiglu_f32_ref(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

const Kernels& kernels_ref() { return tables().ref; }

const Kernels* kernels_for(const char* variant) {
  const Tables& t = tables();
  if (variant == nullptr || *variant == '\0') {
    if (t.avx2_ok) return &t.avx2;
    return &t.ref;
  }
  if (std::strcmp(variant, "ref") == 0) return &t.ref;
  if (std::strcmp(variant, "avx2") == 0) return t.avx2_ok ? &t.avx2 : nullptr;
  return nullptr;
}

const char* const* kernel_variants(int* count) {
  const Tables& t = tables();
  *count = t.n_names;
  return t.names;
}

}  // namespace tdm::cpu
