# Builds the tandem Node-API addon with the CPU backend built in.
# SIMD kernels live in their own static libraries, each compiled with its own ISA
# flags, and are picked at run time (never -march=native in what ships).
{
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    "cflags!": ["-fno-exceptions"],
    "include_dirs": ["native", "<!(node -p \"require('node-addon-api').include_dir\")"],
    # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: a promise settled while a worker thread's
    # environment shuts down (worker.terminate() during a step) would otherwise throw out of
    # node-addon-api's callback and abort the whole process.
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
    "xcode_settings": {"GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17"},
    "msvs_settings": {"VCCLCompilerTool": {"ExceptionHandling": 1}}
  },
  "targets": [
    {
      "target_name": "tandem_core",
      "type": "static_library",
      "cflags": ["-fPIC"],
      "sources": [
        "native/core/gguf.cpp",
        "native/core/ggml_types.cpp",
        "native/core/sampling.cpp",
        "native/cpu/quants_ref.cpp",
        "native/cpu/quants_iq_ref.cpp",
        "native/cpu/rng.cpp",
        "native/backend/backend_handle.cpp",
        "native/cpu/thread_pool.cpp",
        "native/cpu/kernels_ref.cpp",
        "native/cpu/cpu_backend.cpp",
        "native/cpu/packed_weights.cpp",
        "native/cpu/huge_pages.cpp",
        "native/core/hparams.cpp",
        "native/core/model_weights.cpp",
        "native/core/kv_pool.cpp",
        "native/core/model.cpp",
        "native/core/executor.cpp",
        "native/core/experts.cpp",
        "native/core/cpu_worker.cpp",
        "native/core/profile.cpp",
        "native/cpu/membw.cpp"
      ],
      "conditions": [
        ["target_arch=='x64'", {"defines": ["TDM_HAVE_AVX2", "TDM_HAVE_AVXVNNI", "TDM_HAVE_AVX512"], "dependencies": ["tandem_cpu_avx2", "tandem_cpu_avxvnni", "tandem_cpu_avx512"]}]
      ]
    },
    {
      "target_name": "tandem_cpu_avx2",
      "type": "static_library",
      "cflags": ["-fPIC"],
      "sources": ["native/cpu/avx2/kernels_avx2.cpp"],
      "conditions": [["target_arch=='x64'", {"cflags": ["-mavx2", "-mfma", "-mf16c"]}]]
    },
    {
      "target_name": "tandem_cpu_avxvnni",
      "type": "static_library",
      "cflags": ["-fPIC"],
      "sources": ["native/cpu/avxvnni/kernels_avxvnni.cpp"],
      "conditions": [["target_arch=='x64'", {"cflags": ["-mavx2", "-mfma", "-mf16c", "-mavxvnni"]}]]
    },
    {
      "target_name": "tandem_cpu_avx512",
      "type": "static_library",
      "cflags": ["-fPIC", "-ffp-contract=off", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
      "sources": ["native/cpu/avx512/kernels_avx512.cpp"],
      "conditions": [["target_arch=='x64'", {"cflags": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx512bf16", "-mavx2", "-mfma", "-mf16c"]}]]
    },
    {
      "target_name": "tandem",
      "dependencies": ["tandem_core"],
      "sources": [
        "native/addon/addon.cpp",
        "native/addon/gguf_binding.cpp",
        "native/addon/quants_binding.cpp",
        "native/addon/synth_binding.cpp",
        "native/addon/sampling_binding.cpp",
        "native/addon/model_binding.cpp",
        "native/addon/membw_binding.cpp",
        "native/backend/registry.cpp",
        "native/addon/backend_binding.cpp",
        "native/addon/backend_ops_binding.cpp",
        "native/addon/crash_trace.cpp"
      ]
    }
  ]
}
