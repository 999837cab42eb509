// timeMatmul on the CPU backend times what a loaded model runs: weights in a read-only file
// mapping, repacked for the SIMD kernels, and the packed copy dropped when the call returns.
import t from 'tap';
import { native } from '../../src/native/binding.js';

const ops = native().backendOps;
const variants = ops.ids().filter((id) => id.startsWith('cpu:')).map((id) => id.slice('cpu:'.length));

for (const variant of variants) {
  t.test(`cpu:${variant}`, async (t) => {
    const before = ops.packedWeightStats();
    const us = ops.timeMatmul(`cpu:${variant}@2`, 'q4_K', 96, 512, 1, 2);
    t.ok(Number.isFinite(us) && us > 0, `microseconds per call: ${us}`);
    const after = ops.packedWeightStats();
    // The scalar reference has no packed kernels; every SIMD set packs q4_K once, except the
    // tests' "+pack" sets, which pack into scratch on every call and keep nothing.
    const packsOnce = variant !== 'ref' && !variant.endsWith('+pack');
    t.equal(after.made - before.made, packsOnce ? 1 : 0, 'packed copies made');
    t.equal(after.live, before.live, 'no packed copy outlives the call');
  });
}

t.test('bad shapes are typed errors', async (t) => {
  t.throws(() => ops.timeMatmul('cpu:ref', 'q4_K', 8, 100, 1, 1), { code: 'TDM_BAD_ARGUMENT', message: /block size/ });
  t.throws(() => ops.timeMatmul('cpu', 'q4_K', 8, 256, 1, 1), { code: 'TDM_BAD_ARGUMENT', message: /kind:device/ });
});
