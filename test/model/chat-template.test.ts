// Chat templates: the files' own Jinja templates, the ChatML fallback, and typed errors.
import t from 'tap';
import { CHATML_TEMPLATE, ChatTemplate, loadChatTemplate } from '../../src/model/chat-template.js';
import { buildGguf, removeTemp, writeTemp } from './gguf-test-writer.js';
import { modelPath } from '../helpers.js';

t.teardown(removeTemp);

const chat = [
  { role: 'user', content: 'Hi there' },
  { role: 'assistant', content: 'Hello!' },
  { role: 'user', content: 'What is 2+2?' },
];

t.test('qwen2 template (ChatML with a default system prompt)', async (t) => {
  const tpl = loadChatTemplate(modelPath('vocab/ggml-vocab-qwen2.gguf'));
  t.equal(tpl.isFallback, false);
  t.equal(tpl.render(chat),
    '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' +
    '<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n' +
    '<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n');
  t.equal(tpl.render([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'x' }], { addGenerationPrompt: false }),
    '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n');
  t.equal(tpl.eosToken, '<|endoftext|>');
});

t.test('phi-3 template uses bos_token', async (t) => {
  const tpl = loadChatTemplate(modelPath('vocab/ggml-vocab-phi-3.gguf'));
  t.equal(tpl.bosToken, '<s>');
  t.equal(tpl.render(chat),
    '<s><|user|>\nHi there<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n');
});

t.test('a file without a template gets ChatML', async (t) => {
  const tpl = loadChatTemplate(modelPath('stories260K.gguf'));
  t.equal(tpl.isFallback, true);
  t.equal(tpl.source, CHATML_TEMPLATE);
  t.equal(tpl.bosToken, '<s>');
  t.equal(tpl.render([{ role: 'user', content: 'Once upon a time' }]),
    '<|im_start|>user\nOnce upon a time<|im_end|>\n<|im_start|>assistant\n');
});

t.test('extra variables reach the template', async (t) => {
  const tpl = new ChatTemplate({
    source: "{% if tools %}[{{ tools | length }} tools]{% endif %}{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{% if add_generation_prompt %}>{% endif %}",
    bosToken: '<B>',
  });
  t.equal(tpl.render(chat, { variables: { tools: [{ name: 'a' }, { name: 'b' }] } }),
    '[2 tools]<B>user:Hi there;assistant:Hello!;user:What is 2+2?;>');
});

t.test('a template with a tokenizer for its special tokens', async (t) => {
  const { loadTokenizer } = await import('../../src/model/tokenizer/index.js');
  const tok = loadTokenizer(modelPath('vocab/ggml-vocab-llama-spm.gguf'));
  const tpl = new ChatTemplate('{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}{{ eos_token }}', tok);
  t.equal(tpl.render([{ role: 'user', content: 'hi' }]), '<s>[INST] hi [/INST]</s>');
});

// gpt-oss files carry a "harmony" template: macros that call themselves to print JSON-schema
// tool types, namespace() flags set inside loops, slices of the message list, membership tests
// on messages, strftime_now, tojson and raise_exception. This template (written for the test)
// uses each of those, so that an engine upgrade that drops one fails here.
t.test('a harmony-style template (gpt-oss): recursive macros, namespaces, slices, strftime_now, raise_exception', async (t) => {
  const source = [
    '{%- macro ts(spec) -%}',
    '{%- if spec.type is defined and spec.type is iterable and spec.type is not string and spec.type is not mapping -%}{{- spec.type | join(" | ") -}}',
    '{%- elif spec.type == "array" and "items" in spec -%}{%- set inner = ts(spec["items"]) -%}{{- inner + "[]" -}}',
    '{%- elif spec.type == "object" -%}{ {%- for k, v in spec.properties.items() -%}{{- k -}}{%- if k not in (spec.required or []) -%}?{%- endif -%}: {{ ts(v) }}{%- if not loop.last -%}, {% endif -%}{%- endfor -%} }',
    '{%- else -%}{{- spec.type -}}{%- endif -%}',
    '{%- endmacro -%}',
    '{{- "<|start|>system<|message|>Current date: " + strftime_now("%Y-%m-%d") + "<|end|>" -}}',
    '{%- if messages[0].role == "developer" %}{%- set rest = messages[1:] %}{{- "<|start|>developer<|message|>" + messages[0].content -}}',
    '{%- if tools %}{{- " type " + tools[0].name + " = (_: " + ts(tools[0].parameters) + ") => any;" -}}{%- endif %}{{- "<|end|>" -}}',
    '{%- else %}{%- set rest = messages %}{%- endif %}',
    '{%- set last_call = namespace(name=none) %}',
    '{%- for m in rest -%}',
    '{%- if m.role == "assistant" and "tool_calls" in m -%}',
    '{%- set later = namespace(final=false) %}{%- for f in rest[loop.index:] %}{%- if f.role == "assistant" and "tool_calls" not in f %}{%- set later.final = true %}{%- endif %}{%- endfor %}',
    '{%- if "thinking" in m and not later.final %}{{- "<|start|>assistant<|channel|>analysis<|message|>" + m.thinking + "<|end|>" -}}{%- endif %}',
    '{{- "<|start|>assistant to=functions." + m.tool_calls[0].name + "<|message|>" + m.tool_calls[0].arguments|tojson + "<|call|>" -}}',
    '{%- set last_call.name = m.tool_calls[0].name -%}',
    '{%- elif m.role == "tool" -%}',
    '{%- if last_call.name is none %}{{- raise_exception("a tool message with no tool call before it") }}{%- endif %}',
    '{{- "<|start|>functions." + last_call.name + " to=assistant<|message|>" + m.content|tojson + "<|end|>" -}}',
    '{%- else -%}{{- "<|start|>" + m.role + "<|message|>" + m.content + "<|end|>" -}}{%- endif -%}',
    '{%- endfor -%}',
    '{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}',
  ].join('\n');
  const tpl = new ChatTemplate(source);
  const tools = [{ name: 'lookup', parameters: { type: 'object', properties: { q: { type: 'string' }, n: { type: ['integer', 'null'] }, tags: { type: 'array', items: { type: 'string' } } }, required: ['q'] } }];
  const text = tpl.render([
    { role: 'developer', content: 'Be brief.' },
    { role: 'user', content: 'Find x' },
    { role: 'assistant', content: '', thinking: 'look it up', tool_calls: [{ name: 'lookup', arguments: { q: 'x' } }] },
    { role: 'tool', content: { hit: 1 } },
  ], { variables: { tools } });
  const today = new Date();
  const pad = (n: number) => String(n).padStart(2, '0');
  t.equal(text,
    `<|start|>system<|message|>Current date: ${today.getFullYear()}-${pad(today.getMonth() + 1)}-${pad(today.getDate())}<|end|>` +
    '<|start|>developer<|message|>Be brief. type lookup = (_: {q: string, n?: integer | null, tags?: string[]}) => any;<|end|>' +
    '<|start|>user<|message|>Find x<|end|>' +
    '<|start|>assistant<|channel|>analysis<|message|>look it up<|end|>' +
    '<|start|>assistant to=functions.lookup<|message|>{"q": "x"}<|call|>' +
    '<|start|>functions.lookup to=assistant<|message|>{"hit": 1}<|end|><|start|>assistant');
  t.throws(() => tpl.render([{ role: 'tool', content: 'orphan' }]), { code: 'TDM_BAD_ARGUMENT', message: /no tool call before it/ });
});

// Gemma 3's template form: no system role of its own (a system message becomes a prefix of the
// first user turn), 'assistant' written as 'model', content as a string or a list of parts,
// trimmed, and turns that must alternate.
t.test('a gemma3-style template: system prefix, model role, content parts, alternation', async (t) => {
  const source =
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}" +
    "{%- if messages[0]['content'] is string -%}{%- set prefix = messages[0]['content'] + '\n\n' -%}" +
    "{%- else -%}{%- set prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}" +
    "{%- set turns = messages[1:] -%}{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}" +
    "{%- for m in turns -%}{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}" +
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}" +
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}" +
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') }}" +
    "{%- if m['content'] is string -%}{{ m['content'] | trim }}{%- elif m['content'] is iterable -%}" +
    "{%- for part in m['content'] -%}{%- if part['type'] == 'text' -%}{{ part['text'] | trim }}{%- endif -%}{%- endfor -%}" +
    "{%- else -%}{{ raise_exception('Invalid content type') }}{%- endif -%}{{ '<end_of_turn>\n' }}{%- endfor -%}" +
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";
  const tpl = new ChatTemplate({ source, bosToken: '<bos>' });
  t.equal(tpl.render([{ role: 'system', content: 'Be brief.' }, ...chat]),
    '<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n' +
    '<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n');
  t.equal(tpl.render([{ role: 'user', content: '  padded  ' }], { addGenerationPrompt: false }), '<bos><start_of_turn>user\npadded<end_of_turn>\n');
  t.throws(() => tpl.render([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }]), { code: 'TDM_BAD_ARGUMENT', message: /must alternate/ });
});

t.test('typed errors', async (t) => {
  t.throws(() => new ChatTemplate({ source: '{% for m in messages %}{{ m.content }' }), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => new ChatTemplate({ source: 42 as unknown as string }), { code: 'TDM_BAD_ARGUMENT' });
  const strict = new ChatTemplate({ source: "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok" });
  t.equal(strict.render(chat), 'ok');
  t.throws(() => strict.render([{ role: 'assistant', content: 'x' }]), { code: 'TDM_BAD_ARGUMENT', message: /first message must be from the user/ });
  t.throws(() => strict.render('hello' as unknown as []), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => strict.render([{ content: 'no role' } as unknown as { role: string; content: string }]), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => loadChatTemplate('/definitely/not/here.gguf'), { code: 'TDM_NOT_FOUND' });
  const broken = writeTemp('broken-template.gguf', buildGguf([
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 'tokenizer.chat_template', type: 'string', value: '{% if %}' },
  ], []).bytes);
  t.throws(() => loadChatTemplate(broken), { code: 'TDM_BAD_GGUF', message: /chat_template/ });
});
