// The GPU kernels' logic with no GPU: the kernel sources are compiled as plain C++ against
// kernels/emu.h (thread blocks run as fibers), once with warps of 32 as on NVIDIA and once with
// wavefronts of 64 as on CDNA, and loaded through the backend registry in place of the CUDA and
// HIP libraries; every op case and bad-data check then runs on both against the CPU reference.
// The build is cached in the temporary folder under a hash of the sources and flags.
import t from 'tap';
import { native } from '../../src/native/binding.js';
import { emulatedLibDir, noCompiler } from './emulated-build.js';
import { REFERENCE_ID, badDataChecks, checkCase, opCases } from './op-cases.js';

t.test('GPU kernels emulated on the host pass every op case', { skip: noCompiler }, async (t) => {
  const { dir, error } = await emulatedLibDir();
  t.equal(error, '', 'the kernel sources compile for the emulation');
  if (error) return;

  const saved = process.env.TANDEM_GPU_LIB_DIR;
  process.env.TANDEM_GPU_LIB_DIR = dir;
  t.teardown(() => {
    if (saved === undefined) delete process.env.TANDEM_GPU_LIB_DIR;
    else process.env.TANDEM_GPU_LIB_DIR = saved;
  });
  const gpus = native().backends(true).filter((b) => b.kind !== 'cpu');
  for (const g of gpus) t.match(g, { device: 0, deviceName: /emulated on the host/ }, `${g.kind}: ${g.status} ${g.deviceName} ${g.detail}`);
  t.equal(gpus.filter((g) => g.status === 'selected').length, 1, 'one device is selected');

  const ops = native().backendOps;
  const cases = opCases();
  const references = cases.map((c) => c.run(ops, REFERENCE_ID));
  for (const id of ['cuda:0', 'hip:0']) {
    t.test(`${id} (${id === 'cuda:0' ? 'warps of 32' : 'wavefronts of 64'})`, async (t) => {
      cases.forEach((c, i) => {
        const r = checkCase(ops, id, c, references[i]);
        t.ok(r.pass, `${r.name}: ${r.detail}`);
      });
      for (const r of badDataChecks(ops, id)) t.ok(r.pass, `${r.name}: ${r.detail}`);
    });
  }
});
