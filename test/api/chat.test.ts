// chat() through a model's chat template: a synthetic model carrying Phi-3's vocabulary
// and template, and the ChatML fallback for a file without a template (as llama.cpp).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadModel, type ChatMessage } from '../../src/api/index.js';
import { makeModel, syntheticVocab } from '../../src/model/synthetic.js';
import { GgufWriter } from '../../src/model/gguf-writer.js';
import { HarmonySplitter } from '../../src/model/harmony.js';
import { modelPath } from '../helpers.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-chat-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const CONVERSATION: ChatMessage[] = [
  { role: 'user', content: 'Hello there' },
  { role: 'assistant', content: 'Hi! How can I help?' },
  { role: 'user', content: 'Tell me a story.' },
];

t.test('the file\'s template renders the history; chat() generates from exactly that prompt', async (t) => {
  const file = path.join(dir, 'phi3-vocab.gguf');
  await makeModel({ architecture: 'llama', type: 'q8_0', vocab: modelPath('vocab/ggml-vocab-phi-3.gguf'), seed: 5 }, file);
  const model = await loadModel(file, { threads: 1, contextSize: 256 });
  t.teardown(() => model.dispose());

  const text = await model.renderChat(CONVERSATION);
  t.match(text, /<\|user\|>\nHello there<\|end\|>\n<\|assistant\|>\nHi! How can I help\?<\|end\|>\n<\|user\|>\nTell me a story\.<\|end\|>\n<\|assistant\|>\n$/);
  t.ok(text.startsWith('<s>'), 'this template writes BOS itself');
  const bos = model.tokenize('', { special: true });
  t.equal(bos.length, 1, 'the vocabulary adds BOS');
  const ids = model.tokenize(text, { special: true, addBos: false });
  t.equal(ids[0], bos[0]);
  t.equal(model.tokenize('<|user|>', { addBos: false, special: true }).length, 1, 'template markers become special tokens');

  const opts = { temperature: 0, maxTokens: 12, ignoreEos: true };
  const viaChat = await model.chat(CONVERSATION, opts).result;
  const viaIds = await model.generate(ids, opts).result;
  t.equal(viaChat.usage.promptTokens, ids.length, 'one BOS: chat() adds none where the template wrote it');
  t.same(viaChat.tokens, viaIds.tokens, 'chat() is generate() on the rendered, tokenized conversation');
  t.equal(viaChat.tokens.length, 12);
});

t.test('a file without a template chats through ChatML', async (t) => {
  const model = await loadModel(modelPath('stories260K.gguf'), { threads: 1, contextSize: 256 });
  t.teardown(() => model.dispose());
  const text = await model.renderChat([{ role: 'user', content: 'Once upon a time' }]);
  t.equal(text, '<|im_start|>user\nOnce upon a time<|im_end|>\n<|im_start|>assistant\n');
  const r = await model.chat([{ role: 'user', content: 'Once upon a time' }], { temperature: 0, maxTokens: 4 }).result;
  t.equal(r.usage.promptTokens, model.tokenize(text, { special: true }).length);
  t.equal(r.tokens.length, 4);
});

t.test('a vocabulary with harmony\'s tokens (gpt-oss): chat() splits the reply into text and reasoning; \'raw\' keeps it whole', async (t) => {
  // A synthetic vocabulary with five pieces renamed to harmony's markers (control tokens).
  const vocab = syntheticVocab(400);
  const entry = (key: string) => vocab.entries.find((e) => e.key === key)!;
  const tokens = [...(entry('tokenizer.ggml.tokens').value as { value: string[] }).value];
  const types = Int32Array.from((entry('tokenizer.ggml.token_type').value as { value: Int32Array }).value);
  const markers = ['<|start|>', '<|channel|>', '<|message|>', '<|end|>', '<|return|>'];
  markers.forEach((m, i) => {
    tokens[390 + i] = m;
    types[390 + i] = 3;
  });
  const w = new GgufWriter();
  for (const e of vocab.entries) w.set(e.key, e.type, e.value);
  w.set('tokenizer.ggml.tokens', 'array', { elementType: 'string', value: tokens });
  w.set('tokenizer.ggml.token_type', 'array', { elementType: 'int32', value: types });
  const vocabFile = path.join(dir, 'harmony-vocab.gguf');
  await (await w.create(vocabFile)).close();
  const file = path.join(dir, 'harmony.gguf');
  await makeModel({ architecture: 'llama', type: 'q8_0', vocab: vocabFile, seed: 9 }, file);
  const model = await loadModel(file, { threads: 1, contextSize: 256 });
  t.teardown(() => model.dispose());

  // A random model: biased towards <|channel|> and <|message|> and away from repeating them, its
  // reply opens channels and messages.
  const logitBias = { 391: 4, 392: 4 };
  const options = { maxTokens: 40, temperature: 0, logitBias, frequencyPenalty: 3, ignoreEos: true };
  const split = await model.chat(CONVERSATION, options).result;
  const raw = await model.chat(CONVERSATION, { ...options, reasoning: 'raw' }).result;
  t.same(split.tokens, raw.tokens, 'the same tokens either way');
  t.notOk('reasoning' in raw, 'raw: no reasoning field');
  t.match(raw.text, /<\|message\|>/, 'the biased reply opens messages');
  const s = new HarmonySplitter();
  const parts = [s.push(raw.text), s.flush()];
  t.equal(split.text, parts.map((p) => p.text).join(''), 'text: the raw reply\'s final (or unnamed) channels');
  t.equal(split.reasoning, parts.map((p) => p.reasoning).join(''), 'reasoning: its other channels');
  t.same(split.toolCalls ?? [], s.toolCalls(), 'tool calls: its messages to functions');
  t.ok(split.text.length + split.reasoning!.length < raw.text.length, 'the markers and channel names are gone');
  t.comment(`raw: ${JSON.stringify(raw.text.slice(0, 120))}`);
});
