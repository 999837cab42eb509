// Helpers shared by the addon's binding files: argument checks and the one place
// where a tdm::Error becomes a JS Error carrying `code`.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"

namespace tdm::addon {

inline Napi::Error to_js_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

// Runs `body`, turning any C++ exception into a thrown JS Error with a code.
template <typename F>
auto guarded(const Napi::CallbackInfo& info, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    throw to_js_error(info.Env(), e.code(), e.what());
  } catch (const std::bad_alloc&) {
    throw to_js_error(info.Env(), code::oom, "out of host memory");
  } catch (const std::exception& e) {
    throw to_js_error(info.Env(), "TDM_INTERNAL", e.what());
  }
}

[[noreturn]] inline void bad_arg(const std::string& what) { throw Error(code::bad_argument, what); }

inline std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString()) bad_arg(std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

inline double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) bad_arg(std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

inline uint32_t arg_u32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  double v = arg_number(info, i, name);
  if (!(v >= 0 && v <= 4294967295.0) || v != double(uint32_t(v))) bad_arg(std::string(name) + " must be a non-negative integer");
  return uint32_t(v);
}

// A typed array or Buffer argument as raw bytes.
struct ByteView {
  uint8_t* data;
  size_t size;
};
inline ByteView arg_bytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray()) bad_arg(std::string(name) + " must be a typed array or Buffer");
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  Napi::ArrayBuffer ab = ta.ArrayBuffer();
  return ByteView{static_cast<uint8_t*>(ab.Data()) + ta.ByteOffset(), ta.ByteLength()};
}

// An optional Uint8Array of sampling's allowed-token bits (SamplingConfig::allowed), copied:
// undefined gives an empty mask (every token allowed).
inline std::vector<uint8_t> allowed_mask(const Napi::Value& v, const std::string& what) {
  if (v.IsUndefined()) return {};
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) bad_arg(what + " must be a Uint8Array");
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ElementLength() == 0) bad_arg(what + " must not be empty");
  return std::vector<uint8_t>(a.Data(), a.Data() + a.ElementLength());
}

}  // namespace tdm::addon
