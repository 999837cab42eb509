/* The backend interface (../shared/DESIGN.md): a versioned C table of functions plus a
 * context pointer. The CPU backend is built into the addon; CUDA and HIP libraries export
 * the same table through TDM_BACKEND_ENTRY_NAME, so the executor asks what a device can do
 * and never branches on which device it is. Plain C so that any toolchain can implement it. */
#ifndef TDM_BACKEND_H
#define TDM_BACKEND_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change to a struct layout or a member's meaning (ABI 8: attention took a softcap);
 * new ops are appended. The registry loads only libraries built with this version. */
#define TDM_BACKEND_ABI_VERSION 8u

/* The symbol every backend library exports (a tdm_backend_create_fn). */
#define TDM_BACKEND_ENTRY_NAME "tdm_backend_create"

typedef enum tdm_status {
  TDM_STATUS_OK = 0,
  TDM_STATUS_BAD_ARGUMENT = 1, /* a shape, id or pointer the contract rules out */
  TDM_STATUS_UNSUPPORTED = 2,  /* a type or mode this backend does not implement */
  TDM_STATUS_OOM = 3,          /* an allocation failed */
  TDM_STATUS_DEVICE = 4,       /* the device or its driver reported an error */
  TDM_STATUS_INTERNAL = 5
} tdm_status;

/* Capability bits (tdm_backend_iface.caps). */
#define TDM_CAP_HOST_MEMORY (1u << 0) /* buffers are ordinary host memory that any host code may read and write */
#define TDM_CAP_ASYNC (1u << 1)       /* ops may return before they finish: order them with streams and events */

typedef enum tdm_rope_mode {
  TDM_ROPE_NORM = 0, /* rotates adjacent pairs (x[2i], x[2i+1]): llama */
  TDM_ROPE_NEOX = 2  /* rotates (x[i], x[i + rope_dim/2]): qwen2, qwen*moe, olmoe */
} tdm_rope_mode;

/* RoPE's settings, those of ggml_rope_ext. ext_factor 0 with attn_factor 1 is plain (or, with
 * freq_scale < 1, linearly scaled) RoPE; ext_factor != 0 is YaRN (arXiv 2309.00071). */
typedef struct tdm_rope_params {
  int32_t mode;       /* tdm_rope_mode */
  int32_t n_ctx_orig; /* YaRN: context the frequencies were trained for (tokens); > 0 when ext_factor != 0 */
  float freq_base;    /* theta base */
  float freq_scale;   /* angle scale: 1 / the scaling factor */
  float ext_factor;   /* YaRN: weight of the unscaled angle on the pairs its ramp selects; 0 = off */
  float attn_factor;  /* multiplies every cos and sin */
  float beta_fast;    /* YaRN ramp: pairs turning more than beta_fast times over n_ctx_orig keep their angle, */
  float beta_slow;    /* those turning fewer than beta_slow times are fully scaled */
} tdm_rope_params;

/* YaRN's per-call constants, derived as ggml does (ggml.c ggml_rope_yarn_corr_dims, ggml-cpu
 * ops.cpp rope_yarn): the pair range [low, high] over which the ramp falls from 1 to 0, and the
 * factor on cos and sin. One definition, so that every backend computes the same floats. */
typedef struct tdm_rope_yarn {
  float low, high, mscale;
} tdm_rope_yarn;

/* Pair index whose angle turns n_rot times over n_ctx_orig positions (ggml_rope_yarn_corr_dim). */
static inline float tdm_rope_yarn_corr_dim(int32_t rope_dim, int32_t n_ctx_orig, float n_rot, float base) {
  return (float)rope_dim * logf((float)n_ctx_orig / (n_rot * 2.0f * 3.14159265358979323846f)) / (2.0f * logf(base));
}

/* low and high from beta_fast and beta_slow, clamped to [0, rope_dim - 1]; mscale = attn_factor,
 * times 1 + 0.1 ln(1 / freq_scale) under YaRN. */
static inline tdm_rope_yarn tdm_rope_yarn_consts(const tdm_rope_params* p, int32_t rope_dim) {
  tdm_rope_yarn y;
  const float start = floorf(tdm_rope_yarn_corr_dim(rope_dim, p->n_ctx_orig, p->beta_fast, p->freq_base));
  const float end = ceilf(tdm_rope_yarn_corr_dim(rope_dim, p->n_ctx_orig, p->beta_slow, p->freq_base));
  y.low = 0 > start ? 0 : start;
  y.high = (float)(rope_dim - 1) < end ? (float)(rope_dim - 1) : end;
  y.mscale = p->attn_factor;
  if (p->ext_factor != 0.0f) y.mscale *= 1.0f + 0.1f * logf(1.0f / p->freq_scale);
  return y;
}

typedef enum tdm_gating {
  TDM_GATING_SOFTMAX = 0,       /* router probabilities: softmax over all experts */
  TDM_GATING_SIGMOID = 1,       /* router probabilities: sigmoid of each logit */
  TDM_GATING_SOFTMAX_WEIGHT = 2 /* choose by raw logit, weights = softmax over the chosen (gpt-oss) */
} tdm_gating;

/* The gated activation of an expert FFN's hidden rows (moe_ffn). */
typedef enum tdm_glu {
  TDM_GLU_SWIGLU = 0,    /* silu(gate) * up */
  TDM_GLU_SWIGLU_OAI = 1 /* gpt-oss: g = min(gate, limit), u = clamp(up, -limit, limit), g * sigmoid(alpha g) * (u + 1) */
} tdm_glu;

typedef enum tdm_row_fn {
  TDM_ROW_FN_IDENTITY = 0,
  TDM_ROW_FN_SIGMOID = 1
} tdm_row_fn;

/* A weight matrix (or a stack of them, one per expert) in GGUF layout: row r of matrix m
 * starts at data + m*mat_bytes + r*row_bytes and holds n_cols elements of `type`. */
typedef struct tdm_weight {
  const void* data;  /* backend-visible address of row 0 of matrix 0 */
  uint32_t type;     /* ggml type id (core/ggml_types.h) */
  int64_t n_cols;    /* elements per row (GGUF ne[0]), a multiple of the type's block size */
  int64_t n_rows;    /* rows per matrix (ne[1]) */
  int64_t n_mats;    /* matrices stacked (ne[2]); 1 for a plain matrix */
  size_t row_bytes;  /* bytes from one row to the next */
  size_t mat_bytes;  /* bytes from one matrix to the next */
} tdm_weight;

/* moe_ffn's activation and per-expert biases. A bias is an f32 stack viewed like a weight:
 * expert (or cache slot) m's bias row of n_cols floats at data + m*mat_bytes (n_rows 1); data
 * NULL for none. n_cols is n_ff for the gate and up biases, n_embd for the down bias, added to
 * each projection's output before the activation (gate, up) or the weighting (down). */
typedef struct tdm_moe_opts {
  int32_t glu;        /* tdm_glu */
  float alpha, limit; /* TDM_GLU_SWIGLU_OAI's constants (gpt-oss: 1.702, 7) */
  tdm_weight gate_bias, up_bias, down_bias;
} tdm_moe_opts;

/* One layer's view of a paged KV pool. A block holds block_tokens positions of every layer;
 * inside a block, layer l's K is [n_kv_heads][block_tokens][head_dim_k] and its V
 * [n_kv_heads][block_tokens][head_dim_v], so block b's K for this layer is at k + b*block_bytes. */
typedef struct tdm_kv_layer {
  void* k;              /* K of block 0 for this layer (backend-visible) */
  void* v;              /* V of block 0 for this layer */
  uint32_t type;        /* element type of K and V: ggml F16 (1) or F32 (0) */
  size_t block_bytes;   /* bytes from one block to the next (all layers, K and V) */
  int32_t n_blocks;     /* blocks in the pool; ids are 0..n_blocks-1 */
  int32_t block_tokens; /* positions per block */
  int32_t n_kv_heads;
  int32_t head_dim_k;   /* elements per K head */
  int32_t head_dim_v;   /* elements per V head */
} tdm_kv_layer;

/* One sequence's share of a batched attention or kv_store call. */
typedef struct tdm_attn_seq {
  int32_t first_row;          /* row of its first new token in the batched q/k/v/out arrays */
  int32_t n_tokens;           /* new tokens this step */
  int32_t start_pos;          /* position of its first new token; KV of [0, start_pos) is cached */
  int32_t n_blocks;           /* entries in block_table; must cover start_pos + n_tokens positions */
  const int32_t* block_table; /* block ids in position order (backend-visible); entries wholly before
                                 the first position an op touches (start_pos for kv_store, the
                                 window's start for windowed attention) are not read */
} tdm_attn_seq;

typedef struct tdm_backend_ctx tdm_backend_ctx; /* backend-defined state */
typedef struct tdm_stream tdm_stream;           /* an in-order queue of work; NULL is the default queue */
typedef struct tdm_event tdm_event;             /* a point in a stream that others can wait for */

/* Every op returns TDM_STATUS_OK or an error whose text last_error() gives; a context runs
 * one call at a time (callers serialise), and on a backend without TDM_CAP_ASYNC an op has
 * finished when it returns. Float arrays are row-major and contiguous unless a stride says
 * otherwise; pointers named dst/src/x/y are backend-visible memory. */
typedef struct tdm_backend_iface {
  uint32_t abi_version; /* TDM_BACKEND_ABI_VERSION the library was built with */
  uint32_t struct_size; /* sizeof(tdm_backend_iface) the library was built with */
  const char* kind;     /* short backend name: "cpu", "cuda", "hip" */

  /* ---- device */
  /* Human-readable device name (e.g. the CPU model or "NVIDIA T4"); owned by the context. */
  const char* (*device_name)(tdm_backend_ctx* ctx);
  /* TDM_CAP_* bits. */
  uint32_t (*caps)(tdm_backend_ctx* ctx);
  /* Free and total device memory in bytes. */
  tdm_status (*memory)(tdm_backend_ctx* ctx, uint64_t* free_bytes, uint64_t* total_bytes);
  /* Text of the last error on this context (never NULL; "" when none). */
  const char* (*last_error)(tdm_backend_ctx* ctx);
  /* Frees the context; buffers it allocated must have been freed first. */
  void (*destroy)(tdm_backend_ctx* ctx);

  /* ---- memory */
  /* Allocates `bytes` of device memory aligned to at least 64 bytes; *out is NULL on error. */
  tdm_status (*buffer_alloc)(tdm_backend_ctx* ctx, size_t bytes, void** out);
  /* Frees a buffer_alloc pointer (NULL is a no-op). */
  void (*buffer_free)(tdm_backend_ctx* ctx, void* ptr);
  /* (optional) Allocates page-locked host memory for fast async copies. */
  tdm_status (*host_alloc)(tdm_backend_ctx* ctx, size_t bytes, void** out);
  /* (optional) Frees a host_alloc pointer. */
  void (*host_free)(tdm_backend_ctx* ctx, void* ptr);

  /* ---- copies: `bytes` bytes, ordered on stream s */
  tdm_status (*copy_h2d)(tdm_backend_ctx* ctx, void* dst, const void* src_host, size_t bytes, tdm_stream* s);
  tdm_status (*copy_d2h)(tdm_backend_ctx* ctx, void* dst_host, const void* src, size_t bytes, tdm_stream* s);
  tdm_status (*copy_d2d)(tdm_backend_ctx* ctx, void* dst, const void* src, size_t bytes, tdm_stream* s);

  /* ---- streams and events (optional: NULL on a backend without TDM_CAP_ASYNC) */
  tdm_status (*stream_create)(tdm_backend_ctx* ctx, tdm_stream** out);
  void (*stream_destroy)(tdm_backend_ctx* ctx, tdm_stream* s);
  tdm_status (*stream_sync)(tdm_backend_ctx* ctx, tdm_stream* s);
  tdm_status (*event_create)(tdm_backend_ctx* ctx, tdm_event** out);
  void (*event_destroy)(tdm_backend_ctx* ctx, tdm_event* e);
  tdm_status (*event_record)(tdm_backend_ctx* ctx, tdm_event* e, tdm_stream* s);
  /* Work queued on s after this call starts only once e has completed. */
  tdm_status (*stream_wait)(tdm_backend_ctx* ctx, tdm_stream* s, tdm_event* e);
  tdm_status (*event_sync)(tdm_backend_ctx* ctx, tdm_event* e);
  /* Waits for all work on every stream of this context. */
  tdm_status (*synchronize)(tdm_backend_ctx* ctx);

  /* ---- ops */
  /* y[t][r] = sum_k W_m[r][k] * x[t][k] for t < n_tokens, r < w->n_rows: x is n_tokens x n_cols
   * floats, y n_tokens x n_rows floats. Activations are first converted to the weight type's
   * dot type (llama.cpp's vec_dot_type: q8_0, q8_1, q8_K, f16, bf16 or f32) so results track llama.cpp. */
  tdm_status (*matmul)(tdm_backend_ctx* ctx, const tdm_weight* w, int64_t m, const float* x, int64_t n_tokens,
                       float* y, tdm_stream* s);
  /* y[i] = dequantize(W_0[ids[i]]) for i < n_ids: n_cols floats per row (embedding lookup);
   * every id must be in [0, n_rows). */
  tdm_status (*get_rows)(tdm_backend_ctx* ctx, const tdm_weight* w, const int32_t* ids, int64_t n_ids, float* y,
                         tdm_stream* s);
  /* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w over n_rows rows of n_cols floats; w (n_cols
   * floats) may be NULL for no weight; y may equal x. */
  tdm_status (*rms_norm)(tdm_backend_ctx* ctx, const float* x, const float* w, float* y, int64_t n_rows,
                         int64_t n_cols, float eps, tdm_stream* s);
  /* In place on x (n_tokens rows of n_heads*head_dim floats): rotates the first rope_dim
   * elements of each head, pairs chosen by p->mode, as ggml_rope_ext. Pair i at token t has
   * theta = pos[t] * freq_base^(-2i/rope_dim) (a running float product over i) and angle
   * a = freq_scale * theta; with ext_factor != 0, r = ramp(i) * ext_factor, ramp(i) =
   * 1 - clamp((i - low) / max(0.001, high - low), 0, 1), and a = a * (1 - r) + theta * r. It
   * rotates by a with cos and sin times mscale (low, high, mscale: tdm_rope_yarn_consts).
   * Elements past rope_dim are left as they are. */
  tdm_status (*rope)(tdm_backend_ctx* ctx, float* x, const int32_t* pos, int64_t n_tokens, int32_t n_heads,
                     int32_t head_dim, int32_t rope_dim, const tdm_rope_params* p, tdm_stream* s);
  /* y[r][c] = a[r][c] + b[r*b_row_stride + c] over n_rows x n_cols; b_row_stride 0 adds one
   * row (a bias) to every row; y may equal a. */
  tdm_status (*add)(tdm_backend_ctx* ctx, const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols,
                    int64_t b_row_stride, tdm_stream* s);
  /* y[r][c] = a[r][c] * b[r*b_row_stride + c]; as add. */
  tdm_status (*mul)(tdm_backend_ctx* ctx, const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols,
                    int64_t b_row_stride, tdm_stream* s);
  /* y[i] = silu(gate[i]) * up[i] for i < n, silu(g) = g / (1 + exp(-g)); y may equal gate or up. */
  tdm_status (*swiglu)(tdm_backend_ctx* ctx, const float* gate, const float* up, float* y, int64_t n,
                       tdm_stream* s);
  /* x[r][c] *= fn(scale[r]) over n_rows x n_cols, fn a tdm_row_fn (the shared expert's sigmoid gate). */
  tdm_status (*scale_rows)(tdm_backend_ctx* ctx, float* x, const float* scale, int64_t n_rows, int64_t n_cols,
                           int32_t fn, tdm_stream* s);
  /* Writes each sequence's new K and V rows (k: rows of n_kv_heads*head_dim_k floats, v: rows of
   * n_kv_heads*head_dim_v floats, at the sequence's first_row) into its blocks at positions
   * start_pos.., converting to kv->type. Block ids must be in [0, kv->n_blocks). */
  tdm_status (*kv_store)(tdm_backend_ctx* ctx, const tdm_kv_layer* kv, const float* k, const float* v,
                         const tdm_attn_seq* seqs, int32_t n_seqs, tdm_stream* s);
  /* Causal paged attention: for new token i of a sequence (row first_row+i of q, n_heads*head_dim_k
   * floats), out row = softmax_j(scale * q_h . K_j) V_j over positions j <= start_pos+i read
   * through the block table, head h using KV head h / (n_heads / n_kv_heads) (GQA). The new
   * tokens' K and V must already be stored. out rows hold n_heads*head_dim_v floats.
   * window > 0: a sliding window, token at position p sees only positions j > p - window.
   * sinks (n_heads floats, may be NULL): head h's sink logit joins the softmax's denominator
   * (max and sum) but adds no value (gpt-oss's attention sinks).
   * softcap > 0 (ABI 8): each score s = scale * q.k becomes softcap * tanh(s / softcap) before the
   * softmax (gemma2), computed as llama.cpp does: tanh(q.k * (scale / softcap)) * softcap; 0: none. */
  tdm_status (*attention)(tdm_backend_ctx* ctx, const tdm_kv_layer* kv, const float* q, const tdm_attn_seq* seqs,
                          int32_t n_seqs, int32_t n_heads, float scale, float softcap, const float* sinks, int32_t window,
                          float* out, tdm_stream* s);
  /* MoE router for n_tokens rows of n_experts logits, as llama.cpp's build_moe_ffn: p = gating(logits)
   * (the logits themselves for TDM_GATING_SOFTMAX_WEIGHT); ids[t] = the n_used largest p
   * (std::partial_sort order, then the first two swapped, as ggml_top_k); weights[t][j] =
   * p[ids[t][j]] (SOFTMAX_WEIGHT: their softmax), divided by their sum (clamped below at 2^-14)
   * when norm != 0, then times scale. ids and weights are n_tokens x n_used. */
  tdm_status (*router)(tdm_backend_ctx* ctx, const float* logits, int64_t n_tokens, int32_t n_experts,
                       int32_t n_used, int32_t gating, int32_t norm, float scale, int32_t* ids, float* weights,
                       tdm_stream* s);
  /* Expert FFN: y[t] = sum over j < n_used, in j order, of weights[t][j] * down_e(silu(gate_e x[t]) *
   * up_e x[t]) with e = ids[t][j]; x and y are n_tokens x n_embd floats; gate/up are stacks of
   * n_ff x n_embd matrices, down n_embd x n_ff. Reads only the rows of experts some token uses.
   * opts (may be NULL: SwiGLU, no biases) gives another activation and per-expert biases. */
  tdm_status (*moe_ffn)(tdm_backend_ctx* ctx, const float* x, int64_t n_tokens, const int32_t* ids,
                        const float* weights, int32_t n_used, const tdm_weight* gate, const tdm_weight* up,
                        const tdm_weight* down, const tdm_moe_opts* opts, float* y, tdm_stream* s);
  /* Copies whole KV blocks inside this backend's memory: block dst_ids[i] of dst_pool from
   * block src_ids[i] of src_pool, block_bytes each (ids are host arrays of n entries). */
  tdm_status (*copy_blocks)(tdm_backend_ctx* ctx, void* dst_pool, const void* src_pool, size_t block_bytes,
                            const int32_t* src_ids, const int32_t* dst_ids, int32_t n, tdm_stream* s);

  /* ---- loading */
  /* (optional) Readies matrix stack w for this backend's matmuls ahead of the first one (the
   * CPU backend repacks a weight in a file mapping into its kernels' layout, once per process)
   * so that the first step does not pay for it; NULL on a backend with nothing to ready. */
  tdm_status (*prepare_weight)(tdm_backend_ctx* ctx, const tdm_weight* w);

  /* ---- ops appended in ABI 2 */
  /* Combines per-choice expert outputs computed elsewhere (a layer split between devices):
   * y[t] = sum over j < n_used, in j order, of weights[j*n_tokens + t] * rows[pos[j*n_tokens + t]],
   * each product rounded to float before it is added (no fused multiply-add), so the bits equal
   * moe_ffn's own combine. rows holds n_rows rows of n_cols floats, y n_tokens rows (not
   * overlapping rows); pos and weights are choice-major, and every pos must be in [0, n_rows). */
  tdm_status (*moe_combine)(tdm_backend_ctx* ctx, const float* rows, int64_t n_rows, const int32_t* pos,
                            const float* weights, int64_t n_tokens, int32_t n_used, int64_t n_cols, float* y,
                            tdm_stream* s);

  /* ---- ops appended in ABI 3 */
  /* (optional) y[i] = W_i x for n (1 to 4) matrices (matrix 0 of each stack) that read the same
   * x, n_tokens rows of n_cols floats: a layer's q/k/v or gate/up. x is converted to the dot type
   * once and, where the backend can, the products run as one launch; each y[i] (n_tokens x
   * W_i.n_rows floats) gets the bits a matmul call would give. Every W_i has the same type and
   * n_cols. NULL: the caller makes n matmul calls. */
  tdm_status (*matmul_group)(tdm_backend_ctx* ctx, const tdm_weight* const* w, int32_t n, const float* x,
                             int64_t n_tokens, float* const* y, tdm_stream* s);

  /* ---- ops appended in ABI 5 */
  /* (optional) The k best entries of each of n_rows rows of n_cols floats (x), best first: a
   * larger value, then a lower column, goes first (sampling's order, so that a token sampler can
   * run on the host from these alone). vals and ids are n_rows x k. flags[r] is 1 where row r
   * holds a NaN or +Infinity or where its best value is -Infinity (the caller then reads the row
   * itself), else 0; that row's vals and ids are then unspecified. 1 <= k <= TDM_TOP_K_MAX and
   * k <= n_cols. NULL: the caller copies the rows to the host. */
  tdm_status (*top_k_rows)(tdm_backend_ctx* ctx, const float* x, int64_t n_rows, int64_t n_cols, int32_t k,
                           float* vals, int32_t* ids, int32_t* flags, tdm_stream* s);

  /* ---- ops appended in ABI 6: host KV streamed to the device a layer at a time */
  /* (optional) Page-locks `bytes` of host memory at p (allocated elsewhere) and maps it for the
   * device: *device_ptr is the address the device's ops read it at. NULL: the device cannot read
   * host memory, and host-tier KV is attended only where it lives. */
  tdm_status (*host_register)(tdm_backend_ctx* ctx, void* p, size_t bytes, void** device_ptr);
  /* (optional) Undoes host_register(p). */
  void (*host_unregister)(tdm_backend_ctx* ctx, void* p);
  /* (optional) n copies of piece_bytes: from src + src_ids[i]*src_stride to dst + dst_ids[i]*dst_stride
   * (ids are host arrays of n entries, not negative). src may be host memory mapped by
   * host_register (one layer's K and V of scattered host KV blocks, gathered into device memory). */
  tdm_status (*copy_pieces)(tdm_backend_ctx* ctx, void* dst, size_t dst_stride, const void* src, size_t src_stride,
                            size_t piece_bytes, const int32_t* src_ids, const int32_t* dst_ids, int32_t n, tdm_stream* s);

  /* ---- ops appended in ABI 7: gemma3's FFN and input scaling */
  /* y[i] = gelu(gate[i]) * up[i] for i < n, gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
   * (ggml_gelu's tanh form); y may equal gate or up. The CPU backend looks gelu up as ggml's CPU
   * build does (gate rounded to f16, gelu's value rounded to f16; gate <= -10 gives 0, >= 10 gives
   * gate) so that the two round alike; a GPU may compute it in f32. */
  tdm_status (*geglu)(tdm_backend_ctx* ctx, const float* gate, const float* up, float* y, int64_t n,
                      tdm_stream* s);
  /* y[i] = x[i] * scale for i < n; y may equal x. */
  tdm_status (*scale)(tdm_backend_ctx* ctx, const float* x, float* y, int64_t n, float scale, tdm_stream* s);

  /* ---- ops appended in ABI 8: gemma2's soft-capped logits */
  /* y[i] = tanh(x[i] * (1 / cap)) * cap for i < n, each step rounded to float as llama.cpp's
   * scale, tanh, scale (cap > 0); y may equal x. */
  tdm_status (*softcap)(tdm_backend_ctx* ctx, const float* x, float* y, int64_t n, float cap, tdm_stream* s);
} tdm_backend_iface;

/* The largest k of top_k_rows. */
#define TDM_TOP_K_MAX 64

/* A live backend: its table and its context. */
typedef struct tdm_backend {
  const tdm_backend_iface* iface;
  tdm_backend_ctx* ctx;
} tdm_backend;

typedef struct tdm_backend_params {
  uint32_t abi_version; /* TDM_BACKEND_ABI_VERSION of the caller */
  int32_t device;       /* device index within the library (0 for the CPU) */
  int32_t n_threads;    /* host threads the backend may use (CPU: worker count incl. the caller); <= 0 picks */
  const char* variant;  /* NULL for the best code path; the CPU backend also takes "ref", "avx2", "avxvnni" and "avx512" */
} tdm_backend_params;

/* Creates a backend; on failure returns an error status and writes a message into err
 * (err_len bytes, NUL-terminated). */
typedef tdm_status (*tdm_backend_create_fn)(const tdm_backend_params* params, tdm_backend* out, char* err,
                                            size_t err_len);

/* The built-in CPU backend (native/cpu/cpu_backend.cpp). */
tdm_status tdm_cpu_backend_create(const tdm_backend_params* params, tdm_backend* out, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* TDM_BACKEND_H */
