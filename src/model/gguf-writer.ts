// GGUF v3 writer: metadata of every value type (nested arrays included), a tensor table,
// and tensor data streamed to disk tensor by tensor through a file handle, so a
// multi-gigabyte model never sits in memory. Format: ggml's docs/gguf.md.
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { TandemError } from '../native/errors.js';
import type { GgufArray, GgufMetadataEntry, GgufValueType } from './gguf.js';
import { typeInfo } from './quant.js';

const MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const VERSION = 3;
const DEFAULT_ALIGNMENT = 32;
const MAX_DIMS = 4;

const VALUE_TYPE_IDS: Record<GgufValueType, number> = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6, bool: 7,
  string: 8, array: 9, uint64: 10, int64: 11, float64: 12,
};

/** Integer ranges of the fixed-size integer types that fit a JS number. */
const INT_RANGES: Partial<Record<GgufValueType, [number, number]>> = {
  uint8: [0, 0xff], int8: [-0x80, 0x7f], uint16: [0, 0xffff], int16: [-0x8000, 0x7fff],
  uint32: [0, 0xffffffff], int32: [-0x80000000, 0x7fffffff],
};

/** The typed array whose bytes are already a GGUF array body, per element type. */
const TYPED_ARRAYS: Partial<Record<GgufValueType, new (n: number) => ArrayBufferView>> = {
  uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array, int16: Int16Array, uint32: Uint32Array,
  int32: Int32Array, float32: Float32Array, float64: Float64Array, uint64: BigUint64Array, int64: BigInt64Array,
};

const littleEndianHost = endianness() === 'LE';

export interface GgufTensorDecl {
  /** Tensor name, e.g. "blk.0.attn_q.weight" (at most 4096 bytes of UTF-8). */
  name: string;
  /** ggml type name or id, e.g. "q4_K" or 12. */
  type: string | number;
  /** Dimensions, innermost first (shape[0] is the row length); 1 to 4 positive integers. */
  shape: number[];
}

export interface GgufPlannedTensor {
  name: string;
  /** ggml type name, e.g. "q4_K" */
  type: string;
  /** ggml type id as stored in the file */
  typeId: number;
  shape: number[];
  /** elements in the tensor */
  nElements: number;
  /** bytes of data */
  nBytes: number;
  /** bytes from the start of the data section (a multiple of the alignment) */
  offset: number;
}

/** Progress of a streaming write, for callers that draw a bar. */
export interface GgufWriteProgress {
  /** tensor data bytes written so far */
  bytesWritten: number;
  /** tensor data bytes the file will hold */
  bytesTotal: number;
}

/** Growable little-endian byte buffer for the header. */
class ByteBuilder {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number): void { this.reserve(1); this.buf.writeUInt8(v, this.length); this.length += 1; }
  i8(v: number): void { this.reserve(1); this.buf.writeInt8(v, this.length); this.length += 1; }
  u16(v: number): void { this.reserve(2); this.buf.writeUInt16LE(v, this.length); this.length += 2; }
  i16(v: number): void { this.reserve(2); this.buf.writeInt16LE(v, this.length); this.length += 2; }
  u32(v: number): void { this.reserve(4); this.buf.writeUInt32LE(v, this.length); this.length += 4; }
  i32(v: number): void { this.reserve(4); this.buf.writeInt32LE(v, this.length); this.length += 4; }
  f32(v: number): void { this.reserve(4); this.buf.writeFloatLE(v, this.length); this.length += 4; }
  f64(v: number): void { this.reserve(8); this.buf.writeDoubleLE(v, this.length); this.length += 8; }
  u64(v: bigint): void { this.reserve(8); this.buf.writeBigUInt64LE(v, this.length); this.length += 8; }
  i64(v: bigint): void { this.reserve(8); this.buf.writeBigInt64LE(v, this.length); this.length += 8; }
  bytes(b: Uint8Array): void { this.reserve(b.length); this.buf.set(b, this.length); this.length += b.length; }
  zeros(n: number): void { this.reserve(n); this.buf.fill(0, this.length, this.length + n); this.length += n; }
  string(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(BigInt(b.length));
    this.bytes(b);
  }
  result(): Buffer { return this.buf.subarray(0, this.length); }
}

function badValue(key: string, what: string): TandemError {
  return new TandemError('TDM_BAD_ARGUMENT', `GGUF metadata '${key}': ${what}`);
}

function isValueType(t: unknown): t is GgufValueType {
  return typeof t === 'string' && Object.prototype.hasOwnProperty.call(VALUE_TYPE_IDS, t);
}

function toBigInt(key: string, type: 'uint64' | 'int64', v: unknown): bigint {
  let b: bigint;
  if (typeof v === 'bigint') b = v;
  else if (typeof v === 'number' && Number.isSafeInteger(v)) b = BigInt(v);
  else throw badValue(key, `${type} value must be a bigint (or a safe integer), got ${typeof v}`);
  const ok = type === 'uint64' ? b >= 0n && b < 1n << 64n : b >= -(1n << 63n) && b < 1n << 63n;
  if (!ok) throw badValue(key, `${b} is out of range for ${type}`);
  return b;
}

/** Checks a value against its type (recursively for arrays); throws TDM_BAD_ARGUMENT. */
function checkValue(key: string, type: GgufValueType, v: unknown, depth = 0): void {
  const range = INT_RANGES[type];
  if (range) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < range[0] || v > range[1]) {
      throw badValue(key, `${String(v)} is not a valid ${type}`);
    }
    return;
  }
  switch (type) {
    case 'float32':
    case 'float64':
      if (typeof v !== 'number') throw badValue(key, `${type} value must be a number, got ${typeof v}`);
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw badValue(key, `bool value must be a boolean, got ${typeof v}`);
      return;
    case 'string':
      if (typeof v !== 'string') throw badValue(key, `string value must be a string, got ${typeof v}`);
      return;
    case 'uint64':
    case 'int64':
      toBigInt(key, type, v);
      return;
    case 'array': {
      if (depth >= 8) throw badValue(key, 'arrays nested deeper than 8 levels');
      const a = v as GgufArray;
      if (typeof a !== 'object' || a === null || !isValueType(a.elementType) || a.value == null || typeof a.value.length !== 'number') {
        throw badValue(key, 'array value must be {elementType, value: ArrayLike}');
      }
      const typed = TYPED_ARRAYS[a.elementType];
      if (typed && a.value instanceof typed) return;
      for (let i = 0; i < a.value.length; i++) checkValue(key, a.elementType, a.value[i], depth + 1);
      return;
    }
    default:
      throw badValue(key, `unknown value type '${String(type)}'`);
  }
}

function encodeValue(out: ByteBuilder, key: string, type: GgufValueType, v: unknown): void {
  switch (type) {
    case 'uint8': return out.u8(v as number);
    case 'int8': return out.i8(v as number);
    case 'uint16': return out.u16(v as number);
    case 'int16': return out.i16(v as number);
    case 'uint32': return out.u32(v as number);
    case 'int32': return out.i32(v as number);
    case 'float32': return out.f32(v as number);
    case 'float64': return out.f64(v as number);
    case 'bool': return out.u8(v ? 1 : 0);
    case 'string': return out.string(v as string);
    case 'uint64': return out.u64(toBigInt(key, 'uint64', v));
    case 'int64': return out.i64(toBigInt(key, 'int64', v));
    case 'array': {
      const a = v as GgufArray;
      out.u32(VALUE_TYPE_IDS[a.elementType]);
      out.u64(BigInt(a.value.length));
      const typed = TYPED_ARRAYS[a.elementType];
      if (typed && littleEndianHost && a.value instanceof typed) {
        const view = a.value as unknown as ArrayBufferView;
        out.bytes(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
        return;
      }
      for (let i = 0; i < a.value.length; i++) encodeValue(out, key, a.elementType, a.value[i]);
      return;
    }
  }
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * Builds a GGUF file: set metadata, declare tensors (in file order), then `create(path)`
 * writes the header and returns a GgufStream that takes each tensor's bytes in order.
 */
export class GgufWriter {
  private readonly kv = new Map<string, GgufMetadataEntry>();
  private readonly planned: GgufPlannedTensor[] = [];
  private readonly names = new Set<string>();
  private dataEnd = 0;
  private frozen = false;

  /** Sets (or replaces) a metadata entry; throws TDM_BAD_ARGUMENT when value and type disagree. */
  set(key: string, type: GgufValueType, value: unknown): this {
    this.checkOpen();
    if (typeof key !== 'string' || key.length === 0) throw new TandemError('TDM_BAD_ARGUMENT', 'GGUF metadata keys must be non-empty strings');
    if (!isValueType(type)) throw badValue(key, `unknown value type '${String(type)}'`);
    checkValue(key, type, value);
    if (key === 'general.alignment') {
      if (type !== 'uint32' || (value as number) === 0 || ((value as number) & ((value as number) - 1)) !== 0) {
        throw badValue(key, 'general.alignment must be a uint32 power of two');
      }
      if (this.planned.length > 0) throw badValue(key, 'set general.alignment before declaring tensors');
    }
    this.kv.set(key, { key, type, value });
    return this;
  }

  setString(key: string, value: string): this { return this.set(key, 'string', value); }
  setUint32(key: string, value: number): this { return this.set(key, 'uint32', value); }
  setInt32(key: string, value: number): this { return this.set(key, 'int32', value); }
  setFloat32(key: string, value: number): this { return this.set(key, 'float32', value); }
  setBool(key: string, value: boolean): this { return this.set(key, 'bool', value); }
  setUint64(key: string, value: bigint): this { return this.set(key, 'uint64', value); }
  /** An array of one element type: typed arrays are written as they are, other ArrayLikes element by element. */
  setArray(key: string, elementType: GgufValueType, value: ArrayLike<unknown>): this {
    return this.set(key, 'array', { elementType, value });
  }

  /** Removes a metadata entry; returns whether it was there. */
  delete(key: string): boolean {
    this.checkOpen();
    if (key === 'general.alignment' && this.planned.length > 0) throw badValue(key, 'cannot change the alignment after declaring tensors');
    return this.kv.delete(key);
  }

  get(key: string): GgufMetadataEntry | undefined {
    return this.kv.get(key);
  }

  /** Data alignment in bytes: general.alignment when set, else 32. */
  get alignment(): number {
    const e = this.kv.get('general.alignment');
    return e ? (e.value as number) : DEFAULT_ALIGNMENT;
  }

  /** Declares the next tensor of the file; returns where its data will lie. */
  addTensor(decl: GgufTensorDecl): GgufPlannedTensor {
    this.checkOpen();
    const { name, shape } = decl;
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 4096) {
      throw new TandemError('TDM_BAD_ARGUMENT', `tensor name must be a non-empty string of at most 4096 bytes`);
    }
    if (this.names.has(name)) throw new TandemError('TDM_BAD_ARGUMENT', `tensor '${name}' is declared twice`);
    if (!Array.isArray(shape) || shape.length < 1 || shape.length > MAX_DIMS || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
      throw new TandemError('TDM_BAD_ARGUMENT', `tensor '${name}': shape must be 1 to ${MAX_DIMS} positive integers, got [${String(shape)}]`);
    }
    const info = typeInfo(decl.type);
    if (shape[0] % info.blockSize !== 0) {
      throw new TandemError('TDM_BAD_ARGUMENT', `tensor '${name}': row length ${shape[0]} is not a multiple of the ${info.name} block size ${info.blockSize}`);
    }
    const nElements = shape.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(nElements)) throw new TandemError('TDM_BAD_ARGUMENT', `tensor '${name}' has too many elements`);
    const nBytes = (nElements / info.blockSize) * info.typeSize;
    const offset = alignUp(this.dataEnd, this.alignment);
    const t: GgufPlannedTensor = { name, type: info.name, typeId: info.id, shape: [...shape], nElements, nBytes, offset };
    this.planned.push(t);
    this.names.add(name);
    this.dataEnd = offset + nBytes;
    return t;
  }

  /** The declared tensors, in file order. */
  get tensors(): readonly GgufPlannedTensor[] {
    return this.planned;
  }

  /** Bytes of the data section (tensor data and the padding between tensors). */
  get dataBytes(): number {
    return alignUp(this.dataEnd, this.alignment);
  }

  /** The header (everything before the data section), padded to the alignment. */
  header(): Buffer {
    const out = new ByteBuilder();
    out.u32(MAGIC);
    out.u32(VERSION);
    out.u64(BigInt(this.planned.length));
    out.u64(BigInt(this.kv.size));
    for (const e of this.kv.values()) {
      out.string(e.key);
      out.u32(VALUE_TYPE_IDS[e.type]);
      encodeValue(out, e.key, e.type, e.value);
    }
    for (const t of this.planned) {
      out.string(t.name);
      out.u32(t.shape.length);
      for (const d of t.shape) out.u64(BigInt(d));
      out.u32(t.typeId);
      out.u64(BigInt(t.offset));
    }
    out.zeros(alignUp(out.length, this.alignment) - out.length);
    return out.result();
  }

  /**
   * Writes the header to `path` (through a temporary file beside it, renamed into place
   * by GgufStream.close(), so a failed run never leaves a half-written model under that
   * name) and returns the stream that takes the tensor data. The writer is frozen after.
   */
  async create(path: string): Promise<GgufStream> {
    this.checkOpen();
    const header = this.header();
    this.frozen = true;
    const tmp = `${path}.partial-${process.pid}`;
    let fh: FileHandle;
    try {
      fh = await open(tmp, 'w');
    } catch (err) {
      throw new TandemError('TDM_IO', `${path}: cannot create: ${(err as Error).message}`, { cause: err });
    }
    const stream = new GgufStream(fh, tmp, path, this.planned, header.length, this.dataBytes);
    await stream.writeRaw(header);
    return stream;
  }

  private checkOpen(): void {
    if (this.frozen) throw new TandemError('TDM_BAD_ARGUMENT', 'GGUF writer is frozen: create() was already called');
  }
}

/** Takes tensor data in declared order, pads between tensors, and finishes the file. */
export class GgufStream {
  private index = 0;
  private doneInTensor = 0;
  private position: number;
  private dataWritten = 0;
  private closed = false;

  /** @internal built by GgufWriter.create */
  constructor(
    private readonly fh: FileHandle,
    private readonly tmpPath: string,
    readonly path: string,
    private readonly planned: readonly GgufPlannedTensor[],
    private readonly headerBytes: number,
    private readonly dataBytes: number,
  ) {
    this.position = 0;
  }

  /** The tensor the next write() belongs to, or undefined when every tensor is complete. */
  get current(): GgufPlannedTensor | undefined {
    return this.planned[this.index];
  }

  /** Size the finished file will have (bytes). */
  get fileBytes(): number {
    return this.headerBytes + this.dataBytes;
  }

  get progress(): GgufWriteProgress {
    return { bytesWritten: this.dataWritten, bytesTotal: this.planned.reduce((a, t) => a + t.nBytes, 0) };
  }

  /** @internal */
  async writeRaw(bytes: Uint8Array): Promise<void> {
    let done = 0;
    try {
      while (done < bytes.length) {
        const { bytesWritten } = await this.fh.write(bytes, done, bytes.length - done, this.position);
        done += bytesWritten;
        this.position += bytesWritten;
      }
    } catch (err) {
      await this.abort();
      throw new TandemError('TDM_IO', `${this.path}: write failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Appends `bytes` to tensor `name`'s data; a tensor may arrive in several pieces. Names
   * must come in declared order, and no tensor may get more bytes than it holds.
   */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    if (this.closed) throw new TandemError('TDM_BAD_ARGUMENT', `${this.path}: GGUF stream is closed`);
    const t = this.current;
    if (!t) throw new TandemError('TDM_BAD_ARGUMENT', `${this.path}: every tensor is already written; got more data for '${name}'`);
    if (t.name !== name) throw new TandemError('TDM_BAD_ARGUMENT', `${this.path}: expected data for tensor '${t.name}', got '${name}' (tensors must be written in declared order)`);
    if (this.doneInTensor + bytes.length > t.nBytes) {
      throw new TandemError('TDM_BAD_ARGUMENT', `${this.path}: tensor '${name}' holds ${t.nBytes} bytes; got ${this.doneInTensor + bytes.length}`);
    }
    await this.writeRaw(bytes);
    this.doneInTensor += bytes.length;
    this.dataWritten += bytes.length;
    if (this.doneInTensor === t.nBytes) {
      const next = this.planned[this.index + 1];
      const end = next ? next.offset : this.dataBytes;
      const pad = end - (t.offset + t.nBytes);
      if (pad > 0) await this.writeRaw(new Uint8Array(pad));
      this.index++;
      this.doneInTensor = 0;
    }
  }

  /** Checks every tensor is complete, then moves the file into place. */
  async close(): Promise<void> {
    if (this.closed) return;
    const missing = this.current;
    if (missing) {
      await this.abort();
      throw new TandemError('TDM_BAD_ARGUMENT', `${this.path}: tensor '${missing.name}' is incomplete (${this.doneInTensor} of ${missing.nBytes} bytes); nothing was written`);
    }
    if (this.position !== this.headerBytes + this.dataBytes) {
      await this.abort();
      throw new TandemError('TDM_INTERNAL', `${this.path}: wrote ${this.position} bytes, expected ${this.headerBytes + this.dataBytes}`);
    }
    this.closed = true;
    try {
      await this.fh.close();
      await rename(this.tmpPath, this.path);
    } catch (err) {
      await rm(this.tmpPath, { force: true });
      throw new TandemError('TDM_IO', `${this.path}: cannot finish writing: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Stops and deletes the partial file. */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close().catch(() => undefined);
    await rm(this.tmpPath, { force: true });
  }
}
