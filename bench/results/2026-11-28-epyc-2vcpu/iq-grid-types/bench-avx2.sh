#!/bin/bash
# tandem's AVX2 kernels against llama.cpp's haswell build: the AVX-512 and AVX-VNNI ggml variants are moved aside and put back.
set -u
REPO=/work/main
LIBS=$REPO/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
ASIDE=$(mktemp -d)
restore() { mv $ASIDE/*.so $LIBS/ 2>/dev/null; }
trap restore EXIT
for v in skylakex cascadelake cannonlake icelake cooperlake sapphirerapids zen4 alderlake; do mv $LIBS/libggml-cpu-$v.so $ASIDE/; done
cd $REPO && node dist/cli/main.js bench "$@"
