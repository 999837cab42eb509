// The one error type native code throws. The addon turns it into a JS Error with
// `code` set; nothing under native/ may abort or exit.
#pragma once
#include <stdexcept>
#include <string>

namespace tdm {

// Error codes shared with src/native/errors.ts.
namespace code {
constexpr const char* bad_gguf = "TDM_BAD_GGUF";
constexpr const char* io = "TDM_IO";
constexpr const char* not_found = "TDM_NOT_FOUND";
constexpr const char* unsupported = "TDM_UNSUPPORTED";
constexpr const char* bad_argument = "TDM_BAD_ARGUMENT";
constexpr const char* oom = "TDM_OOM";
constexpr const char* aborted = "TDM_ABORTED";
constexpr const char* backend_unavailable = "TDM_BACKEND_UNAVAILABLE";
}  // namespace code

class Error : public std::runtime_error {
 public:
  Error(const char* code, const std::string& message) : std::runtime_error(message), code_(code) {}
  const char* code() const { return code_; }

 private:
  const char* code_;
};

}  // namespace tdm
