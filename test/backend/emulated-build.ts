// Builds the GPU backend libraries for the host emulation (kernels/emu.h) that the emulated-GPU
// tests load through the backend registry: the kernel sources as plain C++, once with warps of 32
// (libtandem_cuda.so) and once with wavefronts of 64 (libtandem_hip.so). The build is cached in the
// temporary folder under a hash of the sources and flags; test files running at once share it.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cxx = process.env.CXX ?? 'c++';
const version = spawnSync(cxx, ['--version'], { encoding: 'utf8' });
const KERNELS = ['backend_gpu', 'matmul', 'elementwise', 'attention', 'moe', 'sampling'];
const HEADERS = ['kernels/compat.h', 'kernels/emu.h', 'kernels/gpu_context.h', 'kernels/host_numa.h', 'kernels/quant_math.h',
  'native/backend/backend.h', 'native/core/iq_grids.h'];

/** Why the emulation cannot be built here (no C++ compiler), or false when it can. */
export const noCompiler: string | false = version.status !== 0 && `no C++ compiler (${cxx})`;

/** Runs a command; resolves with its exit status and stderr. */
function run(cmd: string, args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => resolve({ status, stderr }));
  });
}

/** Builds dir/libtandem_<kind>.so for both warp widths; returns errors, '' when fine. */
async function build(dir: string): Promise<string> {
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
    const link = await run(cxx, ['-shared', ...objs, '-o', path.join(dir, `libtandem_${v.kind}.so`)]);
    if (link.status !== 0) return link.stderr.slice(0, 3000);
  }
  return '';
}

/**
 * The folder holding the emulated libtandem_cuda.so and libtandem_hip.so (for TANDEM_GPU_LIB_DIR),
 * built on first use; error is '' when they are there, else the compiler's complaint.
 */
export async function emulatedLibDir(): Promise<{ dir: string; error: string }> {
  const hash = createHash('sha1').update(version.stdout ?? '');
  for (const f of [...KERNELS.map((n) => `kernels/${n}.cu`), 'kernels/emu.cpp', ...HEADERS]) hash.update(readFileSync(path.join(root, f)));
  const dir = path.join(tmpdir(), `tandem-emu-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(path.join(dir, 'libtandem_hip.so'))) return { dir, error: '' };
  // Built aside and renamed into place, so a test file running at once never sees half a build.
  const work = `${dir}.${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const error = await build(work);
  if (error) {
    rmSync(work, { recursive: true, force: true });
    return { dir, error };
  }
  try {
    renameSync(work, dir);
    return { dir, error: '' };
  } catch {
    // The name is taken: by another process's finished build, which serves, or by a broken
    // folder, in which case this build serves this process from where it is.
  }
  if (!existsSync(path.join(dir, 'libtandem_hip.so'))) return { dir: work, error: '' };
  rmSync(work, { recursive: true, force: true });
  return { dir, error: '' };
}
