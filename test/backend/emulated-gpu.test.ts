// The GPU kernels' logic with no GPU: the kernel sources are compiled as plain C++ against
// kernels/emu.h (thread blocks run as fibers), once with warps of 32 as on NVIDIA and once with
// wavefronts of 64 as on CDNA, and loaded through the backend registry in place of the CUDA and
// HIP libraries; every op case and bad-data check then runs on both against the CPU reference.
// The build is cached in the temporary folder under a hash of the sources and flags.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/binding.js';
import { REFERENCE_ID, badDataChecks, checkCase, opCases } from './op-cases.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cxx = process.env.CXX ?? 'c++';
const version = spawnSync(cxx, ['--version'], { encoding: 'utf8' });
const KERNELS = ['backend_gpu', 'matmul', 'elementwise', 'attention', 'moe'];
const HEADERS = ['kernels/compat.h', 'kernels/emu.h', 'kernels/gpu_context.h', 'kernels/quant_math.h', 'native/backend/backend.h'];

/** Runs a command; resolves with its exit status and stderr. */
function run(cmd: string, args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => resolve({ status, stderr }));
  });
}

/** Builds (or finds cached) dir/libtandem_<kind>.so for both warp widths; returns errors, '' when fine. */
async function buildEmulated(dir: string): Promise<string> {
  const variants = [
    { kind: 'cuda', warp: 32 },
    { kind: 'hip', warp: 64 },
  ];
  const jobs: { args: string[]; obj: string }[] = [];
  for (const v of variants) {
    const flags = ['-std=c++17', '-O1', '-fPIC', '-fvisibility=hidden', '-w', '-DTDM_EMU', `-DTDM_EMU_WARP=${v.warp}`,
      '-I', path.join(root, 'native'), '-I', path.join(root, 'kernels')];
    for (const n of KERNELS) jobs.push({ obj: path.join(dir, `${v.kind}-${n}.o`), args: [...flags, '-x', 'c++', '-c', path.join(root, 'kernels', `${n}.cu`)] });
    jobs.push({ obj: path.join(dir, `${v.kind}-emu.o`), args: [...flags, '-c', path.join(root, 'kernels', 'emu.cpp')] });
  }
  for (let i = 0; i < jobs.length; i += 2) {
    const batch = jobs.slice(i, i + 2).map((j) => run(cxx, [...j.args, '-o', j.obj]));
    for (const r of await Promise.all(batch)) if (r.status !== 0) return r.stderr.slice(0, 3000);
  }
  for (const v of variants) {
    const objs = jobs.map((j) => j.obj).filter((o) => path.basename(o).startsWith(`${v.kind}-`));
    const tmp = path.join(dir, `libtandem_${v.kind}.so.tmp`);
    const link = await run(cxx, ['-shared', ...objs, '-o', tmp]);
    if (link.status !== 0) return link.stderr.slice(0, 3000);
    renameSync(tmp, path.join(dir, `libtandem_${v.kind}.so`));
  }
  return '';
}

t.test('GPU kernels emulated on the host pass every op case', { skip: version.status !== 0 && `no C++ compiler (${cxx})` }, async (t) => {
  const hash = createHash('sha1').update(version.stdout);
  for (const f of [...KERNELS.map((n) => `kernels/${n}.cu`), 'kernels/emu.cpp', ...HEADERS]) hash.update(readFileSync(path.join(root, f)));
  const dir = path.join(tmpdir(), `tandem-emu-${hash.digest('hex').slice(0, 16)}`);
  if (!existsSync(path.join(dir, 'libtandem_hip.so'))) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const err = await buildEmulated(dir);
    t.equal(err, '', 'the kernel sources compile for the emulation');
    if (err) return;
  }

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
