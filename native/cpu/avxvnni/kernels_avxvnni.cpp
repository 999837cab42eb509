// The AVX2 kernels (avx2/kernels_avx2.cpp) built again for processors with AVX-VNNI (the
// VEX-encoded VPDPBUSD of Alder Lake and later, and of Zen 4 and 5): compiled with
// -mavxvnni (binding.gyp target tandem_cpu_avxvnni), their integer dot products take one
// VPDPBUSD where AVX2 needs VPMADDUBSW, VPMADDWD and an add. The integers are the same, so
// every result is bit for bit the AVX2 table's. Installed only after the processor reports
// AVX-VNNI (kernels_ref.cpp).
#define TDM_AVX_VNNI 1
#include "cpu/avx2/kernels_avx2.cpp"
