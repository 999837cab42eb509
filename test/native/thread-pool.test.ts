// The CPU thread pool (native/cpu/thread_pool.cpp) under stress, through the addon's poolCheck:
// runs of many sizes (small and large alternating), idle spells that put the workers to sleep so
// that some wake after their job has ended, and throwing tasks. Every task of a run runs exactly
// once; a run that throws rethrows and runs no task twice.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { addonFile, native } from '../../src/native/binding.js';

const ops = native().backendOps;

t.test('every task runs exactly once, with workers asleep, late and busy', async (t) => {
  // More threads than this machine's two cores would spin against each other: slow, not wrong.
  for (const threads of [1, 2, 3]) {
    const r = ops.poolCheck(threads, 400, 200);
    t.equal(r.missed, 0, `${threads} threads: no task of a run was missed`);
    t.equal(r.doubled, 0, `${threads} threads: no task ran twice`);
    t.ok(r.thrown > 0 && r.rethrown === r.thrown, `${threads} threads: each of ${r.thrown} throwing runs rethrew`);
    t.ok(r.idleRunUs !== null && r.idleRunUs > 0, `${threads} threads: a short job after an idle spell took ${r.idleRunUs?.toFixed(1)} µs`);
  }
  const busy = ops.poolCheck(2, 2000, 0);
  t.same([busy.missed, busy.doubled, busy.rethrown === busy.thrown], [0, 0, true], 'back to back, with no idle spell');
  t.equal(busy.idleRunUs, null, 'no idle spell: nothing timed after one');
});

// A worker still looping in a finished run once read the next run's larger count and claimed a
// task past the last one: a task ran twice, or the done count passed n and the caller spun for
// ever. Runs of alternating sizes, back to back, in a child process so that a hang fails the
// test instead of stalling it.
t.test('back-to-back runs of alternating sizes all finish, each task once', async (t) => {
  const script = `const ops = require(${JSON.stringify(addonFile())}).backendOps;
    console.log(JSON.stringify([2, 3, 4].map((threads) => ops.poolCheck(threads, 100000, 0))));`;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
  t.equal(child.signal, null, '3 x 100000 runs finished (not killed after 60 s)');
  t.equal(child.status, 0, `the child exited cleanly ${child.stderr}`);
  if (child.status !== 0) return;
  const runs = JSON.parse(child.stdout) as { missed: number; doubled: number; thrown: number; rethrown: number }[];
  runs.forEach((r, i) => t.same([r.missed, r.doubled, r.rethrown === r.thrown], [0, 0, true], `${i + 2} threads: no task missed or run twice; every throwing run rethrew`));
});

t.test('bad arguments are typed errors', async (t) => {
  t.throws(() => ops.poolCheck(0, 10, 0), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => ops.poolCheck(2, 0, 0), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => ops.poolCheck(2, 10, -1), { code: 'TDM_BAD_ARGUMENT' });
});
