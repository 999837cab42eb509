// The tokenizers against llama.cpp itself (node-llama-cpp 3.21.1, vocabulary only): every id of
// hand-written texts in many scripts and of seeded random hostile texts, with and without special
// tokens; detokenization of those ids and of random id sequences; the streaming decoder against
// detokenize; round trips; tokenizeAsync; and the typed errors.
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { getLlama, LlamaLogLevel, type LlamaModel, type Token } from 'node-llama-cpp';
import { loadTokenizer, type Tokenizer } from '../../src/model/tokenizer/index.js';
import { buildGguf, removeTemp, writeTemp, type Kv } from './gguf-test-writer.js';
import { firstDiff, llamaMismatch, prng, randomText, REAL_TEXTS, vocabVariant } from './tokenizer-texts.js';
import { modelPath, repoRoot } from '../helpers.js';

const FILES = [
  'vocab/ggml-vocab-llama-spm.gguf',
  'vocab/ggml-vocab-llama-bpe.gguf',
  'vocab/ggml-vocab-qwen2.gguf',
  'vocab/ggml-vocab-gpt-2.gguf',
  'vocab/ggml-vocab-phi-3.gguf',
  'stories260K.gguf',
  'llama-2-tiny-random.gguf',
];
const RANDOM_TEXTS = 250;
const RANDOM_ID_SEQUENCES = 200;

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
t.teardown(async () => {
  await llama.dispose();
  removeTemp();
});

function streamDecode(tok: Tokenizer, ids: readonly number[], special: boolean): { text: string; brokenChunks: number } {
  const decoder = tok.createDecoder({ special });
  let text = '';
  let brokenChunks = 0;
  const add = (s: string): void => {
    if (!(s as string & { isWellFormed(): boolean }).isWellFormed()) brokenChunks++;
    text += s;
  };
  for (const id of ids) add(decoder.push(id));
  add(decoder.flush());
  return { text, brokenChunks };
}

for (const file of FILES) {
  t.test(`${file} against llama.cpp`, async (t) => {
    const tok = loadTokenizer(modelPath(file));
    const ref: LlamaModel = await llama.loadModel({ modelPath: modelPath(file), vocabOnly: true });
    t.teardown(() => ref.dispose());
    const specials = tok.vocab.specialTokensByLength().slice(0, 40).map((id) => tok.vocab.tokens[id]!);
    const rand = prng(0x5eed + FILES.indexOf(file));
    const texts: { label: string; text: string }[] = REAL_TEXTS.map((text, i) => ({ label: `real #${i}`, text }));
    for (let i = 0; i < RANDOM_TEXTS; i++) texts.push({ label: `random #${i}`, text: randomText(rand, 60, specials) });
    // one large input mixing everything
    let big = '';
    const bigRand = prng(0xb16 + FILES.indexOf(file));
    while (big.length < 200_000) big += randomText(bigRand, 80, specials) + REAL_TEXTS[big.length % REAL_TEXTS.length];
    texts.push({ label: 'large mixed text', text: big });

    let tokenizeFailures = 0;
    let detokenizeFailures = 0;
    let streamFailures = 0;
    let roundTripFailures = 0;
    let roundTrips = 0;
    for (const { label, text } of texts) {
      for (const special of [false, true]) {
        const want = Array.from(ref.tokenize(text, special));
        const got = tok.tokenize(text, { addBos: false, addEos: false, special });
        if (got.length !== want.length || got.some((id, i) => id !== want[i])) {
          if (tokenizeFailures++ < 5) t.fail(`tokenize ${label} special=${special}: ${firstDiff(got, want)}; text ${JSON.stringify(text.slice(0, 300))}`);
          continue;
        }
        for (const renderSpecial of [false, true]) {
          const wantText = ref.detokenize(want as Token[], renderSpecial);
          const gotText = tok.detokenize(want, { special: renderSpecial });
          if (gotText !== wantText) {
            if (detokenizeFailures++ < 5) t.fail(`detokenize ${label} special=${renderSpecial}: ${JSON.stringify(gotText.slice(0, 200))} vs ${JSON.stringify(wantText.slice(0, 200))}`);
          }
          const streamed = streamDecode(tok, want, renderSpecial);
          if (streamed.text !== gotText || streamed.brokenChunks > 0) {
            if (streamFailures++ < 5) t.fail(`stream ${label} special=${renderSpecial}: ${streamed.brokenChunks} broken chunks; ${JSON.stringify(streamed.text.slice(0, 200))}`);
          }
        }
        // Without clean-up of spaces, text comes back as it went in (lone surrogates aside, and
        // U+2581, which SentencePiece reads as a space).
        if (!special && !tok.vocab.cleanSpaces && !text.includes('\u2581')) {
          const clean = (text as string & { toWellFormed(): string }).toWellFormed();
          roundTrips++;
          const back = tok.detokenize(got, { special: true });
          if (back !== clean && roundTripFailures++ < 5) t.fail(`round trip ${label}: ${JSON.stringify(back.slice(0, 200))}`);
        }
      }
    }
    t.equal(tokenizeFailures, 0, `tokenize: ${texts.length} texts x special on/off equal llama.cpp`);
    t.equal(detokenizeFailures, 0, 'detokenize equals llama.cpp');
    t.equal(streamFailures, 0, 'streaming decoder equals detokenize and never emits a broken character');
    if (roundTrips > 0) t.equal(roundTripFailures, 0, `${roundTrips} round trips`);

    // random id sequences: byte tokens that split characters, control tokens, anything
    const idRand = prng(0x1d5 + FILES.indexOf(file));
    let idFailures = 0;
    for (let i = 0; i < RANDOM_ID_SEQUENCES; i++) {
      const n = 1 + Math.floor(idRand() * 24);
      const ids: number[] = [];
      for (let k = 0; k < n; k++) {
        // half of the draws among the first 300 ids (bytes, specials), half anywhere
        ids.push(Math.floor(idRand() * (idRand() < 0.5 ? Math.min(300, tok.numTokens) : tok.numTokens)));
      }
      for (const special of [false, true]) {
        const want = ref.detokenize(ids as Token[], special);
        const got = tok.detokenize(ids, { special });
        const streamed = streamDecode(tok, ids, special);
        if ((got !== want || streamed.text !== want || streamed.brokenChunks > 0) && idFailures++ < 5) {
          t.fail(`ids ${JSON.stringify(ids)} special=${special}: ${JSON.stringify(got)} / streamed ${JSON.stringify(streamed.text)} vs ${JSON.stringify(want)}`);
        }
      }
    }
    t.equal(idFailures, 0, `${RANDOM_ID_SEQUENCES} random id sequences detokenize as in llama.cpp`);
  });
}

t.test('other pre-tokenizers and flags against llama.cpp (rewritten vocabularies)', async (t) => {
  const variants: [string, string, Kv[]][] = [
    ['vocab/ggml-vocab-gpt-2.gguf', 'pre-default', [{ key: 'tokenizer.ggml.pre', type: 'string', value: 'default' }]],
    ['vocab/ggml-vocab-gpt-2.gguf', 'pre-starcoder', [{ key: 'tokenizer.ggml.pre', type: 'string', value: 'starcoder' }]],
    ['vocab/ggml-vocab-gpt-2.gguf', 'pre-command-r', [{ key: 'tokenizer.ggml.pre', type: 'string', value: 'command-r' }]],
    ['vocab/ggml-vocab-gpt-2.gguf', 'pre-dbrx', [{ key: 'tokenizer.ggml.pre', type: 'string', value: 'dbrx' }]],
    ['vocab/ggml-vocab-gpt-2.gguf', 'pre-stablelm2', [{ key: 'tokenizer.ggml.pre', type: 'string', value: 'stablelm2' }]],
    ['stories260K.gguf', 'spm-no-space-prefix', [{ key: 'tokenizer.ggml.add_space_prefix', type: 'bool', value: false }]],
  ];
  for (const [source, name, replace] of variants) {
    const file = vocabVariant(source, `${name}.gguf`, replace);
    const tok = loadTokenizer(file);
    const ref = await llama.loadModel({ modelPath: file, vocabOnly: true });
    const rand = prng(0xabc);
    let failures = 0;
    const texts = [...REAL_TEXTS];
    for (let i = 0; i < 60; i++) texts.push(randomText(rand, 60));
    for (const text of texts) {
      const miss = llamaMismatch(tok, ref, text);
      if (miss !== undefined && failures++ < 3) t.fail(`${name} ${miss}`);
    }
    await ref.dispose();
    t.equal(failures, 0, `${name}: ${texts.length} texts equal llama.cpp`);
  }
});

t.test('BOS and EOS follow the vocabulary unless asked', async (t) => {
  const spm = loadTokenizer(modelPath('vocab/ggml-vocab-llama-spm.gguf'));
  t.same(spm.tokenize('Hello'), [1, 15043], 'SPM adds BOS by default');
  t.same(spm.tokenize('Hello', { addBos: false }), [15043]);
  t.same(spm.tokenize('Hello', { addEos: true }), [1, 15043, 2]);
  t.same(spm.tokenize(''), [1], 'empty text with BOS');
  t.same(spm.tokenize('', { addBos: false }), []);
  const l3 = loadTokenizer(modelPath('vocab/ggml-vocab-llama-bpe.gguf'));
  t.same(l3.tokenize('Hello world'), [128000, 9906, 1917], 'llama3 adds BOS');
  const gpt2 = loadTokenizer(modelPath('vocab/ggml-vocab-gpt-2.gguf'));
  t.same(gpt2.tokenize('Hello world'), [15496, 995], 'gpt-2 does not');
  t.same(gpt2.tokenize('Hello', { addBos: true }), [50256, 15496]);
  t.ok(l3.isEog(128009) && l3.isEog(128001) && !l3.isEog(9906), 'end-of-generation ids');
  t.equal(l3.tokenText(9906), 'Hello');
});

t.test('special tokens are parsed only when asked', async (t) => {
  const qwen = loadTokenizer(modelPath('vocab/ggml-vocab-qwen2.gguf'));
  const chat = '<|im_start|>user\nHi<|im_end|>\n';
  const parsed = qwen.tokenize(chat, { special: true });
  t.equal(parsed[0], 151644);
  t.ok(parsed.includes(151645));
  t.notOk(qwen.tokenize(chat).includes(151644), 'plain text otherwise');
  t.equal(qwen.detokenize(parsed), 'user\nHi\n', 'control tokens hidden by default');
  t.equal(qwen.detokenize(parsed, { special: true }), chat);
});

t.test('streaming decoder holds back partial characters', async (t) => {
  const spm = loadTokenizer(modelPath('vocab/ggml-vocab-llama-spm.gguf'));
  // "é" is two byte tokens when split by hand: <0xC3> <0xA9>
  const c3 = spm.vocab.index().get('<0xC3>');
  const a9 = spm.vocab.index().get('<0xA9>');
  const d = spm.createDecoder();
  t.equal(d.push(c3), '', 'half a character: nothing yet');
  t.equal(d.push(a9), 'é');
  t.equal(d.push(c3), '');
  t.equal(d.flush(), '\ufffd', 'an unfinished character ends as U+FFFD');
});

t.test('tokenizeAsync runs large inputs off the main thread', async (t) => {
  const file = modelPath('vocab/ggml-vocab-qwen2.gguf');
  const tok = loadTokenizer(file);
  const rand = prng(7);
  let text = '';
  while (text.length < 300_000) text += randomText(rand, 80) + REAL_TEXTS[text.length % REAL_TEXTS.length];
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const ids = await tok.tokenizeAsync(text, { special: true });
  clearInterval(timer);
  t.same(ids, tok.tokenize(text, { special: true }), 'same ids as tokenize');
  t.ok(ticks > 0, 'the event loop kept running while the worker tokenized');
  t.same(await tok.tokenizeAsync('Hello world'), tok.tokenize('Hello world'), 'small inputs in place');
  await t.rejects(tok.tokenizeAsync(42 as unknown as string), { code: 'TDM_BAD_ARGUMENT' });

  // A process that used the pool exits on its own: idle workers do not hold it open.
  const url = pathToFileURL(`${repoRoot}/src/model/tokenizer/index.ts`).href;
  const script = `const m = await import(${JSON.stringify(url)});
    const tok = m.loadTokenizer(${JSON.stringify(file)});
    const ids = await tok.tokenizeAsync('x'.repeat(100000) + ' y');
    console.log('ids', ids.length);`;
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'));
  const child = spawnSync(process.execPath, [...loader, '--input-type=module', '-e', script], {
    encoding: 'utf8', timeout: 120_000,
  });
  t.equal(child.status, 0, `child exited by itself (${child.stderr.slice(-500)})`);
  t.match(child.stdout, /ids \d+/);
});

t.test('typed errors', async (t) => {
  const tok = loadTokenizer(modelPath('stories260K.gguf'));
  t.throws(() => tok.tokenize(42 as unknown as string), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => tok.detokenize([1, -1]), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => tok.detokenize([512]), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => tok.detokenize([1.5]), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => tok.detokenize('abc' as unknown as number[]), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => tok.createDecoder().push(99999), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => loadTokenizer(''), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => loadTokenizer('/definitely/not/here.gguf'), { code: 'TDM_NOT_FOUND' });

  const vocabKvs = (extra: Kv[], without: string[] = []): Kv[] => [
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 'tokenizer.ggml.model', type: 'string', value: 'gpt2' },
    { key: 'tokenizer.ggml.pre', type: 'string', value: 'gpt-2' },
    { key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'string', value: ['a', 'b', 'ab', 'Ġ'] },
    { key: 'tokenizer.ggml.token_type', type: 'array', elementType: 'int32', value: [1, 1, 1, 1] },
    { key: 'tokenizer.ggml.merges', type: 'array', elementType: 'string', value: ['a b'] },
    ...extra,
  ].filter((kv) => !without.includes(kv.key) && !extra.some((e) => e !== kv && e.key === kv.key)) as Kv[];
  const write = (name: string, kvs: Kv[]): string => writeTemp(name, buildGguf(kvs, []).bytes);

  const ok = loadTokenizer(write('tiny-bpe.gguf', vocabKvs([])));
  t.same(ok.tokenize('abab a'), [2, 2, 3, 0], 'a tiny synthetic BPE vocabulary works');
  t.throws(() => loadTokenizer(write('bert.gguf', vocabKvs([{ key: 'tokenizer.ggml.model', type: 'string', value: 'bert' }]))),
    { code: 'TDM_UNSUPPORTED', message: /bert/ });
  t.throws(() => loadTokenizer(write('pre.gguf', vocabKvs([{ key: 'tokenizer.ggml.pre', type: 'string', value: 'klingon-9' }]))),
    { code: 'TDM_UNSUPPORTED', message: /klingon-9/ });
  t.throws(() => loadTokenizer(write('nomodel.gguf', vocabKvs([], ['tokenizer.ggml.model']))), { code: 'TDM_BAD_GGUF' });
  t.throws(() => loadTokenizer(write('notokens.gguf', vocabKvs([], ['tokenizer.ggml.tokens']))), { code: 'TDM_BAD_GGUF' });
  t.throws(() => loadTokenizer(write('nomerges.gguf', vocabKvs([], ['tokenizer.ggml.merges']))), { code: 'TDM_BAD_GGUF', message: /merges/ });
  t.throws(() => loadTokenizer(write('types.gguf', vocabKvs([{ key: 'tokenizer.ggml.token_type', type: 'array', elementType: 'int32', value: [1] }]))),
    { code: 'TDM_BAD_GGUF', message: /token_type/ });
  t.throws(() => loadTokenizer(write('tokens-type.gguf', vocabKvs([{ key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'int32', value: [1, 2] }]))),
    { code: 'TDM_BAD_GGUF' });
  t.throws(() => loadTokenizer(write('novocab.gguf', vocabKvs([{ key: 'tokenizer.ggml.model', type: 'string', value: 'none' }]))),
    { code: 'TDM_UNSUPPORTED' });
});
