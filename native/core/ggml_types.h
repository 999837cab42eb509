// Tensor element types as numbered by GGUF/ggml (ggml.h's enum ggml_type), with the
// block geometry each one stores. Ids must match the file format exactly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tdm {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

struct TypeTraits {
  const char* name;      // ggml's name, e.g. "q4_K"
  uint32_t block_size;   // elements per block
  uint32_t type_size;    // bytes per block
  bool computable;       // tandem can dequantize it and dot with it
};

// Traits of a known type id, or nullptr for an id ggml does not define.
const TypeTraits* type_traits(uint32_t type_id);

// The id of the type with this ggml name (case-insensitive: "q4_K", "Q4_K"), or -1.
int64_t type_id_by_name(const std::string& name);

// Bytes a row of n elements takes; n must be a multiple of the block size.
inline size_t row_bytes(const TypeTraits& t, uint64_t n) { return size_t(n / t.block_size) * t.type_size; }

// Bytes of one K or V row of head_dim elements in a KV cache of type f32, f16 or q8_0 (whole
// blocks of 32 only). Throws tdm::Error (TDM_UNSUPPORTED) for any other type or head size.
size_t kv_row_bytes(uint32_t type, int64_t head_dim);

}  // namespace tdm
