// The OpenAI-compatible HTTP server on stories260K (a real tiny llama): completions and chat,
// whole and streamed, equal to generate() and chat(); batched prompts and n choices; the
// errors a client gets; a client that disconnects frees its sequence; close().
import http from 'node:http';
import t from 'tap';
import { loadModel, type Model } from '../../src/api/index.js';
import { startServer, type TandemServer } from '../../src/server/index.js';
import { parseChatRequest, parseCompletionRequest, RequestError, ResponseShape } from '../../src/server/openai.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const model: Model = await loadModel(STORIES, { threads: 1, contextSize: 128, maxSequences: 4 });
const server: TandemServer = await startServer(model, { port: 0, modelName: 'stories', maxBodyBytes: 4096 });
t.teardown(async () => {
  await server.close();
  await model.dispose();
});

async function post(path: string, body: unknown): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(server.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, json: await res.json(), headers: res.headers };
}

/** The data payloads of a server-sent event stream, in order. */
async function events(path: string, body: unknown): Promise<{ status: number; contentType: string | null; data: string[] }> {
  const res = await fetch(server.url + path, { method: 'POST', body: JSON.stringify(body) });
  const text = await res.text();
  const data = text
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice('data: '.length));
  return { status: res.status, contentType: res.headers.get('content-type'), data };
}

const direct = (gen: ReturnType<Model['generate']>) => gen.result;

t.test('GET /v1/models and /health', async (t) => {
  const models = await (await fetch(server.url + '/v1/models')).json();
  t.equal(models.object, 'list');
  t.same(models.data.map((m: { id: string }) => m.id), ['stories']);
  const health = await (await fetch(server.url + '/health')).json();
  t.equal(health.status, 'ok');
  t.equal(health.running, 0);
});

t.test('completions: greedy text equals generate() and llama.cpp; usage and finish_reason', async (t) => {
  const { status, json } = await post('/v1/completions', { model: 'whatever', prompt: 'Once upon a time', max_tokens: 24, temperature: 0 });
  t.equal(status, 200);
  t.equal(json.object, 'text_completion');
  t.equal(json.model, 'stories');
  t.match(json.id, /^cmpl-/);
  const want = await direct(model.generate('Once upon a time', { maxTokens: 24, temperature: 0 }));
  t.equal(json.choices[0].text, want.text, 'the same text as generate()');
  // DESIGN.md: llama.cpp's greedy continuation of this prompt.
  t.match(json.choices[0].text, /^, there was a little girl named Lily\. She loved to play outside in the p/);
  t.equal(json.choices[0].finish_reason, 'length');
  t.same(json.usage, { prompt_tokens: want.usage.promptTokens, completion_tokens: 24, total_tokens: want.usage.promptTokens + 24 });

  const stopped = await post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: ['Lily'] });
  t.equal(stopped.json.choices[0].text, ', there was a little girl named ', 'the text ends before the stop string');
  t.equal(stopped.json.choices[0].finish_reason, 'stop');

  const ids = model.tokenize('Once upon a time');
  const byIds = await post('/v1/completions', { prompt: ids, max_tokens: 24, temperature: 0 });
  t.equal(byIds.json.choices[0].text, want.text, 'a prompt of token ids');
});

t.test('completions: several prompts and n choices in one request, batched', async (t) => {
  const prompts = ['Once upon a time', 'The little dog', 'Tom and Sue went to the'];
  const { status, json } = await post('/v1/completions', { prompt: prompts, max_tokens: 12, temperature: 0 });
  t.equal(status, 200);
  t.equal(json.choices.length, 3);
  let promptTokens = 0;
  for (const [i, p] of prompts.entries()) {
    const want = await direct(model.generate(p, { maxTokens: 12, temperature: 0 }));
    t.equal(json.choices[i].index, i);
    t.equal(json.choices[i].text, want.text, `choice ${i} is prompt ${i}'s greedy text`);
    promptTokens += want.usage.promptTokens;
  }
  t.equal(json.usage.prompt_tokens, promptTokens);
  t.equal(json.usage.completion_tokens, 36);

  const sampled = await post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 16, temperature: 1, seed: 7, n: 3 });
  t.equal(sampled.json.choices.length, 3);
  t.equal(sampled.json.usage.prompt_tokens, promptTokens > 0 ? model.tokenize('Once upon a time').length : 0, 'one prompt counts once');
  t.equal(new Set(sampled.json.choices.map((c: { text: string }) => c.text)).size, 3, 'n choices from one seed differ');
  const again = await post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 16, temperature: 1, seed: 7, n: 3 });
  t.same(again.json.choices, sampled.json.choices, 'the same seed gives the same choices');
});

t.test('completions: logit_bias -100 bans a token', async (t) => {
  const first = model.generate('Once upon a time', { maxTokens: 1, temperature: 0 });
  const token = (await first.result).tokens[0]!;
  const { json } = await post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 1, temperature: 0, logit_bias: { [token]: -100 } });
  t.not(json.choices[0].text, model.detokenize([token]), 'the greedy token is never drawn');
});

t.test('completions stream: deltas add up to the whole text, then usage and [DONE]', async (t) => {
  const body = { prompt: 'Once upon a time', max_tokens: 20, temperature: 0 };
  const whole = (await post('/v1/completions', body)).json.choices[0].text;
  const s = await events('/v1/completions', { ...body, stream: true, stream_options: { include_usage: true } });
  t.equal(s.status, 200);
  t.equal(s.contentType, 'text/event-stream');
  t.equal(s.data.at(-1), '[DONE]');
  const chunks = s.data.slice(0, -1).map((d) => JSON.parse(d));
  const usage = chunks.at(-1);
  t.same(usage.choices, [], 'the usage chunk has no choices');
  t.equal(usage.usage.completion_tokens, 20);
  const texts = chunks.slice(0, -1);
  t.ok(texts.length > 2, 'the text comes in several chunks');
  t.equal(texts.map((c) => c.choices[0].text).join(''), whole);
  t.equal(texts.at(-1).choices[0].finish_reason, 'length');
  t.ok(texts.slice(0, -1).every((c) => c.choices[0].finish_reason === null));
  t.ok(texts.every((c) => c.id === texts[0].id), 'one id for the whole stream');
});

t.test('chat completions: whole and streamed equal chat()', async (t) => {
  const messages = [
    { role: 'system', content: 'You tell stories.' },
    { role: 'user', content: [{ type: 'text', text: 'Tell me ' }, { type: 'text', text: 'a story.' }] },
  ];
  const want = await model.chat([messages[0] as { role: string; content: string }, { role: 'user', content: 'Tell me a story.' }], { maxTokens: 16, temperature: 0 }).result;
  const { status, json } = await post('/v1/chat/completions', { messages, max_completion_tokens: 16, temperature: 0 });
  t.equal(status, 200);
  t.equal(json.object, 'chat.completion');
  t.match(json.id, /^chatcmpl-/);
  t.same(json.choices[0].message, { role: 'assistant', content: want.text }, 'text parts are joined, as chat() renders the same turn');
  t.equal(json.usage.prompt_tokens, want.usage.promptTokens);

  const s = await events('/v1/chat/completions', { messages, max_tokens: 16, temperature: 0, stream: true });
  t.equal(s.data.at(-1), '[DONE]');
  const chunks = s.data.slice(0, -1).map((d) => JSON.parse(d));
  t.equal(chunks[0].object, 'chat.completion.chunk');
  t.same(chunks[0].choices[0].delta, { role: 'assistant', content: '' }, 'the first chunk opens the assistant turn');
  t.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), want.text);
  t.same(chunks.at(-1).choices[0].delta, {});
  t.equal(chunks.at(-1).choices[0].finish_reason, 'length');
});

t.test('logprobs: OpenAI\'s objects on both endpoints, whole and streamed, as generate() reports them', async (t) => {
  const want = await model.generate('Once upon a time', { maxTokens: 6, temperature: 0, logprobs: 2 }).result;
  const c = await post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 6, temperature: 0, logprobs: 2 });
  const lp = c.json.choices[0].logprobs;
  t.same(lp.tokens, want.logprobs!.map((e) => e.text));
  t.same(lp.token_logprobs, want.logprobs!.map((e) => e.logprob));
  t.same(lp.top_logprobs[0], Object.fromEntries(want.logprobs![0]!.top.map((x) => [x.text, x.logprob])));
  t.same(lp.text_offset.slice(0, 2), [0, want.logprobs![0]!.text.length]);

  const messages = [{ role: 'user', content: 'Tell me a story.' }];
  const chatWant = await model.chat(messages, { maxTokens: 6, temperature: 0, logprobs: 3 }).result;
  const whole = await post('/v1/chat/completions', { messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = whole.json.choices[0].logprobs.content;
  t.equal(content.length, chatWant.tokens.length);
  t.same(content[0], { token: chatWant.logprobs![0]!.text, logprob: chatWant.logprobs![0]!.logprob, bytes: chatWant.logprobs![0]!.bytes, top_logprobs: chatWant.logprobs![0]!.top.map((x) => ({ token: x.text, logprob: x.logprob, bytes: x.bytes })) });
  const s = await events('/v1/chat/completions', { messages, max_tokens: 6, temperature: 0, stream: true, logprobs: true });
  const streamed = s.data.slice(0, -1).flatMap((d) => JSON.parse(d).choices[0].logprobs?.content ?? []);
  t.same(streamed.map((e: { logprob: number }) => e.logprob), chatWant.logprobs!.map((e) => e.logprob), 'streamed entries, in order');
  t.ok(streamed.every((e: { top_logprobs: unknown[] }) => e.top_logprobs.length === 0), 'no alternatives unless top_logprobs');
  const none = await post('/v1/chat/completions', { messages, max_tokens: 4, temperature: 0 });
  t.equal(none.json.choices[0].logprobs, null);
});

t.test('response_format json_object and json_schema: the reply is (a prefix of) one JSON object, whole and streamed', async (t) => {
  const messages = [{ role: 'user', content: 'Reply in JSON.' }];
  const want = await model.chat(messages, { maxTokens: 24, temperature: 0, responseFormat: { type: 'json_object' } }).result;
  t.match(want.text, /^\s?\{/);
  const { status, json } = await post('/v1/chat/completions', { messages, max_tokens: 24, temperature: 0, response_format: { type: 'json_object' } });
  t.equal(status, 200);
  t.equal(json.choices[0].message.content, want.text, 'as chat() in JSON mode');
  const s = await events('/v1/chat/completions', { messages, max_tokens: 24, temperature: 0, stream: true, response_format: { type: 'json_object' } });
  t.equal(s.data.slice(0, -1).map((d) => JSON.parse(d).choices[0].delta.content ?? '').join(''), want.text);
  const c = await post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 24, temperature: 0, response_format: { type: 'json_object' } });
  t.equal(c.json.choices[0].text, (await model.generate('Once upon a time', { maxTokens: 24, temperature: 0, responseFormat: { type: 'json_object' } }).result).text);
  const schema = { type: 'object', properties: { mood: { enum: ['happy', 'sad'] }, ok: { type: 'boolean' } }, required: ['mood', 'ok'], additionalProperties: false };
  const structured = await post('/v1/chat/completions', { messages, max_tokens: 100, temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'feeling', strict: true, schema } } });
  t.equal(structured.json.choices[0].finish_reason, 'stop');
  t.same(Object.keys(JSON.parse(structured.json.choices[0].message.content) as object), ['mood', 'ok'], 'json_schema: a value of the schema');
  const text = await post('/v1/chat/completions', { messages, max_tokens: 24, temperature: 0, response_format: { type: 'text' } });
  t.equal(text.json.choices[0].message.content, (await model.chat(messages, { maxTokens: 24, temperature: 0 }).result).text, "{type: 'text'} is the default");
});

t.test('chat replies with reasoning (gpt-oss\'s channels) carry it as reasoning_content, whole and streamed', async (t) => {
  const shape = new ResponseShape('chat', 'gpt-oss');
  const result = { text: 'Hi!', reasoning: 'Greet back.', tokens: [1, 2], stopReason: 'eos' as const, usage: { promptTokens: 5, completionTokens: 2 } };
  t.same(shape.response([result], 5).choices[0].message, { role: 'assistant', content: 'Hi!', reasoning_content: 'Greet back.' });
  t.same(shape.response([{ ...result, reasoning: '' }], 5).choices[0].message, { role: 'assistant', content: 'Hi!' }, 'no reasoning, no field');
  const delta = (part: { text?: string; reasoning?: string }) => (shape.chunk(0, part).choices[0] as { delta: unknown }).delta;
  t.same(delta({ text: '', reasoning: 'Greet' }), { content: '', reasoning_content: 'Greet' });
  t.same(delta({ text: 'Hi' }), { content: 'Hi' });
  const parsed = parseChatRequest({ messages: [{ role: 'user', content: 'x' }], reasoning_effort: 'high', chat_template_kwargs: { builtin_tools: ['python'] } }, {});
  t.same(parsed.templateVariables, { builtin_tools: ['python'], reasoning_effort: 'high' }, 'reasoning_effort and chat_template_kwargs reach the template');
  t.notOk('templateVariables' in parseChatRequest({ messages: [{ role: 'user', content: 'x' }] }, {}));
  t.throws(() => parseChatRequest({ messages: [{ role: 'user', content: 'x' }], chat_template_kwargs: [1] }, {}), RequestError);
  t.throws(() => parseChatRequest({ messages: [{ role: 'user', content: 'x' }], reasoning_effort: 3 }, {}), RequestError);
  // llama.cpp's reasoning_format: 'none' keeps the reply whole; 'auto' and 'deepseek' split it.
  t.equal(parseChatRequest({ messages: [{ role: 'user', content: 'x' }], reasoning_format: 'none' }, {}).reasoning, 'raw');
  for (const format of ['auto', 'deepseek']) t.notOk('reasoning' in parseChatRequest({ messages: [{ role: 'user', content: 'x' }], reasoning_format: format }, {}), format);
  t.throws(() => parseChatRequest({ messages: [{ role: 'user', content: 'x' }], reasoning_format: 'hidden' }, {}), { param: 'reasoning_format', message: /reasoning_format/ });
  // stories260K's vocabulary has no channels: chat() leaves its reply whole and adds no reasoning.
  const r = await model.chat([{ role: 'user', content: 'Hello' }], { maxTokens: 4, temperature: 0 }).result;
  t.notOk('reasoning' in r);
  t.throws(() => model.chat([{ role: 'user', content: 'Hello' }], { reasoning: 'hidden' as never }), { code: 'TDM_BAD_ARGUMENT', message: /reasoning must be 'split' or 'raw'/ });
});

t.test('tools for a model that replies on channels (gpt-oss): to the template, and its calls back as tool_calls', async (t) => {
  const weather = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } };
  const user = { role: 'user', content: 'Weather in Paris?' };
  const r = parseChatRequest({ messages: [user], tools: [weather], tool_choice: 'auto' }, {}, true);
  t.same(r.templateVariables, { tools: [weather] }, 'the tools reach the template');
  t.notOk('templateVariables' in parseChatRequest({ messages: [user], tools: [weather], tool_choice: 'none' }, {}, true), 'tool_choice none: no tools offered');
  t.throws(() => parseChatRequest({ messages: [user], tools: [weather] }, {}), { param: 'tools', code: 'unsupported_parameter' }, 'refused for a model whose calls cannot be read back');
  t.throws(() => parseChatRequest({ messages: [user], tools: [{ type: 'function' }] }, {}, true), { param: 'tools[0]', message: /type: "function"/ });
  t.throws(() => parseChatRequest({ messages: [user], tools: [weather], tool_choice: 'required' }, {}, true), { param: 'tool_choice', code: 'unsupported_parameter' });
  // An earlier call in the history: its JSON arguments become the object a template writes out.
  const history = parseChatRequest({ messages: [user, { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] }, { role: 'tool', content: '18C' }] }, {}, true);
  t.same((history.messages[1]!.tool_calls as { function: unknown }[])[0]!.function, { name: 'get_weather', arguments: { city: 'Paris' } });

  const shape = new ResponseShape('chat', 'gpt-oss');
  const called = { text: '', reasoning: 'Need the weather.', toolCalls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }], tokens: [1], stopReason: 'eos' as const, usage: { promptTokens: 5, completionTokens: 1 } };
  const choice = shape.response([called], 5).choices[0] as { message: Record<string, unknown>; finish_reason: string };
  t.equal(choice.finish_reason, 'tool_calls');
  t.equal(choice.message.content, null, 'no text beside the call: content null, as OpenAI sends it');
  t.match(choice.message.tool_calls, [{ id: /^call_/, type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }]);
  const last = shape.chunk(0, { finish: called }).choices[0] as { delta: Record<string, unknown>; finish_reason: string };
  t.equal(last.finish_reason, 'tool_calls');
  t.match(last.delta.tool_calls, [{ index: 0, type: 'function', function: { name: 'get_weather' } }], 'a stream gets the calls whole in its last delta');
});

t.test('embeddings: OpenAI\'s list of unit vectors, as embed() computes them; base64, dimensions, errors', async (t) => {
  const texts = ['Once upon a time', 'The cat sat on the mat'];
  const { status, json } = await post('/v1/embeddings', { model: 'x', input: texts });
  t.equal(status, 200);
  t.equal(json.object, 'list');
  t.equal(json.model, 'stories');
  t.same(json.data.map((d: { object: string; index: number }) => [d.object, d.index]), [['embedding', 0], ['embedding', 1]]);
  const ids = texts.map((s) => model.tokenize(s));
  t.same(json.usage, { prompt_tokens: ids[0]!.length + ids[1]!.length, total_tokens: ids[0]!.length + ids[1]!.length });
  for (const [i, text] of texts.entries()) {
    const want = await model.embed(text);
    const got: number[] = json.data[i].embedding;
    t.equal(got.length, model.info.nEmbd);
    t.ok(got.every((x, k) => Math.abs(x - want[k]!) < 1e-6), `input ${i}: embed()'s vector`);
  }
  const single = await post('/v1/embeddings', { input: ids[1] });
  t.same(single.json.data[0].embedding, json.data[1].embedding, 'token ids embed as the text they came from');
  const b64 = await post('/v1/embeddings', { input: texts[0], encoding_format: 'base64' });
  const bytes = Buffer.from(b64.json.data[0].embedding, 'base64');
  t.same(Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)), json.data[0].embedding, 'base64 of the float32 bytes');
  const cut = (await post('/v1/embeddings', { input: texts[0], dimensions: 16 })).json.data[0].embedding as number[];
  t.equal(cut.length, 16);
  t.ok(Math.abs(Math.hypot(...cut) - 1) < 1e-6, 'cut to 16 and back to unit length');
  t.ok(cut[0] / json.data[0].embedding[0] > 0, 'the same direction as the first 16');
  for (const [body, param] of [[{}, 'input'], [{ input: [] }, 'input'], [{ input: '' }, 'input'], [{ input: [[]] }, 'input'], [{ input: 'x', encoding_format: 'hex' }, 'encoding_format'], [{ input: 'x', dimensions: 65 }, 'dimensions'], [{ input: new Array(257).fill('x') }, 'input']] as const) {
    const r = await post('/v1/embeddings', body);
    t.equal(r.status, 400, JSON.stringify(body).slice(0, 60));
    t.equal(r.json.error.param, param);
  }
  const long = await post('/v1/embeddings', { input: new Array(129).fill(1) });
  t.equal(long.status, 400);
  t.equal(long.json.error.code, 'context_length_exceeded');
  t.equal(model.stats.numFreeKvBlocks, model.info.numKvBlocks, 'every KV block back');
});

t.test('errors: OpenAI error objects with the status a client can act on', async (t) => {
  const bad = async (path: string, body: unknown, status: number, param: string | null, code?: string) => {
    const r = await post(path, body);
    t.equal(r.status, status, `${JSON.stringify(body).slice(0, 60)} -> ${status}`);
    t.equal(r.json.error.param, param);
    if (code) t.equal(r.json.error.code, code);
    t.type(r.json.error.message, 'string');
  };
  await bad('/v1/completions', '{not json', 400, null, 'invalid_json');
  await bad('/v1/completions', '[1, 2]', 400, null, 'invalid_json');
  await bad('/v1/completions', {}, 400, 'prompt');
  await bad('/v1/completions', { prompt: '' }, 400, 'prompt');
  await bad('/v1/completions', { prompt: [1.5] }, 400, 'prompt');
  await bad('/v1/completions', { prompt: 'x', temperature: 'hot' }, 400, 'temperature');
  await bad('/v1/completions', { prompt: 'x', temperature: 3 }, 400, 'temperature');
  await bad('/v1/completions', { prompt: 'x', max_tokens: 0 }, 400, 'max_tokens');
  await bad('/v1/completions', { prompt: 'x', n: 65 }, 400, 'n');
  await bad('/v1/completions', { prompt: Array(20).fill('x'), n: 4 }, 400, 'n');
  await bad('/v1/completions', { prompt: 'x', stop: [''] }, 400, 'stop');
  await bad('/v1/completions', { prompt: 'x', logit_bias: { abc: 1 } }, 400, 'logit_bias');
  await bad('/v1/completions', { prompt: 'x', logit_bias: { 5: 101 } }, 400, 'logit_bias');
  await bad('/v1/completions', { prompt: 'x', stream_options: { include_usage: true } }, 400, 'stream_options');
  await bad('/v1/completions', { prompt: 'x', echo: true }, 400, 'echo', 'unsupported_parameter');
  await bad('/v1/completions', { prompt: 'x', logprobs: 21 }, 400, 'logprobs');
  await bad('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], top_logprobs: 2 }, 400, 'top_logprobs');
  await bad('/v1/completions', { prompt: 'x', logit_bias: { 999999: 1 } }, 400, null, 'TDM_BAD_ARGUMENT');
  await bad('/v1/chat/completions', { messages: [] }, 400, 'messages');
  await bad('/v1/chat/completions', { messages: [{ content: 'hi' }] }, 400, 'messages[0].role');
  await bad('/v1/chat/completions', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }, 400, 'messages[0].content', 'unsupported_content');
  await bad('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function' }] }, 400, 'tools', 'unsupported_parameter');
  await bad('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'x' } } }, 400, 'response_format');
  await bad('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { s: { type: 'string', pattern: 'a+' } } } } } }, 400, null, 'TDM_BAD_ARGUMENT');
  await bad('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'yaml' } }, 400, 'response_format');
  await bad('/v1/completions', { prompt: 'x', response_format: 'json_object' }, 400, 'response_format');
  await bad('/v1/completions', { prompt: 'x', response_format: { type: 'json_object' }, ignore_eos: true }, 400, null, 'TDM_BAD_ARGUMENT');
  // The context holds 128 tokens.
  await bad('/v1/completions', { prompt: 'Once upon a time '.repeat(40) }, 400, null, 'context_length_exceeded');
  await bad('/v1/completions', { prompt: 'x'.repeat(5000) }, 413, null, 'body_too_large');

  // The same for a body sent in chunks, with no length declared: refused as it passes the limit.
  const chunked = await new Promise<{ status?: number; body: string }>((resolve, reject) => {
    const req = http.request(server.url + '/v1/completions', { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    for (let i = 0; i < 5; i++) req.write('{"prompt": "' + 'x'.repeat(1000));
    req.end();
  });
  t.equal(chunked.status, 413);
  t.equal(JSON.parse(chunked.body).error.code, 'body_too_large');

  const notFound = await fetch(server.url + '/v2/anything');
  t.equal(notFound.status, 404);
  const wrongMethod = await fetch(server.url + '/v1/chat/completions');
  t.equal(wrongMethod.status, 405);
  t.equal(wrongMethod.headers.get('allow'), 'POST');
  t.equal((await wrongMethod.json()).error.code, 'method_not_allowed');

  // A prompt the model rejects before streaming starts is an HTTP error, not a broken stream.
  const s = await fetch(server.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: 'Once upon a time '.repeat(40), stream: true }) });
  t.equal(s.status, 400);
  t.equal((await s.json()).error.code, 'context_length_exceeded');
  t.equal(model.stats.numRunning, 0, 'nothing left running');
});

t.test('a client that disconnects mid-stream aborts its generation and frees its sequence', async (t) => {
  const before = model.stats.numAborted;
  await new Promise<void>((resolve, reject) => {
    const req = http.request(server.url + '/v1/completions', { method: 'POST' }, (res) => {
      t.equal(res.statusCode, 200);
      res.once('data', () => {
        // The first event arrived: the sequence is running. Go away.
        t.equal(model.stats.numRunning, 1);
        req.destroy();
        resolve();
      });
    });
    req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)));
    req.end(JSON.stringify({ prompt: 'Once upon a time', max_tokens: 100, ignore_eos: true, temperature: 0, stream: true }));
  });
  // The blocks come back when the step in flight at the abort returns: wait for that too.
  const settled = () => model.stats.numRunning === 0 && model.stats.numAborted > before && model.stats.numFreeKvBlocks === model.stats.numKvBlocks;
  for (let i = 0; i < 200 && !settled(); i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(model.stats.numRunning, 0, 'the sequence left the engine');
  t.equal(model.stats.numAborted, before + 1, 'as an abort');
  t.equal(model.stats.numFreeKvBlocks, model.stats.numKvBlocks, 'every KV block can be handed out again');

  // The same for a request waiting for its whole answer.
  const before2 = model.stats.numAborted;
  const controller = new AbortController();
  const pending = fetch(server.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: 'The sun was', max_tokens: 100, ignore_eos: true }), signal: controller.signal });
  for (let i = 0; i < 200 && model.stats.numRunning === 0; i++) await new Promise((r) => setTimeout(r, 5));
  controller.abort();
  await t.rejects(pending);
  for (let i = 0; i < 200 && model.stats.numAborted === before2; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(model.stats.numAborted, before2 + 1);
  t.equal(model.stats.numRunning, 0);
});

t.test('concurrent requests are served together', async (t) => {
  const prompts = ['Once upon a time', 'The little dog', 'One day, a bird', 'Lily wanted', 'The sun was', 'Tom and Sue went to the'];
  const steps = model.stats.numSteps;
  const replies = await Promise.all(prompts.map((p) => post('/v1/completions', { prompt: p, max_tokens: 16, temperature: 0 })));
  // One request at a time would take at least 6 x 16 steps; up to 4 share each step.
  t.ok(model.stats.numSteps - steps < 6 * 16, `${model.stats.numSteps - steps} steps for 6 requests of 16 tokens`);
  for (const [i, r] of replies.entries()) {
    const want = await direct(model.generate(prompts[i]!, { maxTokens: 16, temperature: 0 }));
    t.equal(r.json.choices[0].text, want.text, `"${prompts[i]}"`);
  }
});

t.test('request parsing without HTTP', async (t) => {
  const c = parseCompletionRequest({ prompt: 'x', max_tokens: 5, top_k: 3, min_p: 0.1, repeat_penalty: 1.1, seed: 4, logit_bias: { 7: -100, 8: 2 } }, { temperature: 0.5 });
  t.equal(c.options.maxTokens, 5);
  t.equal(c.options.temperature, 0.5, 'a server default stays under an absent field');
  t.equal(c.options.topK, 3);
  t.equal(c.options.minP, 0.1);
  t.equal(c.options.repeatPenalty, 1.1);
  t.same([...(c.options.logitBias as Map<number, number>)], [[7, -Infinity], [8, 2]]);
  t.equal(parseCompletionRequest({ prompt: 'x', temperature: 0 }, { temperature: 0.5 }).options.temperature, 0, 'a field overrides the default');
  const chat = parseChatRequest({ messages: [{ role: 'assistant', content: null, name: 'a' }], max_tokens: 3, max_completion_tokens: 7 }, {});
  t.same(chat.messages, [{ role: 'assistant', content: '', name: 'a' }], 'null content is empty; other fields pass to the template');
  t.equal(chat.options.maxTokens, 7, 'max_completion_tokens wins over the older max_tokens');
  t.throws(() => parseChatRequest({ messages: [{ role: 'user', content: 5 }] }, {}), RequestError);
  const jsonDefault = { responseFormat: { type: 'json_object' as const } };
  t.same(parseChatRequest({ messages: [{ role: 'user', content: 'x' }] }, jsonDefault).options.responseFormat, { type: 'json_object' }, 'a JSON default (serve --json) holds');
  t.equal(parseChatRequest({ messages: [{ role: 'user', content: 'x' }], response_format: { type: 'text' } }, jsonDefault).options.responseFormat, undefined, "{type: 'text'} overrides it");
  t.same(parseCompletionRequest({ prompt: 'x', logprobs: 3 }, {}).options.logprobs, 3);
  t.same(parseChatRequest({ messages: [{ role: 'user', content: 'x' }], logprobs: true }, {}).options.logprobs, 0, 'logprobs without top_logprobs: the drawn token only');
});

t.test('CORS only when asked for, with the preflight a browser sends', async (t) => {
  const plain = await fetch(server.url + '/v1/models', { headers: { origin: 'http://app.example' } });
  t.equal(plain.headers.get('access-control-allow-origin'), null, 'no CORS by default');
  const preflightPlain = await fetch(server.url + '/v1/chat/completions', { method: 'OPTIONS' });
  t.equal(preflightPlain.status, 405, 'and no preflight');

  const open = await startServer(model, { port: 0, corsOrigin: 'http://app.example' });
  t.teardown(() => open.close());
  const preflight = await fetch(open.url + '/v1/chat/completions', {
    method: 'OPTIONS',
    headers: { origin: 'http://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
  });
  t.equal(preflight.status, 204);
  t.equal(preflight.headers.get('access-control-allow-origin'), 'http://app.example');
  t.match(preflight.headers.get('access-control-allow-methods'), /POST/);
  t.equal(preflight.headers.get('access-control-allow-headers'), 'content-type');
  const r = await fetch(open.url + '/v1/completions', { method: 'POST', headers: { origin: 'http://app.example' }, body: JSON.stringify({ prompt: 'Hi', max_tokens: 2 }) });
  t.equal(r.status, 200);
  t.equal(r.headers.get('access-control-allow-origin'), 'http://app.example');
  const e = await fetch(open.url + '/nope');
  t.equal(e.headers.get('access-control-allow-origin'), 'http://app.example', 'errors carry it too, so a page can read them');
});

t.test('bad server options are typed errors', async (t) => {
  await t.rejects(startServer(model, { port: 70000 }), { code: 'TDM_BAD_ARGUMENT', message: /port/ });
  await t.rejects(startServer(model, { port: 0, maxBodyBytes: 0 }), { code: 'TDM_BAD_ARGUMENT', message: /maxBodyBytes/ });
  await t.rejects(startServer(model, { port: 0, host: '' }), { code: 'TDM_BAD_ARGUMENT', message: /host/ });
  await t.rejects(startServer(model, { port: 0, defaults: { temperature: -1 } }), { code: 'TDM_BAD_ARGUMENT', message: /defaults: temperature/ });
  const port = Number(new URL(server.url).port);
  await t.rejects(startServer(model, { port }), { code: 'TDM_IO', message: /cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/ });
});

t.test('close() stops the server', async (t) => {
  const other = await startServer(model, { port: 0 });
  t.equal((await fetch(other.url + '/health')).status, 200);
  await other.close();
  await t.rejects(fetch(other.url + '/health'), 'no longer listening');
  await other.close();
});
