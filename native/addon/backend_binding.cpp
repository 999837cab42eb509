// JS face of the backend registry: `backends(rescan?)` lists the built-in CPU backend and every
// GPU candidate (kind, device, memory, status and the reason it is or is not used), so users and
// tests can see why tandem runs where it runs.
#include <memory>
#include <mutex>
#include <string>

#include "addon/napi_util.h"
#include "backend/backend_handle.h"
#include "backend/registry.h"

namespace tdm::addon {

namespace {

Napi::Object candidate_object(Napi::Env env, const BackendCandidate& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", c.kind);
  o.Set("library", c.library.empty() ? env.Null() : Napi::String::New(env, c.library));
  o.Set("device", c.device);
  o.Set("deviceName", c.device_name);
  o.Set("freeBytes", double(c.free_bytes));
  o.Set("totalBytes", double(c.total_bytes));
  o.Set("status", c.status);
  o.Set("reason", c.reason);
  o.Set("detail", c.detail);
  return o;
}

// The CPU entry: always available; its name and memory come from a one-thread CPU backend.
BackendCandidate cpu_candidate() {
  static std::once_flag once;
  static BackendCandidate cpu;
  std::call_once(once, [] {
    std::unique_ptr<Backend> b = Backend::create_cpu(1);
    cpu.kind = "cpu";
    cpu.device = 0;
    cpu.device_name = b->device_name();
    b->fn().memory(b->ctx(), &cpu.free_bytes, &cpu.total_bytes);
    cpu.status = "available";
  });
  return cpu;
}

// backends(rescan?: boolean) -> [{kind, library, device, deviceName, freeBytes, totalBytes, status, reason, detail}]
Napi::Value backends(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const bool rescan = info.Length() > 0 && info[0].ToBoolean().Value();
    BackendRegistry& reg = BackendRegistry::instance();
    const std::vector<BackendCandidate> gpus = rescan ? reg.rescan() : reg.candidates();
    Napi::Array out = Napi::Array::New(info.Env(), gpus.size() + 1);
    out.Set(0u, candidate_object(info.Env(), cpu_candidate()));
    for (size_t i = 0; i < gpus.size(); ++i) out.Set(uint32_t(i + 1), candidate_object(info.Env(), gpus[i]));
    return out;
  });
}

Napi::Value gpu_library_dir(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value { return Napi::String::New(info.Env(), BackendRegistry::instance().library_dir()); });
}

}  // namespace

void register_backends(Napi::Env env, Napi::Object exports) {
  exports.Set("backends", Napi::Function::New(env, backends, "backends"));
  exports.Set("gpuLibraryDir", Napi::Function::New(env, gpu_library_dir, "gpuLibraryDir"));
}

}  // namespace tdm::addon
