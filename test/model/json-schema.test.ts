// JSON schemas as JSON mode follows them: what compiles and what is refused, instances
// accepted and refused, random edits held to an independent validator of the same subset, and
// masks under a schema equal to stepping each token.
import t from 'tap';
import { JsonVocabulary, startState, stepBytes, type JsonState } from '../../src/model/json-mode.js';
import { compileSchema } from '../../src/model/json-schema.js';
import { loadTokenizer } from '../../src/model/tokenizer/index.js';
import { utf8Encode } from '../../src/model/tokenizer/unicode.js';
import { modelPath } from '../helpers.js';

type Schema = Record<string, any>;
const utf8 = utf8Encode;
const show = (s: string) => JSON.stringify(s).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
const accepts = (start: JsonState, text: string) => stepBytes(start, utf8(text))?.done === true;

const PERSON: Schema = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 150 },
    height: { type: 'number' },
    mood: { enum: ['happy', 'sad', 1, 12, null] },
    tags: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 3 },
    pet: { anyOf: [{ type: 'null' }, { $ref: '#/$defs/pet' }] },
    alive: { type: 'boolean' },
    note: { type: ['string', 'null'], description: 'optional' },
  },
  required: ['name', 'age', 'mood', 'tags', 'pet', 'alive'],
  additionalProperties: false,
  $defs: { pet: { type: 'object', properties: { kind: { const: 'cat' }, legs: { type: 'integer' } }, required: ['kind'] } },
};

const TREE: Schema = {
  $ref: '#/definitions/node',
  definitions: { node: { type: 'object', properties: { v: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/definitions/node' } } }, required: ['v'] } },
};

/** An independent check of an instance against the subset (the recognizer's reference). */
function valid(schema: Schema, value: unknown, root: Schema = schema): boolean {
  if (schema.$ref) return valid(root[schema.$ref.split('/')[1]][schema.$ref.split('/')[2]], value, root);
  if ('const' in schema) return JSON.stringify(schema.const) === JSON.stringify(value);
  if (schema.enum) return schema.enum.some((e: unknown) => JSON.stringify(e) === JSON.stringify(value));
  if (schema.anyOf) return schema.anyOf.some((s: Schema) => valid(s, value, root));
  if (schema.nullable === true && value === null) return true;
  if (Array.isArray(schema.type)) return schema.type.some((ty: string) => valid({ ...schema, type: ty }, value, root));
  switch (schema.type) {
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
      const props = schema.properties ?? {};
      const keys = Object.keys(value);
      if (schema.additionalProperties === false && keys.some((k) => !(k in props))) return false;
      if ((schema.required ?? []).some((r: string) => !keys.includes(r))) return false;
      return keys.every((k) => !(k in props) || valid(props[k], (value as Record<string, unknown>)[k], root));
    }
    case 'array':
      return Array.isArray(value) && value.length >= (schema.minItems ?? 0) && value.length <= (schema.maxItems ?? Infinity) && value.every((v) => valid(schema.items ?? {}, v, root));
    case 'string': return typeof value === 'string' && [...value].length >= (schema.minLength ?? 0) && [...value].length <= (schema.maxLength ?? Infinity);
    case 'integer': return Number.isInteger(value) && (value as number) >= (schema.minimum ?? -Infinity) && (value as number) <= (schema.maximum ?? Infinity);
    case 'number': return typeof value === 'number';
    case 'boolean': return typeof value === 'boolean';
    case 'null': return value === null;
    default: return true;
  }
}

t.test('instances in the schema\'s property order are accepted; what the schema excludes is refused', async (t) => {
  const start = startState(compileSchema(PERSON));
  const good = [
    { name: 'Ann', age: 30, mood: 'happy', tags: ['a'], pet: null, alive: true },
    { name: 'Bo "B" \\ é', age: 0, height: 1.5e3, mood: 12, tags: ['x', 'y', 'z'], pet: { kind: 'cat', legs: 4 }, alive: false, note: null },
    { name: 'é', age: 7, height: -0.25, mood: null, tags: [''], pet: { kind: 'cat' }, alive: true, note: 'n' },
    { name: 'x', age: 1, mood: 1, tags: ['t'], pet: null, alive: false },
  ];
  for (const v of good) {
    t.ok(valid(PERSON, v), 'the reference agrees');
    t.ok(accepts(start, JSON.stringify(v)), show(JSON.stringify(v)));
    t.ok(accepts(start, JSON.stringify(v, null, 2)), 'indented');
  }
  const bad = [
    '{"name":"Ann","age":30,"mood":"happy","tags":["a"],"pet":null}', // alive missing
    '{"name":"Ann","age":30.5,"mood":"happy","tags":["a"],"pet":null,"alive":true}', // integer
    '{"name":"Ann","age":3e1,"mood":"happy","tags":["a"],"pet":null,"alive":true}',
    '{"name":"Ann","age":30,"mood":"glad","tags":["a"],"pet":null,"alive":true}', // enum
    '{"name":"Ann","age":30,"mood":123,"tags":["a"],"pet":null,"alive":true}',
    '{"name":"Ann","age":30,"mood":"happy","tags":[],"pet":null,"alive":true}', // minItems
    '{"name":"Ann","age":30,"mood":"happy","tags":["a","b","c","d"],"pet":null,"alive":true}', // maxItems
    '{"name":"Ann","age":30,"mood":"happy","tags":[1],"pet":null,"alive":true}',
    '{"name":"Ann","age":30,"mood":"happy","tags":["a"],"pet":{"kind":"dog"},"alive":true}', // const
    '{"name":"Ann","age":30,"mood":"happy","tags":["a"],"pet":{},"alive":true}', // required in $defs
    '{"name":"Ann","age":30,"mood":"happy","tags":["a"],"pet":null,"alive":true,"extra":1}', // additionalProperties
    '{"name":"Ann","age":30,"mood":"happy","tags":["a"],"pet":null,"alive":"yes"}',
    '{"age":30,"name":"Ann","mood":"happy","tags":["a"],"pet":null,"alive":true}', // valid JSON Schema, but out of the schema's order
    '{"name":"Ann","name":"Bo","age":30,"mood":"happy","tags":["a"],"pet":null,"alive":true}',
    '{"name":"","age":30,"mood":"happy","tags":["a"],"pet":null,"alive":true}', // minLength
    '{"name":"Ann","age":151,"mood":"happy","tags":["a"],"pet":null,"alive":true}', // maximum
    '{"name":"Ann","age":-1,"mood":"happy","tags":["a"],"pet":null,"alive":true}', // minimum
    '{"name":"Annabel Leeann","age":30,"mood":"happy","tags":["a"],"pet":null,"alive":true}', // maxLength
    '[]',
  ];
  for (const text of bad) t.notOk(accepts(start, text), show(text));
});

t.test('string lengths count characters (an escape as one), and nullable adds null', async (t) => {
  const start = startState(compileSchema({ type: 'object', properties: { s: { type: 'string', minLength: 2, maxLength: 3 }, t: { type: 'string', nullable: true } }, required: ['s', 't'] }));
  for (const text of ['{"s":"ab","t":null}', '{"s":"abc","t":"x"}', '{"s":"é中","t":""}', '{"s":"\\n\\u0041","t":null}', '{"s":"😀😀😀","t":null}']) t.ok(accepts(start, text), show(text));
  for (const text of ['{"s":"a","t":null}', '{"s":"abcd","t":null}', '{"s":"é中文😀","t":null}', '{"s":"\\n\\n\\n\\n","t":null}', '{"s":"ab","t":1}']) t.notOk(accepts(start, text), show(text));
  t.throws(() => compileSchema({ type: 'object', properties: { s: { type: 'string', minLength: 3, maxLength: 2 } } }), { code: 'TDM_BAD_ARGUMENT', message: /minLength is above maxLength/ });
});

t.test('integer bounds: inclusive and exclusive, with only what can still land within them offered', async (t) => {
  const cases: [Record<string, number>, string[], string[]][] = [
    [{ minimum: 1, maximum: 12 }, ['1', '7', '12'], ['0', '13', '-1', '012', '1.0', '100', '-']],
    [{ minimum: -5, exclusiveMaximum: 3 }, ['-5', '-0', '0', '2'], ['-6', '3', '-10', '30']],
    [{ exclusiveMinimum: 999.5 }, ['1000', '99999', '9999999999999999'], ['999', '-1000', '99999999999999999']],
    [{ maximum: -10 }, ['-10', '-123'], ['-9', '0', '5']],
  ];
  for (const [bounds, good, bad] of cases) {
    const start = startState(compileSchema({ type: 'object', properties: { n: { type: 'integer', ...bounds } }, required: ['n'] }));
    for (const n of good) t.ok(accepts(start, `{"n":${n}}`), `${JSON.stringify(bounds)}: ${n}`);
    for (const n of bad) t.notOk(accepts(start, `{"n":${n}}`), `${JSON.stringify(bounds)}: not ${n}`);
  }
  // A prefix is offered only if some integer it can become is within the bounds.
  const start = startState(compileSchema({ type: 'object', properties: { n: { type: 'integer', minimum: 10, maximum: 12 } }, required: ['n'] }));
  t.ok(stepBytes(start, utf8Encode('{"n":1')), '1 can become 10-12');
  t.notOk(stepBytes(start, utf8Encode('{"n":2')), '2 cannot');
  t.notOk(stepBytes(start, utf8Encode('{"n":13')), '13 cannot');
  t.throws(() => compileSchema({ type: 'object', properties: { x: { type: 'number', minimum: 0 } } }), { code: 'TDM_BAD_ARGUMENT', message: /'minimum'.*on a number/ });
  t.throws(() => compileSchema({ type: 'object', properties: { x: { type: 'integer', minimum: 2.5, maximum: 2.9 } } }), { code: 'TDM_BAD_ARGUMENT', message: /no integer/ });
});

t.test('recursive $ref: a tree', async (t) => {
  const start = startState(compileSchema(TREE));
  t.ok(accepts(start, '{"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4,"kids":[]}]}]}'));
  t.notOk(accepts(start, '{"v":1,"kids":[{"kids":[]}]}'), 'v required at every level');
});

t.test('random edits of valid instances: accepted only when JSON.parse and the reference both accept', async (t) => {
  const start = startState(compileSchema(PERSON));
  let seed = 99;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const alphabet = '{}[]":,0123456789-.eEtrufalsn xcathpysdg';
  const bases = [
    { name: 'Ann', age: 30, mood: 'happy', tags: ['a'], pet: null, alive: true },
    { name: 'Bo', age: 2, height: 1.5, mood: 12, tags: ['x', 'y'], pet: { kind: 'cat', legs: 4 }, alive: false, note: null },
  ].map((v) => JSON.stringify(v));
  let accepted = 0;
  for (let i = 0; i < 20000; i++) {
    let text = bases[rand(bases.length)]!;
    for (let e = 1 + rand(2); e > 0; e--) {
      const at = rand(text.length + 1);
      const ch = alphabet[rand(alphabet.length)]!;
      const op = rand(3);
      text = op === 0 ? text.slice(0, at) + ch + text.slice(at) : op === 1 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + ch + text.slice(at + 1);
    }
    if (!accepts(start, text)) continue;
    accepted++;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      t.fail(`accepted ${show(text)}, which JSON.parse refuses`);
      continue;
    }
    if (!valid(PERSON, value)) t.fail(`accepted ${show(text)}, which the schema excludes`);
  }
  t.ok(accepted > 50, `${accepted} edited instances accepted, each valid`);
});

t.test('what cannot be enforced is refused by name', async (t) => {
  const refused: [Schema, RegExp][] = [
    [{ type: 'object', properties: { s: { type: 'string', pattern: '^a' } } }, /'pattern'/],
    [{ type: 'object', properties: { s: { type: 'string', format: 'date-time' } } }, /'format'/],
    [{ type: 'object', properties: { n: { type: 'number', minimum: 0 } } }, /'minimum'/],
    [{ type: 'object', allOf: [] }, /'allOf'/],
    [{ type: 'object', properties: { x: { anyOf: [{ type: 'string' }, { enum: ['a'] }] } } }, /start differently/],
    [{ type: 'object', properties: { x: { anyOf: [{ type: 'object' }, { type: 'object' }] } } }, /start differently/],
    [{ type: 'string' }, /object or an array/],
    [{ type: 'object', properties: { x: { $ref: '#/$defs/missing' } } }, /does not name/],
    [{ type: 'object', properties: { x: { type: 'thing' } } }, /type "thing"/],
    [{ type: 'object', properties: { a: {} }, required: ['b'] }, /b/],
    [{ type: 'array', minItems: 3, maxItems: 2 }, /minItems is above maxItems/],
    [[] as unknown as Schema, /must be an object/],
  ];
  for (const [schema, message] of refused) t.throws(() => compileSchema(schema), { code: 'TDM_BAD_ARGUMENT', message }, JSON.stringify(schema));
  t.ok(accepts(startState(compileSchema({})), '[1,{"a":null}]'), 'an empty schema: any object or array');
  const consts = startState(compileSchema({ type: 'array', items: { anyOf: [{ const: 'a' }, { const: 'b' }, { type: 'boolean' }, { type: 'integer' }] } }));
  t.ok(accepts(consts, '["a","b",true,7]'), 'literal options of anyOf are one set');
  t.notOk(accepts(consts, '["c"]'));
  t.ok(accepts(startState(compileSchema({ type: 'object', additionalProperties: { type: 'integer' } })), '{"a":1,"b":2}'), 'free keys with typed values');
  t.notOk(accepts(startState(compileSchema({ type: 'object', additionalProperties: { type: 'integer' } })), '{"a":"1"}'));
});

t.test('masks under a schema equal stepping each token of stories260K', async (t) => {
  const tok = loadTokenizer(modelPath('stories260K.gguf'));
  const pieces = (id: number) => tok.tokenBytes(id);
  const vocab = new JsonVocabulary(tok.numTokens, pieces);
  const start = startState(compileSchema(PERSON));
  for (const prefix of ['', '{', '{"', '{"na', '{"name":', '{"name":"a","age":1', '{"name":"a","age":1,"', '{"name":"a","age":1,"mood":', '{"name":"a","age":1,"mood":1',
    '{"name":"a","age":1,"mood":"h', '{"name":"ab', '{"name":"' + 'x'.repeat(12), '{"name":"a","age":1,"mood":null,"tags":["x"', '{"name":"a","age":1,"mood":null,"tags":["x"],"pet":', '{"name":"a","age":1,"mood":null,"tags":["x"],"pet":null,"alive":true']) {
    const st = stepBytes(start, utf8(prefix));
    t.ok(st, `prefix ${show(prefix)}`);
    const mask = vocab.mask(st!, [tok.eosId]);
    const wrong: number[] = [];
    let allowed = 0;
    for (let id = 0; id < tok.numTokens; id++) {
      const bit = (mask[id >> 3]! >> (id & 7)) & 1;
      const p = pieces(id);
      if (bit !== (p.length > 0 && stepBytes(st!, p) !== null ? 1 : 0)) wrong.push(id);
      allowed += bit;
    }
    t.same(wrong.slice(0, 5), [], `${show(prefix)}: ${allowed} tokens allowed, none wrongly`);
    t.ok(allowed > 0);
  }
});
