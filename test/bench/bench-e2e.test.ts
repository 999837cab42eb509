// `tandem bench` end to end on stories260K (a real tiny llama): both systems, every
// workload once, and the reports it writes. Timings are not checked (they belong to the
// bench's results), only that every run happened and the reports hold together.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { command, planFromFlags, simulateArgs } from '../../src/cli/commands/bench.js';
import { measureBandwidth } from '../../src/bench/machine.js';
import { native } from '../../src/native/binding.js';
import { systemsByName } from '../../src/bench/systems/index.js';
import type { BenchReport } from '../../src/bench/report.js';
import { modelPath } from '../helpers.js';

t.test('the read-bandwidth probe measures something and checks its arguments', async (t) => {
  const r = await measureBandwidth(1, 2, 8 * 2 ** 20);
  t.equal(r.threads, 1);
  t.ok(r.bytesPerSecond > 0 && Number.isFinite(r.bytesPerSecond));
  t.ok(r.bytes > 0 && r.bytes <= 8 * 2 ** 20);
  const two = await native().measureReadBandwidth(4 * 2 ** 20, 2, 1);
  t.equal(two.threads, 2);
  t.equal(two.bytes % 128, 0, 'whole cache lines per thread');
  await t.rejects(measureBandwidth(1, 1, 1000), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(measureBandwidth(0, 1), { code: 'TDM_BAD_ARGUMENT' });
  await t.rejects(measureBandwidth(1, 0), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('bench --simulate HW is tandem simulate HW with the other flags', async (t) => {
  t.equal(simulateArgs(['-m', 'x.gguf']), null, 'without --simulate: a measured bench');
  t.same(simulateArgs(['--simulate', 't4', '--quick']), ['t4', '--quick']);
  t.same(simulateArgs(['--quick', '--simulate=a10', '--model', 'llama2-7b']), ['a10', '--quick', '--model', 'llama2-7b']);
  t.throws(() => simulateArgs(['--simulate']), { code: 'TDM_BAD_ARGUMENT', message: /hardware profile/ });
  t.throws(() => simulateArgs(['--simulate', '--quick']), { code: 'TDM_BAD_ARGUMENT', message: /hardware profile/ });
  await t.rejects(command.run(['--simulate', 'h100']), { code: 'TDM_BAD_ARGUMENT' }, 'an unknown profile is the simulate command\'s usage error');
});

t.test('flags: --quick sets short defaults, explicit flags win, bad values are usage errors', async (t) => {
  const quick = planFromFlags({ quick: true });
  t.same([quick.pp, quick.tg, quick.parallel, quick.repeats], [[128], [32], [4], 1]);
  t.same(quick.online?.lengths, ['small']);
  const full = planFromFlags({});
  t.same([full.pp, full.tg, full.parallel, full.repeats, full.online?.lengths], [[512], [128], [4, 8, 16, 32], 3, ['chat']]);
  const some = planFromFlags({ quick: true, workloads: 'tg,online', tg: '64', rates: '0.5,2', repeats: '2' });
  t.same([some.pp, some.tg, some.parallel, some.repeats, some.online?.rates], [[], [64], [], 2, [0.5, 2]]);
  t.same([full.tgPrompts, planFromFlags({ 'tg-depth': '16,4096' }).tgPrompts], [[16], [16, 4096]], '--tg-depth lists the prompts before tg');
  t.throws(() => planFromFlags({ 'tg-depth': '0' }), { code: 'TDM_BAD_ARGUMENT' });
  t.same([full.kvType, planFromFlags({ 'kv-type': 'q8_0' }).kvType], [undefined, 'q8_0'], '--kv-type sets every system\'s cache type');
  t.throws(() => planFromFlags({ 'kv-type': 'q4_0' }), { code: 'TDM_BAD_ARGUMENT', message: /--kv-type/ });
  t.throws(() => planFromFlags({ workloads: 'pp,bogus' }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => planFromFlags({ pp: '12,x' }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => planFromFlags({ lengths: 'long' }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => systemsByName(['tandem', 'vllm']), { code: 'TDM_BAD_ARGUMENT', message: /known: tandem, llama\.cpp/ });
});

t.test('a --quick-like run on stories260K: both systems, every workload, every report', async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-bench-e2e-'));
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
  const log = console.log;
  const lines: string[] = [];
  console.log = (...args: unknown[]) => void lines.push(args.join(' '));
  let code: number;
  try {
    code = await command.run([
      '--model', modelPath('stories260K.gguf'), '--threads', '1', '--repeats', '1',
      '--pp', '32', '--tg', '8', '--parallel', '2', '--parallel-tokens', '8,6',
      '--lengths', 'small', '--rates', '20', '--requests', '4', '--concurrency', '2', '--out', out,
    ]);
  } finally {
    console.log = log;
  }
  t.equal(code, 0, 'exit code 0: every system loaded and every run finished');
  const report = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as BenchReport;
  t.same(report.systems.map((s) => s.name), ['tandem', 'llama.cpp']);
  t.same(report.runs.filter((r) => r.error), [], 'no run failed');
  const expected = ['pp32', 'tg8', 'parallel2', 'online-small@20'];
  for (const system of ['tandem', 'llama.cpp']) {
    t.same(report.runs.filter((r) => r.system === system).map((r) => r.workload), expected, `${system} ran every workload once`);
  }
  const byKey = (w: string, s: string) => report.runs.find((r) => r.workload === w && r.system === s)!;
  for (const s of ['tandem', 'llama.cpp']) {
    t.equal(byKey('parallel2', s).serving.requests, 2);
    t.equal(byKey('online-small@20', s).serving.requests, 4);
    t.equal(byKey('tg8', s).serving.tpotMs.count, 1);
    t.ok(report.runs.filter((r) => r.system === s).every((r) => r.value > 0), `${s}: every headline value is positive`);
  }
  const firsts = ['pp32', 'tg8'].map((w) => report.runs.find((r) => r.workload === w && r.order === 0)?.system);
  t.same(firsts, ['tandem', 'llama.cpp'], 'the system that runs first alternates run by run');
  t.ok(report.summary.find((r) => r.system === 'tandem' && r.workload === 'tg8')?.ratio! > 0, 'tandem has a ratio to llama.cpp');
  t.ok(report.summary.find((r) => r.workload === 'tg8')?.floorTokPerS! > 0, 'decode has a bandwidth floor');
  t.equal(report.sweeps.length, 2, 'one online sweep per system');
  const rounds = byKey('tg8', 'tandem').counters?.rounds;
  t.ok(rounds !== undefined && rounds >= 8, `tandem took a forward pass per decoded token at least (${rounds})`);
  t.equal(report.loads.filter((l) => l.error).length, 0);
  t.ok(report.machine.bandwidth.some((b) => b.threads === 1 && b.bytesPerSecond > 0));
  const files = fs.readdirSync(out).sort();
  for (const f of ['results.json', 'results.md', 'machine.json', 'stories260K-prompt.svg', 'stories260K-decode.svg', 'stories260K-1t-small-tpot.svg']) {
    t.ok(files.includes(f), `${f} written`);
  }
  t.notOk(files.includes('runs.jsonl'), 'the partial run log is gone once the report is complete');
  t.match(fs.readFileSync(path.join(out, 'results.md'), 'utf8'), /\| tg8 \| 1 \| tandem \|/);
  t.ok(lines.some((l) => /stories260K 1t tg8 +tandem/.test(l)), 'a summary line per row on stdout');
});
