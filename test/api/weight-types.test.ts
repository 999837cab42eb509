// Which weight types a file may hold: the ones tandem computes load (agreement.test.ts holds
// their logits against llama.cpp), and a tensor of any other ggml type is refused by name with
// TDM_UNSUPPORTED before anything runs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadModel } from '../../src/api/index.js';
import { typeInfo } from '../../src/model/quant.js';
import { IQ_MIX_TYPES, makeModel, type ModelFileType } from '../../src/model/synthetic.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-weight-types-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

/**
 * Rewrites the type id of tensor `name` in a GGUF's tensor table (name, n_dims, dims, then the
 * u32 type). The data offset stays, and every type named here takes fewer bytes than the f32
 * rows it replaces, so the file stays well-formed.
 */
function retypeTensor(file: string, name: string, typeId: number): void {
  const bytes = fs.readFileSync(file);
  const key = Buffer.concat([Buffer.alloc(8), Buffer.from(name)]);
  key.writeBigUInt64LE(BigInt(name.length));
  const at = bytes.indexOf(key);
  if (at < 0) throw new Error(`no tensor ${name} in ${file}`);
  const dimsAt = at + key.length;
  const nDims = bytes.readUInt32LE(dimsAt);
  bytes.writeUInt32LE(typeId, dimsAt + 4 + 8 * nDims);
  fs.writeFileSync(file, bytes);
}

t.test('a tensor of a type tandem cannot compute is refused by name', async (t) => {
  // The IQ1 and ternary types: still outside what tandem computes.
  for (const type of ['iq1_s', 'iq1_m', 'tq1_0', 'tq2_0']) {
    const file = path.join(dir, `${type}.gguf`);
    await makeModel({ architecture: 'llama', type: 'f32', seed: 1 }, file);
    retypeTensor(file, 'blk.0.attn_q.weight', typeInfo(type).id);
    await t.rejects(loadModel(file, { threads: 1 }), {
      code: 'TDM_UNSUPPORTED',
      message: new RegExp(`'blk\\.0\\.attn_q\\.weight' has type ${type}, which tandem cannot compute with`),
    }, type);
  }
});

t.test('files of the low-bit types load and generate', async (t) => {
  const types: ModelFileType[] = [
    'q2_K', 'q3_K', 'iq4_nl', 'iq4_xs', 'q3_K_M', 'q2_K_mix', 'iq4_xs_mix',
    'iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s', ...IQ_MIX_TYPES,
  ];
  for (const type of types) {
    const file = path.join(dir, `${type}.gguf`);
    await makeModel({ architecture: 'llama', type, seed: 2 }, file);
    const model = await loadModel(file, { threads: 1, contextSize: 64 });
    const out = await model.generate(model.tokenize('Once upon a time'), { temperature: 0, maxTokens: 8, ignoreEos: true }).result;
    t.equal(out.usage.completionTokens, 8, `${type}: 8 tokens`);
    await model.dispose();
  }
});
