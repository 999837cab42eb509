// The registry of GPU backends: finds libtandem_<kind>.so in the package's build folder at run
// time (dlopen, so the addon itself never links CUDA or ROCm and loads where neither exists),
// checks each library's ABI version and table size, probes its devices, picks the best one
// (most device memory), and records for every candidate why it is or is not used.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_handle.h"

namespace tdm {

// One GPU library, or one device of a library that loaded.
struct BackendCandidate {
  std::string kind;         // "cuda", "hip"
  std::string library;      // path of the library file
  int32_t device = -1;      // device index inside the library; -1 when no device was reached
  std::string device_name;  // as the backend reports it ("" when no device was reached)
  uint64_t free_bytes = 0;  // device memory free at scan time (bytes)
  uint64_t total_bytes = 0;
  // "selected" (the registry's pick), "available" (usable, not picked) or "unavailable".
  std::string status;
  // Why: "" when selected; "another device has more memory"; or, when unavailable, one of
  // "disabled", "library missing", "load failed", "ABI mismatch", "no device",
  // "unsupported device", "init failed".
  std::string reason;
  std::string detail;  // the loader's or the library's own message
};

// Library kinds the registry looks for, in preference order for equal memory.
extern const char* const kGpuBackendKinds[2];

class BackendRegistry {
 public:
  // The process-wide registry (scans on first use; thread-safe).
  static BackendRegistry& instance();

  // The candidates of the latest scan, scanning first if there was none.
  std::vector<BackendCandidate> candidates();
  // Forgets the last scan and scans again (libraries stay loaded once loaded).
  std::vector<BackendCandidate> rescan();
  // The folder searched: $TANDEM_GPU_LIB_DIR, else build/kernels next to the addon's build/Release.
  std::string library_dir() const;

  // Starts a backend on a GPU device: kind "" and device -1 take the selected candidate.
  // Throws tdm::Error(TDM_BACKEND_UNAVAILABLE) naming the reason when that device cannot be used.
  std::unique_ptr<Backend> open(const std::string& kind = "", int32_t device = -1);

 private:
  BackendRegistry() = default;
  struct Library {
    std::string kind;
    std::string path;
    void* handle = nullptr;
    tdm_backend_create_fn create = nullptr;
  };
  void scan_locked();
  const Library* load_locked(const std::string& kind, BackendCandidate* c);

  std::mutex mu_;
  bool scanned_ = false;
  std::vector<BackendCandidate> candidates_;
  std::deque<Library> libraries_;   // by path; never unloaded: a GPU runtime must not be unmapped under live threads
};

}  // namespace tdm
