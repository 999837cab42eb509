// Scalar reference kernels and the run-time choice of kernel table (see kernels.h). The
// quant dot products and converters come from quants_ref.cpp; this file adds the float
// row converters, the attention and FFN helpers, and the processor checks.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

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
  set(GgmlType::MXFP4, vec_dot_mxfp4_q8_0_ref, quantize_row_mxfp4_ref, dequantize_row_mxfp4_ref);
  set(GgmlType::Q2_K, vec_dot_q2_K_q8_K_ref, quantize_row_q2_K_ref, dequantize_row_q2_K_ref);
  set(GgmlType::Q3_K, vec_dot_q3_K_q8_K_ref, quantize_row_q3_K_ref, dequantize_row_q3_K_ref);
  set(GgmlType::IQ4_NL, vec_dot_iq4_nl_q8_0_ref, quantize_row_iq4_nl_ref, dequantize_row_iq4_nl_ref);
  set(GgmlType::IQ4_XS, vec_dot_iq4_xs_q8_K_ref, quantize_row_iq4_xs_ref, dequantize_row_iq4_xs_ref);
  set(GgmlType::IQ2_XXS, vec_dot_iq2_xxs_q8_K_ref, quantize_row_iq2_xxs_ref, dequantize_row_iq2_xxs_ref);
  set(GgmlType::IQ2_XS, vec_dot_iq2_xs_q8_K_ref, quantize_row_iq2_xs_ref, dequantize_row_iq2_xs_ref);
  set(GgmlType::IQ2_S, vec_dot_iq2_s_q8_K_ref, quantize_row_iq2_s_ref, dequantize_row_iq2_s_ref);
  set(GgmlType::IQ3_XXS, vec_dot_iq3_xxs_q8_K_ref, quantize_row_iq3_xxs_ref, dequantize_row_iq3_xxs_ref);
  set(GgmlType::IQ3_S, vec_dot_iq3_s_q8_K_ref, quantize_row_iq3_s_ref, dequantize_row_iq3_s_ref);
  k.attention = attention_ref;
  k.swiglu_f32 = swiglu_f32_ref;
  k.geglu_f32 = geglu_f32_ref;
  k.scaled_tanh_f32 = scaled_tanh_f32_ref;
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

// AVX-VNNI: the VEX-encoded VPDPBUSD (Alder Lake, Zen 4 and later); the OS saves the ymm state
// if has_avx2() holds.
bool has_avxvnni() {
#if defined(__x86_64__) && defined(TDM_HAVE_AVXVNNI)
  __builtin_cpu_init();
  return has_avx2() && __builtin_cpu_supports("avxvnni");
#else
  return false;
#endif
}

// The AVX-512 table needs F, BW, VL and VNNI (Cascade Lake, Ice Lake, Zen 4 and later);
// libgcc's check includes the OS saving the zmm state.
bool has_avx512() {
#if defined(__x86_64__) && defined(TDM_HAVE_AVX512)
  __builtin_cpu_init();
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

struct Tables {
  Kernels ref;
  Kernels avx2;
  Kernels avxvnni;
  Kernels avx512;
  bool avx2_ok;
  bool avxvnni_ok;
  bool avx512_ok;
  const char* names[7];
  int n_names;

  Tables()
      : ref(make_ref()), avx2(ref), avxvnni(ref), avx512(ref), avx2_ok(has_avx2()), avxvnni_ok(has_avxvnni()), avx512_ok(has_avx512()) {
    n_names = 0;
    names[n_names++] = "ref";
#if defined(TDM_HAVE_AVX2)
    if (avx2_ok) {
      avx2.isa = "avx2";
      fill_kernels_avx2(avx2);
      names[n_names++] = "avx2+pack";
      names[n_names++] = "avx2";
    }
#endif
#if defined(TDM_HAVE_AVXVNNI)
    if (avxvnni_ok) {
      avxvnni.isa = "avxvnni";
      fill_kernels_avxvnni(avxvnni);
      names[n_names++] = "avxvnni+pack";
      names[n_names++] = "avxvnni";
    }
#endif
#if defined(TDM_HAVE_AVX512)
    if (avx512_ok) {
      // AVX-512 adds to AVX2: types without an AVX-512 kernel keep the AVX2 one (its VNNI
      // build where the processor has one: the same results).
      avx512 = avxvnni_ok ? avxvnni : avx2;
      avx512.isa = "avx512";
      fill_kernels_avx512(avx512);
      names[n_names++] = "avx512+pack";
      names[n_names++] = "avx512";
    }
#endif
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

size_t attn_scratch_floats(int64_t n_rows, int32_t dk, int32_t dv) {
  // Transposed queries, scores, the K and V tiles, accumulators, and the max and sum per row,
  // with rows and head sizes padded to 16 floats (one 64-byte line).
  const int64_t rows = (n_rows + 15) / 16 * 16;
  const int64_t dkp = (dk + 15) / 16 * 16, dvp = (dv + 15) / 16 * 16;
  return size_t(rows * dkp + kAttnTile * rows + kAttnTile * (dkp + dvp) + rows * dvp + 2 * rows + 16 * 16);
}

namespace {
inline float kv_elt(const void* row, int64_t i, AttnKv kv) {
  const uint8_t* r = static_cast<const uint8_t*>(row);
  uint16_t h;
  switch (kv) {
    case AttnKv::f32: return static_cast<const float*>(row)[i];
    case AttnKv::f16: std::memcpy(&h, r + 2 * i, 2); return fp16_to_fp32(h);
    case AttnKv::q8_0: {
      const uint8_t* b = r + (i / kKvQ8Block) * kKvQ8BlockBytes;
      std::memcpy(&h, b, 2);
      return float(int8_t(b[2 + i % kKvQ8Block])) * fp16_to_fp32(h);
    }
  }
  return 0.0f;
}
}  // namespace

void attention_ref(const AttnTask& a) {
  for (int32_t t = 0; t < a.n_tok; ++t) {
    const int64_t n_ctx = std::min(a.first_pos + t + 1, a.pos_end);
    for (int32_t g = 0; g < a.group; ++g) {
      const float* q = a.q + t * a.q_stride + int64_t(g) * a.dk;
      float* out = a.out + t * a.out_stride + int64_t(g) * a.dv;
      float* acc = a.scratch;
      float* s = a.scratch + a.dv;
      std::fill(acc, acc + a.dv, 0.0f);
      float m = -INFINITY, sum = 0.0f;
      for (int64_t j0 = a.pos_begin; j0 < n_ctx; j0 += kAttnTile) {
        const int64_t n = std::min(kAttnTile, n_ctx - j0);
        float tmax = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          float dot = 0.0f;
          for (int32_t e = 0; e < a.dk; ++e) dot += q[e] * kv_elt(attn_k_row(a, j0 + j), e, a.kv);
          s[j] = dot * a.scale;
          if (a.softcap > 0.0f) s[j] = std::tanh(s[j]) * a.softcap;
          tmax = std::max(tmax, s[j]);
        }
        if (tmax > m) {
          const float ms = std::exp(m - tmax);
          for (int32_t e = 0; e < a.dv; ++e) acc[e] *= ms;
          sum *= ms;
          m = tmax;
        }
        for (int64_t j = 0; j < n; ++j) {
          const float p = std::exp(s[j] - m);
          sum += p;
          for (int32_t e = 0; e < a.dv; ++e) acc[e] += p * kv_elt(attn_v_row(a, j0 + j), e, a.kv);
        }
      }
      std::copy(acc, acc + a.dv, out);
      a.row_max[t * a.group + g] = m;
      a.row_sum[t * a.group + g] = sum;
    }
  }
}

void scaled_tanh_f32_ref(const float* x, float* y, int64_t n, float in, float out) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i] * in) * out;
}

void swiglu_f32_ref(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

// gelu's tanh form at every f16 value, rounded to f16: ggml's CPU build reads its gelu from such
// a table (GGML_GELU_FP16), so the same lookup makes tandem's FFN round as llama.cpp's does.
const uint16_t* gelu_f16_table() {
  static const std::vector<uint16_t> table = [] {
    std::vector<uint16_t> t(1 << 16);
    for (uint32_t i = 0; i < t.size(); ++i) {
      const float x = fp16_to_fp32(uint16_t(i));
      t[i] = fp32_to_fp16(0.5f * x * (1.0f + std::tanh(0.79788456080286535588f * x * (1.0f + 0.044715f * x * x))));
    }
    return t;
  }();
  return table.data();
}

const float* gelu_f32_table() {
  static const std::vector<float> table = [] {
    const uint16_t* h = gelu_f16_table();
    std::vector<float> t(1 << 16);
    for (size_t i = 0; i < t.size(); ++i) t[i] = fp16_to_fp32(h[i]);
    return t;
  }();
  return table.data();
}

void geglu_f32_ref(const float* g, const float* u, float* y, int64_t n) {
  const uint16_t* table = gelu_f16_table();
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    if (x <= -10.0f) y[i] = 0.0f;
    else if (x >= 10.0f) y[i] = x * u[i];
    else y[i] = fp16_to_fp32(table[fp32_to_fp16(x)]) * u[i];
  }
}

const Kernels& kernels_ref() { return tables().ref; }

const Kernels* kernels_for(const char* variant) {
  const Tables& t = tables();
  if (variant == nullptr || *variant == '\0') {
    if (t.avx512_ok) return &t.avx512;
    if (t.avxvnni_ok) return &t.avxvnni;
    if (t.avx2_ok) return &t.avx2;
    return &t.ref;
  }
  if (std::strcmp(variant, "ref") == 0) return &t.ref;
  if (std::strcmp(variant, "avx2") == 0) return t.avx2_ok ? &t.avx2 : nullptr;
  if (std::strcmp(variant, "avxvnni") == 0) return t.avxvnni_ok ? &t.avxvnni : nullptr;
  if (std::strcmp(variant, "avx512") == 0) return t.avx512_ok ? &t.avx512 : nullptr;
  return nullptr;
}

const char* const* kernel_variants(int* count) {
  const Tables& t = tables();
  *count = t.n_names;
  return t.names;
}

}  // namespace tdm::cpu
