// The backend registry: the CPU is always listed; each GPU library's state is reported with a
// reason a user can act on (built but no device here -> 'no device'); and, through stand-in
// libraries compiled at test time, every other branch: a missing entry point, an ABI mismatch,
// and the choice between two devices.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, type NativeBackendInfo } from '../../src/native/binding.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cc = process.env.CC ?? 'cc';
const haveCc = spawnSync(cc, ['--version']).status === 0;

function gpuEntries(list: NativeBackendInfo[]): NativeBackendInfo[] {
  return list.filter((b) => b.kind !== 'cpu');
}

/** Lists the backends with TANDEM_GPU_LIB_DIR (and TANDEM_GPU) set for one rescan, then restored. */
function scanWith(env: { dir?: string; gpu?: string }): NativeBackendInfo[] {
  const saved = { dir: process.env.TANDEM_GPU_LIB_DIR, gpu: process.env.TANDEM_GPU };
  const set = (k: string, v: string | undefined) => (v === undefined ? delete process.env[k] : (process.env[k] = v));
  try {
    set('TANDEM_GPU_LIB_DIR', env.dir);
    set('TANDEM_GPU', env.gpu);
    return native().backends(true);
  } finally {
    set('TANDEM_GPU_LIB_DIR', saved.dir);
    set('TANDEM_GPU', saved.gpu);
    native().backends(true);
  }
}

t.test('the CPU backend comes first and is always available', async (t) => {
  const [cpu] = native().backends();
  t.equal(cpu.kind, 'cpu');
  t.equal(cpu.status, 'available');
  t.equal(cpu.library, null);
  t.ok(cpu.deviceName.length > 0, `device name: ${cpu.deviceName}`);
  t.ok(cpu.totalBytes > 0 && cpu.freeBytes <= cpu.totalBytes, 'host memory is reported');
});

t.test('the CUDA and HIP libraries of this build are reported sensibly', async (t) => {
  const dir = native().gpuLibraryDir();
  t.equal(path.resolve(dir), path.join(root, 'build', 'kernels'), 'the package build folder is searched');
  const gpus = gpuEntries(native().backends());
  t.same(gpus.map((g) => g.kind).filter((k, i, a) => a.indexOf(k) === i), ['cuda', 'hip'], 'both kinds are listed');
  for (const g of gpus) {
    const file = path.join(dir, `libtandem_${g.kind}.so`);
    t.equal(g.library, file, `${g.kind}: library path`);
    if (!existsSync(file)) {
      t.equal(g.status, 'unavailable', `${g.kind}: not built`);
      t.equal(g.reason, 'library missing');
      t.match(g.detail, /npm run build:gpu/, 'the detail says how to build it');
    } else if (g.status === 'unavailable') {
      // Built: with no GPU the library loads and reports no device; a HIP library needs the ROCm runtime to load at all.
      const expected = g.kind === 'hip' && g.reason === 'load failed' ? 'load failed' : 'no device';
      t.equal(g.reason, expected, `${g.kind}: ${g.reason} (${g.detail})`);
      if (expected === 'load failed') t.match(g.detail, /amdhip64|hsa/, 'names the missing runtime');
      else t.match(g.detail, g.kind === 'cuda' ? /CUDA/ : /HIP/, 'carries the runtime message');
      t.equal(g.device, -1, 'no device index');
    } else {
      t.ok(g.deviceName.length > 0 && g.totalBytes > 0, `${g.kind}:${g.device} ${g.deviceName} is described`);
    }
  }
});

t.test('TANDEM_GPU=0 turns every GPU backend off', async (t) => {
  for (const g of gpuEntries(scanWith({ gpu: '0' }))) {
    t.equal(g.status, 'unavailable');
    t.equal(g.reason, 'disabled');
  }
});

t.test('stand-in libraries drive every registry branch', { skip: !haveCc && `no C compiler (${cc})` }, async (t) => {
  const work = mkdtempSync(path.join(tmpdir(), 'tandem-fake-backend-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const build = (mode: number): string => {
    const dir = path.join(work, `mode${mode}`);
    spawnSync('mkdir', ['-p', dir]);
    const r = spawnSync(cc, ['-shared', '-fPIC', '-fvisibility=hidden', `-DFAKE_MODE=${mode}`, '-I', path.join(root, 'native'),
      path.join(root, 'test/backend/fake_backend.c'), '-o', path.join(dir, 'libtandem_cuda.so')], { encoding: 'utf8' });
    t.equal(r.status, 0, `fake backend ${mode} builds ${r.stderr}`);
    return dir;
  };
  const cuda = (list: NativeBackendInfo[]) => list.filter((b) => b.kind === 'cuda');

  const none = cuda(scanWith({ dir: build(1) }));
  t.equal(none.length, 1);
  t.match(none[0], { status: 'unavailable', reason: 'no device', detail: 'no CUDA device (fake)', device: -1 });

  const abi = cuda(scanWith({ dir: build(2) }));
  t.match(abi[0], { status: 'unavailable', reason: 'ABI mismatch' });
  t.match(abi[0].detail, /ABI 101/, 'names both versions');

  const noEntry = cuda(scanWith({ dir: build(4) }));
  t.match(noEntry[0], { status: 'unavailable', reason: 'load failed' });
  t.match(noEntry[0].detail, /does not export tdm_backend_create/);

  const two = cuda(scanWith({ dir: build(3) }));
  t.equal(two.length, 2, 'one entry per device');
  t.match(two[1], { device: 1, deviceName: 'Fake GPU 1', status: 'selected', reason: '', totalBytes: 2 ** 31 });
  t.match(two[0], { device: 0, status: 'available', reason: 'another device has more memory', totalBytes: 2 ** 30 });

  const garbage = path.join(work, 'garbage');
  spawnSync('mkdir', ['-p', garbage]);
  spawnSync('sh', ['-c', `echo not a library > ${path.join(garbage, 'libtandem_cuda.so')}`]);
  const bad = cuda(scanWith({ dir: garbage }));
  t.match(bad[0], { status: 'unavailable', reason: 'load failed' });
});

t.test('an unusable GPU id is a typed error, not a crash', async (t) => {
  const cudaOk = gpuEntries(native().backends()).some((g) => g.kind === 'cuda' && g.status !== 'unavailable');
  if (!cudaOk) t.throws(() => native().backendOps.matmul('cuda:0', 'f32', new Float32Array(4), 2, 2, new Float32Array(2), 1), { code: 'TDM_BACKEND_UNAVAILABLE' });
  t.throws(() => native().backendOps.matmul('nope', 'f32', new Float32Array(4), 2, 2, new Float32Array(2), 1), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => native().backendOps.matmul('cpu:nosuch', 'f32', new Float32Array(4), 2, 2, new Float32Array(2), 1), { code: 'TDM_UNSUPPORTED' });
});
