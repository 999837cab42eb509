// Builds tandem's optional GPU backend libraries (kernels/CMakeLists.txt) with cmake-js into
// build/kernels/ (npm run build:gpu; npm install runs it too). Without nvcc and hipcc, or without
// cmake, it says so and exits 0: tandem then runs on the CPU and the install still succeeds.
// --require (CI) instead fails when a toolkit is missing or anything fails to compile.
// Environment: TANDEM_GPU_BUILD=0 skips; TANDEM_GPU_KINDS=cuda|hip|cuda,hip picks libraries;
// TANDEM_CUDA_ARCHS (e.g. "90") and TANDEM_HIP_ARCHS (e.g. "gfx90a") narrow the targets.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const require_ = process.argv.includes('--require');
const say = (msg) => console.log(`tandem: ${msg}`);

function done(ok, msg) {
  if (ok) {
    if (msg) say(msg);
    process.exit(0);
  }
  console.error(`tandem: ${msg}`);
  process.exit(require_ ? 1 : 0);
}

/** The first of the candidates that runs with --version, or null. */
function findTool(candidates) {
  for (const c of candidates) {
    if (!c) continue;
    const r = spawnSync(c, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return c;
  }
  return null;
}

if (process.env.TANDEM_GPU_BUILD === '0') done(true, 'TANDEM_GPU_BUILD=0: GPU backends not built');

const kinds = (process.env.TANDEM_GPU_KINDS ?? 'cuda,hip').split(',').map((k) => k.trim()).filter(Boolean);
const wantCuda = kinds.includes('cuda');
const wantHip = kinds.includes('hip');
const nvcc = wantCuda ? findTool([process.env.CUDACXX, 'nvcc', '/usr/local/cuda/bin/nvcc']) : null;
const hipcc = wantHip ? findTool(['hipcc', '/opt/rocm/bin/hipcc']) : null;
if (require_) {
  const missing = [wantCuda && !nvcc && 'nvcc', wantHip && !hipcc && 'hipcc'].filter(Boolean);
  if (missing.length > 0) done(false, `--require: ${missing.join(' and ')} not found`);
}
if (!nvcc && !hipcc) {
  done(true, 'no CUDA (nvcc) or HIP (hipcc) toolkit found: GPU backends not built, tandem will run on the CPU. ' +
    'Install one and run `npm run build:gpu` to add a GPU backend.');
}
if (!findTool(['cmake'])) done(false, 'cmake was not found: GPU backends not built (install cmake >= 3.25, then `npm run build:gpu`)');

let cmakeJs;
try {
  cmakeJs = path.join(path.dirname(createRequire(import.meta.url).resolve('cmake-js/package.json')), 'bin', 'cmake-js');
} catch {
  done(false, 'cmake-js is not installed: GPU backends not built (npm install cmake-js, then `npm run build:gpu`)');
}

const defs = [
  `TDM_BUILD_CUDA=${nvcc ? 'ON' : 'OFF'}`,
  `TDM_BUILD_HIP=${hipcc ? 'ON' : 'OFF'}`,
  `TDM_REQUIRE_CUDA=${require_ && wantCuda ? 'ON' : 'OFF'}`,
  `TDM_REQUIRE_HIP=${require_ && wantHip ? 'ON' : 'OFF'}`,
];
if (nvcc && nvcc.includes('/')) defs.push(`CMAKE_CUDA_COMPILER=${nvcc}`);
// Always passed (empty: CMakeLists' defaults), so a narrowed build does not stick in the cache.
defs.push(`TDM_CUDA_ARCHS=${process.env.TANDEM_CUDA_ARCHS ?? ''}`, `TDM_HIP_ARCHS=${process.env.TANDEM_HIP_ARCHS ?? ''}`);

say(`building GPU backends (${[nvcc && 'CUDA', hipcc && 'HIP'].filter(Boolean).join(' and ')}) into build/kernels; this takes a few minutes`);
const out = path.join(root, 'build', 'kernels-cmake');
// Configure every time (cheap, and picks up changed targets), then build incrementally.
const run = (cmd, extra) =>
  spawnSync(process.execPath, [cmakeJs, cmd, '--directory', here, '--out', out, ...extra], { stdio: 'inherit', cwd: root }).status;
const r = { status: run('configure', defs.map((d) => `--CD${d}`)) };
if (r.status === 0) r.status = run('build', ['--parallel', String(availableParallelism())]);
if (r.status !== 0) done(false, 'the GPU backend build failed (see above); tandem will run on the CPU');
const built = ['cuda', 'hip'].filter((k) => existsSync(path.join(root, 'build', 'kernels', `libtandem_${k}.so`)));
done(true, `GPU backend libraries in build/kernels: ${built.map((k) => `libtandem_${k}.so`).join(', ') || 'none'}`);
