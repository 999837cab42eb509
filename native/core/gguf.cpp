// GGUF reader (see gguf.h). Every read is bounds-checked against the mapping, every
// count against the bytes left, so a corrupt file fails with TDM_BAD_GGUF and never
// allocates more than the file could describe.
#include "core/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace tdm {

namespace {
constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kMaxDims = 4;
constexpr uint32_t kMaxNesting = 8;
constexpr uint64_t kMaxKeyBytes = 1 << 16;
constexpr uint64_t kMaxReserve = 1 << 12;

std::string errno_text() { return std::strerror(errno); }

// Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(const uint8_t* p, uint64_t n) {
  uint64_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    if (c < 0x80) { i++; continue; }
    uint64_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return false;
    if (n - i < len) return false;
    for (uint64_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}
}  // namespace

FileMapping::FileMapping(const std::string& path) {
  if (path.find('\0') != std::string::npos) throw Error(code::bad_argument, "a GGUF path must not contain a NUL character");
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; the
  // S_ISREG check below then refuses it. It changes nothing for regular files.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) throw Error(code::not_found, path + ": no such file");
    throw Error(code::io, path + ": cannot open: " + errno_text());
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    std::string why = errno_text();
    ::close(fd);
    throw Error(code::io, path + ": cannot stat: " + why);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(code::bad_gguf, path + ": is a directory, not a GGUF file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(code::bad_gguf, path + ": is not a regular file");
  }
  size_ = uint64_t(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    throw Error(code::bad_gguf, path + ": file is empty");
  }
  void* p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error(code::io, path + ": cannot map: " + errno_text());
  data_ = static_cast<const uint8_t*>(p);
}

FileMapping::~FileMapping() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

uint64_t GgufTensor::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;
  return n;
}

uint64_t gguf_scalar_size(GgufValueType type) {
  switch (type) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    default: return 0;
  }
}

const char* gguf_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::U8: return "uint8";
    case GgufValueType::I8: return "int8";
    case GgufValueType::U16: return "uint16";
    case GgufValueType::I16: return "int16";
    case GgufValueType::U32: return "uint32";
    case GgufValueType::I32: return "int32";
    case GgufValueType::F32: return "float32";
    case GgufValueType::BOOL: return "bool";
    case GgufValueType::STRING: return "string";
    case GgufValueType::ARRAY: return "array";
    case GgufValueType::U64: return "uint64";
    case GgufValueType::I64: return "int64";
    case GgufValueType::F64: return "float64";
  }
  return "unknown";
}

// Sequential, bounds-checked reads over the mapping.
class GgufParser {
 public:
  GgufParser(GgufFile& f) : f_(f), data_(f.map_->data()), size_(f.map_->size()) {}

  void parse() {
    if (size_ < 8) fail("too short to be a GGUF file (" + std::to_string(size_) + " bytes)");
    if (u32() != kMagic) fail("wrong magic " + show_magic() + " (expected \"GGUF\"): not a GGUF file");
    f_.version_ = u32();
    if (f_.version_ < 1 || f_.version_ > 3) {
      uint32_t v = f_.version_;
      uint32_t swapped = (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
      if (swapped >= 1 && swapped <= 3) fail("big-endian GGUF (version " + std::to_string(swapped) + "); only little-endian files are supported");
      fail("unsupported GGUF version " + std::to_string(f_.version_) + " (1 to 3 are known)");
    }
    uint64_t n_tensors = count();
    uint64_t n_kv = count();
    // Each KV needs at least a key length, one key byte, a type tag and a one-byte value;
    // each tensor info a name length, one name byte, n_dims, one dimension, type and offset.
    const uint64_t cnt = f_.long_counts() ? 8 : 4;
    if (n_kv > left() / (cnt + 1 + 4 + 1)) fail("metadata count " + std::to_string(n_kv) + " exceeds what the file can hold");
    if (n_tensors > left() / (cnt + 1 + 4 + cnt + 4 + 8)) fail("tensor count " + std::to_string(n_tensors) + " exceeds what the file can hold");

    // Reserve little up front: a corrupt count must fail on the bytes, not on a huge allocation.
    f_.kvs_.reserve(std::min<uint64_t>(n_kv, kMaxReserve));
    for (uint64_t i = 0; i < n_kv; i++) read_kv();

    if (const GgufKV* kv = f_.find("general.alignment")) {
      if (kv->type != GgufValueType::U32) fail("general.alignment must be uint32");
      uint32_t a;
      std::memcpy(&a, data_ + kv->offset, 4);
      if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 20)) fail("general.alignment " + std::to_string(a) + " is not a power of two");
      f_.alignment_ = a;
    }

    f_.tensors_.reserve(std::min<uint64_t>(n_tensors, kMaxReserve));
    for (uint64_t i = 0; i < n_tensors; i++) read_tensor_info();

    uint64_t a = f_.alignment_;
    f_.data_offset_ = (pos_ + a - 1) / a * a;
    if (n_tensors > 0 && f_.data_offset_ > size_) fail("truncated before the tensor data section");
    check_tensor_data();
  }

 private:
  GgufFile& f_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint32_t depth_ = 0;

  std::string context_;  // "metadata 'key': " while reading that key's value

  [[noreturn]] void fail(const std::string& what) const { throw Error(code::bad_gguf, f_.path_ + ": " + context_ + what); }

  // The first four bytes, as text when printable, else as hex.
  std::string show_magic() const {
    std::string text = "\"";
    bool printable = true;
    for (int i = 0; i < 4; i++) {
      uint8_t c = data_[i];
      printable = printable && c >= 0x20 && c < 0x7f;
      text += char(c);
    }
    if (printable) return text + "\"";
    char hex[16];
    std::snprintf(hex, sizeof hex, "%02x %02x %02x %02x", data_[0], data_[1], data_[2], data_[3]);
    return hex;
  }
  uint64_t left() const { return size_ - pos_; }

  void need(uint64_t n, const char* what) const {
    if (n > left()) fail(std::string("truncated while reading ") + what + " at byte " + std::to_string(pos_));
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  uint32_t u32() { return read<uint32_t>("header"); }
  uint64_t count() { return f_.long_counts() ? read<uint64_t>("count") : read<uint32_t>("count"); }

  std::string string(const char* what, uint64_t max_len) {
    uint64_t len = count();
    if (len > max_len) fail(std::string(what) + " of " + std::to_string(len) + " bytes is too long");
    need(len, what);
    // Keys and names become JS strings and are looked up by them again: bytes that are
    // not UTF-8 would come back changed, so they are refused here.
    if (!valid_utf8(data_ + pos_, len)) fail(std::string(what) + " at byte " + std::to_string(pos_) + " is not valid UTF-8");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

  void skip_string() {
    uint64_t len = count();
    if (len > left()) fail("string of " + std::to_string(len) + " bytes runs past the end of the file (at byte " + std::to_string(pos_) + ")");
    pos_ += len;
  }

  GgufValueType value_type(const char* what) {
    uint32_t t = read<uint32_t>(what);
    if (t > uint32_t(GgufValueType::F64)) fail(std::string("unknown value type ") + std::to_string(t));
    return GgufValueType(t);
  }

  // Skips one value, validating it; returns nothing, moves pos_.
  void skip_value(GgufValueType type) {
    if (type == GgufValueType::STRING) return skip_string();
    if (type == GgufValueType::ARRAY) {
      if (++depth_ > kMaxNesting) fail("arrays nested deeper than " + std::to_string(kMaxNesting));
      GgufValueType elem = value_type("array element type");
      uint64_t n = count();
      uint64_t fixed = gguf_scalar_size(elem);
      if (fixed) {
        if (n > left() / fixed) fail("array of " + std::to_string(n) + " elements runs past the end of the file");
        pos_ += n * fixed;
      } else {
        if (n > left() / 4) fail("array of " + std::to_string(n) + " elements runs past the end of the file");
        for (uint64_t i = 0; i < n; i++) skip_value(elem);
      }
      depth_--;
      return;
    }
    uint64_t sz = gguf_scalar_size(type);
    need(sz, "value");
    if (type == GgufValueType::BOOL && data_[pos_] > 1) fail("bool value " + std::to_string(data_[pos_]) + " is not 0 or 1");
    pos_ += sz;
  }

  void read_kv() {
    GgufKV kv;
    kv.key = string("metadata key", kMaxKeyBytes);
    if (kv.key.empty()) fail("empty metadata key");
    context_ = "metadata '" + kv.key + "': ";
    kv.type = value_type("metadata value type");
    if (kv.type == GgufValueType::ARRAY) {
      uint64_t start = pos_;
      // Peek the element type and count, then rewind and validate the whole array.
      kv.elem_type = value_type("array element type");
      kv.count = count();
      pos_ = start;
      skip_value(kv.type);
      kv.offset = start;
    } else {
      kv.offset = pos_;
      skip_value(kv.type);
    }
    context_.clear();
    if (f_.kv_index_.count(kv.key)) fail("duplicate metadata key '" + kv.key + "'");
    f_.kv_index_.emplace(kv.key, f_.kvs_.size());
    f_.kvs_.push_back(std::move(kv));
  }

  void read_tensor_info() {
    GgufTensor t;
    t.name = string("tensor name", 1 << 12);
    if (t.name.empty()) fail("empty tensor name");
    uint32_t n_dims = read<uint32_t>("tensor dims");
    if (n_dims == 0 || n_dims > kMaxDims) fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
      uint64_t v = f_.long_counts() ? read<uint64_t>("tensor dims") : read<uint32_t>("tensor dims");
      if (v == 0 || v > (uint64_t(1) << 40)) fail("tensor '" + t.name + "' has absurd dimension " + std::to_string(v));
      if (n > (uint64_t(1) << 50) / v) fail("tensor '" + t.name + "' has too many elements");
      n *= v;
      t.ne.push_back(v);
    }
    t.type = read<uint32_t>("tensor type");
    const TypeTraits* tt = type_traits(t.type);
    if (!tt) fail("tensor '" + t.name + "' has unknown type id " + std::to_string(t.type));
    if (t.ne[0] % tt->block_size != 0)
      fail("tensor '" + t.name + "' row of " + std::to_string(t.ne[0]) + " is not a multiple of the " + tt->name + " block size " + std::to_string(tt->block_size));
    t.n_bytes = n / tt->block_size * tt->type_size;
    t.offset = read<uint64_t>("tensor offset");
    if (t.offset % f_.alignment_ != 0) fail("tensor '" + t.name + "' offset " + std::to_string(t.offset) + " is not aligned to " + std::to_string(f_.alignment_));
    if (f_.tensor_index_.count(t.name)) fail("duplicate tensor name '" + t.name + "'");
    f_.tensor_index_.emplace(t.name, f_.tensors_.size());
    f_.tensors_.push_back(std::move(t));
  }

  void check_tensor_data() {
    uint64_t data_size = size_ >= f_.data_offset_ ? size_ - f_.data_offset_ : 0;
    for (const GgufTensor& t : f_.tensors_) {
      if (t.offset > data_size || t.n_bytes > data_size - t.offset)
        fail("tensor '" + t.name + "' data (" + std::to_string(t.n_bytes) + " bytes at offset " + std::to_string(t.offset) +
             ") runs past the end of the file: truncated?");
    }
  }
};

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
  auto f = std::shared_ptr<GgufFile>(new GgufFile());
  f->path_ = path;
  f->map_ = std::make_shared<FileMapping>(path);
  GgufParser(*f).parse();
  return f;
}

const GgufKV* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

uint64_t GgufFile::value_size(GgufValueType type, uint64_t offset) const {
  const uint8_t* p = map_->data() + offset;
  auto cnt = [&](const uint8_t* q, uint64_t* n) -> uint64_t {
    if (long_counts()) { std::memcpy(n, q, 8); return 8; }
    uint32_t v; std::memcpy(&v, q, 4); *n = v; return 4;
  };
  if (type == GgufValueType::STRING) {
    uint64_t n; uint64_t h = cnt(p, &n);
    return h + n;
  }
  if (type == GgufValueType::ARRAY) {
    uint32_t et; std::memcpy(&et, p, 4);
    uint64_t n; uint64_t h = 4 + cnt(p + 4, &n);
    uint64_t fixed = gguf_scalar_size(GgufValueType(et));
    if (fixed) return h + n * fixed;
    uint64_t total = h;
    for (uint64_t i = 0; i < n; i++) total += value_size(GgufValueType(et), offset + total);
    return total;
  }
  return gguf_scalar_size(type);
}

namespace {
[[noreturn]] void wrong_type(const GgufFile& f, const GgufKV& kv, const char* want) {
  throw Error(code::bad_gguf, f.path() + ": metadata '" + kv.key + "' is " + gguf_type_name(kv.type) + ", expected " + want);
}
}  // namespace

uint64_t GgufFile::get_uint(std::string_view key, uint64_t fallback) const {
  const GgufKV* kv = find(key);
  if (!kv) return fallback;
  const uint8_t* p = at(kv->offset);
  switch (kv->type) {
    case GgufValueType::U8: return *p;
    case GgufValueType::U16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
    case GgufValueType::U32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
    case GgufValueType::U64: { uint64_t v; std::memcpy(&v, p, 8); return v; }
    case GgufValueType::I32: { int32_t v; std::memcpy(&v, p, 4); if (v < 0) wrong_type(*this, *kv, "a non-negative integer"); return uint64_t(v); }
    case GgufValueType::I64: { int64_t v; std::memcpy(&v, p, 8); if (v < 0) wrong_type(*this, *kv, "a non-negative integer"); return uint64_t(v); }
    default: wrong_type(*this, *kv, "an unsigned integer");
  }
}

double GgufFile::get_float(std::string_view key, double fallback) const {
  const GgufKV* kv = find(key);
  if (!kv) return fallback;
  const uint8_t* p = at(kv->offset);
  switch (kv->type) {
    case GgufValueType::F32: { float v; std::memcpy(&v, p, 4); return v; }
    case GgufValueType::F64: { double v; std::memcpy(&v, p, 8); return v; }
    default: wrong_type(*this, *kv, "a float");
  }
}

bool GgufFile::get_bool(std::string_view key, bool fallback) const {
  const GgufKV* kv = find(key);
  if (!kv) return fallback;
  if (kv->type != GgufValueType::BOOL) wrong_type(*this, *kv, "a bool");
  return *at(kv->offset) != 0;
}

std::string GgufFile::get_string(std::string_view key, const std::string& fallback) const {
  const GgufKV* kv = find(key);
  if (!kv) return fallback;
  if (kv->type != GgufValueType::STRING) wrong_type(*this, *kv, "a string");
  uint64_t n;
  uint64_t h;
  if (long_counts()) { std::memcpy(&n, at(kv->offset), 8); h = 8; }
  else { uint32_t v; std::memcpy(&v, at(kv->offset), 4); n = v; h = 4; }
  return std::string(reinterpret_cast<const char*>(at(kv->offset + h)), n);
}

}  // namespace tdm
