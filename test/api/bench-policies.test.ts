// `tandem bench` comparing tandem's own policies on stories260K with the CPU standing in for
// the device ('cpu-standin': labelled so in the report, never GPU numbers) and the device's
// KV cache capped so that memory pressure is real. Timings are not checked, only that every
// policy ran, under the device and budget the flags gave, and reported what it did.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { command, tandemOptionsFromFlags } from '../../src/cli/commands/bench.js';
import { systemRegistry, systemsByName } from '../../src/bench/systems/index.js';
import type { BenchReport } from '../../src/bench/report.js';
import { modelPath } from '../helpers.js';

t.test('device flags become tandem load options; bad ones are usage errors', async (t) => {
  t.same(tandemOptionsFromFlags({}), {});
  t.same(tandemOptionsFromFlags({ device: 'none' }), {});
  t.same(
    tandemOptionsFromFlags({ device: 'cpu-standin', 'device-threads': '1', 'kv-device-mib': '0.5', 'kv-host-mib': '2', 'policy-tpot-ms': '40', profile: 'quick' }),
    { device: 'cpu-standin', deviceThreads: 1, kvDeviceBytes: 524288, kvHostBytes: 2097152, tpotSloMs: 40, profile: 'quick' },
  );
  t.same(tandemOptionsFromFlags({ 'kv-device-mib': '1' }), { kvDeviceBytes: 1048576 }, 'KV tiers apply with no device too');
  t.throws(() => tandemOptionsFromFlags({ device: 'tpu' }), { code: 'TDM_BAD_ARGUMENT', message: /--device: unknown 'tpu'/ });
  t.throws(() => tandemOptionsFromFlags({ profile: 'quick' }), { code: 'TDM_BAD_ARGUMENT', message: /--profile needs --device/ });
  t.throws(() => tandemOptionsFromFlags({ device: 'gpu', 'device-threads': '2' }), { code: 'TDM_BAD_ARGUMENT', message: /cpu-standin only/ });
  t.throws(() => tandemOptionsFromFlags({ device: 'gpu', 'kv-device-mib': '-1' }), { code: 'TDM_BAD_ARGUMENT' });
  t.same(tandemOptionsFromFlags({ 'cpu-kernels': 'avx2' }), { cpuKernels: 'avx2' }, '--cpu-kernels with no device');
  t.throws(() => tandemOptionsFromFlags({ 'cpu-kernels': 'sse' }), { code: 'TDM_BAD_ARGUMENT', message: /--cpu-kernels: unknown 'sse'/ });
  t.same(tandemOptionsFromFlags({ 'sliding-kv': 'full' }), { slidingKv: 'full' }, '--sliding-kv');
  t.throws(() => tandemOptionsFromFlags({ 'sliding-kv': 'ring' }), { code: 'TDM_BAD_ARGUMENT', message: /--sliding-kv: unknown 'ring'/ });
  const names = systemRegistry().map((s) => s.name);
  t.same(names, ['tandem', 'llama.cpp', 'tandem:draft', 'tandem:gpu-only', 'tandem:pipeline', 'tandem:overlap', 'tandem:auto']);
  t.same(systemsByName(['tandem:auto', 'tandem:gpu-only']).map((s) => s.name), ['tandem:auto', 'tandem:gpu-only']);
});

t.test('tandem:gpu-only against tandem:overlap and tandem:auto under a capped device KV budget', async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-bench-policies-'));
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
  const log = console.log;
  const lines: string[] = [];
  console.log = (...args: unknown[]) => void lines.push(args.join(' '));
  let code: number;
  try {
    // stories260K: 640 KV bytes a token. 0.2 MiB on the device holds one 256-token context
    // (the bench's) and a bit, not eight sequences of 64 tokens.
    code = await command.run([
      '--model', modelPath('stories260K.gguf'), '--threads', '1', '--repeats', '1', '--workloads', 'parallel',
      '--parallel', '8', '--parallel-tokens', '40,24', '--systems', 'tandem:gpu-only,tandem:overlap,tandem:auto',
      '--device', 'cpu-standin', '--device-threads', '1', '--kv-device-mib', '0.2', '--kv-host-mib', '2', '--profile', 'quick', '--out', out,
    ]);
  } finally {
    console.log = log;
  }
  t.equal(code, 0, 'every system loaded and every run finished');
  const report = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as BenchReport;
  t.same(report.runs.filter((r) => r.error), []);
  t.same(report.runs.map((r) => r.system).sort(), ['tandem:auto', 'tandem:gpu-only', 'tandem:overlap']);
  for (const load of report.loads) {
    t.match(String(load.details.device), /^cpu-standin: /);
    t.match(String(load.details.simulatedDevice), /not GPU numbers/, `${load.system} is labelled a stand-in`);
    t.equal(load.details.policy, load.system.split(':')[1]);
    t.ok(Number(load.details.kvBlocksDevice) < Number(load.details.kvBlocksHost), 'the device tier is the capped one');
    // The stand-in reads host memory in place: it locks nothing and streams nothing.
    t.equal(load.details.kvHostLocked, false, `${load.system}: the host tier's lock is recorded`);
    t.equal(load.details.kvStreamBlocks, 0);
  }
  const counters = (system: string) => report.runs.find((r) => r.system === system)!.counters!;
  t.ok(counters('tandem:overlap')['steps.overlap']! > 0, 'overlap steps ran');
  t.equal(counters('tandem:gpu-only')['steps.overlap'], undefined, 'gpu-only never overlaps');
  const g = counters('tandem:gpu-only');
  t.ok(g.moves! + g.preemptions! > 0, `gpu-only swapped (${g.moves}) or recomputed (${g.preemptions}) under the cap`);
  t.comment(`counters: ${JSON.stringify(Object.fromEntries(report.runs.map((r) => [r.system, r.counters])))}`);
  t.ok(lines.some((l) => /tandem:auto/.test(l)), 'a summary line per policy');
  const auto = report.summary.find((r) => r.system === 'tandem:auto')!;
  t.equal(auto.baseline, 'tandem:gpu-only', 'policies are compared as ratios to gpu-only');
  t.ok(auto.ratio! > 0);
});
