// The GGUF writer round-trips through the native reader: every metadata value type,
// nested arrays, alignment, tensor tables and data streamed in pieces; misuse is typed.
import t from 'tap';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GgufFile, type GgufArray } from '../../src/model/gguf.js';
import { GgufWriter } from '../../src/model/gguf-writer.js';
import { dequantize, quantize } from '../../src/model/quant.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tandem-gguf-writer-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = () => path.join(dir, `f${fileNo++}.gguf`);

async function writeOnly(w: GgufWriter): Promise<GgufFile> {
  const p = tmpFile();
  const s = await w.create(p);
  for (const tensor of w.tensors) await s.write(tensor.name, new Uint8Array(tensor.nBytes));
  await s.close();
  return GgufFile.open(p);
}

const arr = (f: GgufFile, key: string): GgufArray => f.getArray(key)!;

t.test('every scalar type round-trips at its limits', async (t) => {
  const w = new GgufWriter()
    .set('u8.min', 'uint8', 0).set('u8.max', 'uint8', 255)
    .set('i8.min', 'int8', -128).set('i8.max', 'int8', 127)
    .set('u16.max', 'uint16', 65535).set('i16.min', 'int16', -32768)
    .set('u32.max', 'uint32', 4294967295).set('i32.min', 'int32', -2147483648)
    .set('f32', 'float32', -1.5).set('f32.tiny', 'float32', 2 ** -149)
    .set('f64', 'float64', Math.PI)
    .set('bool.t', 'bool', true).set('bool.f', 'bool', false)
    .set('str', 'string', 'héllo ✓ 😀').set('str.empty', 'string', '')
    .set('u64.max', 'uint64', (1n << 64n) - 1n).set('u64.small', 'uint64', 7)
    .set('i64.min', 'int64', -(1n << 63n)).set('i64.max', 'int64', (1n << 63n) - 1n);
  const f = await writeOnly(w);
  t.equal(f.version, 3);
  t.equal(f.alignment, 32);
  const expect: [string, string, unknown][] = [
    ['u8.min', 'uint8', 0], ['u8.max', 'uint8', 255], ['i8.min', 'int8', -128], ['i8.max', 'int8', 127],
    ['u16.max', 'uint16', 65535], ['i16.min', 'int16', -32768], ['u32.max', 'uint32', 4294967295],
    ['i32.min', 'int32', -2147483648], ['f32', 'float32', -1.5], ['f32.tiny', 'float32', 2 ** -149],
    ['f64', 'float64', Math.PI], ['bool.t', 'bool', true], ['bool.f', 'bool', false],
    ['str', 'string', 'héllo ✓ 😀'], ['str.empty', 'string', ''],
    ['u64.max', 'uint64', (1n << 64n) - 1n], ['u64.small', 'uint64', 7n],
    ['i64.min', 'int64', -(1n << 63n)], ['i64.max', 'int64', (1n << 63n) - 1n],
  ];
  t.same([...f.metadata.keys()], expect.map((e) => e[0]), 'keys keep their order');
  for (const [key, type, value] of expect) {
    const e = f.metadata.get(key)!;
    t.equal(e.type, type, `${key} type`);
    t.equal(e.value, value, `${key} value`);
  }
  f.close();
});

t.test('arrays of every element type, typed or plain, and nested arrays', async (t) => {
  const w = new GgufWriter()
    .setArray('a.u8', 'uint8', [0, 1, 255])
    .setArray('a.i8', 'int8', new Int8Array([-128, 0, 127]))
    .setArray('a.u16', 'uint16', [1, 65535])
    .setArray('a.i16', 'int16', new Int16Array([-32768, 5]))
    .setArray('a.u32', 'uint32', new Uint32Array([4294967295, 3]))
    .setArray('a.i32', 'int32', [-1, 2, -3])
    .setArray('a.f32', 'float32', new Float32Array([0.25, -2, 1e30]))
    .setArray('a.f64', 'float64', [Math.E, -0.125])
    .setArray('a.u64', 'uint64', [0n, (1n << 64n) - 1n])
    .setArray('a.i64', 'int64', new BigInt64Array([-(1n << 63n), 9n]))
    .setArray('a.bool', 'bool', [true, false, true])
    .setArray('a.str', 'string', ['a', '', 'ü', '<0x0A>'])
    .setArray('a.empty', 'float32', [])
    .setArray('a.nested', 'array', [
      { elementType: 'uint32', value: [1, 2] },
      { elementType: 'string', value: ['x', 'yz'] },
      { elementType: 'array', value: [{ elementType: 'int16', value: [-7] }] },
    ]);
  const f = await writeOnly(w);
  const same = (key: string, elementType: string, values: unknown[]) => {
    const a = arr(f, key);
    t.equal(a.elementType, elementType, `${key} element type`);
    t.same(Array.from(a.value), values, `${key} values`);
  };
  same('a.u8', 'uint8', [0, 1, 255]);
  same('a.i8', 'int8', [-128, 0, 127]);
  same('a.u16', 'uint16', [1, 65535]);
  same('a.i16', 'int16', [-32768, 5]);
  same('a.u32', 'uint32', [4294967295, 3]);
  same('a.i32', 'int32', [-1, 2, -3]);
  same('a.f32', 'float32', [0.25, -2, Math.fround(1e30)]);
  same('a.f64', 'float64', [Math.E, -0.125]);
  same('a.u64', 'uint64', [0n, (1n << 64n) - 1n]);
  same('a.i64', 'int64', [-(1n << 63n), 9n]);
  same('a.bool', 'bool', [true, false, true]);
  same('a.str', 'string', ['a', '', 'ü', '<0x0A>']);
  same('a.empty', 'float32', []);
  t.ok(arr(f, 'a.f32').value instanceof Float32Array, 'numbers come back as typed arrays');
  const nested = arr(f, 'a.nested');
  t.equal(nested.elementType, 'array');
  const inner = nested.value as GgufArray[];
  t.equal(inner[0].elementType, 'uint32');
  t.same(Array.from(inner[0].value), [1, 2]);
  t.same(Array.from(inner[1].value), ['x', 'yz']);
  const deepest = inner[2].value as GgufArray[];
  t.equal(deepest[0].elementType, 'int16');
  t.same(Array.from(deepest[0].value), [-7]);
  f.close();
});

t.test('metadata copied from a real file writes back identically', async (t) => {
  const { modelPath } = await import('../helpers.js');
  const src = GgufFile.open(modelPath('stories260K.gguf'));
  const w = new GgufWriter();
  for (const e of src.metadata.values()) w.set(e.key, e.type, e.value);
  const f = await writeOnly(w);
  t.equal(f.metadata.size, src.metadata.size);
  for (const e of src.metadata.values()) {
    const got = f.metadata.get(e.key)!;
    t.equal(got.type, e.type, `${e.key} type`);
    if (e.type === 'array') {
      const a = e.value as GgufArray;
      const b = got.value as GgufArray;
      t.equal(b.elementType, a.elementType, `${e.key} element type`);
      t.same(Array.from(b.value), Array.from(a.value), `${e.key} values`);
    } else {
      t.equal(got.value, e.value, `${e.key} value`);
    }
  }
  src.close();
  f.close();
});

t.test('tensors: table, alignment and data streamed in pieces', async (t) => {
  const values = new Float32Array(256 * 3).map((_, i) => Math.sin(i) * 3);
  const q8 = quantize('q8_0', values);
  const f16 = quantize('f16', values.subarray(0, 96));
  const w = new GgufWriter().setUint32('general.alignment', 64).setString('general.architecture', 'llama');
  w.addTensor({ name: 'a.weight', type: 'f32', shape: [5] });
  w.addTensor({ name: 'b.weight', type: 'q8_0', shape: [256, 3] });
  w.addTensor({ name: 'c.weight', type: 'f16', shape: [32, 1, 3] });
  w.addTensor({ name: 'd.weight', type: 'q4_K', shape: [256, 2, 1, 2] });
  const q4k = quantize('q4_K', new Float32Array(1024).map((_, i) => Math.cos(i)));
  t.same(w.tensors.map((x) => x.offset % 64), [0, 0, 0, 0], 'offsets aligned to general.alignment');
  const p = tmpFile();
  const s = await w.create(p);
  await s.write('a.weight', new Uint8Array(new Float32Array([1, 2, 3, 4, 5]).buffer));
  for (let i = 0; i < q8.length; i += 100) await s.write('b.weight', q8.subarray(i, i + 100));
  await s.write('c.weight', f16);
  await s.write('d.weight', q4k);
  t.equal(s.progress.bytesWritten, s.progress.bytesTotal);
  await s.close();
  const f = GgufFile.open(p);
  t.equal(f.alignment, 64);
  t.equal(f.dataOffset % 64, 0);
  t.equal(statSync(p).size, f.dataOffset + w.dataBytes, 'file ends at the aligned end of the data');
  t.same(f.tensors.map((x) => [x.name, x.type, x.shape]), [
    ['a.weight', 'f32', [5]],
    ['b.weight', 'q8_0', [256, 3]],
    ['c.weight', 'f16', [32, 1, 3]],
    ['d.weight', 'q4_K', [256, 2, 1, 2]],
  ]);
  t.same(Array.from(new Float32Array(f.tensorData('a.weight').slice().buffer)), [1, 2, 3, 4, 5]);
  t.same(f.tensorData('b.weight'), q8);
  t.same(f.tensorData('c.weight'), f16);
  t.same(f.tensorData('d.weight'), q4k);
  t.same(dequantize('q8_0', f.tensorData('b.weight'), 768), dequantize('q8_0', q8, 768));
  f.close();
  t.same(readdirSync(dir).filter((n) => n.includes('.partial-')), [], 'no temporary file is left');
});

t.test('misuse gives typed errors and leaves no file', async (t) => {
  const w = new GgufWriter();
  t.throws(() => w.set('k', 'uint8', 256), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('k', 'int32', 1.5), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('k', 'uint64', -1n), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('k', 'int64', 1n << 63n), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('k', 'string', 5), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('k', 'bool', 1), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('k', 'array', { elementType: 'uint8', value: [1, 300] }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('k', 'array', [1, 2]), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('k', 'nope' as never, 1), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.set('general.alignment', 'uint32', 48), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.addTensor({ name: 'x', type: 'q4_0', shape: [33] }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.addTensor({ name: 'x', type: 'f32', shape: [] }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.addTensor({ name: 'x', type: 'f32', shape: [1, 1, 1, 1, 1] }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => w.addTensor({ name: 'x', type: 'no_such_type', shape: [4] }), { code: 'TDM_BAD_ARGUMENT' });
  w.addTensor({ name: 'x', type: 'f32', shape: [4] });
  w.addTensor({ name: 'y', type: 'f32', shape: [4] });
  t.throws(() => w.addTensor({ name: 'x', type: 'f32', shape: [4] }), { code: 'TDM_BAD_ARGUMENT' }, 'duplicate name');
  t.throws(() => w.set('general.alignment', 'uint32', 64), { code: 'TDM_BAD_ARGUMENT' }, 'alignment after tensors');

  const p = tmpFile();
  const s = await w.create(p);
  t.throws(() => w.setString('late', 'x'), { code: 'TDM_BAD_ARGUMENT' }, 'frozen after create');
  await t.rejects(s.write('y', new Uint8Array(16)), { code: 'TDM_BAD_ARGUMENT' }, 'out of order');
  await t.rejects(s.write('x', new Uint8Array(20)), { code: 'TDM_BAD_ARGUMENT' }, 'too many bytes');
  await s.write('x', new Uint8Array(16));
  await t.rejects(s.close(), { code: 'TDM_BAD_ARGUMENT' }, 'incomplete');
  t.notOk(existsSync(p), 'an incomplete file never appears under its name');
  t.same(readdirSync(dir).filter((n) => n.includes('.partial-')), [], 'the partial file is removed');

  const bad = new GgufWriter();
  await t.rejects(bad.create(path.join(dir, 'no', 'such', 'dir.gguf')), { code: 'TDM_IO' });
});
