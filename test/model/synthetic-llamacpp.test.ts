// llama.cpp (node-llama-cpp, CPU) loads every synthetic model tandem writes and generates
// from it: each architecture in f16 and Q4_K_M, and every other type in some architecture;
// a copied vocabulary tokenizes exactly as the file it came from.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { getLlama, type Llama } from 'node-llama-cpp';
import { IQ_MIX_TYPES, makeModel, type ModelFileType, type ModelSpec, type SyntheticArchitecture } from '../../src/model/synthetic.js';
import { modelPath } from '../helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tandem-synthetic-llamacpp-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let llama: Llama;
t.before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
});

const ARCHS: { label: string; spec: ModelSpec }[] = [
  { label: 'llama', spec: { architecture: 'llama' } },
  { label: 'llama 4x top-2 (Mixtral-style)', spec: { architecture: 'llama', nExpert: 4, nExpertUsed: 2, nFf: 256 } },
  { label: 'qwen2', spec: { architecture: 'qwen2' } },
  { label: 'qwen2moe', spec: { architecture: 'qwen2moe' } },
  { label: 'qwen3moe', spec: { architecture: 'qwen3moe', headDim: 128 } },
  { label: 'olmoe', spec: { architecture: 'olmoe' } },
];
// Every architecture gets f16 and q4_K_M; the other types go round the architectures.
const OTHER_TYPES: ModelFileType[] = [
  'f32', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_K', 'q5_K', 'q6_K', 'mxfp4', 'mxfp4_moe',
  'q2_K', 'q3_K', 'iq4_nl', 'iq4_xs', 'q3_K_M', 'q2_K_mix', 'iq4_xs_mix',
  'iq2_xxs', 'iq2_xs', 'iq2_s', 'iq3_xxs', 'iq3_s', ...IQ_MIX_TYPES,
];
const CASES: { label: string; spec: ModelSpec; type: ModelFileType }[] = [];
ARCHS.forEach((a, i) => {
  const types: ModelFileType[] = ['f16', 'q4_K_M', ...OTHER_TYPES.filter((_, k) => k % ARCHS.length === i)];
  for (const type of types) CASES.push({ ...a, type });
});

t.test('llama.cpp loads every architecture × type and generates', async (t) => {
  for (const c of CASES) {
    const file = path.join(dir, `${c.label.split(' ')[0]}-${c.spec.nExpert ?? 0}-${c.type}.gguf`);
    const made = await makeModel({ ...c.spec, type: c.type, seed: 11 }, file);
    const model = await llama.loadModel({ modelPath: file });
    t.equal(model.fileInfo.metadata.general.architecture, made.spec.architecture as SyntheticArchitecture, `${c.label} ${c.type}: architecture`);
    t.equal(model.trainContextSize, made.spec.nCtx, `${c.label} ${c.type}: context length`);
    const context = await model.createContext({ contextSize: 128, threads: 1 });
    const prompt = model.tokenize('Once upon a time');
    t.ok(prompt.length > 1, `${c.label} ${c.type}: the synthetic vocabulary tokenizes`);
    const out: number[] = [];
    for await (const token of context.getSequence().evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
      out.push(token);
      if (out.length === 8) break;
    }
    t.equal(out.length, 8, `${c.label} ${c.type}: generates 8 tokens`);
    t.ok(out.every((id) => Number.isInteger(id) && id >= 0 && id < made.nVocab), `${c.label} ${c.type}: token ids in the vocabulary`);
    await context.dispose();
    await model.dispose();
  }
});

t.test('a copied vocabulary tokenizes as its source does', async (t) => {
  const vocab = modelPath('vocab/ggml-vocab-llama-spm.gguf');
  const file = path.join(dir, 'copied-vocab.gguf');
  await makeModel({ vocab, nLayer: 1, type: 'q8_0' }, file);
  const source = await llama.loadModel({ modelPath: vocab, vocabOnly: true });
  const model = await llama.loadModel({ modelPath: file });
  for (const text of ['Hello world', ' leading space and\nnewlines\t', 'ünïcödé 日本語 🦙', 'int main() { return 0; }']) {
    t.same(model.tokenize(text), source.tokenize(text), JSON.stringify(text));
  }
  t.equal(model.tokens.bos, source.tokens.bos);
  t.equal(model.tokens.eos, source.tokens.eos);
  const context = await model.createContext({ contextSize: 64, threads: 1 });
  const out: number[] = [];
  for await (const token of context.getSequence().evaluate(model.tokenize('The'), { temperature: 0, yieldEogToken: true })) {
    out.push(token);
    if (out.length === 4) break;
  }
  t.equal(out.length, 4, 'generates from a 32000-token vocabulary');
  await context.dispose();
  await model.dispose();
  await source.dispose();
});
