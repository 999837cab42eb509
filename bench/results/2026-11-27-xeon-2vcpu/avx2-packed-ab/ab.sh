# bash ab.sh <threads> <tokens> <rounds> <model>: decode tok/s of two builds, alternating.
# $AB/old and $AB/new each hold a copy of dist/, package.json, build/Release/tandem.node and a
# node_modules link; tg.mjs sits beside this script.
here=$(dirname "$0")
for r in $(seq 1 $3); do for v in old new; do echo "$v $(node $here/tg.mjs $AB/$v $4 $1 avx2 $2)"; done; done
