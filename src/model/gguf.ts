// A GGUF model file as TypeScript sees it: metadata and tensor table, read by the
// native reader over a memory mapping (weights stay in the mapping, never the JS heap).
import { native, type NativeGgufHandle } from '../native/binding.js';
import { asTandemError, TandemError } from '../native/errors.js';

export type GgufScalarType =
  | 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32'
  | 'bool' | 'string' | 'uint64' | 'int64' | 'float64';
export type GgufValueType = GgufScalarType | 'array';

/** An array value: numbers come as a typed array, strings/bools/arrays as a JS array. */
export interface GgufArray {
  elementType: GgufValueType;
  value: ArrayLike<unknown>;
}

export interface GgufMetadataEntry {
  key: string;
  type: GgufValueType;
  /** number | bigint (64-bit ints) | boolean | string | GgufArray */
  value: unknown;
}

export interface GgufTensorInfo {
  name: string;
  /** ggml type id as stored in the file */
  typeId: number;
  /** ggml type name, e.g. "q4_K" */
  type: string;
  /** dimensions, innermost first (shape[0] is the row length) */
  shape: number[];
  /** bytes from the start of the data section */
  offset: number;
  nBytes: number;
}

type WireArray = { elementType: GgufValueType; value?: ArrayLike<unknown>; packed?: { text: string; starts: Uint32Array } };

/** String arrays arrive packed (one string and each element's UTF-16 start, see native/addon/gguf_binding.cpp): split them, nested ones too. */
function unpackArray(arr: WireArray): GgufArray {
  if (arr.packed) {
    const { text, starts } = arr.packed;
    const value = new Array<string>(starts.length - 1);
    for (let i = 0; i < value.length; i++) value[i] = text.slice(starts[i], starts[i + 1]);
    return { elementType: arr.elementType, value };
  }
  if (arr.elementType === 'array') return { elementType: 'array', value: Array.from(arr.value as ArrayLike<WireArray>, unpackArray) };
  return arr as GgufArray;
}

function unpack(e: GgufMetadataEntry): GgufMetadataEntry {
  return e.type === 'array' ? { ...e, value: unpackArray(e.value as WireArray) } : e;
}

export class GgufFile {
  readonly path: string;
  readonly version: number;
  readonly alignment: number;
  readonly dataOffset: number;
  readonly fileSize: number;
  /** Metadata in file order. */
  readonly metadata: Map<string, GgufMetadataEntry>;
  readonly tensors: GgufTensorInfo[];
  private handle: NativeGgufHandle | undefined;

  private constructor(handle: NativeGgufHandle) {
    const info = handle.info();
    this.handle = handle;
    this.path = info.path;
    this.version = info.version;
    this.alignment = info.alignment;
    this.dataOffset = info.dataOffset;
    this.fileSize = info.fileSize;
    this.metadata = new Map(info.metadata.map((e) => [e.key, unpack(e as GgufMetadataEntry)]));
    this.tensors = info.tensors;
  }

  /** Maps and validates a GGUF file. Throws TandemError (TDM_NOT_FOUND, TDM_BAD_GGUF, TDM_IO). */
  static open(path: string): GgufFile {
    if (typeof path !== 'string' || path.length === 0) {
      throw new TandemError('TDM_BAD_ARGUMENT', 'a GGUF path must be a non-empty string');
    }
    try {
      return new GgufFile(new (native().GgufHandle)(path));
    } catch (err) {
      throw asTandemError(err);
    }
  }

  /** general.architecture, e.g. "llama". */
  get architecture(): string {
    return this.getString('general.architecture') ?? '';
  }

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  getString(key: string): string | undefined {
    const e = this.metadata.get(key);
    if (!e) return undefined;
    if (e.type !== 'string') throw this.wrongType(e, 'a string');
    return e.value as string;
  }

  /** A numeric scalar (64-bit integers are converted; bools are not numbers). */
  getNumber(key: string): number | undefined {
    const e = this.metadata.get(key);
    if (!e) return undefined;
    if (typeof e.value === 'number') return e.value;
    if (typeof e.value === 'bigint') return Number(e.value);
    throw this.wrongType(e, 'a number');
  }

  getBool(key: string): boolean | undefined {
    const e = this.metadata.get(key);
    if (!e) return undefined;
    if (e.type !== 'bool') throw this.wrongType(e, 'a bool');
    return e.value as boolean;
  }

  getArray(key: string): GgufArray | undefined {
    const e = this.metadata.get(key);
    if (!e) return undefined;
    if (e.type !== 'array') throw this.wrongType(e, 'an array');
    return e.value as GgufArray;
  }

  /** `<architecture>.<name>`, the convention for hyperparameters. */
  archKey(name: string): string {
    return `${this.architecture}.${name}`;
  }

  tensor(name: string): GgufTensorInfo | undefined {
    return this.tensors.find((t) => t.name === name);
  }

  /** A tensor's bytes, viewed in place over the mapping. */
  tensorData(name: string): Uint8Array {
    if (!this.handle) throw new TandemError('TDM_DISPOSED', `${this.path}: GGUF file is closed`);
    try {
      return this.handle.tensorData(name);
    } catch (err) {
      throw asTandemError(err);
    }
  }

  close(): void {
    this.handle?.close();
    this.handle = undefined;
  }

  private wrongType(e: GgufMetadataEntry, want: string): TandemError {
    return new TandemError('TDM_BAD_GGUF', `${this.path}: metadata '${e.key}' is ${e.type}, expected ${want}`);
  }
}
