#!/usr/bin/env bash
# Where a decode step's GPU time goes, on the lent machine: with .device carried (prepare.sh),
# writes the gpt-oss-shaped MoE and the Llama-3-8B-shaped files of gpu-check, times their decode
# steps with every weight on the device, then runs a few of those steps again under Nsight Compute
# (ncu) and sums each kernel's duration (ncu-summary.mjs). Writes profile.md (step times and
# kernel tables) and ncu.tar.gz (the trimmed CSVs) to $OUT. TANDEM_PROFILE_NCU=0: step times alone.
# run.sh runs it first.
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
steps=$work/steps.txt
{ echo '# Decode steps, batch 1, every weight on the device'; echo; echo "kernel $(uname -r)"; echo; } > "$steps"
for model in oss big; do
  "$node" $js/profile-child.js "$work/$model.gguf" 1 24 2>&1 | tee -a "$steps"
  # Two prefills and two warm-up steps come first: skip about their launches, then profile ~3 steps.
  [ -n "$ncu" ] && timeout 50 "$ncu" --clock-control none --metrics gpu__time_duration.sum --launch-skip 600 --launch-count 350 \
    --csv --page raw "$node" $js/profile-child.js "$work/$model.gguf" 1 12 > "$work/ncu-$model-1.csv" 2>&1
done
# Few files come back from the machine: the tables in one, the CSVs in one archive.
cp "$steps" "$out/profile.md"
csvs=()
for model in oss big; do
  csv=$work/ncu-$model-1.csv
  [ -s "$csv" ] || continue
  { echo; echo "## Kernels of $model (ncu, default cache control, clocks unmodified)"; echo; } >> "$out/profile.md"
  "$node" bench/device/ncu-summary.mjs "$csv" --trim >> "$out/profile.md" 2>&1 || tail -5 "$csv" >> "$out/profile.md"
  csvs+=("ncu-$model-1.csv")
done
[ ${#csvs[@]} -gt 0 ] && tar -czf "$out/ncu.tar.gz" -C "$work" "${csvs[@]}"
exit 0
