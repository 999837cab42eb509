// Sums the kernel durations of an `ncu --csv --page raw --metrics gpu__time_duration.sum` log
// (bench/device/profile.sh) by kernel and grid, as a markdown table; --trim rewrites the CSV with
// only the columns the table uses. Usage: node bench/device/ncu-summary.mjs <ncu.csv> [--trim]
import { readFileSync, writeFileSync } from 'node:fs';

/** One CSV line into fields (quoted, commas inside quotes kept). */
function fields(line) {
  const out = [];
  let cur = '';
  let quoted = false;
  for (const ch of line) {
    if (ch === '"') quoted = !quoted;
    else if (ch === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

const [file, flag] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/device/ncu-summary.mjs <ncu.csv> [--trim]');
  process.exit(2);
}
const rows = readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('"')).map(fields);
const header = rows[0];
const col = (name) => {
  const i = (header ?? []).indexOf(name);
  if (i < 0) {
    // ncu failed (no counters on this machine, a timeout): its log is not a CSV of kernels.
    console.error(`ncu-summary: ${file} has no column '${name}': not an ncu --csv --page raw log`);
    process.exit(1);
  }
  return i;
};
const keep = ['ID', 'Kernel Name', 'Grid Size', 'Block Size', 'gpu__time_duration.sum'].map(col);
// The second row holds units (its ID field is empty).
const data = rows.slice(1).filter((r) => r[keep[0]] !== '');
if (flag === '--trim') {
  const quote = (x) => `"${x}"`;
  writeFileSync(file, [header, ...rows.slice(1)].map((r) => keep.map((i) => quote(r[i])).join(',')).join('\n') + '\n');
}
const groups = new Map();
let total = 0;
for (const r of data) {
  const name = r[keep[1]].replace(/\(.*$/, '').replace(/^void /, '').replace(/^\(anonymous namespace\)::|^[^:]*unnamed>::/, '');
  const key = `${name} | ${r[keep[2]]}`;
  const us = Number(r[keep[4]].replace(/,/g, '')) / 1000;
  total += us;
  const g = groups.get(key) ?? [];
  g.push(us);
  groups.set(key, g);
}
console.log(`${data.length} launches, ${total.toFixed(0)} µs of kernel time\n`);
console.log('| kernel | grid | launches | total µs | median µs |');
console.log('|---|---|---|---|---|');
for (const [key, us] of [...groups].sort((a, b) => b[1].reduce((x, y) => x + y) - a[1].reduce((x, y) => x + y))) {
  us.sort((a, b) => a - b);
  console.log(`| ${key} | ${us.length} | ${us.reduce((x, y) => x + y).toFixed(1)} | ${us[us.length >> 1].toFixed(2)} |`);
}
