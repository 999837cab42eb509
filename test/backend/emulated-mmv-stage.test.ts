// The matrix-vector kernels stage each pass of a weight row in shared memory (kernels/matmul.cu);
// TANDEM_GPU_MMV_STAGE=0 reads global memory directly. The lanes sum the same chunks in the same
// order either way, so the outputs must be the same bits, on warps of 32 and wavefronts of 64,
// for rows of several passes. The direct reads run in a child process (the flag is read when a
// process opens the device); the staged ones here, checked against the CPU reference too.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { native } from '../../src/native/binding.js';
import { emulatedLibDir, noCompiler } from './emulated-build.js';
import { STAGE_DEVICES, stageCases } from './mmv-stage-cases.js';
import { REFERENCE_ID, nmse } from './op-cases.js';

const here = path.dirname(fileURLToPath(import.meta.url));

t.test('staged and direct weight reads give the same bits', { skip: noCompiler }, async (t) => {
  const { dir, error } = await emulatedLibDir();
  t.equal(error, '', 'the kernel sources compile for the emulation');
  if (error) return;
  const saved = process.env.TANDEM_GPU_LIB_DIR;
  process.env.TANDEM_GPU_LIB_DIR = dir;
  const work = mkdtempSync(path.join(tmpdir(), 'tandem-mmv-stage-'));
  t.teardown(() => {
    if (saved === undefined) delete process.env.TANDEM_GPU_LIB_DIR;
    else process.env.TANDEM_GPU_LIB_DIR = saved;
    rmSync(work, { recursive: true, force: true });
  });

  const outFile = path.join(work, 'direct.json');
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'));
  const child = spawnSync(process.execPath, [...loader, path.join(here, 'mmv-stage-cases.ts'), outFile], {
    encoding: 'utf8', timeout: 300_000, env: { ...process.env, TANDEM_GPU_MMV_STAGE: '0' },
  });
  t.equal(child.status, 0, `the direct-read process ran (${child.stderr.slice(-800)})`);
  if (child.status !== 0) return;
  const direct = JSON.parse(readFileSync(outFile, 'utf8')) as Record<string, string[]>;

  const ops = native().backendOps;
  const cases = stageCases();
  for (const c of cases) {
    const want = c.run(ops, REFERENCE_ID);
    for (const id of STAGE_DEVICES) {
      const staged = c.run(ops, id);
      const bytes = staged.map((y) => Buffer.from(y.buffer, y.byteOffset, y.byteLength).toString('base64'));
      t.same(bytes, direct[`${id} ${c.name}`], `${id} ${c.name}: staged = direct, bit for bit`);
      const worst = Math.max(...staged.map((y, i) => nmse(y, want[i]!)));
      t.ok(staged.length === want.length && worst <= 1e-9, `${id} ${c.name}: nmse ${worst.toExponential(2)} against ${REFERENCE_ID} (allowed 1e-9)`);
    }
  }
});
