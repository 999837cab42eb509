// Bad GGUF files: each gives a TandemError with a code and a message that names the
// file and what is wrong, and none crashes the process or allocates without bound.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { describeModel } from '../../src/model/describe.js';
import { GgufFile } from '../../src/model/gguf.js';
import { modelPath } from '../helpers.js';
import { buildGguf, removeTemp, tempDir, tinyModel, writeTemp, type Kv, type TensorSpec } from './gguf-test-writer.js';

t.teardown(removeTemp);

let counter = 0;
/** Writes `bytes` to a fresh file, opens it and describes it; returns the error thrown. */
function openBytes(bytes: Uint8Array, name = `bad-${counter++}.gguf`): { file: string; err: unknown } {
  const file = writeTemp(name, bytes);
  try {
    const f = GgufFile.open(file);
    try {
      describeModel(f);
    } finally {
      f.close();
    }
    return { file, err: undefined };
  } catch (err) {
    return { file, err };
  }
}

/** Asserts that `bytes` fails with `code` and a message naming the file and matching `what`. */
function rejects(t: Test, bytes: Uint8Array, code: string, what: RegExp, name: string): void {
  const { file, err } = openBytes(bytes);
  const e = err as { code?: string; message?: string; name?: string } | undefined;
  if (!e) {
    t.fail(`${name}: opened without error`);
    return;
  }
  t.equal(e.name, 'TandemError', `${name}: a TandemError`);
  t.equal(e.code, code, `${name}: ${code}`);
  t.ok(e.message?.startsWith(`${file}: `), `${name}: message names the file`);
  t.match(e.message, what, `${name}: ${e.message?.slice(file.length + 2)}`);
}

/** A valid tiny llama model and where its pieces sit. */
function validModel(extraKvs: Kv[] = [], tensors?: TensorSpec[]) {
  const m = tinyModel({ arch: 'llama', nLayer: 1, kvs: extraKvs });
  return buildGguf(m.kvs, tensors ?? m.tensors);
}

const u64le = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
};

function patched(bytes: Buffer, offset: number, value: Buffer): Buffer {
  const out = Buffer.from(bytes);
  value.copy(out, offset);
  return out;
}

t.test('paths that are not GGUF files', async (t) => {
  t.throws(() => GgufFile.open('/definitely/not/here.gguf'), { code: 'TDM_NOT_FOUND', message: '/definitely/not/here.gguf: no such file' });
  const dir = path.join(tempDir(), 'a-directory.gguf');
  mkdirSync(dir);
  t.throws(() => GgufFile.open(dir), { code: 'TDM_BAD_GGUF', message: `${dir}: is a directory, not a GGUF file` });
  t.throws(() => GgufFile.open(''), { code: 'TDM_BAD_ARGUMENT' });
  t.throws(() => GgufFile.open(`${modelPath('stories260K.gguf')}\0.txt`), { code: 'TDM_BAD_ARGUMENT', message: /NUL/ });
  const fifo = path.join(tempDir(), 'a-fifo.gguf');
  try {
    execFileSync('mkfifo', [fifo]);
  } catch {
    t.comment('mkfifo unavailable; skipping the FIFO case');
    return;
  }
  // Opening a FIFO for reading would block until a writer came; it must fail at once.
  t.throws(() => GgufFile.open(fifo), { code: 'TDM_BAD_GGUF', message: `${fifo}: is not a regular file` });
});

t.test('header', async (t) => {
  rejects(t, Buffer.alloc(0), 'TDM_BAD_GGUF', /file is empty/, 'empty');
  rejects(t, Buffer.from('GGU'), 'TDM_BAD_GGUF', /too short to be a GGUF file \(3 bytes\)/, 'three bytes');
  rejects(t, Buffer.from('GGML\x03\x00\x00\x00' + '\0'.repeat(32), 'latin1'), 'TDM_BAD_GGUF', /wrong magic "GGML" \(expected "GGUF"\): not a GGUF file/, 'wrong magic');
  rejects(t, Buffer.from('{"not": "a model"}\n'), 'TDM_BAD_GGUF', /wrong magic "{"no"/, 'JSON');
  const good = validModel().bytes;
  rejects(t, patched(good, 4, Buffer.from([4, 0, 0, 0])), 'TDM_BAD_GGUF', /unsupported GGUF version 4/, 'version 4');
  rejects(t, patched(good, 4, Buffer.from([0, 0, 0, 0])), 'TDM_BAD_GGUF', /unsupported GGUF version 0/, 'version 0');
  rejects(t, patched(good, 4, Buffer.from([0, 0, 0, 3])), 'TDM_BAD_GGUF', /big-endian/, 'big-endian');
  rejects(t, patched(good, 8, u64le(1n << 60n)), 'TDM_BAD_GGUF', /tensor count 1152921504606846976 exceeds what the file can hold/, '2^60 tensors');
  rejects(t, patched(good, 16, u64le(1n << 60n)), 'TDM_BAD_GGUF', /metadata count 1152921504606846976 exceeds what the file can hold/, '2^60 keys');
  rejects(t, patched(good, 16, u64le(0xffffffffffffffffn)), 'TDM_BAD_GGUF', /metadata count/, '2^64-1 keys');
});

t.test('every truncation of the header and metadata', async (t) => {
  const { bytes, dataOffset, tensorInfoOffsets } = validModel();
  const codes = new Set<string>();
  let unnamed = 0;
  for (let cut = 0; cut < dataOffset; cut++) {
    const { file, err } = openBytes(bytes.subarray(0, cut), 'truncated.gguf');
    const e = err as { code?: string; message?: string } | undefined;
    codes.add(String(e?.code));
    if (!e?.message?.startsWith(`${file}: `)) unnamed++;
  }
  t.same([...codes], ['TDM_BAD_GGUF'], `all ${dataOffset} cuts before the data are TDM_BAD_GGUF`);
  t.equal(unnamed, 0, 'every message names the file');
  rejects(t, bytes.subarray(0, 100), 'TDM_BAD_GGUF', /metadata count 12 exceeds what the file can hold/, 'cut early');
  rejects(t, bytes.subarray(0, tensorInfoOffsets[tensorInfoOffsets.length - 1] + 12), 'TDM_BAD_GGUF', /truncated while reading .* at byte \d+/, 'cut in the tensor table');
});

t.test('truncated tensor data and offsets out of range', async (t) => {
  const model = validModel();
  const { bytes, tensorInfoOffsets, dataOffset } = model;
  rejects(t, bytes.subarray(0, dataOffset + 100), 'TDM_BAD_GGUF', /tensor 'token_embd\.weight' data \(16384 bytes at offset 0\) runs past the end of the file: truncated\?/, 'cut in the data');
  rejects(t, bytes.subarray(0, bytes.length - 1), 'TDM_BAD_GGUF', /runs past the end of the file/, 'one byte short');
  // token_embd.weight's info: name (8 + 17), n_dims (4), 2 dims (16), type (4), then offset.
  const offsetAt = tensorInfoOffsets[0] + 8 + 'token_embd.weight'.length + 4 + 16 + 4;
  rejects(t, patched(bytes, offsetAt, u64le(1n << 60n)), 'TDM_BAD_GGUF', /tensor 'token_embd\.weight' data \(16384 bytes at offset 1152921504606846976\) runs past the end/, 'offset 2^60');
  rejects(t, patched(bytes, offsetAt, u64le(0xffffffffffffffe0n)), 'TDM_BAD_GGUF', /runs past the end/, 'offset near 2^64');
  rejects(t, patched(bytes, offsetAt, u64le(3n)), 'TDM_BAD_GGUF', /tensor 'token_embd\.weight' offset 3 is not aligned to 32/, 'misaligned');
});

t.test('absurd dimensions, counts and lengths', async (t) => {
  const { bytes, tensorInfoOffsets, kvOffsets } = validModel();
  const dimsAt = tensorInfoOffsets[0] + 8 + 'token_embd.weight'.length;
  rejects(t, patched(bytes, dimsAt, Buffer.from([0, 0, 0, 0])), 'TDM_BAD_GGUF', /'token_embd\.weight' has 0 dimensions \(1 to 4 allowed\)/, '0 dims');
  rejects(t, patched(bytes, dimsAt, Buffer.from([5, 0, 0, 0])), 'TDM_BAD_GGUF', /has 5 dimensions/, '5 dims');
  rejects(t, patched(bytes, dimsAt + 4, u64le(1n << 50n)), 'TDM_BAD_GGUF', /'token_embd\.weight' has absurd dimension 1125899906842624/, 'dimension 2^50');
  rejects(t, patched(bytes, dimsAt + 4, u64le(0n)), 'TDM_BAD_GGUF', /absurd dimension 0/, 'dimension 0');
  rejects(t, patched(patched(bytes, dimsAt + 4, u64le(1n << 32n)), dimsAt + 12, u64le(1n << 32n)), 'TDM_BAD_GGUF', /too many elements/, '2^32 x 2^32');
  rejects(t, patched(bytes, dimsAt + 4, u64le(1n << 20n)), 'TDM_BAD_GGUF', /runs past the end of the file/, 'plausible but larger than the file');
  // A 2^60 string length in a key and in a value; a 2^60 array count.
  rejects(t, patched(bytes, kvOffsets[0], u64le(1n << 60n)), 'TDM_BAD_GGUF', /metadata key of 1152921504606846976 bytes is too long/, '2^60 key length');
  const archValueAt = kvOffsets[0] + 8 + 'general.architecture'.length + 4;
  rejects(t, patched(bytes, archValueAt, u64le(1n << 60n)), 'TDM_BAD_GGUF', /metadata 'general\.architecture': string of 1152921504606846976 bytes runs past the end of the file/, '2^60 string length');
  const tokensKv = tinyModel({ arch: 'llama', nLayer: 1 }).kvs.findIndex((k) => k.key === 'tokenizer.ggml.tokens');
  const countAt = kvOffsets[tokensKv] + 8 + 'tokenizer.ggml.tokens'.length + 4 + 4;
  rejects(t, patched(bytes, countAt, u64le(1n << 60n)), 'TDM_BAD_GGUF', /metadata 'tokenizer\.ggml\.tokens': array of 1152921504606846976 elements runs past the end of the file/, '2^60 array count');
  rejects(t, patched(bytes, countAt, u64le(1000000n)), 'TDM_BAD_GGUF', /truncated while reading|runs past the end/, 'a million strings in a small file');
  // Arrays nested 12 deep (the limit is 8), written by hand.
  const parts: Buffer[] = [Buffer.from('GGUF'), Buffer.from([3, 0, 0, 0]), u64le(0n), u64le(1n)];
  parts.push(u64le(4n), Buffer.from('deep'), Buffer.from([9, 0, 0, 0]));
  for (let i = 0; i < 12; i++) parts.push(Buffer.from([9, 0, 0, 0]), u64le(1n));
  parts.push(Buffer.from([0, 0, 0, 0]), u64le(0n));
  rejects(t, Buffer.concat(parts), 'TDM_BAD_GGUF', /metadata 'deep': arrays nested deeper than 8/, 'deep nesting');
});

t.test('unknown types and invalid values', async (t) => {
  const { bytes, tensorInfoOffsets, kvOffsets } = validModel();
  const typeAt = tensorInfoOffsets[0] + 8 + 'token_embd.weight'.length + 4 + 16;
  rejects(t, patched(bytes, typeAt, Buffer.from([99, 0, 0, 0])), 'TDM_BAD_GGUF', /tensor 'token_embd\.weight' has unknown type id 99/, 'type 99');
  rejects(t, patched(bytes, typeAt, Buffer.from([4, 0, 0, 0])), 'TDM_BAD_GGUF', /unknown type id 4/, 'removed Q4_2');
  rejects(t, patched(bytes, typeAt, Buffer.from([12, 0, 0, 0])), 'TDM_BAD_GGUF', /row of 64 is not a multiple of the q4_K block size 256/, 'row not a whole block');
  const kvTypeAt = kvOffsets[0] + 8 + 'general.architecture'.length;
  rejects(t, patched(bytes, kvTypeAt, Buffer.from([13, 0, 0, 0])), 'TDM_BAD_GGUF', /metadata 'general\.architecture': unknown value type 13/, 'value type 13');
  rejects(t, patched(bytes, kvTypeAt, Buffer.from([0xff, 0xff, 0xff, 0xff])), 'TDM_BAD_GGUF', /unknown value type 4294967295/, 'value type 2^32-1');
  const boolFile = buildGguf([{ key: 'flag', type: 'bool', value: true }], []);
  rejects(t, patched(boolFile.bytes, boolFile.kvOffsets[0] + 8 + 'flag'.length + 4, Buffer.from([2])), 'TDM_BAD_GGUF', /metadata 'flag': bool value 2 is not 0 or 1/, 'bool 2');
  rejects(t, buildGguf([{ key: 'a', type: 'uint8', value: 1 }, { key: 'a', type: 'uint8', value: 2 }], []).bytes, 'TDM_BAD_GGUF', /duplicate metadata key 'a'/, 'duplicate key');
  const twice = tinyModel({ arch: 'llama', nLayer: 1 });
  rejects(t, buildGguf(twice.kvs, [...twice.tensors, twice.tensors[1]]).bytes, 'TDM_BAD_GGUF', /duplicate tensor name 'output_norm\.weight'/, 'duplicate tensor');
  rejects(t, buildGguf([{ key: '', type: 'uint8', value: 1 }], []).bytes, 'TDM_BAD_GGUF', /empty metadata key/, 'empty key');
  // Names that are not UTF-8 would not survive the trip to JS and back.
  const latin = buildGguf([{ key: 'caf\u00e9', type: 'uint8', value: 1 }], []);
  const eAcute = latin.kvOffsets[0] + 8 + 3; // 'caf' then the two bytes of U+00E9
  rejects(t, patched(latin.bytes, eAcute, Buffer.from([0xe9, 0x20])), 'TDM_BAD_GGUF', /metadata key at byte 32 is not valid UTF-8/, 'latin-1 key');
  const utf8 = GgufFile.open(writeTemp('utf8-key.gguf', latin.bytes));
  t.equal(utf8.metadata.has('caf\u00e9'), true, 'a UTF-8 key is fine');
  utf8.close();
  rejects(t, patched(bytes, tensorInfoOffsets[0] + 8, Buffer.from([0xc0, 0xaf])), 'TDM_BAD_GGUF', /tensor name at byte \d+ is not valid UTF-8/, 'overlong UTF-8 in a tensor name');
  rejects(t, buildGguf([{ key: 'general.alignment', type: 'uint32', value: 48 }], []).bytes, 'TDM_BAD_GGUF', /general\.alignment 48 is not a power of two/, 'alignment 48');
  rejects(t, buildGguf([{ key: 'general.alignment', type: 'uint32', value: 0 }], []).bytes, 'TDM_BAD_GGUF', /general\.alignment 0/, 'alignment 0');
  rejects(t, buildGguf([{ key: 'general.alignment', type: 'uint64', value: 32n }], []).bytes, 'TDM_BAD_GGUF', /general\.alignment must be uint32/, 'alignment type');
});

t.test('valid files that are not models tandem runs', async (t) => {
  const m = tinyModel({ arch: 'llama', nLayer: 1, kvs: [{ key: 'general.architecture', type: 'string', value: 'rwkv7' }] });
  rejects(t, buildGguf(m.kvs, m.tensors).bytes, 'TDM_UNSUPPORTED', /architecture 'rwkv7' is not supported \(supported: llama, qwen2, qwen3, qwen2moe, qwen3moe, olmoe, gpt-oss, gemma, gemma2, gemma3\)/, 'unknown architecture');
  rejects(t, buildGguf([{ key: 'general.architecture', type: 'uint32', value: 7 }], []).bytes, 'TDM_BAD_GGUF', /general\.architecture' is uint32, expected a string/, 'architecture not a string');
  rejects(t, buildGguf([], []).bytes, 'TDM_BAD_GGUF', /missing required metadata key 'general\.architecture'/, 'no metadata at all');
  // A real vocabulary file reads fine; describing it as a model is refused.
  const vocab = readFileSync(modelPath('vocab/ggml-vocab-llama-spm.gguf'));
  rejects(t, vocab, 'TDM_UNSUPPORTED', /vocabulary-only GGUF/, 'vocab-only');
});
