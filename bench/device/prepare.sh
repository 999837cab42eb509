#!/usr/bin/env bash
# Prepares the GPU device check on this machine, since the lent GPU machine has no Node.js, no
# npm and no network (../shared/device/README.md): packs node, compiles the TypeScript the check
# runs, and puts the addon and the CUDA library beside it, all under .device/ (git-ignored).
# Then one device run: carry [".device"], command "bash bench/device/run.sh".
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
bash ../shared/device/pack-node.sh
[ -f build/Release/tandem.node ] || { echo "prepare: build the addon first (npx node-gyp build)" >&2; exit 1; }
# The lent machines are Hopper (H100/H200): sm_90 alone builds in a fraction of the time.
flock /tmp/tandem-gpu-build.lock env TANDEM_GPU_KINDS=cuda TANDEM_CUDA_ARCHS="${TANDEM_CUDA_ARCHS:-90}" node kernels/build.mjs --require
rm -rf .device/js
npx tsc -p bench/device/tsconfig.json
mkdir -p .device/js/build/Release .device/js/build/kernels
cp build/Release/tandem.node .device/js/build/Release/
cp build/kernels/libtandem_cuda.so .device/js/build/kernels/
# The runtime packages the API imports (the tokenizer pool, chat templates); node_modules does not travel.
mkdir -p .device/js/node_modules/@huggingface
cp -r node_modules/piscina .device/js/node_modules/
cp -r node_modules/@huggingface/jinja .device/js/node_modules/@huggingface/
# The compiled files are ES modules.
printf '{ "type": "module", "private": true }\n' > .device/js/package.json
du -sh .device
