// Row and element ops on the GPU: RMSNorm (double-precision sum of squares, as the CPU
// backend and ggml compute it), RoPE in both pair layouts, plain or YaRN (angles advanced
// by repeated float multiplication from a host-computed theta scale, as ggml's rope cache
// does), add and mul with row broadcast, SwiGLU and row scaling.
#include <math.h>

#include <algorithm>

#include "gpu_context.h"
#include "quant_math.h"

namespace tdm::gpu {

namespace {

// A block per row, about four elements a thread (up to 1024 threads): a decode step's one-row
// norms are then a single round of loads rather than a long loop on one multiprocessor.
constexpr int kNormMaxThreads = 1024;

int norm_threads(int64_t n_cols) {
  const int64_t t = ((n_cols + 3) / 4 + 31) / 32 * 32;
  return int(t < 32 ? 32 : (t > kNormMaxThreads ? kNormMaxThreads : t));
}

__global__ void __launch_bounds__(kNormMaxThreads) rms_norm_kernel(const float* x, const float* w, float* y, int64_t n_cols,
                                                                   float eps) {
  __shared__ double partial[kNormMaxThreads / 32];
  __shared__ float s_scale;
  const int64_t r = blockIdx.x;
  const float* xr = x + r * n_cols;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x) sum += double(xr[i]) * double(xr[i]);
  for (int o = 16; o > 0; o >>= 1) sum += tdm_shfl_xor(sum, o, 32);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (unsigned g = 0; g < blockDim.x / 32; ++g) total += partial[g];
    const float mean = float(total / double(n_cols));
    s_scale = 1.0f / sqrtf(mean + eps);
  }
  __syncthreads();
  const float scale = s_scale;
  float* yr = y + r * n_cols;
  for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x) {
    const float v = mul_rn(xr[i], scale);
    yr[i] = w != nullptr ? mul_rn(v, w[i]) : v;
  }
}

// Per-call RoPE constants the host derives once (tdm_rope_params, tdm_rope_yarn_consts).
struct RopeConsts {
  int32_t mode;
  float theta_scale, freq_scale, ext_factor;
  tdm_rope_yarn yarn;
};

// A block per token: the angle table first (a serial chain of multiplications, so one thread
// builds it), then every (head, pair) rotation.
__global__ void rope_kernel(float* x, const int32_t* pos, int32_t n_heads, int32_t head_dim, int32_t rope_dim, RopeConsts k) {
  TDM_DYNAMIC_SHARED(float, cs);  // cos, sin per pair
  const int64_t t = blockIdx.x;
  const int half = rope_dim / 2;
  if (threadIdx.x == 0) {
    float theta = float(pos[t]);
    for (int i = 0; i < half; ++i) {
      cs[2 * i] = theta;
      theta = mul_rn(theta, k.theta_scale);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float theta = cs[2 * i];
    float a = mul_rn(k.freq_scale, theta);
    if (k.ext_factor != 0.0f) {  // YaRN, as the CPU backend (ggml's rope_yarn)
      const float y = (float(i) - k.yarn.low) / fmaxf(0.001f, k.yarn.high - k.yarn.low);
      const float mix = mul_rn(1.0f - fminf(1.0f, fmaxf(0.0f, y)), k.ext_factor);
      a = add_rn(mul_rn(a, 1.0f - mix), mul_rn(theta, mix));
    }
    cs[2 * i] = mul_rn(cosf(a), k.yarn.mscale);
    cs[2 * i + 1] = mul_rn(sinf(a), k.yarn.mscale);
  }
  __syncthreads();
  float* row = x + t * int64_t(n_heads) * head_dim;
  for (int j = threadIdx.x; j < n_heads * half; j += blockDim.x) {
    const int h = j / half, i = j % half;
    float* xh = row + int64_t(h) * head_dim;
    const int a = k.mode == TDM_ROPE_NEOX ? i : 2 * i;
    const int b = k.mode == TDM_ROPE_NEOX ? i + half : 2 * i + 1;
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const float x0 = xh[a], x1 = xh[b];
    xh[a] = add_rn(mul_rn(x0, c), -mul_rn(x1, s));
    xh[b] = add_rn(mul_rn(x0, s), mul_rn(x1, c));
  }
}

template <bool kAdd>
__global__ void binary_kernel(const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols, int64_t b_stride) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * n_cols) return;
  const int64_t r = i / n_cols, c = i % n_cols;
  const float bv = b[r * b_stride + c];
  y[i] = kAdd ? add_rn(a[i], bv) : mul_rn(a[i], bv);
}

__global__ void swiglu_kernel(const float* g, const float* u, float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gv = g[i];
  y[i] = mul_rn(gv / (1.0f + expf(-gv)), u[i]);
}

// gelu's tanh form on gate rounded to f16, its value rounded to f16: the CPU backend's lookup
// (ggml's CPU table) computed rather than read, so both devices give the same bits but for tanhf.
__global__ void geglu_kernel(const float* g, const float* u, float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gv = g[i];
  float act;
  if (gv <= -10.0f) {
    act = 0.0f;
  } else if (gv >= 10.0f) {
    act = gv;
  } else {
    const float x = half_to_float(float_to_half(gv));
    act = half_to_float(float_to_half(0.5f * x * (1.0f + tanhf(0.79788456080286535588f * x * (1.0f + 0.044715f * x * x)))));
  }
  y[i] = mul_rn(act, u[i]);
}

__global__ void scale_kernel(const float* x, float* y, int64_t n, float scale) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  y[i] = mul_rn(x[i], scale);
}

// Each step rounded as llama.cpp's scale, tanh, scale (mul_rn keeps nvcc from fusing them).
__global__ void softcap_kernel(const float* x, float* y, int64_t n, float inv, float cap) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  y[i] = mul_rn(tanhf(mul_rn(x[i], inv)), cap);
}

__global__ void scale_rows_kernel(float* x, const float* scale, int64_t n_rows, int64_t n_cols, int32_t fn) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * n_cols) return;
  const float sv = scale[i / n_cols];
  const float f = fn == TDM_ROW_FN_SIGMOID ? 1.0f / (1.0f + expf(-sv)) : sv;
  x[i] = mul_rn(x[i], f);
}

unsigned blocks_for(int64_t n, int per) {
  const int64_t b = (n + per - 1) / per;
  if (b > INT32_MAX) bad("elementwise op too large for one launch");
  return unsigned(b);
}

}  // namespace

tdm_status op_rms_norm(tdm_backend_ctx* ctx, const float* x, const float* w, float* y, int64_t n_rows, int64_t n_cols,
                       float eps, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n_rows <= 0 || n_cols <= 0) return;
    if (x == nullptr || y == nullptr) bad("rms_norm with a null pointer");
    if (n_rows > INT32_MAX) bad("rms_norm with too many rows");
    TDM_LAUNCH(rms_norm_kernel, unsigned(n_rows), norm_threads(n_cols), 0, stream_of(c, s).stream)(x, w, y, n_cols, eps);
    check_launch("rms_norm_kernel");
  });
}

tdm_status op_rope(tdm_backend_ctx* ctx, float* x, const int32_t* pos, int64_t n_tokens, int32_t n_heads, int32_t head_dim,
                   int32_t rope_dim, const tdm_rope_params* p, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n_tokens <= 0) return;
    if (x == nullptr || pos == nullptr || p == nullptr) bad("rope with a null pointer");
    if (rope_dim <= 0 || rope_dim > head_dim || rope_dim % 2 != 0) bad("rope_dim must be even and at most head_dim");
    if (n_heads <= 0) bad("rope needs n_heads > 0");
    if (p->mode != TDM_ROPE_NORM && p->mode != TDM_ROPE_NEOX) unsupported("unknown rope mode");
    if (p->ext_factor != 0.0f && p->n_ctx_orig <= 0) bad("YaRN rope needs n_ctx_orig > 0");
    if (n_tokens > INT32_MAX) bad("rope with too many tokens");
    // The host's powf and logf, so the constants are the very floats the CPU backend uses.
    const RopeConsts k{p->mode, powf(p->freq_base, -2.0f / float(rope_dim)), p->freq_scale, p->ext_factor,
                       tdm_rope_yarn_consts(p, rope_dim)};
    // About two rotations a thread, up to 1024 threads: one token's rope is then one short round.
    const int64_t pairs = int64_t(n_heads) * (rope_dim / 2);
    const int threads = int(std::min<int64_t>(1024, std::max<int64_t>(64, ((pairs + 1) / 2 + 63) / 64 * 64)));
    TDM_LAUNCH(rope_kernel, unsigned(n_tokens), threads, size_t(rope_dim) * sizeof(float), stream_of(c, s).stream)(
        x, pos, n_heads, head_dim, rope_dim, k);
    check_launch("rope_kernel");
  });
}

template <bool kAdd>
tdm_status binary_op(tdm_backend_ctx* ctx, const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols,
                     int64_t b_row_stride, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n_rows <= 0 || n_cols <= 0) return;
    if (a == nullptr || b == nullptr || y == nullptr) bad("elementwise op with a null pointer");
    if (b_row_stride < 0) bad("b_row_stride must not be negative");
    const int64_t n = n_rows * n_cols;
    TDM_LAUNCH(binary_kernel<kAdd>, blocks_for(n, 256), 256, 0, stream_of(c, s).stream)(a, b, y, n_rows, n_cols, b_row_stride);
    check_launch(kAdd ? "add kernel" : "mul kernel");
  });
}

tdm_status op_add(tdm_backend_ctx* ctx, const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols,
                  int64_t b_row_stride, tdm_stream* s) {
  return binary_op<true>(ctx, a, b, y, n_rows, n_cols, b_row_stride, s);
}

tdm_status op_mul(tdm_backend_ctx* ctx, const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols,
                  int64_t b_row_stride, tdm_stream* s) {
  return binary_op<false>(ctx, a, b, y, n_rows, n_cols, b_row_stride, s);
}

tdm_status op_swiglu(tdm_backend_ctx* ctx, const float* gate, const float* up, float* y, int64_t n, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n <= 0) return;
    if (gate == nullptr || up == nullptr || y == nullptr) bad("swiglu with a null pointer");
    TDM_LAUNCH(swiglu_kernel, blocks_for(n, 256), 256, 0, stream_of(c, s).stream)(gate, up, y, n);
    check_launch("swiglu_kernel");
  });
}

tdm_status op_geglu(tdm_backend_ctx* ctx, const float* gate, const float* up, float* y, int64_t n, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n <= 0) return;
    if (gate == nullptr || up == nullptr || y == nullptr) bad("geglu with a null pointer");
    TDM_LAUNCH(geglu_kernel, blocks_for(n, 256), 256, 0, stream_of(c, s).stream)(gate, up, y, n);
    check_launch("geglu_kernel");
  });
}

tdm_status op_scale(tdm_backend_ctx* ctx, const float* x, float* y, int64_t n, float scale, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n <= 0) return;
    if (x == nullptr || y == nullptr) bad("scale with a null pointer");
    TDM_LAUNCH(scale_kernel, blocks_for(n, 256), 256, 0, stream_of(c, s).stream)(x, y, n, scale);
    check_launch("scale_kernel");
  });
}

tdm_status op_softcap(tdm_backend_ctx* ctx, const float* x, float* y, int64_t n, float cap, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n <= 0) return;
    if (x == nullptr || y == nullptr) bad("softcap with a null pointer");
    if (!(cap > 0.0f) || isinf(cap)) bad("softcap's cap must be a positive number");
    TDM_LAUNCH(softcap_kernel, blocks_for(n, 256), 256, 0, stream_of(c, s).stream)(x, y, n, 1.0f / cap, cap);
    check_launch("softcap_kernel");
  });
}

tdm_status op_scale_rows(tdm_backend_ctx* ctx, float* x, const float* scale, int64_t n_rows, int64_t n_cols, int32_t fn,
                         tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (n_rows <= 0 || n_cols <= 0) return;
    if (x == nullptr || scale == nullptr) bad("scale_rows with a null pointer");
    if (fn != TDM_ROW_FN_IDENTITY && fn != TDM_ROW_FN_SIGMOID) unsupported("unknown row function");
    TDM_LAUNCH(scale_rows_kernel, blocks_for(n_rows * n_cols, 256), 256, 0, stream_of(c, s).stream)(x, scale, n_rows, n_cols, fn);
    check_launch("scale_rows_kernel");
  });
}

}  // namespace tdm::gpu
