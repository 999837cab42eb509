const dist = process.argv[2];
// Usage: node tm.mjs DIST (a built dist/ folder)
const { native } = await import(dist + '/native/binding.js');
const ops = native().backendOps;
const out = [];
for (const type of ['f16', 'q8_0', 'q4_K', 'q6_K']) {
  for (const tokens of [1, 64]) {
    const us = ops.timeMatmul('cpu:avx512@1', type, 5632, 2048, tokens, tokens === 1 ? 20 : 3);
    out.push(`${type} x${tokens}: ${us.toFixed(0)} us`);
  }
}
console.log(out.join(' | '));
