// The other side of three kernel switches. With TANDEM_GPU_MMV_MAX_TOKENS=1 every op case of 2 to
// 24 rows (the matrix-vector kernels' by default) runs the tiled kernels instead; their outputs
// must still match the CPU reference, and matmul_group its own matmuls bit for bit. With
// TANDEM_GPU_MM_SPLIT=3 every dense tiled matmul cuts its k range into three parts (by default
// only grids too small for the device's SMs are cut). With TANDEM_GPU_ATTN_WARP_ROWS=0 decode
// attention runs the prefill layout (every warp walks every position) instead of splitting
// positions over the warps. Its own file: the switches are read when a process first opens the
// device.
import t from 'tap';
import { native } from '../../src/native/binding.js';
import { emulatedLibDir, noCompiler } from './emulated-build.js';
import { REFERENCE_ID, checkCase, opCases } from './op-cases.js';

t.test('emulated GPU kernels with the tiled path from 2 rows, its k range in three parts, and the prefill attention layout pass the matmul, expert and attention op cases', { skip: noCompiler }, async (t) => {
  const { dir, error } = await emulatedLibDir();
  t.equal(error, '', 'the kernel sources compile for the emulation');
  if (error) return;
  const set = { TANDEM_GPU_LIB_DIR: dir, TANDEM_GPU_MMV_MAX_TOKENS: '1', TANDEM_GPU_MM_SPLIT: '3', TANDEM_GPU_ATTN_WARP_ROWS: '0' };
  const saved = Object.keys(set).map((k) => [k, process.env[k]] as const);
  Object.assign(process.env, set);
  t.teardown(() => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  const ops = native().backendOps;
  const cases = opCases().filter((c) => ['matmul', 'matmul_group', 'moe_ffn', 'attention'].includes(c.op));
  t.ok(cases.some((c) => /x (3|8|9|11) tokens|, 11 tokens/.test(c.name)), 'cases of 2 to 24 rows are among them');
  const references = cases.map((c) => c.run(ops, REFERENCE_ID));
  for (const id of ['cuda:0', 'hip:0']) {
    cases.forEach((c, i) => {
      const r = checkCase(ops, id, c, references[i]);
      t.ok(r.pass, `${id} ${r.name}: ${r.detail}`);
    });
  }
});
