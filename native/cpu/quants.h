// Quant types on the CPU: scalar reference quantizers, dequantizers and dot products
// for every type tandem computes with. Block layouts are GGUF's (ggml-common.h), byte
// for byte, so tandem reads and writes the files llama.cpp does.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/ggml_types.h"

namespace tdm {

// The activation type a weight type's dot product takes (llama.cpp's vec_dot_type):
// F32->F32, F16->F16, BF16->BF16, Q4_0/Q5_0/Q8_0->Q8_0, Q4_1/Q5_1->Q8_1, K types->Q8_K.
GgmlType vec_dot_type(GgmlType weight_type);

// Converts n floats (n a multiple of the type's block size) to the type's blocks.
// Throws tdm::Error(TDM_UNSUPPORTED) for a type tandem cannot quantize.
void quantize_row_ref(GgmlType type, const float* src, void* dst, int64_t n);

// Converts n elements of the type's blocks back to floats.
void dequantize_row_ref(GgmlType type, const void* src, float* dst, int64_t n);

// Dot product of n elements: `w` in `type`, `a` in vec_dot_type(type).
float vec_dot_ref(GgmlType type, const void* w, const void* a, int64_t n);

// fp16 / bf16 scalar conversions (round to nearest even, as ggml does).
uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);
float bf16_to_fp32(uint16_t h);

}  // namespace tdm
