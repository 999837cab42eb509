// C++ side of the backend table: owns a tdm_backend, turns statuses into tdm::Error and
// gives the executor typed calls. Core code talks to devices only through this.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "core/error.h"

namespace tdm {

class Backend {
 public:
  // The built-in CPU backend with n_threads workers (<= 0 picks) and a kernel variant
  // (nullptr: the best this processor runs; "ref" or "avx2" forces one).
  static std::unique_ptr<Backend> create_cpu(int n_threads, const char* variant = nullptr);

  explicit Backend(tdm_backend b) : b_(b) {}
  ~Backend() {
    if (b_.ctx != nullptr) b_.iface->destroy(b_.ctx);
  }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  const tdm_backend_iface& fn() const { return *b_.iface; }
  tdm_backend_ctx* ctx() const { return b_.ctx; }
  const char* kind() const { return b_.iface->kind; }
  std::string device_name() const { return b_.iface->device_name(b_.ctx); }
  // Buffers are plain host memory (the CPU backend): host code may touch them directly.
  bool host_memory() const { return (b_.iface->caps(b_.ctx) & TDM_CAP_HOST_MEMORY) != 0; }

  // Throws tdm::Error (with the backend's message) unless st is TDM_STATUS_OK.
  void check(tdm_status st, const char* what) const;

  void* alloc(size_t bytes);
  void free(void* p) { b_.iface->buffer_free(b_.ctx, p); }

 private:
  tdm_backend b_;
};

// Device memory owned by one backend, freed with it.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* b, size_t bytes) : b_(b), p_(bytes ? b->alloc(bytes) : nullptr), n_(bytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : b_(o.b_), p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      b_ = o.b_;
      p_ = o.p_;
      n_ = o.n_;
      o.p_ = nullptr;
      o.n_ = 0;
    }
    return *this;
  }
  void reset() {
    if (p_ != nullptr) b_->free(p_);
    p_ = nullptr;
    n_ = 0;
  }
  void* data() const { return p_; }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }
  size_t size() const { return n_; }

 private:
  Backend* b_ = nullptr;
  void* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace tdm
