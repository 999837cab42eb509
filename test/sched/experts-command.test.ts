// `tandem experts` on the CPU stand-in: one row per policy, the calibrated costs printed by
// default, a JSON report, and typed errors for bad flags.
import t from 'tap';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { command } from '../../src/sched/experts/command.js';
import { makeModel } from '../../src/model/synthetic.js';

const dir = path.join(tmpdir(), 'tandem-test-models');
mkdirSync(dir, { recursive: true });
const file = path.join(dir, 'experts-command-v1-qwen2moe.gguf');
if (!existsSync(file)) await makeModel({ preset: 'tiny', architecture: 'qwen2moe', type: 'q8_0', nExpert: 8, nExpertUsed: 2, seed: 43 }, file);
const out = mkdtempSync(path.join(tmpdir(), 'tandem-experts-cmd-'));
t.teardown(() => rmSync(out, { recursive: true, force: true }));

async function run(args: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (s: string) => lines.push(String(s));
  try {
    return { code: await command.run(args), lines };
  } finally {
    console.log = log;
  }
}

t.test('measures each policy and prints the calibrated costs', async (t) => {
  const json = path.join(out, 'experts.json');
  const common = [file, '--device', 'cpu-standin', '--budget-mib', '3', '--threads', '1', '--prompt', '8', '--steps', '3', '--warmup', '1'];
  const r = await run([...common, '--policies', 'dynamic,cpu-all', '--json', json]);
  t.equal(r.code, 0);
  t.ok(r.lines.some((l) => /^dynamic\s+\d+/.test(l)) && r.lines.some((l) => /^cpu-all\s+0\s/.test(l)), 'a row per policy');
  t.ok(r.lines.some((l) => /n\* = none \(the makespan rule\)/.test(l)), 'no n* given: the makespan rule');
  t.ok(r.lines.some((l) => /^dynamic: calibrated expert costs: CPU [\d.]+ \+ [\d.]+\/row µs, call [\d.]+ µs, device [\d.]+ \+ [\d.]+\/row µs, link/.test(l)), 'the costs it calibrated');
  t.ok(r.lines.some((l) => /^cpu-all: \d+ CPU expert calls in the measured decode steps/.test(l)), 'what the CPU calls took');
  t.ok(r.lines.some((l) => /^dynamic: online refit of the CPU costs: call [\d.]+ µs, scale [\d.]+/.test(l)), 'where the online refit ended');
  const report = JSON.parse(readFileSync(json, 'utf8')) as { results: { policy: string; calibration?: unknown; rowHitRate: number | null }[] };
  t.same(report.results.map((x) => x.policy), ['dynamic', 'cpu-all']);
  t.ok(report.results[0]!.calibration !== undefined && report.results[1]!.calibration === undefined, 'only the dynamic policy calibrates');
  const fixed = await run([...common, '--policies', 'dynamic', '--n-star', '4']);
  t.ok(fixed.lines.some((l) => /n\* = 4\b/.test(l)) && !fixed.lines.some((l) => /calibrated expert costs/.test(l)), '--n-star replaces the calibration');
  const pregate = await run([...common, '--policies', 'dynamic', '--n-star', '1000', '--prefetch', '2', '--pregate', '--max-slots', '2']);
  const dynRow = pregate.lines.find((l) => /^dynamic\s+\d+/.test(l)) ?? '';
  const [used, fetched] = (/(\d+)\/(\d+)\s*$/.exec(dynRow) ?? []).slice(1).map(Number);
  t.ok(fetched! > 0 && used! <= fetched!, `--pregate: the last column counts used and prefetched experts (${used}/${fetched})`);
});

t.test('bad flags reject with TDM_BAD_ARGUMENT', async (t) => {
  for (const args of [[], [file, '--device', 'tpu'], [file, '--prefetch', 'lots'], [file, '--cost', '1,2,3'], [file, '--scoring', 'best'], [file, '--batch', '0']]) {
    await t.rejects(run(args), { code: 'TDM_BAD_ARGUMENT' }, args.slice(1).join(' ') || 'no model');
  }
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.lines.join('\n'), /--prefetch N\|idle/);
});
