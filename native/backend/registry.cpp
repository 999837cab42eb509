// GPU backend discovery (see registry.h): dlopen, ABI check, device probe, choice of device.
#include "backend/registry.h"

#include <sys/stat.h>

#include <cstdlib>
#include <cstring>

#if defined(_WIN32)
#define TDM_NO_DLOPEN 1
#else
#include <dlfcn.h>
#endif

namespace tdm {

const char* const kGpuBackendKinds[2] = {"cuda", "hip"};

namespace {

constexpr int kMaxDevices = 16;

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string parent_dir(const std::string& p) {
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

// The addon's own file (this code is linked into it), e.g. <package>/build/Release/tandem.node.
std::string this_module_path() {
#if defined(TDM_NO_DLOPEN)
  return "";
#else
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&this_module_path), &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
#endif
}

bool gpu_disabled() {
  const char* v = std::getenv("TANDEM_GPU");
  return v != nullptr && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0 || std::strcmp(v, "false") == 0);
}

// The reason word for a failed tdm_backend_create status.
std::string reason_of(tdm_status st, const std::string& msg) {
  if (st == TDM_STATUS_DEVICE) return "no device";
  if (st == TDM_STATUS_UNSUPPORTED) return msg.find("ABI") != std::string::npos ? "ABI mismatch" : "unsupported device";
  return "init failed";
}

}  // namespace

BackendRegistry& BackendRegistry::instance() {
  static BackendRegistry* r = new BackendRegistry();  // never destroyed: backends may outlive static teardown
  return *r;
}

std::string BackendRegistry::library_dir() const {
  const char* env = std::getenv("TANDEM_GPU_LIB_DIR");
  if (env != nullptr && *env != '\0') return env;
  const std::string self = this_module_path();
  if (self.empty()) return "build/kernels";
  return parent_dir(parent_dir(self)) + "/kernels";
}

std::vector<BackendCandidate> BackendRegistry::candidates() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!scanned_) scan_locked();
  return candidates_;
}

std::vector<BackendCandidate> BackendRegistry::rescan() {
  std::lock_guard<std::mutex> lock(mu_);
  scan_locked();
  return candidates_;
}

const BackendRegistry::Library* BackendRegistry::load_locked(const std::string& kind, BackendCandidate* c) {
  for (const Library& l : libraries_)
    if (l.path == c->library) return &l;
#if defined(TDM_NO_DLOPEN)
  c->reason = "load failed";
  c->detail = "GPU backends are loaded with dlopen, which this platform build does not have";
  return nullptr;
#else
  void* h = dlopen(c->library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* e = dlerror();
    c->reason = "load failed";
    c->detail = e != nullptr ? e : "dlopen failed";
    return nullptr;
  }
  auto create = reinterpret_cast<tdm_backend_create_fn>(dlsym(h, TDM_BACKEND_ENTRY_NAME));
  if (create == nullptr) {
    c->reason = "load failed";
    c->detail = c->library + " does not export " TDM_BACKEND_ENTRY_NAME;
    dlclose(h);
    return nullptr;
  }
  libraries_.push_back(Library{kind, c->library, h, create});
  return &libraries_.back();
#endif
}

void BackendRegistry::scan_locked() {
  candidates_.clear();
  scanned_ = true;
  const std::string dir = library_dir();
  for (const char* kind : kGpuBackendKinds) {
    BackendCandidate base;
    base.kind = kind;
    base.library = dir + "/libtandem_" + kind + ".so";
    base.status = "unavailable";
    if (gpu_disabled()) {
      base.reason = "disabled";
      base.detail = "TANDEM_GPU is set to turn GPU backends off";
      candidates_.push_back(base);
      continue;
    }
    if (!file_exists(base.library)) {
      base.reason = "library missing";
      base.detail = base.library + " is not built (npm run build:gpu builds it where " +
                    (std::strcmp(kind, "cuda") == 0 ? "nvcc" : "hipcc") + " is installed)";
      candidates_.push_back(base);
      continue;
    }
    const Library* lib = load_locked(kind, &base);
    if (lib == nullptr) {
      candidates_.push_back(base);
      continue;
    }
    for (int32_t dev = 0; dev < kMaxDevices; ++dev) {
      BackendCandidate c = base;
      c.device = dev;
      tdm_backend_params p{};
      p.abi_version = TDM_BACKEND_ABI_VERSION;
      p.device = dev;
      tdm_backend b{};
      char err[512] = {0};
      const tdm_status st = lib->create(&p, &b, err, sizeof err);
      if (st == TDM_STATUS_BAD_ARGUMENT && dev > 0) break;  // past the last device
      if (st != TDM_STATUS_OK) {
        c.reason = reason_of(st, err);
        c.detail = err;
        if (c.reason == "no device") c.device = -1;
        candidates_.push_back(c);
        break;
      }
      if (b.iface == nullptr || b.iface->abi_version != TDM_BACKEND_ABI_VERSION || b.iface->struct_size < sizeof(tdm_backend_iface)) {
        c.reason = "ABI mismatch";
        c.detail = b.iface == nullptr ? "the library returned no table"
                                      : "the library's table is ABI " + std::to_string(b.iface->abi_version) + ", " +
                                            std::to_string(b.iface->struct_size) + " bytes; this addon needs ABI " +
                                            std::to_string(TDM_BACKEND_ABI_VERSION) + ", " +
                                            std::to_string(sizeof(tdm_backend_iface)) + " bytes";
        if (b.iface != nullptr && b.ctx != nullptr && b.iface->destroy != nullptr) b.iface->destroy(b.ctx);
        candidates_.push_back(c);
        break;
      }
      c.device_name = b.iface->device_name(b.ctx);
      uint64_t free_b = 0, total_b = 0;
      if (b.iface->memory(b.ctx, &free_b, &total_b) == TDM_STATUS_OK) {
        c.free_bytes = free_b;
        c.total_bytes = total_b;
      }
      c.status = "available";
      b.iface->destroy(b.ctx);
      candidates_.push_back(c);
    }
  }
  // The best device: most total memory, then most free; earlier kinds win ties.
  BackendCandidate* best = nullptr;
  for (BackendCandidate& c : candidates_) {
    if (c.status != "available") continue;
    if (best == nullptr || c.total_bytes > best->total_bytes ||
        (c.total_bytes == best->total_bytes && c.free_bytes > best->free_bytes))
      best = &c;
  }
  for (BackendCandidate& c : candidates_) {
    if (c.status != "available") continue;
    if (&c == best) c.status = "selected";
    else c.reason = "another device has more memory";
  }
}

std::unique_ptr<Backend> BackendRegistry::open(const std::string& kind, int32_t device) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!scanned_) scan_locked();
  const BackendCandidate* pick = nullptr;
  for (const BackendCandidate& c : candidates_) {
    const bool match = kind.empty() ? c.status == "selected" : (c.kind == kind && (device < 0 || c.device == device));
    if (match && (pick == nullptr || c.status != "unavailable")) pick = &c;
  }
  if (pick == nullptr) {
    std::string why = kind.empty() ? "no GPU backend is available" : "no " + kind + " device " + std::to_string(device);
    for (const BackendCandidate& c : candidates_)
      if (kind.empty() || c.kind == kind) why += "; " + c.kind + ": " + c.reason + (c.detail.empty() ? "" : " (" + c.detail + ")");
    throw Error(code::backend_unavailable, why);
  }
  if (pick->status == "unavailable")
    throw Error(code::backend_unavailable, pick->kind + " backend unavailable: " + pick->reason + " (" + pick->detail + ")");
  const Library* lib = nullptr;
  for (const Library& l : libraries_)
    if (l.path == pick->library) lib = &l;
  if (lib == nullptr) throw Error(code::backend_unavailable, pick->kind + " library is not loaded");
  tdm_backend_params p{};
  p.abi_version = TDM_BACKEND_ABI_VERSION;
  p.device = pick->device;
  tdm_backend b{};
  char err[512] = {0};
  const tdm_status st = lib->create(&p, &b, err, sizeof err);
  if (st != TDM_STATUS_OK)
    throw Error(code::backend_unavailable, "cannot start " + pick->kind + " device " + std::to_string(pick->device) + ": " + err);
  return std::make_unique<Backend>(b);
}

}  // namespace tdm
