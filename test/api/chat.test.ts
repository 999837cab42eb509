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
import { startServer } from '../../src/server/index.js';
import { modelPath } from '../helpers.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-chat-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const CONVERSATION: ChatMessage[] = [
  { role: 'user', content: 'Hello there' },
  { role: 'assistant', content: 'Hi! How can I help?' },
  { role: 'user', content: 'Tell me a story.' },
];

/**
 * A synthetic llama whose 400-piece vocabulary has `pieces` at ids 390 and on, of token type
 * `type` (3 control, 4 user-defined), and `template` as its chat template when given.
 */
async function modelWithPieces(name: string, pieces: string[], type: number, template?: string): Promise<string> {
  const vocab = syntheticVocab(400);
  const entry = (key: string) => vocab.entries.find((e) => e.key === key)!;
  const tokens = [...(entry('tokenizer.ggml.tokens').value as { value: string[] }).value];
  const types = Int32Array.from((entry('tokenizer.ggml.token_type').value as { value: Int32Array }).value);
  pieces.forEach((p, i) => {
    tokens[390 + i] = p;
    types[390 + i] = type;
  });
  const w = new GgufWriter();
  for (const e of vocab.entries) w.set(e.key, e.type, e.value);
  w.set('tokenizer.ggml.tokens', 'array', { elementType: 'string', value: tokens });
  w.set('tokenizer.ggml.token_type', 'array', { elementType: 'int32', value: types });
  if (template !== undefined) w.set('tokenizer.chat_template', 'string', template);
  const vocabFile = path.join(dir, `${name}-vocab.gguf`);
  await (await w.create(vocabFile)).close();
  const file = path.join(dir, `${name}.gguf`);
  await makeModel({ architecture: 'llama', type: 'q8_0', vocab: vocabFile, seed: 9 }, file);
  return file;
}

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
  const file = await modelWithPieces('harmony', ['<|start|>', '<|channel|>', '<|message|>', '<|end|>', '<|return|>'], 3);
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
  // JSON mode cannot draw the channel markers a harmony reply opens with.
  t.throws(() => model.chat(CONVERSATION, { responseFormat: { type: 'json_object' } }), { code: 'TDM_UNSUPPORTED', message: /harmony/ });
});

t.test('a template with <think> and <tool_call> tags (Qwen-style): reasoning split, calls read when tools are offered, and served as tool_calls', async (t) => {
  // Whole tagged pieces as single user-defined tokens, so that a biased random model emits exactly them.
  const template = [
    '{%- if tools %}<|im_start|>system\nThink in <think></think>, then call tools as <tool_call>{"name": ..., "arguments": ...}</tool_call>:\n',
    '{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}<|im_end|>\n{% endif %}',
    '{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}',
    '{%- if add_generation_prompt %}<|im_start|>assistant\n{% if open_think %}<think>\n{% endif %}{% endif %}',
  ].join('');
  const pieces = ['<think>weighing it</think>', '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', 'pondering</think>'];
  // User-defined tokens (type 4): text that decodes as written.
  const file = await modelWithPieces('tagged', pieces, 4, template);
  const model = await loadModel(file, { threads: 1, contextSize: 512 });
  t.teardown(() => model.dispose());
  t.same(model.info.replyFormat, { reasoning: 'think', toolCalls: 'hermes' }, 'the format is read from the template');

  const weather = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } };
  t.match(await model.renderChat(CONVERSATION, { tools: [weather] }), /"name":\s*"get_weather"/, 'the tools reach the template');
  // The two tagged pieces, each once (a large bias, then a larger penalty once used), in either order.
  const options = { maxTokens: 2, temperature: 0, logitBias: { 390: 100, 391: 100 }, frequencyPenalty: 200 };
  const withTools = await model.chat(CONVERSATION, { ...options, templateVariables: { tools: [weather] } }).result;
  t.same(withTools.toolCalls, [{ name: 'get_weather', arguments: '{"city":"Paris"}' }], 'the call is read back');
  t.equal(withTools.reasoning, 'weighing it', 'the think block is the reasoning');
  t.equal(withTools.text, '', 'nothing else');
  const noTools = await model.chat(CONVERSATION, options).result;
  t.notOk(noTools.toolCalls, 'offered no tools: no calls read');
  t.equal(noTools.text.trim(), pieces[1], 'the tags stay in the text');
  t.equal(noTools.reasoning, 'weighing it');
  const raw = await model.chat(CONVERSATION, { ...options, reasoning: 'raw', templateVariables: { tools: [weather] } }).result;
  t.same(raw.tokens, withTools.tokens, 'raw: the same tokens');
  t.ok(raw.text.includes(pieces[0]!) && raw.text.includes(pieces[1]!) && !('reasoning' in raw), 'raw: the reply as generated');
  // A prompt that the template leaves inside <think>: the reply starts in the reasoning.
  const opened = await model.chat(CONVERSATION, { maxTokens: 1, temperature: 0, logitBias: { 392: 100 }, templateVariables: { open_think: true } }).result;
  t.same([opened.reasoning, opened.text], ['pondering', ''], 'reasoning up to </think>');

  // The server takes tools for this model and answers with tool_calls.
  const server = await startServer(model, { port: 0 });
  t.teardown(() => server.close());
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: CONVERSATION, tools: [weather], max_tokens: 1, temperature: 0, logit_bias: { 391: 100 } }),
  });
  const body = await res.json() as { choices: { finish_reason: string; message: { content: string | null; reasoning_content?: string; tool_calls?: { function: { name: string; arguments: string } }[] } }[] };
  t.equal(res.status, 200, JSON.stringify(body).slice(0, 300));
  const choice = body.choices[0]!;
  t.equal(choice.finish_reason, 'tool_calls');
  t.equal(choice.message.content, null, 'no text besides the call');
  t.match(choice.message.tool_calls, [{ function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }]);
  // reasoning_format 'none' (llama.cpp's): the reply as generated, think tags in the content.
  const whole = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: CONVERSATION, max_tokens: 1, temperature: 0, logit_bias: { 390: 100 }, reasoning_format: 'none' }),
  });
  const wholeBody = await whole.json() as typeof body;
  t.same(wholeBody.choices[0]!.message, { role: 'assistant', content: pieces[0] }, 'no reasoning_content');
});
