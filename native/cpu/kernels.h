// The CPU kernel table: one set of function pointers per instruction set (scalar reference,
// AVX2, AVX-512 VNNI), filled at start-up and chosen at run time from what the processor
// reports. The CPU backend's ops are written once against this table, so the same op runs
// with the reference kernels or the SIMD ones, and the tests compare the two.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
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

// Float weight rows (f32, f16, bf16) in their stored layout against float activations:
// y[t * y_stride + r] = dot(W[r], x[t * x_stride ..]) for r in [r0, r1), t < n_tokens. The
// activations already hold the values of the weight's dot type (rounded to f16 or bf16 as
// llama.cpp converts them), so each product equals the reference's. Each output is summed
// in one fixed order whatever the tile, so a token's row does not depend on the batch.
using RowsFn = void (*)(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1, int64_t n_cols, const float* x,
                        int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride);
// Rounds n floats to the precision of a float type (f16 or bf16) and back, in place semantics
// allowed (dst may equal src).
using RoundFn = void (*)(const float* src, float* dst, int64_t n);

// Rows interleaved for one instruction set: a quantized matrix repacked in groups of
// kPackRows rows so that one vector holds the same few elements of every row of a group
// (llama.cpp's repack idea; see avx512/ for the layouts). Same bytes per block as the file,
// so a packed copy replaces the mapping rather than adding to it. Activations are quantized
// once per matmul into the type's packed activation format.
constexpr int64_t kPackRows = 16;

struct PackedOps {
  // Bytes of one packed group of kPackRows rows of n_cols elements (a multiple of 64).
  size_t (*group_bytes)(int64_t n_cols);
  // Packs rows [0, n_rows) (n_rows <= kPackRows; missing rows become zeros) of the stored
  // layout, `row_bytes` apart, into one group at dst.
  void (*pack_group)(const uint8_t* src, size_t row_bytes, int64_t n_rows, int64_t n_cols, uint8_t* dst);
  // Bytes of one token's packed activation row (a multiple of 64).
  size_t (*act_bytes)(int64_t n_cols);
  // Quantizes one token's n_cols floats into the packed activation format: the same quants
  // and scales as the type's dot-type converter of this instruction set.
  void (*quantize_act)(const float* x, int64_t n_cols, uint8_t* act);
  // For n_groups consecutive groups at `groups` (group_bytes apart) and n_tokens activation
  // rows at `act` (act_stride bytes apart): y[t * y_stride + r] for rows r < n_rows counted
  // from the first group's first row (the last group may be partial).
  void (*gemm)(const uint8_t* groups, size_t group_bytes, int64_t n_groups, int64_t n_rows, int64_t n_cols,
               const uint8_t* act, size_t act_stride, int64_t n_tokens, float* y, int64_t y_stride);
};

// One task of causal attention: n_tok consecutive query tokens of one sequence, each with
// `group` query heads that share one KV head (GQA), over one segment of the positions.
// Positions are visited in tiles of kAttnTile from the segment's start with an online softmax
// (as llama.cpp's tiled CPU flash attention does); queries stay f32, K and V rows (f16 or f32,
// given by pointers since the cache is paged) are widened to f32. A task leaves each row's
// unnormalised state (running max, sum of weights, weighted sum of V rows); the backend folds
// the segments of a row in position order (attn_fold). Every score and output element is
// summed in one fixed order, so a query row's result does not depend on how many rows share
// the task, nor on whether a segment ran alone or beside others.
constexpr int64_t kAttnTile = 64;

// How the cache stores K and V rows: f32, f16, or q8_0 (blocks of 32: an f16 scale d, then 32
// int8 levels q; an element is float(q) * d, one rounding, in every kernel).
enum class AttnKv : uint8_t { f32, f16, q8_0 };
constexpr int64_t kKvQ8Block = 32, kKvQ8BlockBytes = 34;
// Positions per segment: a long context splits into segments that run as separate tasks
// (parallel decode of one sequence), at the same absolute boundaries for every kernel.
constexpr int64_t kAttnSegment = 1024;

struct AttnTask {
  const float* q;          // token t, head g: q + t * q_stride + g * dk
  int64_t q_stride;        // floats between tokens
  float* out;              // token t, head g: out + t * out_stride + g * dv
  int64_t out_stride;
  int32_t n_tok;           // query tokens
  int32_t group;           // query heads per KV head
  int32_t dk, dv;          // head sizes
  int64_t first_pos;       // position of token 0; token t sees positions [0, first_pos + t]
  int64_t pos_begin;       // this segment: positions [pos_begin, pos_end) of those (a multiple of kAttnTile)
  int64_t pos_end;
  // K row of position j: k_blocks[j / block_tokens] + (j % block_tokens) * k_row_bytes (the
  // paged cache's blocks for this KV head); V likewise. Positions [0, first_pos + n_tok).
  const uint8_t* const* k_blocks;
  const uint8_t* const* v_blocks;
  int32_t block_tokens;
  size_t k_row_bytes, v_row_bytes;
  AttnKv kv;               // how K and V rows are stored
  float scale;             // applied to q.k before the softmax (divided by softcap where one is set)
  float softcap;           // > 0 (gemma2): each scaled score s becomes softcap * tanh(s); 0: none
  float* scratch;          // attn_scratch_floats(...) floats, 64-byte aligned
  // Out: row r = t * group + g gets its weighted sum of V rows at out (unnormalised), its
  // largest score in row_max[r] (-inf when it sees no position here) and its sum of
  // exp(score - max) in row_sum[r].
  float* row_max;
  float* row_sum;
};
using AttnFn = void (*)(const AttnTask& task);

inline const void* attn_k_row(const AttnTask& a, int64_t j) {
  return a.k_blocks[j / a.block_tokens] + size_t(j % a.block_tokens) * a.k_row_bytes;
}
inline const void* attn_v_row(const AttnTask& a, int64_t j) {
  return a.v_blocks[j / a.block_tokens] + size_t(j % a.block_tokens) * a.v_row_bytes;
}

// rows[j] = the K (or V) row of position j0 + j for j < nk, walking the block table once:
// attn_k_row's division per row costs more than widening the row.
inline void attn_tile_rows(const uint8_t* const* blocks, int32_t block_tokens, size_t row_bytes, int64_t j0, int64_t nk,
                           const uint8_t** rows) {
  int64_t b = j0 / block_tokens, off = j0 % block_tokens;
  for (int64_t j = 0; j < nk; ++j) {
    rows[j] = blocks[b] + size_t(off) * row_bytes;
    if (++off == block_tokens) {
      off = 0;
      ++b;
    }
  }
}

// Asks for every line of rows[i], i in [from, min(to, n)), to be brought into L2 (prefetcht1):
// the few-rows kernels spread these requests over a tile's work so that the next reads overlap it.
inline void attn_prefetch_rows(const uint8_t* const* rows, int64_t n, int64_t from, int64_t to, size_t row_bytes) {
  for (int64_t i = from; i < std::min(to, n); ++i)
    for (size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(rows[i] + off, 0, 2);
}

// sums[r] += p[r][0] + p[r][1] + ... + p[r][nk - 1] (rows kAttnTile floats apart), added left to
// right for RR rows at once, so that their dependent chains overlap; every few-rows kernel sums
// its softmax weights this way, in the order the prefill kernels do per lane.
template <int RR>
inline void attn_add_rows_in_order(const float* p, int64_t nk, float* sums) {
  float t[RR];
  for (int r = 0; r < RR; ++r) t[r] = 0.0f;
  for (int64_t j = 0; j < nk; ++j)
    for (int r = 0; r < RR; ++r) t[r] += p[r * kAttnTile + j];
  for (int r = 0; r < RR; ++r) sums[r] += t[r];
}

// Folds segment states of one row, in position order, into (max, sum, acc): the first
// segment's state is taken as it is, each later one rescaled to the common max. The fold is
// shared by every kernel table, so the bits do not depend on the instruction set.
inline void attn_fold(float* max, float* sum, float* acc, float seg_max, float seg_sum, const float* seg_acc, int32_t dv) {
  const float m = std::max(*max, seg_max);
  if (m == -INFINITY) return;  // neither has seen a position
  const float a = std::exp(*max - m), b = std::exp(seg_max - m);
  *sum = *sum * a + seg_sum * b;
  for (int32_t e = 0; e < dv; ++e) acc[e] = acc[e] * a + seg_acc[e] * b;
  *max = m;
}

// Floats of scratch an AttnTask with these sizes needs.
size_t attn_scratch_floats(int64_t n_rows, int32_t dk, int32_t dv);

struct Kernels {
  const char* isa;                    // "ref", "avx2", "avxvnni", "avx512"
  VecDotFn vec_dot[kNumTypes];        // by weight type; null where the type is not computable
  VecDot4Fn vec_dot4[kNumTypes];      // (optional) by weight type; null falls back to vec_dot
  FromFloatFn from_float[kNumTypes];  // by activation type (q8_0, q8_1, q8_K, f16, bf16)
  ToFloatFn to_float[kNumTypes];      // by stored type
  RowsFn rows[kNumTypes];             // (optional) by float weight type; null uses vec_dot
  // (optional) rows for routed experts, where llama.cpp's mul_mat_id sums in its dot-product
  // order rather than its tiled matmul's; null uses rows[]
  RowsFn expert_rows[kNumTypes];
  RoundFn round[kNumTypes];           // (optional) by float type, for rows[]: f16, bf16
  PackedOps packed[kNumTypes];        // (optional) by weight type; members null where absent
  AttnFn attention;                   // one AttnTask
  // y[i] = silu(g[i]) * u[i] for n floats.
  void (*swiglu_f32)(const float* g, const float* u, float* y, int64_t n);
  // y[i] = gelu(g[i]) * u[i] for n floats, gelu looked up as ggml's CPU build does (f16 in, f16 out).
  void (*geglu_f32)(const float* g, const float* u, float* y, int64_t n);
  // y[i] = tanh(x[i] * in) * out for n floats, y may equal x: gemma2's soft caps (attention
  // scores with in 1, logits with in 1/cap). The SIMD tables compute tanh within a few ulp of
  // the reference's std::tanh, the same bits for an element wherever it sits in the array.
  void (*scaled_tanh_f32)(const float* x, float* y, int64_t n, float in, float out);
};

// The scalar reference table (always available).
const Kernels& kernels_ref();
// The table for a variant name ("ref", "avx2", "avxvnni", "avx512"), or nullptr when this build or this
// processor lacks it. A null or empty name picks the best one the processor supports.
const Kernels* kernels_for(const char* variant);
// Variant names usable on this machine, best last (e.g. {"ref", "avx2+pack", "avx2", "avxvnni+pack",
// "avxvnni", "avx512+pack", "avx512"}). "<isa>+pack" is the <isa> table with every matmul weight packed on each call
// (the backend otherwise packs only weights in read-only file mappings, once), so the tests
// hold the packed kernels against the reference on weights they build in memory.
const char* const* kernel_variants(int* count);

// Fill the SIMD entries of a table; each is defined in its ISA library (avx2/, avx512/),
// compiled with its own flags, so it is called only after the processor check.
void fill_kernels_avx2(Kernels& k);
void fill_kernels_avxvnni(Kernels& k);
void fill_kernels_avx512(Kernels& k);

// Scalar reference kernels for the entries above (<op>_<dtype>_ref).
void attention_ref(const AttnTask& task);
void swiglu_f32_ref(const float* g, const float* u, float* y, int64_t n);
void geglu_f32_ref(const float* g, const float* u, float* y, int64_t n);
void scaled_tanh_f32_ref(const float* x, float* y, int64_t n, float in, float out);
// gelu's f16 table widened to floats: entry h is gelu(fp16 h) rounded to f16 (the SIMD GeGLUs gather from it).
const float* gelu_f32_table();

}  // namespace tdm::cpu
