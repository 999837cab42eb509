import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GgufFile } from '../../src/model/gguf.js';
import { modelPath } from '../helpers.js';
import { buildGguf } from './gguf-test-writer.js';

t.test('reads stories260K metadata and tensor table', async (t) => {
  const f = GgufFile.open(modelPath('stories260K.gguf'));
  t.equal(f.version, 3);
  t.equal(f.architecture, 'llama');
  t.equal(f.getNumber('llama.embedding_length'), 64);
  t.equal(f.getNumber('llama.block_count'), 5);
  const tokens = f.getArray('tokenizer.ggml.tokens');
  t.equal(tokens?.elementType, 'string');
  t.equal(tokens?.value.length, 512);
  t.ok(f.getArray('tokenizer.ggml.scores')?.value instanceof Float32Array);
  const emb = f.tensor('token_embd.weight');
  t.same(emb?.shape, [64, 512]);
  t.equal(emb?.type, 'f32');
  const bytes = f.tensorData('token_embd.weight');
  t.equal(bytes.byteLength, 64 * 512 * 4);
  f.close();
  t.equal(bytes.byteLength, 64 * 512 * 4, 'a view stays valid after close');
});

t.test('missing path and directory give typed errors', async (t) => {
  t.throws(() => GgufFile.open('/definitely/not/here.gguf'), { code: 'TDM_NOT_FOUND' });
  t.throws(() => GgufFile.open(modelPath('.')), { code: 'TDM_BAD_GGUF' });
});

t.test('string arrays: multi-byte and astral characters, empty strings, and bytes that are not UTF-8', async (t) => {
  const words = ['a', '', 'é', '😀x', '日本', 'XY', 'z'];
  const { bytes } = buildGguf([{ key: 's', type: 'array', elementType: 'string', value: words }], []);
  const dir = mkdtempSync(path.join(tmpdir(), 'tandem-gguf-strings-'));
  const good = path.join(dir, 'good.gguf');
  writeFileSync(good, bytes);
  const f = GgufFile.open(good);
  t.same(Array.from(f.getArray('s')!.value), words, 'every element back as written');
  f.close();
  // 'XY' becomes 0xC3 0x28, an invalid sequence: that array is converted element by element.
  const at = bytes.indexOf(Buffer.from('XY'));
  bytes[at] = 0xc3;
  bytes[at + 1] = 0x28;
  const bad = path.join(dir, 'bad.gguf');
  writeFileSync(bad, bytes);
  const g = GgufFile.open(bad);
  const got = Array.from(g.getArray('s')!.value);
  t.equal(got.length, words.length);
  t.equal(got[5], '\ufffd(', 'the invalid byte is replaced, as any JS string conversion does');
  t.same([...got.slice(0, 5), got[6]], [...words.slice(0, 5), words[6]], 'the others are untouched');
  g.close();
});
