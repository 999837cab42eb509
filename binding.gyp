# Builds the tandem Node-API addon with the CPU backend built in.
# SIMD kernels live in their own static libraries, each compiled with its own ISA
# flags, and are picked at run time (never -march=native in what ships).
{
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    "cflags!": ["-fno-exceptions"],
    "include_dirs": ["native", "<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
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
        "native/cpu/quants_ref.cpp",
        "native/cpu/rng.cpp"
      ]
    },
    {
      "target_name": "tandem",
      "dependencies": ["tandem_core"],
      "sources": [
        "native/addon/addon.cpp",
        "native/addon/gguf_binding.cpp",
        "native/addon/quants_binding.cpp",
        "native/addon/synth_binding.cpp"
      ]
    }
  ]
}
