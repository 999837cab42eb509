// Pinned host memory on the GPU's NUMA node (kernels/host_numa.h): the helper's checks built with
// the host compiler against a fake sysfs folder, then the GPU backend's host_alloc through the
// host emulation with TANDEM_PIN_NUMA_NODE forcing node 0 (the path a multi-socket GPU host takes
// by itself), and forcing none, each a round trip through device memory.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/binding.js';
import { emulatedLibDir, noCompiler } from './emulated-build.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cxx = process.env.CXX ?? 'c++';

/** Whether this process may place memory on node 0: the node exists and the cpuset allows it. */
function nodeZeroUsable(): boolean {
  if (process.platform !== 'linux' || !existsSync('/sys/devices/system/node/node0')) return false;
  const status = readFileSync('/proc/self/status', 'utf8');
  return /^Mems_allowed_list:\s*0(?:$|[-,])/m.test(status);
}
const onNodeZero = nodeZeroUsable();

t.test('host_numa.h: bus ids, sysfs nodes, the override, mappings', { skip: noCompiler }, async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tandem-numa-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const devices = path.join(dir, 'devices');
  for (const [id, text] of [['0000:3b:00.0', '1\n'], ['0000:5e:00.0', '-1\n'], ['0000:af:00.0', 'x\n']]) {
    mkdirSync(path.join(devices, id), { recursive: true });
    writeFileSync(path.join(devices, id, 'numa_node'), text);
  }
  const exe = path.join(dir, 'host_numa_check');
  const build = spawnSync(cxx, ['-std=c++17', '-O1', '-Wall', '-I', path.join(root, 'kernels'), path.join(root, 'test/backend/host_numa_check.cpp'), '-o', exe],
    { encoding: 'utf8' });
  t.equal(build.status, 0, `compiles: ${build.stderr.slice(0, 2000)}`);
  if (build.status !== 0) return;
  const run = spawnSync(exe, onNodeZero ? [devices, '0'] : [devices], { encoding: 'utf8' });
  const lines = run.stdout.split('\n').filter((l) => l.length > 0);
  t.ok(lines.length >= (onNodeZero ? 18 : 16), `ran every check (${lines.length} lines)`);
  for (const line of lines) t.ok(line.startsWith('ok '), line);
  t.equal(run.status, 0, 'exit status');
});

t.test('GPU host_alloc places pinned memory on the forced node (emulated GPU)', { skip: noCompiler }, async (t) => {
  const { dir, error } = await emulatedLibDir();
  t.equal(error, '', 'the kernel sources compile for the emulation');
  if (error) return;
  const saved = { lib: process.env.TANDEM_GPU_LIB_DIR, node: process.env.TANDEM_PIN_NUMA_NODE };
  t.teardown(() => {
    for (const [k, v] of [['TANDEM_GPU_LIB_DIR', saved.lib], ['TANDEM_PIN_NUMA_NODE', saved.node]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  process.env.TANDEM_GPU_LIB_DIR = dir;
  t.ok(native().backends(true).some((b) => b.kind === 'cuda'), 'the emulated CUDA library loads');
  const ops = native().backendOps;

  // Each backend context reads the variable once, when it is created (first use of its id).
  process.env.TANDEM_PIN_NUMA_NODE = '0';
  for (const bytes of [1, 4096, 3 * 65536 + 123]) {
    const r = ops.hostRoundTrip('cuda:0', bytes);
    t.ok(r.intact, `cuda:0 with node 0 forced: ${bytes} bytes come back unchanged`);
    if (onNodeZero) t.equal(r.node, 0, `cuda:0: the ${bytes}-byte buffer's pages prefer node 0`);
  }
  process.env.TANDEM_PIN_NUMA_NODE = 'off';
  const off = ops.hostRoundTrip('hip:0', 65536);
  t.ok(off.intact, 'hip:0 with placement off: the bytes come back unchanged');
  t.equal(off.node, -1, 'hip:0: plain pinned memory prefers no node');
  t.throws(() => ops.hostRoundTrip('cuda:0', 0), { code: 'TDM_BAD_ARGUMENT' }, 'zero bytes is a bad argument');
});
