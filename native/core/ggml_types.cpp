// Block geometry per ggml type (from ggml's type_traits table; sizes are the format).
#include "core/ggml_types.h"

#include <cctype>
#include <string>

#include "core/error.h"

namespace tdm {

namespace {
constexpr uint32_t kMaxId = 40;

struct Table {
  TypeTraits entries[kMaxId];
  bool known[kMaxId];
};

constexpr Table make_table() {
  Table t{};
  auto set = [&t](GgmlType id, const char* name, uint32_t bs, uint32_t ts, bool computable) {
    t.entries[uint32_t(id)] = TypeTraits{name, bs, ts, computable};
    t.known[uint32_t(id)] = true;
  };
  set(GgmlType::F32, "f32", 1, 4, true);
  set(GgmlType::F16, "f16", 1, 2, true);
  set(GgmlType::Q4_0, "q4_0", 32, 18, true);
  set(GgmlType::Q4_1, "q4_1", 32, 20, true);
  set(GgmlType::Q5_0, "q5_0", 32, 22, true);
  set(GgmlType::Q5_1, "q5_1", 32, 24, true);
  set(GgmlType::Q8_0, "q8_0", 32, 34, true);
  set(GgmlType::Q8_1, "q8_1", 32, 36, true);
  set(GgmlType::Q2_K, "q2_K", 256, 84, true);
  set(GgmlType::Q3_K, "q3_K", 256, 110, true);
  set(GgmlType::Q4_K, "q4_K", 256, 144, true);
  set(GgmlType::Q5_K, "q5_K", 256, 176, true);
  set(GgmlType::Q6_K, "q6_K", 256, 210, true);
  set(GgmlType::Q8_K, "q8_K", 256, 292, true);
  set(GgmlType::IQ2_XXS, "iq2_xxs", 256, 66, true);
  set(GgmlType::IQ2_XS, "iq2_xs", 256, 74, true);
  set(GgmlType::IQ3_XXS, "iq3_xxs", 256, 98, true);
  set(GgmlType::IQ1_S, "iq1_s", 256, 50, false);
  set(GgmlType::IQ4_NL, "iq4_nl", 32, 18, true);
  set(GgmlType::IQ3_S, "iq3_s", 256, 110, true);
  set(GgmlType::IQ2_S, "iq2_s", 256, 82, true);
  set(GgmlType::IQ4_XS, "iq4_xs", 256, 136, true);
  set(GgmlType::I8, "i8", 1, 1, false);
  set(GgmlType::I16, "i16", 1, 2, false);
  set(GgmlType::I32, "i32", 1, 4, false);
  set(GgmlType::I64, "i64", 1, 8, false);
  set(GgmlType::F64, "f64", 1, 8, false);
  set(GgmlType::IQ1_M, "iq1_m", 256, 56, false);
  set(GgmlType::BF16, "bf16", 1, 2, true);
  set(GgmlType::TQ1_0, "tq1_0", 256, 54, false);
  set(GgmlType::TQ2_0, "tq2_0", 256, 66, false);
  set(GgmlType::MXFP4, "mxfp4", 32, 17, true);
  return t;
}

constexpr Table kTable = make_table();
}  // namespace

const TypeTraits* type_traits(uint32_t type_id) {
  if (type_id >= kMaxId || !kTable.known[type_id]) return nullptr;
  return &kTable.entries[type_id];
}

int64_t type_id_by_name(const std::string& name) {
  // ggml's names mix cases ("q4_K"); match them case-insensitively so "Q4_K" works too.
  auto lower = [](std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const std::string want = lower(name);
  for (uint32_t id = 0; id < kMaxId; id++) {
    if (kTable.known[id] && lower(kTable.entries[id].name) == want) return id;
  }
  return -1;
}

size_t kv_row_bytes(uint32_t type, int64_t head_dim) {
  if (type == uint32_t(GgmlType::F32) || type == uint32_t(GgmlType::F16) || type == uint32_t(GgmlType::Q8_0)) {
    const TypeTraits& t = *type_traits(type);
    if (head_dim % t.block_size != 0)
      throw Error(code::unsupported, std::string("a ") + t.name + " KV cache needs head sizes that are multiples of " +
                                         std::to_string(t.block_size) + ", got " + std::to_string(head_dim));
    return row_bytes(t, uint64_t(head_dim));
  }
  throw Error(code::unsupported, "KV caches are f16, f32 or q8_0, not ggml type " + std::to_string(type));
}

}  // namespace tdm
