// Node-API entry point: each binding file registers its functions on the exports.
#include <napi.h>

namespace tdm::addon {
void register_gguf(Napi::Env env, Napi::Object exports);
void register_quants(Napi::Env env, Napi::Object exports);
void register_synth(Napi::Env env, Napi::Object exports);
}  // namespace tdm::addon

static Napi::Object init(Napi::Env env, Napi::Object exports) {
  tdm::addon::register_gguf(env, exports);
  tdm::addon::register_quants(env, exports);
  tdm::addon::register_synth(env, exports);
  return exports;
}

NODE_API_MODULE(tandem, init)
