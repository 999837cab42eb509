#!/usr/bin/env bash
# The CPU packed kernels of several git revisions, timed against each other on this machine
# (packed-stream.cpp): each revision's kernel file is compiled from that revision's native/
# with the flags binding.gyp gives it, and the tables alternate in one process.
#
#   bash bench/cpu-kernels/ab.sh [--isa avx512|avxvnni|avx2] [--types "q4_K q6_K"] [--rows N] [--cols N]
#                                [--rounds N] [--copies N] REV...
#
# Needs the addon built (npm install: build/Release/obj.target/*.a) and revisions whose
# native/cpu/kernels.h matches this checkout's.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
isa=avx512 types="q4_K q5_K q6_K q8_0 mxfp4 q4_0 q4_1 q5_0 q5_1" rows=65536 cols=2048 rounds=12 copies=1 revs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --isa) isa=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --cols) cols=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --copies) copies=$2; shift 2 ;;
    *) revs+=("$1"); shift ;;
  esac
done
[ ${#revs[@]} -ge 1 ] || { echo "usage: ab.sh [options] REV..." >&2; exit 2; }
case "$isa" in
  avx512) flags="-mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512bf16 -mavx2 -mfma -mf16c -ffp-contract=off" ;;
  avxvnni) flags="-mavx2 -mfma -mf16c -mavxvnni" ;;
  avx2) flags="-mavx2 -mfma -mf16c" ;;
  *) echo "ab.sh: --isa avx512, avxvnni or avx2" >&2; exit 2 ;;
esac
lib="$root/build/Release/obj.target"
[ -f "$lib/tandem_core.a" ] || { echo "ab.sh: build the addon first (npm install)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tables="" objs=()
for rev in "${revs[@]}"; do
  name="r$(git -C "$root" rev-parse --short=8 "$rev")"
  while [ -d "$work/$name" ]; do name="${name}b"; done  # a revision named twice: an A/A check of the noise
  mkdir -p "$work/$name"
  git -C "$root" archive "$rev" native | tar -x -C "$work/$name"
  g++ -std=c++17 -O3 -fPIC -w $flags -I "$work/$name/native" "-Dfill_kernels_$isa=fill_$name" \
    -c "$work/$name/native/cpu/$isa/kernels_$isa.cpp" -o "$work/$name.o"
  tables="$tables TDM_TABLE($name)"
  objs+=("$work/$name.o")
  echo "$name = $rev"
done
g++ -std=c++17 -O2 -I "$root/native" "-DTABLES=$tables" "$root/bench/cpu-kernels/packed-stream.cpp" "${objs[@]}" \
  "$lib/tandem_core.a" "$lib/tandem_cpu_avx512.a" "$lib/tandem_cpu_avxvnni.a" "$lib/tandem_cpu_avx2.a" -lpthread -o "$work/packed-stream"
for t in $types; do BASE_ISA=$isa "$work/packed-stream" "$t" "$rows" "$cols" "$rounds" "$copies"; done
