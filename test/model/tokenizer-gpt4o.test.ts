// The 'gpt-4o' pre-tokenizer (gpt-oss, llama4, minimax-m2, ...): its split against llama.cpp's own
// regex run by JS RegExp over the same "collapsed" text llama.cpp builds, and the token ids of
// byte-level BPE vocabularies rewritten to tokenizer.ggml.pre = 'gpt-4o' against llama.cpp itself
// (node-llama-cpp 3.21.1).
import t from 'tap';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { preTokenize, resolvePreTokenizer } from '../../src/model/tokenizer/pre-tokenizer.js';
import { CAT_MASK, WHITESPACE, codePointClasses } from '../../src/model/tokenizer/unicode.js';
import { loadTokenizer } from '../../src/model/tokenizer/index.js';
import { removeTemp } from './gguf-test-writer.js';
import { llamaMismatch, prng, randomText, readVectors, REAL_TEXTS, vocabVariant } from './tokenizer-texts.js';

/** llama.cpp src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_GPT4O: the regex it runs (not o200k's original). */
const GPT4O_REGEX = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/**
 * llama.cpp's unicode_regex_split for a regex with \p{..} classes: each non-ASCII code point becomes
 * one byte for its category (non-ASCII White_Space becomes \v), and each \p{..} the byte plus its
 * ASCII range. JS RegExp and std::regex agree on ECMAScript syntax and backtracking order, and on
 * \s over these bytes, so this is llama.cpp's split, computed independently of the scanner.
 */
const COLLAPSED_CATEGORY = ['\xd0', '\xd1', '\xd2', '\xd0', '\xd4', '\xd3', '\xd5', '\xd0']; // by unicode.ts CAT_*
const COLLAPSED_CLASS: Record<string, string> = { '\\p{N}': '\xd10-9', '\\p{L}': '\xd2A-Za-z' };

function collapseRegex(src: string): RegExp {
  let out = '';
  let inside = false;
  for (let i = 0; i < src.length; i++) {
    if (src[i] === '[' && (i === 0 || src[i - 1] !== '\\')) inside = true;
    else if (inside && src[i] === ']' && src[i - 1] !== '\\') inside = false;
    const cls = /^\\p\{\w+\}/.exec(src.slice(i))?.[0];
    if (cls !== undefined) {
      const set = COLLAPSED_CLASS[cls];
      if (set === undefined) throw new Error(`no collapsed form for ${cls}`);
      out += inside ? set : `[${set}]`;
      i += cls.length - 1;
      continue;
    }
    out += src[i];
  }
  return new RegExp(out, 'g');
}

const REFERENCE = collapseRegex(GPT4O_REGEX);

function referenceSplit(text: string): string[] {
  const chars = Array.from(text);
  const table = codePointClasses();
  const collapsed = chars.map((ch) => {
    const c = ch.codePointAt(0)!;
    if (c < 128) return ch;
    return table[c]! & WHITESPACE ? '\v' : COLLAPSED_CATEGORY[table[c]! & CAT_MASK]!;
  }).join('');
  // regex_iterator: each match is a word, and so is each gap between matches
  const words: string[] = [];
  let at = 0;
  REFERENCE.lastIndex = 0;
  for (let m = REFERENCE.exec(collapsed); m !== null; m = REFERENCE.exec(collapsed)) {
    if (m.index > at) words.push(chars.slice(at, m.index).join(''));
    words.push(chars.slice(m.index, m.index + m[0].length).join(''));
    at = m.index + m[0].length;
  }
  if (at < chars.length) words.push(chars.slice(at).join(''));
  return words;
}

function split(text: string): string[] {
  const words: string[] = [];
  preTokenize(text, 'gpt4o', (s, e) => words.push(text.slice(s, e)));
  return words;
}

/** Texts aimed at each branch of the regex and at the collapsed classes. */
const GPT4O_TEXTS = [
  'HelloWorld', 'helloWorld', 'HELLOworld', 'HELLO', 'HTTPServer', 'XMLHttpRequest', 'iPhone', 'McDonald\'s',
  'ÀÉÎõü', 'ÉCOLE', 'École', 'éA', 'aÉb', 'ÆØÅæøå', 'ΣΊΣΥΦΟΣ σίσυφος', 'ПриветМир', 'ǅungla ǈ', 'ʰaʰ', 'ﬁnancial',
  // upper case beyond ASCII before A-Z: vocabularies have tokens (ÓN, ÇÃO, İN, ÜR) that cross llama.cpp's split
  'ACCIÓN', 'INFORMAÇÃO', 'TÜRKİYE', 'İSTANBUL', 'CORAZÓN y ÑANDÚ', 'ĐT',
  'I\'M', 'you\'RE', 'they\'Ve', 'we\'LL', 'she\'d', 'IT\'S', '\'s', '\'S\'', 'x\'s\'t', 'B\'s', 'ABC\'ll', 'É\'s',
  'don\'t', ' \'s', '\'\'s', '\'re\'', 'l\'été', 'rock \'n\' roll', 'O\'Neil\'s', 'it\'sn\'t', '\'r', 'x\'ll\'',
  '1234567', '12 345 6789', '٣٤٥٦٧', '½²³', 'a1b22c333d4444', '1,234,567.89', 'Ⅻ', '0x1F', '-42', 'v1.2.3',
  '!!!', '...---???', 'a/b//c', '!!\n/\n/x', 'path/to/file.txt\n/', '(x)=>{y}', '\'\'\'', '"\'"', ' !', '  !!',
  '!\r\n\r\n!', '// comment\n//\n', '<|endoftext|>', '@@ -1,2 +1,3 @@', '\\n\\t', '#!/bin/sh\n',
  '\n\n\r\n', 'a\n\nb', ' \n \n ', '\r\r\n\n\t', '\n a', 'x\n', '\t\tx', '  \t  y', '   ', ' ', '\n', '\r',
  '\u00a0x', '\u3000你好', 'a\u2028b', '\u0085x', '\v\fx', 'x    ', '   x   y', '\t!', ' \t!', 'a \u00a0 b',
  '你好世界', '我想在apple工作1314151天～', '日本語のテキスト', '한국어 텍스트', 'ひらがなカタカナ漢字',
  '🚀👍🏽👩‍👩‍👧‍👦', '🏳️‍🌈 flag', '1️⃣', 'a😀b', ' 😀 ', '😀\n',
  'e\u0301', 'a\u0301b', 'Z\u0335a\u0301l\u0308g\u030c', 'नमस्ते दुनिया', 'ภาษาไทย', '\u0301\u0301x', 'x\u0301\u0301',
  'A\u0301BC', 'ÉA\u0301', '\u0301\'s',
  '\x00\x1c\x1f\x7f', 'a\x1cb', '\x1c\n', 'x\ud800y',
];

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
t.teardown(async () => {
  await llama.dispose();
  removeTemp();
});

/** Every test-vector input of the shared vocabularies, once. */
const VECTOR_INPUTS = [...new Set(['llama-spm', 'llama-bpe', 'qwen2', 'gpt-2', 'phi-3']
  .flatMap((name) => readVectors(name).map((v) => v.input)))];

t.test('names and settings, as llama.cpp has them', async (t) => {
  for (const name of ['gpt-4o', 'llama4', 'kanana2', 'talkie', 'minimax-m2']) {
    t.same(resolvePreTokenizer(name), { kind: 'gpt4o', cleanSpaces: false, ignoreMerges: false, addBos: false }, name);
  }
  t.equal(resolvePreTokenizer('gpt-oss'), undefined, 'gpt-oss files say gpt-4o; llama.cpp knows no gpt-oss name');
});

t.test('splits as llama.cpp does, quirks included', async (t) => {
  t.same(split('HelloWorld HELLOworld'), ['Hello', 'World', ' HELLOworld']);
  t.same(split('I\'M you\'RE'), ['I\'M', ' you\'RE']);
  t.same(split('1234567'), ['123', '456', '7'], 'digits in threes');
  t.same(split('!!\n/x\n\n\r\n  y'), ['!!\n/', 'x', '\n\n\r\n', ' ', ' y']);
  // collapsed text has no case beyond ASCII: É is "lower" as well, so U*W+ ends after it
  t.same(split('ÉCOLE'), ['É', 'COLE']);
  // combining marks are not \p{L} there: they end a word and prefix the next
  t.same(split('a\u0301b'), ['a', '\u0301b']);
});

t.test('the scanner equals the collapsed regex', async (t) => {
  const texts = [...GPT4O_TEXTS, ...REAL_TEXTS, ...VECTOR_INPUTS];
  // short strings over a small alphabet reach every backtracking path of the letter branches
  const alphabet = ['a', 's', 't', 'r', 'e', 'l', 'd', 'A', 'S', 'R', 'E', 'L', 'D', '\'', ' ', '  ', '\t', '\n', '\r', '/',
    '!', '.', '1', '2', '٣', '½', 'é', 'É', 'ß', 'ǅ', 'ʰ', '你', '\u0301', '\u00a0', '\u3000', '\u0085', '\u2028', '😀',
    '\x1c', '\u0378'];
  const rand = prng(0x4f0);
  for (let i = 0; i < 30_000; i++) {
    let s = '';
    const n = 1 + Math.floor(rand() * 12);
    for (let k = 0; k < n; k++) s += alphabet[Math.floor(rand() * alphabet.length)];
    texts.push(s);
  }
  for (let i = 0; i < 300; i++) texts.push(randomText(rand, 60));
  let failures = 0;
  for (const text of texts) {
    const got = split(text);
    const want = referenceSplit(text);
    if (JSON.stringify(got) !== JSON.stringify(want) && failures++ < 5) {
      t.same(got, want, `split ${JSON.stringify(text.slice(0, 200))}`);
    }
  }
  t.equal(failures, 0, `${texts.length} texts split as the regex does`);
});

t.test('token ids equal llama.cpp on vocabularies rewritten to gpt-4o', async (t) => {
  const rand = prng(0x6740);
  const texts = [...GPT4O_TEXTS, ...VECTOR_INPUTS, ...REAL_TEXTS];
  for (let i = 0; i < 150; i++) texts.push(randomText(rand, 60));
  const variants: [source: string, pre: string, texts: string[]][] = [
    ['vocab/ggml-vocab-qwen2.gguf', 'gpt-4o', texts],
    ['vocab/ggml-vocab-llama-bpe.gguf', 'gpt-4o', texts],
    // the other names only need to reach the same regex in llama.cpp
    ...['llama4', 'kanana2', 'talkie', 'minimax-m2'].map((pre): [string, string, string[]] =>
      ['vocab/ggml-vocab-qwen2.gguf', pre, GPT4O_TEXTS]),
  ];
  for (const [source, pre, list] of variants) {
    const name = `${source.replace(/.*ggml-vocab-|\.gguf$/g, '')}-${pre}`;
    const file = vocabVariant(source, `${name}.gguf`, [{ key: 'tokenizer.ggml.pre', type: 'string', value: pre }]);
    const tok = loadTokenizer(file);
    const ref = await llama.loadModel({ modelPath: file, vocabOnly: true });
    let failures = 0;
    let roundTripFailures = 0;
    for (const text of list) {
      const miss = llamaMismatch(tok, ref, text);
      if (miss !== undefined && failures++ < 3) t.fail(`${name} ${miss}`);
      // no clean-up of spaces: text comes back as it went in
      const back = tok.detokenize(tok.tokenize(text, { addBos: false, special: false }), { special: true });
      if (back !== (text as string & { toWellFormed(): string }).toWellFormed() && roundTripFailures++ < 3) {
        t.fail(`${name} round trip: ${JSON.stringify(back.slice(0, 200))}`);
      }
    }
    await ref.dispose();
    t.equal(failures, 0, `${name}: ${list.length} texts x special on/off equal llama.cpp`);
    t.equal(roundTripFailures, 0, `${name}: round trips`);
  }
});
