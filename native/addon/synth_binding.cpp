// JS face of synthetic-weight generation (filled in by the make-model work).
#include "addon/napi_util.h"

namespace tdm::addon {
void register_synth(Napi::Env env, Napi::Object exports) {}
}  // namespace tdm::addon
