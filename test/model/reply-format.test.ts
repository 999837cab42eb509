// Reply formats: which one a vocabulary and chat template speak, and the tag splitter's pieces
// (text, reasoning, tool calls) whole and streamed in every split.
import t, { type Test } from 'tap';
import type { ToolCall } from '../../src/model/harmony.js';
import { detectReplyFormat, promptOpensThink, TaggedReplySplitter, type TaggedSplitterOptions } from '../../src/model/reply-format.js';

const HARMONY_VOCAB = ['a', '<|start|>', '<|channel|>', '<|message|>', '<|end|>'];
const CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";

t.test('the format from the vocabulary and the template', async (t) => {
  t.same(detectReplyFormat(HARMONY_VOCAB, undefined), { reasoning: 'harmony', toolCalls: 'harmony' }, 'harmony vocabulary');
  t.same(detectReplyFormat(['a'], CHATML), { reasoning: null, toolCalls: null }, 'plain ChatML: nothing to split');
  t.same(detectReplyFormat(['a'], undefined), { reasoning: null, toolCalls: null }, 'no template');
  const hermes = CHATML + '{% if tools %}Call tools as <tool_call>{"name": ..., "arguments": ...}</tool_call>{% endif %}';
  t.same(detectReplyFormat(['a'], hermes), { reasoning: null, toolCalls: 'hermes' }, 'Hermes / Qwen2.5 tool calls');
  t.same(detectReplyFormat(['a'], hermes + '{% if add_generation_prompt %}<think>\n{% endif %}'), { reasoning: 'think', toolCalls: 'hermes' }, 'Qwen3: think tags too');
  t.same(detectReplyFormat(['a', '<think>', '</think>'], CHATML), { reasoning: 'think', toolCalls: null }, 'think tokens in the vocabulary');
  t.same(detectReplyFormat(['a'], '[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS]{% if m.tool_calls %}[TOOL_CALLS]{% endif %}'), { reasoning: null, toolCalls: 'mistral' }, 'Mistral');
  const llama3 = '<|start_header_id|>user<|end_header_id|>{% if tools %}Respond with {"name": function name, "parameters": dictionary}{% endif %}';
  t.same(detectReplyFormat(['a'], llama3), { reasoning: null, toolCalls: 'llama3-json' }, 'Llama 3.1 JSON calls');
  t.same(detectReplyFormat(['a'], '<|start_header_id|>user<|end_header_id|>{{ m.content }}'), { reasoning: null, toolCalls: null }, 'Llama 3 without tools');
  t.ok(promptOpensThink('<|im_start|>assistant\n<think>\n'), 'a prompt ending inside <think>');
  t.notOk(promptOpensThink('<|im_start|>assistant\n<think>\n\n</think>\n\n'), 'thinking closed by the template (enable_thinking false)');
  t.notOk(promptOpensThink('<|im_start|>assistant\n'), 'no think tag');
});

interface Split {
  text: string;
  reasoning: string;
  calls: ToolCall[];
}

/** The reply pushed in pieces of `size` characters (0: whole), with or without an opened think. */
function split(reply: string, options: TaggedSplitterOptions, size = 0, inThink = false): Split {
  const s = new TaggedReplySplitter(options);
  if (inThink) s.startInReasoning();
  const out: Split = { text: '', reasoning: '', calls: [] };
  const pieces = size === 0 ? [reply] : Array.from({ length: Math.ceil(reply.length / size) }, (_, i) => reply.slice(i * size, (i + 1) * size));
  for (const p of [...pieces.map((x) => s.push(x)), s.flush()]) {
    out.text += p.text;
    out.reasoning += p.reasoning;
  }
  out.calls = s.toolCalls();
  return out;
}

/** Checks `reply` splits to `want` whole and in pieces of 1 to 7 characters. */
function check(t: Test, name: string, reply: string, options: TaggedSplitterOptions, want: Split, inThink = false): void {
  for (const size of [0, 1, 2, 3, 5, 7]) t.same(split(reply, options, size, inThink), want, `${name} (${size === 0 ? 'whole' : `pieces of ${size}`})`);
}

const THINK: TaggedSplitterOptions = { think: true, toolCalls: null };
const HERMES: TaggedSplitterOptions = { think: true, toolCalls: 'hermes' };

t.test('reasoning between think tags', async (t) => {
  check(t, 'think then answer', '<think>\nLet me see: 2 + 2.\n</think>\n\nThe answer is 4.', THINK,
    { text: 'The answer is 4.', reasoning: 'Let me see: 2 + 2.\n', calls: [] });
  check(t, 'opened by the prompt', 'Hmm.</think>Four.', THINK, { text: 'Four.', reasoning: 'Hmm.', calls: [] }, true);
  check(t, 'tag-like text is text', 'a < b, and <thinking> is not a tag', THINK, { text: 'a < b, and <thinking> is not a tag', reasoning: '', calls: [] });
  check(t, 'a stray closing tag is text', 'x </think> y', THINK, { text: 'x </think> y', reasoning: '', calls: [] });
  check(t, 'an unclosed think keeps its text as reasoning', '<think>still thinking', THINK, { text: '', reasoning: 'still thinking', calls: [] });
});

t.test('<tool_call> tags (Hermes, Qwen)', async (t) => {
  const reply = 'I will look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';
  check(t, 'two calls after text', reply, HERMES, {
    text: 'I will look.\n', reasoning: '',
    calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }, { name: 'get_time', arguments: '{}' }],
  });
  check(t, 'reasoning, then a call', '<think>Need weather.</think>\n<tool_call>{"name":"f","arguments":"{\\"x\\":1}"}</tool_call>', HERMES,
    { text: '', reasoning: 'Need weather.', calls: [{ name: 'f', arguments: '{"x":1}' }] });
  check(t, 'JSON that is no call is given back as text', 'Try <tool_call>{oops}</tool_call> again', HERMES,
    { text: 'Try <tool_call>{oops}</tool_call> again', reasoning: '', calls: [] });
  check(t, 'a call left open at the end is kept when whole', '<tool_call>{"name": "f", "arguments": {"a": [1, 2]}}', HERMES,
    { text: '', reasoning: '', calls: [{ name: 'f', arguments: '{"a":[1,2]}' }] });
  check(t, 'a think tag inside a call\'s JSON is the call\'s', '<tool_call>{"name": "f", "arguments": {"q": "<think> tags"}}</tool_call>', HERMES,
    { text: '', reasoning: '', calls: [{ name: 'f', arguments: '{"q":"<think> tags"}' }] });
  check(t, 'no tools offered: the tags stay text', '<tool_call>{"name": "f", "arguments": {}}</tool_call>', THINK,
    { text: '<tool_call>{"name": "f", "arguments": {}}</tool_call>', reasoning: '', calls: [] });
});

t.test('Llama 3 JSON calls and Mistral [TOOL_CALLS]', async (t) => {
  const LLAMA: TaggedSplitterOptions = { think: false, toolCalls: 'llama3-json' };
  check(t, 'a reply that is one call', ' {"name": "get_weather", "parameters": {"city": "Paris"}}', LLAMA,
    { text: ' ', reasoning: '', calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }] });
  check(t, 'after the python tag', '<|python_tag|>{"name": "f", "parameters": {}}', LLAMA, { text: '', reasoning: '', calls: [{ name: 'f', arguments: '{}' }] });
  check(t, 'two calls separated by ;', '{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"n": 1}}', LLAMA,
    { text: '', reasoning: '', calls: [{ name: 'a', arguments: '{}' }, { name: 'b', arguments: '{"n":1}' }] });
  check(t, 'JSON that is no call is the reply', '{"answer": 4}', LLAMA, { text: '{"answer": 4}', reasoning: '', calls: [] });
  check(t, 'text first: no call', 'Sure: {"name": "f", "parameters": {}}', LLAMA, { text: 'Sure: {"name": "f", "parameters": {}}', reasoning: '', calls: [] });
  const MISTRAL: TaggedSplitterOptions = { think: false, toolCalls: 'mistral' };
  check(t, 'a call array', 'Checking.[TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {}}]', MISTRAL,
    { text: 'Checking.', reasoning: '', calls: [{ name: 'f', arguments: '{"x":1}' }, { name: 'g', arguments: '{}' }] });
  check(t, 'a broken array is given back', '[TOOL_CALLS] [{"name": ', MISTRAL, { text: '[TOOL_CALLS] [{"name": ', reasoning: '', calls: [] });
});

t.test('markers out of place inside reasoning stay reasoning', async (t) => {
  check(t, 'a call inside think', '<think>maybe <tool_call>{"name": "f", "arguments": {}}</tool_call></think>no', HERMES,
    { text: 'no', reasoning: 'maybe <tool_call>{"name": "f", "arguments": {}}</tool_call>', calls: [] });
});
