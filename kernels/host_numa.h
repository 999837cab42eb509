// Host memory placed on one NUMA node, for the GPU backends' pinned host buffers: host-to-device
// copies run fastest from the node the GPU hangs off. Finds a PCI device's node in sysfs and maps
// pages that prefer a node, with raw system calls (no libnuma). Linux only; elsewhere a no-op.
#pragma once
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tdm::numa {

// Reads up to max_digits hex digits (at least one) at *s into v, advancing *s.
inline bool read_hex(const char** s, int max_digits, unsigned* v) {
  unsigned x = 0;
  int n = 0;
  for (; n < max_digits; ++n) {
    const char ch = (*s)[n];
    const int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
    if (d < 0) break;
    x = x * 16 + unsigned(d);
  }
  *s += n;
  *v = x;
  return n > 0;
}

// The sysfs spelling ("0000:3b:00.0") of a PCI bus id such as "0000:3B:00.0" or the 8-digit
// domain form "00000000:3b:00.0"; false when bus_id is not domain:bus:device.function in hex.
inline bool pci_sysfs_name(const char* bus_id, char* out, size_t out_len) {
  if (bus_id == nullptr || out == nullptr) return false;
  unsigned dom = 0, bus = 0, dev = 0, fn = 0;
  const char* s = bus_id;
  if (!read_hex(&s, 8, &dom) || *s++ != ':' || !read_hex(&s, 2, &bus) || *s++ != ':' || !read_hex(&s, 2, &dev) ||
      *s++ != '.' || !read_hex(&s, 1, &fn) || *s != '\0')
    return false;
  if (dev > 0x1f || fn > 7) return false;
  const int n = snprintf(out, out_len, "%04x:%02x:%02x.%x", dom, bus, dev, fn);
  return n > 0 && size_t(n) < out_len;
}

// The NUMA node of the PCI device bus_id, read from <devices_dir>/<sysfs name>/numa_node;
// -1 when unknown (no such entry, unreadable, or the kernel reports -1).
inline int pci_numa_node(const char* bus_id, const char* devices_dir = "/sys/bus/pci/devices") {
#ifdef __linux__
  char name[32];
  if (!pci_sysfs_name(bus_id, name, sizeof name)) return -1;
  char path[512];
  const int n = snprintf(path, sizeof path, "%s/%s/numa_node", devices_dir, name);
  if (n <= 0 || size_t(n) >= sizeof path) return -1;
  FILE* f = fopen(path, "r");
  if (f == nullptr) return -1;
  int node = -1;
  if (fscanf(f, "%d", &node) != 1) node = -1;
  fclose(f);
  return node >= 0 ? node : -1;
#else
  (void)bus_id;
  (void)devices_dir;
  return -1;
#endif
}

// The node pinned host memory should prefer for the PCI device bus_id (null when unknown):
// TANDEM_PIN_NUMA_NODE when it is "off" (none, -1) or an integer >= 0 (that node, even on a
// one-node machine, which is how tests force the path), else the device's sysfs node. Any other
// value of the variable is ignored.
inline int pinned_host_node(const char* bus_id) {
  const char* env = getenv("TANDEM_PIN_NUMA_NODE");
  if (env != nullptr && *env != '\0') {
    if (strcmp(env, "off") == 0) return -1;
    char* end = nullptr;
    const long v = strtol(env, &end, 10);
    if (*end == '\0' && v >= 0 && v < 4096) return int(v);
  }
  return bus_id != nullptr ? pci_numa_node(bus_id) : -1;
}

// bytes of fresh anonymous memory whose pages prefer `node`, faulted in now so that they are
// placed before anyone pins them; null on any failure. Free with unmap_pages(p, bytes).
inline void* map_on_node(size_t bytes, int node) {
#ifdef __linux__
  constexpr int kMaxNodes = 1024;
  constexpr int kPreferred = 1;  // MPOL_PREFERRED in <linux/mempolicy.h>
  constexpr int kBits = int(8 * sizeof(unsigned long));
  if (bytes == 0 || node < 0 || node >= kMaxNodes) return nullptr;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  unsigned long mask[kMaxNodes / kBits] = {};
  mask[node / kBits] |= 1ul << (node % kBits);
  // The kernel reads maxnode - 1 bits of the mask.
  if (syscall(SYS_mbind, p, bytes, kPreferred, mask, (unsigned long)kMaxNodes + 1, 0ul) != 0) {
    munmap(p, bytes);
    return nullptr;
  }
  const long page = sysconf(_SC_PAGESIZE);
  const size_t step = page > 0 ? size_t(page) : 4096;
  volatile char* c = static_cast<volatile char*>(p);
  for (size_t off = 0; off < bytes; off += step) c[off] = 0;
  return p;
#else
  (void)bytes;
  (void)node;
  return nullptr;
#endif
}

// Releases map_on_node memory (bytes as passed there).
inline void unmap_pages(void* p, size_t bytes) {
#ifdef __linux__
  if (p != nullptr) munmap(p, bytes);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace tdm::numa
