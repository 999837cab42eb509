// Child process of gguf-fuzz.test.ts: mutates valid GGUF files, opens each with the
// native reader, reads info(), every tensor's bytes and describeModel, and reports each
// outcome. It runs apart from tap so that a native crash is a failed test, not a dead
// runner. Run by itself (as tap does with every file under test/) it does nothing.
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describeModel } from '../../src/model/describe.js';
import { GgufFile } from '../../src/model/gguf.js';

export interface FuzzConfig {
  /** Valid files to mutate, each with its number of cases. */
  sources: { file: string; cases: number }[];
  seed: number;
  /** Folder for the mutated files. */
  dir: string;
  /** Run only this case index (reproducing a failure). */
  only?: number;
  /** The worker writes the case it is about to run here, synchronously, so a crash can be traced. */
  progressFile: string;
}

export type FuzzMessage =
  | { kind: 'bad'; index: number; source: string; what: string; error: string }
  | { kind: 'done'; outcomes: Record<string, number>; rssStartBytes: number; rssMaxBytes: number; rssEndBytes: number };

/** mulberry32: a tiny seeded PRNG for choosing mutations (reproducible from the seed). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Where a valid file's length, count and type fields sit, found by walking its header. */
interface Field {
  offset: number;
  bytes: 4 | 8;
  what: string;
}

function walkHeader(b: Buffer): { fields: Field[]; headerEnd: number } {
  const fields: Field[] = [];
  let p = 8;
  const u64 = (what: string) => {
    fields.push({ offset: p, bytes: 8, what });
    const v = Number(b.readBigUInt64LE(p));
    p += 8;
    return v;
  };
  const u32 = (what: string) => {
    fields.push({ offset: p, bytes: 4, what });
    const v = b.readUInt32LE(p);
    p += 4;
    return v;
  };
  const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const skipValue = (type: number, what: string): void => {
    if (type === 8) {
      const len = u64(`${what} string length`); // read first: `p += u64()` would use the old p
      p += len;
    } else if (type === 9) {
      const elem = u32(`${what} array element type`);
      const n = u64(`${what} array count`);
      if (elem in sizes) {
        p += sizes[elem] * n;
      } else if (elem === 8) {
        // Record the first strings' lengths; skip the rest without recording.
        for (let i = 0; i < n; i++) {
          const len = i < 4 ? u64(`${what}[${i}] string length`) : Number(b.readBigUInt64LE(p)) + 8;
          p += len;
        }
      } else {
        for (let i = 0; i < n; i++) skipValue(elem, `${what}[${i}]`);
      }
    } else {
      p += sizes[type];
    }
  };
  const nTensors = u64('tensor count');
  const nKv = u64('metadata count');
  for (let i = 0; i < nKv; i++) {
    const keyLen = u64(`key ${i} length`);
    const key = b.toString('utf8', p, p + keyLen);
    p += keyLen;
    skipValue(u32(`'${key}' value type`), `'${key}'`);
  }
  for (let i = 0; i < nTensors; i++) {
    const nameLen = u64(`tensor ${i} name length`);
    p += nameLen;
    const nDims = u32(`tensor ${i} n_dims`);
    for (let d = 0; d < nDims; d++) u64(`tensor ${i} dim ${d}`);
    u32(`tensor ${i} type`);
    u64(`tensor ${i} offset`);
  }
  return { fields, headerEnd: p };
}

// Values that break length and count fields: zero, small, one too many, sign and width edges.
const NASTY = [0n, 1n, 2n, 3n, 7n, 0xffn, 0xffffn, 0x7fffffffn, 0x80000000n, 0xffffffffn, 1n << 32n, 1n << 40n, 1n << 60n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 1n];

function mutate(src: Buffer, header: { fields: Field[]; headerEnd: number }, other: Buffer, r: () => number): { bytes: Buffer; what: string } {
  let b = Buffer.from(src);
  const steps: string[] = [];
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  // Most mutations land in the header and metadata, where the parsing is.
  const pos = (len: number) => (r() < 0.85 ? Math.floor(r() * Math.min(len, header.headerEnd + 64)) : Math.floor(r() * len));
  const nSteps = 1 + Math.floor(r() * 3);
  for (let s = 0; s < nSteps && b.length > 0; s++) {
    const kind = r();
    if (kind < 0.3) {
      const n = 1 + Math.floor(r() * 8);
      for (let i = 0; i < n; i++) {
        const p = pos(b.length);
        const bit = 1 << Math.floor(r() * 8);
        b[p] ^= bit;
      }
      steps.push(`flip ${n} bits`);
    } else if (kind < 0.6) {
      const f = pick(header.fields);
      if (f.offset + f.bytes > b.length) continue;
      const old = f.bytes === 8 ? b.readBigUInt64LE(f.offset) : BigInt(b.readUInt32LE(f.offset));
      const choice = r();
      let v = choice < 0.6 ? pick(NASTY) : choice < 0.8 ? old + BigInt(1 + Math.floor(r() * 4)) : old - BigInt(1 + Math.floor(r() * 4));
      v = BigInt.asUintN(f.bytes * 8, v);
      if (f.bytes === 8) b.writeBigUInt64LE(v, f.offset);
      else b.writeUInt32LE(Number(v), f.offset);
      steps.push(`${f.what} = ${v}`);
    } else if (kind < 0.8) {
      const cut = pos(b.length);
      b = b.subarray(0, cut);
      steps.push(`truncate to ${cut}`);
    } else {
      // Splice: a chunk of this or the other file written over, inserted at, or deleted from a point.
      const from = r() < 0.5 ? b : other;
      const len = 1 + Math.floor(r() * 64);
      const start = Math.floor(r() * Math.max(1, from.length - len));
      const chunk = Buffer.from(from.subarray(start, start + len));
      const at = pos(b.length);
      const mode = pick(['over', 'insert', 'delete'] as const);
      if (mode === 'over') {
        b = Buffer.from(b);
        chunk.copy(b, at);
      } else if (mode === 'insert') {
        b = Buffer.concat([b.subarray(0, at), chunk, b.subarray(at)]);
      } else {
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + len)]);
      }
      steps.push(`splice ${mode} ${len} bytes at ${at}`);
    }
  }
  return { bytes: b, what: steps.join('; ') };
}

/** Opens, reads everything readable, describes; returns 'ok', a TDM_ code, or throws what is not a TandemError. */
function exercise(file: string): string {
  let f: GgufFile;
  try {
    f = GgufFile.open(file);
  } catch (err) {
    return codeOf(err);
  }
  try {
    for (const t of f.tensors) {
      const data = f.tensorData(t.name);
      // Touch the first and last byte: a tensor past the end of the mapping would fault here.
      if (data.length > 0 && (data[0] ^ data[data.length - 1]) === 256) throw new Error('unreachable');
    }
    describeModel(f);
    return 'ok';
  } catch (err) {
    return codeOf(err);
  } finally {
    f.close();
  }
}

function codeOf(err: unknown): string {
  const e = err as { name?: string; code?: string };
  if (e?.name === 'TandemError' && typeof e.code === 'string' && e.code.startsWith('TDM_') && e.code !== 'TDM_INTERNAL') return e.code;
  throw err;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

async function run(cfg: FuzzConfig, send: (m: FuzzMessage) => void): Promise<void> {
  const outcomes: Record<string, number> = {};
  const gc = (globalThis as { gc?: () => void }).gc;
  // Node-API runs the finalizers of collected tensor views (which unmap their files) on a
  // later turn of the event loop, so measure after a collection and a turn.
  const rss = async () => {
    gc?.();
    await tick();
    return process.memoryUsage().rss;
  };
  const files = cfg.sources.map((s) => readFileSync(s.file));
  const headers = files.map((b) => walkHeader(b));
  const target = path.join(cfg.dir, 'case.gguf');
  let rssStart = 0;
  let rssMax = 0;
  // Case indices run through the sources in order: source 0's cases first, then source 1's.
  const owner: number[] = cfg.sources.flatMap((s, i) => new Array<number>(s.cases).fill(i));
  for (let index = 0; index < owner.length; index++) {
    if (cfg.only !== undefined && index !== cfg.only) continue;
    const which = owner[index];
    // Each case has its own generator, so any one case can be rerun alone.
    const r = rng((cfg.seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
    const { bytes, what } = mutate(files[which], headers[which], files[(which + 1) % files.length], r);
    const source = path.basename(cfg.sources[which].file);
    writeFileSync(cfg.progressFile, JSON.stringify({ index, source, what }));
    // A fresh inode each time: a mapping still held elsewhere never sees its file shrink.
    try {
      unlinkSync(target);
    } catch {
      // first case: nothing to remove
    }
    writeFileSync(target, bytes);
    try {
      const outcome = exercise(target);
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    } catch (err) {
      send({ kind: 'bad', index, source, what, error: String((err as Error)?.stack ?? err) });
    }
    if (index === 20) rssStart = await rss();
    if (index % 250 === 0) rssMax = Math.max(rssMax, await rss());
    else if (index % 20 === 0) await tick();
  }
  const rssEnd = await rss();
  send({ kind: 'done', outcomes, rssStartBytes: rssStart || rssEnd, rssMaxBytes: Math.max(rssMax, rssEnd), rssEndBytes: rssEnd });
}

const send = process.send?.bind(process);
if (send && process.argv[2]) {
  await run(JSON.parse(process.argv[2]) as FuzzConfig, (m) => send(m));
  process.disconnect?.();
}
