// llama.cpp's tokenizer test vectors (tests/test-tokenizer-0): every input of every vocabulary in
// ../shared/models/vocab must tokenize to exactly the expected ids (no BOS, special tokens off).
import t from 'tap';
import { loadTokenizer } from '../../src/model/tokenizer/index.js';
import { readVectors } from './tokenizer-texts.js';
import { modelPath } from '../helpers.js';

const VOCABS = ['llama-spm', 'llama-bpe', 'qwen2', 'gpt-2', 'phi-3'];
for (const name of VOCABS) {
  t.test(`test vectors: ${name}`, async (t) => {
    const tok = loadTokenizer(modelPath(`vocab/ggml-vocab-${name}.gguf`));
    const vectors = readVectors(name);
    t.ok(vectors.length >= 40, 'has the vectors');
    let failures = 0;
    for (const { input, ids } of vectors) {
      const got = tok.tokenize(input, { addBos: false, addEos: false, special: false });
      if (JSON.stringify(got) !== JSON.stringify(ids)) {
        failures++;
        t.same(got, ids, `tokenize ${JSON.stringify(input)}`);
      }
    }
    t.equal(failures, 0, `all ${vectors.length} vectors match`);
  });
}
