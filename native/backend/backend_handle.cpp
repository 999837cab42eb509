// Backend ownership and status-to-error conversion (see backend_handle.h).
#include "backend/backend_handle.h"

namespace tdm {

namespace {
const char* code_of(tdm_status st) {
  switch (st) {
    case TDM_STATUS_BAD_ARGUMENT: return code::bad_argument;
    case TDM_STATUS_UNSUPPORTED: return code::unsupported;
    case TDM_STATUS_OOM: return code::oom;
    case TDM_STATUS_DEVICE: return code::backend_unavailable;
    default: return "TDM_INTERNAL";
  }
}
}  // namespace

std::unique_ptr<Backend> Backend::create_cpu(int n_threads, const char* variant) {
  tdm_backend_params p{};
  p.abi_version = TDM_BACKEND_ABI_VERSION;
  p.device = 0;
  p.n_threads = n_threads;
  p.variant = variant;
  tdm_backend b{};
  char err[512] = {0};
  tdm_status st = tdm_cpu_backend_create(&p, &b, err, sizeof err);
  if (st != TDM_STATUS_OK) throw Error(code_of(st), std::string("cannot start the CPU backend: ") + err);
  return std::make_unique<Backend>(b);
}

void Backend::check(tdm_status st, const char* what) const {
  if (st == TDM_STATUS_OK) return;
  throw Error(code_of(st), std::string(what) + " on " + kind() + ": " + b_.iface->last_error(b_.ctx));
}

void* Backend::alloc(size_t bytes) {
  void* p = nullptr;
  check(b_.iface->buffer_alloc(b_.ctx, bytes, &p), "buffer_alloc");
  return p;
}

}  // namespace tdm
