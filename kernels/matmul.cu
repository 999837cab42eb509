// Matrix products on the GPU with no BLAS: activations are first converted to the weight
// type's dot type (q8_0, q8_1, q8_K, f16, bf16 or f32, as llama.cpp and the CPU backend do),
// then a matrix-vector kernel (decode: a warp per weight row, up to 8 activation rows per pass
// over the row) or a 64x64 tiled kernel (prefill) dequantizes weights inside the kernel into
// int8 chunks and sums dp4a products per 32-element chunk. Both kernels also run grouped (one
// matrix per MoE expert, rows gathered through a list) for moe.cu. get_rows lives here too.
#include <string>

#include "gpu_context.h"
#include "quant_math.h"

namespace tdm::gpu {

namespace {

constexpr int kMmvRows = 8;         // activation rows per matrix-vector pass over a weight row
constexpr int kMmvThreads = 128;    // a warp per weight row
constexpr int kTile = 64;           // tiled kernel: weight rows and activation rows per block
constexpr int kTileChunks = 4;      // tiled kernel, quantized: 32-element chunks per k step
constexpr int kTileK = 32;          // tiled kernel, float: elements per k step
constexpr int kTileThreads = 256;   // 16 x 16 threads, 4 x 4 outputs each

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = TDM_WARP / 2; o > 0; o >>= 1) v += tdm_shfl_xor(v, o);
  return v;
}

// List entries [begin, end) of group g.
__device__ __forceinline__ void group_range(const GroupMap& m, int g, int64_t* begin, int64_t* end) {
  if (m.offsets == nullptr) {
    *begin = 0;
    *end = m.n_dense;
  } else {
    *begin = m.offsets[g];
    *end = m.offsets[g + 1];
  }
}
// A matrix-vector warp's work: its row (one per warp) and lane, and the token range of the
// block's matrix (blockIdx.y) in the group map.
struct MmvSlot {
  int64_t r, begin, end;
  int64_t group;  // the block's matrix
  int lane;
};
// False when the warp has no row or the matrix no tokens.
__device__ __forceinline__ bool mmv_slot(const GroupMap& map, int64_t n_rows, MmvSlot* w) {
  constexpr int kWarps = kMmvThreads / TDM_WARP;
  w->lane = threadIdx.x % TDM_WARP;
  w->r = int64_t(blockIdx.x) * kWarps + threadIdx.x / TDM_WARP;
  int g = int(blockIdx.y);
  if (map.active != nullptr) {
    if (g >= map.active[0]) return false;
    g = map.active[1 + g];
  }
  w->group = g;
  group_range(map, g, &w->begin, &w->end);
  return w->r < n_rows && w->begin < w->end;
}
__device__ __forceinline__ int64_t in_row(const GroupMap& m, int64_t i) { return m.in_list ? m.list[i] / m.in_div : i; }
__device__ __forceinline__ int64_t out_row(const GroupMap& m, int64_t i) { return m.out_list ? m.list[i] : i; }

// ---- activation conversion

// q8_0 / q8_1: a 32-lane group per 32-element chunk; rows are contiguous, so chunk k of the
// whole array is elements 32k..32k+31 whatever its row.
__global__ void quantize_q8_kernel(const float* x, int64_t n_chunks_total, int8_t* q, float* d, float* s) {
  const int64_t chunk = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (chunk >= n_chunks_total) return;
  const float v = x[chunk * 32 + lane];
  float amax = fabsf(v);
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, tdm_shfl_xor(amax, o, 32));
  const float dd = amax / 127;
  const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
  const int lv = q8_level(v, id);
  q[chunk * 32 + lane] = int8_t(lv);
  int sum = lv;
  for (int o = 16; o > 0; o >>= 1) sum += tdm_shfl_xor(sum, o, 32);
  if (lane == 0) {
    d[chunk] = half_to_float(float_to_half(dd));
    s[chunk] = half_to_float(float_to_half(float(sum) * dd));
  }
}

// q8_K: a block of 256 threads per 256-element super-block; the scale comes from the first
// element of largest magnitude, as the CPU quantizer picks it. Chunk d repeats the block's d;
// chunk s is d times the chunk's sum of levels (the min term of Q4_K/Q5_K).
__global__ void __launch_bounds__(256) quantize_q8k_kernel(const float* x, int8_t* q, float* d, float* s) {
  __shared__ float s_abs[256 / 32];
  __shared__ int s_idx[256 / 32];
  __shared__ float s_scale;
  const int64_t sb = blockIdx.x;
  const int t = threadIdx.x, lane = t & 31, grp = t >> 5;
  const float v = x[sb * 256 + t];
  float a = fabsf(v);
  int idx = t;
  for (int o = 16; o > 0; o >>= 1) {
    const float oa = tdm_shfl_xor(a, o, 32);
    const int oi = tdm_shfl_xor(idx, o, 32);
    if (oa > a || (oa == a && oi < idx)) {
      a = oa;
      idx = oi;
    }
  }
  if (lane == 0) {
    s_abs[grp] = a;
    s_idx[grp] = idx;
  }
  __syncthreads();
  if (t == 0) {
    float ba = s_abs[0];
    int bi = s_idx[0];
    for (int g = 1; g < 256 / 32; ++g) {
      if (s_abs[g] > ba) {  // groups are in index order, so a tie keeps the earlier one
        ba = s_abs[g];
        bi = s_idx[g];
      }
    }
    s_scale = x[sb * 256 + bi];
  }
  __syncthreads();
  const float mx = s_scale;
  const float iscale = mx != 0.0f ? -127.0f / mx : 0.0f;
  const int lv = mx != 0.0f ? q8k_level(v, iscale) : 0;
  q[sb * 256 + t] = int8_t(lv);
  int sum = lv;
  for (int o = 16; o > 0; o >>= 1) sum += tdm_shfl_xor(sum, o, 32);
  const float dd = mx != 0.0f ? 1.0f / iscale : 0.0f;
  if (lane == 0) {
    d[sb * 8 + grp] = dd;
    s[sb * 8 + grp] = dd * float(sum);
  }
}

__global__ void round_floats_kernel(const float* x, int64_t n, int act, float* y) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = round_to_act(x[i], act);
}

// ---- weights as floats (f32, f16, bf16)

template <uint32_t T>
__device__ __forceinline__ float load_w1(const uint8_t* row, int64_t k) {
  if constexpr (T == kF32) return reinterpret_cast<const float*>(row)[k];
  if constexpr (T == kF16) return half_to_float(reinterpret_cast<const uint16_t*>(row)[k]);
  return bf16_to_float(reinterpret_cast<const uint16_t*>(row)[k]);
}

// Eight weights from element k (16-byte aligned).
template <uint32_t T>
__device__ __forceinline__ void load_w8(const uint8_t* row, int64_t k, float* out) {
  if constexpr (T == kF32) {
    const float4* p = reinterpret_cast<const float4*>(row + k * 4);
    const float4 a = p[0], b = p[1];
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
  } else {
    const uint4 u = *reinterpret_cast<const uint4*>(row + k * 2);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
    for (int i = 0; i < 4; ++i) {
      const uint16_t lo = uint16_t(w[i] & 0xffffu), hi = uint16_t(w[i] >> 16);
      out[2 * i] = T == kF16 ? half_to_float(lo) : bf16_to_float(lo);
      out[2 * i + 1] = T == kF16 ? half_to_float(hi) : bf16_to_float(hi);
    }
  }
}

// ---- matrix-vector kernels (decode)

// Weight staging. Each lane decodes its own 17-34-byte block, and with 1- and 2-byte loads
// from global memory every load instruction of the warp touches about nine cache lines: the
// likely limit of the 1.4-2.2 TB/s an H200 measured of its 4.8 (run 8 of 2026-11-27, ncu). Staged, the
// warp copies a pass's bytes (the TDM_WARP chunks it sums at once) into shared memory with
// 16-byte loads, the next pass's loads in flight while this one is summed, and each lane
// decodes its chunk from there. Lanes keep the same chunks in the same order, so the sums are
// the same bits. TANDEM_GPU_MMV_STAGE=0 reads global memory directly, to compare.
constexpr int kStageVecs = 3;  // 16-byte loads per lane per pass

template <uint32_t T>
constexpr int64_t kPassBytes = int64_t(TDM_WARP) * BlockInfo<T>::kBytes / BlockInfo<T>::kChunks;

// Where pass p's bytes lie: from the 16-byte boundary at or below them, `lead` bytes ahead.
struct StageWindow {
  const uint4* lo;
  int lead;
  int n_vec;  // 16-byte vectors covering lead + the pass's bytes
};

template <uint32_t T>
__device__ __forceinline__ StageWindow stage_window(const uint8_t* row, int64_t pass, int64_t n_chunks) {
  static_assert((kPassBytes<T> + 30) / 16 <= kStageVecs * TDM_WARP, "a pass must fit the lanes' staging loads");
  const int64_t c0 = pass * TDM_WARP;  // a multiple of 8: K-quant passes start on a super-block
  const int64_t chunks = min(int64_t(TDM_WARP), n_chunks - c0);
  const uint8_t* start = row + c0 / BlockInfo<T>::kChunks * BlockInfo<T>::kBytes;
  const int64_t bytes = chunks / BlockInfo<T>::kChunks * BlockInfo<T>::kBytes;
  StageWindow w;
  w.lead = int(reinterpret_cast<uintptr_t>(start) & 15);
  w.lo = reinterpret_cast<const uint4*>(start - w.lead);  // pointer arithmetic keeps the global address space
  w.n_vec = int((w.lead + bytes + 15) / 16);
  return w;
}

// Adds weight chunk c (decoded in w) times chunk c of activation rows src[0..nt) into acc.
template <uint32_t T>
__device__ __forceinline__ void dot_chunk_rows(const WChunk& w, int64_t c, int64_t n_chunks, const ActView& act,
                                               const int64_t* src, int nt, float* acc) {
#pragma unroll
  for (int t = 0; t < kMmvRows; ++t) {
    if (t < nt) {
      const int64_t k = src[t] * n_chunks + c;
      const int4* ap = reinterpret_cast<const int4*>(act.q + k * 32);
      const int4 a0 = ap[0], a1 = ap[1];
      const int32_t a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      acc[t] += chunk_dot<T>(w, a, act.d[k], act.s != nullptr ? act.s[k] : 0.0f);
    }
  }
}

// One warp: y[out_row(i)][r] = weight row `row` (row r of its matrix) . act[in_row(i)] for
// list entries [begin, end), up to kMmvRows activation rows per pass over the weight row.
// kStage: through `stage`, this warp's kStageVecs * TDM_WARP vectors of shared memory.
template <uint32_t T, bool kStage>
__device__ __forceinline__ void mmv_q_warp(const uint8_t* row, int64_t r, const ActView& act, const GroupMap& map,
                                           int64_t begin, int64_t end, float* y, int64_t y_stride, int lane, uint4* stage) {
  const int64_t n_chunks = act.n_cols / 32;
  for (int64_t i0 = begin; i0 < end; i0 += kMmvRows) {
    const int nt = int(min(int64_t(kMmvRows), end - i0));
    int64_t src[kMmvRows];
    for (int t = 0; t < kMmvRows; ++t) src[t] = in_row(map, i0 + (t < nt ? t : 0));
    float acc[kMmvRows] = {};
    if constexpr (kStage) {
      const int64_t n_pass = (n_chunks + TDM_WARP - 1) / TDM_WARP;
      StageWindow win = stage_window<T>(row, 0, n_chunks);
      uint4 v[kStageVecs];
#pragma unroll
      for (int j = 0; j < kStageVecs; ++j)
        if (j * TDM_WARP + lane < win.n_vec) v[j] = win.lo[j * TDM_WARP + lane];
      for (int64_t p = 0; p < n_pass; ++p) {
#pragma unroll
        for (int j = 0; j < kStageVecs; ++j)
          if (j * TDM_WARP + lane < win.n_vec) stage[j * TDM_WARP + lane] = v[j];
        const uint8_t* staged = reinterpret_cast<const uint8_t*>(stage) + win.lead;
        tdm_syncwarp();
        if (p + 1 < n_pass) {
          win = stage_window<T>(row, p + 1, n_chunks);
#pragma unroll
          for (int j = 0; j < kStageVecs; ++j)
            if (j * TDM_WARP + lane < win.n_vec) v[j] = win.lo[j * TDM_WARP + lane];
        }
        const int64_t c = p * TDM_WARP + lane;
        if (c < n_chunks) dot_chunk_rows<T>(decode_chunk<T>(staged, lane), c, n_chunks, act, src, nt, acc);
        tdm_syncwarp();  // this pass's bytes are read before the next overwrites them
      }
    } else {
      for (int64_t c = lane; c < n_chunks; c += TDM_WARP) dot_chunk_rows<T>(decode_chunk<T>(row, c), c, n_chunks, act, src, nt, acc);
    }
#pragma unroll
    for (int t = 0; t < kMmvRows; ++t) {
      if (t < nt) {
        const float v = warp_sum(acc[t]);
        if (lane == 0) y[out_row(map, i0 + t) * y_stride + r] = v;
      }
    }
  }
}

// Shared memory for the staged form: kStageVecs vectors per lane of each warp of the block.
#define TDM_MMV_STAGE(name) __shared__ uint4 name[kMmvThreads / TDM_WARP][kStageVecs * TDM_WARP]

template <uint32_t T, bool kStage>
__global__ void __launch_bounds__(kMmvThreads) mmv_q_kernel(const uint8_t* base, size_t row_bytes, size_t mat_bytes,
                                                            int64_t n_rows, ActView act, GroupMap map, float* y,
                                                            int64_t y_stride) {
  MmvSlot w;
  if (!mmv_slot(map, n_rows, &w)) return;
  const uint8_t* row = base + w.group * mat_bytes + w.r * row_bytes;
  if constexpr (kStage) {
    TDM_MMV_STAGE(stage);
    mmv_q_warp<T, true>(row, w.r, act, map, w.begin, w.end, y, y_stride, w.lane, stage[threadIdx.x / TDM_WARP]);
  } else {
    mmv_q_warp<T, false>(row, w.r, act, map, w.begin, w.end, y, y_stride, w.lane, nullptr);
  }
}

// The float-weight form of mmv_q_warp; vec8: 8 elements a load (aligned rows and activations).
template <uint32_t T>
__device__ __forceinline__ void mmv_f_warp(const uint8_t* row, int64_t r, const ActView& act, const GroupMap& map,
                                           int64_t begin, int64_t end, float* y, int64_t y_stride, bool vec8, int lane) {
  const int64_t n = act.n_cols;
  for (int64_t i0 = begin; i0 < end; i0 += kMmvRows) {
    const int nt = int(min(int64_t(kMmvRows), end - i0));
    const float* xr[kMmvRows];
    for (int t = 0; t < kMmvRows; ++t) xr[t] = act.f + in_row(map, i0 + (t < nt ? t : 0)) * n;
    float acc[kMmvRows] = {};
    if (vec8) {
      for (int64_t k = int64_t(lane) * 8; k < n; k += TDM_WARP * 8) {
        float w[8];
        load_w8<T>(row, k, w);
#pragma unroll
        for (int t = 0; t < kMmvRows; ++t) {
          if (t < nt) {
            const float4* xp = reinterpret_cast<const float4*>(xr[t] + k);
            const float4 a = xp[0], b = xp[1];
            acc[t] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
          }
        }
      }
    } else {
      for (int64_t k = lane; k < n; k += TDM_WARP) {
        const float w = load_w1<T>(row, k);
#pragma unroll
        for (int t = 0; t < kMmvRows; ++t)
          if (t < nt) acc[t] += w * xr[t][k];
      }
    }
#pragma unroll
    for (int t = 0; t < kMmvRows; ++t) {
      if (t < nt) {
        const float v = warp_sum(acc[t]);
        if (lane == 0) y[out_row(map, i0 + t) * y_stride + r] = v;
      }
    }
  }
}

template <uint32_t T>
__global__ void __launch_bounds__(kMmvThreads) mmv_f_kernel(const uint8_t* base, size_t row_bytes, size_t mat_bytes,
                                                            int64_t n_rows, ActView act, GroupMap map, float* y,
                                                            int64_t y_stride, bool vec8) {
  MmvSlot w;
  if (!mmv_slot(map, n_rows, &w)) return;
  mmv_f_warp<T>(base + w.group * mat_bytes + w.r * row_bytes, w.r, act, map, w.begin, w.end, y, y_stride, vec8, w.lane);
}

// Up to kMaxListMats matrices of one type that read the same activations (a layer's q/k/v or
// gate/up), one launch: blockIdx.y picks the matrix; blocks past its rows return at once.
constexpr int kMaxListMats = 4;
struct MatList {
  const uint8_t* base[kMaxListMats];
  size_t row_bytes[kMaxListMats];
  int64_t n_rows[kMaxListMats];
  float* y[kMaxListMats];  // n_tokens x n_rows[i]
  bool vec8[kMaxListMats];  // float types: mmv_f_warp's vec8 for this matrix
};

template <uint32_t T, bool kFloat, bool kStage>
__global__ void __launch_bounds__(kMmvThreads) mmv_list_kernel(MatList m, ActView act, int32_t n_tokens) {
  constexpr int kWarps = kMmvThreads / TDM_WARP;
  const int lane = threadIdx.x % TDM_WARP, warp = threadIdx.x / TDM_WARP;
  const int i = int(blockIdx.y);
  const int64_t r = int64_t(blockIdx.x) * kWarps + warp;
  if (r >= m.n_rows[i]) return;
  const GroupMap map{nullptr, nullptr, n_tokens, 1, false, false};
  const uint8_t* row = m.base[i] + r * m.row_bytes[i];
  if constexpr (kFloat) {
    mmv_f_warp<T>(row, r, act, map, 0, n_tokens, m.y[i], m.n_rows[i], m.vec8[i], lane);
  } else if constexpr (kStage) {
    TDM_MMV_STAGE(stage);
    mmv_q_warp<T, true>(row, r, act, map, 0, n_tokens, m.y[i], m.n_rows[i], lane, stage[warp]);
  } else {
    mmv_q_warp<T, false>(row, r, act, map, 0, n_tokens, m.y[i], m.n_rows[i], lane, nullptr);
  }
}

// ---- tiled kernels (prefill): 64 weight rows x 64 activation rows per block; activation
// tiles walk the group's list with a grid stride, so any group size is covered.
//
// Split-K. A grid of fewer tiles than the device runs at once leaves SMs idle: Llama-3-8B's
// 4096-row matrices make 64 tiles up to 64 rows, on an H200's 132 SMs, and q/o took 117 µs
// and down 443 µs whatever the rows from 32 to 64 (2026-11-28). Then each tile's k range is cut
// into parts, blockIdx.x / row_tiles picks the part, each part writes its sums to scratch, and
// split_sum_kernel adds the parts in order, so the result does not depend on scheduling.
struct SplitK {
  int64_t row_tiles;    // blocks along the weight rows; blockIdx.x / row_tiles is the part
  int64_t per;          // k steps per part: 32-element chunks (quantized) or kTileK elements (float)
  float* partial;       // null: one part, written to y
  int64_t part_stride;  // floats per part in `partial`
};

__global__ void split_sum_kernel(const float* partial, int parts, int64_t part_stride, int64_t n_rows, int64_t n_out,
                                 float* y, int64_t y_stride) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_out * n_rows) return;
  const int64_t t = i / n_rows, r = i % n_rows;
  float v = partial[t * y_stride + r];
  for (int p = 1; p < parts; ++p) v += partial[p * part_stride + t * y_stride + r];
  y[t * y_stride + r] = v;
}

template <uint32_t T>
__global__ void __launch_bounds__(kTileThreads) mm_q_kernel(const uint8_t* base, size_t row_bytes, size_t mat_bytes,
                                                            int64_t n_rows, ActView act, GroupMap map, float* y,
                                                            int64_t y_stride, SplitK split) {
  // Rows padded to 9 words so that 16 consecutive rows fall in distinct banks.
  __shared__ int32_t wq[kTileChunks][kTile][9];
  __shared__ float wd[kTileChunks][kTile], wm[kTileChunks][kTile];
  __shared__ int32_t wsc[kTileChunks][kTile][2];
  __shared__ int32_t wmn[kMinPer16<T> ? kTileChunks : 1][kTile][2];  // per-16 min levels (q2_K)
  __shared__ int32_t aq[kTileChunks][kTile][9];
  __shared__ float ad[kTileChunks][kTile], as[kTileChunks][kTile];

  int64_t begin, end;
  group_range(map, blockIdx.z, &begin, &end);
  const int64_t r0 = int64_t(blockIdx.x % split.row_tiles) * kTile;
  if (begin >= end || r0 >= n_rows) return;
  const int64_t n_chunks = act.n_cols / 32;
  const int64_t part = blockIdx.x / split.row_tiles;
  const int64_t c_begin = part * split.per, c_end = min(n_chunks, c_begin + split.per);
  float* out = split.partial != nullptr ? split.partial + part * split.part_stride : y;
  const uint8_t* wbase = base + blockIdx.z * mat_bytes;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int lr = tid >> 2, lk = tid & 3;  // loader: tile row and chunk
  const int64_t wr = r0 + lr;

  for (int64_t n0 = begin + int64_t(blockIdx.y) * kTile; n0 < end; n0 += int64_t(gridDim.y) * kTile) {
    const int64_t li = n0 + lr;
    const bool a_ok = li < end;
    const int64_t arow = a_ok ? in_row(map, li) : 0;
    float acc[4][4] = {};
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kTileChunks) {
      const int64_t c = c0 + lk;
      if (wr < n_rows && c < c_end) {
        const WChunk w = decode_chunk<T>(wbase + wr * row_bytes, c);
        for (int e = 0; e < 8; ++e) wq[lk][lr][e] = w.q[e];
        wd[lk][lr] = w.d;
        wm[lk][lr] = w.m;
        wsc[lk][lr][0] = w.sc0;
        wsc[lk][lr][1] = w.sc1;
        if constexpr (kMinPer16<T>) {
          wmn[lk][lr][0] = w.mn0;
          wmn[lk][lr][1] = w.mn1;
        }
      } else {
        for (int e = 0; e < 8; ++e) wq[lk][lr][e] = 0;
        wd[lk][lr] = 0.0f;
        wm[lk][lr] = 0.0f;
        wsc[lk][lr][0] = wsc[lk][lr][1] = 0;
        if constexpr (kMinPer16<T>) wmn[lk][lr][0] = wmn[lk][lr][1] = 0;
      }
      if (a_ok && c < c_end) {
        const int64_t k = arow * n_chunks + c;
        const int4* ap = reinterpret_cast<const int4*>(act.q + k * 32);
        const int4 a0 = ap[0], a1 = ap[1];
        aq[lk][lr][0] = a0.x; aq[lk][lr][1] = a0.y; aq[lk][lr][2] = a0.z; aq[lk][lr][3] = a0.w;
        aq[lk][lr][4] = a1.x; aq[lk][lr][5] = a1.y; aq[lk][lr][6] = a1.z; aq[lk][lr][7] = a1.w;
        ad[lk][lr] = act.d[k];
        as[lk][lr] = act.s != nullptr ? act.s[k] : 0.0f;
      } else {
        for (int e = 0; e < 8; ++e) aq[lk][lr][e] = 0;
        ad[lk][lr] = 0.0f;
        as[lk][lr] = 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int kc = 0; kc < kTileChunks; ++kc) {
        int32_t a[4][8];
        for (int j = 0; j < 4; ++j)
          for (int e = 0; e < 8; ++e) a[j][e] = aq[kc][tx + 16 * j][e];
        for (int i = 0; i < 4; ++i) {
          const int rr = ty + 16 * i;
          WChunk w;
          for (int e = 0; e < 8; ++e) w.q[e] = wq[kc][rr][e];
          w.d = wd[kc][rr];
          w.m = wm[kc][rr];
          w.sc0 = wsc[kc][rr][0];
          w.sc1 = wsc[kc][rr][1];
          if constexpr (kMinPer16<T>) {
            w.mn0 = wmn[kc][rr][0];
            w.mn1 = wmn[kc][rr][1];
          }
          for (int j = 0; j < 4; ++j) acc[i][j] += chunk_dot<T>(w, a[j], ad[kc][tx + 16 * j], as[kc][tx + 16 * j]);
        }
      }
      __syncthreads();
    }
    for (int i = 0; i < 4; ++i) {
      const int64_t r = r0 + ty + 16 * i;
      if (r >= n_rows) continue;
      for (int j = 0; j < 4; ++j) {
        const int64_t li2 = n0 + tx + 16 * j;
        if (li2 < end) out[out_row(map, li2) * y_stride + r] = acc[i][j];
      }
    }
  }
}

template <uint32_t T>
__global__ void __launch_bounds__(kTileThreads) mm_f_kernel(const uint8_t* base, size_t row_bytes, size_t mat_bytes,
                                                            int64_t n_rows, ActView act, GroupMap map, float* y,
                                                            int64_t y_stride, SplitK split) {
  __shared__ float ws[kTileK][kTile + 1];
  __shared__ float xs[kTileK][kTile + 1];
  int64_t begin, end;
  group_range(map, blockIdx.z, &begin, &end);
  const int64_t r0 = int64_t(blockIdx.x % split.row_tiles) * kTile;
  if (begin >= end || r0 >= n_rows) return;
  const int64_t n = act.n_cols;
  // A split's range, in elements: split.per counts kTileK-element steps.
  const int64_t part = blockIdx.x / split.row_tiles;
  const int64_t k_begin = part * split.per * kTileK, k_end = min(n, k_begin + split.per * kTileK);
  float* out = split.partial != nullptr ? split.partial + part * split.part_stride : y;
  const uint8_t* wbase = base + blockIdx.z * mat_bytes;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;

  for (int64_t n0 = begin + int64_t(blockIdx.y) * kTile; n0 < end; n0 += int64_t(gridDim.y) * kTile) {
    float acc[4][4] = {};
    for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
      for (int p = 0; p < kTile * kTileK / kTileThreads; ++p) {
        const int e = tid + kTileThreads * p;
        const int rr = e / kTileK, kk = e % kTileK;
        const int64_t k = k0 + kk;
        const int64_t wr = r0 + rr;
        ws[kk][rr] = (wr < n_rows && k < k_end) ? load_w1<T>(wbase + wr * row_bytes, k) : 0.0f;
        const int64_t li = n0 + rr;
        xs[kk][rr] = (li < end && k < k_end) ? act.f[in_row(map, li) * n + k] : 0.0f;
      }
      __syncthreads();
#pragma unroll 8
      for (int kk = 0; kk < kTileK; ++kk) {
        float wv[4], xv[4];
        for (int i = 0; i < 4; ++i) wv[i] = ws[kk][ty + 16 * i];
        for (int j = 0; j < 4; ++j) xv[j] = xs[kk][tx + 16 * j];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) acc[i][j] += wv[i] * xv[j];
      }
      __syncthreads();
    }
    for (int i = 0; i < 4; ++i) {
      const int64_t r = r0 + ty + 16 * i;
      if (r >= n_rows) continue;
      for (int j = 0; j < 4; ++j) {
        const int64_t li = n0 + tx + 16 * j;
        if (li < end) out[out_row(map, li) * y_stride + r] = acc[i][j];
      }
    }
  }
}

// ---- get_rows

template <uint32_t T>
__global__ void get_rows_q_kernel(const uint8_t* base, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                                  const int32_t* ids, float* y, uint32_t* faults) {
  const int64_t i = blockIdx.x;
  const int32_t id = ids[i];
  if (id < 0 || id >= n_rows) {
    if (threadIdx.x == 0) atomicOr(faults, uint32_t(kFaultRowId));
    return;
  }
  const uint8_t* row = base + int64_t(id) * row_bytes;
  for (int64_t c = threadIdx.x; c < n_cols / 32; c += blockDim.x) {
    const WChunk w = decode_chunk<T>(row, c);
    for (int e = 0; e < 32; ++e) y[i * n_cols + c * 32 + e] = dequant_elem<T>(w, e);
  }
}

// Float rows: a block per (row, piece of kGetRowsPiece columns), each thread's elements unrolled,
// so that a row is many short copies in flight at once rather than one thread's long loop.
constexpr int kGetRowsThreads = 128;
constexpr int kGetRowsPerThread = 8;
constexpr int kGetRowsPiece = kGetRowsThreads * kGetRowsPerThread;

template <uint32_t T>
__global__ void get_rows_f_kernel(const uint8_t* base, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                                  const int32_t* ids, float* y, uint32_t* faults) {
  const int64_t i = blockIdx.x;
  const int32_t id = ids[i];
  if (id < 0 || id >= n_rows) {
    if (threadIdx.x == 0 && blockIdx.y == 0) atomicOr(faults, uint32_t(kFaultRowId));
    return;
  }
  const uint8_t* row = base + int64_t(id) * row_bytes;
  const int64_t k0 = int64_t(blockIdx.y) * kGetRowsPiece + threadIdx.x;
#pragma unroll
  for (int j = 0; j < kGetRowsPerThread; ++j) {
    const int64_t k = k0 + int64_t(j) * kGetRowsThreads;
    if (k < n_cols) y[i * n_cols + k] = load_w1<T>(row, k);
  }
}

// ---- dispatch

const char* type_name(uint32_t t) {
  switch (t) {
    case kF32: return "f32";
    case kF16: return "f16";
    case kBF16: return "bf16";
    case kQ4_0: return "q4_0";
    case kQ4_1: return "q4_1";
    case kQ5_0: return "q5_0";
    case kQ5_1: return "q5_1";
    case kQ8_0: return "q8_0";
    case kQ2_K: return "q2_K";
    case kQ3_K: return "q3_K";
    case kQ4_K: return "q4_K";
    case kQ5_K: return "q5_K";
    case kQ6_K: return "q6_K";
    case kMXFP4: return "mxfp4";
    case kIQ4_NL: return "iq4_nl";
    case kIQ4_XS: return "iq4_xs";
    case kIQ2_XXS: return "iq2_xxs";
    case kIQ2_XS: return "iq2_xs";
    case kIQ2_S: return "iq2_s";
    case kIQ3_XXS: return "iq3_xxs";
    case kIQ3_S: return "iq3_s";
    default: return nullptr;
  }
}

int block_size_of(uint32_t t) {
  if (t == kF32 || t == kF16 || t == kBF16) return 1;
  if (t == kQ2_K || t == kQ3_K || t == kQ4_K || t == kQ5_K || t == kQ6_K || t == kIQ4_XS || t == kIQ2_XXS ||
      t == kIQ2_XS || t == kIQ2_S || t == kIQ3_XXS || t == kIQ3_S)
    return 256;
  return 32;
}

size_t row_size(uint32_t t, int64_t n_cols) {
  switch (t) {
    case kF32: return size_t(n_cols) * 4;
    case kF16:
    case kBF16: return size_t(n_cols) * 2;
    case kQ4_0: return size_t(n_cols / 32) * 18;
    case kQ4_1: return size_t(n_cols / 32) * 20;
    case kQ5_0: return size_t(n_cols / 32) * 22;
    case kQ5_1: return size_t(n_cols / 32) * 24;
    case kQ8_0: return size_t(n_cols / 32) * 34;
    case kQ2_K: return size_t(n_cols / 256) * 84;
    case kQ3_K: return size_t(n_cols / 256) * 110;
    case kQ4_K: return size_t(n_cols / 256) * 144;
    case kQ5_K: return size_t(n_cols / 256) * 176;
    case kQ6_K: return size_t(n_cols / 256) * 210;
    case kMXFP4: return size_t(n_cols / 32) * 17;
    case kIQ4_NL: return size_t(n_cols / 32) * 18;
    case kIQ4_XS: return size_t(n_cols / 256) * 136;
    case kIQ2_XXS: return size_t(n_cols / 256) * 66;
    case kIQ2_XS: return size_t(n_cols / 256) * 74;
    case kIQ2_S: return size_t(n_cols / 256) * 82;
    case kIQ3_XXS: return size_t(n_cols / 256) * 98;
    case kIQ3_S: return size_t(n_cols / 256) * 110;
    default: return 0;
  }
}

// Calls f(std::integral_constant<uint32_t, T>) for the weight type t.
template <typename F>
void with_type(uint32_t t, F&& f) {
  switch (t) {
    case kF32: f(std::integral_constant<uint32_t, kF32>()); return;
    case kF16: f(std::integral_constant<uint32_t, kF16>()); return;
    case kBF16: f(std::integral_constant<uint32_t, kBF16>()); return;
    case kQ4_0: f(std::integral_constant<uint32_t, kQ4_0>()); return;
    case kQ4_1: f(std::integral_constant<uint32_t, kQ4_1>()); return;
    case kQ5_0: f(std::integral_constant<uint32_t, kQ5_0>()); return;
    case kQ5_1: f(std::integral_constant<uint32_t, kQ5_1>()); return;
    case kQ8_0: f(std::integral_constant<uint32_t, kQ8_0>()); return;
    case kQ2_K: f(std::integral_constant<uint32_t, kQ2_K>()); return;
    case kQ3_K: f(std::integral_constant<uint32_t, kQ3_K>()); return;
    case kQ4_K: f(std::integral_constant<uint32_t, kQ4_K>()); return;
    case kQ5_K: f(std::integral_constant<uint32_t, kQ5_K>()); return;
    case kQ6_K: f(std::integral_constant<uint32_t, kQ6_K>()); return;
    case kMXFP4: f(std::integral_constant<uint32_t, kMXFP4>()); return;
    case kIQ4_NL: f(std::integral_constant<uint32_t, kIQ4_NL>()); return;
    case kIQ4_XS: f(std::integral_constant<uint32_t, kIQ4_XS>()); return;
    case kIQ2_XXS: f(std::integral_constant<uint32_t, kIQ2_XXS>()); return;
    case kIQ2_XS: f(std::integral_constant<uint32_t, kIQ2_XS>()); return;
    case kIQ2_S: f(std::integral_constant<uint32_t, kIQ2_S>()); return;
    case kIQ3_XXS: f(std::integral_constant<uint32_t, kIQ3_XXS>()); return;
    case kIQ3_S: f(std::integral_constant<uint32_t, kIQ3_S>()); return;
    default: unsupported("weights of ggml type " + std::to_string(t) + " are not supported on " TDM_BACKEND_KIND);
  }
}

constexpr bool is_float_type(uint32_t t) { return t == kF32 || t == kF16 || t == kBF16; }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

unsigned blocks_for(int64_t n, int per) { return unsigned((n + per - 1) / per); }

}  // namespace

int act_type_of(uint32_t t) {
  switch (t) {
    case kF32: return kActF32;
    case kF16: return kActF16;
    case kBF16: return kActBF16;
    case kQ4_0:
    case kQ5_0:
    case kQ8_0:
    case kMXFP4:
    case kIQ4_NL: return kActQ8_0;
    case kQ4_1:
    case kQ5_1: return kActQ8_1;
    case kQ2_K:
    case kQ3_K:
    case kQ4_K:
    case kQ5_K:
    case kQ6_K:
    case kIQ4_XS:
    case kIQ2_XXS:
    case kIQ2_XS:
    case kIQ2_S:
    case kIQ3_XXS:
    case kIQ3_S: return kActQ8_K;
    default: unsupported("weights of ggml type " + std::to_string(t) + " are not supported on " TDM_BACKEND_KIND);
  }
}

void check_weight(const tdm_weight* w) {
  if (w == nullptr || w->data == nullptr) bad("weight is null");
  const char* name = type_name(w->type);
  if (name == nullptr) unsupported("weights of ggml type " + std::to_string(w->type) + " are not supported on " TDM_BACKEND_KIND);
  if (w->n_cols <= 0 || w->n_rows <= 0 || w->n_mats <= 0) bad("weight has an empty dimension");
  if (w->n_cols % block_size_of(w->type) != 0)
    bad(std::string("weight rows of ") + std::to_string(w->n_cols) + " elements are not whole " + name + " blocks");
  if (w->row_bytes < row_size(w->type, w->n_cols)) bad("weight row_bytes is smaller than a row");
  // MXFP4's 17-byte blocks are read a byte at a time; other types' fields are 2 or 4 bytes wide.
  const uintptr_t align = w->type == kF32 ? 4u : w->type == kMXFP4 ? 1u : 2u;
  if ((reinterpret_cast<uintptr_t>(w->data) | w->row_bytes | (w->n_mats > 1 ? w->mat_bytes : 0)) & (align - 1u))
    bad(std::string("weight data and strides must be ") + std::to_string(align) + "-byte aligned on " TDM_BACKEND_KIND);
}

ActView convert_activations(GpuContext&, GpuStream& s, uint32_t type, const float* x, int64_t n_rows, int64_t n_cols,
                            int q_slot) {
  ActView a{};
  a.act = act_type_of(type);
  a.n_cols = n_cols;
  const int64_t n = n_rows * n_cols;
  if (a.act == kActF32) {
    a.f = x;
    return a;
  }
  if (a.act == kActF16 || a.act == kActBF16) {
    float* f = scratch_as<float>(s, q_slot, size_t(n));
    TDM_LAUNCH(round_floats_kernel, blocks_for(n, 256), 256, 0, s.stream)(x, n, a.act, f);
    check_launch("round_floats_kernel");
    a.f = f;
    return a;
  }
  const int64_t n_chunks = n / 32;
  int8_t* q = scratch_as<int8_t>(s, q_slot, size_t(n));
  float* d = scratch_as<float>(s, q_slot + 1, size_t(n_chunks));
  float* sm = scratch_as<float>(s, q_slot + 2, size_t(n_chunks));
  if (a.act == kActQ8_K) {
    TDM_LAUNCH(quantize_q8k_kernel, unsigned(n / 256), 256, 0, s.stream)(x, q, d, sm);
    check_launch("quantize_q8k_kernel");
  } else {
    TDM_LAUNCH(quantize_q8_kernel, blocks_for(n_chunks * 32, 256), 256, 0, s.stream)(x, n_chunks, q, d, sm);
    check_launch("quantize_q8_kernel");
  }
  a.q = q;
  a.d = d;
  a.s = a.act == kActQ8_0 ? nullptr : sm;
  return a;
}

// How many parts a dense tiled matmul of `blocks` tiles and `steps` k steps is cut into (SplitK):
// as many as keep the grid within one wave of two blocks per SM (an assumption about the tiled
// kernels' occupancy, not read from the compiler), each part at least kMinSplitSteps steps so
// that the partial sums stay a small share of the traffic. TANDEM_GPU_MM_SPLIT
// (GpuContext::mm_split) sets it instead: 1 never splits.
constexpr int64_t kMinSplitSteps = 4 * kTileChunks;
constexpr int64_t kMaxSplitParts = 16;
int split_parts(const GpuContext& c, int64_t blocks, int64_t steps) {
  const int64_t most = std::max<int64_t>(1, std::min(kMaxSplitParts, steps / kMinSplitSteps));
  if (c.mm_split > 0) return int(std::min<int64_t>(c.mm_split, std::max<int64_t>(1, steps / kTileChunks)));
  const int64_t fit = 2 * int64_t(c.n_sm) / blocks;
  return int(std::max<int64_t>(1, std::min(fit, most)));
}

void grouped_matmul(GpuContext& c, GpuStream& s, const tdm_weight& w, const uint8_t* base, int64_t n_groups,
                    const ActView& act, const GroupMap& map, int64_t max_rows_per_group, float* y, int64_t y_stride) {
  if (n_groups > 65535) unsupported("more than 65535 experts");
  with_type(w.type, [&](auto tc) {
    constexpr uint32_t T = decltype(tc)::value;
    if (max_rows_per_group <= c.mmv_max_tokens) {
      const int64_t groups = map.active != nullptr ? std::min<int64_t>(n_groups, map.max_active) : n_groups;
      const dim3 grid(blocks_for(w.n_rows, kMmvThreads / TDM_WARP), unsigned(groups));
      if constexpr (is_float_type(T)) {
        const bool vec8 = act.n_cols % 8 == 0 && aligned16(base) && w.row_bytes % 16 == 0 &&
                          (n_groups == 1 || w.mat_bytes % 16 == 0) && aligned16(act.f);
        TDM_LAUNCH(mmv_f_kernel<T>, grid, kMmvThreads, 0, s.stream)(base, w.row_bytes, w.mat_bytes, w.n_rows, act, map, y, y_stride, vec8);
      } else {
        auto kernel = c.mmv_stage ? mmv_q_kernel<T, true> : mmv_q_kernel<T, false>;
        TDM_LAUNCH(kernel, grid, kMmvThreads, 0, s.stream)(base, w.row_bytes, w.mat_bytes, w.n_rows, act, map, y, y_stride);
      }
      check_launch("matrix-vector kernel");
    } else {
      const int64_t tiles = std::min<int64_t>((max_rows_per_group + kTile - 1) / kTile, 65535);
      const int64_t row_tiles = blocks_for(w.n_rows, kTile);
      // k steps of the row: 32-element chunks for quantized weights, kTileK elements for floats.
      const int64_t steps = is_float_type(T) ? (act.n_cols + kTileK - 1) / kTileK : act.n_cols / 32;
      const bool dense = n_groups == 1 && map.offsets == nullptr && !map.out_list;
      const int parts = dense ? split_parts(c, row_tiles * tiles, steps) : 1;
      SplitK split{row_tiles, steps, nullptr, 0};
      if (parts > 1) {
        // Whole kTileChunks groups per part, so that no part but the last loads past its range.
        split.per = (steps + parts - 1) / parts;
        split.per = (split.per + kTileChunks - 1) / kTileChunks * kTileChunks;
        split.part_stride = max_rows_per_group * y_stride;
        split.partial = scratch_as<float>(s, kSlotSplit, size_t(split.part_stride) * size_t(parts));
      }
      const int64_t n_parts = (steps + split.per - 1) / split.per;
      const dim3 grid(unsigned(row_tiles * n_parts), unsigned(tiles), unsigned(n_groups));
      if constexpr (is_float_type(T)) {
        TDM_LAUNCH(mm_f_kernel<T>, grid, kTileThreads, 0, s.stream)(base, w.row_bytes, w.mat_bytes, w.n_rows, act, map, y, y_stride, split);
      } else {
        TDM_LAUNCH(mm_q_kernel<T>, grid, kTileThreads, 0, s.stream)(base, w.row_bytes, w.mat_bytes, w.n_rows, act, map, y, y_stride, split);
      }
      check_launch("tiled matmul kernel");
      if (n_parts > 1) {
        const int64_t n = max_rows_per_group * w.n_rows;
        TDM_LAUNCH(split_sum_kernel, blocks_for(n, 256), 256, 0, s.stream)(split.partial, int(n_parts), split.part_stride,
                                                                          w.n_rows, max_rows_per_group, y, y_stride);
        check_launch("split_sum_kernel");
      }
    }
  });
}

tdm_status op_matmul(tdm_backend_ctx* ctx, const tdm_weight* w, int64_t m, const float* x, int64_t n_tokens, float* y,
                     tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    check_weight(w);
    if (m < 0 || m >= w->n_mats) bad("matmul matrix index out of range");
    if (n_tokens <= 0) return;
    if (x == nullptr || y == nullptr) bad("matmul with a null pointer");
    if (n_tokens > INT32_MAX) bad("matmul with too many rows");
    GpuStream& st = stream_of(c, s);
    const ActView act = convert_activations(c, st, w->type, x, n_tokens, w->n_cols, kSlotActQ);
    const GroupMap map{nullptr, nullptr, int32_t(n_tokens), 1, false, false};
    const uint8_t* base = static_cast<const uint8_t*>(w->data) + size_t(m) * w->mat_bytes;
    grouped_matmul(c, st, *w, base, 1, act, map, n_tokens, y, w->n_rows);
  });
}

tdm_status op_matmul_group(tdm_backend_ctx* ctx, const tdm_weight* const* w, int32_t n, const float* x, int64_t n_tokens,
                           float* const* y, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    if (w == nullptr || y == nullptr) bad("matmul_group with a null pointer");
    if (n < 1 || n > kMaxListMats) bad("matmul_group takes 1 to " + std::to_string(kMaxListMats) + " matrices");
    for (int32_t i = 0; i < n; ++i) {
      check_weight(w[i]);
      if (y[i] == nullptr) bad("matmul_group with a null output");
      if (w[i]->type != w[0]->type || w[i]->n_cols != w[0]->n_cols) bad("matmul_group matrices must share their type and width");
    }
    if (n_tokens <= 0) return;
    if (x == nullptr) bad("matmul_group with a null pointer");
    if (n_tokens > INT32_MAX) bad("matmul_group with too many rows");
    GpuStream& st = stream_of(c, s);
    const ActView act = convert_activations(c, st, w[0]->type, x, n_tokens, w[0]->n_cols, kSlotActQ);
    if (n_tokens > c.mmv_max_tokens) {
      // Prefill: the tiled kernel per matrix, on the one conversion.
      const GroupMap map{nullptr, nullptr, int32_t(n_tokens), 1, false, false};
      for (int32_t i = 0; i < n; ++i)
        grouped_matmul(c, st, *w[i], static_cast<const uint8_t*>(w[i]->data), 1, act, map, n_tokens, y[i], w[i]->n_rows);
      return;
    }
    MatList m{};
    int64_t max_rows = 0;
    for (int32_t i = 0; i < n; ++i) {
      m.base[i] = static_cast<const uint8_t*>(w[i]->data);
      m.row_bytes[i] = w[i]->row_bytes;
      m.n_rows[i] = w[i]->n_rows;
      m.y[i] = y[i];
      m.vec8[i] = act.n_cols % 8 == 0 && aligned16(m.base[i]) && w[i]->row_bytes % 16 == 0 && aligned16(act.f);
      if (w[i]->n_rows > max_rows) max_rows = w[i]->n_rows;
    }
    with_type(w[0]->type, [&](auto tc) {
      constexpr uint32_t T = decltype(tc)::value;
      constexpr bool kFloat = is_float_type(T);
      void (*kernel)(MatList, ActView, int32_t) = mmv_list_kernel<T, kFloat, false>;
      if constexpr (!kFloat) {
        if (c.mmv_stage) kernel = mmv_list_kernel<T, false, true>;
      }
      const dim3 grid(blocks_for(max_rows, kMmvThreads / TDM_WARP), unsigned(n));
      TDM_LAUNCH(kernel, grid, kMmvThreads, 0, st.stream)(m, act, int32_t(n_tokens));
      check_launch("matrix-vector list kernel");
    });
  });
}

tdm_status op_get_rows(tdm_backend_ctx* ctx, const tdm_weight* w, const int32_t* ids, int64_t n_ids, float* y,
                       tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    check_weight(w);
    if (n_ids <= 0) return;
    if (ids == nullptr || y == nullptr) bad("get_rows with a null pointer");
    if (n_ids > INT32_MAX) bad("get_rows with too many ids");
    GpuStream& st = stream_of(c, s);
    const uint8_t* base = static_cast<const uint8_t*>(w->data);
    with_type(w->type, [&](auto tc) {
      constexpr uint32_t T = decltype(tc)::value;
      if constexpr (is_float_type(T)) {
        const int64_t pieces = (w->n_cols + kGetRowsPiece - 1) / kGetRowsPiece;
        if (pieces > 65535) unsupported("get_rows of rows wider than " + std::to_string(int64_t(65535) * kGetRowsPiece) + " columns");
        const dim3 grid(static_cast<unsigned>(n_ids), static_cast<unsigned>(pieces));
        TDM_LAUNCH(get_rows_f_kernel<T>, grid, kGetRowsThreads, 0, st.stream)(base, w->row_bytes, w->n_rows, w->n_cols, ids, y, c.faults);
      } else
        TDM_LAUNCH(get_rows_q_kernel<T>, unsigned(n_ids), 128, 0, st.stream)(base, w->row_bytes, w->n_rows, w->n_cols, ids, y, c.faults);
      check_launch("get_rows kernel");
    });
  });
}

}  // namespace tdm::gpu
