// The CPU thread pool (native/cpu/thread_pool.cpp) under stress, through the addon's poolCheck:
// runs of many sizes, idle spells that put the workers to sleep so that some wake after their
// job has ended, and throwing tasks. Every task of a run runs exactly once; a run that throws
// rethrows and runs no task twice.
import t from 'tap';
import { native } from '../../src/native/binding.js';

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

t.test('bad arguments are typed errors', async (t) => {
  t.throws(() => ops.poolCheck(0, 10, 0), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => ops.poolCheck(2, 0, 0), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => ops.poolCheck(2, 10, -1), { code: 'TDM_BAD_ARGUMENT' });
});
