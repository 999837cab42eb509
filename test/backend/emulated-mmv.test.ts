// The other side of the matrix-vector row limit: with TANDEM_GPU_MMV_MAX_TOKENS=1 every op case
// of 2 to 24 rows (the matrix-vector kernels' by default) runs the tiled kernels instead; their
// outputs must still match the CPU reference, and matmul_group its own matmuls bit for bit.
// Its own file: the limit is read when a process first opens the device.
import t from 'tap';
import { native } from '../../src/native/binding.js';
import { emulatedLibDir, noCompiler } from './emulated-build.js';
import { REFERENCE_ID, checkCase, opCases } from './op-cases.js';

t.test('emulated GPU kernels with the tiled path from 2 rows pass the matmul and expert op cases', { skip: noCompiler }, async (t) => {
  const { dir, error } = await emulatedLibDir();
  t.equal(error, '', 'the kernel sources compile for the emulation');
  if (error) return;
  const saved = { lib: process.env.TANDEM_GPU_LIB_DIR, mmv: process.env.TANDEM_GPU_MMV_MAX_TOKENS };
  process.env.TANDEM_GPU_LIB_DIR = dir;
  process.env.TANDEM_GPU_MMV_MAX_TOKENS = '1';
  t.teardown(() => {
    for (const [k, v] of [['TANDEM_GPU_LIB_DIR', saved.lib], ['TANDEM_GPU_MMV_MAX_TOKENS', saved.mmv]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  const ops = native().backendOps;
  const cases = opCases().filter((c) => c.op === 'matmul' || c.op === 'matmul_group' || c.op === 'moe_ffn');
  t.ok(cases.some((c) => /x (3|8|9|11) tokens|, 11 tokens/.test(c.name)), 'cases of 2 to 24 rows are among them');
  const references = cases.map((c) => c.run(ops, REFERENCE_ID));
  for (const id of ['cuda:0', 'hip:0']) {
    cases.forEach((c, i) => {
      const r = checkCase(ops, id, c, references[i]);
      t.ok(r.pass, `${id} ${r.name}: ${r.detail}`);
    });
  }
});
