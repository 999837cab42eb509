// JSON mode end to end on stories260K (a real tiny llama, SentencePiece vocabulary): replies
// are prefixes of one JSON object whatever is drawn, a closed object ends the reply with an
// end-of-generation token, other requests in the same steps are not affected, bad options are
// typed errors.
import t from 'tap';
import { loadModel } from '../../src/api/index.js';
import { JSON_START, stepBytes } from '../../src/model/json-mode.js';
import { loadTokenizer } from '../../src/model/tokenizer/index.js';
import { modelPath } from '../helpers.js';

const STORIES = modelPath('stories260K.gguf');
const model = await loadModel(STORIES, { threads: 1, contextSize: 256, maxSequences: 4 });
t.teardown(() => model.dispose());
const tokenizer = loadTokenizer(STORIES);
const JSON_MODE = { responseFormat: { type: 'json_object' as const } };

/** Whether `text` can begin a JSON object reply (test/model/json-mode.test.ts holds the recognizer to JSON.parse). */
const isPrefix = (text: string) => stepBytes(JSON_START, new TextEncoder().encode(text)) !== null;

/** The token whose text is exactly `ch`. */
function tokenOf(ch: string): number {
  for (let id = 0; id < tokenizer.numTokens; id++) {
    const p = tokenizer.tokenBytes(id);
    if (p.length === 1 && p[0] === ch.charCodeAt(0)) return id;
  }
  throw new Error(`no token for ${ch}`);
}

t.test('every reply is a prefix of a JSON object, greedy and sampled', async (t) => {
  for (const [temperature, seed] of [[0, 0], [1, 1], [1, 2], [1.5, 3], [1, 4]] as const) {
    const r = await model.generate('Once upon a time', { ...JSON_MODE, maxTokens: 48, temperature, seed }).result;
    t.ok(isPrefix(r.text), `T=${temperature} seed ${seed}: ${JSON.stringify(r.text.slice(0, 60))}...`);
    t.match(r.text, /^\s?\{/, 'opens the object');
    t.ok(r.stopReason === 'maxTokens' || r.stopReason === 'eos', r.stopReason);
    if (r.stopReason === 'eos') t.type(JSON.parse(r.text), 'object');
  }
  const plain = await model.generate('Once upon a time', { maxTokens: 48, temperature: 0 }).result;
  t.notOk(isPrefix(plain.text), 'without JSON mode the same prompt is prose');
});

t.test('a closed object ends the reply on an end-of-generation token', async (t) => {
  // Pull the draws towards closing: the mask still decides which of these may come.
  const logitBias = { [tokenOf('"')]: 30, [tokenOf('}')]: 30, [tokenOf(':')]: 30 };
  for (const generate of [
    () => model.generate('Once upon a time', { ...JSON_MODE, logitBias, maxTokens: 64, temperature: 0 }),
    () => model.chat([{ role: 'user', content: 'Answer in JSON.' }], { ...JSON_MODE, logitBias, maxTokens: 64, temperature: 0.8, seed: 9 }),
  ]) {
    const r = await generate().result;
    t.equal(r.stopReason, 'eos', JSON.stringify(r.text));
    const value = JSON.parse(r.text) as unknown;
    t.ok(typeof value === 'object' && value !== null && !Array.isArray(value), 'one JSON object');
    t.ok(model.eogTokens.includes(r.tokens[r.tokens.length - 1]!), 'the last token ends the generation');
  }
});

t.test('JSON requests batched with a plain one leave it as it is alone', async (t) => {
  const alone = await model.generate('The little dog', { maxTokens: 40, temperature: 0 }).result;
  const [a, b, plain] = await Promise.all([
    model.generate('Once upon a time', { ...JSON_MODE, maxTokens: 40, temperature: 1, seed: 5 }).result,
    model.generate('Lily wanted', { ...JSON_MODE, maxTokens: 40, temperature: 1, seed: 6 }).result,
    model.generate('The little dog', { maxTokens: 40, temperature: 0 }).result,
  ]);
  t.same(plain.tokens, alone.tokens);
  t.ok(isPrefix(a.text) && isPrefix(b.text), 'both JSON replies are object prefixes');
  t.equal(model.stats.numRunning, 0);
});

const SCHEMA = {
  type: 'object',
  properties: { mood: { enum: ['happy', 'sad'] }, n: { type: 'integer' }, ok: { type: 'boolean' }, tags: { type: 'array', items: { enum: ['a', 'b'] }, maxItems: 2 } },
  required: ['mood', 'n', 'ok', 'tags'],
  additionalProperties: false,
};

t.test('a JSON schema: every reply ends as one value of it', async (t) => {
  for (const [temperature, seed] of [[0, 0], [1, 1], [1, 2], [1, 3]] as const) {
    const r = await model.generate('Once upon a time', { responseFormat: { type: 'json_schema', schema: SCHEMA }, maxTokens: 200, temperature, seed }).result;
    t.equal(r.stopReason, 'eos', JSON.stringify(r.text));
    const v = JSON.parse(r.text) as { mood: string; n: number; ok: boolean; tags: string[] };
    t.same(Object.keys(v), ['mood', 'n', 'ok', 'tags'], 'every property, in the schema\'s order');
    t.ok(['happy', 'sad'].includes(v.mood) && Number.isInteger(v.n) && typeof v.ok === 'boolean', 'types and enum');
    t.ok(v.tags.length <= 2 && v.tags.every((x) => x === 'a' || x === 'b'), 'items and maxItems');
  }
  const chat = await model.chat([{ role: 'user', content: 'How do you feel?' }], { responseFormat: { type: 'json_schema', schema: SCHEMA }, maxTokens: 200, temperature: 0 }).result;
  t.equal(chat.stopReason, 'eos');
  t.same(Object.keys(JSON.parse(chat.text) as object), ['mood', 'n', 'ok', 'tags'], 'chat() too');
});

t.test('bad JSON-mode options are typed errors', async (t) => {
  t.throws(() => model.generate('x', { responseFormat: { type: 'json_schema', schema: { type: 'object', properties: { s: { type: 'string', format: 'email' } } } } }), { code: 'TDM_BAD_ARGUMENT', message: /'format'/ });
  t.throws(() => model.generate('x', { responseFormat: { type: 'json_schema' } as never }), { code: 'TDM_BAD_ARGUMENT', message: /schema/ });
  t.throws(() => model.generate('x', { responseFormat: { type: 'yaml' } as never }), { code: 'TDM_BAD_ARGUMENT', message: /responseFormat/ });
  t.throws(() => model.generate('x', { responseFormat: 'json' as never }), { code: 'TDM_BAD_ARGUMENT', message: /responseFormat/ });
  t.throws(() => model.generate('x', { ...JSON_MODE, ignoreEos: true }), { code: 'TDM_BAD_ARGUMENT', message: /ignoreEos/ });
  const text = await model.generate('Once upon a time', { responseFormat: { type: 'text' }, maxTokens: 8, temperature: 0 }).result;
  t.equal(text.stopReason, 'maxTokens', "{ type: 'text' } is the default");
});
