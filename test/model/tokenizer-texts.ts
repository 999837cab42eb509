// Texts and vocabulary variants shared by the tokenizer tests: hand-written texts in many
// scripts, seeded random hostile texts, llama.cpp's test-vector inputs, and copies of a vocabulary
// GGUF with metadata replaced.
import fs from 'node:fs';
import type { LlamaModel, Token } from 'node-llama-cpp';
import type { Tokenizer } from '../../src/model/tokenizer/index.js';
import { GgufFile } from '../../src/model/gguf.js';
import { buildGguf, writeTemp, type Kv } from './gguf-test-writer.js';
import { modelPath } from '../helpers.js';

/** mulberry32: a small seeded PRNG, so that a failing text can be regenerated from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export const REAL_TEXTS: string[] = [
  'The quick brown fox jumps over the lazy dog. It\'s 4:35 p.m. and we\'ve got 1,234,567 reasons; don\'t you think?',
  'I\'LL say it ONCE: they\'re here, we\'D better go — isn\'t it "fine"? (Yes!) ...and that\'s that.',
  'Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. Äpfel, Öl & Übermut.',
  'Le cœur a ses raisons que la raison ne connaît point. L\'été dernier, j\'ai vu l\'océan.',
  'Съешь же ещё этих мягких французских булок, да выпей чаю. Москва — столица России.',
  'Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.',
  'أبجد هوز حطي كلمن سعفص قرشت ثخذ ضظغ. مرحبًا بالعالم! العدد ١٢٣٤٥٦٧٨٩٠.',
  'שלום עולם! זוהי בדיקה של טקסט בעברית עם מספרים 2024 וסימנים.',
  'हिन्दी एक भारतीय भाषा है। नमस्ते दुनिया! संख्या १२३४ और 5678 हैं।',
  'আমি বাংলায় গান গাই। ঢাকা বাংলাদেশের রাজধানী।',
  'ภาษาไทยเป็นภาษาที่ไม่มีการเว้นวรรคระหว่างคำ สวัสดีครับ',
  '我想在apple工作1314151天～今天天气很好，我们去公园散步吧！中华人民共和国成立于1949年。',
  '日本語のテキスト：東京は日本の首都です。ひらがな、カタカナ、漢字が混在しています。',
  '한국어 텍스트입니다. 서울은 대한민국의 수도입니다. 안녕하세요!',
  'កាន់តែពិសេសអាចខលចេញ ភាសាខ្មែរ',
  'Tiếng Việt có dấu: Tôi yêu Việt Nam. Đường phố Hà Nội.',
  '🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ 👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👨🏽‍💻 coder, 🇺🇸🇫🇷 flags, 1️⃣ keycap',
  'function add(a, b) {\n\treturn a + b; // sum\n}\n\nconst xs = [1, 2, 3].map((x) => x ** 2);\nconsole.log(`${xs}`);\n',
  'def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])\n',
  '#include <stdio.h>\nint main(void) {\n    printf("%d\\n", 42);\r\n    return 0;\n}\n',
  '<html><body class="x">&amp; &lt;tag&gt; <a href="https://example.com/a?b=1&c=2#frag">link</a></body></html>',
  '   leading spaces\t\ttabs\n\n\nnewlines \r\n CRLF   \n  \t \n trailing spaces   ',
  '3 33 333 3333 33333 333333 3333333 33333333 333333333 1.5e-10 0x1F 3.14159 -42 +7 1/2 ½ ² ³ Ⅻ',
  'Mixed: Hello世界 مرحبا мир 123abc αβγ ＡＢＣ１２３ ｈｅｌｌｏ',
  ' Hello World! Hello, world! this is 🦙.cpp w048 7tuijk dsdfhu нещо на Български',
  '<s> </s> <unk> <|endoftext|> <|im_start|>user\nhi<|im_end|> <|user|>  hello <|end|>\n<|assistant|> [PAD151650] <0x0A> ▁ Ġ',
];

const WORDS = ['the', 'of', 'and', 'Hello', 'world', 'tokenizer', 'llama', 'ABC', 'xyz', 'Straße', 'naïve',
  'über', 'привет', 'мир', 'γειά', 'שלום', 'سلام', 'नमस्ते', '你好', '世界', 'こんにちは', '안녕', 'ok', 'a', 'I'];
const WHITESPACE = [' ', ' ', ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', '\r', '\v', '\f', '\u0085', '\u00a0',
  '\u1680', '\u2002', '\u2009', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000', '\ufeff', '\u200b', ' \n ', '\t\n'];
const CONTRACTIONS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'d", "'D",
  ' \' ', "'", "''", "'x"];
const PUNCT = ['.', ',', '!', '?', ';', ':', '...', '—', '–', '-', '(', ')', '[', ']', '{', '}', '"', '«', '»', '“', '”',
  '@', '#', '$', '%', '^', '&', '*', '+', '=', '<', '>', '|', '~', '`', '/', '\\', '_', '。', '、', '！', '？', '¿', '¡'];
const EMOJI = ['😀', '🦙', '🚀', '✅', '❤️', '👍🏽', '👩‍👩‍👧‍👦', '🏳️‍🌈', '👨🏽‍💻', '🇺🇸', '🇯🇵', '1️⃣', '#️⃣', '😶‍🌫️', '🧑‍🤝‍🧑', '\u200d', '\ufe0f'];
const SPECIALS = ['<s>', '</s>', '<unk>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|user|>', '<|end|>',
  '<|assistant|>', '<|system|>', '<|begin_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<|reserved_special_token_5|>',
  '[PAD151646]', '[PAD32011]', '<0x0A>', '<0xFF>', '\u2581', 'Ġ', 'Ċ', '<|placeholder1|>', '<s', 's>', '<|'];
/** [first, last] code point ranges to draw single characters from. */
const RANGES: [number, number][] = [
  [0x21, 0x7e], [0xc0, 0xff], [0x100, 0x24f], [0x300, 0x36f], [0x391, 0x3c9], [0x410, 0x44f], [0x5d0, 0x5ea],
  [0x621, 0x652], [0x660, 0x669], [0x905, 0x94d], [0x966, 0x96f], [0xe01, 0xe3a], [0x1100, 0x11ff], [0x2000, 0x206f],
  [0x20a0, 0x20c0], [0x2150, 0x2189], [0x2200, 0x22ff], [0x2500, 0x257f], [0x3041, 0x30ff], [0x4e00, 0x9fff],
  [0xac00, 0xd7a3], [0xe000, 0xe0ff], [0xff01, 0xff9f], [0xfff0, 0xfffd], [0x10000, 0x100ff], [0x1d400, 0x1d7ff],
  [0x1f300, 0x1faff], [0x20000, 0x2a6df], [0x2ebf0, 0x2ee5d], [0x31350, 0x323af], [0xe0000, 0xe007f], [0xf0000, 0xf00ff],
  // unassigned in Unicode 15.1 but assigned later (llama.cpp must see them as unassigned)
  [0x1c89, 0x1c8a], [0x88f, 0x88f], [0x1acf, 0x1add], [0x10d40, 0x10d8f], [0x1e5d0, 0x1e5fa],
  // never assigned
  [0x2fffe, 0x2ffff], [0x378, 0x379], [0x0, 0x1f],
];

/** A random hostile text of up to `maxParts` parts. */
export function randomText(rand: () => number, maxParts = 60, extraSpecials: string[] = []): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const parts: string[] = [];
  const n = Math.floor(rand() * maxParts);
  for (let i = 0; i < n; i++) {
    const r = rand();
    if (r < 0.25) parts.push(pick(WORDS));
    else if (r < 0.42) parts.push(pick(WHITESPACE));
    else if (r < 0.48) parts.push(pick(CONTRACTIONS));
    else if (r < 0.56) parts.push(pick(PUNCT));
    else if (r < 0.62) parts.push(pick(EMOJI));
    else if (r < 0.67) parts.push(pick(extraSpecials.length > 0 && rand() < 0.5 ? extraSpecials : SPECIALS));
    else if (r < 0.73) parts.push(String(Math.floor(rand() * 10 ** Math.floor(rand() * 12))));
    else if (r < 0.76) parts.push(pick(['\ud800', '\udfff', '\ud83d', 'a\udc00b']));
    else if (r < 0.80) parts.push(pick(REAL_TEXTS).slice(0, 1 + Math.floor(rand() * 40)));
    else {
      const [lo, hi] = pick(RANGES);
      let s = '';
      const k = 1 + Math.floor(rand() * 6);
      for (let j = 0; j < k; j++) s += String.fromCodePoint(lo + Math.floor(rand() * (hi - lo + 1)));
      parts.push(s);
    }
  }
  return parts.join('');
}

/** Describes the first difference between two id lists, for failure messages. */
export function firstDiff(a: readonly number[], b: readonly number[]): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return `at ${i}: got ${JSON.stringify(a.slice(i, i + 6))}, llama.cpp ${JSON.stringify(b.slice(i, i + 6))}`;
}

/** A copy of a vocabulary GGUF with some metadata replaced (to reach settings no shared file has). */
export function vocabVariant(source: string, name: string, replace: Kv[]): string {
  const f = GgufFile.open(modelPath(source));
  const kvs: Kv[] = [];
  for (const [key, e] of f.metadata) {
    if (replace.some((r) => r.key === key)) continue;
    if (e.type === 'array') {
      const a = e.value as { elementType: string; value: ArrayLike<unknown> };
      kvs.push({ key, type: 'array', elementType: a.elementType, value: Array.from(a.value) } as Kv);
    } else {
      kvs.push({ key, type: e.type, value: e.value } as Kv);
    }
  }
  f.close();
  return writeTemp(name, buildGguf([...kvs, ...replace], []).bytes);
}

const SEPARATOR = '\n__ggml_vocab_test__\n';

/** llama.cpp's test vectors (tests/test-tokenizer-0) for ../shared/models/vocab/ggml-vocab-<name>.gguf. */
export function readVectors(name: string): { input: string; ids: number[] }[] {
  const base = modelPath(`vocab/ggml-vocab-${name}.gguf`);
  const raw = fs.readFileSync(`${base}.inp`, 'utf8');
  const inputs: string[] = [];
  for (let pos = 0; pos < raw.length;) {
    const next = raw.indexOf(SEPARATOR, pos);
    if (next < 0) {
      inputs.push(raw.slice(pos));
      break;
    }
    inputs.push(raw.slice(pos, next));
    pos = next + SEPARATOR.length;
  }
  const lines = fs.readFileSync(`${base}.out`, 'utf8').split('\n');
  if (lines.at(-1) === '') lines.pop();
  if (lines.length !== inputs.length) throw new Error(`${name}: ${inputs.length} inputs, ${lines.length} outputs`);
  return inputs.map((input, i) => ({
    input,
    ids: lines[i]!.trim() === '' ? [] : lines[i]!.trim().split(/\s+/).map(Number),
  }));
}

/**
 * Tokenizes `text` with special tokens off and on, in tandem and in llama.cpp (a vocab-only
 * model), and detokenizes llama.cpp's ids with both: a line naming the first difference, or
 * undefined when ids and texts agree.
 */
export function llamaMismatch(tok: Tokenizer, ref: LlamaModel, text: string): string | undefined {
  for (const special of [false, true]) {
    const want = Array.from(ref.tokenize(text, special));
    const got = tok.tokenize(text, { addBos: false, addEos: false, special });
    const same = got.length === want.length && got.every((id, i) => id === want[i]);
    if (!same || tok.detokenize(want, { special }) !== ref.detokenize(want as Token[], special)) {
      return `special=${special}: ${same ? 'detokenize' : firstDiff(got, want)}; text ${JSON.stringify(text.slice(0, 200))}`;
    }
  }
  return undefined;
}
