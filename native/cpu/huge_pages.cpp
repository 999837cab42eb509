// Huge-page host mappings (see huge_pages.h).
#include "cpu/huge_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "core/error.h"

namespace tdm::cpu {

uint8_t* map_huge(size_t bytes, size_t* len) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const size_t want = (bytes + page - 1) / page * page;
  const size_t span = want + kHugePage;
  void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Error(code::oom, "cannot map " + std::to_string(bytes) + " bytes of host memory");
  // Trim the span to a 2 MiB aligned start, so that whole huge pages cover it.
  const uintptr_t base = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (base + kHugePage - 1) / kHugePage * kHugePage;
  if (start > base) munmap(p, start - base);
  const uintptr_t end = start + want, span_end = base + span;
  if (span_end > end) munmap(reinterpret_cast<void*>(end), span_end - end);
#ifdef MADV_HUGEPAGE
  (void)madvise(reinterpret_cast<void*>(start), want, MADV_HUGEPAGE);
#endif
  *len = want;
  return reinterpret_cast<uint8_t*>(start);
}

void unmap_huge(void* p, size_t len) {
  if (p != nullptr) munmap(p, len);
}

}  // namespace tdm::cpu
