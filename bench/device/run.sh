#!/usr/bin/env bash
# The GPU device check as one command on the lent machine: bash bench/device/run.sh, with .device
# carried (made by bench/device/prepare.sh here). Unpacks node, runs the kernel profile
# (profile.sh: profile.md, ncu.tar.gz), then gpu-check.js, which writes results.json and
# results.md to $OUT (log.txt and nvidia-smi.txt beside them). On a machine with no GPU it
# reports why and exits 0.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$PWD/.device/out}
mkdir -p "$out"
if [ ! -f .device/js/bench/device/gpu-check.js ]; then
  echo "run.sh: .device/js is missing: run bench/device/prepare.sh first and carry .device" >&2
  exit 2
fi
node=node
if [ -f .device/node.xz ]; then
  xz -dc .device/node.xz > /tmp/tandem-node && chmod +x /tmp/tandem-node && node=/tmp/tandem-node
fi
# A native crash in any child prints its stack (module+offset) into the log (native/addon/crash_trace.cpp).
export TANDEM_CRASH_TRACE=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not available" > "$out/nvidia-smi.txt"
# The kernel profile first (about a minute; TANDEM_DEVICE_PROFILE=0 skips it), on a GPU only.
if [ "${TANDEM_DEVICE_PROFILE:-1}" != 0 ] && nvidia-smi -L > /dev/null 2>&1; then
  OUT=$out bash bench/device/profile.sh
fi
UV_THREADPOOL_SIZE=16 "$node" .device/js/bench/device/gpu-check.js --out "$out" 2>&1 | tee "$out/log.txt"
rc=${PIPESTATUS[0]}
# At most eight files come back: the partial results are only for a run cut short.
[ -f "$out/results.json" ] && rm -f "$out/results.partial.json"
exit "$rc"
