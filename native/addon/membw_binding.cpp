// JS face of the read-bandwidth probe (cpu/membw.h): measureReadBandwidth(bytes, threads,
// passes) runs on a libuv worker so that the bench's event loop (progress, timers) runs on.
#include "addon/napi_util.h"
#include "cpu/membw.h"

namespace tdm::addon {

namespace {

class BandwidthWorker : public Napi::AsyncWorker {
 public:
  BandwidthWorker(Napi::Env env, size_t bytes, int threads, int passes)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), bytes_(bytes), threads_(threads), passes_(passes) {}
  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      result_ = cpu::measure_read_bandwidth(bytes_, threads_, passes_);
    } catch (const Error& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = code::oom;
      SetError("bandwidth probe: out of host memory");
    } catch (const std::exception& e) {
      code_ = "TDM_INTERNAL";
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("bytesPerSecond", Napi::Number::New(env, result_.bytes_per_second));
    o.Set("bestSeconds", Napi::Number::New(env, result_.best_seconds));
    o.Set("bytes", Napi::Number::New(env, double(result_.bytes)));
    o.Set("threads", Napi::Number::New(env, result_.threads));
    o.Set("passes", Napi::Number::New(env, result_.passes));
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(to_js_error(Env(), code_, e.Message()).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  size_t bytes_;
  int threads_;
  int passes_;
  cpu::ReadBandwidth result_{};
  const char* code_ = "TDM_INTERNAL";
};

// (bytes, threads, passes) -> Promise<{bytesPerSecond, bestSeconds, bytes, threads, passes}>
Napi::Value measure_read_bandwidth(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const double bytes = arg_number(info, 0, "bytes");
    if (!(bytes >= 0 && bytes <= 9007199254740992.0) || bytes != double(size_t(bytes))) bad_arg("bytes must be a non-negative integer");
    const uint32_t threads = arg_u32(info, 1, "threads");
    const uint32_t passes = arg_u32(info, 2, "passes");
    // Ranges are checked here too, so that a bad call rejects at once rather than on the worker.
    if (bytes < double(1 << 20)) bad_arg("bytes must be at least 1 MiB");
    if (threads < 1 || threads > 1024) bad_arg("threads must be 1 to 1024");
    if (passes < 1 || passes > 1000) bad_arg("passes must be 1 to 1000");
    auto* worker = new BandwidthWorker(info.Env(), size_t(bytes), int(threads), int(passes));
    Napi::Promise p = worker->promise();
    worker->Queue();
    return p;
  });
}

}  // namespace

void register_membw(Napi::Env env, Napi::Object exports) {
  exports.Set("measureReadBandwidth", Napi::Function::New(env, measure_read_bandwidth, "measureReadBandwidth"));
}

}  // namespace tdm::addon
