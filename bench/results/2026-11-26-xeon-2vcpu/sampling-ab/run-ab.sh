# bash run-ab.sh <old commit> [new commit, default: the working tree]: builds sampling-bench.cpp
# against native/core/sampling.{h,cpp} of each and runs both, old and new alternating.
set -e
here=$(cd "$(dirname "$0")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
work=$(mktemp -d)
build() {  # build <commit or "tree"> <name>
  mkdir -p "$work/$2/core"
  for f in sampling.h sampling.cpp error.h; do
    if [ "$1" = tree ]; then cp "$repo/native/core/$f" "$work/$2/core/$f"; else git -C "$repo" show "$1:native/core/$f" > "$work/$2/core/$f"; fi
  done
  g++ -O3 -std=c++17 -I"$work/$2" "$here/sampling-bench.cpp" "$work/$2/core/sampling.cpp" -o "$work/$2/bench"
}
build "$1" old
build "${2:-tree}" new
for shape in peaked flat; do
  for vocab in 32000 128256; do
    for round in 1 2; do
      echo "== $shape, vocab $vocab, round $round: old"; "$work/old/bench" "$vocab" "$shape"
      echo "== $shape, vocab $vocab, round $round: new"; "$work/new/bench" "$vocab" "$shape"
    done
  done
done
rm -rf "$work"
