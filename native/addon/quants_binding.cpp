// JS face of the quant types (filled in by the quants work).
#include "addon/napi_util.h"

namespace tdm::addon {
void register_quants(Napi::Env env, Napi::Object exports) {}
}  // namespace tdm::addon
