// Paged attention on the GPU: kv_store writes new K/V rows through each sequence's block
// table; one attention kernel serves decode and prefill. A block takes up to 128 / (D / 32)
// query rows (token x query head of one KV head, so GQA groups share every K/V tile read),
// walks K/V tiles staged in shared memory with an online softmax (FlashAttention-2 style),
// and when there are too few blocks to fill the device it also splits positions across
// blocks and merges the partial results (flash-decoding). A sliding window narrows each row's
// positions; a head's sink logit joins the softmax's max and sum at the end. copy_blocks and copy_pieces are here too.
// Sequence descriptors travel as kernel parameters, so no op waits on a host copy.
#include <math.h>

#include <algorithm>
#include <string>
#include <vector>

#include "gpu_context.h"
#include "quant_math.h"

namespace tdm::gpu {

namespace {

constexpr int kMaxSeqs = 64;  // sequences per launch (the descriptors are kernel parameters)
constexpr int kAttnThreads = 128;
constexpr int kMaxSplits = 64;
// Blocks of the attention kernel an SM must hold (so 128 registers a thread on NVIDIA), the
// occupancy of the form measured on 2026-11-28; left free, nvcc takes 143 and an SM holds three.
constexpr int kAttnBlocksPerSm = 4;

// Positions per K/V tile (f32 rows of D in shared memory, K and V). Turing and CDNA have 64 KB
// of shared memory per SM or CU, where 32-position tiles of 128-wide heads (32.9 KB a block)
// leave room for one block; half-size tiles there fit three. (The emulation's wavefronts of 64
// run the CDNA sizes, so that the tests cover both.)
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 750) || defined(__HIP_DEVICE_COMPILE__) || (defined(TDM_EMU) && TDM_EMU_WARP == 64)
constexpr int kSmallSharedMemory = 1;
#else
constexpr int kSmallSharedMemory = 0;
#endif
template <int D>
constexpr int kAttnTile = D <= 64 ? 32 : ((D <= 128 ? 32 : 16) >> kSmallSharedMemory);

struct SeqDesc {
  const int32_t* table;
  int32_t first_row, n_tokens, start_pos, pad;
};

// Work items of a launch: sequence i owns items [item_start[i], item_start[i+1]).
struct SeqBatch {
  SeqDesc seq[kMaxSeqs];
  int32_t item_start[kMaxSeqs + 1];
  int32_t n_seqs;
};

struct KvView {
  uint8_t* k;
  uint8_t* v;
  size_t block_bytes;
  int32_t n_blocks, block_tokens, n_kv_heads, head_dim_k, head_dim_v;
  bool f16;
  bool vec8;  // f16 rows in whole 16-byte pieces: staged eight halves a load
};

__device__ __forceinline__ int find_seq(const SeqBatch& b, int32_t item) {
  int lo = 0, hi = b.n_seqs - 1;
  while (lo < hi) {  // the last sequence whose first item is <= item
    const int mid = (lo + hi + 1) / 2;
    if (b.item_start[mid] <= item) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Byte offset of (position, kv head, element 0) inside a block, for head_dim elements per row.
__device__ __forceinline__ size_t in_block(const KvView& kv, int32_t pos_in_block, int32_t head, int32_t head_dim) {
  return (size_t(head) * size_t(kv.block_tokens) + size_t(pos_in_block)) * size_t(head_dim) * (kv.f16 ? 2u : 4u);
}

__device__ __forceinline__ float load_kv(const KvView& kv, const uint8_t* p, int32_t d) {
  return kv.f16 ? half_to_float(reinterpret_cast<const uint16_t*>(p)[d]) : reinterpret_cast<const float*>(p)[d];
}

__device__ __forceinline__ void store_kv(const KvView& kv, uint8_t* p, int32_t d, float x) {
  if (kv.f16) reinterpret_cast<uint16_t*>(p)[d] = float_to_half(x);
  else reinterpret_cast<float*>(p)[d] = x;
}

// The block of a position, or -1 (and a fault) when the table entry is outside the pool.
__device__ __forceinline__ int32_t block_of(const KvView& kv, const int32_t* table, int32_t pos, uint32_t* faults) {
  const int32_t b = table[pos / kv.block_tokens];
  if (b < 0 || b >= kv.n_blocks) {
    atomicOr(faults, uint32_t(kFaultKvBlock));
    return -1;
  }
  return b;
}

// A block per (new token, KV head): its K and V rows, converted to the pool's type.
__global__ void kv_store_kernel(KvView kv, const float* k, const float* v, SeqBatch b, uint32_t* faults) {
  const int si = find_seq(b, blockIdx.x);
  const SeqDesc& sd = b.seq[si];
  const int32_t i = int32_t(blockIdx.x) - b.item_start[si];
  const int32_t h = blockIdx.y;
  const int32_t pos = sd.start_pos + i;
  const int64_t row = int64_t(sd.first_row) + i;
  const int32_t blk = block_of(kv, sd.table, pos, faults);
  if (blk < 0) return;
  const int32_t off = pos % kv.block_tokens;
  uint8_t* kd = kv.k + size_t(blk) * kv.block_bytes + in_block(kv, off, h, kv.head_dim_k);
  uint8_t* vd = kv.v + size_t(blk) * kv.block_bytes + in_block(kv, off, h, kv.head_dim_v);
  const float* ks = k + row * kv.n_kv_heads * kv.head_dim_k + int64_t(h) * kv.head_dim_k;
  const float* vs = v + row * kv.n_kv_heads * kv.head_dim_v + int64_t(h) * kv.head_dim_v;
  for (int d = threadIdx.x; d < kv.head_dim_k; d += blockDim.x) store_kv(kv, kd, d, ks[d]);
  for (int d = threadIdx.x; d < kv.head_dim_v; d += blockDim.x) store_kv(kv, vd, d, vs[d]);
}

// Stages positions [p0, p0 + kTileN) of one KV head (rows of d elements) into shared memory as
// floats, rows D apart; blk[j] is position p0 + j's block, or -1 for none (a zero row). The loads
// of a tile are independent and unrolled, so a thread has them all in flight at once rather than
// one dependent table-then-row round trip per element.
template <int kTileN, int D>
__device__ __forceinline__ void stage_tile(const KvView& kv, const uint8_t* base, int32_t d, int32_t p0, int32_t kvh,
                                           const int32_t* blk, float* sh) {
  if (kv.vec8) {
    const int per_row = d / 8;
    constexpr int kIters = (kTileN * D / 8 + kAttnThreads - 1) / kAttnThreads;
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int idx = int(threadIdx.x) + it * kAttnThreads;
      if (idx >= kTileN * per_row) break;
      const int j = idx / per_row, c = idx % per_row;
      float* dst = sh + j * D + c * 8;
      if (blk[j] < 0) {
        reinterpret_cast<float4*>(dst)[0] = float4{0.0f, 0.0f, 0.0f, 0.0f};
        reinterpret_cast<float4*>(dst)[1] = float4{0.0f, 0.0f, 0.0f, 0.0f};
        continue;
      }
      const uint4 u = *reinterpret_cast<const uint4*>(base + size_t(blk[j]) * kv.block_bytes +
                                                     in_block(kv, (p0 + j) % kv.block_tokens, kvh, d) + size_t(c) * 16);
      // Two 16-byte stores: eight 4-byte stores a row piece 32 bytes apart hit the same banks.
      float4* d4 = reinterpret_cast<float4*>(dst);
      d4[0] = float4{half_to_float(uint16_t(u.x & 0xffffu)), half_to_float(uint16_t(u.x >> 16)),
                     half_to_float(uint16_t(u.y & 0xffffu)), half_to_float(uint16_t(u.y >> 16))};
      d4[1] = float4{half_to_float(uint16_t(u.z & 0xffffu)), half_to_float(uint16_t(u.z >> 16)),
                     half_to_float(uint16_t(u.w & 0xffffu)), half_to_float(uint16_t(u.w >> 16))};
    }
    return;
  }
  for (int idx = threadIdx.x; idx < kTileN * d; idx += kAttnThreads) {
    const int j = idx / d, e = idx % d;
    sh[j * D + e] = blk[j] < 0 ? 0.0f : load_kv(kv, base + size_t(blk[j]) * kv.block_bytes + in_block(kv, (p0 + j) % kv.block_tokens, kvh, d), e);
  }
}

struct AttnParams {
  KvView kv;
  const float* q;
  float* out;
  float* partial;  // n_splits > 1: per (row, head, split) m, l and dv accumulators
  int32_t n_heads, group, n_splits;
  float scale;         // divided by softcap where one is set
  float softcap;       // > 0: a scaled score s becomes softcap * tanh(s) (gemma2)
  const float* sinks;  // n_heads logits, or null
  int32_t window;      // > 0: a row at position p sees only positions > p - window
};

// The final 1/sum of a row, with head h's sink logit (if any) folded into the max and the sum
// (it adds no value row), as the CPU backend folds it.
__device__ __forceinline__ float softmax_inv(float m, float l, const float* sinks, int32_t h) {
  if (sinks == nullptr) return 1.0f / l;
  const float sk = sinks[h];
  const float m2 = fmaxf(m, sk);
  const float keep = expf(m - m2);
  return keep / (l * keep + expf(sk - m2));
}

// Dimension i (0..31) of the thread at sub (0..kTpr-1) in its query row: runs of four, so that a
// row's kTpr threads read a K or V row as adjacent 16-byte pieces.
template <int kTpr>
__device__ __forceinline__ int dim_of(int sub, int i) {
  return 4 * (sub + kTpr * (i >> 2)) + (i & 3);
}

// D: the head-size class (64, 128, 256). Each query row is served by D/32 adjacent threads,
// each holding 32 of its dimensions (dim_of) of q and of the output.
// kWarpRows (decode, when an item's rows fit one warp): every warp serves the same rows and
// takes its own share of each tile's positions, and the warps' softmax states merge at the
// end. Otherwise the block's threads serve kAttnThreads / (D/32) rows and every warp walks
// every position, which at decode leaves most warps computing rows that do not exist.
template <int D, bool kWarpRows>
__global__ void __launch_bounds__(kAttnThreads, kAttnBlocksPerSm) attention_kernel(AttnParams p, SeqBatch b, uint32_t* faults) {
  constexpr int kTpr = D / 32;                 // threads per query row
  constexpr int kWarps = kAttnThreads / TDM_WARP;
  constexpr int kRows = (kWarpRows ? TDM_WARP : kAttnThreads) / kTpr;  // query rows per block
  constexpr int kTileN = kAttnTile<D>;         // positions per K/V tile
  // K and V tiles; after the last tile, kWarpRows merges the warps' accumulators here.
  alignas(16) __shared__ float kvs[2 * kTileN * D];
  float* const ks = kvs;
  float* const vs = kvs + kTileN * D;
  static_assert(!kWarpRows || (kWarps - 1) * TDM_WARP * 32 + 2 * kAttnThreads <= 2 * kTileN * D, "the merge must fit the tiles' memory");
  const int warp = int(threadIdx.x) / TDM_WARP, lane = int(threadIdx.x) % TDM_WARP;

  const KvView& kv = p.kv;
  const int dk = kv.head_dim_k, dv = kv.head_dim_v;
  const int si = find_seq(b, blockIdx.x);
  const SeqDesc sd = b.seq[si];
  const int32_t item = int32_t(blockIdx.x) - b.item_start[si];
  const int32_t kvh = blockIdx.y, split = blockIdx.z;
  const int32_t rows_in_seq = sd.n_tokens * p.group;
  const int32_t myrow = item * kRows + (kWarpRows ? lane : int(threadIdx.x)) / kTpr;
  const int sub = int(threadIdx.x) % kTpr;
  const bool valid = myrow < rows_in_seq;
  const int32_t t = valid ? myrow / p.group : 0;
  const int32_t h = kvh * p.group + (valid ? myrow % p.group : 0);
  const int32_t limit = valid ? sd.start_pos + t : -1;  // last position this row attends to
  const int32_t first = p.window > 0 ? limit - p.window + 1 : 0;  // first position it attends to

  // The block's positions: from its first row's window start to its last row's position.
  const int32_t last_row = min(rows_in_seq, (item + 1) * kRows) - 1;
  const int32_t block_begin = p.window > 0 ? max(0, sd.start_pos + item * kRows / p.group - p.window + 1) : 0;
  const int32_t block_end = sd.start_pos + last_row / p.group + 1;
  int32_t span = (block_end - block_begin + p.n_splits - 1) / p.n_splits;
  span = (span + kTileN - 1) / kTileN * kTileN;
  const int32_t lo = block_begin + split * span;
  const int32_t hi = min(lo + span, block_end);

  // Queries stay f32 against the stored K values, as in the CPU reference.
  float qv[32];
  const float* qr = p.q + (int64_t(sd.first_row) + t) * p.n_heads * dk + int64_t(h) * dk;
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const int d = dim_of<kTpr>(sub, i);
    qv[i] = (valid && d < dk) ? qr[d] : 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  float acc[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) acc[i] = 0.0f;

  __shared__ int32_t tile_blk[kTileN];
  // Shared K/V rows are D wide; the columns past a head's width stay zero (as q's do), so the
  // loops below run all D columns without a per-element bound, which would cost a branch
  // before every shared load.
  if (dk < D || dv < D) {
    for (int idx = threadIdx.x; idx < kTileN * D; idx += kAttnThreads) {
      if (idx % D >= dk) ks[idx] = 0.0f;
      if (idx % D >= dv) vs[idx] = 0.0f;
    }
  }
  for (int32_t p0 = lo; p0 < hi; p0 += kTileN) {
    __syncthreads();
    // Each position's block once, then every K and V element of the tile from it.
    if (int(threadIdx.x) < kTileN) {
      const int32_t pos = p0 + int32_t(threadIdx.x);
      tile_blk[threadIdx.x] = pos < hi ? block_of(kv, sd.table, pos, faults) : -1;
    }
    __syncthreads();
    stage_tile<kTileN, D>(kv, kv.k, dk, p0, kvh, tile_blk, ks);
    stage_tile<kTileN, D>(kv, kv.v, dv, p0, kvh, tile_blk, vs);
    __syncthreads();

    // Positions in groups of 8: one rescale of the accumulators per group keeps the register
    // count and the unrolled code small.
#pragma unroll 1
    for (int j0 = kWarpRows ? 8 * warp : 0; j0 < kTileN; j0 += kWarpRows ? 8 * kWarps : 8) {
      // Chunk by chunk over the group's positions: a 16-byte piece of K or V is used as soon as
      // it is read, which keeps the registers for the eight positions' sums.
      const float4* kt = reinterpret_cast<const float4*>(ks + j0 * D) + sub;
      float s[8];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) s[jj] = 0.0f;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) {
          const float4 k4 = kt[jj * (D / 4) + kTpr * c];
          s[jj] += qv[4 * c] * k4.x;
          s[jj] += qv[4 * c + 1] * k4.y;
          s[jj] += qv[4 * c + 2] * k4.z;
          s[jj] += qv[4 * c + 3] * k4.w;
        }
      }
      float group_max = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        float part = s[jj];
        for (int o = kTpr / 2; o > 0; o >>= 1) part += tdm_shfl_xor(part, o, kTpr);
        const int32_t pos = p0 + j0 + jj;
        float sc = part * p.scale;
        if (p.softcap > 0.0f) sc = p.softcap * tanhf(sc);
        s[jj] = (pos < hi && pos >= first && pos <= limit) ? sc : -INFINITY;
        group_max = fmaxf(group_max, s[jj]);
      }
      const float m_new = fmaxf(m, group_max);
      if (m_new == -INFINITY) continue;  // nothing visible to this row yet
      const float corr = expf(m - m_new);
      l *= corr;
#pragma unroll
      for (int i = 0; i < 32; ++i) acc[i] *= corr;
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        s[jj] = expf(s[jj] - m_new);
        l += s[jj];
      }
      const float4* vt = reinterpret_cast<const float4*>(vs + j0 * D) + sub;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) {
          const float4 v4 = vt[jj * (D / 4) + kTpr * c];
          acc[4 * c] += s[jj] * v4.x;
          acc[4 * c + 1] += s[jj] * v4.y;
          acc[4 * c + 2] += s[jj] * v4.z;
          acc[4 * c + 3] += s[jj] * v4.w;
        }
      }
      m = m_new;
    }
  }
  if constexpr (kWarpRows) {
    // Warps 1.. leave their state in the tiles' memory (no more shared memory than the tiles
    // take: on an A10's 100 KB a kilobyte more per block fits two blocks instead of three);
    // warp 0 rescales every state to the common maximum and adds them (a warp that saw no
    // position of a row adds nothing).
    float* const ml = kvs + (kWarps - 1) * TDM_WARP * 32;  // m and l of every thread
    __syncthreads();  // every warp is done with the last tile
    if (warp > 0) {
      float* a = kvs + ((warp - 1) * TDM_WARP + lane) * 32;
#pragma unroll
      for (int i = 0; i < 32; ++i) a[i] = acc[i];
      ml[2 * threadIdx.x] = m;
      ml[2 * threadIdx.x + 1] = l;
    }
    __syncthreads();
    if (warp > 0) return;
    float mx = m;
    for (int w = 1; w < kWarps; ++w) mx = fmaxf(mx, ml[2 * (w * TDM_WARP + lane)]);
    if (mx != -INFINITY) {
      const float own = m == -INFINITY ? 0.0f : expf(m - mx);
      l *= own;
#pragma unroll
      for (int i = 0; i < 32; ++i) acc[i] *= own;
      for (int w = 1; w < kWarps; ++w) {
        const float mw = ml[2 * (w * TDM_WARP + lane)];
        if (mw == -INFINITY) continue;
        const float c = expf(mw - mx);
        l += ml[2 * (w * TDM_WARP + lane) + 1] * c;
        const float* a = kvs + ((w - 1) * TDM_WARP + lane) * 32;
#pragma unroll
        for (int i = 0; i < 32; ++i) acc[i] += a[i] * c;
      }
      m = mx;
    }
  }
  if (!valid) return;
  const int64_t orow = int64_t(sd.first_row) + t;
  if (p.n_splits == 1) {
    const float inv = softmax_inv(m, l, p.sinks, h);
    float* o = p.out + orow * p.n_heads * dv + int64_t(h) * dv;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int d = dim_of<kTpr>(sub, i);
      if (d < dv) o[d] = acc[i] * inv;
    }
  } else {
    float* part = p.partial + ((orow * p.n_heads + h) * p.n_splits + split) * (dv + 2);
    if (sub == 0) {
      part[0] = m;
      part[1] = l;
    }
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int d = dim_of<kTpr>(sub, i);
      if (d < dv) part[2 + d] = acc[i];
    }
  }
}

// Merges the splits of one (token, head): rescale each split's sums to the common maximum.
__global__ void attention_combine_kernel(const float* partial, const float* sinks, float* out, SeqBatch b, int32_t n_heads,
                                         int32_t dv, int32_t n_splits) {
  const int si = find_seq(b, blockIdx.x);
  const int64_t orow = int64_t(b.seq[si].first_row) + (int32_t(blockIdx.x) - b.item_start[si]);
  const int32_t h = blockIdx.y;
  const float* base = partial + (orow * n_heads + h) * n_splits * (dv + 2);
  float mx = -INFINITY;
  for (int s = 0; s < n_splits; ++s) mx = fmaxf(mx, base[s * (dv + 2)]);
  float total = 0.0f;
  for (int s = 0; s < n_splits; ++s) {
    const float ms = base[s * (dv + 2)];
    if (ms != -INFINITY) total += base[s * (dv + 2) + 1] * expf(ms - mx);
  }
  const float inv = softmax_inv(mx, total, sinks, h);
  for (int d = threadIdx.x; d < dv; d += blockDim.x) {
    float a = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
      const float ms = base[s * (dv + 2)];
      if (ms != -INFINITY) a += base[s * (dv + 2) + 2 + d] * expf(ms - mx);
    }
    out[orow * n_heads * dv + int64_t(h) * dv + d] = a * inv;
  }
}

size_t kv_elt(uint32_t type) {
  if (type == kF16) return 2;
  if (type == kF32) return 4;
  unsupported("KV blocks must be f16 or f32");
}

KvView view_of(const tdm_kv_layer* kv) {
  if (kv == nullptr || kv->k == nullptr || kv->v == nullptr) bad("KV view is null");
  kv_elt(kv->type);
  if (kv->block_tokens <= 0 || kv->n_kv_heads <= 0 || kv->head_dim_k <= 0 || kv->head_dim_v <= 0 || kv->n_blocks <= 0)
    bad("KV view has an empty dimension");
  KvView v;
  v.k = static_cast<uint8_t*>(kv->k);
  v.v = static_cast<uint8_t*>(kv->v);
  v.block_bytes = kv->block_bytes;
  v.n_blocks = kv->n_blocks;
  v.block_tokens = kv->block_tokens;
  v.n_kv_heads = kv->n_kv_heads;
  v.head_dim_k = kv->head_dim_k;
  v.head_dim_v = kv->head_dim_v;
  v.f16 = kv->type == kF16;
  v.vec8 = v.f16 && v.head_dim_k % 8 == 0 && v.head_dim_v % 8 == 0 && v.block_bytes % 16 == 0 &&
           reinterpret_cast<uintptr_t>(v.k) % 16 == 0 && reinterpret_cast<uintptr_t>(v.v) % 16 == 0;
  return v;
}

void check_seq(const tdm_kv_layer& kv, const tdm_attn_seq& s) {
  if (s.n_tokens <= 0 || s.start_pos < 0 || s.first_row < 0) bad("attention sequence with a bad range");
  const int64_t end = int64_t(s.start_pos) + s.n_tokens;
  const int64_t needed = (end + kv.block_tokens - 1) / kv.block_tokens;
  if (s.block_table == nullptr || s.n_blocks < needed)
    bad("block table of " + std::to_string(s.n_blocks) + " blocks does not cover " + std::to_string(end) + " positions");
}

// Fills a batch with sequences [first, first + n) of seqs; items(seq) work items each.
template <typename Items>
SeqBatch make_batch(const tdm_attn_seq* seqs, int32_t first, int32_t n, Items items) {
  SeqBatch b{};
  b.n_seqs = n;
  int64_t total = 0;
  for (int32_t i = 0; i < n; ++i) {
    const tdm_attn_seq& s = seqs[first + i];
    b.seq[i] = SeqDesc{s.block_table, s.first_row, s.n_tokens, s.start_pos, 0};
    b.item_start[i] = int32_t(total);
    total += items(s);
  }
  if (total > INT32_MAX) bad("attention batch too large for one launch");
  b.item_start[n] = int32_t(total);
  return b;
}

template <int D>
void launch_attention(GpuContext& c, GpuStream& st, const KvView& kv, const float* q, const tdm_attn_seq* seqs, int32_t first,
                      int32_t n, int32_t n_heads, float scale, float softcap, const float* sinks, int32_t window, float* out) {
  constexpr int kTileN = kAttnTile<D>;  // the host pass's value (for the split count only)
  constexpr int kWarpRowsMax = TDM_WARP / (D / 32);  // rows one warp serves
  const int32_t group = n_heads / kv.n_kv_heads;
  int64_t max_len = 0, max_row = 0, max_rows = 0;
  for (int32_t i = first; i < first + n; ++i) {
    max_len = std::max<int64_t>(max_len, int64_t(seqs[i].start_pos) + seqs[i].n_tokens);
    max_row = std::max<int64_t>(max_row, int64_t(seqs[i].first_row) + seqs[i].n_tokens);
    max_rows = std::max<int64_t>(max_rows, int64_t(seqs[i].n_tokens) * group);
  }
  // Decode (each sequence's rows fit one warp): the warps split the positions instead.
  const bool warp_rows = c.attn_warp_rows && max_rows <= kWarpRowsMax;
  const int rows_per_item = warp_rows ? kWarpRowsMax : kAttnThreads / (D / 32);
  const SeqBatch items = make_batch(seqs, first, n, [&](const tdm_attn_seq& s) {
    return (int64_t(s.n_tokens) * group + rows_per_item - 1) / rows_per_item;
  });
  const int64_t n_items = items.item_start[n];
  const int64_t blocks = n_items * kv.n_kv_heads;
  // Too few blocks for the device: split the positions too (about two blocks per SM).
  int32_t splits = 1;
  if (blocks < 2 * int64_t(c.n_sm)) {
    const int64_t want = (2 * int64_t(c.n_sm) + blocks - 1) / blocks;
    const int64_t span = window > 0 ? std::min<int64_t>(max_len, window) : max_len;
    const int64_t useful = std::max<int64_t>(1, span / (2 * kTileN));
    splits = int32_t(std::min<int64_t>({want, useful, int64_t(kMaxSplits)}));
  }
  AttnParams p{kv, q, out, nullptr, n_heads, group, splits, softcap > 0.0f ? scale / softcap : scale, softcap, sinks, window};
  if (splits > 1) p.partial = scratch_as<float>(st, kSlotAttn, size_t(max_row) * size_t(n_heads) * size_t(splits) * size_t(kv.head_dim_v + 2));
  const dim3 grid(unsigned(n_items), unsigned(kv.n_kv_heads), unsigned(splits));
  auto kernel = warp_rows ? attention_kernel<D, true> : attention_kernel<D, false>;
  TDM_LAUNCH(kernel, grid, kAttnThreads, 0, st.stream)(p, items, c.faults);
  check_launch("attention_kernel");
  if (splits > 1) {
    const SeqBatch rows = make_batch(seqs, first, n, [](const tdm_attn_seq& s) { return int64_t(s.n_tokens); });
    const dim3 cgrid(unsigned(rows.item_start[n]), unsigned(n_heads));
    TDM_LAUNCH(attention_combine_kernel, cgrid, 128, 0, st.stream)(p.partial, sinks, out, rows, n_heads, kv.head_dim_v, splits);
    check_launch("attention_combine_kernel");
  }
}

// Block id pairs of one copy launch (kernel parameters: 2 KiB).
struct BlockPairs {
  int32_t src[256];
  int32_t dst[256];
  int32_t n;
};

constexpr int64_t kCopyPiece = 64 * 1024;  // bytes of one block copied by one thread block

// Item j of a copy is part j % parts of piece j / parts: dst + dst_id*dst_stride <- src +
// src_id*src_stride, kCopyPiece bytes of piece_bytes. Each thread block takes items in turn, so
// a small grid can carry a large copy (one whose source is mapped host memory waits on the link,
// and holds few of the cores the compute beside it needs). Four 16-byte loads are in flight per
// thread before their stores.
__global__ void copy_pieces_kernel(uint8_t* dst, size_t dst_stride, const uint8_t* src, size_t src_stride, size_t piece_bytes,
                                   int parts, BlockPairs pairs, bool vec16) {
  const int items = pairs.n * parts;
  for (int item = blockIdx.x; item < items; item += gridDim.x) {
    const int i = item / parts;
    const size_t begin = size_t(item % parts) * kCopyPiece;
    const size_t end = begin + kCopyPiece < piece_bytes ? begin + kCopyPiece : piece_bytes;
    uint8_t* d = dst + size_t(pairs.dst[i]) * dst_stride;
    const uint8_t* s = src + size_t(pairs.src[i]) * src_stride;
    if (vec16) {
      const size_t step = size_t(blockDim.x) * 16;
      size_t k = begin + threadIdx.x * 16;
      for (; k + 3 * step < end; k += 4 * step) {
        const uint4 a = *reinterpret_cast<const uint4*>(s + k);
        const uint4 b = *reinterpret_cast<const uint4*>(s + k + step);
        const uint4 c = *reinterpret_cast<const uint4*>(s + k + 2 * step);
        const uint4 e = *reinterpret_cast<const uint4*>(s + k + 3 * step);
        *reinterpret_cast<uint4*>(d + k) = a;
        *reinterpret_cast<uint4*>(d + k + step) = b;
        *reinterpret_cast<uint4*>(d + k + 2 * step) = c;
        *reinterpret_cast<uint4*>(d + k + 3 * step) = e;
      }
      for (; k < end; k += step) *reinterpret_cast<uint4*>(d + k) = *reinterpret_cast<const uint4*>(s + k);
    } else {
      for (size_t k = begin + threadIdx.x; k < end; k += blockDim.x) d[k] = s[k];
    }
  }
}

// Thread blocks per SM of a copy_pieces launch: enough 16-byte loads in flight to keep a PCIe
// link busy (a few hundred KiB), few enough to leave the SMs to the compute stream.
constexpr int kLinkCopyBlocksPerSm = 1;

// copy_pieces (few_blocks: its source may be across the link) and copy_blocks (a thread block per item).
tdm_status copy_pieces_with(tdm_backend_ctx* ctx, void* dst, size_t dst_stride, const void* src, size_t src_stride,
                            size_t piece_bytes, const int32_t* src_ids, const int32_t* dst_ids, int32_t n, tdm_stream* s,
                            bool few_blocks) {
  return guard(ctx, [&](GpuContext& c) {
    if (n <= 0 || piece_bytes == 0) return;
    if (dst == nullptr || src == nullptr || src_ids == nullptr || dst_ids == nullptr) bad("copy with a null pointer");
    for (int32_t i = 0; i < n; ++i)
      if (src_ids[i] < 0 || dst_ids[i] < 0) bad("negative block id");
    const bool vec16 = piece_bytes % 16 == 0 && dst_stride % 16 == 0 && src_stride % 16 == 0 &&
                       (reinterpret_cast<uintptr_t>(dst) & 15u) == 0 && (reinterpret_cast<uintptr_t>(src) & 15u) == 0;
    const int64_t parts = (int64_t(piece_bytes) + kCopyPiece - 1) / kCopyPiece;
    if (parts > 65535) unsupported("copies of more than 4 GiB in one piece");
    GpuStream& st = stream_of(c, s);
    for (int32_t first = 0; first < n; first += 256) {
      BlockPairs pairs{};
      pairs.n = std::min(256, n - first);
      for (int32_t i = 0; i < pairs.n; ++i) {
        pairs.src[i] = src_ids[first + i];
        pairs.dst[i] = dst_ids[first + i];
      }
      const int64_t items = int64_t(pairs.n) * parts;
      const int64_t grid = few_blocks ? std::min<int64_t>(items, int64_t(kLinkCopyBlocksPerSm) * c.n_sm) : items;
      TDM_LAUNCH(copy_pieces_kernel, dim3(unsigned(grid)), 256, 0, st.stream)(
          static_cast<uint8_t*>(dst), dst_stride, static_cast<const uint8_t*>(src), src_stride, piece_bytes, int(parts), pairs, vec16);
      check_launch("copy_pieces_kernel");
    }
  });
}

}  // namespace

tdm_status op_kv_store(tdm_backend_ctx* ctx, const tdm_kv_layer* kv, const float* k, const float* v,
                       const tdm_attn_seq* seqs, int32_t n_seqs, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    const KvView view = view_of(kv);
    if (n_seqs <= 0) return;
    if (k == nullptr || v == nullptr || seqs == nullptr) bad("kv_store with a null pointer");
    for (int32_t i = 0; i < n_seqs; ++i) check_seq(*kv, seqs[i]);
    GpuStream& st = stream_of(c, s);
    for (int32_t first = 0; first < n_seqs; first += kMaxSeqs) {
      const int32_t n = std::min(kMaxSeqs, n_seqs - first);
      const SeqBatch b = make_batch(seqs, first, n, [](const tdm_attn_seq& q) { return int64_t(q.n_tokens); });
      const dim3 grid(unsigned(b.item_start[n]), unsigned(view.n_kv_heads));
      TDM_LAUNCH(kv_store_kernel, grid, 128, 0, st.stream)(view, k, v, b, c.faults);
      check_launch("kv_store_kernel");
    }
  });
}

tdm_status op_attention(tdm_backend_ctx* ctx, const tdm_kv_layer* kv, const float* q, const tdm_attn_seq* seqs,
                        int32_t n_seqs, int32_t n_heads, float scale, float softcap, const float* sinks, int32_t window,
                        float* out, tdm_stream* s) {
  return guard(ctx, [&](GpuContext& c) {
    const KvView view = view_of(kv);
    if (n_seqs <= 0) return;
    if (q == nullptr || out == nullptr || seqs == nullptr) bad("attention with a null pointer");
    if (window < 0) bad("attention window must not be negative");
    if (!(softcap >= 0.0f) || isinf(softcap)) bad("attention softcap must be 0 or a positive number");
    if (n_heads <= 0 || n_heads % kv->n_kv_heads != 0) bad("n_heads must be a multiple of n_kv_heads");
    for (int32_t i = 0; i < n_seqs; ++i) check_seq(*kv, seqs[i]);
    const int32_t d = std::max(kv->head_dim_k, kv->head_dim_v);
    if (d > 256) unsupported("attention heads wider than 256 elements are not supported on " TDM_BACKEND_KIND);
    GpuStream& st = stream_of(c, s);
    for (int32_t first = 0; first < n_seqs; first += kMaxSeqs) {
      const int32_t n = std::min(kMaxSeqs, n_seqs - first);
      if (d <= 64) launch_attention<64>(c, st, view, q, seqs, first, n, n_heads, scale, softcap, sinks, window, out);
      else if (d <= 128) launch_attention<128>(c, st, view, q, seqs, first, n, n_heads, scale, softcap, sinks, window, out);
      else launch_attention<256>(c, st, view, q, seqs, first, n, n_heads, scale, softcap, sinks, window, out);
    }
  });
}

tdm_status op_copy_pieces(tdm_backend_ctx* ctx, void* dst, size_t dst_stride, const void* src, size_t src_stride,
                          size_t piece_bytes, const int32_t* src_ids, const int32_t* dst_ids, int32_t n, tdm_stream* s) {
  return copy_pieces_with(ctx, dst, dst_stride, src, src_stride, piece_bytes, src_ids, dst_ids, n, s, true);
}

tdm_status op_copy_blocks(tdm_backend_ctx* ctx, void* dst_pool, const void* src_pool, size_t block_bytes,
                          const int32_t* src_ids, const int32_t* dst_ids, int32_t n, tdm_stream* s) {
  return copy_pieces_with(ctx, dst_pool, block_bytes, src_pool, block_bytes, block_bytes, src_ids, dst_ids, n, s, false);
}

}  // namespace tdm::gpu
