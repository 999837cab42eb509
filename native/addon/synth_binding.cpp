// JS face of synthetic-weight generation: seeded normal values written straight into
// a Float32Array, on the calling thread or (for big tensors) on a libuv worker.
#include <cmath>
#include <string>

#include "addon/napi_util.h"
#include "cpu/rng.h"

namespace tdm::addon {

namespace {

uint64_t arg_index(const Napi::CallbackInfo& info, size_t i, const char* name) {
  double v = arg_number(info, i, name);
  if (!(v >= 0) || v != std::floor(v) || v > double(kRngMaxIndex))
    bad_arg(std::string(name) + " must be an integer from 0 to 2^53");
  return uint64_t(v);
}

struct FillArgs {
  float* out;
  size_t n;
  uint64_t seed, stream, offset;
  float mean, std;
};

// (out: Float32Array, seed, stream, offset, mean, std), checked.
FillArgs fill_args(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    bad_arg("out must be a Float32Array");
  Napi::Float32Array out = info[0].As<Napi::Float32Array>();
  FillArgs a{};
  a.out = out.Data();
  a.n = out.ElementLength();
  a.seed = arg_index(info, 1, "seed");
  a.stream = arg_index(info, 2, "stream");
  a.offset = arg_index(info, 3, "offset");
  a.mean = float(arg_number(info, 4, "mean"));
  a.std = float(arg_number(info, 5, "std"));
  return a;
}

void run_fill(const FillArgs& a) { fill_normal(a.out, a.n, a.seed, a.stream, a.offset, a.mean, a.std); }

// Fills on a worker thread; holds a reference to the array until it settles.
class FillWorker : public Napi::AsyncWorker {
 public:
  FillWorker(Napi::Env env, Napi::Object array, FillArgs args)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), args_(args) {
    array_ = Napi::Persistent(array);
  }
  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      run_fill(args_);
    } catch (const Error& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::exception& e) {
      code_ = "TDM_INTERNAL";
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(to_js_error(Env(), code_, e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference array_;
  FillArgs args_;
  const char* code_ = "TDM_INTERNAL";
};

Napi::Value fill_normal_sync(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    run_fill(fill_args(info));
    return info.Env().Undefined();
  });
}

Napi::Value fill_normal_async(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    FillArgs args = fill_args(info);
    auto* worker = new FillWorker(info.Env(), info[0].As<Napi::Object>(), args);
    Napi::Promise p = worker->promise();
    worker->Queue();
    return p;
  });
}

}  // namespace

void register_synth(Napi::Env env, Napi::Object exports) {
  exports.Set("fillNormal", Napi::Function::New(env, fill_normal_sync, "fillNormal"));
  exports.Set("fillNormalAsync", Napi::Function::New(env, fill_normal_async, "fillNormalAsync"));
}

}  // namespace tdm::addon
