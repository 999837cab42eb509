// JSON mode's recognizer against JSON.parse, and its token masks against stepping every token
// of a real vocabulary one by one.
import t, { type Test } from 'tap';
import { JSON_START, JsonConstraint, JsonVocabulary, stepBytes, type JsonState } from '../../src/model/json-mode.js';
import { loadTokenizer } from '../../src/model/tokenizer/index.js';
import { modelPath } from '../helpers.js';

const utf8 = (s: string) => new TextEncoder().encode(s);
/** A string for a test message: JSON with everything outside printable ASCII escaped (TAP reads U+2028 as a line break). */
const show = (s: string) => JSON.stringify(s).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** Every byte accepted and the object closed exactly at the end; each proper prefix accepted, open. */
function checkComplete(t: Test, text: string): void {
  const bytes = utf8(text);
  let st: JsonState | null = JSON_START;
  for (let i = 0; i < bytes.length; i++) {
    if (st!.done) {
      t.fail(`${show(text)}: closed before byte ${i}`);
      return;
    }
    st = stepBytes(st!, bytes.subarray(i, i + 1));
    if (!st) {
      t.fail(`${show(text)}: rejected byte ${i} (${show(String.fromCharCode(bytes[i]!))})`);
      return;
    }
  }
  t.ok(st!.done, `${show(text)} is one object`);
}

/** Rejected somewhere, or never closed. */
const accepts = (text: string) => stepBytes(JSON_START, utf8(text))?.done === true;

const VALUES: unknown[] = [
  {},
  { a: 1 },
  { '': '' },
  { a: [], b: {}, c: [[]], d: [{}] },
  { n: [0, -0, 1, -1, 12.5, -0.25, 1e10, 1.5e-7, 123456789012, 3.141592653589793, 2e300] },
  { s: 'quote " backslash \\ slash / \b\f\n\r\t ctrl \u0001 \u001f' },
  { unicode: 'é 中文 😀 \u2028', 'ключ': 'значение' },
  { t: true, f: false, z: null, mixed: [true, false, null, 'x', 0, { y: [1, [2, [3]]] }] },
];
/** Compact only: indented, it passes the indent JSON mode offers (20). */
const DEEP = { deep: JSON.parse('['.repeat(30) + ']'.repeat(30)) as unknown };

t.test('accepts JSON objects as JSON.stringify writes them, compact and indented', async (t) => {
  for (const v of VALUES) {
    checkComplete(t, JSON.stringify(v));
    checkComplete(t, JSON.stringify(v, null, 2));
    checkComplete(t, JSON.stringify(v, null, '\t'));
  }
  checkComplete(t, JSON.stringify(DEEP));
  // Escapes JSON.stringify does not write, and numbers in every form.
  for (const text of ['{"a":"\\u00e9\\uD83D\\uDE00\\/"}', '{"e":[1E5,1e+5,1e-5,-0.0e0,0.5E-00]}', '{ "a" : 1 , "b" : [ 1 , 2 ] }', ' {"a":1}', '\n  {"a":1}']) {
    checkComplete(t, text);
    t.doesNotThrow(() => JSON.parse(text), text);
  }
});

t.test('rejects what JSON.parse rejects, and top-level values that are not objects', async (t) => {
  const bad = [
    '[]', '1', '"s"', 'true', 'null', '{', '{"a"}', '{"a":}', '{"a" 1}', '{a:1}', "{'a':1}", '{"a":1,}', '{,"a":1}',
    '{"a":[1,]}', '{"a":[,1]}', '{"a":01}', '{"a":1.}', '{"a":.5}', '{"a":-}', '{"a":1e}', '{"a":1e+}', '{"a":+1}',
    '{"a":tru}', '{"a":True}', '{"a":NaN}', '{"a":Infinity}', '{"a":"\\x41"}', '{"a":"\\u12G4"}', '{"a":"\n"}',
    '{"a":"\t"}', '{"a":1} x', '{"a":1}{}', '{"a":1}}', '{"a":[1}', '{"a":{]}', '{"a":1 /* c */}', '{"a":1}\n',
  ];
  for (const text of bad) {
    t.notOk(accepts(text), `rejects ${show(text)}`);
  }
});

t.test('numbers: up to 16 digits in each part, as llama.cpp\'s JSON grammar', async (t) => {
  const digits = (n: number) => '1'.repeat(n);
  t.ok(accepts(`{"a":${digits(16)}}`));
  t.notOk(accepts(`{"a":${digits(17)}}`), '17 digits');
  t.ok(accepts(`{"a":-0.${digits(16)}e-${digits(16)}}`));
  t.notOk(accepts(`{"a":0.${digits(17)}}`), '17 decimals');
  t.notOk(accepts(`{"a":1e${digits(17)}}`), 'a 17-digit exponent');
});

t.test('whitespace: one space, or a newline and an indent of up to 20', async (t) => {
  t.ok(accepts('{ "a": 1 }'));
  t.ok(accepts('{\n' + ' '.repeat(20) + '"a": 1\n}'));
  t.notOk(accepts('{\n' + ' '.repeat(21) + '"a": 1\n}'), '21 spaces of indent');
  t.notOk(accepts('{  "a": 1}'), 'two spaces');
  t.notOk(accepts('{\n\n"a": 1}'), 'a blank line');
  t.notOk(accepts('{\r\n"a": 1}'), 'carriage return');
});

t.test('random edits of valid objects: accepted exactly when JSON.parse gives an object', async (t) => {
  let seed = 12345;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const alphabet = '{}[]":,0123456789-+.eEtrufalsn \\u\n\tx';
  let agreed = 0;
  for (let i = 0; i < 4000; i++) {
    let text = JSON.stringify(VALUES[rand(VALUES.length)]);
    for (let e = 1 + rand(2); e > 0; e--) {
      const at = rand(text.length + 1);
      const op = rand(3);
      const ch = alphabet[rand(alphabet.length)]!;
      text = op === 0 ? text.slice(0, at) + ch + text.slice(at) : op === 1 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + ch + text.slice(at + 1);
    }
    let parsed: unknown;
    let ok = false;
    try {
      parsed = JSON.parse(text);
      ok = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed);
    } catch {
      ok = false;
    }
    // JSON.parse allows whitespace and numbers that JSON mode does not offer (more than 16
    // digits in a part); compare on texts without them.
    const outsideStrings = text.replace(/"(?:[^"\\]|\\.)*"/g, '');
    if (ok && (/[\s]/.test(outsideStrings) || /\d{17}/.test(outsideStrings))) continue;
    if (accepts(text) !== ok) t.fail(`${show(text)}: recognizer ${accepts(text)}, JSON.parse ${ok}`);
    else agreed++;
  }
  t.ok(agreed > 3000, `${agreed} edits agreed`);
});

for (const file of ['stories260K.gguf', 'llama-2-tiny-random.gguf']) {
  t.test(`masks equal stepping each token of ${file}`, async (t) => {
    const tok = loadTokenizer(modelPath(file));
    const pieces = (id: number) => tok.tokenBytes(id);
    const vocab = new JsonVocabulary(tok.numTokens, pieces);
    const states: JsonState[] = [];
    for (const prefix of ['', ' ', '{', '{"', '{"k', '{"k\\', '{"k\\u0', '{"k"', '{"k":', '{"k":-', '{"k":0', '{"k":12', '{"k":1.', '{"k":1.5', '{"k":1e', '{"k":1e-',
      '{"k":t', '{"k":fal', '{"k":n', '{"k":[', '{"k":[1', '{"k":[{"a":[[', '{"k":"v"', '{"k":"v",', '{"k":"v"\n  ', '{"k":"v"}']) {
      const st = stepBytes(JSON_START, utf8(prefix));
      t.ok(st, `prefix ${show(prefix)}`);
      states.push(st!);
    }
    const ends = [...tok.vocab.eogIds];
    for (const st of states) {
      const mask = vocab.mask(st, ends);
      let allowed = 0;
      const wrong: number[] = [];
      for (let id = 0; id < tok.numTokens; id++) {
        const bit = (mask[id >> 3]! >> (id & 7)) & 1;
        const p = pieces(id);
        const expected = st.done ? ends.includes(id) : p.length > 0 && stepBytes(st, p) !== null;
        if (bit !== (expected ? 1 : 0)) wrong.push(id);
        allowed += bit;
      }
      t.same(wrong.slice(0, 5), [], `state ${st.key}: ${allowed} tokens allowed, none wrongly`);
      t.ok(allowed > 0, `state ${st.key} allows some token`);
    }
  });
}

t.test('a constraint follows the drawn tokens and ends on end-of-generation tokens', async (t) => {
  const tok = loadTokenizer(modelPath('stories260K.gguf'));
  const pieces = (id: number) => tok.tokenBytes(id);
  const vocab = new JsonVocabulary(tok.numTokens, pieces);
  const single = (ch: string) => {
    for (let id = 0; id < tok.numTokens; id++) {
      const p = pieces(id);
      if (p.length === 1 && p[0] === ch.charCodeAt(0)) return id;
    }
    throw new Error(`no token for ${ch}`);
  };
  const eos = tok.eosId;
  const c = new JsonConstraint(vocab, pieces, [eos]);
  const allows = (id: number) => ((c.allowed()[id >> 3]! >> (id & 7)) & 1) === 1;
  t.notOk(allows(eos), 'no end before the object');
  t.notOk(allows(single('}')), "no '}' before '{'");
  for (const ch of '{"a":1') {
    t.ok(allows(single(ch)), `${ch} allowed`);
    c.accept(single(ch));
  }
  t.throws(() => c.accept(single(':')), { code: 'TDM_INTERNAL' }, 'a token the mask excludes');
  c.accept(single('}'));
  t.ok(c.complete);
  t.ok(allows(eos), 'then only the end');
  t.notOk(allows(single(' ')));
  c.accept(eos);
  t.throws(() => new JsonConstraint(vocab, pieces, []), { code: 'TDM_BAD_ARGUMENT' });
});

t.test('a vocabulary that cannot spell JSON is refused', async (t) => {
  const letters = ['{', '}', 'a'].map(utf8);
  t.throws(() => new JsonVocabulary(letters.length, (id) => letters[id]!), { code: 'TDM_UNSUPPORTED', message: /printable ASCII/ });
});
