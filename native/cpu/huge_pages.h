// Anonymous host memory on 2 MiB pages where the kernel grants them (Linux transparent huge
// pages in madvise mode): for buffers that are streamed or read in scattered 4 KiB runs (packed
// weights, the host KV pool), where a TLB miss per 4 KiB page, dear under a VM's nested
// paging, would otherwise cost a page walk per run.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tdm::cpu {

constexpr size_t kHugePage = size_t(2) << 20;

// At least `bytes` of zeroed memory, 2 MiB aligned, with MADV_HUGEPAGE asked for; *len gets
// the length to pass to unmap_huge. Throws tdm::Error (TDM_OOM) when the mapping fails.
uint8_t* map_huge(size_t bytes, size_t* len);
void unmap_huge(void* p, size_t len);

}  // namespace tdm::cpu
