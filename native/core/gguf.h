// GGUF reader: memory-maps a model file, validates its header, metadata and tensor
// table against the file's size, and hands out views; weights are never copied.
// Format: ggml's docs/gguf.md (versions 1-3; v1 uses 32-bit counts and lengths).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/ggml_types.h"

namespace tdm {

enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

// A read-only mapping of a whole file; shared by every view into it.
class FileMapping {
 public:
  explicit FileMapping(const std::string& path);
  ~FileMapping();
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// One metadata entry. Values stay in the mapping: `offset` is where the value
// (after its type tag) starts; arrays also record their element type and length.
struct GgufKV {
  std::string key;
  GgufValueType type;
  uint64_t offset;
  GgufValueType elem_type = GgufValueType::U8;  // arrays only
  uint64_t count = 0;                           // arrays only
};

struct GgufTensor {
  std::string name;
  uint32_t type;              // ggml type id
  std::vector<uint64_t> ne;   // dimensions, innermost first (ne[0] is the row length)
  uint64_t offset;            // bytes from the start of the data section
  uint64_t n_bytes;
  uint64_t n_elements() const;
};

class GgufFile {
 public:
  // Maps and validates the file; throws tdm::Error (TDM_NOT_FOUND, TDM_IO, TDM_BAD_GGUF).
  static std::shared_ptr<GgufFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return map_->size(); }
  const std::vector<GgufKV>& kvs() const { return kvs_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const std::shared_ptr<FileMapping>& mapping() const { return map_; }

  const GgufKV* find(std::string_view key) const;
  const GgufTensor* find_tensor(std::string_view name) const;
  const uint8_t* tensor_data(const GgufTensor& t) const { return map_->data() + data_offset_ + t.offset; }

  // Typed scalar access; throw TDM_BAD_GGUF when the key is present with another type,
  // return the fallback when it is absent.
  uint64_t get_uint(std::string_view key, uint64_t fallback) const;
  double get_float(std::string_view key, double fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key, const std::string& fallback) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Raw value bytes (for the addon's conversion to JS values).
  const uint8_t* at(uint64_t offset) const { return map_->data() + offset; }
  // The byte size of a value of `type` at `offset` (strings and arrays included).
  uint64_t value_size(GgufValueType type, uint64_t offset) const;

 private:
  std::string path_;
  std::shared_ptr<FileMapping> map_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKV> kvs_;
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::unordered_map<std::string, size_t> tensor_index_;
  bool long_counts() const { return version_ >= 2; }
  friend class GgufParser;
};

// Byte size of a fixed-size value type; 0 for STRING and ARRAY.
uint64_t gguf_scalar_size(GgufValueType type);
const char* gguf_type_name(GgufValueType type);

}  // namespace tdm
