// gpt-oss's harmony replies split into the final channel (the reply) and the other channels
// (the reasoning), whatever the pieces the text streams in.
import t from 'tap';
import { HarmonySplitter, isHarmonyVocab } from '../../src/model/harmony.js';

const REPLY =
  '<|channel|>analysis<|message|>The user greets; answer briefly.<|end|>' +
  '<|start|>assistant<|channel|>final<|message|>Hello! How can I help?';

function split(pieces: string[]): { text: string; reasoning: string } {
  const s = new HarmonySplitter();
  const out = { text: '', reasoning: '' };
  for (const p of [...pieces.map((x) => s.push(x)), s.flush()]) {
    out.text += p.text;
    out.reasoning += p.reasoning;
  }
  return out;
}

t.test('analysis is reasoning, final is the reply', async (t) => {
  t.same(split([REPLY]), { text: 'Hello! How can I help?', reasoning: 'The user greets; answer briefly.' });
});

t.test('the same whatever the pieces: one character at a time, and every two-piece cut', async (t) => {
  const want = split([REPLY]);
  t.same(split([...REPLY]), want, 'character by character');
  const wrong: number[] = [];
  for (let i = 1; i < REPLY.length; i++) {
    const got = split([REPLY.slice(0, i), REPLY.slice(i)]);
    if (got.text !== want.text || got.reasoning !== want.reasoning) wrong.push(i);
  }
  t.same(wrong, [], 'cut anywhere, markers included');
});

t.test('a reply streams: the final text comes as it is generated, not at the end', async (t) => {
  const s = new HarmonySplitter();
  t.same(s.push('<|channel|>analysis<|message|>thinking'), { text: '', reasoning: 'thinking' });
  t.same(s.push('<|end|><|start|>assistant<|channel|>final<|message|>Hi'), { text: 'Hi', reasoning: '' });
  t.same(s.push(' there<|'), { text: ' there', reasoning: '' }, 'a possible marker is held back');
  t.same(s.push('x|>'), { text: '<|x|>', reasoning: '' }, 'and released when it is none');
  t.same(s.flush(), { text: '', reasoning: '' });
});

t.test('a message to functions.NAME is a tool call; preambles (commentary) are reasoning; a message without a channel is the reply', async (t) => {
  const calls = (reply: string, cut = 0) => {
    const s = new HarmonySplitter();
    const parts = cut > 0 ? [s.push(reply.slice(0, cut)), s.push(reply.slice(cut))] : [s.push(reply)];
    parts.push(s.flush());
    return { text: parts.map((p) => p.text).join(''), reasoning: parts.map((p) => p.reasoning).join(''), calls: s.toolCalls() };
  };
  // The recipient after the channel name, as gpt-oss writes it, and before it (in the header).
  const after = '<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}';
  t.same(calls(after), { text: '', reasoning: 'Need the weather.', calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }] });
  const cuts: number[] = [];
  for (let i = 1; i < after.length; i++) if (JSON.stringify(calls(after, i)) !== JSON.stringify(calls(after))) cuts.push(i);
  t.same(cuts, [], 'cut anywhere, the recipient included');
  t.same(calls('<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}').calls, [{ name: 'f', arguments: '{}' }]);
  t.same(calls('<|channel|>commentary<|message|>Checking two things.<|end|><|start|>assistant to=functions.a<|channel|>commentary<|message|>{"x":1}<|end|>' +
    '<|start|>assistant to=functions.b<|channel|>commentary<|message|>{"y":2}'), {
    text: '', reasoning: 'Checking two things.', calls: [{ name: 'a', arguments: '{"x":1}' }, { name: 'b', arguments: '{"y":2}' }],
  }, 'a preamble, then two calls');
  t.same(calls('<|channel|>commentary to=browser.search<|message|>{"q":1}'), { text: '', reasoning: '{"q":1}', calls: [] }, 'a built-in tool is not a function call');
  t.same(calls('<|message|>plain'), { text: 'plain', reasoning: '', calls: [] });
});

t.test('text that never opens a message is not harmony: it comes back whole at the end', async (t) => {
  const s = new HarmonySplitter();
  t.same(s.push('Once upon '), { text: '', reasoning: '' });
  t.same(s.push('a time <|'), { text: '', reasoning: '' });
  t.same(s.flush(), { text: 'Once upon a time <|', reasoning: '' });
  t.same(split(['<|channel|>final<|message|>ok<|']), { text: 'ok<|', reasoning: '' }, 'an unfinished marker at the end is text');
});

t.test('a vocabulary speaks harmony when it has the message-framing tokens', async (t) => {
  t.ok(isHarmonyVocab(['a', '<|start|>', 'b', '<|message|>', '<|channel|>']));
  t.notOk(isHarmonyVocab(['<|start|>', '<|message|>']), 'no <|channel|>');
  t.notOk(isHarmonyVocab(['<|im_start|>', '<|im_end|>']));
});
