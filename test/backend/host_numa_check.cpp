// Checks kernels/host_numa.h on the host: PCI bus id spelling, the sysfs numa_node read (against
// a fake devices folder given as argv[1]), the TANDEM_PIN_NUMA_NODE override, and a node-placed
// mapping. Prints one "ok ..." or "not ok ..." line per check; host-numa.test.ts asserts each.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>

#include "host_numa.h"

namespace {

int failures = 0;

void check(bool pass, const std::string& what) {
  printf("%s %s\n", pass ? "ok" : "not ok", what.c_str());
  if (!pass) ++failures;
}

std::string sysfs_name(const char* id) {
  char out[32];
  return tdm::numa::pci_sysfs_name(id, out, sizeof out) ? std::string(out) : std::string("(rejected)");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    printf("not ok usage: host_numa_check <fake pci devices folder> [node]\n");
    return 1;
  }
  const char* dir = argv[1];
  check(sysfs_name("0000:3B:00.0") == "0000:3b:00.0", "upper-case bus id -> " + sysfs_name("0000:3B:00.0"));
  check(sysfs_name("00000000:3b:00.0") == "0000:3b:00.0", "8-digit domain -> " + sysfs_name("00000000:3b:00.0"));
  check(sysfs_name("0001:c1:1f.7") == "0001:c1:1f.7", "already sysfs spelling -> " + sysfs_name("0001:c1:1f.7"));
  check(sysfs_name("0000:3b:00") == "(rejected)", "no function number is rejected");
  check(sysfs_name("0000:3b:00.0x") == "(rejected)", "trailing text is rejected");
  check(sysfs_name("GPU-1234") == "(rejected)", "not a bus id is rejected");
  check(sysfs_name("0000:3b:20.0") == "(rejected)", "device number above 0x1f is rejected");

  const int n1 = tdm::numa::pci_numa_node("0000:3B:00.0", dir);
  check(n1 == 1, "numa_node 1 is read through the sysfs spelling: " + std::to_string(n1));
  const int n2 = tdm::numa::pci_numa_node("0000:5e:00.0", dir);
  check(n2 == -1, "a reported -1 stays -1: " + std::to_string(n2));
  const int n3 = tdm::numa::pci_numa_node("0000:af:00.0", dir);
  check(n3 == -1, "an unparsable numa_node is -1: " + std::to_string(n3));
  const int n4 = tdm::numa::pci_numa_node("0000:d8:00.0", dir);
  check(n4 == -1, "a missing device is -1: " + std::to_string(n4));
  check(tdm::numa::pci_numa_node(nullptr, dir) == -1, "no bus id is -1");

  setenv("TANDEM_PIN_NUMA_NODE", "2", 1);
  check(tdm::numa::pinned_host_node(nullptr) == 2, "TANDEM_PIN_NUMA_NODE=2 forces node 2");
  setenv("TANDEM_PIN_NUMA_NODE", "off", 1);
  check(tdm::numa::pinned_host_node(nullptr) == -1, "TANDEM_PIN_NUMA_NODE=off disables placement");
  setenv("TANDEM_PIN_NUMA_NODE", "two", 1);
  check(tdm::numa::pinned_host_node(nullptr) == -1, "an unparsable TANDEM_PIN_NUMA_NODE is ignored");
  unsetenv("TANDEM_PIN_NUMA_NODE");

  check(tdm::numa::map_on_node(4096, -1) == nullptr, "no mapping for node -1");
  if (argc >= 3) {
    // A node the test knows this machine has: the mapping must work and keep what is written.
    const int node = atoi(argv[2]);
    const size_t bytes = 3 * 4096 + 5;
    auto* p = static_cast<unsigned char*>(tdm::numa::map_on_node(bytes, node));
    check(p != nullptr, "map_on_node(" + std::to_string(bytes) + ", " + std::to_string(node) + ") maps");
    if (p != nullptr) {
      for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(i * 7);
      bool same = true;
      for (size_t i = 0; i < bytes; ++i) same = same && p[i] == static_cast<unsigned char>(i * 7);
      check(same, "the mapping keeps what is written");
      tdm::numa::unmap_pages(p, bytes);
    }
  }
  return failures == 0 ? 0 : 1;
}
