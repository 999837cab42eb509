// JS face of the GGUF reader: open a file, read its metadata and tensor table as
// plain JS values, and view tensor bytes in place (an external buffer over the mmap).
#include <cstring>
#include <memory>
#include <string>

#include "addon/napi_util.h"
#include "core/gguf.h"

namespace tdm::addon {

namespace {

Napi::Value scalar_to_js(Napi::Env env, GgufValueType type, const uint8_t* p) {
  auto num = [&](auto v) { return Napi::Number::New(env, double(v)); };
  switch (type) {
    case GgufValueType::U8: return num(*p);
    case GgufValueType::I8: return num(int8_t(*p));
    case GgufValueType::U16: { uint16_t v; std::memcpy(&v, p, 2); return num(v); }
    case GgufValueType::I16: { int16_t v; std::memcpy(&v, p, 2); return num(v); }
    case GgufValueType::U32: { uint32_t v; std::memcpy(&v, p, 4); return num(v); }
    case GgufValueType::I32: { int32_t v; std::memcpy(&v, p, 4); return num(v); }
    case GgufValueType::F32: { float v; std::memcpy(&v, p, 4); return num(v); }
    case GgufValueType::F64: { double v; std::memcpy(&v, p, 8); return num(v); }
    case GgufValueType::BOOL: return Napi::Boolean::New(env, *p != 0);
    case GgufValueType::U64: { uint64_t v; std::memcpy(&v, p, 8); return Napi::BigInt::New(env, v); }
    case GgufValueType::I64: { int64_t v; std::memcpy(&v, p, 8); return Napi::BigInt::New(env, v); }
    default: return env.Undefined();
  }
}

napi_typedarray_type typed_array_kind(GgufValueType t, bool* ok) {
  *ok = true;
  switch (t) {
    case GgufValueType::U8: return napi_uint8_array;
    case GgufValueType::I8: return napi_int8_array;
    case GgufValueType::U16: return napi_uint16_array;
    case GgufValueType::I16: return napi_int16_array;
    case GgufValueType::U32: return napi_uint32_array;
    case GgufValueType::I32: return napi_int32_array;
    case GgufValueType::F32: return napi_float32_array;
    case GgufValueType::F64: return napi_float64_array;
    case GgufValueType::U64: return napi_biguint64_array;
    case GgufValueType::I64: return napi_bigint64_array;
    default: *ok = false; return napi_uint8_array;
  }
}

class ValueReader {
 public:
  ValueReader(Napi::Env env, const GgufFile& f) : env_(env), f_(f), long_(f.version() >= 2) {}

  uint64_t count_at(uint64_t off, uint64_t* n) const {
    if (long_) { std::memcpy(n, f_.at(off), 8); return 8; }
    uint32_t v; std::memcpy(&v, f_.at(off), 4); *n = v; return 4;
  }

  // Converts the value at `off`; sets *size to the bytes it took.
  Napi::Value value(GgufValueType type, uint64_t off, uint64_t* size) const {
    if (type == GgufValueType::STRING) {
      uint64_t n; uint64_t h = count_at(off, &n);
      *size = h + n;
      return Napi::String::New(env_, reinterpret_cast<const char*>(f_.at(off + h)), n);
    }
    if (type == GgufValueType::ARRAY) return array(off, size);
    *size = gguf_scalar_size(type);
    return scalar_to_js(env_, type, f_.at(off));
  }

  // An array value as {elementType, value}: numbers in a typed array, others in a JS array.
  Napi::Object array(uint64_t off, uint64_t* size) const {
    uint32_t et_raw; std::memcpy(&et_raw, f_.at(off), 4);
    GgufValueType et = GgufValueType(et_raw);
    uint64_t n; uint64_t h = 4 + count_at(off + 4, &n);
    Napi::Object out = Napi::Object::New(env_);
    out.Set("elementType", gguf_type_name(et));
    bool typed;
    napi_typedarray_type kind = typed_array_kind(et, &typed);
    uint64_t fixed = gguf_scalar_size(et);
    if (typed) {
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env_, n * fixed);
      if (n) std::memcpy(ab.Data(), f_.at(off + h), n * fixed);
      napi_value ta;
      if (napi_create_typedarray(env_, kind, n, ab, 0, &ta) != napi_ok) throw Napi::Error::New(env_, "typed array creation failed");
      out.Set("value", Napi::Value(env_, ta));
      *size = h + n * fixed;
      return out;
    }
    if (et == GgufValueType::STRING) {
      Napi::Value packed = packed_strings(off + h, n, size);
      if (!packed.IsUndefined()) {
        out.Set("packed", packed);
        *size += h;
        return out;
      }
    }
    Napi::Array arr = Napi::Array::New(env_, n);
    uint64_t pos = off + h;
    for (uint64_t i = 0; i < n; i++) {
      uint64_t sz;
      if (et == GgufValueType::ARRAY) {
        arr.Set(uint32_t(i), array(pos, &sz));
      } else {
        arr.Set(uint32_t(i), value(et, pos, &sz));
      }
      pos += sz;
    }
    out.Set("value", arr);
    *size = pos - off;
    return out;
  }

  // A string array as one JS string and the UTF-16 offset where each element starts (n + 1
  // of them): setting a vocabulary's 100k+ strings one by one costs far more than splitting
  // one string in JS. Undefined (the caller converts element by element) when an element is
  // not valid UTF-8, whose replacement characters would shift the offsets.
  Napi::Value packed_strings(uint64_t off, uint64_t n, uint64_t* size) const {
    std::string all;
    Napi::Uint32Array starts = Napi::Uint32Array::New(env_, size_t(n) + 1);
    uint64_t pos = off;
    uint32_t units = 0;
    for (uint64_t i = 0; i < n; i++) {
      uint64_t len; uint64_t h = count_at(pos, &len);
      const auto* p = reinterpret_cast<const unsigned char*>(f_.at(pos + h));
      starts[size_t(i)] = units;
      uint32_t u = 0;
      if (!utf16_units(p, len, &u)) return env_.Undefined();
      units += u;
      all.append(reinterpret_cast<const char*>(p), size_t(len));
      pos += h + len;
    }
    starts[size_t(n)] = units;
    *size = pos - off;
    Napi::Object packed = Napi::Object::New(env_);
    packed.Set("text", Napi::String::New(env_, all));
    packed.Set("starts", starts);
    return packed;
  }

  // UTF-16 code units of a strictly valid UTF-8 string; false for anything V8 would replace.
  static bool utf16_units(const unsigned char* p, uint64_t n, uint32_t* units) {
    uint64_t i = 0;
    while (i < n) {
      const unsigned char b = p[i];
      int extra;
      uint32_t cp;
      if (b < 0x80) { extra = 0; cp = b; }
      else if ((b & 0xE0) == 0xC0) { extra = 1; cp = b & 0x1F; }
      else if ((b & 0xF0) == 0xE0) { extra = 2; cp = b & 0x0F; }
      else if ((b & 0xF8) == 0xF0) { extra = 3; cp = b & 0x07; }
      else return false;
      if (i + uint64_t(extra) >= n) return false;
      for (int k = 1; k <= extra; k++) {
        if ((p[i + k] & 0xC0) != 0x80) return false;
        cp = (cp << 6) | (p[i + k] & 0x3F);
      }
      static const uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
      if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
      *units += cp >= 0x10000 ? 2 : 1;
      i += uint64_t(extra) + 1;
    }
    return true;
  }

 private:
  Napi::Env env_;
  const GgufFile& f_;
  bool long_;
};

class GgufHandle : public Napi::ObjectWrap<GgufHandle> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "GgufHandle",
                       {InstanceMethod("info", &GgufHandle::info), InstanceMethod("tensorData", &GgufHandle::tensor_data),
                        InstanceMethod("close", &GgufHandle::close)});
  }

  GgufHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GgufHandle>(info) {
    guarded(info, [&] {
      std::string path = arg_string(info, 0, "path");
      file_ = GgufFile::open(path);
      return 0;
    });
  }

  const std::shared_ptr<GgufFile>& file(Napi::Env env) const {
    if (!file_) throw to_js_error(env, code::bad_argument, "GGUF file is closed");
    return file_;
  }

 private:
  std::shared_ptr<GgufFile> file_;

  Napi::Value info(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      Napi::Env env = info.Env();
      const GgufFile& f = *file(env);
      Napi::Object out = Napi::Object::New(env);
      out.Set("path", f.path());
      out.Set("version", f.version());
      out.Set("alignment", f.alignment());
      out.Set("dataOffset", double(f.data_offset()));
      out.Set("fileSize", double(f.file_size()));
      ValueReader reader(env, f);
      Napi::Array meta = Napi::Array::New(env, f.kvs().size());
      for (size_t i = 0; i < f.kvs().size(); i++) {
        const GgufKV& kv = f.kvs()[i];
        Napi::Object e = Napi::Object::New(env);
        e.Set("key", kv.key);
        e.Set("type", gguf_type_name(kv.type));
        uint64_t sz;
        e.Set("value", reader.value(kv.type, kv.offset, &sz));
        meta.Set(uint32_t(i), e);
      }
      out.Set("metadata", meta);
      Napi::Array tensors = Napi::Array::New(env, f.tensors().size());
      for (size_t i = 0; i < f.tensors().size(); i++) {
        const GgufTensor& t = f.tensors()[i];
        Napi::Object e = Napi::Object::New(env);
        e.Set("name", t.name);
        e.Set("typeId", t.type);
        e.Set("type", type_traits(t.type)->name);
        Napi::Array shape = Napi::Array::New(env, t.ne.size());
        for (size_t d = 0; d < t.ne.size(); d++) shape.Set(uint32_t(d), double(t.ne[d]));
        e.Set("shape", shape);
        e.Set("offset", double(t.offset));
        e.Set("nBytes", double(t.n_bytes));
        tensors.Set(uint32_t(i), e);
      }
      out.Set("tensors", tensors);
      return out;
    });
  }

  // tensorData(name): a Uint8Array over the mapped bytes that keeps the mapping alive; where the
  // runtime forbids external buffers (Electron's V8 memory cage) it is a copy instead.
  Napi::Value tensor_data(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      Napi::Env env = info.Env();
      const GgufFile& f = *file(env);
      std::string name = arg_string(info, 0, "tensor name");
      const GgufTensor* t = f.find_tensor(name);
      if (!t) throw Error(code::bad_argument, f.path() + ": no tensor named '" + name + "'");
      auto* keep = new std::shared_ptr<FileMapping>(f.mapping());
      uint8_t* p = const_cast<uint8_t*>(f.tensor_data(*t));
      auto release = [](Napi::Env, uint8_t*, std::shared_ptr<FileMapping>* k) { delete k; };
      Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::NewOrCopy(env, p, t->n_bytes, release, keep);
      return Napi::Uint8Array::New(env, t->n_bytes, buf.ArrayBuffer(), buf.ByteOffset());
    });
  }

  Napi::Value close(const Napi::CallbackInfo& info) {
    file_.reset();
    return info.Env().Undefined();
  }
};

}  // namespace

void register_gguf(Napi::Env env, Napi::Object exports) { exports.Set("GgufHandle", GgufHandle::define(env)); }

}  // namespace tdm::addon
