// Every op case (op-cases.ts) on every backend this machine runs, against the CPU reference:
// the CPU's SIMD variants here, and each GPU device where one is present. GPU backends that
// cannot run say why in a skip message (library missing, no device, ...).
import t from 'tap';
import { native } from '../../src/native/binding.js';
import { REFERENCE_ID, WEIGHT_TYPES, badDataChecks, checkCase, opCases, rand } from './op-cases.js';

const ops = native().backendOps;
const ids = ops.ids();
const cases = opCases();
const references = cases.map((c) => c.run(ops, REFERENCE_ID));

t.ok(ids.includes(REFERENCE_ID), `backends here: ${ids.join(', ')}`);

for (const id of ids.filter((i) => i !== REFERENCE_ID)) {
  t.test(`${id}: every op case against ${REFERENCE_ID}`, async (t) => {
    cases.forEach((c, i) => {
      const r = checkCase(ops, id, c, references[i]);
      t.ok(r.pass, `${r.name}: ${r.detail}`);
    });
  });
}

t.test('bad device-side data fails the call with TDM_BAD_ARGUMENT, and the backend goes on', async (t) => {
  for (const id of ids) for (const r of badDataChecks(ops, id)) t.ok(r.pass, `${r.name}: ${r.detail}`);
});

for (const g of native().backends().filter((b) => b.kind !== 'cpu' && b.status === 'unavailable')) {
  t.test(`${g.kind}: every op case against ${REFERENCE_ID}`, { skip: `${g.kind} backend not loaded: ${g.reason}${g.detail ? ` (${g.detail})` : ''}` }, async () => {});
}

t.test('the op runner rejects bad input with typed errors', async (t) => {
  t.throws(() => ops.matmul(REFERENCE_ID, 'q4_0', rand(66, 1), 2, 33, rand(33, 2), 1), { code: 'TDM_BAD_ARGUMENT' }, 'row not whole blocks');
  t.throws(() => ops.matmul(REFERENCE_ID, 'nope', rand(4, 1), 2, 2, rand(2, 2), 1), { code: 'TDM_BAD_ARGUMENT' }, 'unknown type');
  t.throws(() => ops.getRows(REFERENCE_ID, 'f32', rand(8, 1), 2, 4, Int32Array.of(2)), { code: 'TDM_BAD_ARGUMENT' }, 'row id out of range');
  t.throws(() => ops.rope(REFERENCE_ID, rand(8, 1), Int32Array.of(0), 1, 8, 8, 'sideways' as 'norm', 10000, 1), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('the case list covers every op of the backend table and every weight type', async (t) => {
  const opsCovered = new Set(cases.map((c) => c.op));
  for (const op of ['matmul', 'get_rows', 'rms_norm', 'rope', 'add/mul', 'swiglu/scale_rows', 'attention', 'router', 'moe_ffn', 'copy_blocks', 'copy_pieces'])
    t.ok(opsCovered.has(op), op);
  const matmulTypes = new Set(cases.filter((c) => c.op === 'matmul').map((c) => c.name.split(' ')[1]));
  t.equal(matmulTypes.size, WEIGHT_TYPES.length, [...matmulTypes].join(' '));
});
