// Opt-in fatal-signal trace (TANDEM_CRASH_TRACE=1): on SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT,
// writes the faulting address and the native stack as module+offset to stderr, then lets the
// signal kill the process as before. For runs where no debugger can attach (the lent GPU
// machine); offsets resolve here with nm or addr2line against the same build.
#include <dlfcn.h>
#include <execinfo.h>
#include <napi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

namespace tdm::addon {
namespace {

void write_str(const char* s) { (void)!write(STDERR_FILENO, s, strlen(s)); }

void on_fatal(int sig, siginfo_t* info, void*) {
  char line[512];
  snprintf(line, sizeof line, "tandem: fatal signal %d (%s) at address %p; native stack:\n", sig, strsignal(sig), info ? info->si_addr : nullptr);
  write_str(line);
  void* frames[64];
  const int n = backtrace(frames, 64);
  for (int i = 0; i < n; ++i) {
    Dl_info d{};
    if (dladdr(frames[i], &d) != 0 && d.dli_fname != nullptr) {
      const char* base = strrchr(d.dli_fname, '/');
      snprintf(line, sizeof line, "  #%02d %s+0x%lx %s\n", i, base ? base + 1 : d.dli_fname,
               (unsigned long)((char*)frames[i] - (char*)d.dli_fbase), d.dli_sname ? d.dli_sname : "");
    } else {
      snprintf(line, sizeof line, "  #%02d %p\n", i, frames[i]);
    }
    write_str(line);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void register_crash_trace(Napi::Env, Napi::Object) {
  const char* env = getenv("TANDEM_CRASH_TRACE");
  if (env == nullptr || *env == '\0' || strcmp(env, "0") == 0) return;
  // Own stack per thread is not needed: these signals are synchronous, not stack overflows.
  struct sigaction sa {};
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(sig, &sa, nullptr);
}

}  // namespace tdm::addon
