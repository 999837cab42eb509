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
