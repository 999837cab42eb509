// `tandem inspect`: the report for real, synthetic MoE, vocabulary-only and unsupported
// files, its text layout and JSON, and errors printed as `tandem: <message> [CODE]`.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { command, inspectGguf, renderReport } from '../../src/cli/commands/inspect.js';
import { GgufFile } from '../../src/model/gguf.js';
import { modelPath, repoRoot } from '../helpers.js';
import { removeTemp, writeTemp, writeTinyModel } from '../model/gguf-test-writer.js';

t.teardown(removeTemp);

function report(file: string) {
  const f = GgufFile.open(file);
  try {
    return inspectGguf(f);
  } finally {
    f.close();
  }
}

/** Runs the real CLI entry point in a child process (same TypeScript loader as this test; slow to start, so used sparingly). */
function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [...process.execArgv, path.join(repoRoot, 'src/cli/main.ts'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('stories260K: numbers and aligned text', async (t) => {
  const r = report(modelPath('stories260K.gguf'));
  t.match(r, { architecture: 'llama', supported: true, vocabOnly: false, parameterCount: 292800, weightBytes: 1171200, kvBytesPerToken: 640, ggufVersion: 3 });
  t.equal(r.hparams?.nLayer, 5);
  t.equal(r.tensors.length, 48);
  t.same(r.tokenizer.special, { unknown: 0, bos: 1, eos: 2 }, 'ids written as 0xFFFFFFFF mean none');
  const text = renderReport(r);
  t.match(text, /^stories260K\.gguf: llama, GGUF v3, 1\.13 MiB$/m);
  t.match(text, /^ {2}parameters +292\.8K \(292,800\)$/m);
  t.match(text, /^ {2}KV cache per token +640 B \(f16 K and V, 5 layers\)/m);
  t.match(text, /^ {2}attention heads +8 query, 4 key\/value \(GQA 2:1\)$/m);
  t.match(text, /^ {2}f32 +48 +1\.12 MiB +100\.0%$/m);
  t.match(text, /^ {2}blk\.0\.ffn_down\.weight +f32 +172 x 64 +43\.0 KiB$/m);
  t.match(text, /\(36 more in layers 1-4, shaped as layer 0\)/);
  t.notMatch(text, /blk\.1\./, 'later layers are summarised');
  // Each block's values start in one column.
  for (const block of text.split('\n\n')) {
    const rows = block.split('\n').filter((l) => l.startsWith('  ') && !l.startsWith('  ('));
    const starts = new Set(rows.map((l) => /^ {2}\S+(?: \S+)*? {2,}/.exec(l)?.[0].length));
    t.ok(starts.size <= 1 || block.startsWith('types') || block.startsWith('tensors'), `aligned: ${block.split('\n')[0]}`);
  }
});

t.test('a MoE model shows its experts', async (t) => {
  const file = writeTinyModel('inspect-qwen2moe.gguf', { arch: 'qwen2moe', type: 'q8_0', nFfShared: 64 });
  const r = report(file);
  t.equal(r.supported, true);
  t.same(r.typesUsed.map((u) => u.type), ['q8_0', 'f32']);
  const text = renderReport(r);
  t.match(text, /^ {2}experts +4, 2 per token, width 32, softmax router$/m);
  t.match(text, /^ {2}shared expert +width 64, sigmoid-gated$/m);
  t.match(text, /^ {2}features +QKV bias$/m);
  t.match(text, /^ {2}rope +neox, 16 dims, base 10000$/m);
  t.match(text, /bits per parameter/);
});

t.test('a gemma3 model: its features, and the KV its sliding layers keep', async (t) => {
  // 12 layers, 2 global; a window of 64 in a training context of 4096.
  const file = writeTinyModel('inspect-gemma3.gguf', {
    arch: 'gemma3', nLayer: 12,
    kvs: [{ key: 'gemma3.attention.sliding_window', type: 'uint32', value: 64 }, { key: 'gemma3.context_length', type: 'uint32', value: 4096 }],
  });
  const text = renderReport(report(file));
  t.match(text, /^ {2}features +QK norm, sliding window 64 \(5 of every 6 layers\), embeddings scaled by 8, post-attention and post-FFN norms, GeGLU$/m);
  // Per layer and token 2 KV heads x 16 x 2 (K, V) x 2 bytes = 128 B: 4096 positions of 12 layers are 6 MiB; kept apart
  // (16-position blocks of 2 slots, chunks of 256), 256 blocks for the global layers and 5 groups of
  // ceil((63 + 256) / 16) + 1 = 21: 361 blocks of 4 KiB, 1.41 MiB.
  t.match(text, /^ {2}KV cache per token +1\.50 KiB \(f16 K and V, 12 layers\); 6\.00 MiB for the training context of 4,096, 1\.41 MiB keeping the sliding layers' window$/m);
});

t.test('a gemma2 model: its window and soft caps', async (t) => {
  const file = writeTinyModel('inspect-gemma2.gguf', { arch: 'gemma2', nLayer: 4, kvs: [{ key: 'gemma2.attn_logit_softcapping', type: 'float32', value: 50 }] });
  const text = renderReport(report(file));
  // No window key: llama.cpp's 4096; no final cap key: its 30.
  t.match(text, /^ {2}features +tied embeddings, sliding window 4096 \(1 of every 2 layers\), embeddings scaled by 8, post-attention and post-FFN norms, GeGLU, attention soft cap 50, logit soft cap 30$/m);
});

t.test('vocabulary-only files: what is there', async (t) => {
  const r = report(modelPath('vocab/ggml-vocab-qwen2.gguf'));
  t.match(r, { vocabOnly: true, supported: false, architecture: 'qwen2', parameterCount: 0, weightBytes: 0 });
  t.match(r.tokenizer, { model: 'gpt2', pre: 'qwen2', tokens: 151936, merges: 151387 });
  t.ok(r.tokenizer.chatTemplateChars > 0);
  const text = renderReport(r);
  t.match(text, /^ggml-vocab-qwen2\.gguf: vocabulary only \(no tensors\), GGUF v3/);
  t.match(text, /^ {2}tokenizer +gpt2 \(pre-tokenizer qwen2\), 151,936 tokens, 151,387 merges$/m);
  t.match(text, /^qwen2 metadata$/m);
  t.match(text, /^ {2}block_count +32$/m);
  t.notMatch(text, /types used|tensors \(/);
});

t.test('unsupported models are reported, not refused', async (t) => {
  const file = writeTinyModel('inspect-ropefreqs.gguf', { arch: 'llama', extraTensors: [{ name: 'rope_freqs.weight', shape: [8] }] });
  const r = report(file);
  t.equal(r.supported, false);
  t.match(r.reason, /tensor 'rope_freqs\.weight' is not part of a llama model/);
  t.ok(r.parameterCount > 0);
  const text = renderReport(r);
  t.match(text, /llama \(tandem cannot run it\)/);
  t.match(text, /^ {2}not supported +tensor 'rope_freqs\.weight'/m);
  t.match(text, /^ {2}embedding_length +64$/m);
});

/** Runs the command in this process, capturing what it prints. */
async function run(...args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(' '));
  try {
    return { code: await command.run(args), out: lines.join('\n') };
  } finally {
    console.log = log;
  }
}

t.test('the command in-process: --json, options, errors', async (t) => {
  const json = await run('--json', modelPath('stories260K.gguf'));
  t.equal(json.code, 0);
  const parsed = JSON.parse(json.out);
  t.match(parsed, { architecture: 'llama', parameterCount: 292800, kvBytesPerToken: 640, hparams: { nEmbd: 64, ropeType: 'norm' } });
  t.equal(parsed.tensors.length, 48);

  const vocab = JSON.parse((await run(modelPath('vocab/ggml-vocab-llama-bpe.gguf'), '--json')).out);
  t.match(vocab, { vocabOnly: true, tokenizer: { model: 'gpt2' } });

  const help = await run('--help');
  t.equal(help.code, 0);
  t.match(help.out, /usage: tandem inspect FILE \[--json\]/);
  await t.rejects(run(), { code: 'TDM_BAD_ARGUMENT', message: /expected one FILE/ });
  await t.rejects(run('--bogus', 'x'), { code: 'TDM_BAD_ARGUMENT', message: /unknown option '--bogus'/ });
  await t.rejects(run('a.gguf', 'b.gguf'), { code: 'TDM_BAD_ARGUMENT', message: /got 2/ });
  const badMagic = writeTemp('inspect-bad-magic.gguf', Buffer.from('GGML this is not a gguf file at all'));
  await t.rejects(run(badMagic), { code: 'TDM_BAD_GGUF', message: /inspect-bad-magic\.gguf: wrong magic "GGML"/ });
  const inconsistent = writeTinyModel('inspect-bad-shape.gguf', { arch: 'llama', dropTensors: ['blk.0.ffn_up.weight'] });
  await t.rejects(run(inconsistent), { code: 'TDM_BAD_GGUF', message: /missing tensor 'blk\.0\.ffn_up\.weight'/ });
});

t.test('the tandem binary: output, exit codes, `tandem: <message> [CODE]`', async (t) => {
  const text = cli('inspect', modelPath('stories260K.gguf'));
  t.equal(text.status, 0, text.stderr);
  t.match(text.stdout, /parameters +292\.8K/);

  const missing = cli('inspect', '/no/such/model.gguf');
  t.equal(missing.status, 1);
  t.equal(missing.stderr.trim(), 'tandem: /no/such/model.gguf: no such file [TDM_NOT_FOUND]');
});
