import t from 'tap';
import { GgufFile } from '../../src/model/gguf.js';
import { modelPath } from '../helpers.js';

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
