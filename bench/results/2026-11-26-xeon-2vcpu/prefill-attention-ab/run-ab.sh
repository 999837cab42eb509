# bash run-ab.sh <old tandem.node> <new tandem.node> <rounds> -> medians, old and new alternating
old=$1; new=$2; rounds=${3:-3}
here=$(dirname "$0")
for id in cpu:avx512@1 cpu:avx512@2 cpu:avx2@1 cpu:avx2@2; do
  for i in $(seq "$rounds"); do
    echo "old $id $(node "$here/prefill-attn-ab.mjs" "$old" "$id")"
    echo "new $id $(node "$here/prefill-attn-ab.mjs" "$new" "$id")"
  done
done | node -e '
const lines = require("fs").readFileSync(0, "utf8").trim().split("\n");
const runs = {};
for (const l of lines) { const [which, id, ...j] = l.split(" "); ((runs[id] ??= {})[which] ??= []).push(JSON.parse(j.join(" "))); }
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
for (const [id, r] of Object.entries(runs)) {
  console.log(`${id} (GFLOP/s, median of ${r.old.length}; old -> new)`);
  for (const name of Object.keys(r.old[0])) {
    const o = med(r.old.map((x) => x[name])), n = med(r.new.map((x) => x[name]));
    console.log(`  ${name}: ${o.toFixed(1)} -> ${n.toFixed(1)} (${(n / o).toFixed(2)}x)`);
  }
}'
