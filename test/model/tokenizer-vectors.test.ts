// llama.cpp's tokenizer test vectors (tests/test-tokenizer-0): every input of every vocabulary in
// ../shared/models/vocab must tokenize to exactly the expected ids (no BOS, special tokens off).
import fs from 'node:fs';
import t from 'tap';
import { loadTokenizer } from '../../src/model/tokenizer/index.js';
import { modelPath } from '../helpers.js';

const VOCABS = ['llama-spm', 'llama-bpe', 'qwen2', 'gpt-2', 'phi-3'];
const SEPARATOR = '\n__ggml_vocab_test__\n';

function readVectors(name: string): { input: string; ids: number[] }[] {
  const base = modelPath(`vocab/ggml-vocab-${name}.gguf`);
  const raw = fs.readFileSync(`${base}.inp`, 'utf8');
  const inputs: string[] = [];
  for (let pos = 0; pos < raw.length;) {
    const next = raw.indexOf(SEPARATOR, pos);
    if (next < 0) {
      inputs.push(raw.slice(pos));
      break;
    }
    inputs.push(raw.slice(pos, next));
    pos = next + SEPARATOR.length;
  }
  const lines = fs.readFileSync(`${base}.out`, 'utf8').split('\n');
  if (lines.at(-1) === '') lines.pop();
  if (lines.length !== inputs.length) throw new Error(`${name}: ${inputs.length} inputs, ${lines.length} outputs`);
  return inputs.map((input, i) => ({
    input,
    ids: lines[i]!.trim() === '' ? [] : lines[i]!.trim().split(/\s+/).map(Number),
  }));
}

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
