// The streaming layer without a model: stop strings held back across chunks, and the
// generation stream's chunks, result, abort and errors.
import t from 'tap';
import { StopStringMatcher } from '../../src/api/stop-strings.js';
import { GenerationStream, type TokenTextStream } from '../../src/api/generation.js';
import { HarmonySplitter } from '../../src/model/harmony.js';
import { TandemError } from '../../src/native/errors.js';
import type { StopReason } from '../../src/engine/sequence.js';

t.test('stop strings: partial matches are held back, the match and what follows never emitted', async (t) => {
  const m = new StopStringMatcher(['END', 'xyz']);
  t.equal(m.push('hello E'), 'hello ', 'a possible start of a stop string waits');
  t.equal(m.push('N'), '');
  t.equal(m.push('ding'), 'ENding', 'released once it cannot match');
  t.equal(m.push(' x'), ' ');
  t.equal(m.push('yz and more'), '', 'the match spans chunks');
  t.ok(m.stopped);
  t.equal(m.push('later'), '');

  const early = new StopStringMatcher(['bc', 'abcd']);
  t.equal(early.push('xabcd'), 'x', 'the earliest match wins');

  const tail = new StopStringMatcher(['</s>']);
  t.equal(tail.push('done </'), 'done ');
  t.equal(tail.flush(), '</', 'an unfinished match is released at the end');
  t.notOk(tail.stopped);

  const none = new StopStringMatcher([]);
  t.equal(none.push('abc'), 'abc');
});

/** A decoder over a fixed table of pieces; token 0 renders bytes of a split character. */
function tableDecoder(pieces: Record<number, string>): TokenTextStream {
  return { push: (id) => pieces[id] ?? '', flush: () => '' };
}

function stream(pieces: Record<number, string>, stop: string[] = [], split = false) {
  const cancelled: StopReason[] = [];
  const gen: GenerationStream = new GenerationStream({
    decoder: tableDecoder(pieces),
    stop,
    ...(split ? { splitter: new HarmonySplitter() } : {}),
    cancel: (reason) => {
      cancelled.push(reason);
      gen.onFinish(reason);
    },
  });
  return { gen, cancelled };
}

t.test('chunks carry text and tokens; the result gathers them', async (t) => {
  const { gen } = stream({ 5: 'Hello', 6: ',', 7: ' world' });
  gen.setPromptTokens(3);
  gen.onToken(5);
  gen.onToken(6);
  gen.onToken(7);
  gen.onFinish('eos');
  const chunks = [];
  for await (const c of gen) chunks.push(c);
  t.same(chunks, [
    { text: 'Hello', tokens: [5] },
    { text: ',', tokens: [6] },
    { text: ' world', tokens: [7] },
  ]);
  t.same(await gen.result, {
    text: 'Hello, world',
    tokens: [5, 6, 7],
    stopReason: 'eos',
    usage: { promptTokens: 3, completionTokens: 3 },
  });
});

t.test('a stop string cancels the sequence and cuts the text', async (t) => {
  const { gen, cancelled } = stream({ 1: 'one ', 2: 'two', 3: ' th', 4: 'ree' }, ['three']);
  for (const id of [1, 2, 3, 4]) gen.onToken(id);
  t.same(cancelled, ['stop']);
  const r = await gen.result;
  t.equal(r.text, 'one two ');
  t.equal(r.stopReason, 'stop');
  t.same(r.tokens, [1, 2, 3, 4], 'tokens include the one that completed the stop string');
});

t.test('breaking out of the loop aborts; an abort signal does too', async (t) => {
  const { gen, cancelled } = stream({ 1: 'a' });
  gen.onToken(1);
  gen.onToken(1);
  for await (const c of gen) {
    t.equal(c.text, 'a');
    break;
  }
  t.same(cancelled, ['aborted']);
  t.equal((await gen.result).stopReason, 'aborted');

  const controller = new AbortController();
  const cancelledBySignal: StopReason[] = [];
  const g2: GenerationStream = new GenerationStream({
    decoder: tableDecoder({}),
    stop: [],
    signal: controller.signal,
    cancel: (reason) => {
      cancelledBySignal.push(reason);
      g2.onFinish(reason);
    },
  });
  const pending = g2[Symbol.asyncIterator]().next();
  controller.abort();
  t.same(await pending, { done: true, value: undefined }, 'a waiting iteration ends');
  t.same(cancelledBySignal, ['aborted']);
  t.equal((await g2.result).stopReason, 'aborted');
});

t.test('an error rejects the result and the iteration after queued chunks', async (t) => {
  const { gen } = stream({ 1: 'x' });
  gen.onToken(1);
  gen.onError(new TandemError('TDM_INTERNAL', 'boom'));
  const it = gen[Symbol.asyncIterator]();
  t.same(await it.next(), { done: false, value: { text: 'x', tokens: [1] } });
  await t.rejects(it.next(), { code: 'TDM_INTERNAL' });
  await t.rejects(gen.result, { code: 'TDM_INTERNAL' });
});

t.test('a reply on channels (gpt-oss): chunks and the result carry the reply and the reasoning apart', async (t) => {
  const pieces = { 1: '<|channel|>', 2: 'analysis', 3: '<|message|>', 4: 'Think.', 5: '<|end|>', 6: '<|start|>', 7: 'assistant', 8: 'final', 9: 'Hi', 10: ' STOP' };
  const { gen } = stream(pieces, ['STOP'], true);
  for (const id of [1, 2, 3, 4, 5, 6, 7, 1, 8, 3, 9, 10]) gen.onToken(id);
  const chunks = [];
  for await (const c of gen) chunks.push(c);
  t.same(chunks.map((c) => c.tokens.length), Array(12).fill(1), 'one chunk per token, as without channels');
  t.same(chunks.filter((c) => c.reasoning).map((c) => c.reasoning), ['Think.']);
  t.equal(chunks.map((c) => c.text).join(''), 'Hi ');
  const r = await gen.result;
  t.equal(r.text, 'Hi ', 'the final channel, cut at the stop string');
  t.equal(r.reasoning, 'Think.');
  t.equal(r.stopReason, 'stop');

  const call = stream({ 1: '<|channel|>commentary to=functions.f <|message|>', 2: '{"a":', 3: '1}' }, [], true).gen;
  for (const id of [1, 2, 3]) call.onToken(id);
  call.onFinish('eos');
  const c = await call.result;
  t.same([c.text, c.reasoning, c.toolCalls], ['', '', [{ name: 'f', arguments: '{"a":1}' }]], 'a message to a function is a tool call on the result');

  const plain = stream({ 1: 'no channels here' }, [], true).gen;
  plain.onToken(1);
  plain.onFinish('eos');
  t.same(await plain.result.then((x) => [x.text, x.reasoning]), ['no channels here', ''], 'a reply that opens no message is passed through at the end');
  const none = stream({ 1: 'x' }).gen;
  none.onToken(1);
  none.onFinish('eos');
  t.notOk('reasoning' in (await none.result), 'no splitter, no reasoning field');
});
