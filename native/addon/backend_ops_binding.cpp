// Test and bench face of any backend's ops: `backendOps.<op>(id, ...)` runs one op of the
// backend table named by id ("cpu:ref", "cpu:avx2", "cpu:avx2@16", "cuda:0", "hip:0") on plain typed arrays,
// moving inputs into the backend's memory and results back, so one list of op cases checks
// every loaded backend against the CPU reference (ggml's test-backend-ops idea). The same
// calls with cpu ids run here with no GPU; timing helpers serve the device bench.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "addon/napi_util.h"
#include "backend/backend_handle.h"
#include "backend/registry.h"
#include "core/ggml_types.h"
#include "cpu/kernels.h"
#include "cpu/packed_weights.h"
#include "cpu/quants.h"
#include "cpu/thread_pool.h"

namespace tdm::addon {

namespace {

constexpr int kCpuThreads = 2;

// A new backend for id ("cpu:avx2@16", "cuda:0", ...).
std::unique_ptr<Backend> make_backend(const std::string& id) {
  const size_t colon = id.find(':');
  if (colon == std::string::npos) bad_arg("backend id '" + id + "' is not of the form kind:device (e.g. cpu:ref, cuda:0)");
  const std::string kind = id.substr(0, colon), rest = id.substr(colon + 1);
  std::unique_ptr<Backend> b;
  if (kind == "cpu") {
    // "cpu:<variant>" runs on kCpuThreads threads; "cpu:<variant>@<n>" on n (the bench's choice).
    const size_t at = rest.find('@');
    int threads = kCpuThreads;
    if (at != std::string::npos) {
      threads = std::atoi(rest.c_str() + at + 1);
      if (threads <= 0) bad_arg("backend id '" + id + "' needs a positive thread count after '@'");
    }
    b = Backend::create_cpu(threads, rest.substr(0, at).c_str());
  } else {
    char* end = nullptr;
    const long dev = std::strtol(rest.c_str(), &end, 10);
    if (rest.empty() || *end != '\0' || dev < 0) bad_arg("backend id '" + id + "' needs a device number after the colon");
    b = BackendRegistry::instance().open(kind, int32_t(dev));
  }
  return b;
}

// One live backend per id, made on first use and kept (a GPU context or thread pool per call
// would dominate the tests).
Backend& backend_for(const std::string& id) {
  static std::map<std::string, std::unique_ptr<Backend>> cache;
  auto it = cache.find(id);
  if (it != cache.end()) return *it->second;
  return *cache.emplace(id, make_backend(id)).first->second;
}

// Backend memory for one call, freed when the call ends (after the backend has finished).
class Scope {
 public:
  explicit Scope(Backend& b) : b_(b) {}
  ~Scope() {
    if (!bufs_.empty()) b_.fn().synchronize(b_.ctx());
    for (void* p : bufs_) b_.free(p);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  void* alloc(size_t bytes) {
    void* p = b_.alloc(bytes > 0 ? bytes : 1);
    bufs_.push_back(p);
    return p;
  }
  template <typename T>
  T* alloc_n(size_t n) { return static_cast<T*>(alloc(n * sizeof(T))); }
  template <typename T>
  T* upload(const T* src, size_t n) {
    T* p = alloc_n<T>(n);
    if (n > 0) b_.check(b_.fn().copy_h2d(b_.ctx(), p, src, n * sizeof(T), nullptr), "copy_h2d");
    return p;
  }
  void sync() { b_.check(b_.fn().synchronize(b_.ctx()), "synchronize"); }
  // Waits for the backend, then copies n elements back.
  template <typename T>
  void download(T* dst, const T* src, size_t n) {
    sync();
    if (n > 0) b_.check(b_.fn().copy_d2h(b_.ctx(), dst, src, n * sizeof(T), nullptr), "copy_d2h");
    sync();
  }
  Backend& backend() { return b_; }

 private:
  Backend& b_;
  std::vector<void*> bufs_;
};

Napi::Float32Array f32_arg(const Napi::CallbackInfo& info, size_t i, const char* name, size_t expect = SIZE_MAX) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    bad_arg(std::string(name) + " must be a Float32Array");
  Napi::Float32Array a = info[i].As<Napi::Float32Array>();
  if (expect != SIZE_MAX && a.ElementLength() != expect)
    bad_arg(std::string(name) + " must hold " + std::to_string(expect) + " floats, not " + std::to_string(a.ElementLength()));
  return a;
}

Napi::Int32Array i32_arg(const Napi::CallbackInfo& info, size_t i, const char* name, size_t expect = SIZE_MAX) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    bad_arg(std::string(name) + " must be an Int32Array");
  Napi::Int32Array a = info[i].As<Napi::Int32Array>();
  if (expect != SIZE_MAX && a.ElementLength() != expect) bad_arg(std::string(name) + " has the wrong length");
  return a;
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const double v = arg_number(info, i, name);
  if (v != double(int64_t(v)) || v < 0) bad_arg(std::string(name) + " must be a non-negative integer");
  return int64_t(v);
}

uint32_t type_arg(const Napi::CallbackInfo& info, size_t i) {
  const std::string name = arg_string(info, i, "type");
  const int64_t id = type_id_by_name(name);
  if (id < 0) bad_arg("unknown type '" + name + "'");
  return uint32_t(id);
}

double num_field(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsNumber()) bad_arg(std::string(k) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}
Napi::Float32Array f32_field(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) bad_arg(std::string(k) + " must be a Float32Array");
  return v.As<Napi::Float32Array>();
}
Napi::Int32Array i32_field(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) bad_arg(std::string(k) + " must be an Int32Array");
  return v.As<Napi::Int32Array>();
}

Napi::Float32Array out_f32(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  std::copy(v.begin(), v.end(), a.Data());
  return a;
}

// A weight stack quantized on the host with the reference quantizer, then put in backend memory.
tdm_weight upload_weight(Scope& sc, uint32_t type, const float* src, int64_t n_mats, int64_t n_rows, int64_t n_cols) {
  const TypeTraits* t = type_traits(type);
  if (t == nullptr) bad_arg("unknown type id");
  if (n_cols <= 0 || n_cols % t->block_size != 0) bad_arg("n_cols must be a positive multiple of the type's block size");
  const size_t rb = row_bytes(*t, uint64_t(n_cols));
  std::vector<uint8_t> bytes(rb * size_t(n_rows * n_mats));
  for (int64_t r = 0; r < n_rows * n_mats; ++r) quantize_row_ref(GgmlType(type), src + r * n_cols, bytes.data() + size_t(r) * rb, n_cols);
  tdm_weight w{};
  w.data = sc.upload(bytes.data(), bytes.size());
  w.type = type;
  w.n_cols = n_cols;
  w.n_rows = n_rows;
  w.n_mats = n_mats;
  w.row_bytes = rb;
  w.mat_bytes = rb * size_t(n_rows);
  return w;
}

// ids() -> the backend ids this machine can run: every CPU kernel variant, then each usable GPU device.
Napi::Value ids(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    std::vector<std::string> out;
    int n = 0;
    const char* const* names = cpu::kernel_variants(&n);
    for (int i = 0; i < n; ++i) out.push_back(std::string("cpu:") + names[i]);
    for (const BackendCandidate& c : BackendRegistry::instance().candidates())
      if (c.status != "unavailable") out.push_back(c.kind + ":" + std::to_string(c.device));
    Napi::Array a = Napi::Array::New(info.Env(), out.size());
    for (size_t i = 0; i < out.size(); ++i) a.Set(uint32_t(i), out[i]);
    return a;
  });
}

// packedWeightStats() -> { made, live }: packed copies of CPU weights made in this process, and
// those some CPU context still holds.
Napi::Value packed_weight_stats(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const cpu::PackedWeightStats st = cpu::packed_weight_stats();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("made", Napi::Number::New(info.Env(), double(st.made)));
    o.Set("live", Napi::Number::New(info.Env(), double(st.live)));
    return o;
  });
}

// matmul(id, type, w[nRows*nCols], nRows, nCols, x[nTokens*nCols], nTokens) -> y[nTokens*nRows]
Napi::Value matmul(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const uint32_t type = type_arg(info, 1);
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols"), n_tokens = int_arg(info, 6, "nTokens");
    Napi::Float32Array w = f32_arg(info, 2, "w", size_t(n_rows * n_cols));
    Napi::Float32Array x = f32_arg(info, 5, "x", size_t(n_tokens * n_cols));
    const tdm_weight wt = upload_weight(sc, type, w.Data(), 1, n_rows, n_cols);
    const float* dx = sc.upload(x.Data(), x.ElementLength());
    float* dy = sc.alloc_n<float>(size_t(n_tokens * n_rows));
    b.check(b.fn().matmul(b.ctx(), &wt, 0, dx, n_tokens, dy, nullptr), "matmul");
    std::vector<float> y(size_t(n_tokens * n_rows));
    sc.download(y.data(), dy, y.size());
    return out_f32(info.Env(), y);
  });
}

// matmulGroup(id, type, ws: Float32Array[], rows: number[], nCols, x[nTokens*nCols], nTokens)
// -> { grouped, ys }: ys[i] = W_i x through the backend's matmul_group (grouped true), or null
// ys when the backend has no such op.
Napi::Value matmul_group(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const uint32_t type = type_arg(info, 1);
    if (info.Length() < 4 || !info[2].IsArray() || !info[3].IsArray()) bad_arg("matmulGroup needs arrays of weights and row counts");
    Napi::Array ws = info[2].As<Napi::Array>(), rows = info[3].As<Napi::Array>();
    if (ws.Length() != rows.Length()) bad_arg("matmulGroup needs one row count per weight");
    const int64_t n_cols = int_arg(info, 4, "nCols"), n_tokens = int_arg(info, 6, "nTokens");
    Napi::Float32Array x = f32_arg(info, 5, "x", size_t(n_tokens * n_cols));
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("grouped", Napi::Boolean::New(info.Env(), b.fn().matmul_group != nullptr));
    if (b.fn().matmul_group == nullptr) {
      out.Set("ys", info.Env().Null());
      return out;
    }
    std::vector<tdm_weight> wts;
    std::vector<float*> dys;
    for (uint32_t i = 0; i < ws.Length(); ++i) {
      const int64_t n_rows = int64_t(rows.Get(i).As<Napi::Number>().Int64Value());
      if (n_rows <= 0 || !ws.Get(i).IsTypedArray()) bad_arg("matmulGroup: weight " + std::to_string(i) + " needs rows and a Float32Array");
      Napi::Float32Array w = ws.Get(i).As<Napi::Float32Array>();
      if (w.ElementLength() != size_t(n_rows * n_cols)) bad_arg("matmulGroup: weight " + std::to_string(i) + " has the wrong length");
      wts.push_back(upload_weight(sc, type, w.Data(), 1, n_rows, n_cols));
      dys.push_back(sc.alloc_n<float>(size_t(n_tokens * n_rows)));
    }
    std::vector<const tdm_weight*> pw;
    for (const tdm_weight& w : wts) pw.push_back(&w);
    const float* dx = sc.upload(x.Data(), x.ElementLength());
    b.check(b.fn().matmul_group(b.ctx(), pw.data(), int32_t(pw.size()), dx, n_tokens, dys.data(), nullptr), "matmul_group");
    Napi::Array ys = Napi::Array::New(info.Env(), wts.size());
    for (size_t i = 0; i < wts.size(); ++i) {
      std::vector<float> y(size_t(n_tokens * wts[i].n_rows));
      sc.download(y.data(), dys[i], y.size());
      ys.Set(uint32_t(i), out_f32(info.Env(), y));
    }
    out.Set("ys", ys);
    return out;
  });
}

// getRows(id, type, w[nRows*nCols], nRows, nCols, ids) -> rows[ids.length*nCols]
Napi::Value get_rows(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const uint32_t type = type_arg(info, 1);
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols");
    Napi::Float32Array w = f32_arg(info, 2, "w", size_t(n_rows * n_cols));
    Napi::Int32Array rid = i32_arg(info, 5, "ids");
    const tdm_weight wt = upload_weight(sc, type, w.Data(), 1, n_rows, n_cols);
    const int32_t* did = sc.upload(rid.Data(), rid.ElementLength());
    std::vector<float> y(rid.ElementLength() * size_t(n_cols));
    float* dy = sc.alloc_n<float>(y.size());
    b.check(b.fn().get_rows(b.ctx(), &wt, did, int64_t(rid.ElementLength()), dy, nullptr), "get_rows");
    sc.download(y.data(), dy, y.size());
    return out_f32(info.Env(), y);
  });
}

// rmsNorm(id, x, w | null, nRows, nCols, eps) -> y
Napi::Value rms_norm(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols");
    Napi::Float32Array x = f32_arg(info, 1, "x", size_t(n_rows * n_cols));
    const float* dw = nullptr;
    if (info.Length() > 2 && !info[2].IsNull()) {
      Napi::Float32Array w = f32_arg(info, 2, "w", size_t(n_cols));
      dw = sc.upload(w.Data(), w.ElementLength());
    }
    const float* dx = sc.upload(x.Data(), x.ElementLength());
    std::vector<float> y(size_t(n_rows * n_cols));
    float* dy = sc.alloc_n<float>(y.size());
    b.check(b.fn().rms_norm(b.ctx(), dx, dw, dy, n_rows, n_cols, float(arg_number(info, 5, "eps")), nullptr), "rms_norm");
    sc.download(y.data(), dy, y.size());
    return out_f32(info.Env(), y);
  });
}

// rope(id, x, pos, nHeads, headDim, ropeDim, mode 'norm'|'neox', freqBase, freqScale,
//   yarn? {extFactor, attnFactor, betaFast, betaSlow, nCtxOrig}) -> rotated copy of x
Napi::Value rope(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    Napi::Int32Array pos = i32_arg(info, 2, "pos");
    const int64_t n_tokens = int64_t(pos.ElementLength());
    const int64_t n_heads = int_arg(info, 3, "nHeads"), head_dim = int_arg(info, 4, "headDim"), rope_dim = int_arg(info, 5, "ropeDim");
    Napi::Float32Array x = f32_arg(info, 1, "x", size_t(n_tokens * n_heads * head_dim));
    const std::string mode = arg_string(info, 6, "mode");
    if (mode != "norm" && mode != "neox") bad_arg("mode must be 'norm' or 'neox'");
    tdm_rope_params p{};
    p.mode = mode == "neox" ? TDM_ROPE_NEOX : TDM_ROPE_NORM;
    p.freq_base = float(arg_number(info, 7, "freqBase"));
    p.freq_scale = float(arg_number(info, 8, "freqScale"));
    p.attn_factor = 1.0f;
    p.beta_fast = 32.0f;
    p.beta_slow = 1.0f;
    if (info.Length() > 9 && !info[9].IsUndefined()) {
      if (!info[9].IsObject()) bad_arg("yarn must be an object");
      Napi::Object o = info[9].As<Napi::Object>();
      p.ext_factor = float(num_field(o, "extFactor"));
      p.attn_factor = float(num_field(o, "attnFactor"));
      p.beta_fast = float(num_field(o, "betaFast"));
      p.beta_slow = float(num_field(o, "betaSlow"));
      const double n_ctx_orig = num_field(o, "nCtxOrig");
      if (!(n_ctx_orig >= 0 && n_ctx_orig <= INT32_MAX) || n_ctx_orig != double(int64_t(n_ctx_orig)))
        bad_arg("nCtxOrig must be a non-negative 32-bit integer");
      p.n_ctx_orig = int32_t(n_ctx_orig);
    }
    float* dx = sc.upload(x.Data(), x.ElementLength());
    const int32_t* dp = sc.upload(pos.Data(), pos.ElementLength());
    b.check(b.fn().rope(b.ctx(), dx, dp, n_tokens, int32_t(n_heads), int32_t(head_dim), int32_t(rope_dim), &p, nullptr),
            "rope");
    std::vector<float> y(x.ElementLength());
    sc.download(y.data(), dx, y.size());
    return out_f32(info.Env(), y);
  });
}

// add/mul(id, a[nRows*nCols], b, nRows, nCols, bRowStride) -> y
template <bool kAdd>
Napi::Value binary(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& be = sc.backend();
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols"), stride = int_arg(info, 5, "bRowStride");
    if (n_rows <= 0) bad_arg("nRows must be positive");
    Napi::Float32Array a = f32_arg(info, 1, "a", size_t(n_rows * n_cols));
    Napi::Float32Array bb = f32_arg(info, 2, "b", size_t(stride * (n_rows - 1) + n_cols));
    const float* da = sc.upload(a.Data(), a.ElementLength());
    const float* db = sc.upload(bb.Data(), bb.ElementLength());
    std::vector<float> y(size_t(n_rows * n_cols));
    float* dy = sc.alloc_n<float>(y.size());
    auto fn = kAdd ? be.fn().add : be.fn().mul;
    be.check(fn(be.ctx(), da, db, dy, n_rows, n_cols, stride, nullptr), kAdd ? "add" : "mul");
    sc.download(y.data(), dy, y.size());
    return out_f32(info.Env(), y);
  });
}

using GluOp = tdm_status (*)(tdm_backend_ctx*, const float*, const float*, float*, int64_t, tdm_stream*);

// A gated activation (swiglu or geglu) of gate and up on the backend `id`.
Napi::Value gated(const Napi::CallbackInfo& info, GluOp tdm_backend_iface::*op, const char* name) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    Napi::Float32Array g = f32_arg(info, 1, "gate");
    Napi::Float32Array u = f32_arg(info, 2, "up", g.ElementLength());
    const float* dg = sc.upload(g.Data(), g.ElementLength());
    const float* du = sc.upload(u.Data(), u.ElementLength());
    std::vector<float> y(g.ElementLength());
    float* dy = sc.alloc_n<float>(y.size());
    b.check((b.fn().*op)(b.ctx(), dg, du, dy, int64_t(y.size()), nullptr), name);
    sc.download(y.data(), dy, y.size());
    return out_f32(info.Env(), y);
  });
}

// swiglu(id, gate, up) -> y
Napi::Value swiglu(const Napi::CallbackInfo& info) { return gated(info, &tdm_backend_iface::swiglu, "swiglu"); }

// geglu(id, gate, up) -> y
Napi::Value geglu(const Napi::CallbackInfo& info) { return gated(info, &tdm_backend_iface::geglu, "geglu"); }

using NumberOp = tdm_status (*tdm_backend_iface::*)(tdm_backend_ctx*, const float*, float*, int64_t, float, tdm_stream*);

// An elementwise op of x and one number (scale, softcap) on the backend `id`.
Napi::Value with_number(const Napi::CallbackInfo& info, NumberOp op, const char* name, const char* number_name) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    Napi::Float32Array x = f32_arg(info, 1, "x");
    const float s = float(arg_number(info, 2, number_name));
    const float* dx = sc.upload(x.Data(), x.ElementLength());
    std::vector<float> y(x.ElementLength());
    float* dy = sc.alloc_n<float>(y.size());
    b.check((b.fn().*op)(b.ctx(), dx, dy, int64_t(y.size()), s, nullptr), name);
    sc.download(y.data(), dy, y.size());
    return out_f32(info.Env(), y);
  });
}

// scale(id, x, s) -> x * s
Napi::Value scale(const Napi::CallbackInfo& info) { return with_number(info, &tdm_backend_iface::scale, "scale", "scale"); }

// softcap(id, x, cap) -> tanh(x / cap) * cap
Napi::Value softcap(const Napi::CallbackInfo& info) { return with_number(info, &tdm_backend_iface::softcap, "softcap", "cap"); }

// scaleRows(id, x, scale[nRows], nRows, nCols, fn 'identity'|'sigmoid') -> y
Napi::Value scale_rows(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols");
    Napi::Float32Array x = f32_arg(info, 1, "x", size_t(n_rows * n_cols));
    Napi::Float32Array s = f32_arg(info, 2, "scale", size_t(n_rows));
    const std::string fn = arg_string(info, 5, "fn");
    float* dx = sc.upload(x.Data(), x.ElementLength());
    const float* ds = sc.upload(s.Data(), s.ElementLength());
    b.check(b.fn().scale_rows(b.ctx(), dx, ds, n_rows, n_cols, fn == "sigmoid" ? TDM_ROW_FN_SIGMOID : TDM_ROW_FN_IDENTITY, nullptr),
            "scale_rows");
    std::vector<float> y(x.ElementLength());
    sc.download(y.data(), dx, y.size());
    return out_f32(info.Env(), y);
  });
}

// A KV pool of two layers per block in backend memory, filled with a byte pattern; the view is
// of the second layer so that block strides and layer offsets both matter.
struct KvPool {
  tdm_kv_layer kv{};
};

KvPool make_pool(Scope& sc, const std::string& kv_type, int32_t block_tokens, int32_t n_blocks, int32_t n_kv_heads,
                 int32_t dk, int32_t dv) {
  if (kv_type != "f16" && kv_type != "f32" && kv_type != "q8_0") bad_arg("kvType must be 'f16', 'f32' or 'q8_0'");
  if (n_blocks <= 0 || block_tokens <= 0 || n_kv_heads <= 0 || dk <= 0 || dv <= 0) bad_arg("attention geometry must be positive");
  KvPool p;
  p.kv.type = kv_type == "f32" ? uint32_t(GgmlType::F32) : kv_type == "q8_0" ? uint32_t(GgmlType::Q8_0) : uint32_t(GgmlType::F16);
  auto row = [&](int32_t d) { return kv_row_bytes(p.kv.type, d); };
  p.kv.block_tokens = block_tokens;
  p.kv.n_blocks = n_blocks;
  p.kv.n_kv_heads = n_kv_heads;
  p.kv.head_dim_k = dk;
  p.kv.head_dim_v = dv;
  const size_t layer_k = size_t(n_kv_heads) * size_t(block_tokens) * row(dk);
  const size_t layer_v = size_t(n_kv_heads) * size_t(block_tokens) * row(dv);
  p.kv.block_bytes = 2 * (layer_k + layer_v);
  const std::vector<uint8_t> pattern(p.kv.block_bytes * size_t(n_blocks), 0xAB);
  uint8_t* pool = sc.upload(pattern.data(), pattern.size());
  p.kv.k = pool + layer_k + layer_v;
  p.kv.v = pool + 2 * layer_k + layer_v;
  return p;
}

// attention(id, {kvType, blockTokens, nBlocks, nKvHeads, nHeads, headDim, headDimV, scale, softcap?, sinks?, window?,
//   seqs: [{startPos, nTokens, blockTable, k, v, q}]}) -> out rows of every sequence's new tokens,
// back to back. Each sequence's k/v hold all its positions; they are stored through its block
// table with kv_store, then attention runs for the new tokens.
Napi::Value attention(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    if (info.Length() < 2 || !info[1].IsObject()) bad_arg("attention needs an options object");
    Napi::Object o = info[1].As<Napi::Object>();
    if (!o.Get("kvType").IsString()) bad_arg("kvType must be 'f16', 'f32' or 'q8_0'");
    const int32_t n_heads = int32_t(num_field(o, "nHeads"));
    KvPool pool = make_pool(sc, o.Get("kvType").As<Napi::String>().Utf8Value(), int32_t(num_field(o, "blockTokens")),
                            int32_t(num_field(o, "nBlocks")), int32_t(num_field(o, "nKvHeads")), int32_t(num_field(o, "headDim")),
                            int32_t(num_field(o, "headDimV")));
    const tdm_kv_layer& kv = pool.kv;
    const float scale = float(num_field(o, "scale"));
    const float softcap = o.Get("softcap").IsUndefined() ? 0.0f : float(num_field(o, "softcap"));
    if (!o.Get("seqs").IsArray()) bad_arg("seqs must be an array");
    Napi::Array seqs = o.Get("seqs").As<Napi::Array>();
    const int64_t q_row = int64_t(n_heads) * kv.head_dim_k, o_row = int64_t(n_heads) * kv.head_dim_v;
    const int64_t k_row = int64_t(kv.n_kv_heads) * kv.head_dim_k, v_row = int64_t(kv.n_kv_heads) * kv.head_dim_v;
    std::vector<tdm_attn_seq> aseq;
    std::vector<float> q_all;
    int32_t row = 0;
    for (uint32_t i = 0; i < seqs.Length(); ++i) {
      if (!seqs.Get(i).IsObject()) bad_arg("seqs entries must be objects");
      Napi::Object s = seqs.Get(i).As<Napi::Object>();
      const int32_t start = int32_t(num_field(s, "startPos"));
      const int32_t n = int32_t(num_field(s, "nTokens"));
      if (start < 0 || n <= 0) bad_arg("startPos must be >= 0 and nTokens > 0");
      Napi::Int32Array table = i32_field(s, "blockTable");
      Napi::Float32Array k = f32_field(s, "k");
      Napi::Float32Array v = f32_field(s, "v");
      Napi::Float32Array q = f32_field(s, "q");
      if (k.ElementLength() != size_t(start + n) * size_t(k_row) || v.ElementLength() != size_t(start + n) * size_t(v_row) ||
          q.ElementLength() != size_t(n) * size_t(q_row))
        bad_arg("attention sequence " + std::to_string(i) + ": k, v or q has the wrong length");
      const int32_t* dt = sc.upload(table.Data(), table.ElementLength());
      const float* dk = sc.upload(k.Data(), k.ElementLength());
      const float* dv = sc.upload(v.Data(), v.ElementLength());
      const tdm_attn_seq all{0, start + n, 0, int32_t(table.ElementLength()), dt};
      b.check(b.fn().kv_store(b.ctx(), &kv, dk, dv, &all, 1, nullptr), "kv_store");
      aseq.push_back(tdm_attn_seq{row, n, start, int32_t(table.ElementLength()), dt});
      q_all.insert(q_all.end(), q.Data(), q.Data() + q.ElementLength());
      row += n;
    }
    const float* dq = sc.upload(q_all.data(), q_all.size());
    const float* dsinks = nullptr;
    if (!o.Get("sinks").IsUndefined()) {
      Napi::Float32Array sinks = f32_field(o, "sinks");
      if (sinks.ElementLength() != size_t(n_heads)) bad_arg("sinks must hold nHeads floats");
      dsinks = sc.upload(sinks.Data(), sinks.ElementLength());
    }
    const int32_t window = o.Get("window").IsUndefined() ? 0 : int32_t(num_field(o, "window"));
    if (window < 0) bad_arg("window must be >= 0");
    std::vector<float> out(size_t(row) * size_t(o_row));
    float* dout = sc.alloc_n<float>(out.size());
    b.check(b.fn().attention(b.ctx(), &kv, dq, aseq.data(), int32_t(aseq.size()), n_heads, scale, softcap, dsinks, window, dout,
                             nullptr),
            "attention");
    sc.download(out.data(), dout, out.size());
    return out_f32(info.Env(), out);
  });
}

// topKRows(id, x[nRows*nCols], nRows, nCols, k) -> {vals, ids, flags}; unsupported where the
// backend leaves top_k_rows out.
Napi::Value top_k_rows(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const int64_t n_rows = int_arg(info, 2, "nRows"), n_cols = int_arg(info, 3, "nCols"), k = int_arg(info, 4, "k");
    Napi::Float32Array x = f32_arg(info, 1, "x", size_t(n_rows * n_cols));
    if (b.fn().top_k_rows == nullptr) throw Error(code::unsupported, "this backend has no top_k_rows");
    const float* dx = sc.upload(x.Data(), x.ElementLength());
    float* dv = sc.alloc_n<float>(size_t(n_rows * k));
    int32_t* di = sc.alloc_n<int32_t>(size_t(n_rows * k));
    int32_t* df = sc.alloc_n<int32_t>(size_t(n_rows));
    b.check(b.fn().top_k_rows(b.ctx(), dx, n_rows, n_cols, int32_t(k), dv, di, df, nullptr), "top_k_rows");
    Napi::Float32Array vals = Napi::Float32Array::New(info.Env(), size_t(n_rows * k));
    Napi::Int32Array ids = Napi::Int32Array::New(info.Env(), size_t(n_rows * k));
    Napi::Int32Array flags = Napi::Int32Array::New(info.Env(), size_t(n_rows));
    sc.download(vals.Data(), dv, vals.ElementLength());
    sc.download(ids.Data(), di, ids.ElementLength());
    sc.download(flags.Data(), df, flags.ElementLength());
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("vals", vals);
    out.Set("ids", ids);
    out.Set("flags", flags);
    return out;
  });
}

// router(id, logits[nTokens*nExperts], nTokens, nExperts, nUsed, gating, norm, scale) -> {ids, weights}
Napi::Value router(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const int64_t n_tokens = int_arg(info, 2, "nTokens"), n_experts = int_arg(info, 3, "nExperts"), n_used = int_arg(info, 4, "nUsed");
    Napi::Float32Array logits = f32_arg(info, 1, "logits", size_t(n_tokens * n_experts));
    const std::string gating = arg_string(info, 5, "gating");
    const bool norm = info.Length() > 6 && info[6].ToBoolean().Value();
    const float scale = float(arg_number(info, 7, "scale"));
    const float* dl = sc.upload(logits.Data(), logits.ElementLength());
    int32_t* did = sc.alloc_n<int32_t>(size_t(n_tokens * n_used));
    float* dw = sc.alloc_n<float>(size_t(n_tokens * n_used));
    int32_t g = TDM_GATING_SOFTMAX;
    if (gating == "sigmoid") g = TDM_GATING_SIGMOID;
    else if (gating == "softmax_weight") g = TDM_GATING_SOFTMAX_WEIGHT;
    else if (gating != "softmax") bad_arg("gating must be 'softmax', 'sigmoid' or 'softmax_weight'");
    b.check(b.fn().router(b.ctx(), dl, n_tokens, int32_t(n_experts), int32_t(n_used), g, norm ? 1 : 0, scale, did, dw, nullptr),
            "router");
    Napi::Int32Array ids_out = Napi::Int32Array::New(info.Env(), size_t(n_tokens * n_used));
    Napi::Float32Array w_out = Napi::Float32Array::New(info.Env(), size_t(n_tokens * n_used));
    sc.download(ids_out.Data(), did, ids_out.ElementLength());
    sc.download(w_out.Data(), dw, w_out.ElementLength());
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("ids", ids_out);
    out.Set("weights", w_out);
    return out;
  });
}

// moeFfn(id, type, gate[nExp*nFf*nEmbd], up, down[nExp*nEmbd*nFf], nExp, nEmbd, nFf,
//   x[nTokens*nEmbd], nTokens, ids[nTokens*nUsed], weights, nUsed,
//   opts? {glu: 'swiglu' | 'swiglu_oai', alpha, limit, gateBias[nExp*nFf], upBias, downBias[nExp*nEmbd]})
//   -> y[nTokens*nEmbd]
Napi::Value moe_ffn(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const uint32_t type = type_arg(info, 1);
    const int64_t n_exp = int_arg(info, 5, "nExp"), n_embd = int_arg(info, 6, "nEmbd"), n_ff = int_arg(info, 7, "nFf");
    const int64_t n_tokens = int_arg(info, 9, "nTokens"), n_used = int_arg(info, 12, "nUsed");
    Napi::Float32Array g = f32_arg(info, 2, "gate", size_t(n_exp * n_ff * n_embd));
    Napi::Float32Array u = f32_arg(info, 3, "up", size_t(n_exp * n_ff * n_embd));
    Napi::Float32Array d = f32_arg(info, 4, "down", size_t(n_exp * n_embd * n_ff));
    Napi::Float32Array x = f32_arg(info, 8, "x", size_t(n_tokens * n_embd));
    Napi::Int32Array eid = i32_arg(info, 10, "ids", size_t(n_tokens * n_used));
    Napi::Float32Array wts = f32_arg(info, 11, "weights", size_t(n_tokens * n_used));
    const tdm_weight wg = upload_weight(sc, type, g.Data(), n_exp, n_ff, n_embd);
    const tdm_weight wu = upload_weight(sc, type, u.Data(), n_exp, n_ff, n_embd);
    const tdm_weight wd = upload_weight(sc, type, d.Data(), n_exp, n_embd, n_ff);
    const float* dx = sc.upload(x.Data(), x.ElementLength());
    const int32_t* dids = sc.upload(eid.Data(), eid.ElementLength());
    const float* dw = sc.upload(wts.Data(), wts.ElementLength());
    tdm_moe_opts opts{};
    const bool has_opts = info.Length() > 13 && info[13].IsObject();
    if (has_opts) {
      Napi::Object o = info[13].As<Napi::Object>();
      const std::string glu = o.Get("glu").IsString() ? o.Get("glu").As<Napi::String>().Utf8Value() : "swiglu";
      if (glu == "swiglu_oai") opts.glu = TDM_GLU_SWIGLU_OAI;
      else if (glu != "swiglu") bad_arg("glu must be 'swiglu' or 'swiglu_oai'");
      opts.alpha = o.Get("alpha").IsUndefined() ? 0.0f : float(num_field(o, "alpha"));
      opts.limit = o.Get("limit").IsUndefined() ? 0.0f : float(num_field(o, "limit"));
      auto bias = [&](const char* name, int64_t n_cols) {
        if (o.Get(name).IsUndefined()) return tdm_weight{};
        Napi::Float32Array a = f32_field(o, name);
        if (a.ElementLength() != size_t(n_exp * n_cols)) bad_arg(std::string(name) + " has the wrong length");
        return upload_weight(sc, uint32_t(GgmlType::F32), a.Data(), n_exp, 1, n_cols);
      };
      opts.gate_bias = bias("gateBias", n_ff);
      opts.up_bias = bias("upBias", n_ff);
      opts.down_bias = bias("downBias", n_embd);
    }
    std::vector<float> y(size_t(n_tokens * n_embd));
    float* dy = sc.alloc_n<float>(y.size());
    b.check(b.fn().moe_ffn(b.ctx(), dx, n_tokens, dids, dw, int32_t(n_used), &wg, &wu, &wd, has_opts ? &opts : nullptr, dy, nullptr),
            "moe_ffn");
    sc.download(y.data(), dy, y.size());
    return out_f32(info.Env(), y);
  });
}

// moeCombine(id, rows[nRows*nCols], nRows, pos[nUsed*nTokens], weights[nUsed*nTokens], nTokens, nUsed, nCols)
//   -> y[nTokens*nCols]
Napi::Value moe_combine(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const int64_t n_rows = int_arg(info, 2, "nRows"), n_tokens = int_arg(info, 5, "nTokens");
    const int64_t n_used = int_arg(info, 6, "nUsed"), n_cols = int_arg(info, 7, "nCols");
    Napi::Float32Array rows = f32_arg(info, 1, "rows", size_t(n_rows * n_cols));
    Napi::Int32Array pos = i32_arg(info, 3, "pos", size_t(n_tokens * n_used));
    Napi::Float32Array wts = f32_arg(info, 4, "weights", size_t(n_tokens * n_used));
    const float* dr = sc.upload(rows.Data(), rows.ElementLength());
    const int32_t* dp = sc.upload(pos.Data(), pos.ElementLength());
    const float* dw = sc.upload(wts.Data(), wts.ElementLength());
    std::vector<float> y(size_t(n_tokens * n_cols));
    float* dy = sc.alloc_n<float>(y.size());
    b.check(b.fn().moe_combine(b.ctx(), dr, n_rows, dp, dw, n_tokens, int32_t(n_used), n_cols, dy, nullptr), "moe_combine");
    sc.download(y.data(), dy, y.size());
    return out_f32(info.Env(), y);
  });
}

// copyBlocks(id, pool: Uint8Array, blockBytes, srcIds, dstIds) -> the pool after the copies
Napi::Value copy_blocks(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    ByteView pool = arg_bytes(info, 1, "pool");
    const int64_t bb = int_arg(info, 2, "blockBytes");
    Napi::Int32Array src = i32_arg(info, 3, "srcIds");
    Napi::Int32Array dst = i32_arg(info, 4, "dstIds", src.ElementLength());
    const int64_t n_blocks = bb > 0 ? int64_t(pool.size) / bb : 0;
    for (size_t i = 0; i < src.ElementLength(); ++i)
      if (src[i] >= n_blocks || dst[i] >= n_blocks) bad_arg("block id past the pool");
    uint8_t* dpool = sc.upload(pool.data, pool.size);
    b.check(b.fn().copy_blocks(b.ctx(), dpool, dpool, size_t(bb), src.Data(), dst.Data(), int32_t(src.ElementLength()), nullptr),
            "copy_blocks");
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), pool.size);
    sc.download(out.Data(), dpool, pool.size);
    return out;
  });
}

// copyPieces(id, src: Uint8Array, srcStride, pieceBytes, srcIds, dstIds, dstBytes, dstStride, mapped)
// -> dstBytes bytes after the copies (zeros elsewhere). mapped: the source stays in host memory,
// page-locked and mapped with host_register, as streamed host KV is read (a backend without
// host_register, or whose memory is the host's, reads it where it is).
Napi::Value copy_pieces(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    if (b.fn().copy_pieces == nullptr) throw Error(code::unsupported, "this backend has no copy_pieces");
    ByteView src = arg_bytes(info, 1, "src");
    const int64_t src_stride = int_arg(info, 2, "srcStride");
    const int64_t piece = int_arg(info, 3, "pieceBytes");
    Napi::Int32Array src_ids = i32_arg(info, 4, "srcIds");
    Napi::Int32Array dst_ids = i32_arg(info, 5, "dstIds", src_ids.ElementLength());
    const int64_t dst_bytes = int_arg(info, 6, "dstBytes");
    const int64_t dst_stride = int_arg(info, 7, "dstStride");
    const bool mapped = info.Length() > 8 && info[8].ToBoolean().Value();
    if (piece < 1 || src_stride < 0 || dst_stride < 0 || dst_bytes < 0) bad_arg("sizes must not be negative, pieceBytes at least 1");
    for (size_t i = 0; i < src_ids.ElementLength(); ++i) {
      if (src_ids[i] < 0 || int64_t(src_ids[i]) * src_stride + piece > int64_t(src.size)) bad_arg("a source piece past src");
      if (dst_ids[i] < 0 || int64_t(dst_ids[i]) * dst_stride + piece > dst_bytes) bad_arg("a destination piece past dstBytes");
    }
    const void* from = nullptr;
    std::vector<uint8_t> zeros(size_t(dst_bytes), 0);
    uint8_t* to = sc.upload(zeros.data(), zeros.size());
    // The mapped source: 64-byte aligned host memory, locked for the call.
    struct Locked {
      Backend& b;
      void* p = nullptr;
      bool registered = false;
      ~Locked() {
        if (registered) b.fn().host_unregister(b.ctx(), p);
        std::free(p);
      }
    } host{b};
    if (mapped && b.fn().host_register != nullptr && !b.host_memory()) {
      host.p = std::aligned_alloc(64, (src.size + 63) / 64 * 64 + 64);
      if (host.p == nullptr) throw Error(code::oom, "cannot allocate the host source");
      std::memcpy(host.p, src.data, src.size);
      void* dev = nullptr;
      b.check(b.fn().host_register(b.ctx(), host.p, (src.size + 63) / 64 * 64 + 64, &dev), "host_register");
      host.registered = true;
      from = dev;
    } else {
      from = sc.upload(src.data, src.size);
    }
    b.check(b.fn().copy_pieces(b.ctx(), to, size_t(dst_stride), from, size_t(src_stride), size_t(piece), src_ids.Data(), dst_ids.Data(),
                               int32_t(src_ids.ElementLength()), nullptr),
            "copy_pieces");
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), size_t(dst_bytes));
    sc.download(out.Data(), to, size_t(dst_bytes));
    return out;
  });
}

// Microseconds per call of `op` over `iters` calls, after two warm-up calls, the backend
// synchronised before and after.
template <typename F>
double time_calls(Scope& sc, int64_t iters, F&& op) {
  op();
  op();
  sc.sync();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) op();
  sc.sync();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / double(iters);
}

std::vector<float> pseudo_random(size_t n, uint32_t seed, float scale) {
  std::vector<float> v(n);
  uint32_t s = seed;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = (float(s >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
  }
  return v;
}

// Bytes in a read-only file mapping (an anonymous memory file), where a loaded model's weights
// lie in its mapped GGUF. Empty where the OS has no memory files.
class ReadOnlyFileBytes {
 public:
  explicit ReadOnlyFileBytes(const std::vector<uint8_t>& bytes) {
#ifdef __linux__
    const int fd = int(syscall(SYS_memfd_create, "tandem-timed-weight", 1u /* MFD_CLOEXEC */));
    if (fd < 0) return;
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    if (done == bytes.size()) {
      void* p = ::mmap(nullptr, bytes.size(), PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) {
        data_ = static_cast<const uint8_t*>(p);
        size_ = bytes.size();
      }
    }
    ::close(fd);
#else
    (void)bytes;
#endif
  }
  ~ReadOnlyFileBytes() {
#ifdef __linux__
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
#endif
  }
  ReadOnlyFileBytes(const ReadOnlyFileBytes&) = delete;
  ReadOnlyFileBytes& operator=(const ReadOnlyFileBytes&) = delete;
  const uint8_t* data() const { return data_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// timeMatmul(id, type, nRows, nCols, nTokens, iters) -> microseconds per matmul of weights as a
// loaded model holds them: in the device's memory, or, on a host-memory backend, in a read-only
// file mapping readied by prepare_weight (the CPU backend runs its packed kernels on those).
Napi::Value time_matmul(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string id = arg_string(info, 0, "id");
    // A host-memory backend keeps what it readied for a weight (a packed copy) for its context's
    // life: a context of its own for this call drops it afterwards.
    std::unique_ptr<Backend> own;
    Backend* bp = &backend_for(id);
    if (bp->host_memory() && bp->fn().prepare_weight != nullptr) {
      own = make_backend(id);
      bp = own.get();
    }
    Scope sc(*bp);
    Backend& b = sc.backend();
    const uint32_t type = type_arg(info, 1);
    const int64_t n_rows = int_arg(info, 2, "nRows"), n_cols = int_arg(info, 3, "nCols"), n_tokens = int_arg(info, 4, "nTokens");
    const int64_t iters = std::max<int64_t>(1, int_arg(info, 5, "iters"));
    // 64 distinct quantized rows repeated: the same bytes move as with a full random matrix,
    // and the host quantizes 64 rows instead of millions.
    const int64_t distinct = std::min<int64_t>(n_rows, 64);
    const std::vector<float> w0 = pseudo_random(size_t(distinct * n_cols), 1, 0.1f);
    const TypeTraits* tt = type_traits(type);
    if (n_cols <= 0 || n_cols % tt->block_size != 0) bad_arg("nCols must be a positive multiple of the type's block size");
    const size_t rb = row_bytes(*tt, uint64_t(n_cols));
    std::vector<uint8_t> rows0(rb * size_t(distinct)), bytes(rb * size_t(n_rows));
    for (int64_t r = 0; r < distinct; ++r) quantize_row_ref(GgmlType(type), w0.data() + r * n_cols, rows0.data() + size_t(r) * rb, n_cols);
    for (int64_t r = 0; r < n_rows; ++r) std::copy_n(rows0.data() + size_t(r % distinct) * rb, rb, bytes.data() + size_t(r) * rb);
    const std::vector<float> x = pseudo_random(size_t(n_tokens * n_cols), 2, 1.0f);
    std::unique_ptr<ReadOnlyFileBytes> mapped;
    if (own) mapped = std::make_unique<ReadOnlyFileBytes>(bytes);
    tdm_weight wt{};
    wt.data = mapped && mapped->data() ? mapped->data() : sc.upload(bytes.data(), bytes.size());
    wt.type = type;
    wt.n_cols = n_cols;
    wt.n_rows = n_rows;
    wt.n_mats = 1;
    wt.row_bytes = rb;
    wt.mat_bytes = rb * size_t(n_rows);
    if (b.fn().prepare_weight != nullptr) b.check(b.fn().prepare_weight(b.ctx(), &wt), "prepare_weight");
    const float* dx = sc.upload(x.data(), x.size());
    float* dy = sc.alloc_n<float>(size_t(n_tokens * n_rows));
    return Napi::Number::New(info.Env(), time_calls(sc, iters, [&] {
      b.check(b.fn().matmul(b.ctx(), &wt, 0, dx, n_tokens, dy, nullptr), "matmul");
    }));
  });
}

// timeAttention(id, {kvType, blockTokens, nKvHeads, nHeads, headDim, nSeqs, contextLen, nTokens}, iters)
// -> microseconds per attention call: nSeqs sequences, each with contextLen cached positions
// and nTokens new ones (1 = decode).
Napi::Value time_attention(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    if (info.Length() < 2 || !info[1].IsObject()) bad_arg("timeAttention needs an options object");
    Napi::Object o = info[1].As<Napi::Object>();
    if (!o.Get("kvType").IsString()) bad_arg("kvType must be 'f16', 'f32' or 'q8_0'");
    const int32_t bt = int32_t(num_field(o, "blockTokens")), n_kv = int32_t(num_field(o, "nKvHeads"));
    const int32_t n_heads = int32_t(num_field(o, "nHeads")), hd = int32_t(num_field(o, "headDim"));
    const int32_t n_seqs = int32_t(num_field(o, "nSeqs")), ctx_len = int32_t(num_field(o, "contextLen"));
    const int32_t n_new = int32_t(num_field(o, "nTokens"));
    const int64_t iters = std::max<int64_t>(1, int_arg(info, 2, "iters"));
    if (n_seqs <= 0 || ctx_len < 0 || n_new <= 0 || bt <= 0) bad_arg("timeAttention needs nSeqs > 0, contextLen >= 0, nTokens > 0");
    const int32_t per_seq = (ctx_len + n_new + bt - 1) / bt;
    KvPool pool = make_pool(sc, o.Get("kvType").As<Napi::String>().Utf8Value(), bt, per_seq * n_seqs, n_kv, hd, hd);
    std::vector<int32_t> tables(size_t(per_seq) * size_t(n_seqs));
    for (size_t i = 0; i < tables.size(); ++i) tables[i] = int32_t(i);
    const int32_t* dt = sc.upload(tables.data(), tables.size());
    // Cached positions hold the pool's byte pattern, which is a finite f16/f32 value: fine for timing.
    std::vector<tdm_attn_seq> seqs;
    for (int32_t s = 0; s < n_seqs; ++s) seqs.push_back(tdm_attn_seq{s * n_new, n_new, ctx_len, per_seq, dt + size_t(s) * size_t(per_seq)});
    const std::vector<float> q = pseudo_random(size_t(n_seqs) * size_t(n_new) * size_t(n_heads) * size_t(hd), 3, 1.0f);
    const float* dq = sc.upload(q.data(), q.size());
    float* dout = sc.alloc_n<float>(q.size());
    const float scale = 1.0f / std::sqrt(float(hd));
    return Napi::Number::New(info.Env(), time_calls(sc, iters, [&] {
      b.check(b.fn().attention(b.ctx(), &pool.kv, dq, seqs.data(), n_seqs, n_heads, scale, 0.0f, nullptr, 0, dout, nullptr), "attention");
    }));
  });
}

// The node a page-preferring policy on the mapping holding p names; -1 for any other policy or
// when the kernel does not say (no NUMA support, not Linux).
int preferred_node_of(const void* p) {
#ifdef __linux__
  constexpr int kGetByAddress = 2, kPreferred = 1;  // MPOL_F_ADDR, MPOL_PREFERRED
  constexpr int kBits = int(8 * sizeof(unsigned long));
  unsigned long mask[1024 / kBits] = {};
  int mode = -1;
  // The kernel handles maxnode - 1 bits of the mask.
  if (syscall(SYS_get_mempolicy, &mode, mask, 1024ul + 1, p, kGetByAddress) != 0) return -1;
  if ((mode & 0xff) != kPreferred) return -1;
  for (int n = 0; n < 1024; ++n)
    if (mask[n / kBits] & (1ul << (n % kBits))) return n;
#else
  (void)p;
#endif
  return -1;
}

// hostRoundTrip(id, bytes) -> {intact, node}: a pattern written into the backend's pinned host
// memory (host_alloc), copied to the device and back into a second such buffer; intact says the
// bytes came back unchanged, node is the NUMA node the first buffer's pages prefer (-1: none).
Napi::Value host_round_trip(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Scope sc(backend_for(arg_string(info, 0, "id")));
    Backend& b = sc.backend();
    const size_t bytes = size_t(int_arg(info, 1, "bytes"));
    if (bytes == 0) bad_arg("hostRoundTrip needs bytes > 0");
    if (b.fn().host_alloc == nullptr || b.fn().host_free == nullptr)
      throw Error(code::unsupported, std::string(b.kind()) + " backend has no pinned host memory");
    auto host = [&b](size_t n) {
      void* p = nullptr;
      b.check(b.fn().host_alloc(b.ctx(), n, &p), "host_alloc");
      return std::unique_ptr<void, std::function<void(void*)>>(p, [&b](void* q) { b.fn().host_free(b.ctx(), q); });
    };
    auto src = host(bytes);
    auto back = host(bytes);
    auto* s = static_cast<uint8_t*>(src.get());
    for (size_t i = 0; i < bytes; ++i) s[i] = uint8_t((i * 131 + 7) ^ (i >> 8));
    std::memset(back.get(), 0, bytes);
    void* dev = sc.alloc(bytes);
    b.check(b.fn().copy_h2d(b.ctx(), dev, src.get(), bytes, nullptr), "copy_h2d");
    sc.sync();
    b.check(b.fn().copy_d2h(b.ctx(), back.get(), dev, bytes, nullptr), "copy_d2h");
    sc.sync();
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("intact", Napi::Boolean::New(info.Env(), std::memcmp(src.get(), back.get(), bytes) == 0));
    out.Set("node", Napi::Number::New(info.Env(), preferred_node_of(src.get())));
    return out;
  });
}

// poolCheck(threads, runs, idleUs) -> {runs, missed, doubled, thrown, rethrown, idleRunUs}: the
// CPU thread pool under stress. Runs of 2..97 tasks; every fourth after idleUs of sleep, so that
// the workers sleep and some wake after their job has ended; every seventh with one throwing
// task. Every task of a run that throws nothing must run exactly once (missed, doubled count
// the ones that did not); a throwing run runs no task twice and rethrows. idleRunUs: the median
// µs of a job of one short task per thread started right after an idle spell, which is how
// long a run takes once the pool has slept through a device's work.
Napi::Value pool_check(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const int threads = int(int_arg(info, 0, "threads"));
    const int64_t runs = int_arg(info, 1, "runs");
    const int64_t idle_us = int_arg(info, 2, "idleUs");
    if (threads < 1 || threads > 256 || runs < 1 || runs > 100000 || idle_us < 0 || idle_us > 100000) bad_arg("poolCheck(threads 1-256, runs 1-100000, idleUs 0-100000)");
    cpu::ThreadPool pool(threads);
    int64_t missed = 0, doubled = 0, thrown = 0, rethrown = 0;
    std::vector<double> idle_run_us;
    // Small and large runs alternate, so that a worker still in a small run's loop meets a
    // larger count; the counts are reused, so that back-to-back runs follow each other closely.
    std::vector<std::atomic<int>> count(160);
    for (int64_t r = 0; r < runs; ++r) {
      if (r % 4 == 0 && idle_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(idle_us));
      const int64_t n = r % 2 == 0 ? 2 + (r / 2) % 5 : 60 + (r * 37) % 96;
      const bool throws = r % 7 == 3;
      for (int64_t i = 0; i < n; ++i) count[size_t(i)].store(0);
      try {
        pool.run(n, [&](int64_t t, int) {
          count[size_t(t)].fetch_add(1);
          if (throws && t == n / 2) throw std::runtime_error("pool check");
        }, cpu::ThreadPool::kMinParallelWork);
      } catch (const std::runtime_error&) {
        rethrown++;
      }
      if (throws) thrown++;
      for (int64_t i = 0; i < n; ++i) {
        const int k = count[size_t(i)].load();
        if (k > 1) doubled++;
        if (k == 0 && !throws) missed++;
      }
      if (r % 4 == 0 && idle_us > 0) {
        // One short task a thread, right after the pool slept.
        std::this_thread::sleep_for(std::chrono::microseconds(idle_us));
        const auto t0 = std::chrono::steady_clock::now();
        pool.run(threads, [](int64_t, int) {
          volatile double x = 1;
          for (int i = 0; i < 2000; ++i) x = x * 1.0000001 + 1e-9;
        }, cpu::ThreadPool::kMinParallelWork);
        idle_run_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      }
    }
    std::sort(idle_run_us.begin(), idle_run_us.end());
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("runs", Napi::Number::New(env, double(runs)));
    out.Set("missed", Napi::Number::New(env, double(missed)));
    out.Set("doubled", Napi::Number::New(env, double(doubled)));
    out.Set("thrown", Napi::Number::New(env, double(thrown)));
    out.Set("rethrown", Napi::Number::New(env, double(rethrown)));
    out.Set("idleRunUs", idle_run_us.empty() ? env.Null() : Napi::Number::New(env, idle_run_us[idle_run_us.size() / 2]));
    return out;
  });
}

}  // namespace

void register_backend_ops(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("ids", Napi::Function::New(env, ids, "ids"));
  ops.Set("packedWeightStats", Napi::Function::New(env, packed_weight_stats, "packedWeightStats"));
  ops.Set("matmul", Napi::Function::New(env, matmul, "matmul"));
  ops.Set("matmulGroup", Napi::Function::New(env, matmul_group, "matmulGroup"));
  ops.Set("getRows", Napi::Function::New(env, get_rows, "getRows"));
  ops.Set("rmsNorm", Napi::Function::New(env, rms_norm, "rmsNorm"));
  ops.Set("rope", Napi::Function::New(env, rope, "rope"));
  ops.Set("add", Napi::Function::New(env, binary<true>, "add"));
  ops.Set("mul", Napi::Function::New(env, binary<false>, "mul"));
  ops.Set("swiglu", Napi::Function::New(env, swiglu, "swiglu"));
  ops.Set("geglu", Napi::Function::New(env, geglu, "geglu"));
  ops.Set("scale", Napi::Function::New(env, scale, "scale"));
  ops.Set("softcap", Napi::Function::New(env, softcap, "softcap"));
  ops.Set("scaleRows", Napi::Function::New(env, scale_rows, "scaleRows"));
  ops.Set("attention", Napi::Function::New(env, attention, "attention"));
  ops.Set("router", Napi::Function::New(env, router, "router"));
  ops.Set("topKRows", Napi::Function::New(env, top_k_rows, "topKRows"));
  ops.Set("moeFfn", Napi::Function::New(env, moe_ffn, "moeFfn"));
  ops.Set("moeCombine", Napi::Function::New(env, moe_combine, "moeCombine"));
  ops.Set("copyBlocks", Napi::Function::New(env, copy_blocks, "copyBlocks"));
  ops.Set("copyPieces", Napi::Function::New(env, copy_pieces, "copyPieces"));
  ops.Set("timeMatmul", Napi::Function::New(env, time_matmul, "timeMatmul"));
  ops.Set("timeAttention", Napi::Function::New(env, time_attention, "timeAttention"));
  ops.Set("hostRoundTrip", Napi::Function::New(env, host_round_trip, "hostRoundTrip"));
  ops.Set("poolCheck", Napi::Function::New(env, pool_check, "poolCheck"));
  exports.Set("backendOps", ops);
}

}  // namespace tdm::addon
