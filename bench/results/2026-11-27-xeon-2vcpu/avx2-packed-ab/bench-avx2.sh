#!/bin/bash
# Run from the repository root: bash bench-avx2.sh <tandem bench options> (--cpu-kernels avx2).
# Runs tandem's AVX2 kernels against llama.cpp's haswell build: the AVX-512 ggml variants are
# moved aside for the run and put back afterwards, whatever happens.
set -u
REPO=${REPO:-$(pwd)}
LIBS=$REPO/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
ASIDE=$(mktemp -d)
mkdir -p $ASIDE
restore() { mv $ASIDE/*.so $LIBS/ 2>/dev/null; }
trap restore EXIT
for v in skylakex cascadelake cannonlake icelake cooperlake sapphirerapids zen4; do mv $LIBS/libggml-cpu-$v.so $ASIDE/; done
cd $REPO && node dist/cli/main.js bench "$@"
