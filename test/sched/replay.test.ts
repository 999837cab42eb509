// The replay of a measured run on its profiled tables (src/sched/sim/replay.ts): on the tables
// the H200 run of 2026-11-27 profiled (run 4, committed with its results), the policies serve
// the device check's closed batches; auto must not fall behind gpu-only there, as it did on
// the 1536-token workload (0.97x) while prefills were pushed to host RAM half done. SIMULATED.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatReplay, readProfileTables, runReplay } from '../../src/sched/sim/replay.js';
import { command } from '../../src/sched/sim/command.js';

const H200_RUN4 = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../bench/results/2026-11-27-h200/run4/profiles/profiles/a0600da707bd751b.json');

t.test('on the H200 run-4 tables, auto keeps up with gpu-only on both workloads of the device check', async (t) => {
  const tables = readProfileTables(H200_RUN4);
  const workloads = [
    { name: '32 x 1536 prompts, 64 tokens', requests: 32, promptTokens: 1536, outputTokens: 64, kvBlocks: { device: 1122, host: 3264 } },
    { name: '48 x 512 prompts, 128 tokens', requests: 48, promptTokens: 512, outputTokens: 128, kvBlocks: { device: 672, host: 2016 } },
  ];
  for (const w of workloads) {
    const r = runReplay({ tables, blockTokens: 16, ...w, policies: ['gpu-only', 'auto'] });
    const [gpu, auto] = r.runs;
    t.equal(gpu!.generatedTokens, w.requests * w.outputTokens, `${w.name}: every token generated`);
    t.equal(auto!.generatedTokens, w.requests * w.outputTokens);
    const ratio = auto!.throughput / gpu!.throughput;
    t.ok(ratio >= 0.995, `${w.name}: auto ${ratio.toFixed(3)}x gpu-only (SIMULATED)`);
    t.equal(auto!.preemptions, 0, `${w.name}: no prefill is dropped for recompute`);
    const text = formatReplay(r, 'run 4');
    t.match(text, /SIMULATED/);
    t.match(text, /\| auto \| /);
  }
});

t.test('the overlap and pipeline policies no longer move prefills out half done on the long-prompt workload', async (t) => {
  const r = runReplay({ tables: readProfileTables(H200_RUN4), blockTokens: 16, requests: 32, promptTokens: 1536, outputTokens: 64, kvBlocks: { device: 1122, host: 3264 }, policies: ['gpu-only', 'overlap', 'pipeline'] });
  const gpu = r.runs[0]!.throughput;
  // Before the prompts' blocks were counted as promised: overlap 0.68x and pipeline 0.71x gpu-only, with 37 and 45 moves.
  for (const x of r.runs.slice(1)) {
    t.ok(x.throughput / gpu > 0.8, `${x.policy}: ${(x.throughput / gpu).toFixed(2)}x gpu-only (SIMULATED)`);
    t.ok(x.moves <= 12, `${x.policy}: ${x.moves} moves`);
  }
});

t.test('bad profiles and settings are typed errors', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-replay-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.throws(() => readProfileTables(path.join(dir, 'none.json')), { code: 'TDM_BAD_ARGUMENT', message: /cannot read/ });
  const other = path.join(dir, 'other.json');
  fs.writeFileSync(other, '{"schema":"tandem-expert-calibration/2"}');
  t.throws(() => readProfileTables(other), { code: 'TDM_BAD_ARGUMENT', message: /not a tandem profile/ });
  const tables = readProfileTables(H200_RUN4);
  const ok = { tables, blockTokens: 16, requests: 2, promptTokens: 32, outputTokens: 4, kvBlocks: { device: 100, host: 100 } };
  t.throws(() => runReplay({ ...ok, requests: 0 }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => runReplay({ ...ok, kvBlocks: { device: 0, host: 10 } }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => runReplay({ ...ok, kvBlocks: { device: 10, host: -1 } }), { code: 'TDM_BAD_ARGUMENT' });
  t.equal(runReplay(ok).runs.length, 4, 'every policy by default');
});

t.test('tandem simulate --replay prints the table and checks its flags', async (t) => {
  const out: string[] = [];
  const log = console.log;
  console.log = (s: unknown) => out.push(String(s));
  try {
    t.equal(await command.run(['--replay', H200_RUN4, '--closed', '8:256:16', '--kv-blocks', '200:400', '--policies', 'gpu-only,auto']), 0);
  } finally {
    console.log = log;
  }
  t.match(out.join('\n'), /Replay of a measured run \[SIMULATED\][\s\S]*\| auto \|/);
  await t.rejects(command.run(['--replay', H200_RUN4, '--closed', '8:256', '--kv-blocks', '200:400']), { code: 'TDM_BAD_ARGUMENT', message: /--closed/ });
  await t.rejects(command.run(['--replay', H200_RUN4, 't4', '--closed', '8:256:16', '--kv-blocks', '200:400']), { code: 'TDM_BAD_ARGUMENT', message: /no hardware name/ });
  await t.rejects(command.run(['t4', '--closed', '8:256:16']), { code: 'TDM_BAD_ARGUMENT', message: /for --replay/ });
  await t.rejects(command.run(['--replay', H200_RUN4, '--closed', '8:256:16', '--kv-blocks', '200:400', '--policies', 'fastest']), { code: 'TDM_BAD_ARGUMENT', message: /unknown policy/ });
});
