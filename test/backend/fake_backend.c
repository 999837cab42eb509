/* A stand-in GPU backend library for registry.test.ts, built at test time into a temporary
 * folder as libtandem_cuda.so with FAKE_MODE set: it lets the test drive every branch of the
 * registry (no device, ABI mismatch, missing entry point, two devices to choose between)
 * on a machine with no GPU. Only the table members the registry calls are filled in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

#define FAKE_NO_DEVICE 1
#define FAKE_BAD_ABI 2
#define FAKE_TWO_DEVICES 3
#define FAKE_NO_ENTRY 4

struct tdm_backend_ctx {
  int device;
  char name[64];
};

static const char* fake_name(tdm_backend_ctx* c) { return c->name; }
static const char* fake_last_error(tdm_backend_ctx* c) { (void)c; return ""; }
static void fake_destroy(tdm_backend_ctx* c) { free(c); }
static tdm_status fake_memory(tdm_backend_ctx* c, uint64_t* free_bytes, uint64_t* total_bytes) {
  /* Device 1 has more memory, so the registry must pick it. */
  *total_bytes = (uint64_t)(c->device + 1) << 30;
  *free_bytes = *total_bytes / 2;
  return TDM_STATUS_OK;
}

static tdm_backend_iface fake_iface;

#if FAKE_MODE != FAKE_NO_ENTRY
__attribute__((visibility("default"))) tdm_status tdm_backend_create(const tdm_backend_params* p, tdm_backend* out,
                                                                       char* err, size_t err_len) {
  if (FAKE_MODE == FAKE_NO_DEVICE) {
    snprintf(err, err_len, "no CUDA device (fake)");
    return TDM_STATUS_DEVICE;
  }
  if (p->device >= 2) {
    snprintf(err, err_len, "device index %d is outside [0, 2)", p->device);
    return TDM_STATUS_BAD_ARGUMENT;
  }
  tdm_backend_ctx* c = (tdm_backend_ctx*)calloc(1, sizeof *c);
  c->device = p->device;
  snprintf(c->name, sizeof c->name, "Fake GPU %d", p->device);
  fake_iface.abi_version = FAKE_MODE == FAKE_BAD_ABI ? 101u : TDM_BACKEND_ABI_VERSION; /* the test looks for "ABI 101" */
  fake_iface.struct_size = sizeof(tdm_backend_iface);
  fake_iface.kind = "cuda";
  fake_iface.device_name = fake_name;
  fake_iface.last_error = fake_last_error;
  fake_iface.memory = fake_memory;
  fake_iface.destroy = fake_destroy;
  out->iface = &fake_iface;
  out->ctx = c;
  return TDM_STATUS_OK;
}
#else
__attribute__((visibility("default"))) int tdm_not_a_backend(void) { return 0; }
#endif
