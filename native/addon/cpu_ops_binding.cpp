// Test-only JS face of the CPU backend's ops: `cpuOps.<op>(variant, ...)` runs one op of the
// backend table with a chosen kernel variant ("ref", "avx2") on plain typed arrays, so the
// tests can hold every SIMD path against its scalar reference (ggml's test-backend-ops idea).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "addon/napi_util.h"
#include "backend/backend_handle.h"
#include "core/ggml_types.h"
#include "cpu/kernels.h"
#include "cpu/quants.h"

namespace tdm::addon {

namespace {

constexpr int kTestThreads = 2;

// One backend per variant, made on first use (a thread pool per call would dominate the tests).
Backend& backend_for(const std::string& variant) {
  static std::map<std::string, std::unique_ptr<Backend>> cache;
  auto it = cache.find(variant);
  if (it == cache.end()) it = cache.emplace(variant, Backend::create_cpu(kTestThreads, variant.c_str())).first;
  return *it->second;
}

std::string variant_arg(const Napi::CallbackInfo& info) { return arg_string(info, 0, "variant"); }

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
  double v = arg_number(info, i, name);
  if (v != double(int64_t(v)) || v < 0) bad_arg(std::string(name) + " must be a non-negative integer");
  return int64_t(v);
}

uint32_t type_arg(const Napi::CallbackInfo& info, size_t i) {
  std::string name = arg_string(info, i, "type");
  for (uint32_t id = 0; id < uint32_t(cpu::kNumTypes); ++id) {
    const TypeTraits* t = type_traits(id);
    if (t != nullptr && name == t->name) return id;
  }
  bad_arg("unknown type '" + name + "'");
}

// Checked fields of an options object.
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

// A weight matrix stack built from floats: quantized row by row with the reference quantizer.
struct OwnedWeight {
  std::vector<uint8_t> bytes;
  tdm_weight w{};
};

OwnedWeight make_weight(uint32_t type, const float* src, int64_t n_mats, int64_t n_rows, int64_t n_cols) {
  const TypeTraits& t = *type_traits(type);
  if (n_cols % t.block_size != 0) bad_arg("n_cols must be a multiple of the type's block size");
  OwnedWeight o;
  const size_t rb = row_bytes(t, uint64_t(n_cols));
  o.bytes.resize(rb * size_t(n_rows * n_mats));
  for (int64_t r = 0; r < n_rows * n_mats; ++r) quantize_row_ref(GgmlType(type), src + r * n_cols, o.bytes.data() + size_t(r) * rb, n_cols);
  o.w.data = o.bytes.data();
  o.w.type = type;
  o.w.n_cols = n_cols;
  o.w.n_rows = n_rows;
  o.w.n_mats = n_mats;
  o.w.row_bytes = rb;
  o.w.mat_bytes = rb * size_t(n_rows);
  return o;
}

Napi::Value variants(const Napi::CallbackInfo& info) {
  int n = 0;
  const char* const* names = cpu::kernel_variants(&n);
  Napi::Array a = Napi::Array::New(info.Env(), size_t(n));
  for (int i = 0; i < n; ++i) a.Set(uint32_t(i), names[i]);
  return a;
}

// matmul(variant, type, w[nRows*nCols], nRows, nCols, x[nTokens*nCols], nTokens) -> y[nTokens*nRows]
Napi::Value matmul(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    const uint32_t type = type_arg(info, 1);
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols"), n_tokens = int_arg(info, 6, "nTokens");
    Napi::Float32Array w = f32_arg(info, 2, "w", size_t(n_rows * n_cols));
    Napi::Float32Array x = f32_arg(info, 5, "x", size_t(n_tokens * n_cols));
    OwnedWeight ow = make_weight(type, w.Data(), 1, n_rows, n_cols);
    std::vector<float> y(size_t(n_tokens * n_rows));
    b.check(b.fn().matmul(b.ctx(), &ow.w, 0, x.Data(), n_tokens, y.data(), nullptr), "matmul");
    return out_f32(info.Env(), y);
  });
}

// getRows(variant, type, w[nRows*nCols], nRows, nCols, ids) -> rows[ids.length*nCols]
Napi::Value get_rows(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    const uint32_t type = type_arg(info, 1);
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols");
    Napi::Float32Array w = f32_arg(info, 2, "w", size_t(n_rows * n_cols));
    Napi::Int32Array ids = i32_arg(info, 5, "ids");
    OwnedWeight ow = make_weight(type, w.Data(), 1, n_rows, n_cols);
    std::vector<float> y(ids.ElementLength() * size_t(n_cols));
    b.check(b.fn().get_rows(b.ctx(), &ow.w, ids.Data(), int64_t(ids.ElementLength()), y.data(), nullptr), "get_rows");
    return out_f32(info.Env(), y);
  });
}

// rmsNorm(variant, x, w | null, nRows, nCols, eps) -> y
Napi::Value rms_norm(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols");
    Napi::Float32Array x = f32_arg(info, 1, "x", size_t(n_rows * n_cols));
    const float* w = nullptr;
    if (info.Length() > 2 && !info[2].IsNull()) w = f32_arg(info, 2, "w", size_t(n_cols)).Data();
    std::vector<float> y(size_t(n_rows * n_cols));
    b.check(b.fn().rms_norm(b.ctx(), x.Data(), w, y.data(), n_rows, n_cols, float(arg_number(info, 5, "eps")), nullptr), "rms_norm");
    return out_f32(info.Env(), y);
  });
}

// rope(variant, x, pos, nHeads, headDim, ropeDim, mode 'norm'|'neox', freqBase, freqScale) -> rotated copy of x
Napi::Value rope(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    Napi::Int32Array pos = i32_arg(info, 2, "pos");
    const int64_t n_tokens = int64_t(pos.ElementLength());
    const int64_t n_heads = int_arg(info, 3, "nHeads"), head_dim = int_arg(info, 4, "headDim"), rope_dim = int_arg(info, 5, "ropeDim");
    Napi::Float32Array x = f32_arg(info, 1, "x", size_t(n_tokens * n_heads * head_dim));
    const std::string mode = arg_string(info, 6, "mode");
    std::vector<float> y(x.Data(), x.Data() + x.ElementLength());
    b.check(b.fn().rope(b.ctx(), y.data(), pos.Data(), n_tokens, int32_t(n_heads), int32_t(head_dim), int32_t(rope_dim),
                        mode == "neox" ? TDM_ROPE_NEOX : TDM_ROPE_NORM, float(arg_number(info, 7, "freqBase")),
                        float(arg_number(info, 8, "freqScale")), nullptr),
            "rope");
    return out_f32(info.Env(), y);
  });
}

// add/mul(variant, a[nRows*nCols], b, nRows, nCols, bRowStride) -> y
template <bool kAdd>
Napi::Value binary(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols"), stride = int_arg(info, 5, "bRowStride");
    Napi::Float32Array a = f32_arg(info, 1, "a", size_t(n_rows * n_cols));
    Napi::Float32Array bb = f32_arg(info, 2, "b", size_t(stride * (n_rows - 1) + n_cols));
    std::vector<float> y(size_t(n_rows * n_cols));
    auto fn = kAdd ? b.fn().add : b.fn().mul;
    b.check(fn(b.ctx(), a.Data(), bb.Data(), y.data(), n_rows, n_cols, stride, nullptr), kAdd ? "add" : "mul");
    return out_f32(info.Env(), y);
  });
}

// swiglu(variant, gate, up) -> y
Napi::Value swiglu(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    Napi::Float32Array g = f32_arg(info, 1, "gate");
    Napi::Float32Array u = f32_arg(info, 2, "up", g.ElementLength());
    std::vector<float> y(g.ElementLength());
    b.check(b.fn().swiglu(b.ctx(), g.Data(), u.Data(), y.data(), int64_t(y.size()), nullptr), "swiglu");
    return out_f32(info.Env(), y);
  });
}

// scaleRows(variant, x, scale[nRows], nRows, nCols, fn 'identity'|'sigmoid') -> y
Napi::Value scale_rows(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    const int64_t n_rows = int_arg(info, 3, "nRows"), n_cols = int_arg(info, 4, "nCols");
    Napi::Float32Array x = f32_arg(info, 1, "x", size_t(n_rows * n_cols));
    Napi::Float32Array s = f32_arg(info, 2, "scale", size_t(n_rows));
    const std::string fn = arg_string(info, 5, "fn");
    std::vector<float> y(x.Data(), x.Data() + x.ElementLength());
    b.check(b.fn().scale_rows(b.ctx(), y.data(), s.Data(), n_rows, n_cols, fn == "sigmoid" ? TDM_ROW_FN_SIGMOID : TDM_ROW_FN_IDENTITY, nullptr),
            "scale_rows");
    return out_f32(info.Env(), y);
  });
}

// attention(variant, {kvType, blockTokens, nBlocks, nKvHeads, nHeads, headDim, headDimV, scale,
//   seqs: [{startPos, nTokens, blockTable, k, v, q}]}) -> out rows of every sequence's new
// tokens, back to back. Each sequence's k/v hold all its positions [0, startPos+nTokens); they
// are stored through the block table (kv_store), then attention runs for the new tokens.
Napi::Value attention(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    if (info.Length() < 2 || !info[1].IsObject()) bad_arg("attention needs an options object");
    Napi::Object o = info[1].As<Napi::Object>();
    auto get_int = [&](const char* k) { return int32_t(num_field(o, k)); };
    tdm_kv_layer kv{};
    if (!o.Get("kvType").IsString()) bad_arg("kvType must be 'f16' or 'f32'");
    const std::string kv_type = o.Get("kvType").As<Napi::String>().Utf8Value();
    kv.type = kv_type == "f32" ? uint32_t(GgmlType::F32) : uint32_t(GgmlType::F16);
    const size_t elt = kv_type == "f32" ? 4 : 2;
    kv.block_tokens = get_int("blockTokens");
    kv.n_blocks = get_int("nBlocks");
    kv.n_kv_heads = get_int("nKvHeads");
    kv.head_dim_k = get_int("headDim");
    kv.head_dim_v = get_int("headDimV");
    const int32_t n_heads = get_int("nHeads");
    const float scale = float(num_field(o, "scale"));
    if (kv.n_blocks <= 0 || kv.block_tokens <= 0 || kv.n_kv_heads <= 0 || kv.head_dim_k <= 0 || kv.head_dim_v <= 0)
      bad_arg("attention geometry must be positive");
    const size_t layer_k = size_t(kv.n_kv_heads) * size_t(kv.block_tokens) * size_t(kv.head_dim_k) * elt;
    const size_t layer_v = size_t(kv.n_kv_heads) * size_t(kv.block_tokens) * size_t(kv.head_dim_v) * elt;
    // Two layers per block, and the view is of the second, so block strides and layer offsets matter.
    kv.block_bytes = 2 * (layer_k + layer_v);
    std::vector<uint8_t> pool(kv.block_bytes * size_t(kv.n_blocks), 0xAB);
    kv.k = pool.data() + layer_k + layer_v;
    kv.v = pool.data() + 2 * layer_k + layer_v;

    if (!o.Get("seqs").IsArray()) bad_arg("seqs must be an array");
    Napi::Array seqs = o.Get("seqs").As<Napi::Array>();
    const int64_t q_row = int64_t(n_heads) * kv.head_dim_k, o_row = int64_t(n_heads) * kv.head_dim_v;
    const int64_t k_row = int64_t(kv.n_kv_heads) * kv.head_dim_k, v_row = int64_t(kv.n_kv_heads) * kv.head_dim_v;
    std::vector<tdm_attn_seq> aseq;
    std::vector<Napi::Int32Array> tables;
    std::vector<float> q_all;
    int32_t row = 0;
    for (uint32_t i = 0; i < seqs.Length(); ++i) {
      if (!seqs.Get(i).IsObject()) bad_arg("seqs entries must be objects");
      Napi::Object s = seqs.Get(i).As<Napi::Object>();
      const int32_t start = int32_t(num_field(s, "startPos"));
      const int32_t n = int32_t(num_field(s, "nTokens"));
      if (start < 0 || n <= 0) bad_arg("startPos must be >= 0 and nTokens > 0");
      Napi::Int32Array table = i32_field(s, "blockTable");
      tables.push_back(table);
      Napi::Float32Array k = f32_field(s, "k");
      Napi::Float32Array v = f32_field(s, "v");
      Napi::Float32Array q = f32_field(s, "q");
      if (k.ElementLength() != size_t(start + n) * size_t(k_row) || v.ElementLength() != size_t(start + n) * size_t(v_row) ||
          q.ElementLength() != size_t(n) * size_t(q_row))
        bad_arg("attention sequence " + std::to_string(i) + ": k, v or q has the wrong length");
      tdm_attn_seq all{0, start + n, 0, int32_t(table.ElementLength()), table.Data()};
      b.check(b.fn().kv_store(b.ctx(), &kv, k.Data(), v.Data(), &all, 1, nullptr), "kv_store");
      aseq.push_back(tdm_attn_seq{row, n, start, int32_t(table.ElementLength()), table.Data()});
      q_all.insert(q_all.end(), q.Data(), q.Data() + q.ElementLength());
      row += n;
    }
    std::vector<float> out(size_t(row) * size_t(o_row));
    b.check(b.fn().attention(b.ctx(), &kv, q_all.data(), aseq.data(), int32_t(aseq.size()), n_heads, scale, out.data(), nullptr),
            "attention");
    return out_f32(info.Env(), out);
  });
}

// router(variant, logits[nTokens*nExperts], nTokens, nExperts, nUsed, gating, norm, scale) -> {ids, weights}
Napi::Value router(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    const int64_t n_tokens = int_arg(info, 2, "nTokens"), n_experts = int_arg(info, 3, "nExperts"), n_used = int_arg(info, 4, "nUsed");
    Napi::Float32Array logits = f32_arg(info, 1, "logits", size_t(n_tokens * n_experts));
    const std::string gating = arg_string(info, 5, "gating");
    const bool norm = info.Length() > 6 && info[6].ToBoolean().Value();
    const float scale = float(arg_number(info, 7, "scale"));
    Napi::Int32Array ids = Napi::Int32Array::New(info.Env(), size_t(n_tokens * n_used));
    Napi::Float32Array weights = Napi::Float32Array::New(info.Env(), size_t(n_tokens * n_used));
    b.check(b.fn().router(b.ctx(), logits.Data(), n_tokens, int32_t(n_experts), int32_t(n_used),
                          gating == "sigmoid" ? TDM_GATING_SIGMOID : TDM_GATING_SOFTMAX, norm ? 1 : 0, scale, ids.Data(),
                          weights.Data(), nullptr),
            "router");
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("ids", ids);
    out.Set("weights", weights);
    return out;
  });
}

// moeFfn(variant, type, gate[nExp*nFf*nEmbd], up, down[nExp*nEmbd*nFf], nExp, nEmbd, nFf,
//   x[nTokens*nEmbd], nTokens, ids[nTokens*nUsed], weights, nUsed) -> y[nTokens*nEmbd]
Napi::Value moe_ffn(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    const uint32_t type = type_arg(info, 1);
    const int64_t n_exp = int_arg(info, 5, "nExp"), n_embd = int_arg(info, 6, "nEmbd"), n_ff = int_arg(info, 7, "nFf");
    const int64_t n_tokens = int_arg(info, 9, "nTokens"), n_used = int_arg(info, 12, "nUsed");
    Napi::Float32Array g = f32_arg(info, 2, "gate", size_t(n_exp * n_ff * n_embd));
    Napi::Float32Array u = f32_arg(info, 3, "up", size_t(n_exp * n_ff * n_embd));
    Napi::Float32Array d = f32_arg(info, 4, "down", size_t(n_exp * n_embd * n_ff));
    Napi::Float32Array x = f32_arg(info, 8, "x", size_t(n_tokens * n_embd));
    Napi::Int32Array ids = i32_arg(info, 10, "ids", size_t(n_tokens * n_used));
    Napi::Float32Array wts = f32_arg(info, 11, "weights", size_t(n_tokens * n_used));
    OwnedWeight wg = make_weight(type, g.Data(), n_exp, n_ff, n_embd);
    OwnedWeight wu = make_weight(type, u.Data(), n_exp, n_ff, n_embd);
    OwnedWeight wd = make_weight(type, d.Data(), n_exp, n_embd, n_ff);
    std::vector<float> y(size_t(n_tokens * n_embd));
    b.check(b.fn().moe_ffn(b.ctx(), x.Data(), n_tokens, ids.Data(), wts.Data(), int32_t(n_used), &wg.w, &wu.w, &wd.w, y.data(), nullptr),
            "moe_ffn");
    return out_f32(info.Env(), y);
  });
}

// copyBlocks(variant, pool: Uint8Array, blockBytes, srcIds, dstIds) -> the pool after the copies
Napi::Value copy_blocks(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Backend& b = backend_for(variant_arg(info));
    ByteView pool = arg_bytes(info, 1, "pool");
    const int64_t bb = int_arg(info, 2, "blockBytes");
    Napi::Int32Array src = i32_arg(info, 3, "srcIds");
    Napi::Int32Array dst = i32_arg(info, 4, "dstIds", src.ElementLength());
    const int64_t n_blocks = bb > 0 ? int64_t(pool.size) / bb : 0;
    for (size_t i = 0; i < src.ElementLength(); ++i)
      if (src[i] >= n_blocks || dst[i] >= n_blocks) bad_arg("block id past the pool");
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), pool.size);
    std::copy(pool.data, pool.data + pool.size, out.Data());
    b.check(b.fn().copy_blocks(b.ctx(), out.Data(), out.Data(), size_t(bb), src.Data(), dst.Data(), int32_t(src.ElementLength()), nullptr),
            "copy_blocks");
    return out;
  });
}

}  // namespace

void register_cpu_ops(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("variants", Napi::Function::New(env, variants, "variants"));
  ops.Set("matmul", Napi::Function::New(env, matmul, "matmul"));
  ops.Set("getRows", Napi::Function::New(env, get_rows, "getRows"));
  ops.Set("rmsNorm", Napi::Function::New(env, rms_norm, "rmsNorm"));
  ops.Set("rope", Napi::Function::New(env, rope, "rope"));
  ops.Set("add", Napi::Function::New(env, binary<true>, "add"));
  ops.Set("mul", Napi::Function::New(env, binary<false>, "mul"));
  ops.Set("swiglu", Napi::Function::New(env, swiglu, "swiglu"));
  ops.Set("scaleRows", Napi::Function::New(env, scale_rows, "scaleRows"));
  ops.Set("attention", Napi::Function::New(env, attention, "attention"));
  ops.Set("router", Napi::Function::New(env, router, "router"));
  ops.Set("moeFfn", Napi::Function::New(env, moe_ffn, "moeFfn"));
  ops.Set("copyBlocks", Napi::Function::New(env, copy_blocks, "copyBlocks"));
  exports.Set("cpuOps", ops);
}

}  // namespace tdm::addon
