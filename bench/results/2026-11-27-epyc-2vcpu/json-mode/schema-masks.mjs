import { loadTokenizer } from '../../../../dist/model/tokenizer/index.js';
import { JsonVocabulary, startState, step } from '../../../../dist/model/json-mode.js';
import { compileSchema } from '../../../../dist/model/json-schema.js';
const schema = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' }, mood: { enum: ['happy', 'sad'] }, tags: { type: 'array', items: { type: 'string' }, maxItems: 3 }, pet: { anyOf: [{ type: 'null' }, { type: 'object', properties: { kind: { type: 'string' } }, required: ['kind'] }] } }, required: ['name', 'age', 'mood', 'tags', 'pet'], additionalProperties: false };
const text = JSON.stringify({ name: 'Ann Lee', age: 42, mood: 'sad', tags: ['x', 'yy'], pet: { kind: 'cat' } });
for (const f of process.argv.slice(2)) {
  const tok = loadTokenizer(f);
  const v = new JsonVocabulary(tok.numTokens, (id) => tok.tokenBytes(id));
  let st = startState(compileSchema(schema));
  const keys = new Set();
  let total = 0, n = 0;
  for (const b of new TextEncoder().encode(text)) {
    if (!keys.has(st.key)) { keys.add(st.key); const t0 = performance.now(); v.mask(st, [0]); total += performance.now() - t0; n++; }
    st = step(st, b);
  }
  console.log(f.split('/').pop(), `${n} distinct states along a ${text.length}-byte reply: ${total.toFixed(0)} ms of masks in all (${(total / n).toFixed(2)} ms each), cold cache`);
}
