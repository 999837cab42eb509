#!/usr/bin/env bash
# Where a decode step's GPU time goes, on the lent machine: with .device carried (prepare.sh),
# writes the gpt-oss-shaped MoE and the Llama-3-8B-shaped files of gpu-check, times their decode
# steps with every weight on the device, then runs a few of those steps again under Nsight Compute
# (ncu) and sums each kernel's duration. Writes steps.txt and ncu-*.csv to $OUT. TANDEM_PROFILE_NCU=0: the
# step times alone.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$PWD/.device/out}
mkdir -p "$out"
node=node
if [ -f .device/node.xz ]; then
  xz -dc .device/node.xz > /tmp/tandem-node && chmod +x /tmp/tandem-node && node=/tmp/tandem-node
fi
js=.device/js/bench/device
work=/tmp/tandem-profile
mkdir -p "$work"
"$node" $js/make-child.js '{"preset":"gpt-oss-20b","nLayer":4,"nVocab":32000,"type":"mxfp4_moe","seed":11}' "$work/oss.gguf" &
"$node" $js/make-child.js '{"preset":"llama3-8b","nLayer":8,"type":"q8_0","seed":8}' "$work/big.gguf" &
wait
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ "${TANDEM_PROFILE_NCU:-1}" = 0 ] && ncu=
uname -r > "$out/steps.txt"
for model in oss big; do
  "$node" $js/profile-child.js "$work/$model.gguf" 1 24 2>&1 | tee -a "$out/steps.txt"
  # Two prefills and two warm-up steps come first: skip about their launches, then profile ~3 steps.
  [ -n "$ncu" ] && timeout 50 "$ncu" --clock-control none --metrics gpu__time_duration.sum --launch-skip 600 --launch-count 350 \
    --csv --page raw "$node" $js/profile-child.js "$work/$model.gguf" 1 12 > "$out/ncu-$model-1.csv" 2>&1
done

