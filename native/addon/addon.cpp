// Node-API entry point: each binding file registers its functions on the exports.
#include <napi.h>

namespace tdm::addon {
void register_gguf(Napi::Env env, Napi::Object exports);
void register_quants(Napi::Env env, Napi::Object exports);
void register_synth(Napi::Env env, Napi::Object exports);
void register_sampling(Napi::Env env, Napi::Object exports);
void register_model(Napi::Env env, Napi::Object exports);
void register_membw(Napi::Env env, Napi::Object exports);
void register_backends(Napi::Env env, Napi::Object exports);
void register_backend_ops(Napi::Env env, Napi::Object exports);
void register_crash_trace(Napi::Env env, Napi::Object exports);
}  // namespace tdm::addon

static Napi::Object init(Napi::Env env, Napi::Object exports) {
  tdm::addon::register_gguf(env, exports);
  tdm::addon::register_quants(env, exports);
  tdm::addon::register_synth(env, exports);
  tdm::addon::register_sampling(env, exports);
  tdm::addon::register_model(env, exports);
  tdm::addon::register_membw(env, exports);
  tdm::addon::register_backends(env, exports);
  tdm::addon::register_backend_ops(env, exports);
  tdm::addon::register_crash_trace(env, exports);
  return exports;
}

NODE_API_MODULE(tandem, init)
