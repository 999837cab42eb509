// JS face of the quant types: quantize / dequantize / dot over typed arrays, with every
// length checked here (a wrong length is a TDM_BAD_ARGUMENT error, never a crash), and
// an AsyncWorker that quantizes big tensors off the event loop on several threads.
#include <algorithm>
#include <cmath>
#include <exception>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "addon/napi_util.h"
#include "core/ggml_types.h"
#include "cpu/quants.h"

namespace tdm::addon {

namespace {

struct TypeArg {
  GgmlType type;
  const TypeTraits* traits;
};

// A type given by ggml name ("q4_K", case-insensitive) or by numeric id.
TypeArg arg_type(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() > i && info[i].IsNumber()) {
    const uint32_t id = arg_u32(info, i, "type");
    const TypeTraits* t = type_traits(id);
    if (!t) bad_arg("unknown ggml type id " + std::to_string(id));
    return TypeArg{GgmlType(id), t};
  }
  if (info.Length() <= i || !info[i].IsString()) bad_arg("type must be a ggml type name (e.g. 'q4_K') or id");
  const std::string name = info[i].As<Napi::String>().Utf8Value();
  const int64_t id = type_id_by_name(name);
  if (id < 0) bad_arg("unknown ggml type '" + name + "'");
  return TypeArg{GgmlType(id), type_traits(uint32_t(id))};
}

TypeArg arg_computable_type(const Napi::CallbackInfo& info, size_t i) {
  TypeArg t = arg_type(info, i);
  if (!t.traits->computable) throw Error(code::unsupported, std::string(t.traits->name) + ": tandem cannot compute with this type");
  return t;
}

// An element count: a non-negative integer no larger than 2^53.
int64_t arg_count(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const double v = arg_number(info, i, name);
  if (!(v >= 0 && v <= 9007199254740992.0) || v != std::floor(v)) bad_arg(std::string(name) + " must be a non-negative integer");
  return int64_t(v);
}

struct F32View {
  const float* data;
  int64_t n;
};

F32View arg_f32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    bad_arg(std::string(name) + " must be a Float32Array");
  }
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  const auto* base = static_cast<const uint8_t*>(ta.ArrayBuffer().Data());
  return F32View{reinterpret_cast<const float*>(base + ta.ByteOffset()), int64_t(ta.ElementLength())};
}

// Bytes that n elements of the type take; n must fill whole blocks.
size_t bytes_for(const TypeTraits& t, int64_t n) {
  if (n % t.block_size != 0) {
    bad_arg(std::string(t.name) + ": " + std::to_string(n) + " elements is not a multiple of the block size " +
            std::to_string(t.block_size));
  }
  return row_bytes(t, uint64_t(n));
}

void expect_bytes(const ByteView& v, size_t want, const char* what, const TypeTraits& t, int64_t n) {
  if (v.size != want) {
    bad_arg(std::string(what) + " has " + std::to_string(v.size) + " bytes; " + std::to_string(n) + " elements of " + t.name +
            " take " + std::to_string(want));
  }
}

Napi::ArrayBuffer new_buffer(Napi::Env env, size_t bytes) {
  try {
    return Napi::ArrayBuffer::New(env, bytes);
  } catch (const Napi::Error&) {
    throw Error(code::oom, "cannot allocate a " + std::to_string(bytes) + "-byte buffer");
  }
}

// Quantizes n elements on up to `threads` threads, splitting at block boundaries (blocks
// are independent, so the bytes do not depend on the split).
void quantize_parallel(const TypeArg& t, const float* src, uint8_t* dst, int64_t n, int threads) {
  const int64_t blocks = n / t.traits->block_size;
  const int64_t min_blocks_per_thread = 64;
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>(threads, blocks / min_blocks_per_thread));
  if (count <= 1) {
    quantize_row_ref(t.type, src, dst, n);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(count));
  std::vector<std::thread> pool;
  auto run = [&](int64_t k) {
    const int64_t b0 = blocks * k / count;
    const int64_t b1 = blocks * (k + 1) / count;
    try {
      quantize_row_ref(t.type, src + b0 * t.traits->block_size, dst + b0 * t.traits->type_size,
                       (b1 - b0) * t.traits->block_size);
    } catch (...) {
      errors[size_t(k)] = std::current_exception();
    }
  };
  for (int64_t k = 1; k < count; k++) {
    try {
      pool.emplace_back(run, k);
    } catch (const std::system_error&) {
      run(k);  // no thread to be had: do that share here
    }
  }
  run(0);
  for (std::thread& th : pool) th.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// quantizeAsync: the Float32Array and the output buffer are held by persistent
// references for the worker's lifetime, so neither can be collected while it runs.
class QuantizeWorker : public Napi::AsyncWorker {
 public:
  QuantizeWorker(Napi::Env env, TypeArg type, F32View src, Napi::Object src_obj, Napi::ArrayBuffer dst, int threads)
      : Napi::AsyncWorker(env, "tandem.quantize"),
        deferred_(Napi::Promise::Deferred::New(env)),
        type_(type),
        src_(src),
        dst_data_(static_cast<uint8_t*>(dst.Data())),
        dst_bytes_(dst.ByteLength()),
        threads_(threads),
        src_ref_(Napi::Persistent(src_obj)),
        dst_ref_(Napi::Persistent(dst)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      if (src_.n > 0) quantize_parallel(type_, src_.data, dst_data_, src_.n, threads_);
    } catch (const Error& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = code::oom;
      SetError("out of host memory");
    } catch (const std::exception& e) {
      code_ = "TDM_INTERNAL";
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    deferred_.Resolve(Napi::Uint8Array::New(env, dst_bytes_, dst_ref_.Value(), 0));
  }

  void OnError(const Napi::Error& e) override {
    deferred_.Reject(to_js_error(Env(), code_, e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  TypeArg type_;
  F32View src_;
  uint8_t* dst_data_;
  size_t dst_bytes_;
  int threads_;
  const char* code_ = "TDM_INTERNAL";
  Napi::ObjectReference src_ref_;
  Napi::Reference<Napi::ArrayBuffer> dst_ref_;
};

Napi::Object type_info_object(Napi::Env env, uint32_t id, const TypeTraits& t) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", id);
  o.Set("name", t.name);
  o.Set("blockSize", t.block_size);
  o.Set("typeSize", t.type_size);
  o.Set("computable", t.computable);
  if (t.computable) {
    const uint32_t vdt = uint32_t(vec_dot_type(GgmlType(id)));
    o.Set("vecDotType", type_traits(vdt)->name);
  } else {
    o.Set("vecDotType", env.Null());
  }
  return o;
}

// typeInfo(type) -> {id, name, blockSize, typeSize, computable, vecDotType}
Napi::Value type_info(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const TypeArg t = arg_type(info, 0);
    return type_info_object(info.Env(), uint32_t(t.type), *t.traits);
  });
}

// quantTypes() -> names of the types tandem computes with, in id order.
Napi::Value quant_types(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Array out = Napi::Array::New(info.Env());
    uint32_t k = 0;
    for (uint32_t id = 0; id < 64; id++) {
      const TypeTraits* t = type_traits(id);
      if (t && t->computable) out.Set(k++, t->name);
    }
    return out;
  });
}

// quantize(type, src: Float32Array) -> Uint8Array
Napi::Value quantize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const TypeArg t = arg_computable_type(info, 0);
    const F32View src = arg_f32(info, 1, "src");
    const size_t bytes = bytes_for(*t.traits, src.n);
    Napi::ArrayBuffer ab = new_buffer(info.Env(), bytes);
    if (src.n > 0) quantize_row_ref(t.type, src.data, ab.Data(), src.n);
    return Napi::Uint8Array::New(info.Env(), bytes, ab, 0);
  });
}

// quantizeInto(type, src: Float32Array, dst: typed array of exactly the row's bytes) -> bytes
Napi::Value quantize_into(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const TypeArg t = arg_computable_type(info, 0);
    const F32View src = arg_f32(info, 1, "src");
    const ByteView dst = arg_bytes(info, 2, "dst");
    const size_t bytes = bytes_for(*t.traits, src.n);
    expect_bytes(dst, bytes, "dst", *t.traits, src.n);
    if (src.n > 0) quantize_row_ref(t.type, src.data, dst.data, src.n);
    return Napi::Number::New(info.Env(), double(bytes));
  });
}

// quantizeAsync(type, src: Float32Array, threads?: number) -> Promise<Uint8Array>
Napi::Value quantize_async(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const TypeArg t = arg_computable_type(info, 0);
    const F32View src = arg_f32(info, 1, "src");
    int threads = int(std::max(1u, std::thread::hardware_concurrency()));
    if (info.Length() > 2 && !info[2].IsUndefined()) {
      const uint32_t v = arg_u32(info, 2, "threads");
      if (v < 1 || v > 256) bad_arg("threads must be between 1 and 256");
      threads = int(v);
    }
    const size_t bytes = bytes_for(*t.traits, src.n);
    Napi::ArrayBuffer ab = new_buffer(env, bytes);
    auto* worker = new QuantizeWorker(env, t, src, info[1].As<Napi::Object>(), ab, threads);
    Napi::Promise p = worker->promise();
    worker->Queue();
    return p;
  });
}

// dequantize(type, bytes, n) -> Float32Array of n elements
Napi::Value dequantize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const TypeArg t = arg_computable_type(info, 0);
    const ByteView src = arg_bytes(info, 1, "bytes");
    const int64_t n = arg_count(info, 2, "n");
    expect_bytes(src, bytes_for(*t.traits, n), "bytes", *t.traits, n);
    Napi::ArrayBuffer ab = new_buffer(info.Env(), size_t(n) * sizeof(float));
    if (n > 0) dequantize_row_ref(t.type, src.data, static_cast<float*>(ab.Data()), n);
    return Napi::Float32Array::New(info.Env(), size_t(n), ab, 0);
  });
}

// vecDot(type, w, a, n) -> number; w in `type`, a in the type's vecDotType.
Napi::Value vec_dot(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const TypeArg t = arg_computable_type(info, 0);
    const ByteView w = arg_bytes(info, 1, "w");
    const ByteView a = arg_bytes(info, 2, "a");
    const int64_t n = arg_count(info, 3, "n");
    const GgmlType at = vec_dot_type(t.type);
    const TypeTraits& a_traits = *type_traits(uint32_t(at));
    expect_bytes(w, bytes_for(*t.traits, n), "w", *t.traits, n);
    expect_bytes(a, bytes_for(a_traits, n), "a", a_traits, n);
    const float r = n > 0 ? vec_dot_ref(t.type, w.data, a.data, n) : 0.0f;
    return Napi::Number::New(info.Env(), double(r));
  });
}

}  // namespace

void register_quants(Napi::Env env, Napi::Object exports) {
  exports.Set("typeInfo", Napi::Function::New(env, type_info, "typeInfo"));
  exports.Set("quantTypes", Napi::Function::New(env, quant_types, "quantTypes"));
  exports.Set("quantize", Napi::Function::New(env, quantize, "quantize"));
  exports.Set("quantizeInto", Napi::Function::New(env, quantize_into, "quantizeInto"));
  exports.Set("quantizeAsync", Napi::Function::New(env, quantize_async, "quantizeAsync"));
  exports.Set("dequantize", Napi::Function::New(env, dequantize, "dequantize"));
  exports.Set("vecDot", Napi::Function::New(env, vec_dot, "vecDot"));
}

}  // namespace tdm::addon
