// The CPU backend: implements the backend table (backend/backend.h) on host memory with the
// kernel table of the best instruction set (or a forced one, for tests) and the thread pool.
// Every op is written once here; the kernels it calls decide scalar versus SIMD. A matmul
// runs on weights packed for the kernels where the table has packed kernels and the weights
// are a file mapping (packed once, shared: packed_weights.h), else on the stored layout;
// activations are converted once per matmul, then row blocks go out to the pool.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "core/ggml_types.h"
#include "cpu/huge_pages.h"
#include "cpu/kernels.h"
#include "cpu/packed_weights.h"
#include "cpu/quants.h"
#include "cpu/thread_pool.h"

namespace tdm::cpu {

namespace {

constexpr int64_t kRowBlock = kPackRows;  // weight rows per unit of matmul work (one packed group)
constexpr int64_t kTokenBlock = 32;        // activation rows kept hot while a row block streams past

// A 64-byte aligned scratch buffer that only grows.
class Scratch {
 public:
  Scratch() = default;
  ~Scratch() { std::free(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  uint8_t* get(size_t n) {
    if (n > n_) {
      std::free(p_);
      p_ = nullptr;
      n_ = 0;
      const size_t rounded = (std::max<size_t>(n, 64) + 63) / 64 * 64;
      p_ = static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
      if (p_ == nullptr) throw Error(code::oom, "cannot allocate " + std::to_string(n) + " bytes of CPU scratch");
      n_ = rounded;
    }
    return p_;
  }
  template <typename T>
  T* as(size_t count) { return reinterpret_cast<T*>(get(count * sizeof(T))); }

 private:
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

// How matmul weights are packed (kernels.h, PackedOps).
enum class PackPolicy {
  mapped,  // weights in read-only file mappings, once, shared (packed_weights.h)
  always,  // every weight on every call, into scratch (the "+pack" variants the tests use)
};

// One task of a matmul: row blocks [b0, b1) of segment `seg` (one matrix, or one expert's).
struct RowTask {
  int64_t seg, b0, b1;
};

struct CpuContext {
  std::string name;
  std::string last_error;
  const Kernels* k = nullptr;
  PackPolicy pack = PackPolicy::mapped;
  std::unique_ptr<ThreadPool> pool;
  Scratch act, act2;                    // activations converted for a matmul (MoE: gate, up)
  Scratch moe_x, moe_act_down;          // MoE: slot-ordered inputs, converted hidden rows
  Scratch packed_tmp[3];                // weights packed for one call (PackPolicy::always)
  std::vector<float> moe_gate, moe_up, moe_out;
  std::vector<std::vector<float>> thread_f32;            // per-thread float scratch (rope)
  std::vector<std::unique_ptr<Scratch>> thread_scratch;  // per-thread attention scratch
  std::vector<std::vector<const uint8_t*>> thread_blocks;  // per-thread K/V block pointers
  std::vector<float> attn_acc, attn_max, attn_sum;         // attention segment states (cpu_attention)
  // Packed copies this context has used, by weight address, and addresses found ineligible.
  std::unordered_map<const void*, std::shared_ptr<const PackedWeight>> packed;
  std::unordered_set<const void*> unpackable;
  std::vector<int64_t> seg_blocks;  // matmul task planning (plan_tasks), reused across calls
  std::vector<RowTask> tasks;
  // Buffers of kHugePage or more come from map_huge (the host KV pool, expert slabs): their
  // lengths, for cpu_free. Allocation may come from any thread.
  std::mutex huge_mu;
  std::unordered_map<void*, size_t> huge;
};

CpuContext& cx(tdm_backend_ctx* c) { return *reinterpret_cast<CpuContext*>(c); }

tdm_status status_of(const char* code) {
  if (std::strcmp(code, code::bad_argument) == 0) return TDM_STATUS_BAD_ARGUMENT;
  if (std::strcmp(code, code::unsupported) == 0) return TDM_STATUS_UNSUPPORTED;
  if (std::strcmp(code, code::oom) == 0) return TDM_STATUS_OOM;
  return TDM_STATUS_INTERNAL;
}

// Runs an op body, turning any exception into a status and the context's last error.
template <typename F>
tdm_status guard(tdm_backend_ctx* c, F&& body) {
  CpuContext& ctx = cx(c);
  try {
    body(ctx);
    return TDM_STATUS_OK;
  } catch (const Error& e) {
    ctx.last_error = e.what();
    return status_of(e.code());
  } catch (const std::bad_alloc&) {
    ctx.last_error = "out of host memory";
    return TDM_STATUS_OOM;
  } catch (const std::exception& e) {
    ctx.last_error = e.what();
    return TDM_STATUS_INTERNAL;
  }
}

[[noreturn]] void bad(const std::string& what) { throw Error(code::bad_argument, what); }

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

const TypeTraits& traits_of(uint32_t type) {
  const TypeTraits* t = type_traits(type);
  if (t == nullptr) bad("unknown tensor type id " + std::to_string(type));
  return *t;
}

void check_weight(const tdm_weight* w) {
  if (w == nullptr || w->data == nullptr) bad("weight is null");
  const TypeTraits& t = traits_of(w->type);
  if (w->n_cols <= 0 || w->n_rows <= 0 || w->n_mats <= 0) bad("weight has an empty dimension");
  if (w->n_cols % t.block_size != 0)
    bad(std::string("weight rows of ") + std::to_string(w->n_cols) + " elements are not whole " + t.name + " blocks");
  if (w->row_bytes < row_bytes(t, uint64_t(w->n_cols))) bad("weight row_bytes is smaller than a row");
}

// The activation type and kernels a matmul with weight type `type` uses on the stored layout.
struct DotPlan {
  GgmlType act_type;
  VecDotFn dot;
  VecDot4Fn dot4;       // null when the kernel table has no 4-token version
  FromFloatFn convert;  // null when activations stay f32
  size_t act_row_bytes;
};

DotPlan dot_plan(const Kernels& k, uint32_t type, int64_t n_cols) {
  if (type >= uint32_t(kNumTypes) || k.vec_dot[type] == nullptr)
    throw Error(code::unsupported, std::string("matmul with ") + traits_of(type).name + " weights is not supported on the CPU");
  DotPlan p{};
  p.act_type = vec_dot_type(GgmlType(type));
  p.dot = k.vec_dot[type];
  p.dot4 = k.vec_dot4[type];
  if (p.act_type == GgmlType::F32) {
    p.convert = nullptr;
    p.act_row_bytes = size_t(n_cols) * sizeof(float);
  } else {
    p.convert = k.from_float[int(p.act_type)];
    if (p.convert == nullptr) throw Error(code::unsupported, "no activation converter for this weight type");
    p.act_row_bytes = row_bytes(traits_of(uint32_t(p.act_type)), uint64_t(n_cols));
  }
  return p;
}

// y[t][r] (row stride y_stride) = dot(W[r], act[t]) for rows [r0, r1) and all tokens.
inline void dot_rows(const DotPlan& p, const uint8_t* w, size_t w_row_bytes, int64_t n_cols, const uint8_t* act,
                     int64_t n_tokens, int64_t r0, int64_t r1, float* y, int64_t y_stride) {
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenBlock) {
    const int64_t t1 = std::min(n_tokens, t0 + kTokenBlock);
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* wr = w + size_t(r) * w_row_bytes;
      int64_t t = t0;
      if (p.dot4 != nullptr) {
        float out[4];
        for (; t + 4 <= t1; t += 4) {
          p.dot4(wr, act + size_t(t) * p.act_row_bytes, p.act_row_bytes, n_cols, out);
          for (int j = 0; j < 4; ++j) y[(t + j) * y_stride + r] = out[j];
        }
      }
      for (; t < t1; ++t) y[t * y_stride + r] = p.dot(wr, act + size_t(t) * p.act_row_bytes, n_cols);
    }
  }
}

// How one weight (stack) is multiplied: packed groups, float rows, or dot products on the
// stored layout; and the activation format that goes with it.
struct MatPlan {
  enum class Kind { packed, rows, dots } kind = Kind::dots;
  const tdm_weight* w = nullptr;
  const PackedOps* po = nullptr;  // packed
  PackedView pv;  // packed; rows and dots: the float weights' copy on huge pages, if any (row_copy_ops)
  std::shared_ptr<const PackedWeight> hold;
  RowsFn rows = nullptr;  // rows
  RoundFn round = nullptr;
  DotPlan dp{};  // dots
  size_t act_row_bytes = 0;

  // True when activations converted for `o` can be used as they are for this plan.
  bool same_activations(const MatPlan& o) const {
    if (kind != o.kind || act_row_bytes != o.act_row_bytes) return false;
    if (kind == Kind::packed) return po->quantize_act == o.po->quantize_act;
    if (kind == Kind::rows) return round == o.round;
    return dp.act_type == o.dp.act_type;
  }
};

// The packed copy of matrix stack w for ops under the context's policy, or an empty view.
PackedView packed_view(CpuContext& c, const tdm_weight& w, const PackedOps& ops, int slot, MatPlan* plan) {
  if (c.pack == PackPolicy::always) {
    const size_t mb = packed_matrix_bytes(w, ops);
    uint8_t* dst = c.packed_tmp[slot].get(mb * size_t(w.n_mats));
    for (int64_t m = 0; m < w.n_mats; ++m) pack_matrix(w, m, ops, dst + size_t(m) * mb, *c.pool);
    return PackedView{dst, mb, ops.group_bytes(w.n_cols)};
  }
  auto it = c.packed.find(w.data);
  if (it != c.packed.end()) {
    if (it->second->matches(w, ops)) {
      plan->hold = it->second;
      return it->second->view();
    }
    c.packed.erase(it);
  }
  if (c.unpackable.count(w.data) != 0) return PackedView{};
  std::shared_ptr<const PackedWeight> p = shared_packed_weight(w, ops, *c.pool);
  if (!p) {
    c.unpackable.insert(w.data);
    return PackedView{};
  }
  c.packed[w.data] = p;
  plan->hold = p;
  return p->view();
}

// Float weights (f32, f16, bf16) keep their stored layout, but a matmul of one token streams
// every row once: from a file mapping's 4 KiB pages that is a TLB miss per page, dear under a
// VM's nested paging. So they get the packed weights' treatment with an identity "packing":
// a copy on 2 MiB pages that replaces the mapped pages (packed_weights.h), rows as stored.
template <GgmlType T>
size_t row_copy_group_bytes(int64_t n_cols) {
  return size_t(kPackRows) * row_bytes(*type_traits(uint32_t(T)), uint64_t(n_cols));
}
template <GgmlType T>
void row_copy_group(const uint8_t* src, size_t rb, int64_t n_rows, int64_t n_cols, uint8_t* dst) {
  std::memcpy(dst, src, size_t(n_rows) * rb);
  std::memset(dst + size_t(n_rows) * rb, 0, row_copy_group_bytes<T>(n_cols) - size_t(n_rows) * rb);
}
template <GgmlType T>
constexpr PackedOps kRowCopy{row_copy_group_bytes<T>, row_copy_group<T>, nullptr, nullptr, nullptr};

const PackedOps* row_copy_ops(const tdm_weight& w) {
  // Only tight rows: the copy keeps the file's row stride, which the ops derive from n_cols.
  if (w.type >= uint32_t(kNumTypes) || w.row_bytes != row_bytes(*type_traits(w.type), uint64_t(w.n_cols))) return nullptr;
  switch (GgmlType(w.type)) {
    case GgmlType::F32: return &kRowCopy<GgmlType::F32>;
    case GgmlType::F16: return &kRowCopy<GgmlType::F16>;
    case GgmlType::BF16: return &kRowCopy<GgmlType::BF16>;
    default: return nullptr;
  }
}

// experts: the matrices of moe_ffn (routed experts), which may have their own row kernels.
MatPlan mat_plan(CpuContext& c, const tdm_weight& w, int slot, bool experts = false) {
  MatPlan p;
  p.w = &w;
  const Kernels& k = *c.k;
  if (w.type < uint32_t(kNumTypes) && k.packed[w.type].gemm != nullptr) {
    const PackedOps& ops = k.packed[w.type];
    p.pv = packed_view(c, w, ops, slot, &p);
    if (p.pv.data != nullptr) {
      p.kind = MatPlan::Kind::packed;
      p.po = &ops;
      p.act_row_bytes = ops.act_bytes(w.n_cols);
      return p;
    }
  }
  if (w.type < uint32_t(kNumTypes) && k.rows[w.type] != nullptr) {
    p.kind = MatPlan::Kind::rows;
    p.rows = experts && k.expert_rows[w.type] != nullptr ? k.expert_rows[w.type] : k.rows[w.type];
    p.round = k.round[w.type];
    p.act_row_bytes = size_t(w.n_cols) * sizeof(float);
    if (const PackedOps* copy = row_copy_ops(w)) p.pv = packed_view(c, w, *copy, slot, &p);
    return p;
  }
  p.kind = MatPlan::Kind::dots;
  p.dp = dot_plan(k, w.type, w.n_cols);
  p.act_row_bytes = p.dp.act_row_bytes;
  if (const PackedOps* copy = row_copy_ops(w)) p.pv = packed_view(c, w, *copy, slot, &p);
  return p;
}

// Converts n_tokens rows of x (n_cols floats each, x_stride apart) for plan p into buf;
// returns the converted rows (act_row_bytes apart). f32 rows that need no conversion are
// returned in place when they are contiguous.
const uint8_t* prepare_act(CpuContext& c, const MatPlan& p, const float* x, int64_t n_tokens, int64_t x_stride, Scratch& buf) {
  const int64_t n = p.w->n_cols;
  const double work = double(n_tokens) * double(n) * 4;
  switch (p.kind) {
    case MatPlan::Kind::packed: {
      uint8_t* out = buf.get(p.act_row_bytes * size_t(n_tokens));
      c.pool->run(n_tokens, [&](int64_t t, int) { p.po->quantize_act(x + t * x_stride, n, out + size_t(t) * p.act_row_bytes); }, work);
      return out;
    }
    case MatPlan::Kind::rows: {
      if (p.round == nullptr && x_stride == n) return reinterpret_cast<const uint8_t*>(x);
      float* out = buf.as<float>(size_t(n_tokens * n));
      c.pool->run(n_tokens, [&](int64_t t, int) {
        if (p.round != nullptr) p.round(x + t * x_stride, out + t * n, n);
        else std::memcpy(out + t * n, x + t * x_stride, size_t(n) * sizeof(float));
      }, work);
      return reinterpret_cast<const uint8_t*>(out);
    }
    case MatPlan::Kind::dots:
      break;
  }
  if (p.dp.convert == nullptr && x_stride == n) return reinterpret_cast<const uint8_t*>(x);
  uint8_t* out = buf.get(p.act_row_bytes * size_t(n_tokens));
  c.pool->run(n_tokens, [&](int64_t t, int) {
    if (p.dp.convert != nullptr) p.dp.convert(x + t * x_stride, out + size_t(t) * p.act_row_bytes, n);
    else std::memcpy(out + size_t(t) * p.act_row_bytes, x + t * x_stride, size_t(n) * sizeof(float));
  }, work);
  return out;
}

// y[t * y_stride + r] for rows [r0, r1) of matrix m (r0 a multiple of kRowBlock) and n_tokens
// converted activation rows.
void compute_rows(const MatPlan& p, int64_t m, const uint8_t* act, int64_t n_tokens, int64_t r0, int64_t r1, float* y,
                  int64_t y_stride) {
  const tdm_weight& w = *p.w;
  switch (p.kind) {
    case MatPlan::Kind::packed: {
      const int64_t g0 = r0 / kPackRows, g1 = (r1 + kPackRows - 1) / kPackRows;
      p.po->gemm(p.pv.data + size_t(m) * p.pv.mat_bytes + size_t(g0) * p.pv.group_bytes, p.pv.group_bytes, g1 - g0, r1 - r0,
                 w.n_cols, act, p.act_row_bytes, n_tokens, y + r0, y_stride);
      return;
    }
    case MatPlan::Kind::rows:
      p.rows(p.pv.data != nullptr ? p.pv.data + size_t(m) * p.pv.mat_bytes : static_cast<const uint8_t*>(w.data) + size_t(m) * w.mat_bytes,
             w.row_bytes, r0, r1, w.n_cols,
             reinterpret_cast<const float*>(act), int64_t(p.act_row_bytes / sizeof(float)), n_tokens, y, y_stride);
      return;
    case MatPlan::Kind::dots:
      dot_rows(p.dp, p.pv.data != nullptr ? p.pv.data + size_t(m) * p.pv.mat_bytes : static_cast<const uint8_t*>(w.data) + size_t(m) * w.mat_bytes,
               w.row_bytes, w.n_cols, act, n_tokens, r0, r1, y, y_stride);
      return;
  }
}

// Row blocks per task with many tokens: enough tasks to balance the pool, few enough that
// each task streams a contiguous stretch of weights (the prefetchers ramp up once per task)
// and keeps its token tile's activations hot across its blocks.
int64_t blocks_per_task(int64_t n_blocks, int n_threads) {
  const int64_t want_tasks = int64_t(n_threads) * 8;
  return std::clamp<int64_t>(n_blocks / std::max<int64_t>(want_tasks, 1), 1, 4);
}

// Up to this many tokens a matmul is one token tile of every kernel: each weight is read
// once, so a task's length only matters to the prefetchers and to the pool's balance.
constexpr int64_t kStreamTokens = 6;

// Splits segments of seg_blocks[i] row blocks into tasks, handed out in order by the pool.
// Task sizes follow the work left (guided scheduling): long contiguous stretches first, then
// shrinking to one block, so that the threads finish within about a block of each other
// instead of waiting at the op's end for a long last task. With many tokens a task also stays
// within blocks_per_task, so its weights stay hot across the token tiles.
void plan_tasks(const std::vector<int64_t>& seg_blocks, int64_t n_tokens, int n_threads, std::vector<RowTask>& out) {
  out.clear();
  int64_t left = 0;
  for (int64_t b : seg_blocks) left += b;
  const int64_t cap = n_tokens <= kStreamTokens ? left : blocks_per_task(left, n_threads);
  const int64_t share = 2 * int64_t(n_threads);
  for (size_t seg = 0; seg < seg_blocks.size(); ++seg) {
    for (int64_t b = 0; b < seg_blocks[seg];) {
      const int64_t size = std::min({std::clamp<int64_t>((left + share - 1) / share, 1, cap), seg_blocks[seg] - b});
      out.push_back(RowTask{int64_t(seg), b, b + size});
      b += size;
      left -= size;
    }
  }
}

// ---- device

const char* cpu_device_name(tdm_backend_ctx* c) { return cx(c).name.c_str(); }
uint32_t cpu_caps(tdm_backend_ctx*) { return TDM_CAP_HOST_MEMORY; }

tdm_status cpu_memory(tdm_backend_ctx* c, uint64_t* free_bytes, uint64_t* total_bytes) {
  return guard(c, [&](CpuContext&) {
    uint64_t total = 0, avail = 0;
    std::ifstream f("/proc/meminfo");
    std::string key;
    uint64_t value;
    std::string unit;
    while (f >> key >> value >> unit) {
      if (key == "MemTotal:") total = value * 1024;
      if (key == "MemAvailable:") avail = value * 1024;
    }
    if (free_bytes) *free_bytes = avail;
    if (total_bytes) *total_bytes = total;
  });
}

const char* cpu_last_error(tdm_backend_ctx* c) { return cx(c).last_error.c_str(); }
void cpu_destroy(tdm_backend_ctx* c) { delete &cx(c); }

// ---- memory

tdm_status cpu_alloc(tdm_backend_ctx* c, size_t bytes, void** out) {
  return guard(c, [&](CpuContext& ctx) {
    *out = nullptr;
    if (bytes >= kHugePage) {
      // Large buffers (the KV pool) are read in scattered 4 KiB runs: 2 MiB pages spare a page
      // walk per run.
      size_t len = 0;
      uint8_t* p = map_huge(bytes, &len);
      std::lock_guard<std::mutex> lock(ctx.huge_mu);
      ctx.huge.emplace(p, len);
      *out = p;
      return;
    }
    size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) throw Error(code::oom, "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
    *out = p;
  });
}
void cpu_free(tdm_backend_ctx* c, void* p) {
  if (p == nullptr) return;
  CpuContext& ctx = cx(c);
  {
    std::lock_guard<std::mutex> lock(ctx.huge_mu);
    const auto it = ctx.huge.find(p);
    if (it != ctx.huge.end()) {
      unmap_huge(p, it->second);
      ctx.huge.erase(it);
      return;
    }
  }
  std::free(p);
}

tdm_status cpu_copy(tdm_backend_ctx* c, void* dst, const void* src, size_t bytes, tdm_stream*) {
  return guard(c, [&](CpuContext&) {
    if (bytes == 0) return;
    if (dst == nullptr || src == nullptr) bad("copy with a null pointer");
    std::memmove(dst, src, bytes);
  });
}

tdm_status cpu_synchronize(tdm_backend_ctx*) { return TDM_STATUS_OK; }

// ---- ops

tdm_status cpu_matmul(tdm_backend_ctx* c, const tdm_weight* w, int64_t m, const float* x, int64_t n_tokens, float* y,
                      tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    check_weight(w);
    if (m < 0 || m >= w->n_mats) bad("matmul matrix index out of range");
    if (n_tokens <= 0) return;
    if (x == nullptr || y == nullptr) bad("matmul with a null pointer");
    const MatPlan p = mat_plan(ctx, *w, 0);
    const uint8_t* act = prepare_act(ctx, p, x, n_tokens, w->n_cols, ctx.act);
    ctx.seg_blocks.assign(1, (w->n_rows + kRowBlock - 1) / kRowBlock);
    plan_tasks(ctx.seg_blocks, n_tokens, ctx.pool->size(), ctx.tasks);
    ctx.pool->run(int64_t(ctx.tasks.size()), [&](int64_t task, int) {
      const RowTask& tk = ctx.tasks[size_t(task)];
      compute_rows(p, m, act, n_tokens, tk.b0 * kRowBlock, std::min(w->n_rows, tk.b1 * kRowBlock), y, w->n_rows);
    }, double(w->n_rows) * double(w->n_cols) * double(n_tokens));
  });
}

// Packs w now (see packed_view) when its type has packed kernels and it lies in a file mapping.
tdm_status cpu_prepare_weight(tdm_backend_ctx* c, const tdm_weight* w) {
  return guard(c, [&](CpuContext& ctx) {
    check_weight(w);
    if (ctx.pack == PackPolicy::mapped) (void)mat_plan(ctx, *w, 0);
  });
}

tdm_status cpu_get_rows(tdm_backend_ctx* c, const tdm_weight* w, const int32_t* ids, int64_t n_ids, float* y,
                        tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    check_weight(w);
    if (n_ids <= 0) return;
    if (ids == nullptr || y == nullptr) bad("get_rows with a null pointer");
    ToFloatFn to = w->type < uint32_t(kNumTypes) ? ctx.k->to_float[w->type] : nullptr;
    if (to == nullptr) throw Error(code::unsupported, std::string("reading rows of ") + traits_of(w->type).name + " is not supported");
    for (int64_t i = 0; i < n_ids; ++i)
      if (ids[i] < 0 || ids[i] >= w->n_rows)
        bad("row id " + std::to_string(ids[i]) + " is outside [0, " + std::to_string(w->n_rows) + ")");
    const uint8_t* base = static_cast<const uint8_t*>(w->data);
    ctx.pool->run(n_ids, [&](int64_t i, int) { to(base + size_t(ids[i]) * w->row_bytes, y + i * w->n_cols, w->n_cols); },
                  double(n_ids) * double(w->n_cols));
  });
}

tdm_status cpu_rms_norm(tdm_backend_ctx* c, const float* x, const float* w, float* y, int64_t n_rows, int64_t n_cols,
                        float eps, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    if (n_rows <= 0 || n_cols <= 0) return;
    if (x == nullptr || y == nullptr) bad("rms_norm with a null pointer");
    // Sum of squares in double and the scale in float, as ggml computes it, so results track llama.cpp.
    auto row = [&](int64_t r) {
      const float* xr = x + r * n_cols;
      float* yr = y + r * n_cols;
      double sum = 0.0;
      for (int64_t i = 0; i < n_cols; ++i) sum += double(xr[i]) * double(xr[i]);
      const float mean = float(sum / double(n_cols));
      const float scale = 1.0f / std::sqrt(mean + eps);
      if (w != nullptr) {
        for (int64_t i = 0; i < n_cols; ++i) yr[i] = (xr[i] * scale) * w[i];
      } else {
        for (int64_t i = 0; i < n_cols; ++i) yr[i] = xr[i] * scale;
      }
    };
    if (n_rows * n_cols < 16384) {
      for (int64_t r = 0; r < n_rows; ++r) row(r);
    } else {
      ctx.pool->run(n_rows, [&](int64_t r, int) { row(r); }, double(n_rows) * double(n_cols));
    }
  });
}

tdm_status cpu_rope(tdm_backend_ctx* c, float* x, const int32_t* pos, int64_t n_tokens, int32_t n_heads,
                    int32_t head_dim, int32_t rope_dim, const tdm_rope_params* p, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    if (n_tokens <= 0) return;
    if (x == nullptr || pos == nullptr || p == nullptr) bad("rope with a null pointer");
    if (rope_dim <= 0 || rope_dim > head_dim || rope_dim % 2 != 0) bad("rope_dim must be even and at most head_dim");
    if (p->mode != TDM_ROPE_NORM && p->mode != TDM_ROPE_NEOX) throw Error(code::unsupported, "unknown rope mode");
    if (p->ext_factor != 0.0f && p->n_ctx_orig <= 0) bad("YaRN rope needs n_ctx_orig > 0");
    const int32_t mode = p->mode;
    const float freq_scale = p->freq_scale, ext_factor = p->ext_factor;
    const float theta_scale = std::pow(p->freq_base, -2.0f / float(rope_dim));
    const tdm_rope_yarn yarn = tdm_rope_yarn_consts(p, rope_dim);
    const int64_t row_len = int64_t(n_heads) * head_dim;
    const int32_t half = rope_dim / 2;
    ctx.pool->run(n_tokens, [&](int64_t t, int th) {
      float* cache = grow(ctx.thread_f32[size_t(th)], size_t(rope_dim));
      // The angle advances by repeated float multiplication, as ggml's rope cache does.
      float theta = float(pos[t]);
      for (int32_t i0 = 0; i0 < rope_dim; i0 += 2) {
        float th_i = freq_scale * theta;
        if (ext_factor != 0.0f) {  // YaRN (ggml's rope_yarn): fast pairs keep the unscaled angle, slow ones are scaled
          const float y = (float(i0 / 2) - yarn.low) / std::max(0.001f, yarn.high - yarn.low);
          const float mix = (1.0f - std::min(1.0f, std::max(0.0f, y))) * ext_factor;
          th_i = th_i * (1.0f - mix) + theta * mix;
        }
        cache[i0] = std::cos(th_i) * yarn.mscale;
        cache[i0 + 1] = std::sin(th_i) * yarn.mscale;
        theta *= theta_scale;
      }
      for (int32_t h = 0; h < n_heads; ++h) {
        float* xh = x + t * row_len + int64_t(h) * head_dim;
        for (int32_t i0 = 0; i0 < rope_dim; i0 += 2) {
          const int32_t a = mode == TDM_ROPE_NEOX ? i0 / 2 : i0;
          const int32_t b = mode == TDM_ROPE_NEOX ? i0 / 2 + half : i0 + 1;
          const float x0 = xh[a], x1 = xh[b];
          xh[a] = x0 * cache[i0] - x1 * cache[i0 + 1];
          xh[b] = x0 * cache[i0 + 1] + x1 * cache[i0];
        }
      }
    }, double(n_tokens) * double(row_len + 8 * rope_dim));
  });
}

template <typename Op>
tdm_status binary(tdm_backend_ctx* c, const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols,
                  int64_t b_row_stride, Op op) {
  return guard(c, [&](CpuContext& ctx) {
    if (n_rows <= 0 || n_cols <= 0) return;
    if (a == nullptr || b == nullptr || y == nullptr) bad("elementwise op with a null pointer");
    auto row = [&](int64_t r) {
      const float* ar = a + r * n_cols;
      const float* br = b + r * b_row_stride;
      float* yr = y + r * n_cols;
      for (int64_t i = 0; i < n_cols; ++i) yr[i] = op(ar[i], br[i]);
    };
    if (n_rows * n_cols < 65536) {
      for (int64_t r = 0; r < n_rows; ++r) row(r);
    } else {
      ctx.pool->run(n_rows, [&](int64_t r, int) { row(r); }, double(n_rows) * double(n_cols));
    }
  });
}

tdm_status cpu_add(tdm_backend_ctx* c, const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols,
                   int64_t b_row_stride, tdm_stream*) {
  return binary(c, a, b, y, n_rows, n_cols, b_row_stride, [](float p, float q) { return p + q; });
}

tdm_status cpu_mul(tdm_backend_ctx* c, const float* a, const float* b, float* y, int64_t n_rows, int64_t n_cols,
                   int64_t b_row_stride, tdm_stream*) {
  return binary(c, a, b, y, n_rows, n_cols, b_row_stride, [](float p, float q) { return p * q; });
}

// A gated activation by the kernel table's `fn` (swiglu_f32 or geglu_f32), in chunks over the pool.
tdm_status gated(tdm_backend_ctx* c, const float* gate, const float* up, float* y, int64_t n,
                 void (*Kernels::*fn)(const float*, const float*, float*, int64_t), const char* name) {
  return guard(c, [&](CpuContext& ctx) {
    if (n <= 0) return;
    if (gate == nullptr || up == nullptr || y == nullptr) bad(std::string(name) + " with a null pointer");
    constexpr int64_t kChunk = 8192;
    const int64_t n_chunks = (n + kChunk - 1) / kChunk;
    ctx.pool->run(n_chunks, [&](int64_t i, int) {
      const int64_t i0 = i * kChunk, len = std::min(kChunk, n - i0);
      (ctx.k->*fn)(gate + i0, up + i0, y + i0, len);
    }, double(n) * 8);
  });
}

tdm_status cpu_swiglu(tdm_backend_ctx* c, const float* gate, const float* up, float* y, int64_t n, tdm_stream*) {
  return gated(c, gate, up, y, n, &Kernels::swiglu_f32, "swiglu");
}

tdm_status cpu_geglu(tdm_backend_ctx* c, const float* gate, const float* up, float* y, int64_t n, tdm_stream*) {
  return gated(c, gate, up, y, n, &Kernels::geglu_f32, "geglu");
}

tdm_status cpu_scale(tdm_backend_ctx* c, const float* x, float* y, int64_t n, float scale, tdm_stream*) {
  return guard(c, [&](CpuContext&) {
    if (n <= 0) return;
    if (x == nullptr || y == nullptr) bad("scale with a null pointer");
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale;
  });
}

tdm_status cpu_softcap(tdm_backend_ctx* c, const float* x, float* y, int64_t n, float cap, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    if (n <= 0) return;
    if (x == nullptr || y == nullptr) bad("softcap with a null pointer");
    if (!(cap > 0.0f) || std::isinf(cap)) bad("softcap's cap must be a positive number");
    const float inv = 1.0f / cap;
    // A row of logits is one call: split it over the threads.
    constexpr int64_t kChunk = 4096;
    ctx.pool->run((n + kChunk - 1) / kChunk, [&](int64_t i, int) {
      const int64_t i0 = i * kChunk;
      ctx.k->scaled_tanh_f32(x + i0, y + i0, std::min(kChunk, n - i0), inv, cap);
    }, double(n) * 4);
  });
}

tdm_status cpu_scale_rows(tdm_backend_ctx* c, float* x, const float* scale, int64_t n_rows, int64_t n_cols, int32_t fn,
                          tdm_stream*) {
  return guard(c, [&](CpuContext&) {
    if (n_rows <= 0 || n_cols <= 0) return;
    if (x == nullptr || scale == nullptr) bad("scale_rows with a null pointer");
    if (fn != TDM_ROW_FN_IDENTITY && fn != TDM_ROW_FN_SIGMOID) throw Error(code::unsupported, "unknown row function");
    for (int64_t r = 0; r < n_rows; ++r) {
      const float s = fn == TDM_ROW_FN_SIGMOID ? 1.0f / (1.0f + std::exp(-scale[r])) : scale[r];
      float* xr = x + r * n_cols;
      for (int64_t i = 0; i < n_cols; ++i) xr[i] *= s;
    }
  });
}

// Bytes of one K or V row of head_dim elements in the cache's type.
AttnKv attn_kv_of(uint32_t type) {
  return type == uint32_t(GgmlType::F32) ? AttnKv::f32 : type == uint32_t(GgmlType::F16) ? AttnKv::f16 : AttnKv::q8_0;
}

void check_kv(const tdm_kv_layer* kv) {
  if (kv == nullptr || kv->k == nullptr || kv->v == nullptr) bad("KV view is null");
  kv_row_bytes(kv->type, kv->head_dim_k);
  kv_row_bytes(kv->type, kv->head_dim_v);
  if (kv->block_tokens <= 0 || kv->n_kv_heads <= 0 || kv->head_dim_k <= 0 || kv->head_dim_v <= 0 || kv->n_blocks <= 0)
    bad("KV view has an empty dimension");
}

// `first_pos`: the first position the op touches; table entries wholly before it are not
// read (a sliding layer's blocks behind the window may be freed, -1).
void check_seq(const tdm_kv_layer& kv, const tdm_attn_seq& s, int64_t first_pos) {
  if (s.n_tokens <= 0 || s.start_pos < 0 || s.first_row < 0) bad("attention sequence with a bad range");
  const int64_t end = int64_t(s.start_pos) + s.n_tokens;
  const int64_t needed = (end + kv.block_tokens - 1) / kv.block_tokens;
  if (s.block_table == nullptr || s.n_blocks < needed)
    bad("block table of " + std::to_string(s.n_blocks) + " blocks does not cover " + std::to_string(end) + " positions");
  for (int64_t i = std::max<int64_t>(0, first_pos) / kv.block_tokens; i < needed; ++i)
    if (s.block_table[i] < 0 || s.block_table[i] >= kv.n_blocks)
      bad("KV block id " + std::to_string(s.block_table[i]) + " is outside [0, " + std::to_string(kv.n_blocks) + ")");
}

// Address of element 0 of (position, kv head) in K or V of a layer view.
inline uint8_t* kv_at(const tdm_kv_layer& kv, void* base, const int32_t* table, int64_t pos, int32_t head,
                      size_t row_bytes) {
  const int64_t block = table[pos / kv.block_tokens];
  const int64_t off = pos % kv.block_tokens;
  return static_cast<uint8_t*>(base) + size_t(block) * kv.block_bytes +
         (size_t(head) * size_t(kv.block_tokens) + size_t(off)) * row_bytes;
}

tdm_status cpu_kv_store(tdm_backend_ctx* c, const tdm_kv_layer* kv, const float* k, const float* v,
                        const tdm_attn_seq* seqs, int32_t n_seqs, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    check_kv(kv);
    if (n_seqs <= 0) return;
    if (k == nullptr || v == nullptr || seqs == nullptr) bad("kv_store with a null pointer");
    for (int32_t i = 0; i < n_seqs; ++i) check_seq(*kv, seqs[i], seqs[i].start_pos);
    const size_t kb = kv_row_bytes(kv->type, kv->head_dim_k), vb = kv_row_bytes(kv->type, kv->head_dim_v);
    const int64_t k_row = int64_t(kv->n_kv_heads) * kv->head_dim_k, v_row = int64_t(kv->n_kv_heads) * kv->head_dim_v;
    FromFloatFn conv = ctx.k->from_float[kv->type];
    for (int32_t si = 0; si < n_seqs; ++si) {
      const tdm_attn_seq& s = seqs[si];
      ctx.pool->run(s.n_tokens, [&](int64_t i, int) {
        const int64_t pos = s.start_pos + i, row = s.first_row + i;
        for (int32_t h = 0; h < kv->n_kv_heads; ++h) {
          conv(k + row * k_row + int64_t(h) * kv->head_dim_k, kv_at(*kv, kv->k, s.block_table, pos, h, kb),
               kv->head_dim_k);
          conv(v + row * v_row + int64_t(h) * kv->head_dim_v, kv_at(*kv, kv->v, s.block_table, pos, h, vb),
               kv->head_dim_v);
        }
      }, double(s.n_tokens) * double(k_row + v_row));
    }
  });
}

// Query rows per attention task (tokens x heads of one KV head): enough to amortize widening
// each K/V tile to f32, few enough that a long prompt splits into many tasks.
constexpr int64_t kAttnRowsPerTask = 256;

tdm_status cpu_attention(tdm_backend_ctx* c, const tdm_kv_layer* kv, const float* q, const tdm_attn_seq* seqs,
                         int32_t n_seqs, int32_t n_heads, float scale, float softcap, const float* sinks, int32_t window,
                         float* out, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    check_kv(kv);
    if (n_seqs <= 0) return;
    if (q == nullptr || out == nullptr || seqs == nullptr) bad("attention with a null pointer");
    if (window < 0) bad("attention window must not be negative");
    if (!(softcap >= 0.0f) || std::isinf(softcap)) bad("attention softcap must be 0 or a positive number");
    if (n_heads <= 0 || n_heads % kv->n_kv_heads != 0) bad("n_heads must be a multiple of n_kv_heads");
    for (int32_t i = 0; i < n_seqs; ++i) check_seq(*kv, seqs[i], window > 0 ? int64_t(seqs[i].start_pos) - window + 1 : 0);
    const size_t kb = kv_row_bytes(kv->type, kv->head_dim_k), vb = kv_row_bytes(kv->type, kv->head_dim_v);
    const int32_t group = n_heads / kv->n_kv_heads;
    const int32_t dk = kv->head_dim_k, dv = kv->head_dim_v;
    const int64_t q_row = int64_t(n_heads) * dk, o_row = int64_t(n_heads) * dv;
    // A sliding window gives each token its own first position: one token per group, so that
    // a group's rows all start where their window does (prefill then sums as decode does).
    const int64_t tok_per_task = window > 0 ? 1 : std::max<int64_t>(1, kAttnRowsPerTask / group);

    // Groups: (sequence, KV head, run of tokens); the group's query heads share each K/V read.
    // A group whose context passes kAttnSegment positions splits into one task per segment
    // (so that one long sequence still keeps every thread busy); its rows' segment states are
    // folded in position order afterwards. A one-segment group writes straight into out.
    struct Group {
      int32_t seq, kvh, t0, n, n_seg;
      int64_t lo;     // first position any row sees (> 0 only under a sliding window)
      int64_t rows;   // n * group
      int64_t state;  // multi-segment groups: first float of their segments' weighted sums in ctx.attn_acc
      int64_t stats;  // first entry of their segments' row maxima and sums in ctx.attn_max / attn_sum
    };
    struct Task {
      int32_t group, seg;
    };
    std::vector<Group> groups;
    std::vector<Task> tasks;
    double work = 0;
    int64_t n_state = 0, n_stats = 0;
    for (int32_t i = 0; i < n_seqs; ++i) {
      for (int32_t h = 0; h < kv->n_kv_heads; ++h)
        for (int32_t t0 = 0; t0 < seqs[i].n_tokens; t0 += int32_t(tok_per_task)) {
          const int32_t n = int32_t(std::min<int64_t>(tok_per_task, seqs[i].n_tokens - t0));
          const int64_t n_ctx = int64_t(seqs[i].start_pos) + t0 + n;
          const int64_t lo = window > 0 ? std::max<int64_t>(0, n_ctx - window) : 0;
          const int32_t n_seg = int32_t((n_ctx - lo + kAttnSegment - 1) / kAttnSegment);
          const int64_t rows = int64_t(n) * group;
          groups.push_back(Group{i, h, t0, n, n_seg, lo, rows, n_seg > 1 ? n_state : -1, n_stats});
          if (n_seg > 1) n_state += rows * dv * n_seg;
          n_stats += rows * n_seg;
          for (int32_t g = 0; g < n_seg; ++g) tasks.push_back(Task{int32_t(groups.size() - 1), g});
        }
      const double seen = window > 0 ? std::min<double>(window, seqs[i].start_pos + seqs[i].n_tokens) : seqs[i].start_pos + seqs[i].n_tokens;
      work += double(seqs[i].n_tokens) * seen * double(n_heads) * double(dk + dv);
    }
    if (ctx.attn_acc.size() < size_t(n_state)) ctx.attn_acc.resize(size_t(n_state));
    if (ctx.attn_max.size() < size_t(n_stats)) {
      ctx.attn_max.resize(size_t(n_stats));
      ctx.attn_sum.resize(size_t(n_stats));
    }
    ctx.pool->run(int64_t(tasks.size()), [&](int64_t ti, int th) {
      const Task& tk = tasks[size_t(ti)];
      const Group& gr = groups[size_t(tk.group)];
      const tdm_attn_seq& s = seqs[gr.seq];
      const int64_t first_pos = int64_t(s.start_pos) + gr.t0, n_ctx = first_pos + gr.n;
      const int64_t pos_begin = gr.lo + int64_t(tk.seg) * kAttnSegment, pos_end = std::min(n_ctx, pos_begin + kAttnSegment);
      // The head's first row in each block this task reads (block ids from 0, as kernels index them).
      const int64_t n_blk = (pos_end + kv->block_tokens - 1) / kv->block_tokens;
      std::vector<const uint8_t*>& blocks = ctx.thread_blocks[size_t(th)];
      if (blocks.size() < size_t(2 * n_blk)) blocks.resize(size_t(2 * n_blk));
      for (int64_t b = pos_begin / kv->block_tokens; b < n_blk; ++b) {
        blocks[size_t(b)] = kv_at(*kv, kv->k, s.block_table, b * kv->block_tokens, gr.kvh, kb);
        blocks[size_t(n_blk + b)] = kv_at(*kv, kv->v, s.block_table, b * kv->block_tokens, gr.kvh, vb);
      }
      AttnTask a{};
      a.q = q + (int64_t(s.first_row) + gr.t0) * q_row + int64_t(gr.kvh) * group * dk;
      a.q_stride = q_row;
      if (gr.n_seg == 1) {
        a.out = out + (int64_t(s.first_row) + gr.t0) * o_row + int64_t(gr.kvh) * group * dv;
        a.out_stride = o_row;
      } else {
        a.out = ctx.attn_acc.data() + gr.state + int64_t(tk.seg) * gr.rows * dv;
        a.out_stride = int64_t(group) * dv;
      }
      a.n_tok = gr.n;
      a.group = group;
      a.dk = dk;
      a.dv = dv;
      a.first_pos = first_pos;
      a.pos_begin = pos_begin;
      a.pos_end = pos_end;
      a.k_blocks = blocks.data();
      a.v_blocks = blocks.data() + n_blk;
      a.block_tokens = kv->block_tokens;
      a.k_row_bytes = kb;
      a.v_row_bytes = vb;
      a.kv = attn_kv_of(kv->type);
      a.scale = softcap > 0.0f ? scale / softcap : scale;
      a.softcap = softcap;
      a.scratch = ctx.thread_scratch[size_t(th)]->as<float>(attn_scratch_floats(int64_t(gr.n) * group, dk, dv));
      a.row_max = ctx.attn_max.data() + gr.stats + int64_t(tk.seg) * gr.rows;
      a.row_sum = ctx.attn_sum.data() + gr.stats + int64_t(tk.seg) * gr.rows;
      ctx.k->attention(a);
    }, work);

    // Each row: its segments folded in position order, then divided by the sum of weights.
    ctx.pool->run(int64_t(groups.size()), [&](int64_t gi, int) {
      const Group& gr = groups[size_t(gi)];
      const tdm_attn_seq& s = seqs[gr.seq];
      for (int64_t r = 0; r < gr.rows; ++r) {
        float* o = out + (int64_t(s.first_row) + gr.t0 + r / group) * o_row + (int64_t(gr.kvh) * group + r % group) * dv;
        float m = ctx.attn_max[size_t(gr.stats + r)], sum = ctx.attn_sum[size_t(gr.stats + r)];
        if (gr.n_seg > 1) {
          std::copy_n(ctx.attn_acc.data() + gr.state + r * dv, dv, o);
          for (int32_t g = 1; g < gr.n_seg; ++g) {
            const int64_t at = gr.stats + int64_t(g) * gr.rows + r;
            attn_fold(&m, &sum, o, ctx.attn_max[size_t(at)], ctx.attn_sum[size_t(at)],
                      ctx.attn_acc.data() + gr.state + (int64_t(g) * gr.rows + r) * dv, dv);
          }
        }
        float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
        if (sinks != nullptr) {
          // The sink's logit joins the max and the sum, and brings no value.
          const float sk = sinks[int64_t(gr.kvh) * group + r % group];
          const float m2 = std::max(m, sk);
          const float keep = std::exp(m - m2);
          inv = keep / (sum * keep + std::exp(sk - m2));
        }
        for (int32_t e = 0; e < dv; ++e) o[e] *= inv;
      }
    }, double(n_stats) * double(dv));
  });
}

// ggml_soft_max of one row in place: exp(x - max) in float, summed in double, scaled by float(1/sum).
void ggml_soft_max_row(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t e = 0; e < n; ++e) mx = std::max(mx, x[e]);
  double sum = 0.0;
  for (int64_t e = 0; e < n; ++e) {
    x[e] = std::exp(x[e] - mx);
    sum += double(x[e]);
  }
  const float inv = float(1.0 / sum);
  for (int64_t e = 0; e < n; ++e) x[e] *= inv;
}

tdm_status cpu_router(tdm_backend_ctx* c, const float* logits, int64_t n_tokens, int32_t n_experts, int32_t n_used,
                      int32_t gating, int32_t norm, float scale, int32_t* ids, float* weights, tdm_stream*) {
  return guard(c, [&](CpuContext&) {
    if (n_tokens <= 0) return;
    if (logits == nullptr || ids == nullptr || weights == nullptr) bad("router with a null pointer");
    if (n_experts <= 0 || n_used <= 0 || n_used > n_experts) bad("router needs 0 < n_used <= n_experts");
    if (gating != TDM_GATING_SOFTMAX && gating != TDM_GATING_SIGMOID && gating != TDM_GATING_SOFTMAX_WEIGHT)
      throw Error(code::unsupported, "unknown gating function");
    std::vector<float> p(static_cast<size_t>(n_experts));
    std::vector<int32_t> order(static_cast<size_t>(n_experts));
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* l = logits + t * n_experts;
      if (gating == TDM_GATING_SOFTMAX) {
        std::copy_n(l, n_experts, p.data());
        ggml_soft_max_row(p.data(), n_experts);
      } else if (gating == TDM_GATING_SIGMOID) {
        for (int32_t e = 0; e < n_experts; ++e) p[size_t(e)] = 1.0f / (1.0f + std::exp(-l[e]));
      } else {
        std::copy_n(l, n_experts, p.data());
      }
      // ggml_top_k on the CPU: partial_sort of the indices by descending value, then the
      // first two swapped. Same algorithm and input order give the same ties as llama.cpp.
      std::iota(order.begin(), order.end(), 0);
      const float* pd = p.data();
      std::partial_sort(order.begin(), order.begin() + n_used, order.end(),
                        [pd](int32_t a, int32_t b) { return pd[a] > pd[b]; });
      if (n_used > 1) std::swap(order[0], order[1]);
      int32_t* it = ids + t * n_used;
      float* wt = weights + t * n_used;
      for (int32_t j = 0; j < n_used; ++j) {
        it[j] = order[size_t(j)];
        wt[j] = p[size_t(order[size_t(j)])];
      }
      if (gating == TDM_GATING_SOFTMAX_WEIGHT) ggml_soft_max_row(wt, n_used);
      if (norm) {
        double sum = 0.0;
        for (int32_t j = 0; j < n_used; ++j) sum += double(wt[j]);
        // Clamped at the smallest normal fp16, as llama.cpp does, so a sum of zeros cannot divide to inf.
        const float s = std::max(float(sum), 6.103515625e-5f);
        for (int32_t j = 0; j < n_used; ++j) wt[j] /= s;
      }
      if (scale != 1.0f)
        for (int32_t j = 0; j < n_used; ++j) wt[j] *= scale;
    }
  });
}

// One choice's term of an expert combination: y = o * w for the first choice, else y + o * w with
// the product rounded before the add (llama.cpp's ggml_mul then ggml_add), never fused.
void add_weighted_row(float* y, const float* o, float w, bool first, int64_t n) {
  if (first) {
    for (int64_t i = 0; i < n; ++i) y[i] = o[i] * w;
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float prod = o[i] * w;
    y[i] = y[i] + prod;
  }
}

// A per-expert bias stack of moe_ffn (tdm_moe_opts): expert m's row, or null when there is none.
const float* bias_row(const tdm_weight& b, int64_t m) {
  return b.data == nullptr ? nullptr
                           : reinterpret_cast<const float*>(static_cast<const uint8_t*>(b.data) + size_t(m) * b.mat_bytes);
}

void check_bias(const tdm_weight& b, int64_t n_cols, int64_t n_mats, const char* what) {
  if (b.data == nullptr) return;
  if (b.type != uint32_t(GgmlType::F32) || b.n_cols != n_cols || b.n_mats < n_mats || b.mat_bytes < size_t(n_cols) * sizeof(float))
    bad(std::string("moe_ffn: the ") + what + " bias must be an f32 stack of " + std::to_string(n_mats) + " rows of " +
        std::to_string(n_cols));
}

// ggml_swiglu_oai: the gate clamped above and the up clamped both ways at limit, then
// g * sigmoid(alpha g) * (u + 1).
void swiglu_oai_f32(const float* g, const float* u, float* y, int64_t n, float alpha, float limit) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = std::min(g[i], limit);
    const float v = std::clamp(u[i], -limit, limit);
    y[i] = x / (1.0f + std::exp(alpha * (-x))) * (v + 1.0f);
  }
}

tdm_status cpu_moe_ffn(tdm_backend_ctx* c, const float* x, int64_t n_tokens, const int32_t* ids, const float* weights,
                       int32_t n_used, const tdm_weight* gate, const tdm_weight* up, const tdm_weight* down,
                       const tdm_moe_opts* opts, float* y, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    check_weight(gate);
    check_weight(up);
    check_weight(down);
    const tdm_moe_opts o = opts != nullptr ? *opts : tdm_moe_opts{};
    if (o.glu != TDM_GLU_SWIGLU && o.glu != TDM_GLU_SWIGLU_OAI) throw Error(code::unsupported, "unknown moe_ffn activation");
    check_bias(o.gate_bias, gate->n_rows, gate->n_mats, "gate");
    check_bias(o.up_bias, gate->n_rows, gate->n_mats, "up");
    check_bias(o.down_bias, down->n_rows, gate->n_mats, "down");
    if (n_tokens <= 0) return;
    if (x == nullptr || ids == nullptr || weights == nullptr || y == nullptr) bad("moe_ffn with a null pointer");
    const int64_t n_embd = gate->n_cols, n_ff = gate->n_rows, n_exp = gate->n_mats;
    if (up->n_cols != n_embd || up->n_rows != n_ff || up->n_mats != n_exp || down->n_cols != n_ff ||
        down->n_rows != n_embd || down->n_mats != n_exp)
      bad("expert gate/up/down shapes do not match");
    if (n_used <= 0) bad("moe_ffn needs n_used > 0");
    const int64_t n_slots = n_tokens * n_used;
    for (int64_t i = 0; i < n_slots; ++i)
      if (ids[i] < 0 || ids[i] >= n_exp) bad("expert id " + std::to_string(ids[i]) + " is outside [0, " + std::to_string(n_exp) + ")");

    // Slots grouped by expert, in expert order: slot i is (token i / n_used, choice i % n_used).
    std::vector<int64_t> count(static_cast<size_t>(n_exp) + 1, 0), slots(static_cast<size_t>(n_slots));
    for (int64_t i = 0; i < n_slots; ++i) ++count[size_t(ids[i]) + 1];
    for (int64_t e = 0; e < n_exp; ++e) count[size_t(e) + 1] += count[size_t(e)];
    {
      std::vector<int64_t> fill(count.begin(), count.end() - 1);
      for (int64_t i = 0; i < n_slots; ++i) slots[size_t(fill[size_t(ids[i])]++)] = i;
    }
    std::vector<int32_t> active;
    for (int64_t e = 0; e < n_exp; ++e)
      if (count[size_t(e) + 1] > count[size_t(e)]) active.push_back(int32_t(e));

    // Activations are converted once per token, then gathered in slot order so that each
    // expert's rows are contiguous (results do not change: the kernels are batch-invariant).
    const MatPlan pg = mat_plan(ctx, *gate, 0, true);
    const MatPlan pu = mat_plan(ctx, *up, 1, true);
    const MatPlan pd = mat_plan(ctx, *down, 2, true);
    uint8_t* gathered = ctx.moe_x.get((pg.act_row_bytes + pu.act_row_bytes) * size_t(n_slots));
    auto gather = [&](const MatPlan& p, Scratch& tokens_buf, uint8_t* out) {
      const uint8_t* rows = prepare_act(ctx, p, x, n_tokens, n_embd, tokens_buf);
      for (int64_t si = 0; si < n_slots; ++si)
        std::memcpy(out + size_t(si) * p.act_row_bytes, rows + size_t(slots[size_t(si)] / n_used) * p.act_row_bytes, p.act_row_bytes);
      return static_cast<const uint8_t*>(out);
    };
    const uint8_t* xg = gather(pg, ctx.act, gathered);
    const uint8_t* xu = pu.same_activations(pg) ? xg : gather(pu, ctx.act2, gathered + pg.act_row_bytes * size_t(n_slots));

    // Hidden and output rows are all in slot order (position in `slots`).
    float* hg = grow(ctx.moe_gate, size_t(n_slots * n_ff));
    float* hu = grow(ctx.moe_up, size_t(n_slots * n_ff));
    float* ho = grow(ctx.moe_out, size_t(n_slots * n_embd));
    std::vector<int64_t> position(static_cast<size_t>(n_slots));
    for (int64_t si = 0; si < n_slots; ++si) position[size_t(slots[size_t(si)])] = si;

    // Gate and up projections: segments are (active expert, gate or up), split into row chunks.
    const int64_t ff_blocks = (n_ff + kRowBlock - 1) / kRowBlock;
    ctx.seg_blocks.assign(active.size() * 2, ff_blocks);
    plan_tasks(ctx.seg_blocks, n_tokens, ctx.pool->size(), ctx.tasks);
    ctx.pool->run(int64_t(ctx.tasks.size()), [&](int64_t task, int) {
      const RowTask& tk = ctx.tasks[size_t(task)];
      const bool is_up = tk.seg % 2 == 1;
      const int32_t e = active[size_t(tk.seg / 2)];
      const MatPlan& p = is_up ? pu : pg;
      const int64_t first = count[size_t(e)], n = count[size_t(e) + 1] - first;
      const uint8_t* act = (is_up ? xu : xg) + size_t(first) * p.act_row_bytes;
      compute_rows(p, e, act, n, tk.b0 * kRowBlock, std::min(n_ff, tk.b1 * kRowBlock), (is_up ? hu : hg) + first * n_ff, n_ff);
    }, 2.0 * double(n_slots) * double(n_ff) * double(n_embd));
    // The biases of slot si's expert are added to its projections (each sum rounded, as ggml_add_id).
    auto add_bias = [](float* row, const float* bias, int64_t n) {
      if (bias != nullptr)
        for (int64_t i = 0; i < n; ++i) row[i] += bias[i];
    };
    auto expert_of = [&](int64_t si) { return int64_t(ids[slots[size_t(si)]]); };
    // Biases, the activation, then the hidden rows converted for the down projection, in one pass per slot.
    auto activate = [&](int64_t si) {
      float* h = hg + si * n_ff;
      float* u = hu + si * n_ff;
      add_bias(h, bias_row(o.gate_bias, expert_of(si)), n_ff);
      add_bias(u, bias_row(o.up_bias, expert_of(si)), n_ff);
      if (o.glu == TDM_GLU_SWIGLU_OAI) swiglu_oai_f32(h, u, h, n_ff, o.alpha, o.limit);
      else ctx.k->swiglu_f32(h, u, h, n_ff);
    };
    const uint8_t* hq = nullptr;
    if (pd.kind == MatPlan::Kind::packed) {
      uint8_t* out = ctx.moe_act_down.get(pd.act_row_bytes * size_t(n_slots));
      ctx.pool->run(n_slots, [&](int64_t si, int) {
        activate(si);
        pd.po->quantize_act(hg + si * n_ff, n_ff, out + size_t(si) * pd.act_row_bytes);
      }, 12.0 * double(n_slots) * double(n_ff));
      hq = out;
    } else {
      ctx.pool->run(n_slots, [&](int64_t si, int) { activate(si); }, 8.0 * double(n_slots) * double(n_ff));
      hq = prepare_act(ctx, pd, hg, n_slots, n_ff, ctx.moe_act_down);
    }

    const int64_t embd_blocks = (n_embd + kRowBlock - 1) / kRowBlock;
    ctx.seg_blocks.assign(active.size(), embd_blocks);
    plan_tasks(ctx.seg_blocks, n_tokens, ctx.pool->size(), ctx.tasks);
    ctx.pool->run(int64_t(ctx.tasks.size()), [&](int64_t task, int) {
      const RowTask& tk = ctx.tasks[size_t(task)];
      const int32_t e = active[size_t(tk.seg)];
      const int64_t first = count[size_t(e)], n = count[size_t(e) + 1] - first;
      compute_rows(pd, e, hq + size_t(first) * pd.act_row_bytes, n, tk.b0 * kRowBlock, std::min(n_embd, tk.b1 * kRowBlock),
                   ho + first * n_embd, n_embd);
    }, double(n_slots) * double(n_ff) * double(n_embd));
    if (o.down_bias.data != nullptr)
      ctx.pool->run(n_slots, [&](int64_t si, int) { add_bias(ho + si * n_embd, bias_row(o.down_bias, expert_of(si)), n_embd); },
                    double(n_slots) * double(n_embd));

    // Weighted sum in choice order, each product rounded before it is added (as llama.cpp's
    // ggml_mul then a chain of ggml_add).
    ctx.pool->run(n_tokens, [&](int64_t t, int) {
      float* yt = y + t * n_embd;
      for (int32_t j = 0; j < n_used; ++j) {
        const float wj = weights[t * n_used + j];
        add_weighted_row(yt, ho + position[size_t(t * n_used + j)] * n_embd, wj, j == 0, n_embd);
      }
    }, double(n_slots) * double(n_embd));
  });
}

tdm_status cpu_moe_combine(tdm_backend_ctx* c, const float* rows, int64_t n_rows, const int32_t* pos, const float* weights,
                           int64_t n_tokens, int32_t n_used, int64_t n_cols, float* y, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    if (n_tokens <= 0 || n_cols <= 0) return;
    if (rows == nullptr || pos == nullptr || weights == nullptr || y == nullptr) bad("moe_combine with a null pointer");
    if (n_used <= 0) bad("moe_combine needs n_used > 0");
    const int64_t n_slots = n_tokens * n_used;
    for (int64_t i = 0; i < n_slots; ++i)
      if (pos[i] < 0 || pos[i] >= n_rows) bad("row position " + std::to_string(pos[i]) + " is outside [0, " + std::to_string(n_rows) + ")");
    // The same arithmetic as moe_ffn's combine: the first product, then each rounded product added.
    ctx.pool->run(n_tokens, [&](int64_t t, int) {
      float* yt = y + t * n_cols;
      for (int32_t j = 0; j < n_used; ++j) {
        const int64_t slot = int64_t(j) * n_tokens + t;
        const float wj = weights[slot];
        add_weighted_row(yt, rows + int64_t(pos[slot]) * n_cols, wj, j == 0, n_cols);
      }
    }, double(n_slots) * double(n_cols));
  });
}

// The k best of each row by (larger value, lower column): a partial sort of the row's columns.
// (On this backend the executor samples from the rows themselves; the op is the reference
// for the GPU's.)
tdm_status cpu_top_k_rows(tdm_backend_ctx* c, const float* x, int64_t n_rows, int64_t n_cols, int32_t k, float* vals,
                          int32_t* ids, int32_t* flags, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    if (n_rows <= 0) return;
    if (x == nullptr || vals == nullptr || ids == nullptr || flags == nullptr) bad("top_k_rows with a null pointer");
    if (k < 1 || k > TDM_TOP_K_MAX || int64_t(k) > n_cols)
      bad("top_k_rows needs 1 <= k <= " + std::to_string(TDM_TOP_K_MAX) + " and k <= n_cols, got k " + std::to_string(k));
    ctx.pool->run(n_rows, [&](int64_t r, int) {
      const float* row = x + r * n_cols;
      bool odd = false;
      for (int64_t i = 0; i < n_cols; ++i) odd = odd || std::isnan(row[i]) || row[i] == INFINITY;
      if (odd) {  // (a NaN has no place in the order: the caller reads the row)
        flags[r] = 1;
        std::fill(vals + r * k, vals + (r + 1) * k, 0.0f);
        std::fill(ids + r * k, ids + (r + 1) * k, 0);
        return;
      }
      std::vector<int32_t> order(static_cast<size_t>(n_cols));
      std::iota(order.begin(), order.end(), 0);
      const auto better = [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), better);
      for (int32_t j = 0; j < k; ++j) {
        vals[r * k + j] = row[order[size_t(j)]];
        ids[r * k + j] = order[size_t(j)];
      }
      flags[r] = vals[r * k] == -INFINITY ? 1 : 0;
    }, double(n_rows) * double(n_cols) * 4);
  });
}

tdm_status cpu_copy_pieces(tdm_backend_ctx* c, void* dst, size_t dst_stride, const void* src, size_t src_stride,
                           size_t piece_bytes, const int32_t* src_ids, const int32_t* dst_ids, int32_t n, tdm_stream*) {
  return guard(c, [&](CpuContext& ctx) {
    if (n <= 0 || piece_bytes == 0) return;
    if (dst == nullptr || src == nullptr || src_ids == nullptr || dst_ids == nullptr) bad("copy with a null pointer");
    for (int32_t i = 0; i < n; ++i)
      if (src_ids[i] < 0 || dst_ids[i] < 0) bad("negative block id");
    ctx.pool->run(n, [&](int64_t i, int) {
      std::memmove(static_cast<uint8_t*>(dst) + size_t(dst_ids[i]) * dst_stride,
                   static_cast<const uint8_t*>(src) + size_t(src_ids[i]) * src_stride, piece_bytes);
    }, double(n) * double(piece_bytes) / 4);
  });
}

tdm_status cpu_copy_blocks(tdm_backend_ctx* c, void* dst_pool, const void* src_pool, size_t block_bytes,
                           const int32_t* src_ids, const int32_t* dst_ids, int32_t n, tdm_stream* s) {
  return cpu_copy_pieces(c, dst_pool, block_bytes, src_pool, block_bytes, block_bytes, src_ids, dst_ids, n, s);
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "CPU";
}

const tdm_backend_iface kCpuIface = [] {
  tdm_backend_iface t{};
  t.abi_version = TDM_BACKEND_ABI_VERSION;
  t.struct_size = sizeof(tdm_backend_iface);
  t.kind = "cpu";
  t.device_name = cpu_device_name;
  t.caps = cpu_caps;
  t.memory = cpu_memory;
  t.last_error = cpu_last_error;
  t.destroy = cpu_destroy;
  t.buffer_alloc = cpu_alloc;
  t.buffer_free = cpu_free;
  t.host_alloc = cpu_alloc;
  t.host_free = cpu_free;
  t.copy_h2d = cpu_copy;
  t.copy_d2h = cpu_copy;
  t.copy_d2d = cpu_copy;
  t.synchronize = cpu_synchronize;
  t.matmul = cpu_matmul;
  t.get_rows = cpu_get_rows;
  t.rms_norm = cpu_rms_norm;
  t.rope = cpu_rope;
  t.add = cpu_add;
  t.mul = cpu_mul;
  t.swiglu = cpu_swiglu;
  t.scale_rows = cpu_scale_rows;
  t.geglu = cpu_geglu;
  t.scale = cpu_scale;
  t.softcap = cpu_softcap;
  t.kv_store = cpu_kv_store;
  t.attention = cpu_attention;
  t.router = cpu_router;
  t.moe_ffn = cpu_moe_ffn;
  t.moe_combine = cpu_moe_combine;
  t.copy_blocks = cpu_copy_blocks;
  t.copy_pieces = cpu_copy_pieces;
  t.prepare_weight = cpu_prepare_weight;
  t.top_k_rows = cpu_top_k_rows;
  return t;
}();

}  // namespace

}  // namespace tdm::cpu

extern "C" tdm_status tdm_cpu_backend_create(const tdm_backend_params* params, tdm_backend* out, char* err,
                                             size_t err_len) {
  using namespace tdm::cpu;
  auto fail = [&](tdm_status st, const std::string& msg) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", msg.c_str());
    return st;
  };
  if (out == nullptr || params == nullptr) return fail(TDM_STATUS_BAD_ARGUMENT, "null argument");
  out->iface = nullptr;
  out->ctx = nullptr;
  if (params->abi_version != TDM_BACKEND_ABI_VERSION)
    return fail(TDM_STATUS_UNSUPPORTED, "backend ABI version " + std::to_string(params->abi_version) + " requested, CPU backend has " +
                                            std::to_string(TDM_BACKEND_ABI_VERSION));
  try {
    // "<isa>+pack" packs every matmul weight on every call (see kernels.h, kernel_variants).
    std::string variant = params->variant != nullptr ? params->variant : "";
    PackPolicy pack = PackPolicy::mapped;
    const std::string suffix = "+pack";
    if (variant.size() > suffix.size() && variant.compare(variant.size() - suffix.size(), suffix.size(), suffix) == 0) {
      variant.resize(variant.size() - suffix.size());
      pack = PackPolicy::always;
    }
    const Kernels* k = kernels_for(variant.c_str());
    if (k == nullptr)
      return fail(TDM_STATUS_UNSUPPORTED, std::string("CPU kernel variant '") + params->variant + "' is not available on this processor or build");
    int n = params->n_threads;
    if (n <= 0) n = int(std::max(1u, std::thread::hardware_concurrency()));
    auto ctx = std::make_unique<CpuContext>();
    ctx->k = k;
    ctx->pack = pack;
    ctx->name = cpu_model_name() + " (" + k->isa + (pack == PackPolicy::always ? "+pack" : "") + ", " + std::to_string(n) + " threads)";
    ctx->pool = std::make_unique<ThreadPool>(n);
    ctx->thread_f32.resize(size_t(n));
    ctx->thread_blocks.resize(size_t(n));
    for (int i = 0; i < n; ++i) ctx->thread_scratch.push_back(std::make_unique<Scratch>());
    out->iface = &kCpuIface;
    out->ctx = reinterpret_cast<tdm_backend_ctx*>(ctx.release());
    return TDM_STATUS_OK;
  } catch (const std::exception& e) {
    return fail(TDM_STATUS_INTERNAL, e.what());
  }
}
