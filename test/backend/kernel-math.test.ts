// Builds kernel_math_check.cpp with the host C++ compiler (the one node-gyp uses) and runs it:
// the GPU kernels' block decoding, activation quantization and router order, checked against
// the CPU reference on a machine with no GPU. Each line it prints becomes one assertion.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cxx = process.env.CXX ?? 'c++';
const probe = spawnSync(cxx, ['--version'], { encoding: 'utf8' });

t.test('GPU kernel arithmetic against the CPU reference (host build)', { skip: probe.status !== 0 && `no C++ compiler (${cxx})` }, async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tandem-kmath-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const exe = path.join(dir, 'kernel_math_check');
  const build = spawnSync(
    cxx,
    [
      '-std=c++17', '-O1', '-I', path.join(root, 'native'), '-I', path.join(root, 'kernels'),
      path.join(root, 'test/backend/kernel_math_check.cpp'), path.join(root, 'native/cpu/quants_ref.cpp'), path.join(root, 'native/cpu/quants_iq_ref.cpp'),
      path.join(root, 'native/core/ggml_types.cpp'), '-o', exe,
    ],
    { encoding: 'utf8' },
  );
  t.equal(build.status, 0, `compiles: ${build.stderr.slice(0, 2000)}`);
  if (build.status !== 0) return;
  const run = spawnSync(exe, [], { encoding: 'utf8' });
  const lines = run.stdout.split('\n').filter((l) => l.length > 0);
  t.ok(lines.length >= 50, `ran every check (${lines.length} lines)`);
  for (const line of lines) t.ok(line.startsWith('ok '), line);
  t.equal(run.status, 0, 'exit status');
});
